//! The README's claims, checked: its example payments get the actions it says, and its
//! numbers are what the commands it names print. Numbers sit between
//! `<!-- readme-numbers: NAME -->` and `<!-- /readme-numbers -->`; each NAME has a function
//! here that runs the command and writes the text. `FENGKONG_UPDATE_README=1 cargo test
//! --test readme` rewrites them instead of comparing (then review the diff).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestServer;
use fengkong::proto::{self, Action};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

/// The example rows of the README: `| `examples/payments/X.json` | ACTION | CODE | ... |`.
fn examples(readme: &str) -> Vec<(PathBuf, Action, Option<String>)> {
    readme
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let file = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            if !file.starts_with("examples/payments/") {
                return None;
            }
            let action = Action::from_str_name(cells.get(2)?)?;
            let code = cells.get(3)?.trim_matches('`');
            let code = (!code.is_empty() && code != "—").then(|| code.to_owned());
            Some((root().join(file), action, code))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_payments_get_the_actions_the_readme_says() {
    let examples = examples(&readme());
    let actions: Vec<Action> = examples.iter().map(|e| e.1).collect();
    for wanted in [
        Action::Allow,
        Action::Challenge,
        Action::Review,
        Action::Block,
    ] {
        assert!(
            actions.contains(&wanted),
            "no {wanted:?} example in the README"
        );
    }
    // In README order, on a fresh server with what the binary carries, as a reader would.
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path()).await;
    let mut client = server.client().await;
    for (file, action, code) in examples {
        let json = std::fs::read_to_string(&file).unwrap();
        let request: proto::ScoreRequest =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let scored = client.score(request).await.unwrap().into_inner();
        assert_eq!(
            scored.action(),
            action,
            "{}: the README says {action:?}; the reasons are {:#?}",
            file.display(),
            scored.reasons
        );
        if let Some(code) = code {
            assert!(
                scored.reasons.iter().any(|r| r.code == code),
                "{}: no {code} reason in {:#?}",
                file.display(),
                scored.reasons
            );
        }
    }
    server.stop().await;
}

/// Runs the `fengkong` binary; its stdout.
fn fengkong(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fengkong"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fengkong {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// The number before `after` in `text` (`"2391 payments"` → 2391), or the text before `%`.
fn number_before<'a>(text: &'a str, after: &str) -> &'a str {
    let end = text
        .find(after)
        .unwrap_or_else(|| panic!("no {after:?} in {text}"));
    let start = text[..end].rfind([' ', '(']).map_or(0, |i| i + 1);
    &text[start..end]
}

/// The backtest paragraph of "Rules for analysts", from the commands it names.
fn backtest_numbers() -> String {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("sim.csv");
    let events = events.to_str().unwrap();
    fengkong(&[
        "simulate",
        "--payments",
        "100000",
        "--seed",
        "7",
        "--out",
        events,
    ]);
    let report = fengkong(&["backtest", "--rules", "rules", "--events", events]);
    let line = report
        .lines()
        .find(|l| l.starts_with("reviewed or blocked:"))
        .unwrap_or_else(|| panic!("no totals in\n{report}"));
    let stopped: u64 = number_before(line, " payments").parse().unwrap();
    let recall = number_before(line, "%, false-positive");
    let fp_rate = number_before(&line[line.find("false-positive").unwrap()..], "%)");
    format!(
        "On 100,000 simulated payments (`fengkong simulate --payments 100000 --seed 7`, 1%\n\
         fraud) the bundled pack reviews or blocks {} payments: {recall}% of the fraud and\n\
         **{fp_rate}% of genuine payments** (the false-positive rate; most of it is the PBOC\n\
         static-code limit, which the simulator's genuine payers do not respect). Per-rule\n\
         hits, precision, recall, amount caught and false-positive rate come from\n\
         `fengkong backtest --rules rules --events sim.csv`.",
        thousands(stopped)
    )
}

/// What writes one numbers section of the README.
type Generator = fn() -> String;

/// Every numbers section of the README and what writes it. Add one here for new numbers.
const SECTIONS: &[(&str, Generator)] = &[("backtest", backtest_numbers)];

#[test]
fn the_readme_numbers_are_what_the_commands_print() {
    let mut text = readme();
    let update = std::env::var_os("FENGKONG_UPDATE_README").is_some();
    let mut stale = Vec::new();
    for (name, generate) in SECTIONS {
        let open = format!("<!-- readme-numbers: {name} -->\n");
        let close = "\n<!-- /readme-numbers -->";
        let start = text
            .find(&open)
            .unwrap_or_else(|| panic!("README has no {open:?}"))
            + open.len();
        let end = start
            + text[start..]
                .find(close)
                .expect("an unclosed numbers section");
        let fresh = generate();
        if text[start..end] != fresh {
            stale.push(format!(
                "README says:\n{}\nthe command prints:\n{fresh}",
                &text[start..end]
            ));
            text.replace_range(start..end, &fresh);
        }
    }
    if update {
        std::fs::write(root().join("README.md"), text).unwrap();
    } else {
        assert!(
            stale.is_empty(),
            "stale README numbers (FENGKONG_UPDATE_README=1 cargo test --test readme rewrites \
             them):\n{}",
            stale.join("\n\n")
        );
    }
}
