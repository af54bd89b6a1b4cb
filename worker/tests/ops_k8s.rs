//! `deploy/k8s/`: the manifests pass schema validation (`kubernetes-validate`, Kubernetes'
//! own OpenAPI schemas, strict), and every name in them is the code's: the environment loads
//! into a valid durable configuration and the worker reads every variable; the probes are the
//! worker's liveness and readiness paths on its metrics port; the KEDA trigger names the stream,
//! the consumer of the configured pool and the workers' NATS account; the pod's user can read
//! the Docker socket and the SSH key, which the init container leaves in a form the worker's
//! key check accepts.

mod kit;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use openshell_test_support::{deploy_dir, tool, yaml};
use openshell_worker::durable;
use openshell_worker::metrics::server::{DEFAULT_ADDR, LIVE_PATH, READY_PATH};
use serde_json::Value;

/// The manifests, each file's documents by kind.
fn manifests() -> Option<BTreeMap<String, Value>> {
    let mut kinds = BTreeMap::new();
    for entry in std::fs::read_dir(deploy_dir().join("k8s")).expect("read deploy/k8s") {
        let path = entry.expect("an entry").path();
        let text = std::fs::read_to_string(&path).expect("read a manifest");
        for document in yaml::documents(&text)? {
            let kind = document["kind"].as_str().expect("a kind").to_string();
            assert!(
                kinds.insert(kind.clone(), document).is_none(),
                "two {kind}s"
            );
        }
    }
    Some(kinds)
}

#[test]
fn manifests_pass_kubernetes_schema_validation() {
    let Some(validate) = tool("kubernetes-validate", "run deploy/setup.sh --install-only") else {
        return;
    };
    let dir = deploy_dir().join("k8s");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("read deploy/k8s")
        .map(|entry| entry.expect("an entry").path())
        .collect();
    files.sort();
    let out = Command::new(validate)
        .args(["--strict", "--quiet"])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate:\n{text}");
    assert!(!text.contains("ERROR"), "{text}");
}

/// The worker container, by name.
fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    let pod = &deployment["spec"]["template"]["spec"];
    pod["containers"]
        .as_array()
        .into_iter()
        .chain(pod["initContainers"].as_array())
        .flatten()
        .find(|container| container["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The container's environment, references replaced by what Kubernetes would put there.
fn environment(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|var| {
            let name = var["name"].as_str().expect("a name").to_string();
            let value = match var["value"].as_str() {
                Some(value) => value.to_string(),
                None if var["valueFrom"]["secretKeyRef"].is_object() => "a-secret".to_string(),
                None if var["valueFrom"]["fieldRef"].is_object() => "openshell-worker-0".into(),
                None => panic!("{name}: neither a value nor a reference"),
            };
            (name, value)
        })
        .collect()
}

#[test]
fn every_name_in_the_manifests_is_the_codes() {
    let Some(kinds) = manifests() else {
        return;
    };
    let deployment = &kinds["Deployment"];
    let worker = container(deployment, "worker");

    // The environment is a valid durable configuration, every variable read by the worker.
    let env = environment(worker);
    let config = kit::load_config(&env, "deploy/k8s/deployment.yaml");
    assert!(
        config.durable.enabled,
        "durable mode on: KEDA reads its consumer"
    );
    assert_eq!(config.durable.replicas, 3);
    let user = config.nats.user.clone().expect("a NATS user");
    assert_eq!(kit::account_of(&user), "OPENSHELL");

    // Metrics port: the worker's default, the container's, the annotation's, the Service's.
    let default_port: u16 = DEFAULT_ADDR.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(config.worker.metrics_addr.port(), default_port);
    let port = &worker["ports"][0];
    assert_eq!(port["containerPort"], default_port);
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], default_port.to_string());
    let service = &kinds["Service"]["spec"];
    assert_eq!(service["ports"][0]["port"], default_port);
    assert_eq!(service["ports"][0]["targetPort"], port["name"]);

    // Probes: liveness answers while NATS is away, readiness once serving.
    assert_eq!(worker["livenessProbe"]["httpGet"]["path"], LIVE_PATH);
    assert_eq!(worker["readinessProbe"]["httpGet"]["path"], READY_PATH);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(worker[probe]["httpGet"]["port"], port["name"], "{probe}");
    }

    // Selectors.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (what, selector) in [
        ("Deployment", &deployment["spec"]["selector"]["matchLabels"]),
        ("Service", &service["selector"]),
        (
            "PodDisruptionBudget",
            &kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        ),
    ] {
        for (key, value) in selector.as_object().expect("a selector") {
            assert_eq!(&labels[key], value, "{what} selects the worker pods");
        }
    }

    // KEDA: the stream, the consumer of the one configured pool, the workers' account.
    let scaled = &kinds["ScaledObject"]["spec"];
    assert_eq!(
        scaled["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    let trigger = &scaled["triggers"][0];
    assert_eq!(trigger["type"], "nats-jetstream");
    let metadata = &trigger["metadata"];
    assert_eq!(metadata["stream"], durable::streams::JOBS);
    let pools: Vec<&String> = config.pools.keys().collect();
    assert_eq!(pools.len(), 1, "one pool: {pools:?}");
    assert_eq!(metadata["consumer"], durable::consumer::name(pools[0]));
    assert_eq!(metadata["account"], kit::account_of(&user));
    let monitoring = metadata["natsServerMonitoringEndpoint"]
        .as_str()
        .expect("a monitoring endpoint");
    assert!(
        monitoring.ends_with(&format!(":{}", nats_http_port())),
        "{monitoring}: the NATS servers' --http_port"
    );
}

/// The HTTP (monitoring) port the compose file's NATS servers serve.
fn nats_http_port() -> String {
    let text = std::fs::read_to_string(deploy_dir().join("compose/docker-compose.yml"))
        .expect("read the compose file");
    let compose = yaml::documents(&text).expect("python3-yaml").remove(0);
    let command: Vec<&str> = compose["services"]["nats-1"]["command"]
        .as_array()
        .expect("a command")
        .iter()
        .map(|arg| arg.as_str().expect("a string"))
        .collect();
    let at = command
        .iter()
        .position(|arg| *arg == "--http_port")
        .expect("--http_port");
    command[at + 1].to_string()
}

#[test]
fn the_pod_user_reads_the_socket_and_a_key_the_worker_accepts() {
    let Some(kinds) = manifests() else {
        return;
    };
    let deployment = &kinds["Deployment"];
    let pod = &deployment["spec"]["template"]["spec"];
    let security = &pod["securityContext"];
    let dockerfile =
        std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("read Dockerfile");
    let uid = security["runAsUser"].as_u64().expect("runAsUser");
    assert!(
        dockerfile.contains(&format!("USER {uid}\n")),
        "the image's user"
    );
    // The Docker socket (root:docker 0660 on the node) through the docker group.
    let groups = security["supplementalGroups"]
        .as_array()
        .expect("supplementalGroups: the node's docker group");
    assert!(!groups.is_empty());
    // Secret files are root-owned: readable by the pod's user only through fsGroup.
    assert_eq!(security["fsGroup"], uid);
    let volumes = pod["volumes"].as_array().expect("volumes");
    let secret = volumes
        .iter()
        .find(|volume| volume["secret"]["secretName"] == "openshell-ssh")
        .expect("the SSH secret volume");
    let mode = secret["secret"]["defaultMode"]
        .as_u64()
        .expect("defaultMode");
    assert_eq!(mode & 0o040, 0o040, "group-readable: mode {mode:o}");

    // The init container copies the key where the worker mounts `ssh`, mode 0600.
    let init = container(deployment, "ssh-key");
    let script = init["command"][2].as_str().expect("a shell script");
    let mount = |container: &Value, volume: &str| -> String {
        container["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .find(|mount| mount["name"] == volume)
            .and_then(|mount| mount["mountPath"].as_str())
            .unwrap_or_else(|| panic!("{volume} not mounted"))
            .to_string()
    };
    let secret_dir = mount(init, secret["name"].as_str().expect("a name"));
    let key_dir = mount(init, "ssh");
    assert_eq!(mount(container(deployment, "worker"), "ssh"), key_dir);

    // Run the script on a key laid out as kubelet lays out the secret (0440, the owner not
    // the reader); the worker's key check refuses that file and accepts the copy.
    let Some(keygen) = tool("ssh-keygen", "apt-get install openssh-client") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake_secret, fake_keys) = (dir.path().join("secret"), dir.path().join("ssh"));
    std::fs::create_dir_all(&fake_secret).unwrap();
    std::fs::create_dir_all(&fake_keys).unwrap();
    let key = fake_secret.join("id_ed25519");
    let out = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    std::fs::write(fake_secret.join("known_hosts"), "").unwrap();
    for file in ["id_ed25519", "known_hosts"] {
        let path = fake_secret.join(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
    }
    let script = script
        .replace(&secret_dir, &fake_secret.display().to_string())
        .replace(&key_dir, &fake_keys.display().to_string());
    let out = Command::new("/bin/sh")
        .args(["-c", &script])
        .output()
        .expect("run the init script");
    assert!(out.status.success(), "init script: {out:?}");
    assert!(
        openshell_backend_ssh::key::load(&key).is_err(),
        "0440 is refused"
    );
    let copied = fake_keys.join("id_ed25519");
    openshell_backend_ssh::key::load(&copied).expect("the worker accepts the copied key");
    // The path the manifest's comment tells operators to set as SSH_KEY_PATH.
    let text = std::fs::read_to_string(deploy_dir().join("k8s/deployment.yaml")).unwrap();
    assert!(text.contains(&format!("SSH_KEY_PATH={key_dir}/id_ed25519")));
}
