//! `fengkong loadgen`: an open-loop gRPC load generator for `Score`.
//!
//! Requests leave on a fixed schedule whether or not earlier ones have returned, and each
//! latency is measured from the moment the request was *due* (give or take the timer's
//! 1 ms tick), so queueing anywhere (client, network, server) shows up in the percentiles
//! instead of silently lowering the rate.
//!
//! Each request carries a deadline (`--deadline`, 10 s by default) as `grpc-timeout`. A
//! RESOURCE_EXHAUSTED answer is the server's admission control refusing fast, which a
//! gateway can fall back on: it is counted as `refused`, apart from `errors`, and the
//! percentiles are those of the decisions served. `answered_within_deadline` counts the
//! decisions and refusals that came back within the deadline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::proto::{self, risk_engine_client::RiskEngineClient};

/// The resolution of tokio's timer.
const TIMER_TICK: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub addr: String,
    /// Requests per second to send.
    pub rate: u64,
    /// gRPC connections to spread the requests over.
    pub concurrency: usize,
    pub duration: Duration,
    pub payers: u64,
    pub payees: u64,
    /// Bearer key for servers that require one.
    pub key: Option<String>,
    /// Requests allowed in flight before new ones are counted as client overload.
    pub max_in_flight: usize,
    pub seed: u64,
    /// Each request's deadline (sent as `grpc-timeout`).
    pub deadline: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot connect to `{addr}`: {reason}")]
    Connect { addr: String, reason: String },
    #[error("bad key: {0}")]
    Key(String),
    #[error("histogram: {0}")]
    Histogram(String),
}

/// What a run achieved. Latencies are in microseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// Decisions served per second.
    pub achieved_rps: f64,
    pub sent: u64,
    /// Decisions served.
    pub ok: u64,
    /// RESOURCE_EXHAUSTED: refused at once by admission control (not errors).
    pub refused: u64,
    /// Everything else that failed, by code.
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub actions: BTreeMap<String, u64>,
    /// Decisions or refusals that came back within the deadline.
    pub answered_within_deadline: u64,
    pub deadline_ms: u64,
    /// Of the decisions served.
    pub latency_us: Percentiles,
    /// Of the refusals.
    pub refused_latency_us: Percentiles,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    refused: u64,
    within_deadline: u64,
    errors_by_code: BTreeMap<String, u64>,
    actions: BTreeMap<String, u64>,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

pub async fn run(config: &LoadConfig) -> Result<LoadReport, LoadError> {
    let endpoint = Endpoint::from_shared(format!("http://{}", config.addr)).map_err(|e| {
        LoadError::Connect {
            addr: config.addr.clone(),
            reason: e.to_string(),
        }
    })?;
    let mut clients = Vec::with_capacity(config.concurrency.max(1));
    for _ in 0..config.concurrency.max(1) {
        let channel: Channel = endpoint
            .clone()
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| LoadError::Connect {
                addr: config.addr.clone(),
                reason: e.to_string(),
            })?;
        clients.push(RiskEngineClient::new(channel));
    }
    let key = match &config.key {
        Some(k) => Some(
            MetadataValue::try_from(format!("Bearer {k}"))
                .map_err(|e| LoadError::Key(e.to_string()))?,
        ),
        None => None,
    };
    let new_histogram = || {
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .map_err(|e| LoadError::Histogram(e.to_string()))
    };
    let histogram = Arc::new(Mutex::new(new_histogram()?));
    let refused_histogram = Arc::new(Mutex::new(new_histogram()?));
    let deadline_us = config.deadline.as_micros() as u64;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut traffic = Traffic::new(config);

    let interval = Duration::from_secs_f64(1.0 / config.rate.max(1) as f64);
    let total = (config.duration.as_secs_f64() * config.rate as f64).round() as u64;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        // tokio's timer wakes on its next millisecond tick, up to 1 ms after `due`; that
        // lateness is the generator's, not the server's, so it is not counted. Lateness
        // beyond it (the generator falling behind) still is.
        let sent = Instant::now().min(due + TIMER_TICK);
        if in_flight.load(Ordering::Relaxed) >= config.max_in_flight {
            count_error(&tally, "CLIENT_OVERLOAD");
            continue;
        }
        let mut request = tonic::Request::new(traffic.next(n));
        request.set_timeout(config.deadline);
        if let Some(key) = &key {
            request.metadata_mut().insert("authorization", key.clone());
        }
        let mut client = clients[(n as usize) % clients.len()].clone();
        let (histogram, refused_histogram) = (histogram.clone(), refused_histogram.clone());
        let (tally, in_flight) = (tally.clone(), in_flight.clone());
        in_flight.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            let result = client.score(request).await;
            let micros = sent.elapsed().as_micros().max(1) as u64;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let within = micros <= deadline_us;
            match result {
                Ok(resp) => {
                    if let Ok(mut h) = histogram.lock() {
                        h.saturating_record(micros);
                    }
                    if let Ok(mut t) = tally.lock() {
                        t.ok += 1;
                        t.within_deadline += u64::from(within);
                        let action = resp.into_inner().action().as_str_name().to_owned();
                        *t.actions.entry(action).or_default() += 1;
                    }
                }
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    if let Ok(mut h) = refused_histogram.lock() {
                        h.saturating_record(micros);
                    }
                    if let Ok(mut t) = tally.lock() {
                        t.refused += 1;
                        t.within_deadline += u64::from(within);
                    }
                }
                Err(status) => count_error(&tally, &format!("{:?}", status.code())),
            }
        });
        // Reap finished tasks as we go so the set stays small on long runs.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();

    let h = histogram
        .lock()
        .map_err(|e| LoadError::Histogram(e.to_string()))?;
    let refused_h = refused_histogram
        .lock()
        .map_err(|e| LoadError::Histogram(e.to_string()))?;
    let t = tally
        .lock()
        .map_err(|e| LoadError::Histogram(e.to_string()))?;
    let errors: u64 = t.errors_by_code.values().sum();
    Ok(LoadReport {
        achieved_rps: t.ok as f64 / elapsed,
        sent: total,
        ok: t.ok,
        refused: t.refused,
        errors,
        errors_by_code: t.errors_by_code.clone(),
        actions: t.actions.clone(),
        answered_within_deadline: t.within_deadline,
        deadline_ms: config.deadline.as_millis() as u64,
        latency_us: percentiles(&h),
        refused_latency_us: percentiles(&refused_h),
    })
}

fn count_error(tally: &Mutex<Tally>, code: &str) {
    if let Ok(mut t) = tally.lock() {
        *t.errors_by_code.entry(code.to_owned()).or_default() += 1;
    }
}

/// Plausible traffic: many payers, payees with a hot head (a few merchants take most
/// payments), mostly small amounts, and a trickle of fraud-shaped bursts (a personal code
/// collecting from many payers at night-like amounts, card testing on one device).
struct Traffic {
    rng: SmallRng,
    payers: u64,
    payees: u64,
    run_id: u64,
}

impl Traffic {
    fn new(config: &LoadConfig) -> Traffic {
        Traffic {
            rng: SmallRng::seed_from_u64(config.seed),
            payers: config.payers.max(1),
            payees: config.payees.max(1),
            run_id: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// Picks a payee with a Zipf-like skew: index ~ payees^u, so low indexes are hot.
    fn payee(&mut self) -> u64 {
        let u: f64 = self.rng.random();
        ((self.payees as f64).powf(u) as u64).saturating_sub(1)
    }

    fn next(&mut self, n: u64) -> proto::ScoreRequest {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let payer = self.rng.random_range(0..self.payers);
        let roll: f64 = self.rng.random();
        let (payee, kind, scene, amount, device, funding) = if roll < 0.005 {
            // code renting: many payers into one of a few personal codes
            (
                format!("code-{}", self.rng.random_range(0..5)),
                proto::PayeeKind::Personal,
                proto::Scene::PersonalCodeCollection,
                self.rng.random_range(50..=200) * 10_000,
                format!("dev-{payer}"),
                proto::Funding::Balance,
            )
        } else if roll < 0.01 {
            // card testing: tiny amounts from a handful of devices
            (
                format!("merchant-{}", self.payee()),
                proto::PayeeKind::Merchant,
                proto::Scene::MerchantScansPayer,
                self.rng.random_range(1..=200),
                format!("tester-{}", self.rng.random_range(0..3)),
                proto::Funding::CreditCard,
            )
        } else {
            let amount = (self.rng.random::<f64>().powi(3) * 500_000.0) as i64 + 100;
            (
                format!("merchant-{}", self.payee()),
                proto::PayeeKind::Merchant,
                if self.rng.random_bool(0.6) {
                    proto::Scene::MerchantStaticCode
                } else {
                    proto::Scene::MerchantScansPayer
                },
                amount,
                format!("dev-{payer}"),
                if self.rng.random_bool(0.8) {
                    proto::Funding::Balance
                } else {
                    proto::Funding::DebitCard
                },
            )
        };
        proto::ScoreRequest {
            payment_id: format!("lg-{}-{n}", self.run_id),
            event_time_ms: now,
            channel: proto::Channel::Aggregator as i32,
            scene: scene as i32,
            payer: Some(proto::Payer {
                account_id: format!("payer-{payer}"),
                real_name_verified: payer % 10 != 0,
                registered_at_ms: now - 86_400_000 * (30 + (payer % 1000) as i64),
            }),
            payee: Some(proto::Payee {
                account_id: payee,
                kind: kind as i32,
                merchant_category: "5812".into(),
            }),
            amount_fen: amount,
            currency: "CNY".into(),
            funding: funding as i32,
            card_fingerprint: (funding != proto::Funding::Balance)
                .then(|| format!("card-{}", payer % 50_000)),
            device_id: device,
            ip: format!("10.{}.{}.{}", payer % 200, (payer / 200) % 250, payer % 250),
            city_code: Some("310000".into()),
            attributes: Default::default(),
        }
    }
}
