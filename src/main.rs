use clap::Parser;

// The scoring path allocates and frees many small buffers per payment (entity states,
// encodings, reasons) while sled's threads do the same; glibc's malloc took about a quarter
// of a replay's CPU. The whole-engine benches declare the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a log file or pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match fengkong::cli::run(fengkong::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fengkong: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
