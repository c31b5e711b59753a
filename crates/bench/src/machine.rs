//! Reading `/proc`: CPU ticks of a process and of this process's threads, peak RSS, the machine's
//! `cpu` line (steal time) and what the machine is. Parsers are pure functions over the file text,
//! so they are unit-tested without a `/proc`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// Clock ticks per second of the `/proc` CPU counters (`getconf CLK_TCK`), 100 when it cannot be read.
pub(crate) fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line.
/// The command name is skipped by its last `)`, since it may contain spaces and parentheses.
pub(crate) fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so utime (14) is index 11 and stime (15) index 12.
    let utime = fields.get(11)?.parse::<u64>().ok()?;
    let stime = fields.get(12)?.parse::<u64>().ok()?;
    Some(utime + stime)
}

/// The command name of a `stat` line: the text between the first `(` and the last `)`.
pub(crate) fn parse_stat_comm(stat: &str) -> Option<&str> {
    let start = stat.find('(')?;
    let end = stat.rfind(')')?;
    (end > start).then(|| &stat[start + 1..end])
}

/// CPU ticks (user + system) a process has used, all its threads and finished threads included.
pub(crate) fn process_ticks(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(parse_stat_ticks)
}

/// CPU ticks of this process itself.
pub(crate) fn own_ticks() -> Option<u64> {
    std::fs::read_to_string("/proc/self/stat").ok().as_deref().and_then(parse_stat_ticks)
}

/// CPU ticks of every live process whose command name is `comm` (e.g. the PostgreSQL server's
/// `postgres` processes), and how many there are.
pub(crate) fn ticks_of_processes_named(comm: &str) -> (u64, usize) {
    let Ok(procs) = std::fs::read_dir("/proc") else { return (0, 0) };
    let (mut ticks, mut count) = (0, 0);
    // Bounded by the pid space; `take` keeps it bounded regardless.
    for entry in procs.flatten().take(1 << 20) {
        let is_pid = entry.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if parse_stat_comm(&stat) == Some(comm) {
            ticks += parse_stat_ticks(&stat).unwrap_or(0);
            count += 1;
        }
    }
    (ticks, count)
}

/// CPU ticks of this process's live threads, summed by thread name.
pub(crate) fn own_thread_ticks() -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return by_name };
    // A process has a bounded number of threads; `take` keeps the loop bounded regardless.
    for entry in tasks.flatten().take(4096) {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if let (Some(comm), Some(ticks)) = (parse_stat_comm(&stat), parse_stat_ticks(&stat)) {
            *by_name.entry(comm.to_owned()).or_insert(0) += ticks;
        }
    }
    by_name
}

/// A `kB` value of `/proc/<pid>/status` (e.g. `VmHWM`), in KiB.
pub(crate) fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name.trim() != key {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

/// `VmHWM` (peak resident set) and `VmRSS` of a process, in KiB.
pub(crate) fn memory_kib(pid: u32) -> (Option<u64>, Option<u64>) {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => (parse_status_kib(&status, "VmHWM"), parse_status_kib(&status, "VmRSS")),
        Err(_) => (None, None),
    }
}

/// The machine-wide `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    /// Every field up to and including steal (guest time is already inside user).
    pub(crate) total: u64,
    /// `idle + iowait`.
    pub(crate) idle: u64,
    /// Time the hypervisor ran someone else while this machine wanted the CPU.
    pub(crate) steal: u64,
}

impl CpuTimes {
    /// Parses the first `cpu ` line of `/proc/stat`.
    pub(crate) fn parse(proc_stat: &str) -> Option<Self> {
        let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
        let values: Vec<u64> = line.split_whitespace().skip(1).map_while(|v| v.parse().ok()).collect();
        if values.len() < 8 {
            return None;
        }
        // user nice system idle iowait irq softirq steal [guest guest_nice]
        Some(Self { total: values[..8].iter().sum(), idle: values[3] + values[4], steal: values[7] })
    }

    /// The current `cpu` line.
    pub(crate) fn now() -> Option<Self> {
        std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(Self::parse)
    }

    /// Steal and busy (non-idle, steal included) time between `self` and a later reading.
    pub(crate) fn delta(self, later: Self) -> CpuDelta {
        CpuDelta {
            total: later.total.saturating_sub(self.total),
            idle: later.idle.saturating_sub(self.idle),
            steal: later.steal.saturating_sub(self.steal),
        }
    }
}

/// The difference of two [`CpuTimes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuDelta {
    pub(crate) total: u64,
    pub(crate) idle: u64,
    pub(crate) steal: u64,
}

impl CpuDelta {
    /// Steal as a percentage of all CPU time in the interval.
    pub(crate) fn steal_pct(&self) -> f64 {
        percent(self.steal, self.total)
    }

    /// Busy (not idle, not steal) as a percentage of all CPU time in the interval.
    pub(crate) fn busy_pct(&self) -> f64 {
        percent(self.busy_ticks(), self.total)
    }

    /// Ticks spent running something on this machine (every core summed).
    pub(crate) fn busy_ticks(&self) -> u64 {
        self.total.saturating_sub(self.idle).saturating_sub(self.steal)
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// What the benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MachineInfo {
    /// Processors listed in `/proc/cpuinfo`.
    pub(crate) nproc: usize,
    /// Processors this process may use (affinity and cgroup quota applied).
    pub(crate) available_parallelism: usize,
    /// `model name` of the first processor.
    pub(crate) model_name: String,
    /// `/proc/sys/kernel/osrelease`.
    pub(crate) kernel: String,
    /// `MemTotal`, MiB.
    pub(crate) mem_total_mib: u64,
    /// `/proc/loadavg` when the run started (other work on the machine shows here).
    pub(crate) loadavg_at_start: String,
    /// Clock ticks per second of the `/proc` CPU counters.
    pub(crate) clk_tck: u64,
}

impl MachineInfo {
    /// Reads `/proc`; missing files give empty values, never an error.
    pub(crate) fn read(clk_tck: u64) -> Self {
        let cpuinfo = read("/proc/cpuinfo");
        Self {
            nproc: cpuinfo.lines().filter(|l| l.starts_with("processor")).count(),
            available_parallelism: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            model_name: parse_model_name(&cpuinfo).unwrap_or_default(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            mem_total_mib: parse_status_kib(&read("/proc/meminfo"), "MemTotal").unwrap_or(0) / 1024,
            loadavg_at_start: read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
            clk_tck,
        }
    }
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The first `model name` of `/proc/cpuinfo`.
pub(crate) fn parse_model_name(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_are_utime_plus_stime_even_when_the_name_has_spaces_and_parentheses() {
        // Arrange
        let stat = "4242 (tokio (runtime) 1) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 567 0 0 20 0 3 0 100 0 0";

        // Act
        let ticks = parse_stat_ticks(stat);
        let comm = parse_stat_comm(stat);

        // Assert
        assert_eq!(ticks, Some(1801));
        assert_eq!(comm, Some("tokio (runtime) 1"));
    }

    #[test]
    fn a_truncated_stat_line_gives_no_ticks() {
        assert_eq!(parse_stat_ticks("12 (x) S 1 2 3"), None);
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn peak_rss_is_read_from_the_status_file() {
        // Arrange
        let status = "Name:\thandoff\nVmPeak:\t  500000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   18000 kB\n";

        // Act
        let hwm = parse_status_kib(status, "VmHWM");
        let rss = parse_status_kib(status, "VmRSS");

        // Assert
        assert_eq!((hwm, rss), (Some(20480), Some(18000)));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn steal_is_a_share_of_all_ticks_between_two_readings() {
        // Arrange
        let before = CpuTimes::parse("cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 1 2 3 4 5 6 7 8\n").unwrap();
        let after = CpuTimes::parse("cpu  200 0 100 850 10 0 0 90 0 0\n").unwrap();

        // Act
        let delta = before.delta(after);

        // Assert: 250 ticks passed, 50 of them stolen, 50 idle, 150 busy.
        assert_eq!(delta, CpuDelta { total: 250, idle: 50, steal: 50 });
        assert!((delta.steal_pct() - 20.0).abs() < 1e-9);
        assert!((delta.busy_pct() - 60.0).abs() < 1e-9);
    }

    #[test]
    fn an_old_kernel_cpu_line_without_steal_is_rejected() {
        assert_eq!(CpuTimes::parse("cpu  1 2 3 4\n"), None);
    }

    #[test]
    fn the_model_name_is_the_first_processors() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(parse_model_name(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
    }
}
