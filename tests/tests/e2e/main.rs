//! End-to-end suites: a real nats-server (each test in its own namespace),
//! the fakes of Lark and FastGPT, and the three services from their libraries.

mod app_limits;
mod attacks;
mod checks;
mod cluster;
mod conversations;
mod faults;
mod feedback;
mod files;
mod ingress;
mod limits;
mod long_connection;
mod once;
mod partitions;
mod pipeline;
mod procs;
mod questions;
mod replies;
mod status;
mod streaming;
mod streaming_at_scale;
mod streams;
mod telemetry;
mod welcome;
