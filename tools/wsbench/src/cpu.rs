//! CPU over a window of a run: each server instance's reactor thread and whole process,
//! the tool's own (its thread plus its client processes) and the whole machine's, read
//! together at the window's two ends.

use crate::procfs::{self, Cpu, ProcError};
use crate::report::CpuWindow;
use std::time::Instant;

/// One end of a window: every counter read at one moment.
pub struct CpuSample {
    reactors: Vec<Cpu>,
    processes: Vec<Cpu>,
    tool_s: f64,
    machine_ticks: u64,
    at: Instant,
}

/// Reads the counters of the servers `pids`, of this tool and of its client processes
/// `helpers`, and of the machine.
pub fn sample(pids: &[u32], helpers: &[u32]) -> Result<CpuSample, ProcError> {
    let mut reactors = Vec::with_capacity(pids.len());
    let mut processes = Vec::with_capacity(pids.len());
    for &pid in pids {
        reactors.push(procfs::cpu(pid, Some(pid))?);
        processes.push(procfs::cpu(pid, None)?);
    }
    Ok(CpuSample {
        reactors,
        processes,
        tool_s: procfs::own_thread_cpu_seconds()
            + helpers
                .iter()
                .map(|&p| procfs::process_cpu_seconds(p))
                .sum::<f64>(),
        machine_ticks: procfs::machine_busy_ticks()?,
        at: Instant::now(),
    })
}

/// The whole window (every instance added up, the tool, the machine) and each
/// instance's part of it.
pub fn window(a: &CpuSample, b: &CpuSample) -> (CpuWindow, Vec<CpuWindow>) {
    let wall_s = b.at.duration_since(a.at).as_secs_f64();
    let each: Vec<CpuWindow> = (0..a.reactors.len().min(b.reactors.len()))
        .map(|i| CpuWindow {
            reactor_s: procfs::cpu_seconds(a.reactors[i], b.reactors[i]),
            reactor_ticks_s: procfs::tick_seconds(a.reactors[i], b.reactors[i]),
            process_s: procfs::tick_seconds(a.processes[i], b.processes[i]),
            tool_s: 0.0,
            wall_s,
            machine_s: 0.0,
        })
        .collect();
    let total = CpuWindow {
        reactor_s: each.iter().map(|w| w.reactor_s).sum(),
        reactor_ticks_s: each.iter().map(|w| w.reactor_ticks_s).sum(),
        process_s: each.iter().map(|w| w.process_s).sum(),
        tool_s: b.tool_s - a.tool_s,
        wall_s,
        machine_s: b.machine_ticks.saturating_sub(a.machine_ticks) as f64
            / procfs::clock_ticks_per_second() as f64,
    };
    (total, each)
}
