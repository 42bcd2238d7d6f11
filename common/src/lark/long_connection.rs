//! Lark's long connection ("persistent connection" subscription mode): the
//! bridge dials out to Lark over a WebSocket, so no public URL, certificate
//! or tunnel is needed. What the official SDKs do (Go `ws/`, Node
//! `ws-client/`, Python `lark_oapi/ws/`), in three pieces without I/O policy:
//!
//! - [`endpoint`]: `POST /callback/ws/endpoint` (App ID and Secret → a
//!   WebSocket URL and the client settings), its error classes, the refused
//!   handshake's headers, and a Display of the URL that hides its secrets.
//! - [`frame`]: the pbbp2 protobuf frame, its headers, and the ping and
//!   acknowledgement frames the client sends.
//! - [`fragments`]: joining an event Lark split over several frames, with a
//!   time to live and bounds on memory.
//!
//! The ingress (`ingress::long_connection`) runs the connections.

pub mod endpoint;
pub mod fragments;
pub mod frame;
