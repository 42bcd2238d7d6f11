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
    super::tenant_token(client, &lark.base_url(), APP, "secret").await
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

/// A card JSON 2.0 with one markdown element `md`, streaming or not.
fn card_json(text: &str, streaming: bool) -> Value {
    json!({
        "schema": "2.0",
        "config": { "streaming_mode": streaming, "update_multi": true },
        "body": { "elements": [
            { "tag": "markdown", "content": text, "element_id": "md" },
            { "tag": "hr", "element_id": "rule" },
        ] },
    })
}

/// A CardKit call: method, path under `/open-apis/cardkit/v1/`, body; the status and the body.
async fn cardkit(
    client: &reqwest::Client,
    lark: &FakeLark,
    tok: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let resp = client
        .request(method, format!("{}/open-apis/cardkit/v1/{path}", lark.base_url()))
        .bearer_auth(tok)
        .json(&body)
        .send()
        .await
        .expect("CardKit request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

async fn create_card(client: &reqwest::Client, lark: &FakeLark, tok: &str, card: &Value) -> (u16, Value) {
    let body = json!({ "type": "card_json", "data": card.to_string() });
    cardkit(client, lark, tok, reqwest::Method::POST, "cards", body).await
}

async fn new_card(client: &reqwest::Client, lark: &FakeLark, tok: &str, text: &str) -> String {
    let (status, body) = create_card(client, lark, tok, &card_json(text, true)).await;
    assert_eq!((status, &body["code"]), (200, &json!(0)), "{body}");
    body["data"]["card_id"].as_str().expect("card_id").to_owned()
}

async fn put_text(
    client: &reqwest::Client,
    lark: &FakeLark,
    tok: &str,
    card: &str,
    text: &str,
    seq: i64,
) -> (u16, i64) {
    let path = format!("cards/{card}/elements/md/content");
    let (status, body) =
        cardkit(client, lark, tok, reqwest::Method::PUT, &path, json!({ "content": text, "sequence": seq })).await;
    (status, body["code"].as_i64().expect("code"))
}

async fn settings(client: &reqwest::Client, lark: &FakeLark, tok: &str, card: &str, streaming: bool, seq: i64) -> i64 {
    let settings = json!({ "config": { "streaming_mode": streaming } }).to_string();
    let path = format!("cards/{card}/settings");
    let body = json!({ "settings": settings, "sequence": seq });
    cardkit(client, lark, tok, reqwest::Method::PATCH, &path, body).await.1["code"].as_i64().expect("code")
}

async fn put_card(client: &reqwest::Client, lark: &FakeLark, tok: &str, card: &str, json: &Value, seq: i64) -> i64 {
    let body = json!({ "card": { "type": "card_json", "data": json.to_string() }, "sequence": seq });
    let path = format!("cards/{card}");
    cardkit(client, lark, tok, reqwest::Method::PUT, &path, body).await.1["code"].as_i64().expect("code")
}

fn card_reference(card_id: &str, uuid: &str) -> Value {
    let content = json!({ "type": "card", "data": { "card_id": card_id } });
    json!({ "msg_type": "interactive", "content": content.to_string(), "uuid": uuid })
}

async fn sandbox_page(client: &reqwest::Client, lark: &FakeLark, query: &str) -> SandboxPage {
    let url = format!("{}/_sandbox/messages?{query}", lark.base_url());
    client.get(url).send().await.expect("sandbox page").json().await.expect("JSON")
}

#[tokio::test]
async fn a_card_sent_by_reference_shows_its_current_text() {
    let lark = lark().await;
    let client = reqwest::Client::new();
    let tok = good_token(&client, &lark).await;
    let card = new_card(&client, &lark, &tok, "Thinking...").await;
    assert!(card.len() == 19 && card.chars().all(|c| c.is_ascii_digit()), "{card}");

    let sent: Value = reply(&client, &lark, &tok, card_reference(&card, "u-card")).await.json().await.expect("JSON");
    assert_eq!(sent["code"], 0, "{sent}");
    let message_id = sent["data"]["message_id"].as_str().expect("message_id").to_owned();
    assert_eq!(lark.visible_messages()[0].text(), "Thinking...");
    let before = sandbox_page(&client, &lark, "after=0").await;
    assert_eq!(before.messages[0].card_id.as_deref(), Some(card.as_str()));
    assert!(before.messages[0].streaming);

    assert_eq!(put_text(&client, &lark, &tok, &card, "Hello", 1).await, (200, 0));
    assert_eq!(put_text(&client, &lark, &tok, &card, "Hello, world", 2).await, (200, 0));
    let visible = lark.visible_messages();
    assert_eq!(visible.len(), 1);
    assert_eq!(visible[0].text(), "Hello, world", "the message shows the card as it is now");
    assert_eq!(visible[0].card_id(), Some(card.as_str()));
    let page = sandbox_page(&client, &lark, "after=0").await;
    assert_eq!((page.messages[0].text.as_str(), page.messages[0].version), ("Hello, world", 2));

    // The same uuid within the hour: the first message, nothing new shown.
    let again: Value = reply(&client, &lark, &tok, card_reference(&card, "u-card")).await.json().await.expect("JSON");
    assert_eq!(again["data"]["message_id"], json!(message_id));
    assert_eq!(lark.visible_messages().len(), 1);

    assert_eq!(settings(&client, &lark, &tok, &card, false, 3).await, 0);
    let shown = lark.card(&card).expect("the card");
    assert!(!shown.streaming);
    assert_eq!((shown.sequence, shown.version, shown.message_id.as_deref()), (3, 3, Some(message_id.as_str())));
    assert_eq!(shown.json["config"]["streaming_mode"], false);
    assert!(!sandbox_page(&client, &lark, "after=0").await.messages[0].streaming);
    let history: Vec<String> = lark.visible_text_history(&message_id).into_iter().map(|(_, t)| t).collect();
    assert_eq!(history, ["Thinking...", "Hello", "Hello, world"]);

    let kinds: Vec<(CardOpKind, i64)> = lark.card_operations().iter().map(|o| (o.kind, o.code)).collect();
    use CardOpKind::{Content, Create, Settings};
    assert_eq!(kinds, [(Create, 0), (Content, 0), (Content, 0), (Settings, 0)]);
    assert_eq!(lark.card_operations()[1].content.as_deref(), Some("Hello"));
    let found = lark.wait_for_card_text(|t| t.contains("world"), Duration::from_millis(50)).await;
    assert_eq!(found.map(|c| c.card_id), Some(card));
}

#[tokio::test]
async fn card_sequence_must_rise_across_every_operation() {
    let lark = lark().await;
    let client = reqwest::Client::new();
    let tok = good_token(&client, &lark).await;
    let card = new_card(&client, &lark, &tok, "").await;
    assert_eq!(put_text(&client, &lark, &tok, &card, "a", 1).await, (200, 0));
    assert_eq!(put_text(&client, &lark, &tok, &card, "ab", 1).await, (400, 300317));
    assert_eq!(put_text(&client, &lark, &tok, &card, "ab", 0).await, (400, 99992402), "sequence starts at 1");
    assert_eq!(put_text(&client, &lark, &tok, &card, "ab", 5).await, (200, 0), "rising, not necessarily by one");
    assert_eq!(settings(&client, &lark, &tok, &card, true, 4).await, 300317, "across every kind of operation");
    assert_eq!(put_card(&client, &lark, &tok, &card, &card_json("done", false), 5).await, 300317);
    assert_eq!(put_card(&client, &lark, &tok, &card, &card_json("done", false), 6).await, 0);
    let card = lark.card(&card).expect("card");
    assert_eq!((card.text.as_str(), card.sequence, card.streaming), ("done", 6, false));
    let codes: Vec<i64> = lark.card_operations().iter().map(|o| o.code).collect();
    assert_eq!(codes, [0, 0, 300317, 99992402, 0, 300317, 300317, 0]);
}

#[tokio::test]
async fn at_most_ten_operations_a_second_on_one_card() {
    let lark = lark().await;
    let client = reqwest::Client::new();
    let tok = good_token(&client, &lark).await;
    let card = new_card(&client, &lark, &tok, "").await;
    let other = new_card(&client, &lark, &tok, "").await;
    for seq in 1..=10 {
        assert_eq!(put_text(&client, &lark, &tok, &card, &"x".repeat(seq as usize), seq).await, (200, 0));
    }
    let path = format!("cards/{card}/elements/md/content");
    let resp = client
        .put(format!("{}/open-apis/cardkit/v1/{path}", lark.base_url()))
        .bearer_auth(&tok)
        .json(&json!({ "content": "too fast", "sequence": 11 }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["x-ogw-ratelimit-reset"], "1");
    assert_eq!(resp.json::<Value>().await.expect("JSON")["code"], 99991400);
    assert_eq!(put_text(&client, &lark, &tok, &other, "another card", 1).await, (200, 0), "the limit is per card");
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(put_text(&client, &lark, &tok, &card, "later", 11).await, (200, 0));
    lark.set_card_rate_limit(None);
    for seq in 12..=30 {
        assert_eq!(put_text(&client, &lark, &tok, &card, "unlimited", seq).await, (200, 0));
    }
}

#[tokio::test]
async fn each_cardkit_api_is_limited_per_app_per_second_and_per_minute() {
    let lark = lark().await;
    let client = reqwest::Client::new();
    let tok = good_token(&client, &lark).await;
    // 50 card creations a second, then Lark's rate limit with its reset.
    for _ in 0..50 {
        assert_eq!(create_card(&client, &lark, &tok, &card_json("x", true)).await.0, 200);
    }
    let body = json!({ "type": "card_json", "data": card_json("x", true).to_string() });
    let resp = client
        .post(format!("{}/open-apis/cardkit/v1/cards", lark.base_url()))
        .bearer_auth(&tok)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["x-ogw-ratelimit-reset"], "1");
    assert_eq!(resp.json::<Value>().await.expect("JSON")["code"], 99991400);
    // Another API has its own limit.
    let cards: Vec<String> = lark.cards().iter().map(|c| c.card_id.clone()).collect();
    assert_eq!(put_text(&client, &lark, &tok, &cards[0], "own limit", 1).await, (200, 0));
    assert_eq!(lark.cardkit_rate_limited(), 1);
    // The minute: with a lower limit, the reset says when the oldest leaves the window.
    lark.set_cardkit_app_limits(Some((1000, 3)));
    for (i, card) in cards.iter().enumerate().skip(1).take(2) {
        assert_eq!(put_text(&client, &lark, &tok, card, "minute", i as i64).await, (200, 0));
    }
    let resp = client
        .put(format!("{}/open-apis/cardkit/v1/cards/{}/elements/md/content", lark.base_url(), cards[3]))
        .bearer_auth(&tok)
        .json(&json!({ "content": "over the minute", "sequence": 1 }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 429);
    let reset: u64 = resp.headers()["x-ogw-ratelimit-reset"].to_str().expect("ascii").parse().expect("seconds");
    assert!((55..=60).contains(&reset), "{reset} s until the minute frees one");
    lark.set_cardkit_app_limits(None);
    assert_eq!(put_text(&client, &lark, &tok, &cards[3], "unlimited", 1).await, (200, 0));
}

#[tokio::test]
async fn streaming_closes_after_its_window_and_a_full_update_still_works() {
    let lark = lark().await;
    let client = reqwest::Client::new();
    let tok = good_token(&client, &lark).await;
    lark.set_streaming_window(Duration::from_millis(300));
    let card = new_card(&client, &lark, &tok, "").await;
    let sent: Value = reply(&client, &lark, &tok, card_reference(&card, "u-w")).await.json().await.expect("JSON");
    assert_eq!(sent["code"], 0);
    assert_eq!(put_text(&client, &lark, &tok, &card, "streaming", 1).await, (200, 0));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(!lark.card(&card).expect("card").streaming);
    assert_eq!(put_text(&client, &lark, &tok, &card, "streaming on", 2).await, (400, 200850), "the first time");
    assert_eq!(put_text(&client, &lark, &tok, &card, "streaming on", 3).await, (400, 300309), "after");
    assert_eq!(put_card(&client, &lark, &tok, &card, &card_json("the whole answer", false), 4).await, 0);
    assert_eq!(lark.visible_messages()[0].text(), "the whole answer");

    assert_eq!(settings(&client, &lark, &tok, &card, true, 5).await, 0, "turned on again");
    assert_eq!(put_text(&client, &lark, &tok, &card, "again", 6).await, (200, 0));
    assert_eq!(settings(&client, &lark, &tok, &card, false, 7).await, 0);
    assert_eq!(put_text(&client, &lark, &tok, &card, "closed", 8).await, (400, 300309), "closed by the app");
    assert_eq!(lark.visible_messages()[0].text(), "again");
}

#[tokio::test]
async fn cardkit_refusals_have_larks_codes() {
    let lark = lark().await;
    let client = reqwest::Client::new();
    let tok = good_token(&client, &lark).await;
    let create = |data: &str| json!({ "type": "card_json", "data": data });
    let post = |body: Value| cardkit(&client, &lark, &tok, reqwest::Method::POST, "cards", body);
    assert_eq!(post(create("{not json")).await.1["code"], 200220);
    assert_eq!(post(create("")).await.1["code"], 300307);
    assert_eq!(post(create(&json!({ "elements": [] }).to_string())).await.1["code"], 300303, "schema 2.0 only");
    let no_multi = json!({ "schema": "2.0", "config": { "update_multi": false }, "body": { "elements": [] } });
    assert_eq!(post(create(&no_multi.to_string())).await.1["code"], 300302);
    let twice = json!({ "schema": "2.0", "body": { "elements": [
        { "tag": "markdown", "content": "a", "element_id": "x" }, { "tag": "markdown", "content": "b", "element_id": "x" } ] } });
    assert_eq!(post(create(&twice.to_string())).await.1["code"], 300301);
    let (status, body) = post(create(&card_json(&"x".repeat(CARD_LIMIT_BYTES), true).to_string())).await;
    assert_eq!((status, &body["code"]), (400, &json!(200860)));

    let card = new_card(&client, &lark, &tok, "").await;
    assert_eq!(put_text(&client, &lark, &tok, "7300000000000000000", "a", 1).await, (400, 200740));
    let path = format!("cards/{card}/elements/nope/content");
    let (_, body) =
        cardkit(&client, &lark, &tok, reqwest::Method::PUT, &path, json!({ "content": "a", "sequence": 1 })).await;
    assert_eq!(body["code"], 300313);
    assert!(body["msg"].as_str().is_some_and(|m| m.contains("not find elementID : nope")), "{body}");
    let path = format!("cards/{card}/elements/rule/content");
    let (_, body) =
        cardkit(&client, &lark, &tok, reqwest::Method::PUT, &path, json!({ "content": "a", "sequence": 1 })).await;
    assert_eq!(body["code"], 300310, "only text elements stream");
    assert_eq!(put_text(&client, &lark, &tok, &card, "", 1).await, (400, 99992402), "content is at least 1 character");

    // A uuid repeated with the same request is done once; with another request it conflicts.
    let path = format!("cards/{card}/elements/md/content");
    let body = json!({ "content": "once", "sequence": 2, "uuid": "op-1" });
    assert_eq!(cardkit(&client, &lark, &tok, reqwest::Method::PUT, &path, body.clone()).await.1["code"], 0);
    assert_eq!(cardkit(&client, &lark, &tok, reqwest::Method::PUT, &path, body).await.1["code"], 0);
    let other = json!({ "content": "twice", "sequence": 3, "uuid": "op-1" });
    assert_eq!(cardkit(&client, &lark, &tok, reqwest::Method::PUT, &path, other).await.1["code"], 200770);
    assert_eq!(lark.card(&card).expect("card").version, 1);
    assert!(lark.card_operations().iter().any(|o| o.replayed));

    // Sending: an unknown card, and a card sent twice, are 230099.
    let resp: Value =
        reply(&client, &lark, &tok, card_reference("7300000000000000000", "u-x")).await.json().await.expect("JSON");
    assert_eq!(resp["code"], 230099);
    assert_eq!(reply(&client, &lark, &tok, card_reference(&card, "u-1")).await.status(), 200);
    let resp: Value = reply(&client, &lark, &tok, card_reference(&card, "u-2")).await.json().await.expect("JSON");
    assert_eq!(resp["code"], 230099, "a card entity is sent once");
    assert_eq!(lark.visible_messages().len(), 1);

    // Scripted failures and the scope.
    lark.fail_next(Endpoint::CardContent, vec![Failure::card_streaming_timeout()]);
    assert_eq!(put_text(&client, &lark, &tok, &card, "scripted", 4).await, (400, 200850));
    assert_eq!(
        put_text(&client, &lark, &tok, &card, "scripted", 4).await,
        (200, 0),
        "a scripted failure consumes nothing"
    );
    lark.remove_scope(APP, "cardkit:card:write");
    let (status, body) = create_card(&client, &lark, &tok, &card_json("", true)).await;
    assert_eq!((status, &body["code"]), (400, &json!(99991672)));
    assert!(body["msg"].as_str().is_some_and(|m| m.contains("cardkit:card:write")), "{body}");
    assert_eq!(put_text(&client, &lark, &tok, &card, "no scope", 5).await, (400, 99991672));
    lark.grant_scope(APP, "cardkit:card:write");
    assert_eq!(put_text(&client, &lark, &tok, &card, "scope back", 5).await, (200, 0));
    let last = lark.card_operations().pop().expect("an operation");
    assert_eq!(
        (last.kind, last.sequence, last.code, last.app_id.as_deref()),
        (CardOpKind::Content, Some(5), 0, Some(APP))
    );
}

#[tokio::test]
async fn the_sandbox_long_poll_reports_a_card_growing() {
    let lark = lark().await;
    let client = reqwest::Client::new();
    let tok = good_token(&client, &lark).await;
    let card = new_card(&client, &lark, &tok, "").await;
    assert_eq!(reply(&client, &lark, &tok, card_reference(&card, "u-g")).await.status(), 200);
    let page = sandbox_page(&client, &lark, "after=0&changes_since=0").await;
    assert_eq!((page.next, page.messages.len()), (1, 1));
    assert!(page.messages[0].streaming && page.messages[0].text.is_empty());

    // Nothing changed: the poll waits (here 100 ms) and reports nothing.
    let query = format!("after=1&wait_ms=100&changes_since={}", page.stamp);
    let started = Instant::now();
    let idle = sandbox_page(&client, &lark, &query).await;
    assert!(idle.changed.is_empty() && idle.messages.is_empty() && started.elapsed() >= Duration::from_millis(90));

    // A change comes while the poll waits: it answers at once, with the message as it is now.
    let updater = {
        let (client, tok, card, base) = (client.clone(), tok.clone(), card.clone(), lark.base_url());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client
                .put(format!("{base}/open-apis/cardkit/v1/cards/{card}/elements/md/content"))
                .bearer_auth(tok)
                .json(&json!({ "content": "grown", "sequence": 1 }))
                .send()
                .await
                .expect("update")
        })
    };
    let query = format!("after=1&wait_ms=3000&changes_since={}", page.stamp);
    let started = Instant::now();
    let grown = sandbox_page(&client, &lark, &query).await;
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(grown.changed.len(), 1);
    assert_eq!((grown.changed[0].text.as_str(), grown.changed[0].version), ("grown", 1));
    assert!(grown.stamp > page.stamp);
    assert_eq!(updater.await.expect("updater").status(), 200);

    // Without changes_since the page is as before: no changes, new messages only.
    let plain = sandbox_page(&client, &lark, "after=0").await;
    assert!(plain.changed.is_empty() && plain.messages.len() == 1);
}
