//! Why a run (the benchmark or the soak) could not be completed: each part's own error,
//! gathered into one that `main` prints and turns into the exit status.

use crate::fleet::FleetError;
use crate::instances::{ServerGone, StartError};
use crate::probe::ProbeError;
use crate::procfs::ProcError;
use std::fmt;

/// Why a run could not be completed.
#[derive(Debug)]
pub enum BenchError {
    /// The servers could not be started.
    Start(StartError),
    /// The start-up probe could not talk to the server.
    Probe(ProbeError),
    /// A `/proc` figure could not be read.
    Proc(ProcError),
    /// The tool's own event loop failed.
    Io(std::io::Error),
    /// A client process failed.
    Fleet(FleetError),
    /// A server exited, or stopped sending ticks.
    ServerGone(String),
    /// The flags ask for something the tool cannot do here (exit status 1).
    Usage(String),
    /// `--tls`: the test certificate could not be made or read.
    Tls(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Start(e) => write!(f, "{e}"),
            BenchError::Probe(e) => write!(f, "start-up probe: {e}"),
            BenchError::Proc(e) => write!(f, "{e}"),
            BenchError::Io(e) => write!(f, "event loop: {e}"),
            BenchError::Fleet(e) => write!(f, "{e}"),
            BenchError::ServerGone(why) => write!(f, "the server went away during the run: {why}"),
            BenchError::Usage(why) => write!(f, "{why}"),
            BenchError::Tls(why) => write!(f, "--tls: {why}"),
        }
    }
}

impl From<ProcError> for BenchError {
    fn from(e: ProcError) -> Self {
        BenchError::Proc(e)
    }
}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> Self {
        BenchError::Io(e)
    }
}

impl From<FleetError> for BenchError {
    fn from(e: FleetError) -> Self {
        BenchError::Fleet(e)
    }
}

impl From<StartError> for BenchError {
    fn from(e: StartError) -> Self {
        BenchError::Start(e)
    }
}

impl From<ProbeError> for BenchError {
    fn from(e: ProbeError) -> Self {
        BenchError::Probe(e)
    }
}

impl From<ServerGone> for BenchError {
    fn from(e: ServerGone) -> Self {
        BenchError::ServerGone(e.0)
    }
}
