//! What the deploy-kit tests check the shipped files against: the worker's own reading of its
//! environment, and the accounts of `deploy/nats/accounts.conf`. Include with `mod kit;`.

// Each test binary uses some of these.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use openshell_test_support::deploy_dir;
use openshell_worker::config::{Config, Overrides};

/// Variables read where they are used rather than by the configuration loader.
const READ_ELSEWHERE: &[&str] = &[
    openshell_worker::logging::LOG_FORMAT,
    openshell_worker::metrics::tenants::TENANT_LABELS_ENV,
];

/// Loads the worker's configuration from `vars` alone, as `openshell worker` would; panics
/// with the error, or naming a variable in `vars` the worker never reads (`context` says
/// which file set it).
pub fn load_config(vars: &BTreeMap<String, String>, context: &str) -> Config {
    let asked = RefCell::new(BTreeSet::new());
    let config = Config::load_with(None, &Overrides::default(), |name| {
        asked.borrow_mut().insert(name.to_string());
        vars.get(name).cloned()
    })
    .unwrap_or_else(|error| panic!("{context}: the worker refuses its environment: {error}"));
    let asked = asked.into_inner();
    for name in vars.keys() {
        assert!(
            asked.contains(name) || READ_ELSEWHERE.contains(&name.as_str()),
            "{context} sets {name}, which the worker never reads"
        );
    }
    config
}

/// The account of `deploy/nats/accounts.conf` that holds `user`.
pub fn account_of(user: &str) -> String {
    let text = std::fs::read_to_string(deploy_dir().join("nats/accounts.conf"))
        .expect("read accounts.conf");
    let at = text
        .find(&format!("user: {user}\n"))
        .or_else(|| text.find(&format!("user: {user},")))
        .unwrap_or_else(|| panic!("no user {user} in accounts.conf"));
    // The nearest `    NAME {` line above it: an account block, four spaces into `accounts {`.
    text[..at]
        .lines()
        .rev()
        .find_map(|line| {
            let name = line.strip_prefix("    ")?.strip_suffix(" {")?;
            (!name.starts_with(' ') && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .then(|| name.to_string())
        })
        .unwrap_or_else(|| panic!("no account block above user {user}"))
}
