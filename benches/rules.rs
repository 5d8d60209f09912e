//! Criterion bench: the bundled pack (>= 30 rules) evaluated for one payment.
//! Target: median <= 5 µs per payment for `evaluate`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use fengkong::rules::{RuleSet, Schema, Type, Value};

fn typical<'a>(s: &Schema, set: &[(&str, Value<'a>)]) -> Vec<Value<'a>> {
    let mut vars: Vec<Value> = s.vars().iter().map(|v| Value::zero(v.ty)).collect();
    for (name, v) in set {
        if let Some(slot) = s.slot(name) {
            vars[slot] = *v;
        }
    }
    vars
}

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("rules");
    let schema = fengkong::vars::schema(&fengkong::features::FeatureSet::defaults());
    let rs = match RuleSet::load_dir(&dir, &schema) {
        Ok(rs) => rs,
        Err(e) => panic!("{e}"),
    };
    assert!(rs.rules().len() >= 30);
    let _ = Type::Num;

    // A typical static-code payment at a shop: nothing fires.
    let quiet = typical(
        &schema,
        &[
            ("payment_id", Value::Str("pay-20261128-000001")),
            ("channel", Value::Str("WECHAT_PAY")),
            ("scene", Value::Str("MERCHANT_STATIC_CODE")),
            ("funding", Value::Str("DEBIT_CARD")),
            ("currency", Value::Str("CNY")),
            ("payer.account_id", Value::Str("acct-4f2a9c")),
            ("payee.account_id", Value::Str("merchant-cafe-7")),
            ("payee.kind", Value::Str("MERCHANT")),
            ("payee.merchant_category", Value::Str("5814")),
            ("device_id", Value::Str("dev-81be")),
            ("ip", Value::Str("10.1.2.3")),
            ("card_fingerprint", Value::Str("card-fp-77")),
            ("city_code", Value::Str("310000")),
            ("payer.real_name_verified", Value::Bool(true)),
            ("payer.account_age_days", Value::Num(900.0)),
            ("payment.amount_fen", Value::Num(3200.0)),
            ("payment.hour", Value::Num(9.0)),
            ("payer.amount_vs_avg_30d", Value::Num(0.8)),
            ("payer.count_1h", Value::Num(1.0)),
            ("payer.count_24h", Value::Num(3.0)),
            ("payer.count_30d", Value::Num(60.0)),
            ("payer.avg_amount_30d", Value::Num(4000.0)),
            ("payer.max_amount_30d", Value::Num(38000.0)),
            ("payer.daily_static_code_amount", Value::Num(1500.0)),
            ("payer.yearly_balance_amount", Value::Num(3500000.0)),
            ("payee.count_1h", Value::Num(14.0)),
            ("payee.distinct_payers_1h", Value::Num(12.0)),
            ("payee.distinct_payers_24h", Value::Num(140.0)),
            ("device.distinct_payers_24h", Value::Num(1.0)),
            ("ip.distinct_payers_24h", Value::Num(2.0)),
            ("pair.count_24h", Value::Num(1.0)),
        ],
    );
    // A rented personal code at night: three rules fire.
    let mut risky = quiet.clone();
    for (n, v) in [
        ("payee.kind", Value::Str("PERSONAL")),
        ("payment.is_night", Value::Num(1.0)),
        ("payee.count_1h", Value::Num(40.0)),
        ("payee.distinct_payers_1h", Value::Num(40.0)),
        ("payee.distinct_payers_24h", Value::Num(200.0)),
    ] {
        if let Some(slot) = schema.slot(n) {
            risky[slot] = v;
        }
    }
    let now = 1_795_867_200_000;
    let mut hits = Vec::with_capacity(16);

    c.bench_function("evaluate_default_pack_quiet", |b| {
        b.iter(|| {
            hits.clear();
            rs.evaluate(black_box(&quiet), now, &mut hits);
            black_box(hits.len())
        })
    });
    c.bench_function("evaluate_default_pack_3_hits", |b| {
        b.iter(|| {
            hits.clear();
            rs.evaluate(black_box(&risky), now, &mut hits);
            black_box(hits.len())
        })
    });
    c.bench_function("evaluate_and_decide_3_hits", |b| {
        b.iter(|| {
            hits.clear();
            rs.evaluate(black_box(&risky), now, &mut hits);
            black_box(rs.decide(&hits, 12.0).action)
        })
    });
    c.bench_function("load_default_pack", |b| {
        b.iter(|| RuleSet::load_dir(black_box(&dir), &schema).map(|r| r.rules().len()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
