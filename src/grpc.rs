//! The gRPC services and the one place where library errors become gRPC statuses.
//!
//! Each handler checks the caller's key, hands the work to the engine thread and records
//! the call in telemetry; nothing here decides anything about a payment.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

mod cases;
mod decisions;
mod rules;
pub use cases::{AuditService, CasesService};
pub use rules::RuleAdminService;

use crate::accounts::AccountStore;
use crate::auth::{AuthError, Caller, Keys, Role};
use crate::commit::CommitError;
use crate::engine::{self, EngineError};
use crate::explain;
use crate::grpc_layer::Deadline;
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

pub fn auth_status(error: AuthError) -> Status {
    match error {
        AuthError::Missing | AuthError::Unknown => Status::unauthenticated(error.to_string()),
        AuthError::Forbidden { .. } => Status::permission_denied(error.to_string()),
        // Our fault, not the caller's: a gateway falls back as for any outage.
        AuthError::Closed(_) => Status::unavailable(error.to_string()),
    }
}

/// Maps library errors to statuses.
pub fn status(error: EngineError) -> Status {
    let message = error.to_string();
    match error {
        EngineError::Invalid(_) => Status::invalid_argument(message),
        EngineError::Conflict(_) => Status::already_exists(message),
        EngineError::UnknownPayment(_)
        | EngineError::UnknownDecision(_)
        | EngineError::UnknownAppeal(_)
        | EngineError::UnknownCase(_) => Status::not_found(message),
        EngineError::AppealState(_) | EngineError::CaseState(_) | EngineError::RuleFiles(_) => {
            Status::failed_precondition(message)
        }
        EngineError::Rules { .. } | EngineError::FeatureFile(_) | EngineError::Model { .. } => {
            Status::failed_precondition(message)
        }
        EngineError::Store(_)
        | EngineError::Features(_)
        | EngineError::Open { .. }
        | EngineError::Journal(_) => {
            tracing::error!(error = %message, "storage failure");
            Status::unavailable(message)
        }
    }
}

/// `google.rpc.Status` and `google.rpc.RetryInfo` (googleapis `google/rpc/*.proto`), the
/// standard place for a retry hint in gRPC status details; two small messages are written
/// out here rather than pulling in a crate of every googleapis type.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<prost_types::Duration>,
}

/// RESOURCE_EXHAUSTED with a retry-after hint: `google.rpc.RetryInfo` in the status details,
/// and the same in milliseconds as `retry-after-ms` metadata for simple clients.
pub fn overloaded(message: String, retry_after: std::time::Duration) -> Status {
    use prost::Message;
    let retry = RetryInfo {
        retry_delay: Some(prost_types::Duration {
            seconds: retry_after.as_secs() as i64,
            nanos: retry_after.subsec_nanos() as i32,
        }),
    };
    let details = RpcStatus {
        code: tonic::Code::ResourceExhausted as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: retry.encode_to_vec(),
        }],
    };
    let mut status = Status::with_details(
        tonic::Code::ResourceExhausted,
        message,
        details.encode_to_vec().into(),
    );
    if let Ok(value) = retry_after.as_millis().to_string().parse() {
        status.metadata_mut().insert("retry-after-ms", value);
    }
    status
}

/// The retry-after hint of an `overloaded` status, if it has one.
pub fn retry_after(status: &Status) -> Option<std::time::Duration> {
    use prost::Message;
    let details = RpcStatus::decode(status.details()).ok()?;
    let any = details
        .details
        .iter()
        .find(|a| a.type_url.ends_with("google.rpc.RetryInfo"))?;
    let delay = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    Some(std::time::Duration::new(
        u64::try_from(delay.seconds).ok()?,
        u32::try_from(delay.nanos).ok()?,
    ))
}

pub fn commit_status(error: CommitError) -> Status {
    tracing::error!(error = %error, "decision not made durable");
    Status::unavailable(format!("decision not stored durably, retry: {error}"))
}

pub fn code_name(code: tonic::Code) -> &'static str {
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
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        Internal => "INTERNAL",
        _ => "OTHER",
    }
}

/// What every service needs: the engine thread, read handles on the stores, the keys.
#[derive(Clone)]
pub struct Shared {
    pub engine: EngineHandle,
    pub decisions: DecisionStore,
    pub accounts: AccountStore,
    pub keys: Keys,
    pub telemetry: Arc<Telemetry>,
}

/// Runs a read of the stores off the async threads.
async fn read<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("lookup task failed: {e}")))?
        .map_err(status)
}

/// The account a merchant or analyst call is about: merchants may leave it empty to mean
/// their own, and may name no other.
fn account_for(caller: &Caller, requested: &str, action: &'static str) -> Result<String, Status> {
    let account = match (requested, caller.own_account()) {
        ("", Some(own)) => own.to_owned(),
        ("", None) => return Err(Status::invalid_argument("account_id: must not be empty")),
        (given, _) => given.to_owned(),
    };
    caller
        .require_account(&account, action)
        .map_err(auth_status)?;
    Ok(account)
}

pub struct RiskEngineService {
    engine: EngineHandle,
    decisions: DecisionStore,
    accounts: AccountStore,
    keys: Keys,
    telemetry: Arc<Telemetry>,
}

impl RiskEngineService {
    pub fn new(shared: Shared) -> RiskEngineService {
        RiskEngineService {
            engine: shared.engine,
            decisions: shared.decisions,
            accounts: shared.accounts,
            keys: shared.keys,
            telemetry: shared.telemetry,
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
            let deadline = Deadline::of(&request);
            let req = request.into_inner();
            self.engine
                .run_durable_within(deadline, move |e| {
                    e.score(&req, now_ms()).map(|s| s.response)
                })
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
            read(move || engine::get_decision(&store, &req)).await
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
            let deadline = Deadline::of(&request);
            let req = request.into_inner();
            self.engine
                .run_durable_within(deadline, move |e| e.report_outcome(&req, now_ms()))
                .await
        }
        .await;
        self.record("ReportOutcome", started, &result, |_| "");
        result.map(Response::new)
    }

    async fn explain(
        &self,
        request: Request<proto::ExplainRequest>,
    ) -> Result<Response<proto::Explanation>, Status> {
        let started = Instant::now();
        let result = async {
            let roles = [Role::Merchant, Role::Analyst];
            let caller = authorize(&self.keys, &request, &roles, "explain accounts")?;
            let req = request.into_inner();
            let account = account_for(&caller, &req.account_id, "explain another account")?;
            explain_account(
                &self.engine,
                &self.accounts,
                &self.decisions,
                account,
                req.rescore,
            )
            .await
        }
        .await;
        self.record("Explain", started, &result, |_| "");
        result.map(Response::new)
    }

    async fn list_decisions(
        &self,
        request: Request<proto::ListDecisionsRequest>,
    ) -> Result<Response<proto::ListDecisionsResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let roles = [Role::Merchant, Role::Analyst];
            let caller = authorize(&self.keys, &request, &roles, "list decisions")?;
            decisions::list(&self.decisions, &caller, request.get_ref()).await
        }
        .await;
        self.record("ListDecisions", started, &result, |_| "");
        result.map(Response::new)
    }
}

/// The stored explanation of `account`, with each decision re-scored on the engine thread
/// when `rescore` is set. Shared with the web page.
pub async fn explain_account(
    engine: &EngineHandle,
    accounts: &AccountStore,
    decisions: &DecisionStore,
    account: String,
    rescore: bool,
) -> Result<proto::Explanation, Status> {
    let (accounts, decisions) = (accounts.clone(), decisions.clone());
    let mut explanation =
        read(move || explain::explain(&accounts, &decisions, &account, now_ms())).await?;
    if rescore {
        let ids: Vec<String> = explanation
            .decisions
            .iter()
            .map(|d| d.decision_id.clone())
            .collect();
        let rescored = engine
            .run(move |e| {
                let store = e.decisions();
                ids.iter()
                    .map(|id| {
                        let stored = store
                            .by_decision_id(id)?
                            .ok_or_else(|| EngineError::UnknownDecision(id.clone()))?;
                        e.rescore(&stored)
                    })
                    .collect::<Result<Vec<_>, EngineError>>()
            })
            .await?
            .map_err(status)?;
        for (d, r) in explanation.decisions.iter_mut().zip(rescored) {
            d.rescore = Some(r);
        }
    }
    Ok(explanation)
}

pub struct AppealsService {
    shared: Shared,
}

impl AppealsService {
    pub fn new(shared: Shared) -> AppealsService {
        AppealsService { shared }
    }
}

#[tonic::async_trait]
impl proto::appeals_server::Appeals for AppealsService {
    async fn file_appeal(
        &self,
        request: Request<proto::FileAppealRequest>,
    ) -> Result<Response<proto::Appeal>, Status> {
        let roles = [Role::Merchant, Role::Analyst];
        let caller = authorize(&self.shared.keys, &request, &roles, "file appeals")?;
        let mut req = request.into_inner();
        req.account_id = account_for(&caller, &req.account_id, "appeal for another account")?;
        let by = caller.describe();
        let appeal = self
            .shared
            .engine
            .run_durable(move |e| e.file_appeal(&req, &by, now_ms()))
            .await?;
        tracing::info!(appeal = %appeal.appeal_id, account = %appeal.account_id, by = %caller.describe(), "appeal filed");
        Ok(Response::new(appeal))
    }

    async fn list_appeals(
        &self,
        request: Request<proto::ListAppealsRequest>,
    ) -> Result<Response<proto::ListAppealsResponse>, Status> {
        let roles = [Role::Merchant, Role::Analyst];
        let caller = authorize(&self.shared.keys, &request, &roles, "list appeals")?;
        let req = request.into_inner();
        let account = match (caller.own_account(), req.account_id.as_str()) {
            (None, "") => None,
            _ => Some(account_for(
                &caller,
                &req.account_id,
                "list another account's appeals",
            )?),
        };
        let status_filter = req.status;
        let accounts = self.shared.accounts.clone();
        let appeals = read(move || {
            let all = accounts.appeals(account.as_deref())?;
            Ok(all
                .into_iter()
                .filter(|a| status_filter == 0 || a.status == status_filter)
                .collect())
        })
        .await?;
        Ok(Response::new(proto::ListAppealsResponse { appeals }))
    }

    async fn get_appeal(
        &self,
        request: Request<proto::GetAppealRequest>,
    ) -> Result<Response<proto::Appeal>, Status> {
        let roles = [Role::Merchant, Role::Analyst];
        let caller = authorize(&self.shared.keys, &request, &roles, "read appeals")?;
        let id = request.into_inner().appeal_id;
        let accounts = self.shared.accounts.clone();
        let lookup = id.clone();
        let appeal = read(move || Ok(accounts.appeal(&lookup)?)).await?;
        // Someone else's appeal reads exactly like a missing one.
        match appeal {
            Some(a)
                if caller
                    .require_account(&a.account_id, "read appeals")
                    .is_ok() =>
            {
                Ok(Response::new(a))
            }
            _ => Err(status(EngineError::UnknownAppeal(id))),
        }
    }

    async fn resolve_appeal(
        &self,
        request: Request<proto::ResolveAppealRequest>,
    ) -> Result<Response<proto::Appeal>, Status> {
        let caller = authorize(
            &self.shared.keys,
            &request,
            &[Role::Analyst],
            "resolve appeals",
        )?;
        let req = request.into_inner();
        let by = caller.describe();
        let appeal = self
            .shared
            .engine
            .run_durable(move |e| e.resolve_appeal(&req, &by, now_ms()))
            .await?;
        tracing::info!(appeal = %appeal.appeal_id, status = appeal.status().as_str_name(), by = %caller.describe(), "appeal resolved");
        Ok(Response::new(appeal))
    }
}

pub struct AccountAdminService {
    shared: Shared,
}

impl AccountAdminService {
    pub fn new(shared: Shared) -> AccountAdminService {
        AccountAdminService { shared }
    }
}

#[tonic::async_trait]
impl proto::account_admin_server::AccountAdmin for AccountAdminService {
    async fn set_account_status(
        &self,
        request: Request<proto::SetAccountStatusRequest>,
    ) -> Result<Response<proto::AccountStatusChange>, Status> {
        let caller = authorize(
            &self.shared.keys,
            &request,
            &[Role::Analyst],
            "set account status",
        )?;
        let req = request.into_inner();
        let by = caller.describe();
        let change = self
            .shared
            .engine
            .run_durable(move |e| e.set_account_status(&req, &by, now_ms()))
            .await?;
        tracing::info!(account = %change.account_id, to = change.to().as_str_name(), by = %caller.describe(), "account status set");
        Ok(Response::new(change))
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
