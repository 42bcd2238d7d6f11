//! What the three lark-bridge services share.
//!
//! - [`allocator`]: mimalloc, for every binary that links this crate.
//! - [`config`]: the TOML configuration, `LARK_BRIDGE__` overrides, validation that names the key.
//! - [`check`]: the `--check` checklist every binary prints.
//! - [`answer`]: what a final answer's card shows below it: sources, feedback buttons.
//! - [`channel`]: one publishing channel (a Lark app bound to a FastGPT app), looked up by id.
//! - [`lark`]: Lark's protocol: decryption, signatures, event types, the Open API client and its call counts.
//! - [`metric_names`]: the names of the metrics the bridge exports.
//! - [`conversation`]: who shares a FastGPT history, and the chatId.
//! - [`topology`]: every stream, subject, consumer and KV bucket: the one place.
//! - [`dead_letter`]: where undeliverable messages end, with the reason.
//! - [`file_link`]: the signed, expiring links through which FastGPT fetches a file.
//! - [`envelope`]: what travels on NATS (event, reply command) and its headers.
//! - [`telemetry`]: logs, OTLP traces, `traceparent` through NATS headers and HTTP.
//! - [`nats`]: connecting, the same way in every service; [`nats_url`]: `nats.url`'s servers.
//! - [`secrets`]: each service keeps only the secrets it uses.
//! - [`handover`]: how long a partition's new owner waits for the old one (and what that bounds).
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`, shared by the three services.
//! - [`http_server`]: serving HTTP with header and request timeouts and a connection cap.
//! - [`worker`]: the pull loop relay and responder share: order, attempts, acks.
//! - [`service`]: the start-up steps relay and responder share; [`service_name`]: the three services, named once.
//! - [`status`]: the last event, answer and error per channel, for `/status`.
//! - [`activity`]: each replica's counts and latencies of the last hour, for `/status`.
//! - [`cli`]: the command line every binary shares (`--config`, `--check`, `--ready`).
//! - [`question`]: FastGPT's questions (user-select, form) as cards, and the clicks back.
//! - [`neutralize`]: mention markup and non-http(s) links in answers made inert.
//! - [`shutdown`]: SIGTERM / Ctrl-C into a cancellation token.

pub mod activity;
mod allocator;
pub mod answer;
pub mod channel;
pub mod check;
pub mod cli;
pub mod config;
pub mod conversation;
pub mod dead_letter;
pub mod envelope;
pub mod file_link;
pub mod handover;
pub mod health;
pub mod http_server;
pub mod lark;
pub mod metric_names;
pub mod nats;
pub mod nats_url;
pub mod neutralize;
pub mod question;
pub mod secrets;
pub mod service;
pub mod service_name;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod topology;
pub mod worker;
