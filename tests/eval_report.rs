//! `fengkong eval --report`: the commands a user runs (simulate, train, replay --model, eval
//! --report) make a report that opens in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), where every chart is drawn: screenshots of each figure are checked for
//! the series colours, the axis text and the numbers `eval` printed.
//!
//! Without a browser the test is compiled as ignored (build.rs), unless
//! FENGKONG_REQUIRE_BROWSER is set (CI sets it): then a missing browser fails it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/browser.rs"]
mod browser;

use std::path::Path;
use std::process::Command;

use browser::{browser, decode};
use fantoccini::Locator;

fn fengkong(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fengkong"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "fengkong {args:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn rgb(c: plotters::style::RGBColor) -> [u8; 3] {
    [c.0, c.1, c.2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fengkong_no_browser,
    ignore = "no /usr/bin/chromium or /usr/bin/chromedriver: apt-get install chromium chromium-driver (.ci/run does)"
)]
async fn the_eval_report_opens_in_a_browser_with_every_chart_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (events, model, scored, report) = (
        path("cards.csv"),
        path("model.json"),
        path("scored.csv"),
        path("report.html"),
    );
    fengkong(&[
        "simulate",
        "--generator",
        "cards",
        "--payments",
        "12000",
        "--days",
        "28",
        "--seed",
        "4",
        "--out",
        &events,
    ]);
    fengkong(&[
        "train",
        "--events",
        &events,
        "--train-from",
        "2026-03-03",
        "--train-to",
        "2026-03-17",
        "--algo",
        "logistic",
        "--out",
        &model,
    ]);
    fengkong(&[
        "replay", "--events", &events, "--model", &model, "--out", &scored,
    ]);
    let printed = fengkong(&[
        "eval",
        "--scores",
        &scored,
        "--from",
        "2026-03-17",
        "--to",
        "2026-03-29",
        "--report",
        &report,
    ]);
    // "N payments (F fraud): ROC AUC a, average precision b, precision at top 100 a day c"
    let number_after = |label: &str| {
        let at = printed
            .find(label)
            .unwrap_or_else(|| panic!("{label} in {printed}"))
            + label.len();
        printed[at..]
            .trim_start()
            .split(|c: char| c == ',' || c.is_whitespace())
            .next()
            .unwrap()
            .to_owned()
    };
    let (auc, ap) = (number_after("ROC AUC"), number_after("average precision"));

    let Some((_driver, client)) = browser("eval_report", &["--window-size=1300,1800"]).await else {
        return;
    };
    client.goto(&format!("file://{report}")).await.unwrap();
    let metrics = client
        .find(Locator::Css("#metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&auc) && metrics.contains(&ap),
        "eval printed {printed}, the report shows {metrics}"
    );
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("eval_report");
    std::fs::create_dir_all(&shots).unwrap();
    let curve = rgb(fengkong::eval_report::CURVE);
    let fraud = rgb(fengkong::eval_report::FRAUD);
    let genuine = rgb(fengkong::eval_report::GENUINE);
    for (id, colours) in [
        ("pr-curve", vec![curve]),
        ("roc-curve", vec![curve]),
        ("calibration", vec![curve]),
        ("score-distribution", vec![fraud, genuine]),
        ("precision-per-day", vec![curve]),
    ] {
        let svg = client
            .find(Locator::Css(&format!("#{id} svg")))
            .await
            .unwrap_or_else(|e| panic!("no chart in #{id}: {e}"));
        let size = svg.rectangle().await.unwrap();
        assert!(
            size.2 >= 500.0 && size.3 >= 300.0,
            "#{id} is drawn {size:?}"
        );
        let bytes = svg.screenshot().await.unwrap();
        // Kept for a human to look at.
        std::fs::write(shots.join(format!("{id}.png")), &bytes).unwrap();
        let png = decode(&bytes);
        for colour in colours {
            let share = png.share_near(colour);
            assert!(
                share > 0.002,
                "#{id}: {colour:?} covers only {share:.4} of the chart"
            );
        }
        let dark = png.share_darker_than(90);
        // Measured 0.0012 on the PR chart (axes and antialiased tick text); blank is 0.
        assert!(
            dark > 0.0004,
            "#{id}: no axes or labels drawn ({dark:.4} dark)"
        );
        // The axis text is real text in the page, readable by a person.
        let text = client
            .find(Locator::Css(&format!("#{id}")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains("0.2") || text.contains("1e"),
            "#{id} has no tick labels: {text}"
        );
    }
    let page = client.screenshot().await.unwrap();
    std::fs::write(shots.join("report.png"), page).unwrap();
    client.close().await.unwrap();
}
