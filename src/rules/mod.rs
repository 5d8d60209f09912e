//! Rule engine: TOML rule files with a small compiled expression language.
//!
//! Pipeline (each stage in its own module, errors always carry file:line:column):
//! - [`parse`]: expression text → AST with byte spans;
//! - [`compile`]: names resolved against the engine's [`Schema`], params inlined,
//!   types checked → a compact evaluation plan; message templates checked;
//! - [`eval`]: runs the plan over one payment's variables (no allocation unless a
//!   rule fires);
//! - [`file`](mod@file): rule files (`[ruleset]`, `[params]`, `[lists]`, `[policy]`,
//!   `[[rule]]`), list files with per-entry expiry, directory loading, versioning;
//! - [`verdict`]: how hits combine into one action and risk score;
//! - [`remedy`]: what would have kept a fired rule from firing;
//! - [`cases`]: data-driven rule tests (`rules/tests/*.toml`).
//!
//! # The language
//! Types: number (f64), string, bool; checked at compile time.
//! - literals: `500000`, `1_000`, `2.5e3`, `"PERSONAL"` / `'PERSONAL'`, `true`, `false`;
//! - names: schema variables (`payee.distinct_payers_1h`), `params.NAME` (inlined
//!   constants), `lists.NAME` (only right of `in`);
//! - operators, loosest first: `||`; `&&`; `== != < <= > >= in` (no chaining);
//!   `+ -`; `* / %`; unary `! -`; parentheses; `min(..) max(..) abs(x)`;
//! - `==`/`!=` need both sides of one type; ordering and arithmetic need numbers;
//!   `&&`, `||`, `!` and `when` need bools; `x in [..]` needs literal items of
//!   `x`'s type; `x in lists.NAME` needs a string `x`.
//! - `&&` / `||` short-circuit, so `a > 0 && b / a > 10` never divides by zero.
//!
//! Evaluation errors (division or remainder by zero, a variable missing or of the
//! wrong type) never panic: the rule does not fire and a [`Hit`] with
//! `error: Some(..)` is recorded so the decision shows which rule failed.
//! [`RuleSet::decide`] adds no points for such hits and, under `[policy]
//! on_rule_error = "review"` (the default), holds the payment for review when a
//! block or review rule failed (see `verdict`). A literal `/ 0` is a compile error.
//!
//! Limits (untrusted text): expression 8 KiB and 64 levels deep
//! ([`parse::MAX_EXPR_LEN`], [`parse::MAX_EXPR_DEPTH`]); rule file 1 MiB, list
//! file 64 MiB, 1000 rules, 256 files, message 2 KiB (see [`file`](mod@file)).
//!
//! Messages: `{name}` / `{params.NAME}` placeholders, checked at compile time;
//! integral numbers print without decimals; `{name:yuan}` prints fen as yuan
//! with thousands separators and 2 decimals. Nothing is converted to yuan implicitly.
//!
//! # Usage
//! ```ignore
//! let schema = Schema::new(vec![
//!     SchemaVar::new("payee.kind", Type::Str, "collecting account kind"),
//!     SchemaVar::new("payee.distinct_payers_1h", Type::Num, "different payers in the last hour"),
//! ]);
//! let rules = RuleSet::load_dir(Path::new("rules"), &schema)?; // Err displays file:line:col per error
//! let vars = [Value::Str("PERSONAL"), Value::Num(37.0)];       // index = schema slot
//! let mut hits = Vec::with_capacity(16);
//! rules.evaluate(&vars, event_time_ms, &mut hits);
//! let verdict = rules.decide(&hits, model_points);              // action, risk_score, reasons
//! for &i in &verdict.reasons {
//!     println!("{} {}", hits[i].reason_code, rules.render_message(&hits[i], &vars));
//! }
//! ```

pub mod cases;
pub mod compile;
pub mod eval;
pub mod file;
pub mod parse;
pub mod remedy;
pub mod verdict;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::units::Unit;

pub use cases::{run_test_files, TestFailure, TestReport};
pub use eval::EvalError;
pub use remedy::Remedy;
pub use verdict::{Action, OnRuleError, Policy, Verdict};

/// Type of a variable or expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    Num,
    Str,
    Bool,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Num => "number",
            Type::Str => "string",
            Type::Bool => "bool",
        })
    }
}

/// A variable value supplied by the engine; index = schema slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Num(f64),
    Str(&'a str),
    Bool(bool),
}

impl Value<'_> {
    pub fn ty(&self) -> Type {
        match self {
            Value::Num(_) => Type::Num,
            Value::Str(_) => Type::Str,
            Value::Bool(_) => Type::Bool,
        }
    }
    /// The zero value of a type (used for unspecified variables in rule tests).
    pub fn zero(ty: Type) -> Value<'static> {
        match ty {
            Type::Num => Value::Num(0.0),
            Type::Str => Value::Str(""),
            Type::Bool => Value::Bool(false),
        }
    }
}

/// One variable the engine can supply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaVar {
    pub name: String,
    pub ty: Type,
    pub description: String,
    /// What a merchant reads for it, in English and Chinese.
    pub label: String,
    pub label_zh: String,
    /// How its values are written for people.
    pub unit: Unit,
}

impl SchemaVar {
    /// A variable whose label is its description (tests, tools).
    pub fn new(name: &str, ty: Type, description: &str) -> SchemaVar {
        SchemaVar {
            name: name.to_owned(),
            ty,
            description: description.to_owned(),
            label: description.to_owned(),
            label_zh: description.to_owned(),
            unit: match ty {
                Type::Num => Unit::Number,
                Type::Str => Unit::Text,
                Type::Bool => Unit::YesNo,
            },
        }
    }
}

/// The variables rules may reference; a variable's slot is its index.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    vars: Vec<SchemaVar>,
    by_name: HashMap<String, usize>,
}

impl Schema {
    /// Later duplicates of a name are ignored (the first slot wins).
    pub fn new(vars: Vec<SchemaVar>) -> Schema {
        let mut by_name = HashMap::with_capacity(vars.len());
        for (i, v) in vars.iter().enumerate() {
            by_name.entry(v.name.clone()).or_insert(i);
        }
        Schema { vars, by_name }
    }
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
    pub fn vars(&self) -> &[SchemaVar] {
        &self.vars
    }
    pub fn len(&self) -> usize {
        self.vars.len()
    }
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
}

/// Active rules decide; shadow rules are evaluated and recorded only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Active,
    Shadow,
}

/// What to do to an account beyond this payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountAction {
    LimitPayee,
    FreezePayee,
    LimitPayer,
    FreezePayer,
}

impl AccountAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            AccountAction::LimitPayee => "limit_payee",
            AccountAction::FreezePayee => "freeze_payee",
            AccountAction::LimitPayer => "limit_payer",
            AccountAction::FreezePayer => "freeze_payer",
        }
    }
}

/// A rule that fired (or failed to evaluate: `error` is `Some`).
///
/// Shared fields are `Arc`s so recording a hit copies pointers, not strings.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Index into [`RuleSet::rules`].
    pub rule_index: usize,
    pub id: Arc<str>,
    pub mode: Mode,
    pub action: Action,
    pub account_action: Option<AccountAction>,
    pub score: f64,
    pub reason_code: Arc<str>,
    /// Schema slots the rule's condition and messages reference (the evidence).
    pub slots: Arc<[u32]>,
    /// Params the rule used, with the values in force.
    pub params: Arc<[(Arc<str>, f64)]>,
    /// `Some` when evaluation failed; the rule then did not fire.
    pub error: Option<EvalError>,
}

impl Hit {
    /// True when the rule fired (evaluated to true without error).
    pub fn fired(&self) -> bool {
        self.error.is_none()
    }
    /// True when the hit may influence the decision.
    pub fn counts(&self) -> bool {
        self.error.is_none() && self.mode == Mode::Active
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: Arc<str>,
    pub description: String,
    /// File the rule came from and the 1-based line of its `when`.
    pub file: String,
    pub line: u32,
    pub when: String,
    pub action: Action,
    pub account_action: Option<AccountAction>,
    pub score: f64,
    pub reason_code: Arc<str>,
    pub mode: Mode,
    pub tags: Vec<String>,
    pub slots: Arc<[u32]>,
    pub params: Arc<[(Arc<str>, f64)]>,
    pub(crate) plan: compile::Node,
    pub(crate) message: compile::Template,
    pub(crate) message_zh: Option<compile::Template>,
    pub(crate) advice: Option<compile::Template>,
    pub(crate) advice_zh: Option<compile::Template>,
}

/// One error with its position in a rule file. `line == 0`: no position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

/// Every error found while loading a rule set, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A named list (block list / allow list): entry → optional expiry (unix ms).
#[derive(Debug, Clone, Default)]
pub struct List {
    pub name: String,
    pub(crate) entries: HashMap<Box<str>, Option<i64>>,
}

impl List {
    /// Membership at `event_time_ms`: an entry expires at its `expires=` instant.
    pub fn contains(&self, value: &str, event_time_ms: i64) -> bool {
        match self.entries.get(value) {
            Some(None) => true,
            Some(Some(expires)) => event_time_ms < *expires,
            None => false,
        }
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What a merchant reads for a param, from `name = { value = .., label = "..", label_zh = "..",
/// unit = ".." }` in a rule file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamLabel {
    pub label: String,
    pub label_zh: String,
    pub unit: Unit,
}

/// A compiled, versioned set of rules plus the policy that combines their hits.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub(crate) label: String,
    pub(crate) version: String,
    pub(crate) rules: Vec<Rule>,
    pub(crate) lists: Vec<List>,
    pub(crate) params: Vec<(String, f64)>,
    pub(crate) param_labels: HashMap<String, ParamLabel>,
    pub(crate) policy: Policy,
    pub(crate) schema_len: usize,
}

impl RuleSet {
    /// Load every `*.toml` directly under `dir` (name order) and the list files
    /// they name. Returns every error found, not just the first.
    pub fn load_dir(dir: &Path, schema: &Schema) -> Result<RuleSet, RuleErrors> {
        file::load_dir(dir, schema)
    }

    /// `load_dir` as if `overrides` (name, text) were written into `dir` first: a file
    /// named like one there replaces it, any other is added. Errors name the files as a
    /// reload of that directory would.
    pub fn load_dir_with(
        dir: &Path,
        overrides: &[(String, String)],
        schema: &Schema,
    ) -> Result<RuleSet, RuleErrors> {
        file::load_dir_with(dir, overrides, schema)
    }

    /// Build from in-memory files. Names ending in `.toml` are rule files; any
    /// other entry is a list file, found by the path a `[lists]` entry gives.
    pub fn from_sources(
        files: &[(String, String)],
        schema: &Schema,
    ) -> Result<RuleSet, RuleErrors> {
        file::from_sources(files, schema)
    }

    /// `<label>@<first 12 hex of sha256 over all files' names + contents, sorted>`.
    pub fn version(&self) -> &str {
        &self.version
    }
    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
    pub fn lists(&self) -> &[List] {
        &self.lists
    }
    pub fn params(&self) -> &[(String, f64)] {
        &self.params
    }
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The words of a param as its file gives them; a param without a label reads as "a
    /// limit set by the risk team", never by its name.
    pub fn param_label(&self, name: &str) -> ParamLabel {
        self.param_labels
            .get(name)
            .cloned()
            .unwrap_or_else(|| ParamLabel {
                label: "a limit set by the risk team".into(),
                label_zh: "风控设定的限值".into(),
                unit: Unit::Number,
            })
    }

    /// Evaluate every rule in file order, appending fired (and failed) rules to
    /// `hits`. Does not clear `hits`. Allocates only when pushing a hit.
    pub fn evaluate(&self, vars: &[Value], event_time_ms: i64, hits: &mut Vec<Hit>) {
        let ctx = eval::Ctx {
            vars,
            lists: &self.lists,
            now_ms: event_time_ms,
        };
        for (i, rule) in self.rules.iter().enumerate() {
            let error = match rule.plan.eval_bool(&ctx) {
                Ok(false) => continue,
                Ok(true) => None,
                Err(e) => Some(e),
            };
            hits.push(Hit {
                rule_index: i,
                id: rule.id.clone(),
                mode: rule.mode,
                action: rule.action,
                account_action: rule.account_action,
                score: rule.score,
                reason_code: rule.reason_code.clone(),
                slots: rule.slots.clone(),
                params: rule.params.clone(),
                error,
            });
        }
    }

    /// Combine hits into one verdict under this rule set's `[policy]`.
    pub fn decide(&self, hits: &[Hit], model_points: f64) -> Verdict {
        self.policy.decide(hits, model_points)
    }

    /// The rule's `message` with `{name}` placeholders filled from `vars`/params.
    pub fn render_message(&self, hit: &Hit, vars: &[Value]) -> String {
        match self.rules.get(hit.rule_index) {
            Some(rule) => rule.message.render(vars),
            None => String::new(),
        }
    }

    /// The rule's `message_zh`, falling back to `message` when it has none.
    pub fn render_message_zh(&self, hit: &Hit, vars: &[Value]) -> String {
        match self.rules.get(hit.rule_index) {
            Some(rule) => rule
                .message_zh
                .as_ref()
                .unwrap_or(&rule.message)
                .render(vars),
            None => String::new(),
        }
    }

    /// The evidence of a hit: each referenced variable and its value, for storing with
    /// the decision (params used are in `hit.params`).
    pub fn evidence<'s, 'v>(
        &self,
        hit: &Hit,
        schema: &'s Schema,
        vars: &[Value<'v>],
    ) -> Vec<(&'s SchemaVar, Option<Value<'v>>)> {
        hit.slots
            .iter()
            .filter_map(|&slot| {
                let var = schema.vars().get(slot as usize)?;
                Some((var, vars.get(slot as usize).copied()))
            })
            .collect()
    }

    /// Every schema slot some rule reads (sorted): the features the engine
    /// must compute for this rule set.
    pub fn referenced_slots(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self
            .rules
            .iter()
            .flat_map(|r| r.slots.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Number of schema slots the rule set was compiled against.
    pub fn schema_len(&self) -> usize {
        self.schema_len
    }
}

/// Unit tests compile against exactly the schema the engine supplies.
#[cfg(test)]
pub(crate) mod test_schema {
    pub fn schema() -> super::Schema {
        crate::vars::schema(&crate::features::FeatureSet::defaults())
    }
}
