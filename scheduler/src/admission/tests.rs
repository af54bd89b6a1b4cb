use std::collections::BTreeSet;

use chrono::{Duration, Utc};
use openshell_protocol::{
    ByteSize, DurationMs, Enforcement, EnforcementReport, ErrorKind, ExecRequest, LimitName, Limits,
};
use proptest::prelude::*;

use super::admit;
use crate::policy::{PoolPolicy, TenantFilter};

fn policy() -> PoolPolicy {
    PoolPolicy {
        pool: "none".into(),
        backend: "none".into(),
        defaults: Limits {
            timeout: Some(DurationMs::secs(30)),
            memory: Some(ByteSize::mib(512)),
            ..Limits::default()
        },
        ceilings: Limits {
            timeout: Some(DurationMs::secs(300)),
            memory: Some(ByteSize::gib(1)),
            ..Limits::default()
        },
        tenants: TenantFilter::Any,
        languages: BTreeSet::from(["python".to_string()]),
        allow_commands: true,
        allow_network: false,
        egress: Vec::new(),
        allow_unenforced_limits: false,
    }
}

fn capabilities() -> EnforcementReport {
    [LimitName::Timeout, LimitName::Memory, LimitName::Output]
        .into_iter()
        .map(|name| (name, Enforcement::enforced("test")))
        .collect()
}

fn python(limits: Limits) -> ExecRequest {
    ExecRequest {
        limits,
        ..ExecRequest::code("job-1", "python", "print(1)")
    }
}

#[test]
fn fills_defaults_and_plans_enforcement() {
    let admitted = admit(
        &python(Limits::default()),
        "acme",
        &policy(),
        &capabilities(),
        Utc::now(),
    )
    .unwrap();
    assert_eq!(admitted.limits.timeout, Some(DurationMs::secs(30)));
    assert_eq!(admitted.limits.memory, Some(ByteSize::mib(512)));
    // Timeout, memory, and how the network was (not) cut.
    assert_eq!(admitted.enforcement.len(), 3);
}

#[test]
fn jobs_without_network_report_how_it_was_cut() {
    let request = python(Limits::default());
    let admitted = admit(&request, "acme", &policy(), &capabilities(), Utc::now()).unwrap();
    let network = &admitted.enforcement[&LimitName::Network];
    assert_eq!(
        network.status,
        openshell_protocol::EnforcementStatus::NotEnforced
    );
    assert!(network.mechanism.contains("none backend"), "{network:?}");
    let mut isolating = capabilities();
    isolating.insert(LimitName::Network, Enforcement::enforced("netns"));
    let admitted = admit(&request, "acme", &policy(), &isolating, Utc::now()).unwrap();
    assert_eq!(admitted.enforcement[&LimitName::Network].mechanism, "netns");
    let open = PoolPolicy {
        allow_network: true,
        ..policy()
    };
    let networked = ExecRequest {
        network: true.into(),
        ..request
    };
    let admitted = admit(&networked, "acme", &open, &isolating, Utc::now()).unwrap();
    assert!(!admitted.enforcement.contains_key(&LimitName::Network));
}

#[test]
fn outputs_need_a_backend_that_returns_files() {
    let request = ExecRequest {
        outputs: vec![openshell_protocol::OutputPattern::parse("out/*.png").unwrap()],
        ..python(Limits::default())
    };
    let refused = admit(&request, "acme", &policy(), &capabilities(), Utc::now()).unwrap_err();
    assert_eq!(refused.kind, ErrorKind::LimitNotEnforceable);
    assert!(
        refused.message.contains("cannot return files"),
        "{refused:?}"
    );
    let mut returning = capabilities();
    returning.insert(LimitName::Files, Enforcement::enforced("tar"));
    let admitted = admit(&request, "acme", &policy(), &returning, Utc::now()).unwrap();
    assert_eq!(admitted.enforcement[&LimitName::Files].mechanism, "tar");
    let without = python(Limits::default());
    let admitted = admit(&without, "acme", &policy(), &returning, Utc::now()).unwrap();
    assert!(!admitted.enforcement.contains_key(&LimitName::Files));
}

#[test]
fn over_ceiling_names_the_ceiling() {
    let request = python(Limits {
        memory: Some(ByteSize::gib(2)),
        ..Limits::default()
    });
    let error = admit(&request, "acme", &policy(), &capabilities(), Utc::now()).unwrap_err();
    assert_eq!(error.kind, ErrorKind::LimitExceedsPolicy);
    assert!(
        error.message.contains("limits.memory = 2g"),
        "{}",
        error.message
    );
    assert!(error.message.contains("ceiling of 1g"), "{}", error.message);
}

#[test]
fn unenforceable_limits_fail_closed_unless_allowed() {
    let request = python(Limits {
        cpus: Some(0.5),
        ..Limits::default()
    });
    let error = admit(&request, "acme", &policy(), &capabilities(), Utc::now()).unwrap_err();
    assert_eq!(error.kind, ErrorKind::LimitNotEnforceable);
    assert!(error.message.contains("limits.cpus"));
    let lenient = PoolPolicy {
        allow_unenforced_limits: true,
        ..policy()
    };
    let admitted = admit(&request, "acme", &lenient, &capabilities(), Utc::now()).unwrap();
    assert_eq!(
        admitted.enforcement[&LimitName::Cpus].status,
        openshell_protocol::EnforcementStatus::NotEnforced
    );
}

#[test]
fn tenants_languages_network_and_deadlines() {
    let only_acme = PoolPolicy {
        tenants: TenantFilter::from(vec!["acme".to_string()]),
        ..policy()
    };
    let request = python(Limits::default());
    let reject = |request: &ExecRequest, policy: &PoolPolicy| {
        admit(request, "evil", policy, &capabilities(), Utc::now())
            .unwrap_err()
            .kind
    };
    assert_eq!(reject(&request, &only_acme), ErrorKind::TenantNotAllowed);
    let ruby = ExecRequest::code("job-2", "ruby", "puts 1");
    assert_eq!(reject(&ruby, &policy()), ErrorKind::LanguageNotAllowed);
    let no_commands = PoolPolicy {
        allow_commands: false,
        ..policy()
    };
    let command = ExecRequest::command("job-3", vec!["true".into()]);
    assert_eq!(
        reject(&command, &no_commands),
        ErrorKind::LanguageNotAllowed
    );
    let networked = ExecRequest {
        network: true.into(),
        ..python(Limits::default())
    };
    assert_eq!(reject(&networked, &policy()), ErrorKind::NetworkNotAllowed);
    let late = ExecRequest {
        deadline: Some(Utc::now() - Duration::seconds(5)),
        ..python(Limits::default())
    };
    assert_eq!(reject(&late, &policy()), ErrorKind::DeadlineExpired);
}

fn limits_strategy() -> impl Strategy<Value = Limits> {
    (
        proptest::option::of(1u64..600_000),
        proptest::option::of(1u64..(4u64 << 30)),
        proptest::option::of(1u64..10_000_000),
    )
        .prop_map(|(timeout, memory, output)| Limits {
            timeout: timeout.map(DurationMs),
            memory: memory.map(ByteSize),
            output: output.map(ByteSize),
            ..Limits::default()
        })
}

proptest! {
    /// Whatever is asked, an admitted job's limits are within the ceilings and every limit in
    /// force has an enforcement entry; a refused one names the broken rule.
    #[test]
    fn admitted_jobs_respect_the_policy(limits in limits_strategy()) {
        let policy = policy();
        match admit(&python(limits), "acme", &policy, &capabilities(), Utc::now()) {
            Ok(admitted) => {
                for (name, value) in admitted.limits.iter() {
                    if let Some(ceiling) = policy.ceilings.get(name) {
                        prop_assert!(value <= ceiling);
                    }
                    prop_assert!(admitted.enforcement.contains_key(&name));
                }
                prop_assert!(admitted.limits.timeout.is_some());
            }
            Err(rejection) => {
                prop_assert_eq!(rejection.kind, ErrorKind::LimitExceedsPolicy);
                prop_assert!(rejection.message.contains("ceiling"));
            }
        }
    }
}

fn egress_pool() -> PoolPolicy {
    PoolPolicy {
        egress: vec![
            "pypi.org:443".parse().unwrap(),
            "*.internal.example:443".parse().unwrap(),
        ],
        ..policy()
    }
}

fn asking(network: openshell_protocol::NetworkAccess) -> ExecRequest {
    ExecRequest {
        network,
        ..python(Limits::default())
    }
}

#[test]
fn egress_rules_grant_the_pool_list_or_a_subset_and_never_more() {
    use crate::NetworkGrant;
    use openshell_protocol::NetworkAccess;
    let mut proxied = capabilities();
    proxied.insert(LimitName::Egress, Enforcement::enforced("egress proxy"));
    let pool = egress_pool();
    let all = admit(&asking(true.into()), "acme", &pool, &proxied, Utc::now()).unwrap();
    assert_eq!(all.network, NetworkGrant::Egress(pool.egress.clone()));
    let entry = &all.enforcement[&LimitName::Network];
    assert!(
        entry.mechanism.contains("egress proxy") && entry.mechanism.contains("pypi.org:443"),
        "{entry:?}"
    );
    let subset = NetworkAccess::Only(vec!["a.internal.example:443".parse().unwrap()]);
    let some = admit(&asking(subset.clone()), "acme", &pool, &proxied, Utc::now()).unwrap();
    assert_eq!(
        some.network,
        NetworkGrant::Egress(vec!["a.internal.example:443".parse().unwrap()])
    );
    let more = NetworkAccess::Only(vec!["pypi.org:80".parse().unwrap()]);
    let refused = admit(&asking(more), "acme", &pool, &proxied, Utc::now()).unwrap_err();
    assert_eq!(refused.kind, ErrorKind::NetworkNotAllowed);
    assert!(refused.message.contains("pypi.org:80"), "{refused:?}");
    let none = admit(&asking(false.into()), "acme", &pool, &proxied, Utc::now()).unwrap();
    assert_eq!(none.network, NetworkGrant::None);
    // A backend without an egress proxy fails closed.
    let refused = admit(&asking(subset), "acme", &pool, &capabilities(), Utc::now()).unwrap_err();
    assert_eq!(refused.kind, ErrorKind::LimitNotEnforceable);
}

#[test]
fn a_whole_network_pool_cannot_hold_a_list_and_a_closed_pool_refuses_both() {
    use openshell_protocol::NetworkAccess;
    let list = NetworkAccess::Only(vec!["pypi.org:443".parse().unwrap()]);
    let open = PoolPolicy {
        allow_network: true,
        ..policy()
    };
    let refused = admit(
        &asking(list.clone()),
        "acme",
        &open,
        &capabilities(),
        Utc::now(),
    );
    assert_eq!(refused.unwrap_err().kind, ErrorKind::LimitNotEnforceable);
    let refused = admit(
        &asking(list),
        "acme",
        &policy(),
        &capabilities(),
        Utc::now(),
    );
    assert_eq!(refused.unwrap_err().kind, ErrorKind::NetworkNotAllowed);
}
