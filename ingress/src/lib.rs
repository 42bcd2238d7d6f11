//! ingress: receives Lark's events (callbacks on the Request URL, or frames
//! on the long connection) and turns each accepted event into one durable
//! JetStream message, before it answers 200 (or acknowledges the frame).
//!
//! - [`callback`]: body → verified, decrypted callback (no I/O; fuzzed).
//! - [`routes`]: `POST /lark/{channel}/events` and the HTTP answers.
//! - [`files`]: `GET /files/...`: the files users sent, for FastGPT, behind signed links.
//! - [`long_connection`]: the WebSockets to Lark of `long_connection` channels.
//! - [`accept`]: storing a verified event, for both ways in.
//! - [`card_action`]: a click on a question card: checked, stored, answered with a toast.
//! - [`publish`]: the durable publish with its deadline.
//! - [`check`]: `ingress --check`.
//! - [`status_page`]: `/status` and `/status.json`, behind the admin token.
//! - [`app`]: build (bind, connect, topology) and run until stopped.

pub mod accept;
pub mod app;
pub mod callback;
pub mod card_action;
pub mod check;
pub mod files;
pub mod long_connection;
pub mod publish;
pub mod routes;
pub mod status_page;

pub use app::{Application, StartError};
