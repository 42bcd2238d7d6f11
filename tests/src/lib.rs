//! Test support for lark-bridge: HTTP fakes of the two SaaS APIs the bridge
//! talks to, and builders of what Lark pushes to it.
//!
//! - [`fake_lark`]: Lark's Open API (tenant token, reply / send / update
//!   messages, reactions, bot info) with Lark's real shapes and error codes,
//!   scriptable failures, and a record of what users would see; a user's
//!   clicks on cards' buttons and forms (`card.action.trigger` callbacks).
//! - [`fake_fastgpt`]: FastGPT's `/api/v1/chat/completions`, echoing per
//!   chatId by default, with scriptable answers and FastGPT's error bodies;
//!   user-select and form apps that stop to ask and resume on the answer.
//! - [`lark_events`]: `im.message.receive_v1` events, the URL-verification
//!   challenge, and the encrypted, signed request Lark wraps them in.
//! - [`eventually`]: waiting for a condition (or checking one holds) with a
//!   stated limit, instead of sleeping before an assertion.
//! - [`readiness`]: waiting for a service's `/readyz` to answer 200 (or 503).
//! - [`ports`]: ports for the processes a test starts itself, picked where
//!   no outgoing connection takes them first.
//! - [`harness`]: the whole bridge in one test (its own NATS namespace, the
//!   fakes on random ports, the three services as tasks).
//! - [`sandbox_chat`]: the `sandbox chat` terminal chat, a Lark user talking
//!   to a running bridge (private chat, group, topic), with a small Markdown
//!   renderer for the terminal; a test drives it with scripted input.
//!
//! The end-to-end suites and the `sandbox` binary build on these.

pub mod eventually;
pub mod fake_fastgpt;
pub mod fake_lark;
pub mod harness;
pub mod lark_events;
pub mod ports;
pub mod readiness;
pub mod sandbox_chat;
