//! The standard `process_*` metrics, read from `/proc/self` at each scrape.
//!
//! prometheus-client has no process collector, and the one crate that provides it for
//! prometheus-client (kubert-prometheus-process) is built against an older prometheus-client,
//! so this reads what the Prometheus client guidelines name: CPU time and start time from
//! `/proc/self/stat`, memory from `/proc/self/status`, file descriptors from `/proc/self/fd`
//! and `RLIMIT_NOFILE`. Names carry no `openshell_` prefix, so stock dashboards find them.
//! Off Linux, or when `/proc` cannot be read, the series are left out rather than made up.

use std::fmt;

use nix::sys::resource::{Resource, getrlimit};
use nix::unistd::{SysconfVar, sysconf};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Encodes the `process_*` series of this process on each scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of the process's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl Sample {
    /// Reads `/proc/self`; `None` when it cannot (not Linux, `/proc` not mounted).
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten()? as f64;
        let stat = Stat::parse(&stat)?;
        let boot_time: f64 = field(&boot, "btime")?.parse().ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let (max_fds, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
        Some(Self {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_bytes: kib(field(&status, "VmRSS:")?)?,
            virtual_bytes: kib(field(&status, "VmSize:")?)?,
            open_fds,
            max_fds,
            start_time_seconds: boot_time + stat.start_ticks as f64 / ticks,
        })
    }
}

/// The fields of `/proc/self/stat` used here, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

impl Stat {
    /// Parses `/proc/PID/stat`. The command name (field 2) may hold spaces and parentheses,
    /// so fields are counted from its last `)`: field 3 (state) is the first after it.
    fn parse(text: &str) -> Option<Self> {
        let after_name = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // proc(5) numbers fields from 1; field N sits at index N - 3 here.
        let at = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            utime: at(14)?,
            stime: at(15)?,
            start_ticks: at(22)?,
        })
    }
}

/// The value after `key` on the line starting with it (`VmRSS:   1234 kB` gives `1234`).
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()
}

fn kib(value: &str) -> Option<u64> {
    value.parse::<u64>().ok()?.checked_mul(1024)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(sample) = Sample::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(sample.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            MetricType::Counter,
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                sample.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                sample.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                sample.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                sample.max_fds as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                sample.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as a hostile process may choose.
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    8 0 123456 10485760 300 18446744073709551615";
        let stat = Stat::parse(line).expect("parses");
        assert_eq!(
            stat,
            Stat {
                utime: 250,
                stime: 50,
                start_ticks: 123456
            }
        );
    }

    #[test]
    fn this_process_reads_back_plausible_figures() {
        let sample = Sample::read().expect("/proc/self is readable on Linux");
        assert!(sample.resident_bytes > 0 && sample.virtual_bytes >= sample.resident_bytes);
        assert!(sample.open_fds >= 3 && sample.max_fds >= sample.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        assert!(sample.start_time_seconds > 1.0e9 && sample.start_time_seconds <= now + 1.0);
    }
}
