//! Command-line flags of `wsbench`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// How much of the benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every phase, including the subscribe storm, with settle pauses before memory readings.
    Full,
    /// Connect, subscribe, measured ticks and stream checks only; no storm, no pauses.
    Quick,
}

/// Where the server under test comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Start this binary on a free loopback port.
    Spawn(PathBuf),
    /// Use a running server.
    Attach {
        /// Its WebSocket address.
        addr: SocketAddr,
        /// Its process id (for /proc figures).
        pid: u32,
    },
}

/// Everything the flags say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Number of WebSocket clients.
    pub clients: usize,
    /// Measured ticks.
    pub ticks: u32,
    /// Source addresses 127.0.0.2 ..= 127.0.0.(1 + src_ips).
    pub src_ips: u8,
    /// The server under test.
    pub target: Target,
    /// Full or quick.
    pub mode: Mode,
    /// Subscriptions in flight at once during the paced subscribe phase.
    pub sub_window: usize,
    /// Connections being opened at once.
    pub connect_window: usize,
    /// WebSocket path.
    pub path: String,
}

/// A flag the tool cannot use; the text says which and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionsError {
    /// `--help` was asked for.
    Help,
    /// Anything wrong with the flags.
    Bad(String),
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionsError::Help => f.write_str(USAGE),
            OptionsError::Bad(why) => write!(f, "{why}\n\n{USAGE}"),
        }
    }
}

/// The `--help` text.
pub const USAGE: &str = "\
usage: cargo bench --bench wsbench -- [--clients N] [--ticks T] [--src-ips K]
         [--mode full|quick] [--server PATH | --addr HOST:PORT --pid PID]
         [--sub-window W] [--connect-window C] [--path /api/v1/websocket]

  --clients N         WebSocket clients (default 1000)
  --ticks T           measured ticks (default 10)
  --src-ips K         bind clients round-robin to 127.0.0.2..=127.0.0.(1+K) (default 4)
  --mode full|quick   quick skips the subscribe storm and the settle pauses (default full)
  --server PATH       server binary to start (default: the ws_assets cargo built with
                      this tool, e.g. target/release/ws_assets)
  --addr HOST:PORT    benchmark a running server instead (needs --pid)
  --pid PID           that server's process id, for /proc memory and CPU figures
  --sub-window W      subscriptions in flight during the paced subscribe phase (default 64)
  --connect-window C  connections being opened at once (default 256)
  --path P            WebSocket path (default /api/v1/websocket)";

fn number<T: std::str::FromStr>(
    flag: &str,
    value: Option<String>,
    what: &str,
) -> Result<T, OptionsError> {
    let v = value.ok_or_else(|| OptionsError::Bad(format!("{flag} needs a value ({what})")))?;
    v.parse()
        .map_err(|_| OptionsError::Bad(format!("{flag} {v:?}: expected {what}")))
}

impl Options {
    /// Parses the flags (without the program name). `default_server` is used without
    /// `--server`/`--addr`.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        default_server: PathBuf,
    ) -> Result<Options, OptionsError> {
        let mut o = Options {
            clients: 1000,
            ticks: 10,
            src_ips: 4,
            target: Target::Spawn(default_server),
            mode: Mode::Full,
            sub_window: 64,
            connect_window: 256,
            path: "/api/v1/websocket".to_string(),
        };
        let (mut server, mut addr, mut pid) = (None, None, None);
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--help" | "-h" => return Err(OptionsError::Help),
                // `cargo bench` appends it to a bench target's arguments.
                "--bench" => {}
                "--clients" => {
                    o.clients = number(&flag, it.next(), "a number of clients, 1 or more")?
                }
                "--ticks" => o.ticks = number(&flag, it.next(), "a number of ticks, 1 or more")?,
                "--src-ips" => o.src_ips = number(&flag, it.next(), "1..=250")?,
                "--sub-window" => o.sub_window = number(&flag, it.next(), "a number, 1 or more")?,
                "--connect-window" => {
                    o.connect_window = number(&flag, it.next(), "a number, 1 or more")?
                }
                "--server" => {
                    server = Some(PathBuf::from(number::<String>(&flag, it.next(), "a path")?))
                }
                "--addr" => {
                    addr = Some(number::<SocketAddr>(
                        &flag,
                        it.next(),
                        "HOST:PORT, e.g. 127.0.0.1:8080",
                    )?)
                }
                "--pid" => pid = Some(number::<u32>(&flag, it.next(), "a process id")?),
                "--path" => o.path = number(&flag, it.next(), "a path starting with /")?,
                "--mode" => {
                    o.mode = match it.next().as_deref() {
                        Some("full") => Mode::Full,
                        Some("quick") => Mode::Quick,
                        other => {
                            return Err(OptionsError::Bad(format!(
                                "--mode {other:?}: expected full or quick"
                            )));
                        }
                    }
                }
                other => return Err(OptionsError::Bad(format!("unknown flag {other:?}"))),
            }
        }
        if o.clients == 0 || o.ticks == 0 || o.sub_window == 0 || o.connect_window == 0 {
            return Err(OptionsError::Bad(
                "--clients, --ticks and the windows must be 1 or more".into(),
            ));
        }
        if o.src_ips == 0 || o.src_ips > 250 {
            return Err(OptionsError::Bad(format!(
                "--src-ips {}: expected 1..=250",
                o.src_ips
            )));
        }
        if !o.path.starts_with('/') {
            return Err(OptionsError::Bad(format!(
                "--path {:?}: expected a path starting with /",
                o.path
            )));
        }
        o.target = match (server, addr, pid) {
            (Some(_), Some(_), _) => {
                return Err(OptionsError::Bad(
                    "give either --server or --addr, not both".into(),
                ));
            }
            (_, Some(addr), Some(pid)) => Target::Attach { addr, pid },
            (_, Some(_), None) => {
                return Err(OptionsError::Bad(
                    "--addr needs --pid (for /proc figures)".into(),
                ));
            }
            (_, None, Some(_)) => return Err(OptionsError::Bad("--pid needs --addr".into())),
            (Some(path), None, None) => Target::Spawn(path),
            (None, None, None) => o.target,
        };
        Ok(o)
    }
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // the bench target builds it without the tests: main.rs
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, OptionsError> {
        Options::parse(
            args.iter().map(|s| s.to_string()),
            PathBuf::from("/x/ws_assets"),
        )
    }

    #[test]
    fn defaults() {
        let o = parse(&[]).unwrap();
        assert_eq!(
            (o.clients, o.ticks, o.src_ips, o.mode),
            (1000, 10, 4, Mode::Full)
        );
        assert_eq!(o.target, Target::Spawn(PathBuf::from("/x/ws_assets")));
    }

    #[test]
    fn all_flags() {
        let o = parse(&[
            "--clients",
            "50",
            "--ticks",
            "3",
            "--src-ips",
            "2",
            "--mode",
            "quick",
            "--server",
            "/s",
        ])
        .unwrap();
        assert_eq!(
            (o.clients, o.ticks, o.src_ips, o.mode),
            (50, 3, 2, Mode::Quick)
        );
        assert_eq!(o.target, Target::Spawn(PathBuf::from("/s")));
        let o = parse(&["--addr", "127.0.0.1:9000", "--pid", "42"]).unwrap();
        assert_eq!(
            o.target,
            Target::Attach {
                addr: "127.0.0.1:9000".parse().unwrap(),
                pid: 42
            }
        );
    }

    #[test]
    fn rejects_bad_flags_with_a_reason() {
        for bad in [
            &["--clients", "x"][..],
            &["--clients", "0"],
            &["--clients"],
            &["--mode", "slow"],
            &["--addr", "127.0.0.1:1"],
            &["--pid", "1"],
            &["--server", "/s", "--addr", "127.0.0.1:1", "--pid", "1"],
            &["--src-ips", "0"],
            &["--frobnicate"],
        ] {
            match parse(bad) {
                Err(OptionsError::Bad(why)) => assert!(!why.is_empty()),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert_eq!(parse(&["--help"]), Err(OptionsError::Help));
    }

    #[test]
    fn ignores_the_flag_cargo_bench_adds() {
        assert_eq!(
            parse(&["--clients", "7", "--bench"]),
            parse(&["--clients", "7"])
        );
        assert_eq!(parse(&["--bench"]), parse(&[]));
    }
}
