//! `GET /status`: refused without the admin token, off without one, and a
//! faithful picture of known traffic with it.

use std::time::Duration;

use lark_bridge_tests::eventually::eventually;
use lark_bridge_tests::fake_lark::{Endpoint, Failure};
use lark_bridge_tests::harness::{Bridge, Options};
use serde_json::Value;

use crate::pipeline::WAIT;

const TOKEN: &str = "admin-token-for-tests";

#[tokio::test]
async fn the_status_page_is_off_without_an_admin_token() {
    let b = Bridge::start_with(Options { relays: 0, responders: 0, ..Default::default() }).await;
    let resp = b.http.get(b.url("/status")).bearer_auth(TOKEN).send().await.expect("answer");
    assert_eq!(resp.status(), 404);
    b.stop().await;
}

#[tokio::test]
async fn the_status_page_needs_the_token_and_reflects_known_traffic() {
    let b = Bridge::start_with(Options {
        env: vec![("LARK_BRIDGE__INGRESS__ADMIN_TOKEN", TOKEN.into())],
        ..Default::default()
    })
    .await;
    for (auth, what) in [(None, "no token"), (Some("Bearer wrong"), "a wrong token")] {
        let mut req = b.http.get(b.url("/status.json"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("answer");
        assert_eq!(resp.status(), 401, "{what}");
        assert!(resp.headers().get("www-authenticate").is_some(), "a browser is asked for the password");
    }

    // One question answered, one reply that dies for a missing permission.
    b.deliver_ok(&b.events().p2p_text("oc_st1", "ou_s", "hello")).await;
    assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1);
    b.lark.fail_next(Endpoint::Reply, vec![Failure::no_permission()]);
    b.deliver_ok(&b.events().p2p_text("oc_st2", "ou_s", "again")).await;

    let status: Value =
        eventually(Duration::from_secs(10), "the status shows the dead letter and the error", || async {
            let resp = b.http.get(b.url("/status.json")).bearer_auth(TOKEN).send().await.expect("answer");
            assert_eq!(resp.status(), 200);
            let status: Value = resp.json().await.expect("JSON");
            (status[0]["dead_letters_waiting"] == 1 && !status[0]["last_error"].is_null()).then_some(status)
        })
        .await;
    let support = &status[0];
    assert_eq!(support["channel"], "support");
    assert!(support["last_event_received"].is_string(), "{status}");
    assert!(support["last_question_answered"].is_string(), "{status}");
    assert!(support["last_answer_sent"].is_string(), "{status}");
    assert_eq!(support["dead_letters_waiting"], 1, "{status}");
    let error = &support["last_error"];
    assert_eq!(error[0], "responder", "{status}");
    assert!(error[1]["what"].as_str().is_some_and(|w| w.contains("230027")), "{status}");
    assert!(error[1]["fix"].as_str().is_some_and(|f| f.contains("--redrive")), "{status}");

    // The HTML page, as a browser opens it (Basic, any user name).
    let html = b.http.get(b.url("/status")).basic_auth("ops", Some(TOKEN)).send().await.expect("answer");
    assert_eq!(html.status(), 200);
    let page = html.text().await.expect("text");
    assert!(page.contains("data-channel=\"support\"") && page.contains("230027"), "{page}");
    assert!(!page.contains("<script"), "no JavaScript needed");
    b.stop().await;
}

/// Events and answers of the last hour add up every replica: two ingresses
/// (each sees half the events), two relays, two responders.
#[tokio::test]
async fn the_last_hour_adds_up_every_replica() {
    let mut b = Bridge::start_with(Options {
        env: vec![("LARK_BRIDGE__INGRESS__ADMIN_TOKEN", TOKEN.into())],
        relays: 2,
        responders: 2,
        ..Default::default()
    })
    .await;
    let first = b.ingress_addr.expect("the first ingress");
    b.spawn_ingress().await;
    let second = b.ingress_addr.expect("the second ingress");
    assert_ne!(first, second);
    for i in 0..6 {
        let url = b.events_url().replace(&second.to_string(), &(if i % 2 == 0 { first } else { second }).to_string());
        let event = b.events().p2p_text(&format!("oc_hour{i}"), "ou_h", "hello");
        let resp = b.lark.deliver(&url, &event, b.key.as_ref()).await.expect("ingress answers");
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(b.lark.wait_for_messages(6, WAIT).await.len(), 6);
    for addr in [first, second] {
        // Each service flushes on its own two-second beat.
        let status: Value = eventually(Duration::from_secs(10), "every replica's hour adds up to 6", || async {
            let url = format!("http://{addr}/status.json");
            let status: Value =
                b.http.get(url).bearer_auth(TOKEN).send().await.expect("answer").json().await.expect("JSON");
            ["events_last_hour", "questions_last_hour", "answers_last_hour"]
                .iter()
                .all(|f| status[0][f] == 6)
                .then_some(status)
        })
        .await;
        let c = &status[0];
        assert_eq!((c["events_last_hour"].as_u64(), c["answers_last_hour"].as_u64()), (Some(6), Some(6)), "{status}");
        assert_eq!(c["questions_last_hour"], 6, "{status}");
        assert!(c["answer_latency_p50_ms"].is_u64() && c["question_latency_p50_ms"].is_u64(), "{status}");
        assert_eq!(c["mode"], "webhook");
        assert!(c["lark_calls"]["month"].is_string() && c["lark_calls"]["budget"].is_null(), "{status}");
    }
    b.stop().await;
}

/// The page in a real browser: headless Chromium driven through
/// chromedriver (W3C WebDriver), as an operator uses it.
mod browser {
    use std::path::{Path, PathBuf};
    use std::process::Stdio;
    use std::time::Duration;

    use fantoccini::{Client, ClientBuilder, Locator};
    use lark_bridge_tests::eventually::{until, within, within_every};
    use lark_bridge_tests::fake_lark::{Endpoint, Failure};
    use lark_bridge_tests::harness::{Bridge, Options};
    use serde_json::json;

    use super::TOKEN;
    use crate::pipeline::WAIT;

    /// What a hostile sender could make an error text say.
    const HOSTILE: &str = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>";

    fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(env) {
            return Some(PathBuf::from(p));
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
    }

    /// chromedriver on a free port of its own, stopped when dropped.
    struct Driver {
        child: tokio::process::Child,
        url: String,
    }

    impl Driver {
        async fn start(program: &Path) -> Self {
            let port = lark_bridge_tests::ports::free_port();
            // Its output is dropped: with the page's URL, a verbose log would hold the token.
            let child = tokio::process::Command::new(program)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("chromedriver starts");
            let url = format!("http://127.0.0.1:{port}");
            let http = reqwest::Client::new();
            until(Duration::from_secs(10), &format!("chromedriver answers on {url}"), || async {
                http.get(format!("{url}/status")).send().await.is_ok_and(|r| r.status().is_success())
            })
            .await;
            Self { child, url }
        }
    }

    impl Drop for Driver {
        fn drop(&mut self) {
            let _ = self.child.start_kill();
        }
    }

    /// Where the screenshots go: LARK_BRIDGE_SCREENSHOTS_DIR (`docs` refreshes
    /// the README's), else a folder under target/.
    fn screenshots_dir() -> PathBuf {
        let dir = std::env::var_os("LARK_BRIDGE_SCREENSHOTS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page"));
        let dir = if dir.is_relative() { Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir) } else { dir };
        std::fs::create_dir_all(&dir).expect("screenshots folder");
        dir
    }

    async fn screenshot(browser: &Client, name: &str) {
        // The page's content only, not the empty window below it.
        let page = browser.find(Locator::Css("html")).await.expect("the page");
        let png = page.screenshot().await.expect("screenshot");
        std::fs::write(screenshots_dir().join(name), png).expect("screenshot written");
    }

    async fn field(browser: &Client, channel: &str, name: &str) -> String {
        let css = format!("section[data-channel=\"{channel}\"] [data-field=\"{name}\"]");
        match browser.find(Locator::Css(&css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Reloads the page until `done` holds for it (the services report
    /// every two seconds), at most about three times a second as an
    /// operator's browser would; panics with the page's text after `WAIT`.
    async fn reload_until(browser: &Client, what: &str, done: impl AsyncFn(&Client) -> bool) {
        let shown = within_every(WAIT, Duration::from_millis(300), || async {
            browser.refresh().await.expect("reload");
            done(browser).await.then_some(())
        })
        .await;
        if shown.is_none() {
            let text = browser.find(Locator::Css("body")).await.expect("body").text().await.unwrap_or_default();
            panic!("the page never showed {what}:\n{text}");
        }
    }

    #[tokio::test]
    async fn an_operator_sees_the_traffic_and_re_drives_a_dead_letter_with_the_button() {
        let (Some(chromium), Some(chromedriver)) = (
            find_program("CHROMIUM", &["chromium", "chromium-browser", "google-chrome"]),
            find_program("CHROMEDRIVER", &["chromedriver"]),
        ) else {
            println!(
                "skipped: the status page's browser test needs chromium and chromedriver \
                 (Debian: apt-get install chromium chromium-driver; deploy/test installs them)"
            );
            return;
        };
        let b = Bridge::start_with(Options {
            env: vec![("LARK_BRIDGE__INGRESS__ADMIN_TOKEN", TOKEN.into())],
            ..Default::default()
        })
        .await;
        let driver = Driver::start(&chromedriver).await;
        let profile = tempfile::tempdir().expect("a fresh profile");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1100,1500",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), json!({ "binary": chromium.display().to_string(), "args": args }));
        let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a Chromium session");

        // Without the token: no page (the browser asks for the password).
        let addr = b.ingress_addr.expect("ingress runs");
        browser.goto(&format!("http://{addr}/status")).await.expect("navigates");
        let refused = browser.find(Locator::Css("body")).await.expect("body").text().await.unwrap_or_default();
        assert!(!refused.contains("Last event received"), "{refused}");

        // Logged in (HTTP Basic, the token as the password): nothing yet.
        browser.goto(&format!("http://ops:{TOKEN}@{addr}/status")).await.expect("logs in");
        assert_eq!(browser.title().await.expect("title"), "lark-bridge status");
        assert!(field(&browser, "support", "last_event_received").await.contains("never"));
        let calls = field(&browser, "support", "lark_calls").await;
        assert!(calls.starts_with("0 in 20") && calls.ends_with("(no budget set)"), "{calls}");

        // A message: the channel's state changes.
        b.deliver_ok(&b.events().p2p_text("oc_br1", "ou_ops", "hello")).await;
        assert_eq!(b.lark.wait_for_messages(1, WAIT).await.len(), 1);
        // The ingress counts the event, the responder the answer: each
        // reports on its own clock, so the page waits for both.
        reload_until(&browser, "the event and its answer", async |br: &Client| {
            field(br, "support", "events_last_hour").await == "1"
                && field(br, "support", "answers_last_hour").await == "1"
                && !field(br, "support", "last_answer_sent").await.contains("never")
        })
        .await;
        let state = browser.find(Locator::Css("section[data-channel=\"support\"] [data-state]")).await.expect("state");
        assert_eq!(state.text().await.expect("text"), "working");
        let exact = browser
            .find(Locator::Css("[data-field=\"last_answer_sent\"] time"))
            .await
            .expect("a time")
            .attr("title")
            .await
            .expect("title");
        assert!(exact.is_some_and(|t| t.ends_with(" UTC")), "the exact time on hover");
        let p50 = field(&browser, "support", "answer_latency_p50").await;
        assert!(p50.ends_with(" ms") || p50.ends_with(" s"), "{p50}");
        screenshot(&browser, "status-working.png").await;

        // A reply Lark refuses for good, with an error text a hostile sender chose.
        b.lark.fail_next(Endpoint::Reply, vec![Failure::lark(400, 230027, HOSTILE)]);
        b.deliver_ok(&b.events().p2p_text("oc_br2", "ou_ops", "again")).await;
        reload_until(&browser, "the dead letter", async |br: &Client| {
            field(br, "support", "dead_letters_waiting").await == "1"
                && field(br, "support", "error_what").await.contains("onerror")
        })
        .await;
        let what = field(&browser, "support", "error_what").await;
        assert!(what.contains("<img src=x onerror=") && what.contains("<script>"), "shown as text: {what}");
        assert!(browser.find_all(Locator::Css("img, section script")).await.expect("query").is_empty());
        assert_eq!(browser.title().await.expect("title"), "lark-bridge status", "nothing ran");
        let reason = browser.find(Locator::Css("tr[data-sequence] td.error")).await.expect("the letter").text().await;
        assert!(reason.expect("text").contains("<img src=x"), "the dead letter's reason, as text");
        assert_eq!(
            browser
                .find(Locator::Css("section[data-channel=\"support\"] [data-state]"))
                .await
                .expect("state")
                .text()
                .await
                .expect("text"),
            "needs attention"
        );
        screenshot(&browser, "status-dead-letter.png").await;

        // The button: the dead letter goes back into work and is answered.
        browser
            .find(Locator::Css("tr[data-sequence] button"))
            .await
            .expect("a re-drive button")
            .click()
            .await
            .expect("click");
        // The click returns once the form is sent; the page it leads to may still be loading.
        let found =
            within(Duration::from_secs(10), || async { browser.find(Locator::Css("[data-notice]")).await.ok() }).await;
        let Some(notice) = found else {
            let url = browser.current_url().await.map(|u| u.path().to_owned()).unwrap_or_default();
            panic!("no notice at {url}: {}", browser.source().await.unwrap_or_default());
        };
        let notice = notice.text().await.expect("text");
        assert!(notice.contains("Re-drove 1 dead letter"), "{notice}");
        let messages = b.lark.wait_for_messages(2, WAIT).await;
        assert_eq!(messages.len(), 2, "the re-driven reply is answered");
        reload_until(&browser, "no dead letter left", async |br: &Client| {
            field(br, "support", "dead_letters_waiting").await == "0"
                && field(br, "support", "answers_last_hour").await == "2"
        })
        .await;
        screenshot(&browser, "status-redriven.png").await;

        // A form posted without the page's CSRF token is refused, even with the password.
        let forged = b
            .http
            .post(b.url("/status/redrive"))
            .basic_auth("ops", Some(TOKEN))
            .form(&[("channel", "support")])
            .send()
            .await
            .expect("answer");
        assert_eq!(forged.status(), 403);
        let anonymous =
            b.http.post(b.url("/status/redrive")).form(&[("channel", "support")]).send().await.expect("answer");
        assert_eq!(anonymous.status(), 401);

        let _ = browser.close().await;
        drop(driver);
        b.stop().await;
    }
}
