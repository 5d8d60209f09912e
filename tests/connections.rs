//! Issue 17: idle and slow connections. Each listener caps its connections and closes the
//! ones past the cap at once; a connection that sends nothing is closed after the handshake
//! timeout, a request head trickled byte by byte after the header timeout; the page answers
//! again as soon as they are gone, and a flood on the page's port never touches Score.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{payment, TestServer};
use fengkong::config::Config;
use fengkong::connections::ConnectionLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits until the server closes `stream` (EOF or reset); how long that took, or None.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_capped_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(Config {
        data_dir: dir.path().to_owned(),
        connections: ConnectionLimits {
            max_connections: 16,
            handshake_timeout_ms: 600,
            idle_timeout_ms: 1_000,
            header_read_timeout_ms: 800,
            keepalive_ms: 30_000,
        },
        ..Config::default()
    })
    .await;
    let mut client = server.client().await;

    // 40 connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(server.http_addr).await.unwrap());
    }
    // Score is untouched by a flood on another listener.
    client.score(payment("conn-1")).await.unwrap();
    let mut waits = tokio::task::JoinSet::new();
    for mut stream in idle {
        waits.spawn(async move { closed_within(&mut stream, Duration::from_secs(5)).await });
    }
    let (mut closed_at_once, mut closed_later) = (0, 0);
    while let Some(closed) = waits.join_next().await {
        match closed.unwrap() {
            Some(t) if t < Duration::from_millis(300) => closed_at_once += 1,
            Some(_) => closed_later += 1,
            None => panic!("an idle connection was never closed"),
        }
    }
    // The 16 within the cap wait for the handshake timeout; the rest are closed at once.
    assert!(
        closed_at_once >= 20,
        "past the cap of 16: {closed_at_once} closed at once"
    );
    assert!(
        closed_later >= 10,
        "within the cap: {closed_later} closed after the timeout"
    );

    // A request head trickled in, one header line every 200 ms.
    let mut slow = TcpStream::connect(server.http_addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut cut = false;
    while started.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await
        {
            cut = true;
            break;
        }
        // An answer (408) also ends it.
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), slow.peek(&mut buf)).await
        {
            if n > 0 {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "a trickled request head kept its connection for 6 s");

    // With them gone the page answers again.
    let (status, _) = common::http_get(server.http_addr, "/").await;
    assert!(status.contains("200"), "{status}");
    let (_, metrics) = common::http_get(server.metrics_addr, "/metrics").await;
    for counter in [
        r#"fengkong_connections_refused_total{listener="page"}"#,
        r#"fengkong_connections_timed_out_total{listener="page"}"#,
    ] {
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(counter))
            .unwrap_or_else(|| panic!("{counter} missing:\n{metrics}"))
            .trim()
            .parse()
            .unwrap();
        assert!(value >= 1.0, "{counter} {value}");
    }
    client.score(payment("conn-2")).await.unwrap();
    server.stop().await;
}
