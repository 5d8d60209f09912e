//! The `fengkong` command line: parses arguments and hands each subcommand to the library.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::engine::Engine;
use crate::replay::ReplayOptions;

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
    /// Replay labeled payments through features and rules; write every feature per payment.
    Replay(ReplayArgs),
    /// Train a model on replayed features of labeled payments and validate it on a later period.
    Train(TrainArgs),
    /// Ranking metrics of a scored replay (ROC AUC, average precision, precision at 100 a day),
    /// and with --report an HTML report of the curves behind them.
    Eval(EvalArgs),
    /// What a rule set would have caught and cost on labeled payments (vs a baseline), or
    /// with --server on a running server's stored traffic (vs its live rules).
    Backtest(BacktestArgs),
    /// Check or test rule files without a server.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// What rules can read: every request field and feature, with its description and the
    /// words a merchant reads for it.
    #[command(subcommand)]
    Features(FeaturesCommand),
    /// Manage API keys (stored hashed in `<data-dir>/keys.json`; works while the server runs).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Generate labeled payment traffic with injected fraud, as CSV (QR payments, or card
    /// payments with `--generator cards`).
    Simulate(SimulateArgs),
    /// Open-loop gRPC load generator for Score: sends on schedule, reports latency percentiles.
    Loadgen(LoadgenArgs),
}

/// Where offline commands read payments from and which feature definitions they use.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Labeled payments CSV (see README: payment_id, event_time, payer_id, payee_id, amount_fen, label, ...).
    #[arg(long)]
    pub events: PathBuf,
    /// When the file has no label_reported_at column, labels count as known this long after
    /// the payment.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub label_delay: Duration,
    /// Skip malformed rows (they are counted) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Features file (default: the bundled set).
    #[arg(long)]
    pub features: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub input: EventsArgs,
    /// Where to write one CSV row per payment: its label, every feature, risk score, action.
    #[arg(long)]
    pub out: PathBuf,
    /// Rules folder (default: the rule pack built into the binary).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Model artifact; adds a `score` column.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub input: EventsArgs,
    /// First day (or RFC 3339 time) of the training period, inclusive.
    #[arg(long, value_parser = parse_date)]
    pub train_from: i64,
    /// End of the training period, exclusive; later payments test the model.
    #[arg(long, value_parser = parse_date)]
    pub train_to: i64,
    /// Learner; without it every learner is trained and the one with the best average
    /// precision on the holdout (the last 20% of the training period) is kept.
    #[arg(long, value_enum)]
    pub algo: Option<AlgoArg>,
    /// Seed of every random choice in training (row and feature sampling); the same data,
    /// parameters and seed give the same model, byte for byte.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Training threads (0 = all cores); the model is the same whatever the number.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Rules folder (default: the rule pack built into the binary). Rules do not feed the
    /// model; the replay that computes the features needs a valid set.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Where to write the model artifact (JSON).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AlgoArg {
    Logistic,
    Forest,
    Gbdt,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// A replay output with a `score` column (`fengkong replay --model ...`).
    #[arg(long)]
    pub scores: PathBuf,
    /// First day (or RFC 3339 time) of the payments to evaluate, inclusive.
    #[arg(long, value_parser = parse_date)]
    pub from: i64,
    /// End of the payments to evaluate, exclusive.
    #[arg(long, value_parser = parse_date)]
    pub to: i64,
    /// Also write a self-contained HTML report: precision-recall and ROC curves,
    /// calibration, score distribution by label, precision per day.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

fn parse_date(s: &str) -> Result<i64, String> {
    crate::events::parse_date(s).map_err(|e| e.to_string())
}

#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// Labeled payments CSV (see README); not with --server.
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    pub events: Option<PathBuf>,
    /// When the file has no label_reported_at column, labels count as known this long after
    /// the payment.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub label_delay: Duration,
    /// Skip malformed rows (they are counted) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Features file (default: the bundled set).
    #[arg(long)]
    pub features: Option<PathBuf>,
    /// The rule set to evaluate. With --server, its files are sent as candidates over the
    /// server's rules directory (same names replace, others are added).
    #[arg(long)]
    pub rules: PathBuf,
    /// The rule set to compare against (e.g. what runs in production); not with --server,
    /// which compares with the live set.
    #[arg(long, conflicts_with = "server")]
    pub baseline: Option<PathBuf>,
    /// A running server (`host:port`): backtest on the decisions it stored
    /// (RuleAdmin.Backtest), with its model and against its live rules.
    #[arg(long)]
    pub server: Option<String>,
    /// With --server: first day (or RFC 3339 time) of the stored decisions, inclusive
    /// (default: 24 hours before --to).
    #[arg(long, value_parser = parse_date, requires = "server")]
    pub from: Option<i64>,
    /// With --server: end of the period, exclusive (default: just after the newest decision).
    #[arg(long, value_parser = parse_date, requires = "server")]
    pub to: Option<i64>,
    /// With --server: an analyst key.
    #[arg(long, requires = "server")]
    pub key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Compile every rule file; list every error as file:line:column and exit non-zero.
    Check {
        /// Rules folder.
        #[arg(default_value = "rules")]
        dir: PathBuf,
        /// Features file the rules are compiled against (default: the bundled set).
        #[arg(long)]
        features: Option<PathBuf>,
    },
    /// Run the data-driven rule cases in DIR/tests (or --cases).
    Test {
        /// Rules folder.
        #[arg(default_value = "rules")]
        dir: PathBuf,
        /// Folder of case files; default DIR/tests.
        #[arg(long)]
        cases: Option<PathBuf>,
        /// Features file the rules and cases use (default: the bundled set).
        #[arg(long)]
        features: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum FeaturesCommand {
    /// List every variable a rule may name: name, unit, description, English and Chinese label.
    List {
        /// Features file (default: the bundled set).
        #[arg(long)]
        features: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once.
    Add {
        /// The server's data folder (keys live in `<data-dir>/keys.json`).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// What the key may do: gateway (score, outcomes), merchant (its own account),
        /// analyst (everything else).
        #[arg(long, value_enum)]
        role: crate::auth::Role,
        /// The merchant's own account (required for merchant keys).
        #[arg(long)]
        account: Option<String>,
    },
    /// List keys (ids, roles, accounts; never the secrets).
    List {
        /// The server's data folder (keys live in `<data-dir>/keys.json`).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    /// Revoke a key by id; the server stops accepting it within a second.
    Revoke {
        /// The server's data folder (keys live in `<data-dir>/keys.json`).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// The key's id, as `keys list` shows it.
        id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Rows to generate, fraud included.
    #[arg(long, default_value_t = 100_000)]
    pub payments: usize,
    /// Random seed: the same seed gives the same file.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Days of traffic, starting 2026-03-01 (Beijing time).
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Share of fraud rows.
    #[arg(long, default_value_t = 0.01)]
    pub fraud_rate: f64,
    /// CSV file to write (the format `replay`, `backtest` and `train` read).
    #[arg(long)]
    pub out: PathBuf,
    /// Which world to simulate: `qr` (QR-code and mobile payments, the fraud of domain.md) or
    /// `cards` (generic card payments: compromised terminals and accounts, large amounts;
    /// every label known 7 days after its payment).
    #[arg(long, value_enum, default_value_t = GeneratorArg::Qr)]
    pub generator: GeneratorArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GeneratorArg {
    Qr,
    Cards,
}

#[derive(Debug, clap::Args)]
pub struct LoadgenArgs {
    /// Server address, host:port.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Requests per second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// gRPC connections to spread requests over.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// How long to send, e.g. 60s, 5m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Distinct payer accounts in the traffic.
    #[arg(long, default_value_t = 100_000)]
    pub payers: u64,
    /// Distinct payees (a few are hot).
    #[arg(long, default_value_t = 5_000)]
    pub payees: u64,
    /// Bearer key, when the server requires one.
    #[arg(long)]
    pub key: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Random seed of the generated traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Each request's deadline (grpc-timeout), e.g. 250ms; RESOURCE_EXHAUSTED refusals are
    /// counted apart from errors.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides the config file).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Folder for the sled database (overrides the config file).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// HTTP address of the merchant and analyst page (overrides the config file).
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Address of /metrics and /healthz, for operators (default 127.0.0.1:9464; port 0
    /// picks a free one; overrides the config file).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Rules folder, watched for changes (default: the rule pack built into the binary).
    #[arg(long)]
    pub rules_dir: Option<PathBuf>,
    /// Model artifact, watched for changes (default: the model built into the binary).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Features file (default: the feature set built into the binary).
    #[arg(long)]
    pub features: Option<PathBuf>,
    /// TOML config file; unknown keys are an error. Flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run open (every call allowed) when the keys file is missing or empty, even though
    /// this data dir has had keys. Without it such a server refuses every call.
    #[arg(long)]
    pub insecure_no_keys: bool,
}

/// Errors reaching the user from any subcommand, printed once by `main`.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Replay(args) => replay(args),
        Command::Backtest(args) => backtest(args),
        Command::Train(args) => train(args),
        Command::Eval(args) => eval(args),
        Command::Rules(command) => rules(command),
        Command::Keys(command) => keys(command),
        Command::Features(FeaturesCommand::List { features }) => list_features(features),
        Command::Simulate(args) => simulate(args),
        Command::Loadgen(args) => loadgen(args),
    }
}

fn load_events(
    args: &EventsArgs,
) -> Result<(Vec<crate::events::LabeledEvent>, ReplayOptions), CliError> {
    let report = crate::events::read_events(
        &args.events,
        &crate::events::ReadOptions {
            skip_bad_rows: args.skip_bad_rows,
        },
    )?;
    if !report.skipped.is_empty() {
        eprintln!("skipped {} bad rows; the first:", report.skipped.len());
        for row in report.skipped.iter().take(5) {
            eprintln!("  {row}");
        }
    }
    let options = ReplayOptions {
        label_delay_ms: args.label_delay.as_millis() as i64,
        has_label_reported_at: report.has_label_reported_at,
    };
    Ok((report.events, options))
}

fn progress(what: &str, done: usize, total: usize) {
    eprintln!("{what}: {done}/{total} payments");
}

fn replay(args: ReplayArgs) -> Result<(), CliError> {
    let (events, options) = load_events(&args.input)?;
    let (_dir, mut engine) = crate::replay::scratch_engine(
        args.rules.as_deref(),
        args.input.features.as_deref(),
        args.model.as_deref(),
    )?;
    let out = std::fs::File::create(&args.out)
        .map_err(|e| format!("cannot create `{}`: {e}", args.out.display()))?;
    let with_score = args.model.is_some();
    let mut writer = crate::replay::RowWriter::new(
        std::io::BufWriter::new(out),
        engine.feature_names(),
        with_score,
    )?;
    let stats = crate::replay::replay(
        &mut engine,
        &events,
        &options,
        &mut |done, total| progress("replay", done, total),
        |row| writer.write(&row),
    )?;
    writer.finish()?;
    eprintln!(
        "replayed {} payments ({} fraud labels fed back) in {:.1}s, {:.0}/s; wrote {}",
        stats.payments,
        stats.outcomes,
        stats.elapsed.as_secs_f64(),
        stats.per_second(),
        args.out.display()
    );
    Ok(())
}

fn train(args: TrainArgs) -> Result<(), CliError> {
    use crate::model::Algo;
    let started = std::time::Instant::now();
    let (events, options) = load_events(&args.input)?;
    let params = crate::model::TrainParams {
        algo: args.algo.map(|a| match a {
            AlgoArg::Logistic => Algo::Logistic,
            AlgoArg::Forest => Algo::Forest,
            AlgoArg::Gbdt => Algo::Gbdt,
        }),
        seed: args.seed,
        threads: args.threads,
        // Derived from the data, not the clock, so the same file gives the same bytes.
        created_at_ms: events
            .iter()
            .map(|e| e.payment.event_time_ms)
            .max()
            .unwrap_or(0),
        data_file_sha256: Some(file_sha256(&args.input.events)?),
        ..Default::default()
    };
    let trained = crate::training::train(
        &events,
        args.rules.as_deref(),
        args.input.features.as_deref(),
        &options,
        (args.train_from, args.train_to),
        params,
        &mut |m| eprintln!("[{:>7.1}s] {m}", started.elapsed().as_secs_f64()),
    )?;
    trained.artifact.save(&args.out)?;
    print!("{}", crate::model::candidates_table(&trained.artifact));
    println!("after --train-to: {}", trained.validation);
    println!(
        "wrote {} to {}",
        trained.artifact.version(),
        args.out.display()
    );
    Ok(())
}

fn file_sha256(path: &std::path::Path) -> Result<String, CliError> {
    use sha2::Digest;
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

fn eval(args: EvalArgs) -> Result<(), CliError> {
    let mut reader = csv::Reader::from_path(&args.scores)
        .map_err(|e| format!("cannot read `{}`: {e}", args.scores.display()))?;
    let header = reader.headers()?.clone();
    let column = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            format!(
                "`{}` has no `{name}` column (replay with --model)",
                args.scores.display()
            )
        })
    };
    let (label, score, time) = (column("label")?, column("score")?, column("event_time")?);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record?;
        let line = i + 2;
        let field = |c: usize| record.get(c).unwrap_or("");
        let t: i64 = field(time)
            .parse()
            .map_err(|_| format!("line {line}: bad event_time `{}`", field(time)))?;
        if !(args.from..args.to).contains(&t) || field(label).is_empty() {
            continue;
        }
        let s: f64 = field(score)
            .parse()
            .map_err(|_| format!("line {line}: bad score `{}`", field(score)))?;
        rows.push((t, s, field(label) == "1"));
    }
    println!("{}", crate::training::metrics(&rows)?);
    if let Some(path) = &args.report {
        let source = args.scores.display().to_string();
        let input = crate::eval_report::ReportInput {
            source: &source,
            from_ms: args.from,
            to_ms: args.to,
            rows: &rows,
        };
        crate::eval_report::write(path, &input)?;
        eprintln!("wrote the report to {}", path.display());
    }
    Ok(())
}

fn backtest(args: BacktestArgs) -> Result<(), CliError> {
    if let Some(server) = &args.server {
        let request = crate::proto::BacktestRequest {
            files: crate::rule_backtest::read_candidates(&args.rules)?
                .into_iter()
                .collect(),
            from_ms: args.from.unwrap_or(0),
            to_ms: args.to.unwrap_or(0),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let report = runtime.block_on(crate::rule_backtest::remote(
            server,
            args.key.as_deref(),
            request,
        ))?;
        print!("{}", crate::rule_backtest::format_report(&report));
        return Ok(());
    }
    let input = EventsArgs {
        events: args
            .events
            .clone()
            .ok_or("--events or --server is required")?,
        label_delay: args.label_delay,
        skip_bad_rows: args.skip_bad_rows,
        features: args.features.clone(),
    };
    let (events, options) = load_events(&input)?;
    let report = crate::backtest::backtest(
        &events,
        &args.rules,
        args.baseline.as_deref(),
        input.features.as_deref(),
        &options,
        &mut progress,
    )?;
    print!("{report}");
    Ok(())
}

fn rules_schema(features: Option<&std::path::Path>) -> Result<crate::rules::Schema, CliError> {
    let set = match features {
        Some(path) => crate::features::FeatureSet::load(path)?,
        None => crate::features::FeatureSet::defaults(),
    };
    Ok(crate::vars::schema(&set))
}

fn rules(command: RulesCommand) -> Result<(), CliError> {
    match command {
        RulesCommand::Check { dir, features } => {
            let schema = rules_schema(features.as_deref())?;
            let set = crate::rules::RuleSet::load_dir(&dir, &schema)
                .map_err(|errors| format!("{} error(s):\n{errors}", errors.0.len()))?;
            println!(
                "{}: {} rules compiled, version {}",
                dir.display(),
                set.rules().len(),
                set.version()
            );
        }
        RulesCommand::Test {
            dir,
            cases,
            features,
        } => {
            let schema = rules_schema(features.as_deref())?;
            let set = crate::rules::RuleSet::load_dir(&dir, &schema)
                .map_err(|errors| format!("{} error(s):\n{errors}", errors.0.len()))?;
            let cases = cases.unwrap_or_else(|| dir.join("tests"));
            let report = crate::rules::run_test_files(&cases, &set, &schema);
            println!("{report}");
            if !report.is_success() {
                return Err("rule tests failed".into());
            }
        }
    }
    Ok(())
}

fn list_features(features: Option<PathBuf>) -> Result<(), CliError> {
    let schema = rules_schema(features.as_deref())?;
    let mut out = String::new();
    for var in schema.vars() {
        let missing = if var.label == var.description {
            "  (no label: merchants read the description)"
        } else {
            ""
        };
        out += &format!(
            "{}  [{}]\n    {}\n    label: {}{missing}\n    label_zh: {}\n",
            var.name,
            var.unit.as_str(),
            var.description,
            var.label,
            var.label_zh
        );
    }
    print!("{out}");
    Ok(())
}

fn keys(command: KeysCommand) -> Result<(), CliError> {
    use crate::auth;
    match command {
        KeysCommand::Add {
            data_dir,
            role,
            account,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let (record, secret) = auth::add_key(&data_dir, role, account, now)?;
            eprintln!(
                "created {} key `{}`; it is shown once, store it now:",
                record.role.as_str(),
                record.id
            );
            println!("{secret}");
        }
        KeysCommand::List { data_dir } => {
            for k in auth::list_keys(&data_dir)? {
                println!(
                    "{}\t{}\t{}\t{}",
                    k.id,
                    k.role.as_str(),
                    k.account.as_deref().unwrap_or("-"),
                    if k.revoked { "revoked" } else { "active" }
                );
            }
        }
        KeysCommand::Revoke { data_dir, id } => {
            auth::revoke_key(&data_dir, &id)?;
            eprintln!("revoked `{id}`");
        }
    }
    Ok(())
}

fn simulate(args: SimulateArgs) -> Result<(), CliError> {
    let started = std::time::Instant::now();
    if args.generator == GeneratorArg::Cards {
        let config = crate::cardsim::CardConfig {
            payments: args.payments,
            seed: args.seed,
            days: args.days,
            fraud_rate: args.fraud_rate,
            ..Default::default()
        };
        let summary = crate::cardsim::generate_to_file(&config, &args.out)?;
        eprintln!(
            "wrote {} card payments ({} fraud; {} customers, {} terminals, {} terminals and \
             {} accounts compromised) to {} in {:.1}s",
            summary.payments,
            summary.fraud,
            summary.customers,
            summary.terminals,
            summary.compromised_terminals,
            summary.compromised_accounts,
            args.out.display(),
            started.elapsed().as_secs_f64()
        );
        for (pattern, n) in &summary.per_pattern {
            eprintln!("  {pattern}: {n}");
        }
        return Ok(());
    }
    let config = crate::simulate::SimConfig {
        payments: args.payments,
        seed: args.seed,
        days: args.days,
        fraud_rate: args.fraud_rate,
        ..Default::default()
    };
    let summary = crate::simulate::simulate_to_file(&config, &args.out)?;
    eprintln!(
        "wrote {} payments ({} fraud, {} never reported) to {} in {:.1}s",
        summary.payments,
        summary.fraud,
        summary.fraud_unreported,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    for (pattern, n) in &summary.per_pattern {
        eprintln!("  {pattern}: {n}");
    }
    Ok(())
}

fn loadgen(args: LoadgenArgs) -> Result<(), CliError> {
    let config = crate::loadgen::LoadConfig {
        addr: args.addr,
        rate: args.rate,
        concurrency: args.concurrency,
        duration: args.duration,
        payers: args.payers,
        payees: args.payees,
        key: args.key,
        max_in_flight: 20_000,
        seed: args.seed,
        deadline: args.deadline,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(crate::loadgen::run(&config))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let l = &report.latency_us;
        let r = &report.refused_latency_us;
        let share = |n: u64| 100.0 * n as f64 / report.sent.max(1) as f64;
        println!(
            "sent {} ok {} refused {} errors {} achieved {:.0}/s\n\
             answered within the {} ms deadline (decision or refusal): {} ({:.1}%)\n\
             latency us (decisions): p50 {} p90 {} p99 {} p99.9 {} max {}\n\
             latency us (refusals): p50 {} p99 {} max {}",
            report.sent,
            report.ok,
            report.refused,
            report.errors,
            report.achieved_rps,
            report.deadline_ms,
            report.answered_within_deadline,
            share(report.answered_within_deadline),
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            r.p50,
            r.p99,
            r.max
        );
        for (code, n) in &report.errors_by_code {
            println!("  error {code}: {n}");
        }
        for (action, n) in &report.actions {
            println!("  action {action}: {n}");
        }
    }
    Ok(())
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
    if let Some(http) = args.http_listen {
        config.http_listen = http;
    }
    if let Some(metrics) = args.metrics_listen {
        config.metrics_listen = metrics;
    }
    if let Some(dir) = args.rules_dir {
        config.rules_dir = Some(dir);
    }
    if let Some(model) = args.model {
        config.model_path = Some(model);
        config.model_enabled = true;
    }
    if let Some(features) = args.features {
        config.features_file = Some(features);
    }
    let engine = Engine::open(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let grpc = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = grpc.local_addr()?;
        let http = match config.http_enabled {
            true => Some(tokio::net::TcpListener::bind(config.http_listen).await?),
            false => None,
        };
        let metrics = tokio::net::TcpListener::bind(config.metrics_listen).await?;
        // Scripts and tests read the real ports from these lines (useful with port 0). A
        // closed stdout must not kill the server, so write errors are ignored.
        let mut announce = format!("fengkong listening on {addr}\n");
        if let Some(http) = &http {
            announce += &format!("fengkong http on {}\n", http.local_addr()?);
        }
        announce += &format!("fengkong metrics on {}\n", metrics.local_addr()?);
        let mut stdout = std::io::stdout();
        let _ = stdout
            .write_all(announce.as_bytes())
            .and_then(|_| stdout.flush());
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "serving");
        let options = crate::server::ServeOptions {
            insecure_no_keys: args.insecure_no_keys,
            ..crate::server::ServeOptions::from_config(&config)
        };
        let listeners = crate::server::Listeners {
            grpc,
            http,
            metrics: Some(metrics),
        };
        crate::server::run(listeners, engine, options, shutdown_signal()).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `--help` explains every argument. `train` is left to the training work in progress.
    #[test]
    fn every_argument_has_a_help_text() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                if arg.get_id() != "help" && arg.get_id() != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_name() != "train" {
                    walk(sub, &format!("{path} {}", sub.get_name()), missing);
                }
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "fengkong", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
