//! The events of a run: unique, encrypted, signed `im.message.receive_v1`
//! requests, built as raw HTTP/1.1 bytes before the timed run so that
//! sending them costs no crypto or JSON.

use std::fmt::Write as _;
use std::sync::Arc;

use clap::Args;
use common::lark::crypto::EncryptKey;
use lark_bridge_tests::lark_events::{message_id_of, now_secs, random_hex, EventBuilder, SignedRequest};
use secrecy::SecretString;

use crate::http::Target;

/// What the events look like, and the channel's secrets.
#[derive(Args, Clone)]
pub(crate) struct EventArgs {
    /// The Lark app the events are for (the channel's `app_id`).
    #[arg(long, default_value = "cli_bench")]
    pub(crate) app_id: String,
    /// The channel's Encrypt Key: events are encrypted and signed with it.
    #[arg(long, default_value = "bench-encrypt-key")]
    pub(crate) encrypt_key: String,
    /// The channel's Verification Token, put in `header.token`.
    #[arg(long, default_value = "bench-verification-token")]
    pub(crate) verification_token: String,
    /// Distinct private chats the events are spread over (0: one chat per
    /// event). Default: 1000 for `ingress`, one per event for `e2e` (Lark's limit
    /// of five messages per second into one chat would pace the replies).
    #[arg(long)]
    pub(crate) chats: Option<usize>,
}

/// One request, ready to be written to a socket.
pub(crate) struct Prebuilt {
    pub(crate) bytes: Vec<u8>,
    pub(crate) message_id: String,
    pub(crate) chat_id: String,
}

/// The raw HTTP/1.1 request Lark would send for `req`.
pub(crate) fn raw_request(target: &Target, req: &SignedRequest) -> Vec<u8> {
    let mut head = String::with_capacity(320);
    let _ = write!(
        head,
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Go-http-client/1.1\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n",
        target.path,
        target.host,
        req.body.len()
    );
    for (name, value) in &req.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&req.body);
    bytes
}

/// Builds the events of a run, each numbered, in its chat.
pub(crate) struct EventFactory {
    builder: EventBuilder,
    key: EncryptKey,
    chats: usize,
    /// Distinguishes the chats of one run from those of another.
    run: String,
    /// Words after the question (the fake FastGPT's hints, e.g. ` stream:40x100ms`).
    hint: String,
}

impl EventFactory {
    pub(crate) fn new(args: &EventArgs, default_chats: usize) -> Self {
        Self {
            builder: EventBuilder::new(&args.app_id).token(&args.verification_token),
            key: EncryptKey::new(SecretString::from(args.encrypt_key.clone())),
            chats: args.chats.unwrap_or(default_chats),
            run: random_hex(4),
            hint: String::new(),
        }
    }

    /// The same events with `hint` after each question.
    pub(crate) fn with_hint(mut self, hint: &str) -> Self {
        self.hint = hint.to_owned();
        self
    }

    /// Events in the chats of `other` (same run).
    pub(crate) fn in_chats_of(mut self, other: &EventFactory) -> Self {
        self.run.clone_from(&other.run);
        self
    }

    fn chat_id(&self, i: usize) -> String {
        let chat = if self.chats == 0 { i } else { i % self.chats };
        format!("oc_bench_{}_{chat:06}", self.run)
    }

    /// The `i`-th event of a run: a private-chat text message, in its chat.
    pub(crate) fn event(&self, i: usize) -> serde_json::Value {
        let chat_id = self.chat_id(i);
        let user = chat_id.replacen("oc_", "ou_", 1);
        let text = format!("How do I reset my password? {}{}", question_tag(i), self.hint);
        self.builder.p2p_text(&chat_id, &user, &text)
    }

    pub(crate) fn signed(&self, event: &serde_json::Value) -> SignedRequest {
        SignedRequest::new(event, Some(&self.key), now_secs())
    }

    /// `n` requests numbered from `first`, built on every core.
    pub(crate) fn build(self: &Arc<Self>, target: &Target, first: usize, n: usize) -> Vec<Prebuilt> {
        let threads = std::thread::available_parallelism().map(usize::from).unwrap_or(1).clamp(1, 8);
        let per = n.div_ceil(threads).max(1);
        let mut parts: Vec<Vec<Prebuilt>> = Vec::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .step_by(per)
                .map(|start| {
                    let end = (start + per).min(n);
                    s.spawn(move || {
                        (start..end)
                            .map(|j| {
                                let event = self.event(first + j);
                                let message_id = message_id_of(&event).unwrap_or_default().to_owned();
                                let bytes = raw_request(target, &self.signed(&event));
                                Prebuilt { bytes, message_id, chat_id: self.chat_id(first + j) }
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                parts.push(h.join().unwrap_or_default());
            }
        });
        parts.into_iter().flatten().collect()
    }
}

/// The part of the `i`-th question that names it, found again in what
/// FastGPT was asked and in the answer.
pub(crate) fn question_tag(i: usize) -> String {
    format!("(benchmark question {i})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_unique_signed_and_decryptable() {
        let target = Target::parse("http://127.0.0.1:1/lark/bench/events").expect("target");
        let args =
            EventArgs { app_id: "cli".into(), encrypt_key: "k".into(), verification_token: "t".into(), chats: Some(3) };
        let factory = Arc::new(EventFactory::new(&args, 1000));
        let built = factory.build(&target, 0, 10);
        assert_eq!(built.len(), 10);
        let ids: std::collections::HashSet<_> = built.iter().map(|p| p.message_id.clone()).collect();
        assert_eq!(ids.len(), 10);
        let text = String::from_utf8(built[0].bytes.clone()).expect("utf-8");
        assert!(text.starts_with("POST /lark/bench/events HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"), "{text}");
        assert!(text.contains("x-lark-signature: "), "{text}");
        let body = text.split("\r\n\r\n").nth(1).expect("body");
        let wrapper: serde_json::Value = serde_json::from_str(body).expect("json");
        let plain = factory.key.decrypt(wrapper["encrypt"].as_str().expect("encrypt")).expect("decrypts");
        let event: serde_json::Value = serde_json::from_slice(&plain).expect("event");
        assert_eq!(message_id_of(&event), Some(built[0].message_id.as_str()));
        assert_eq!(event["header"]["token"], "t");
    }
}
