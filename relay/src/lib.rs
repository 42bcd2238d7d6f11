//! relay: turns Lark messages into FastGPT questions and FastGPT answers into
//! reply commands.
//!
//! - [`attachments`]: a message's images and files → FastGPT content parts (download, sniff, store, sign).
//! - [`incoming`]: a Lark message → what it asks (mentions, `post`, `Reset`, non-text).
//! - [`sessions`]: the Reset generation of each conversation, in JetStream KV.
//! - [`fastgpt`]: the FastGPT client and its error classes.
//! - [`feedback`]: 👍 / 👎 on final answers, recorded in FastGPT.
//! - [`handler`]: one event, from NATS message to published reply command (the steps).
//! - [`decision`]: what the relay decides, on plain values (which path an
//!   event takes, what FastGPT's answer or failure comes to).
//! - [`ask`]: asking FastGPT one question, streamed or whole.
//! - [`conclude`]: the reply command published, the event recorded as answered.
//! - [`cut`]: an answer cut to what a chat can show.
//! - [`says`]: what the bot says on its own behalf (notices, apologies).
//! - [`interactive`], [`questions`], [`clicks`]: FastGPT's nodes that ask the
//!   user, the question card waiting per conversation, and the click that
//!   resumes the workflow.
//! - [`once`]: one workflow run per question: the dataId sent, the stored answer read back.
//! - [`sources`]: the sources an answer quotes, and its inline citation marks.
//! - [`replies`]: reply commands and drafts, published to the responder owning the chat.
//! - [`streaming`]: a streamed answer: the card start, then drafts as FastGPT writes.
//! - [`welcome`]: the app's welcome text, once, in a chat the bot joins.
//! - [`typing`]: the "bot is working" reaction on slow answers.
//! - [`unsent`]: answers NATS did not store, kept for the next attempt (FastGPT not asked again).
//! - [`check`]: `relay --check`.
//! - [`app`]: build and run (the pull loop itself is `common::worker`).

pub mod app;
pub mod ask;
pub mod attachments;
pub mod check;
pub mod clicks;
pub mod conclude;
pub mod cut;
pub mod decision;
pub mod fastgpt;
pub mod feedback;
pub mod handler;
pub mod incoming;
pub mod interactive;
pub mod once;
pub mod questions;
pub mod replies;
pub mod says;
pub mod sessions;
pub mod sources;
pub mod streaming;
pub mod typing;
pub mod unsent;
pub mod welcome;

pub use app::{Application, StartError};
