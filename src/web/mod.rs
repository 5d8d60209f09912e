//! The merchant and analyst web page, and the JSON API it calls: a thin HTTP face over the
//! same gRPC service methods, so both paths share one set of permission checks.
//!
//! Credentials travel as `Authorization: Bearer KEY`, exactly as on gRPC. The page keeps
//! the key in the tab's session storage and sends it with each call; there are no cookies,
//! so a third-party site cannot make calls on a signed-in merchant's behalf.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Code;

use crate::auth::Caller;
use crate::grpc::{
    AccountAdminService, AppealsService, CasesService, RiskEngineService, RuleAdminService, Shared,
};
use crate::proto::account_admin_server::AccountAdmin;
use crate::proto::appeals_server::Appeals;
use crate::proto::cases_server::Cases;
use crate::proto::risk_engine_server::RiskEngine;
use crate::proto::rule_admin_server::RuleAdmin;
use crate::proto::{self, AppealStatus};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const WORKBENCH: &str = include_str!("workbench.js");
const STYLE: &str = include_str!("app.css");

#[derive(Clone)]
struct Web {
    shared: Shared,
    engine: Arc<RiskEngineService>,
    appeals: Arc<AppealsService>,
    cases: Arc<CasesService>,
    rules: Arc<RuleAdminService>,
    accounts: Arc<AccountAdminService>,
}

/// The page at `/` and its API under `/api/`.
pub fn router(shared: Shared) -> Router {
    let web = Web {
        engine: Arc::new(RiskEngineService::new(shared.clone())),
        appeals: Arc::new(AppealsService::new(shared.clone())),
        cases: Arc::new(CasesService::new(shared.clone())),
        rules: Arc::new(RuleAdminService::new(shared.clone())),
        accounts: Arc::new(AccountAdminService::new(shared.clone())),
        shared,
    };
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/workbench.js",
            get(|| async { asset("text/javascript; charset=utf-8", WORKBENCH) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/whoami", get(whoami))
        .route("/api/explain", get(explain))
        .route("/api/appeals", get(list_appeals).post(file_appeal))
        .route("/api/appeals/{id}", get(get_appeal))
        .route("/api/appeals/{id}/resolve", post(resolve_appeal))
        .route("/api/cases", get(list_cases))
        .route("/api/cases/{id}", get(get_case))
        .route("/api/cases/{id}/assign", post(assign_case))
        .route("/api/cases/{id}/resolve", post(resolve_case))
        .route("/api/decisions", get(list_decisions))
        .route("/api/decisions/{id}", get(get_decision))
        .route("/api/rules/stats", get(rule_stats))
        .route("/api/rules/charts", get(rule_charts))
        .route("/api/rules/backtest", post(backtest))
        .route("/api/rules/ship", post(ship_rules))
        .route("/api/rules/promote", post(promote_rules))
        .route("/api/accounts/status", post(set_account_status))
        .route("/api/{*rest}", any(unknown_api))
        .with_state(web)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
                ),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
        body,
    )
        .into_response()
}

/// A gRPC status as an HTTP error with a JSON body: `{"code": "NOT_FOUND", "message": ..}`.
struct ApiError(tonic::Status);

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> ApiError {
        ApiError(status)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let http = match self.0.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
            Code::Unavailable | Code::ResourceExhausted => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = serde_json::json!({
            "code": crate::grpc::code_name(self.0.code()),
            "message": self.0.message(),
        });
        (http, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn reply<T: Serialize>(value: T) -> ApiResult {
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(value)).into_response())
}

/// Wraps `message` as a gRPC request carrying the HTTP caller's credentials.
fn request<T>(headers: &HeaderMap, message: T) -> Result<tonic::Request<T>, ApiError> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| tonic::Status::unauthenticated("malformed authorization header"))?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError(tonic::Status::invalid_argument(format!(
            "request body: {e}"
        )))
    })
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    matches!(query.get(name).map(String::as_str), Some("1" | "true"))
}

/// Any other `/api/` path: a JSON error like every API error, not an empty page.
async fn unknown_api(uri: axum::http::Uri) -> ApiError {
    ApiError(tonic::Status::not_found(format!(
        "no API `{}`; the API is /api/whoami, /api/explain, /api/appeals, /api/appeals/{{id}}, \
         /api/appeals/{{id}}/resolve, /api/cases, /api/cases/{{id}}, /api/cases/{{id}}/assign, \
         /api/cases/{{id}}/resolve, /api/decisions, /api/decisions/{{id}}, /api/rules/stats, /api/rules/charts, \
         /api/rules/backtest, /api/rules/ship, /api/rules/promote and /api/accounts/status",
        uri.path()
    )))
}

async fn whoami(State(web): State<Web>, headers: HeaderMap) -> ApiResult {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = web
        .shared
        .keys
        .authenticate(authorization)
        .map_err(|e| ApiError(crate::grpc::auth_status(e)))?;
    let (role, account) = match &caller {
        Caller::Open => ("open", None),
        Caller::Key { role, account, .. } => (role.as_str(), account.clone()),
    };
    reply(serde_json::json!({ "role": role, "account": account }))
}

async fn explain(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let message = proto::ExplainRequest {
        account_id: query.get("account_id").cloned().unwrap_or_default(),
        rescore: flag(&query, "rescore"),
    };
    reply(
        web.engine
            .explain(request(&headers, message)?)
            .await?
            .into_inner(),
    )
}

async fn list_appeals(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let status = match query.get("status").map(String::as_str) {
        None | Some("") => AppealStatus::Unspecified,
        Some(name) => AppealStatus::from_str_name(name).ok_or_else(|| {
            tonic::Status::invalid_argument(format!(
                "status: `{name}` is not one of OPEN, UPHELD, OVERTURNED"
            ))
        })?,
    };
    let message = proto::ListAppealsRequest {
        status: status as i32,
        account_id: query.get("account_id").cloned().unwrap_or_default(),
    };
    let listed = web
        .appeals
        .list_appeals(request(&headers, message)?)
        .await?;
    reply(listed.into_inner())
}

async fn file_appeal(State(web): State<Web>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let message: proto::FileAppealRequest = parse_body(&body)?;
    let filed = web.appeals.file_appeal(request(&headers, message)?).await?;
    reply(filed.into_inner())
}

async fn get_appeal(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(appeal_id): Path<String>,
) -> ApiResult {
    let message = proto::GetAppealRequest { appeal_id };
    reply(
        web.appeals
            .get_appeal(request(&headers, message)?)
            .await?
            .into_inner(),
    )
}

async fn resolve_appeal(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(appeal_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let mut message: proto::ResolveAppealRequest = parse_body(&body)?;
    message.appeal_id = appeal_id;
    let resolved = web
        .appeals
        .resolve_appeal(request(&headers, message)?)
        .await?;
    reply(resolved.into_inner())
}

/// A query parameter that must be a number when present.
fn number<T: std::str::FromStr + Default>(
    query: &HashMap<String, String>,
    name: &str,
) -> Result<T, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("") => Ok(T::default()),
        Some(text) => text.parse().map_err(|_| {
            ApiError(tonic::Status::invalid_argument(format!(
                "{name}: `{text}` is not a number"
            )))
        }),
    }
}

fn text(query: &HashMap<String, String>, name: &str) -> String {
    query.get(name).cloned().unwrap_or_default()
}

async fn list_cases(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let status = match query.get("status").map(String::as_str) {
        None | Some("") => proto::case::CaseStatus::Unspecified,
        Some(name) => proto::case::CaseStatus::from_str_name(name).ok_or_else(|| {
            tonic::Status::invalid_argument(format!(
                "status: `{name}` is not one of OPEN, RESOLVED"
            ))
        })?,
    };
    let message = proto::ListCasesRequest {
        status: status as i32,
        account_id: text(&query, "account_id"),
        rule_id: text(&query, "rule_id"),
        page_size: number(&query, "page_size")?,
        page_token: text(&query, "page_token"),
    };
    let listed = web.cases.list_cases(request(&headers, message)?).await?;
    reply(listed.into_inner())
}

async fn get_case(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
) -> ApiResult {
    let message = proto::GetCaseRequest { case_id };
    reply(
        web.cases
            .get_case(request(&headers, message)?)
            .await?
            .into_inner(),
    )
}

async fn assign_case(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
) -> ApiResult {
    let message = proto::AssignCaseRequest { case_id };
    reply(
        web.cases
            .assign_case(request(&headers, message)?)
            .await?
            .into_inner(),
    )
}

async fn resolve_case(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let mut message: proto::ResolveCaseRequest = parse_body(&body)?;
    message.case_id = case_id;
    let resolved = web.cases.resolve_case(request(&headers, message)?).await?;
    reply(resolved.into_inner())
}

async fn list_decisions(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let action = match query.get("action").map(String::as_str) {
        None | Some("") => proto::Action::Unspecified,
        Some(name) => proto::Action::from_str_name(name).ok_or_else(|| {
            tonic::Status::invalid_argument(format!(
                "action: `{name}` is not one of ALLOW, CHALLENGE, REVIEW, BLOCK"
            ))
        })?,
    };
    let message = proto::ListDecisionsRequest {
        account_id: text(&query, "account_id"),
        from_ms: number(&query, "from_ms")?,
        to_ms: number(&query, "to_ms")?,
        action: action as i32,
        rule_id: text(&query, "rule_id"),
        min_risk_score: number(&query, "min_risk_score")?,
        page_size: number(&query, "page_size")?,
        page_token: text(&query, "page_token"),
    };
    let listed = web
        .engine
        .list_decisions(request(&headers, message)?)
        .await?;
    reply(listed.into_inner())
}

fn stats_request(query: &HashMap<String, String>) -> Result<proto::RuleStatsRequest, ApiError> {
    Ok(proto::RuleStatsRequest {
        from_ms: number(query, "from_ms")?,
        to_ms: number(query, "to_ms")?,
    })
}

async fn rule_stats(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let message = stats_request(&query)?;
    let stats = web.rules.rule_stats(request(&headers, message)?).await?;
    reply(stats.into_inner())
}

/// The stats `/api/rules/stats` answers and the Rules view's charts of them
/// (`crate::rule_charts`) as SVG text, from one computation:
/// `{"stats": {..}, "hitsPerHour": "<svg ...", "riskScores": .., "stoppedShare": ..}`.
async fn rule_charts(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let message = stats_request(&query)?;
    let stats = web
        .rules
        .rule_stats(request(&headers, message)?)
        .await?
        .into_inner();
    let lang = match query.get("lang").map(String::as_str) {
        Some("zh") => crate::units::Lang::Zh,
        _ => crate::units::Lang::En,
    };
    let drawn = tokio::task::spawn_blocking(move || {
        crate::rule_charts::charts(&stats, lang).map(|charts| ChartsReply { stats, charts })
    })
    .await
    .map_err(|e| tonic::Status::internal(format!("chart task failed: {e}")))?
    .map_err(|e| tonic::Status::internal(e.to_string()))?;
    reply(drawn)
}

#[derive(Serialize)]
struct ChartsReply {
    stats: proto::RuleStatsResponse,
    #[serde(flatten)]
    charts: crate::rule_charts::Charts,
}

async fn backtest(State(web): State<Web>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let message: proto::BacktestRequest = parse_body(&body)?;
    let report = web.rules.backtest(request(&headers, message)?).await?;
    reply(report.into_inner())
}

async fn ship_rules(State(web): State<Web>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let message: proto::ShipRulesRequest = parse_body(&body)?;
    let shipped = web.rules.ship_rules(request(&headers, message)?).await?;
    reply(shipped.into_inner())
}

async fn promote_rules(State(web): State<Web>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let message: proto::PromoteRulesRequest = parse_body(&body)?;
    let promoted = web.rules.promote_rules(request(&headers, message)?).await?;
    reply(promoted.into_inner())
}

async fn set_account_status(State(web): State<Web>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let message: proto::SetAccountStatusRequest = parse_body(&body)?;
    let changed = web
        .accounts
        .set_account_status(request(&headers, message)?)
        .await?;
    reply(changed.into_inner())
}

async fn get_decision(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(decision_id): Path<String>,
) -> ApiResult {
    let message = proto::GetDecisionRequest {
        key: Some(proto::get_decision_request::Key::DecisionId(decision_id)),
    };
    let decision = web.engine.get_decision(request(&headers, message)?).await?;
    reply(decision.into_inner())
}
