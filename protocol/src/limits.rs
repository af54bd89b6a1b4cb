//! Resource limits a request asks for and a pool grants.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, DurationMs};

/// Resource limits; every field is optional, and the pool's defaults fill what a request omits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock time before the job is killed (verdict `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationMs>,
    /// CPU time the job's processes may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time: Option<DurationMs>,
    /// Memory (address space or cgroup memory, depending on the backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// CPU share in cores, e.g. 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Maximum number of processes (and threads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
    /// Maximum number of open file descriptors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// Bytes of stdout plus stderr kept; past it the job is stopped (verdict `output_limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<ByteSize>,
    /// Disk space for the working directory and `/tmp` (per-file size on rlimit backends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<ByteSize>,
}

/// The name of one limit, as used in enforcement reports and error messages.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LimitName {
    /// [`Limits::timeout`].
    Timeout,
    /// [`Limits::cpu_time`].
    CpuTime,
    /// [`Limits::memory`].
    Memory,
    /// [`Limits::cpus`].
    Cpus,
    /// [`Limits::processes`].
    Processes,
    /// [`Limits::open_files`].
    OpenFiles,
    /// [`Limits::output`].
    Output,
    /// [`Limits::disk`].
    Disk,
    /// Not a field of [`Limits`]: how a job without network access (`network: false`) was cut
    /// off from the network. Reports carry it; [`LimitName::ALL`] does not.
    Network,
    /// Not a field of [`Limits`]: how the files a request's `outputs` named were read out of
    /// the sandbox. A backend lists it in its capabilities when it can return files; reports
    /// carry it for requests with `outputs`.
    Files,
    /// Not a field of [`Limits`]: the capability to hold a job with network access to the egress
    /// rules of its pool (only an egress proxy as its one way out). Capabilities carry it;
    /// reports put it under [`LimitName::Network`].
    Egress,
}

impl LimitName {
    /// Every limit of [`Limits`], in wire order.
    pub const ALL: [LimitName; 8] = [
        LimitName::Timeout,
        LimitName::CpuTime,
        LimitName::Memory,
        LimitName::Cpus,
        LimitName::Processes,
        LimitName::OpenFiles,
        LimitName::Output,
        LimitName::Disk,
    ];

    /// The field name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            LimitName::Timeout => "timeout",
            LimitName::CpuTime => "cpu_time",
            LimitName::Memory => "memory",
            LimitName::Cpus => "cpus",
            LimitName::Processes => "processes",
            LimitName::OpenFiles => "open_files",
            LimitName::Output => "output",
            LimitName::Disk => "disk",
            LimitName::Network => "network",
            LimitName::Files => "files",
            LimitName::Egress => "egress",
        }
    }
}

impl fmt::Display for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One limit's value, in a form that can be compared and printed.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub enum LimitValue {
    /// A duration.
    Duration(DurationMs),
    /// A size.
    Size(ByteSize),
    /// A count.
    Count(u64),
    /// A fraction of cores.
    Cores(f64),
}

impl fmt::Display for LimitValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitValue::Duration(value) => value.fmt(f),
            LimitValue::Size(value) => value.fmt(f),
            LimitValue::Count(value) => value.fmt(f),
            LimitValue::Cores(value) => write!(f, "{value} cpus"),
        }
    }
}

impl Limits {
    /// The value of one limit, if set.
    pub fn get(&self, name: LimitName) -> Option<LimitValue> {
        match name {
            LimitName::Timeout => self.timeout.map(LimitValue::Duration),
            LimitName::CpuTime => self.cpu_time.map(LimitValue::Duration),
            LimitName::Memory => self.memory.map(LimitValue::Size),
            LimitName::Cpus => self.cpus.map(LimitValue::Cores),
            LimitName::Processes => self.processes.map(LimitValue::Count),
            LimitName::OpenFiles => self.open_files.map(LimitValue::Count),
            LimitName::Output => self.output.map(LimitValue::Size),
            LimitName::Disk => self.disk.map(LimitValue::Size),
            LimitName::Network | LimitName::Files | LimitName::Egress => None,
        }
    }

    /// The limits that are set, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (LimitName, LimitValue)> + '_ {
        LimitName::ALL
            .into_iter()
            .filter_map(|name| self.get(name).map(|value| (name, value)))
    }

    /// `self`, with every unset field taken from `fallback`.
    pub fn or(&self, fallback: &Limits) -> Limits {
        Limits {
            timeout: self.timeout.or(fallback.timeout),
            cpu_time: self.cpu_time.or(fallback.cpu_time),
            memory: self.memory.or(fallback.memory),
            cpus: self.cpus.or(fallback.cpus),
            processes: self.processes.or(fallback.processes),
            open_files: self.open_files.or(fallback.open_files),
            output: self.output.or(fallback.output),
            disk: self.disk.or(fallback.disk),
        }
    }
}
