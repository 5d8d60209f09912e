//! Test/bench helper: the rule schema the engine supplies (request fields, then features, all Num).
#![allow(dead_code)]
use super::{Schema, Type};

pub const FEATURES: &[&str] = &[
    "payment.amount_fen",
    "payment.hour",
    "payment.is_night",
    "payment.is_weekend",
    "payment.is_round_amount",
    "payment.amount_to_avg_30d",
    "payer.count_1h",
    "payer.count_24h",
    "payer.count_7d",
    "payer.count_30d",
    "payer.amount_1h",
    "payer.amount_24h",
    "payer.amount_7d",
    "payer.amount_30d",
    "payer.avg_amount_30d",
    "payer.max_amount_30d",
    "payer.daily_amount",
    "payer.daily_static_code_amount",
    "payer.yearly_balance_amount",
    "payer.distinct_payees_24h",
    "payer.is_new_device",
    "payer.is_new_ip",
    "payer.is_new_payee",
    "payer.days_since_first_payment",
    "payer.bad_reports_90d",
    "payee.count_1h",
    "payee.count_24h",
    "payee.amount_1h",
    "payee.amount_24h",
    "payee.amount_30d",
    "payee.daily_amount",
    "payee.distinct_payers_1h",
    "payee.distinct_payers_24h",
    "payee.credit_night_count_24h",
    "payee.bad_reports_30d",
    "payee.fraud_rate_lagged",
    "device.distinct_payers_24h",
    "device.distinct_cards_24h",
    "device.small_count_10m",
    "ip.distinct_payers_24h",
    "card.small_count_10m",
    "pair.count_10m",
    "pair.amount_10m",
    "pair.count_24h",
    "pair.amount_24h",
];
pub const STR_FIELDS: &[&str] = &[
    "payment_id",
    "channel",
    "scene",
    "funding",
    "currency",
    "payer.account_id",
    "payee.account_id",
    "payee.kind",
    "payee.merchant_category",
    "device_id",
    "ip",
    "card_fingerprint",
    "city_code",
];

/// The schema the engine supplies: request fields then features (all Num).
pub fn schema() -> Schema {
    let mut v: Vec<(String, Type, String)> = Vec::new();
    for s in STR_FIELDS {
        v.push((s.to_string(), Type::Str, String::new()));
    }
    v.push((
        "amount_fen".into(),
        Type::Num,
        "alias of payment.amount_fen".into(),
    ));
    v.push(("payer.real_name_verified".into(), Type::Bool, String::new()));
    v.push(("payer.account_age_days".into(), Type::Num, String::new()));
    for f in FEATURES {
        v.push((f.to_string(), Type::Num, String::new()));
    }
    Schema::new(v)
}
