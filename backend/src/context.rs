//! What a backend knows of the pool it serves, besides its own settings.

use std::collections::BTreeMap;

use openshell_protocol::Limits;

use crate::language::LanguageSpec;
use crate::metrics::BackendMetrics;

/// The pool a backend is built for: its name, the limits its jobs get when a request sets
/// none (a backend may prepare sandboxes of that shape ahead of jobs), its languages, and
/// where its metrics go.
#[derive(Debug, Clone)]
pub struct PoolContext {
    /// The pool's name, as in subjects and metric labels.
    pub name: String,
    /// The pool's default limits.
    pub defaults: Limits,
    /// Jobs the pool runs at once (its slots): the most sandboxes it could use at a time.
    pub slots: usize,
    /// How the pool runs each language (a backend may pick an image by it).
    pub languages: BTreeMap<String, LanguageSpec>,
    /// The pool's metrics.
    pub metrics: BackendMetrics,
}

impl PoolContext {
    /// A pool named `name` with no defaults, one slot, the built-in languages and no metrics (tests,
    /// one-off commands).
    pub fn bare(name: &str) -> Self {
        Self {
            name: name.to_string(),
            defaults: Limits::default(),
            slots: 1,
            languages: crate::language::builtin(),
            metrics: BackendMetrics::none(name),
        }
    }
}
