//! The features file: TOML parsing, validation, and compilation into per-entity series plans.
//!
//! File format (see `default_features.toml` for a complete example):
//!
//! ```toml
//! [settings]
//! tz_offset_minutes = 480      # local time for hour/night/weekend and calendar buckets (UTC+8)
//! lateness = "10m"             # out-of-order tolerance in event time
//! distinct_exact_limit = 1000  # distinct counts are exact up to this many values per entity/series
//! label_delay = "7d"           # when outcomes are known; what `lag = "label_delay"` means
//!
//! [entities]                   # entity name = list of payment fields joined into the key
//! payer = ["payer"]
//! pair  = ["payer", "payee"]
//! all   = []                   # no fields: the whole stream (overall rates)
//!
//! [[feature]]
//! name = "payee.distinct_payers_1h"
//! entity = "payee"
//! aggregate = "distinct"       # see `Aggregate`
//! of = "payer"                 # counterpart field for distinct / new_value
//! window = "1h"                # "<int><s|m|h|d>", or "calendar_day" / "calendar_year"
//! lag = "7d"                   # optional: the window ends this long before the payment
//! filter = { scene = ["PERSONAL_CODE_COLLECTION"], min_amount_fen = 100 }
//! description = "distinct payers paying this payee in the last hour"
//! label = "different payers in the last hour"   # optional: what a merchant reads
//! label_zh = "过去1小时内的不同付款人"            # optional: the same in Chinese
//! ```
//!
//! Outcome and history aggregates:
//! - `bad_count` / `bad_rate`: bad-labeled payments (and their share of all payments) of the
//!   entity made in the window, by payment time; with `lag = "label_delay"` the window ends
//!   when the labels of its payments are known. `bad_rate` may take
//!   `smooth = { toward = "<an earlier unsmoothed bad_rate>", weight = N }`: then it reads
//!   `(bad + N · prior) / (payments + N)` with the prior feature's value for this payment, so a
//!   category seen a few times reads close to the overall rate (and one never seen, the prior).
//! - `amount_vs_prior_avg`, `amount_above_prior_max`, `amount_robust_z`, `since_previous`: this
//!   payment against the entity's earlier payments in the window (read before it is recorded);
//!   with no history they read 1, 0, 0 and the window's length. The z-score uses a histogram of
//!   log2 amounts in quarter-octave bins per time bucket: entries per entity are bounded by
//!   buckets × occupied bins (a hot merchant with 30 amount bins over a 30d window: 3,600).
//! - `code` (per payment, `of = "<field>"`): a stable 53-bit code of the field's value
//!   ([`category_code`]); learners take code features as categorical
//!   ([`FeatureSet::categorical_slots`]), explanations show the value itself.
//!
//! `label` and `label_zh` are the feature's name in explanations for merchants (summaries,
//! remedies, evidence, model factors). They are optional so older files keep loading:
//! without `label` the description is shown, without `label_zh` the English label. How the
//! value is written (yuan, %, yes/no, days, hour) follows from the aggregate
//! ([`Aggregate::unit`]).
//!
//! Fields usable in keys and `of`: payer, payee, device, ip, card, city, payee_kind, scene,
//! channel, funding, merchant_category, `attr.<name>`. A key with an absent field (no card,
//! no city, missing attribute) is skipped: its features read 0 and nothing is recorded.
//!
//! Stored state is matched to the file by entity name and by a signature of each series
//! (kind, counterpart, filter, bucket width): changing a feature's filter or window starts its
//! series empty, unchanged series keep their history; rename an entity if you change its fields.
//!
//! Filter keys (all optional, all must match): scene, funding, channel, payee_kind (lists of
//! upper-case names), min_amount_fen, max_amount_fen (inclusive), night (bool), weekend (bool).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::payment::{Channel, Funding, OutcomeKind, PayeeKind, Payment, Scene};
use crate::units::Unit;

use super::FeatureFileError;

pub(crate) const DAY_MS: i64 = 86_400_000;
const LADDER_MS: [i64; 7] = [
    1_000, 10_000, 60_000, 600_000, 3_600_000, 21_600_000, DAY_MS,
];

/// A payment field that can be part of an entity key or be the counterpart of a distinct count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    Payer,
    Payee,
    Device,
    Ip,
    Card,
    City,
    PayeeKind,
    Scene,
    Channel,
    Funding,
    MerchantCategory,
    Attr(String),
}

impl Field {
    fn parse(text: &str) -> Option<Field> {
        Some(match text {
            "payer" => Field::Payer,
            "payee" => Field::Payee,
            "device" => Field::Device,
            "ip" => Field::Ip,
            "card" => Field::Card,
            "city" => Field::City,
            "payee_kind" => Field::PayeeKind,
            "scene" => Field::Scene,
            "channel" => Field::Channel,
            "funding" => Field::Funding,
            "merchant_category" => Field::MerchantCategory,
            _ => match text.strip_prefix("attr.") {
                Some(name) if !name.is_empty() => Field::Attr(name.to_string()),
                _ => return None,
            },
        })
    }

    /// The field's value in this payment; `None` when absent or empty (the entity/value is
    /// skipped: an unknown device must not look like one device shared by everybody).
    pub fn value<'a>(&self, p: &'a Payment) -> Option<&'a str> {
        let value = match self {
            Field::Payer => Some(p.payer.account_id.as_str()),
            Field::Payee => Some(p.payee.account_id.as_str()),
            Field::Device => Some(p.device_id.as_str()),
            Field::Ip => Some(p.ip.as_str()),
            Field::Card => p.card_fingerprint.as_deref(),
            Field::City => p.city_code.as_deref(),
            Field::PayeeKind => Some(p.payee.kind.as_str()),
            Field::Scene => Some(p.scene.as_str()),
            Field::Channel => Some(p.channel.as_str()),
            Field::Funding => Some(p.funding.as_str()),
            Field::MerchantCategory => Some(p.payee.merchant_category.as_str()),
            Field::Attr(name) => p.attributes.get(name).map(String::as_str),
        };
        value.filter(|v| !v.is_empty())
    }

    fn canon(&self) -> String {
        match self {
            Field::Attr(n) => format!("attr.{n}"),
            other => format!("{other:?}"),
        }
    }
}

/// What a feature computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Number of matching payments in the window (including this one).
    Count,
    /// Sum of amount_fen of matching payments in the window.
    Sum,
    /// Sum / count (0 when empty).
    Avg,
    /// Largest amount_fen in the window (0 when empty).
    Max,
    /// Distinct values of `of` among matching payments in the window.
    Distinct,
    /// 1 when `of` was not seen for this entity within the window before this payment, else 0.
    NewValue,
    /// Days (fractional) since the entity's first retained payment; 0 on the first.
    DaysSinceFirst,
    /// Bad outcome reports against the entity received in the window (bucketed by report time).
    BadReports,
    /// Bad-labeled / total matching payments of the entity in the (usually lagged) window.
    BadRate,
    /// This payment's amount_fen.
    AmountFen,
    /// Local hour of day 0..23.
    Hour,
    /// 1 when the local time is 00:00-05:59.
    IsNight,
    /// 1 on local Saturday/Sunday.
    IsWeekend,
    /// 1 when amount_fen is a multiple of `round_unit_fen` (default 100000 = 1000 CNY).
    IsRound,
    /// amount_fen / the entity's average amount in the window (window includes this payment).
    AmountVsAvg,
    /// Bad-labeled payments of the entity made in the (usually lagged) window, reported
    /// before this payment (the numerator of `bad_rate`).
    BadCount,
    /// amount_fen / the average of the entity's *earlier* payments in the window; 1 when it
    /// has none (the payment is then its own usual amount).
    AmountVsPriorAvg,
    /// amount_fen minus the largest of the entity's earlier payments in the window; 0 when
    /// it has none.
    AmountAbovePriorMax,
    /// Robust z-score of the amount against the entity's earlier payments in the window, on
    /// log2 amounts: (log2 amount - median) / (1.4826 · MAD), the MAD floored at the
    /// histogram's resolution; 0 with fewer than [`ROBUST_Z_MIN_HISTORY`] earlier payments.
    AmountRobustZ,
    /// Seconds since the entity's previous payment; the window's length when there is none
    /// within the window.
    SincePrevious,
    /// A stable code of the value of `of` in this payment (a category for the learners, see
    /// [`category_code`]); 0 when the field is absent.
    Code,
}

/// Earlier payments a robust z-score needs before it says anything: with one or two there
/// is no spread to measure, only the resolution floor, which would make any change look huge.
pub const ROBUST_Z_MIN_HISTORY: u64 = 3;

/// Amount histogram bins per octave for robust z-scores: a bin is a 19% step in amount, so
/// medians are exact to within 9%, and a MAD below one bin (0.25 in log2) is not measurable.
pub(crate) const AMOUNT_BINS_PER_OCTAVE: f64 = 4.0;

/// The category code of a field value: 53 bits of its FNV-1a hash, so the code is a whole
/// number an f64 holds exactly, the same in every process and release (a model stores codes).
pub fn category_code(value: &str) -> f64 {
    (fnv64(value.as_bytes()) >> 11) as f64
}

impl Aggregate {
    fn parse(text: &str) -> Option<Aggregate> {
        Some(match text {
            "count" => Aggregate::Count,
            "sum" => Aggregate::Sum,
            "avg" => Aggregate::Avg,
            "max" => Aggregate::Max,
            "distinct" => Aggregate::Distinct,
            "new_value" => Aggregate::NewValue,
            "days_since_first" => Aggregate::DaysSinceFirst,
            "bad_reports" => Aggregate::BadReports,
            "bad_rate" => Aggregate::BadRate,
            "amount_fen" => Aggregate::AmountFen,
            "hour" => Aggregate::Hour,
            "is_night" => Aggregate::IsNight,
            "is_weekend" => Aggregate::IsWeekend,
            "is_round" => Aggregate::IsRound,
            "amount_vs_avg" => Aggregate::AmountVsAvg,
            "bad_count" => Aggregate::BadCount,
            "amount_vs_prior_avg" => Aggregate::AmountVsPriorAvg,
            "amount_above_prior_max" => Aggregate::AmountAbovePriorMax,
            "amount_robust_z" => Aggregate::AmountRobustZ,
            "since_previous" => Aggregate::SincePrevious,
            "code" => Aggregate::Code,
            _ => return None,
        })
    }

    /// How this aggregate's values are shown to people.
    pub fn unit(self) -> Unit {
        match self {
            Aggregate::Count
            | Aggregate::Distinct
            | Aggregate::BadReports
            | Aggregate::BadCount => Unit::Count,
            Aggregate::Sum
            | Aggregate::Avg
            | Aggregate::Max
            | Aggregate::AmountFen
            | Aggregate::AmountAbovePriorMax => Unit::Yuan,
            Aggregate::BadRate => Unit::Percent,
            Aggregate::AmountVsAvg | Aggregate::AmountVsPriorAvg => Unit::Times,
            Aggregate::AmountRobustZ => Unit::Number,
            Aggregate::SincePrevious => Unit::Duration,
            Aggregate::Code => Unit::Text,
            Aggregate::NewValue
            | Aggregate::IsNight
            | Aggregate::IsWeekend
            | Aggregate::IsRound => Unit::YesNo,
            Aggregate::DaysSinceFirst => Unit::Days,
            Aggregate::Hour => Unit::Hour,
        }
    }

    fn per_payment(self) -> bool {
        matches!(
            self,
            Aggregate::AmountFen
                | Aggregate::Hour
                | Aggregate::IsNight
                | Aggregate::IsWeekend
                | Aggregate::IsRound
                | Aggregate::Code
        )
    }

    /// Read before this payment is recorded: facts about the entity's history without it
    /// (first seen, the usual amount, the previous payment).
    pub(crate) fn reads_before(self) -> bool {
        matches!(
            self,
            Aggregate::NewValue
                | Aggregate::AmountVsPriorAvg
                | Aggregate::AmountAbovePriorMax
                | Aggregate::AmountRobustZ
                | Aggregate::SincePrevious
        )
    }
}

/// The time span a feature reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Per-payment features and days_since_first.
    None,
    /// `len_ms` long, ending `lag_ms` before the payment, on buckets of `bucket_ms`.
    Sliding {
        len_ms: i64,
        lag_ms: i64,
        bucket_ms: i64,
    },
    /// The local calendar day of the payment.
    CalendarDay,
    /// The local calendar year of the payment.
    CalendarYear,
}

/// Which payments an aggregate counts. Empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub scene: Vec<Scene>,
    pub funding: Vec<Funding>,
    pub channel: Vec<Channel>,
    pub payee_kind: Vec<PayeeKind>,
    pub min_amount_fen: Option<i64>,
    pub max_amount_fen: Option<i64>,
    pub night: Option<bool>,
    pub weekend: Option<bool>,
}

impl Filter {
    pub fn matches(&self, p: &Payment, tz_offset_ms: i64) -> bool {
        (self.scene.is_empty() || self.scene.contains(&p.scene))
            && (self.funding.is_empty() || self.funding.contains(&p.funding))
            && (self.channel.is_empty() || self.channel.contains(&p.channel))
            && (self.payee_kind.is_empty() || self.payee_kind.contains(&p.payee.kind))
            && self.min_amount_fen.is_none_or(|m| p.amount_fen >= m)
            && self.max_amount_fen.is_none_or(|m| p.amount_fen <= m)
            && self
                .night
                .is_none_or(|n| is_night(p.event_time_ms, tz_offset_ms) == n)
            && self
                .weekend
                .is_none_or(|w| is_weekend(p.event_time_ms, tz_offset_ms) == w)
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    fn canon(&self) -> String {
        format!("{self:?}")
    }
}

/// One compiled feature, as described in explanations.
#[derive(Debug, Clone)]
pub struct FeatureDef {
    pub name: String,
    /// Entity name; `None` for per-payment features.
    pub entity: Option<String>,
    pub aggregate: Aggregate,
    pub window: Window,
    /// The window as written in the file ("24h", "calendar_day"), empty for none.
    pub window_text: String,
    /// The lag as written in the file, empty for none.
    pub lag_text: String,
    pub of: Option<Field>,
    pub filter: Filter,
    /// Outcome kinds that count as bad for bad_reports / bad_rate.
    pub outcomes: Vec<OutcomeKind>,
    pub round_unit_fen: i64,
    pub description: String,
    /// What a merchant reads for this feature, if the file gives it (see [`FeatureDef::label`]).
    pub label: Option<String>,
    pub label_zh: Option<String>,
    /// For `bad_rate`: pulled towards another rate when the entity has few payments.
    pub smooth: Option<Smooth>,
}

/// A `bad_rate` smoothed towards a broader rate (the category's towards the overall one):
/// `(bad + weight · prior) / (payments + weight)`, so a category with a handful of payments
/// reads close to the overall rate and one with thousands reads its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Smooth {
    /// The feature whose value is the prior (a `bad_rate` defined earlier in the file).
    pub toward: String,
    pub(crate) toward_slot: usize,
    /// Pseudo-payments at the prior rate.
    pub weight: f64,
}

impl FeatureDef {
    /// The merchant-facing name: the label, or the description when the file has none.
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.description)
    }

    /// The Chinese label, or the English one when the file has none.
    pub fn label_zh(&self) -> &str {
        self.label_zh.as_deref().unwrap_or_else(|| self.label())
    }

    pub fn unit(&self) -> Unit {
        self.aggregate.unit()
    }

    /// A category code rather than a quantity: learners encode it (see `model::categorical`).
    pub fn is_categorical(&self) -> bool {
        self.aggregate == Aggregate::Code
    }

    /// The text behind a code feature's value in `p` (the merchant category itself), which is
    /// what explanations show instead of the code.
    pub fn code_text<'a>(&self, p: &'a Payment) -> Option<&'a str> {
        match self.aggregate {
            Aggregate::Code => self.of.as_ref().and_then(|f| f.value(p)),
            _ => None,
        }
    }
}

/// What one series of buckets stores for an entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SeriesKind {
    Counter,
    Distinct(Field),
    Seen(Field),
    Reports(Vec<OutcomeKind>),
    Labels(Vec<OutcomeKind>),
    /// The latest payment's time, on 1 ms buckets (`since_previous`).
    Last,
    /// Payments by (time bucket, log2 amount bin), for medians (`amount_robust_z`).
    Amounts,
}

#[derive(Debug, Clone)]
pub(crate) struct SeriesSpec {
    pub kind: SeriesKind,
    pub filter: Filter,
    pub bucket_ms: i64,
    /// How far back (ms, before watermark - lateness) any reader may look.
    pub retention_ms: i64,
    /// Stable identity of the series in stored blobs, so a changed file keeps matching series.
    pub sig: u64,
}

/// How a feature reads its entity's state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader {
    pub slot: usize,
    pub series: usize,
    /// Second series (counter totals for bad_rate).
    pub aux: usize,
}

/// Bucket width of `Last` series: exact event times.
pub(crate) const LAST_BUCKET_MS: i64 = 1;

#[derive(Debug, Clone)]
pub(crate) struct EntityPlan {
    pub name: String,
    pub fields: Vec<Field>,
    pub series: Vec<SeriesSpec>,
    pub readers: Vec<Reader>,
}

/// The compiled features file.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    pub(crate) names: Vec<String>,
    pub(crate) defs: Vec<FeatureDef>,
    pub(crate) entities: Vec<EntityPlan>,
    pub(crate) payment_slots: Vec<usize>,
    pub(crate) tz_offset_ms: i64,
    pub(crate) lateness_ms: i64,
    pub(crate) exact_limit: usize,
    /// `[settings] label_delay`: what `lag = "label_delay"` means.
    pub(crate) label_delay_ms: i64,
    /// Slots of smoothed `bad_rate` features, in slot order (read after every entity).
    pub(crate) smoothed: Vec<usize>,
    /// Hash of the whole file text, for audit.
    pub(crate) file_hash: u64,
    unknown: FeatureDef,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    settings: RawSettings,
    entities: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    feature: Vec<Spanned<RawFeature>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    tz_offset_minutes: Option<Spanned<i64>>,
    lateness: Option<Spanned<String>>,
    distinct_exact_limit: Option<Spanned<i64>>,
    label_delay: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    name: Spanned<String>,
    entity: Option<Spanned<String>>,
    aggregate: Spanned<String>,
    window: Option<Spanned<String>>,
    lag: Option<Spanned<String>>,
    of: Option<Spanned<String>>,
    #[serde(default)]
    filter: Option<Spanned<RawFilter>>,
    outcomes: Option<Spanned<Vec<String>>>,
    round_unit_fen: Option<Spanned<i64>>,
    description: Spanned<String>,
    label: Option<Spanned<String>>,
    label_zh: Option<Spanned<String>>,
    smooth: Option<Spanned<RawSmooth>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmooth {
    toward: String,
    weight: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(default)]
    scene: Vec<String>,
    #[serde(default)]
    funding: Vec<String>,
    #[serde(default)]
    channel: Vec<String>,
    #[serde(default)]
    payee_kind: Vec<String>,
    min_amount_fen: Option<i64>,
    max_amount_fen: Option<i64>,
    night: Option<bool>,
    weekend: Option<bool>,
}

struct Ctx<'a> {
    text: &'a str,
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, offset: usize, reason: impl Into<String>) -> FeatureFileError {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        FeatureFileError::Invalid {
            file: self.file.to_string(),
            line,
            col,
            reason: reason.into(),
        }
    }
    fn at<T>(&self, s: &Spanned<T>, reason: impl Into<String>) -> FeatureFileError {
        self.err(s.span().start, reason)
    }
}

/// Parses "<int><unit>" with unit s, m, h or d.
pub(crate) fn parse_duration_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = text.split_at(split);
    let n: i64 = num.parse().ok()?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => DAY_MS,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// The largest ladder bucket that is at most 1/60 of the window and divides it exactly.
fn bucket_for(len_ms: i64) -> Option<i64> {
    LADDER_MS
        .iter()
        .rev()
        .copied()
        .find(|&b| b * 60 <= len_ms && len_ms % b == 0)
}

pub(crate) fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// splitmix64 finalizer: FNV alone has weak high bits, which HyperLogLog relies on.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(crate) fn local_ms(t: i64, tz_offset_ms: i64) -> i64 {
    t.saturating_add(tz_offset_ms)
}

pub(crate) fn hour_of(t: i64, tz_offset_ms: i64) -> i64 {
    local_ms(t, tz_offset_ms).rem_euclid(DAY_MS) / 3_600_000
}

pub(crate) fn is_night(t: i64, tz_offset_ms: i64) -> bool {
    hour_of(t, tz_offset_ms) < 6
}

pub(crate) fn is_weekend(t: i64, tz_offset_ms: i64) -> bool {
    // 1970-01-01 was a Thursday: day 0 -> weekday 3 (Monday = 0).
    let day = local_ms(t, tz_offset_ms).div_euclid(DAY_MS);
    (day + 3).rem_euclid(7) >= 5
}

/// Days since 1970-01-01 of January 1st of the (proleptic Gregorian) year containing `day`.
pub(crate) fn year_start_day(day: i64) -> i64 {
    // Howard Hinnant's civil_from_days / days_from_civil.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let mut y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    if m <= 2 {
        y += 1;
    }
    days_from_civil(y, 1, 1)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_list<T: Copy>(
    ctx: &Ctx,
    at: &Spanned<RawFilter>,
    names: &[String],
    parse: fn(&str) -> Option<T>,
    what: &str,
) -> Result<Vec<T>, FeatureFileError> {
    names
        .iter()
        .map(|n| parse(n).ok_or_else(|| ctx.at(at, format!("unknown {what} `{n}` in filter"))))
        .collect()
}

impl FeatureSet {
    /// The bundled default features (src/features/default_features.toml).
    pub fn defaults() -> FeatureSet {
        match FeatureSet::parse(DEFAULT_FEATURES, "default_features.toml") {
            Ok(set) => set,
            // The bundled file is covered by a test; an empty set keeps this infallible.
            Err(_) => FeatureSet::empty(),
        }
    }

    fn empty() -> FeatureSet {
        FeatureSet {
            names: Vec::new(),
            defs: Vec::new(),
            entities: Vec::new(),
            payment_slots: Vec::new(),
            tz_offset_ms: 8 * 3_600_000,
            lateness_ms: 600_000,
            exact_limit: 1000,
            label_delay_ms: 7 * DAY_MS,
            smoothed: Vec::new(),
            file_hash: 0,
            unknown: FeatureDef {
                name: "unknown".into(),
                entity: None,
                aggregate: Aggregate::AmountFen,
                window: Window::None,
                window_text: String::new(),
                lag_text: String::new(),
                of: None,
                filter: Filter::default(),
                outcomes: Vec::new(),
                round_unit_fen: 100_000,
                description: "no such feature slot".into(),
                label: None,
                label_zh: None,
                smooth: None,
            },
        }
    }

    pub fn load(path: &Path) -> Result<FeatureSet, FeatureFileError> {
        let text = crate::files::read_regular_text(path, crate::files::MAX_SMALL_FILE_BYTES)
            .map_err(|e| FeatureFileError::Io {
                file: path.display().to_string(),
                reason: e.to_string(),
            })?;
        FeatureSet::parse(&text, &path.display().to_string())
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The definition in `slot`; an out-of-range slot gets a placeholder rather than a panic.
    pub fn describe(&self, slot: usize) -> &FeatureDef {
        self.defs.get(slot).unwrap_or(&self.unknown)
    }

    pub fn defs(&self) -> &[FeatureDef] {
        &self.defs
    }

    pub fn tz_offset_ms(&self) -> i64 {
        self.tz_offset_ms
    }

    pub fn lateness_ms(&self) -> i64 {
        self.lateness_ms
    }

    pub fn file_hash(&self) -> u64 {
        self.file_hash
    }

    /// The label delay `lag = "label_delay"` stands for (`[settings] label_delay`, 7d).
    pub fn label_delay_ms(&self) -> i64 {
        self.label_delay_ms
    }

    /// Slots of the features that are category codes, for the learners' encodings.
    pub fn categorical_slots(&self) -> Vec<usize> {
        (0..self.defs.len())
            .filter(|&i| self.defs[i].is_categorical())
            .collect()
    }

    pub fn parse(text: &str, file: &str) -> Result<FeatureSet, FeatureFileError> {
        let ctx = Ctx { text, file };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let off = e.span().map_or(0, |s| s.start);
            ctx.err(off, e.message().trim().to_string())
        })?;
        let mut set = FeatureSet::empty();
        set.file_hash = fnv64(text.as_bytes());
        if let Some(tz) = &raw.settings.tz_offset_minutes {
            if !(-14 * 60..=14 * 60).contains(tz.get_ref()) {
                return Err(ctx.at(tz, "tz_offset_minutes must be within -840..=840"));
            }
            set.tz_offset_ms = tz.get_ref() * 60_000;
        }
        if let Some(l) = &raw.settings.lateness {
            set.lateness_ms = parse_duration_ms(l.get_ref())
                .filter(|&ms| (0..=7 * DAY_MS).contains(&ms))
                .ok_or_else(|| ctx.at(l, "lateness must be a duration like \"10m\", at most 7d"))?;
        }
        if let Some(x) = &raw.settings.distinct_exact_limit {
            if !(1..=100_000).contains(x.get_ref()) {
                return Err(ctx.at(x, "distinct_exact_limit must be within 1..=100000"));
            }
            set.exact_limit = *x.get_ref() as usize;
        }
        if let Some(d) = &raw.settings.label_delay {
            set.label_delay_ms = parse_duration_ms(d.get_ref())
                .filter(|&ms| (0..=365 * DAY_MS).contains(&ms))
                .ok_or_else(|| {
                    ctx.at(
                        d,
                        "label_delay must be a duration like \"7d\", at most 365d",
                    )
                })?;
        }
        for (name, fields) in &raw.entities {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ctx.at(
                    fields,
                    format!("entity name `{name}` must be [A-Za-z0-9_]+"),
                ));
            }
            // No fields: the whole stream, one key every payment belongs to (overall rates).
            let mut parsed = Vec::new();
            for f in fields.get_ref() {
                parsed.push(
                    Field::parse(f.get_ref())
                        .ok_or_else(|| ctx.at(f, format!("unknown field `{}`", f.get_ref())))?,
                );
            }
            set.entities.push(EntityPlan {
                name: name.clone(),
                fields: parsed,
                series: Vec::new(),
                readers: Vec::new(),
            });
        }
        for f in &raw.feature {
            set.add_feature(&ctx, f)?;
        }
        Ok(set)
    }

    fn add_feature(&mut self, ctx: &Ctx, sf: &Spanned<RawFeature>) -> Result<(), FeatureFileError> {
        let f = sf.get_ref();
        let name = f.name.get_ref().clone();
        if name.is_empty() {
            return Err(ctx.at(&f.name, "feature name is empty"));
        }
        if self.names.contains(&name) {
            return Err(ctx.at(&f.name, format!("duplicate feature `{name}`")));
        }
        if f.description.get_ref().trim().is_empty() {
            return Err(ctx.at(&f.description, "description is empty"));
        }
        let label = |field: &Option<Spanned<String>>, key: &str| match field {
            Some(l) if l.get_ref().trim().is_empty() => Err(ctx.at(
                l,
                format!("{key} is empty: leave it out or write the words"),
            )),
            Some(l) => Ok(Some(l.get_ref().trim().to_string())),
            None => Ok(None),
        };
        let (label, label_zh) = (label(&f.label, "label")?, label(&f.label_zh, "label_zh")?);
        let agg = Aggregate::parse(f.aggregate.get_ref()).ok_or_else(|| {
            ctx.at(
                &f.aggregate,
                format!("unknown aggregate `{}`", f.aggregate.get_ref()),
            )
        })?;
        let slot = self.names.len();
        let mut filter = Filter::default();
        if let Some(rf) = &f.filter {
            let r = rf.get_ref();
            filter.scene = parse_list(ctx, rf, &r.scene, Scene::parse, "scene")?;
            filter.funding = parse_list(ctx, rf, &r.funding, Funding::parse, "funding")?;
            filter.channel = parse_list(ctx, rf, &r.channel, Channel::parse, "channel")?;
            filter.payee_kind = parse_list(ctx, rf, &r.payee_kind, PayeeKind::parse, "payee_kind")?;
            filter.min_amount_fen = r.min_amount_fen;
            filter.max_amount_fen = r.max_amount_fen;
            filter.night = r.night;
            filter.weekend = r.weekend;
            // Sorted so equal filters give equal series signatures.
            filter.scene.sort();
            filter.funding.sort();
            filter.channel.sort();
            filter.payee_kind.sort();
        }
        let mut outcomes: Vec<OutcomeKind> = OutcomeKind::ALL
            .iter()
            .copied()
            .filter(|o| o.is_bad())
            .collect();
        if let Some(o) = &f.outcomes {
            outcomes = Vec::new();
            for n in o.get_ref() {
                outcomes.push(
                    OutcomeKind::parse(n)
                        .ok_or_else(|| ctx.at(o, format!("unknown outcome `{n}`")))?,
                );
            }
            outcomes.sort();
            outcomes.dedup();
        }
        let round_unit_fen = match &f.round_unit_fen {
            Some(u) if *u.get_ref() <= 0 => {
                return Err(ctx.at(u, "round_unit_fen must be positive"))
            }
            Some(u) => *u.get_ref(),
            None => 100_000,
        };
        let window_text = f
            .window
            .as_ref()
            .map_or(String::new(), |w| w.get_ref().clone());
        let lag_text = f
            .lag
            .as_ref()
            .map_or(String::new(), |w| w.get_ref().clone());
        let of = match &f.of {
            Some(o) => Some(
                Field::parse(o.get_ref())
                    .ok_or_else(|| ctx.at(o, format!("unknown field `{}`", o.get_ref())))?,
            ),
            None => None,
        };

        let window = if agg.per_payment() || agg == Aggregate::DaysSinceFirst {
            if let Some(w) = &f.window {
                return Err(ctx.at(
                    w,
                    format!("aggregate `{}` takes no window", f.aggregate.get_ref()),
                ));
            }
            Window::None
        } else {
            let w = f.window.as_ref().ok_or_else(|| {
                ctx.at(
                    &f.aggregate,
                    format!("aggregate `{}` needs a window", f.aggregate.get_ref()),
                )
            })?;
            let lag_ms = match &f.lag {
                Some(l) if l.get_ref() == "label_delay" => self.label_delay_ms,
                Some(l) => parse_duration_ms(l.get_ref())
                    .filter(|&ms| ms >= 0)
                    .ok_or_else(|| {
                        ctx.at(
                            l,
                            format!(
                                "bad lag `{}`: use <int><s|m|h|d> or \"label_delay\"",
                                l.get_ref()
                            ),
                        )
                    })?,
                None => 0,
            };
            match w.get_ref().as_str() {
                "calendar_day" | "calendar_year" => {
                    if lag_ms != 0 {
                        return Err(ctx.at(w, "calendar windows take no lag"));
                    }
                    if !matches!(
                        agg,
                        Aggregate::Count | Aggregate::Sum | Aggregate::Avg | Aggregate::Max
                    ) {
                        return Err(ctx.at(w, "calendar windows are for count, sum, avg and max"));
                    }
                    if w.get_ref() == "calendar_day" {
                        Window::CalendarDay
                    } else {
                        Window::CalendarYear
                    }
                }
                text => {
                    let len_ms = parse_duration_ms(text).ok_or_else(|| {
                        ctx.at(w, format!("bad window `{text}`: use <int><s|m|h|d>, calendar_day or calendar_year"))
                    })?;
                    let bucket_ms = bucket_for(len_ms).ok_or_else(|| {
                        ctx.at(
                            w,
                            format!(
                                "window `{text}` must be at least 1m and a whole number of seconds"
                            ),
                        )
                    })?;
                    Window::Sliding {
                        len_ms,
                        lag_ms,
                        bucket_ms,
                    }
                }
            }
        };
        if lag_text.is_empty() {
        } else if agg.reads_before() || matches!(agg, Aggregate::Distinct | Aggregate::AmountVsAvg)
        {
            return Err(ctx.at(
                f.lag.as_ref().unwrap_or(&f.name),
                format!(
                    "aggregate `{}` takes no lag: it compares with everything up to this payment",
                    f.aggregate.get_ref()
                ),
            ));
        }
        let needs_of = matches!(
            agg,
            Aggregate::Distinct | Aggregate::NewValue | Aggregate::Code
        );
        if needs_of && of.is_none() {
            return Err(ctx.at(&f.aggregate, "distinct, new_value and code need `of`"));
        }
        if !needs_of {
            if let Some(o) = &f.of {
                return Err(ctx.at(o, "`of` is only for distinct, new_value and code"));
            }
        }
        let smooth = match &f.smooth {
            None => None,
            Some(_) if agg != Aggregate::BadRate => {
                return Err(ctx.at(&f.aggregate, "`smooth` is only for bad_rate"))
            }
            Some(sm) => {
                let raw = sm.get_ref();
                let toward_slot = self.index_of(&raw.toward).ok_or_else(|| {
                    ctx.at(
                        sm,
                        format!(
                            "smooth: unknown feature `{}` (the prior must be defined above)",
                            raw.toward
                        ),
                    )
                })?;
                let prior = &self.defs[toward_slot];
                if prior.aggregate != Aggregate::BadRate || prior.smooth.is_some() {
                    return Err(ctx.at(
                        sm,
                        format!("smooth: `{}` must be an unsmoothed bad_rate", raw.toward),
                    ));
                }
                if raw.weight == 0 {
                    return Err(ctx.at(sm, "smooth: weight must be at least 1 payment"));
                }
                Some(Smooth {
                    toward: raw.toward.clone(),
                    toward_slot,
                    weight: f64::from(raw.weight),
                })
            }
        };

        let entity = if agg.per_payment() {
            if let Some(e) = &f.entity {
                return Err(ctx.at(e, "per-payment aggregates take no entity"));
            }
            self.payment_slots.push(slot);
            None
        } else {
            let e = f
                .entity
                .as_ref()
                .ok_or_else(|| ctx.at(&f.name, "feature needs an entity"))?;
            let ei = self
                .entities
                .iter()
                .position(|p| &p.name == e.get_ref())
                .ok_or_else(|| ctx.at(e, format!("unknown entity `{}`", e.get_ref())))?;
            let (bucket_ms, span_ms) = match window {
                Window::None => (DAY_MS, 0),
                Window::Sliding {
                    len_ms,
                    lag_ms,
                    bucket_ms,
                } => (bucket_ms, len_ms + lag_ms + bucket_ms),
                Window::CalendarDay => (DAY_MS, 2 * DAY_MS),
                Window::CalendarYear => (DAY_MS, 367 * DAY_MS),
            };
            let plan = &mut self.entities[ei];
            let (series, aux) = match agg {
                Aggregate::Count
                | Aggregate::Sum
                | Aggregate::Avg
                | Aggregate::Max
                | Aggregate::AmountVsAvg
                | Aggregate::AmountVsPriorAvg
                | Aggregate::AmountAbovePriorMax => (
                    plan.series_for(SeriesKind::Counter, &filter, bucket_ms, span_ms, false),
                    0,
                ),
                Aggregate::Distinct => (
                    plan.series_for(
                        SeriesKind::Distinct(of.clone().unwrap_or(Field::Payer)),
                        &filter,
                        bucket_ms,
                        span_ms,
                        true,
                    ),
                    0,
                ),
                Aggregate::NewValue => (
                    plan.series_for(
                        SeriesKind::Seen(of.clone().unwrap_or(Field::Payer)),
                        &filter,
                        bucket_ms,
                        span_ms,
                        true,
                    ),
                    0,
                ),
                Aggregate::DaysSinceFirst => (0, 0),
                Aggregate::BadReports => (
                    plan.series_for(
                        SeriesKind::Reports(outcomes.clone()),
                        &filter,
                        bucket_ms,
                        span_ms,
                        false,
                    ),
                    0,
                ),
                Aggregate::BadRate => (
                    plan.series_for(
                        SeriesKind::Labels(outcomes.clone()),
                        &filter,
                        bucket_ms,
                        span_ms,
                        false,
                    ),
                    plan.series_for(SeriesKind::Counter, &filter, bucket_ms, span_ms, false),
                ),
                Aggregate::BadCount => (
                    plan.series_for(
                        SeriesKind::Labels(outcomes.clone()),
                        &filter,
                        bucket_ms,
                        span_ms,
                        false,
                    ),
                    0,
                ),
                Aggregate::SincePrevious => (
                    plan.series_for(SeriesKind::Last, &filter, LAST_BUCKET_MS, span_ms, false),
                    0,
                ),
                Aggregate::AmountRobustZ => (
                    plan.series_for(SeriesKind::Amounts, &filter, bucket_ms, span_ms, false),
                    0,
                ),
                _ => (0, 0),
            };
            plan.readers.push(Reader { slot, series, aux });
            Some(e.get_ref().clone())
        };

        if smooth.is_some() {
            self.smoothed.push(slot);
        }
        self.names.push(name.clone());
        self.defs.push(FeatureDef {
            name,
            entity,
            aggregate: agg,
            window,
            window_text,
            lag_text,
            of,
            filter,
            outcomes,
            round_unit_fen,
            description: f.description.get_ref().trim().to_string(),
            label,
            label_zh,
            smooth,
        });
        Ok(())
    }
}

impl EntityPlan {
    /// Finds or adds the series; `merge_width` lets set-valued series share one map across
    /// window lengths by taking the finer bucket (ladder buckets divide each other).
    fn series_for(
        &mut self,
        kind: SeriesKind,
        filter: &Filter,
        bucket_ms: i64,
        span_ms: i64,
        merge_width: bool,
    ) -> usize {
        let found = self.series.iter().position(|s| {
            s.kind == kind && s.filter == *filter && (merge_width || s.bucket_ms == bucket_ms)
        });
        let i = match found {
            Some(i) => {
                let s = &mut self.series[i];
                s.bucket_ms = s.bucket_ms.min(bucket_ms);
                s.retention_ms = s.retention_ms.max(span_ms);
                i
            }
            None => {
                self.series.push(SeriesSpec {
                    kind,
                    filter: filter.clone(),
                    bucket_ms,
                    retention_ms: span_ms,
                    sig: 0,
                });
                self.series.len() - 1
            }
        };
        let s = &mut self.series[i];
        s.sig =
            fnv64(format!("{:?}|{}|{}", s.kind_canon(), s.filter.canon(), s.bucket_ms).as_bytes());
        i
    }
}

impl SeriesSpec {
    fn kind_canon(&self) -> String {
        match &self.kind {
            SeriesKind::Distinct(f) => format!("distinct:{}", f.canon()),
            SeriesKind::Seen(f) => format!("seen:{}", f.canon()),
            other => format!("{other:?}"),
        }
    }
}

pub(crate) const DEFAULT_FEATURES: &str = include_str!("default_features.toml");
