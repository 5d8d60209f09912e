//! The gRPC boundary: wires the engine thread, the group committer, health and reflection
//! into one tonic server, and maps every library error to a gRPC status in one place.

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::commit::{CommitError, GroupCommit};
use crate::engine::{self, Engine, EngineError};
use crate::proto::{self, risk_engine_server::RiskEngineServer};
use crate::store::DecisionStore;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start: {0}")]
    Start(#[from] std::io::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves until `shutdown` resolves, then lets in-flight calls finish, stops the engine
/// thread and flushes sled. Binding is the caller's job, so tests can pass port 0.
pub async fn run(
    listener: TcpListener,
    engine: Engine,
    commit_gather: Duration,
    shutdown_grace: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let commit = GroupCommit::start(engine.db().clone(), commit_gather)?;
    let decisions = engine.decisions();
    let (jobs, engine_thread) = spawn_engine(engine, commit.clone())?;
    let service = RiskEngineService {
        jobs,
        decisions,
        commit: commit.clone(),
    };

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
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.await;
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
    let _ = engine_thread.join();
    commit.stop();
    tracing::info!("stopped; all decisions flushed");
    Ok(served?)
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
        self.commit.wait(ticket).await.map_err(commit_status)?;
        Ok(value)
    }
}

#[tonic::async_trait]
impl proto::risk_engine_server::RiskEngine for RiskEngineService {
    async fn score(
        &self,
        request: Request<proto::ScoreRequest>,
    ) -> Result<Response<proto::ScoreResponse>, Status> {
        let req = request.into_inner();
        self.submit(|reply| Job::Score(Box::new(req), reply))
            .await
            .map(Response::new)
    }

    async fn get_decision(
        &self,
        request: Request<proto::GetDecisionRequest>,
    ) -> Result<Response<proto::Decision>, Status> {
        let store = self.decisions.clone();
        let req = request.into_inner();
        tokio::task::spawn_blocking(move || engine::get_decision(&store, &req))
            .await
            .map_err(|e| Status::internal(format!("lookup task failed: {e}")))?
            .map(Response::new)
            .map_err(status)
    }

    async fn report_outcome(
        &self,
        request: Request<proto::ReportOutcomeRequest>,
    ) -> Result<Response<proto::ReportOutcomeResponse>, Status> {
        let req = request.into_inner();
        self.submit(|reply| Job::Outcome(req, reply))
            .await
            .map(Response::new)
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
        EngineError::Store(_) | EngineError::Open { .. } => {
            tracing::error!(error = %message, "storage failure");
            Status::unavailable(message)
        }
    }
}

fn commit_status(error: CommitError) -> Status {
    tracing::error!(error = %error, "decision not made durable");
    Status::unavailable(format!("decision not stored durably, retry: {error}"))
}
