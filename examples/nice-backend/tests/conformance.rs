//! The whole conformance suite against the example backend: one line.

use std::sync::Arc;

use openshell_backend::Backend;
use openshell_backend_local::{LocalBackend, LocalSettings};
use openshell_example_nice_backend::NiceBackend;

openshell_backend::conformance_suite!(async {
    let local = LocalBackend::new(LocalSettings::default()).expect("local backend");
    Arc::new(NiceBackend::new(local)) as Arc<dyn Backend>
});

/// What the example adds: every job runs at niceness 19 (`nice` with no arguments prints it).
#[tokio::test(flavor = "multi_thread")]
async fn jobs_run_at_the_lowest_priority() {
    let local = LocalBackend::new(LocalSettings::default()).expect("local backend");
    let backend = NiceBackend::new(local);
    let run =
        openshell_backend::testing::run(&backend, openshell_backend::testing::argv_job(&["nice"]))
            .await;
    openshell_backend::testing::assert_exited(&run, 0);
    assert_eq!(run.stdout().trim(), "19");
}
