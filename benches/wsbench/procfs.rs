//! Reading the server's memory and CPU from `/proc`, so the figures come from the kernel
//! and not from the server's own opinion of itself.

use std::fmt;
use std::fs;

/// A `/proc` file that could not be read or understood.
#[derive(Debug)]
pub struct ProcError {
    path: String,
    why: String,
}

impl fmt::Display for ProcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read {}: {} (is the server still running?)",
            self.path, self.why
        )
    }
}

fn read(path: &str) -> Result<String, ProcError> {
    fs::read_to_string(path).map_err(|e| ProcError {
        path: path.to_string(),
        why: e.to_string(),
    })
}

/// Resident and peak resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`.
    pub rss_kib: u64,
    /// `VmHWM` (peak RSS).
    pub hwm_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` of `pid`.
pub fn memory(pid: u32) -> Result<Memory, ProcError> {
    let path = format!("/proc/{pid}/status");
    let text = read(&path)?;
    parse_status(&text).ok_or(ProcError {
        path,
        why: "no VmRSS/VmHWM line".into(),
    })
}

fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// CPU time consumed so far, in clock ticks (utime + stime) and, where the kernel offers
/// it, in nanoseconds from `schedstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cpu {
    /// utime + stime in clock ticks (`CLK_TCK` per second).
    pub ticks: u64,
    /// Scheduler run time in ns (`schedstat`), if available.
    pub sched_ns: Option<u64>,
}

/// CPU of one thread (`tid == pid` is the main thread) or of the whole process (`tid: None`).
pub fn cpu(pid: u32, tid: Option<u32>) -> Result<Cpu, ProcError> {
    let base = match tid {
        Some(t) => format!("/proc/{pid}/task/{t}"),
        None => format!("/proc/{pid}"),
    };
    let path = format!("{base}/stat");
    let text = read(&path)?;
    let ticks = parse_stat_ticks(&text).ok_or(ProcError {
        path,
        why: "unexpected stat format".into(),
    })?;
    // Process-wide schedstat covers only the main thread, so it is used for threads only.
    let sched_ns = match tid {
        Some(_) => read(&format!("{base}/schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok())),
        None => None,
    };
    Ok(Cpu { ticks, sched_ns })
}

fn parse_stat_ticks(text: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at index 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy CPU time of the whole machine so far, in clock ticks (all CPUs: user, nice,
/// system, irq, softirq and steal from the first line of `/proc/stat`).
pub fn machine_busy_ticks() -> Result<u64, ProcError> {
    let path = "/proc/stat";
    let text = read(path)?;
    parse_machine_busy(&text).ok_or(ProcError {
        path: path.into(),
        why: "no cpu line".into(),
    })
}

fn parse_machine_busy(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    Some(v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).unwrap_or(&0))
}

/// Clock ticks per second for the `stat` figures.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as u64 } else { 100 }
}

/// CPU seconds between two samples, preferring the nanosecond figure when both have it.
pub fn cpu_seconds(before: Cpu, after: Cpu) -> f64 {
    match (before.sched_ns, after.sched_ns) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e9,
        _ => after.ticks.saturating_sub(before.ticks) as f64 / clock_ticks_per_second() as f64,
    }
}

/// CPU seconds from clock ticks only (what `utime + stime` says).
pub fn tick_seconds(before: Cpu, after: Cpu) -> f64 {
    after.ticks.saturating_sub(before.ticks) as f64 / clock_ticks_per_second() as f64
}

/// CPU time of the calling thread in seconds (the tool's own cost).
pub fn own_thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // the bench target builds it without the tests: main.rs
mod tests {
    use super::*;

    #[test]
    fn parses_status_memory_lines() {
        let text =
            "Name:\tws_assets\nVmPeak:\t  9000 kB\nVmHWM:\t    4100 kB\nVmRSS:\t    3900 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Memory {
                rss_kib: 3900,
                hwm_kib: 4100
            })
        );
        assert_eq!(parse_status("Name: x\n"), None);
    }

    #[test]
    fn parses_stat_with_a_hostile_command_name() {
        let text = "1234 (ws (a) b) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0 5 0 0";
        assert_eq!(parse_stat_ticks(text), Some(287));
        assert_eq!(parse_stat_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn parses_machine_busy_from_proc_stat() {
        let text = "cpu  100 5 50 9000 7 3 2 1 0 0\ncpu0 50 2 25 4500 3 1 1 0 0 0\n";
        assert_eq!(parse_machine_busy(text), Some(100 + 5 + 50 + 3 + 2 + 1));
        assert_eq!(parse_machine_busy("intr 1 2 3\n"), None);
        assert!(machine_busy_ticks().is_ok());
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let m = memory(pid).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
        let main_thread = cpu(pid, Some(pid)).unwrap();
        let whole = cpu(pid, None).unwrap();
        assert!(whole.ticks >= main_thread.ticks);
        assert!(memory(u32::MAX).is_err());
    }
}
