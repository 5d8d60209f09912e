//! Headless Chromium for the page tests: a chromedriver session and screenshots decoded to
//! pixels. Included by path (`#[path = "common/browser.rs"]`) only in the tests that drive a
//! browser, so the other test binaries don't build it.
// Each test uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process, killed when dropped.
pub struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver and a headless Chromium session with `args` added, or None when this
/// machine has no browser and the test is allowed to skip (`FENGKONG_REQUIRE_BROWSER` unset).
pub async fn browser(test: &str, args: &[&str]) -> Option<(Driver, Client)> {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        let required = std::env::var_os("FENGKONG_REQUIRE_BROWSER").is_some();
        assert!(
            !required,
            "FENGKONG_REQUIRE_BROWSER is set but {CHROMIUM} or {CHROMEDRIVER} is missing \
             (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "\n*** SKIPPED {test}: no {CHROMIUM} / {CHROMEDRIVER} on this machine. \
             Install Debian's chromium and chromium-driver to run it. ***\n"
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let mut all_args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--force-device-scale-factor=1",
    ];
    all_args.extend_from_slice(args);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": CHROMIUM, "args": all_args }),
    );
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return Some((driver, client)),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("chromedriver on port {port} never started a session");
}

/// A screenshot as RGBA pixels.
pub struct Png {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<[u8; 4]>,
}

pub fn decode(bytes: &[u8]) -> Png {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::ALPHA);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let rgba = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| match channels {
            4 => [p[0], p[1], p[2], p[3]],
            3 => [p[0], p[1], p[2], 255],
            2 => [p[0], p[0], p[0], p[1]],
            _ => [p[0], p[0], p[0], 255],
        })
        .collect();
    Png {
        width: info.width,
        height: info.height,
        rgba,
    }
}

impl Png {
    /// Share of pixels within a small distance of `rgb`.
    pub fn share_near(&self, rgb: [u8; 3]) -> f64 {
        let near = self
            .rgba
            .iter()
            .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= 24))
            .count();
        near as f64 / self.rgba.len() as f64
    }

    /// Share of pixels darker than `level` in every channel: text, axis lines.
    pub fn share_darker_than(&self, level: u8) -> f64 {
        let dark = self
            .rgba
            .iter()
            .filter(|p| p[..3].iter().all(|&c| c < level))
            .count();
        dark as f64 / self.rgba.len() as f64
    }
}

/// Clicks `css`, waiting up to 10 s for it to appear.
pub async fn click(client: &Client, css: &str) {
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}` to click: {e}"))
        .click()
        .await
        .unwrap();
}

/// Waits (up to 15 s) until the text of `css` contains `wanted`; returns the text. On a
/// timeout the panic shows what the element and the whole page showed instead.
pub async fn wait_for_text(client: &Client, css: &str, wanted: &str) -> String {
    let mut last = String::new();
    for _ in 0..150 {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            last = element.text().await.unwrap_or_default();
            if last.contains(wanted) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = match client.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    panic!("`{css}` never showed {wanted:?}; it shows {last:?}; the page shows:\n{page}");
}
