//! fengkong (风控): real-time risk control for QR-code and mobile payments.
//!
//! One payment flows through the modules in this order:
//!
//! ```text
//! request.rs   ScoreRequest ──validate──▶ payment.rs  Payment
//! policy.rs    Payment ──▶ Assessment (action, risk score, reasons with the numbers)
//! engine.rs    the pipeline: idempotency, assessment, decision record (one thread)
//! store.rs     decision records in sled        commit.rs  group commit (durability)
//! server.rs    gRPC boundary: tonic service, health, reflection, error → status
//! ```
//!
//! `telemetry.rs` + `http.rs` export metrics; `loadgen.rs` measures the server from outside.
//! `config.rs` holds every tunable; `cli.rs` and `main.rs` only wire things up.

pub mod auth;
pub mod backtest;
pub mod cli;
pub mod commit;
pub mod config;
pub mod decision;
pub mod engine;
pub mod events;
pub mod features;
pub mod grpc;
pub mod http;
pub mod loadgen;
pub mod model;
pub mod payment;
pub mod quality;
pub mod replay;
pub mod request;
pub mod rules;
pub mod server;
pub mod simulate;
pub mod store;
pub mod telemetry;
pub mod training;
pub mod vars;

/// Code generated from `proto/fengkong/v1/fengkong.proto`.
#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used)]
pub mod proto {
    tonic::include_proto!("fengkong.v1");
    /// Lets server reflection describe the API to grpcurl-style tools.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("fengkong_descriptor");
}
