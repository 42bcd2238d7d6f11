//! The node's bytes against FastGPT's, the resume of each node, and the
//! interactive apps over HTTP (streamed, not streamed, a message that is
//! not an answer).

use serde_json::{json, Value};

use super::shapes::{CHILD_APP_NODE, SELECT_NODE};
use super::*;

#[test]
fn hints_name_the_apps() {
    assert_eq!(app_of_hint("select:"), Some((NodeKind::UserSelect, Wrapper::None)));
    assert_eq!(app_of_hint("app:select,"), Some((NodeKind::UserSelect, Wrapper::None)));
    assert_eq!(app_of_hint("form:"), Some((NodeKind::UserInput, Wrapper::None)));
    assert_eq!(app_of_hint("select-nested:"), Some((NodeKind::UserSelect, Wrapper::Children)));
    assert_eq!(app_of_hint("app:form-loop."), Some((NodeKind::UserInput, Wrapper::Loop)));
    for word in ["select", "form", "selection:", "app:", "stream:4x1s", "select-deep:", "reform:", "app:forms"] {
        assert_eq!(app_of_hint(word), None, "{word}");
    }
    assert_eq!(array_style_of_hint("array:untyped"), Some(ArrayStyle::Untyped));
    assert_eq!(array_style_of_hint("array:"), None);
}

#[test]
fn the_select_event_is_fastgpts_bytes() {
    let data = Interactive::select_app().event_data("select: help me");
    let expected = concat!(
        r#"{"interactive":{"type":"userSelect","params":{"description":"Which product?","userSelectOptions":["#,
        r#"{"key":"option1","value":"Product A"},{"key":"option2","value":"Product B"},{"key":"option3","value":"产品 C"}]},"#,
        r#""skipNodeQueue":[],"entryNodeIds":["uS7e1ectN0de"],"memoryEdges":["#,
        r#"{"source":"448745","sourceHandle":"448745-source-right","target":"nZ3vKq8w2Lm1","targetHandle":"nZ3vKq8w2Lm1-target-left","status":"active"},"#,
        r#"{"source":"nZ3vKq8w2Lm1","sourceHandle":"nZ3vKq8w2Lm1-source-right","target":"uS7e1ectN0de","targetHandle":"uS7e1ectN0de-target-left","status":"active"},"#,
        r#"{"source":"uS7e1ectN0de","sourceHandle":"uS7e1ectN0de-source-option1","target":"bRanch0N0de","targetHandle":"bRanch0N0de-target-left","status":"waiting"},"#,
        r#"{"source":"uS7e1ectN0de","sourceHandle":"uS7e1ectN0de-source-option2","target":"bRanch1N0de","targetHandle":"bRanch1N0de-target-left","status":"waiting"},"#,
        r#"{"source":"uS7e1ectN0de","sourceHandle":"uS7e1ectN0de-source-option3","target":"bRanch2N0de","targetHandle":"bRanch2N0de-target-left","status":"waiting"}],"#,
        r#""nodeOutputs":[{"nodeId":"448745","key":"userChatInput","value":"select: help me"},"#,
        r#"{"nodeId":"nZ3vKq8w2Lm1","key":"answerText","value":"Let me help you choose."}]}}"#
    );
    assert_eq!(data, expected);
}

#[test]
fn the_form_has_each_field_type_in_fastgpts_shape() {
    let app = Interactive::form_app();
    let whole = app.whole_json("form:");
    assert_eq!(whole["type"], "userInput");
    assert_eq!(whole["params"]["description"], "Tell us about you");
    let form = whole["params"]["inputForm"].as_array().expect("inputForm");
    let kinds: Vec<&str> = form.iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(kinds, ["input", "textarea", "numberInput", "select"]);
    let InteractiveNode::UserInput { fields, .. } = &app.node else { panic!("a form") };
    assert_eq!(
        serde_json::to_string(&fields[2]).expect("JSON"),
        r#"{"type":"numberInput","key":"年龄","label":"Age","value":"","valueType":"number","required":true,"max":120,"min":1}"#
    );
    assert_eq!(form[1]["key"], "备注 notes");
    assert_eq!(form[1]["required"], false);
    assert_eq!(form[3]["list"], json!([{ "label": "Sales", "value": "sales" }, { "label": "R&D", "value": "rd" }]));
    assert_eq!(form[0]["maxLength"], 50);
}

#[test]
fn wrappers_hold_the_whole_child_result() {
    let nested = Interactive::select_app().wrapped(Wrapper::Children).whole_json("q");
    assert_eq!(nested["type"], "childrenInteractive");
    assert_eq!(nested["entryNodeIds"], json!([CHILD_APP_NODE]));
    let child = &nested["params"]["childrenResponse"];
    assert_eq!(child["type"], "userSelect");
    assert_eq!(child["entryNodeIds"], json!([SELECT_NODE]));
    assert_eq!(child["params"]["userSelectOptions"][2]["value"], "产品 C");

    let looped = Interactive::form_app().wrapped(Wrapper::Loop);
    let text = looped.event_data("q");
    assert!(
        text.starts_with(
            r#"{"interactive":{"type":"loopInteractive","params":{"currentIndex":0,"childrenResponse":{"type":"userInput""#
        ),
        "{text}"
    );
    assert!(text.contains(r#"]},"loopResult":[]},"skipNodeQueue":[],"entryNodeIds":["l0opN0de5x2a"]"#), "{text}");
    // The public shape is the deepest node, without the wrapper.
    assert_eq!(looped.public_json()["type"], "userInput");
    assert!(looped.public_json()["params"].get("childrenResponse").is_none());
}

#[test]
fn content_arrays_in_each_style() {
    let app = Interactive::select_app().wrapped(Wrapper::Children);
    let legacy = app.content_array("q", ArrayStyle::Legacy);
    assert!(
        legacy.starts_with(
            r#"[{"type":"text","text":{"content":"Let me help you choose."}},{"type":"interactive","interactive":{"type":"childrenInteractive","params":{"childrenResponse":{"type":"userSelect""#
        ),
        "{legacy}"
    );
    let public = app.content_array("q", ArrayStyle::Public);
    assert!(
        public.starts_with(
            r#"[{"text":{"content":"Let me help you choose."},"type":"text"},{"interactive":{"type":"userSelect","params":{"description":"Which product?","userSelectOptions":[{"key":"option1","value":"Product A"}"#
        ),
        "{public}"
    );
    assert!(public.ends_with(r#"]}},"type":"interactive"}]"#), "{public}");
    let untyped: Value = serde_json::from_str(&app.content_array("q", ArrayStyle::Untyped)).expect("JSON");
    assert!(untyped[0].get("type").is_none() && untyped[1].get("type").is_none(), "{untyped}");
    assert_eq!(untyped[1]["interactive"]["params"]["description"], "Which product?");
    // No text before the node: the array holds the node alone.
    let bare = Interactive::user_select("", "Pick", &[("a", "A")]).content_array("q", ArrayStyle::Legacy);
    assert!(bare.starts_with(r#"[{"type":"interactive","interactive":{"type":"userSelect""#), "{bare}");
    let parsed: Value = serde_json::from_str(&bare).expect("JSON");
    assert_eq!(parsed.as_array().map(Vec::len), Some(1));
}

#[test]
fn resumes_as_fastgpt_reads_the_next_message() {
    let select = Interactive::select_app();
    assert_eq!(select.resume_with("产品 C"), Resume::Select { key: "option3".into(), value: "产品 C".into() });
    for text in ["Product a", " Product A", "option1", ""] {
        let resume = select.resume_with(text);
        assert_eq!(resume, Resume::NotAnAnswer { node: NodeKind::UserSelect, text: text.into() });
        assert_eq!(select.resumed_answer(&resume, NotAnAnswer::SkipsBranches).as_deref(), Some(""));
        assert_eq!(select.resumed_answer(&resume, NotAnAnswer::Restarts), None);
    }
    let chosen = select.resume_with("Product B");
    assert_eq!(select.resumed_answer(&chosen, NotAnAnswer::SkipsBranches).as_deref(), Some("You chose: Product B."));

    let form = Interactive::form_app();
    let resume = form.resume_with(r#"{"dept":"rd","年龄":30,"name":"Ann","备注 notes":""}"#);
    let Resume::Form { values, missing_required, unknown } = &resume else { panic!("{resume:?}") };
    assert_eq!(values.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["name", "备注 notes", "年龄", "dept"]);
    assert!(missing_required.is_empty() && unknown.is_empty());
    assert_eq!(
        form.resumed_answer(&resume, NotAnAnswer::SkipsBranches).as_deref(),
        Some("Form received: name = Ann, 备注 notes = (empty), 年龄 = 30, dept = rd.")
    );

    let partial = form.resume_with(r#"{"name":"  ","年龄":"7","extra":1,"another":true}"#);
    let Resume::Form { missing_required, unknown, .. } = &partial else { panic!("{partial:?}") };
    assert_eq!(missing_required, &["name"]);
    assert_eq!(unknown, &["another", "extra"]);
    assert_eq!(
        form.resumed_answer(&partial, NotAnAnswer::SkipsBranches).as_deref(),
        Some("Form received: name = (empty), 备注 notes = (missing), 年龄 = 7, dept = (missing).")
    );

    let not_json = form.resume_with("what is this form?");
    assert_eq!(not_json, Resume::NotAnAnswer { node: NodeKind::UserInput, text: "what is this form?".into() });
    assert_eq!(
        form.resumed_answer(&not_json, NotAnAnswer::SkipsBranches).as_deref(),
        Some("Form received: name = (missing), 备注 notes = (missing), 年龄 = (missing), dept = (missing)."),
        "FastGPT goes on with {{}}"
    );
    assert_eq!(form.resume_with("[1]"), Resume::NotAnAnswer { node: NodeKind::UserInput, text: "[1]".into() });
}

use crate::fake_fastgpt::{FakeAnswer, FakeFastGpt};

async fn ask(fake: &FakeFastGpt, chat_id: &str, q: &str, stream: bool, detail: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", fake.base_url()))
        .bearer_auth("k")
        .json(&json!({
            "chatId": chat_id, "stream": stream, "detail": detail,
            "messages": [{ "role": "user", "content": q }]
        }))
        .send()
        .await
        .expect("request")
}

async fn content(fake: &FakeFastGpt, chat_id: &str, q: &str, detail: bool) -> Value {
    let body: Value = ask(fake, chat_id, q, false, detail).await.json().await.expect("JSON");
    body["choices"][0]["message"]["content"].clone()
}

fn chunk(content: &str) -> String {
    format!(
        r#"{{"id":"","object":"","created":0,"model":"","choices":[{{"delta":{{"role":"assistant","content":{content}}},"index":0,"finish_reason":null}}]}}"#
    )
}

#[tokio::test]
async fn a_streamed_select_ends_with_the_interactive_event() {
    let fake = FakeFastGpt::start("k").await;
    let q = "select: which one?";
    let resp = ask(&fake, "c1", q, true, true).await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("body");
    let expected = [
        "event: flowNodeStatus\ndata: {\"status\":\"running\",\"name\":\"AI 对话\"}\n\n".to_owned(),
        format!("event: answer\ndata: {}\n\n", chunk(r#""Let me help ""#)),
        format!("event: answer\ndata: {}\n\n", chunk(r#""you choose.""#)),
        format!("event: interactive\ndata: {}\n\n", Interactive::select_app().event_data(q)),
        "event: workflowDuration\ndata: {\"durationSeconds\":0.42}\n\n".to_owned(),
        "event: answer\ndata: {\"id\":\"\",\"object\":\"\",\"created\":0,\"model\":\"\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":null},\"index\":0,\"finish_reason\":\"stop\"}]}\n\n".to_owned(),
        "event: answer\ndata: [DONE]\n\n".to_owned(),
        "event: flowResponses\ndata: [".to_owned(),
    ]
    .concat();
    assert!(body.starts_with(&expected), "{body}");
    let request = &fake.requests()[0];
    assert_eq!(request.answer.as_deref(), Some("Let me help you choose."));
    assert_eq!(request.interactive, Some(Interactive::select_app()));
    assert_eq!(request.resume, None);
    assert_eq!(fake.pending_interactive("c1"), Some(Interactive::select_app()));

    // Without detail the question is not written: only the text.
    let body = ask(&fake, "c2", "app:select", true, false).await.text().await.expect("body");
    assert!(!body.contains("interactive") && body.contains("you choose.") && body.ends_with("data: [DONE]\n\n"));
    assert!(fake.pending_interactive("c2").is_some(), "the node waits all the same");

    // The resume, streamed like any answer.
    let body = ask(&fake, "c1", "Product B", true, true).await.text().await.expect("body");
    assert!(body.contains(&chunk(r#""You chose: Product ""#)) && body.contains(&chunk(r#""B.""#)), "{body}");
    assert!(!body.contains("event: interactive"), "{body}");
    let request = &fake.requests()[2];
    assert_eq!(request.resume, Some(Resume::Select { key: "option2".into(), value: "Product B".into() }));
    assert_eq!(request.answer.as_deref(), Some("You chose: Product B."));
    assert_eq!(fake.pending_interactive("c1"), None);
    assert_eq!(fake.history("c1"), ["select: which one?", "Product B"]);
}

#[tokio::test]
async fn not_streamed_the_content_is_fastgpts_array() {
    let fake = FakeFastGpt::start("k").await;
    let resp = ask(&fake, "c1", "form:", false, true).await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("body");
    let array = Interactive::form_app().content_array("form:", ArrayStyle::Legacy);
    let expected = format!(
        r#"{{"responseData":[],"newVariables":{{}},"id":"c1","model":"","usage":{{"prompt_tokens":1,"completion_tokens":1,"total_tokens":1}},"choices":[{{"message":{{"role":"assistant","content":{array}}},"finish_reason":"stop","index":0}}]}}"#
    );
    assert_eq!(body, expected);
    assert!(array.starts_with(r#"[{"type":"text","text":{"content":"Please fill in the form."}},{"type":"interactive","interactive":{"type":"userInput","params":{"description":"Tell us about you","inputForm":[{"type":"input","key":"name","label":"Your name","value":"","valueType":"string","required":true,"maxLength":50}"#), "{array}");

    // The form's answer: JSON keyed by the form's keys.
    let answer = content(&fake, "c1", r#"{"name":"Ann","年龄":30,"dept":"sales"}"#, true).await;
    assert_eq!(answer, "Form received: name = Ann, 备注 notes = (missing), 年龄 = 30, dept = sales.");

    // Without detail: the text alone.
    assert_eq!(content(&fake, "c2", "form:", false).await, "Please fill in the form.");
    // Other array shapes, by hint or setting.
    let public = content(&fake, "c3", "select-nested: array:public", true).await;
    assert_eq!(public[1]["type"], "interactive");
    assert_eq!(public[1]["interactive"]["type"], "userSelect", "the deepest node: {public}");
    fake.set_array_style(ArrayStyle::Untyped);
    let untyped = content(&fake, "c4", "select-loop:", true).await;
    assert!(untyped[0].get("type").is_none() && untyped[1]["interactive"]["type"] == "userSelect", "{untyped}");
    let legacy = content(&fake, "c5", "select-loop: array:legacy", true).await;
    assert_eq!(legacy[1]["interactive"]["type"], "loopInteractive");
    assert_eq!(legacy[1]["interactive"]["params"]["childrenResponse"]["type"], "userSelect");
    // The nested node resumes like the plain one.
    assert_eq!(content(&fake, "c5", "产品 C", true).await, "You chose: 产品 C.");
}

#[tokio::test]
async fn other_text_skips_every_branch_or_restarts() {
    let fake = FakeFastGpt::start("k").await;
    ask(&fake, "c", "select:", false, true).await;
    // As FastGPT: the node takes the text, no branch runs, no answer.
    assert_eq!(content(&fake, "c", "what about D?", true).await, "");
    let requests = fake.requests();
    assert_eq!(
        requests[1].resume,
        Some(Resume::NotAnAnswer { node: NodeKind::UserSelect, text: "what about D?".into() })
    );
    assert_eq!(content(&fake, "c", "hello", true).await, "Echo (turn 3): hello", "the node waits no more");

    fake.set_not_an_answer(NotAnAnswer::Restarts);
    ask(&fake, "d", "select:", false, true).await;
    assert_eq!(content(&fake, "d", "hello", true).await, "Echo (turn 2): hello");
    assert!(matches!(fake.requests()[4].resume, Some(Resume::NotAnAnswer { .. })));
    ask(&fake, "d", "form:", false, true).await;
    assert_eq!(content(&fake, "d", "Product A", false).await, "Echo (turn 4): Product A", "not JSON");

    // A scripted interactive answer waits too; a scripted text takes the node.
    fake.push_responses(vec![
        FakeAnswer::user_select("", "Pick one", &[("k1", "Yes 是"), ("k2", "No")]),
        FakeAnswer::Text("scripted".into()),
    ]);
    let array = content(&fake, "e", "anything", true).await;
    assert_eq!(array[0]["interactive"]["params"]["userSelectOptions"][0]["value"], "Yes 是");
    assert_eq!(content(&fake, "e", "Yes 是", true).await, "scripted");
    let last = fake.requests().pop().expect("a request");
    assert_eq!(last.resume, Some(Resume::Select { key: "k1".into(), value: "Yes 是".into() }));
    assert_eq!(fake.pending_interactive("e"), None);
}
