//! Connecting to NATS the same way in every service: named client, optional
//! credentials, automatic reconnection with a log line for each change, and
//! no failure at start when the server is not up yet (readiness says so).

use async_nats::{Client, ConnectOptions, Event};

use crate::config::NatsSettings;

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
}

/// Connects; when the server is not reachable yet, keeps trying in the
/// background (the first JetStream calls wait for it).
pub async fn connect(settings: &NatsSettings, service: &str) -> Result<Client, NatsError> {
    let mut opts = ConnectOptions::new()
        .name(format!("lark-bridge-{service}"))
        .retry_on_initial_connect()
        .event_callback(|event| async move {
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
    opts.connect(settings.url.as_str()).await.map_err(|source| NatsError::Connect { url: settings.url.clone(), source })
}

/// True while the client holds a live connection.
pub fn is_connected(client: &Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// Runs `attempt` until it succeeds, waiting 0.5 s, 1 s, 2 s... (at most 10 s)
/// between tries and logging each failure, or until `shutdown` fires (then the
/// last error is returned). Start-up uses it so that a service started before
/// NATS waits for it, not-ready, instead of crash-looping.
pub async fn retry_until_ready<T, E, F, Fut>(
    what: &str,
    shutdown: &tokio_util::sync::CancellationToken,
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
