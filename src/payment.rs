//! The validated payment: the one domain type every stage (features, rules, model) reads.
//!
//! It is built from a gRPC `ScoreRequest` by `request.rs` or from a CSV row by `events.rs`;
//! once built it is known to be well-formed, so later stages never re-check it.

use std::collections::BTreeMap;

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The upper-case name used in the proto, CSV files and rule expressions.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the upper-case name (as written by `as_str`).
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// The wallet or network the payment runs through.
    Channel {
        Alipay => "ALIPAY",
        WechatPay => "WECHAT_PAY",
        UnionpayQuickpass => "UNIONPAY_QUICKPASS",
        Aggregator => "AGGREGATOR",
        BankCard => "BANK_CARD",
    }
);

text_enum!(
    /// How the money moves: who scans whom, or which kind of transfer.
    Scene {
        MerchantStaticCode => "MERCHANT_STATIC_CODE",
        MerchantScansPayer => "MERCHANT_SCANS_PAYER",
        PersonalCodeCollection => "PERSONAL_CODE_COLLECTION",
        P2pTransfer => "P2P_TRANSFER",
        RedPacket => "RED_PACKET",
        Withdrawal => "WITHDRAWAL",
        CardTopup => "CARD_TOPUP",
    }
);

text_enum!(
    /// What kind of account collects the money.
    PayeeKind {
        Merchant => "MERCHANT",
        Personal => "PERSONAL",
        AggregatorSubMerchant => "AGGREGATOR_SUB_MERCHANT",
    }
);

text_enum!(
    /// Where the payer's money comes from.
    Funding {
        Balance => "BALANCE",
        DebitCard => "DEBIT_CARD",
        CreditCard => "CREDIT_CARD",
        CreditLine => "CREDIT_LINE",
    }
);

text_enum!(
    /// Delayed truth about a payment, reported after the decision.
    OutcomeKind {
        Fraud => "FRAUD",
        Chargeback => "CHARGEBACK",
        Complaint => "COMPLAINT",
        Genuine => "GENUINE",
    }
);

impl OutcomeKind {
    /// Fraud, chargebacks and complaints count against an account; genuine does not.
    pub fn is_bad(self) -> bool {
        !matches!(self, OutcomeKind::Genuine)
    }
}

/// The paying side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payer {
    pub account_id: String,
    pub real_name_verified: bool,
    /// 0 when the gateway does not know.
    pub registered_at_ms: i64,
}

/// The collecting side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payee {
    pub account_id: String,
    pub kind: PayeeKind,
    /// Merchant category code; empty for personal codes.
    pub merchant_category: String,
}

/// One payment to be scored. Money is in fen (1/100 CNY), time in UTC epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub payment_id: String,
    /// Event time from the request; windows use this, never the server clock.
    pub event_time_ms: i64,
    pub channel: Channel,
    pub scene: Scene,
    pub payer: Payer,
    pub payee: Payee,
    pub amount_fen: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    pub funding: Funding,
    pub card_fingerprint: Option<String>,
    pub device_id: String,
    pub ip: String,
    pub city_code: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

/// Renders fen as yuan for people: `123456` → `1,234.56`. Integer arithmetic only.
pub fn format_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    let digits = (abs / 100).to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(d);
    }
    format!("{sign}{grouped}.{:02}", abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_round_trip() {
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(*c));
        }
        for s in Scene::ALL {
            assert_eq!(Scene::parse(s.as_str()), Some(*s));
        }
        assert_eq!(
            PayeeKind::parse("personal"),
            None,
            "names are case-sensitive"
        );
        assert!(OutcomeKind::Chargeback.is_bad());
        assert!(!OutcomeKind::Genuine.is_bad());
    }

    #[test]
    fn yuan_formatting() {
        assert_eq!(format_yuan(0), "0.00");
        assert_eq!(format_yuan(5), "0.05");
        assert_eq!(format_yuan(123_456), "1,234.56");
        assert_eq!(format_yuan(100_000_000), "1,000,000.00");
        assert_eq!(format_yuan(-1_050), "-10.50");
        assert_eq!(format_yuan(i64::MIN), "-92,233,720,368,547,758.08");
    }
}
