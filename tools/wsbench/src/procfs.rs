//! Reading the server's memory and CPU from `/proc`, so the figures come from the kernel
//! and not from the server's own opinion of itself.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};

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
    /// `RssAnon`: the process's private memory, without the executable's pages, which
    /// fill in as code first runs and belong to the page cache.
    pub anon_kib: u64,
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
        anon_kib: field("RssAnon:").unwrap_or(0),
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

/// Open file descriptors of `pid` (its sockets, listener, pipes, files).
pub fn open_fds(pid: u32) -> Result<usize, ProcError> {
    let path = format!("/proc/{pid}/fd");
    fs::read_dir(&path)
        .map(|d| d.count())
        .map_err(|e| ProcError {
            path,
            why: e.to_string(),
        })
}

/// The inodes of the sockets `pid` holds open (from its `fd` links, `socket:[N]`).
pub fn socket_inodes(pid: u32) -> Result<HashSet<u64>, ProcError> {
    let path = format!("/proc/{pid}/fd");
    let dir = fs::read_dir(&path).map_err(|e| ProcError {
        path,
        why: e.to_string(),
    })?;
    Ok(dir
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect())
}

/// Whose connection is whose: for every established IPv4 TCP socket in `/proc/net/tcp`
/// whose inode is in `owners`, its remote address and the owner.
pub fn peers_of(owners: &HashMap<u64, usize>) -> Result<HashMap<SocketAddrV4, usize>, ProcError> {
    let path = "/proc/net/tcp";
    let text = read(path)?;
    Ok(parse_net_tcp(&text)
        .filter_map(|(_, remote, inode)| Some((remote, *owners.get(&inode)?)))
        .collect())
}

/// `(local, remote, inode)` of each established socket in a `/proc/net/tcp` text.
fn parse_net_tcp(text: &str) -> impl Iterator<Item = (SocketAddrV4, SocketAddrV4, u64)> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
        if f.get(3) != Some(&"01") {
            return None;
        }
        Some((
            hex_addr(f.get(1)?)?,
            hex_addr(f.get(2)?)?,
            f.get(9)?.parse().ok()?,
        ))
    })
}

/// `0100007F:1F90` (the address as the kernel holds it in memory, in hex) to 127.0.0.1:8080.
fn hex_addr(text: &str) -> Option<SocketAddrV4> {
    let (ip, port) = text.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

/// The machine's 1-minute load average (`/proc/loadavg`).
pub fn load_average() -> Option<f64> {
    read("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of `Instant`, shared by every process,
/// so client processes can put their times on one base.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU of a whole process in seconds (utime + stime), 0 when it cannot be read.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    cpu(pid, None).map_or(0.0, |c| c.ticks as f64 / clock_ticks_per_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_memory_lines() {
        let text = "Name:\tws_assets\nVmPeak:\t  9000 kB\nVmHWM:\t    4100 kB\nVmRSS:\t    3900 kB\n\
             RssAnon:\t    1200 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Memory {
                rss_kib: 3900,
                hwm_kib: 4100,
                anon_kib: 1200,
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
    fn parses_net_tcp_lines() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n\
   1: 0100007F:1F90 0200007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1\n";
        let v: Vec<_> = parse_net_tcp(text).collect();
        assert_eq!(
            v,
            [(
                "127.0.0.1:8080".parse().unwrap(),
                "127.0.0.2:54321".parse().unwrap(),
                222
            )]
        );
        assert_eq!(hex_addr("nonsense"), None);
    }

    #[test]
    fn finds_the_peers_of_this_process_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        let owners: HashMap<u64, usize> = socket_inodes(std::process::id())
            .unwrap()
            .into_iter()
            .map(|i| (i, 7))
            .collect();
        let peers = peers_of(&owners).unwrap();
        let std::net::SocketAddr::V4(mine) = client.local_addr().unwrap() else {
            panic!("IPv4 expected")
        };
        assert_eq!(peers.get(&mine), Some(&7));
        assert!(open_fds(std::process::id()).unwrap() >= 3);
        assert!(load_average().is_some());
        let a = monotonic_ns();
        assert!(monotonic_ns() >= a && a > 0);
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
