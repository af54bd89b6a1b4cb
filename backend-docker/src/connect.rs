//! The connection to the Docker engine: the endpoint, API-version negotiation, and what the
//! engine can enforce. A daemon that goes away is noticed, and the next call negotiates again,
//! so the backend recovers by itself when it comes back.

use std::sync::{Arc, Mutex, PoisonError};

use bollard::Docker;
use bollard::models::SystemInfoCgroupVersionEnum;
use openshell_protocol::ErrorKind;

use super::error::{self, Failure};
use super::settings::DockerSettings;
use openshell_backend::BackendError;

/// The endpoint used when neither the settings nor `DOCKER_HOST` name one.
const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// The endpoint of `settings`, else `docker_host` (`DOCKER_HOST`), else the local socket.
fn endpoint(settings: &DockerSettings, docker_host: Option<String>) -> String {
    [settings.endpoint.clone(), docker_host]
        .into_iter()
        .flatten()
        .find(|endpoint| !endpoint.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
}

/// What the connected engine is and can enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Engine {
    /// Engine version, e.g. `20.10.24+dfsg1`.
    pub version: String,
    /// API version in use after negotiation, e.g. `1.41`.
    pub api: String,
    /// `1` or `2`; empty when the engine does not say.
    pub cgroup_version: String,
    /// Memory limits work.
    pub memory_limit: bool,
    /// Swap limits work (memory-swap equal to memory means no swap).
    pub swap_limit: bool,
    /// Pids limits work.
    pub pids_limit: bool,
    /// CFS quotas (nano CPUs) work.
    pub cpu_quota: bool,
}

/// A client for one engine, negotiated lazily and again after each outage.
#[derive(Debug)]
pub(super) struct Connection {
    docker: Docker,
    endpoint: String,
    engine: Mutex<Option<Arc<Engine>>>,
    /// The engine last negotiated, kept through outages: what the backend promises admission
    /// while the daemon is away (it is most likely the same engine when it returns).
    last_known: Mutex<Option<Arc<Engine>>>,
    /// Held while negotiating, so concurrent first calls negotiate (and log) once.
    negotiating: tokio::sync::Mutex<()>,
}

impl Connection {
    /// A client for the endpoint of `settings`, else `DOCKER_HOST`, else the local socket.
    /// Does not contact the daemon.
    pub fn new(settings: &DockerSettings) -> Result<Self, BackendError> {
        let endpoint = endpoint(settings, std::env::var("DOCKER_HOST").ok());
        let docker = Docker::connect_with_host(&endpoint).map_err(|failure| {
            error::error(
                ErrorKind::Internal,
                &endpoint,
                format!(
                    "cannot use Docker endpoint `{endpoint}`: {}; use unix:///path/to/docker.sock or tcp://host:port",
                    error::describe(&failure)
                ),
            )
        })?;
        let docker = docker.with_timeout(settings.api_timeout.as_duration());
        Ok(Self {
            docker,
            endpoint,
            engine: Mutex::new(None),
            last_known: Mutex::new(None),
            negotiating: tokio::sync::Mutex::new(()),
        })
    }

    /// The client; call [`Connection::engine`] first so the API version is negotiated.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The endpoint, as configured.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The engine, negotiating first if this is the first call or the daemon went away.
    pub async fn engine(&self) -> Result<Arc<Engine>, BackendError> {
        if let Some(engine) = self.cached() {
            return Ok(engine);
        }
        let _negotiating = self.negotiating.lock().await;
        if let Some(engine) = self.cached() {
            return Ok(engine);
        }
        let engine = Arc::new(self.negotiate().await?);
        tracing::info!(
            endpoint = %self.endpoint,
            "OpenShell: Docker backend connected to {} (engine {}, API {})",
            self.endpoint,
            engine.version,
            engine.api
        );
        *self.slot() = Some(Arc::clone(&engine));
        *self
            .last_known
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&engine));
        Ok(engine)
    }

    /// Notes a failed call: when the daemon was unreachable, the next call negotiates again.
    pub fn note(&self, failure: &bollard::errors::Error) {
        if error::failure(failure) == Failure::Unreachable && self.slot().take().is_some() {
            tracing::warn!(
                endpoint = %self.endpoint,
                "lost the Docker daemon: {}; jobs fail with connection_failed until it is back",
                error::describe(failure)
            );
        }
    }

    /// Maps a failed call to a backend error, noting an outage.
    pub fn fail(
        &self,
        doing: &str,
        target: &str,
        failure: &bollard::errors::Error,
    ) -> BackendError {
        self.note(failure);
        error::api(doing, target, &self.endpoint, failure)
    }

    /// The engine last negotiated, even if the daemon went away since; `None` before the first.
    pub fn last_known(&self) -> Option<Arc<Engine>> {
        self.last_known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The engine as last negotiated, if it was reached since it last failed.
    pub fn cached(&self) -> Option<Arc<Engine>> {
        self.slot().clone()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<Engine>>> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn negotiate(&self) -> Result<Engine, BackendError> {
        let fail = |doing: &str, failure: bollard::errors::Error| {
            error::api(doing, "the engine", &self.endpoint, &failure)
        };
        // The client's version atomics are shared by every clone, so this sets them for all.
        let docker = self
            .docker
            .clone()
            .negotiate_version()
            .await
            .map_err(|failure| fail("negotiating the API version", failure))?;
        let version = docker
            .version()
            .await
            .map_err(|failure| fail("reading the engine version", failure))?;
        let mut engine = Engine {
            version: version.version.unwrap_or_else(|| "unknown".into()),
            api: docker.client_version().to_string(),
            cgroup_version: String::new(),
            memory_limit: true,
            swap_limit: true,
            pids_limit: true,
            cpu_quota: true,
        };
        match docker.info().await {
            Ok(info) => {
                engine.cgroup_version = match info.cgroup_version {
                    Some(SystemInfoCgroupVersionEnum::_1) => "1".into(),
                    Some(SystemInfoCgroupVersionEnum::_2) => "2".into(),
                    _ => String::new(),
                };
                engine.memory_limit = info.memory_limit.unwrap_or(true);
                engine.swap_limit = info.swap_limit.unwrap_or(true);
                engine.pids_limit = info.pids_limit.unwrap_or(true);
                engine.cpu_quota = info.cpu_cfs_quota.unwrap_or(true);
            }
            Err(failure) => tracing::warn!(
                endpoint = %self.endpoint,
                "cannot read the engine's capabilities ({}); assuming it enforces memory, swap, pids and CPU limits",
                error::describe(&failure)
            ),
        }
        Ok(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_settings_then_docker_host_then_the_local_socket() {
        let mut settings = DockerSettings::default();
        assert_eq!(endpoint(&settings, None), DEFAULT_ENDPOINT);
        let host = Some("tcp://127.0.0.1:2375".to_string());
        assert_eq!(endpoint(&settings, host.clone()), "tcp://127.0.0.1:2375");
        assert_eq!(endpoint(&settings, Some(" ".into())), DEFAULT_ENDPOINT);
        settings.endpoint = Some("unix:///run/user/docker.sock".into());
        assert_eq!(endpoint(&settings, host), "unix:///run/user/docker.sock");
    }

    #[test]
    fn bad_endpoints_are_refused_at_construction() {
        let settings = DockerSettings {
            endpoint: Some("ftp://nowhere".into()),
            ..DockerSettings::default()
        };
        let error = Connection::new(&settings).unwrap_err();
        assert!(
            error.message.contains("ftp://nowhere") && error.message.contains("unix://"),
            "{error}"
        );
    }
}
