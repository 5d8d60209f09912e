//! How hits combine into one decision (configurable in a rule file's `[policy]`).
//!
//! Order, first match wins:
//! 1. any active allow rule fired → `allow` (allow lists beat everything, so a
//!    known-good payee is never blocked by a noisy rule);
//! 2. any active block rule fired → `block`;
//! 3. otherwise `risk_score = clamp(sum of active hit scores + model_points, 0, 100)`,
//!    mapped through `challenge_at` / `review_at` / `block_at`, and the action is
//!    the stronger of that threshold action and the strongest active hit action.
//!
//! Shadow hits change nothing; they are kept in the hit list for analysis only.
//! A hit whose evaluation failed (`error: Some`, e.g. a division by zero on a
//! payer's first payment) adds no points, but is never silently dropped: under
//! `on_rule_error = "review"` (the default) a failed active block or review rule
//! makes the action at least `review`, so a person looks at what the rule could
//! not judge; `"ignore"` leaves the action to the other hits. Either way the
//! engine puts a RULE_ERROR reason on the decision and counts the error. Only an
//! allow rule that fired outranks it (step 1). The risk score is computed in
//! every case so it can be stored with the decision.

use serde::Deserialize;

use super::{AccountAction, Hit};

/// Decision for one payment, weakest first (the derive order is the strength).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Challenge,
    Review,
    Block,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Challenge => "challenge",
            Action::Review => "review",
            Action::Block => "block",
        }
    }
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "allow" => Some(Action::Allow),
            "challenge" => Some(Action::Challenge),
            "review" => Some(Action::Review),
            "block" => Some(Action::Block),
            _ => None,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a block or review rule that fails to evaluate does to the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRuleError {
    /// At least `review`: a person looks at what the rule could not judge.
    #[default]
    Review,
    /// Decided by the other hits (the error is still shown and counted).
    Ignore,
}

/// Thresholds on the 0..100 risk score; `[policy]` in one rule file.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub challenge_at: f64,
    pub review_at: f64,
    pub block_at: f64,
    pub on_rule_error: OnRuleError,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            challenge_at: 40.0,
            review_at: 60.0,
            block_at: 85.0,
            on_rule_error: OnRuleError::Review,
        }
    }
}

/// Which step of the policy produced the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    AllowRule,
    BlockRule,
    /// Score thresholds and/or the strongest hit action.
    Score,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub action: Action,
    pub risk_score: f64,
    pub decided_by: DecidedBy,
    /// Account actions of the active hits (deduplicated, in hit order); empty
    /// when an allow rule decided.
    pub account_actions: Vec<AccountAction>,
    /// Indices into the hit slice of the hits that count (active, no error),
    /// strongest first: the reasons to show.
    pub reasons: Vec<usize>,
}

impl Policy {
    /// Checks `0 <= challenge_at <= review_at <= block_at <= 100`.
    pub fn validate(&self) -> Result<(), String> {
        let ok = 0.0 <= self.challenge_at
            && self.challenge_at <= self.review_at
            && self.review_at <= self.block_at
            && self.block_at <= 100.0;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "policy thresholds must satisfy 0 <= challenge_at ({}) <= review_at ({}) <= block_at ({}) <= 100",
                self.challenge_at, self.review_at, self.block_at
            ))
        }
    }

    pub fn threshold_action(&self, score: f64) -> Action {
        if score >= self.block_at {
            Action::Block
        } else if score >= self.review_at {
            Action::Review
        } else if score >= self.challenge_at {
            Action::Challenge
        } else {
            Action::Allow
        }
    }

    /// The least action the failed hits ask for under `on_rule_error`.
    pub fn error_action(&self, hits: &[Hit]) -> Action {
        let asks_review = |h: &Hit| {
            h.error.is_some()
                && h.mode == super::Mode::Active
                && matches!(h.action, Action::Block | Action::Review)
        };
        match self.on_rule_error {
            OnRuleError::Review if hits.iter().any(asks_review) => Action::Review,
            _ => Action::Allow,
        }
    }

    pub fn decide(&self, hits: &[Hit], model_points: f64) -> Verdict {
        let counting = || hits.iter().enumerate().filter(|(_, h)| h.counts());
        let model = if model_points.is_finite() {
            model_points
        } else {
            0.0
        };
        let sum: f64 = counting().map(|(_, h)| h.score).sum::<f64>() + model;
        let risk_score = sum.clamp(0.0, 100.0);

        let mut reasons: Vec<usize> = counting().map(|(i, _)| i).collect();
        // Strongest action first, then highest score, then file order.
        reasons.sort_by(|&a, &b| {
            hits[b]
                .action
                .cmp(&hits[a].action)
                .then(hits[b].score.total_cmp(&hits[a].score))
                .then(a.cmp(&b))
        });

        if counting().any(|(_, h)| h.action == Action::Allow) {
            let reasons = reasons
                .into_iter()
                .filter(|&i| hits[i].action == Action::Allow)
                .collect();
            return Verdict {
                action: Action::Allow,
                risk_score,
                decided_by: DecidedBy::AllowRule,
                account_actions: Vec::new(),
                reasons,
            };
        }
        let mut account_actions = Vec::new();
        for (_, h) in counting() {
            if let Some(a) = h.account_action {
                if !account_actions.contains(&a) {
                    account_actions.push(a);
                }
            }
        }
        if counting().any(|(_, h)| h.action == Action::Block) {
            return Verdict {
                action: Action::Block,
                risk_score,
                decided_by: DecidedBy::BlockRule,
                account_actions,
                reasons,
            };
        }
        let strongest = counting()
            .map(|(_, h)| h.action)
            .max()
            .unwrap_or(Action::Allow);
        let action = self
            .threshold_action(risk_score)
            .max(strongest)
            .max(self.error_action(hits));
        Verdict {
            action,
            risk_score,
            decided_by: DecidedBy::Score,
            account_actions,
            reasons,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::rules::{EvalError, Mode};
    use std::sync::Arc;

    fn hit(action: Action, score: f64, mode: Mode) -> Hit {
        Hit {
            rule_index: 0,
            id: Arc::from("r"),
            mode,
            action,
            account_action: Some(AccountAction::LimitPayee),
            score,
            reason_code: Arc::from("R"),
            slots: Arc::from(Vec::new()),
            params: Arc::from(Vec::new()),
            error: None,
        }
    }

    #[test]
    fn order_of_precedence() {
        let p = Policy::default();
        let v = p.decide(
            &[
                hit(Action::Block, 0.0, Mode::Active),
                hit(Action::Allow, 0.0, Mode::Active),
            ],
            0.0,
        );
        assert_eq!(
            (v.action, v.decided_by),
            (Action::Allow, DecidedBy::AllowRule)
        );
        assert!(v.account_actions.is_empty());
        let v = p.decide(
            &[
                hit(Action::Block, 0.0, Mode::Active),
                hit(Action::Review, 30.0, Mode::Active),
            ],
            0.0,
        );
        assert_eq!(
            (v.action, v.decided_by, v.risk_score),
            (Action::Block, DecidedBy::BlockRule, 30.0)
        );
        let v = p.decide(
            &[
                hit(Action::Challenge, 30.0, Mode::Active),
                hit(Action::Challenge, 35.0, Mode::Active),
            ],
            0.0,
        );
        assert_eq!((v.action, v.risk_score), (Action::Review, 65.0));
        let v = p.decide(&[hit(Action::Review, 10.0, Mode::Active)], 0.0);
        assert_eq!(v.action, Action::Review);
        let v = p.decide(&[hit(Action::Challenge, 70.0, Mode::Active)], 50.0);
        assert_eq!((v.action, v.risk_score), (Action::Block, 100.0));
        assert_eq!(p.decide(&[], 39.9).action, Action::Allow);
        assert_eq!(p.decide(&[], f64::NAN).risk_score, 0.0);
    }

    #[test]
    fn shadow_hits_change_nothing_and_errors_add_no_points() {
        let ignore = Policy {
            on_rule_error: OnRuleError::Ignore,
            ..Policy::default()
        };
        let base = ignore.decide(&[hit(Action::Challenge, 10.0, Mode::Active)], 5.0);
        for extra in [
            Action::Allow,
            Action::Challenge,
            Action::Review,
            Action::Block,
        ] {
            let mut hits = vec![
                hit(Action::Challenge, 10.0, Mode::Active),
                hit(extra, 90.0, Mode::Shadow),
            ];
            let mut errored = hit(extra, 90.0, Mode::Active);
            errored.error = Some(EvalError::DivisionByZero);
            hits.push(errored);
            let v = ignore.decide(&hits, 5.0);
            assert_eq!(
                (v.action, v.risk_score, v.decided_by),
                (base.action, base.risk_score, base.decided_by)
            );
            assert_eq!(v.reasons, vec![0]);
        }
    }

    #[test]
    fn a_failed_block_or_review_rule_asks_for_review_by_default() {
        let p = Policy::default();
        for (failed, expected) in [
            (Action::Block, Action::Review),
            (Action::Review, Action::Review),
            (Action::Challenge, Action::Allow),
            (Action::Allow, Action::Allow),
        ] {
            let mut errored = hit(failed, 90.0, Mode::Active);
            errored.error = Some(EvalError::DivisionByZero);
            let v = p.decide(&[errored.clone()], 0.0);
            assert_eq!(v.action, expected, "a failed {failed} rule");
            assert_eq!(v.risk_score, 0.0, "no points from a rule that did not run");
            // Never weaker than what fired anyway, never stronger than review.
            let v = p.decide(
                &[errored.clone(), hit(Action::Block, 0.0, Mode::Active)],
                0.0,
            );
            assert_eq!(v.action, Action::Block);
            // A failed shadow rule asks for nothing.
            errored.mode = Mode::Shadow;
            assert_eq!(p.decide(&[errored], 0.0).action, Action::Allow);
        }
    }

    #[test]
    fn policy_validation() {
        assert!(Policy::default().validate().is_ok());
        assert!(Policy {
            challenge_at: 70.0,
            review_at: 60.0,
            block_at: 85.0,
            ..Policy::default()
        }
        .validate()
        .is_err());
    }
}
