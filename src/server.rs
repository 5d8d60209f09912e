//! The gRPC boundary: wires the engine thread, the group committer, health and reflection
//! into one tonic server, and maps every library error to a gRPC status in one place.

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::auth::{AuthError, Caller, KeyError, Keys, Role};
use crate::commit::{CommitError, GroupCommit};
use crate::engine::{self, Engine, EngineError};
use crate::proto::{self, risk_engine_server::RiskEngineServer};
use crate::store::DecisionStore;
use crate::telemetry::Telemetry;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start: {0}")]
    Start(#[from] std::io::Error),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Already-bound sockets: binding is the caller's job, so tests can use port 0.
pub struct Listeners {
    pub grpc: TcpListener,
    /// `/metrics` and `/healthz`; none turns HTTP off.
    pub http: Option<TcpListener>,
}

pub struct ServeOptions {
    /// How long the committer lingers to gather writes into one flush.
    pub commit_gather: Duration,
    /// How long in-flight calls and idle clients get after the shutdown signal.
    pub shutdown_grace: Duration,
}

/// Serves until `shutdown` resolves, then lets in-flight calls finish, stops the engine
/// thread and flushes sled.
pub async fn run(
    listeners: Listeners,
    engine: Engine,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let ServeOptions {
        commit_gather,
        shutdown_grace,
    } = options;
    let commit = GroupCommit::start(engine.db().clone(), commit_gather)?;
    let decisions = engine.decisions();
    let telemetry = engine.telemetry();
    let db = engine.db().clone();
    let data_dir = engine.data_dir().to_owned();
    let (jobs, engine_thread) = spawn_engine(engine, commit.clone())?;
    let keys = Keys::open(&data_dir)?;
    if keys.is_open() {
        tracing::warn!(
            "NO API KEYS: every call is allowed. This is for local development only; \
             create keys with `fengkong keys add` before exposing this server"
        );
    }
    let refresher = tokio::spawn(refresh_keys(keys.clone()));
    let service = RiskEngineService {
        jobs,
        decisions,
        commit: commit.clone(),
        telemetry: Arc::clone(&telemetry),
        keys,
    };
    // One signal fans out to both servers.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let http = listeners.http.map(|listener| {
        let mut stopped = stopped.clone();
        tokio::spawn(crate::http::serve(listener, telemetry, db, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }))
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<RiskEngineServer<RiskEngineService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let signalled = Arc::new(Notify::new());
    let on_signal = Arc::clone(&signalled);
    let serve = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(RiskEngineServer::new(service))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listeners.grpc), async move {
            shutdown.await;
            let _ = stop.send(true);
            on_signal.notify_one();
        });
    // Graceful shutdown waits for clients to hang up; one that never does must not keep
    // the server alive forever, so after the grace period the connections are dropped.
    let served = tokio::select! {
        served = serve => served,
        _ = async {
            signalled.notified().await;
            tokio::time::sleep(shutdown_grace).await;
        } => {
            tracing::warn!(?shutdown_grace, "clients still connected after the grace period; closing them");
            Ok(())
        }
    };
    // The service (and with it the job sender) is gone once serve returns, so the engine
    // thread drains what is queued and exits; then one last flush.
    refresher.abort();
    let _ = engine_thread.join();
    commit.stop();
    if let Some(http) = http {
        match tokio::time::timeout(shutdown_grace, http).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server"),
            Err(_) => tracing::warn!("http server did not stop within the grace period"),
            _ => {}
        }
    }
    tracing::info!("stopped; all decisions flushed");
    Ok(served?)
}

/// Picks up `fengkong keys add/revoke` made while the server runs.
async fn refresh_keys(keys: Keys) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let keys = keys.clone();
        match tokio::task::spawn_blocking(move || keys.refresh()).await {
            Ok(Ok(true)) => tracing::info!("keys file changed; reloaded"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "keys file unreadable; keeping the keys loaded before")
            }
            _ => {}
        }
    }
}

type Reply<T> = oneshot::Sender<Result<(T, u64), EngineError>>;

enum Job {
    Score(Box<proto::ScoreRequest>, Reply<proto::ScoreResponse>),
    Outcome(
        proto::ReportOutcomeRequest,
        Reply<proto::ReportOutcomeResponse>,
    ),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The engine runs on its own thread: sled writes and later model inference never block
/// the async runtime, and payments are processed one at a time in arrival order.
fn spawn_engine(
    mut engine: Engine,
    commit: GroupCommit,
) -> std::io::Result<(mpsc::Sender<Job>, JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel::<Job>(4096);
    let handle = std::thread::Builder::new()
        .name("fengkong-engine".into())
        .spawn(move || {
            while let Some(job) = rx.blocking_recv() {
                match job {
                    Job::Score(req, reply) => {
                        // The caller gave up (deadline or cancel) before we started: skip the
                        // work; a retry will score it.
                        if reply.is_closed() {
                            continue;
                        }
                        let result = engine.score(&req, now_ms()).map(|s| s.response);
                        let _ = reply.send(result.map(|r| (r, commit.ticket())));
                    }
                    Job::Outcome(req, reply) => {
                        if reply.is_closed() {
                            continue;
                        }
                        let result = engine.report_outcome(&req, now_ms());
                        let _ = reply.send(result.map(|r| (r, commit.ticket())));
                    }
                }
            }
        })?;
    Ok((tx, handle))
}

struct RiskEngineService {
    jobs: mpsc::Sender<Job>,
    decisions: DecisionStore,
    commit: GroupCommit,
    telemetry: Arc<Telemetry>,
    keys: Keys,
}

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

impl RiskEngineService {
    /// Sends a job to the engine thread and answers only once its writes are durable.
    async fn submit<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, Status> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(job(reply))
            .await
            .map_err(|_| Status::unavailable("the engine is shutting down"))?;
        let (value, ticket) = answer
            .await
            .map_err(|_| Status::unavailable("the engine is shutting down"))?
            .map_err(status)?;
        let waited = Instant::now();
        self.commit.wait(ticket).await.map_err(commit_status)?;
        self.telemetry.stage("commit", waited.elapsed());
        Ok(value)
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
        Unavailable => "UNAVAILABLE",
        Internal => "INTERNAL",
        _ => "OTHER",
    }
}

#[tonic::async_trait]
impl proto::risk_engine_server::RiskEngine for RiskEngineService {
    async fn score(
        &self,
        request: Request<proto::ScoreRequest>,
    ) -> Result<Response<proto::ScoreResponse>, Status> {
        let started = Instant::now();
        let result = match authorize(&self.keys, &request, &[Role::Gateway], "score payments") {
            Ok(_) => {
                let req = request.into_inner();
                self.submit(|reply| Job::Score(Box::new(req), reply)).await
            }
            Err(status) => Err(status),
        };
        self.record("Score", started, &result, |r: &proto::ScoreResponse| {
            r.action().as_str_name()
        });
        result.map(Response::new)
    }

    async fn get_decision(
        &self,
        request: Request<proto::GetDecisionRequest>,
    ) -> Result<Response<proto::Decision>, Status> {
        let started = Instant::now();
        let roles = [Role::Gateway, Role::Analyst];
        let result = match authorize(&self.keys, &request, &roles, "read decisions") {
            Ok(_) => {
                let store = self.decisions.clone();
                let req = request.into_inner();
                tokio::task::spawn_blocking(move || engine::get_decision(&store, &req))
                    .await
                    .map_err(|e| Status::internal(format!("lookup task failed: {e}")))
                    .and_then(|r| r.map_err(status))
            }
            Err(status) => Err(status),
        };
        self.record("GetDecision", started, &result, |_| "");
        result.map(Response::new)
    }

    async fn report_outcome(
        &self,
        request: Request<proto::ReportOutcomeRequest>,
    ) -> Result<Response<proto::ReportOutcomeResponse>, Status> {
        let started = Instant::now();
        let roles = [Role::Gateway, Role::Analyst];
        let result = match authorize(&self.keys, &request, &roles, "report outcomes") {
            Ok(_) => {
                let req = request.into_inner();
                self.submit(|reply| Job::Outcome(req, reply)).await
            }
            Err(status) => Err(status),
        };
        self.record("ReportOutcome", started, &result, |_| "");
        result.map(Response::new)
    }
}

/// The one place where library errors become gRPC statuses.
fn status(error: EngineError) -> Status {
    let message = error.to_string();
    match error {
        EngineError::Invalid(_) => Status::invalid_argument(message),
        EngineError::Conflict(_) => Status::already_exists(message),
        EngineError::UnknownPayment(_) | EngineError::UnknownDecision(_) => {
            Status::not_found(message)
        }
        EngineError::Rules { .. } | EngineError::FeatureFile(_) => {
            Status::failed_precondition(message)
        }
        EngineError::Store(_) | EngineError::Features(_) | EngineError::Open { .. } => {
            tracing::error!(error = %message, "storage failure");
            Status::unavailable(message)
        }
    }
}

fn commit_status(error: CommitError) -> Status {
    tracing::error!(error = %error, "decision not made durable");
    Status::unavailable(format!("decision not stored durably, retry: {error}"))
}
