//! Lark's callback bodies: the URL-verification challenge and schema 2.0 events,
//! with the `im.message.receive_v1` message and its content types.
//!
//! Parsing is lenient where Lark adds fields (unknown fields are ignored) and
//! strict where the bridge depends on a field (a missing `event_id` is an error).
//! `message.content` is a JSON string inside the JSON event: [`Message::content`]
//! decodes it by `message_type`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The event type the bridge answers.
pub const MESSAGE_RECEIVE: &str = "im.message.receive_v1";

/// Event types a Lark bot commonly receives. A metrics label takes one of
/// these or `other`: the event type is chosen by whoever posts, and a label
/// without bound would grow `/metrics` (and Prometheus) with every forgery.
const KNOWN_EVENT_TYPES: [&str; 10] = [
    MESSAGE_RECEIVE,
    "card.action.trigger",
    "im.message.message_read_v1",
    "im.message.recalled_v1",
    "im.message.reaction.created_v1",
    "im.message.reaction.deleted_v1",
    "im.chat.member.bot.added_v1",
    "im.chat.member.bot.deleted_v1",
    "im.chat.disbanded_v1",
    "application.bot.menu_v6",
];

/// `event_type` as a bounded metrics label: itself when known, else `other`.
pub fn event_type_label(event_type: &str) -> &'static str {
    KNOWN_EVENT_TYPES.iter().find(|t| **t == event_type).copied().unwrap_or("other")
}

/// The outer body of any callback: either encrypted, or one of the plain forms.
///
/// Borrowed from the request body: base64 needs no unescaping unless the
/// sender escaped its `/` (`\/`), and only then is it copied.
#[derive(Debug, Deserialize)]
pub struct EncryptedBody<'a> {
    #[serde(borrow)]
    pub encrypt: std::borrow::Cow<'a, str>,
}

/// A decrypted (or plain) callback body.
#[derive(Debug)]
pub enum Callback {
    /// `{"type": "url_verification", "challenge": ..., "token": ...}`
    Challenge { challenge: String, token: Option<String> },
    /// A schema 2.0 event.
    Event(EventEnvelope),
}

/// Why a body is not a callback the bridge understands.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the body is JSON but neither a url_verification challenge nor a schema 2.0 event: {0}")]
    Shape(String),
}

/// Every top-level field the bridge reads, of either form, in one pass over
/// the body: `header` is kept raw (and parsed on its own, so a bad header is
/// told apart from bad JSON) and `event` is kept raw until someone needs it.
#[derive(Deserialize)]
struct RawCallback<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(default, borrow)]
    schema: Option<&'a str>,
    #[serde(default)]
    challenge: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default, borrow)]
    header: Option<&'a RawValue>,
    #[serde(default)]
    event: Option<Box<RawValue>>,
}

impl Callback {
    /// Parses a plain callback body.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let raw: RawCallback<'_> = serde_json::from_slice(bytes).map_err(ParseError::Json)?;
        if raw.kind == Some("url_verification") {
            let challenge =
                raw.challenge.ok_or_else(|| ParseError::Shape("url_verification without a challenge".into()))?;
            return Ok(Callback::Challenge { challenge, token: raw.token });
        }
        match raw.schema {
            Some("2.0") => {
                let header = raw.header.ok_or_else(|| ParseError::Shape("schema 2.0 event without a header".into()))?;
                let header: EventHeader = serde_json::from_str(header.get())
                    .map_err(|e| ParseError::Shape(format!("schema 2.0 event header: {e}")))?;
                Ok(Callback::Event(EventEnvelope { schema: "2.0".to_owned(), header, event: raw.event }))
            }
            Some(other) => Err(ParseError::Shape(format!(
                "unsupported schema {other:?}; subscribe to the 2.0 version of the event in the Lark console"
            ))),
            None => Err(ParseError::Shape(
                "no \"schema\": \"2.0\"; the bridge handles schema 2.0 events only (1.0 events are not supported)"
                    .into(),
            )),
        }
    }
}

/// A schema 2.0 event: header plus the event body, kept as raw JSON until the
/// bridge needs its typed form (the ingress reads a message's ids, the relay
/// all of it): no tree of values is built and dropped on the hot path.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EventEnvelope {
    pub schema: String,
    pub header: EventHeader,
    #[serde(default)]
    pub event: Option<Box<RawValue>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EventHeader {
    pub event_id: String,
    pub event_type: String,
    #[serde(default)]
    pub create_time: Option<String>,
    /// The verification token, when the app has one (`""` over the long
    /// connection, which carries none: read as `None`).
    #[serde(default, deserialize_with = "super::ids::empty_as_none")]
    pub token: Option<String>,
    pub app_id: String,
    #[serde(default, deserialize_with = "super::ids::empty_as_none")]
    pub tenant_key: Option<String>,
}

impl EventEnvelope {
    /// Checks that the header's ids are shaped like Lark's (they go into
    /// NATS headers, keys and metrics): see [`super::ids`].
    pub fn check_ids(&self) -> Result<(), super::ids::IdError> {
        use super::ids::{check, check_event_type, check_opt};
        check("header.event_id", &self.header.event_id)?;
        check_event_type(&self.header.event_type)?;
        check("header.app_id", &self.header.app_id)?;
        check_opt("header.tenant_key", self.header.tenant_key.as_deref())
    }

    /// The typed body of an `im.message.receive_v1` event; `None` for other types.
    pub fn message_event(&self) -> Option<Result<MessageEvent, serde_json::Error>> {
        (self.header.event_type == MESSAGE_RECEIVE)
            .then(|| serde_json::from_str(self.event.as_deref().map_or("null", RawValue::get)))
    }
}

/// The body of `im.message.receive_v1`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MessageEvent {
    pub sender: Sender,
    pub message: Message,
}

impl MessageEvent {
    /// Checks that every id the bridge reads from this message (and puts in
    /// a URL path, a NATS subject, a chatId) is shaped like a Lark id.
    pub fn check_ids(&self) -> Result<(), super::ids::IdError> {
        use super::ids::{check, check_opt};
        check("message.message_id", &self.message.message_id)?;
        check("message.chat_id", &self.message.chat_id)?;
        check_opt("message.thread_id", self.message.thread_id.as_deref())?;
        check_opt("message.root_id", self.message.root_id.as_deref())?;
        check_opt("message.parent_id", self.message.parent_id.as_deref())?;
        check_opt("sender.sender_id.open_id", self.sender.sender_id.open_id.as_deref())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Sender {
    #[serde(default)]
    pub sender_id: UserIds,
    /// `user` for people, `app` for bots (whose messages the bridge ignores).
    #[serde(default)]
    pub sender_type: String,
    #[serde(default, deserialize_with = "super::ids::empty_as_none")]
    pub tenant_key: Option<String>,
}

/// A person's (or a bot's) ids. Each may be missing, `null` (`user_id`
/// without the app's user-id scope) or `""` (`user_id` of a bot in
/// `mentions`): all three read as `None`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct UserIds {
    #[serde(default, deserialize_with = "super::ids::empty_as_none")]
    pub open_id: Option<String>,
    #[serde(default, deserialize_with = "super::ids::empty_as_none")]
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "super::ids::empty_as_none")]
    pub union_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Message {
    pub message_id: String,
    /// The first message of the reply chain; `""` (older events) or missing
    /// when the message replies to nothing, read as `None`.
    #[serde(default, deserialize_with = "super::ids::empty_as_none")]
    pub root_id: Option<String>,
    /// The message this one replies to; like `root_id`.
    #[serde(default, deserialize_with = "super::ids::empty_as_none")]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub create_time: Option<String>,
    pub chat_id: String,
    /// Set when the message is in a topic (thread); `""` reads as `None`.
    #[serde(default, deserialize_with = "super::ids::empty_as_none")]
    pub thread_id: Option<String>,
    /// `p2p` or `group`.
    pub chat_type: String,
    pub message_type: String,
    /// JSON text whose shape depends on `message_type`.
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub mentions: Vec<Mention>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Mention {
    /// The placeholder in the text, `@_user_1`.
    pub key: String,
    #[serde(default)]
    pub id: UserIds,
    #[serde(default)]
    pub name: String,
}

/// A decoded `message.content`.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text {
        text: String,
    },
    Post(PostContent),
    /// An image message: the image is downloaded with its key
    /// (`GET .../messages/{message_id}/resources/{image_key}?type=image`).
    Image {
        image_key: String,
    },
    /// A file message (`type=file`); `file_name` is the user's, for display only.
    File {
        file_key: String,
        file_name: String,
    },
    /// Audio, video, stickers, cards, merged forwards...: not read.
    Other {
        message_type: String,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PostContent {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub content: Vec<Vec<PostElement>>,
}

/// One run of a rich-text line. Unknown tags keep their fields in `text`
/// (when they have one) so nothing readable is lost.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PostElement {
    pub tag: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub href: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub user_name: Option<String>,
    /// `img` (an image in the post) and `media` (a video's cover).
    #[serde(default)]
    pub image_key: Option<String>,
    /// `media`: the video itself.
    #[serde(default)]
    pub file_key: Option<String>,
}

impl PostContent {
    /// The keys of the post's images (`img` runs), in order, each once.
    pub fn image_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for run in self.content.iter().flatten().filter(|r| r.tag == "img") {
            if let Some(key) = run.image_key.as_deref().filter(|k| !k.is_empty()) {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        keys
    }

    /// Whether the post holds a video (`media`), which the bridge does not read.
    pub fn has_media(&self) -> bool {
        self.content.iter().flatten().any(|r| r.tag == "media")
    }
}

#[derive(Deserialize)]
struct TextContent {
    text: String,
}

#[derive(Deserialize)]
struct ImageContent {
    image_key: String,
}

#[derive(Deserialize)]
struct FileContent {
    file_key: String,
    #[serde(default)]
    file_name: String,
}

impl Message {
    /// Decodes `content` by `message_type`.
    pub fn content(&self) -> Result<Content, serde_json::Error> {
        match self.message_type.as_str() {
            "text" => serde_json::from_str::<TextContent>(&self.content).map(|t| Content::Text { text: t.text }),
            "post" => serde_json::from_str::<PostContent>(&self.content).map(Content::Post),
            "image" => {
                serde_json::from_str::<ImageContent>(&self.content).map(|c| Content::Image { image_key: c.image_key })
            }
            "file" => serde_json::from_str::<FileContent>(&self.content)
                .map(|c| Content::File { file_key: c.file_key, file_name: c.file_name }),
            other => Ok(Content::Other { message_type: other.to_owned() }),
        }
    }

    pub fn is_p2p(&self) -> bool {
        self.chat_type == "p2p"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload from Lark's documentation, kept in the repository
    /// (`testdata/lark-samples/`, whose README says where each comes from).
    fn sample(name: &str) -> Vec<u8> {
        let path = format!("{}/../testdata/lark-samples/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    #[test]
    fn parses_the_url_verification_sample() {
        match Callback::parse(&sample("url_verification_plain.json")).expect("parses") {
            Callback::Challenge { challenge, token } => {
                assert_eq!(challenge, "ajls384kdjxxxx");
                assert_eq!(token.as_deref(), Some("xxxxxx"));
            }
            other => panic!("not a challenge: {other:?}"),
        }
    }

    #[test]
    fn parses_the_group_mention_sample() {
        let Callback::Event(env) = Callback::parse(&sample("group_mention.json")).expect("parses") else {
            panic!("not an event")
        };
        assert_eq!(env.header.event_id, "5e3702a84e847582be8db7fb73283c02");
        assert_eq!(env.header.app_id, "cli_9f5343c580712544");
        assert_eq!(env.header.token.as_deref(), Some("rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV"));
        let ev = env.message_event().expect("is a message").expect("typed");
        assert_eq!(ev.sender.sender_type, "user");
        assert_eq!(ev.message.chat_type, "group");
        assert_eq!(ev.message.thread_id.as_deref(), Some("omt_d4be107c616"));
        assert_eq!(ev.message.mentions[0].key, "@_user_1");
        assert_eq!(ev.message.mentions[0].name, "Tom");
        assert_eq!(ev.message.content().expect("content"), Content::Text { text: "@_user_1 hello".into() });
    }

    #[test]
    fn parses_the_p2p_sample() {
        let Callback::Event(env) = Callback::parse(&sample("p2p_text.derived.json")).expect("parses") else {
            panic!("not an event")
        };
        let ev = env.message_event().expect("message").expect("typed");
        assert!(ev.message.is_p2p());
        assert_eq!(ev.message.thread_id, None);
        assert!(ev.message.mentions.is_empty());
    }

    #[test]
    fn decodes_content_samples() {
        let msg = |t: &str, file: &str| Message {
            message_id: "om".into(),
            root_id: None,
            parent_id: None,
            create_time: None,
            chat_id: "oc".into(),
            thread_id: None,
            chat_type: "p2p".into(),
            message_type: t.into(),
            content: String::from_utf8(sample(file)).expect("utf-8"),
            mentions: vec![],
        };
        assert_eq!(
            msg("text", "text_content.json").content().expect("text"),
            Content::Text { text: "@_user_1 文本消息".into() }
        );
        let Content::Post(post) = msg("post", "post_content.json").content().expect("post") else {
            panic!("not a post")
        };
        assert_eq!(post.title, "我是一个标题");
        assert_eq!(post.content.len(), 8);
        assert_eq!(post.content[0][1].tag, "a");
        assert_eq!(post.content[0][1].href.as_deref(), Some("http://www.feishu.cn"));
        assert_eq!(post.image_keys(), ["img_47354fbc-a159-40ed-86ab-2ad0f1acb42g"], "two runs of one image: once");
        assert!(post.has_media());
        assert_eq!(
            msg("image", "image_content.json").content().expect("image"),
            Content::Image { image_key: "img_4adb3cc3-902b-4187-b0f1-842f67fd017g".into() }
        );
        assert_eq!(
            msg("file", "file_content.json").content().expect("file"),
            Content::File { file_key: "75235e0c-4f92-430a-a99b-8446610223cg".into(), file_name: "test.txt".into() }
        );
        assert_eq!(
            msg("audio", "file_content.json").content().expect("audio"),
            Content::Other { message_type: "audio".into() }
        );
        assert!(msg("image", "text_content.json").content().is_err(), "an image without its key");
    }

    #[test]
    fn the_card_callback_is_a_schema_2_event_of_another_type() {
        let Callback::Event(env) = Callback::parse(&sample("card_action_trigger.json")).expect("parses") else {
            panic!("not an event")
        };
        assert_eq!(env.header.event_type, "card.action.trigger");
        assert!(env.message_event().is_none());
    }

    /// The event body is kept as Lark's JSON text (no value tree), and read
    /// into its typed form only when asked; the relay parses the same
    /// envelope from the NATS payload.
    #[test]
    fn the_event_body_stays_raw_until_read() {
        let bytes = sample("group_mention.json");
        let Callback::Event(env) = Callback::parse(&bytes).expect("parses") else { panic!("not an event") };
        let raw = env.event.as_deref().expect("an event body").get();
        assert!(raw.starts_with('{') && raw.contains("\"message_id\""), "{raw}");
        let again: EventEnvelope = serde_json::from_slice(&bytes).expect("the relay's parse");
        assert_eq!(again.event.as_deref().map(RawValue::get), Some(raw));
        let without_body =
            br#"{"schema":"2.0","header":{"event_id":"e","event_type":"im.message.receive_v1","app_id":"a"}}"#;
        let Callback::Event(env) = Callback::parse(without_body).expect("parses") else { panic!("not an event") };
        assert!(env.message_event().expect("a message type").is_err(), "no body is an error, not a panic");
    }

    /// Lark writes an absent optional id as `""` or `null` too: such an
    /// event is read as if the field were missing, and passes the id checks;
    /// a required id that is empty is still refused.
    #[test]
    fn empty_and_null_optional_ids_are_absent() {
        let body = serde_json::json!({
            "schema": "2.0",
            "header": { "event_id": "e1", "event_type": MESSAGE_RECEIVE, "token": "", "app_id": "cli_a", "tenant_key": "" },
            "event": {
                "sender": { "sender_id": { "open_id": "ou_1", "union_id": "on_1", "user_id": null }, "sender_type": "user", "tenant_key": "" },
                "message": {
                    "message_id": "om_x100b55d9e360b0a0b32bf294c928fe1", "root_id": "", "parent_id": "", "thread_id": "",
                    "chat_id": "oc_1", "chat_type": "group", "message_type": "text", "content": "{\"text\":\"@_user_1 hi\"}",
                    "mentions": [{ "key": "@_user_1", "id": { "open_id": "ou_bot", "union_id": "on_bot", "user_id": "" }, "name": "Bot" }]
                }
            }
        });
        let Callback::Event(env) = Callback::parse(body.to_string().as_bytes()).expect("parses") else {
            panic!("not an event")
        };
        assert_eq!((env.header.token.as_deref(), env.header.tenant_key.as_deref()), (None, None));
        env.check_ids().expect("header ids");
        let ev = env.message_event().expect("a message").expect("typed");
        assert_eq!((ev.message.root_id.as_deref(), ev.message.parent_id.as_deref()), (None, None));
        assert_eq!(ev.message.thread_id, None, "an empty thread_id is no topic");
        assert_eq!(ev.sender.sender_id.user_id, None);
        assert_eq!(ev.message.mentions[0].id.user_id, None);
        assert_eq!(ev.message.mentions[0].id.open_id.as_deref(), Some("ou_bot"));
        ev.check_ids().expect("an empty optional id is no id");

        let mut required = body.clone();
        required["event"]["message"]["chat_id"] = "".into();
        let Callback::Event(env) = Callback::parse(required.to_string().as_bytes()).expect("parses") else {
            panic!("not an event")
        };
        let ev = env.message_event().expect("a message").expect("typed");
        assert_eq!(ev.check_ids(), Err(super::super::ids::IdError::Empty { field: "message.chat_id" }));
        let mut blank = body;
        blank["event"]["message"]["root_id"] = " ".into();
        let Callback::Event(env) = Callback::parse(blank.to_string().as_bytes()).expect("parses") else {
            panic!("not an event")
        };
        let ev = env.message_event().expect("a message").expect("typed");
        assert!(ev.check_ids().is_err(), "a blank id is not an empty one");
    }

    #[test]
    fn rejects_what_is_not_a_callback() {
        assert!(matches!(Callback::parse(b"{"), Err(ParseError::Json(_))));
        assert!(Callback::parse(b"[]").is_err(), "JSON, but not an object");
        assert!(matches!(Callback::parse(b"{}"), Err(ParseError::Shape(_))));
        assert!(matches!(Callback::parse(br#"{"schema":"1.0"}"#), Err(ParseError::Shape(_))));
        assert!(matches!(Callback::parse(br#"{"schema":"2.0","header":{}}"#), Err(ParseError::Shape(_))));
        assert!(matches!(Callback::parse(br#"{"type":"url_verification"}"#), Err(ParseError::Shape(_))));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = Callback::parse(&bytes);
        }
    }
}
