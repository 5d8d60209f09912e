//! Runs the server: the engine thread, the group committer, the gRPC services (with health
//! and reflection), the HTTP side, key and rule reloading, and graceful shutdown.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};
use tonic::transport::server::TcpIncoming;
use tonic::Status;

use crate::auth::{KeyError, Keys};
use crate::commit::GroupCommit;
use crate::engine::{Engine, EngineError};
use crate::grpc::{
    self, AccountAdminService, AppealsService, AuditService, CasesService, ModelAdminService,
    RiskEngineService, RuleAdminService, Shared,
};
use crate::proto::account_admin_server::AccountAdminServer;
use crate::proto::appeals_server::AppealsServer;
use crate::proto::{
    self, model_admin_server::ModelAdminServer, risk_engine_server::RiskEngineServer,
    rule_admin_server::RuleAdminServer,
};
use crate::telemetry::Telemetry;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start: {0}")]
    Start(#[from] std::io::Error),
    #[error("cannot start: {0}")]
    Engine(#[from] EngineError),
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
    /// Folder watched for rule changes (reloaded within a second of a change); none
    /// turns watching off (ReloadRules and SIGHUP still work).
    pub watch_rules: Option<PathBuf>,
    /// Model file watched the same way (ReloadModel and SIGHUP work without it).
    pub watch_model: Option<PathBuf>,
}

impl ServeOptions {
    /// The options `config` asks for. Only configured rule and model paths are watched: what
    /// the binary carries cannot change.
    pub fn from_config(config: &crate::config::Config) -> ServeOptions {
        let watch = |path: &Option<PathBuf>| path.clone().filter(|_| config.watch_rules);
        ServeOptions {
            commit_gather: Duration::from_micros(config.commit_delay_us),
            shutdown_grace: Duration::from_millis(config.shutdown_grace_ms),
            watch_rules: watch(&config.rules_dir),
            watch_model: watch(&config.model_path).filter(|_| config.model_enabled),
        }
    }
}

/// Serves until `shutdown` resolves, then lets in-flight calls finish, stops the engine
/// thread and flushes sled.
pub async fn run(
    listeners: Listeners,
    mut engine: Engine,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let journal = engine.start_journal()?;
    let commit = GroupCommit::start(engine.db().clone(), Some(journal), options.commit_gather)?;
    let decisions = engine.decisions();
    let accounts = engine.accounts();
    let telemetry = engine.telemetry();
    let db = engine.db().clone();
    let keys = Keys::open(engine.data_dir())?;
    if keys.is_open() {
        tracing::warn!(
            "NO API KEYS: every call is allowed. This is for local development only; \
             create keys with `fengkong keys add` before exposing this server"
        );
    }
    let (handle, engine_thread) = EngineHandle::spawn(engine, commit.clone())?;
    let shared = Shared {
        engine: handle.clone(),
        decisions,
        accounts,
        keys: keys.clone(),
        telemetry: telemetry.clone(),
    };

    let mut background = vec![tokio::spawn(refresh_keys(keys.clone()))];
    if let Some(dir) = options.watch_rules {
        background.push(tokio::spawn(watch(handle.clone(), dir, Reload::Rules)));
    }
    if let Some(file) = options.watch_model {
        background.push(tokio::spawn(watch(handle.clone(), file, Reload::Model)));
    }
    #[cfg(unix)]
    background.push(tokio::spawn(reload_on_sighup(handle.clone())));

    // One signal fans out to both servers.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let http = listeners.http.map(|listener| {
        let mut stopped = stopped.clone();
        tokio::spawn(crate::http::serve(
            listener,
            shared.clone(),
            db,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ))
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<RiskEngineServer<RiskEngineService>>()
        .await;
    // v1 for current tools, v1alpha for older grpcurl and IDEs that only speak it.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) =
        (reflection().build_v1()?, reflection().build_v1alpha()?);
    let risk_engine = RiskEngineService::new(shared.clone());
    let appeals = AppealsService::new(shared.clone());
    let cases = CasesService::new(shared.clone());
    let audit = AuditService::new(shared.clone());
    let account_admin = AccountAdminService::new(shared);
    let rule_admin = RuleAdminService::new(handle.clone(), keys.clone());
    let model_admin = ModelAdminService::new(handle, keys);

    let incoming = TcpIncoming::from(listeners.grpc).with_nodelay(Some(true));
    let signalled = Arc::new(Notify::new());
    let on_signal = Arc::clone(&signalled);
    let serve = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(RiskEngineServer::new(risk_engine))
        .add_service(RuleAdminServer::new(rule_admin))
        .add_service(ModelAdminServer::new(model_admin))
        .add_service(AppealsServer::new(appeals))
        .add_service(AccountAdminServer::new(account_admin))
        .add_service(proto::cases_server::CasesServer::new(cases))
        .add_service(proto::audit_server::AuditServer::new(audit))
        // Without TCP_NODELAY small responses wait on delayed ACKs: ~10 ms per call.
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            let _ = stop.send(true);
            on_signal.notify_one();
        });
    // Graceful shutdown waits for clients to hang up; one that never does must not keep
    // the server alive forever, so after the grace period the connections are dropped.
    let shutdown_grace = options.shutdown_grace;
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
    // Once the services and the background tasks are gone, no job sender is left: the
    // engine thread drains what is queued and exits; then one last flush.
    for task in background {
        task.abort();
        let _ = task.await;
    }
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

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

type Work = Box<dyn FnOnce(&mut Engine) + Send>;

/// The engine runs on its own thread: sled writes and model inference never block the async
/// runtime, and payments are processed one at a time in arrival order. Everything that
/// touches it (scoring, outcomes, reloads) is sent here as a closure, so a reload swaps the
/// rules between two payments, never during one.
#[derive(Clone)]
pub struct EngineHandle {
    jobs: mpsc::Sender<Work>,
    commit: GroupCommit,
    telemetry: Arc<Telemetry>,
}

impl EngineHandle {
    fn spawn(
        mut engine: Engine,
        commit: GroupCommit,
    ) -> std::io::Result<(EngineHandle, JoinHandle<()>)> {
        let telemetry = engine.telemetry();
        let (jobs, mut rx) = mpsc::channel::<Work>(4096);
        let thread = std::thread::Builder::new()
            .name("fengkong-engine".into())
            .spawn(move || {
                while let Some(work) = rx.blocking_recv() {
                    work(&mut engine);
                }
                // Not needed for correctness (the decision log covers it), but it spares
                // the next start a replay.
                if let Err(e) = engine.checkpoint() {
                    tracing::warn!(error = %e, "final feature checkpoint failed; the next start replays the log");
                }
            })?;
        Ok((
            EngineHandle {
                jobs,
                commit,
                telemetry,
            },
            thread,
        ))
    }

    /// Runs `work` on the engine thread. If the caller has gone (deadline, cancel) before
    /// its turn comes, the work is skipped: a retry will do it.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> Result<R, Status> {
        self.submit(move |engine, reply| {
            let _ = reply.send(work(engine));
        })
        .await
    }

    /// Like `run` for work that writes: answers only once the writes are durable. The
    /// committer answers, so the caller is woken once.
    pub async fn run_durable<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Engine) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, Status> {
        let commit = self.commit.clone();
        let telemetry = Arc::clone(&self.telemetry);
        self.submit(move |engine, reply| {
            engine.take_journaled();
            let value = match work(engine) {
                Ok(value) => value,
                Err(e) => return drop(reply.send(Err(grpc::status(e)))),
            };
            let written = Instant::now();
            commit.when_durable(engine.take_journaled(), move |durable| {
                telemetry.stage("commit", written.elapsed());
                let _ = reply.send(durable.map(|()| value).map_err(grpc::commit_status));
            });
        })
        .await?
    }

    async fn submit<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Engine, oneshot::Sender<R>) + Send + 'static,
    ) -> Result<R, Status> {
        let (reply, answer) = oneshot::channel();
        let job: Work = Box::new(move |engine| {
            if !reply.is_closed() {
                job(engine, reply);
            }
        });
        let gone = || Status::unavailable("the engine is shutting down");
        self.jobs.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }
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

#[derive(Debug, Clone, Copy)]
enum Reload {
    Rules,
    Model,
}

async fn reload(engine: &EngineHandle, what: Reload, trigger: &str) {
    let result = match what {
        Reload::Rules => {
            engine
                .run(|e| e.reload_rules().map(|r| (r.version, r.changed)))
                .await
        }
        Reload::Model => engine.run(|e| e.reload_model()).await,
    };
    match result {
        Ok(Ok((version, true))) => tracing::info!(trigger, ?what, %version, "reloaded"),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::error!(trigger, ?what, error = %e, "not reloaded; keeping the last good one")
        }
        Err(e) => tracing::warn!(trigger, ?what, error = %e, "reload not run"),
    }
}

/// Polls the rules folder (or the model file) once a second; any change (a file added,
/// removed, rewritten) triggers a reload. Polling is enough at this scale and behaves the
/// same on every filesystem, including network mounts where change notifications are
/// unreliable.
async fn watch(engine: EngineHandle, dir: PathBuf, what: Reload) {
    let fingerprint =
        move |dir: PathBuf| tokio::task::spawn_blocking(move || dir_fingerprint(&dir));
    let mut last = fingerprint(dir.clone()).await.ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = fingerprint(dir.clone()).await.ok();
        if now != last {
            last = now;
            reload(&engine, what, "file change").await;
        }
    }
}

/// Names, sizes and modification times of `path` or of every file under it.
fn dir_fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    if let Ok(m) = std::fs::metadata(dir) {
        if m.is_file() {
            return vec![(dir.to_owned(), m.len(), m.modified().ok())];
        }
    }
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) => out.push((path, m.len(), m.modified().ok())),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

#[cfg(unix)]
async fn reload_on_sighup(engine: EngineHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload rules with RuleAdmin.ReloadRules");
        return;
    };
    while hangups.recv().await.is_some() {
        reload(&engine, Reload::Rules, "SIGHUP").await;
        reload(&engine, Reload::Model, "SIGHUP").await;
    }
}
