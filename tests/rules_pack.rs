//! End-to-end tests of the rule engine over the bundled pack: no allocation on
//! the quiet path, shadow hits never change the decision, messages render.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;

use fengkong::rules::{Action, Mode, RuleSet, Schema, Type, Value};
use proptest::prelude::*;

// Counts allocations per thread, so tests running in parallel do not interfere.
struct Counting;
thread_local! {
    static ALLOCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

fn pack() -> (Schema, RuleSet) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("rules");
    let schema = fengkong::vars::schema(&fengkong::features::FeatureSet::defaults());
    let rs = RuleSet::load_dir(&dir, &schema).unwrap_or_else(|e| panic!("{e}"));
    (schema, rs)
}

fn zero_vars(s: &Schema) -> Vec<Value<'static>> {
    s.vars().iter().map(|v| Value::zero(v.ty)).collect()
}

#[test]
fn quiet_path_does_not_allocate() {
    let (s, rs) = pack();
    let mut vars = zero_vars(&s);
    vars[s.slot("scene").unwrap()] = Value::Str("MERCHANT_STATIC_CODE");
    vars[s.slot("payer.account_id").unwrap()] = Value::Str("acct-alice");
    vars[s.slot("payment.amount_fen").unwrap()] = Value::Num(3200.0);
    let mut hits = Vec::with_capacity(8);
    let before = ALLOCS.with(|c| c.get());
    for _ in 0..100 {
        rs.evaluate(&vars, 1_795_867_200_000, &mut hits);
    }
    let after = ALLOCS.with(|c| c.get());
    assert!(hits.is_empty());
    assert_eq!(after - before, 0, "evaluate allocated on the quiet path");
}

#[test]
fn hit_carries_evidence_and_renders_message() {
    let (s, rs) = pack();
    let mut vars = zero_vars(&s);
    vars[s.slot("payee.kind").unwrap()] = Value::Str("PERSONAL");
    vars[s.slot("payee.distinct_payers_1h").unwrap()] = Value::Num(37.0);
    let mut hits = Vec::new();
    rs.evaluate(&vars, 0, &mut hits);
    assert_eq!(hits.len(), 1);
    let h = &hits[0];
    assert_eq!(&*h.id, "rent_code_many_payers");
    assert_eq!(h.action, Action::Review);
    assert_eq!(&*h.reason_code, "RENT_CODE");
    assert_eq!(h.slots.len(), 2);
    assert!(h.slots.contains(&(s.slot("payee.kind").unwrap() as u32)));
    assert_eq!(&*h.params[0].0, "rent_code_payers_1h");
    assert_eq!(h.params[0].1, 30.0);
    assert_eq!(
        rs.render_message(h, &vars),
        "37 different payers in the last hour (limit 30)"
    );
    assert_eq!(
        rs.render_message_zh(h, &vars),
        "在过去1小时内收到 37 位不同付款人的付款（上限 30）"
    );
    let v = rs.decide(&hits, 0.0);
    assert_eq!(v.action, Action::Review);
    assert_eq!(v.risk_score, 40.0);
}

#[test]
fn eval_errors_are_recorded_not_fired_and_send_the_payment_to_review() {
    let s = fengkong::vars::schema(&fengkong::features::FeatureSet::defaults());
    let files = vec![(
        "a.toml".to_string(),
        "[[rule]]\nid = \"ratio\"\nwhen = 'payer.amount_1h / payer.avg_amount_30d > 10'\naction = \"block\"\nreason_code = \"R\"\nmessage = \"m\"\n".to_string(),
    )];
    let rs = RuleSet::from_sources(&files, &s).unwrap();
    let vars = zero_vars(&s);
    let mut hits = Vec::new();
    rs.evaluate(&vars, 0, &mut hits);
    assert_eq!(hits.len(), 1);
    assert!(!hits[0].fired());
    assert_eq!(
        hits[0].error.map(|e| e.to_string()).as_deref(),
        Some("division by zero")
    );
    // A block rule that could not be evaluated holds the payment for review (the default
    // `[policy] on_rule_error`), never a silent allow.
    assert_eq!(rs.decide(&hits, 0.0).action, Action::Review);
    // A short variable slice is an error too, never a panic.
    hits.clear();
    rs.evaluate(&[], 0, &mut hits);
    assert!(hits[0].error.is_some());
}

#[test]
fn hostile_toml_does_not_overflow_the_stack() {
    let s = fengkong::vars::schema(&fengkong::features::FeatureSet::defaults());
    for text in [
        format!("a = {}", "[".repeat(100_000)),
        format!("a = {}", "{ b = ".repeat(50_000)),
        "[[rule]]\nwhen = '".to_string() + &"(".repeat(100_000) + "'\n",
    ] {
        let files = vec![("a.toml".to_string(), text)];
        assert!(RuleSet::from_sources(&files, &s).is_err());
    }
}

fn arb_vars(s: &Schema) -> impl Strategy<Value = Vec<(usize, f64, usize, bool)>> {
    let n = s.len();
    proptest::collection::vec(
        (
            0..n,
            prop_oneof![0.0..5.0f64, 0.0..100.0f64, 0.0..30_000_000.0f64, Just(1.0)],
            0..8usize,
            any::<bool>(),
        ),
        0..40,
    )
}

const STRS: &[&str] = &[
    "PERSONAL",
    "MERCHANT",
    "CREDIT_CARD",
    "BALANCE",
    "MERCHANT_STATIC_CODE",
    "WITHDRAWAL",
    "acct-mule-0001",
    "5541",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn shadow_hits_never_change_the_decision(set in arb_vars(&fengkong::vars::schema(&fengkong::features::FeatureSet::defaults())), model in 0.0..100.0f64) {
        let (s, rs) = pack();
        let mut vars = zero_vars(&s);
        for (slot, num, si, b) in set {
            vars[slot] = match s.vars()[slot].ty {
                Type::Num => Value::Num(num.round()),
                Type::Str => Value::Str(STRS[si % STRS.len()]),
                Type::Bool => Value::Bool(b),
            };
        }
        let mut hits = Vec::new();
        rs.evaluate(&vars, 1_795_867_200_000, &mut hits);
        let with = rs.decide(&hits, model);
        let active: Vec<_> = hits.iter().filter(|h| h.mode == Mode::Active).cloned().collect();
        let without = rs.decide(&active, model);
        prop_assert_eq!(with.action, without.action);
        prop_assert_eq!(with.risk_score, without.risk_score);
        prop_assert!((0.0..=100.0).contains(&with.risk_score));
        for h in &hits {
            let m = rs.render_message(h, &vars);
            prop_assert!(!m.is_empty() && !m.contains('{'), "{}", m);
        }
    }
}
