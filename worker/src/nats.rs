//! Connecting to NATS with the configured options; retries the first connect, reconnects forever.
//!
//! Server URLs are parsed one by one (`NATS_URL=nats://a:4222,nats://b:4222`), and wherever a
//! URL is shown (errors, logs) a password or token in it is redacted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerAddr, ServerError};
use tokio::sync::watch;

use crate::config::env::split_list;
use crate::config::{NatsConfig, Secret};

/// Why a connection to NATS could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The credentials file (`NATS_CREDS`) could not be read.
    #[error("cannot read the NATS credentials file {path} (NATS_CREDS)")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A server URL does not parse; shown with its password or token redacted.
    #[error(
        "NATS server URL {url} is invalid; give nats://host:port, several comma-separated (NATS_URL or --nats)"
    )]
    Url {
        /// The URL, redacted.
        url: String,
        /// The parser's account.
        #[source]
        source: std::io::Error,
    },
    /// No server could be reached, or the server refused the credentials.
    #[error("cannot connect to NATS at {urls}")]
    Connect {
        /// The server URLs, redacted.
        urls: String,
        /// The cause.
        #[source]
        source: async_nats::ConnectError,
    },
}

/// Connects as `name` using `config`. The first connect is retried in the background, so this
/// returns at once; [`wait_connected`] waits for the connection. For the worker, which also
/// gets the permissions violations the server reports, to check its own grants.
pub async fn connect(
    config: &NatsConfig,
    name: &str,
) -> Result<(async_nats::Client, Violations), ConnectError> {
    let violations = Violations::default();
    let options = options(config, name, violations.clone())
        .await?
        .retry_on_initial_connect();
    Ok((open(config, options).await?, violations))
}

/// Connects once, failing if the server cannot be reached. For the client commands, with
/// replies (requests, JetStream API calls) on `inbox_prefix` when given, e.g. the
/// `_INBOX.<tenant>` that deploy/nats/accounts.conf lets an agent read.
pub async fn connect_once(
    config: &NatsConfig,
    name: &str,
    inbox_prefix: Option<&str>,
) -> Result<async_nats::Client, ConnectError> {
    let (client, _) = connect_once_watched(config, name, inbox_prefix).await?;
    Ok(client)
}

/// [`connect_once`], also returning the permissions violations the server reports on the
/// connection, so that a command whose request went unanswered can say which grant it lacks.
pub async fn connect_once_watched(
    config: &NatsConfig,
    name: &str,
    inbox_prefix: Option<&str>,
) -> Result<(async_nats::Client, Violations), ConnectError> {
    let violations = Violations::default();
    let mut options = options(config, name, violations.clone()).await?;
    if let Some(prefix) = inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    Ok((open(config, options).await?, violations))
}

/// The permissions violations a server reported on one connection (`Permissions Violation for
/// Publish to "..."`): the server drops the refused message, so a request would just time out.
#[derive(Debug, Clone)]
pub struct Violations(Arc<watch::Sender<Vec<String>>>);

impl Default for Violations {
    fn default() -> Self {
        Self(Arc::new(watch::channel(Vec::new()).0))
    }
}

impl Violations {
    /// The violations reported so far, oldest first.
    pub fn all(&self) -> Vec<String> {
        self.0.borrow().clone()
    }

    /// Waits for the first violation on the connection and returns the server's words.
    pub async fn first(&self) -> String {
        let mut reported = self.0.subscribe();
        match reported.wait_for(|list| !list.is_empty()).await {
            Ok(list) => list[0].clone(),
            // The sender lives in `self`, so the channel cannot close while we wait.
            Err(_) => std::future::pending().await,
        }
    }

    fn record(&self, error: &ServerError) {
        if let ServerError::Other(text) = error
            && text.to_lowercase().contains("permissions violation")
        {
            self.0.send_modify(|list| list.push(text.clone()));
        }
    }
}

async fn options(
    config: &NatsConfig,
    name: &str,
    violations: Violations,
) -> Result<ConnectOptions, ConnectError> {
    let options = match &config.creds_file {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| ConnectError::Credentials {
                path: path.clone(),
                source,
            })?,
        None => ConnectOptions::new(),
    };
    let mut options = options
        .name(name)
        .connection_timeout(config.connect_timeout.as_duration())
        .max_reconnects(None)
        .require_tls(config.tls_required)
        .event_callback(move |event| {
            if let Event::ServerError(error) = &event {
                violations.record(error);
            }
            async move { log_event(event) }
        });
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
    async_nats::connect_with_options(server_addrs(&config.urls)?, options)
        .await
        .map_err(|source| ConnectError::Connect {
            urls: Secret::redact_urls(&config.urls),
            source,
        })
}

/// Parses each URL on its own: async-nats reads one string as one URL, so a comma-separated
/// list would fail as a whole ("invalid port number"). An entry holding commas itself (a file's
/// `urls = ["a,b"]`) is split too.
fn server_addrs(urls: &[String]) -> Result<Vec<ServerAddr>, ConnectError> {
    let addrs = urls
        .iter()
        .flat_map(|entry| split_list(entry))
        .map(|url| {
            url.parse().map_err(|source| ConnectError::Url {
                url: Secret::redact_url(&url),
                source,
            })
        })
        .collect::<Result<Vec<ServerAddr>, _>>()?;
    if addrs.is_empty() {
        return Err(ConnectError::Url {
            url: format!("list {:?}", Secret::redact_urls(urls)),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no server URL given"),
        });
    }
    Ok(addrs)
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
        if waited.as_millis().is_multiple_of(5000) && !waited.is_zero() {
            tracing::warn!(
                urls = Secret::redact_urls(urls),
                waited_s = waited.as_secs(),
                "still waiting for NATS; is nats-server running (deploy/setup.sh)?"
            );
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_url_of_a_list_is_parsed_on_its_own() {
        let urls = [
            "nats://127.0.0.1:1,nats://127.0.0.1:2".to_string(),
            "h:3".to_string(),
        ];
        let addrs = server_addrs(&urls).unwrap();
        let ports: Vec<u16> = addrs.iter().map(ServerAddr::port).collect();
        assert_eq!(ports, [1, 2, 3]);
    }

    #[test]
    fn a_bad_url_is_named_without_its_password() {
        let urls = [
            "nats://u:hunter2@h:1".to_string(),
            "nats://u:hunter2@h:x".to_string(),
        ];
        let error = server_addrs(&urls).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, ConnectError::Url { .. }), "{text}");
        assert!(
            text.contains("nats://u:***@h:x") && !text.contains("hunter2"),
            "{text}"
        );
        let error = server_addrs(&[" , ".to_string()]).unwrap_err();
        assert!(matches!(error, ConnectError::Url { .. }), "{error}");
    }
}
