//! The traffic simulator behind `fengkong simulate`: seeded, realistic QR-payment traffic with
//! labeled fraud of every pattern in domain.md, written as the labeled payment CSV (`events.rs`).
//!
//! # The world
//!
//! * **Payers** (about one per 45 payments) with habits: a home city (20 real city codes,
//!   Zipf-weighted), a typical spend (log-normal, per payer), diurnal activity (10% are night
//!   owls), one or two phones (3% switch phone mid-period, 2% share a household phone), a home
//!   IP plus their city's carrier-NAT pool (shared by many payers), favourite merchants, friends,
//!   a funding mix (balance, debit card, credit card, credit line; cards have fingerprints), a
//!   main wallet. 2% are street vendors who collect on a personal code from many strangers
//!   (log-normal popularity: a few busy stalls take dozens of payers a day).
//! * **Merchants** (one per 12 payers) with a category (MCC), a typical ticket, small shops on
//!   static codes, 20% being aggregator sub-merchants.
//! * **Time**: `days` days from `start_ms`, which is taken as a *Beijing (UTC+8) midnight*; all
//!   hours below are Beijing hours. Diurnal cycle with lunch and dinner peaks; weekends ~15% busier.
//!
//! # Genuine traffic that looks like fraud (so that AP is meaningful, not ~1.0)
//!
//! Night owls pay at 01:00; electronics and jewellery sell at 4,999 and 9,999 yuan price points;
//! transfers and red packets are round; people travel (new city + carrier IP) and change phones;
//! vendors' personal codes receive from many distinct payers; household members share a phone;
//! carrier IPs are shared by dozens to hundreds of payers; new accounts appear during the period.
//!
//! # Fraud ([`FraudPattern`]), about `fraud_rate` of the rows, split by [`PATTERN_SHARES`]
//!
//! * `code_renting` 跑分: a personal code (a rented real account or a fresh one) receives bursts
//!   of 5–40 payments from distinct payers in many cities within 0.5–3 h, mostly 20:00–04:00,
//!   mostly round amounts; after each burst the mule withdraws ~95% of it (those rows too).
//! * `card_cash_out` 套现: 1–4 cardholders charge credit cards 2–8 times at one complicit
//!   low-fee merchant (existing shop or a new aggregator sub-merchant), 65% at 00:00–05:00,
//!   amounts like 4,999 / 9,999 / 1,999 / 998 yuan or round hundreds.
//! * `card_testing`: one new device, 1–3 new accounts, 8–40 tiny payments (1 fen – 10 yuan)
//!   within minutes, each on a different card; 30% end with 1–3 large hits on a tested card.
//! * `fake_orders` 刷单: one or two devices and (70%) one IP drive 5–25 accounts to one merchant
//!   within hours.
//! * `account_takeover`: a new device and IP, usually another city, 1–4 payments of 5–30x the
//!   victim's typical amount to a new payee, a stranger's personal code or a withdrawal.
//! * `split_payments`: 4–15 payments just under a limit (500, 1,000, 2,000, 5,000 yuan) from
//!   one payer to one payee within minutes.
//!
//! # Labels
//!
//! Every row carries its ground truth in `label` (0/1) and the pattern in `fraud_pattern`
//! (empty for genuine rows; the engine ignores the column). `label_reported_at` is when the
//! platform learned it: genuine rows `genuine_label_delay_ms` after the payment (no complaint
//! within the maturity window); fraud rows after a log-normal delay (median 3–20 days by
//! pattern); a share `unreported_fraud_share` of fraud is never reported (`label_reported_at`
//! empty), which point-in-time code must treat as "not known" (see `LabeledEvent::label_known_at`).
//!
//! Output is sorted by event time; ids are opaque hashes (fraud accounts cannot be told from
//! their ids). Same config + same seed = the same file, byte for byte (with the locked `rand`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::events::{EventWriter, EventsError, LabeledEvent};
use crate::payment::{Channel, Funding, Payee, PayeeKind, Payer, Payment, Scene};

/// The fraud patterns the simulator injects (names as written in `fraud_pattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum FraudPattern {
    CodeRenting,
    CardCashOut,
    CardTesting,
    FakeOrders,
    AccountTakeover,
    SplitPayments,
}

impl FraudPattern {
    pub const ALL: [FraudPattern; 6] = [
        FraudPattern::CodeRenting,
        FraudPattern::CardCashOut,
        FraudPattern::CardTesting,
        FraudPattern::FakeOrders,
        FraudPattern::AccountTakeover,
        FraudPattern::SplitPayments,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FraudPattern::CodeRenting => "code_renting",
            FraudPattern::CardCashOut => "card_cash_out",
            FraudPattern::CardTesting => "card_testing",
            FraudPattern::FakeOrders => "fake_orders",
            FraudPattern::AccountTakeover => "account_takeover",
            FraudPattern::SplitPayments => "split_payments",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Median days until the fraud is reported (ATO victims notice fast, cash-out slowly).
    fn median_report_days(self) -> f64 {
        match self {
            FraudPattern::CodeRenting => 12.0,
            FraudPattern::CardCashOut => 20.0,
            FraudPattern::CardTesting => 5.0,
            FraudPattern::FakeOrders => 15.0,
            FraudPattern::AccountTakeover => 3.0,
            FraudPattern::SplitPayments => 10.0,
        }
    }
}

/// Share of fraud rows per pattern, in [`FraudPattern::ALL`] order (sums to 1).
pub const PATTERN_SHARES: [f64; 6] = [0.30, 0.15, 0.15, 0.15, 0.10, 0.15];

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Total rows, fraud included.
    pub payments: usize,
    pub seed: u64,
    /// First instant, taken as a Beijing midnight (default 2026-03-01T00:00:00+08:00).
    pub start_ms: i64,
    pub days: u32,
    /// Target share of fraud rows (default 0.01).
    pub fraud_rate: f64,
    /// Share of fraud rows never reported (default 0.15).
    pub unreported_fraud_share: f64,
    /// When genuine rows become known as genuine (default 30 days).
    pub genuine_label_delay_ms: i64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            payments: 100_000,
            seed: 1,
            start_ms: 1_772_294_400_000, // 2026-03-01T00:00:00+08:00
            days: 90,
            fraud_rate: 0.01,
            unreported_fraud_share: 0.15,
            genuine_label_delay_ms: 30 * DAY,
        }
    }
}

/// The most rows one run may make (about 60 bytes each are held in memory before sorting).
pub const MAX_PAYMENTS: usize = 50_000_000;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulation config: {0}")]
    Config(String),
    #[error("cannot create `{path}`: {source}")]
    Create {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] EventsError),
}

/// What was generated.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SimSummary {
    pub payments: u64,
    pub genuine: u64,
    pub fraud: u64,
    /// Fraud rows with no `label_reported_at`.
    pub fraud_unreported: u64,
    /// Fraud rows per pattern name.
    pub per_pattern: BTreeMap<&'static str, u64>,
    pub payers: usize,
    pub merchants: usize,
    pub first_event_ms: i64,
    pub last_event_ms: i64,
}

/// One generated row in memory, with its ground-truth pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    pub event: LabeledEvent,
    pub pattern: Option<FraudPattern>,
}

/// Generates and writes the CSV (with a trailing `fraud_pattern` column).
pub fn simulate(cfg: &SimConfig, w: impl Write) -> Result<SimSummary, SimError> {
    let world = World::generate(cfg)?;
    let mut out = EventWriter::new(w, &["fraud_pattern"])?;
    for (i, row) in world.rows.iter().enumerate() {
        let ev = world.event(i, row);
        out.write(&ev, &[row.pattern.map_or("", FraudPattern::as_str)])?;
    }
    out.finish()?;
    Ok(world.summary())
}

/// [`simulate`] into a new file (buffered).
pub fn simulate_to_file(cfg: &SimConfig, path: &Path) -> Result<SimSummary, SimError> {
    let file = std::fs::File::create(path).map_err(|source| SimError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    simulate(cfg, std::io::BufWriter::with_capacity(1 << 20, file))
}

/// Generates in memory (tests, small experiments); the same rows `simulate` writes.
pub fn simulate_events(cfg: &SimConfig) -> Result<(Vec<SimEvent>, SimSummary), SimError> {
    let world = World::generate(cfg)?;
    let events = world
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| SimEvent {
            event: world.event(i, row),
            pattern: row.pattern,
        })
        .collect();
    Ok((events, world.summary()))
}

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const MINUTE: i64 = 60_000;
/// Beijing is UTC+8: used to find weekdays of the local days.
const BEIJING_OFFSET_MS: i64 = 8 * HOUR;

const CITIES: [&str; 20] = [
    "310000", "110000", "440300", "440100", "330100", "510100", "420100", "320100", "500000",
    "610100", "120000", "430100", "370200", "350200", "410100", "210100", "530100", "450100",
    "460100", "230100",
];

/// (MCC, median ticket in yuan, small shop on a static code).
const CATEGORIES: [(&str, f64, bool); 15] = [
    ("5411", 60.0, false),   // supermarket
    ("5812", 80.0, true),    // restaurant
    ("5814", 20.0, true),    // snacks, fast food
    ("5499", 15.0, true),    // convenience
    ("5311", 300.0, false),  // department store
    ("4121", 30.0, false),   // taxi, ride hailing
    ("5912", 60.0, true),    // pharmacy
    ("5541", 250.0, false),  // fuel
    ("7011", 400.0, false),  // hotel
    ("5732", 1500.0, false), // electronics
    ("5944", 3000.0, false), // jewellery
    ("7230", 100.0, true),   // hair, beauty
    ("5999", 50.0, true),    // misc retail
    ("5691", 200.0, false),  // clothing
    ("8062", 300.0, false),  // hospital
];
/// How common each category is among merchants: everyday food and shops dominate QR traffic.
const CATEGORY_WEIGHTS: [f64; 15] = [
    10.0, 12.0, 14.0, 14.0, 3.0, 8.0, 4.0, 3.0, 1.0, 1.5, 0.7, 3.0, 8.0, 3.0, 1.5,
];
const ELECTRONICS: u8 = 9;
const JEWELLERY: u8 = 10;
/// Low-fee categories complicit cash-out merchants register under.
const LOW_FEE: [u8; 3] = [0, 3, 12];

/// Beijing-hour activity weights for ordinary payers.
const DIURNAL: [f64; 24] = [
    1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1.5, 3.5, 5.0, 4.5, 4.5, 6.0, 8.0, 6.0, 4.5, 4.5, 5.0, 6.5, 8.0,
    7.5, 6.5, 5.5, 4.0, 2.5,
];

/// Compact row kept in memory before sorting; turned into a `LabeledEvent` when written.
#[derive(Debug, Clone)]
struct Row {
    t: i64,
    /// -1 = never reported.
    reported: i64,
    amount: i64,
    payer: u32,
    /// Index into payers (personal codes) or merchants, by `kind`.
    payee: u32,
    device: u32,
    ip: u32,
    /// 0 = none.
    card: u32,
    city: u8,
    channel: Channel,
    scene: Scene,
    kind: PayeeKind,
    funding: Funding,
    pattern: Option<FraudPattern>,
}

#[derive(Debug, Clone)]
struct PayerInfo {
    city: u8,
    /// log of the typical ticket offset (rich or frugal).
    spend: f64,
    night_owl: bool,
    devices: [u32; 2],
    two_devices: bool,
    /// Switches to `devices[1]` from this time on (`i64::MAX` = never).
    switch_at: i64,
    home_ip: u32,
    debit: u32,
    credit: u32,
    /// Cumulative weights over Balance, DebitCard, CreditCard, CreditLine.
    funding_cum: [f64; 4],
    channel: Channel,
    favourites: Vec<u32>,
    friends: Vec<u32>,
    real_name: bool,
    registered_at: i64,
}

#[derive(Debug, Clone)]
struct MerchantInfo {
    city: u8,
    category: u8,
    kind: PayeeKind,
}

struct World {
    cfg: SimConfig,
    rng: SmallRng,
    end_ms: i64,
    payers: Vec<PayerInfo>,
    /// Cumulative activity weights over the genuine population.
    payer_cum: Vec<f64>,
    genuine_payers: usize,
    merchants: Vec<MerchantInfo>,
    merchants_by_city: Vec<Vec<u32>>,
    merchant_cum_by_city: Vec<Vec<f64>>,
    vendors_by_city: Vec<Vec<u32>>,
    /// Cumulative popularity of each city's vendors: a few busy stalls, many quiet ones.
    vendor_cum_by_city: Vec<Vec<f64>>,
    city_cum: Vec<f64>,
    diurnal_cum: Vec<f64>,
    category_cum: Vec<f64>,
    owl_cum: Vec<f64>,
    next_device: u32,
    next_ip: u32,
    next_card: u32,
    rows: Vec<Row>,
}

/// Carrier-NAT addresses per city, shared by everyone on mobile data there.
const CITY_IPS: u32 = 64;

fn cumulative(weights: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .into_iter()
        .map(|w| {
            acc += w.max(0.0);
            acc
        })
        .collect()
}

/// 32-bit bijective mixer (Wellons' lowbias32): distinct indices give distinct opaque ids.
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

impl World {
    fn generate(cfg: &SimConfig) -> Result<World, SimError> {
        let bad = |m: &str| Err(SimError::Config(m.to_owned()));
        if cfg.payments > MAX_PAYMENTS {
            return bad(&format!("payments must be at most {MAX_PAYMENTS}"));
        }
        if cfg.days == 0 || cfg.days > 3660 {
            return bad("days must be between 1 and 3660");
        }
        if !(0.0..=0.5).contains(&cfg.fraud_rate) {
            return bad("fraud_rate must be between 0 and 0.5");
        }
        if !(0.0..=1.0).contains(&cfg.unreported_fraud_share) {
            return bad("unreported_fraud_share must be between 0 and 1");
        }
        if cfg.start_ms <= 400 * DAY || cfg.start_ms > 200_000 * DAY {
            return bad("start_ms must be a time between 1971 and 2500");
        }
        if !(0..=3650 * DAY).contains(&cfg.genuine_label_delay_ms) {
            return bad("genuine_label_delay_ms must be between 0 and 10 years");
        }
        let mut w = World {
            cfg: cfg.clone(),
            rng: SmallRng::seed_from_u64(cfg.seed),
            end_ms: cfg.start_ms + i64::from(cfg.days) * DAY,
            payers: Vec::new(),
            payer_cum: Vec::new(),
            genuine_payers: 0,
            merchants: Vec::new(),
            merchants_by_city: vec![Vec::new(); CITIES.len()],
            merchant_cum_by_city: vec![Vec::new(); CITIES.len()],
            vendors_by_city: vec![Vec::new(); CITIES.len()],
            vendor_cum_by_city: vec![Vec::new(); CITIES.len()],
            city_cum: cumulative((0..CITIES.len()).map(|i| 1.0 / (i as f64 + 2.0))),
            diurnal_cum: cumulative(DIURNAL),
            category_cum: cumulative(CATEGORY_WEIGHTS),
            owl_cum: cumulative(DIURNAL.iter().enumerate().map(|(h, w)| {
                if h >= 22 || h <= 3 {
                    w + 3.0
                } else {
                    *w
                }
            })),
            next_device: 1,
            next_ip: CITIES.len() as u32 * CITY_IPS + 1,
            next_card: 1,
            rows: Vec::with_capacity(cfg.payments),
        };
        w.build_population();
        let fraud_target = (cfg.payments as f64 * cfg.fraud_rate).round() as usize;
        w.inject_fraud(fraud_target.min(cfg.payments));
        let genuine = cfg.payments.saturating_sub(w.rows.len());
        for _ in 0..genuine {
            w.genuine_payment();
        }
        // Stable: equal times keep generation order, so output is deterministic.
        w.rows.sort_by_key(|r| r.t);
        Ok(w)
    }

    // ---------- random helpers ----------

    fn unit(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform integer in `lo..=hi` (never panics: `hi < lo` gives `lo`).
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            lo
        } else {
            self.rng.random_range(lo..=hi)
        }
    }

    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    fn pick_cum(&mut self, cum: &[f64]) -> usize {
        let total = cum.last().copied().unwrap_or(0.0);
        let x = self.unit() * total;
        cum.partition_point(|&c| c <= x)
            .min(cum.len().saturating_sub(1))
    }

    fn pick<T: Copy>(&mut self, items: &[T], fallback: T) -> T {
        if items.is_empty() {
            fallback
        } else {
            items[self.rng.random_range(0..items.len())]
        }
    }

    fn new_device(&mut self) -> u32 {
        self.next_device += 1;
        self.next_device
    }

    fn new_ip(&mut self) -> u32 {
        self.next_ip += 1;
        self.next_ip
    }

    fn new_card(&mut self) -> u32 {
        self.next_card += 1;
        self.next_card
    }

    fn city_ip(&mut self, city: u8) -> u32 {
        1 + u32::from(city) * CITY_IPS + self.int(0, i64::from(CITY_IPS) - 1) as u32
    }

    fn random_city(&mut self) -> u8 {
        let cum = std::mem::take(&mut self.city_cum);
        let c = self.pick_cum(&cum) as u8;
        self.city_cum = cum;
        c
    }

    /// Instant of a Beijing hour (fractional) on day `day` of the period.
    fn at(&self, day: i64, hour: f64) -> i64 {
        let t = self.cfg.start_ms + day * DAY + (hour * HOUR as f64) as i64;
        t.clamp(self.cfg.start_ms, self.end_ms - 1)
    }

    fn random_day(&mut self, margin_days: i64) -> i64 {
        self.int(0, (i64::from(self.cfg.days) - 1 - margin_days).max(0))
    }

    fn diurnal_hour(&mut self, owl: bool) -> f64 {
        let cum = if owl {
            std::mem::take(&mut self.owl_cum)
        } else {
            std::mem::take(&mut self.diurnal_cum)
        };
        let h = self.pick_cum(&cum) as f64 + self.unit();
        if owl {
            self.owl_cum = cum;
        } else {
            self.diurnal_cum = cum;
        }
        h
    }

    /// Hour in a window that may wrap midnight, e.g. (20, 28) = 20:00–04:00.
    fn hour_in(&mut self, from: f64, to: f64) -> f64 {
        from + self.unit() * (to - from)
    }

    fn fen(yuan: f64) -> i64 {
        ((yuan * 100.0).round() as i64).clamp(1, 100_000_000)
    }

    // ---------- population ----------

    fn build_population(&mut self) {
        let n_payers = (self.cfg.payments / 45).max(200);
        let n_merchants = (n_payers / 12).max(50);
        for _ in 0..n_merchants {
            let city = self.random_city();
            let cum = std::mem::take(&mut self.category_cum);
            let category = self.pick_cum(&cum) as u8;
            self.category_cum = cum;
            let kind = if self.chance(0.2) {
                PayeeKind::AggregatorSubMerchant
            } else {
                PayeeKind::Merchant
            };
            let id = self.merchants.len() as u32;
            self.merchants.push(MerchantInfo {
                city,
                category,
                kind,
            });
            let popularity = self.lognormal(1.0, 1.0);
            self.merchants_by_city[city as usize].push(id);
            self.merchant_cum_by_city[city as usize].push(popularity);
        }
        for cum in &mut self.merchant_cum_by_city {
            *cum = cumulative(cum.iter().copied());
        }
        let mut activity = Vec::with_capacity(n_payers);
        for _ in 0..n_payers {
            let city = self.random_city();
            let p = self.new_payer(city, None);
            let id = self.payers.len() as u32;
            self.payers.push(p);
            activity.push(self.lognormal(1.0, 0.9));
            if self.chance(0.02) {
                let popularity = self.lognormal(1.0, 1.3);
                self.vendors_by_city[city as usize].push(id);
                self.vendor_cum_by_city[city as usize].push(popularity);
                activity[id as usize] *= 0.3; // busy collecting, pays less
            }
        }
        for cum in &mut self.vendor_cum_by_city {
            *cum = cumulative(cum.iter().copied());
        }
        self.genuine_payers = n_payers;
        self.payer_cum = cumulative(activity);
        // Friends, favourites and shared household phones need the whole population.
        let mut by_city: Vec<Vec<u32>> = vec![Vec::new(); CITIES.len()];
        for (i, p) in self.payers.iter().enumerate() {
            by_city[p.city as usize].push(i as u32);
        }
        for i in 0..n_payers {
            let city = self.payers[i].city as usize;
            let n_fav = self.int(3, 8);
            let mut favs = Vec::new();
            for _ in 0..n_fav {
                let cum = std::mem::take(&mut self.merchant_cum_by_city[city]);
                if !cum.is_empty() {
                    let k = self.pick_cum(&cum);
                    favs.push(self.merchants_by_city[city][k]);
                }
                self.merchant_cum_by_city[city] = cum;
            }
            let n_friends = self.int(1, 5);
            let mut friends = Vec::new();
            for _ in 0..n_friends {
                let f = if self.chance(0.8) {
                    self.pick(&by_city[city], i as u32)
                } else {
                    self.int(0, n_payers as i64 - 1) as u32
                };
                if f as usize != i {
                    friends.push(f);
                }
            }
            if self.chance(0.02) {
                if let Some(&f) = friends.first() {
                    self.payers[i].devices[0] = self.payers[f as usize].devices[0];
                }
            }
            self.payers[i].favourites = favs;
            self.payers[i].friends = friends;
        }
    }

    /// A payer; `registered` = Some(time) for accounts opened during the period.
    fn new_payer(&mut self, city: u8, registered: Option<i64>) -> PayerInfo {
        let d0 = self.new_device();
        let two = self.chance(0.2);
        let d1 = self.new_device();
        let switch_at = if self.chance(0.03) {
            self.cfg.start_ms + self.int(0, i64::from(self.cfg.days) * DAY)
        } else {
            i64::MAX
        };
        let debit = if self.chance(0.7) { self.new_card() } else { 0 };
        let credit = if self.chance(0.35) {
            self.new_card()
        } else {
            0
        };
        let w = [
            0.3 + self.unit(),
            if debit > 0 { self.unit() } else { 0.0 },
            if credit > 0 { 0.6 * self.unit() } else { 0.0 },
            0.4 * self.unit(),
        ];
        let channel = match self.unit() {
            x if x < 0.45 => Channel::Alipay,
            x if x < 0.85 => Channel::WechatPay,
            x if x < 0.93 => Channel::UnionpayQuickpass,
            x if x < 0.98 => Channel::Aggregator,
            _ => Channel::BankCard,
        };
        let registered_at = match registered {
            Some(t) => t,
            None if self.chance(0.05) => {
                self.cfg.start_ms + self.int(0, i64::from(self.cfg.days) * DAY * 2 / 3)
            }
            None => self.cfg.start_ms - self.int(30 * DAY, 6 * 365 * DAY),
        };
        let spend = 0.45 * self.normal();
        let night_owl = self.chance(0.1);
        let home_ip = self.new_ip();
        PayerInfo {
            city,
            spend,
            night_owl,
            devices: [d0, d1],
            two_devices: two,
            switch_at,
            home_ip,
            debit,
            credit,
            funding_cum: {
                let c = cumulative(w);
                [c[0], c[1], c[2], c[3]]
            },
            channel,
            favourites: Vec::new(),
            friends: Vec::new(),
            real_name: self.chance(0.95),
            registered_at,
        }
    }

    /// An account opened by a fraud ring shortly before use: no history, often not verified.
    fn fraud_account(&mut self, city: u8, t: i64) -> u32 {
        let registered = t - self.int(HOUR, 60 * DAY);
        let mut p = self.new_payer(city, Some(registered));
        p.real_name = self.chance(0.55);
        let id = self.payers.len() as u32;
        self.payers.push(p);
        id
    }

    fn genuine_payer(&mut self) -> u32 {
        let cum = std::mem::take(&mut self.payer_cum);
        let p = self.pick_cum(&cum) as u32;
        self.payer_cum = cum;
        p
    }

    fn payer_funding(&mut self, p: u32) -> (Funding, u32) {
        let info = &self.payers[p as usize];
        let (cum, debit, credit) = (info.funding_cum, info.debit, info.credit);
        match self.pick_cum(&cum) {
            1 if debit > 0 => (Funding::DebitCard, debit),
            2 if credit > 0 => (Funding::CreditCard, credit),
            3 => (Funding::CreditLine, 0),
            _ => (Funding::Balance, 0),
        }
    }

    fn payer_device(&mut self, p: u32, t: i64) -> u32 {
        let info = &self.payers[p as usize];
        let (devices, two, switch_at) = (info.devices, info.two_devices, info.switch_at);
        if t >= switch_at || (two && self.chance(0.15)) {
            devices[1]
        } else {
            devices[0]
        }
    }

    fn channel_for(&mut self, p: u32) -> Channel {
        if self.chance(0.8) {
            self.payers[p as usize].channel
        } else {
            let all = Channel::ALL;
            self.pick(all, Channel::Alipay)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        t: i64,
        payer: u32,
        payee: u32,
        kind: PayeeKind,
        scene: Scene,
        amount: i64,
        pattern: Option<FraudPattern>,
    ) -> &mut Row {
        // Defaults from the payer's own habits; fraud code overrides fields as needed.
        let info = &self.payers[payer as usize];
        let (city, home_ip) = (info.city, info.home_ip);
        let device = self.payer_device(payer, t);
        let ip = if self.chance(0.6) {
            home_ip
        } else {
            self.city_ip(city)
        };
        let (funding, card) = self.payer_funding(payer);
        let channel = self.channel_for(payer);
        let reported = match pattern {
            None => t + self.cfg.genuine_label_delay_ms,
            Some(_) if self.chance(self.cfg.unreported_fraud_share) => -1,
            Some(pat) => {
                let days = self.lognormal(pat.median_report_days(), 0.8);
                t + ((days * DAY as f64) as i64).clamp(HOUR, 365 * DAY)
            }
        };
        self.rows.push(Row {
            t,
            reported,
            amount: amount.max(1),
            payer,
            payee,
            device,
            ip,
            card,
            city,
            channel,
            scene,
            kind,
            funding,
            pattern,
        });
        let last = self.rows.len() - 1;
        &mut self.rows[last]
    }

    // ---------- genuine traffic ----------

    fn genuine_payment(&mut self) {
        let p = self.genuine_payer();
        let (owl, registered, spend) = {
            let i = &self.payers[p as usize];
            (i.night_owl, i.registered_at, i.spend)
        };
        // Weekends ~15% busier: reject some weekday draws.
        let mut day = self.random_day(0);
        for _ in 0..4 {
            let weekday = (self.cfg.start_ms + BEIJING_OFFSET_MS + day * DAY).div_euclid(DAY) + 3;
            if weekday.rem_euclid(7) >= 5 || self.chance(0.87) {
                break;
            }
            day = self.random_day(0);
        }
        let hour = self.diurnal_hour(owl);
        let mut t = self.at(day, hour);
        if t < registered {
            t = registered + self.int(0, (self.end_ms - 1 - registered).max(0));
        }
        let travel = self.chance(0.05);
        let roll = self.unit();
        let row_city;
        if roll < 0.72 {
            // Merchant purchase: favourite shop, or a random one (always when travelling).
            let city = if travel {
                self.random_city()
            } else {
                self.payers[p as usize].city
            };
            let m = if !travel && self.chance(0.8) {
                let favs = std::mem::take(&mut self.payers[p as usize].favourites);
                let m = self.pick(&favs, u32::MAX);
                self.payers[p as usize].favourites = favs;
                m
            } else {
                u32::MAX
            };
            let m = if m == u32::MAX {
                self.random_merchant(city)
            } else {
                m
            };
            let MerchantInfo { category, kind, .. } = self.merchants[m as usize].clone();
            let (_, median, small_shop) = CATEGORIES[category as usize];
            let mut yuan = self.lognormal(median * spend.exp(), 0.75);
            if (category == ELECTRONICS || category == JEWELLERY) && self.chance(0.4) {
                // Retail price points: the same just-under amounts cash-out uses.
                yuan = self.pick(&[999.0, 1999.0, 2999.0, 4999.0, 5999.0, 9999.0], 999.0);
            } else if self.chance(0.25) {
                yuan = yuan.round().max(1.0);
            }
            let amount = Self::fen(yuan);
            let scene = if (small_shop || self.chance(0.3)) && amount <= 50_000 {
                Scene::MerchantStaticCode
            } else {
                Scene::MerchantScansPayer
            };
            let aggregator_app = self.chance(0.5);
            let row = self.push(t, p, m, kind, scene, amount, None);
            if kind == PayeeKind::AggregatorSubMerchant && aggregator_app {
                row.channel = Channel::Aggregator;
            }
            row_city = city;
        } else if roll < 0.81 {
            // A street vendor's personal code, face to face.
            let city = self.payers[p as usize].city;
            let cum = std::mem::take(&mut self.vendor_cum_by_city[city as usize]);
            let v = if cum.is_empty() {
                // No vendor in town (small runs only): a friend's code instead.
                let friends = std::mem::take(&mut self.payers[p as usize].friends);
                let f = self.pick(&friends, p);
                self.payers[p as usize].friends = friends;
                f
            } else {
                let k = self.pick_cum(&cum);
                self.vendors_by_city[city as usize][k]
            };
            self.vendor_cum_by_city[city as usize] = cum;
            let amount = Self::fen(self.lognormal(15.0 * spend.exp(), 0.7).round().max(1.0));
            let scene = Scene::PersonalCodeCollection;
            self.push(t, p, v, PayeeKind::Personal, scene, amount, None);
            row_city = city;
        } else if roll < 0.94 {
            // Transfers and red packets to friends: round amounts, any hour.
            let friends = std::mem::take(&mut self.payers[p as usize].friends);
            let f = self.pick(&friends, p);
            self.payers[p as usize].friends = friends;
            let (scene, amount) = if roll < 0.89 {
                let mut yuan = self.lognormal(200.0 * spend.exp(), 1.0);
                if self.chance(0.5) {
                    yuan = (yuan / 100.0).round().max(1.0) * 100.0;
                } else if self.chance(0.5) {
                    yuan = (yuan / 10.0).round().max(1.0) * 10.0;
                }
                (Scene::P2pTransfer, Self::fen(yuan))
            } else {
                let yuan = self.pick(
                    &[
                        6.66, 8.88, 16.8, 52.0, 66.0, 88.0, 100.0, 131.4, 200.0, 520.0,
                    ],
                    8.88,
                );
                (Scene::RedPacket, Self::fen(yuan))
            };
            let row = self.push(t, p, f, PayeeKind::Personal, scene, amount, None);
            row.funding = if row.funding == Funding::CreditLine {
                Funding::Balance
            } else {
                row.funding
            };
            row_city = self.payers[p as usize].city;
        } else {
            // Withdrawal to one's own card, or a top-up.
            let withdrawal = roll < 0.98;
            let mut yuan = self.lognormal(800.0 * spend.exp(), 0.9);
            if self.chance(0.6) {
                yuan = (yuan / 100.0).round().max(1.0) * 100.0;
            }
            let (scene, funding) = if withdrawal {
                (Scene::Withdrawal, Funding::Balance)
            } else {
                (Scene::CardTopup, Funding::DebitCard)
            };
            let debit = self.payers[p as usize].debit;
            let row = self.push(t, p, p, PayeeKind::Personal, scene, Self::fen(yuan), None);
            row.funding = if debit > 0 { funding } else { Funding::Balance };
            row.card = if funding == Funding::DebitCard {
                debit
            } else {
                0
            };
            row_city = self.payers[p as usize].city;
        }
        if travel {
            let ip = self.city_ip(row_city);
            if let Some(row) = self.rows.last_mut() {
                row.city = row_city;
                row.ip = ip;
            }
        }
    }

    fn random_merchant(&mut self, city: u8) -> u32 {
        let c = city as usize;
        let cum = std::mem::take(&mut self.merchant_cum_by_city[c]);
        let m = if cum.is_empty() {
            self.int(0, self.merchants.len() as i64 - 1) as u32
        } else {
            let k = self.pick_cum(&cum);
            self.merchants_by_city[c][k]
        };
        self.merchant_cum_by_city[c] = cum;
        m
    }

    /// A merchant of one of the given categories (any city), or any merchant.
    fn merchant_of(&mut self, categories: &[u8]) -> u32 {
        for _ in 0..50 {
            let m = self.int(0, self.merchants.len() as i64 - 1) as u32;
            if categories.contains(&self.merchants[m as usize].category) {
                return m;
            }
        }
        self.int(0, self.merchants.len() as i64 - 1) as u32
    }

    // ---------- fraud ----------

    fn inject_fraud(&mut self, target: usize) {
        let mut assigned = 0;
        for (i, pattern) in FraudPattern::ALL.into_iter().enumerate() {
            let budget = if i + 1 == FraudPattern::ALL.len() {
                target - assigned
            } else {
                ((target as f64 * PATTERN_SHARES[i]).round() as usize).min(target - assigned)
            };
            assigned += budget;
            let goal = self.rows.len() + budget;
            while self.rows.len() < goal {
                match pattern {
                    FraudPattern::CodeRenting => self.code_renting(),
                    FraudPattern::CardCashOut => self.card_cash_out(),
                    FraudPattern::CardTesting => self.card_testing(),
                    FraudPattern::FakeOrders => self.fake_orders(),
                    FraudPattern::AccountTakeover => self.account_takeover(),
                    FraudPattern::SplitPayments => self.split_payments(),
                }
            }
            // The last episode is cut short so each pattern gets exactly its share.
            self.rows.truncate(goal);
        }
    }

    fn code_renting(&mut self) {
        const P: Option<FraudPattern> = Some(FraudPattern::CodeRenting);
        let day0 = self.random_day(8);
        let city = self.random_city();
        let mule = if self.chance(0.5) {
            self.genuine_payer()
        } else {
            let t = self.at(day0, 12.0);
            self.fraud_account(city, t)
        };
        let renter_device = if self.chance(0.5) {
            Some(self.new_device())
        } else {
            None
        };
        let mule_channel = if self.chance(0.55) {
            Channel::WechatPay
        } else {
            Channel::Alipay
        };
        let bursts = self.int(1, 4);
        let mut day = day0;
        for _ in 0..bursts {
            let start_hour = if self.chance(0.75) {
                self.hour_in(20.0, 28.0)
            } else {
                self.hour_in(10.0, 18.0)
            };
            let start = self.at(day, start_hour);
            let span = self.int(30, 180) * MINUTE;
            let n = self.int(5, 40);
            let mut total = 0i64;
            let mut last = start;
            for _ in 0..n {
                let t = (start + self.int(0, span)).min(self.end_ms - 1);
                last = last.max(t);
                let payer = if self.chance(0.85) {
                    self.genuine_payer()
                } else {
                    let c = self.random_city();
                    self.fraud_account(c, t)
                };
                let yuan = if self.chance(0.6) {
                    self.pick(
                        &[
                            100.0, 200.0, 300.0, 500.0, 800.0, 1000.0, 2000.0, 3000.0, 5000.0,
                        ],
                        500.0,
                    )
                } else {
                    self.lognormal(500.0, 0.8).round().max(1.0)
                };
                let scene = if self.chance(0.7) {
                    Scene::PersonalCodeCollection
                } else {
                    Scene::P2pTransfer
                };
                let amount = Self::fen(yuan);
                total += amount;
                let row = self.push(t, payer, mule, PayeeKind::Personal, scene, amount, P);
                row.channel = mule_channel;
                if row.funding == Funding::CreditLine {
                    row.funding = Funding::Balance;
                }
            }
            // Money passed straight on: the mule withdraws most of it within two hours.
            let mut left = total * 95 / 100;
            let withdrawals = self.int(1, 3);
            for k in 0..withdrawals {
                let amount = if k + 1 == withdrawals { left } else { left / 2 };
                left -= amount;
                let t = (last + self.int(10, 120) * MINUTE).min(self.end_ms - 1);
                let row = self.push(
                    t,
                    mule,
                    mule,
                    PayeeKind::Personal,
                    Scene::Withdrawal,
                    amount,
                    P,
                );
                row.funding = Funding::Balance;
                row.card = 0;
                row.channel = mule_channel;
                if let Some(d) = renter_device {
                    row.device = d;
                }
            }
            day += self.int(1, 3);
        }
    }

    fn card_cash_out(&mut self) {
        const P: Option<FraudPattern> = Some(FraudPattern::CardCashOut);
        let merchant = if self.chance(0.6) {
            self.merchant_of(&LOW_FEE)
        } else {
            let city = self.random_city();
            let category = self.pick(&LOW_FEE, 12);
            self.merchants.push(MerchantInfo {
                city,
                category,
                kind: PayeeKind::AggregatorSubMerchant,
            });
            self.merchants.len() as u32 - 1
        };
        let kind = self.merchants[merchant as usize].kind;
        let holders = self.int(1, 4);
        let first_day = self.random_day(10);
        for _ in 0..holders {
            let p = self.genuine_payer();
            if self.payers[p as usize].credit == 0 {
                self.payers[p as usize].credit = self.new_card();
            }
            let credit = self.payers[p as usize].credit;
            // A holder sticks to one product: most charge the card, some the credit line.
            let credit_line = self.chance(0.2);
            let charges = self.int(2, 8);
            for _ in 0..charges {
                let day = first_day + self.int(0, 10);
                let hour = if self.chance(0.65) {
                    self.hour_in(0.0, 5.0)
                } else {
                    self.diurnal_hour(false)
                };
                let t = self.at(day, hour);
                let yuan = if self.chance(0.6) {
                    self.pick(
                        &[
                            4999.0, 9999.0, 1999.0, 998.0, 5000.0, 10000.0, 2000.0, 3000.0,
                        ],
                        4999.0,
                    )
                } else if self.chance(0.5) {
                    (self.int(8, 90) * 100) as f64
                } else {
                    self.int(800, 9000) as f64
                };
                let scene = if self.chance(0.7) {
                    Scene::MerchantScansPayer
                } else {
                    Scene::MerchantStaticCode
                };
                let aggregator_app = self.chance(0.6);
                let row = self.push(t, p, merchant, kind, scene, Self::fen(yuan), P);
                if credit_line {
                    row.funding = Funding::CreditLine;
                    row.card = 0;
                } else {
                    row.funding = Funding::CreditCard;
                    row.card = credit;
                }
                if kind == PayeeKind::AggregatorSubMerchant && aggregator_app {
                    row.channel = Channel::Aggregator;
                }
            }
        }
    }

    fn card_testing(&mut self) {
        const P: Option<FraudPattern> = Some(FraudPattern::CardTesting);
        let day = self.random_day(1);
        let hour = self.hour_in(0.0, 24.0);
        let start = self.at(day, hour);
        let city = self.random_city();
        let device = self.new_device();
        let ip = if self.chance(0.6) {
            self.new_ip()
        } else {
            self.city_ip(city)
        };
        let mut accounts = Vec::new();
        for _ in 0..self.int(1, 3) {
            accounts.push(self.fraud_account(city, start));
        }
        let merchant = self.merchant_of(&[12, 3, 2]);
        let kind = self.merchants[merchant as usize].kind;
        let channel = self.pick(
            &[
                Channel::BankCard,
                Channel::BankCard,
                Channel::UnionpayQuickpass,
                Channel::Aggregator,
            ],
            Channel::BankCard,
        );
        let attempts = self.int(8, 40);
        let span = self.int(2, 15) * MINUTE;
        let mut cards = Vec::new();
        for _ in 0..attempts {
            let card = if !cards.is_empty() && self.chance(0.15) {
                self.pick(&cards, 0)
            } else {
                self.new_card()
            };
            cards.push(card);
            let t = (start + self.int(0, span)).min(self.end_ms - 1);
            let amount = if self.chance(0.5) {
                self.pick(&[1, 10, 50, 100, 100, 200, 500, 1000], 100)
            } else {
                self.int(1, 999)
            };
            let payer = self.pick(&accounts, 0);
            let scene = if self.chance(0.5) {
                Scene::MerchantScansPayer
            } else {
                Scene::MerchantStaticCode
            };
            let funding = if self.chance(0.6) {
                Funding::CreditCard
            } else {
                Funding::DebitCard
            };
            let row = self.push(t, payer, merchant, kind, scene, amount, P);
            (
                row.device,
                row.ip,
                row.card,
                row.funding,
                row.channel,
                row.city,
            ) = (device, ip, card, funding, channel, city);
        }
        if self.chance(0.3) {
            // The cards that worked are used for real.
            let shop = self.merchant_of(&[ELECTRONICS, JEWELLERY]);
            let shop_kind = self.merchants[shop as usize].kind;
            for _ in 0..self.int(1, 3) {
                let t = (start + span + self.int(5, 60) * MINUTE).min(self.end_ms - 1);
                let amount = Self::fen(self.int(500, 3000) as f64);
                let payer = self.pick(&accounts, 0);
                let card = self.pick(&cards, 0);
                let row = self.push(
                    t,
                    payer,
                    shop,
                    shop_kind,
                    Scene::MerchantScansPayer,
                    amount,
                    P,
                );
                (
                    row.device,
                    row.ip,
                    row.card,
                    row.funding,
                    row.channel,
                    row.city,
                ) = (device, ip, card, Funding::CreditCard, channel, city);
            }
        }
    }

    fn fake_orders(&mut self) {
        const P: Option<FraudPattern> = Some(FraudPattern::FakeOrders);
        let merchant = self.merchant_of(&[12, 13, 4, ELECTRONICS]);
        let MerchantInfo {
            kind,
            category,
            city,
        } = self.merchants[merchant as usize].clone();
        let median = CATEGORIES[category as usize].1.min(800.0);
        let day = self.random_day(1);
        let hour = self.hour_in(9.0, 23.0);
        let start = self.at(day, hour);
        let span = self.int(1, 6) * HOUR;
        let devices = [self.new_device(), self.new_device()];
        let two_devices = self.chance(0.3);
        let farm_ip = self.new_ip();
        let shared_ip = self.chance(0.7);
        for _ in 0..self.int(5, 25) {
            let account = if self.chance(0.6) {
                self.fraud_account(city, start)
            } else {
                self.genuine_payer()
            };
            for _ in 0..self.int(1, 3) {
                let t = (start + self.int(0, span)).min(self.end_ms - 1);
                let mut yuan = self.lognormal(median, 0.5);
                if self.chance(0.5) {
                    yuan = yuan.round().max(1.0);
                }
                let scene = if self.chance(0.6) {
                    Scene::MerchantScansPayer
                } else {
                    Scene::MerchantStaticCode
                };
                let device = if two_devices && self.chance(0.5) {
                    devices[1]
                } else {
                    devices[0]
                };
                let ip = if shared_ip {
                    farm_ip
                } else {
                    self.city_ip(city)
                };
                let row = self.push(t, account, merchant, kind, scene, Self::fen(yuan), P);
                (row.device, row.ip, row.city) = (device, ip, city);
                if matches!(row.funding, Funding::CreditCard | Funding::CreditLine) {
                    row.funding = Funding::Balance;
                    row.card = 0;
                }
            }
        }
    }

    fn account_takeover(&mut self) {
        const P: Option<FraudPattern> = Some(FraudPattern::AccountTakeover);
        let victim = self.genuine_payer();
        let (home, spend, favourites) = {
            let v = &self.payers[victim as usize];
            (v.city, v.spend, v.favourites.clone())
        };
        let city = if self.chance(0.75) {
            self.random_city()
        } else {
            home
        };
        let device = self.new_device();
        let ip = if self.chance(0.5) {
            self.new_ip()
        } else {
            self.city_ip(city)
        };
        let day = self.random_day(1);
        let hour = if self.chance(0.4) {
            self.hour_in(0.0, 6.0)
        } else {
            self.diurnal_hour(false)
        };
        let start = self.at(day, hour);
        let typical = 60.0 * spend.exp();
        for _ in 0..self.int(1, 4) {
            let t = (start + self.int(0, 60) * MINUTE).min(self.end_ms - 1);
            let mut yuan = (typical * (5.0 + 25.0 * self.unit())).clamp(300.0, 50_000.0);
            if self.chance(0.5) {
                yuan = (yuan / 100.0).round().max(1.0) * 100.0;
            }
            let amount = Self::fen(yuan);
            let roll = self.unit();
            let row = if roll < 0.4 {
                let row = self.push(
                    t,
                    victim,
                    victim,
                    PayeeKind::Personal,
                    Scene::Withdrawal,
                    amount,
                    P,
                );
                row.funding = Funding::Balance;
                row.card = 0;
                row
            } else if roll < 0.75 {
                let mule = if self.chance(0.5) {
                    self.fraud_account(city, t)
                } else {
                    self.int(0, self.genuine_payers as i64 - 1) as u32
                };
                self.push(
                    t,
                    victim,
                    mule,
                    PayeeKind::Personal,
                    Scene::P2pTransfer,
                    amount,
                    P,
                )
            } else {
                let mut shop = self.merchant_of(&[ELECTRONICS, JEWELLERY]);
                if favourites.contains(&shop) {
                    shop = self.merchant_of(&[JEWELLERY]);
                }
                let kind = self.merchants[shop as usize].kind;
                self.push(t, victim, shop, kind, Scene::MerchantScansPayer, amount, P)
            };
            (row.device, row.ip, row.city) = (device, ip, city);
        }
    }

    fn split_payments(&mut self) {
        const P: Option<FraudPattern> = Some(FraudPattern::SplitPayments);
        let day = self.random_day(1);
        let hour = self.diurnal_hour(false);
        let start = self.at(day, hour);
        let payer = if self.chance(0.7) {
            self.genuine_payer()
        } else {
            let c = self.random_city();
            self.fraud_account(c, start)
        };
        let limit: f64 = self.pick(&[500.0, 1000.0, 2000.0, 5000.0], 500.0);
        let personal = self.chance(0.6);
        let (payee, kind) = if personal {
            (
                self.int(0, self.genuine_payers as i64 - 1) as u32,
                PayeeKind::Personal,
            )
        } else {
            let m = self.merchant_of(&[12, 0, 13]);
            (m, self.merchants[m as usize].kind)
        };
        let new_device = if self.chance(0.3) {
            Some(self.new_device())
        } else {
            None
        };
        let span = self.int(2, 30) * MINUTE;
        for _ in 0..self.int(4, 15) {
            let t = (start + self.int(0, span)).min(self.end_ms - 1);
            let mut yuan = limit - self.unit() * limit * 0.03;
            if self.chance(0.7) {
                yuan = yuan.floor();
            }
            let scene = match (personal, limit <= 500.0) {
                (true, _) if self.chance(0.5) => Scene::PersonalCodeCollection,
                (true, _) => Scene::P2pTransfer,
                (false, true) => Scene::MerchantStaticCode,
                (false, false) => Scene::MerchantScansPayer,
            };
            let row = self.push(t, payer, payee, kind, scene, Self::fen(yuan), P);
            if let Some(d) = new_device {
                row.device = d;
            }
        }
    }

    // ---------- output ----------

    fn event(&self, i: usize, row: &Row) -> LabeledEvent {
        let payer = &self.payers[row.payer as usize];
        let (payee_id, category) = match row.kind {
            PayeeKind::Personal => (
                format!("u{:08x}", mix32(row.payee ^ 0x5a5a_0001)),
                String::new(),
            ),
            _ => {
                let category = self
                    .merchants
                    .get(row.payee as usize)
                    .map_or("", |m| CATEGORIES[m.category as usize].0);
                (
                    format!("m{:08x}", mix32(row.payee ^ 0x5a5a_0002)),
                    category.to_owned(),
                )
            }
        };
        let ip = mix32(row.ip ^ 0x5a5a_0003).to_be_bytes();
        LabeledEvent {
            payment: Payment {
                payment_id: format!("P{:010}", i + 1),
                event_time_ms: row.t,
                channel: row.channel,
                scene: row.scene,
                payer: Payer {
                    account_id: format!("u{:08x}", mix32(row.payer ^ 0x5a5a_0001)),
                    real_name_verified: payer.real_name,
                    registered_at_ms: payer.registered_at,
                },
                payee: Payee {
                    account_id: payee_id,
                    kind: row.kind,
                    merchant_category: category,
                },
                amount_fen: row.amount,
                currency: "CNY".to_owned(),
                funding: row.funding,
                card_fingerprint: (row.card != 0)
                    .then(|| format!("c{:08x}", mix32(row.card ^ 0x5a5a_0004))),
                device_id: format!("d{:08x}", mix32(row.device ^ 0x5a5a_0005)),
                ip: format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]),
                city_code: CITIES.get(row.city as usize).map(|c| (*c).to_owned()),
                attributes: Default::default(),
            },
            label: Some(row.pattern.is_some()),
            label_reported_at_ms: (row.reported >= 0).then_some(row.reported),
            line: 0,
        }
    }

    fn summary(&self) -> SimSummary {
        let mut s = SimSummary {
            payments: self.rows.len() as u64,
            payers: self.payers.len(),
            merchants: self.merchants.len(),
            first_event_ms: self.rows.first().map_or(0, |r| r.t),
            last_event_ms: self.rows.last().map_or(0, |r| r.t),
            ..Default::default()
        };
        for p in FraudPattern::ALL {
            s.per_pattern.insert(p.as_str(), 0);
        }
        for r in &self.rows {
            match r.pattern {
                None => s.genuine += 1,
                Some(p) => {
                    s.fraud += 1;
                    *s.per_pattern.entry(p.as_str()).or_default() += 1;
                    if r.reported < 0 {
                        s.fraud_unreported += 1;
                    }
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{read_events_from, ReadOptions};
    use crate::quality::{average_precision, roc_auc};
    use std::collections::{HashMap, HashSet};

    fn cfg(payments: usize, seed: u64) -> SimConfig {
        SimConfig {
            payments,
            seed,
            ..SimConfig::default()
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_differs() {
        let run = |seed| {
            let mut buf = Vec::new();
            simulate(&cfg(3_000, seed), &mut buf).unwrap();
            buf
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn written_file_reads_back_cleanly_and_matches_memory() {
        let c = cfg(5_000, 11);
        let mut buf = Vec::new();
        let summary = simulate(&c, &mut buf).unwrap();
        let back = read_events_from(&buf[..], &ReadOptions::default()).unwrap();
        assert!(back.skipped.is_empty());
        assert_eq!(back.events.len(), 5_000);
        let (mem, mem_summary) = simulate_events(&c).unwrap();
        assert_eq!(summary, mem_summary);
        for (a, b) in back.events.iter().zip(&mem) {
            let mut a = a.clone();
            a.line = 0;
            assert_eq!(a, b.event);
        }
        let header =
            std::str::from_utf8(&buf[..buf.iter().position(|&b| b == b'\n').unwrap()]).unwrap();
        assert!(header.ends_with(",fraud_pattern"));
    }

    #[test]
    fn counts_rates_times_and_labels_are_honest() {
        let c = cfg(100_000, 3);
        let (events, s) = simulate_events(&c).unwrap();
        assert_eq!(events.len(), 100_000);
        assert_eq!(s.payments, 100_000);
        assert_eq!(s.fraud, 1_000, "exactly fraud_rate of the rows");
        assert_eq!(s.genuine + s.fraud, s.payments);
        for (i, p) in FraudPattern::ALL.iter().enumerate() {
            let want = (1_000.0 * PATTERN_SHARES[i]).round() as u64;
            assert_eq!(s.per_pattern[p.as_str()], want, "{}", p.as_str());
        }
        let unreported = s.fraud_unreported as f64 / s.fraud as f64;
        assert!(
            (0.10..0.20).contains(&unreported),
            "unreported share {unreported}"
        );
        let end = c.start_ms + i64::from(c.days) * DAY;
        let mut ids = HashSet::new();
        let mut last = i64::MIN;
        for e in &events {
            let p = &e.event.payment;
            assert!(p.event_time_ms >= c.start_ms && p.event_time_ms < end);
            assert!(p.event_time_ms >= last, "sorted by time");
            last = p.event_time_ms;
            assert!(p.amount_fen > 0);
            assert!(ids.insert(p.payment_id.clone()));
            assert_eq!(
                e.event.label,
                Some(e.pattern.is_some()),
                "label is the ground truth"
            );
            match (e.pattern, e.event.label_reported_at_ms) {
                (None, r) => assert_eq!(r, Some(p.event_time_ms + c.genuine_label_delay_ms)),
                (Some(_), Some(r)) => assert!(r >= p.event_time_ms + HOUR),
                (Some(_), None) => {}
            }
            assert_eq!(
                p.card_fingerprint.is_some(),
                matches!(p.funding, Funding::DebitCard | Funding::CreditCard)
            );
        }
    }

    #[test]
    fn zero_fraud_and_tiny_runs_work() {
        let (ev, s) = simulate_events(&SimConfig {
            fraud_rate: 0.0,
            ..cfg(500, 1)
        })
        .unwrap();
        assert_eq!((ev.len(), s.fraud), (500, 0));
        let (ev, _) = simulate_events(&cfg(0, 1)).unwrap();
        assert!(ev.is_empty());
        let (ev, s) = simulate_events(&SimConfig {
            fraud_rate: 0.5,
            days: 1,
            ..cfg(50, 9)
        })
        .unwrap();
        assert_eq!((ev.len(), s.fraud), (50, 25));
    }

    #[test]
    fn bad_config_is_refused() {
        for c in [
            SimConfig {
                days: 0,
                ..SimConfig::default()
            },
            SimConfig {
                fraud_rate: 0.9,
                ..SimConfig::default()
            },
            SimConfig {
                fraud_rate: f64::NAN,
                ..SimConfig::default()
            },
            SimConfig {
                unreported_fraud_share: -0.1,
                ..SimConfig::default()
            },
            SimConfig {
                payments: MAX_PAYMENTS + 1,
                ..SimConfig::default()
            },
            SimConfig {
                start_ms: 0,
                ..SimConfig::default()
            },
        ] {
            assert!(
                matches!(simulate_events(&c), Err(SimError::Config(_))),
                "{c:?}"
            );
        }
    }

    /// The patterns carry their signals, but no single naive signal separates fraud.
    #[test]
    fn patterns_have_signals_but_are_not_trivially_separable() {
        let (events, _) = simulate_events(&cfg(100_000, 21)).unwrap();
        let labels: Vec<bool> = events.iter().map(|e| e.pattern.is_some()).collect();
        let beijing_hour = |t: i64| (t + BEIJING_OFFSET_MS).rem_euclid(DAY) / HOUR;
        // Naive single signals: amount, night, roundness.
        let amount: Vec<f64> = events
            .iter()
            .map(|e| e.event.payment.amount_fen as f64)
            .collect();
        let night: Vec<f64> = events
            .iter()
            .map(|e| f64::from(u8::from(beijing_hour(e.event.payment.event_time_ms) < 5)))
            .collect();
        let round: Vec<f64> = events
            .iter()
            .map(|e| f64::from(u8::from(e.event.payment.amount_fen % 10_000 == 0)))
            .collect();
        for (name, s) in [("amount", &amount), ("night", &night), ("round", &round)] {
            let auc = roc_auc(s, &labels).unwrap();
            let ap = average_precision(s, &labels).unwrap();
            assert!(auc < 0.9 && ap < 0.3, "{name}: auc {auc} ap {ap}");
            assert!(auc > 0.5, "{name} carries some signal: auc {auc}");
        }
        // Genuine rows also do the suspicious-looking things.
        let genuine = events.iter().filter(|e| e.pattern.is_none());
        let (mut g_night, mut g_round, mut g_4999) = (0, 0, 0);
        for e in genuine {
            let p = &e.event.payment;
            g_night += usize::from(beijing_hour(p.event_time_ms) < 5);
            g_round += usize::from(p.amount_fen % 10_000 == 0);
            g_4999 += usize::from(p.amount_fen == 499_900);
        }
        assert!(
            g_night > 1_000 && g_round > 1_000 && g_4999 > 10,
            "{g_night} {g_round} {g_4999}"
        );
        // Code renting: many distinct payers per mule code.
        let mut payers_per_code: HashMap<&str, HashSet<&str>> = HashMap::new();
        for e in events
            .iter()
            .filter(|e| e.pattern == Some(FraudPattern::CodeRenting))
        {
            let p = &e.event.payment;
            if p.scene != Scene::Withdrawal {
                payers_per_code
                    .entry(&p.payee.account_id)
                    .or_default()
                    .insert(&p.payer.account_id);
            }
        }
        assert!(payers_per_code.values().all(|s| s.len() >= 4));
        // Card testing: many cards per device.
        let mut cards_per_device: HashMap<&str, HashSet<&str>> = HashMap::new();
        for e in events
            .iter()
            .filter(|e| e.pattern == Some(FraudPattern::CardTesting))
        {
            let p = &e.event.payment;
            if let Some(c) = &p.card_fingerprint {
                cards_per_device.entry(&p.device_id).or_default().insert(c);
            }
        }
        assert!(cards_per_device.values().any(|s| s.len() >= 8));
    }
}
