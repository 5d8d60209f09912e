//! Rule files: TOML layout, params, named lists (with expiry), directory
//! loading, limits, and the version hash.
//!
//! A rule set is every `*.toml` directly under one directory (name order; the
//! `tests/` sub-directory is not loaded) plus the list files they name. Params,
//! lists and rule ids share one namespace across files, so a rule may use a
//! param defined in another file. TOML syntax and unknown keys are reported once
//! per file (the TOML parser stops there); every other error (names, types,
//! templates, duplicates, limits) is collected across all files and rules.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::compile::{compile_expr, compile_template, CompileError, Env, Refs, Template};
use super::parse::parse_expr;
use super::verdict::{Action, Policy};
use super::{
    AccountAction, List, Mode, ParamLabel, Rule, RuleError, RuleErrors, RuleSet, Schema, Type,
};
use crate::units::Unit;

/// Largest rule file accepted.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Largest list file accepted (block lists can be long).
pub const MAX_LIST_FILE_BYTES: usize = 64 * 1024 * 1024;
/// Most rules in one rule set.
pub const MAX_RULES: usize = 1000;
/// Most rule files in one directory.
pub const MAX_FILES: usize = 256;
/// Longest message template.
pub const MAX_MESSAGE_LEN: usize = 2048;

/// One rule file's sections. Built section by section (and rule by rule) so one
/// bad key does not hide the errors in the rest of the file.
#[derive(Default)]
struct RawFile {
    ruleset: Option<Spanned<RawRuleset>>,
    params: Option<BTreeMap<String, Spanned<RawParam>>>,
    lists: Option<BTreeMap<String, Spanned<String>>>,
    policy: Option<Spanned<Policy>>,
    rule: Vec<RawRule>,
}

const SECTIONS: &[&str] = &["ruleset", "params", "lists", "policy", "rule"];

fn toml_error(src: &Source, e: &toml::de::Error, fallback: usize, errors: &mut Errors) {
    let at = e.span().map(|s| s.start).unwrap_or(fallback);
    errors.at(src, at, e.message().trim().to_string(), None);
}

fn de_value<T: serde::de::DeserializeOwned>(
    v: &Spanned<toml::de::DeValue<'_>>,
) -> Result<T, toml::de::Error> {
    T::deserialize(toml::de::ValueDeserializer::from(v.clone()))
}

/// Parse one rule file, recording every syntax error, unknown section, and
/// per-section / per-rule shape error (unknown keys, wrong types).
fn read_file(src: &Source, errors: &mut Errors) -> RawFile {
    let mut out = RawFile::default();
    let (root, syntax) = toml::de::DeTable::parse_recoverable(&src.text);
    if !syntax.is_empty() {
        // Recovery after a syntax error produces guesses; report only the
        // syntax errors rather than shape errors caused by them.
        for e in &syntax {
            toml_error(src, e, 0, errors);
        }
        return out;
    }
    for (key, value) in root.get_ref().iter() {
        let name: &str = key.get_ref();
        let at = key.span().start;
        match name {
            "ruleset" => match de_value(value) {
                Ok(v) => out.ruleset = Some(Spanned::new(value.span(), v)),
                Err(e) => toml_error(src, &e, at, errors),
            },
            "params" => out.params = Some(read_params(src, value, errors)),
            "lists" => match de_value(value) {
                Ok(v) => out.lists = Some(v),
                Err(e) => toml_error(src, &e, at, errors),
            },
            "policy" => match de_value(value) {
                Ok(v) => out.policy = Some(Spanned::new(value.span(), v)),
                Err(e) => toml_error(src, &e, at, errors),
            },
            "rule" => match value.get_ref() {
                toml::de::DeValue::Array(items) => {
                    for item in items.iter() {
                        match de_value::<RawRule>(item) {
                            Ok(r) => out.rule.push(r),
                            Err(e) => toml_error(src, &e, item.span().start, errors),
                        }
                    }
                }
                _ => errors.at(
                    src,
                    at,
                    "`rule` must be an array of tables: write `[[rule]]`",
                    None,
                ),
            },
            other => {
                let hint = super::compile::suggest(other, SECTIONS.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"));
                errors.at(
                    src,
                    at,
                    format!("unknown section `{other}`, expected one of `ruleset`, `params`, `lists`, `policy`, `rule`"),
                    hint,
                );
            }
        }
    }
    out
}

/// A param: `name = 30`, or with the words a merchant reads,
/// `name = { value = 30, label = "...", label_zh = "...", unit = "count" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    value: f64,
    #[serde(default)]
    label: Option<Spanned<String>>,
    #[serde(default)]
    label_zh: Option<Spanned<String>>,
    #[serde(default)]
    unit: Option<Spanned<String>>,
}

const PARAM_SHAPE: &str =
    "a number, or a table `{ value = 30, label = \"...\", label_zh = \"...\", unit = \"count\" }`";

/// The `[params]` table, each entry a number or a `RawParam` table; every bad entry is
/// reported at its own position.
fn read_params(
    src: &Source,
    value: &Spanned<toml::de::DeValue<'_>>,
    errors: &mut Errors,
) -> BTreeMap<String, Spanned<RawParam>> {
    use toml::de::DeValue;
    let mut out = BTreeMap::new();
    let DeValue::Table(table) = value.get_ref() else {
        errors.at(src, value.span().start, "`params` must be a table", None);
        return out;
    };
    for (key, value) in table.iter() {
        let name = key.get_ref().to_string();
        let param = match value.get_ref() {
            DeValue::Integer(_) | DeValue::Float(_) => de_value(value).map(|value| RawParam {
                value,
                label: None,
                label_zh: None,
                unit: None,
            }),
            DeValue::Table(_) => de_value(value),
            _ => {
                let message = format!("param `{name}` must be {PARAM_SHAPE}");
                errors.at(src, value.span().start, message, None);
                continue;
            }
        };
        match param {
            Ok(p) => {
                out.insert(name, Spanned::new(value.span(), p));
            }
            Err(e) => toml_error(src, &e, value.span().start, errors),
        }
    }
    out
}

/// The words of a param, checked; `None` when it has none.
fn param_label(
    src: &Source,
    name: &str,
    param: RawParam,
    errors: &mut Errors,
) -> Option<ParamLabel> {
    let mut text = |field: Option<Spanned<String>>, key: &str| {
        let field = field?;
        if field.get_ref().trim().is_empty() {
            let message = format!("param `{name}`: `{key}` is empty");
            errors.at(src, field.span().start, message, None);
            return None;
        }
        Some((field.get_ref().trim().to_string(), field.span().start))
    };
    let label = text(param.label, "label");
    let label_zh = text(param.label_zh, "label_zh");
    let unit = param.unit.and_then(|u| match Unit::parse(u.get_ref()) {
        Some(unit) => Some((unit, u.span().start)),
        None => {
            let names: Vec<&str> = Unit::ALL.iter().map(|u| u.as_str()).collect();
            let message = format!(
                "param `{name}`: unknown unit `{}`, expected one of `{}`",
                u.get_ref(),
                names.join("`, `")
            );
            errors.at(src, u.span().start, message, None);
            None
        }
    });
    let Some((label, _)) = label else {
        if let Some(at) = label_zh.map(|(_, at)| at).or(unit.map(|(_, at)| at)) {
            let message = format!("param `{name}` has words or a unit but no `label`");
            errors.at(src, at, message, Some("add `label = \"...\"`".into()));
        }
        return None;
    };
    Some(ParamLabel {
        label_zh: label_zh.map_or_else(|| label.clone(), |(l, _)| l),
        label,
        unit: unit.map_or(Unit::Number, |(u, _)| u),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleset {
    label: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)] // documentation for humans; accepted, not used
    description: String,
}

fn active() -> Mode {
    Mode::Active
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    #[serde(default)]
    description: String,
    when: Spanned<String>,
    action: Action,
    #[serde(default)]
    account_action: Option<AccountAction>,
    #[serde(default)]
    score: Option<Spanned<f64>>,
    reason_code: Spanned<String>,
    message: Spanned<String>,
    #[serde(default)]
    message_zh: Option<Spanned<String>>,
    /// A step that would keep the rule from firing, for the merchant ("move to a merchant
    /// code"); a message template like `message`.
    #[serde(default)]
    advice: Option<Spanned<String>>,
    #[serde(default)]
    advice_zh: Option<Spanned<String>>,
    #[serde(default = "active")]
    mode: Mode,
    #[serde(default)]
    tags: Vec<String>,
}

/// One input file: `display` names it in errors, `key` names it in the version.
struct Source {
    display: String,
    key: String,
    text: String,
}

/// 1-based line and column (in characters, so Chinese text counts right).
pub fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line as u32, col as u32)
}

struct Errors {
    list: Vec<RuleError>,
}

impl Errors {
    fn at(
        &mut self,
        src: &Source,
        offset: usize,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let (line, column) = line_col(&src.text, offset);
        self.list.push(RuleError {
            file: src.display.clone(),
            line,
            column,
            message: message.into(),
            hint,
        });
    }
    fn whole(&mut self, file: &str, message: impl Into<String>) {
        self.list.push(RuleError {
            file: file.to_string(),
            line: 0,
            column: 0,
            message: message.into(),
            hint: None,
        });
    }
}

/// Maps byte offsets inside a TOML string's decoded value to offsets in the
/// file, so expression errors point into the file even for `'''` multi-line
/// strings and escaped basic strings.
struct StrMap {
    base: usize,
    /// `map[i]` = raw offset (from `base`) of decoded byte `i`; one extra entry
    /// for the end. Empty when decoding could not be mirrored (then everything
    /// maps to the string's start).
    map: Vec<usize>,
}

impl StrMap {
    fn new(file: &str, span: std::ops::Range<usize>, value: &str) -> StrMap {
        let raw = file.get(span.clone()).unwrap_or("");
        match decode_map(raw) {
            Some((decoded, map)) if decoded == value => StrMap {
                base: span.start,
                map,
            },
            _ => StrMap {
                base: span.start,
                map: Vec::new(),
            },
        }
    }
    fn offset(&self, i: usize) -> usize {
        match self.map.get(i).or(self.map.last()) {
            Some(o) => self.base + o,
            None => self.base,
        }
    }
}

/// Decode a raw TOML string token, recording where each decoded byte came from.
fn decode_map(raw: &str) -> Option<(String, Vec<usize>)> {
    let (delim, literal) = if raw.starts_with("'''") {
        (3, true)
    } else if raw.starts_with("\"\"\"") {
        (3, false)
    } else if raw.starts_with('\'') {
        (1, true)
    } else if raw.starts_with('"') {
        (1, false)
    } else {
        return None;
    };
    if raw.len() < 2 * delim {
        return None;
    }
    let mut start = delim;
    let end = raw.len() - delim;
    if delim == 3 {
        // A newline right after the opening delimiter is trimmed.
        if raw[start..end].starts_with("\r\n") {
            start += 2;
        } else if raw[start..end].starts_with('\n') {
            start += 1;
        }
    }
    let body = raw.get(start..end)?;
    let mut out = String::with_capacity(body.len());
    let mut map = Vec::with_capacity(body.len() + 1);
    let push = |out: &mut String, map: &mut Vec<usize>, c: char, at: usize| {
        out.push(c);
        for _ in 0..c.len_utf8() {
            map.push(at);
        }
    };
    let mut it = body.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let at = start + i;
        if literal || c != '\\' {
            push(&mut out, &mut map, c, at);
            continue;
        }
        let (_, e) = it.next()?;
        let decoded = match e {
            'b' => '\u{8}',
            't' => '\t',
            'n' => '\n',
            'f' => '\u{c}',
            'r' => '\r',
            'e' => '\u{1b}',
            '"' => '"',
            '\\' => '\\',
            'u' | 'U' | 'x' => {
                let n = match e {
                    'u' => 4,
                    'U' => 8,
                    _ => 2,
                };
                let mut v = 0u32;
                for _ in 0..n {
                    let (_, h) = it.next()?;
                    v = v * 16 + h.to_digit(16)?;
                }
                char::from_u32(v)?
            }
            c if c.is_whitespace() && delim == 3 => {
                // Line-ending backslash: skip all whitespace and newlines.
                while it.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                    it.next();
                }
                continue;
            }
            _ => return None,
        };
        push(&mut out, &mut map, decoded, at);
    }
    map.push(end);
    Some((out, map))
}

fn span_of_compile(e: &CompileError, m: &StrMap) -> usize {
    m.offset(e.span.start)
}

/// Parse one list file: `value [expires=2027-01-01T00:00:00Z]  # comment`.
fn parse_list(name: &str, src: &Source, errors: &mut Errors) -> List {
    let mut list = List {
        name: name.to_string(),
        entries: HashMap::new(),
    };
    let mut offset = 0;
    for line in src.text.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        let content = line.split('#').next().unwrap_or("");
        let mut tokens = content.split_whitespace();
        let Some(value) = tokens.next() else { continue };
        let mut expires: Option<i64> = None;
        for tok in tokens {
            let col = line_start + content.find(tok).unwrap_or(0);
            match tok.strip_prefix("expires=") {
                Some(ts) => match parse_timestamp_ms(ts) {
                    Some(ms) => expires = Some(ms),
                    None => errors.at(src, col, format!("invalid timestamp `{ts}`, expected e.g. `2027-01-01T00:00:00Z` or `2027-01-01`"), None),
                },
                None => errors.at(src, col, format!("unexpected `{tok}` after the list entry, expected `expires=<timestamp>` or a `# comment`"), None),
            }
        }
        // A value listed twice keeps the longest life (no expiry beats any).
        let entry = list.entries.entry(value.into()).or_insert(expires);
        *entry = match (*entry, expires) {
            (None, _) | (_, None) => None,
            (Some(a), Some(b)) => Some(a.max(b)),
        };
    }
    list
}

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SSZ` or with a `±HH:MM` offset → unix ms.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let num = |t: &str| -> Option<i64> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut dp = date.split('-');
    let (y, m, d) = (num(dp.next()?)?, num(dp.next()?)?, num(dp.next()?)?);
    if dp.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || date.len() != 10 {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if let Some(t) = time {
        let (clock, off) = if let Some(c) = t.strip_suffix(['Z', 'z']) {
            (c, 0)
        } else if t.len() > 6
            && (t.as_bytes()[t.len() - 6] == b'+' || t.as_bytes()[t.len() - 6] == b'-')
        {
            let (c, o) = t.split_at(t.len() - 6);
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (oh, om) = o.get(1..)?.split_once(':')?;
            (c, sign * (num(oh)? * 3600 + num(om)? * 60))
        } else {
            return None;
        };
        let mut cp = clock.split(':');
        let (h, mi, se) = (num(cp.next()?)?, num(cp.next()?)?, num(cp.next()?)?);
        if cp.next().is_some() || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        secs += h * 3600 + mi * 60 + se - off;
    }
    secs.checked_mul(1000)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn safe_relative(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

pub(crate) fn load_dir(dir: &Path, schema: &Schema) -> Result<RuleSet, RuleErrors> {
    load_dir_with(dir, &[], schema)
}

/// `load_dir` with some files replaced or added (`name` as in the directory: `x.toml`,
/// `lists/y.txt`), as if they were written there: what a backtest of candidate files and
/// a ship check compile, with the errors a reload would report for those files.
pub(crate) fn load_dir_with(
    dir: &Path,
    overrides: &[(String, String)],
    schema: &Schema,
) -> Result<RuleSet, RuleErrors> {
    let overridden = |name: &str| {
        overrides
            .iter()
            .find(|(n, _)| n.trim_start_matches("./") == name)
            .map(|(_, text)| text)
    };
    let dir_name = dir.display().to_string();
    let fail = |m: String| {
        RuleErrors(vec![RuleError {
            file: dir_name.clone(),
            line: 0,
            column: 0,
            message: m,
            hint: None,
        }])
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| fail(format!("cannot read rules directory: {e}")))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| fail(format!("cannot read rules directory: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Dot-files are editor backups and lock files, not rules.
        if !name.ends_with(".toml") || name.starts_with('.') {
            continue;
        }
        // Followed through symlinks (config maps mount rule files as links). A rule file
        // that is a FIFO or device is an error, not skipped: skipping would silently drop
        // its rules, reading it could wait forever.
        match std::fs::metadata(entry.path()) {
            Ok(m) if m.is_file() => names.push(name),
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(fail(format!(
                    "`{name}` is not a regular file (a FIFO, device or socket is never read)"
                )))
            }
            Err(e) => return Err(fail(format!("cannot read `{name}`: {e}"))),
        }
    }
    for (name, _) in overrides {
        let plain = !name.contains('/') && !name.starts_with('.') && name.ends_with(".toml");
        if plain && !names.contains(name) {
            names.push(name.clone());
        }
    }
    names.sort();
    // An empty directory is almost always a wrong path; running with no rules
    // would silently allow everything.
    if names.is_empty() {
        return Err(fail(
            "no `*.toml` rule files in the rules directory".to_string(),
        ));
    }
    if names.len() > MAX_FILES {
        return Err(fail(format!(
            "{} rule files, the limit is {MAX_FILES}",
            names.len()
        )));
    }
    let mut errors = Errors { list: Vec::new() };
    let mut sources = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let display = path.display().to_string();
        let text = match overridden(&name) {
            Some(text) if text.len() > MAX_FILE_BYTES => Err(format!(
                "file is {} bytes, the limit is {MAX_FILE_BYTES}",
                text.len()
            )),
            Some(text) => Ok(text.clone()),
            None => read_limited(&path, MAX_FILE_BYTES),
        };
        match text {
            Ok(text) => sources.push(Source {
                display,
                key: name,
                text,
            }),
            Err(m) => errors.whole(&display, m),
        }
    }
    let resolver = |rel: &str| -> Result<Source, String> {
        if !safe_relative(rel) {
            return Err(format!(
                "list path `{rel}` must be relative and stay inside the rules directory"
            ));
        }
        let path = dir.join(rel);
        let text = match overridden(rel.trim_start_matches("./")) {
            Some(text) if text.len() > MAX_LIST_FILE_BYTES => {
                return Err(format!(
                    "file is {} bytes, the limit is {MAX_LIST_FILE_BYTES}",
                    text.len()
                ))
            }
            Some(text) => text.clone(),
            None => read_limited(&path, MAX_LIST_FILE_BYTES)?,
        };
        Ok(Source {
            display: path.display().to_string(),
            key: rel.trim_start_matches("./").to_string(),
            text,
        })
    };
    build(sources, &resolver, schema, errors)
}

/// Regular files only (a FIFO would stall the reload), at most `limit` bytes.
fn read_limited(path: &Path, limit: usize) -> Result<String, String> {
    crate::files::read_regular_text(path, limit as u64).map_err(|e| e.to_string())
}

pub(crate) fn from_sources(
    files: &[(String, String)],
    schema: &Schema,
) -> Result<RuleSet, RuleErrors> {
    let mut errors = Errors { list: Vec::new() };
    let mut tomls: Vec<&(String, String)> =
        files.iter().filter(|(n, _)| n.ends_with(".toml")).collect();
    tomls.sort_by(|a, b| a.0.cmp(&b.0));
    if tomls.len() > MAX_FILES {
        errors.whole(
            "<sources>",
            format!("{} rule files, the limit is {MAX_FILES}", tomls.len()),
        );
        return Err(RuleErrors(errors.list));
    }
    let mut sources = Vec::new();
    for (name, text) in tomls {
        if text.len() > MAX_FILE_BYTES {
            errors.whole(
                name,
                format!(
                    "file is {} bytes, the limit is {MAX_FILE_BYTES}",
                    text.len()
                ),
            );
            continue;
        }
        sources.push(Source {
            display: name.clone(),
            key: name.clone(),
            text: text.clone(),
        });
    }
    let resolver = |rel: &str| -> Result<Source, String> {
        let want = rel.trim_start_matches("./");
        match files
            .iter()
            .find(|(n, _)| n.trim_start_matches("./") == want && !n.ends_with(".toml"))
        {
            Some((n, t)) if t.len() <= MAX_LIST_FILE_BYTES => Ok(Source {
                display: n.clone(),
                key: want.to_string(),
                text: t.clone(),
            }),
            Some((_, t)) => Err(format!(
                "file is {} bytes, the limit is {MAX_LIST_FILE_BYTES}",
                t.len()
            )),
            None => Err(format!("list file `{rel}` was not supplied")),
        }
    };
    build(sources, &resolver, schema, errors)
}

struct PendingRule {
    file: usize,
    raw: RawRule,
}

fn build(
    sources: Vec<Source>,
    resolver: &dyn Fn(&str) -> Result<Source, String>,
    schema: &Schema,
    mut errors: Errors,
) -> Result<RuleSet, RuleErrors> {
    let mut label: Option<(String, usize)> = None;
    let mut params: HashMap<String, f64> = HashMap::new();
    let mut param_order: Vec<(String, f64)> = Vec::new();
    let mut param_labels: HashMap<String, ParamLabel> = HashMap::new();
    let mut list_index: HashMap<String, usize> = HashMap::new();
    let mut lists: Vec<List> = Vec::new();
    let mut list_sources: Vec<Source> = Vec::new();
    let mut policy: Option<(Policy, usize)> = None;
    let mut pending: Vec<PendingRule> = Vec::new();

    // Pass 1: structure, params, lists, policy. Rules wait until every file's
    // params and lists are known.
    for (fi, src) in sources.iter().enumerate() {
        let errors_before = errors.list.len();
        let raw = read_file(src, &mut errors);
        let has_content = raw.ruleset.is_some()
            || raw.policy.is_some()
            || !raw.rule.is_empty()
            || raw.params.as_ref().is_some_and(|p| !p.is_empty())
            || raw.lists.as_ref().is_some_and(|l| !l.is_empty());
        // An emptied file (0 bytes, or comments only) would silently drop every rule it
        // held, freezes included. Removing rules is done by deleting the file or the rules.
        if !has_content && errors.list.len() == errors_before {
            errors.whole(
                &src.display,
                "file has no rules, params, lists or policy; to remove its rules, delete the \
                 file (or the rules in it) instead of emptying it"
                    .to_string(),
            );
        }
        if let Some(rs) = raw.ruleset {
            if let Some((_, other)) = &label {
                errors.at(
                    src,
                    rs.span().start,
                    format!(
                        "`[ruleset]` is already defined in `{}`",
                        sources[*other].display
                    ),
                    None,
                );
            } else {
                let l = rs.into_inner().label;
                let valid = !l.get_ref().is_empty()
                    && l.get_ref().len() <= 64
                    && l.get_ref()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !valid {
                    errors.at(
                        src,
                        l.span().start,
                        "label must be 1-64 characters of `A-Z a-z 0-9 - _ .`",
                        None,
                    );
                }
                label = Some((l.into_inner(), fi));
            }
        }
        for (name, value) in raw.params.unwrap_or_default() {
            let v = value.get_ref().value;
            if !is_name(&name) {
                errors.at(
                    src,
                    value.span().start,
                    format!("param name `{name}` must be letters, digits and `_`"),
                    None,
                );
            } else if params.contains_key(&name) {
                errors.at(
                    src,
                    value.span().start,
                    format!("param `{name}` is defined twice"),
                    None,
                );
            } else if !v.is_finite() {
                errors.at(
                    src,
                    value.span().start,
                    format!("param `{name}` must be a finite number"),
                    None,
                );
            } else {
                if let Some(label) = param_label(src, &name, value.into_inner(), &mut errors) {
                    param_labels.insert(name.clone(), label);
                }
                params.insert(name.clone(), v);
                param_order.push((name, v));
            }
        }
        for (name, path) in raw.lists.unwrap_or_default() {
            let at = path.span().start;
            if !is_name(&name) {
                errors.at(
                    src,
                    at,
                    format!("list name `{name}` must be letters, digits and `_`"),
                    None,
                );
                continue;
            }
            if list_index.contains_key(&name) {
                errors.at(src, at, format!("list `{name}` is defined twice"), None);
                continue;
            }
            match resolver(path.get_ref()) {
                Ok(ls) => {
                    let list = parse_list(&name, &ls, &mut errors);
                    list_index.insert(name, lists.len());
                    lists.push(list);
                    list_sources.push(ls);
                }
                Err(m) => {
                    errors.at(src, at, m, None);
                    // Register it empty so rules using it do not add
                    // "unknown list" errors on top of the real one.
                    list_index.insert(name.clone(), lists.len());
                    lists.push(List {
                        name,
                        entries: HashMap::new(),
                    });
                }
            }
        }
        if let Some(p) = raw.policy {
            let at = p.span().start;
            if let Some((_, other)) = &policy {
                errors.at(
                    src,
                    at,
                    format!(
                        "`[policy]` is already defined in `{}`",
                        sources[*other].display
                    ),
                    None,
                );
            } else {
                let p = p.into_inner();
                if let Err(m) = p.validate() {
                    errors.at(src, at, m, None);
                }
                policy = Some((p, fi));
            }
        }
        for raw in raw.rule {
            pending.push(PendingRule { file: fi, raw });
        }
    }

    if pending.len() > MAX_RULES {
        errors.whole(
            "<rules>",
            format!("{} rules, the limit is {MAX_RULES}", pending.len()),
        );
        return Err(RuleErrors(errors.list));
    }

    // Pass 2: compile every rule, collecting every error.
    let env = Env {
        schema,
        params: &params,
        lists: &list_index,
    };
    let mut rules = Vec::with_capacity(pending.len());
    let mut seen_ids: HashMap<String, usize> = HashMap::new();
    for PendingRule { file, raw } in pending {
        let src = &sources[file];
        let before = errors.list.len();
        let id = raw.id.get_ref().clone();
        if !is_name(&id) {
            errors.at(
                src,
                raw.id.span().start,
                format!("rule id `{id}` must be letters, digits and `_`"),
                None,
            );
        } else if let Some(prev) = seen_ids.get(&id) {
            errors.at(
                src,
                raw.id.span().start,
                format!(
                    "rule id `{id}` is already used in `{}`",
                    sources[*prev].display
                ),
                None,
            );
        } else {
            seen_ids.insert(id.clone(), file);
        }
        let score = raw.score.as_ref().map(|s| *s.get_ref()).unwrap_or(0.0);
        if let Some(s) = &raw.score {
            if !(0.0..=100.0).contains(s.get_ref()) {
                errors.at(
                    src,
                    s.span().start,
                    format!("score must be between 0 and 100, found {}", s.get_ref()),
                    None,
                );
            }
        }
        if raw.reason_code.get_ref().trim().is_empty() {
            errors.at(
                src,
                raw.reason_code.span().start,
                "reason_code must not be empty",
                None,
            );
        }

        let mut refs = Refs::default();
        let when_map = StrMap::new(&src.text, raw.when.span(), raw.when.get_ref());
        let plan = match parse_expr(raw.when.get_ref()) {
            Err(e) => {
                errors.at(src, when_map.offset(e.span.start), e.message, None);
                None
            }
            Ok(ast) => match compile_expr(&ast, &env, &mut refs) {
                Err(e) => {
                    errors.at(src, span_of_compile(&e, &when_map), e.message, e.hint);
                    None
                }
                Ok(c) if c.ty != Type::Bool => {
                    errors.at(
                        src,
                        when_map.offset(0),
                        format!("`when` must be a bool condition, found a {}", c.ty),
                        None,
                    );
                    None
                }
                Ok(c) => Some(c.node),
            },
        };
        let mut template = |t: &Spanned<String>, errors: &mut Errors| -> Option<Template> {
            if t.get_ref().len() > MAX_MESSAGE_LEN {
                errors.at(
                    src,
                    t.span().start,
                    format!(
                        "message is {} bytes, the limit is {MAX_MESSAGE_LEN}",
                        t.get_ref().len()
                    ),
                    None,
                );
                return None;
            }
            let m = StrMap::new(&src.text, t.span(), t.get_ref());
            match compile_template(t.get_ref(), &env, &mut refs) {
                Ok(t) => Some(t),
                Err(es) => {
                    for e in es {
                        errors.at(src, span_of_compile(&e, &m), e.message, e.hint);
                    }
                    None
                }
            }
        };
        let message = template(&raw.message, &mut errors);
        let message_zh = raw.message_zh.as_ref().map(|t| template(t, &mut errors));
        let advice = raw.advice.as_ref().map(|t| template(t, &mut errors));
        let advice_zh = raw.advice_zh.as_ref().map(|t| template(t, &mut errors));
        if errors.list.len() > before {
            continue;
        }
        let (Some(plan), Some(message)) = (plan, message) else {
            continue;
        };
        let message_zh = message_zh.flatten();
        let (advice, advice_zh) = (advice.flatten(), advice_zh.flatten());
        let (line, _) = line_col(&src.text, when_map.offset(0));
        rules.push(Rule {
            id: Arc::from(id.as_str()),
            description: raw.description,
            file: src.display.clone(),
            line,
            when: raw.when.into_inner(),
            action: raw.action,
            account_action: raw.account_action,
            score,
            reason_code: Arc::from(raw.reason_code.get_ref().as_str()),
            mode: raw.mode,
            tags: raw.tags,
            slots: Arc::from(refs.slots),
            params: refs
                .params
                .into_iter()
                .map(|(n, v)| (Arc::from(n.as_str()), v))
                .collect(),
            plan,
            message,
            message_zh,
            advice,
            advice_zh,
        });
    }

    if !errors.list.is_empty() {
        // File, then position order, as a compiler would print them.
        errors
            .list
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        return Err(RuleErrors(errors.list));
    }

    let label = label.map(|(l, _)| l).unwrap_or_else(|| "rules".to_string());
    let version = format!("{label}@{}", version_hash(&sources, &list_sources));
    Ok(RuleSet {
        label,
        version,
        rules,
        lists,
        params: param_order,
        param_labels,
        policy: policy.map(|(p, _)| p).unwrap_or_default(),
        schema_len: schema.len(),
    })
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// First 12 hex digits of sha256 over every file, sorted by name; each file is
/// framed as `name \0 len(u64 le) content` so no two file sets collide by
/// concatenation.
fn version_hash(rule_files: &[Source], list_files: &[Source]) -> String {
    let mut all: Vec<&Source> = rule_files.iter().chain(list_files.iter()).collect();
    all.sort_by(|a, b| a.key.cmp(&b.key));
    let mut h = Sha256::new();
    for s in all {
        h.update(s.key.as_bytes());
        h.update([0u8]);
        h.update((s.text.len() as u64).to_le_bytes());
        h.update(s.text.as_bytes());
    }
    let hex = hex::encode(h.finalize());
    hex[..12].to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::rules::test_schema::schema;
    use crate::rules::Value;

    fn load(files: &[(&str, &str)]) -> Result<RuleSet, RuleErrors> {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        RuleSet::from_sources(&files, &schema())
    }

    const GOOD: &str = r#"
[ruleset]
label = "test-1"
[params]
limit = 30
[lists]
blocked = "lists/blocked.txt"
[[rule]]
id = "rent"
when = '''payee.kind == "PERSONAL"
  && payee.distinct_payers_1h > params.limit'''
action = "review"
score = 40
reason_code = "RENT_CODE"
message = "{payee.distinct_payers_1h} payers (limit {params.limit})"
[[rule]]
id = "blocked"
when = "payer.account_id in lists.blocked"
action = "block"
reason_code = "BLOCKED"
message = "blocked"
mode = "shadow"
"#;
    const LIST: &str = "acc-1\nacc-2 expires=2026-01-01T00:00:00Z # until new year\n\n# comment\n";

    #[test]
    fn loads_and_versions() {
        let rs = load(&[("a.toml", GOOD), ("lists/blocked.txt", LIST)]).unwrap();
        assert_eq!(rs.rules().len(), 2);
        assert!(rs.version().starts_with("test-1@"));
        assert_eq!(rs.version().len(), "test-1@".len() + 12);
        let rs2 = load(&[("a.toml", GOOD), ("lists/blocked.txt", "acc-1\n")]).unwrap();
        assert_ne!(rs.version(), rs2.version());
        assert_eq!(rs.rules()[0].line, 10);
        assert_eq!(rs.rules()[0].params.len(), 1);
    }

    #[test]
    fn list_expiry_against_event_time() {
        let rs = load(&[("a.toml", GOOD), ("lists/blocked.txt", LIST)]).unwrap();
        let s = schema();
        let mut vars: Vec<Value> = s.vars().iter().map(|v| Value::zero(v.ty)).collect();
        vars[s.slot("payer.account_id").unwrap()] = Value::Str("acc-2");
        let new_year = parse_timestamp_ms("2026-01-01T00:00:00Z").unwrap();
        let mut hits = Vec::new();
        rs.evaluate(&vars, new_year - 1, &mut hits);
        assert_eq!(hits.len(), 1);
        hits.clear();
        rs.evaluate(&vars, new_year, &mut hits);
        assert!(hits.is_empty());
    }

    #[test]
    fn params_carry_words_for_merchants_and_plain_numbers_still_load() {
        let labeled = GOOD.replace(
            "limit = 30",
            "limit = { value = 30, unit = \"count\", label = \"most payers in an hour\", label_zh = \"1小时内付款人上限\" }\nplain = 5",
        );
        let rs = load(&[("a.toml", &labeled), ("lists/blocked.txt", LIST)]).unwrap();
        assert_eq!(rs.params()[0], ("limit".to_string(), 30.0));
        let label = rs.param_label("limit");
        assert_eq!(
            (label.label.as_str(), label.label_zh.as_str(), label.unit),
            ("most payers in an hour", "1小时内付款人上限", Unit::Count)
        );
        assert_eq!(
            rs.param_label("plain").label,
            "a limit set by the risk team"
        );
        assert_eq!(
            load(&[("a.toml", GOOD), ("lists/blocked.txt", LIST)])
                .unwrap()
                .params()[0]
                .1,
            30.0
        );
    }

    #[test]
    fn a_param_table_with_a_mistake_is_reported_where_it_is() {
        let bad = |param: &str| {
            let text = format!("[params]\n{param}\n");
            err_text(&[("a.toml", &text)])
        };
        let e = bad("limit = { label = \"x\" }");
        assert!(
            e.starts_with("a.toml:2:9:") && e.contains("missing field `value`"),
            "{e}"
        );
        let e = bad("limit = { value = 3, lable = \"x\" }");
        assert!(e.contains("unknown field `lable`"), "{e}");
        let e = bad("limit = { value = 3, label = \"x\", unit = \"cny\" }");
        assert!(
            e.contains("a.toml:2:") && e.contains("unknown unit `cny`") && e.contains("`yuan`"),
            "{e}"
        );
        let e = bad("limit = { value = 3, label_zh = \"上限\" }");
        assert!(e.contains("has words or a unit but no `label`"), "{e}");
        let e = bad("limit = \"30\"");
        assert!(
            e.contains("a.toml:2:9: param `limit` must be a number, or a table"),
            "{e}"
        );
    }

    #[test]
    fn an_unclosed_parenthesis_is_reported_where_it_opens() {
        let text = "[[rule]]\nid = \"x\"\nwhen = '''payer.count_1h > 1\n  && (payee.count_1h > 2 || payer.count_24h > 3'''\naction = \"review\"\nreason_code = \"R\"\nmessage = \"m\"\n";
        let e = err_text(&[("a.toml", text)]);
        assert!(e.starts_with("a.toml:4:6: this `(` is never closed"), "{e}");
    }

    #[test]
    fn every_param_of_the_bundled_pack_has_words_in_both_languages() {
        let rs = crate::bundled::rules(&schema()).unwrap();
        for (name, _) in rs.params() {
            let label = rs.param_labels.get(name);
            assert!(
                label.is_some_and(|l| !l.label.is_empty() && l.label_zh != l.label),
                "param `{name}` has no English and Chinese label"
            );
        }
    }

    fn err_text(files: &[(&str, &str)]) -> String {
        match load(files) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn error_positions() {
        // Syntax error inside a multi-line literal string on line 3.
        let t = "[[rule]]\nid = \"x\"\nwhen = '''\npayer.count_1h >\n  '''\naction = \"review\"\nreason_code = \"R\"\nmessage = \"m\"\n";
        assert_eq!(
            err_text(&[("r.toml", t)]),
            "r.toml:5:3: expected a value, found end of expression"
        );
        // Unknown name with hint, basic string with an escape before it.
        let t = "[[rule]]\nid = \"x\"\nwhen = \"scene == \\\"A\\\" && payee.distinct_payer_1h > 3\"\naction = \"review\"\nreason_code = \"R\"\nmessage = \"m\"\n";
        assert_eq!(
            err_text(&[("r.toml", t)]),
            "r.toml:3:27: unknown name `payee.distinct_payer_1h`; did you mean `payee.distinct_payers_1h`?"
        );
        // Type error.
        let t = "[[rule]]\nid = \"x\"\nwhen = 'payee.kind == 3'\naction = \"review\"\nreason_code = \"R\"\nmessage = \"m\"\n";
        assert_eq!(
            err_text(&[("r.toml", t)]),
            "r.toml:3:9: cannot compare string with number using `==`"
        );
        // Unknown TOML key.
        let t = "[[rule]]\nid = \"x\"\nwhen = 'true'\nactoin = \"review\"\n";
        let e = err_text(&[("r.toml", t)]);
        assert!(e.starts_with("r.toml:4:1: unknown field `actoin`"), "{e}");
        let e = err_text(&[("r.toml", "[policy]\nchallenge_at = 10\nblok_at = 90\n")]);
        assert!(e.starts_with("r.toml:3:1: unknown field `blok_at`"), "{e}");
        let e = err_text(&[("r.toml", "\n[ruleest]\nlabel = \"x\"\n")]);
        assert_eq!(e, "r.toml:2:2: unknown section `ruleest`, expected one of `ruleset`, `params`, `lists`, `policy`, `rule`; did you mean `ruleset`?");
        // Every error in one file: a bad key in one rule does not hide the others.
        let t = "[[rule]]\nid = \"a\"\nwhen = 'true'\nactoin = \"review\"\n\n[[rule]]\nid = \"b\"\nwhen = 'payer.cnt_1h > 1'\naction = \"review\"\nreason_code = \"R\"\nmessage = \"m\"\n\n[[rule]]\nid = \"c\"\nwhen = 'true'\naction = \"review\"\nscore = \"high\"\nreason_code = \"R\"\nmessage = \"m\"\n";
        let e = err_text(&[("r.toml", t)]);
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 3, "{e}");
        assert!(
            lines[0].starts_with("r.toml:4:1: unknown field `actoin`"),
            "{e}"
        );
        assert_eq!(
            lines[1],
            "r.toml:8:9: unknown name `payer.cnt_1h`; did you mean `payer.count_1h`?"
        );
        assert_eq!(
            lines[2],
            "r.toml:17:9: invalid type: string \"high\", expected f64"
        );
        // Several syntax errors are all reported.
        let e = err_text(&[("r.toml", "a = \nb = 1\nc = [1,\n")]);
        assert!(e.lines().count() >= 2, "{e}");
        let e = err_text(&[(
            "r.toml",
            "[[rule]]\nid = \"x\"\nwhen = 'true'\naction = \"stop\"\n",
        )]);
        assert!(e.starts_with("r.toml:4:10: unknown variant `stop`"), "{e}");
        let e = err_text(&[("r.toml", "[[rule]]\nid = \"x\n")]);
        assert!(e.starts_with("r.toml:2:"), "{e}");
        // Template error and all errors reported, across files.
        let t1 = "[[rule]]\nid = \"x\"\nwhen = 'payer.count_1h > 1'\naction = \"review\"\nreason_code = \"R\"\nmessage = \"n={payer.cont_1h}\"\n";
        let t2 = "[[rule]]\nid = \"x\"\nwhen = 'payer.count_1h > params.nope'\naction = \"review\"\nreason_code = \"R\"\nmessage = \"m\"\n";
        let e = err_text(&[("a.toml", t1), ("b.toml", t2)]);
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 3, "{e}");
        assert_eq!(
            lines[0],
            "a.toml:6:15: unknown name `payer.cont_1h`; did you mean `payer.count_1h`?"
        );
        assert!(
            lines[1].starts_with("b.toml:2:6: rule id `x` is already used"),
            "{e}"
        );
        assert!(lines[1].contains("already used"), "{e}");
        assert!(
            lines[2].starts_with("b.toml:3:26: unknown param `params.nope`"),
            "{e}"
        );
    }

    #[test]
    fn list_file_errors_and_limits() {
        let e = err_text(&[
            ("a.toml", GOOD),
            ("lists/blocked.txt", "acc-1 expires=tomorrow\n"),
        ]);
        assert_eq!(e, "lists/blocked.txt:1:7: invalid timestamp `tomorrow`, expected e.g. `2027-01-01T00:00:00Z` or `2027-01-01`");
        let e = err_text(&[("a.toml", GOOD)]);
        assert_eq!(
            e,
            "a.toml:7:11: list file `lists/blocked.txt` was not supplied"
        );
        let big = "#".repeat(MAX_FILE_BYTES + 1);
        assert!(err_text(&[("a.toml", &big)]).contains("limit"));
        let mut many = String::new();
        for i in 0..=MAX_RULES {
            many.push_str(&format!("[[rule]]\nid = \"r{i}\"\nwhen = 'true'\naction = \"allow\"\nreason_code = \"R\"\nmessage = \"m\"\n"));
        }
        assert!(err_text(&[("a.toml", &many)]).contains("the limit is 1000"));
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp_ms("1970-01-02"), Some(86_400_000));
        assert_eq!(
            parse_timestamp_ms("2000-03-01T00:00:00Z"),
            Some(951_868_800_000)
        );
        assert_eq!(parse_timestamp_ms("1970-01-01T08:00:00+08:00"), Some(0));
        assert_eq!(parse_timestamp_ms("2027-13-01"), None);
        assert_eq!(parse_timestamp_ms("x"), None);
    }

    #[test]
    fn load_dir_reads_lists_relative_to_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lists")).unwrap();
        std::fs::write(dir.path().join("a.toml"), GOOD).unwrap();
        std::fs::write(dir.path().join("lists/blocked.txt"), LIST).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let rs = RuleSet::load_dir(dir.path(), &schema()).unwrap();
        let from_mem = load(&[("a.toml", GOOD), ("lists/blocked.txt", LIST)]).unwrap();
        assert_eq!(rs.version(), from_mem.version());
        std::fs::write(
            dir.path().join("b.toml"),
            "[lists]\nx = \"../etc/passwd\"\n",
        )
        .unwrap();
        let e = RuleSet::load_dir(dir.path(), &schema())
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be relative"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = RuleSet::load_dir(empty.path(), &schema())
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("no `*.toml` rule files in the rules directory"),
            "{e}"
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        const FRAGMENTS: &[&str] = &[
            "[[rule]]\n",
            "[params]\n",
            "[lists]\n",
            "[policy]\n",
            "[ruleset]\n",
            "id = \"r\"\n",
            "id = \"s\"\n",
            "when = , \n",
            "when = \"",
            "\"\n",
            "action = \"block\"\n",
            "action = \"allow\"\n",
            "reason_code = \"R\"\n",
            "message = \"{payer.count_1h} {params.x:yuan}\"\n",
            "message = \"{\"\n",
            "x = 3\n",
            "x = \"lists/a.txt\"\n",
            "label = \"l\"\n",
            "score = 101\n",
            "mode = \"shadow\"\n",
            "payer.count_1h > params.x",
            " && ",
            "payee.kind == \"P\"",
            "payer.account_id in lists.x",
            "(",
            ")",
            "\\u00e9",
            "\\",
            "\n",
            "é",
            "\u{4e2d}",
            "block_at = 10\nreview_at = 50\n",
            "=",
            "[",
            "]",
            "#",
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]
            #[test]
            fn never_panics_on_arbitrary_files(text in "\\PC{0,400}") {
                let files = vec![("a.toml".to_string(), text), ("lists/a.txt".to_string(), "v\n".to_string())];
                let _ = RuleSet::from_sources(&files, &schema());
            }

            #[test]
            fn never_panics_on_toml_ish_files(
                parts in proptest::collection::vec(0..FRAGMENTS.len(), 0..60),
                list in "\\PC{0,80}",
            ) {
                let text: String = parts.iter().map(|i| FRAGMENTS[*i]).collect();
                let files = vec![("a.toml".to_string(), text.clone()), ("lists/a.txt".to_string(), list)];
                if let Err(errs) = RuleSet::from_sources(&files, &schema()) {
                    for e in &errs.0 {
                        if e.file == "a.toml" && e.line > 0 {
                            prop_assert!(e.line as usize <= text.lines().count().max(1) + 1, "{e} in {text:?}");
                        }
                    }
                }
            }
        }
    }
}
