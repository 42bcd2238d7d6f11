//! The bot's messages as the terminal shows them: where each landed, text
//! as text, cards and rich text rendered, a streaming card growing.

use std::io::Write;

use super::session::Session;
use super::{render_markdown, Arrival, GROUP_CHAT_ID, TOPIC_GROUP_CHAT_ID};
use crate::fake_lark::{content_text, SandboxMessage};

impl<W: Write> Session<'_, W> {
    /// One message of the bot, labelled: a part of the reply from the second
    /// on (the first may turn out to be the whole reply), or a late reply.
    pub(super) fn show(&self, arrival: &Arrival) -> String {
        match arrival {
            Arrival::Reply { message, part } => {
                let label = (*part > 1).then(|| format!("part {part}"));
                if message.streaming && self.live {
                    return self.render_live_start(message, label);
                }
                self.render_reply(message, label)
            }
            Arrival::Late { message, part, to } => {
                let question = self.asked.get(to).map(String::as_str).unwrap_or_default();
                let label = format!("late reply to \"{}\", part {part}", shorten(question, 40));
                self.render_reply(message, Some(label))
            }
            Arrival::Update { message, previous, .. } => self.render_growth(message, previous),
        }
    }

    /// A card that is still streaming, on a terminal: its header and its text
    /// so far (as written, Markdown marks and all), the line left open.
    fn render_live_start(&self, m: &SandboxMessage, part: Option<String>) -> String {
        let tags: Vec<String> = part.into_iter().chain(["card".to_owned(), "streaming".to_owned()]).collect();
        format!("{}\n  {}", self.header(m, &tags), indent_lines(&m.text))
    }

    /// What a growing card added since `previous` (all of it again when it was
    /// rewritten rather than extended), and a last line once it is complete.
    fn render_growth(&self, m: &SandboxMessage, previous: &str) -> String {
        let mut out = match m.text.strip_prefix(previous) {
            Some(added) => indent_lines(added),
            None => format!("\n  {}\n  {}", self.dim("(rewritten)"), indent_lines(&m.text)),
        };
        if !m.streaming {
            out.push_str(&format!("\n  {}\n", self.dim("(card complete)")));
        }
        out
    }

    fn dim(&self, text: &str) -> String {
        if self.options.color {
            format!("\x1b[2m{text}\x1b[22m")
        } else {
            text.to_owned()
        }
    }

    /// `[place] bot (tags)>`, bold green on a terminal.
    pub(super) fn header(&self, m: &SandboxMessage, tags: &[String]) -> String {
        let tags = if tags.is_empty() { String::new() } else { format!(" ({})", tags.join(", ")) };
        let header = format!("[{}] bot{tags}>", landed_in(m));
        if self.options.color {
            format!("\x1b[1;32m{header}\x1b[22;39m")
        } else {
            header
        }
    }

    /// One reply as Lark shows it: where it landed, then its text or rendered card.
    fn render_reply(&self, m: &SandboxMessage, part: Option<String>) -> String {
        let mut tags: Vec<String> = part.into_iter().collect();
        let body = match m.msg_type.as_str() {
            "text" => m.content.get("text").and_then(|t| t.as_str()).unwrap_or_default().to_owned(),
            "interactive" => {
                tags.push("card".to_owned());
                // A card sent by reference: the fake Lark gives its text as it is now.
                let text = if m.card_id.is_some() { m.text.clone() } else { content_text(&m.msg_type, &m.content) };
                render_markdown(&text, self.options.color)
            }
            "post" => {
                tags.push("rich text".to_owned());
                render_markdown(&content_text(&m.msg_type, &m.content), self.options.color)
            }
            other => {
                tags.push(other.to_owned());
                m.content.to_string()
            }
        };
        if m.updates > 0 {
            tags.push(format!("edited {}x", m.updates));
        }
        let header = self.header(m, &tags);
        if m.msg_type == "text" && !body.contains('\n') {
            return format!("{header} {body}\n");
        }
        let mut out = format!("{header}\n");
        for line in body.lines() {
            if !line.is_empty() {
                out.push_str("  ");
                out.push_str(line);
            }
            out.push('\n');
        }
        out
    }
}

/// Text continued on the chat's indented lines: each newline starts another one.
fn indent_lines(text: &str) -> String {
    text.replace('\n', "\n  ")
}

/// Where a reply landed, as the chat's labels name it: the kind of chat, and its topic.
pub(super) fn landed_in(m: &SandboxMessage) -> String {
    let chat = m.chat_id.as_deref().unwrap_or_default();
    match (&m.thread_id, chat) {
        (Some(thread), TOPIC_GROUP_CHAT_ID) => format!("topic {thread}"),
        (Some(thread), GROUP_CHAT_ID) => format!("group, thread {thread}"),
        (Some(thread), _) => format!("thread {thread}"),
        (None, GROUP_CHAT_ID) => "group".to_owned(),
        (None, TOPIC_GROUP_CHAT_ID) => "topic group".to_owned(),
        (None, c) if c.starts_with("oc_sandbox_p2p_") => "private".to_owned(),
        (None, "") => "?".to_owned(),
        (None, c) => c.to_owned(),
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::fake_lark::tenant_token;
    use crate::fake_lark::Via;
    use crate::sandbox_chat::session::Place;
    use crate::sandbox_chat::user::SentInfo;
    use crate::sandbox_chat::{cards, ChatOptions, LarkUser, Target, Timing, DEFAULT_SPEAKER};

    #[test]
    fn replies_are_placed_where_they_landed() {
        let mut m = SandboxMessage {
            index: 0,
            app_id: "a".into(),
            via: Via::Reply { message_id: "om_1".into() },
            message_id: "om_2".into(),
            chat_id: Some(TOPIC_GROUP_CHAT_ID.into()),
            thread_id: Some("omt_1".into()),
            msg_type: "text".into(),
            content: json!({ "text": "x" }),
            text: "x".into(),
            uuid: None,
            reply_in_thread: true,
            updates: 0,
            card_id: None,
            version: 0,
            streaming: false,
            card: None,
        };
        assert_eq!(landed_in(&m), "topic omt_1");
        m.chat_id = Some(GROUP_CHAT_ID.into());
        assert_eq!(landed_in(&m), "group, thread omt_1");
        m.thread_id = None;
        assert_eq!(landed_in(&m), "group");
        m.chat_id = Some("oc_sandbox_p2p_you".into());
        assert_eq!(landed_in(&m), "private");
    }

    /// The bot's side of a streamed answer: a card created, sent as the reply
    /// to `question`, grown twice, then closed.
    async fn bot_streams(lark: String, question: String) {
        let client = reqwest::Client::new();
        let token = tenant_token(&client, &lark, "cli_s", "secret").await;
        let call = |method: reqwest::Method, path: String, body: serde_json::Value| {
            let request = client.request(method, format!("{lark}{path}")).bearer_auth(&token).json(&body);
            async move {
                let body: serde_json::Value = request.send().await.expect("call").json().await.expect("JSON");
                assert_eq!(body["code"], 0, "{body}");
                body
            }
        };
        let card = json!({ "schema": "2.0", "config": { "streaming_mode": true },
            "body": { "elements": [{ "tag": "markdown", "content": "", "element_id": "md" }] } });
        let created = call(
            reqwest::Method::POST,
            "/open-apis/cardkit/v1/cards".into(),
            json!({ "type": "card_json", "data": card.to_string() }),
        )
        .await;
        let card_id = created["data"]["card_id"].as_str().expect("card_id").to_owned();
        let content = json!({ "type": "card", "data": { "card_id": card_id } }).to_string();
        let reply = json!({ "msg_type": "interactive", "content": content, "uuid": format!("u-{question}") });
        call(reqwest::Method::POST, format!("/open-apis/im/v1/messages/{question}/reply"), reply).await;
        for (seq, text) in [(1, "Hello"), (2, "Hello, world")] {
            tokio::time::sleep(Duration::from_millis(60)).await;
            let path = format!("/open-apis/cardkit/v1/cards/{card_id}/elements/md/content");
            call(reqwest::Method::PUT, path, json!({ "content": text, "sequence": seq })).await;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        let settings = json!({ "config": { "streaming_mode": false } }).to_string();
        let path = format!("/open-apis/cardkit/v1/cards/{card_id}/settings");
        call(reqwest::Method::PATCH, path, json!({ "settings": settings, "sequence": 3 })).await;
    }

    #[tokio::test]
    async fn a_streaming_card_grows_live_or_is_shown_once_complete() {
        let lark =
            crate::fake_lark::FakeLark::start(vec![crate::fake_lark::FakeApp::new("cli_s", "secret", "ou_b")]).await;
        let target = Target { lark: lark.base_url(), ..Target::default() };
        let timing = Timing {
            timeout: Duration::from_secs(5),
            quiet: Duration::from_millis(100),
            poll: Duration::from_millis(10),
        };
        for live in [false, true] {
            let mut user = LarkUser::connect(target.clone()).await.expect("the fake Lark answers");
            user.set_live_cards(live);
            let question = format!("om_question_{live}");
            let chat = "oc_sandbox_p2p_you";
            lark.register_message(&question, chat, None);
            user.sent.insert(question.clone(), SentInfo { chat_id: chat.to_owned(), parts_seen: 0 });
            let bot = tokio::spawn(bot_streams(lark.base_url(), question.clone()));
            let mut wait = user.wait_for(&question, timing);
            let mut arrivals = Vec::new();
            while let Some(arrival) = user.next_arrival(&mut wait).await.expect("arrivals") {
                arrivals.push(arrival);
            }
            bot.await.expect("the bot streamed");

            let mut printed = Vec::new();
            let session = Session {
                user,
                options: ChatOptions::default(),
                out: &mut printed,
                place: Place::P2p,
                speaker: DEFAULT_SPEAKER.to_owned(),
                topic: None,
                asked: HashMap::new(),
                live,
                cards: cards::Cards::default(),
            };
            let shown: String = arrivals.iter().map(|a| session.show(a)).collect();
            if !live {
                assert_eq!(arrivals.len(), 1, "{arrivals:?}");
                let Arrival::Reply { message, part: 1 } = &arrivals[0] else { panic!("{arrivals:?}") };
                assert!(!message.streaming && message.text == "Hello, world", "{message:?}");
                assert_eq!(shown, "[private] bot (card)>\n  Hello, world\n");
                continue;
            }
            let Some(Arrival::Reply { message: first, part: 1 }) = arrivals.first() else { panic!("{arrivals:?}") };
            assert!(first.streaming, "{first:?}");
            let Some(Arrival::Update { message: last, .. }) = arrivals.last() else { panic!("{arrivals:?}") };
            assert!(!last.streaming && last.text == "Hello, world", "{last:?}");
            for arrival in &arrivals[1..] {
                let Arrival::Update { message, previous, .. } = arrival else { panic!("{arrivals:?}") };
                assert!(message.text.starts_with(previous.as_str()), "{arrivals:?}");
            }
            assert!(shown.starts_with("[private] bot (card, streaming)>\n  "), "{shown}");
            assert!(shown.ends_with("Hello, world\n  (card complete)\n"), "{shown}");
            assert_eq!(shown.matches("Hello").count(), 1, "each piece printed once: {shown}");
        }
    }

    #[test]
    fn growing_text_keeps_the_indentation() {
        assert_eq!(indent_lines("a\nb"), "a\n  b");
    }
}
