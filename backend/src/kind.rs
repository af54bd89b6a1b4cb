//! The kinds of backend, one name each.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kind of a pool's backend, as `SANDBOX_BACKEND` and `[pools.NAME] backend` spell it.
///
/// The built-in kinds have variants; a backend built outside this repository is
/// [`BackendKind::Other`] with its own name, and the worker finds it among the backends
/// registered with it, never through a `match` of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BackendKind {
    /// A fresh container per job, through the Docker Engine API (`docker`, the default).
    Docker,
    /// A dedicated host over pooled SSH connections (`ssh`).
    Ssh,
    /// Local processes, in a bubblewrap sandbox where it can (`none`, OpenClaw's name for it).
    Local,
    /// A backend registered with the worker under this name.
    Other(String),
}

/// A backend name that is not a well-formed kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a backend name: use docker, ssh, none, or a registered backend's name (lowercase letters, digits and `-`)"
)]
pub struct UnknownBackend(pub String);

impl BackendKind {
    /// The built-in kinds, in the order they are documented.
    pub const BUILT_IN: [BackendKind; 3] = [Self::Docker, Self::Ssh, Self::Local];

    /// The name in configuration and on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Docker => "docker",
            Self::Ssh => "ssh",
            Self::Local => "none",
            Self::Other(name) => name,
        }
    }

    /// Whether this is one of [`BackendKind::BUILT_IN`].
    pub fn is_built_in(&self) -> bool {
        !matches!(self, Self::Other(_))
    }
}

impl FromStr for BackendKind {
    type Err = UnknownBackend;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "docker" => Ok(Self::Docker),
            "ssh" => Ok(Self::Ssh),
            "none" => Ok(Self::Local),
            other => {
                let well_formed = other.len() <= 64
                    && other.starts_with(|c: char| c.is_ascii_lowercase())
                    && other
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if well_formed {
                    Ok(Self::Other(other.to_string()))
                } else {
                    Err(UnknownBackend(other.to_string()))
                }
            }
        }
    }
}

impl TryFrom<String> for BackendKind {
    type Error = UnknownBackend;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl From<BackendKind> for String {
    fn from(kind: BackendKind) -> Self {
        kind.as_str().to_string()
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_one_name_both_ways() {
        for kind in BackendKind::BUILT_IN {
            assert_eq!(kind.as_str().parse::<BackendKind>(), Ok(kind.clone()));
        }
        assert_eq!("none".parse(), Ok(BackendKind::Local));
        assert_eq!("echo".parse(), Ok(BackendKind::Other("echo".to_string())));
        assert!("Docker".parse::<BackendKind>().is_err());
        assert!("".parse::<BackendKind>().is_err());
        assert!("a b".parse::<BackendKind>().is_err());
    }
}
