//! Explanations for merchants: why an account has its status, in Chinese and English with
//! the numbers as they were. Built only from stored records (decisions, the audit log), so
//! an explanation reads the same after the rules change.

use crate::accounts::AccountStore;
use crate::engine::{format_time, EngineError};
use crate::payment::format_yuan;
use crate::proto::{
    self, AccountStatus, AccountStatusChange, Decision, ExplainedDecision, Explanation,
    ReasonSource,
};
use crate::store::DecisionStore;

/// Ids of the decisions behind the account's current status: those named by its changes
/// since it was last NORMAL, oldest first. Empty for a NORMAL account.
pub fn decisions_behind_status(
    accounts: &AccountStore,
    account: &str,
) -> Result<Vec<String>, EngineError> {
    let history = accounts.history(account)?;
    let mut ids: Vec<String> = Vec::new();
    for change in restricting_changes(&history) {
        for id in &change.decision_ids {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
    }
    Ok(ids)
}

/// The changes since the account was last NORMAL (all of them if it never was again).
fn restricting_changes(history: &[AccountStatusChange]) -> &[AccountStatusChange] {
    match history.last() {
        Some(last) if last.to() != AccountStatus::Normal => {
            let start = history
                .iter()
                .rposition(|c| c.to() == AccountStatus::Normal)
                .map_or(0, |i| i + 1);
            &history[start..]
        }
        _ => &[],
    }
}

/// Everything stored about why `account` has its status, as of `now_ms` (for which
/// suppressions are still active). Re-scores are added by the engine on request.
pub fn explain(
    accounts: &AccountStore,
    decisions: &DecisionStore,
    account: &str,
    now_ms: i64,
) -> Result<Explanation, EngineError> {
    let history = accounts.history(account)?;
    let (status, since) = history
        .last()
        .map_or((AccountStatus::Normal, 0), |c| (c.to(), c.at_ms));
    let mut explained = Vec::new();
    for id in decisions_behind_status(accounts, account)? {
        if let Some(d) = decisions.by_decision_id(&id)? {
            explained.push(explained_decision(d));
        }
    }
    let suppressions = accounts
        .suppressions(account)?
        .into_iter()
        .filter(|s| s.until_ms > now_ms)
        .collect();
    let (summary, summary_zh) = summary(account, status, restricting_changes(&history), &explained);
    Ok(Explanation {
        account_id: account.to_owned(),
        status: status as i32,
        status_since_ms: since,
        decisions: explained,
        history,
        suppressions,
        summary,
        summary_zh,
    })
}

fn explained_decision(d: Decision) -> ExplainedDecision {
    let response = d.response.unwrap_or_default();
    let request = d.request.unwrap_or_default();
    let (model_factors, reasons) = response
        .reasons
        .into_iter()
        .partition(|r| r.source() == ReasonSource::Model);
    ExplainedDecision {
        decision_id: response.decision_id,
        payment_id: response.payment_id,
        event_time_ms: request.event_time_ms,
        amount_fen: request.amount_fen,
        action: response.action,
        risk_score: response.risk_score,
        reasons,
        model_factors,
        ruleset_version: response.ruleset_version,
        model_version: response.model_version,
        feature_set_version: d.feature_set_version,
        account_changes: d.account_changes,
        rescore: None,
    }
}

/// One paragraph in each language: the status, what caused it with its numbers, and what
/// would change it.
fn summary(
    account: &str,
    status: AccountStatus,
    changes: &[AccountStatusChange],
    decisions: &[ExplainedDecision],
) -> (String, String) {
    let Some(last) = changes.last() else {
        return (
            format!("Account {account} is in normal standing: nothing restricts it."),
            format!("账户 {account} 状态正常，没有任何限制。"),
        );
    };
    let (word, word_zh) = match status {
        AccountStatus::Frozen => ("frozen", "冻结"),
        _ => ("limited", "限制"),
    };
    let mut en = format!(
        "Account {account} is {word} since {}.",
        format_time(last.at_ms)
    );
    let mut zh = format!(
        "账户 {account} 自 {} 起被{word_zh}。",
        format_time(last.at_ms)
    );
    if decisions.is_empty() {
        en.push_str(&format!(
            " It was set by {}: {}.",
            last.changed_by, last.note
        ));
        zh.push_str(&format!("由 {} 设置：{}。", last.changed_by, last.note));
    }
    for d in decisions {
        en.push_str(&format!(
            " Payment {} of {} CNY at {}:",
            d.payment_id,
            format_yuan(d.amount_fen),
            format_time(d.event_time_ms)
        ));
        zh.push_str(&format!(
            "付款 {}（{} 元，{}）：",
            d.payment_id,
            format_yuan(d.amount_fen),
            format_time(d.event_time_ms)
        ));
        let causes: Vec<&proto::Reason> =
            d.reasons.iter().filter(|r| r.account_action != 0).collect();
        let shown = if causes.is_empty() {
            d.reasons.iter().collect()
        } else {
            causes
        };
        for r in &shown {
            en.push_str(&format!(" {} (rule {});", r.message, r.id));
            zh.push_str(&format!("{}（规则 {}）；", r.message_zh, r.id));
        }
        let remedies: Vec<&proto::Remedy> = shown.iter().flat_map(|r| &r.remedies).collect();
        if !remedies.is_empty() {
            en.push_str(" what would change it:");
            zh.push_str("如何改变：");
            for m in remedies {
                en.push_str(&format!(" {};", m.message));
                zh.push_str(&format!("{}；", m.message_zh));
            }
        }
    }
    en.push_str(" You may file an appeal.");
    zh.push_str("您可以提出申诉。");
    (en, zh)
}
