//! `GET /status`: refused without the admin token, off without one, and a
//! faithful picture of known traffic with it.

use std::time::Duration;

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

    let mut status = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let resp = b.http.get(b.url("/status.json")).bearer_auth(TOKEN).send().await.expect("answer");
        assert_eq!(resp.status(), 200);
        status = resp.json().await.expect("JSON");
        if status[0]["dead_letters_waiting"] == 1 && !status[0]["last_error"].is_null() {
            break;
        }
    }
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
    assert!(page.contains("<td>support</td>") && page.contains("230027"), "{page}");
    assert!(!page.contains("<script"), "no JavaScript needed");
    b.stop().await;
}
