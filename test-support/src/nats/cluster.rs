//! A throw-away 3-node `nats-server` cluster with JetStream, on loopback ports: for tests of
//! durable mode surviving the loss of a node. [`NatsCluster::start`] writes each node's
//! configuration itself; [`NatsCluster::start_with`] takes the command line from the caller
//! (the compose file's, rendered onto loopback ports).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{append, binary};
use crate::{free_port, process};

/// How long the cluster may take to elect a JetStream meta leader.
const JETSTREAM_READY: Duration = Duration::from_secs(60);

/// One node: its ports, store and process.
struct Node {
    name: String,
    client: u16,
    route: u16,
    dir: TempDir,
    child: Option<Child>,
}

/// One node as a [`Launch`] sees it: its name, ports and store, and every node's route port.
#[derive(Debug)]
pub struct NodePorts<'a> {
    /// The node's server name.
    pub name: &'a str,
    /// Its client port on 127.0.0.1.
    pub client: u16,
    /// Its cluster (route) port on 127.0.0.1.
    pub route: u16,
    /// Its own directory, for JetStream's store and any file it needs.
    pub dir: &'a Path,
    /// Every node's route port, by node index (this one's included).
    pub routes: &'a [u16],
}

/// How a node's `nats-server` is started: its arguments and extra environment.
pub type Launch = Box<dyn Fn(&NodePorts) -> (Vec<String>, Vec<(String, String)>) + Send + Sync>;

/// A running cluster; every node is killed on drop, its files removed with it.
pub struct NatsCluster {
    bin: PathBuf,
    nodes: Vec<Node>,
    launch: Launch,
    /// User and password the readiness check connects with, when the nodes require one.
    login: Option<(String, String)>,
}

impl NatsCluster {
    /// Starts `size` nodes routed to each other, and waits until JetStream answers; `None`
    /// (with a skip message) when the binary is missing outside CI.
    pub async fn start(size: usize) -> Option<NatsCluster> {
        let names = (0..size).map(|index| format!("n{index}")).collect();
        Self::start_with(names, Box::new(own_config), None).await
    }

    /// Starts one node per name, each with the command line `launch` makes of its ports, and
    /// waits until JetStream answers (connecting as `login` when given); `None` (with a skip
    /// message) when the binary is missing outside CI.
    pub async fn start_with(
        names: Vec<String>,
        launch: Launch,
        login: Option<(String, String)>,
    ) -> Option<NatsCluster> {
        let bin = binary()?;
        let nodes: Vec<Node> = names
            .into_iter()
            .map(|name| Node {
                name,
                client: free_port(),
                route: free_port(),
                dir: tempfile::tempdir().expect("tempdir for a node"),
                child: None,
            })
            .collect();
        let size = nodes.len();
        let mut cluster = NatsCluster {
            bin,
            nodes,
            launch,
            login,
        };
        for index in 0..size {
            cluster.spawn(index);
        }
        cluster.wait_jetstream().await;
        Some(cluster)
    }

    /// Every node's client URL, comma-separated, starting with node `first`'s.
    pub fn urls_from(&self, first: usize) -> String {
        let count = self.nodes.len();
        (0..count)
            .map(|offset| self.url((first + offset) % count))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `index`'s client URL.
    pub fn url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[index].client)
    }

    /// The index of the node whose server name is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// Kills node `index` with SIGKILL, as a crash would.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            process::kill_and_reap(&mut child);
        }
    }

    /// Starts node `index` again with its store, ports and routes.
    pub async fn start_again(&mut self, index: usize) {
        self.spawn(index);
        self.wait_jetstream().await;
    }

    /// What node `index` logged.
    pub fn logs(&self, index: usize) -> String {
        std::fs::read_to_string(self.nodes[index].dir.path().join("nats-server.log"))
            .unwrap_or_default()
    }

    fn spawn(&mut self, index: usize) {
        let routes: Vec<u16> = self.nodes.iter().map(|node| node.route).collect();
        let node = &self.nodes[index];
        let (args, envs) = (self.launch)(&NodePorts {
            name: &node.name,
            client: node.client,
            route: node.route,
            dir: node.dir.path(),
            routes: &routes,
        });
        let log = append(&node.dir.path().join("nats-server.log"));
        let child = Command::new(&self.bin)
            .args(&args)
            .envs(envs)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", self.bin.display()));
        self.nodes[index].child = Some(child);
    }

    /// Waits until every running node's JetStream answers an account info request (a meta
    /// leader was elected).
    async fn wait_jetstream(&self) {
        let deadline = Instant::now() + JETSTREAM_READY;
        for (index, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            loop {
                let options = match &self.login {
                    Some((user, password)) => async_nats::ConnectOptions::with_user_and_password(
                        user.clone(),
                        password.clone(),
                    ),
                    None => async_nats::ConnectOptions::new(),
                };
                if let Ok(client) = options.connect(self.url(index)).await {
                    let jetstream = async_nats::jetstream::new(client);
                    if jetstream.query_account().await.is_ok() {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster's JetStream did not come up within {JETSTREAM_READY:?}:\n{}",
                    self.logs(index)
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                process::kill_and_reap(&mut child);
            }
        }
    }
}

/// The default [`Launch`]: a configuration file of its own in the node's directory, loopback
/// only, JetStream on, routes to every node, no authentication.
fn own_config(node: &NodePorts) -> (Vec<String>, Vec<(String, String)>) {
    let routes: Vec<String> = node
        .routes
        .iter()
        .map(|port| format!("\"nats-route://127.0.0.1:{port}\""))
        .collect();
    let store = format!("{:?}", node.dir.display().to_string());
    let config = format!(
        "server_name: {name}\nlisten: 127.0.0.1:{client}\njetstream {{\n  store_dir: {store}\n}}\n\
         cluster {{\n  name: openshell-test\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
        name = node.name,
        client = node.client,
        route = node.route,
        routes = routes.join(", "),
    );
    let path = node.dir.join("nats-server.conf");
    std::fs::write(&path, config).expect("write a node's configuration");
    (
        vec!["--config".to_string(), path.display().to_string()],
        Vec::new(),
    )
}
