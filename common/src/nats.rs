//! Connecting to NATS the same way in every service: named client, optional
//! credentials, automatic reconnection with a log line for each change, and
//! no failure at start when the server is not up yet (readiness says so).
//! `nats.url` may list several servers, comma-separated (the nodes of a
//! cluster): the client connects to one and fails over to the others.

use async_nats::{Client, ConnectOptions, Event};

use crate::config::NatsSettings;
pub use crate::nats_url::{redact_url, server_addrs, UrlError};

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot use NATS at {url}: {source} (check nats.url and that nats-server runs with JetStream, -js)")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot read the NATS credentials file {path}: {source}")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Url(#[from] UrlError),
}

/// Connects; when the server is not reachable yet, keeps trying in the
/// background (the first JetStream calls wait for it).
pub async fn connect(settings: &NatsSettings, service: &str) -> Result<Client, NatsError> {
    let opts = options(settings, service).await?.retry_on_initial_connect();
    let servers = server_addrs(&settings.url)?;
    opts.connect(servers).await.map_err(|source| NatsError::Connect { url: redact_url(&settings.url), source })
}

/// Connects once, failing at once when no server answers: for the operator's
/// commands (`--dead-letters`), with the same credentials as the services.
pub async fn connect_once(settings: &NatsSettings, service: &str) -> Result<Client, NatsError> {
    let servers = server_addrs(&settings.url)?;
    let opts = options(settings, service).await?;
    opts.connect(servers).await.map_err(|source| NatsError::Connect { url: redact_url(&settings.url), source })
}

/// The options every connection uses: its name, credentials, event log.
async fn options(settings: &NatsSettings, service: &str) -> Result<ConnectOptions, NatsError> {
    let mut opts = ConnectOptions::new().name(format!("lark-bridge-{service}")).event_callback(|event| async move {
        match event {
            Event::Connected => tracing::info!("connected to NATS"),
            Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
            Event::Closed => tracing::info!("NATS connection closed"),
            other => tracing::warn!(event = %other, "NATS client event"),
        }
    });
    if let Some(path) = &settings.credentials_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|source| NatsError::Credentials { path: path.display().to_string(), source })?;
    }
    Ok(opts)
}

/// True while the client holds a live connection.
pub fn is_connected(client: &Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// Runs `attempt` until it succeeds, waiting 0.5 s, 1 s, 2 s... (at most 10 s)
/// between tries and logging each failure, or until `shutdown` fires (then the
/// last error is returned). Start-up uses it so that a service started before
/// NATS waits for it, not-ready, instead of crash-looping. An error no retry
/// can fix (a stream setting NATS cannot change: the caller's
/// `is_permanent`, such as `TopologyError::is_permanent`) is returned at
/// once: the start fails with it.
pub async fn retry_until_ready<T, E, F, Fut>(
    what: &str,
    shutdown: &tokio_util::sync::CancellationToken,
    is_permanent: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if is_permanent(&e) => {
                tracing::error!(error = %e, "{what} failed, and retrying cannot fix it");
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(e),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::TopologyError;

    #[tokio::test]
    async fn a_setting_nats_cannot_change_stops_the_start_instead_of_retrying() {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let mut tries = 0;
        let result: Result<(), TopologyError> =
            retry_until_ready("creating the streams", &shutdown, TopologyError::is_permanent, || {
                tries += 1;
                async { Err(TopologyError::Mismatch { name: "ns_events".into(), changes: "retention a -> b".into() }) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(tries, 1);
    }
}
