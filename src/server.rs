//! Runs the server: the engine thread, the group committer, the sled writer behind it, the
//! gRPC services (with health and reflection), the HTTP side, key and rule reloading, and
//! graceful shutdown.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::Status;

use crate::auth::{KeyError, Keys, Refreshed};
use crate::commit::{Behind, Done, GroupCommit};
use crate::connections::ConnectionLimits;
use crate::engine::{Engine, EngineError};
use crate::grpc::{
    self, AccountAdminService, AppealsService, AuditService, CasesService, ModelAdminService,
    RiskEngineService, RuleAdminService, Shared,
};
use crate::grpc_layer::Deadline;
use crate::health::Health;
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
    /// The merchant and analyst page; none turns it off.
    pub http: Option<TcpListener>,
    /// `/metrics` and `/healthz`, for operators; none turns them off.
    pub metrics: Option<TcpListener>,
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
    /// `--insecure-no-keys`: run open when the keys file is missing or empty even though
    /// this data dir has had keys (see `auth`).
    pub insecure_no_keys: bool,
    /// Connection caps and timeouts of every listener.
    pub connections: ConnectionLimits,
    /// Below this much free space on the data dir's disk, writes are refused (see `health`).
    pub min_free_disk_mib: u64,
    /// Longest a Score or outcome may wait for the engine before it is refused instead.
    pub max_queue_wait: Duration,
    /// `sled_writer_delay_ms`: a drill setting that holds the sled writer back (zero).
    pub sled_writer_delay: Duration,
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
            insecure_no_keys: false,
            connections: config.connections.clone(),
            min_free_disk_mib: config.min_free_disk_mib,
            max_queue_wait: Duration::from_millis(config.max_queue_wait_ms),
            sled_writer_delay: Duration::from_millis(config.sled_writer_delay_ms),
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
    let decisions = engine.decisions();
    let behind = decisions.tail().map(|tail| Behind {
        tail: Arc::clone(tail),
        tree: decisions.sled_tree().clone(),
    });
    let sled_writer = match &behind {
        Some(b) => Some(crate::writer::spawn(
            b.tree.clone(),
            Arc::clone(&b.tail),
            options.sled_writer_delay,
        )?),
        None => None,
    };
    let commit = GroupCommit::start(
        engine.db().clone(),
        Some(journal),
        behind.clone(),
        options.commit_gather,
    )?;
    let accounts = engine.accounts();
    let telemetry = engine.telemetry();
    let db = engine.db().clone();
    let health = Health::new(
        engine.data_dir(),
        options.min_free_disk_mib,
        telemetry.clone(),
    );
    // Before the first call, so a server started on a full disk refuses writes at once.
    health.check(&db);
    let keys = Keys::open(engine.data_dir(), engine.db(), options.insecure_no_keys)?;
    if let Some(reason) = keys.closed_reason() {
        tracing::error!(%reason, "API keys unreadable: refusing every call until the keys file is restored");
    } else if keys.is_open() {
        tracing::warn!(
            "NO API KEYS: every call is allowed. This is for local development only; \
             create keys with `fengkong keys add` before exposing this server"
        );
    }
    let (handle, engine_thread) = EngineHandle::spawn(
        engine,
        commit.clone(),
        health.clone(),
        options.max_queue_wait,
    )?;
    let shared = Shared {
        engine: handle.clone(),
        decisions,
        accounts,
        keys: keys.clone(),
        telemetry: telemetry.clone(),
    };

    let mut background = vec![
        tokio::spawn(refresh_keys(keys.clone())),
        tokio::spawn(health.clone().watch(db.clone())),
    ];
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
    let until_stopped = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let mut http = Vec::new();
    if let Some(listener) = listeners.http {
        let (shared, limits, stopped) =
            (shared.clone(), options.connections.clone(), until_stopped());
        http.push(tokio::spawn(async move {
            crate::http::serve_page(listener, shared, &limits, stopped).await
        }));
    }
    if let Some(listener) = listeners.metrics {
        let (telemetry, limits, stopped) = (
            telemetry.clone(),
            options.connections.clone(),
            until_stopped(),
        );
        let (db, health) = (db.clone(), health.clone());
        http.push(tokio::spawn(async move {
            crate::http::serve_metrics(listener, telemetry, db, health, &limits, stopped).await
        }));
    }

    let (reporter, health_service) = tonic_health::server::health_reporter();
    // NOT_SERVING while writes are refused (a Score could not be stored), SERVING again
    // when they are taken: load balancers move gateways elsewhere meanwhile.
    background.push(tokio::spawn(report_health(reporter, health.subscribe())));
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
    let rule_admin = RuleAdminService::new(shared.clone());
    let account_admin = AccountAdminService::new(shared);
    let model_admin = ModelAdminService::new(handle, keys);

    let limits = &options.connections;
    let incoming = ReceiverStream::new(crate::connections::accept(
        listeners.grpc,
        "grpc",
        limits,
        telemetry.clone(),
    ))
    .map(Ok::<_, std::io::Error>);
    let signalled = Arc::new(Notify::new());
    let on_signal = Arc::clone(&signalled);
    let serve = tonic::transport::Server::builder()
        .layer(crate::grpc_layer::StatusLayer)
        // Dead peers are found by keepalive pings; a live one answers them, which keeps its
        // guarded socket from timing out however long it sits idle between payments.
        .http2_keepalive_interval(Some(limits.keepalive()))
        .http2_keepalive_timeout(Some(limits.keepalive()))
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
    // After the committer: every entry is durable (or refused) by now; the writer applies
    // what is left and exits, and the flush below makes sled hold it all.
    if let (Some(behind), Some(writer)) = (&behind, sled_writer) {
        behind.tail.stop();
        let _ = writer.join();
    }
    for http in http {
        match tokio::time::timeout(shutdown_grace, http).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server"),
            Err(_) => tracing::warn!("http server did not stop within the grace period"),
            _ => {}
        }
    }
    // Say what is true: on a full disk the last flush fails, and "all flushed" would lie.
    match db.flush() {
        Ok(_) => tracing::info!("stopped; all decisions flushed"),
        Err(e) => tracing::error!(
            error = %e,
            "stopped, but the final flush FAILED; decisions were acknowledged only once \
             durable (journal or sled), so the next start restores every acknowledged one"
        ),
    }
    Ok(served?)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A job for the engine thread; it leaves the callbacks of its writes in the batch's list,
/// which goes to the committer when the batch is done.
type Work = Box<dyn FnOnce(&mut Engine, &mut Vec<(bool, Done)>) + Send>;

/// Most jobs the engine thread takes from its queue per wakeup. Bounded, so the first
/// job's answer never waits behind a long batch of others before its journal sync starts.
const ENGINE_BATCH: usize = 32;

/// The engine runs on its own thread: sled writes and model inference never block the async
/// runtime, and payments are processed one at a time in arrival order. Everything that
/// touches it (scoring, outcomes, reloads) is sent here as a closure, so a reload swaps the
/// rules between two payments, never during one.
///
/// Scores and outcomes pass admission control first (see [`Admission`]), and every write
/// is refused at once while [`Health`] says the disk cannot take it.
#[derive(Clone)]
pub struct EngineHandle {
    jobs: mpsc::Sender<Work>,
    telemetry: Arc<Telemetry>,
    health: Health,
    admission: Arc<Admission>,
}

/// Bounds the engine queue by time: a call is taken only if the work queued ahead of it,
/// at the measured service time per job, plus the durable write, fits both the caller's
/// deadline (`grpc-timeout`) and `max_queue_wait`. Otherwise it is refused at once with
/// RESOURCE_EXHAUSTED and a retry-after hint, so a gateway under overload gets a fast
/// answer it can fall back on instead of a timeout, and the calls that are taken keep
/// their normal latency. The estimates follow the load, so it recovers by itself.
pub struct Admission {
    /// Jobs sent to the engine thread and not yet started.
    queued: AtomicUsize,
    /// Moving averages, in nanoseconds: engine work per job, and the durable write after.
    service_ns: AtomicU64,
    commit_ns: AtomicU64,
    max_queue_wait: Duration,
}

/// Weight of a new sample in the moving averages (1/16: a few hundred jobs of history).
const EWMA_SHIFT: u32 = 4;

fn ewma(average: &AtomicU64, sample: Duration) {
    let sample = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
    let old = average.load(Ordering::Relaxed);
    let new = match old {
        0 => sample,
        _ => old - (old >> EWMA_SHIFT) + (sample >> EWMA_SHIFT),
    };
    average.store(new, Ordering::Relaxed);
}

impl Admission {
    fn new(max_queue_wait: Duration) -> Admission {
        Admission {
            queued: AtomicUsize::new(0),
            service_ns: AtomicU64::new(0),
            commit_ns: AtomicU64::new(0),
            max_queue_wait,
        }
    }

    /// How long a call sent now would take: the queue ahead of it and its own work, then
    /// its durable write.
    pub fn expected(&self) -> Duration {
        let queued = self.queued.load(Ordering::Relaxed) as u64;
        let service = self.service_ns.load(Ordering::Relaxed);
        let commit = self.commit_ns.load(Ordering::Relaxed);
        Duration::from_nanos(
            service
                .saturating_mul(queued.saturating_add(1))
                .saturating_add(commit),
        )
    }

    /// Ok if the call can be served within `deadline` and the queue bound; otherwise the
    /// RESOURCE_EXHAUSTED status to answer at once.
    fn admit(&self, deadline: Option<Deadline>) -> Result<(), Status> {
        // With nothing queued a call is always taken: it keeps the estimates current, so
        // one slow spell (a long fsync) cannot keep every later call out.
        if self.queued.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let expected = self.expected();
        let wait =
            expected.saturating_sub(Duration::from_nanos(self.commit_ns.load(Ordering::Relaxed)));
        let left = deadline.map(|d| d.0.saturating_duration_since(tokio::time::Instant::now()));
        let fits_deadline = left.is_none_or(|left| expected <= left);
        if fits_deadline && wait <= self.max_queue_wait {
            return Ok(());
        }
        // When the queue ahead will have drained to what the bound allows.
        let retry_after = wait
            .saturating_sub(self.max_queue_wait)
            .max(Duration::from_millis(1));
        Err(grpc::overloaded(
            format!(
                "overloaded: about {} ms of work is queued (bound {} ms{}); retry after {} ms \
                 or fall back",
                wait.as_millis(),
                self.max_queue_wait.as_millis(),
                match left {
                    Some(left) => format!(", {} ms left of the deadline", left.as_millis()),
                    None => String::new(),
                },
                retry_after.as_millis()
            ),
            retry_after,
        ))
    }
}

impl EngineHandle {
    fn spawn(
        mut engine: Engine,
        commit: GroupCommit,
        health: Health,
        max_queue_wait: Duration,
    ) -> std::io::Result<(EngineHandle, JoinHandle<()>)> {
        let telemetry = engine.telemetry();
        let (jobs, mut rx) = mpsc::channel::<Work>(4096);
        let thread = std::thread::Builder::new()
            .name("fengkong-engine".into())
            .spawn(move || {
                // One wakeup per batch: whatever queued meanwhile is taken together, and the
                // committer is handed all its writes at once.
                let mut batch = Vec::with_capacity(ENGINE_BATCH);
                let mut writes = Vec::with_capacity(ENGINE_BATCH);
                while rx.blocking_recv_many(&mut batch, ENGINE_BATCH) > 0 {
                    for work in batch.drain(..) {
                        work(&mut engine, &mut writes);
                    }
                    commit.when_all_durable(std::mem::take(&mut writes));
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
                telemetry,
                health,
                admission: Arc::new(Admission::new(max_queue_wait)),
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
        self.submit(move |engine, _, reply| {
            let _ = reply.send(work(engine));
        })
        .await
    }

    /// Like `run` for work that writes: answers only once the writes are durable. The
    /// committer answers, so the caller is woken once. Refused at once while writes are.
    pub async fn run_durable<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Engine) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, Status> {
        self.health.check_write()?;
        self.durable(work).await
    }

    /// `run_durable` for the calls a gateway makes at volume (Score, ReportOutcome): also
    /// refused at once (RESOURCE_EXHAUSTED) when it could not be answered within
    /// `deadline` and the queue bound.
    pub async fn run_durable_within<T: Send + 'static>(
        &self,
        deadline: Option<Deadline>,
        work: impl FnOnce(&mut Engine) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, Status> {
        self.health.check_write()?;
        if let Err(refused) = self.admission.admit(deadline) {
            self.telemetry.overload_refusals.inc();
            return Err(refused);
        }
        self.durable(work).await
    }

    async fn durable<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Engine) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, Status> {
        let telemetry = Arc::clone(&self.telemetry);
        let health = self.health.clone();
        let admission = Arc::clone(&self.admission);
        self.submit(move |engine, writes, reply| {
            engine.take_journaled();
            let value = match work(engine) {
                Ok(value) => value,
                Err(e) => {
                    if e.is_storage() {
                        health.write_failed(&e.to_string());
                    }
                    return drop(reply.send(Err(grpc::status(e))));
                }
            };
            let written = Instant::now();
            let done: Done = Box::new(move |durable| {
                let took = written.elapsed();
                telemetry.stage("commit", took);
                ewma(&admission.commit_ns, took);
                if let Err(e) = &durable {
                    health.write_failed(&e.to_string());
                }
                let _ = reply.send(durable.map(|()| value).map_err(grpc::commit_status));
            });
            writes.push((engine.take_journaled(), done));
        })
        .await?
    }

    async fn submit<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Engine, &mut Vec<(bool, Done)>, oneshot::Sender<R>) + Send + 'static,
    ) -> Result<R, Status> {
        let (reply, answer) = oneshot::channel();
        let admission = Arc::clone(&self.admission);
        let job: Work = Box::new(move |engine, writes| {
            admission.queued.fetch_sub(1, Ordering::Relaxed);
            if !reply.is_closed() {
                let started = Instant::now();
                job(engine, writes, reply);
                ewma(&admission.service_ns, started.elapsed());
            }
        });
        let gone = || Status::unavailable("the engine is shutting down");
        self.admission.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(job).await.is_err() {
            self.admission.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(gone());
        }
        answer.await.map_err(|_| gone())
    }
}

/// Mirrors `Health` into the gRPC health service, for the whole server ("") and RiskEngine.
async fn report_health(
    reporter: tonic_health::server::HealthReporter,
    mut serving: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let status = match *serving.borrow_and_update() {
            true => tonic_health::ServingStatus::Serving,
            false => tonic_health::ServingStatus::NotServing,
        };
        reporter.set_service_status("", status).await;
        reporter
            .set_service_status(
                <RiskEngineServer<RiskEngineService> as tonic::server::NamedService>::NAME,
                status,
            )
            .await;
        if serving.changed().await.is_err() {
            return;
        }
    }
}

/// Picks up `fengkong keys add/revoke` made while the server runs. While the server is
/// closed (keys unreadable) it says so at ERROR every minute, not only once.
async fn refresh_keys(keys: Keys) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        let keys = keys.clone();
        let was_closed = keys.closed_reason().is_some();
        let refreshed = tokio::task::spawn_blocking({
            let keys = keys.clone();
            move || keys.refresh()
        })
        .await;
        match refreshed {
            Ok(Ok(Refreshed::Reloaded)) if was_closed => {
                tracing::warn!("keys file readable again; calls are checked against it")
            }
            Ok(Ok(Refreshed::Reloaded)) => tracing::info!("keys file changed; reloaded"),
            Ok(Ok(Refreshed::Closed(reason))) => tracing::error!(
                %reason,
                "API keys unreadable: refusing every call until the keys file is restored"
            ),
            Ok(Ok(Refreshed::Unchanged)) => {
                if let Some(reason) = keys.closed_reason().filter(|_| ticks.is_multiple_of(60)) {
                    tracing::error!(%reason, "still refusing every call: API keys unreadable");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "keys check failed"),
            Err(_) => {}
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
