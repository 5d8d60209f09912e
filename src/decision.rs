//! Turns rule hits and the verdict into what the gateway sees and what is stored: each
//! reason in words with its numbers, the evidence behind it, and the action.

use crate::proto;
use crate::rules::{self, Hit, RuleSet, Schema, SchemaVar, Value};

/// Rules that only look a value up in a list speak for the list, not for a judgement.
const LIST_TAGS: &[&str] = &["allow_list", "block_list"];

pub fn action(action: rules::Action) -> proto::Action {
    match action {
        rules::Action::Allow => proto::Action::Allow,
        rules::Action::Challenge => proto::Action::Challenge,
        rules::Action::Review => proto::Action::Review,
        rules::Action::Block => proto::Action::Block,
    }
}

pub fn account_action(action: rules::AccountAction) -> proto::AccountAction {
    match action {
        rules::AccountAction::LimitPayee => proto::AccountAction::LimitPayee,
        rules::AccountAction::FreezePayee => proto::AccountAction::FreezePayee,
        rules::AccountAction::LimitPayer => proto::AccountAction::LimitPayer,
        rules::AccountAction::FreezePayer => proto::AccountAction::FreezePayer,
    }
}

/// One hit as a reason: code, message (English and Chinese) with the actual values, and
/// every variable and parameter the rule read, as they were.
pub fn reason(rules: &RuleSet, schema: &Schema, hit: &Hit, vars: &[Value]) -> proto::Reason {
    let is_list = rules
        .rules()
        .get(hit.rule_index)
        .is_some_and(|r| r.tags.iter().any(|t| LIST_TAGS.contains(&t.as_str())));
    let mut evidence: Vec<proto::Evidence> = rules
        .evidence(hit, schema, vars)
        .into_iter()
        .map(|(var, value)| evidence(var, value))
        .collect();
    evidence.extend(hit.params.iter().map(|(name, value)| {
        let words = rules.param_label(name);
        proto::Evidence {
            name: format!("params.{name}"),
            value: *value,
            text: String::new(),
            label: words.label,
            label_zh: words.label_zh,
            unit: words.unit.as_str().into(),
        }
    }));
    proto::Reason {
        code: hit.reason_code.to_string(),
        source: if is_list {
            proto::ReasonSource::List
        } else {
            proto::ReasonSource::Rule
        } as i32,
        id: hit.id.to_string(),
        message: rules.render_message(hit, vars),
        message_zh: rules.render_message_zh(hit, vars),
        contribution: hit.score,
        action: action(hit.action) as i32,
        account_action: hit
            .account_action
            .map_or(proto::AccountAction::Unspecified, account_action)
            as i32,
        evidence,
        remedies: rules
            .remedies(hit, schema, vars)
            .into_iter()
            .map(|r| proto::Remedy {
                message: r.message,
                message_zh: r.message_zh,
                name: r.name,
                value: r.value,
                limit: r.limit,
            })
            .collect(),
    }
}

/// A variable's value as evidence, with the words and unit a merchant reads it in.
pub fn evidence(var: &SchemaVar, value: Option<Value>) -> proto::Evidence {
    let (value, text) = match value {
        Some(Value::Num(n)) => (n, String::new()),
        Some(Value::Bool(b)) => (if b { 1.0 } else { 0.0 }, String::new()),
        Some(Value::Str(s)) => (0.0, s.to_owned()),
        None => (0.0, String::new()),
    };
    proto::Evidence {
        name: var.name.clone(),
        value,
        text,
        label: var.label.clone(),
        label_zh: var.label_zh.clone(),
        unit: var.unit.as_str().into(),
    }
}

/// A rule that failed to evaluate, as a reason: its id and the error for analysts (the
/// `rule_error` evidence, beside the values it read), plain words for the merchant, and
/// the action the failure asks for under `[policy] on_rule_error` (`asks`).
pub fn rule_error_reason(
    rules: &RuleSet,
    schema: &Schema,
    hit: &Hit,
    vars: &[Value],
    asks: rules::Action,
) -> proto::Reason {
    let mut reason = reason(rules, schema, hit, vars);
    let held = asks >= rules::Action::Review;
    let (message, message_zh) = match held {
        true => (
            "One of our automatic checks could not be completed for this payment, so a person \
             will look at it.",
            "本笔付款的一项自动风控检查未能完成，将由人工审核。",
        ),
        false => (
            "One of our automatic checks could not be completed for this payment; it was \
             decided without that check.",
            "本笔付款的一项自动风控检查未能完成，已在不考虑该检查的情况下作出决定。",
        ),
    };
    reason.code = "RULE_ERROR".into();
    reason.source = proto::ReasonSource::Rule as i32;
    reason.message = message.into();
    reason.message_zh = message_zh.into();
    reason.contribution = 0.0;
    reason.action = match held {
        true => action(asks),
        false => proto::Action::Unspecified,
    } as i32;
    reason.account_action = proto::AccountAction::Unspecified as i32;
    reason.remedies.clear();
    reason.evidence.insert(
        0,
        proto::Evidence {
            name: "rule_error".into(),
            value: 0.0,
            text: hit.error.map(|e| e.to_string()).unwrap_or_default(),
            label: "what went wrong in the check".into(),
            label_zh: "检查出错的原因".into(),
            unit: "text".into(),
        },
    );
    reason
}
