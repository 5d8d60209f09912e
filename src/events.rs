//! The labeled payment CSV: the one offline format read by replay, train and backtest and
//! written by the simulator, plus the time and duration parsing their command lines share.
//!
//! # Columns
//!
//! The file has a header row; column order is free and **unknown columns are ignored**
//! (so a file may carry notes, or the simulator's `fraud_pattern`, without breaking the engine).
//! Cells are trimmed of surrounding spaces. An empty cell counts as "missing".
//!
//! | column | required | meaning | when missing or empty |
//! |---|---|---|---|
//! | `payment_id` | yes | unique id; a repeat is a bad row | bad row |
//! | `event_time` | yes | RFC 3339 (`2026-03-01T08:30:00Z`, `+08:00` offsets, fractions) or UTC epoch milliseconds | bad row |
//! | `payer_id` | yes | paying account | bad row |
//! | `payee_id` | yes | collecting account (merchant or personal code) | bad row |
//! | `amount_fen` | yes | whole fen, greater than 0 | bad row |
//! | `label` | yes (column) | `0` genuine, `1` fraud | empty cell: label unknown (`None`) |
//! | `label_reported_at` | no | when the label became known (RFC 3339 or epoch ms); not before `event_time` | `None`: time unknown |
//! | `channel` | no | `Channel::as_str` name, e.g. `WECHAT_PAY` | `ALIPAY` |
//! | `scene` | no | `Scene::as_str` name | `MERCHANT_STATIC_CODE` |
//! | `payee_kind` | no | `PayeeKind::as_str` name | `MERCHANT` |
//! | `funding` | no | `Funding::as_str` name | `BALANCE` |
//! | `device_id` | no | device fingerprint | `""` (see below) |
//! | `ip` | no | IPv4 or IPv6 address | `""` (see below) |
//! | `card_fingerprint` | no | funding card | `None` |
//! | `city_code` | no | city (e.g. GB/T 2260 code) | `None` |
//! | `payer_real_name_verified` | no | `0` / `1` | `false` |
//! | `payer_registered_at` | no | RFC 3339 or epoch ms | `0` (unknown, as in `Payer`) |
//! | `merchant_category` | no | merchant category code | `""` |
//! | `currency` | no | 3 upper-case letters | `CNY` |
//!
//! Enum names are case-sensitive, exactly as `as_str` writes them. `Payment::attributes` has no
//! column and is always empty when read.
//!
//! **Unknown device and IP are the empty string**, never a placeholder such as `"unknown"`: a
//! placeholder would look like one device shared by every payer whose device is missing and
//! would fire "many accounts on one device" signals. Feature code must skip empty keys. (The
//! gRPC path never produces empty values: `request.rs` requires both.)
//!
//! # Labels and time
//!
//! `label` is the truth as known when the file was made; `label_reported_at` is when it became
//! known to the platform. A feature computed at time `t` may only use labels with
//! `label_reported_at <= t` ([`LabeledEvent::label_known_at`]); a row with a label but no
//! report time is never treated as known at any time, because guessing would leak the future.
//!
//! # Bad rows
//!
//! A bad row (unparsable number or time, amount <= 0, unknown enum name, missing required value,
//! repeated `payment_id`, wrong number of cells) stops the read with `line N: column `x`: reason`
//! unless [`ReadOptions::skip_bad_rows`] is set; then it is listed in [`ReadReport::skipped`] and
//! the first row with a given `payment_id` wins. Line numbers are the file's (header = line 1).
//! A missing required column in the header is always an error naming the column.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::payment::{Channel, Funding, Payee, PayeeKind, Payer, Payment, Scene};

/// One row of the file: a payment plus its (possibly delayed, possibly unknown) truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledEvent {
    pub payment: Payment,
    /// `Some(true)` fraud, `Some(false)` genuine, `None` unknown.
    pub label: Option<bool>,
    /// When the label became known (UTC epoch ms); `None` when that time is unknown.
    pub label_reported_at_ms: Option<i64>,
    /// Line in the source file (header = 1); 0 for events that did not come from a file.
    pub line: u64,
}

impl LabeledEvent {
    /// The label as it was known at `t_ms`: only once reported, so features never see the future.
    pub fn label_known_at(&self, t_ms: i64) -> Option<bool> {
        match (self.label, self.label_reported_at_ms) {
            (Some(label), Some(at)) if at <= t_ms => Some(label),
            _ => None,
        }
    }
}

/// How to treat bad rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Skip and report bad rows instead of stopping at the first one.
    pub skip_bad_rows: bool,
}

/// What a read produced.
#[derive(Debug, Clone, Default)]
pub struct ReadReport {
    /// Sorted by `(event_time_ms, line)`; the file itself need not be sorted.
    pub events: Vec<LabeledEvent>,
    /// Bad rows, in file order (only filled when `skip_bad_rows`).
    pub skipped: Vec<RowError>,
    /// Whether the file has a `label_reported_at` column. Without one, a replay assumes each
    /// label became known a fixed delay after the payment; with one, an empty cell means the
    /// truth never became known.
    pub has_label_reported_at: bool,
}

/// One bad row: where, which column (when one is to blame) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    /// `None` when the row as a whole is broken (wrong number of cells, bad UTF-8).
    pub column: Option<String>,
    pub reason: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(c) => write!(f, "line {}: column `{}`: {}", self.line, c, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

impl std::error::Error for RowError {}

/// Everything that can stop a read or a write.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("cannot open `{path}`: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the csv: {0}")]
    Read(csv::Error),
    #[error("missing required column `{0}` in the header")]
    MissingColumn(&'static str),
    #[error("column `{0}` appears more than once in the header")]
    DuplicateColumn(String),
    #[error("{0}")]
    BadRow(RowError),
    #[error("cannot write the csv: {0}")]
    Write(#[from] csv::Error),
    #[error("cannot write: {0}")]
    Io(#[from] std::io::Error),
    #[error("extra column `{0}` clashes with a standard column")]
    ExtraColumnClash(String),
    #[error("expected {expected} extra values, got {got}")]
    ExtraValueCount { expected: usize, got: usize },
}

/// A time or duration argument that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("invalid duration `{0}`: expected a whole number followed by d, h, m, s or ms (e.g. 7d, 500ms)")]
    Duration(String),
    #[error("invalid time `{0}`: expected RFC 3339 (2026-03-01T08:00:00Z) or epoch milliseconds")]
    Time(String),
    #[error("invalid date `{0}`: expected YYYY-MM-DD (UTC midnight) or RFC 3339")]
    Date(String),
}

const REQUIRED: [&str; 6] = [
    "payment_id",
    "event_time",
    "payer_id",
    "payee_id",
    "amount_fen",
    "label",
];

/// Column order used by the writer (the reader accepts any order).
pub const COLUMNS: [&str; 19] = [
    "payment_id",
    "event_time",
    "payer_id",
    "payee_id",
    "amount_fen",
    "label",
    "label_reported_at",
    "channel",
    "scene",
    "payee_kind",
    "funding",
    "device_id",
    "ip",
    "card_fingerprint",
    "city_code",
    "payer_real_name_verified",
    "payer_registered_at",
    "merchant_category",
    "currency",
];

/// Reads a labeled payment file. See the module doc for columns and defaults.
pub fn read_events(path: &Path, opts: &ReadOptions) -> Result<ReadReport, EventsError> {
    let file = File::open(path).map_err(|source| EventsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    read_events_from(std::io::BufReader::new(file), opts)
}

/// Reads labeled payments from any reader (tests, stdin).
pub fn read_events_from(r: impl Read, opts: &ReadOptions) -> Result<ReadReport, EventsError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true) // so a short row is a row error with its line, not a bare csv error
        .trim(csv::Trim::All)
        .from_reader(r);
    let header = rdr.headers().map_err(EventsError::Read)?.clone();
    let cols = Columns::from_header(&header)?;

    let mut report = ReadReport {
        has_label_reported_at: cols.label_reported_at.is_some(),
        ..ReadReport::default()
    };
    let mut seen: HashSet<String> = HashSet::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line_hint = rdr.position().line();
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(line_hint, |p| p.line());
                let parsed = if record.len() != header.len() {
                    Err(RowError {
                        line,
                        column: None,
                        reason: format!(
                            "expected {} cells like the header, got {}",
                            header.len(),
                            record.len()
                        ),
                    })
                } else {
                    cols.parse(&record, line).and_then(|ev| {
                        if seen.contains(&ev.payment.payment_id) {
                            Err(RowError {
                                line,
                                column: Some("payment_id".into()),
                                reason: format!("duplicate payment_id `{}`", ev.payment.payment_id),
                            })
                        } else {
                            seen.insert(ev.payment.payment_id.clone());
                            Ok(ev)
                        }
                    })
                };
                match parsed {
                    Ok(ev) => report.events.push(ev),
                    Err(e) if opts.skip_bad_rows => report.skipped.push(e),
                    Err(e) => return Err(EventsError::BadRow(e)),
                }
            }
            Err(e) => {
                // Bad UTF-8 is a row problem; anything else (I/O) ends the read.
                let line = match e.kind() {
                    csv::ErrorKind::Utf8 { pos: Some(p), .. } => Some(p.line()),
                    csv::ErrorKind::Utf8 { pos: None, .. } => Some(line_hint),
                    _ => None,
                };
                match line {
                    Some(line) => {
                        let err = RowError {
                            line,
                            column: None,
                            reason: "is not valid UTF-8".into(),
                        };
                        if opts.skip_bad_rows {
                            report.skipped.push(err);
                        } else {
                            return Err(EventsError::BadRow(err));
                        }
                    }
                    None => return Err(EventsError::Read(e)),
                }
            }
        }
    }
    // Stable sort on (time, line): replay order is reproducible whatever the file order.
    report
        .events
        .sort_by_key(|e| (e.payment.event_time_ms, e.line));
    Ok(report)
}

/// Header positions of the columns we understand.
struct Columns {
    payment_id: usize,
    event_time: usize,
    payer_id: usize,
    payee_id: usize,
    amount_fen: usize,
    label: usize,
    label_reported_at: Option<usize>,
    channel: Option<usize>,
    scene: Option<usize>,
    payee_kind: Option<usize>,
    funding: Option<usize>,
    device_id: Option<usize>,
    ip: Option<usize>,
    card_fingerprint: Option<usize>,
    city_code: Option<usize>,
    real_name: Option<usize>,
    registered_at: Option<usize>,
    merchant_category: Option<usize>,
    currency: Option<usize>,
}

impl Columns {
    fn from_header(header: &csv::StringRecord) -> Result<Self, EventsError> {
        let mut names = HashSet::new();
        for h in header.iter() {
            if !h.is_empty() && !names.insert(h) {
                return Err(EventsError::DuplicateColumn(h.to_owned()));
            }
        }
        let find = |name: &str| header.iter().position(|h| h == name);
        let need = |name: &'static str| find(name).ok_or(EventsError::MissingColumn(name));
        Ok(Columns {
            payment_id: need(REQUIRED[0])?,
            event_time: need(REQUIRED[1])?,
            payer_id: need(REQUIRED[2])?,
            payee_id: need(REQUIRED[3])?,
            amount_fen: need(REQUIRED[4])?,
            label: need(REQUIRED[5])?,
            label_reported_at: find("label_reported_at"),
            channel: find("channel"),
            scene: find("scene"),
            payee_kind: find("payee_kind"),
            funding: find("funding"),
            device_id: find("device_id"),
            ip: find("ip"),
            card_fingerprint: find("card_fingerprint"),
            city_code: find("city_code"),
            real_name: find("payer_real_name_verified"),
            registered_at: find("payer_registered_at"),
            merchant_category: find("merchant_category"),
            currency: find("currency"),
        })
    }

    fn parse(&self, rec: &csv::StringRecord, line: u64) -> Result<LabeledEvent, RowError> {
        let bad = |column: &str, reason: String| RowError {
            line,
            column: Some(column.to_owned()),
            reason,
        };
        let cell = |i: usize| rec.get(i).unwrap_or("");
        let opt = |i: Option<usize>| i.map(cell).filter(|s| !s.is_empty());
        let id = |name: &str, i: usize| -> Result<String, RowError> {
            let v = cell(i);
            if v.is_empty() {
                return Err(bad(name, "is required but empty".into()));
            }
            if v.chars().any(char::is_control) {
                return Err(bad(name, "must not contain control characters".into()));
            }
            Ok(v.to_owned())
        };
        fn enum_cell<T>(
            v: Option<&str>,
            default: T,
            parse: fn(&str) -> Option<T>,
        ) -> Result<T, String> {
            match v {
                None => Ok(default),
                Some(s) => parse(s).ok_or_else(|| format!("unknown name `{s}`")),
            }
        }

        let payment_id = id("payment_id", self.payment_id)?;
        let event_time_ms = match cell(self.event_time) {
            "" => return Err(bad("event_time", "is required but empty".into())),
            s => parse_time(s).map_err(|e| bad("event_time", e.to_string()))?,
        };
        // Bounded so window arithmetic downstream (t + 365d) can never overflow.
        if !(1..=MAX_TIME_MS).contains(&event_time_ms) {
            return Err(bad(
                "event_time",
                "must be after 1970-01-01 and before year 10000".into(),
            ));
        }
        let payer_id = id("payer_id", self.payer_id)?;
        let payee_id = id("payee_id", self.payee_id)?;
        let amount_fen = match cell(self.amount_fen) {
            "" => return Err(bad("amount_fen", "is required but empty".into())),
            s => match s.parse::<i64>() {
                Ok(a) if a > 0 => a,
                Ok(a) => {
                    return Err(bad(
                        "amount_fen",
                        format!("must be greater than 0 (got {a})"),
                    ))
                }
                Err(_) => {
                    return Err(bad(
                        "amount_fen",
                        format!("`{s}` is not a whole number of fen"),
                    ))
                }
            },
        };
        let label = match cell(self.label) {
            "" => None,
            "0" => Some(false),
            "1" => Some(true),
            s => return Err(bad("label", format!("must be 0, 1 or empty (got `{s}`)"))),
        };
        let label_reported_at_ms = match opt(self.label_reported_at) {
            None => None,
            Some(s) => {
                let at = parse_time(s).map_err(|e| bad("label_reported_at", e.to_string()))?;
                if label.is_none() {
                    return Err(bad("label_reported_at", "is set but label is empty".into()));
                }
                if at < event_time_ms {
                    return Err(bad("label_reported_at", "is before event_time".into()));
                }
                Some(at)
            }
        };
        let channel = enum_cell(opt(self.channel), Channel::Alipay, Channel::parse)
            .map_err(|r| bad("channel", r))?;
        let scene = enum_cell(opt(self.scene), Scene::MerchantStaticCode, Scene::parse)
            .map_err(|r| bad("scene", r))?;
        let kind = enum_cell(opt(self.payee_kind), PayeeKind::Merchant, PayeeKind::parse)
            .map_err(|r| bad("payee_kind", r))?;
        let funding = enum_cell(opt(self.funding), Funding::Balance, Funding::parse)
            .map_err(|r| bad("funding", r))?;
        let ip = opt(self.ip).unwrap_or("");
        if !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
            return Err(bad("ip", format!("`{ip}` is not an IPv4 or IPv6 address")));
        }
        let real_name_verified = match opt(self.real_name) {
            None | Some("0") => false,
            Some("1") => true,
            Some(s) => {
                return Err(bad(
                    "payer_real_name_verified",
                    format!("must be 0, 1 or empty (got `{s}`)"),
                ))
            }
        };
        let registered_at_ms = match opt(self.registered_at) {
            None => 0,
            Some(s) => parse_time(s).map_err(|e| bad("payer_registered_at", e.to_string()))?,
        };
        let currency = match opt(self.currency) {
            None => "CNY".to_owned(),
            Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => c.to_owned(),
            Some(c) => {
                return Err(bad(
                    "currency",
                    format!("must be a 3-letter upper-case ISO 4217 code (got `{c}`)"),
                ))
            }
        };

        Ok(LabeledEvent {
            payment: Payment {
                payment_id,
                event_time_ms,
                channel,
                scene,
                payer: Payer {
                    account_id: payer_id,
                    real_name_verified,
                    registered_at_ms,
                },
                payee: Payee {
                    account_id: payee_id,
                    kind,
                    merchant_category: opt(self.merchant_category).unwrap_or("").to_owned(),
                },
                amount_fen,
                currency,
                funding,
                card_fingerprint: opt(self.card_fingerprint).map(str::to_owned),
                device_id: opt(self.device_id).unwrap_or("").to_owned(),
                ip: ip.to_owned(),
                city_code: opt(self.city_code).map(str::to_owned),
                attributes: Default::default(),
            },
            label,
            label_reported_at_ms,
            line,
        })
    }
}

/// Streams events to CSV: the standard [`COLUMNS`] followed by caller-named extra columns
/// (the simulator adds `fraud_pattern`). Times are written as RFC 3339 UTC with milliseconds.
pub struct EventWriter<W: Write> {
    csv: csv::Writer<W>,
    extra: usize,
}

impl<W: Write> EventWriter<W> {
    /// Writes the header at once. Extra names must not repeat a standard column.
    pub fn new(w: W, extra_columns: &[&str]) -> Result<Self, EventsError> {
        if let Some(c) = extra_columns
            .iter()
            .find(|c| COLUMNS.contains(c) || c.is_empty())
        {
            return Err(EventsError::ExtraColumnClash((*c).to_owned()));
        }
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(COLUMNS.iter().chain(extra_columns.iter()))?;
        Ok(EventWriter {
            csv,
            extra: extra_columns.len(),
        })
    }

    /// Writes one row; `extra` holds one value per extra column, in order.
    pub fn write(&mut self, ev: &LabeledEvent, extra: &[&str]) -> Result<(), EventsError> {
        if extra.len() != self.extra {
            return Err(EventsError::ExtraValueCount {
                expected: self.extra,
                got: extra.len(),
            });
        }
        let p = &ev.payment;
        let time = |ms: i64| format_rfc3339_ms(ms);
        let amount = p.amount_fen.to_string();
        let label = match ev.label {
            None => "",
            Some(false) => "0",
            Some(true) => "1",
        };
        let reported = ev.label_reported_at_ms.map(time).unwrap_or_default();
        let registered = if p.payer.registered_at_ms == 0 {
            String::new()
        } else {
            time(p.payer.registered_at_ms)
        };
        let event_time = time(p.event_time_ms);
        let fixed: [&str; 19] = [
            &p.payment_id,
            &event_time,
            &p.payer.account_id,
            &p.payee.account_id,
            &amount,
            label,
            &reported,
            p.channel.as_str(),
            p.scene.as_str(),
            p.payee.kind.as_str(),
            p.funding.as_str(),
            &p.device_id,
            &p.ip,
            p.card_fingerprint.as_deref().unwrap_or(""),
            p.city_code.as_deref().unwrap_or(""),
            if p.payer.real_name_verified { "1" } else { "0" },
            &registered,
            &p.payee.merchant_category,
            &p.currency,
        ];
        self.csv.write_record(fixed.iter().chain(extra.iter()))?;
        Ok(())
    }

    /// Flushes and returns the inner writer.
    pub fn finish(self) -> Result<W, EventsError> {
        self.csv
            .into_inner()
            .map_err(|e| EventsError::Io(std::io::Error::other(e.to_string())))
    }
}

/// Writes all events (no extra columns) and flushes.
pub fn write_events(w: impl Write, events: &[LabeledEvent]) -> Result<(), EventsError> {
    let mut out = EventWriter::new(w, &[])?;
    for ev in events {
        out.write(ev, &[])?;
    }
    out.finish()?;
    Ok(())
}

/// Parses "7d", "12h", "30m", "90s" or "500ms" (any humantime duration) into milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, TimeError> {
    humantime::parse_duration(s.trim())
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| TimeError::Duration(s.to_owned()))
}

/// Parses a `--train-from`-style date: `YYYY-MM-DD` (UTC midnight) or anything [`parse_time`] takes.
pub fn parse_date(s: &str) -> Result<i64, TimeError> {
    let t = s.trim();
    let ymd = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(t, ymd) {
        return Ok(to_ms(date.midnight().assume_utc()));
    }
    parse_time(t).map_err(|_| TimeError::Date(s.to_owned()))
}

/// Parses RFC 3339 (any offset, optional fraction, truncated to ms) or UTC epoch milliseconds.
pub fn parse_time(s: &str) -> Result<i64, TimeError> {
    let t = s.trim();
    let err = || TimeError::Time(s.to_owned());
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<i64>().map_err(|_| err());
    }
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(to_ms)
        .map_err(|_| err())
}

fn to_ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write.
const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Formats UTC epoch ms as `2026-03-01T08:30:00.000Z` (what the writer emits).
pub fn format_rfc3339_ms(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEADER: &str = "payment_id,event_time,payer_id,payee_id,amount_fen,label";

    fn read(text: &str) -> Result<ReadReport, EventsError> {
        read_events_from(text.as_bytes(), &ReadOptions::default())
    }

    fn read_skipping(text: &str) -> ReadReport {
        read_events_from(
            text.as_bytes(),
            &ReadOptions {
                skip_bad_rows: true,
            },
        )
        .unwrap()
    }

    fn bad_row(text: &str) -> String {
        match read(text) {
            Err(EventsError::BadRow(e)) => e.to_string(),
            other => panic!("expected a bad row, got {other:?}"),
        }
    }

    #[test]
    fn minimal_file_takes_documented_defaults() {
        let r = read(&format!("{HEADER}\np1,2026-03-01T08:00:00Z,u1,m1,2500,0\n")).unwrap();
        let e = &r.events[0];
        assert_eq!(e.line, 2);
        assert_eq!(e.label, Some(false));
        assert_eq!(e.label_reported_at_ms, None);
        let p = &e.payment;
        assert_eq!(p.event_time_ms, 1_772_352_000_000);
        assert_eq!(p.channel, Channel::Alipay);
        assert_eq!(p.scene, Scene::MerchantStaticCode);
        assert_eq!(p.payee.kind, PayeeKind::Merchant);
        assert_eq!(p.funding, Funding::Balance);
        assert_eq!(p.currency, "CNY");
        assert_eq!((p.device_id.as_str(), p.ip.as_str()), ("", ""));
        assert_eq!(
            (p.card_fingerprint.clone(), p.city_code.clone()),
            (None, None)
        );
        assert!(!p.payer.real_name_verified);
        assert_eq!(p.payer.registered_at_ms, 0);
    }

    #[test]
    fn column_order_is_free_unknown_columns_ignored_rows_sorted() {
        let text =
            "label,amount_fen,note,payee_id,payer_id,event_time,payment_id,scene,fraud_pattern\n\
                    1,100,hello,m1,u1,1772352005000,late,P2P_TRANSFER,card_testing\n\
                    ,200,,m1,u2,1772352000000,early,,\n\
                    0,300,,m1,u3,1772352005000,tie,,\n";
        let r = read(text).unwrap();
        let ids: Vec<_> = r
            .events
            .iter()
            .map(|e| e.payment.payment_id.as_str())
            .collect();
        assert_eq!(ids, ["early", "late", "tie"], "by time, then by line");
        assert_eq!(r.events[0].label, None);
        assert_eq!(r.events[1].label, Some(true));
        assert_eq!(r.events[1].payment.scene, Scene::P2pTransfer);
        assert!(r.events[1].payment.attributes.is_empty());
    }

    #[test]
    fn missing_required_column_is_named() {
        let err = read("payment_id,event_time,payer_id,payee_id,label\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing required column `amount_fen` in the header"
        );
        let err = read("").unwrap_err();
        assert!(matches!(err, EventsError::MissingColumn("payment_id")));
        let err = read(&format!("{HEADER},label\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column `label` appears more than once in the header"
        );
    }

    #[test]
    fn each_bad_row_names_line_and_column() {
        let cases = [
            ("p1,2026-03-01T08:00:00Z,u1,m1,abc,0", "line 2: column `amount_fen`: `abc` is not a whole number of fen"),
            ("p1,2026-03-01T08:00:00Z,u1,m1,0,0", "line 2: column `amount_fen`: must be greater than 0 (got 0)"),
            ("p1,2026-03-01T08:00:00Z,u1,m1,-5,0", "line 2: column `amount_fen`: must be greater than 0 (got -5)"),
            ("p1,2026-02-30T08:00:00Z,u1,m1,5,0", "line 2: column `event_time`: invalid time `2026-02-30T08:00:00Z`: expected RFC 3339 (2026-03-01T08:00:00Z) or epoch milliseconds"),
            ("p1,yesterday,u1,m1,5,0", "line 2: column `event_time`: invalid time `yesterday`: expected RFC 3339 (2026-03-01T08:00:00Z) or epoch milliseconds"),
            ("p1,,u1,m1,5,0", "line 2: column `event_time`: is required but empty"),
            ("p1,0,u1,m1,5,0", "line 2: column `event_time`: must be after 1970-01-01 and before year 10000"),
            ("p1,253402300800000,u1,m1,5,0", "line 2: column `event_time`: must be after 1970-01-01 and before year 10000"),
            ("p1,1000,,m1,5,0", "line 2: column `payer_id`: is required but empty"),
            ("p1,1000,u1,m1,5,2", "line 2: column `label`: must be 0, 1 or empty (got `2`)"),
            ("p1,1000,u1,m1,5", "line 2: expected 6 cells like the header, got 5"),
        ];
        for (row, want) in cases {
            assert_eq!(bad_row(&format!("{HEADER}\n{row}\n")), want, "row {row}");
        }
    }

    #[test]
    fn bad_optional_values_are_bad_rows() {
        let h = "payment_id,event_time,payer_id,payee_id,amount_fen,label,channel,ip,label_reported_at,currency";
        let cases = [
            (
                "p,1000,u,m,5,0,alipay,,,",
                "column `channel`: unknown name `alipay`",
            ),
            (
                "p,1000,u,m,5,0,,1.2.3,,",
                "column `ip`: `1.2.3` is not an IPv4 or IPv6 address",
            ),
            (
                "p,1000,u,m,5,,,,2000,",
                "column `label_reported_at`: is set but label is empty",
            ),
            (
                "p,1000,u,m,5,1,,,999,",
                "column `label_reported_at`: is before event_time",
            ),
            (
                "p,1000,u,m,5,1,,,,cny",
                "column `currency`: must be a 3-letter upper-case ISO 4217 code (got `cny`)",
            ),
        ];
        for (row, want) in cases {
            assert_eq!(bad_row(&format!("{h}\n{row}\n")), format!("line 2: {want}"));
        }
    }

    #[test]
    fn duplicate_payment_id_stops_or_is_skipped() {
        let text = format!("{HEADER}\np1,1000,u1,m1,5,0\np2,1000,u1,m1,5,0\np1,900,u2,m1,7,1\n");
        assert_eq!(
            bad_row(&text),
            "line 4: column `payment_id`: duplicate payment_id `p1`"
        );
        let r = read_skipping(&text);
        assert_eq!(r.events.len(), 2);
        assert_eq!(
            r.events[0].payment.amount_fen, 5,
            "first row with the id wins"
        );
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].line, 4);
    }

    #[test]
    fn skip_bad_rows_keeps_good_ones_and_counts_bad() {
        let text = format!(
            "{HEADER}\np1,1000,u1,m1,5,0\np2,x,u1,m1,5,0\np3,1000,u1,m1,0,0\np4,2000,u1,m1,5,1\n"
        );
        let r = read_skipping(&text);
        assert_eq!(r.events.len(), 2);
        let lines: Vec<_> = r.skipped.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4]);
    }

    #[test]
    fn quoted_newlines_keep_line_numbers_right() {
        let text = format!("{HEADER},note\np1,1000,u1,m1,5,0,\"two\nlines\"\np2,1000,u1,m1,0,0,\n");
        assert!(bad_row(&text).starts_with("line 4: column `amount_fen`"));
    }

    #[test]
    fn invalid_utf8_is_a_row_error() {
        let mut bytes = format!("{HEADER}\np1,1000,u1,m1,5,0\n").into_bytes();
        bytes.extend_from_slice(b"p\xff,1000,u1,m1,5,0\n");
        let r = read_events_from(
            &bytes[..],
            &ReadOptions {
                skip_bad_rows: true,
            },
        )
        .unwrap();
        assert_eq!((r.events.len(), r.skipped.len()), (1, 1));
        assert_eq!(r.skipped[0].to_string(), "line 3: is not valid UTF-8");
    }

    #[test]
    fn read_events_from_a_file_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.csv");
        std::fs::write(&path, format!("{HEADER}\np1,1000,u1,m1,5,0\n")).unwrap();
        assert_eq!(
            read_events(&path, &ReadOptions::default())
                .unwrap()
                .events
                .len(),
            1
        );
        let err = read_events(&dir.path().join("nope.csv"), &ReadOptions::default()).unwrap_err();
        assert!(err.to_string().starts_with("cannot open `"));
    }

    #[test]
    fn label_known_only_after_report() {
        let text = "payment_id,event_time,payer_id,payee_id,amount_fen,label,label_reported_at\n\
                    p1,1000,u1,m1,5,1,5000\np2,1000,u1,m1,5,1,\n";
        let r = read(text).unwrap();
        assert_eq!(r.events[0].label_known_at(4999), None);
        assert_eq!(r.events[0].label_known_at(5000), Some(true));
        assert_eq!(r.events[1].label_known_at(i64::MAX), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400_000));
        assert_eq!(parse_duration("12h"), Ok(12 * 3_600_000));
        assert_eq!(parse_duration("30m"), Ok(1_800_000));
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("1h 30m"), Ok(5_400_000));
        for bad in ["", "d", "7", "7x", "-7d", "99999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(parse_date("2026-03-01"), Ok(1_772_323_200_000));
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date("2024-02-29"), Ok(1_709_164_800_000));
        assert!(parse_date("2026-02-29").is_err());
        assert!(parse_date("2026-13-01").is_err());
        assert_eq!(
            parse_date("2026-03-01T08:00:00+08:00"),
            Ok(1_772_323_200_000)
        );
        assert_eq!(parse_time("2026-03-01T00:00:00.5Z"), Ok(1_772_323_200_500));
        assert_eq!(
            parse_time("2026-03-01 00:00:00.123456z"),
            Ok(1_772_323_200_123)
        );
        assert_eq!(
            parse_time("2026-02-28T19:00:00-05:00"),
            Ok(1_772_323_200_000)
        );
        assert_eq!(parse_time("2016-12-31T23:59:60Z"), Ok(1_483_228_799_999));
        assert_eq!(parse_time("1772323200000"), Ok(1_772_323_200_000));
        for bad in [
            "2026-03-01T00:00:00",
            "2026-03-01T24:00:00Z",
            "2026-03-01T00:00:00.Z",
            "2026-03-01T00:00:00+8:00",
            "2026-03-01",
            "-5",
            "",
            "2026-03-01T00:00:00Zjunk",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn format_round_trips() {
        assert_eq!(
            format_rfc3339_ms(1_772_323_200_500),
            "2026-03-01T00:00:00.500Z"
        );
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }

    fn event(
        i: usize,
        t: i64,
        amount: i64,
        label: Option<bool>,
        reported: Option<i64>,
    ) -> LabeledEvent {
        LabeledEvent {
            payment: Payment {
                payment_id: format!("p,\"{i}\""), // quoting must survive
                event_time_ms: t,
                channel: Channel::ALL[i % Channel::ALL.len()],
                scene: Scene::ALL[i % Scene::ALL.len()],
                payer: Payer {
                    account_id: format!("u{i}"),
                    real_name_verified: i.is_multiple_of(2),
                    registered_at_ms: if i.is_multiple_of(3) {
                        0
                    } else {
                        1_000 + i as i64
                    },
                },
                payee: Payee {
                    account_id: format!("m{}", i % 7),
                    kind: PayeeKind::ALL[i % PayeeKind::ALL.len()],
                    merchant_category: if i.is_multiple_of(2) {
                        "5411".into()
                    } else {
                        String::new()
                    },
                },
                amount_fen: amount,
                currency: if i.is_multiple_of(5) {
                    "USD".into()
                } else {
                    "CNY".into()
                },
                funding: Funding::ALL[i % Funding::ALL.len()],
                card_fingerprint: (i % 2 == 1).then(|| format!("cf{i}")),
                device_id: if i.is_multiple_of(4) {
                    String::new()
                } else {
                    format!("d{i}")
                },
                ip: ["", "10.0.0.1", "2001:db8::1"][i % 3].into(),
                city_code: (i % 3 == 1).then(|| "310000".into()),
                attributes: Default::default(),
            },
            label,
            label_reported_at_ms: reported,
            line: 0,
        }
    }

    proptest! {
        #[test]
        fn write_then_read_round_trips(rows in proptest::collection::vec(
            (1i64..4_000_000_000_000, 1i64..i64::MAX / 2, proptest::option::of(any::<bool>()), 0i64..1_000_000_000),
            0..40)) {
            let events: Vec<_> = rows.iter().enumerate().map(|(i, &(t, amount, label, delay))| {
                event(i, t, amount, label, label.map(|_| t + delay))
            }).collect();
            let mut buf = Vec::new();
            write_events(&mut buf, &events).unwrap();
            let back = read_events_from(&buf[..], &ReadOptions::default()).unwrap();
            prop_assert!(back.skipped.is_empty());
            let mut want = events.clone();
            want.sort_by_key(|e| e.payment.event_time_ms); // stable, like the reader's (time, line)
            let got: Vec<_> = back.events.into_iter().map(|mut e| { e.line = 0; e }).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn reader_never_panics(text in "[a-z0-9_,:\\-\"\n TZ.]{0,300}") {
            let _ = read_events_from(format!("{HEADER}\n{text}").as_bytes(), &ReadOptions { skip_bad_rows: true });
            let _ = read_events_from(text.as_bytes(), &ReadOptions::default());
        }

        #[test]
        fn time_parsers_never_panic(s in "\\PC{0,40}") {
            let _ = parse_time(&s);
            let _ = parse_date(&s);
            let _ = parse_duration(&s);
        }

        #[test]
        fn format_then_parse_is_identity(ms in 0i64..253_402_300_799_999) {
            prop_assert_eq!(parse_time(&format_rfc3339_ms(ms)), Ok(ms));
        }
    }
}
