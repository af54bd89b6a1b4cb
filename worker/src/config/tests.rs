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
        Some("[pools.p]\nbackend = \"podman\"\n"),
        &[],
        Overrides::default(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("pools.p.backend"), "{error}");
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
