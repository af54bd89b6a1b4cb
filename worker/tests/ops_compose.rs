//! `deploy/compose/docker-compose.yml`, checked where images cannot be pulled: `docker-compose
//! config` validates and renders it, and the same topology then runs from local processes.
//! Each NATS service's own command line (rendered onto loopback ports) starts a nats-server on
//! the file the service mounts, `deploy/nats/accounts.conf`, with the service's environment; two
//! workers start with the worker services' environment (NATS URLs rendered, the `none` backend
//! instead of Docker); an agent of tenant acme, with its own credentials, runs a core job and
//! a durable one, and the streams have the compose file's 3 replicas. Prometheus and Grafana
//! are checked against the services they point at, and `up.sh` against the file: the `.env` it
//! writes once (mode 600) holds every variable the file requires.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use openshell_test_support::nats::accounts::{PASSWORDS, password};
use openshell_test_support::nats::cluster::{NatsCluster, NodePorts};
use openshell_test_support::{Openshell, deploy_dir, free_port, tool, yaml};
use serde_json::Value;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

/// The variables the compose file requires, as `deploy/compose/up.sh` writes them to `.env`.
fn compose_env() -> Vec<(&'static str, &'static str)> {
    let mut env = PASSWORDS.to_vec();
    env.extend([
        ("GRAFANA_ADMIN_PASSWORD", "grafana-secret"),
        ("DOCKER_GID", "999"),
    ]);
    env
}

/// The compose file as `docker-compose config` validates and renders it (variables
/// interpolated, anchors merged, mounts made absolute); `None` where docker-compose or
/// python3-yaml is missing outside CI.
fn rendered_compose() -> Option<Value> {
    let compose = tool("docker-compose", "run deploy/setup.sh --install-only")?;
    let out = Command::new(compose)
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(deploy_dir().join("compose"))
        .envs(compose_env())
        .output()
        .expect("run docker-compose config");
    assert!(
        out.status.success(),
        "docker-compose config refused the file:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    Some(yaml::documents(&text)?.remove(0))
}

/// The services whose names start with `prefix`, by name.
fn services<'a>(compose: &'a Value, prefix: &str) -> BTreeMap<String, &'a Value> {
    compose["services"]
        .as_object()
        .expect("services")
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(name, service)| (name.clone(), service))
        .collect()
}

/// A service's command line.
fn command(service: &Value) -> Vec<String> {
    service["command"]
        .as_array()
        .expect("a command list")
        .iter()
        .map(|arg| arg.as_str().expect("a string").to_string())
        .collect()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let at = args
        .iter()
        .position(|arg| arg == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    &args[at + 1]
}

/// A service's environment.
fn environment(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_object()
        .expect("an environment map")
        .iter()
        .map(|(key, value)| {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            (key.clone(), value)
        })
        .collect()
}

/// The host file a service mounts at `target`.
fn mounted(service: &Value, target: &str) -> PathBuf {
    service["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(Value::as_str)
        .find_map(|volume| {
            let mut parts = volume.split(':');
            let source = parts.next()?;
            (parts.next()? == target).then(|| PathBuf::from(source))
        })
        .unwrap_or_else(|| panic!("nothing mounted at {target}: {service}"))
}

/// `nats://HOST:PORT` with HOST one of `names`: that node's index and the port.
fn node_of(url: &str, names: &[String]) -> (usize, u16) {
    let (host, port) = url
        .trim_start_matches("nats://")
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("no port in {url}"));
    let index = names
        .iter()
        .position(|name| name == host)
        .unwrap_or_else(|| panic!("{url} names no NATS service of the compose file"));
    (index, port.parse().expect("a port"))
}

/// One NATS service's command line, on this node's loopback ports, with the accounts file at
/// its host path. Panics on a flag it does not know, so that none is silently dropped.
fn render_node(args: &[String], names: &[String], config: &Path, node: &NodePorts) -> Vec<String> {
    assert_eq!(
        flag(args, "--name"),
        node.name,
        "each node named as its service"
    );
    let mut out = Vec::new();
    for pair in args.chunks(2) {
        let [name, value] = pair else {
            panic!("a flag without a value in {args:?}");
        };
        let value = match name.as_str() {
            "--config" => config.display().to_string(),
            "--name" | "--cluster_name" => value.clone(),
            "--addr" => "127.0.0.1".to_string(),
            "--port" => node.client.to_string(),
            "--http_port" => free_port().to_string(),
            "--cluster" => format!("nats://127.0.0.1:{}", node.route),
            "--routes" => value
                .split(',')
                .map(|url| {
                    let (index, port) = node_of(url, names);
                    assert_eq!(port, 6222, "routes go to the cluster port: {url}");
                    format!("nats://127.0.0.1:{}", node.routes[index])
                })
                .collect::<Vec<_>>()
                .join(","),
            other => panic!("the test does not render nats-server flag {other}: add it here"),
        };
        out.extend([name.clone(), value]);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_topology_runs_from_local_processes() {
    let Some(compose) = rendered_compose() else {
        return;
    };

    // Three NATS nodes, each on the shipped accounts file, clustered with each other.
    let nats = services(&compose, "nats-");
    let names: Vec<String> = nats.keys().cloned().collect();
    assert_eq!(names, ["nats-1", "nats-2", "nats-3"]);
    let accounts = deploy_dir().join("nats/accounts.conf");
    let mut commands = Vec::new();
    for (name, service) in &nats {
        let args = command(service);
        let config = mounted(service, flag(&args, "--config"));
        assert_eq!(
            config.canonicalize().expect("mounted file exists"),
            accounts.canonicalize().expect("accounts.conf"),
            "{name} runs on deploy/nats/accounts.conf"
        );
        let routes: Vec<usize> = flag(&args, "--routes")
            .split(',')
            .map(|url| node_of(url, &names).0)
            .collect();
        assert_eq!(routes, [0, 1, 2], "{name} routes to every node");
        let env = environment(service);
        assert_eq!(env["OPENSHELL_NATS_STORE_DIR"], "/data");
        let data = service["volumes"].as_array().expect("volumes");
        assert!(
            data.iter()
                .any(|volume| volume.as_str().is_some_and(|v| v.contains(":/data"))),
            "{name} keeps JetStream's store in a volume"
        );
        commands.push((args, env));
    }
    let accounts_text = std::fs::read_to_string(&accounts).expect("read accounts.conf");
    assert!(accounts_text.contains("jetstream {"), "JetStream on");
    assert!(
        accounts_text.contains("jetstream: enabled"),
        "for OPENSHELL"
    );

    let launch_names = names.clone();
    let launch = Box::new(move |node: &NodePorts| {
        let index = launch_names
            .iter()
            .position(|name| name == node.name)
            .expect("a node of ours");
        let (args, env) = &commands[index];
        let args = render_node(args, &launch_names, &accounts, node);
        let mut env: Vec<(String, String)> = env.clone().into_iter().collect();
        for (key, value) in &mut env {
            if key == "OPENSHELL_NATS_STORE_DIR" {
                *value = node.dir.display().to_string();
            }
        }
        (args, env)
    });
    let login = Some(("worker".to_string(), password("worker").to_string()));
    let Some(cluster) = NatsCluster::start_with(names.clone(), launch, login).await else {
        return;
    };

    // Two durable workers with the worker services' environment.
    let workers = services(&compose, "worker-");
    assert_eq!(workers.len(), 2, "two workers");
    let mut running = Vec::new();
    for (name, service) in &workers {
        let env = environment(service);
        assert_eq!(env["OPENSHELL_DURABLE"], "true", "{name}: durable mode");
        assert_eq!(env["OPENSHELL_DURABLE_REPLICAS"], "3", "{name}: 3 replicas");
        assert_eq!(env["NATS_USER"], "worker", "{name}: the worker user");
        assert_eq!(env["NATS_PASSWORD"], password("worker"));
        assert_eq!(env["METRICS_ADDR"], "0.0.0.0:9464");
        let urls: Vec<(usize, u16)> = env["NATS_URL"]
            .split(',')
            .map(|url| node_of(url, &names))
            .collect();
        let mut nodes: Vec<usize> = urls.iter().map(|(index, _)| *index).collect();
        nodes.sort_unstable();
        assert_eq!(nodes, [0, 1, 2], "{name} knows every node");
        assert!(urls.iter().all(|(_, port)| *port == 4222));
        let local_urls = urls
            .iter()
            .map(|(index, _)| cluster.url(*index))
            .collect::<Vec<_>>()
            .join(",");
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(key, _)| key != "METRICS_ADDR")
            .collect();
        for (key, value) in &mut vars {
            match key.as_str() {
                "NATS_URL" => *value = local_urls.clone(),
                // The topology is what is tested here; the docker backend has tests of its own.
                "SANDBOX_BACKEND" => *value = "none".to_string(),
                _ => {}
            }
        }
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        running.push(OPENSHELL.worker(&vars).await);
    }

    // The streams have the compose file's replicas.
    let (user, secret) = ("worker", password("worker"));
    let connection = async_nats::ConnectOptions::with_user_and_password(user.into(), secret.into())
        .connect(cluster.urls_from(0).split(',').collect::<Vec<_>>())
        .await
        .expect("the worker user connects");
    let jetstream = async_nats::jetstream::new(connection);
    let mut jobs = jetstream
        .get_stream("OPENSHELL_JOBS")
        .await
        .expect("the jobs stream");
    assert_eq!(jobs.info().await.expect("info").config.num_replicas, 3);

    // An agent of tenant acme, with its own credentials, on one node only (the workers' client
    // picked theirs at random, so jobs usually cross the cluster's routes).
    let urls = cluster.url(2);
    let agent = [
        ("NATS_URL", urls.as_str()),
        ("NATS_USER", "agent-acme"),
        ("NATS_PASSWORD", password("agent-acme")),
    ];
    let out = OPENSHELL
        .cli(
            [
                "exec",
                "--tenant",
                "acme",
                "--pool",
                "none",
                "--command",
                "echo",
                "core",
            ],
            &agent,
        )
        .await;
    assert!(out.status.success(), "core job: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "core\n");
    let out = OPENSHELL
        .cli(
            [
                "submit",
                "--tenant",
                "acme",
                "--pool",
                "none",
                "--id",
                "compose-1",
                "--command",
                "echo",
                "durable",
            ],
            &agent,
        )
        .await;
    assert!(out.status.success(), "submit: {out:?}");
    let out = OPENSHELL
        .cli(
            ["result", "compose-1", "--tenant", "acme", "--wait", "60s"],
            &agent,
        )
        .await;
    assert!(out.status.success(), "durable result: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "durable\n");
    drop(running);
}

#[test]
fn prometheus_and_grafana_point_at_the_compose_services() {
    let Some(compose) = rendered_compose() else {
        return;
    };
    let deploy = deploy_dir();
    let workers: Vec<String> = services(&compose, "worker-").into_keys().collect();

    // Prometheus scrapes every worker service on its metrics port, and loads the alerts.
    let prometheus = &compose["services"]["prometheus"];
    let config = mounted(prometheus, "/etc/prometheus/prometheus.yml");
    assert_eq!(
        config,
        deploy
            .join("prometheus/prometheus.yml")
            .canonicalize()
            .unwrap()
    );
    mounted(prometheus, "/etc/prometheus/alerts.yml");
    let text = std::fs::read_to_string(&config).expect("read prometheus.yml");
    let Some(scrape) = yaml::documents(&text) else {
        return;
    };
    let targets: Vec<String> = scrape[0]["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_array()
        .expect("static targets")
        .iter()
        .map(|target| target.as_str().expect("a target").to_string())
        .collect();
    let expected: Vec<String> = workers.iter().map(|name| format!("{name}:9464")).collect();
    assert_eq!(targets, expected);

    // Grafana gets the dashboard and a data source that is the Prometheus service.
    let grafana = &compose["services"]["grafana"];
    let provisioning = mounted(grafana, "/etc/grafana/provisioning");
    let dashboards = mounted(
        grafana,
        "/var/lib/grafana/dashboards/openshell-workers.json",
    );
    assert_eq!(
        dashboards,
        deploy
            .join("grafana/openshell-workers.json")
            .canonicalize()
            .unwrap()
    );
    let provider = std::fs::read_to_string(provisioning.join("dashboards/openshell.yml"))
        .expect("dashboard provider");
    let provider = yaml::documents(&provider).expect("python3-yaml");
    assert_eq!(
        provider[0]["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );
    let source = std::fs::read_to_string(provisioning.join("datasources/prometheus.yml"))
        .expect("data source");
    let source = yaml::documents(&source).expect("python3-yaml");
    assert_eq!(source[0]["datasources"][0]["type"], "prometheus");
    assert_eq!(source[0]["datasources"][0]["url"], "http://prometheus:9090");
    let published = prometheus["ports"][0].as_str().expect("a published port");
    assert!(published.contains(":9090"), "{published}");
}

#[test]
fn up_sh_writes_every_variable_the_file_needs_once_and_starts_it() {
    let Some(compose) = tool("docker-compose", "run deploy/setup.sh --install-only") else {
        return;
    };
    // up.sh and the compose file in a directory of their own, so the test writes no .env into
    // the repository; a `docker` on PATH that records its arguments.
    let dir = tempfile::tempdir().expect("tempdir");
    let here = dir.path().join("compose");
    std::fs::create_dir_all(&here).unwrap();
    for file in ["up.sh", "docker-compose.yml"] {
        std::fs::copy(deploy_dir().join("compose").join(file), here.join(file)).unwrap();
    }
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.path().join("docker.log");
    std::fs::write(
        bin.join("docker"),
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >>\"$DOCKER_LOG\"\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("docker"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let up = || {
        let out = Command::new("bash")
            .arg(here.join("up.sh"))
            .env("PATH", &path)
            .env("DOCKER_LOG", &log)
            .output()
            .expect("run up.sh");
        assert!(out.status.success(), "up.sh: {out:?}");
        std::fs::read_to_string(here.join(".env")).expect("up.sh wrote .env")
    };
    let first = up();
    let mode = std::fs::metadata(here.join(".env")).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600,
        "the passwords are private"
    );
    assert_eq!(up(), first, "a second run keeps the passwords");
    let calls = std::fs::read_to_string(&log).unwrap();
    let started = format!(
        "compose --project-directory {0} -f {0}/docker-compose.yml up -d --build",
        here.display()
    );
    assert!(calls.lines().any(|line| line == started), "{calls}");

    // docker-compose reads .env from the project directory: with nothing else set, every
    // variable the file requires (`${NAME:?...}`) is there.
    let out = Command::new(compose)
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(&here)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run docker-compose config");
    assert!(out.status.success(), "with up.sh's .env: {out:?}");
}
