//! Connecting to NATS with the configured options; retries the first connect, reconnects forever.

use std::time::Duration;

use async_nats::{ConnectOptions, Event};

use crate::config::NatsConfig;

/// Why the connection options could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS ({path}): {source}")]
pub struct ConnectError {
    /// The server URLs or credentials file.
    pub path: String,
    /// The cause.
    pub source: std::io::Error,
}

/// Connects as `name` using `config`. The first connect is retried in the background, so this
/// returns at once; [`wait_connected`] waits for the connection. For the worker.
pub async fn connect(config: &NatsConfig, name: &str) -> Result<async_nats::Client, ConnectError> {
    let options = options(config, name).await?.retry_on_initial_connect();
    open(config, options).await
}

/// Connects once, failing if the server cannot be reached. For the client commands, with
/// replies (requests, JetStream API calls) on `inbox_prefix` when given, e.g. the
/// `_INBOX.<tenant>` that deploy/nats/accounts.conf lets an agent read.
pub async fn connect_once(
    config: &NatsConfig,
    name: &str,
    inbox_prefix: Option<&str>,
) -> Result<async_nats::Client, ConnectError> {
    let mut options = options(config, name).await?;
    if let Some(prefix) = inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    open(config, options).await
}

async fn options(config: &NatsConfig, name: &str) -> Result<ConnectOptions, ConnectError> {
    let options = match &config.creds_file {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| ConnectError {
                path: path.display().to_string(),
                source,
            })?,
        None => ConnectOptions::new(),
    };
    let mut options = options
        .name(name)
        .connection_timeout(config.connect_timeout.as_duration())
        .max_reconnects(None)
        .require_tls(config.tls_required)
        .event_callback(|event| async move { log_event(event) });
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.expose().to_string());
    }
    if let Some(token) = &config.token {
        options = options.token(token.expose().to_string());
    }
    if let Some(seed) = &config.nkey {
        options = options.nkey(seed.expose().to_string());
    }
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

async fn open(
    config: &NatsConfig,
    options: ConnectOptions,
) -> Result<async_nats::Client, ConnectError> {
    let urls = config.urls.join(",");
    async_nats::connect_with_options(urls.as_str(), options)
        .await
        .map_err(|error| ConnectError {
            path: urls.clone(),
            source: std::io::Error::other(error.to_string()),
        })
}

fn log_event(event: Event) {
    match event {
        Event::Connected => tracing::info!("NATS connected"),
        Event::Disconnected => tracing::warn!("NATS disconnected; reconnecting"),
        Event::ClientError(error) => tracing::warn!(%error, "NATS client error"),
        Event::ServerError(error) => tracing::warn!(%error, "NATS server error"),
        Event::SlowConsumer(sid) => tracing::warn!(sid, "NATS slow consumer: messages dropped"),
        other => tracing::debug!(event = %other, "NATS event"),
    }
}

/// Waits until `client` is connected, logging every few seconds while it is not.
pub async fn wait_connected(client: &async_nats::Client, urls: &[String]) {
    let mut waited = Duration::ZERO;
    let step = Duration::from_millis(50);
    while client.connection_state() != async_nats::connection::State::Connected {
        if waited.as_millis() % 5000 == 0 && !waited.is_zero() {
            tracing::warn!(
                urls = urls.join(","),
                waited_s = waited.as_secs(),
                "still waiting for NATS; is nats-server running (deploy/setup.sh)?"
            );
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
}
