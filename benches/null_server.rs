//! A do-nothing RiskEngine server, for `benches/side_by_side.sh`: the same proto, tonic
//! stack, runtime and allocator as `fengkong serve`, but Score only decodes its request and
//! answers a fixed ALLOW (the other calls are UNIMPLEMENTED). What it costs per call is the
//! cost of gRPC itself, the floor `fengkong serve` is measured against.
//!
//! `cargo run --release --example null_server -- [--listen 127.0.0.1:0]`; prints
//! `fengkong listening on <addr>` like `fengkong serve`.

use fengkong::proto::{
    self,
    risk_engine_server::{RiskEngine, RiskEngineServer},
};
use tonic::{Request, Response, Status};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Null;

#[tonic::async_trait]
impl RiskEngine for Null {
    async fn score(
        &self,
        request: Request<proto::ScoreRequest>,
    ) -> Result<Response<proto::ScoreResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(proto::ScoreResponse {
            decision_id: "d-null".into(),
            payment_id: request.payment_id,
            action: proto::Action::Allow as i32,
            ..Default::default()
        }))
    }

    async fn get_decision(
        &self,
        _: Request<proto::GetDecisionRequest>,
    ) -> Result<Response<proto::Decision>, Status> {
        Err(Status::unimplemented("the null server stores nothing"))
    }

    async fn report_outcome(
        &self,
        _: Request<proto::ReportOutcomeRequest>,
    ) -> Result<Response<proto::ReportOutcomeResponse>, Status> {
        Err(Status::unimplemented("the null server stores nothing"))
    }

    async fn explain(
        &self,
        _: Request<proto::ExplainRequest>,
    ) -> Result<Response<proto::Explanation>, Status> {
        Err(Status::unimplemented("the null server stores nothing"))
    }

    async fn list_decisions(
        &self,
        _: Request<proto::ListDecisionsRequest>,
    ) -> Result<Response<proto::ListDecisionsResponse>, Status> {
        Err(Status::unimplemented("the null server stores nothing"))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut listen = String::from("127.0.0.1:50052");
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(addr)) => listen = addr,
            _ => {
                return Err(format!("usage: null_server [--listen host:port] (got `{arg}`)").into())
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        println!("fengkong listening on {}", listener.local_addr()?);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tonic::transport::Server::builder()
            .add_service(RiskEngineServer::new(Null))
            .serve_with_incoming(incoming)
            .await?;
        Ok(())
    })
}
