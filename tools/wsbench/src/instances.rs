//! The servers under test: one standalone server as before, one attached to, or with
//! `--instances K` K instances sharing one port (`WS_ASSETS_REUSE_PORT`) and one
//! throwaway PostgreSQL database; and which instance accepted which client.
//!
//! With one port the kernel picks the instance of each new connection, and an HTTP
//! request to the port reaches any of them, so per-instance figures come from each
//! process: its `/proc` (CPU, memory, open files, and its sockets' peers, which name its
//! clients) and its log (role).

use crate::client::Client;
use crate::options::{Options, Target};
use crate::pgdb::{DbError, ThrowawayDb};
use crate::procfs::{self, Memory, ProcError};
use crate::server::{Server, ServerError};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

/// Why the servers could not be started.
#[derive(Debug)]
pub enum StartError {
    /// A server failed to start.
    Server(ServerError),
    /// The database could not be created.
    Db(DbError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Server(e) => write!(f, "{e}"),
            StartError::Db(e) => write!(f, "database for --instances: {e}"),
        }
    }
}

/// A server exited during the run: which, its exit status and its last log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerGone(pub String);

impl fmt::Display for ServerGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The server processes of a run. Stopping them (or dropping this) drops the database
/// after the last instance has exited.
pub struct Servers {
    /// The servers; with `--instances` the first started is the first leader.
    pub list: Vec<Server>,
    /// With `--instances`: the throwaway database (declared after `list`, so dropped after
    /// the servers are stopped).
    db: Option<ThrowawayDb>,
}

impl Servers {
    /// The servers `opts` ask for, with `--instances` only the first, so the start-up
    /// probe times one instance alone (see [`Servers::add_instances`]).
    /// `extra` are variables a standalone server gets besides the tool's (`--tls`'s).
    pub fn start(opts: &Options, extra: &[(&str, String)]) -> Result<Servers, StartError> {
        match (&opts.target, opts.instances) {
            (Target::Spawn(path), None) => Servers::standalone(path, extra),
            (Target::Spawn(path), Some(_)) => Servers::first_instance(path, &opts.dsn),
            (Target::Attach { addr, pid }, _) => Ok(Servers::attach(*addr, *pid)),
        }
    }

    /// One server, started as before (standalone, memory store, its own free port).
    pub fn standalone(path: &Path, extra: &[(&str, String)]) -> Result<Servers, StartError> {
        let server = Server::spawn(path, 0, extra).map_err(StartError::Server)?;
        Ok(Servers {
            list: vec![server],
            db: None,
        })
    }

    /// A running server.
    pub fn attach(addr: SocketAddr, pid: u32) -> Servers {
        Servers {
            list: vec![Server::attach(addr, pid)],
            db: None,
        }
    }

    /// Creates a database through `admin_dsn` and starts the first instance on it, on a
    /// free port shared with those [`Servers::add_instances`] starts. Being first, it
    /// takes the leadership and fills the history (`WS_ASSETS_SIMULATED_BACKFILL`).
    pub fn first_instance(path: &Path, admin_dsn: &str) -> Result<Servers, StartError> {
        let db = ThrowawayDb::create(admin_dsn).map_err(StartError::Db)?;
        let server = Server::spawn(path, 0, &instance_env(&db)).map_err(StartError::Server)?;
        Ok(Servers {
            list: vec![server],
            db: Some(db),
        })
    }

    /// Starts instances until there are `total`, on the first one's port and database.
    pub fn add_instances(&mut self, path: &Path, total: usize) -> Result<(), StartError> {
        let (Some(db), Some(first)) = (&self.db, self.list.first()) else {
            return Ok(());
        };
        let port = first.addr.port();
        let env = instance_env(db);
        while self.list.len() < total {
            let server = Server::spawn(path, port, &env).map_err(StartError::Server)?;
            self.list.push(server);
        }
        Ok(())
    }

    /// The database's name, with `--instances`.
    pub fn database(&self) -> Option<&str> {
        self.db.as_ref().map(ThrowawayDb::name)
    }

    /// The address clients connect to (shared by every instance).
    pub fn addr(&self) -> SocketAddr {
        self.list[0].addr
    }

    /// Process ids, in start order.
    pub fn pids(&self) -> Vec<u32> {
        self.list.iter().map(|s| s.pid).collect()
    }

    /// Memory of each instance.
    pub fn memory(&self) -> Result<Vec<Memory>, ProcError> {
        self.list.iter().map(|s| procfs::memory(s.pid)).collect()
    }

    /// Open files of each instance.
    pub fn open_fds(&self) -> Result<Vec<usize>, ProcError> {
        self.list.iter().map(|s| procfs::open_fds(s.pid)).collect()
    }

    /// `Err` naming the first server that has gone, with its exit status and last log
    /// lines.
    pub fn alive(&mut self) -> Result<(), ServerGone> {
        let gone = self.list.iter_mut().enumerate().find_map(|(i, s)| {
            if s.alive() {
                return None;
            }
            let status = s
                .try_exit_status()
                .map_or("gone".to_string(), |st| st.to_string());
            Some(format!(
                "instance {i} (pid {}): exit {status}; log: {:?}",
                s.pid,
                s.log().tail
            ))
        });
        gone.map_or(Ok(()), |why| Err(ServerGone(why)))
    }

    /// Stops every started server (SIGTERM), then drops the database; how each exited.
    pub fn stop(&mut self) -> Vec<String> {
        let statuses = self
            .list
            .iter_mut()
            .map(|s| match s.stop() {
                Some(status) => status.to_string(),
                None => "left running (attached)".to_string(),
            })
            .collect();
        self.db = None;
        statuses
    }
}

fn instance_env(db: &ThrowawayDb) -> Vec<(&'static str, String)> {
    vec![
        ("WS_ASSETS_POSTGRESQL_DSN", db.dsn()),
        ("WS_ASSETS_REUSE_PORT", "TRUE".to_string()),
    ]
}

/// Marks each client with the instance (index into `pids`) whose socket is its peer and
/// returns how many clients each instance has, plus, last, how many open clients were
/// found in none.
pub fn map_clients(clients: &mut [Client], pids: &[u32]) -> Result<Vec<usize>, ProcError> {
    let mut owners = HashMap::new();
    for (i, &pid) in pids.iter().enumerate() {
        for inode in procfs::socket_inodes(pid)? {
            owners.insert(inode, i);
        }
    }
    let peers = procfs::peers_of(&owners)?;
    let mut counts = vec![0; pids.len() + 1];
    for c in clients.iter_mut() {
        let Some(sock) = &c.sock else { continue };
        let found = match sock.socket().local_addr() {
            Ok(SocketAddr::V4(local)) => peers.get(&local).copied(),
            _ => None,
        };
        match found {
            Some(i) => {
                c.instance = u8::try_from(i).unwrap_or(u8::MAX);
                counts[i] += 1;
            }
            None => counts[pids.len()] += 1,
        }
    }
    Ok(counts)
}
