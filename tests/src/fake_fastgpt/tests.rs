//! The fake over HTTP, as the relay asks it: echoes, scripted answers,
//! FastGPT's frames and errors.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

async fn ask(client: &reqwest::Client, fake: &FakeFastGpt, key: &str, chat_id: &str, q: &str) -> reqwest::Response {
    client
        .post(format!("{}/v1/chat/completions", fake.base_url()))
        .bearer_auth(key)
        .json(&json!({
            "chatId": chat_id, "stream": false, "detail": false,
            "customUid": "lark:c:ou_1",
            "messages": [{ "role": "user", "content": q }]
        }))
        .send()
        .await
        .expect("request")
}

async fn content(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.expect("JSON");
    body["choices"][0]["message"]["content"].as_str().expect("content").to_owned()
}

#[tokio::test]
async fn echoes_with_turns_per_chat_id() {
    let fake = FakeFastGpt::start("fastgpt-key").await;
    let client = reqwest::Client::new();
    let resp = ask(&client, &fake, "fastgpt-key", "c1", "hello").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["id"], "c1");
    assert_eq!(body["model"], "");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["choices"][0]["message"]["content"], "Echo (turn 1): hello");
    assert_eq!(content(ask(&client, &fake, "fastgpt-key", "c1", "again").await).await, "Echo (turn 2): again");
    assert_eq!(content(ask(&client, &fake, "fastgpt-key", "c2", "other").await).await, "Echo (turn 1): other");
    let md = content(ask(&client, &fake, "fastgpt-key", "c2", "some markdown please").await).await;
    assert!(md.contains("```rust") && md.contains("| key | value |"));
    let requests = fake.wait_for_requests(4, Duration::from_millis(50)).await;
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].custom_uid.as_deref(), Some("lark:c:ou_1"));
    assert_eq!(requests[0].auth.as_deref(), Some("Bearer fastgpt-key"));
    assert_eq!(fake.history("c1"), vec!["hello", "again"]);
    fake.shutdown().await;
}

#[tokio::test]
async fn wrong_key_is_fastgpts_514() {
    let fake = FakeFastGpt::start("right").await;
    let client = reqwest::Client::new();
    fake.push_responses(vec![FakeAnswer::Text("scripted".into())]);
    let resp = ask(&client, &fake, "wrong", "c", "q").await;
    assert_eq!(resp.status(), 500);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body, json!({ "code": 514, "statusText": "unAuthApiKey", "message": "Api Key 不合法", "data": null }));
    assert_eq!(
        content(ask(&client, &fake, "right", "c", "q").await).await,
        "scripted",
        "the wrong key consumed nothing"
    );
}

#[tokio::test]
async fn scripted_answers_in_order() {
    let fake = FakeFastGpt::start("k").await;
    let client = reqwest::Client::new();
    fake.push_responses(vec![
        FakeAnswer::Status { status: 502, body: Value::Null },
        FakeAnswer::too_many_request(),
        FakeAnswer::Delay(Duration::from_millis(20), Box::new(FakeAnswer::WorkflowError)),
        FakeAnswer::Text(String::new()),
    ]);
    assert_eq!(ask(&client, &fake, "k", "c", "q").await.status(), 502);
    let resp = ask(&client, &fake, "k", "c", "q").await;
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.json::<Value>().await.expect("JSON")["statusText"], "tooManyRequest");
    let resp = ask(&client, &fake, "k", "c", "q").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("JSON");
    assert!(body["error"].is_string());
    assert_eq!(body["choices"][0]["message"]["content"], "");
    assert_eq!(content(ask(&client, &fake, "k", "c", "q").await).await, "");
    assert_eq!(content(ask(&client, &fake, "k", "c", "q").await).await, "Echo (turn 2): q");
}

async fn ask_streamed(fake: &FakeFastGpt, chat_id: &str, q: &str, detail: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", fake.base_url()))
        .bearer_auth("k")
        .json(&json!({
            "chatId": chat_id, "stream": true, "detail": detail,
            "messages": [{ "role": "user", "content": q }]
        }))
        .send()
        .await
        .expect("request")
}

/// The events of a server-sent-events body: (event, data), in order.
fn events(body: &str) -> Vec<(Option<String>, String)> {
    assert!(body.ends_with("\n\n"), "every event ends with a blank line: {body:?}");
    body.trim_end_matches('\n')
        .split("\n\n")
        .map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_owned());
                } else {
                    panic!("not an SSE line: {line:?} in {body:?}");
                }
            }
            (event, data.expect("every event has data"))
        })
        .collect()
}

/// The answer text the deltas of `events` carry.
fn deltas(events: &[(Option<String>, String)]) -> Vec<String> {
    events
        .iter()
        .filter(|(e, d)| e.as_deref().is_none_or(|e| e == "answer") && d.as_str() != "[DONE]")
        .filter_map(|(_, d)| {
            let chunk: Value = serde_json::from_str(d).expect("an answer chunk is JSON");
            chunk.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned)
        })
        .collect()
}

/// FastGPT's delta chunk, as its `textAdaptGptResponse` serialises it.
fn chunk_of(content: &str, finish_reason: &str) -> String {
    format!(
        r#"{{"id":"","object":"","created":0,"model":"","choices":[{{"delta":{{"role":"assistant","content":{content}}},"index":0,"finish_reason":{finish_reason}}}]}}"#
    )
}

#[tokio::test]
async fn streamed_answers_are_framed_as_fastgpt_frames_them() {
    let fake = FakeFastGpt::start("k").await;
    let every = Duration::from_millis(5);
    fake.push_responses(vec![FakeAnswer::stream(["Hel", "lo \"you\""], every), FakeAnswer::stream(["Hi"], every)]);

    let resp = ask_streamed(&fake, "c", "q", true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream;charset=utf-8");
    let expected = [
        "event: flowNodeStatus\ndata: {\"status\":\"running\",\"name\":\"AI 对话\"}\n\n".to_owned(),
        format!("event: answer\ndata: {}\n\n", chunk_of(r#""Hel""#, "null")),
        format!("event: answer\ndata: {}\n\n", chunk_of(r#""lo \"you\"""#, "null")),
        "event: workflowDuration\ndata: {\"durationSeconds\":0.42}\n\n".to_owned(),
        format!("event: answer\ndata: {}\n\n", chunk_of("null", r#""stop""#)),
        "event: answer\ndata: [DONE]\n\n".to_owned(),
    ]
    .concat();
    let body = resp.text().await.expect("body");
    assert!(body.starts_with(&expected), "{body}");
    let rest = &body[expected.len()..];
    assert!(rest.starts_with("event: flowResponses\ndata: [{") && rest.ends_with("}]\n\n"), "{rest}");
    assert_eq!(deltas(&events(&body)), ["Hel", "lo \"you\""]);

    let body = ask_streamed(&fake, "c", "q", false).await.text().await.expect("body");
    let expected = [
        format!("data: {}\n\n", chunk_of(r#""Hi""#, "null")),
        format!("data: {}\n\n", chunk_of("null", r#""stop""#)),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    assert_eq!(body, expected, "no event lines and no noise without detail");

    let requests = fake.requests();
    assert!(requests.iter().all(|r| r.streamed && r.stream));
    assert_eq!(requests[0].delta_times.len(), 2);
    assert_eq!(requests[0].answer.as_deref(), Some("Hello \"you\""));
    assert!(requests[0].first_delta_at().expect("a first delta") >= requests[0].received_at + every);
}

#[tokio::test]
async fn the_echo_streams_in_word_deltas_or_at_the_hinted_pace() {
    let fake = FakeFastGpt::start("k").await;
    let body = ask_streamed(&fake, "c", "one two three four five six seven", true).await.text().await.expect("body");
    let parts = deltas(&events(&body));
    assert_eq!(parts.concat(), "Echo (turn 1): one two three four five six seven");
    assert_eq!(parts, ["Echo (turn 1): ", "one two three ", "four five six ", "seven"]);

    let q = "pace stream:4x30ms, please";
    let started = Instant::now();
    let body = ask_streamed(&fake, "c", q, false).await.text().await.expect("body");
    assert!(started.elapsed() >= Duration::from_millis(120), "{:?}", started.elapsed());
    let parts = deltas(&events(&body));
    assert_eq!(parts.len(), 4, "{parts:?}");
    assert_eq!(parts.concat(), format!("Echo (turn 2): {q}"));
    let request = &fake.requests()[1];
    let times = &request.delta_times;
    assert_eq!(times.len(), 4);
    assert!(times.windows(2).all(|w| w[1] - w[0] >= Duration::from_millis(25)), "{times:?}");
    assert_eq!(request.answer.as_deref(), Some(parts.concat().as_str()));

    let body = ask_streamed(&fake, "c", "stream-long:6000 stream:10x1ms", true).await.text().await.expect("body");
    let parts = deltas(&events(&body));
    assert_eq!(parts.len(), 10);
    let answer = parts.concat();
    assert!(answer.starts_with("Echo (turn 3): stream-long:6000") && answer.len() >= 6000, "{}", answer.len());
    assert!(answer.contains("## Section 2") && answer.contains("```rust"), "{answer}");

    // Without "stream": true the hints change nothing but the length.
    let long = content(ask(&reqwest::Client::new(), &fake, "k", "c", "stream-long:3000 stream:9x1s").await).await;
    assert!(long.len() >= 3000 && long.starts_with("Echo (turn 4)"), "{}", long.len());
    assert!(!fake.requests()[3].streamed);
}

#[tokio::test]
async fn stream_errors_breaks_and_errors_before_streaming() {
    let fake = FakeFastGpt::start("k").await;
    let error = json!({ "code": 510, "statusText": "insufficientQuota", "message": "账号余额不足" });
    fake.push_responses(vec![
        FakeAnswer::StreamThenError { deltas: vec!["part".into()], every: Duration::ZERO, error: error.clone() },
        FakeAnswer::StreamCut { deltas: vec!["half ".into(), "way".into()], every: Duration::ZERO },
        FakeAnswer::WorkflowError,
        FakeAnswer::insufficient_quota(),
    ]);
    let resp = ask_streamed(&fake, "c", "q", false).await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("body");
    let all = events(&body);
    assert_eq!(deltas(&all), ["part"]);
    assert_eq!(all.last(), Some(&(Some("error".to_owned()), error.to_string())), "{body}");
    assert!(!body.contains("[DONE]"));

    let mut resp = ask_streamed(&fake, "c", "q", true).await;
    let mut received = Vec::new();
    let broke = loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => received.extend_from_slice(&bytes),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    let received = String::from_utf8(received).expect("UTF-8");
    assert!(broke, "the connection breaks: {received}");
    assert!(!received.contains("[DONE]") && !received.ends_with("\n\n"), "{received}");
    let (whole, _) = received.rsplit_once("\n\n").expect("whole frames first");
    assert_eq!(deltas(&events(&format!("{whole}\n\n"))), ["half ", "way"]);

    let body = ask_streamed(&fake, "c", "q", true).await.text().await.expect("body");
    let (event, data) = events(&body).pop().expect("an event");
    assert_eq!(event.as_deref(), Some("error"));
    assert!(serde_json::from_str::<Value>(&data).expect("JSON")["message"].is_string());

    let resp = ask_streamed(&fake, "c", "q", true).await;
    assert_eq!(resp.status(), 500, "an error before streaming stays a JSON body");
    assert_eq!(resp.json::<Value>().await.expect("JSON")["statusText"], "insufficientQuota");
    let requests = fake.requests();
    assert_eq!(requests[0].answer.as_deref(), Some("part"));
    assert_eq!(requests[1].answer.as_deref(), Some("half way"));
    assert!(!requests[3].streamed);
}
