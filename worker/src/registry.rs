//! The backends this worker can build: the built-in kinds, and any registered with it.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use openshell_backend::{Backend, BackendError, BackendKind, PoolContext};
use openshell_backend_docker::DockerBackend;
use openshell_backend_local::LocalBackend;
use openshell_backend_ssh::SshBackend;
use openshell_protocol::ErrorKind;

use crate::config::PoolConfig;

/// What a registered backend is built from: the pool's configuration and its context.
pub type Build = Arc<
    dyn Fn(
            PoolConfig,
            PoolContext,
        ) -> Pin<Box<dyn Future<Output = Result<Arc<dyn Backend>, BackendError>> + Send>>
        + Send
        + Sync,
>;

/// How each backend kind is built. The built-in kinds are always there; a backend written
/// elsewhere is added with [`BackendRegistry::register`] under its [`BackendKind::Other`] name.
#[derive(Clone, Default)]
pub struct BackendRegistry {
    others: BTreeMap<String, Build>,
}

impl fmt::Debug for BackendRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendRegistry")
            .field("others", &self.others.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl BackendRegistry {
    /// The built-in backends only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the backend `name` (a pool selects it with `backend = "name"`), built by `build`.
    pub fn register<F, Fut>(mut self, name: &str, build: F) -> Self
    where
        F: Fn(PoolConfig, PoolContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn Backend>, BackendError>> + Send + 'static,
    {
        let build: Build = Arc::new(move |pool, context| Box::pin(build(pool, context)));
        self.others.insert(name.to_string(), build);
        self
    }

    /// The names pools may use.
    pub fn kinds(&self) -> Vec<String> {
        BackendKind::BUILT_IN
            .iter()
            .map(ToString::to_string)
            .chain(self.others.keys().cloned())
            .collect()
    }

    /// Whether this registry can build a backend of `kind` (for pool `pool`).
    pub fn check(&self, kind: &BackendKind, pool: &str) -> Result<(), BackendError> {
        match kind {
            BackendKind::Other(name) if !self.others.contains_key(name) => {
                Err(self.unknown(name, pool))
            }
            _ => Ok(()),
        }
    }

    /// The error for a pool naming a backend nobody registered.
    fn unknown(&self, name: &str, pool: &str) -> BackendError {
        BackendError::new(
            ErrorKind::Internal,
            "registry",
            format!("pool {pool}"),
            format!(
                "no backend named `{name}` in this worker; use one of: {}",
                self.kinds().join(", ")
            ),
        )
    }

    /// Builds the backend of pool `context.name`, configured by `pool`.
    pub async fn build(
        &self,
        pool: &PoolConfig,
        context: PoolContext,
    ) -> Result<Arc<dyn Backend>, BackendError> {
        match &pool.backend {
            BackendKind::Local => Ok(Arc::new(LocalBackend::new(pool.local.clone())?)),
            BackendKind::Docker => Ok(Arc::new(DockerBackend::new(pool.docker.clone(), &context)?)),
            BackendKind::Ssh => Ok(Arc::new(
                SshBackend::start(pool.ssh.clone(), &context).await?,
            )),
            BackendKind::Other(name) => match self.others.get(name) {
                Some(build) => build(pool.clone(), context).await,
                None => Err(self.unknown(name, &context.name)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unregistered_kind_is_refused_with_the_known_ones() {
        let pool = PoolConfig::for_backend(BackendKind::Other("podman".to_string()));
        let error = BackendRegistry::new()
            .build(&pool, PoolContext::bare("p"))
            .await
            .err()
            .expect("podman is not built in");
        assert!(error.message.contains("docker, ssh, none"), "{error}");
    }
}
