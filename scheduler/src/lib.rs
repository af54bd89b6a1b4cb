//! OpenShell scheduling: pure logic, testable without NATS or a sandbox.
//!
//! - [`policy`]: what a pool allows (defaults, ceilings, tenants, languages, network).
//! - [`admission`]: checks a request against a policy and a backend's capabilities, giving
//!   the effective limits or a typed [`Rejection`].
//! - [`deadline`]: drops jobs whose deadline passed.
//! - [`slots`]: bounded concurrency per pool.
//! - [`running`]: the jobs running now, for cancellation and duplicate detection.

pub mod admission;
pub mod deadline;
pub mod policy;
pub mod rejection;
pub mod running;
pub mod slots;

pub use admission::{Admitted, admit};
pub use policy::{PoolPolicy, TenantFilter};
pub use rejection::Rejection;
pub use running::{RunningGuard, RunningJobs};
pub use slots::{SlotPermit, Slots};
