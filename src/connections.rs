//! Connections in: one accept loop per listener that caps open connections and closes
//! those that send nothing, so idle or slow clients (slowloris, connection floods) can
//! never use up the process's file descriptors, which the journal and sled need to stay
//! durable, nor starve Score of connections.
//!
//! Every accepted socket is wrapped in [`Guarded`], which holds a slot of its listener's
//! cap and fails its own reads once it has been silent too long: until its first byte for
//! `handshake_timeout`, afterwards for `idle_timeout` (HTTP/2 keepalive pings that a live
//! client answers count as traffic, so a healthy gateway connection is never cut). HTTP/1
//! request heads must also arrive whole within `header_read_timeout` (hyper's timer).
//!
//! The page and metrics listeners are served here with hyper directly (`hyper-util`, the
//! connection builder axum and tonic use themselves), because axum's `serve` has neither a
//! header timeout nor a cap; the gRPC listener feeds tonic the same guarded sockets.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::telemetry::{ListenerLabels, Telemetry};

/// Limits of one listener; `[connections]` in the config applies them to every listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Open connections per listener; past it a new connection is closed at once.
    pub max_connections: usize,
    /// How long a new connection may stay silent before its first byte.
    pub handshake_timeout_ms: u64,
    /// How long an established connection may stay silent (no byte in or out).
    pub idle_timeout_ms: u64,
    /// How long an HTTP/1 request head may take to arrive whole.
    pub header_read_timeout_ms: u64,
    /// HTTP/2 keepalive ping interval on gRPC connections (a peer that does not answer
    /// within the same time is closed).
    pub keepalive_ms: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            // Three listeners at 256 stay well below the usual 1024 descriptors, leaving
            // the journal, sled and the model files theirs.
            max_connections: 256,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 120_000,
            header_read_timeout_ms: 10_000,
            keepalive_ms: 30_000,
        }
    }
}

impl ConnectionLimits {
    fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    pub fn keepalive(&self) -> Duration {
        Duration::from_millis(self.keepalive_ms)
    }
}

/// A socket that holds a slot of its listener's cap (released when it is dropped) and
/// times itself out when silent.
pub struct Guarded {
    stream: TcpStream,
    remote: Option<SocketAddr>,
    local: Option<SocketAddr>,
    _slot: Slot,
    /// Fires at the silence deadline; re-armed lazily from `last_traffic`.
    timer: Pin<Box<Sleep>>,
    last_traffic: Instant,
    seen_traffic: bool,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    timed_out: Counted,
}

/// A slot of the cap, and the open-connections gauge kept in step with it.
struct Slot {
    _permit: OwnedSemaphorePermit,
    telemetry: Arc<Telemetry>,
    listener: &'static str,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.telemetry
            .connections_open
            .get_or_create(&ListenerLabels {
                listener: self.listener,
            })
            .dec();
    }
}

#[derive(Clone)]
struct Counted {
    telemetry: Arc<Telemetry>,
    listener: &'static str,
}

impl Guarded {
    fn silence_limit(&self) -> Duration {
        match self.seen_traffic {
            true => self.idle_timeout,
            false => self.handshake_timeout,
        }
    }

    fn traffic(&mut self) {
        self.seen_traffic = true;
        self.last_traffic = Instant::now();
    }

    /// Ready(error) once the connection has been silent past its limit. Called only when
    /// a read would wait, so the timer is re-armed once per burst, not per byte.
    fn poll_silence(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.last_traffic + self.silence_limit();
            if Instant::now() >= deadline {
                self.timed_out
                    .telemetry
                    .connections_timed_out
                    .get_or_create(&ListenerLabels {
                        listener: self.timed_out.listener,
                    })
                    .inc();
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection silent past its timeout",
                ));
            }
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.traffic();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.poll_silence(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, data);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) && this.seen_traffic {
            // Writes keep an established connection alive (a long answer), never a new
            // one that has not spoken yet.
            this.last_traffic = Instant::now();
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) && this.seen_traffic {
            this.last_traffic = Instant::now();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.local,
            remote_addr: self.remote,
        }
    }
}

/// Accepts on `listener` until the receiver is dropped, handing on guarded sockets. A
/// connection past the cap is closed at once (counted); an accept error (such as running
/// out of descriptors) is logged, at most once a second, and retried after a pause rather
/// than spun on or ending the server.
pub fn accept(
    listener: TcpListener,
    name: &'static str,
    limits: &ConnectionLimits,
    telemetry: Arc<Telemetry>,
) -> mpsc::Receiver<Guarded> {
    let (tx, rx) = mpsc::channel(64);
    let cap = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let limits = limits.clone();
    let labels = ListenerLabels { listener: name };
    tokio::spawn(async move {
        let mut last_error_log: Option<Instant> = None;
        loop {
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            tracing::warn!(listener = name, error = %e, "accept failed; retrying");
                            last_error_log = Some(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let Ok(permit) = Arc::clone(&cap).try_acquire_owned() else {
                telemetry.connections_refused.get_or_create(&labels).inc();
                drop(stream);
                continue;
            };
            // Without TCP_NODELAY small responses wait on delayed ACKs: ~10 ms per call.
            let _ = stream.set_nodelay(true);
            telemetry.connections_open.get_or_create(&labels).inc();
            let slot = Slot {
                _permit: permit,
                telemetry: Arc::clone(&telemetry),
                listener: name,
            };
            let now = Instant::now();
            let guarded = Guarded {
                local: stream.local_addr().ok(),
                remote: Some(remote),
                stream,
                _slot: slot,
                timer: Box::pin(tokio::time::sleep_until(now + limits.handshake_timeout())),
                last_traffic: now,
                seen_traffic: false,
                handshake_timeout: limits.handshake_timeout(),
                idle_timeout: limits.idle_timeout(),
                timed_out: Counted {
                    telemetry: Arc::clone(&telemetry),
                    listener: name,
                },
            };
            if tx.send(guarded).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Serves HTTP/1 `router` on the guarded sockets of `listener` until `shutdown`, then lets
/// requests in flight finish.
pub async fn serve_http(
    listener: TcpListener,
    name: &'static str,
    router: axum::Router,
    limits: &ConnectionLimits,
    telemetry: Arc<Telemetry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut incoming = accept(listener, name, limits, telemetry);
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout())
        .max_buf_size(64 * 1024);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let io = tokio::select! {
            io = incoming.recv() => match io {
                Some(io) => io,
                None => break,
            },
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(listener = name, error = %e, "connection ended");
            }
        });
    }
    drop(incoming);
    graceful.shutdown().await;
    Ok(())
}
