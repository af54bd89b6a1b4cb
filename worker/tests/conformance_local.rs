//! The conformance suite against the local backend (`SANDBOX_BACKEND=none`).

use std::sync::Arc;

use openshell_backend::Backend;
use openshell_backend_local::{LocalBackend, LocalSettings};

openshell_backend::conformance_suite!(async {
    let backend = LocalBackend::new(LocalSettings::default()).expect("local backend");
    Arc::new(backend) as Arc<dyn Backend>
});
