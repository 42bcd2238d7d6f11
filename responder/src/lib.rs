//! responder: sends the relay's reply commands through the Lark Open API.
//!
//! - [`render`]: Markdown → Lark card or text; long answers split in order.
//! - [`neutralize`]: mention markup and non-http(s) links in answers made inert.
//! - [`pacing`]: Lark's per-chat and per-app send limits.
//! - [`handler`]: one reply command → Lark messages, retries, dead letters.
//! - streamed answers: [`card_start`] creates and shows an answer's card,
//!   [`drafts`] updates it as FastGPT writes, [`card_finish`] puts the final
//!   answer in it; [`card_state`] is the card's state shared by the replicas.
//! - [`progress`]: the parts of a split reply already shown, so a retry resumes.
//! - [`check`]: `responder --check`.
//! - [`admin`]: `--dead-letters` and `--redrive`, for the operator.
//! - [`app`]: build and run (the pull loop is `common::worker`; the token
//!   cache and error classes are `common::lark`).

pub mod admin;
pub mod app;
pub mod card_finish;
pub mod card_start;
pub mod card_state;
pub mod check;
pub mod drafts;
pub mod handler;
/// Kept in `common`: the ingress shows what users typed back in cards too.
pub use common::neutralize;
pub mod pacing;
pub mod progress;
pub mod render;

pub use app::{Application, StartError};
