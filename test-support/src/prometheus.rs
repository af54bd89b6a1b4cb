//! A throw-away Prometheus server on a free loopback port, scraping given targets every second;
//! killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running `prometheus`; killed on drop, its data removed with it.
pub struct PrometheusServer {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl PrometheusServer {
    /// Starts `prometheus` scraping `targets` (host:port), or `None` when it is not installed
    /// outside CI.
    pub async fn start(targets: &[&str]) -> Option<PrometheusServer> {
        let bin = crate::tool("prometheus", "run deploy/setup.sh --install-only")?;
        let dir = tempfile::tempdir().expect("tempdir for prometheus");
        let port = crate::free_port();
        let addr = format!("127.0.0.1:{port}");
        let targets = targets
            .iter()
            .map(|target| format!("'{target}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: openshell\n    static_configs:\n      - targets: [{targets}]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prometheus");
        let server = PrometheusServer {
            child,
            addr,
            _dir: dir,
        };
        server.wait_ready().await;
        Some(server)
    }

    /// `host:port` of its HTTP API.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Polls the instant query `query` until it returns a sample, for up to `within`;
    /// returns the first sample's value.
    pub async fn query_value(&self, query: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let path = format!("/api/v1/query?query={}", encode(query));
        while Instant::now() < deadline {
            let (status, body) = crate::http::get(&self.addr, &path, "application/json").await;
            if status == 200 {
                let json: serde_json::Value = serde_json::from_str(&body).expect("query JSON");
                if let Some(value) = json["data"]["result"][0]["value"][1].as_str() {
                    return Some(value.to_string());
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(&self.addr).await.is_ok() {
                let (status, _) = crate::http::get(&self.addr, "/-/ready", "text/plain").await;
                if status == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("prometheus not ready on {} within 30s", self.addr);
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        crate::process::kill_and_reap(&mut self.child);
    }
}

fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
