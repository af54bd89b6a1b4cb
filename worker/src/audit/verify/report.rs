//! What a verification found: [`Report`], its [`Problem`]s and where they are ([`Spot`]).

use std::collections::BTreeMap;

use openshell_protocol::Verdict;

/// Where a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spot {
    /// The worker.
    pub worker_id: String,
    /// The chain.
    pub chain: String,
    /// The sequence number in the chain.
    pub seq: u64,
    /// The job, when the record is an event.
    pub job_id: Option<String>,
    /// Position of the record in the source (stream sequence, or line number).
    pub position: u64,
}

impl std::fmt::Display for Spot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "worker {}, chain {}, seq {}",
            self.worker_id, self.chain, self.seq
        )?;
        if let Some(job) = &self.job_id {
            write!(f, ", job {job}")?;
        }
        write!(f, " (record {})", self.position)
    }
}

/// One broken link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where.
    pub spot: Spot,
    /// What is wrong.
    pub what: String,
}

/// A chain's prefix that is not there, and why that is not tampering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The worker.
    pub worker_id: String,
    /// The chain.
    pub chain: String,
    /// The first `seq` present.
    pub first_seq: u64,
}

/// A job's end as audited, to compare with its stored result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// Where the `finished` event is.
    pub spot: Spot,
    /// Tenant.
    pub tenant: String,
    /// Verdict.
    pub verdict: Option<Verdict>,
    /// Exit code.
    pub exit_code: Option<i32>,
}

/// What a verification found.
#[derive(Debug, Default)]
pub struct Report {
    /// Events read.
    pub events: u64,
    /// Checkpoints read.
    pub checkpoints: u64,
    /// Chains, by id, with their worker.
    pub chains: BTreeMap<String, String>,
    /// Jobs with a `received` event.
    pub jobs: u64,
    /// Broken links, in the order found.
    pub problems: Vec<Problem>,
    /// Chain prefixes removed by retention.
    pub cut: Vec<Cut>,
    /// Events the workers declared unstored (an audit stream outage), by chain and seq.
    pub unstored: u64,
    /// Chains still open (no final checkpoint, last checkpoint recent): workers running.
    pub open: Vec<String>,
    /// `finished` events not yet taken ([`Verifier::take_endings`]), when asked for.
    pub endings: Vec<Ending>,
}

impl Report {
    /// True when nothing is broken.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}
