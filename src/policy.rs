//! The built-in amount policy: decides a payment from its amount and scene alone.
//!
//! It is the fallback used when no rule pack is loaded, so a fresh server still gives
//! reasoned decisions; each reason carries the limit it crossed and the actual amount.

use crate::config::PolicyConfig;
use crate::payment::{format_yuan, Payment, Scene};
use crate::proto::{Action, Evidence, Reason, ReasonSource};

/// The built-in policy's version, recorded on each decision it made.
pub const VERSION: &str = "builtin-amount-policy@1";

/// What a decision stage concluded for one payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub action: Action,
    /// 0..=100.
    pub risk_score: u32,
    pub reasons: Vec<Reason>,
}

pub fn assess(config: &PolicyConfig, payment: &Payment) -> Assessment {
    let amount = payment.amount_fen;
    let mut reasons = Vec::new();
    let tiers = [
        (
            config.block_amount_fen,
            Action::Block,
            90.0,
            "AMOUNT_BLOCK",
            "amount_block",
        ),
        (
            config.review_amount_fen,
            Action::Review,
            60.0,
            "AMOUNT_REVIEW",
            "amount_review",
        ),
        (
            config.challenge_amount_fen,
            Action::Challenge,
            40.0,
            "AMOUNT_CHALLENGE",
            "amount_challenge",
        ),
    ];
    // Only the highest tier crossed speaks: three reasons for one large amount would be noise.
    if let Some(&(limit, action, points, code, id)) = tiers.iter().find(|t| amount >= t.0) {
        reasons.push(amount_reason(
            code,
            id,
            action,
            points,
            format!(
                "amount {} CNY is at or above the {} CNY limit for {}",
                format_yuan(amount),
                format_yuan(limit),
                action.as_str_name().to_lowercase()
            ),
            amount,
            limit,
        ));
    }
    if payment.scene == Scene::MerchantStaticCode && amount > config.static_code_limit_fen {
        reasons.push(amount_reason(
            "STATIC_CODE_LIMIT",
            "static_code_limit",
            Action::Review,
            60.0,
            format!(
                "static-code payment of {} CNY exceeds the {} CNY daily static-code limit",
                format_yuan(amount),
                format_yuan(config.static_code_limit_fen)
            ),
            amount,
            config.static_code_limit_fen,
        ));
    }
    let action = reasons
        .iter()
        .map(|r| r.action())
        .max_by_key(|a| *a as i32)
        .unwrap_or(Action::Allow);
    let risk_score = reasons
        .iter()
        .map(|r| r.contribution)
        .sum::<f64>()
        .min(100.0) as u32;
    Assessment {
        action,
        risk_score,
        reasons,
    }
}

fn amount_reason(
    code: &str,
    id: &str,
    action: Action,
    points: f64,
    message: String,
    amount: i64,
    limit: i64,
) -> Reason {
    Reason {
        code: code.into(),
        source: ReasonSource::Rule as i32,
        id: id.into(),
        message,
        contribution: points,
        action: action as i32,
        evidence: vec![
            Evidence {
                name: "payment.amount_fen".into(),
                value: amount as f64,
                text: String::new(),
            },
            Evidence {
                name: format!("limit.{id}_fen"),
                value: limit as f64,
                text: String::new(),
            },
        ],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::request::{payment_from_request, tests::valid_request, tests::NOW};

    fn payment(amount_fen: i64, scene: crate::proto::Scene) -> Payment {
        let mut r = valid_request();
        r.amount_fen = amount_fen;
        r.scene = scene as i32;
        payment_from_request(&r, &Limits::default(), NOW).unwrap()
    }

    #[test]
    fn small_payment_is_allowed_without_reasons() {
        let a = assess(
            &PolicyConfig::default(),
            &payment(2_000, crate::proto::Scene::MerchantScansPayer),
        );
        assert_eq!(a.action, Action::Allow);
        assert_eq!(a.risk_score, 0);
        assert!(a.reasons.is_empty());
    }

    #[test]
    fn highest_amount_tier_decides_and_names_the_numbers() {
        let a = assess(
            &PolicyConfig::default(),
            &payment(6_000_000, crate::proto::Scene::MerchantScansPayer),
        );
        assert_eq!(a.action, Action::Review);
        assert_eq!(a.reasons.len(), 1);
        assert!(
            a.reasons[0].message.contains("60,000.00 CNY"),
            "{}",
            a.reasons[0].message
        );
        assert!(
            a.reasons[0].message.contains("50,000.00 CNY"),
            "{}",
            a.reasons[0].message
        );
    }

    #[test]
    fn static_code_limit_adds_its_own_reason() {
        let a = assess(
            &PolicyConfig::default(),
            &payment(60_000, crate::proto::Scene::MerchantStaticCode),
        );
        assert_eq!(a.action, Action::Review);
        assert_eq!(a.reasons[0].code, "STATIC_CODE_LIMIT");
        assert_eq!(a.risk_score, 60);
    }
}
