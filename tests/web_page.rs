//! The merchant and analyst page in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by .ci/run): a personal code frozen by real Score calls is
//! explained on the page with its numbers, appealed by the merchant, overturned by the
//! analyst, and the explanation view is checked in screenshots.
//!
//! Without a browser the test is compiled as ignored, and `cargo test` names the reason
//! (see build.rs), unless FENGKONG_REQUIRE_BROWSER is set (CI sets it): then a missing
//! browser fails it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::Path;
use std::time::Duration;

use browser::{browser, click, decode, wait_for_text, Png};
use common::{collection, daytime_hour_ms, with_key, TestServer};
use fantoccini::{Client, Locator};
use fengkong::auth::{add_key, Role};
use serde_json::json;

const CODE: &str = "code-night-market";
async fn text_of(client: &Client, css: &str) -> String {
    let element = client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"));
    element.text().await.unwrap()
}

async fn type_into(client: &Client, css: &str, text: &str) {
    let element = client.find(Locator::Css(css)).await;
    element
        .unwrap_or_else(|e| panic!("no `{css}` to type into: {e}"))
        .send_keys(text)
        .await
        .unwrap();
}

/// The HTTP status of a JSON API call made from inside the page, with `key`.
async fn fetch_status(client: &Client, path: &str, key: &str) -> u64 {
    let script = "const [path, key, done] = arguments; \
        fetch(path, {headers: {authorization: 'Bearer ' + key}}).then(r => done(r.status));";
    client
        .execute_async(script, vec![json!(path), json!(key)])
        .await
        .unwrap()
        .as_u64()
        .unwrap()
}

const FROZEN_RED: [u8; 3] = [0xb3, 0x26, 0x1e];
const NORMAL_GREEN: [u8; 3] = [0x1e, 0x7e, 0x34];

async fn screenshot(client: &Client, css: &str, name: &str) -> Png {
    let element = client.find(Locator::Css(css)).await.unwrap();
    let bytes = element.screenshot().await.unwrap();
    // Kept for a human to look at after a failure.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web_page");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), &bytes).unwrap();
    decode(&bytes)
}

/// English words of the page that a Chinese view must not show (ids, versions, amounts and
/// the analyst's own words may be in any script).
fn assert_no_english(text: &str) {
    let english = [
        "BLOCK",
        "REVIEW",
        "Blocked",
        "Held for review",
        "rule",
        "Rule",
        "overturned",
        "Overturned",
        "Model factors",
        "What would change",
        "risk check",
        "payers",
        "Payment",
        "Frozen",
        "Normal",
        "appeal",
        "History",
        " by ",
    ];
    let found: Vec<&str> = english.into_iter().filter(|w| text.contains(w)).collect();
    assert!(
        found.is_empty(),
        "English {found:?} in the Chinese page:\n{text}"
    );
}

/// Chinese text is drawn with real glyphs, not the boxes of a missing font: the page draws
/// `sample` and as many unassigned code points (always boxes) on a canvas and compares.
async fn assert_cjk_glyphs(client: &Client, sample: &str) {
    let script = "const [sample] = arguments; \
        const draw = (s) => { const c = document.createElement('canvas'); c.width = 200; \
          c.height = 40; const g = c.getContext('2d'); g.font = '24px sans-serif'; \
          g.fillText(s, 4, 30); return c.toDataURL(); }; \
        const boxes = Array.from(sample).map(() => '\\u{e000}').join(''); \
        return draw(sample) !== draw(boxes);";
    let distinct = client.execute(script, vec![json!(sample)]).await.unwrap();
    assert_eq!(
        distinct,
        json!(true),
        "{sample:?} renders as boxes: no CJK font (apt-get install fonts-noto-cjk)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fengkong_no_browser,
    ignore = "no /usr/bin/chromium or /usr/bin/chromedriver: apt-get install chromium chromium-driver fonts-noto-cjk (.ci/run does)"
)]
async fn merchant_sees_why_and_appeals_analyst_overturns_in_a_real_browser() {
    let Some((_driver, browser)) =
        browser("web_page", &["--window-size=1200,2000", "--lang=en-US"]).await
    else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let rules = tempfile::tempdir().unwrap();
    let key = |role, account: Option<&str>| {
        add_key(data.path(), role, account.map(str::to_owned), 0)
            .unwrap()
            .1
    };
    let gateway = key(Role::Gateway, None);
    let merchant = key(Role::Merchant, Some(CODE));
    let other = key(Role::Merchant, Some("another-shop"));
    let analyst = key(Role::Analyst, None);
    let server = TestServer::start_with_rule_copy(data.path(), rules.path()).await;
    let mut client = server.client().await;

    // 31 different payers within the hour freeze the code.
    let start = daytime_hour_ms();
    for n in 1..=31 {
        let req = collection(CODE, &format!("c-{n}"), n, start + n as i64 * 60_000);
        client.score(with_key(req, &gateway)).await.unwrap();
    }
    let page = format!("http://{}/", server.http_addr);

    // Without a key the page asks for one.
    browser.goto(&page).await.unwrap();
    text_of(&browser, "#signin-form").await;
    assert!(browser
        .find(Locator::Css("#signin"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());

    // The merchant signs in with the key in the link and sees the freeze with its numbers.
    browser
        .goto(&format!("{page}#key={merchant}"))
        .await
        .unwrap();
    wait_for_text(&browser, "#status", "Frozen").await;
    let url = browser.current_url().await.unwrap();
    assert!(
        !url.as_str().contains(&merchant),
        "key left in the URL: {url}"
    );
    let account = text_of(&browser, "#account").await;
    for wanted in [
        "31 different payers in the last hour (limit 30)",
        "What would change the outcome",
        "31 different payers in the last hour; 30 or fewer would not have triggered this check",
        "merchant collection code",
        "¥200.00",
        "kind of receiving account",
        "personal collection code",
        "most different payers a personal code may have in an hour",
        "Model factors (fraud probability",
    ] {
        assert!(
            account.contains(wanted),
            "{wanted:?} missing from:\n{account}"
        );
    }
    common::assert_no_raw_names(&account, "the merchant's page");
    assert!(!account.contains("You may file an appeal"), "{account}");
    assert_eq!(text_of(&browser, "#account-id").await, CODE);

    // The explanation view, checked in a screenshot: a red status badge and rendered text.
    let badge = screenshot(&browser, "#status", "status-frozen.png").await;
    assert!(
        badge.share_near(FROZEN_RED) > 0.4,
        "the frozen badge is not red"
    );
    let view = screenshot(&browser, "#account", "explanation-frozen.png").await;
    assert!(
        view.width >= 600 && view.height >= 300,
        "{}x{}",
        view.width,
        view.height
    );
    assert!(
        view.share_darker_than(110) > 0.01,
        "no text rendered in the explanation"
    );
    assert!(view.share_near(FROZEN_RED) > 0.001);

    // The same explanation in Chinese, all of it, rendered with Chinese glyphs.
    click(&browser, "#lang").await;
    let chinese = wait_for_text(
        &browser,
        "#account",
        "在过去1小时内收到 31 位不同付款人的付款（上限 30）",
    )
    .await;
    wait_for_text(&browser, "#status", "已冻结").await;
    for wanted in [
        "过去1小时内的不同付款人：31；若不超过 30",
        "个人收款码",
        "模型因素（欺诈概率",
        "已拦截",
        "风控检查",
    ] {
        assert!(
            chinese.contains(wanted),
            "{wanted:?} missing from:\n{chinese}"
        );
    }
    assert_no_english(&chinese);
    common::assert_no_raw_names(&chinese, "the merchant's page in Chinese");
    assert_cjk_glyphs(&browser, "已冻结").await;
    let view = screenshot(&browser, "#account", "explanation-frozen-zh.png").await;
    assert!(
        view.share_darker_than(110) > 0.01,
        "no text rendered in the Chinese view"
    );
    let badge = screenshot(&browser, "#status", "status-frozen-zh.png").await;
    assert!(
        badge.share_near(FROZEN_RED) > 0.3,
        "the frozen badge is not red"
    );
    click(&browser, "#lang").await;

    // The page's API refuses another merchant's account, and names no details.
    let path = format!("/api/explain?account_id={CODE}");
    assert_eq!(fetch_status(&browser, &path, &other).await, 403);
    assert_eq!(fetch_status(&browser, &path, "not-a-key").await, 401);
    assert_eq!(fetch_status(&browser, &path, &merchant).await, 200);

    // The merchant appeals.
    let statement = "夜市摊位，付款的都是真实顾客 / night-market stall, real customers";
    type_into(&browser, "#statement", statement).await;
    click(&browser, "#appeal-form button[type=submit]").await;
    wait_for_text(&browser, "#appeal", "Your appeal is being reviewed").await;
    let appeal_text = text_of(&browser, "#appeal .appeal").await;
    assert!(appeal_text.contains(statement) && appeal_text.contains("Open"));
    assert!(browser.find(Locator::Css("#appeal-form")).await.is_err());

    // The analyst sees the queue, reviews with a re-score, and overturns.
    click(&browser, "#signout").await;
    browser
        .goto(&format!("{page}#key={analyst}"))
        .await
        .unwrap();
    wait_for_text(&browser, "#queue-list", statement).await;
    click(&browser, "#queue-list button.review").await;
    let review = wait_for_text(&browser, "#account", "would still stand").await;
    // Analysts see the ids beside the words.
    for wanted in [
        "payee.distinct_payers_1h",
        "rent_code_many_payers",
        "params.rent_code_payers_1h",
    ] {
        assert!(
            review.contains(wanted),
            "{wanted:?} missing for the analyst:\n{review}"
        );
    }
    let note = "Verified the stall in person.";
    click(&browser, "input[value=OVERTURN]").await;
    type_into(&browser, "#resolve-note", note).await;
    click(&browser, "#resolve-form button[type=submit]").await;
    wait_for_text(&browser, "#status", "Normal").await;
    wait_for_text(&browser, "#appeal", "Overturned").await;
    wait_for_text(&browser, "#account", "will not act on this account").await;
    wait_for_text(&browser, "#queue-list", "No appeals here").await;

    // Back as the merchant: restored, with the reviewer's note, and a green badge.
    click(&browser, "#signout").await;
    browser
        .goto(&format!("{page}#key={merchant}"))
        .await
        .unwrap();
    wait_for_text(&browser, "#status", "Normal").await;
    wait_for_text(&browser, "#appeal", note).await;
    // NORMAL again, and the page still shows the payments behind the freeze it had.
    let restored = text_of(&browser, "#account").await;
    assert!(
        !restored.contains("Nothing to explain") && restored.contains("31 different payers"),
        "{restored}"
    );
    common::assert_no_raw_names(&restored, "the restored merchant's page");
    click(&browser, "#lang").await;
    wait_for_text(&browser, "#appeal", "已推翻").await;
    assert_no_english(&text_of(&browser, "#account").await);
    click(&browser, "#lang").await;
    let badge = screenshot(&browser, "#status", "status-normal.png").await;
    assert!(
        badge.share_near(NORMAL_GREEN) > 0.4,
        "the restored badge is not green"
    );
    assert!(badge.share_near(FROZEN_RED) < 0.01);

    browser.close().await.unwrap();
    server.stop().await;
}

/// A plain HTTP/1.1 request on loopback; returns (status code, JSON body).
async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, serde_json::from_str(body).unwrap_or(json!(body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_answers_bad_calls_with_clear_errors() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path()).await;
    server.client().await;
    let addr = server.http_addr;

    let (code, body) = call(addr, "GET", "/api/whoami", "").await;
    assert_eq!((code, body["role"].as_str()), (200, Some("open")));
    let (code, body) = call(addr, "GET", "/api/appeals?status=BOGUS", "").await;
    assert_eq!(code, 400);
    assert_eq!(body["code"], "INVALID_ARGUMENT");
    assert!(
        body["message"].as_str().unwrap().contains("BOGUS"),
        "{body}"
    );
    let (code, body) = call(addr, "POST", "/api/appeals", "{not json").await;
    assert_eq!(
        (code, body["code"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    let (code, body) = call(addr, "GET", "/api/appeals/ap-missing", "").await;
    assert_eq!((code, body["code"].as_str()), (404, Some("NOT_FOUND")));
    let (code, body) = call(addr, "GET", "/api/explain", "").await;
    assert_eq!(
        (code, body["code"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    let (code, body) = call(addr, "GET", "/api/explain?account_id=shop-1", "").await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("NORMAL")),
        "{body}"
    );
    let resolve = r#"{"resolution": "OVERTURN", "note": "x"}"#;
    let (code, _) = call(addr, "POST", "/api/appeals/ap-missing/resolve", resolve).await;
    assert_eq!(code, 404);
    let (code, body) = call(addr, "GET", "/api/nope", "").await;
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("NOT_FOUND")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("/api/nope"),
        "{body}"
    );
    let (code, page) = call(addr, "GET", "/", "").await;
    assert!(code == 200 && page.as_str().unwrap().contains("/app.js"));
    server.stop().await;
}
