//! Turns a gRPC `ScoreRequest` into a validated `Payment`, or says which field is wrong and why.

use std::net::IpAddr;

use crate::config::Limits;
use crate::payment::{Channel, Funding, Payee, PayeeKind, Payer, Payment, Scene};
use crate::proto;

/// One broken field: the message names it and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {problem}")]
pub struct InvalidField {
    pub field: &'static str,
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> InvalidField {
    InvalidField {
        field,
        problem: problem.into(),
    }
}

/// Validates a request against the limits; `now_ms` is the server clock, used only to
/// refuse event times too far in the future.
pub fn payment_from_request(
    req: &proto::ScoreRequest,
    limits: &Limits,
    now_ms: i64,
) -> Result<Payment, InvalidField> {
    let id = |field, value: &str| check_id(field, value, limits.max_id_bytes);
    id("payment_id", &req.payment_id)?;
    check_event_time(req.event_time_ms, limits, now_ms)?;

    let payer = req
        .payer
        .as_ref()
        .ok_or_else(|| invalid("payer", "is required"))?;
    id("payer.account_id", &payer.account_id)?;
    if payer.registered_at_ms < 0 {
        return Err(invalid("payer.registered_at_ms", "must not be negative"));
    }
    let payee = req
        .payee
        .as_ref()
        .ok_or_else(|| invalid("payee", "is required"))?;
    id("payee.account_id", &payee.account_id)?;
    if payee.merchant_category.len() > limits.max_id_bytes {
        return Err(too_long("payee.merchant_category", limits.max_id_bytes));
    }

    if req.amount_fen <= 0 {
        return Err(invalid(
            "amount_fen",
            format!("must be greater than 0 (got {})", req.amount_fen),
        ));
    }
    if req.amount_fen > limits.max_amount_fen {
        return Err(invalid(
            "amount_fen",
            format!(
                "must be at most {} fen (got {})",
                limits.max_amount_fen, req.amount_fen
            ),
        ));
    }
    let currency = match req.currency.as_str() {
        "" => "CNY".to_owned(),
        c if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => c.to_owned(),
        c => {
            return Err(invalid(
                "currency",
                format!("must be a 3-letter upper-case ISO 4217 code (got `{c}`)"),
            ))
        }
    };

    // Device and IP may be unknown (empty); when given they must be well-formed.
    if !req.device_id.is_empty() {
        id("device_id", &req.device_id)?;
    }
    if !req.ip.is_empty() && req.ip.parse::<IpAddr>().is_err() {
        return Err(invalid(
            "ip",
            format!(
                "must be an IPv4 or IPv6 address or empty (got `{}`)",
                req.ip
            ),
        ));
    }
    if let Some(card) = &req.card_fingerprint {
        id("card_fingerprint", card)?;
    }
    if let Some(city) = &req.city_code {
        id("city_code", city)?;
    }
    check_attributes(req, limits)?;

    Ok(Payment {
        payment_id: req.payment_id.clone(),
        event_time_ms: req.event_time_ms,
        channel: channel(req.channel)?,
        scene: scene(req.scene)?,
        payer: Payer {
            account_id: payer.account_id.clone(),
            real_name_verified: payer.real_name_verified,
            registered_at_ms: payer.registered_at_ms,
        },
        payee: Payee {
            account_id: payee.account_id.clone(),
            kind: payee_kind(payee.kind)?,
            merchant_category: payee.merchant_category.clone(),
        },
        amount_fen: req.amount_fen,
        currency,
        funding: funding(req.funding)?,
        card_fingerprint: req.card_fingerprint.clone(),
        device_id: req.device_id.clone(),
        ip: req.ip.clone(),
        city_code: req.city_code.clone(),
        attributes: req.attributes.clone(),
    })
}

/// The request a gateway would have sent for `payment`: offline replays go through the same
/// `Score` path as live traffic.
pub fn request_from_payment(payment: &Payment) -> proto::ScoreRequest {
    proto::ScoreRequest {
        payment_id: payment.payment_id.clone(),
        event_time_ms: payment.event_time_ms,
        channel: proto::Channel::from_str_name(payment.channel.as_str()).unwrap_or_default() as i32,
        scene: proto::Scene::from_str_name(payment.scene.as_str()).unwrap_or_default() as i32,
        payer: Some(proto::Payer {
            account_id: payment.payer.account_id.clone(),
            real_name_verified: payment.payer.real_name_verified,
            registered_at_ms: payment.payer.registered_at_ms,
        }),
        payee: Some(proto::Payee {
            account_id: payment.payee.account_id.clone(),
            kind: proto::PayeeKind::from_str_name(payment.payee.kind.as_str()).unwrap_or_default()
                as i32,
            merchant_category: payment.payee.merchant_category.clone(),
        }),
        amount_fen: payment.amount_fen,
        currency: payment.currency.clone(),
        funding: proto::Funding::from_str_name(payment.funding.as_str()).unwrap_or_default() as i32,
        card_fingerprint: payment.card_fingerprint.clone(),
        device_id: payment.device_id.clone(),
        ip: payment.ip.clone(),
        city_code: payment.city_code.clone(),
        attributes: payment.attributes.clone(),
    }
}

fn too_long(field: &'static str, max: usize) -> InvalidField {
    invalid(field, format!("must be at most {max} bytes"))
}

fn check_id(field: &'static str, value: &str, max: usize) -> Result<(), InvalidField> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(invalid(
            field,
            format!("must be at most {max} bytes (got {})", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn check_event_time(event_time_ms: i64, limits: &Limits, now_ms: i64) -> Result<(), InvalidField> {
    if event_time_ms <= 0 {
        return Err(invalid(
            "event_time_ms",
            format!("must be a positive UTC epoch time in milliseconds (got {event_time_ms})"),
        ));
    }
    let latest = now_ms.saturating_add(limits.max_clock_skew_ms);
    if event_time_ms > latest {
        return Err(invalid(
            "event_time_ms",
            format!(
                "is {} ms ahead of the server clock (at most {} allowed)",
                event_time_ms - now_ms,
                limits.max_clock_skew_ms
            ),
        ));
    }
    Ok(())
}

fn check_attributes(req: &proto::ScoreRequest, limits: &Limits) -> Result<(), InvalidField> {
    if req.attributes.len() > limits.max_attributes {
        return Err(invalid(
            "attributes",
            format!(
                "must have at most {} entries (got {})",
                limits.max_attributes,
                req.attributes.len()
            ),
        ));
    }
    for (key, value) in &req.attributes {
        if key.is_empty() || key.len() > limits.max_attribute_bytes {
            return Err(invalid(
                "attributes",
                format!(
                    "keys must be 1 to {} bytes (got {})",
                    limits.max_attribute_bytes,
                    key.len()
                ),
            ));
        }
        if value.len() > limits.max_attribute_bytes {
            return Err(invalid(
                "attributes",
                format!(
                    "value of `{key}` must be at most {} bytes",
                    limits.max_attribute_bytes
                ),
            ));
        }
    }
    Ok(())
}

/// Maps a proto enum number to the domain enum; 0 (unspecified) and numbers this server
/// does not know are both refused, never defaulted.
fn enum_field<P, D>(
    field: &'static str,
    raw: i32,
    from_proto: impl Fn(P) -> Option<D>,
) -> Result<D, InvalidField>
where
    P: TryFrom<i32>,
{
    P::try_from(raw)
        .ok()
        .and_then(from_proto)
        .ok_or_else(|| invalid(field, format!("must be set to a known value (got {raw})")))
}

fn channel(raw: i32) -> Result<Channel, InvalidField> {
    use proto::Channel as P;
    enum_field("channel", raw, |p: P| match p {
        P::Unspecified => None,
        P::Alipay => Some(Channel::Alipay),
        P::WechatPay => Some(Channel::WechatPay),
        P::UnionpayQuickpass => Some(Channel::UnionpayQuickpass),
        P::Aggregator => Some(Channel::Aggregator),
        P::BankCard => Some(Channel::BankCard),
    })
}

fn scene(raw: i32) -> Result<Scene, InvalidField> {
    use proto::Scene as P;
    enum_field("scene", raw, |p: P| match p {
        P::Unspecified => None,
        P::MerchantStaticCode => Some(Scene::MerchantStaticCode),
        P::MerchantScansPayer => Some(Scene::MerchantScansPayer),
        P::PersonalCodeCollection => Some(Scene::PersonalCodeCollection),
        P::P2pTransfer => Some(Scene::P2pTransfer),
        P::RedPacket => Some(Scene::RedPacket),
        P::Withdrawal => Some(Scene::Withdrawal),
        P::CardTopup => Some(Scene::CardTopup),
    })
}

fn payee_kind(raw: i32) -> Result<PayeeKind, InvalidField> {
    use proto::PayeeKind as P;
    enum_field("payee.kind", raw, |p: P| match p {
        P::Unspecified => None,
        P::Merchant => Some(PayeeKind::Merchant),
        P::Personal => Some(PayeeKind::Personal),
        P::AggregatorSubMerchant => Some(PayeeKind::AggregatorSubMerchant),
    })
}

fn funding(raw: i32) -> Result<Funding, InvalidField> {
    use proto::Funding as P;
    enum_field("funding", raw, |p: P| match p {
        P::Unspecified => None,
        P::Balance => Some(Funding::Balance),
        P::DebitCard => Some(Funding::DebitCard),
        P::CreditCard => Some(Funding::CreditCard),
        P::CreditLine => Some(Funding::CreditLine),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const NOW: i64 = 1_790_000_000_000;

    pub(crate) fn valid_request() -> proto::ScoreRequest {
        proto::ScoreRequest {
            payment_id: "pay-1".into(),
            event_time_ms: NOW,
            channel: proto::Channel::Alipay as i32,
            scene: proto::Scene::MerchantStaticCode as i32,
            payer: Some(proto::Payer {
                account_id: "payer-1".into(),
                real_name_verified: true,
                registered_at_ms: NOW - 86_400_000,
            }),
            payee: Some(proto::Payee {
                account_id: "shop-1".into(),
                kind: proto::PayeeKind::Merchant as i32,
                merchant_category: "5812".into(),
            }),
            amount_fen: 2_500,
            currency: String::new(),
            funding: proto::Funding::Balance as i32,
            card_fingerprint: None,
            device_id: "dev-1".into(),
            ip: "10.1.2.3".into(),
            city_code: Some("310000".into()),
            attributes: Default::default(),
        }
    }

    pub(crate) fn valid_payment() -> Payment {
        payment_from_request(&valid_request(), &Limits::default(), NOW).unwrap()
    }

    fn field_of(req: &proto::ScoreRequest) -> &'static str {
        payment_from_request(req, &Limits::default(), NOW)
            .unwrap_err()
            .field
    }

    #[test]
    fn valid_request_becomes_a_payment() {
        let p = payment_from_request(&valid_request(), &Limits::default(), NOW).unwrap();
        assert_eq!(p.currency, "CNY");
        assert_eq!(p.payee.kind, PayeeKind::Merchant);
        assert_eq!(p.amount_fen, 2_500);
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut r = valid_request();
        r.payment_id = "x".repeat(129);
        assert_eq!(field_of(&r), "payment_id");
        let mut r = valid_request();
        r.amount_fen = 0;
        assert_eq!(field_of(&r), "amount_fen");
        let mut r = valid_request();
        r.amount_fen = Limits::default().max_amount_fen + 1;
        assert_eq!(field_of(&r), "amount_fen");
        let mut r = valid_request();
        r.channel = 0;
        assert_eq!(field_of(&r), "channel");
        let mut r = valid_request();
        r.scene = 99;
        assert_eq!(field_of(&r), "scene");
        let mut r = valid_request();
        r.payee = None;
        assert_eq!(field_of(&r), "payee");
        let mut r = valid_request();
        r.event_time_ms = 0;
        assert_eq!(field_of(&r), "event_time_ms");
        let mut r = valid_request();
        r.event_time_ms = NOW + Limits::default().max_clock_skew_ms + 1;
        assert_eq!(field_of(&r), "event_time_ms");
        let mut r = valid_request();
        r.ip = "not-an-ip".into();
        assert_eq!(field_of(&r), "ip");
        let mut r = valid_request();
        r.currency = "cny".into();
        assert_eq!(field_of(&r), "currency");
    }

    #[test]
    fn payment_and_request_convert_both_ways() {
        let payment = valid_payment();
        let back = payment_from_request(&request_from_payment(&payment), &Limits::default(), NOW);
        assert_eq!(back.unwrap(), payment);
    }

    #[test]
    fn a_128_byte_id_is_accepted() {
        let mut r = valid_request();
        r.payment_id = "x".repeat(128);
        assert!(payment_from_request(&r, &Limits::default(), NOW).is_ok());
    }
}
