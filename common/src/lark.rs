//! Lark's protocol: callback decryption, signatures and event types, and the
//! Open API client. Ours, small and tested against Lark's published samples
//! (no Lark SDK crate is mature enough).

pub mod api;
pub mod calls;
pub mod card_action;
pub mod cardkit;
pub mod crypto;
pub mod errors;
pub mod event;
pub mod ids;
pub mod long_connection;
pub mod resource;
pub mod signature;
