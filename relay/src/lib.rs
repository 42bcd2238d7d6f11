//! relay: turns Lark messages into FastGPT questions and FastGPT answers into
//! reply commands.
//!
//! - [`question`]: a Lark message → a question (mentions, `post`, `Reset`, non-text).
//! - [`sessions`]: the Reset generation of each conversation, in JetStream KV.
//! - [`fastgpt`]: the FastGPT client and its error classes.
//! - [`handler`]: one event, from NATS message to published reply command.
//! - [`typing`]: the "bot is working" reaction on slow answers.
//! - [`check`]: `relay --check`.
//! - [`app`]: build and run (the pull loop itself is `common::worker`).

pub mod app;
pub mod check;
pub mod fastgpt;
pub mod handler;
pub mod question;
pub mod sessions;
pub mod typing;

pub use app::{Application, StartError};
