//! Data-driven rule tests (`rules/<pack>/tests/*.toml`), run by `fengkong rules test`.
//!
//! ```toml
//! [[case]]
//! name = "rented personal code"
//! vars = { "payee.kind" = "PERSONAL", "payee.distinct_payers_1h" = 37 }
//! expect_hits = ["rent_code_many_payers"]   # exact set of fired rules (active and shadow)
//! expect_action = "review"
//! # optional: expect_hits_include = [..], expect_not_hits = [..],
//! #           event_time = "2026-11-28T12:00:00Z", model_points = 0
//! ```
//! Unspecified variables are 0 / "" / false. A pack passes when every case
//! passes and every rule fires in at least one case.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use super::file::parse_timestamp_ms;
use super::{Action, RuleSet, Schema, Type, Value};

/// Event time used when a case gives none: 2026-11-28T12:00:00Z.
pub const DEFAULT_EVENT_TIME_MS: i64 = 1_795_867_200_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    vars: BTreeMap<String, toml::Value>,
    expect_hits: Option<Vec<String>>,
    #[serde(default)]
    expect_hits_include: Vec<String>,
    #[serde(default)]
    expect_not_hits: Vec<String>,
    expect_action: Option<String>,
    event_time: Option<String>,
    #[serde(default)]
    model_points: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestFailure {
    pub file: String,
    pub case: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    pub files: usize,
    pub cases: usize,
    pub passed: usize,
    pub failures: Vec<TestFailure>,
    /// Rules that fired in no case.
    pub untested_rules: Vec<String>,
}

impl TestReport {
    pub fn is_success(&self) -> bool {
        self.failures.is_empty() && self.untested_rules.is_empty() && self.cases > 0
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for x in &self.failures {
            writeln!(f, "FAIL {} `{}`: {}", x.file, x.case, x.message)?;
        }
        for r in &self.untested_rules {
            writeln!(f, "UNTESTED rule `{r}` fires in no case")?;
        }
        write!(
            f,
            "{} files, {} cases, {} passed, {} failed, {} untested rules",
            self.files,
            self.cases,
            self.passed,
            self.failures.len(),
            self.untested_rules.len()
        )
    }
}

/// Run every `*.toml` case file directly under `dir` (name order).
pub fn run_test_files(dir: &Path, ruleset: &RuleSet, schema: &Schema) -> TestReport {
    let mut report = TestReport::default();
    let mut fired_ever: BTreeSet<String> = BTreeSet::new();
    let dir_name = dir.display().to_string();
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect(),
        Err(e) => {
            report.failures.push(TestFailure {
                file: dir_name,
                case: String::new(),
                message: format!("cannot read test directory: {e}"),
            });
            return report;
        }
    };
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let display = path.display().to_string();
        report.files += 1;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                report.failures.push(TestFailure {
                    file: display,
                    case: String::new(),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        run_cases(
            &display,
            &text,
            ruleset,
            schema,
            &mut report,
            &mut fired_ever,
        );
    }
    report.untested_rules = ruleset
        .rules()
        .iter()
        .map(|r| r.id.to_string())
        .filter(|id| !fired_ever.contains(id))
        .collect();
    report
}

/// Run the cases of one file's text (exposed for in-memory use and tests).
pub fn run_cases(
    file: &str,
    text: &str,
    ruleset: &RuleSet,
    schema: &Schema,
    report: &mut TestReport,
    fired_ever: &mut BTreeSet<String>,
) {
    let parsed: CaseFile = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            let (line, col) = super::file::line_col(text, e.span().map(|s| s.start).unwrap_or(0));
            report.failures.push(TestFailure {
                file: format!("{file}:{line}:{col}"),
                case: String::new(),
                message: e.message().trim().to_string(),
            });
            return;
        }
    };
    let known: BTreeSet<&str> = ruleset.rules().iter().map(|r| &*r.id).collect();
    for case in parsed.case {
        report.cases += 1;
        let mut problems = Vec::new();
        let mut vars: Vec<Value> = schema.vars().iter().map(|v| Value::zero(v.ty)).collect();
        for (name, value) in &case.vars {
            let Some(slot) = schema.slot(name) else {
                problems.push(format!("unknown variable `{name}`"));
                continue;
            };
            let ty = schema.vars()[slot].ty;
            vars[slot] = match (ty, value) {
                (Type::Num, toml::Value::Integer(i)) => Value::Num(*i as f64),
                (Type::Num, toml::Value::Float(x)) => Value::Num(*x),
                (Type::Str, toml::Value::String(s)) => Value::Str(s.as_str()),
                (Type::Bool, toml::Value::Boolean(b)) => Value::Bool(*b),
                (ty, v) => {
                    problems.push(format!("variable `{name}` is a {ty}, the case gives `{v}`"));
                    continue;
                }
            };
        }
        for id in case
            .expect_hits
            .iter()
            .flatten()
            .chain(&case.expect_hits_include)
            .chain(&case.expect_not_hits)
        {
            if !known.contains(id.as_str()) {
                problems.push(format!("expected rule `{id}` does not exist"));
            }
        }
        let event_time = match &case.event_time {
            None => DEFAULT_EVENT_TIME_MS,
            Some(t) => parse_timestamp_ms(t).unwrap_or_else(|| {
                problems.push(format!("invalid event_time `{t}`"));
                DEFAULT_EVENT_TIME_MS
            }),
        };
        let mut hits = Vec::new();
        ruleset.evaluate(&vars, event_time, &mut hits);
        for h in &hits {
            if let Some(e) = &h.error {
                problems.push(format!("rule `{}` failed to evaluate: {e}", h.id));
            }
        }
        let fired: BTreeSet<String> = hits
            .iter()
            .filter(|h| h.fired())
            .map(|h| h.id.to_string())
            .collect();
        if let Some(want) = &case.expect_hits {
            let want: BTreeSet<String> = want.iter().cloned().collect();
            if want != fired {
                problems.push(format!("expected hits {want:?}, got {fired:?}"));
            }
        }
        for id in &case.expect_hits_include {
            if !fired.contains(id) {
                problems.push(format!("expected `{id}` to fire, got {fired:?}"));
            }
        }
        for id in &case.expect_not_hits {
            if fired.contains(id) {
                problems.push(format!("expected `{id}` not to fire"));
            }
        }
        if let Some(a) = &case.expect_action {
            let verdict = ruleset.decide(&hits, case.model_points);
            match Action::parse(a) {
                Some(want) if want == verdict.action => {}
                Some(want) => problems.push(format!(
                    "expected action `{want}`, got `{}` (risk score {})",
                    verdict.action, verdict.risk_score
                )),
                None => problems.push(format!("unknown action `{a}`")),
            }
        }
        fired_ever.extend(fired);
        if problems.is_empty() {
            report.passed += 1;
        } else {
            report.failures.push(TestFailure {
                file: file.to_string(),
                case: case.name,
                message: problems.join("; "),
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::rules::test_schema::schema;
    use std::path::PathBuf;

    /// The bundled pack.
    pub(crate) fn pack_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules")
    }

    #[test]
    fn bundled_pack_passes_its_cases() {
        let s = schema();
        let rs = match RuleSet::load_dir(&pack_dir(), &s) {
            Ok(rs) => rs,
            Err(e) => panic!("{e}"),
        };
        assert!(rs.rules().len() >= 30, "{} rules", rs.rules().len());
        assert!(rs.version().starts_with("default-2026-11@"));
        let report = run_test_files(&pack_dir().join("tests"), &rs, &s);
        assert!(report.is_success(), "{report}");
        assert!(report.cases >= 40);
    }

    #[test]
    fn failures_are_reported() {
        let s = schema();
        let rs = RuleSet::load_dir(&pack_dir(), &s).unwrap();
        let mut report = TestReport::default();
        let mut fired = BTreeSet::new();
        let text = r#"
[[case]]
name = "wrong"
vars = { "payee.kind" = 3, "nope" = 1 }
expect_hits = ["rent_code_many_payers", "no_such_rule"]
expect_action = "block"
"#;
        run_cases("t.toml", text, &rs, &s, &mut report, &mut fired);
        assert_eq!(report.failures.len(), 1);
        let m = &report.failures[0].message;
        assert!(m.contains("`payee.kind` is a string"), "{m}");
        assert!(m.contains("unknown variable `nope`"), "{m}");
        assert!(m.contains("`no_such_rule` does not exist"), "{m}");
        assert!(m.contains("expected action `block`, got `allow`"), "{m}");
        run_cases(
            "bad.toml",
            "[[case]]\nnme = 1\n",
            &rs,
            &s,
            &mut report,
            &mut fired,
        );
        assert!(
            report.failures[1].file.starts_with("bad.toml:2:1"),
            "{:?}",
            report.failures[1]
        );
    }
}
