//! `loadgen floor-server`: a bare axum server answering 200 to every POST,
//! the floor the bridge's HTTP path is compared with.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::loopback::require_loopback;
use crate::parse_duration;

#[derive(Args)]
pub(crate) struct FloorArgs {
    #[arg(long, default_value = "127.0.0.1:18283")]
    listen: SocketAddr,
    /// Stop by itself after this long (bounded, like every benchmark process).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    max_lifetime: Duration,
}

pub(crate) async fn run(args: FloorArgs) -> anyhow::Result<()> {
    use axum::routing::post;
    require_loopback(&args.listen, "--listen")?;
    async fn ok(_body: bytes::Bytes) -> ([(&'static str, &'static str); 1], &'static str) {
        ([("content-type", "application/json")], "{}")
    }
    let router = axum::Router::new().route("/{*path}", post(ok)).route("/", post(ok));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("loadgen: floor server on http://{}", args.listen);
    let lifetime = args.max_lifetime;
    let stop = async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => return tokio::time::sleep(lifetime).await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            () = tokio::time::sleep(lifetime) => {}
        }
    };
    axum::serve(listener, router).with_graceful_shutdown(stop).await?;
    Ok(())
}
