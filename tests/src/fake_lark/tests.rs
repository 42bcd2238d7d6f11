//! The fake Lark over HTTP, as the responder meets it.

use std::time::Duration;

use serde_json::{json, Value};

use super::*;

const APP: &str = "cli_test";

async fn lark() -> FakeLark {
    FakeLark::start(vec![FakeApp::new(APP, "secret", "ou_bot")]).await
}

async fn token(client: &reqwest::Client, lark: &FakeLark, secret: &str) -> reqwest::Response {
    client
        .post(format!("{}/open-apis/auth/v3/tenant_access_token/internal", lark.base_url()))
        .json(&json!({ "app_id": APP, "app_secret": secret }))
        .send()
        .await
        .expect("token request")
}

async fn good_token(client: &reqwest::Client, lark: &FakeLark) -> String {
    let body: Value = token(client, lark, "secret").await.json().await.expect("token JSON");
    body["tenant_access_token"].as_str().expect("token at the top level").to_owned()
}

async fn reply(client: &reqwest::Client, lark: &FakeLark, token: &str, body: Value) -> reqwest::Response {
    client
        .post(format!("{}/open-apis/im/v1/messages/om_user1/reply", lark.base_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("reply request")
}

fn text_body(text: &str, uuid: &str) -> Value {
    json!({ "msg_type": "text", "content": json!({ "text": text }).to_string(), "uuid": uuid })
}

#[tokio::test]
async fn token_then_reply_with_uuid_is_shown_once() {
    let lark = lark().await;
    let client = reqwest::Client::new();
    let resp = token(&client, &lark, "secret").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["code"], 0);
    assert_eq!(body["expire"], 7200);
    let tok = body["tenant_access_token"].as_str().expect("token").to_owned();
    assert!(tok.starts_with("t-"));
    assert_eq!(good_token(&client, &lark).await, tok, "Lark hands out the same token while it lives");

    let first: Value = reply(&client, &lark, &tok, text_body("hi", "u-1")).await.json().await.expect("JSON");
    assert_eq!(first["code"], 0);
    assert_eq!(first["data"]["parent_id"], "om_user1");
    let second: Value = reply(&client, &lark, &tok, text_body("hi", "u-1")).await.json().await.expect("JSON");
    assert_eq!(second["data"]["message_id"], first["data"]["message_id"]);

    let visible = lark.wait_for_messages(1, Duration::from_millis(50)).await;
    assert_eq!(visible.len(), 1);
    assert_eq!(visible[0].text(), "hi");
    assert_eq!(visible[0].reply_to(), Some("om_user1"));
    let attempts = lark.all_attempts();
    assert_eq!(attempts.len(), 2);
    assert!(attempts[1].duplicate);
    assert_eq!(lark.token_fetches(), 2);
    lark.shutdown().await;
}

#[tokio::test]
async fn wrong_secret_and_bad_tokens_get_larks_codes() {
    let lark = lark().await;
    let client = reqwest::Client::new();
    let resp = token(&client, &lark, "wrong").await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["code"], 10014);

    let resp = client
        .post(format!("{}/open-apis/im/v1/messages/om_1/reply", lark.base_url()))
        .json(&text_body("x", "u"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.expect("JSON")["code"], 99991661);

    let tok = good_token(&client, &lark).await;
    lark.expire_tokens();
    let resp = reply(&client, &lark, &tok, text_body("x", "u")).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.expect("JSON")["code"], 99991663);
    assert_ne!(good_token(&client, &lark).await, tok);
    assert!(lark.visible_messages().is_empty());

    lark.reject_secret(APP, true);
    assert_eq!(token(&client, &lark, "secret").await.json::<Value>().await.expect("JSON")["code"], 10014);
}

#[tokio::test]
async fn injected_failures_in_order() {
    let lark = lark().await;
    let client = reqwest::Client::new();
    let tok = good_token(&client, &lark).await;
    lark.fail_next(
        Endpoint::Reply,
        vec![Failure::rate_limited(1), Failure::bot_not_in_chat(), Failure::AcceptButDropResponse, Failure::Http500],
    );
    let resp = reply(&client, &lark, &tok, text_body("a", "u-a")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["x-ogw-ratelimit-reset"], "1");
    assert_eq!(resp.json::<Value>().await.expect("JSON")["code"], 99991400);

    let resp = reply(&client, &lark, &tok, text_body("a", "u-a")).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.expect("JSON")["code"], 230002);

    let resp = reply(&client, &lark, &tok, text_body("a", "u-a")).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(lark.visible_messages().len(), 1, "the lost response's message is shown");

    assert_eq!(reply(&client, &lark, &tok, text_body("a", "u-a")).await.status(), 500);
    let resp = reply(&client, &lark, &tok, text_body("a", "u-a")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(lark.visible_messages().len(), 1, "the retry with the same uuid is not shown twice");
    assert_eq!(lark.all_attempts().len(), 5);
}

#[tokio::test]
async fn missing_scope_names_it() {
    let lark = lark().await;
    let client = reqwest::Client::new();
    let tok = good_token(&client, &lark).await;
    lark.remove_scope(APP, "im:message:send_as_bot");
    let resp = reply(&client, &lark, &tok, text_body("a", "u")).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["code"], 99991672);
    let msg = body["msg"].as_str().expect("msg");
    assert!(msg.contains("im:message:send_as_bot") && msg.contains("open.feishu.cn/app/cli_test/auth"));
}

#[tokio::test]
async fn send_card_reactions_bot_info_and_chat_limit() {
    let lark = lark().await;
    let client = reqwest::Client::new();
    let tok = good_token(&client, &lark).await;
    let base = lark.base_url();

    let info: Value = client
        .get(format!("{base}/open-apis/bot/v3/info"))
        .bearer_auth(&tok)
        .send()
        .await
        .expect("info")
        .json()
        .await
        .expect("JSON");
    assert_eq!(info["bot"]["open_id"], "ou_bot");

    let card = json!({ "schema": "2.0", "body": { "elements": [{ "tag": "markdown", "content": "**hi**" }] } });
    for i in 0..6 {
        let body = json!({ "receive_id": "oc_c", "msg_type": "interactive", "content": card.to_string(), "uuid": format!("c{i}") });
        let resp: Value = client
            .post(format!("{base}/open-apis/im/v1/messages?receive_id_type=chat_id"))
            .bearer_auth(&tok)
            .json(&body)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("JSON");
        let expected = if i < 5 { 0 } else { 230020 };
        assert_eq!(resp["code"], expected, "message {i}");
    }
    let visible = lark.visible_messages();
    assert_eq!(visible.len(), 5);
    assert_eq!(visible[0].text(), "**hi**");
    assert_eq!(visible[0].chat_id.as_deref(), Some("oc_c"));

    let added: Value = client
        .post(format!("{base}/open-apis/im/v1/messages/om_u/reactions"))
        .bearer_auth(&tok)
        .json(&json!({ "reaction_type": { "emoji_type": "Typing" } }))
        .send()
        .await
        .expect("react")
        .json()
        .await
        .expect("JSON");
    let id = added["data"]["reaction_id"].as_str().expect("reaction id");
    let resp = client
        .delete(format!("{base}/open-apis/im/v1/messages/om_u/reactions/{id}"))
        .bearer_auth(&tok)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 200);
    let reactions = lark.reactions();
    assert_eq!(reactions[0].emoji_type, "Typing");
    assert!(reactions[0].removed_at.is_some());
}

/// The requests a stand-in ingress received: headers and raw body.
type Captured = Arc<Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>>;

/// A stand-in for the ingress: records the raw body and signature headers it gets.
async fn capture_server() -> (String, Captured, server::ServerHandle) {
    let seen: Captured = Arc::default();
    let store = seen.clone();
    let router = axum::Router::new().route(
        "/lark/c/events",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let headers = headers
                    .iter()
                    .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                    .collect();
                store.lock().expect("capture lock").push((headers, body.to_vec()));
                "{}"
            }
        }),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let server =
        server::ServerHandle::spawn(addr, router, CancellationToken::new()).await.expect("bind capture server");
    (format!("http://{}/lark/c/events", server.addr()), seen, server)
}

#[tokio::test]
async fn deliver_signs_like_lark_and_replies_follow_the_topic() {
    use common::lark::signature::{verify, SignedHeaders, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
    let lark = lark().await;
    let (url, seen, _ingress) = capture_server().await;
    let key = EncryptKey::new(secrecy::SecretString::from("k".to_owned()));
    let event = crate::lark_events::topic_text(APP, "oc_t", "omt_1", "ou_u", "@_user_1 hi", &[]);
    let message_id = crate::lark_events::message_id_of(&event).expect("id").to_owned();
    let resp = lark.deliver(&url, &event, Some(&key)).await.expect("deliver");
    assert_eq!(resp.status(), 200);
    {
        let seen = seen.lock().expect("capture lock");
        let (headers, body) = &seen[0];
        let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).expect("header");
        let signed = SignedHeaders {
            timestamp: get(TIMESTAMP_HEADER),
            nonce: get(NONCE_HEADER),
            signature: get(SIGNATURE_HEADER),
        };
        assert_eq!(verify(signed, &key, body), Ok(()));
    }

    let client = reqwest::Client::new();
    let tok = good_token(&client, &lark).await;
    let resp: Value = client
        .post(format!("{}/open-apis/im/v1/messages/{message_id}/reply", lark.base_url()))
        .bearer_auth(&tok)
        .json(&text_body("answer", "u-topic"))
        .send()
        .await
        .expect("reply")
        .json()
        .await
        .expect("JSON");
    assert_eq!(resp["data"]["chat_id"], "oc_t");
    assert_eq!(resp["data"]["thread_id"], "omt_1");

    let page: SandboxPage = client
        .get(format!("{}/_sandbox/messages?after=0", lark.base_url()))
        .send()
        .await
        .expect("sandbox page")
        .json()
        .await
        .expect("JSON");
    assert_eq!(page.next, 1);
    assert_eq!(page.messages[0].text, "answer");
    assert_eq!(page.messages[0].via, Via::Reply { message_id });
}

#[tokio::test]
async fn card_placeholder_is_updated_in_place() {
    let lark = lark().await;
    let client = reqwest::Client::new();
    let tok = good_token(&client, &lark).await;
    let card =
        |text: &str| json!({ "schema": "2.0", "body": { "elements": [{ "tag": "markdown", "content": text }] } });
    let body = json!({ "msg_type": "interactive", "content": card("Thinking...").to_string(), "uuid": "p" });
    let sent: Value = reply(&client, &lark, &tok, body).await.json().await.expect("JSON");
    let id = sent["data"]["message_id"].as_str().expect("id");
    let resp = client
        .patch(format!("{}/open-apis/im/v1/messages/{id}", lark.base_url()))
        .bearer_auth(&tok)
        .json(&json!({ "content": card("The answer").to_string() }))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), 200);
    let visible = lark.visible_messages();
    assert_eq!(visible.len(), 1);
    assert_eq!(visible[0].text(), "The answer");
    assert_eq!(visible[0].updates, 1);
}

#[tokio::test]
async fn oversized_and_malformed_content_is_refused() {
    let lark = lark().await;
    let client = reqwest::Client::new();
    let tok = good_token(&client, &lark).await;
    let big = "x".repeat(TEXT_LIMIT_BYTES + 1);
    let resp: Value = reply(&client, &lark, &tok, text_body(&big, "big")).await.json().await.expect("JSON");
    assert_eq!(resp["code"], 230025);
    let post_without_locale = json!({ "title": "t", "content": [[{ "tag": "text", "text": "x" }]] });
    let body = json!({ "msg_type": "post", "content": post_without_locale.to_string() });
    let resp: Value = reply(&client, &lark, &tok, body).await.json().await.expect("JSON");
    assert_eq!(resp["code"], 230001);
    let resp: Value = reply(&client, &lark, &tok, text_body("x", &"u".repeat(51))).await.json().await.expect("JSON");
    assert_eq!(resp["code"], 99992402);
    assert!(lark.visible_messages().is_empty());
}
