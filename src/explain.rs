//! Explanations for merchants: why an account has its status, in Chinese and English with
//! the numbers as they were. Built only from stored records (decisions, the audit log), so
//! an explanation reads the same after the rules change.

use crate::accounts::AccountStore;
use crate::engine::{format_time, set_by, EngineError};
use crate::payment::format_yuan;
use crate::proto::{
    self, AccountStatus, AccountStatusChange, Decision, ExplainedDecision, Explanation,
    ReasonSource,
};
use crate::store::DecisionStore;
use crate::units::{Lang, Unit};

/// How many of a NORMAL account's latest non-ALLOW decisions an explanation shows, and how
/// many of them its summary tells.
pub const LATEST_FLAGGED: usize = 10;
const SUMMARIZED: usize = 3;

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
    let changes = restricting_changes(&history);
    let mut explained = Vec::new();
    if changes.is_empty() {
        // Nothing restricts the account: what stands out is what was not simply allowed.
        for d in decisions.flagged(account, LATEST_FLAGGED)? {
            explained.push(explained_decision(d));
        }
    } else {
        for id in decisions_behind_status(accounts, account)? {
            if let Some(d) = decisions.by_decision_id(&id)? {
                explained.push(explained_decision(d));
            }
        }
    }
    let suppressions = accounts
        .suppressions(account)?
        .into_iter()
        .filter(|s| s.until_ms > now_ms)
        .collect();
    let (summary, summary_zh) = summary(account, status, changes, &explained);
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
        model_probability: response.model_probability,
    }
}

/// One paragraph in each language, for the account's owner: the status, what caused it with
/// its numbers, and what would change it. Rule and key ids stay out of it: analysts see them
/// beside the reasons.
fn summary(
    account: &str,
    status: AccountStatus,
    changes: &[AccountStatusChange],
    decisions: &[ExplainedDecision],
) -> (String, String) {
    let Some(last) = changes.last() else {
        let mut en = format!("Account {account} is in normal standing: nothing restricts it.");
        let mut zh = format!("账户 {account} 状态正常，没有任何限制。");
        if !decisions.is_empty() {
            en.push_str(" Recent payments that were not simply allowed:");
            zh.push_str("近期未被直接放行的付款：");
            for d in decisions.iter().take(SUMMARIZED) {
                let (word, word_zh) = action_words(d.action());
                payment_words(d, &mut en, &mut zh);
                en.push_str(&format!(" was {word}:"));
                zh.push_str(&format!("{word_zh}："));
                for r in &d.reasons {
                    en.push_str(&format!(" {};", clause(&r.message)));
                    zh.push_str(&format!("{}；", clause(&r.message_zh)));
                }
                if d.reasons.is_empty() {
                    let percent = Unit::Percent.format(d.model_probability, Lang::En);
                    en.push_str(&format!(
                        " the risk model put the fraud probability at {percent};"
                    ));
                    zh.push_str(&format!("风控模型估计的欺诈概率为 {percent}；"));
                }
            }
            if decisions.len() > SUMMARIZED {
                let more = decisions.len() - SUMMARIZED;
                en.push_str(&format!(" and {more} more, listed below."));
                zh.push_str(&format!("另有 {more} 笔，见下文。"));
            }
        }
        return finish(en, zh);
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
        let (by, by_zh) = set_by(&last.changed_by);
        en.push_str(&format!(" It was set {by}: {}.", last.note));
        zh.push_str(&format!("{by_zh}：{}。", last.note));
    }
    for d in decisions {
        payment_words(d, &mut en, &mut zh);
        en.push(':');
        zh.push('：');
        let causes: Vec<&proto::Reason> =
            d.reasons.iter().filter(|r| r.account_action != 0).collect();
        let shown = if causes.is_empty() {
            d.reasons.iter().collect()
        } else {
            causes
        };
        for r in &shown {
            en.push_str(&format!(" {};", clause(&r.message)));
            zh.push_str(&format!("{}；", clause(&r.message_zh)));
        }
        let remedies: Vec<&proto::Remedy> = shown.iter().flat_map(|r| &r.remedies).collect();
        if !remedies.is_empty() {
            en.push_str(" what would change it:");
            zh.push_str("如何改变：");
            for m in remedies {
                en.push_str(&format!(" {};", clause(&m.message)));
                zh.push_str(&format!("{}；", clause(&m.message_zh)));
            }
        }
    }
    finish(en, zh)
}

/// Ends both paragraphs with a full stop rather than the last list separator.
fn finish(en: String, zh: String) -> (String, String) {
    let en = match en.strip_suffix(';') {
        Some(body) => format!("{body}."),
        None => en,
    };
    let zh = match zh.strip_suffix('；') {
        Some(body) => format!("{body}。"),
        None => zh,
    };
    (en, zh)
}

/// " Payment P of 12.00 CNY at T" / "付款 P（12.00 元，T）".
fn payment_words(d: &ExplainedDecision, en: &mut String, zh: &mut String) {
    en.push_str(&format!(
        " Payment {} of {} CNY at {}",
        d.payment_id,
        format_yuan(d.amount_fen),
        format_time(d.event_time_ms)
    ));
    zh.push_str(&format!(
        "付款 {}（{} 元，{}）",
        d.payment_id,
        format_yuan(d.amount_fen),
        format_time(d.event_time_ms)
    ));
}

/// A message as one clause of a sentence: without its own final full stop.
fn clause(message: &str) -> &str {
    message.trim_end_matches(['.', '。'])
}

/// What happened to a payment, in words.
fn action_words(action: proto::Action) -> (&'static str, &'static str) {
    match action {
        proto::Action::Block => ("blocked", "被拦截"),
        proto::Action::Review => ("held for review", "转人工审核"),
        proto::Action::Challenge => ("asked for extra verification", "需要额外验证"),
        proto::Action::Allow | proto::Action::Unspecified => ("allowed", "已放行"),
    }
}
