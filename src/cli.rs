//! The `fengkong` command line: parses arguments and hands each subcommand to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::engine::Engine;

#[derive(Debug, Parser)]
#[command(
    name = "fengkong",
    version,
    about = "Real-time risk control for QR-code and mobile payments"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC scoring service (defaults: 127.0.0.1:50051, data in ./data).
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides the config file).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Folder for the sled database (overrides the config file).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// TOML config file; unknown keys are an error.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Errors reaching the user from any subcommand, printed once by `main`.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> Result<(), CliError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let engine = Engine::open(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        // Scripts and tests read the real port from this line (useful with port 0).
        println!("fengkong listening on {addr}");
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "serving");
        crate::server::run(
            listener,
            engine,
            Duration::from_micros(config.commit_delay_us),
            Duration::from_millis(config.shutdown_grace_ms),
            shutdown_signal(),
        )
        .await?;
        Ok(())
    })
}

/// Resolves on ctrl-c or SIGTERM, whichever comes first.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight calls");
}
