//! The `RuleAdmin` service, for analysts: reloads, rule stats, backtests on stored traffic,
//! shipping candidates as shadow and promoting them.
//!
//! Stats and backtests read the store on blocking threads, never on the engine thread:
//! the engine only lends what deciding needs (`Engine::redecider`), which takes a moment.

use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::{authorize, status, Shared};
use crate::auth::Role;
use crate::engine::EngineError;
use crate::grpc_layer::Deadline;
use crate::proto;
use crate::rule_backtest::{self, Bounds};
use crate::rule_stats::{self, Period, StatsError};
use crate::server::now_ms;

/// Longest a backtest decides before it answers with what it has (`truncated`).
pub const BACKTEST_BUDGET: Duration = Duration::from_secs(20);
/// Left of a caller's deadline for the answer to travel back.
const ANSWER_MARGIN: Duration = Duration::from_millis(200);

fn stats_status(error: StatsError) -> Status {
    match error {
        StatsError::Period(m) => Status::invalid_argument(m),
        StatsError::Store(e) => status(EngineError::Store(e)),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("rule admin task failed: {e}")))?
}

/// One backtest at a time in the process, whether asked over gRPC or from the page: each
/// takes a core for up to its budget, and the engine thread needs the other.
static BACKTESTS: Semaphore = Semaphore::const_new(1);

pub struct RuleAdminService {
    shared: Shared,
}

impl RuleAdminService {
    pub fn new(shared: Shared) -> RuleAdminService {
        RuleAdminService { shared }
    }
}

#[tonic::async_trait]
impl proto::rule_admin_server::RuleAdmin for RuleAdminService {
    async fn reload_rules(
        &self,
        request: Request<proto::ReloadRulesRequest>,
    ) -> Result<Response<proto::ReloadRulesResponse>, Status> {
        let keys = &self.shared.keys;
        let caller = authorize(keys, &request, &[Role::Analyst], "reload rules")?;
        let reloaded = self
            .shared
            .engine
            .run(|e| e.reload_rules())
            .await?
            .map_err(|e| {
                tracing::error!(by = %caller.describe(), error = %e, "rules reload refused");
                status(e)
            })?;
        tracing::info!(by = %caller.describe(), version = %reloaded.version, changed = reloaded.changed, "rules reload requested");
        Ok(Response::new(proto::ReloadRulesResponse {
            ruleset_version: reloaded.version,
            rules: reloaded.rules as u32,
            shadow_rules: reloaded.shadow_rules as u32,
            changed: reloaded.changed,
            added_rules: reloaded.added,
            removed_rules: reloaded.removed,
        }))
    }

    async fn rule_stats(
        &self,
        request: Request<proto::RuleStatsRequest>,
    ) -> Result<Response<proto::RuleStatsResponse>, Status> {
        let keys = &self.shared.keys;
        authorize(keys, &request, &[Role::Analyst], "read rule stats")?;
        let req = request.into_inner();
        let rules = self.shared.engine.run(|e| e.ruleset()).await?;
        let store = self.shared.decisions.clone();
        let stats = blocking(move || {
            let period =
                Period::resolve(store.tree(), req.from_ms, req.to_ms).map_err(stats_status)?;
            rule_stats::rule_stats(&store, &rules, period).map_err(stats_status)
        })
        .await?;
        Ok(Response::new(stats))
    }

    async fn backtest(
        &self,
        request: Request<proto::BacktestRequest>,
    ) -> Result<Response<proto::BacktestResponse>, Status> {
        let keys = &self.shared.keys;
        let caller = authorize(keys, &request, &[Role::Analyst], "run backtests")?;
        let started = Instant::now();
        let until = match Deadline::of(&request) {
            Some(d) => (d.0.into_std().checked_sub(ANSWER_MARGIN).unwrap_or(started))
                .min(started + BACKTEST_BUDGET),
            None => started + BACKTEST_BUDGET,
        };
        let req = request.into_inner();
        let files: Vec<(String, String)> = req.files.into_iter().collect();
        let permit = BACKTESTS
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        let redecider = self.shared.engine.run(|e| e.redecider()).await?;
        let store = self.shared.decisions.clone();
        let (from_ms, to_ms) = (req.from_ms, req.to_ms);
        let result = blocking(move || {
            let _permit = permit;
            let candidate = redecider.compile(&files).map_err(status)?;
            let period = Period::resolve(store.tree(), from_ms, to_ms).map_err(stats_status)?;
            let bounds = Bounds {
                until,
                max_decisions: rule_backtest::MAX_DECISIONS,
            };
            rule_backtest::backtest(&store, &redecider, &candidate, period, bounds).map_err(status)
        })
        .await?;
        tracing::info!(
            by = %caller.describe(),
            candidate = %result.candidate_version,
            decisions = result.decisions,
            truncated = result.truncated,
            took_ms = started.elapsed().as_millis() as u64,
            "backtest on stored traffic"
        );
        Ok(Response::new(result))
    }

    async fn ship_rules(
        &self,
        request: Request<proto::ShipRulesRequest>,
    ) -> Result<Response<proto::ShipRulesResponse>, Status> {
        let keys = &self.shared.keys;
        let caller = authorize(keys, &request, &[Role::Analyst], "ship rules")?;
        let req = request.into_inner();
        let by = caller.describe();
        let shipped = self
            .shared
            .engine
            .run_durable(move |e| e.ship_rules(&req, &by, now_ms()))
            .await?;
        tracing::warn!(by = %caller.describe(), version = %shipped.ruleset_version, rules = ?shipped.rule_ids, "rules shipped as shadow");
        Ok(Response::new(proto::ShipRulesResponse {
            ruleset_version: shipped.ruleset_version,
            rule_ids: shipped.rule_ids,
            files: shipped.files,
        }))
    }

    async fn promote_rules(
        &self,
        request: Request<proto::PromoteRulesRequest>,
    ) -> Result<Response<proto::PromoteRulesResponse>, Status> {
        let keys = &self.shared.keys;
        let caller = authorize(keys, &request, &[Role::Analyst], "promote rules")?;
        let req = request.into_inner();
        let by = caller.describe();
        let promoted = self
            .shared
            .engine
            .run_durable(move |e| e.promote_rules(&req, &by, now_ms()))
            .await?;
        tracing::warn!(by = %caller.describe(), version = %promoted.ruleset_version, rules = ?promoted.rule_ids, "shadow rules promoted to active");
        Ok(Response::new(proto::PromoteRulesResponse {
            ruleset_version: promoted.ruleset_version,
            rule_ids: promoted.rule_ids,
            files: promoted.files,
        }))
    }
}
