//! Model tests: ranking quality on nonlinear synthetic fraud, attribution identity, artifact
//! round trip and every way a model file can be refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod model_support;

use std::sync::OnceLock;

use fengkong::model::{train, Algo, ModelArtifact, ModelError, TrainParams, FORMAT_VERSION};
use model_support::{average_precision, names, synthetic};
use proptest::prelude::*;

const COLS: usize = 12;

fn params(algo: Algo) -> TrainParams {
    TrainParams {
        algo: Some(algo),
        trees: 60,
        // Two depths keep the debug-build suite quick; the search itself is what is tested.
        gbdt: fengkong::model::GbdtParams {
            max_depths: vec![3, 5],
            ..Default::default()
        },
        validation_fraction: 0.2,
        training_period: fengkong::model::TrainingPeriod {
            from_ms: 1_700_000_000_000,
            to_ms: 1_700_086_400_000,
        },
        created_at_ms: 1_700_100_000_000,
        ..TrainParams::default()
    }
}

fn trained(algo: Algo) -> &'static ModelArtifact {
    static LR: OnceLock<ModelArtifact> = OnceLock::new();
    static RF: OnceLock<ModelArtifact> = OnceLock::new();
    static GB: OnceLock<ModelArtifact> = OnceLock::new();
    let cell = match algo {
        Algo::Logistic => &LR,
        Algo::Forest => &RF,
        Algo::Gbdt => &GB,
    };
    cell.get_or_init(|| {
        let (x, y) = synthetic(40_000, COLS, 1);
        let mut log = Vec::new();
        let a = train(&x, &y, &names(COLS), &params(algo), &mut |m| {
            log.push(m.to_string())
        })
        .unwrap();
        assert!(log.len() >= 3, "progress was reported: {log:?}");
        a
    })
}

fn held_out() -> &'static (ndarray::Array2<f64>, Vec<bool>) {
    static T: OnceLock<(ndarray::Array2<f64>, Vec<bool>)> = OnceLock::new();
    T.get_or_init(|| synthetic(30_000, COLS, 2))
}

fn scores(a: &ModelArtifact) -> Vec<f64> {
    let s = a.scorer();
    let mut c = vec![0.0; COLS];
    let (x, _) = held_out();
    x.rows()
        .into_iter()
        .map(|r| s.score(r.as_slice().unwrap(), &mut c))
        .collect()
}

#[test]
fn every_model_ranks_fraud_and_trees_win_on_nonlinear_data() {
    let (_, y) = held_out();
    let base = y.iter().filter(|&&b| b).count() as f64 / y.len() as f64;
    let ap_lr = average_precision(&scores(trained(Algo::Logistic)), y);
    let ap_rf = average_precision(&scores(trained(Algo::Forest)), y);
    let ap_gb = average_precision(&scores(trained(Algo::Gbdt)), y);
    eprintln!("base rate {base:.4}, AP logistic {ap_lr:.4}, forest {ap_rf:.4}, gbdt {ap_gb:.4}");
    assert!(base > 0.01 && base < 0.1, "base rate {base}");
    assert!(ap_lr > 2.0 * base, "logistic AP {ap_lr} vs base {base}");
    for (name, ap) in [("forest", ap_rf), ("gbdt", ap_gb)] {
        assert!(ap > 4.0 * base, "{name} AP {ap} vs base {base}");
        assert!(
            ap > ap_lr + 0.05,
            "{name} {ap} should beat logistic {ap_lr}"
        );
    }
}

#[test]
fn without_an_algo_every_learner_is_tried_and_the_best_holdout_ap_is_kept() {
    let (x, y) = synthetic(12_000, COLS, 12);
    let p = TrainParams {
        algo: None,
        trees: 20,
        ..params(Algo::Forest)
    };
    let a = train(&x, &y, &names(COLS), &p, &mut |_| {}).unwrap();
    let tried: Vec<Algo> = a.candidates.iter().map(|c| c.algo).collect();
    assert_eq!(tried, Algo::ALL.to_vec());
    let best = a
        .candidates
        .iter()
        .max_by(|l, r| l.average_precision.total_cmp(&r.average_precision))
        .unwrap();
    assert_eq!(a.algo, best.algo);
    assert_eq!(
        a.validation_metrics["average_precision"],
        best.average_precision
    );
    let table = fengkong::model::candidates_table(&a);
    assert_eq!(table.lines().count(), 2 + Algo::ALL.len(), "{table}");
    assert!(table.contains(&format!("* {}", a.algo.name())), "{table}");
}

#[test]
fn probabilities_are_roughly_calibrated() {
    // Platt scaling on the holdout: the mean score should be near the base rate (class
    // weights would otherwise put it far above), on the holdout and on new data.
    for algo in Algo::ALL {
        let a = trained(algo);
        let m = a.validation_metrics["mean_score"];
        let b = a.validation_metrics["base_rate"];
        eprintln!(
            "{algo:?}: mean score {m:.4}, base rate {b:.4}, {:?}",
            a.validation_metrics
        );
        assert!(m > b / 1.5 && m < b * 1.5, "{algo:?}: mean {m} vs base {b}");
        let (_, y) = held_out();
        let new_mean = scores(a).iter().sum::<f64>() / y.len() as f64;
        let new_base = y.iter().filter(|&&l| l).count() as f64 / y.len() as f64;
        assert!(
            new_mean > new_base / 1.5 && new_mean < new_base * 1.5,
            "{algo:?}: held-out mean {new_mean} vs base {new_base}"
        );
    }
}

#[test]
fn contributions_plus_base_equal_raw_log_odds() {
    let (x, _) = held_out();
    for algo in Algo::ALL {
        let s = trained(algo).scorer();
        let mut c = vec![0.0; COLS];
        for r in x.rows().into_iter().take(500) {
            let f = r.as_slice().unwrap();
            let raw = s.raw_score(f, &mut c);
            let sum = s.base_value() + c.iter().sum::<f64>();
            assert!(
                (raw - sum).abs() < 1e-9,
                "{algo:?}: raw {raw} vs base+sum {sum}"
            );
            let p = s.score(f, &mut c);
            assert!((p - 1.0 / (1.0 + (-raw).exp())).abs() < 1e-12);
            assert!((0.0..=1.0).contains(&p));
        }
    }
}

#[test]
fn signal_features_get_the_credit() {
    // Over high-scoring rows, the trees' attributions should concentrate on the six signal
    // columns, not on the noise.
    for algo in [Algo::Forest, Algo::Gbdt] {
        signal_gets_the_credit(trained(algo));
    }
}

fn signal_gets_the_credit(a: &ModelArtifact) {
    let s = a.scorer();
    let (x, _) = held_out();
    let mut c = vec![0.0; COLS];
    let mut total = [0.0; COLS];
    let all = scores(a);
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let cut = sorted[sorted.len() / 50];
    for (r, &p) in x.rows().into_iter().zip(&all) {
        if p > cut {
            s.score(r.as_slice().unwrap(), &mut c);
            for (t, v) in total.iter_mut().zip(&c) {
                *t += v.abs();
            }
        }
    }
    let signal: f64 = total[..6].iter().sum();
    let noise: f64 = total[6..].iter().sum();
    // Unpruned forest trees end in splits fitted to a handful of rows, which credits noise
    // columns more than boosting's shallow trees do.
    let ratio = if a.algo == Algo::Forest { 2.0 } else { 3.0 };
    assert!(
        signal > ratio * noise,
        "{:?}: signal {signal} noise {noise}",
        a.algo
    );
}

#[test]
fn non_finite_and_short_inputs_score_as_zero() {
    for algo in Algo::ALL {
        let s = trained(algo).scorer();
        let mut c = vec![0.0; COLS];
        let zero = s.score(&[0.0; COLS], &mut c);
        let mut weird = [f64::NAN; COLS];
        weird[1] = f64::INFINITY;
        weird[2] = f64::NEG_INFINITY;
        assert_eq!(s.score(&weird, &mut c), zero);
        assert_eq!(s.score(&[], &mut c), zero);
        // A short contribution buffer loses contributions, not the probability.
        let mut short = [0.0; 2];
        assert_eq!(s.score(&[0.0; COLS], &mut short), zero);
        let mut long = vec![7.0; COLS + 3];
        s.score(&[0.0; COLS], &mut long);
        assert!(long[COLS..].iter().all(|&v| v == 0.0));
    }
}

#[test]
fn scorer_is_send_and_sync() {
    fn check<T: Send + Sync>(_: &T) {}
    check(&trained(Algo::Forest).scorer());
}

#[test]
fn top_factors_orders_by_magnitude() {
    let s = trained(Algo::Logistic).scorer();
    let mut out = Vec::new();
    s.top_factors(&[0.1, -0.5, 0.0, 0.3, f64::NAN, -0.3], 3, &mut out);
    assert_eq!(out, vec![(1, -0.5), (3, 0.3), (5, -0.3)]);
    s.top_factors(&[0.1, 0.2], 5, &mut out);
    assert_eq!(out, vec![(1, 0.2), (0, 0.1)]);
    s.top_factors(&[0.1, 0.2], 0, &mut out);
    assert!(out.is_empty());
}

#[test]
fn save_load_round_trip_scores_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (x, _) = held_out();
    for algo in Algo::ALL {
        let a = trained(algo);
        let path = dir.path().join("model.json");
        a.save(&path).unwrap();
        let b = ModelArtifact::load(&path, &names(COLS)).unwrap();
        assert_eq!(&b, a);
        assert_eq!(b.version(), a.version());
        let prefix = format!("{}-", algo.name());
        assert!(a.version().starts_with(&prefix) && a.version().len() == prefix.len() + 12);
        let (sa, sb) = (a.scorer(), b.scorer());
        let (mut ca, mut cb) = (vec![0.0; COLS], vec![0.0; COLS]);
        for r in x.rows().into_iter().take(2000) {
            let f = r.as_slice().unwrap();
            assert_eq!(
                sa.score(f, &mut ca).to_bits(),
                sb.score(f, &mut cb).to_bits()
            );
            assert_eq!(ca, cb);
        }
        // No temp file is left behind by the atomic write.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

#[test]
fn training_gives_the_same_bytes_whatever_the_number_of_threads() {
    let (x, y) = synthetic(6_000, COLS, 9);
    let dir = tempfile::tempdir().unwrap();
    let p = TrainParams {
        algo: None,
        trees: 12,
        ..params(Algo::Forest)
    };
    let bytes = |threads: usize| {
        let a = train(
            &x,
            &y,
            &names(COLS),
            &TrainParams {
                threads,
                ..p.clone()
            },
            &mut |_| {},
        )
        .unwrap();
        let path = dir.path().join(format!("model-{threads}.json"));
        a.save(&path).unwrap();
        std::fs::read(path).unwrap()
    };
    let one = bytes(1);
    assert_eq!(one, bytes(2), "1 vs 2 threads");
    assert_eq!(one, bytes(3), "1 vs 3 threads");
    // and the seed matters
    let other = train(
        &x,
        &y,
        &names(COLS),
        &TrainParams {
            seed: 7,
            algo: Some(Algo::Forest),
            ..p.clone()
        },
        &mut |_| {},
    )
    .unwrap();
    let same_seed = train(
        &x,
        &y,
        &names(COLS),
        &TrainParams {
            algo: Some(Algo::Forest),
            ..p
        },
        &mut |_| {},
    )
    .unwrap();
    assert_ne!(other.body, same_seed.body);
}

fn json(algo: Algo) -> serde_json::Value {
    serde_json::to_value(trained(algo)).unwrap()
}

fn load_value(v: &serde_json::Value) -> Result<ModelArtifact, ModelError> {
    ModelArtifact::from_slice(&serde_json::to_vec(v).unwrap(), &names(COLS))
}

#[test]
fn truncated_file_is_refused_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    trained(Algo::Logistic).save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = ModelArtifact::load(&path, &names(COLS)).unwrap_err();
    assert!(matches!(e, ModelError::Truncated(_)), "{e}");
    assert!(e.to_string().contains("truncated"));
}

#[test]
fn garbage_and_missing_files_are_refused() {
    let e = ModelArtifact::from_slice(b"\x00\xffnot json at all", &names(COLS)).unwrap_err();
    assert!(matches!(e, ModelError::Corrupt(_)), "{e}");
    let e = ModelArtifact::from_slice(
        format!("{{\"format_version\": {FORMAT_VERSION}}}").as_bytes(),
        &names(COLS),
    )
    .unwrap_err();
    assert!(matches!(e, ModelError::Corrupt(_)), "{e}");
    let e = ModelArtifact::load("/nonexistent/model.json", &names(COLS)).unwrap_err();
    assert!(matches!(e, ModelError::File(_)), "{e}");
    assert!(e.to_string().contains("/nonexistent/model.json"), "{e}");
}

#[test]
fn unknown_format_version_is_refused() {
    let mut v = json(Algo::Logistic);
    v["format_version"] = (FORMAT_VERSION + 1).into();
    let e = load_value(&v).unwrap_err();
    assert!(
        matches!(e, ModelError::UnsupportedFormat { found, .. } if found == FORMAT_VERSION + 1),
        "{e}"
    );
    // A file of the previous layout is refused as such, not as a missing field.
    v["format_version"] = 1.into();
    let e = load_value(&v).unwrap_err();
    assert!(e.to_string().contains("format_version 1"), "{e}");
}

#[test]
fn nan_weight_is_refused_and_named() {
    let mut v = json(Algo::Logistic);
    v["body"]["weights"][3] = serde_json::Value::Null;
    let e = load_value(&v).unwrap_err();
    assert!(matches!(e, ModelError::NonFinite(_)), "{e}");
    assert!(e.to_string().contains("logistic.weights[3]"), "{e}");

    let mut v = json(Algo::Forest);
    v["body"]["trees"][0]["value"][0] = serde_json::Value::Null;
    let e = load_value(&v).unwrap_err();
    assert!(matches!(e, ModelError::NonFinite(_)), "{e}");
}

#[test]
fn edited_weight_is_caught_by_the_version_hash() {
    let mut v = json(Algo::Logistic);
    v["body"]["weights"][0] = 123.0.into();
    let e = load_value(&v).unwrap_err();
    assert!(matches!(e, ModelError::VersionMismatch { .. }), "{e}");
}

#[test]
fn broken_trees_are_refused() {
    let base = json(Algo::Forest);
    let internal = base["body"]["trees"][0]["feature"]
        .as_array()
        .unwrap()
        .iter()
        .position(|f| f.as_i64() != Some(-1))
        .expect("root splits");
    let n = base["body"]["trees"][0]["feature"]
        .as_array()
        .unwrap()
        .len();

    let mut v = base.clone();
    v["body"]["trees"][0]["left"][internal] = (n as u64 + 5).into();
    let e = load_value(&v).unwrap_err();
    assert!(matches!(e, ModelError::BadTree { tree: 0, .. }), "{e}");

    // A child pointing back at its parent would loop forever at scoring time.
    let mut v = base.clone();
    v["body"]["trees"][0]["right"][internal] = (internal as u64).into();
    let e = load_value(&v).unwrap_err();
    assert!(matches!(e, ModelError::BadTree { .. }), "{e}");

    // Even unvalidated, such a tree must not hang the scorer.
    let a: ModelArtifact = serde_json::from_value(v).unwrap();
    let p = a.scorer().score(&[0.0; COLS], &mut [0.0; COLS]);
    assert!((0.0..=1.0).contains(&p));

    let mut v = base.clone();
    v["body"]["trees"][0]["feature"][internal] = (COLS as u64).into();
    let e = load_value(&v).unwrap_err();
    assert!(e.to_string().contains("feature index"), "{e}");

    let mut v = base;
    v["body"]["trees"][0]["value"].as_array_mut().unwrap().pop();
    assert!(matches!(
        load_value(&v).unwrap_err(),
        ModelError::BadTree { .. }
    ));
}

#[test]
fn feature_mismatch_says_what_is_wrong() {
    let bytes = serde_json::to_vec(trained(Algo::Logistic)).unwrap();

    let mut swapped = names(COLS);
    swapped.swap(0, 1);
    match ModelArtifact::from_slice(&bytes, &swapped).unwrap_err() {
        ModelError::FeatureMismatch {
            missing,
            extra,
            out_of_order,
        } => {
            assert!(missing.is_empty() && extra.is_empty());
            assert_eq!(out_of_order.len(), 2);
            assert_eq!(out_of_order[0], ("amount_fen".to_string(), 0, 1));
        }
        e => panic!("wrong error {e}"),
    }

    let mut renamed = names(COLS);
    renamed[2] = "distinct_payees_7d".into();
    let e = ModelArtifact::from_slice(&bytes, &renamed).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("missing from model: distinct_payees_7d")
            && msg.contains("unknown to engine: distinct_payees_24h"),
        "{msg}"
    );

    let e = ModelArtifact::from_slice(&bytes, &names(COLS - 1)).unwrap_err();
    assert!(e.to_string().contains("unknown to engine: noise_11"), "{e}");
}

#[test]
fn a_model_binds_to_a_grown_feature_list_by_name() {
    let bytes = serde_json::to_vec(trained(Algo::Logistic)).unwrap();
    // The engine now computes the model's features in another order, and one more.
    let mut engine: Vec<String> = names(COLS).into_iter().rev().collect();
    engine.insert(3, "payer.something_new".into());
    let (artifact, slots) = ModelArtifact::from_slice_bound(&bytes, &engine).unwrap();
    assert_eq!(slots.len(), COLS);
    for (i, name) in artifact.feature_names.iter().enumerate() {
        assert_eq!(&engine[slots[i]], name);
    }
    assert!(!slots.contains(&3), "the new feature feeds nothing");
    // A model feature the engine no longer computes is refused, by name.
    let e = ModelArtifact::from_slice_bound(&bytes, &names(COLS - 1)).unwrap_err();
    assert!(e.to_string().contains("unknown to engine: noise_11"), "{e}");
}

#[test]
fn bad_training_input_is_an_error() {
    let (x, y) = synthetic(1_000, COLS, 3);
    let n = names(COLS);
    let p = params(Algo::Forest);
    let e = train(&x, &y[..10], &n, &p, &mut |_| {}).unwrap_err();
    assert!(matches!(e, ModelError::InvalidInput(_)), "{e}");
    let e = train(&x, &vec![false; 1_000], &n, &p, &mut |_| {}).unwrap_err();
    assert!(matches!(e, ModelError::InvalidInput(_)), "{e}");
    let e = train(&x, &y, &n[..3], &p, &mut |_| {}).unwrap_err();
    assert!(matches!(e, ModelError::InvalidInput(_)), "{e}");
    let bad = TrainParams {
        validation_fraction: 0.0,
        ..p.clone()
    };
    let e = train(&x, &y, &n, &bad, &mut |_| {}).unwrap_err();
    assert!(matches!(e, ModelError::InvalidParams(_)), "{e}");
    let bad = TrainParams {
        categorical: vec![COLS],
        ..p
    };
    let e = train(&x, &y, &n, &bad, &mut |_| {}).unwrap_err();
    assert!(matches!(e, ModelError::InvalidParams(_)), "{e}");
}

#[test]
fn non_finite_training_values_are_trained_as_zero() {
    let (mut x, y) = synthetic(3_000, COLS, 4);
    x[(0, 0)] = f64::NAN;
    x[(1, 1)] = f64::INFINITY;
    for algo in Algo::ALL {
        let p = TrainParams {
            trees: 3,
            ..params(algo)
        };
        let a = train(&x, &y, &names(COLS), &p, &mut |_| {}).unwrap();
        a.validate().unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = ModelArtifact::from_slice(&bytes, &names(COLS));
    }

    #[test]
    fn corrupted_model_files_never_panic(pos in 0usize..1_000_000, byte in any::<u8>(), cut in any::<bool>()) {
        static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
        let good = BYTES.get_or_init(|| serde_json::to_vec(trained(Algo::Forest)).unwrap());
        let mut b = good.clone();
        let i = pos % b.len();
        if cut { b.truncate(i) } else { b[i] = byte }
        if let Ok(a) = ModelArtifact::from_slice(&b, &names(COLS)) {
            // Whatever still loads must still score sanely.
            let mut c = vec![0.0; COLS];
            let p = a.scorer().score(&[1.0; COLS], &mut c);
            prop_assert!((0.0..=1.0).contains(&p));
        }
    }
}

/// Training time on the production-sized matrix; run with
/// `cargo test --release --test model -- --ignored --nocapture one_million`.
#[test]
#[ignore]
fn one_million_rows_train_in_minutes() {
    let (x, y) = synthetic(1_000_000, 50, 5);
    let (hx, hy) = synthetic(200_000, 50, 6);
    for algo in Algo::ALL {
        let t = std::time::Instant::now();
        let p = TrainParams {
            trees: 100,
            ..params(algo)
        };
        let a = train(&x, &y, &names(50), &p, &mut |m| {
            eprintln!("[{:>6.1}s] {m}", t.elapsed().as_secs_f64())
        })
        .unwrap();
        let secs = t.elapsed().as_secs_f64();
        let s = a.scorer();
        let mut c = vec![0.0; 50];
        let scores: Vec<f64> = hx
            .rows()
            .into_iter()
            .map(|r| s.score(r.as_slice().unwrap(), &mut c))
            .collect();
        let ap = average_precision(&scores, &hy);
        eprintln!(
            "{algo:?}: {secs:.1}s, held-out AP {ap:.4}, {:?}",
            a.validation_metrics
        );
    }
}
