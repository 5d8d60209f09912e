//! The analyst's workbench on the page, in a real headless Chromium: Cases (the queue by
//! age, a case opened with its decision, features and the account's recent decisions,
//! assigned and resolved with a note), Search, Rules (stats and the server-drawn charts, a
//! backtest with compile errors and then results, ship as shadow, the shadow rule's hits,
//! promote), and the account status form; every view in screenshots, in English and
//! Chinese. Skipped (compiled as ignored) without a browser, as tests/web_page.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::Path;

use browser::{browser, click, decode, wait_for_text, Png};
use common::{collection, copy_rules, daytime_hour_ms, payment, with_key, TestServer};
use fantoccini::{Client, Locator};
use fengkong::auth::{add_key, Role};
use fengkong::config::Config;
use fengkong::proto::{self, get_decision_request::Key, GetDecisionRequest, OutcomeKind};
use serde_json::json;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// Sets a form field's value from a script: rule files are long, quoted and multi-line.
async fn set_value(client: &Client, css: &str, value: &str) {
    let script = "const [css, value] = arguments; document.querySelector(css).value = value;";
    client
        .execute(script, vec![json!(css), json!(value)])
        .await
        .unwrap();
}

async fn screenshot(client: &Client, css: &str, name: &str) -> Png {
    let element = client.find(Locator::Css(css)).await.unwrap();
    let bytes = element.screenshot().await.unwrap();
    // Kept for a human to look at after a run.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("workbench_page");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), &bytes).unwrap();
    let png = decode(&bytes);
    assert!(
        png.width >= 400 && png.height >= 150,
        "{name}: {}x{}",
        png.width,
        png.height
    );
    // Text and lines are drawn (a blank or unstyled view has none).
    assert!(png.share_darker_than(110) > 0.002, "{name} shows no text");
    png
}

/// The first series colour of the charts (`rule_charts::SERIES[0]`).
const SERIES_BLUE: [u8; 3] = [0x1f, 0x5f, 0xbf];

const BROKEN: &str = "[[rule]]\nid = \"rent_code_five_payers\"\nwhen = \"payee.no_such_thing > 5\"\naction = \"review\"\nscore = 30\nreason_code = \"RENT_CODE\"\nmessage = \"x\"\n";

/// Sends every collection into a personal code to review, so the queue this test works does
/// not depend on what the bundled model thinks of twelve collections.
const QUEUE_RULE: &str = r#"[[rule]]
id = "review_code_collections"
description = "every collection into a personal code is reviewed (this test's queue)"
when = '''scene == "PERSONAL_CODE_COLLECTION" && payee.kind == "PERSONAL"'''
action = "review"
score = 0
reason_code = "TEST_QUEUE"
message = "a collection of {payment.amount_fen:yuan} CNY"
message_zh = "收款 {payment.amount_fen:yuan} 元"
"#;

const CANDIDATE: &str = r#"[[rule]]
id = "rent_code_five_payers"
description = "more than five payers into a personal code in an hour"
when = '''payee.kind == "PERSONAL" && payee.distinct_payers_1h > 5'''
action = "review"
score = 30
reason_code = "RENT_CODE"
message = "{payee.distinct_payers_1h} payers in an hour"
message_zh = "1小时内 {payee.distinct_payers_1h} 个付款人"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fengkong_no_browser,
    ignore = "no /usr/bin/chromium or /usr/bin/chromedriver: apt-get install chromium chromium-driver fonts-noto-cjk (.ci/run does)"
)]
async fn an_analyst_works_cases_search_rules_and_status_in_a_real_browser() {
    let Some((_driver, browser)) = browser(
        "workbench_page",
        &["--window-size=1300,2400", "--lang=en-US"],
    )
    .await
    else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let rules = tempfile::tempdir().unwrap();
    let (_, gateway) = add_key(data.path(), Role::Gateway, None, 0).unwrap();
    let (record, analyst) = add_key(data.path(), Role::Analyst, None, 0).unwrap();
    copy_rules(rules.path());
    std::fs::write(rules.path().join("85_test_queue.toml"), QUEUE_RULE).unwrap();
    let server = TestServer::start_with(Config {
        data_dir: data.path().to_owned(),
        rules_dir: Some(rules.path().to_owned()),
        watch_rules: false,
        ..Config::default()
    })
    .await;
    let mut client = server.client().await;

    // Collections into a fresh personal code (reviewed, which opens cases), two payments with a card on the block list, a few ordinary ones.
    let start = daytime_hour_ms();
    for n in 0..12 {
        let req = collection("code-w", &format!("w-{n:02}"), n, start + n as i64 * MINUTE);
        client.score(with_key(req, &gateway)).await.unwrap();
    }
    for n in 0..2 {
        let mut req = payment(&format!("stolen-{n}"));
        req.event_time_ms = start + HOUR + n * MINUTE;
        req.funding = proto::Funding::CreditCard as i32;
        req.card_fingerprint = Some("card-fp-stolen-01".into());
        client.score(with_key(req, &gateway)).await.unwrap();
    }
    for n in 0..4 {
        let mut req = payment(&format!("plain-{n}"));
        req.event_time_ms = start + 2 * HOUR + n * MINUTE;
        client.score(with_key(req, &gateway)).await.unwrap();
    }

    let page = format!("http://{}/#key={analyst}", server.http_addr);
    browser.goto(&page).await.unwrap();
    wait_for_text(&browser, "#views", "Cases").await;

    // Cases: the queue oldest first with ages; open the oldest, assign it, resolve it.
    click(&browser, "#views [data-view=cases]").await;
    // The first collection's case waits longest.
    let queue = wait_for_text(&browser, "#cases-table", "c-00000000000000000000").await;
    assert!(queue.contains("waiting"), "{queue}");
    screenshot(&browser, "#cases", "cases.png").await;
    click(&browser, "#cases-table .open-case").await;
    let case = wait_for_text(&browser, "#case", "Features at decision time").await;
    for wanted in [
        "Case c-",
        "The account's recent decisions",
        "payee.distinct_payers_1h",
        "Resolve the case",
    ] {
        assert!(case.contains(wanted), "{wanted:?} missing from:\n{case}");
    }
    let case_id = browser
        .find(Locator::Css("#case"))
        .await
        .unwrap()
        .attr("data-case")
        .await
        .unwrap()
        .unwrap();
    click(&browser, "#assign-case").await;
    wait_for_text(
        &browser,
        "#case",
        &format!("assigned to analyst:{}", record.id),
    )
    .await;
    screenshot(&browser, "#case-detail", "case.png").await;
    click(&browser, "#case-form input[value=GENUINE]").await;
    set_value(
        &browser,
        "#case-note",
        "regular customers of a noodle stall",
    )
    .await;
    click(&browser, "#case-form button[type=submit]").await;
    wait_for_text(&browser, "#case-resolution", "Resolved as Genuine").await;
    let mut cases = proto::cases_client::CasesClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let resolved = cases
        .get_case(with_key(
            proto::GetCaseRequest {
                case_id: case_id.clone(),
            },
            &analyst,
        ))
        .await
        .unwrap()
        .into_inner();
    let decision = client
        .get_decision(with_key(
            GetDecisionRequest {
                key: Some(Key::DecisionId(resolved.decision_id.clone())),
            },
            &analyst,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        decision
            .outcomes
            .iter()
            .any(|o| o.outcome == OutcomeKind::Genuine as i32),
        "{decision:?}"
    );

    // Search: an account's decisions, newest first.
    click(&browser, "#views [data-view=search]").await;
    set_value(&browser, "#search-account", "code-w").await;
    click(&browser, "#search-form button[type=submit]").await;
    let found = wait_for_text(&browser, "#search-table", "w-11").await;
    assert!(found.find("w-11") < found.find("w-00"), "{found}");
    screenshot(&browser, "#search", "search.png").await;

    // Rules: the stats with their charts.
    click(&browser, "#views [data-view=rules]").await;
    let table = wait_for_text(&browser, "#rules-table", "blocked_card").await;
    assert!(table.contains("personal_code_business_use"), "{table}");
    wait_for_text(&browser, "#rules-head", "18 decisions").await;
    // The JSON API the page's numbers come from, called from the page with the key.
    let script = "const [key, done] = arguments; fetch('/api/rules/stats', \
        {headers: {authorization: 'Bearer ' + key}}).then(r => r.json()).then(done);";
    let stats = browser
        .execute_async(script, vec![json!(analyst)])
        .await
        .unwrap();
    assert_eq!(stats["decisions"], json!("18"), "{stats}");
    let card = stats["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ruleId"] == "blocked_card")
        .unwrap();
    assert_eq!(card["hits"], json!("2"), "{card}");
    let view = wait_for_text(&browser, "#rules-stats", "Hits per hour").await;
    assert!(!view.lines().any(|l| l.trim() == "null"), "{view}");
    let hits = screenshot(&browser, "#chart-hits", "rules-chart-hits.png").await;
    assert!(
        hits.share_near(SERIES_BLUE) > 0.001,
        "no series drawn in the hits chart"
    );
    screenshot(&browser, "#chart-scores", "rules-chart-scores.png").await;
    screenshot(&browser, "#chart-share", "rules-chart-share.png").await;
    screenshot(&browser, "#rules-stats", "rules.png").await;

    // A candidate that does not compile shows its errors with positions; then one that does
    // is backtested on the stored traffic and shipped as shadow.
    set_value(&browser, "#candidate-text", BROKEN).await;
    click(&browser, "#backtest-form button[type=submit]").await;
    let errors = wait_for_text(&browser, "#compile-errors", "90_candidates.toml:3:").await;
    assert!(errors.contains("no_such_thing"), "{errors}");
    set_value(&browser, "#candidate-text", CANDIDATE).await;
    click(&browser, "#backtest-form button[type=submit]").await;
    let report = wait_for_text(&browser, "#backtest-rules", "rent_code_five_payers").await;
    let row = report
        .lines()
        .find(|l| l.starts_with("rent_code_five_payers"))
        .unwrap();
    assert!(row.contains("active 7 0"), "{row}");
    let result = wait_for_text(&browser, "#backtest-result", "Newly stopped").await;
    assert!(!result.lines().any(|l| l.trim() == "null"), "{result}");
    screenshot(&browser, "#backtest-result", "backtest.png").await;
    set_value(&browser, "#ship-note", "try the stricter renting check").await;
    click(&browser, "#ship-form button[type=submit]").await;
    wait_for_text(
        &browser,
        "#rules-done",
        "Shipped rent_code_five_payers as shadow",
    )
    .await;
    let shipped = std::fs::read_to_string(rules.path().join("90_candidates.toml")).unwrap();
    assert!(shipped.contains("mode = \"shadow\""), "{shipped}");

    // New traffic: the shadow rule's hits show in the stats; then it is promoted.
    for n in 0..12 {
        let at = start + 3 * HOUR + n as i64 * MINUTE;
        let req = collection("code-x", &format!("x-{n:02}"), n, at);
        client.score(with_key(req, &gateway)).await.unwrap();
    }
    click(&browser, "#rules-form button[type=submit]").await;
    let shadow_row = "#rules-table tr[data-rule=rent_code_five_payers] .hits";
    wait_for_text(&browser, shadow_row, "7").await;
    set_value(&browser, "#promote-note", "seven of seven were renting").await;
    click(&browser, "#promote-form button[type=submit]").await;
    wait_for_text(&browser, "#rules-done", "Promoted rent_code_five_payers").await;
    let promoted = std::fs::read_to_string(rules.path().join("90_candidates.toml")).unwrap();
    assert!(promoted.contains("mode = \"active\""), "{promoted}");

    // Account status by hand.
    click(&browser, "#views [data-view=status]").await;
    set_value(&browser, "#status-account", "code-x").await;
    set_value(&browser, "#status-note", "renting confirmed by the bank").await;
    click(&browser, "#status-form button[type=submit]").await;
    wait_for_text(&browser, "#status-result", "code-x: Normal → Frozen").await;
    screenshot(&browser, "#status-admin", "status.png").await;

    // The same views in Chinese.
    click(&browser, "#lang").await;
    wait_for_text(&browser, "#views", "案件").await;
    wait_for_text(&browser, "#status-admin", "设置账户状态").await;
    screenshot(&browser, "#status-admin", "status-zh.png").await;
    click(&browser, "#views [data-view=cases]").await;
    wait_for_text(&browser, "#cases-table", "已等待").await;
    wait_for_text(&browser, "#case", "决定时的特征").await;
    screenshot(&browser, "#cases", "cases-zh.png").await;
    click(&browser, "#views [data-view=search]").await;
    wait_for_text(&browser, "#search-table", "付款方").await;
    screenshot(&browser, "#search", "search-zh.png").await;
    click(&browser, "#views [data-view=rules]").await;
    wait_for_text(&browser, "#rules-table", "命中").await;
    wait_for_text(&browser, "#chart-scores", "风险分分布").await;
    let scores = browser
        .find(Locator::Css("#chart-scores svg"))
        .await
        .unwrap()
        .html(false)
        .await
        .unwrap();
    assert!(
        scores.contains("风险分"),
        "the chart's axis is not in Chinese"
    );
    screenshot(&browser, "#rules-stats", "rules-zh.png").await;
    server.stop().await;
}
