//! Configuration errors: each names the source, the key and the bad value.

use std::path::PathBuf;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for OpenShell (unknown keys included).
    #[error("config file {path} is invalid: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// The parser's account, with the key and position.
        message: String,
    },
    /// An environment variable has a bad value.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    Env {
        /// Variable name.
        var: &'static str,
        /// Its value (secrets are never reported).
        value: String,
        /// What is expected.
        reason: String,
    },
    /// A command-line flag has a bad value.
    #[error("flag --{flag} is invalid: {reason}")]
    Flag {
        /// Flag name.
        flag: &'static str,
        /// What is expected.
        reason: String,
    },
    /// A log filter (`LOG_LEVEL`, `RUST_LOG` or `worker.log_level`) would silence the worker or
    /// does not parse.
    #[error("{setting}={value:?} is not a usable log filter")]
    LogFilter {
        /// The variable or key that set it.
        setting: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        #[source]
        source: crate::logging::FilterError,
    },
    /// The merged configuration breaks a rule.
    #[error("invalid configuration at `{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `pools.docker.slots`.
        key: String,
        /// The rule and how to comply.
        reason: String,
    },
}
