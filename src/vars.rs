//! The variables rules see: the payment's own fields, then every feature, each by a stable
//! name at a fixed slot. The engine, `rules check`, backtests and tests all build the schema
//! here, so a rule compiles against exactly what the server supplies.

use crate::features::FeatureSet;
use crate::payment::Payment;
use crate::rules::{Schema, Type, Value};

const DAY_MS: i64 = 86_400_000;

/// Request fields, in slot order, with their types and descriptions.
pub const REQUEST_FIELDS: &[(&str, Type, &str)] = &[
    ("payment_id", Type::Str, "the gateway's payment id"),
    ("channel", Type::Str, "ALIPAY, WECHAT_PAY, UNIONPAY_QUICKPASS, AGGREGATOR or BANK_CARD"),
    ("scene", Type::Str, "MERCHANT_STATIC_CODE, MERCHANT_SCANS_PAYER, PERSONAL_CODE_COLLECTION, P2P_TRANSFER, RED_PACKET, WITHDRAWAL or CARD_TOPUP"),
    ("funding", Type::Str, "BALANCE, DEBIT_CARD, CREDIT_CARD or CREDIT_LINE"),
    ("currency", Type::Str, "ISO 4217 currency code"),
    ("payer.account_id", Type::Str, "the payer's account"),
    ("payer.real_name_verified", Type::Bool, "whether the payer completed real-name verification"),
    ("payer.account_age_days", Type::Num, "days since the payer registered (0 when unknown)"),
    ("payee.account_id", Type::Str, "the payee's account or collection code"),
    ("payee.kind", Type::Str, "MERCHANT, PERSONAL or AGGREGATOR_SUB_MERCHANT"),
    ("payee.merchant_category", Type::Str, "the payee's merchant category code"),
    ("device_id", Type::Str, "the payer's device"),
    ("ip", Type::Str, "the payer's IP address"),
    ("card_fingerprint", Type::Str, "the funding card's fingerprint (empty without a card)"),
    ("city_code", Type::Str, "the payer's city code (empty when unknown)"),
];

/// Request fields first, then the feature set's names (all numbers).
pub fn schema(features: &FeatureSet) -> Schema {
    let request = REQUEST_FIELDS
        .iter()
        .map(|(name, ty, desc)| (name.to_string(), *ty, desc.to_string()));
    let features = features
        .defs()
        .iter()
        .map(|def| (def.name.clone(), Type::Num, def.description.clone()));
    Schema::new(request.chain(features).collect())
}

/// Fills `out` with one value per schema slot: the payment's fields, then `features`.
pub fn fill<'a>(payment: &'a Payment, features: &[f64], out: &mut Vec<Value<'a>>) {
    out.clear();
    let age_days = if payment.payer.registered_at_ms > 0 {
        ((payment.event_time_ms - payment.payer.registered_at_ms) / DAY_MS).max(0) as f64
    } else {
        0.0
    };
    out.extend([
        Value::Str(&payment.payment_id),
        Value::Str(payment.channel.as_str()),
        Value::Str(payment.scene.as_str()),
        Value::Str(payment.funding.as_str()),
        Value::Str(&payment.currency),
        Value::Str(&payment.payer.account_id),
        Value::Bool(payment.payer.real_name_verified),
        Value::Num(age_days),
        Value::Str(&payment.payee.account_id),
        Value::Str(payment.payee.kind.as_str()),
        Value::Str(&payment.payee.merchant_category),
        Value::Str(&payment.device_id),
        Value::Str(&payment.ip),
        Value::Str(payment.card_fingerprint.as_deref().unwrap_or("")),
        Value::Str(payment.city_code.as_deref().unwrap_or("")),
    ]);
    debug_assert_eq!(out.len(), REQUEST_FIELDS.len());
    out.extend(features.iter().map(|&v| Value::Num(v)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_matches_the_schema_slot_for_slot() {
        let set = FeatureSet::defaults();
        let schema = schema(&set);
        let payment = crate::request::tests::valid_payment();
        let features: Vec<f64> = (0..set.names().len()).map(|i| i as f64).collect();
        let mut vars = Vec::new();
        fill(&payment, &features, &mut vars);
        assert_eq!(vars.len(), schema.len());
        for (slot, var) in schema.vars().iter().enumerate() {
            assert_eq!(vars[slot].ty(), var.ty, "slot {slot} `{}`", var.name);
        }
        let amount = schema.slot("payment.amount_fen").unwrap();
        assert_eq!(
            vars[amount],
            Value::Num((amount - REQUEST_FIELDS.len()) as f64)
        );
        assert_eq!(
            vars[schema.slot("payee.kind").unwrap()],
            Value::Str("MERCHANT")
        );
    }
}
