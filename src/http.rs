//! The HTTP side of the server: `/metrics` for Prometheus, `/healthz` for load balancers,
//! and the merchant and analyst page (see `web`).

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::grpc::Shared;
use crate::telemetry::Telemetry;

#[derive(Clone)]
struct AppState {
    telemetry: Arc<Telemetry>,
    db: sled::Db,
}

pub async fn serve(
    listener: TcpListener,
    shared: Shared,
    db: sled::Db,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(AppState {
            telemetry: shared.telemetry.clone(),
            db,
        })
        .merge(crate::web::router(shared));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
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
