//! A pool's session settings (`[pools.NAME.sessions]`): how many, how long, how idle.

use openshell_protocol::DurationMs;
use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// How a pool's sessions are bounded. Sandbox-wide limits come from the pool's `defaults`
/// and `ceilings`, like a job's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    /// Whether tenants may open sessions on the pool.
    pub enabled: bool,
    /// Sessions one tenant may hold open on the pool on this worker; the next open is
    /// refused as `session_limit`.
    pub max_per_tenant: usize,
    /// Lifetime of a session that asks for none.
    pub ttl: DurationMs,
    /// Longest lifetime a session may ask for.
    pub max_ttl: DurationMs,
    /// Idle timeout of a session that asks for none (and the longest one may ask for).
    pub idle: DurationMs,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_per_tenant: 4,
            ttl: DurationMs::secs(600),
            max_ttl: DurationMs::secs(3600),
            idle: DurationMs::secs(120),
        }
    }
}

impl SessionSettings {
    /// Checks the settings of pool `pool`.
    pub fn validate(&self, pool: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            key: format!("pools.{pool}.sessions.{key}"),
            reason: reason.to_string(),
        };
        if self.max_per_tenant == 0 && self.enabled {
            return Err(invalid(
                "max_per_tenant",
                "at least 1 (set enabled = false to refuse sessions)",
            ));
        }
        if self.idle.millis() < 100 || self.ttl.millis() < 100 {
            return Err(invalid("ttl / idle", "at least 100ms"));
        }
        if self.ttl > self.max_ttl {
            return Err(invalid("ttl", "at most max_ttl"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_bad_bounds_name_their_key() {
        assert!(SessionSettings::default().validate("docker").is_ok());
        let over = SessionSettings {
            ttl: DurationMs::secs(7200),
            ..SessionSettings::default()
        };
        let error = over.validate("docker").expect_err("ttl above max_ttl");
        assert!(
            error.to_string().contains("pools.docker.sessions.ttl"),
            "{error}"
        );
        let none = SessionSettings {
            max_per_tenant: 0,
            ..SessionSettings::default()
        };
        assert!(none.validate("docker").is_err());
        let off = SessionSettings {
            enabled: false,
            max_per_tenant: 0,
            ..SessionSettings::default()
        };
        assert!(off.validate("docker").is_ok());
    }
}
