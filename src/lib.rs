//! fengkong (风控): real-time risk control for QR-code and mobile payments.
//!
//! One payment flows through the modules in this order:
//!
//! ```text
//! request.rs   ScoreRequest ──validate──▶ payment.rs  Payment
//! features/    Payment ──▶ sliding-window feature values (sled-backed, checkpointed)
//! model/       feature values ──▶ fraud probability and its top factors
//! vars.rs      payment fields + features ──▶ the variables rules read
//! rules/       parse → compile → evaluate → verdict (action, risk score)
//! decision.rs  hits ──▶ reasons with their numbers and evidence
//! engine.rs    the pipeline on one thread; decision log; feature recovery
//! store.rs     decision records and the log; journal.rs  the durable truth of the last seconds
//! commit.rs    group commit of the journal   writer.rs  sled written behind it, in order
//! search.rs    the store's indexes by account, rule and time (ListDecisions)
//! server.rs    runs it: engine thread, reloads, shutdown;  grpc.rs  services, errors → status
//! grpc_layer.rs  deadlines and the codes of errors tonic raises before a handler runs
//! ```
//!
//! Around it: `auth.rs` (keys and roles), `telemetry.rs` + `http.rs` (metrics, on their own
//! listener), `connections.rs` (connection caps and timeouts of every listener), `health.rs`
//! (free disk space; writes refused before the disk is full),
//! `loadgen.rs` (load from outside), and the offline path that shares the engine:
//! `events.rs` (labeled CSV), `simulate.rs` and `cardsim.rs` (QR and card traffic),
//! `replay.rs`, `backtest.rs`, `training.rs`, `quality.rs` (ranking metrics) and
//! `eval_report.rs` (the HTML evaluation report). Analysts work through `cases.rs` (the
//! review queue), `audit.rs` (what they did), `rule_stats.rs` (what each rule did, from the
//! indexes), `rule_charts.rs` (its charts, SVG), `rule_backtest.rs` (candidate rules tried on
//! stored traffic) and `rule_files.rs` (candidates shipped as shadow into the rules
//! directory, and promoted). `bundled.rs` is what the binary carries
//! (rule pack, model, features) for when no path is configured; `files.rs` reads what the
//! server loads (regular files only, bounded); `units.rs` writes values for people (yuan, %,
//! yes/no) in English and Chinese. `config.rs` holds every tunable; `cli.rs` and `main.rs`
//! only wire things up.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod backtest;
pub mod bundled;
pub mod cardsim;
pub mod cases;
pub mod cli;
pub mod commit;
pub mod config;
pub mod connections;
pub mod decision;
pub mod engine;
pub mod eval_report;
pub mod events;
pub mod explain;
pub mod features;
pub mod files;
pub mod grpc;
pub mod grpc_layer;
pub mod health;
pub mod http;
pub mod journal;
pub mod loadgen;
pub mod model;
pub mod payment;
pub mod quality;
pub mod replay;
pub mod request;
pub mod rule_backtest;
pub mod rule_charts;
pub mod rule_files;
pub mod rule_stats;
pub mod rules;
pub mod search;
pub mod server;
pub mod simulate;
pub mod store;
pub mod telemetry;
pub mod training;
pub mod units;
pub mod vars;
pub mod web;
pub mod writer;

/// Code generated from `proto/fengkong/v1/fengkong.proto`.
#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used)]
pub mod proto {
    tonic::include_proto!("fengkong.v1");
    include!(concat!(env!("OUT_DIR"), "/fengkong.v1.serde.rs"));
    /// Lets server reflection describe the API to grpcurl-style tools.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("fengkong_descriptor");
}
