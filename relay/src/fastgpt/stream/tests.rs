//! The answer stream read from FastGPT's wire shapes (the parent module's
//! doc lists them), whole, in pieces and broken off; then the whole call
//! against a local HTTP server (`http`).

use super::*;
use std::convert::Infallible;

const IDLE: Duration = Duration::from_secs(5);

/// FastGPT's shapes (see the module doc).
fn delta(text: &str) -> String {
    let json = serde_json::json!({
        "id": "", "object": "", "created": 0, "model": "",
        "choices": [{ "delta": { "role": "assistant", "content": text }, "index": 0, "finish_reason": null }],
    });
    json.to_string()
}
const STOP: &str = r#"{"id":"","object":"","created":0,"model":"","choices":[{"delta":{"role":"assistant","content":null},"index":0,"finish_reason":"stop"}]}"#;

fn named(event: &str, data: &str) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}
fn unnamed(data: &str) -> String {
    format!("data: {data}\n\n")
}

/// Runs the parser over `chunks` and returns every item, up to the end.
async fn run(chunks: Vec<Vec<u8>>) -> Vec<Result<Piece, FastGptError>> {
    let bytes = stream::iter(chunks.into_iter().map(|c| Ok::<_, Infallible>(Bytes::from(c))));
    pieces(bytes, 200, IDLE).collect().await
}

async fn run_str(body: &str) -> Vec<Result<Piece, FastGptError>> {
    run(vec![body.as_bytes().to_vec()]).await
}

fn text(items: &[Result<Piece, FastGptError>]) -> String {
    items
        .iter()
        .filter_map(|i| match i {
            Ok(Piece::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

fn texts(parts: &[&str]) -> Vec<Result<Piece, FastGptError>> {
    parts.iter().map(|p| Ok(Piece::Text((*p).to_owned()))).collect()
}

#[tokio::test]
async fn detail_true_answer_events() {
    let body = [
        named("flowNodeStatus", r#"{"status":"running","name":"AI 对话"}"#),
        named("answer", &delta("")), // the 10 s heartbeat
        named("answer", &delta("Hello")),
        named("answer", &delta(", **world**")),
        named("answer", STOP),
        named("answer", "[DONE]"),
        named("flowResponses", r#"[{"moduleName":"AI 对话","runningTime":1.2}]"#),
    ]
    .concat();
    let mut want = texts(&["Hello", ", **world**"]);
    want.push(Ok(Piece::Responses(serde_json::json!([{ "moduleName": "AI 对话", "runningTime": 1.2 }]))));
    assert_eq!(run_str(&body).await, want, "the nodes' responses after [DONE]");
    let without = body.replace("event: flowResponses", "event: workflowDuration");
    assert_eq!(run_str(&without).await, texts(&["Hello", ", **world**"]), "no responses: the answer ends as it is");
}

#[tokio::test]
async fn detail_false_unnamed_events() {
    let body = [unnamed(&delta("你好")), unnamed(&delta("！")), unnamed(STOP), unnamed("[DONE]")].concat();
    assert_eq!(run_str(&body).await, texts(&["你好", "！"]));
}

#[tokio::test]
async fn fast_answer_is_text() {
    let body = [
        named("fastAnswer", &delta("Quick reply. ")),
        named("answer", &delta("Then more.")),
        named("answer", "[DONE]"),
    ]
    .concat();
    assert_eq!(run_str(&body).await, texts(&["Quick reply. ", "Then more."]));
}

#[tokio::test]
async fn other_events_are_ignored() {
    let body = [
        named("flowNodeStatus", r#"{"status":"running","name":"Search"}"#),
        named("flowNodeResponse", r#"{"id":"x","nodeId":"n","moduleName":"Search","error":null}"#),
        named("toolCall", r#"{"tool":{"id":"t","toolName":"search","params":""}}"#),
        named("toolParams", r#"{"tool":{"id":"t","params":"{\"q\":1}"}}"#),
        named("toolResponse", r#"{"tool":{"id":"t","response":"{}"}}"#),
        named("updateVariables", r#"{"city":"Paris"}"#),
        named("workflowDuration", r#"{"durationSeconds":1.5}"#),
        named("somethingNew", r#"{"choices":[{"delta":{"content":"not the answer"}}]}"#),
        ": a comment line\n\n".to_owned(),
        "id: 7\nretry: 1000\n\n".to_owned(),
        named("answer", &delta("only this")),
        named("answer", "[DONE]"),
    ]
    .concat();
    assert_eq!(run_str(&body).await, texts(&["only this"]));
}

#[tokio::test]
async fn done_ends_the_stream() {
    let body = [named("answer", &delta("a")), named("answer", "[DONE]"), named("answer", &delta("late"))].concat();
    let bytes = stream::iter([Ok::<_, Infallible>(Bytes::from(body))]).chain(stream::pending());
    let mut answer = AnswerStream::new(pieces(bytes, 200, IDLE));
    assert_eq!(answer.next().await, Some(Ok(Piece::Text("a".into()))));
    // Ends at [DONE] without waiting for the connection to close.
    assert_eq!(answer.next().await, None);
    assert_eq!(answer.next().await, None);
}

#[tokio::test]
async fn an_error_event_with_fastgpt_error_body_is_classified() {
    let cases = [
        (r#"{"code":514,"statusText":"unAuthApiKey","message":"Api Key 不合法","data":null}"#, "auth"),
        (r#"{"code":510,"statusText":"insufficientQuota","message":"账号余额不足","data":null}"#, "quota"),
        (r#"{"code":511,"statusText":"unAuthModel","message":"x","data":null}"#, "model"),
        (r#"{"code":502000,"statusText":"appUnExist","message":"应用不存在","data":null}"#, "refused"),
        (r#"{"code":429,"statusText":"tooManyRequest","message":"x","data":null}"#, "transient"),
        (r#"{"code":500,"statusText":"","message":"upstream timed out","data":null}"#, "transient"),
    ];
    for (data, label) in cases {
        // No [DONE]: the error ends the stream.
        let items = run_str(&named("error", data)).await;
        assert_eq!(items.len(), 1, "{data}");
        let err = items[0].clone().expect_err("an error");
        assert_eq!(err.label(), label, "{data}: {err}");
    }
    let items = run_str(&named("error", r#"{"code":514,"statusText":"unAuthApiKey","message":"m"}"#)).await;
    assert!(matches!(&items[0], Err(FastGptError::Refused { http_status: 200, message, .. }) if message == "m"));
}

#[tokio::test]
async fn an_error_event_with_a_bare_message_is_a_workflow_failure() {
    let body =
        [named("answer", &delta("Part of it")), named("error", r#"{"message":"您的工作流版本过低，请重新发布一次"}"#)]
            .concat();
    let items = run_str(&body).await;
    assert_eq!(
        items,
        vec![
            Ok(Piece::Text("Part of it".into())),
            Err(FastGptError::Workflow("您的工作流版本过低，请重新发布一次".into()))
        ]
    );
    assert_eq!(
        run_str(&named("error", r#""app is empty""#)).await,
        vec![Err(FastGptError::Workflow("app is empty".into()))]
    );
    assert_eq!(run_str(&named("error", "not json")).await, vec![Err(FastGptError::Workflow("not json".into()))]);
    assert_eq!(
        run_str(&named("error", r#"{"error":{"message":"boom"}}"#)).await,
        vec![Err(FastGptError::Workflow("boom".into()))]
    );
}

#[tokio::test]
async fn an_end_without_done_is_transient() {
    let items = run_str(&named("answer", &delta("cut short"))).await;
    assert_eq!(items.len(), 2);
    assert!(matches!(&items[1], Err(FastGptError::Transient(m)) if m.contains("before [DONE]")), "{items:?}");
    let items = run_str("").await;
    assert!(matches!(&items[..], [Err(FastGptError::Transient(_))]), "{items:?}");
}

#[tokio::test]
async fn a_stream_cut_mid_line_is_transient() {
    let body = format!("{}event: answer\ndata: {{\"choices\":[{{\"del", named("answer", &delta("first")));
    let items = run_str(&body).await;
    assert_eq!(items[0], Ok(Piece::Text("first".into())));
    assert!(matches!(&items[1..], [Err(FastGptError::Transient(m))] if m.contains("before [DONE]")), "{items:?}");
}

#[tokio::test]
async fn a_network_error_mid_stream_is_transient() {
    let first = Bytes::from(named("answer", &delta("so far")));
    let bytes = stream::iter([Ok(first), Err("connection reset by peer")]);
    let items: Vec<_> = pieces(bytes, 200, IDLE).collect().await;
    assert_eq!(items[0], Ok(Piece::Text("so far".into())));
    assert!(matches!(&items[1..], [Err(FastGptError::Transient(m))] if m.contains("connection reset")), "{items:?}");
}

#[tokio::test]
async fn silence_longer_than_the_idle_timeout_is_transient() {
    let first = Bytes::from(named("answer", &delta("thinking")));
    let bytes = stream::iter([Ok::<_, Infallible>(first)]).chain(stream::pending());
    let items: Vec<_> = pieces(bytes, 200, Duration::from_millis(100)).collect().await;
    assert_eq!(items[0], Ok(Piece::Text("thinking".into())));
    assert!(
        matches!(&items[1..], [Err(FastGptError::Transient(m))] if m.contains("relay.fastgpt_timeout_secs")),
        "{items:?}"
    );
}

/// Every chunk boundary: inside `data:`, inside the JSON, inside a
/// three-byte and a four-byte UTF-8 character, between CR and LF.
#[tokio::test]
async fn one_byte_at_a_time() {
    for sep in ["\n", "\r\n", "\r"] {
        let body = [
            named("flowNodeStatus", r#"{"status":"running","name":"x"}"#),
            named("answer", &delta("汉字 and 🦀")),
            unnamed(&delta(" — ok")),
            named("answer", "[DONE]"),
        ]
        .concat()
        .replace('\n', sep);
        let chunks = body.as_bytes().iter().map(|b| vec![*b]).collect();
        assert_eq!(run(chunks).await, texts(&["汉字 and 🦀", " — ok"]), "{sep:?}");
    }
}

#[tokio::test]
async fn crlf_line_endings() {
    let body = "event: answer\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n\
                data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\r\n\r\n\
                event: answer\r\ndata: [DONE]\r\n\r\n";
    assert_eq!(run_str(body).await, texts(&["a", "b"]));
}

#[tokio::test]
async fn reasoning_content_is_not_the_answer() {
    let thinking = r#"{"choices":[{"delta":{"role":"assistant","reasoning_content":"Let me think"},"index":0}]}"#;
    let both = r#"{"choices":[{"delta":{"role":"assistant","content":"","reasoning_content":"still"},"index":0}]}"#;
    let body =
        [named("answer", thinking), named("answer", both), named("answer", &delta("42")), named("answer", "[DONE]")]
            .concat();
    assert_eq!(run_str(&body).await, texts(&["42"]));
}

#[tokio::test]
async fn answer_data_that_is_not_a_delta_is_skipped() {
    let body = [
        named("answer", "not json at all"),
        named("answer", r#"{"unexpected":true}"#),
        named("answer", r#"{"choices":[]}"#),
        named("answer", &delta("fine")),
        named("answer", "[DONE]"),
    ]
    .concat();
    assert_eq!(run_str(&body).await, texts(&["fine"]));
}

/// FastGPT's userSelect node as it streams it, with the
/// fields FastGPT adds (`entryNodeIds`, `memoryEdges`, `nodeOutputs`).
#[tokio::test]
async fn an_interactive_event_is_passed_raw() {
    let interactive = serde_json::json!({
        "type": "userSelect",
        "params": {
            "description": "Which plan?",
            "userSelectOptions": [{ "key": "option1", "value": "Basic" }, { "key": "option2", "value": "Pro" }],
        },
        "entryNodeIds": ["n1"],
        "memoryEdges": [],
        "nodeOutputs": [],
    });
    let data = serde_json::json!({ "interactive": interactive }).to_string();
    let body = [
        named("answer", &delta("Choose:")),
        named("interactive", &data),
        named("workflowDuration", r#"{"durationSeconds":0.3}"#),
        named("answer", STOP),
        named("answer", "[DONE]"),
    ]
    .concat();
    assert_eq!(run_str(&body).await, vec![Ok(Piece::Text("Choose:".into())), Ok(Piece::Interactive(interactive))]);
}

/// A 1 MiB answer in 16 Ki deltas, in one chunk and in 1 000-byte chunks
/// (chunk edges fall anywhere, in characters too): every byte arrives.
#[tokio::test]
async fn a_long_answer_in_many_deltas() {
    let part = "0123456789abcdefghijklmnopqrstuvwxyz 汉字🦀 ABCDEFGHIJKLMNO\n";
    assert_eq!(part.len(), 64);
    let mut body = String::new();
    for _ in 0..(1 << 14) {
        body.push_str(&named("answer", &delta(part)));
    }
    body.push_str(&named("answer", "[DONE]"));
    let want = part.repeat(1 << 14);
    let whole = run_str(&body).await;
    assert_eq!(whole.len(), 1 << 14);
    assert!(text(&whole) == want);
    let chunked = run(body.as_bytes().chunks(1000).map(<[u8]>::to_vec).collect()).await;
    assert!(chunked.iter().all(Result::is_ok));
    assert!(text(&chunked) == want);
}

#[tokio::test]
async fn an_oversized_event_is_refused() {
    let chunk = vec![b'x'; 64 << 10];
    let mut chunks = vec![b"event: answer\ndata: ".to_vec()];
    chunks.extend(std::iter::repeat_n(chunk, (MAX_EVENT_BYTES >> 16) + 2));
    let items = run(chunks).await;
    assert!(
        matches!(&items[..], [Err(FastGptError::Refused { cause: Refusal::Other, message, .. })] if message.contains("MiB")),
        "{:?}",
        items.iter().map(|i| i.as_ref().map(|_| ())).collect::<Vec<_>>()
    );
    // Many events adding up to more than the bound are fine.
    let mut body = String::new();
    let big = "y".repeat(1 << 20);
    for _ in 0..6 {
        body.push_str(&named("answer", &delta(&big)));
    }
    body.push_str(&named("answer", "[DONE]"));
    let items = run(body.as_bytes().chunks(64 << 10).map(<[u8]>::to_vec).collect()).await;
    assert_eq!(text(&items).len(), 6 << 20);
    assert!(items.iter().all(Result::is_ok));
}

#[test]
fn event_stream_content_types() {
    use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
    let with = |v: &'static str| {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(v));
        h
    };
    assert!(is_event_stream(&with("text/event-stream;charset=utf-8")));
    assert!(is_event_stream(&with("Text/Event-Stream")));
    assert!(is_event_stream(&HeaderMap::new()), "FastGPT's early error event has no Content-Type");
    assert!(!is_event_stream(&with("application/json; charset=utf-8")));
    assert!(!is_event_stream(&with("text/html")));
}

/// The HTTP path, against a local server.
mod http {
    use super::*;
    use axum::body::Body;
    use axum::http::Response as Builder;
    use axum::http::{header, StatusCode};
    use axum::response::Response;
    use axum::routing::post;
    use axum::Router;
    use common::config::ChannelSettings;

    /// Serves `respond` at `/api/v1/chat/completions`; returns the base URL.
    async fn serve(respond: fn() -> Response) -> String {
        serve_after(Duration::ZERO, respond).await
    }

    /// Like [`serve`], answering (headers included) after `delay`.
    async fn serve_after(delay: Duration, respond: fn() -> Response) -> String {
        let answer = move || async move {
            tokio::time::sleep(delay).await;
            respond()
        };
        let app = Router::new().route("/api/v1/chat/completions", post(answer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/api")
    }

    fn channel(base: &str) -> Channel {
        let settings: ChannelSettings = serde_json::from_value(serde_json::json!({
            "id": "test", "app_id": "cli_test", "fastgpt_base_url": base, "fastgpt_api_key": "fastgpt-key",
        }))
        .expect("settings");
        Channel::new(&settings)
    }

    /// A client like the relay's, whose total timeout is shorter than
    /// the answers below: streaming must not be bound by it.
    fn client(idle: Duration) -> FastGpt {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_millis(300))
            .build()
            .expect("client");
        FastGpt::new(http, idle)
    }

    const ASK: Ask<'static> =
        Ask { chat_id: "chat", custom_uid: "lark:test:ou_1", text: "hi", attachments: &[], data_id: None };

    /// Sends `events` one every 100 ms, after none for `pause`.
    fn trickle(events: Vec<String>, pause: Duration) -> Body {
        Body::from_stream(stream::iter(events).then(move |event| async move {
            tokio::time::sleep(pause).await;
            Ok::<_, Infallible>(Bytes::from(event))
        }))
    }

    async fn all(mut answer: AnswerStream) -> Vec<Result<Piece, FastGptError>> {
        let mut items = Vec::new();
        while let Some(item) = answer.next().await {
            items.push(item);
        }
        items
    }

    #[tokio::test]
    async fn an_event_stream_answer() {
        let base = serve(|| {
            let mut events: Vec<String> = (0..8).map(|i| named("answer", &delta(&format!("{i} ")))).collect();
            events.push(named("answer", "[DONE]"));
            Builder::builder()
                .header(header::CONTENT_TYPE, "text/event-stream;charset=utf-8")
                .body(trickle(events, Duration::from_millis(100)))
                .expect("response")
        })
        .await;
        // About 900 ms in all: longer than the client's total timeout.
        let answer = client(Duration::from_secs(5)).ask_streaming(&channel(&base), &ASK).await.expect("stream");
        let items = all(answer).await;
        assert!(items.iter().all(Result::is_ok), "{items:?}");
        assert_eq!(text(&items), "0 1 2 3 4 5 6 7 ");
    }

    #[tokio::test]
    async fn a_json_error_body_is_classified() {
        let base = serve(|| {
            Builder::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
                .body(Body::from(r#"{"code":514,"statusText":"unAuthApiKey","message":"Api Key 不合法","data":null}"#))
                .expect("response")
        })
        .await;
        let err = client(IDLE).ask_streaming(&channel(&base), &ASK).await.expect_err("refused");
        assert!(matches!(err, FastGptError::Refused { cause: Refusal::Auth, http_status: 500, .. }), "{err}");
    }

    #[tokio::test]
    async fn a_whole_json_answer_is_one_piece() {
        let base = serve(|| {
            Builder::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"choices":[{"message":{"role":"assistant","content":"All at once"}}]}"#))
                .expect("response")
        })
        .await;
        let answer = client(IDLE).ask_streaming(&channel(&base), &ASK).await.expect("answer");
        assert_eq!(all(answer).await, texts(&["All at once"]));
    }

    /// FastGPT's error before it set the event-stream header: HTTP 200,
    /// no Content-Type.
    #[tokio::test]
    async fn an_early_error_event_without_content_type() {
        let base = serve(|| {
            let body =
                named("error", r#"{"code":510,"statusText":"insufficientQuota","message":"余额不足","data":null}"#);
            Builder::builder().body(Body::from(body)).expect("response")
        })
        .await;
        let answer = client(IDLE).ask_streaming(&channel(&base), &ASK).await.expect("stream");
        let items = all(answer).await;
        assert!(matches!(&items[..], [Err(FastGptError::Refused { cause: Refusal::Quota, .. })]), "{items:?}");
    }

    #[tokio::test]
    async fn an_idle_stream_times_out() {
        let base = serve(|| {
            let first = stream::iter([Ok::<_, Infallible>(Bytes::from(named("answer", &delta("Hel"))))]);
            Builder::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from_stream(first.chain(stream::pending())))
                .expect("response")
        })
        .await;
        let answer = client(Duration::from_secs(1)).ask_streaming(&channel(&base), &ASK).await.expect("stream");
        let items = all(answer).await;
        assert_eq!(items[0], Ok(Piece::Text("Hel".into())));
        assert!(
            matches!(&items[1..], [Err(FastGptError::Transient(m))] if m.contains("relay.fastgpt_timeout_secs")),
            "{items:?}"
        );
    }

    #[tokio::test]
    async fn no_headers_within_the_idle_timeout() {
        let base = serve_after(Duration::from_secs(3), || {
            Builder::builder().header(header::CONTENT_TYPE, "text/event-stream").body(Body::empty()).expect("response")
        })
        .await;
        let err = client(Duration::from_millis(300)).ask_streaming(&channel(&base), &ASK).await.expect_err("timeout");
        assert!(matches!(&err, FastGptError::Transient(m) if m.contains("relay.fastgpt_timeout_secs")), "{err}");
    }
}
