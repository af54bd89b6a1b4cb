//! OpenShell scheduling: pure logic, testable without NATS or a sandbox.
//!
//! - [`policy`]: what a pool allows (defaults, ceilings, tenants, languages, network).
//! - [`admission`]: checks a request against a policy and a backend's capabilities, giving
//!   the effective limits or a typed [`Rejection`].
//! - [`deadline`]: drops jobs whose deadline passed.
//! - [`slots`]: bounded concurrency, for taking no more work than there are slots.
//! - [`dispatch`]: which waiting job gets the next slot (priority, tenant turns, [`quota`]).
//! - [`running`]: the jobs running now, for cancellation and duplicate detection.
//! - [`waiting`]: how many requests a pool holds before they get a slot (per pool, per tenant).

pub mod admission;
pub mod deadline;
pub mod dispatch;
pub mod policy;
pub mod quota;
pub mod rejection;
pub mod running;
pub mod slots;
pub mod waiting;

pub use admission::{Admitted, NetworkGrant, admit};
pub use dispatch::{DispatchPermit, Dispatcher, NoSlot};
pub use policy::{PoolPolicy, TenantFilter};
pub use quota::TenantQuotas;
pub use rejection::Rejection;
pub use running::{RunningGuard, RunningJobs};
pub use slots::{SlotPermit, Slots};
pub use waiting::{Full, Seat, WaitingLimits, WaitingRoom};
