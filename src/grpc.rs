//! The gRPC services and the one place where library errors become gRPC statuses.
//!
//! Each handler checks the caller's key, hands the work to the engine thread and records
//! the call in telemetry; nothing here decides anything about a payment.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use crate::auth::{AuthError, Caller, Keys, Role};
use crate::commit::CommitError;
use crate::engine::{self, EngineError};
use crate::proto;
use crate::server::{now_ms, EngineHandle};
use crate::store::DecisionStore;
use crate::telemetry::Telemetry;

/// Identifies the caller of `request` and checks it holds one of `roles`.
fn authorize<T>(
    keys: &Keys,
    request: &Request<T>,
    roles: &[Role],
    action: &'static str,
) -> Result<Caller, Status> {
    let header = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let caller = keys.authenticate(header).map_err(auth_status)?;
    caller.require(roles, action).map_err(auth_status)?;
    Ok(caller)
}

fn auth_status(error: AuthError) -> Status {
    match error {
        AuthError::Missing | AuthError::Unknown => Status::unauthenticated(error.to_string()),
        AuthError::Forbidden { .. } => Status::permission_denied(error.to_string()),
    }
}

/// Maps library errors to statuses.
pub fn status(error: EngineError) -> Status {
    let message = error.to_string();
    match error {
        EngineError::Invalid(_) => Status::invalid_argument(message),
        EngineError::Conflict(_) => Status::already_exists(message),
        EngineError::UnknownPayment(_) | EngineError::UnknownDecision(_) => {
            Status::not_found(message)
        }
        EngineError::Rules { .. } | EngineError::FeatureFile(_) | EngineError::Model { .. } => {
            Status::failed_precondition(message)
        }
        EngineError::Store(_) | EngineError::Features(_) | EngineError::Open { .. } => {
            tracing::error!(error = %message, "storage failure");
            Status::unavailable(message)
        }
    }
}

pub fn commit_status(error: CommitError) -> Status {
    tracing::error!(error = %error, "decision not made durable");
    Status::unavailable(format!("decision not stored durably, retry: {error}"))
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        Unauthenticated => "UNAUTHENTICATED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Unavailable => "UNAVAILABLE",
        Internal => "INTERNAL",
        _ => "OTHER",
    }
}

pub struct RiskEngineService {
    engine: EngineHandle,
    decisions: DecisionStore,
    keys: Keys,
    telemetry: Arc<Telemetry>,
}

impl RiskEngineService {
    pub fn new(
        engine: EngineHandle,
        decisions: DecisionStore,
        keys: Keys,
        telemetry: Arc<Telemetry>,
    ) -> RiskEngineService {
        RiskEngineService {
            engine,
            decisions,
            keys,
            telemetry,
        }
    }

    /// Counts the call and, for Score, its server-side time including the durable write.
    fn record<T>(
        &self,
        method: &'static str,
        started: Instant,
        result: &Result<T, Status>,
        action: impl FnOnce(&T) -> &'static str,
    ) {
        let (code, action) = match result {
            Ok(value) => ("OK", action(value)),
            Err(status) => (code_name(status.code()), ""),
        };
        self.telemetry.call(method, code, action);
        if method == "Score" {
            self.telemetry.stage("total", started.elapsed());
        }
    }
}

#[tonic::async_trait]
impl proto::risk_engine_server::RiskEngine for RiskEngineService {
    async fn score(
        &self,
        request: Request<proto::ScoreRequest>,
    ) -> Result<Response<proto::ScoreResponse>, Status> {
        let started = Instant::now();
        let result = async {
            authorize(&self.keys, &request, &[Role::Gateway], "score payments")?;
            let req = request.into_inner();
            self.engine
                .run_durable(move |e| e.score(&req, now_ms()).map(|s| s.response))
                .await
        }
        .await;
        self.record("Score", started, &result, |r| r.action().as_str_name());
        result.map(Response::new)
    }

    async fn get_decision(
        &self,
        request: Request<proto::GetDecisionRequest>,
    ) -> Result<Response<proto::Decision>, Status> {
        let started = Instant::now();
        let result = async {
            let roles = [Role::Gateway, Role::Analyst];
            authorize(&self.keys, &request, &roles, "read decisions")?;
            let store = self.decisions.clone();
            let req = request.into_inner();
            tokio::task::spawn_blocking(move || engine::get_decision(&store, &req))
                .await
                .map_err(|e| Status::internal(format!("lookup task failed: {e}")))?
                .map_err(status)
        }
        .await;
        self.record("GetDecision", started, &result, |_| "");
        result.map(Response::new)
    }

    async fn report_outcome(
        &self,
        request: Request<proto::ReportOutcomeRequest>,
    ) -> Result<Response<proto::ReportOutcomeResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let roles = [Role::Gateway, Role::Analyst];
            authorize(&self.keys, &request, &roles, "report outcomes")?;
            let req = request.into_inner();
            self.engine
                .run_durable(move |e| e.report_outcome(&req, now_ms()))
                .await
        }
        .await;
        self.record("ReportOutcome", started, &result, |_| "");
        result.map(Response::new)
    }
}

pub struct ModelAdminService {
    engine: EngineHandle,
    keys: Keys,
}

impl ModelAdminService {
    pub fn new(engine: EngineHandle, keys: Keys) -> ModelAdminService {
        ModelAdminService { engine, keys }
    }
}

#[tonic::async_trait]
impl proto::model_admin_server::ModelAdmin for ModelAdminService {
    async fn reload_model(
        &self,
        request: Request<proto::ReloadModelRequest>,
    ) -> Result<Response<proto::ReloadModelResponse>, Status> {
        let caller = authorize(&self.keys, &request, &[Role::Analyst], "reload the model")?;
        let (model_version, changed) =
            self.engine.run(|e| e.reload_model()).await?.map_err(|e| {
                tracing::error!(by = %caller.describe(), error = %e, "model reload refused");
                status(e)
            })?;
        tracing::info!(by = %caller.describe(), %model_version, changed, "model reload requested");
        Ok(Response::new(proto::ReloadModelResponse {
            model_version,
            changed,
        }))
    }
}

pub struct RuleAdminService {
    engine: EngineHandle,
    keys: Keys,
}

impl RuleAdminService {
    pub fn new(engine: EngineHandle, keys: Keys) -> RuleAdminService {
        RuleAdminService { engine, keys }
    }
}

#[tonic::async_trait]
impl proto::rule_admin_server::RuleAdmin for RuleAdminService {
    async fn reload_rules(
        &self,
        request: Request<proto::ReloadRulesRequest>,
    ) -> Result<Response<proto::ReloadRulesResponse>, Status> {
        let caller = authorize(&self.keys, &request, &[Role::Analyst], "reload rules")?;
        let reloaded = self.engine.run(|e| e.reload_rules()).await?.map_err(|e| {
            tracing::error!(by = %caller.describe(), error = %e, "rules reload refused");
            status(e)
        })?;
        tracing::info!(by = %caller.describe(), version = %reloaded.version, changed = reloaded.changed, "rules reload requested");
        Ok(Response::new(proto::ReloadRulesResponse {
            ruleset_version: reloaded.version,
            rules: reloaded.rules as u32,
            shadow_rules: reloaded.shadow_rules as u32,
            changed: reloaded.changed,
        }))
    }
}
