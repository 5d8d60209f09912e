//! The HTTP side of the server, on two listeners: the merchant and analyst page (see `web`)
//! on the public one, `/metrics` for Prometheus and `/healthz` for load balancers on the
//! operators' one. Rule names and hit counts are operational detail, never on the page's port.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::connections::{self, ConnectionLimits};
use crate::grpc::Shared;
use crate::health::Health;
use crate::telemetry::Telemetry;

#[derive(Clone)]
struct AppState {
    telemetry: Arc<Telemetry>,
    db: sled::Db,
    health: Health,
}

/// The page and its `/api/*`, nothing else.
pub async fn serve_page(
    listener: TcpListener,
    shared: Shared,
    limits: &ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let telemetry = shared.telemetry.clone();
    let router = crate::web::router(shared);
    connections::serve_http(listener, "page", router, limits, telemetry, shutdown).await
}

/// `/metrics` and `/healthz`.
pub async fn serve_metrics(
    listener: TcpListener,
    telemetry: Arc<Telemetry>,
    db: sled::Db,
    health: Health,
    limits: &ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = metrics_router(telemetry.clone(), db, health);
    connections::serve_http(listener, "metrics", router, limits, telemetry, shutdown).await
}

fn metrics_router(telemetry: Arc<Telemetry>, db: sled::Db, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(AppState {
            telemetry,
            db,
            health,
        })
}

/// 200 `ok`, or 503 with the reason while writes are refused.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.reason() {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not serving: writes refused: {reason}\n"),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let db = state.db.clone();
    // size_on_disk walks the folder: keep it off the async workers.
    if let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || db.size_on_disk()).await {
        state.telemetry.store_bytes.set(bytes as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.telemetry.encode(),
    )
}
