//! The callback protocol at the HTTP edge: every rejected request has a test,
//! and none of them publishes anything.

use lark_bridge_tests::harness::{Bridge, Options, APP_ID, VERIFICATION_TOKEN};
use lark_bridge_tests::lark_events::{url_verification, EventBuilder, SignedRequest};
use serde_json::{json, Value};

async fn ingress_only(encrypt: bool) -> Bridge {
    Bridge::start_with(Options { relays: 0, responders: 0, encrypt, ..Default::default() }).await
}

async fn status_and_body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// A request whose signature is right for whatever bytes it carries.
fn sign_raw(key: &common::lark::crypto::EncryptKey, body: Vec<u8>) -> SignedRequest {
    let ts = lark_bridge_tests::lark_events::now_secs().to_string();
    let sig = common::lark::signature::sign(&ts, "nonce", key, &body);
    SignedRequest {
        body,
        headers: vec![
            ("x-lark-request-timestamp".into(), ts),
            ("x-lark-request-nonce".into(), "nonce".into()),
            ("x-lark-signature".into(), sig),
        ],
    }
}

fn header_of<'a>(req: &'a mut SignedRequest, name: &str) -> &'a mut String {
    &mut req.headers.iter_mut().find(|(n, _)| n == name).expect("header present").1
}

#[tokio::test]
async fn answers_the_url_verification_challenge_plain_and_encrypted() {
    for encrypt in [false, true] {
        let b = ingress_only(encrypt).await;
        let resp = b
            .signed(&url_verification("ajls384kdjxxxx", VERIFICATION_TOKEN))
            .post_to(&b.http, &b.events_url())
            .await
            .expect("answer");
        assert_eq!(status_and_body(resp).await, (200, json!({ "challenge": "ajls384kdjxxxx" })), "encrypt={encrypt}");
        // A challenge with the wrong token is refused.
        let resp = b.signed(&url_verification("c", "wrong")).post_to(&b.http, &b.events_url()).await.expect("answer");
        assert_eq!(resp.status(), 401);
        assert_eq!(b.stream_len(&b.topology().events_stream()).await, 0);
        b.stop().await;
    }
}

#[tokio::test]
async fn an_accepted_event_is_stored_once_with_the_message_id_as_msg_id() {
    let b = ingress_only(true).await;
    let event = b.events().message_id("om_dup_1").p2p_text("oc_1", "ou_1", "hello");
    b.deliver_ok(&event).await;
    // Lark re-pushes the same message (same event_id), and once more under a new event_id.
    b.deliver_ok(&event).await;
    let again = b.events().message_id("om_dup_1").p2p_text("oc_1", "ou_1", "hello");
    b.deliver_ok(&again).await;
    let stream = b.topology().events_stream();
    assert_eq!(b.stream_len(&stream).await, 1);
    let s = b.js.get_stream(&stream).await.expect("stream");
    let stored = s.direct_get_first_for_subject(format!("{}.events.>", b.ns)).await.expect("stored message");
    assert_eq!(stored.headers.get("Nats-Msg-Id").map(|v| v.as_str()), Some("support:msg:om_dup_1"));
    assert_eq!(stored.headers.get("Lark-Bridge-Channel").map(|v| v.as_str()), Some("support"));
    let plain: Value = serde_json::from_slice(&stored.payload).expect("plain JSON is stored");
    assert_eq!(plain["event"]["message"]["message_id"], "om_dup_1");
    b.stop().await;
}

#[tokio::test]
async fn every_rejected_request_gets_its_status_and_publishes_nothing() {
    let b = ingress_only(true).await;
    let url = b.events_url();
    let event = b.events().p2p_text("oc_1", "ou_1", "hello");
    let mut cases: Vec<(&str, u16, reqwest::Response)> = Vec::new();

    let r = b.signed(&event).post_to(&b.http, &b.url("/lark/nope/events")).await.expect("answer");
    cases.push(("unknown channel", 404, r));

    let mut req = b.signed(&event);
    req.body.push(b' ');
    cases.push(("tampered body", 401, req.post_to(&b.http, &url).await.expect("answer")));

    let key = b.key.clone().expect("key");
    let r = sign_raw(&key, b"{not json".to_vec()).post_to(&b.http, &url).await.expect("answer");
    cases.push(("malformed JSON, validly signed", 400, r));

    let r = sign_raw(&key, br#"{"encrypt":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#.to_vec())
        .post_to(&b.http, &url)
        .await
        .expect("answer");
    cases.push(("undecryptable, validly signed", 400, r));

    let r =
        sign_raw(&key, br#"{"encrypt":"not base64 at all!"}"#.to_vec()).post_to(&b.http, &url).await.expect("answer");
    cases.push(("encrypt field not base64", 400, r));

    let mut req = b.signed(&event);
    *header_of(&mut req, "x-lark-signature") = "0".repeat(64);
    cases.push(("bad signature", 401, req.post_to(&b.http, &url).await.expect("answer")));

    let mut req = b.signed(&event);
    req.headers.clear();
    cases.push(("missing signature", 401, req.post_to(&b.http, &url).await.expect("answer")));

    let stale = SignedRequest::new(&event, b.key.as_ref(), lark_bridge_tests::lark_events::now_secs() - 2 * 86_400);
    cases.push(("stamped two days ago", 401, stale.post_to(&b.http, &url).await.expect("answer")));

    let wrong_token = EventBuilder::new(APP_ID).token("wrong").p2p_text("oc_1", "ou_1", "x");
    cases.push(("wrong verification token", 401, b.signed(&wrong_token).post_to(&b.http, &url).await.expect("answer")));

    let other_app = EventBuilder::new("cli_other").token(VERIFICATION_TOKEN).p2p_text("oc_1", "ou_1", "x");
    cases.push(("another app's event", 403, b.signed(&other_app).post_to(&b.http, &url).await.expect("answer")));

    let not_lark = json!({ "hello": "world" });
    cases.push(("JSON that is not a callback", 400, b.signed(&not_lark).post_to(&b.http, &url).await.expect("answer")));

    let huge = b.events().p2p_text("oc_1", "ou_1", &"x".repeat(2 * 1024 * 1024));
    cases.push(("over the body limit", 413, b.signed(&huge).post_to(&b.http, &url).await.expect("answer")));

    for (what, want, resp) in cases {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, want, "{what}: {body}");
        if status != 413 {
            let v: Value =
                serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what}: JSON error body, got {body}"));
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: says what went wrong: {body}");
            for secret in
                [lark_bridge_tests::harness::ENCRYPT_KEY, lark_bridge_tests::harness::APP_SECRET, VERIFICATION_TOKEN]
            {
                assert!(!body.contains(secret), "{what}: a secret in the error body: {body}");
            }
        }
    }
    assert_eq!(b.stream_len(&b.topology().events_stream()).await, 0, "nothing published for rejected requests");
    b.stop().await;
}

#[tokio::test]
async fn plain_channels_accept_plain_events_and_refuse_encrypted_ones() {
    let b = ingress_only(false).await;
    let event = b.events().p2p_text("oc_1", "ou_1", "hello");
    b.deliver_ok(&event).await;
    let key = common::lark::crypto::EncryptKey::new(secrecy::SecretString::from("some key".to_owned()));
    let resp = SignedRequest::now(&event, Some(&key)).post_to(&b.http, &b.events_url()).await.expect("answer");
    assert_eq!(resp.status(), 400, "an encrypted body on a channel without encrypt_key");
    assert_eq!(b.stream_len(&b.topology().events_stream()).await, 1);
    b.stop().await;
}

#[tokio::test]
async fn health_endpoints_answer() {
    let b = ingress_only(true).await;
    let ok = b.http.get(b.url("/healthz")).send().await.expect("answer");
    assert_eq!(ok.status(), 200);
    let ready = b.http.get(b.url("/readyz")).send().await.expect("answer");
    assert_eq!(ready.status(), 200);
    let metrics = b.http.get(b.url("/metrics")).send().await.expect("answer");
    assert_eq!(metrics.status(), 200);
    b.stop().await;
}
