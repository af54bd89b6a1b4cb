//! The explicit registry of backends: a pool's `backend` name picks the implementation.

use std::sync::Arc;

use openshell_protocol::ErrorKind;

use super::docker::DockerBackend;
use super::local::LocalBackend;
use super::ssh::SshBackend;
use super::{Backend, BackendError};
use crate::config::PoolConfig;

/// Builds the backend of pool `name`.
pub async fn build(name: &str, pool: &PoolConfig) -> Result<Arc<dyn Backend>, BackendError> {
    match pool.backend.as_str() {
        "none" => Ok(Arc::new(LocalBackend::new(pool.local.clone())?)),
        "docker" => Ok(Arc::new(DockerBackend::new(name, pool)?)),
        "ssh" => Ok(Arc::new(
            SshBackend::start_in_pool(name, pool.ssh.clone()).await?,
        )),
        other => Err(BackendError::new(
            ErrorKind::Internal,
            "registry",
            format!("pool {name}"),
            format!(
                "no backend named `{other}` in this build; use one of: {}",
                crate::config::BACKENDS.join(", ")
            ),
        )),
    }
}
