//! The worker's small HTTP surface: `/metrics`, `/healthz`, `/readyz`. The server starts
//! before the worker connects to NATS, so `/healthz` (liveness: the process serves HTTP)
//! answers while it waits for NATS, and `/readyz` (readiness) only once it takes jobs.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// Default listen address (`METRICS_ADDR`); port 0 picks a free port.
pub const DEFAULT_ADDR: &str = "0.0.0.0:9464";
/// Liveness: 200 as soon as the server is up, also while the worker waits for NATS.
pub const LIVE_PATH: &str = "/healthz";
/// Readiness: 200 once every pool is served, NATS is connected and a backend is healthy.
pub const READY_PATH: &str = "/readyz";
/// The metrics, for Prometheus.
pub const METRICS_PATH: &str = "/metrics";

/// Answers whether the worker is ready (connected to NATS, a backend healthy).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

struct Shared {
    registry: Registry,
    ready: Readiness,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen for metrics on {addr}: {source}; set METRICS_ADDR to a free address (port 0 picks one)"
)]
pub struct ServeError {
    /// Address asked for.
    pub addr: SocketAddr,
    /// The cause.
    pub source: std::io::Error,
}

/// Binds `addr` and serves until the returned task is aborted; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    ready: Readiness,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError { addr, source })?;
    let shared = Arc::new(Shared { registry, ready });
    let app = Router::new()
        .route(METRICS_PATH, get(metrics))
        .route(LIVE_PATH, get(|| async { "ok\n" }))
        .route(READY_PATH, get(readyz))
        .with_state(shared);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    Ok((bound, task))
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the classic text format otherwise.
async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &shared.registry) {
        Ok(()) if openmetrics => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, super::text_format::CONTENT_TYPE)],
            super::text_format::from_openmetrics(&text),
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            error.to_string(),
        ),
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if (shared.ready)() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting, NATS disconnected or no backend healthy\n",
        )
    }
}
