//! The variables rules see: the payment's own fields, then every feature, each by a stable
//! name at a fixed slot. The engine, `rules check`, backtests and tests all build the schema
//! here, so a rule compiles against exactly what the server supplies.

use crate::features::FeatureSet;
use crate::payment::Payment;
use crate::rules::{Schema, SchemaVar, Type, Value};
use crate::units::Unit;

const DAY_MS: i64 = 86_400_000;

/// A request field as rules see it: name, type, description, the words a merchant reads
/// (English, Chinese) and how its values are written.
pub struct RequestField {
    pub name: &'static str,
    pub ty: Type,
    pub description: &'static str,
    pub label: &'static str,
    pub label_zh: &'static str,
    pub unit: Unit,
}

const fn field(
    name: &'static str,
    ty: Type,
    description: &'static str,
    (label, label_zh): (&'static str, &'static str),
    unit: Unit,
) -> RequestField {
    RequestField {
        name,
        ty,
        description,
        label,
        label_zh,
        unit,
    }
}

/// Request fields, in slot order.
pub const REQUEST_FIELDS: &[RequestField] = &[
    field("payment_id", Type::Str, "the gateway's payment id", ("payment", "付款单号"), Unit::Text),
    field("channel", Type::Str, "ALIPAY, WECHAT_PAY, UNIONPAY_QUICKPASS, AGGREGATOR or BANK_CARD", ("payment channel", "支付渠道"), Unit::Text),
    field("scene", Type::Str, "MERCHANT_STATIC_CODE, MERCHANT_SCANS_PAYER, PERSONAL_CODE_COLLECTION, P2P_TRANSFER, RED_PACKET, WITHDRAWAL or CARD_TOPUP", ("kind of payment", "支付场景"), Unit::Text),
    field("funding", Type::Str, "BALANCE, DEBIT_CARD, CREDIT_CARD or CREDIT_LINE", ("source of funds", "资金来源"), Unit::Text),
    field("currency", Type::Str, "ISO 4217 currency code", ("currency", "币种"), Unit::Text),
    field("payer.account_id", Type::Str, "the payer's account", ("paying account", "付款账户"), Unit::Text),
    field("payer.real_name_verified", Type::Bool, "whether the payer completed real-name verification", ("payer completed real-name verification", "付款人已完成实名认证"), Unit::YesNo),
    field("payer.account_age_days", Type::Num, "days since the payer registered (0 when unknown)", ("days since the paying account was opened", "付款账户开户天数"), Unit::Days),
    field("payee.account_id", Type::Str, "the payee's account or collection code", ("receiving account", "收款账户"), Unit::Text),
    field("payee.kind", Type::Str, "MERCHANT, PERSONAL or AGGREGATOR_SUB_MERCHANT", ("kind of receiving account", "收款账户类型"), Unit::Text),
    field("payee.merchant_category", Type::Str, "the payee's merchant category code", ("merchant category", "商户类别"), Unit::Text),
    field("device_id", Type::Str, "the payer's device", ("payer's device", "付款设备"), Unit::Text),
    field("ip", Type::Str, "the payer's IP address", ("payer's IP address", "付款 IP 地址"), Unit::Text),
    field("card_fingerprint", Type::Str, "the funding card's fingerprint (empty without a card)", ("card used", "付款银行卡"), Unit::Text),
    field("city_code", Type::Str, "the payer's city code (empty when unknown)", ("payer's city", "付款城市"), Unit::Text),
];

/// Request fields first, then the feature set's names (all numbers).
pub fn schema(features: &FeatureSet) -> Schema {
    let request = REQUEST_FIELDS.iter().map(|f| SchemaVar {
        name: f.name.to_owned(),
        ty: f.ty,
        description: f.description.to_owned(),
        label: f.label.to_owned(),
        label_zh: f.label_zh.to_owned(),
        unit: f.unit,
    });
    let features = features.defs().iter().map(|def| SchemaVar {
        name: def.name.clone(),
        ty: Type::Num,
        description: def.description.clone(),
        label: def.label().to_owned(),
        label_zh: def.label_zh().to_owned(),
        unit: def.unit(),
    });
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
