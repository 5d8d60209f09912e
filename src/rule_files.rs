//! Rule files as analysts ship and promote them from the page: the `mode` of rules set in
//! the analyst's own text (comments and layout kept, so the file reads as written and
//! diffs cleanly where `rules_dir` is in git), and files written into the rules directory
//! whole or not at all.
//!
//! The edit works on lines: a `[[rule]]` header starts a rule's table, any other header
//! ends it, and lines inside multi-line strings are never taken for keys. What it wrote is
//! then compiled and checked (every shipped rule shadow, every promoted one active), so a
//! layout it does not understand is refused, never written half right.

use std::io::Write;
use std::path::Path;

/// Longest name of a shipped file, and most files one ship writes.
pub const MAX_NAME_BYTES: usize = 100;
pub const MAX_FILES: usize = 16;

/// Why a file cannot be shipped as named.
pub fn check_name(name: &str) -> Result<(), String> {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !plain || name.starts_with('.') || !name.ends_with(".toml") || name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "`{name}`: a rule file is named `<letters, digits, _ - .>.toml` (at most \
             {MAX_NAME_BYTES} bytes), directly in the rules directory"
        ));
    }
    Ok(())
}

/// One `[[rule]]` table: its lines `[start, end)`, its id and the line of its `mode`.
struct Table {
    start: usize,
    end: usize,
    id: Option<String>,
    mode_line: Option<usize>,
}

fn key_of(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    key.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        .then_some(key)
}

fn string_value(line: &str) -> Option<String> {
    let (_, value) = line.split_once('=')?;
    let value = value.trim();
    let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &value[1..];
    let end = rest.find(quote)?;
    Some(rest[..end].to_owned())
}

fn tables(lines: &[&str]) -> Vec<Table> {
    let mut out: Vec<Table> = Vec::new();
    let (mut basic, mut literal) = (false, false);
    for (i, line) in lines.iter().enumerate() {
        let in_string = basic || literal;
        basic ^= line.matches("\"\"\"").count() % 2 == 1;
        literal ^= line.matches("'''").count() % 2 == 1;
        if in_string {
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if let Some(last) = out.last_mut().filter(|t| t.end == usize::MAX) {
                last.end = i;
            }
            if trimmed.starts_with("[[rule]]") {
                out.push(Table {
                    start: i,
                    end: usize::MAX,
                    id: None,
                    mode_line: None,
                });
            }
            continue;
        }
        let Some(table) = out.last_mut().filter(|t| t.end == usize::MAX) else {
            continue;
        };
        match key_of(trimmed) {
            Some("id") => table.id = string_value(trimmed),
            Some("mode") => table.mode_line = Some(i),
            _ => {}
        }
    }
    if let Some(last) = out.last_mut().filter(|t| t.end == usize::MAX) {
        last.end = lines.len();
    }
    out
}

/// `text` with `mode = "<mode>"` in the table of every rule `which` accepts (by id), in
/// place of its `mode` line or just under its `[[rule]]` header.
pub fn with_mode(text: &str, mode: &str, which: impl Fn(&str) -> bool) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut replace: Vec<(usize, bool)> = Vec::new();
    for table in tables(&lines) {
        if !table.id.as_deref().is_some_and(&which) {
            continue;
        }
        debug_assert!(table.start < table.end);
        match table.mode_line {
            Some(line) => replace.push((line, true)),
            None => replace.push((table.start, false)),
        }
    }
    let mut out = String::with_capacity(text.len() + 32 * replace.len());
    for (i, line) in lines.iter().enumerate() {
        match replace.iter().find(|(at, _)| *at == i) {
            Some((_, true)) => {
                let indent = &line[..line.len() - line.trim_start().len()];
                out.push_str(&format!("{indent}mode = \"{mode}\""));
            }
            Some((_, false)) => {
                out.push_str(line);
                out.push('\n');
                out.push_str(&format!("mode = \"{mode}\""));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Ids of the `[[rule]]` tables in `text`, in order.
pub fn rule_ids(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    tables(&lines).into_iter().filter_map(|t| t.id).collect()
}

/// Writes every file of `files` into `dir`, each through a hidden temporary file renamed
/// over the name (the rules loader skips dot-files, so a reload never sees half a file).
pub fn write_all(dir: &Path, files: &[(String, String)]) -> std::io::Result<()> {
    for (name, text) in files {
        let temporary = dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, dir.join(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# candidates
[[rule]]
id = "a"
when = '''
mode = "x" && amount_fen > 5
'''
action = "review"
  mode = "active"

[[rule]]
id = 'b'
action = "block"

[params]
mode = 3
"#;

    #[test]
    fn modes_are_set_in_the_rule_tables_only() {
        let shadow = with_mode(FILE, "shadow", |_| true);
        assert_eq!(rule_ids(&shadow), ["a", "b"]);
        assert!(
            shadow.contains("  mode = \"shadow\"\n\n[[rule]]"),
            "{shadow}"
        );
        assert!(
            shadow.contains("[[rule]]\nmode = \"shadow\"\nid = 'b'"),
            "{shadow}"
        );
        // Text inside a multi-line string and keys of other tables stay as they were.
        assert!(shadow.contains("mode = \"x\" && amount_fen"), "{shadow}");
        assert!(shadow.contains("[params]\nmode = 3\n"), "{shadow}");
        let promoted = with_mode(&shadow, "active", |id| id == "b");
        assert!(promoted.contains("[[rule]]\nmode = \"active\"\nid = 'b'"));
        assert!(promoted.contains("  mode = \"shadow\"\n"));
    }

    #[test]
    fn names_stay_inside_the_directory() {
        assert!(check_name("90_candidates.toml").is_ok());
        for bad in ["../x.toml", "lists/x.toml", ".x.toml", "x.txt", "a b.toml"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
