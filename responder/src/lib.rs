//! responder: sends the relay's reply commands through the Lark Open API.
//!
//! - [`render`]: Markdown → Lark card or text; long answers split in order.
//! - [`neutralize`]: mention markup and non-http(s) links in answers made inert.
//! - [`budget`]: Lark's per-app limits (messages, each CardKit API), shared
//!   out between the replicas by the partitions each holds.
//! - [`pacing`]: Lark's per-chat send limit, then the app's message budget.
//! - [`handler`]: one reply command → Lark messages, retries, dead letters
//!   ([`route`]: where a final answer goes; [`whole`]: the parts of an
//!   answer sent whole; [`verdict`]: what a failed send means).
//! - streamed answers: [`card_start`] creates and shows an answer's card,
//!   [`drafts`] updates it as FastGPT writes (when: [`live_cards`]),
//!   [`card_finish`] puts the final answer in it; [`card_state`] is the
//!   card's record for whichever replica owns the chat next.
//! - [`progress`]: the parts of a split reply already shown, so a retry resumes.
//! - [`check`]: `responder --check`.
//! - [`admin`]: `--dead-letters` and `--redrive`, for the operator.
//! - [`app`]: build and run (the pull loop is `common::worker`; the token
//!   cache and error classes are `common::lark`).

pub mod admin;
pub mod app;
pub mod budget;
pub mod card_finish;
pub mod card_start;
pub mod card_state;
pub mod check;
pub mod drafts;
#[cfg(test)]
mod fixtures;
pub mod handler;
pub mod live_cards;
/// Kept in `common`: the ingress shows what users typed back in cards too.
pub use common::neutralize;
pub mod pacing;
pub mod progress;
pub mod render;
pub mod route;
pub mod send;
pub mod verdict;
pub mod whole;

pub use app::{Application, StartError};
