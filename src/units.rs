//! How a value is shown to people: its unit (from a feature's aggregate, a request field, or
//! a rule param's declaration) and its rendering in English and Chinese. Evidence carries the
//! unit's name, so the page renders the same way in the reader's language.

use crate::payment::format_yuan;

/// What a number means, and so how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Payments, payers, reports: a whole number.
    Count,
    /// Money held in fen, shown in yuan.
    Yuan,
    /// A share from 0 to 1, shown as a percentage.
    Percent,
    /// A ratio: "3.5 times".
    Times,
    /// A 0/1 flag: yes or no.
    YesNo,
    Days,
    /// A time span held in seconds, written in the largest unit that keeps it readable:
    /// "45 seconds", "12 minutes", "5.5 hours", "3 days".
    Duration,
    /// A local hour of the day, 0-23.
    Hour,
    /// Any other number.
    Number,
    /// A text value (a kind, an id): shown as the text itself.
    Text,
}

/// The reader's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Unit {
    pub const ALL: &'static [Unit] = &[
        Unit::Count,
        Unit::Yuan,
        Unit::Percent,
        Unit::Times,
        Unit::YesNo,
        Unit::Days,
        Unit::Duration,
        Unit::Hour,
        Unit::Number,
        Unit::Text,
    ];

    /// The name stored with evidence and written in rule files (`unit = "yuan"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "count",
            Unit::Yuan => "yuan",
            Unit::Percent => "percent",
            Unit::Times => "times",
            Unit::YesNo => "yes_no",
            Unit::Days => "days",
            Unit::Duration => "duration",
            Unit::Hour => "hour",
            Unit::Number => "number",
            Unit::Text => "text",
        }
    }

    pub fn parse(name: &str) -> Option<Unit> {
        Unit::ALL.iter().copied().find(|u| u.as_str() == name)
    }

    /// `value` written for a reader of `lang`: `1,234.56 CNY` / `1,234.56 元`, `5%`, `yes` /
    /// `是`, `3.5 times` / `3.5 倍`, `12 days` / `12 天`, `14:00`.
    pub fn format(self, value: f64, lang: Lang) -> String {
        let zh = lang == Lang::Zh;
        match self {
            Unit::Count => format!("{:.0}", value.round()),
            Unit::Yuan => {
                let yuan = format_yuan(value.round() as i64);
                if zh {
                    format!("{yuan} 元")
                } else {
                    format!("{yuan} CNY")
                }
            }
            Unit::Percent => format!("{}%", short(value * 100.0)),
            Unit::Times if zh => format!("{} 倍", short(value)),
            Unit::Times => format!("{} times", short(value)),
            Unit::YesNo => match (value >= 0.5, zh) {
                (true, true) => "是".into(),
                (false, true) => "否".into(),
                (true, false) => "yes".into(),
                (false, false) => "no".into(),
            },
            Unit::Days if zh => format!("{} 天", short(value)),
            Unit::Days if short(value) == "1" => "1 day".into(),
            Unit::Days => format!("{} days", short(value)),
            Unit::Duration => duration(value, zh),
            Unit::Hour => format!("{:02}:00", value.clamp(0.0, 23.0) as u32),
            Unit::Number | Unit::Text => short(value),
        }
    }

    /// True for units whose values are counted, so "30 or fewer" rather than "30 or less".
    pub fn is_count(self) -> bool {
        self == Unit::Count
    }
}

/// Seconds in the largest unit under which the value stays below two of the next one, so a
/// minute and a half reads "90 seconds" and a day and a half "36 hours".
fn duration(seconds: f64, zh: bool) -> String {
    let s = seconds.max(0.0);
    let (n, en, en_one, zh_unit) = if s < 120.0 {
        (s.round(), "seconds", "1 second", "秒")
    } else if s < 7_200.0 {
        (
            (s / 60.0 * 10.0).round() / 10.0,
            "minutes",
            "1 minute",
            "分钟",
        )
    } else if s < 172_800.0 {
        (
            (s / 3_600.0 * 10.0).round() / 10.0,
            "hours",
            "1 hour",
            "小时",
        )
    } else {
        ((s / 86_400.0 * 10.0).round() / 10.0, "days", "1 day", "天")
    };
    match (zh, short(n) == "1") {
        (true, _) => format!("{} {zh_unit}", short(n)),
        (false, true) => en_one.to_string(),
        (false, false) => format!("{} {en}", short(n)),
    }
}

/// Whole numbers without decimals, others with at most two.
fn short(v: f64) -> String {
    crate::rules::compile::format_num(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unit_reads_naturally_in_both_languages() {
        let cases = [
            (Unit::Count, 31.0, "31", "31"),
            (Unit::Yuan, 123_456.0, "1,234.56 CNY", "1,234.56 元"),
            (Unit::Percent, 0.05, "5%", "5%"),
            (Unit::Percent, 0.1234, "12.34%", "12.34%"),
            (Unit::Times, 3.5, "3.5 times", "3.5 倍"),
            (Unit::YesNo, 1.0, "yes", "是"),
            (Unit::YesNo, 0.0, "no", "否"),
            (Unit::Days, 1.0, "1 day", "1 天"),
            (Unit::Days, 12.25, "12.25 days", "12.25 天"),
            (Unit::Duration, 45.0, "45 seconds", "45 秒"),
            (Unit::Duration, 1.0, "1 second", "1 秒"),
            (Unit::Duration, 90.0, "90 seconds", "90 秒"),
            (Unit::Duration, 750.0, "12.5 minutes", "12.5 分钟"),
            (Unit::Duration, 19_800.0, "5.5 hours", "5.5 小时"),
            (Unit::Duration, 2_592_000.0, "30 days", "30 天"),
            (Unit::Hour, 3.0, "03:00", "03:00"),
            (Unit::Number, 2.5, "2.5", "2.5"),
        ];
        for (unit, value, en, zh) in cases {
            assert_eq!(unit.format(value, Lang::En), en, "{unit:?}");
            assert_eq!(unit.format(value, Lang::Zh), zh, "{unit:?}");
        }
        for unit in Unit::ALL {
            assert_eq!(Unit::parse(unit.as_str()), Some(*unit));
        }
    }
}
