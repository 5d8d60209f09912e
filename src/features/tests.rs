//! Tests: brute-force reference comparison, reopen equivalence, lateness, outcomes, file errors.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;

use super::spec::{fnv64, Aggregate, SeriesKind, Window, DAY_MS};
use super::state::EntityState;
use super::*;
use crate::payment::*;

fn pay(id: u64, t: i64, payer: &str, payee: &str, amount: i64) -> Payment {
    Payment {
        payment_id: format!("p{id}"),
        event_time_ms: t,
        channel: Channel::Alipay,
        scene: Scene::MerchantStaticCode,
        payer: Payer {
            account_id: payer.into(),
            real_name_verified: true,
            registered_at_ms: 0,
        },
        payee: Payee {
            account_id: payee.into(),
            kind: PayeeKind::Merchant,
            merchant_category: "5411".into(),
        },
        amount_fen: amount,
        currency: "CNY".into(),
        funding: Funding::Balance,
        card_fingerprint: None,
        device_id: "d0".into(),
        ip: "1.1.1.1".into(),
        city_code: None,
        attributes: BTreeMap::new(),
    }
}

fn open(dir: &tempfile::TempDir, set: FeatureSet, cap: usize) -> (sled::Db, FeatureStore) {
    // sled's background threads may hold the file lock a moment after the last Db is dropped.
    let mut tries = 0;
    let db = loop {
        match sled::Config::new().path(dir.path()).open() {
            Ok(db) => break db,
            Err(_) if tries < 200 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("open sled: {e}"),
        }
    };
    let store = FeatureStore::open(
        &db,
        set,
        StoreOptions {
            cache_capacity: cap,
            ..Default::default()
        },
    )
    .unwrap();
    (db, store)
}

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

const TEST_FEATURES: &str = r#"
[settings]
tz_offset_minutes = 480
lateness = "10m"
distinct_exact_limit = 1000

[entities]
payer = ["payer"]
payee = ["payee"]
pair = ["payer", "payee"]
device = ["device"]
card = ["card"]

[[feature]]
name = "payer.count_1m"
entity = "payer"
aggregate = "count"
window = "1m"
description = "d"

[[feature]]
name = "payer.sum_10m"
entity = "payer"
aggregate = "sum"
window = "10m"
description = "d"

[[feature]]
name = "payer.avg_1h"
entity = "payer"
aggregate = "avg"
window = "1h"
description = "d"

[[feature]]
name = "payer.max_1h"
entity = "payer"
aggregate = "max"
window = "1h"
description = "d"

[[feature]]
name = "payee.count_13m_lag7m"
entity = "payee"
aggregate = "count"
window = "13m"
lag = "7m"
description = "d"

[[feature]]
name = "payee.sum_1h_lag10m_credit"
entity = "payee"
aggregate = "sum"
window = "1h"
lag = "10m"
filter = { funding = ["CREDIT_CARD"] }
description = "d"

[[feature]]
name = "payee.distinct_payers_10m"
entity = "payee"
aggregate = "distinct"
of = "payer"
window = "10m"
description = "d"

[[feature]]
name = "payee.distinct_payers_1h"
entity = "payee"
aggregate = "distinct"
of = "payer"
window = "1h"
description = "d"

[[feature]]
name = "device.distinct_cards_1h_big"
entity = "device"
aggregate = "distinct"
of = "card"
window = "1h"
filter = { min_amount_fen = 1000 }
description = "d"

[[feature]]
name = "pair.count_10m_p2p"
entity = "pair"
aggregate = "count"
window = "10m"
filter = { scene = ["P2P_TRANSFER"] }
description = "d"

[[feature]]
name = "card.count_night_1h"
entity = "card"
aggregate = "count"
window = "1h"
filter = { night = true }
description = "d"

[[feature]]
name = "payer.new_device"
entity = "payer"
aggregate = "new_value"
of = "device"
window = "30m"
description = "d"

[[feature]]
name = "payer.daily"
entity = "payer"
aggregate = "sum"
window = "calendar_day"
description = "d"

[[feature]]
name = "payer.yearly"
entity = "payer"
aggregate = "count"
window = "calendar_year"
description = "d"

[[feature]]
name = "payment.amount"
aggregate = "amount_fen"
description = "d"

[[feature]]
name = "payment.card_code"
aggregate = "code"
of = "card"
description = "d"

[[feature]]
name = "payer.vs_prior_avg_1h"
entity = "payer"
aggregate = "amount_vs_prior_avg"
window = "1h"
description = "d"

[[feature]]
name = "payer.above_prior_max_10m"
entity = "payer"
aggregate = "amount_above_prior_max"
window = "10m"
description = "d"

[[feature]]
name = "payee.robust_z_1h"
entity = "payee"
aggregate = "amount_robust_z"
window = "1h"
description = "d"

[[feature]]
name = "payer.since_previous_30m"
entity = "payer"
aggregate = "since_previous"
window = "30m"
description = "d"

[[feature]]
name = "pair.since_previous_credit_1h"
entity = "pair"
aggregate = "since_previous"
window = "1h"
filter = { funding = ["CREDIT_CARD"] }
description = "d"
"#;

/// Brute force: scans every accepted event with the same bucket rounding as the store.
fn reference(set: &FeatureSet, history: &[Payment], before: &[Payment], p: &Payment) -> Vec<f64> {
    let tz = set.tz_offset_ms;
    let b = |t: i64, w: i64| (t + tz).div_euclid(w);
    let mut out = vec![0.0; set.names.len()];
    for (slot, def) in set.defs.iter().enumerate() {
        let t = p.event_time_ms;
        if def.aggregate == Aggregate::AmountFen {
            out[slot] = p.amount_fen as f64;
            continue;
        }
        if def.aggregate == Aggregate::Code {
            let code = def.of.as_ref().unwrap().value(p);
            out[slot] = code.map_or(0.0, super::spec::category_code);
            continue;
        }
        let ent = set
            .entities
            .iter()
            .find(|e| Some(&e.name) == def.entity.as_ref())
            .unwrap();
        let r = ent.readers.iter().find(|r| r.slot == slot).unwrap();
        let w = ent.series[r.series].bucket_ms;
        let key = |q: &Payment| -> Option<Vec<String>> {
            ent.fields
                .iter()
                .map(|f| f.value(q).map(str::to_string))
                .collect()
        };
        let Some(k) = key(p) else { continue };
        let (lo, hi) = match def.window {
            Window::Sliding { len_ms, lag_ms, .. } => {
                let hi = b(t - lag_ms, w);
                (hi - len_ms / w + 1, hi)
            }
            Window::CalendarDay => (b(t, DAY_MS), b(t, DAY_MS)),
            Window::CalendarYear => {
                let d = b(t, DAY_MS);
                (super::spec::year_start_day(d), d)
            }
            Window::None => unreachable!(),
        };
        let matching = |src: &[Payment]| -> Vec<Payment> {
            src.iter()
                .filter(|e| key(e).as_ref() == Some(&k) && def.filter.matches(e, tz))
                .cloned()
                .collect()
        };
        out[slot] = match def.aggregate {
            Aggregate::Count | Aggregate::Sum | Aggregate::Avg | Aggregate::Max => {
                let v: Vec<i64> = matching(history)
                    .iter()
                    .filter(|e| (lo..=hi).contains(&b(e.event_time_ms, w)))
                    .map(|e| e.amount_fen)
                    .collect();
                let s: i64 = v.iter().sum();
                match def.aggregate {
                    Aggregate::Count => v.len() as f64,
                    Aggregate::Sum => s as f64,
                    Aggregate::Max => v.iter().copied().max().unwrap_or(0) as f64,
                    _ if v.is_empty() => 0.0,
                    _ => s as f64 / v.len() as f64,
                }
            }
            Aggregate::Distinct => {
                let of = def.of.as_ref().unwrap();
                let set: HashSet<String> = matching(history)
                    .iter()
                    .filter(|e| b(e.event_time_ms, w) >= lo)
                    .filter_map(|e| of.value(e).map(str::to_string))
                    .collect();
                set.len() as f64
            }
            Aggregate::NewValue => {
                let of = def.of.as_ref().unwrap();
                let v = of.value(p);
                let seen = matching(before)
                    .iter()
                    .any(|e| b(e.event_time_ms, w) >= lo && of.value(e) == v);
                if seen {
                    0.0
                } else {
                    1.0
                }
            }
            Aggregate::AmountVsPriorAvg
            | Aggregate::AmountAbovePriorMax
            | Aggregate::AmountRobustZ => {
                let v: Vec<i64> = matching(before)
                    .iter()
                    .filter(|e| (lo..=hi).contains(&b(e.event_time_ms, w)))
                    .map(|e| e.amount_fen)
                    .collect();
                match def.aggregate {
                    Aggregate::AmountVsPriorAvg if v.is_empty() => 1.0,
                    Aggregate::AmountVsPriorAvg => {
                        p.amount_fen as f64 / (v.iter().sum::<i64>() as f64 / v.len() as f64)
                    }
                    Aggregate::AmountAbovePriorMax if v.is_empty() => 0.0,
                    Aggregate::AmountAbovePriorMax => {
                        (p.amount_fen - v.iter().copied().max().unwrap()) as f64
                    }
                    _ if v.len() < 3 => 0.0,
                    _ => {
                        // Lower medians of the log2 bins and of their distances to the median.
                        let bin = |a: i64| ((a.max(1) as f64).log2() * 4.0).floor() as i64;
                        let mut bins: Vec<i64> = v.iter().map(|&a| bin(a)).collect();
                        bins.sort_unstable();
                        let median = bins[(bins.len() - 1) / 2];
                        let mut dev: Vec<i64> = bins.iter().map(|x| (x - median).abs()).collect();
                        dev.sort_unstable();
                        let mad = dev[(dev.len() - 1) / 2].max(1);
                        (bin(p.amount_fen) - median) as f64 / (1.4826 * mad as f64)
                    }
                }
            }
            Aggregate::SincePrevious => {
                let Window::Sliding { len_ms, .. } = def.window else {
                    unreachable!()
                };
                let prev = matching(before).iter().map(|e| e.event_time_ms).max();
                match prev {
                    Some(q) if q > t - len_ms => {
                        ((t - q).max(0) as f64 / 1000.0).min(len_ms as f64 / 1000.0)
                    }
                    _ => len_ms as f64 / 1000.0,
                }
            }
            _ => unreachable!(),
        };
    }
    out
}

#[derive(Debug, Clone)]
struct Ev {
    dt_s: i64,
    payer: u8,
    payee: u8,
    device: u8,
    card: Option<u8>,
    amount: i64,
    scene: u8,
    credit: bool,
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        prop_oneof![6 => 0i64..90, 2 => -600i64..0, 1 => -900i64..-600, 1 => 0i64..4000],
        0u8..3,
        0u8..3,
        0u8..3,
        proptest::option::of(0u8..4),
        prop_oneof![
            Just(100i64),
            Just(999),
            Just(1000),
            Just(5000),
            Just(100_000),
            1i64..20_000
        ],
        0u8..3,
        any::<bool>(),
    )
        .prop_map(
            |(dt_s, payer, payee, device, card, amount, scene, credit)| Ev {
                dt_s,
                payer,
                payee,
                device,
                card,
                amount,
                scene,
                credit,
            },
        )
}

fn to_payments(evs: &[Ev], start: i64) -> Vec<Payment> {
    let mut t = start;
    evs.iter()
        .enumerate()
        .map(|(i, e)| {
            t += e.dt_s * 1000 + (i as i64 % 7) * 13;
            let mut p = pay(
                i as u64,
                t,
                &format!("u{}", e.payer),
                &format!("m{}", e.payee),
                e.amount,
            );
            p.device_id = format!("d{}", e.device);
            p.card_fingerprint = e.card.map(|c| format!("c{c}"));
            p.scene = [
                Scene::MerchantStaticCode,
                Scene::P2pTransfer,
                Scene::PersonalCodeCollection,
            ][e.scene as usize];
            if e.credit {
                p.funding = Funding::CreditCard;
            }
            p
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn matches_brute_force_reference(evs in proptest::collection::vec(ev(), 1..160), start_h in 0i64..48) {
        let set = FeatureSet::parse(TEST_FEATURES, "test.toml").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut store) = open(&dir, set.clone(), 4);
        let mut history: Vec<Payment> = Vec::new();
        let mut wm: Option<i64> = None;
        let mut out = Vec::new();
        for p in to_payments(&evs, T0 + start_h * 3_600_000 - 3_600_000) {
            let late = wm.is_some_and(|w| p.event_time_ms < w - set.lateness_ms);
            let before = history.clone();
            if !late {
                let tq = p.event_time_ms - p.event_time_ms.rem_euclid(1000);
                wm = Some(wm.map_or(tq, |w| w.max(tq)));
                history.push(p.clone());
            }
            let obs = store.observe(&p, &mut out).unwrap();
            store.checkpoint(b"").unwrap();
            prop_assert_eq!(obs.late, late);
            if !late {
                let want = reference(&set, &history, &before, &p);
                for (i, (got, want)) in out.iter().zip(&want).enumerate() {
                    prop_assert!((got - want).abs() < 1e-9, "{} at {}: got {} want {}", set.names()[i], p.payment_id, got, want);
                }
            }
        }
    }
}

/// A deterministic mixed stream over the default set, with outcomes interleaved.
fn stream(n: usize) -> Vec<(Payment, Option<(OutcomeKind, i64)>)> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut t = T0;
    (0..n)
        .map(|i| {
            let r = next();
            t += (r % 400_000) as i64 - if r % 11 == 0 { 300_000 } else { 0 };
            let mut p = pay(
                i as u64,
                t,
                &format!("u{}", r % 50),
                &format!("m{}", (r >> 8) % 20),
                100 + ((r >> 16) % 90_000) as i64,
            );
            p.device_id = format!("d{}", (r >> 24) % 40);
            p.ip = format!("10.0.0.{}", (r >> 30) % 30);
            p.card_fingerprint = if r % 3 == 0 {
                Some(format!("c{}", (r >> 36) % 25))
            } else {
                None
            };
            p.scene = Scene::ALL[((r >> 40) % Scene::ALL.len() as u64) as usize];
            p.funding = Funding::ALL[((r >> 44) % Funding::ALL.len() as u64) as usize];
            let outcome = (r % 13 == 0).then(|| {
                (
                    OutcomeKind::ALL[((r >> 50) % 4) as usize],
                    t + ((r >> 20) % 5) as i64 * 3_600_000,
                )
            });
            (p, outcome)
        })
        .collect()
}

fn run(
    store: &mut FeatureStore,
    events: &[(Payment, Option<(OutcomeKind, i64)>)],
    outs: &mut Vec<Vec<f64>>,
) {
    let mut out = Vec::new();
    for (p, outcome) in events {
        store.observe(p, &mut out).unwrap();
        if let Some((k, at)) = outcome {
            store.record_outcome(p, *k, *at).unwrap();
        }
        store.checkpoint(b"").unwrap();
        outs.push(out.clone());
    }
}

#[test]
fn reopen_gives_identical_features() {
    let events = stream(3000);
    let a_dir = tempfile::tempdir().unwrap();
    let (_a_db, mut a) = open(&a_dir, FeatureSet::defaults(), 100_000);
    let mut want = Vec::new();
    run(&mut a, &events, &mut want);

    let b_dir = tempfile::tempdir().unwrap();
    let mut got = Vec::new();
    {
        let (db, mut b) = open(&b_dir, FeatureSet::defaults(), 8);
        run(&mut b, &events[..1500], &mut got);
        b.sweep(i64::MAX, 1000).unwrap();
        db.flush().unwrap();
    }
    let (_db, mut b) = open(&b_dir, FeatureSet::defaults(), 8);
    run(&mut b, &events[1500..], &mut got);
    assert_eq!(want.len(), got.len());
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert!(
            w.iter().zip(g).all(|(x, y)| x.to_bits() == y.to_bits()),
            "event {i} differs"
        );
    }
}

#[test]
fn default_set_parses_and_covers_signals() {
    let set = FeatureSet::parse(super::spec::DEFAULT_FEATURES, "default_features.toml").unwrap();
    for n in [
        "payer.count_1h",
        "payee.amount_30d",
        "payer.avg_amount_30d",
        "payee.distinct_payers_1h",
        "payee.distinct_payers_personal_code_24h",
        "device.distinct_payers_24h",
        "ip.distinct_payers_24h",
        "device.distinct_cards_24h",
        "payer.distinct_payees_24h",
        "card.small_count_10m",
        "pair.amount_10m",
        "payer.new_device",
        "payer.new_ip",
        "payer.new_payee",
        "payer.days_since_first",
        "payer.daily_amount",
        "payer.daily_static_code_amount",
        "payer.yearly_balance_amount",
        "payer.amount_vs_avg_30d",
        "payment.is_night",
        "payment.hour",
        "payment.is_weekend",
        "payee.credit_card_night_count_24h",
        "payee.bad_reports_30d",
        "payee.fraud_rate_30d_lag7d",
        "payer.bad_reports_90d",
        "payment.amount_fen",
    ] {
        assert!(set.index_of(n).is_some(), "{n} missing");
    }
    assert!(set.defs().iter().all(|d| !d.description.is_empty()));
    assert_eq!(FeatureSet::defaults().names(), set.names());
}

#[test]
fn late_event_is_scored_but_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut s) = open(&dir, FeatureSet::defaults(), 100);
    let i = s.set().index_of("payer.count_24h").unwrap();
    let mut out = Vec::new();
    s.observe(&pay(0, T0 - 30 * 60_000, "u", "m", 100), &mut out)
        .unwrap();
    assert!(
        !s.observe(&pay(1, T0, "u", "m", 100), &mut out)
            .unwrap()
            .late
    );
    let late = s
        .observe(&pay(2, T0 - 11 * 60_000, "u", "m", 100), &mut out)
        .unwrap();
    assert!(late.late);
    assert_eq!(
        out[i], 1.0,
        "scored from current state: its window holds only the T0-30m payment"
    );
    let ok = s
        .observe(&pay(3, T0 - 9 * 60_000, "u", "m", 100), &mut out)
        .unwrap();
    assert!(!ok.late, "within lateness");
    assert_eq!(out[i], 2.0, "T0-30m and itself; T0 is in a later bucket");
    s.observe(&pay(4, T0 + 1000, "u", "m", 100), &mut out)
        .unwrap();
    assert_eq!(out[i], 4.0, "the late event was not recorded");
    s.checkpoint(b"").unwrap();
}

#[test]
fn outcome_from_the_future_never_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut s) = open(&dir, FeatureSet::defaults(), 100);
    let rep = s.set().index_of("payee.bad_reports_30d").unwrap();
    let rate = s.set().index_of("payee.fraud_rate_30d_lag7d").unwrap();
    let mut out = Vec::new();
    let p1 = pay(1, T0, "u", "m", 100);
    s.observe(&p1, &mut out).unwrap();
    // Reported a day later, but fed to the store now (e.g. a replay out of order).
    s.record_outcome(&p1, OutcomeKind::Fraud, T0 + DAY_MS)
        .unwrap();
    s.record_outcome(&p1, OutcomeKind::Genuine, T0 + 1000)
        .unwrap();
    s.observe(&pay(2, T0 + 3_600_000, "u2", "m", 100), &mut out)
        .unwrap();
    assert_eq!(out[rep], 0.0);
    s.observe(&pay(3, T0 + DAY_MS, "u2", "m", 100), &mut out)
        .unwrap();
    assert_eq!(out[rep], 0.0, "report bucket not complete yet");
    s.observe(&pay(4, T0 + DAY_MS + 3_600_000, "u2", "m", 100), &mut out)
        .unwrap();
    assert_eq!(
        out[rep], 0.0,
        "30d reports use 6h buckets: 08:00-14:00 local is not complete"
    );
    s.observe(
        &pay(5, T0 + DAY_MS + 6 * 3_600_000, "u2", "m", 100),
        &mut out,
    )
    .unwrap();
    assert_eq!(out[rep], 1.0);
    assert_eq!(out[rate], 0.0, "payment 1 is not yet 7 days old");
    s.observe(&pay(6, T0 + 8 * DAY_MS, "u3", "m", 100), &mut out)
        .unwrap();
    assert_eq!(
        out[rate],
        1.0 / 4.0,
        "1 bad of the 4 payments in buckets up to b(T0 + 1d)"
    );
    s.checkpoint(b"").unwrap();
}

#[test]
fn file_errors_carry_line_numbers() {
    let text = "[entities]\npayer = [\"payer\"]\n\n[[feature]]\nname = \"x\"\nentity = \"payer\"\naggregate = \"count\"\nwindow = \"5 parsecs\"\ndescription = \"d\"\n";
    let e = FeatureSet::parse(text, "f.toml").unwrap_err().to_string();
    assert!(e.starts_with("f.toml:8:"), "{e}");
    assert!(e.contains("bad window"), "{e}");
    let text = "[entities]\npayer = [\"payer\"]\n[[feature]]\nname = \"x\"\nentity = \"nobody\"\naggregate = \"count\"\nwindow = \"1h\"\ndescription = \"d\"\n";
    let e = FeatureSet::parse(text, "f.toml").unwrap_err().to_string();
    assert!(
        e.starts_with("f.toml:5:") && e.contains("unknown entity"),
        "{e}"
    );
    let e = FeatureSet::parse("[entities]\nx = [\"payer\"]\nbogus = 1\n", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("f.toml:"), "{e}");
    let e = FeatureSet::parse("[entities\n", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("f.toml:1:"), "{e}");
    let text = "[entities]\npayer = [\"payer\"]\n[[feature]]\nname = \"x\"\nentity = \"payer\"\naggregate = \"count\"\nwindow = \"1h\"\nfilter = { scene = [\"NOPE\"] }\ndescription = \"d\"\n";
    let e = FeatureSet::parse(text, "f.toml").unwrap_err().to_string();
    assert!(e.starts_with("f.toml:8:") && e.contains("NOPE"), "{e}");
}

#[test]
fn every_bundled_feature_has_merchant_words_and_a_file_without_them_still_loads() {
    for def in FeatureSet::defaults().defs() {
        assert!(
            def.label.is_some() && def.label_zh.is_some(),
            "`{}` needs label and label_zh in default_features.toml",
            def.name
        );
    }
    let feature = "[entities]\npayer = [\"payer\"]\n[[feature]]\nname = \"payer.count_1h\"\nentity = \"payer\"\naggregate = \"count\"\nwindow = \"1h\"\ndescription = \"payments this payer made in the last hour\"\n";
    let set = FeatureSet::parse(feature, "f.toml").unwrap();
    let def = set.describe(0);
    assert_eq!(def.label(), "payments this payer made in the last hour");
    assert_eq!(def.label_zh(), def.label());
    assert_eq!(def.unit(), crate::units::Unit::Count);
    let labeled = format!("{feature}label = \"payments in the last hour\"\n");
    let set = FeatureSet::parse(&labeled, "f.toml").unwrap();
    assert_eq!(set.describe(0).label_zh(), "payments in the last hour");
    let e = FeatureSet::parse(&format!("{feature}label_zh = \" \"\n"), "f.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("f.toml:9:") && e.contains("label_zh is empty"),
        "{e}"
    );
}

fn hash_of(i: u64, seed: u64) -> u64 {
    fnv64(format!("payer-{seed}-{i}").as_bytes())
}

#[test]
fn distinct_sketch_error_within_2_percent_at_100k() {
    for seed in 0..5 {
        let mut d = EntityState::new(1);
        for i in 0..100_000u64 {
            d.distinct_insert(0, hash_of(i, seed), (i / 1000) as i64, 1000);
        }
        assert!(d.is_sketch(0));
        let est = d.distinct_count(0, 0);
        let err = (est - 100_000.0).abs() / 100_000.0;
        assert!(err <= 0.02, "seed {seed}: estimate {est}, error {err}");
        // Sliding: only the last 50 buckets (50,000 values).
        let est = d.distinct_count(0, 50);
        let err = (est - 50_000.0).abs() / 50_000.0;
        assert!(
            err <= 0.02,
            "seed {seed}: sliding estimate {est}, error {err}"
        );
    }
}

#[test]
fn distinct_in_store_switches_to_sketch() {
    let text = "[entities]\npayee = [\"payee\"]\n[[feature]]\nname = \"d\"\nentity = \"payee\"\naggregate = \"distinct\"\nof = \"payer\"\nwindow = \"1h\"\ndescription = \"d\"\n";
    let set = FeatureSet::parse(text, "t").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut s) = open(&dir, set, 10);
    let mut out = Vec::new();
    for i in 0..5000 {
        s.observe(
            &pay(i, T0 + i as i64 * 100, &format!("u{i}"), "m", 100),
            &mut out,
        )
        .unwrap();
        s.checkpoint(b"").unwrap();
        if i < 1000 {
            assert_eq!(out[0], (i + 1) as f64, "exact up to the limit");
        }
    }
    assert!((out[0] - 5000.0).abs() / 5000.0 <= 0.02, "{}", out[0]);
}

#[test]
fn sweep_deletes_expired_entities_and_discard_reverts() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut s) = open(&dir, FeatureSet::defaults(), 1);
    let mut out = Vec::new();
    s.observe(&pay(1, T0, "old", "m-old", 100), &mut out)
        .unwrap();
    s.checkpoint(b"").unwrap();
    s.observe(&pay(2, T0 + 400 * DAY_MS, "new", "m", 100), &mut out)
        .unwrap();
    s.checkpoint(b"").unwrap();
    let mut deleted = 0;
    for _ in 0..20 {
        let st = s.sweep(i64::MAX, 2).unwrap();
        deleted += st.deleted;
        if st.wrapped {
            break;
        }
    }
    assert!(deleted >= 3, "{deleted}");
    let keys: Vec<Vec<u8>> = s
        .tree()
        .iter()
        .keys()
        .map(|k| k.unwrap().to_vec())
        .collect();
    assert!(
        keys.iter().all(|k| !k.windows(3).any(|w| w == b"old")),
        "expired entities deleted"
    );

    // Changes not checkpointed leave no trace once the cache is discarded.
    let cnt = s.set().index_of("payer.count_24h").unwrap();
    s.observe(&pay(3, T0 + 400 * DAY_MS + 1, "new", "m", 100), &mut out)
        .unwrap();
    assert_eq!(out[cnt], 2.0);
    s.discard_cache();
    s.observe(&pay(4, T0 + 400 * DAY_MS + 2, "new", "m", 100), &mut out)
        .unwrap();
    assert_eq!(out[cnt], 2.0);
}

#[test]
fn calendar_and_payment_features() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut s) = open(&dir, FeatureSet::defaults(), 100);
    let set = s.set().clone();
    let ix = |n: &str| set.index_of(n).unwrap();
    let mut out = Vec::new();
    // 2025-12-31 15:59:59 UTC = 23:59:59 local (+8), a Wednesday.
    s.observe(
        &pay(1, T0 - 8 * 3_600_000 - 1000, "u", "m", 100_000),
        &mut out,
    )
    .unwrap();
    assert_eq!(out[ix("payment.hour")], 23.0);
    assert_eq!(out[ix("payment.is_round_amount")], 1.0);
    assert_eq!(out[ix("payer.daily_amount")], 100_000.0);
    assert_eq!(out[ix("payer.yearly_balance_amount")], 100_000.0);
    // Two seconds later it is 2026-01-01 00:00:01 local: new day, new year, night, Thursday.
    s.observe(&pay(2, T0 - 8 * 3_600_000 + 1000, "u", "m", 50), &mut out)
        .unwrap();
    assert_eq!(out[ix("payer.daily_amount")], 50.0);
    assert_eq!(out[ix("payer.yearly_balance_amount")], 50.0);
    assert_eq!(out[ix("payer.count_1h")], 2.0);
    assert_eq!(out[ix("payment.is_night")], 1.0);
    assert_eq!(out[ix("payment.is_weekend")], 0.0);
    assert_eq!(out[ix("payer.new_device")], 0.0);
    assert_eq!(out[ix("payer.avg_amount_30d")], 50_025.0);
    assert!((out[ix("payer.amount_vs_avg_30d")] - 50.0 / 50_025.0).abs() < 1e-12);
    // Saturday 2026-01-03 local.
    let mut p = pay(3, T0 + 2 * DAY_MS + 3_600_000, "u", "m", 50);
    p.device_id = "other".into();
    s.observe(&p, &mut out).unwrap();
    assert_eq!(out[ix("payment.is_weekend")], 1.0);
    assert_eq!(out[ix("payer.new_device")], 1.0);
    assert!(
        (out[ix("payer.days_since_first")]
            - (2.0 * DAY_MS as f64 + 8.0 * 3_600_000.0 + 1000.0 + 3_600_000.0) / DAY_MS as f64)
            .abs()
            < 1e-9
    );
}

#[test]
fn bytes_for_daily_account_year() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut s) = open(&dir, FeatureSet::defaults(), 100);
    let mut out = Vec::new();
    for d in 0..365 {
        let mut p = pay(
            d,
            T0 + d as i64 * DAY_MS + 3_600_000,
            "daily",
            &format!("m{}", d % 10),
            1234 + d as i64,
        );
        p.funding = Funding::Balance;
        s.observe(&p, &mut out).unwrap();
        s.checkpoint(b"").unwrap();
    }
    let v = s.tree().get(b"payer\x00daily").unwrap().unwrap();
    eprintln!(
        "payer state after a year of daily payments: {} bytes",
        v.len()
    );
    assert!(v.len() < 16_000, "{}", v.len());
}

#[test]
fn series_sharing() {
    let set = FeatureSet::defaults();
    let payee = set.entities.iter().find(|e| e.name == "payee").unwrap();
    let distinct = payee
        .series
        .iter()
        .filter(|s| matches!(s.kind, SeriesKind::Distinct(_)))
        .count();
    assert_eq!(
        distinct, 2,
        "1h and 24h distinct payers share one map per filter"
    );
}

const OUTCOME_FEATURES: &str = r#"
[entities]
payee = ["payee"]
payer = ["payer"]

[[feature]]
name = "payee.bad_reports_1h"
entity = "payee"
aggregate = "bad_reports"
window = "1h"
outcomes = ["FRAUD", "CHARGEBACK"]
description = "d"

[[feature]]
name = "payer.bad_reports_10m_p2p"
entity = "payer"
aggregate = "bad_reports"
window = "10m"
filter = { scene = ["P2P_TRANSFER"] }
description = "d"

[[feature]]
name = "payee.bad_rate_10m_lag5m"
entity = "payee"
aggregate = "bad_rate"
window = "10m"
lag = "5m"
description = "d"
"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Outcomes arrive interleaved, some reported "in the future"; features must equal a scan
    /// that only uses reports whose bucket ended before the payment's bucket.
    #[test]
    fn outcomes_match_brute_force(
        evs in proptest::collection::vec(ev(), 1..120),
        outs in proptest::collection::vec((any::<bool>(), 0usize..1000, 0u8..4, prop_oneof![-300i64..900, -15i64..15]), 120),
        squeeze in 1i64..10,
    ) {
        let set = FeatureSet::parse(OUTCOME_FEATURES, "o.toml").unwrap();
        let tz = set.tz_offset_ms;
        let b = |t: i64, w: i64| (t + tz).div_euclid(w);
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut store) = open(&dir, set.clone(), 3);
        let mut accepted: Vec<Payment> = Vec::new();
        // (payment, kind, reported_at)
        let mut reports: Vec<(Payment, OutcomeKind, i64)> = Vec::new();
        let mut wm: Option<i64> = None;
        let mut out = Vec::new();
        // Squeezing time puts several payments and reports into one bucket.
        let evs: Vec<Ev> = evs.into_iter().map(|e| Ev { dt_s: e.dt_s / squeeze, ..e }).collect();
        for (i, p) in to_payments(&evs, T0).into_iter().enumerate() {
            let late = wm.is_some_and(|w| p.event_time_ms < w - set.lateness_ms);
            if !late {
                let tq = p.event_time_ms - p.event_time_ms.rem_euclid(1000);
                wm = Some(wm.map_or(tq, |w| w.max(tq)));
                accepted.push(p.clone());
            }
            store.observe(&p, &mut out).unwrap();
            let t = p.event_time_ms;
            if !late {
                for (slot, def) in set.defs.iter().enumerate() {
                    let ent = set.entities.iter().find(|e| Some(&e.name) == def.entity.as_ref()).unwrap();
                    let key = |q: &Payment| ent.fields[0].value(q).map(str::to_string);
                    let Window::Sliding { len_ms, lag_ms, bucket_ms: w } = def.window else { unreachable!() };
                    let hi = b(t - lag_ms, w);
                    let lo = hi - len_ms / w + 1;
                    let now = b(t, w);
                    let mine = |q: &Payment| key(q) == key(&p) && def.filter.matches(q, tz);
                    let want = if def.aggregate == Aggregate::BadReports {
                        reports.iter().filter(|(q, k, r)| mine(q) && def.outcomes.contains(k)
                            && b(*r, w) >= lo && b(*r, w) <= hi.min(now - 1)).count() as f64
                    } else {
                        let total = accepted.iter().filter(|q| mine(q) && (lo..=hi).contains(&b(q.event_time_ms, w))).count();
                        let bad = reports.iter().filter(|(q, k, r)| mine(q) && def.outcomes.contains(k)
                            && (lo..=hi).contains(&b(q.event_time_ms, w)) && b(*r, w) < now).count();
                        if total == 0 { 0.0 } else { (bad as f64 / total as f64).min(1.0) }
                    };
                    prop_assert!((out[slot] - want).abs() < 1e-12, "{} at {}: got {} want {}", def.name, p.payment_id, out[slot], want);
                }
            }
            let (report, pick, kind, dt_s) = outs[i % outs.len()];
            if report && !accepted.is_empty() {
                let q = accepted[pick % accepted.len()].clone();
                let kind = OutcomeKind::ALL[kind as usize];
                let at = t + dt_s * 1000;
                store.record_outcome(&q, kind, at).unwrap();
                reports.push((q, kind, at));
            }
            store.checkpoint(b"").unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Closing and reopening the db, a tiny cache and sweeps never change any feature value.
    #[test]
    fn reopen_anywhere_is_invisible(evs in proptest::collection::vec(ev(), 2..120), cut in 0usize..1000, cap in 1usize..6, sweep_every in 1usize..20) {
        let events: Vec<(Payment, Option<(OutcomeKind, i64)>)> = to_payments(&evs, T0)
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let t = p.event_time_ms;
                (p, (i % 4 == 0).then_some((OutcomeKind::ALL[i % 3], t + (i as i64 % 5) * 60_000)))
            })
            .collect();
        let cut = cut % events.len();
        let a_dir = tempfile::tempdir().unwrap();
        let (_a, mut a) = open(&a_dir, FeatureSet::defaults(), 1000);
        let mut want = Vec::new();
        run(&mut a, &events, &mut want);
        let b_dir = tempfile::tempdir().unwrap();
        let mut got = Vec::new();
        {
            let (db, mut b) = open(&b_dir, FeatureSet::defaults(), cap);
            for (i, e) in events[..cut].iter().enumerate() {
                run(&mut b, std::slice::from_ref(e), &mut got);
                if i % sweep_every == 0 {
                    b.sweep(e.0.event_time_ms, 3).unwrap();
                }
            }
            db.flush().unwrap();
        }
        let (_db, mut b) = open(&b_dir, FeatureSet::defaults(), cap);
        run(&mut b, &events[cut..], &mut got);
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            prop_assert!(w.iter().zip(g).all(|(x, y)| x.to_bits() == y.to_bits()), "event {} differs", i);
        }
    }
}

/// Observes `events` with log positions from `*position` on (payment, then its outcome),
/// as the engine does; returns each payment's features.
fn run_logged(
    store: &mut FeatureStore,
    events: &[(Payment, Option<(OutcomeKind, i64)>)],
    position: &mut u64,
) -> Vec<Vec<f64>> {
    let mut outs = Vec::new();
    let mut out = Vec::new();
    for (p, outcome) in events {
        store.set_position(*position);
        *position += 1;
        store.observe(p, &mut out).unwrap();
        if let Some((k, at)) = outcome {
            store.set_position(*position);
            *position += 1;
            store.record_outcome(p, *k, *at).unwrap();
        }
        outs.push(out.clone());
    }
    outs
}

#[test]
fn a_checkpoint_cut_off_part_way_replays_to_identical_features() {
    let events = stream(3000);
    let a_dir = tempfile::tempdir().unwrap();
    let (_a_db, mut a) = open(&a_dir, FeatureSet::defaults(), 100_000);
    let want = run_logged(&mut a, &events, &mut 0);

    let b_dir = tempfile::tempdir().unwrap();
    let mut position = 0;
    let resume = {
        let (db, mut b) = open(&b_dir, FeatureSet::defaults(), 100_000);
        run_logged(&mut b, &events[..1000], &mut position);
        b.checkpoint(&position.to_be_bytes()).unwrap();
        let resume = position;
        run_logged(&mut b, &events[1000..2000], &mut position);
        let dirty = b.dirty_entities();
        assert!(dirty > 100, "{dirty} changed states");
        // The crash: half the states are on disk, the marker is not.
        b.torn_checkpoint(&position.to_be_bytes(), dirty / 2);
        db.flush().unwrap();
        resume
    };
    let (_db, mut b) = open(&b_dir, FeatureSet::defaults(), 100_000);
    assert_eq!(
        b.checkpoint_marker().unwrap().as_deref(),
        Some(&resume.to_be_bytes()[..])
    );
    // The engine's recovery: every logged event after the marker, in order.
    let mut replay_from = resume;
    run_logged(&mut b, &events[1000..2000], &mut replay_from);
    let got = run_logged(&mut b, &events[2000..], &mut replay_from);
    for (i, (w, g)) in want[2000..].iter().zip(&got).enumerate() {
        assert!(
            w.iter().zip(g).all(|(x, y)| x.to_bits() == y.to_bits()),
            "event {} differs: {w:?} vs {g:?}",
            2000 + i
        );
    }
}

/// Every stored state after a fixed stream (sketches included), hashed: the bytes a state is
/// stored as are a file format, so a state written by an older fengkong must read back. The
/// digest was taken from the per-series-vector layout the store had before 2026-11-30, with
/// the default features of then (testdata/format_features.toml: the bundled set has grown
/// since, and more features are more series, not another format).
#[test]
fn stored_state_bytes_are_stable() {
    use sha2::{Digest, Sha256};
    let text = include_str!("testdata/format_features.toml")
        .replace("distinct_exact_limit = 1000", "distinct_exact_limit = 4");
    let set = FeatureSet::parse(&text, "t").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut s) = open(&dir, set, 100_000);
    run(&mut s, &stream(2000), &mut Vec::new());
    let mut h = Sha256::new();
    for kv in s.tree().iter() {
        let (k, v) = kv.unwrap();
        h.update((k.len() as u64).to_le_bytes());
        h.update(&k);
        h.update((v.len() as u64).to_le_bytes());
        h.update(&v);
    }
    assert_eq!(
        hex::encode(h.finalize()),
        "6fa03dc13f6e06111c2074ede6091238273419db23a53e3f532c9d6fd2764a10"
    );
}

/// Payer amount profile, exact values: no history, then three equal payments, then one four
/// times larger; a 24h window forgets what is older.
#[test]
fn amount_against_the_payers_history() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut s) = open(&dir, FeatureSet::defaults(), 100);
    let set = s.set().clone();
    let ix = |n: &str| set.index_of(n).unwrap();
    let mut out = Vec::new();
    let t = T0 + 3_600_000;
    s.observe(&pay(1, t, "u", "m1", 10_000), &mut out).unwrap();
    // No history: the documented neutral values.
    assert_eq!(out[ix("payer.amount_vs_prior_avg_30d")], 1.0);
    assert_eq!(out[ix("payer.amount_above_prior_max_30d")], 0.0);
    assert_eq!(out[ix("payer.amount_robust_z_30d")], 0.0);
    assert_eq!(out[ix("payer.since_previous")], 30.0 * 86_400.0);
    assert_eq!(out[ix("payee.since_previous")], 30.0 * 86_400.0);
    assert_eq!(out[ix("payer.avg_amount_24h")], 10_000.0, "includes itself");
    s.observe(&pay(2, t + 90_000, "u", "m2", 10_000), &mut out)
        .unwrap();
    assert_eq!(out[ix("payer.since_previous")], 90.0);
    assert_eq!(
        out[ix("payer.amount_robust_z_30d")],
        0.0,
        "1 earlier payment"
    );
    s.observe(&pay(3, t + 2 * 90_000, "u", "m3", 10_000), &mut out)
        .unwrap();
    assert_eq!(
        out[ix("payer.amount_robust_z_30d")],
        0.0,
        "2 earlier payments"
    );
    // A third equal payment: three earlier payments, the same again reads 0.
    s.observe(&pay(4, t + 3 * 90_000, "u", "m1", 10_000), &mut out)
        .unwrap();
    assert_eq!(out[ix("payer.amount_robust_z_30d")], 0.0);
    assert_eq!(out[ix("payer.amount_vs_prior_avg_30d")], 1.0);
    s.observe(&pay(5, t + 4 * 90_000 + 500, "u", "m1", 40_000), &mut out)
        .unwrap();
    assert_eq!(out[ix("payer.amount_vs_prior_avg_30d")], 4.0);
    assert_eq!(out[ix("payer.amount_above_prior_max_30d")], 30_000.0);
    assert_eq!(out[ix("payer.since_previous")], 90.5);
    // log2(10000)·4 = 53.2 -> bin 53; log2(40000)·4 = 61.2 -> bin 61; MAD 0 -> one bin.
    let z = out[ix("payer.amount_robust_z_30d")];
    assert!((z - 8.0 / 1.4826).abs() < 1e-12, "{z}");
    assert_eq!(out[ix("payer.amount_robust_z_7d")], z);
    assert_eq!(out[ix("payer.avg_amount_24h")], 16_000.0);
    assert_eq!(out[ix("payer.max_amount_7d")], 40_000.0);
    // Payee m1: its earlier payments are 10000 and 10000.
    assert_eq!(out[ix("payee.amount_vs_prior_avg_30d")], 4.0);
    assert_eq!(
        out[ix("payee.amount_robust_z_30d")],
        0.0,
        "2 earlier payments"
    );
    assert_eq!(
        out[ix("payee.since_previous")],
        90.5,
        "m1's previous payment was p4"
    );
    // Two days later the 24h window is empty again, the 30d one is not.
    s.observe(&pay(6, t + 2 * DAY_MS, "u", "m1", 20_000), &mut out)
        .unwrap();
    assert_eq!(out[ix("payer.amount_vs_prior_avg_24h")], 1.0);
    assert_eq!(out[ix("payer.amount_above_prior_max_24h")], 0.0);
    assert_eq!(
        out[ix("payer.amount_vs_prior_avg_30d")],
        20_000.0 / 16_000.0
    );
    assert_eq!(out[ix("payer.amount_above_prior_max_30d")], -20_000.0);
    // Bins 53, 53, 53, 53, 61 -> median 53, MAD 0 -> 1; 20000 is bin 57.
    assert!((out[ix("payer.amount_robust_z_30d")] - 4.0 / 1.4826).abs() < 1e-12);
    assert_eq!(
        out[ix("payer.since_previous")],
        (2 * DAY_MS - 4 * 90_000 - 500) as f64 / 1000.0
    );
    s.checkpoint(b"").unwrap();
}

/// A small file: payee outcome counts and rates at a 2-day label delay, lagged and not, and
/// a category rate smoothed towards the overall one.
const DELAYED_OUTCOME_FEATURES: &str = r#"
[settings]
label_delay = "2d"

[entities]
payee = ["payee"]
all = []
category = ["merchant_category"]

[[feature]]
name = "payee.bad_1d_delayed"
entity = "payee"
aggregate = "bad_count"
window = "1d"
lag = "label_delay"
description = "d"

[[feature]]
name = "payee.bad_1d"
entity = "payee"
aggregate = "bad_count"
window = "1d"
description = "d"

[[feature]]
name = "payee.rate_1d_delayed"
entity = "payee"
aggregate = "bad_rate"
window = "1d"
lag = "label_delay"
description = "d"

[[feature]]
name = "all.rate_1d_delayed"
entity = "all"
aggregate = "bad_rate"
window = "1d"
lag = "label_delay"
description = "d"

[[feature]]
name = "category.rate_1d_delayed"
entity = "category"
aggregate = "bad_rate"
window = "1d"
lag = "label_delay"
smooth = { toward = "all.rate_1d_delayed", weight = 4 }
description = "d"
"#;

#[test]
fn outcome_counts_respect_the_label_delay_and_never_see_the_future() {
    let set = FeatureSet::parse(DELAYED_OUTCOME_FEATURES, "o.toml").unwrap();
    assert_eq!(set.label_delay_ms(), 2 * DAY_MS);
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut s) = open(&dir, set.clone(), 100);
    let ix = |n: &str| set.index_of(n).unwrap();
    let mut out = Vec::new();
    // Day 0, 10:00 local: four payments to m; two turn out bad.
    let day0 = T0 + 2 * 3_600_000; // 10:00 local
    let ps: Vec<Payment> = (0..4)
        .map(|i| pay(i, day0 + i as i64 * 60_000, &format!("u{i}"), "m", 100))
        .collect();
    for p in &ps {
        s.observe(p, &mut out).unwrap();
    }
    // Reported 5 hours later (day 0, 15:00), and one reported only on day 3 at 12:00.
    s.record_outcome(&ps[0], OutcomeKind::Fraud, day0 + 5 * 3_600_000)
        .unwrap();
    s.record_outcome(
        &ps[1],
        OutcomeKind::Chargeback,
        day0 + 3 * DAY_MS + 2 * 3_600_000,
    )
    .unwrap();
    s.record_outcome(&ps[2], OutcomeKind::Genuine, day0 + 5 * 3_600_000)
        .unwrap();
    let at = |s: &mut FeatureStore, id: u64, t: i64, payee: &str, out: &mut Vec<f64>| {
        s.observe(&pay(id, t, "x", payee, 100), out).unwrap();
    };
    // Day 0, 15:05: the report's 10-minute bucket (15:00-15:10) has not ended.
    at(&mut s, 10, day0 + 5 * 3_600_000 + 5 * 60_000, "m", &mut out);
    assert_eq!(out[ix("payee.bad_1d")], 0.0, "report bucket not complete");
    // 15:10: it has; the unlagged count sees it, the lagged one not (day 0 is not 2 days back).
    at(
        &mut s,
        11,
        day0 + 5 * 3_600_000 + 10 * 60_000,
        "m",
        &mut out,
    );
    assert_eq!(out[ix("payee.bad_1d")], 1.0);
    assert_eq!(out[ix("payee.bad_1d_delayed")], 0.0);
    assert_eq!(out[ix("payee.rate_1d_delayed")], 0.0);
    // Day 2, 10:03: the lagged 1d window covers day 0 10:00-ish payments; the chargeback of
    // payment 1 is reported on day 3, so it does not count yet.
    let d2 = day0 + 2 * DAY_MS + 3 * 60_000;
    at(&mut s, 12, d2, "m", &mut out);
    assert_eq!(out[ix("payee.bad_1d_delayed")], 1.0);
    assert_eq!(
        out[ix("payee.bad_1d")],
        0.0,
        "day 0 is out of the unlagged window"
    );
    // The lagged window ends with day 0's 10:00-10:10 bucket: the 4 payments, not p10/p11.
    assert_eq!(out[ix("payee.rate_1d_delayed")], 1.0 / 4.0);
    // Day 3, 12:10: the chargeback is in, but payment 1 has left the lagged window
    // (day 1 12:10 - 1d ... day 1 12:10).
    at(
        &mut s,
        13,
        day0 + 3 * DAY_MS + 2 * 3_600_000 + 10 * 60_000,
        "m",
        &mut out,
    );
    assert_eq!(out[ix("payee.bad_1d_delayed")], 0.0);
    s.checkpoint(b"").unwrap();

    // The smoothed category rate on a fresh store: category A has 2 payments, 1 bad; the
    // whole stream 10, 1 bad.
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut s) = open(&dir, set.clone(), 100);
    let mut first = Vec::new();
    for i in 0..10 {
        let mut p = pay(100 + i, day0 + i as i64 * 1000, "u", &format!("m{i}"), 100);
        p.payee.merchant_category = if i < 2 { "A".into() } else { "B".into() };
        s.observe(&p, &mut out).unwrap();
        first.push(p);
    }
    s.record_outcome(&first[0], OutcomeKind::Fraud, day0 + 3_600_000)
        .unwrap();
    let mut p = pay(200, day0 + 2 * DAY_MS, "u", "m0", 100);
    p.payee.merchant_category = "A".into();
    s.observe(&p, &mut out).unwrap();
    assert_eq!(out[ix("all.rate_1d_delayed")], 0.1);
    let want = (1.0 + 4.0 * 0.1) / (2.0 + 4.0);
    assert!((out[ix("category.rate_1d_delayed")] - want).abs() < 1e-12);
    // A category never seen reads the prior, not 0.
    p.payee.merchant_category = "NEW".into();
    p.payment_id = "p201".into();
    s.observe(&p, &mut out).unwrap();
    assert!((out[ix("category.rate_1d_delayed")] - 0.1).abs() < 1e-12);
    s.checkpoint(b"").unwrap();
}

#[test]
fn code_features_are_stable_categorical_codes() {
    let set = FeatureSet::defaults();
    let slots = set.categorical_slots();
    let names: Vec<&str> = slots.iter().map(|&i| set.names()[i].as_str()).collect();
    assert_eq!(
        names,
        [
            "payment.merchant_category_code",
            "payment.channel_code",
            "payment.scene_code",
            "payment.funding_code",
            "payment.city_code"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut s) = open(&dir, set.clone(), 100);
    let mut out = Vec::new();
    s.observe(&pay(1, T0, "u", "m", 100), &mut out).unwrap();
    let code = out[set.index_of("payment.merchant_category_code").unwrap()];
    assert_eq!(code, super::spec::category_code("5411"));
    assert_eq!(code, code.trunc(), "a whole number");
    assert!(code > 0.0 && code < 2f64.powi(53));
    assert_eq!(
        out[set.index_of("payment.city_code").unwrap()],
        0.0,
        "no city"
    );
    assert_eq!(
        out[set.index_of("payment.channel_code").unwrap()],
        super::spec::category_code("ALIPAY")
    );
    // The same value gives the same code in any process: the hash is not seeded.
    assert_eq!(super::spec::category_code("5411"), 7_129_830_692_952_991.0);
}

#[test]
fn new_aggregates_reject_what_they_cannot_mean() {
    let base = "[entities]\npayer = [\"payer\"]\nall = []\n[[feature]]\nname = \"all.r\"\nentity = \"all\"\naggregate = \"bad_rate\"\nwindow = \"1d\"\ndescription = \"d\"\n";
    let with = |extra: &str| FeatureSet::parse(&format!("{base}{extra}"), "f.toml");
    let e = with("[[feature]]\nname = \"x\"\nentity = \"payer\"\naggregate = \"bad_rate\"\nwindow = \"1d\"\nsmooth = { toward = \"nope\", weight = 5 }\ndescription = \"d\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown feature `nope`"), "{e}");
    let e = with("[[feature]]\nname = \"x\"\nentity = \"payer\"\naggregate = \"count\"\nwindow = \"1d\"\nsmooth = { toward = \"all.r\", weight = 5 }\ndescription = \"d\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("only for bad_rate"), "{e}");
    let e = with("[[feature]]\nname = \"x\"\nentity = \"payer\"\naggregate = \"since_previous\"\nwindow = \"1d\"\nlag = \"1h\"\ndescription = \"d\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("takes no lag"), "{e}");
    let e = with("[[feature]]\nname = \"x\"\naggregate = \"code\"\ndescription = \"d\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("need `of`"), "{e}");
    let e = FeatureSet::parse("[settings]\nlabel_delay = \"soon\"\n[entities]\n", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("f.toml:2:") && e.contains("label_delay"),
        "{e}"
    );
    // Without the setting the delay is 7 days.
    let set = with("[[feature]]\nname = \"x\"\nentity = \"payer\"\naggregate = \"bad_count\"\nwindow = \"1d\"\nlag = \"label_delay\"\ndescription = \"d\"\n").unwrap();
    assert_eq!(set.label_delay_ms(), 7 * DAY_MS);
    assert!(matches!(
        set.describe(1).window,
        Window::Sliding { lag_ms, .. } if lag_ms == 7 * DAY_MS
    ));
}
