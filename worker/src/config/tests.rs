use std::collections::HashMap;
use std::io::Write;

use openshell_protocol::{ByteSize, DurationMs};

use super::*;

fn load(
    file: Option<&str>,
    vars: &[(&str, &str)],
    flags: Overrides,
) -> Result<Config, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut temp = tempfile::NamedTempFile::new().unwrap();
    if let Some(text) = file {
        temp.write_all(text.as_bytes()).unwrap();
    }
    Config::load_with(file.map(|_| temp.path()), &flags, |name| {
        vars.get(name).cloned()
    })
}

#[test]
fn defaults_give_one_pool_named_after_the_backend() {
    let config = load(None, &[], Overrides::default()).unwrap();
    assert_eq!(config.pools.keys().collect::<Vec<_>>(), ["docker"]);
    assert_eq!(config.pools["docker"].defaults.cpus, Some(1.0));
    assert_eq!(config.nats.urls, ["nats://127.0.0.1:4222"]);
}

#[test]
fn seed_variables_keep_working() {
    let config = load(
        None,
        &[
            ("SANDBOX_BACKEND", "none"),
            ("LOG_LEVEL", "debug"),
            ("NATS_URL", "nats://a:1, nats://b:2"),
        ],
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(config.worker.log_level, "debug");
    assert_eq!(config.nats.urls, ["nats://a:1", "nats://b:2"]);
    let error = load(
        None,
        &[("SANDBOX_DOCKER_MEMORY", "lots")],
        Overrides::default(),
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("SANDBOX_DOCKER_MEMORY"),
        "{error}"
    );
}

#[test]
fn precedence_is_flag_over_env_over_file() {
    let file = "[nats]\nurls = [\"nats://file:1\"]\n[pools.small]\nbackend = \"none\"\nslots = 3\n";
    let config = load(Some(file), &[], Overrides::default()).unwrap();
    assert_eq!(config.nats.urls, ["nats://file:1"]);
    assert_eq!(config.pools["small"].slots, 3);
    let config = load(
        Some(file),
        &[("NATS_URL", "nats://env:1"), ("OPENSHELL_SLOTS", "5")],
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(config.nats.urls, ["nats://env:1"]);
    assert_eq!(config.pools["small"].slots, 5);
    let flags = Overrides {
        nats_url: Some("nats://flag:1".into()),
        slots: Some(7),
        ..Overrides::default()
    };
    let config = load(Some(file), &[("NATS_URL", "nats://env:1")], flags).unwrap();
    assert_eq!(config.nats.urls, ["nats://flag:1"]);
    assert_eq!(config.pools["small"].slots, 7);
}

#[test]
fn file_limits_accept_the_seed_style() {
    let file = "[pools.p]\ndefaults = { timeout = \"10s\", memory = \"256m\", output = \"64k\" }\n";
    let config = load(Some(file), &[], Overrides::default()).unwrap();
    let defaults = &config.pools["p"].defaults;
    assert_eq!(defaults.timeout, Some(DurationMs::secs(10)));
    assert_eq!(defaults.memory, Some(ByteSize::mib(256)));
}

#[test]
fn unknown_keys_and_bad_values_are_errors() {
    let error = load(Some("[nats]\nurl = \"x\"\n"), &[], Overrides::default()).unwrap_err();
    assert!(error.to_string().contains("unknown field `url`"), "{error}");
    let error = load(
        Some("[pools.p]\nbackend = \"Podman!\"\n"),
        &[],
        Overrides::default(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("not a backend name"), "{error}");
    // A well-formed name that no backend registered is refused when the worker builds it
    // (registry.rs), naming the ones it knows.
    let error = load(
        None,
        &[("SANDBOX_BACKEND", "bad name")],
        Overrides::default(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("SANDBOX_BACKEND"), "{error}");
    let error = load(Some("[pools.p]\nslots = 0\n"), &[], Overrides::default()).unwrap_err();
    assert!(error.to_string().contains("pools.p.slots"), "{error}");
    let error = load(
        Some("[pools.p]\ndefaults = { memory = \"8g\" }\n"),
        &[],
        Overrides::default(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("above the ceiling"), "{error}");
    let error = load(
        Some("[pools.p]\n"),
        &[("SANDBOX_BACKEND", "none")],
        Overrides::default(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("SANDBOX_BACKEND"), "{error}");
}

#[test]
fn secrets_are_redacted_when_printed() {
    let config = load(
        None,
        &[("NATS_PASSWORD", "hunter2"), ("NATS_TOKEN", "tok")],
        Overrides::default(),
    )
    .unwrap();
    let text = config.to_redacted_toml();
    assert!(
        !text.contains("hunter2") && !text.contains("tok\""),
        "{text}"
    );
    assert!(text.contains("<redacted>"));
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[test]
fn urls_are_shown_without_their_password_or_token() {
    let cases = [
        ("nats://user:pw@host:4222", "nats://user:***@host:4222"),
        ("nats://token@host:4222", "nats://***@host:4222"),
        ("tls://user:p%40ss:w@host", "tls://user:***@host"),
        ("user:pw@host:4222", "user:***@host:4222"),
        ("nats://host:4222", "nats://host:4222"),
        // Malformed: everything up to the last `@` is hidden rather than shown.
        ("nats://user:pa/ss@host", "nats://user:***@host"),
        ("", ""),
    ];
    for (url, shown) in cases {
        assert_eq!(Secret::redact_url(url), shown, "{url}");
    }
    assert_eq!(
        Secret::redact_urls(&["nats://a:x@h:1", "nats://h:2"]),
        "nats://a:***@h:1,nats://h:2"
    );
}

#[test]
fn printed_configuration_hides_a_password_in_a_url() {
    let config = load(
        None,
        &[("NATS_URL", "nats://ops:hunter2@a:1,nats://tok3n@b:2")],
        Overrides::default(),
    )
    .unwrap();
    let text = config.to_redacted_toml();
    assert!(
        !text.contains("hunter2") && !text.contains("tok3n"),
        "{text}"
    );
    assert!(text.contains("nats://ops:***@a:1"), "{text}");
    assert!(text.contains("nats://***@b:2"), "{text}");
}

#[test]
fn client_nats_settings_fail_on_a_bad_variable_and_skip_worker_settings() {
    let vars: HashMap<&str, &str> = HashMap::from([
        ("NATS_USER", "agent"),
        ("NATS_PASSWORD", "pw"),
        ("SANDBOX_DOCKER_MEMORY", "lots"),
    ]);
    let nats = env::load_nats(|name| vars.get(name).map(|value| value.to_string())).unwrap();
    assert_eq!(nats.user.as_deref(), Some("agent"));
    assert_eq!(nats.password.as_ref().map(Secret::expose), Some("pw"));

    let error = env::load_nats(|name| (name == "NATS_TLS_REQUIRED").then(|| "maybe".to_string()))
        .unwrap_err();
    assert!(error.to_string().contains("NATS_TLS_REQUIRED"), "{error}");
}

#[test]
fn file_pools_take_the_defaults_of_their_own_backend() {
    for backend in ["none", "ssh"] {
        let bare = format!("[pools.p]\nbackend = \"{backend}\"\n");
        let with_table = format!("{bare}defaults = {{ timeout = \"10s\" }}\n");
        for file in [bare, with_table] {
            let config = load(Some(&file), &[], Overrides::default()).unwrap();
            let defaults = &config.pools["p"].defaults;
            assert_eq!(defaults.cpus, None, "no CPU share on {backend}: {file}");
            assert_eq!(defaults.memory, Some(ByteSize::mib(512)), "{file}");
            assert_eq!(
                config.pools["p"].ceilings,
                PoolConfig::for_backend(backend.parse().expect("a backend")).ceilings
            );
        }
    }
    let config = load(
        Some("[pools.p]\nbackend = \"docker\"\n"),
        &[],
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(config.pools["p"].defaults.cpus, Some(1.0));
    let config = load(Some("[pools.p]\n"), &[], Overrides::default()).unwrap();
    assert_eq!(
        config.pools["p"].defaults.cpus,
        Some(1.0),
        "docker by default"
    );
}

/// Loads with `vars` and returns the error text; panics if loading succeeds.
fn refused(file: Option<&str>, vars: &[(&str, &str)]) -> String {
    match load(file, vars, Overrides::default()) {
        Ok(config) => panic!("accepted {vars:?} {file:?}: {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn settings_that_fail_every_job_are_refused_naming_the_variable() {
    let cases = [
        ("SANDBOX_DOCKER_MEMORY", "1k", "minimum memory of 6m"),
        ("SANDBOX_DOCKER_MEMORY", "0", "memory of 0"),
        ("SANDBOX_DOCKER_TIMEOUT", "0", "timeout of 0"),
        ("SANDBOX_DOCKER_TIMEOUT", "0s", "timeout of 0"),
        ("SANDBOX_DOCKER_CPUS", "0", "cpus"),
        ("SANDBOX_DOCKER_CPUS", "NaN", "cpus"),
        ("SSH_TIMEOUT", "0", "timeout of 0"),
        ("LOG_LEVEL", "verbose", "not a usable log filter"),
        ("LOG_LEVEL", "", "not a usable log filter"),
        ("RUST_LOG", "loud", "not a usable log filter"),
    ];
    for (var, value, reason) in cases {
        let error = refused(None, &[(var, value)]);
        assert!(
            error.contains(var) && error.contains(reason),
            "{var}={value}: {error}"
        );
    }
    assert!(
        load(
            None,
            &[
                ("SANDBOX_DOCKER_MEMORY", "6m"),
                ("LOG_LEVEL", "warn,openshell_worker=debug")
            ],
            Overrides::default()
        )
        .is_ok()
    );
}

#[test]
fn file_limits_that_fail_every_job_are_refused_naming_the_key() {
    let cases = [
        (
            "[pools.p]\ndefaults = { memory = \"1k\" }\n",
            "pools.p.defaults.memory",
        ),
        (
            "[pools.p]\nceilings = { memory = \"5m\" }\n",
            "pools.p.ceilings.memory",
        ),
        (
            "[pools.p]\ndefaults = { timeout = 0 }\n",
            "pools.p.defaults.timeout",
        ),
        (
            "[pools.p]\nceilings = { timeout = \"0s\" }\n",
            "pools.p.ceilings.timeout",
        ),
        (
            "[pools.p]\nbackend = \"ssh\"\ndefaults = { timeout = 0 }\n",
            "pools.p.defaults.timeout",
        ),
        (
            "[pools.p]\nbackend = \"none\"\ndefaults = { processes = 0 }\n",
            "pools.p.defaults.processes",
        ),
        ("[worker]\nlog_level = \"verbose\"\n", "worker.log_level"),
    ];
    for (file, key) in cases {
        let error = refused(Some(file), &[]);
        assert!(error.contains(key), "{file}: {error}");
    }
    let tiny_local = "[pools.p]\nbackend = \"none\"\ndefaults = { memory = \"1m\" }\n";
    assert!(
        load(Some(tiny_local), &[], Overrides::default()).is_ok(),
        "no minimum off docker"
    );
}

#[test]
fn durable_replicas_are_1_3_or_5() {
    let three = load(
        None,
        &[("OPENSHELL_DURABLE_REPLICAS", "3")],
        Overrides::default(),
    )
    .expect("3 replicas");
    assert_eq!(three.durable.replicas, 3);
    assert_eq!(Config::default().durable.replicas, 1);
    let two = refused(None, &[("OPENSHELL_DURABLE_REPLICAS", "2")]);
    assert!(two.contains("durable.replicas"), "{two}");
    let file = refused(Some("[durable]\nreplicas = 4\n"), &[]);
    assert!(file.contains("1, 3 or 5"), "{file}");
}

#[test]
fn network_tables_parse_and_bad_ones_are_refused_naming_the_key() {
    let file = "[pools.p]\nbackend = \"docker\"\n[pools.p.network]\nallow = [\"pypi.org:443\", \"10.0.0.0/8:5432\"]\n\
                max_bytes = \"1m\"\nresolve = { \"db.internal\" = \"10.1.2.3\" }\n";
    let config = load(Some(file), &[], Overrides::default()).unwrap();
    let network = &config.pools["p"].network;
    assert_eq!(network.allow.len(), 2);
    assert_eq!(config.pools["p"].policy("p").egress, network.allow);
    let policy = network.policy(network.allow.clone());
    assert_eq!(policy.max_bytes, Some(1 << 20));
    assert_eq!(
        policy.pins["db.internal"],
        ["10.1.2.3".parse::<std::net::IpAddr>().unwrap()]
    );
    for (bad, says) in [
        ("allow = [\"pypi.org\"]", "no `:PORT`"),
        ("allow = [\"*:443\"]", "bad host"),
        ("max_bytes = \"0\"", "network.max_bytes"),
        ("resolve = { \"DB.x\" = \"10.1.2.3\" }", "network.resolve"),
        ("dir = \"relative\"", "network.dir"),
        ("allow = [\"a.b:1\"]\n[pools.p.more]", "unknown field"),
    ] {
        let file = format!("[pools.p]\nbackend = \"docker\"\n[pools.p.network]\n{bad}\n");
        let error = refused(Some(&file), &[]);
        assert!(error.contains(says), "{bad}: {error}");
    }
    let both = "[pools.p]\nbackend = \"docker\"\nallow_network = true\n[pools.p.network]\nallow = [\"a.b:1\"]\n";
    assert!(refused(Some(both), &[]).contains("allow_network"));
}
