//! The `[pools.NAME.docker]` section.

use serde::{Deserialize, Serialize};

/// Default sandbox image (built by `deploy/sandbox-image`).
pub const DEFAULT_IMAGE: &str = "openshell-sandbox:latest";

/// How the Docker backend runs jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSettings {
    /// Image for jobs whose language names none (`SANDBOX_DOCKER_IMAGE`).
    pub image: String,
    /// Pre-started containers kept ready per image.
    pub warm_pool: usize,
}

impl Default for DockerSettings {
    fn default() -> Self {
        Self {
            image: DEFAULT_IMAGE.to_string(),
            warm_pool: 2,
        }
    }
}
