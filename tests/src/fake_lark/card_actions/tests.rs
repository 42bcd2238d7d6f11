//! Card callbacks as Lark sends them, against a stand-in for the ingress
//! that checks the signature, decrypts and answers as scripted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::lark::crypto::EncryptKey;
use common::lark::long_connection::frame::{Answer, Frame, METHOD_DATA};
use common::lark::signature::{verify, SignedHeaders, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use futures::{SinkExt as _, StreamExt as _};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::fake_lark::server::ServerHandle;
use crate::fake_lark::FakeApp;
use crate::lark_events::random_hex;

const APP: &str = "cli_cards";
const SECRET: &str = "secret";
const TOKEN: &str = "verification-token";
const USER: &str = "ou_clicker";

fn key() -> EncryptKey {
    EncryptKey::new(SecretString::from("card key".to_owned()))
}

async fn lark() -> FakeLark {
    FakeLark::start(vec![FakeApp::new(APP, SECRET, "ou_bot").with_verification_token(TOKEN)]).await
}

fn button(text: &str, value: Value) -> Value {
    json!({ "tag": "button", "text": { "tag": "plain_text", "content": text }, "type": "default",
        "behaviors": [{ "type": "callback", "value": value }] })
}

/// A question card as the bridge sends it: the description, one button per option.
fn select_card() -> Value {
    json!({ "schema": "2.0", "config": { "update_multi": true }, "body": { "elements": [
        { "tag": "markdown", "content": "Which product?" },
        button("Product A", json!({ "q": "q1", "o": 0 })),
        { "tag": "column_set", "columns": [
            { "tag": "column", "elements": [button("Product B", json!({ "q": "q1", "o": 1 }))] },
            { "tag": "column", "elements": [button("产品 C", json!({ "q": "q1", "o": 2 }))] }
        ] }
    ] } })
}

/// A form card: synthetic component names, a submit button carrying the mapping.
fn form_card() -> Value {
    let text = |t: &str| json!({ "tag": "plain_text", "content": t });
    json!({ "schema": "2.0", "body": { "elements": [
        { "tag": "markdown", "content": "Tell us about you" },
        { "tag": "form", "name": "form_q2", "elements": [
            { "tag": "input", "name": "f0", "label": text("Your name"), "required": true },
            { "tag": "input", "name": "f1", "label": text("Notes"), "input_type": "multiline_text", "required": false },
            { "tag": "input", "name": "f2", "label": text("Age"), "required": true },
            { "tag": "select_static", "name": "f3", "placeholder": text("Department"), "options": [
                { "text": text("Sales"), "value": "0" }, { "text": text("R&D"), "value": "1" }] },
            { "tag": "button", "name": "submit_q2", "text": text("Submit"), "form_action_type": "submit",
              "behaviors": [{ "type": "callback", "value": { "q": "q2", "keys": ["name", "备注 notes", "年龄", "dept"] } }] }
        ] }
    ] } })
}

/// The bot replies to a user's message with `content` (a card JSON, or a
/// CardKit reference); the new message's id.
async fn bot_replies(lark: &FakeLark, content: &Value) -> String {
    let client = reqwest::Client::new();
    let token = crate::fake_lark::tenant_token(&client, &lark.base_url(), APP, SECRET).await;
    let user_message = format!("om_user_{}", random_hex(4));
    lark.register_message(&user_message, "oc_cards", None);
    let body = json!({ "msg_type": "interactive", "content": content.to_string() });
    let reply: Value = client
        .post(format!("{}/open-apis/im/v1/messages/{user_message}/reply", lark.base_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("reply")
        .json()
        .await
        .expect("JSON");
    assert_eq!(reply["code"], 0, "{reply}");
    reply["data"]["message_id"].as_str().expect("message_id").to_owned()
}

/// The stand-in ingress: what it received (decrypted), and what it answers.
#[derive(Clone, Default)]
struct Ingress {
    received: Arc<Mutex<Vec<Value>>>,
    answer: Arc<Mutex<(Duration, u16, Value)>>,
}

impl Ingress {
    async fn start(key: Option<EncryptKey>) -> (Self, String, ServerHandle) {
        let ingress = Ingress::default();
        *ingress.answer.lock().expect("lock") = (Duration::ZERO, 200, json!({}));
        let state = ingress.clone();
        let router = axum::Router::new().route(
            "/lark/c/events",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                let key = key.clone();
                async move {
                    let plain = match &key {
                        Some(key) => {
                            let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default();
                            let signed = SignedHeaders {
                                timestamp: header(TIMESTAMP_HEADER),
                                nonce: header(NONCE_HEADER),
                                signature: header(SIGNATURE_HEADER),
                            };
                            if verify(signed, key, &body).is_err() {
                                return (axum::http::StatusCode::UNAUTHORIZED, "bad signature".to_owned());
                            }
                            let wrapper: Value = serde_json::from_slice(&body).expect("the wrapper is JSON");
                            key.decrypt(wrapper["encrypt"].as_str().expect("encrypt")).expect("decrypts")
                        }
                        None => body.to_vec(),
                    };
                    let callback: Value = serde_json::from_slice(&plain).expect("the callback is JSON");
                    state.received.lock().expect("lock").push(callback);
                    let (delay, status, answer) = state.answer.lock().expect("lock").clone();
                    tokio::time::sleep(delay).await;
                    let status = axum::http::StatusCode::from_u16(status).expect("status");
                    (status, answer.to_string())
                }
            }),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = ServerHandle::spawn(addr, router, CancellationToken::new()).await.expect("bind");
        (ingress, format!("http://{}/lark/c/events", server.addr()), server)
    }

    fn answer(&self, delay: Duration, status: u16, body: Value) {
        *self.answer.lock().expect("lock") = (delay, status, body);
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().expect("lock").clone()
    }
}

/// The card after a choice: the choice said, every button disabled.
fn chosen_card(choice: &str) -> Value {
    let mut card = select_card();
    card["body"]["elements"][0]["content"] = json!(format!("Which product?\n\n**{choice}**"));
    disable_buttons(&mut card);
    card
}

fn disable_buttons(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("tag").and_then(Value::as_str) == Some("button") {
                map.insert("disabled".into(), json!(true));
            }
            map.values_mut().for_each(disable_buttons);
        }
        Value::Array(items) => items.iter_mut().for_each(disable_buttons),
        _ => {}
    }
}

fn keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    keys.sort();
    keys
}

#[test]
fn callbacks_have_the_fields_of_larks_sample() {
    let path = format!("{}/../testdata/lark-samples/card_action_trigger.json", env!("CARGO_MANIFEST_DIR"));
    let sample: Value = serde_json::from_slice(&std::fs::read(path).expect("the sample")).expect("JSON");
    let callback = CardActionBuilder::new("cli_x")
        .token("tok")
        .operator("ou_someone")
        .value(json!({ "key": "value" }))
        .name("Button_lvkepfu3")
        .form_values(&[("f0", "1234")])
        .message_id("om_card")
        .chat_id("oc_chat")
        .build();
    assert_eq!(keys(&callback), keys(&sample));
    assert_eq!(keys(&callback["header"]), keys(&sample["header"]));
    assert_eq!(keys(&callback["event"]["operator"]), keys(&sample["event"]["operator"]));
    assert_eq!(keys(&callback["event"]["action"]), keys(&sample["event"]["action"]));
    // Less the link preview's fields (`delivery_type`, `context.url`, `preview_token`).
    let event: Vec<String> = keys(&sample["event"]).into_iter().filter(|k| k != "delivery_type").collect();
    assert_eq!(keys(&callback["event"]), event);
    assert_eq!(keys(&callback["event"]["context"]), ["open_chat_id", "open_message_id"]);
    for pointer in ["/schema", "/header/event_type", "/event/host", "/event/action/tag", "/event/action/timezone"] {
        assert_eq!(callback.pointer(pointer), sample.pointer(pointer), "{pointer}");
    }
    assert_eq!(callback["header"]["create_time"].as_str().map(str::len), Some(16), "microseconds");
    assert!(callback["event"]["token"].as_str().is_some_and(|t| t.starts_with("c-")));
    assert!(callback["event"]["operator"]["union_id"].as_str().is_some_and(|u| u.starts_with("on_")));
    assert_eq!(callback["event"]["action"]["form_value"], json!({ "f0": "1234" }));
    // A plain click: no form_value, and no name unless the button has one.
    let click = CardActionBuilder::new("cli_x").build();
    assert!(click["event"]["action"].get("form_value").is_none() && click["event"]["action"].get("name").is_none());
    assert!(click["header"].get("token").is_none(), "no token unless the app has one");
}

#[test]
fn controls_are_found_anywhere_in_the_card() {
    let controls = CardControls::of(&select_card());
    let texts: Vec<&str> = controls.buttons.iter().map(|b| b.text.as_str()).collect();
    assert_eq!(texts, ["Product A", "Product B", "产品 C"]);
    assert_eq!(controls.buttons[2].value, json!({ "q": "q1", "o": 2 }));
    assert_eq!(controls.choices().len(), 3);
    assert!(controls.forms.is_empty());
    assert_eq!(controls.find(&"Product B".into()).map(|b| b.index), Some(1));
    assert_eq!(controls.find(&ButtonRef::Index(3)), None);

    let form = CardControls::of(&form_card());
    assert!(form.choices().is_empty());
    let [f] = form.forms.as_slice() else { panic!("{form:?}") };
    assert_eq!(f.name, "form_q2");
    let names: Vec<&str> = f.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["f0", "f1", "f2", "f3"]);
    assert!(f.components[0].required && !f.components[1].required && f.components[1].multiline);
    assert_eq!(f.components[3].label, "Department");
    assert_eq!(f.components[3].options, [("Sales".to_owned(), "0".to_owned()), ("R&D".to_owned(), "1".to_owned())]);
    let submit = f.submit.as_ref().expect("a submit button");
    assert!(submit.submit && submit.name.as_deref() == Some("submit_q2") && submit.form.as_deref() == Some("form_q2"));
    assert_eq!(form.buttons.len(), 1);
}

#[tokio::test]
async fn a_click_sends_the_buttons_value_encrypted_and_signed() {
    let lark = lark().await;
    let (ingress, url, _server) = Ingress::start(Some(key())).await;
    let card_message = bot_replies(&lark, &select_card()).await;
    assert_eq!(
        lark.visible_messages()[0].text(),
        "Which product?\n[Product A]\n[Product B]\n[产品 C]",
        "a user sees the buttons"
    );
    let answer = json!({ "toast": { "type": "info", "content": "You chose Product B" },
        "card": { "type": "raw", "data": chosen_card("Product B") } });
    ingress.answer(Duration::ZERO, 200, answer.clone());

    let outcome = lark.click(&url, Some(&key()), &card_message, "Product B", USER).await.expect("clicked");
    assert_eq!(outcome.status, 200);
    assert_eq!(outcome.toast, Some(Toast { kind: "info".into(), content: "You chose Product B".into() }));
    assert_eq!(outcome.card, Some(chosen_card("Product B")));
    assert_eq!(outcome.body, answer);
    assert!(outcome.in_time && outcome.card_applied, "{outcome:?}");
    assert!(outcome.elapsed() < ANSWER_WINDOW);
    assert_eq!(outcome.transport, Transport::RequestUrl { url: url.clone() });

    let received = ingress.received();
    assert_eq!(received.len(), 1, "signed with the channel's key, it decrypted");
    let callback = &received[0];
    assert_eq!(callback, &outcome.callback);
    assert_eq!(callback["header"]["event_type"], CARD_ACTION_TRIGGER);
    assert_eq!(callback["header"]["app_id"], APP);
    assert_eq!(callback["header"]["token"], TOKEN);
    assert_eq!(callback["event"]["action"]["value"], json!({ "q": "q1", "o": 1 }));
    assert_eq!(callback["event"]["operator"]["open_id"], USER);
    assert_eq!(callback["event"]["context"]["open_message_id"], card_message.as_str());
    assert_eq!(callback["event"]["context"]["open_chat_id"], "oc_cards");

    // Lark's client shows the answer's card: the choice, the buttons disabled.
    let shown = &lark.visible_messages()[0];
    assert_eq!(
        shown.text(),
        "Which product?\n\n**Product B**\n[Product A] (disabled)\n[Product B] (disabled)\n[产品 C] (disabled)"
    );
    let err = lark.click(&url, Some(&key()), &card_message, 0, USER).await.expect_err("disabled");
    assert_eq!(err, ClickError::Disabled("Product A".into()));
    assert_eq!(ingress.received().len(), 1, "nothing sent");

    // Two replicas, a double click: a test sends the same callback again itself.
    let again = lark.deliver_card_action(&url, Some(&key()), callback).await.expect("sent");
    assert_eq!(again.status, 200);
    assert_eq!(ingress.received()[1], *callback);
    assert_eq!(lark.card_actions().len(), 2);
}

#[tokio::test]
async fn a_form_submit_maps_component_names_as_lark_checks_them() {
    let lark = lark().await;
    let (ingress, url, _server) = Ingress::start(None).await;
    let card_message = bot_replies(&lark, &form_card()).await;
    assert_eq!(
        lark.visible_messages()[0].text(),
        "Tell us about you\nYour name (required): ____\nNotes: ____\nAge (required): ____\nDepartment: ▾ Sales | R&D\n[Submit]"
    );
    ingress.answer(Duration::ZERO, 200, json!({ "toast": { "type": "success", "content": "Sent" } }));

    let values = [("f0", "Ann"), ("f1", ""), ("f2", "30"), ("f3", "1")];
    let outcome = lark.submit_form(&url, None, &card_message, &values, USER).await.expect("submitted");
    assert_eq!(outcome.toast_text(), "Sent");
    assert!(outcome.card.is_none() && !outcome.card_applied);
    let action = &ingress.received()[0]["event"]["action"];
    assert_eq!(action["form_value"], json!({ "f0": "Ann", "f2": "30", "f3": "1" }), "the empty optional one left out");
    assert_eq!(action["name"], "submit_q2");
    assert_eq!(action["value"]["keys"][1], "备注 notes");
    assert_eq!(action["tag"], "button");

    // What Lark's client refuses to send.
    let missing = lark.submit_form(&url, None, &card_message, &[("f0", "Ann")], USER).await;
    assert_eq!(missing, Err(ClickError::RequiredMissing(vec!["f2".into()])));
    let not_an_option =
        lark.submit_form(&url, None, &card_message, &[("f0", "A"), ("f2", "1"), ("f3", "rd")], USER).await;
    assert_eq!(not_an_option, Err(ClickError::NotAnOption { component: "f3".into(), value: "rd".into() }));
    let unknown = lark.submit_form(&url, None, &card_message, &[("年龄", "1")], USER).await;
    assert_eq!(unknown, Err(ClickError::UnknownComponent("年龄".into())));
    assert_eq!(ingress.received().len(), 1);
    // A forged form_value goes through the builder.
    let forged = lark.form_action_for(&card_message, &values, USER).expect("a callback").form_values(&[("zz", "x")]);
    lark.deliver_card_action(&url, None, &forged.build()).await.expect("sent");
    assert_eq!(ingress.received()[1]["event"]["action"]["form_value"], json!({ "zz": "x" }));
}

#[tokio::test]
async fn a_card_by_reference_is_updated_and_refused_while_streaming() {
    let lark = lark().await;
    let (ingress, url, _server) = Ingress::start(None).await;
    let client = reqwest::Client::new();
    let token = crate::fake_lark::tenant_token(&client, &lark.base_url(), APP, SECRET).await;
    let mut card = select_card();
    card["config"]["streaming_mode"] = json!(true);
    let created: Value = client
        .post(format!("{}/open-apis/cardkit/v1/cards", lark.base_url()))
        .bearer_auth(&token)
        .json(&json!({ "type": "card_json", "data": card.to_string() }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("JSON");
    let card_id = created["data"]["card_id"].as_str().expect("card_id").to_owned();
    let message = bot_replies(&lark, &json!({ "type": "card", "data": { "card_id": card_id } })).await;
    assert_eq!(lark.click(&url, None, &message, 0, USER).await, Err(ClickError::Streaming));

    let settings = json!({ "config": { "streaming_mode": false } }).to_string();
    let closed: Value = client
        .patch(format!("{}/open-apis/cardkit/v1/cards/{card_id}/settings", lark.base_url()))
        .bearer_auth(&token)
        .json(&json!({ "settings": settings, "sequence": 1 }))
        .send()
        .await
        .expect("settings")
        .json()
        .await
        .expect("JSON");
    assert_eq!(closed["code"], 0, "{closed}");
    assert_eq!(lark.card_controls(&message).expect("a card").buttons.len(), 3);
    ingress.answer(Duration::ZERO, 200, json!({ "card": { "type": "raw", "data": chosen_card("产品 C") } }));
    let outcome = lark.click(&url, None, &message, "产品 C", USER).await.expect("clicked");
    assert!(outcome.card_applied, "{outcome:?}");
    let card = lark.card(&card_id).expect("the card");
    assert!(card.text.contains("**产品 C**") && card.text.contains("[产品 C] (disabled)"), "{}", card.text);
    assert!(lark.visible_messages()[0].text().contains("[Product A] (disabled)"));
    assert_eq!(card.sequence, 1, "a callback's card takes no sequence");

    let gone = lark.click(&url, None, "om_nothing", 0, USER).await;
    assert_eq!(gone, Err(ClickError::NoSuchMessage("om_nothing".into())));
    let err = lark.click(&url, None, &message, "Product D", USER).await.expect_err("no such button");
    assert!(matches!(err, ClickError::NoSuchButton { ref available, .. } if available.len() == 3), "{err:?}");
}

#[tokio::test]
async fn a_late_or_failed_answer_changes_nothing() {
    let lark = lark().await;
    let (ingress, url, _server) = Ingress::start(None).await;
    let message = bot_replies(&lark, &select_card()).await;
    let answer = json!({ "toast": { "type": "info", "content": "late" }, "card": { "type": "raw", "data": chosen_card("Product A") } });
    ingress.answer(Duration::from_millis(3200), 200, answer.clone());
    let outcome = lark.click(&url, None, &message, 0, USER).await.expect("answered");
    assert!(!outcome.in_time && !outcome.card_applied, "{outcome:?}");
    assert!(outcome.elapsed() > ANSWER_WINDOW);
    assert!(!lark.visible_messages()[0].text().contains("disabled"), "Lark ignored the late card");

    ingress.answer(Duration::ZERO, 500, answer);
    let outcome = lark.click(&url, None, &message, 0, USER).await.expect("answered");
    assert!(outcome.in_time && !outcome.card_applied && outcome.status == 500, "{outcome:?}");
    assert!(!lark.visible_messages()[0].text().contains("disabled"));
}

/// A long-connection client that acknowledges every data frame with
/// `answer` as the ack's data; the frames' `type` headers, as they came.
async fn lc_client(lark: &FakeLark, answer: Option<Value>) -> Arc<Mutex<Vec<(String, Value)>>> {
    let endpoint: Value = reqwest::Client::new()
        .post(format!("{}/callback/ws/endpoint", lark.base_url()))
        .json(&json!({ "AppID": APP, "AppSecret": SECRET }))
        .send()
        .await
        .expect("endpoint")
        .json()
        .await
        .expect("JSON");
    let url = endpoint["data"]["URL"].as_str().expect("a URL").to_owned();
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connects");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        while let Some(Ok(message)) = stream.next().await {
            let tokio_tungstenite::tungstenite::Message::Binary(bytes) = message else { continue };
            let Ok(frame) = Frame::decode_bytes(&bytes) else { continue };
            if frame.method != METHOD_DATA {
                continue;
            }
            let payload: Value = serde_json::from_slice(frame.payload.as_deref().unwrap_or_default()).expect("JSON");
            store.lock().expect("lock").push((frame.header("type").unwrap_or_default().to_owned(), payload));
            let data = answer.as_ref().map(|a| a.to_string().into_bytes());
            let ack = frame.ack(&Answer { code: 200, data }, Duration::from_millis(3));
            let message = tokio_tungstenite::tungstenite::Message::Binary(ack.to_bytes().into());
            if sink.send(message).await.is_err() {
                return;
            }
        }
    });
    assert_eq!(lark.long_connection().wait_for_connections(APP, 1, Duration::from_secs(5)).await, 1);
    seen
}

#[tokio::test]
async fn over_the_long_connection_the_answer_is_the_acks_data() {
    let lark = lark().await;
    let message = bot_replies(&lark, &select_card()).await;
    let answer = json!({ "toast": { "type": "info", "content": "ok" }, "card": { "type": "raw", "data": chosen_card("Product A") } });
    let frames = lc_client(&lark, Some(answer.clone())).await;

    let outcome =
        lark.click_over_long_connection(&message, "Product A", USER, FrameType::Card).await.expect("answered");
    assert_eq!(outcome.status, 200);
    assert_eq!(outcome.body, answer);
    assert_eq!(outcome.toast_text(), "ok");
    assert!(outcome.card_applied && outcome.in_time, "{outcome:?}");
    assert_eq!(outcome.transport, Transport::LongConnection { frame_type: FrameType::Card });
    let (kind, payload) = frames.lock().expect("lock")[0].clone();
    assert_eq!(kind, "card");
    assert_eq!(payload, outcome.callback, "the plain callback JSON");
    assert_eq!(payload["event"]["action"]["value"], json!({ "q": "q1", "o": 0 }));

    // A form over an `event` frame; hostile JSON too. Lark never pushes a callback again.
    let forged = CardActionBuilder::new(APP).value(json!("a value never offered")).build();
    let outcome = lark.push_card_action(&forged, FrameType::Event).await.expect("answered");
    assert_eq!(outcome.status, 200);
    assert_eq!(frames.lock().expect("lock")[1], ("event".to_owned(), forged));
    lark.long_connection().set_repush_after(Some(Duration::from_millis(50)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(frames.lock().expect("lock").len(), 2, "not pushed again");

    let other = CardActionBuilder::new("cli_nobody").build();
    assert_eq!(
        lark.push_card_action(&other, FrameType::Card).await,
        Err(ClickError::NoLongConnection("cli_nobody".into()))
    );
}

#[tokio::test]
async fn the_sandbox_clicks_at_the_request_url_or_over_the_long_connection() {
    let lark = lark().await;
    let (ingress, url, _server) = Ingress::start(Some(key())).await;
    let message = bot_replies(&lark, &form_card()).await;
    ingress.answer(Duration::ZERO, 200, json!({ "toast": { "type": "info", "content": "thanks" } }));
    let client = reqwest::Client::new();
    let route = format!("{}{SANDBOX_CARD_ACTION_PATH}", lark.base_url());
    let request = SandboxCardAction {
        url: url.clone(),
        encrypt_key: Some("card key".into()),
        verification_token: Some("sandbox-token".into()),
        message_id: message.clone(),
        operator_open_id: USER.into(),
        button: None,
        form_values: Some(vec![("f0".into(), "Ann".into()), ("f2".into(), "3".into())]),
    };
    let resp = client.post(&route).json(&request).send().await.expect("answer");
    assert_eq!(resp.status(), 200);
    let outcome: ClickOutcome = resp.json().await.expect("an outcome");
    assert_eq!(outcome.toast_text(), "thanks");
    assert_eq!(ingress.received()[0]["header"]["token"], "sandbox-token");
    assert_eq!(ingress.received()[0]["event"]["action"]["form_value"]["f0"], "Ann");

    // Refused as Lark's client refuses: 409 with the reason.
    let refused = SandboxCardAction { form_values: Some(vec![("f0".into(), "Ann".into())]), ..request.clone() };
    let resp = client.post(&route).json(&refused).send().await.expect("answer");
    assert_eq!(resp.status(), 409);
    assert!(resp.text().await.expect("body").contains("required and empty: f2"));

    // A long-connection channel: its Request URL refuses, the click goes over the connection.
    ingress.answer(Duration::ZERO, 403, json!({ "error": "long_connection_only" }));
    let frames = lc_client(&lark, Some(json!({ "toast": { "type": "info", "content": "via lc" } }))).await;
    let outcome: ClickOutcome =
        client.post(&route).json(&request).send().await.expect("answer").json().await.expect("outcome");
    assert_eq!(outcome.toast_text(), "via lc");
    assert_eq!(outcome.transport, Transport::LongConnection { frame_type: FrameType::Event });
    assert_eq!(frames.lock().expect("lock")[0].0, "event");
}
