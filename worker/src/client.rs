//! How the client commands and the bench reach NATS: the `--nats` and subject-prefix options,
//! the worker's credentials and TLS settings, and the pool used when none is named.

use anyhow::Context;
use clap::Args;

/// NATS connection options of the client commands.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long = "nats",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
    /// Subject prefix.
    #[arg(long, env = "OPENSHELL_SUBJECT_PREFIX", default_value = openshell_protocol::subjects::DEFAULT_PREFIX)]
    pub subject_prefix: String,
}

impl NatsArgs {
    /// Connects with the same options as the worker (credentials from the environment).
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let options = crate::nats::connect_once(&self.config()?, "openshell-cli", None).await;
        options.with_context(|| self.hint())
    }

    /// [`NatsArgs::connect`] as an agent of `tenant`: replies come on `_INBOX.<tenant>`, the
    /// only inboxes deploy/nats/accounts.conf lets that agent read (`_INBOX.<tenant>.>`).
    pub async fn connect_as(&self, tenant: &str) -> anyhow::Result<async_nats::Client> {
        let inbox = format!("_INBOX.{tenant}");
        let options =
            crate::nats::connect_once(&self.config()?, "openshell-cli", Some(&inbox)).await;
        options.with_context(|| self.hint())
    }

    /// The NATS settings of the worker configuration (file, then `NATS_*` variables) with the
    /// servers of `--nats`/`NATS_URL`. A bad setting is an error naming it: skipping it would
    /// drop credentials or TLS and connect without them.
    pub(crate) fn config(&self) -> anyhow::Result<crate::config::NatsConfig> {
        let mut config = crate::config::env::load_nats(|name| std::env::var(name).ok())
            .context("reading the NATS settings of this command")?;
        config.urls = crate::config::env::split_list(&self.url);
        Ok(config)
    }

    /// Where a failed connection tried, and what to check.
    pub(crate) fn hint(&self) -> String {
        let urls = crate::config::env::split_list(&self.url);
        format!(
            "connecting to NATS at {}; is nats-server running (deploy/setup.sh)?",
            crate::config::Secret::redact_urls(&urls)
        )
    }
}

/// The pool a client uses when none is named: the one a default worker serves.
pub fn default_pool() -> String {
    std::env::var(crate::config::env::SANDBOX_BACKEND)
        .unwrap_or_else(|_| crate::config::DEFAULT_BACKEND.to_string())
}
