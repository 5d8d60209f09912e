//! Shipping candidate rules as shadow and promoting shadow rules to active: files written
//! into the rules directory (`crate::rule_files`), checked by compiling the directory with
//! them first, then a reload and an audit entry with the ruleset version it brought in.
//! On the engine thread, so two analysts' changes and the directory watcher's reloads
//! never interleave.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::accounts::check_text;
use super::redecide::compile_over;
use super::{invalid, Engine, EngineError};
use crate::audit::AuditLog;
use crate::proto::{self, AuditEntry};
use crate::rule_files;
use crate::rules::{Mode, RuleSet};

/// What a ship or promote wrote and the set it brought in.
#[derive(Debug, Clone, PartialEq)]
pub struct RulesChanged {
    pub ruleset_version: String,
    pub rule_ids: Vec<String>,
    pub files: Vec<String>,
}

/// The name of the file a compiled rule came from, when it is directly in `dir`.
fn file_in(dir: &Path, rule_file: &str) -> Option<String> {
    let path = Path::new(rule_file);
    (path.parent() == Some(dir))
        .then(|| path.file_name()?.to_str().map(str::to_owned))
        .flatten()
}

fn rules_of<'a>(
    set: &'a RuleSet,
    dir: &'a Path,
    name: &'a str,
) -> impl Iterator<Item = &'a crate::rules::Rule> + 'a {
    set.rules()
        .iter()
        .filter(move |r| file_in(dir, &r.file).as_deref() == Some(name))
}

/// What the audit entry of a ship or promote says.
struct Logged<'a> {
    action: &'static str,
    rule_ids: Vec<String>,
    by: &'a str,
    note: &'a str,
    now_ms: i64,
}

impl Engine {
    fn rules_dir_for(&self, what: &str) -> Result<PathBuf, EngineError> {
        self.config.rules_dir.clone().ok_or_else(|| {
            EngineError::RuleFiles(format!(
                "cannot {what}: the server runs the rule pack built into the binary; start \
                 it with a rules_dir"
            ))
        })
    }

    /// Writes `files` (checked), reloads, and logs `entry` with the version it brought in.
    fn write_and_reload(
        &mut self,
        dir: &Path,
        files: Vec<(String, String)>,
        entry: Logged<'_>,
    ) -> Result<RulesChanged, EngineError> {
        let Logged {
            action,
            rule_ids,
            by,
            note,
            now_ms,
        } = entry;
        let before: Vec<Option<String>> = files
            .iter()
            .map(|(name, _)| std::fs::read_to_string(dir.join(name)).ok())
            .collect();
        let written = rule_files::write_all(dir, &files).map_err(|e| {
            EngineError::RuleFiles(format!(
                "cannot write rule files into `{}`: {e}",
                dir.display()
            ))
        });
        let reloaded = written.and_then(|()| self.reload_rules());
        let reloaded = match reloaded {
            Ok(reloaded) => reloaded,
            Err(e) => {
                // The directory changed under us (it compiled a moment ago): put back what
                // was there, so the files on disk stay the set that runs.
                for ((name, _), old) in files.iter().zip(before) {
                    let restored = match old {
                        Some(text) => rule_files::write_all(dir, &[(name.clone(), text)]),
                        None => std::fs::remove_file(dir.join(name)),
                    };
                    if let Err(error) = restored {
                        tracing::error!(file = %name, %error, "rule file not restored after a failed ship");
                    }
                }
                return Err(e);
            }
        };
        let entry = AuditEntry {
            seq: self.db.generate_id()?,
            at_ms: now_ms,
            by: by.to_owned(),
            action: action.to_owned(),
            ruleset_version: reloaded.version.clone(),
            model_version: self.model_version().to_owned(),
            note: note.to_owned(),
            rule_ids: rule_ids.clone(),
            ..AuditEntry::default()
        };
        let mut batch = sled::Batch::default();
        AuditLog::new(self.decisions.tree().clone()).stage(&mut batch, &entry);
        self.write(batch, &[])?;
        Ok(RulesChanged {
            ruleset_version: reloaded.version,
            rule_ids,
            files: files.into_iter().map(|(name, _)| name).collect(),
        })
    }

    /// `RuleAdmin.ShipRules`: see the proto.
    pub fn ship_rules(
        &mut self,
        req: &proto::ShipRulesRequest,
        by: &str,
        now_ms: i64,
    ) -> Result<RulesChanged, EngineError> {
        check_text("note", &req.note)?;
        if req.files.is_empty() || req.files.len() > rule_files::MAX_FILES {
            return Err(invalid(
                "files",
                format!("1 to {} rule files", rule_files::MAX_FILES),
            ));
        }
        let dir = self.rules_dir_for("ship rules")?;
        let mut files = Vec::with_capacity(req.files.len());
        for (name, text) in &req.files {
            rule_files::check_name(name).map_err(|m| invalid("files", m))?;
            let existing: Vec<_> = rules_of(&self.rules, &dir, name).collect();
            let on_disk = dir.join(name).exists();
            if on_disk && (existing.is_empty() || existing.iter().any(|r| r.mode != Mode::Shadow)) {
                return Err(EngineError::RuleFiles(format!(
                    "`{name}` is in the rules directory with active rules (or none): ship \
                     candidates under a new name, or promote them"
                )));
            }
            files.push((
                name.clone(),
                rule_files::with_mode(text, "shadow", |_| true),
            ));
        }
        let candidate = compile_over(Some(&dir), &files, &self.schema)?;
        let mut ids = BTreeSet::new();
        for (name, _) in &files {
            let shipped: Vec<_> = rules_of(&candidate, &dir, name).collect();
            if shipped.is_empty() {
                return Err(invalid("files", format!("`{name}` holds no rule")));
            }
            if let Some(active) = shipped.iter().find(|r| r.mode != Mode::Shadow) {
                return Err(invalid(
                    "files",
                    format!(
                        "rule `{}` in `{name}` could not be set to shadow; write its table \
                         as `[[rule]]` with one key per line",
                        active.id
                    ),
                ));
            }
            ids.extend(shipped.iter().map(|r| r.id.to_string()));
        }
        let ids = ids.into_iter().collect();
        let entry = Logged {
            action: "rules_shipped",
            rule_ids: ids,
            by,
            note: &req.note,
            now_ms,
        };
        self.write_and_reload(&dir, files, entry)
    }

    /// `RuleAdmin.PromoteRules`: see the proto.
    pub fn promote_rules(
        &mut self,
        req: &proto::PromoteRulesRequest,
        by: &str,
        now_ms: i64,
    ) -> Result<RulesChanged, EngineError> {
        check_text("note", &req.note)?;
        if req.rule_ids.is_empty() {
            return Err(invalid("rule_ids", "name at least one shadow rule"));
        }
        let dir = self.rules_dir_for("promote rules")?;
        let wanted: BTreeSet<&str> = req.rule_ids.iter().map(String::as_str).collect();
        let mut names = BTreeSet::new();
        for id in &wanted {
            let rule = self
                .rules
                .rules()
                .iter()
                .find(|r| &*r.id == *id)
                .ok_or_else(|| invalid("rule_ids", format!("no rule `{id}` in the live set")))?;
            if rule.mode != Mode::Shadow {
                return Err(EngineError::RuleFiles(format!(
                    "rule `{id}` is already active"
                )));
            }
            let name = file_in(&dir, &rule.file).ok_or_else(|| {
                EngineError::RuleFiles(format!(
                    "rule `{id}` comes from `{}`, not a file of the rules directory",
                    rule.file
                ))
            })?;
            names.insert(name);
        }
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            let text = crate::files::read_regular_text(&dir.join(&name), 1 << 20)
                .map_err(|e| EngineError::RuleFiles(format!("cannot read `{name}`: {e}")))?;
            let promoted = rule_files::with_mode(&text, "active", |id| wanted.contains(id));
            files.push((name, promoted));
        }
        let candidate = compile_over(Some(&dir), &files, &self.schema)?;
        for id in &wanted {
            if !candidate
                .rules()
                .iter()
                .any(|r| &*r.id == *id && r.mode == Mode::Active)
            {
                return Err(EngineError::RuleFiles(format!(
                    "rule `{id}` could not be set to active in its file; edit it by hand"
                )));
            }
        }
        let ids = wanted.iter().map(|s| s.to_string()).collect();
        let entry = Logged {
            action: "rules_promoted",
            rule_ids: ids,
            by,
            note: &req.note,
            now_ms,
        };
        self.write_and_reload(&dir, files, entry)
    }
}
