//! A `ListDecisions` page from the search indexes of a store holding many decisions: the
//! page must cost the same whatever the store holds (it is one backward range scan and
//! `page_size` record reads), so the number to watch is flat as `SEARCH_DECISIONS` grows.
//! Records are written through `DecisionStore::insert_payment`, as a Score writes them;
//! `SEARCH_DECISIONS` (default 200,000: minutes to fill, not hours; at least 100,000, so
//! each account has a full page) sets their number.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use fengkong::proto::{self, Action, Decision, ScoreRequest, ScoreResponse};
use fengkong::search::Query;
use fengkong::store::{decision_id, DecisionStore};

const FEATURES: usize = 40;

fn decision(seq: u64) -> Decision {
    // 20,000 payers, 2,000 payees; one in ten reviewed.
    let action = if seq.is_multiple_of(10) {
        Action::Review
    } else {
        Action::Allow
    };
    Decision {
        response: Some(ScoreResponse {
            decision_id: decision_id(seq),
            payment_id: format!("pay-{seq}"),
            action: action as i32,
            risk_score: (seq % 100) as u32,
            ..ScoreResponse::default()
        }),
        request: Some(ScoreRequest {
            payment_id: format!("pay-{seq}"),
            event_time_ms: 1_764_000_000_000 + seq as i64 * 50,
            amount_fen: 1_000 + (seq % 9_000) as i64,
            payer: Some(proto::Payer {
                account_id: format!("payer-{}", seq % 20_000),
                ..proto::Payer::default()
            }),
            payee: Some(proto::Payee {
                account_id: format!("shop-{}", seq % 2_000),
                ..proto::Payee::default()
            }),
            ..ScoreRequest::default()
        }),
        feature_set_version: "bench".into(),
        ..Decision::default()
    }
}

fn search(c: &mut Criterion) {
    let count: u64 = std::env::var("SEARCH_DECISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let store = DecisionStore::open(&db).unwrap();
    let names: Vec<String> = (0..FEATURES).map(|i| format!("f.{i}")).collect();
    store.register_feature_set("bench", &names).unwrap();
    let values = vec![1.0; FEATURES];
    for seq in 0..count {
        store.insert_payment(seq, &decision(seq), &values).unwrap();
    }
    let page = |query: Query| {
        let (found, _) = store.list(&query).unwrap();
        assert_eq!(found.len(), 50);
    };
    let mut group = c.benchmark_group(format!("list_decisions_of_{count}"));
    group.bench_function("account_page_50", |b| {
        b.iter(|| {
            page(Query {
                account: Some("shop-7".into()),
                page_size: 50,
                ..Query::default()
            })
        })
    });
    group.bench_function("reviewed_of_account_page_50", |b| {
        b.iter(|| {
            page(Query {
                account: Some("shop-10".into()),
                action: Some(Action::Review),
                page_size: 50,
                ..Query::default()
            })
        })
    });
    group.bench_function("newest_page_50", |b| {
        b.iter(|| {
            page(Query {
                page_size: 50,
                ..Query::default()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, search);
criterion_main!(benches);
