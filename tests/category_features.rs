//! The categorical and outcome features on a scenario with known fraud rates, through the
//! commands an analyst runs: a hand-built CSV where merchant category A is 20% fraud, B 5%,
//! C never, and R is rare and always fraud, replayed with `fengkong replay --out`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::Command;

const DAY_MS: i64 = 86_400_000;
/// 2026-03-01T00:00:00Z
const START_MS: i64 = 1_772_323_200_000;
const DAYS: i64 = 21;

/// One row per payment: id, time, payer, payee, amount, label, category. 60 payments a day in
/// each of A, B and C; R every third day. Labels become known 7 days later (`--label-delay`).
fn scenario() -> (String, HashMap<String, (i64, &'static str)>) {
    let mut csv = String::from(
        "payment_id,event_time,payer_id,payee_id,amount_fen,label,merchant_category\n",
    );
    let mut rows = HashMap::new();
    let mut id = 0u64;
    for day in 0..DAYS {
        for slot in 0..60i64 {
            for (c, category) in ["A", "B", "C"].into_iter().enumerate() {
                let n = day * 60 + slot;
                let fraud = match category {
                    "A" => n % 5 == 0,
                    "B" => n % 20 == 0,
                    _ => false,
                };
                let t = START_MS + day * DAY_MS + slot * 1_400_000 + c as i64 * 1000;
                id += 1;
                let payer = (id * 7919) % 400;
                writeln!(
                    csv,
                    "p{id},{t},u{payer},m{category}{},{},{},{category}",
                    n % 4,
                    1_000 + (id % 50) * 100,
                    u8::from(fraud)
                )
                .unwrap();
                rows.insert(format!("p{id}"), (t, category));
            }
        }
        if day % 3 == 1 {
            id += 1;
            let t = START_MS + day * DAY_MS + 43_200_000;
            writeln!(csv, "p{id},{t},rare{day},mR,50000,1,R").unwrap();
            rows.insert(format!("p{id}"), (t, "R"));
        }
    }
    (csv, rows)
}

#[test]
fn category_fraud_rates_separate_the_categories_and_never_see_the_future() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.csv");
    let out = dir.path().join("features.csv");
    let (csv, rows) = scenario();
    std::fs::write(&events, csv).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_fengkong"))
        .args(["replay", "--label-delay", "7d", "--events"])
        .arg(&events)
        .arg("--out")
        .arg(&out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let mut reader = csv::Reader::from_path(&out).unwrap();
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (rate, prior, code, payee_known) = (
        col("category.fraud_rate_30d_delayed"),
        col("all.fraud_rate_30d_delayed"),
        col("payment.merchant_category_code"),
        col("payee.fraud_count_30d"),
    );
    let mut codes: HashMap<&str, String> = HashMap::new();
    let mut late: HashMap<&str, Vec<(f64, f64)>> = HashMap::new();
    for record in reader.records() {
        let r = record.unwrap();
        let (t, category) = rows[&r[0]];
        let value = |i: usize| r[i].parse::<f64>().unwrap();
        // One code per category, a different one for each.
        let c = codes.entry(category).or_insert_with(|| r[code].to_string());
        assert_eq!(*c, r[code], "{category}");
        if t < START_MS + 7 * DAY_MS {
            // No label is known before its 7 days have passed: nothing may count it.
            assert_eq!(
                value(rate),
                0.0,
                "{} on day {}",
                &r[0],
                (t - START_MS) / DAY_MS
            );
            assert_eq!(value(payee_known), 0.0, "{}", &r[0]);
        }
        if t >= START_MS + 14 * DAY_MS {
            late.entry(category)
                .or_default()
                .push((value(rate), value(prior)));
        }
    }
    let mut distinct: Vec<&String> = codes.values().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{codes:?}");

    let mean = |c: &str| {
        let v = &late[c];
        v.iter().map(|x| x.0).sum::<f64>() / v.len() as f64
    };
    let (a, b, c, rare) = (mean("A"), mean("B"), mean("C"), mean("R"));
    let overall = late["A"][0].1;
    eprintln!("smoothed rates: A {a:.4} B {b:.4} C {c:.4} R {rare:.4}, overall {overall:.4}");
    // The overall share over the lagged window: (20% + 5% + 0%) / 3 plus a few rare frauds.
    assert!((overall - 0.0833).abs() < 0.01, "{overall}");
    // Each category near its own rate, pulled a little towards the overall one (100
    // payments' weight against 420 to 1,300 of its own).
    assert!((0.15..0.21).contains(&a), "A {a}");
    assert!((0.04..0.07).contains(&b), "B {b}");
    assert!(c < 0.03, "C {c}");
    // Every single payment ranks the categories the same way.
    for ((x, y), z) in late["A"].iter().zip(&late["B"]).zip(&late["C"]) {
        assert!(x.0 > y.0 && y.0 > z.0, "{x:?} {y:?} {z:?}");
    }
    // A handful of payments, all fraud, is not a 100% category: it reads near the overall.
    assert!(rare < 0.15 && (rare - overall).abs() < 0.05, "R {rare}");
}

/// Payments whose only signal is their merchant category (each from a payer and to a payee
/// of its own, all of one amount): `X` always fraud, `Y` never.
fn category_only_scenario() -> String {
    let mut csv = String::from(
        "payment_id,event_time,payer_id,payee_id,amount_fen,label,merchant_category\n",
    );
    for i in 0..3_000i64 {
        let category = if i % 10 == 0 { "X" } else { "Y" };
        let t = START_MS + i * 600_000;
        writeln!(
            csv,
            "q{i},{t},payer{i},payee{i},5000,{},{category}",
            u8::from(category == "X")
        )
        .unwrap();
    }
    csv
}

/// A model trained by `fengkong train` encodes the category code, and a merchant reads the
/// factor as the category itself, never as its number.
#[tokio::test]
async fn a_category_factor_reads_as_the_category() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.csv");
    let model = dir.path().join("model.json");
    std::fs::write(&events, category_only_scenario()).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_fengkong"))
        .args(["train", "--algo", "logistic", "--train-from", "2026-03-01"])
        .args([
            "--train-to",
            "2026-03-18",
            "--label-delay",
            "7d",
            "--events",
        ])
        .arg(&events)
        .arg("--out")
        .arg(&model)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let artifact: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&model).unwrap()).unwrap();
    let names = artifact["feature_names"].as_array().unwrap();
    let coded: Vec<&str> = artifact["categorical"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            names[c["feature"].as_u64().unwrap() as usize]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(
        coded.contains(&"payment.merchant_category_code"),
        "{coded:?}"
    );

    let data = tempfile::tempdir().unwrap();
    let server = common::TestServer::start_with(fengkong::config::Config {
        data_dir: data.path().to_owned(),
        model_path: Some(model.clone()),
        ..fengkong::config::Config::default()
    })
    .await;
    let mut client = server.client().await;
    let mut request = common::payment("explain-x");
    request.payee.as_mut().unwrap().merchant_category = "X".into();
    let response = client.score(request).await.unwrap().into_inner();
    let factors: Vec<&fengkong::proto::Reason> = response
        .reasons
        .iter()
        .filter(|r| r.source() == fengkong::proto::ReasonSource::Model)
        .collect();
    let category = factors
        .iter()
        .find(|r| r.id == "payment.merchant_category_code")
        .unwrap_or_else(|| panic!("the category is a top factor: {factors:#?}"));
    assert_eq!(
        category.message,
        "merchant category: X (raises the fraud probability)"
    );
    assert_eq!(category.message_zh, "商户类别：X（提高欺诈概率）");
    assert_eq!(category.evidence[0].text, "X");
    assert_eq!(category.evidence[0].unit, "text");
    server.stop().await;
}
