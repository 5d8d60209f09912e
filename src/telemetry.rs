//! Operational metrics in Prometheus text format: request counts, per-stage latency,
//! rule hits, model scores, connections, overload and store health. Served at `/metrics` on
//! the operators' listener (`metrics_listen`).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: &'static str,
    /// gRPC status code name, "OK" on success.
    pub code: &'static str,
    /// Decision action for successful Score calls, "" otherwise.
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// The status the account moved to: NORMAL, LIMITED or FROZEN.
    pub to: &'static str,
    /// rule, model, analyst or appeal.
    pub by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// grpc, page or metrics.
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleErrorLabels {
    pub rule: String,
}

/// Every metric the server exports. Cheap to update from any thread.
pub struct Telemetry {
    registry: Registry,
    pub calls: Family<CallLabels, Counter>,
    pub stage_seconds: Family<StageLabels, Histogram>,
    pub rule_hits: Family<RuleLabels, Counter>,
    pub model_score: Histogram,
    pub late_events: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub store_bytes: Gauge,
    pub account_changes: Family<StatusLabels, Counter>,
    pub connections_open: Family<ListenerLabels, Gauge>,
    pub connections_refused: Family<ListenerLabels, Counter>,
    pub connections_timed_out: Family<ListenerLabels, Counter>,
    pub rule_errors: Family<RuleErrorLabels, Counter>,
    pub overload_refusals: Counter,
    pub writes_refused: Gauge,
    pub disk_free_bytes: Gauge,
    pub sled_tail_entries: Gauge,
    pub sled_tail_full: Counter,
}

fn latency_histogram() -> Histogram {
    // 1 µs to ~4 s in powers of two: the pipeline lives at the low end, flushes at the high.
    Histogram::new(exponential_buckets(1e-6, 2.0, 23))
}

impl Default for Telemetry {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("fengkong");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "gRPC calls by method, status code and action",
            calls.clone(),
        );
        let stage_seconds = Family::<StageLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "stage_seconds",
            "Server-side time per pipeline stage (validate, features, rules, model, record, commit, total)",
            stage_seconds.clone(),
        );
        let rule_hits = Family::<RuleLabels, Counter>::default();
        registry.register(
            "rule_hits",
            "Rule hits by rule id and mode (active or shadow)",
            rule_hits.clone(),
        );
        let model_score = Histogram::new([0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99]);
        registry.register(
            "model_score",
            "Distribution of model fraud probabilities",
            model_score.clone(),
        );
        let late_events = Counter::default();
        registry.register(
            "late_events",
            "Payments later than the allowed lateness: scored but not added to windows",
            late_events.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "feature_cache_hits",
            "Entity states found in the in-memory cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "feature_cache_misses",
            "Entity states read from sled",
            cache_misses.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register(
            "store_bytes",
            "Size of the sled database on disk",
            store_bytes.clone(),
        );
        let account_changes = Family::<StatusLabels, Counter>::default();
        registry.register(
            "account_status_changes",
            "Account status changes by new status and by what made them",
            account_changes.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Open client connections per listener",
            connections_open.clone(),
        );
        let connections_refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because the listener's connection cap was reached",
            connections_refused.clone(),
        );
        let connections_timed_out = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_timed_out",
            "Connections closed for sending nothing within the handshake or idle timeout",
            connections_timed_out.clone(),
        );
        let rule_errors = Family::<RuleErrorLabels, Counter>::default();
        registry.register(
            "rule_errors",
            "Rule evaluations that failed (division by zero, ...), by rule id",
            rule_errors.clone(),
        );
        let overload_refusals = Counter::default();
        registry.register(
            "overload_refusals",
            "Calls refused with RESOURCE_EXHAUSTED because they could not be served within their deadline",
            overload_refusals.clone(),
        );
        let writes_refused = Gauge::default();
        registry.register(
            "writes_refused",
            "1 while writes are refused (free disk below min_free_disk_mib, or the last write failed)",
            writes_refused.clone(),
        );
        let disk_free_bytes = Gauge::default();
        registry.register(
            "disk_free_bytes",
            "Free space on the data dir's filesystem, as last checked",
            disk_free_bytes.clone(),
        );
        let sled_tail_entries = Gauge::default();
        registry.register(
            "sled_tail_entries",
            "Journaled decision writes not yet applied to sled (the sled writer's lag; reads find them in memory)",
            sled_tail_entries.clone(),
        );
        let sled_tail_full = Counter::default();
        registry.register(
            "sled_tail_full",
            "Times the in-memory tail was full and the scoring thread applied its oldest run to sled itself",
            sled_tail_full.clone(),
        );
        Telemetry {
            registry,
            sled_tail_entries,
            sled_tail_full,
            connections_open,
            connections_refused,
            connections_timed_out,
            rule_errors,
            overload_refusals,
            writes_refused,
            disk_free_bytes,
            account_changes,
            calls,
            stage_seconds,
            rule_hits,
            model_score,
            late_events,
            cache_hits,
            cache_misses,
            store_bytes,
        }
    }
}

impl Telemetry {
    pub fn stage(&self, stage: &'static str, elapsed: Duration) {
        self.stage_seconds
            .get_or_create(&StageLabels { stage })
            .observe(elapsed.as_secs_f64());
    }

    pub fn call(&self, method: &'static str, code: &'static str, action: &'static str) {
        self.calls
            .get_or_create(&CallLabels {
                method,
                code,
                action,
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_appear_in_the_text_format() {
        let t = Telemetry::default();
        t.call("Score", "OK", "ALLOW");
        t.stage("total", Duration::from_micros(40));
        t.rule_hits
            .get_or_create(&RuleLabels {
                rule: "rent_code".into(),
                mode: "shadow",
            })
            .inc();
        let text = t.encode();
        assert!(
            text.contains(r#"fengkong_calls_total{method="Score",code="OK",action="ALLOW"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"fengkong_stage_seconds_count{stage="total"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"fengkong_rule_hits_total{rule="rent_code",mode="shadow"} 1"#),
            "{text}"
        );
    }
}
