//! End-to-end suites: a real nats-server (each test in its own namespace),
//! the fakes of Lark and FastGPT, and the three services from their libraries.

mod checks;
mod conversations;
mod faults;
mod ingress;
mod pipeline;
mod procs;
mod replies;
mod status;
mod telemetry;
