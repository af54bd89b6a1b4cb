//! The conformance suite against the local backend (`SANDBOX_BACKEND=none`).

mod conformance;

use std::sync::Arc;

use openshell_worker::backend::Backend;
use openshell_worker::backend::local::{LocalBackend, LocalSettings};

conformance::conformance_suite!(async {
    let backend = LocalBackend::new(LocalSettings::default()).expect("local backend");
    Arc::new(backend) as Arc<dyn Backend>
});
