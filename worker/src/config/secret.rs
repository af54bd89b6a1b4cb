//! Secrets in configuration: never printed, never logged.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string. `Debug` and `Serialize` print `"<redacted>"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// What a password or token is replaced with when a URL is shown.
const REDACTED: &str = "***";

impl Secret {
    /// `url` as it may be shown: the user name kept, a password or token replaced by `***`.
    ///
    /// `nats://user:pw@host:4222` becomes `nats://user:***@host:4222`, and
    /// `nats://token@host:4222` (NATS reads a lone user name as a token) becomes
    /// `nats://***@host:4222`. Everything before the last `@` after the scheme counts as
    /// credentials, so a malformed URL is over-redacted rather than leaked.
    pub fn redact_url(url: &str) -> String {
        let start = url.find("://").map_or(0, |scheme| scheme + 3);
        let Some(at) = url[start..].rfind('@').map(|at| start + at) else {
            return url.to_string();
        };
        let shown = match url[start..at].split_once(':') {
            Some((user, _)) => format!("{user}:{REDACTED}"),
            None => REDACTED.to_string(),
        };
        format!("{}{shown}{}", &url[..start], &url[at..])
    }

    /// `urls` comma-separated, each through [`Secret::redact_url`]: for logs and messages.
    pub fn redact_urls<S: AsRef<str>>(urls: &[S]) -> String {
        urls.iter()
            .map(|url| Self::redact_url(url.as_ref()))
            .collect::<Vec<_>>()
            .join(",")
    }
}
