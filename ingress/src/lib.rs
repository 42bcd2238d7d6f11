//! ingress: receives Lark's callbacks and turns each accepted event into one
//! durable JetStream message, before it answers 200.
//!
//! - [`callback`]: body → verified, decrypted callback (no I/O; fuzzed).
//! - [`routes`]: `POST /lark/{channel}/events` and the HTTP answers.
//! - [`publish`]: the durable publish with its deadline.
//! - [`check`]: `ingress --check`.
//! - [`status_page`]: `/status` and `/status.json`, behind the admin token.
//! - [`app`]: build (bind, connect, topology) and run until stopped.

pub mod app;
pub mod callback;
pub mod check;
pub mod publish;
pub mod routes;
pub mod status_page;

pub use app::{Application, StartError};
