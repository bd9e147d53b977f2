//! Command-line flags of `wsbench`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The admin DSN without `--dsn`.
pub const DEFAULT_ADMIN_DSN: &str = "postgresql://postgres@127.0.0.1:5432/postgres";

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
    /// `--instances K`: K instances on one port and one throwaway database (None: one
    /// standalone server, as without the flag).
    pub instances: Option<usize>,
    /// Admin DSN used to create and drop the throwaway database.
    pub dsn: String,
    /// Processes driving the clients (None: as few as the open-file limit allows).
    pub client_procs: Option<usize>,
    /// `--beside N` (with `--instances K`): first the same benchmark with N instances,
    /// then with K, and the two compared.
    pub beside: Option<usize>,
    /// `--soak DURATION`: run the soak for this long instead of the benchmark.
    pub soak: Option<Soak>,
    /// `--tls`: run the benchmark twice, plain and then over TLS, and compare.
    pub tls: bool,
    /// `--deflate`: run the benchmark twice, clients offering no extension and then
    /// clients offering permessage-deflate, each against fresh servers, and compare.
    pub deflate: bool,
    /// This run's clients offer permessage-deflate (set for each run of `--deflate`).
    pub offer_deflate: bool,
}

/// What a soak does besides keeping its clients subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Soak {
    /// How long the load runs.
    pub duration: Duration,
    /// Time between samples.
    pub sample_every: Duration,
    /// Churn operations per second (reconnect or resubscribe); None: clients / 500.
    pub churn_per_s: Option<usize>,
    /// Clients that read slowly and ask for histories until the server closes them.
    pub slow: usize,
    /// Clients that ping without pause and never read.
    pub flood: usize,
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
usage: cargo wsbench [--clients N] [--ticks T] [--src-ips K]
         [--mode full|quick] [--server PATH | --addr HOST:PORT --pid PID]
         [--sub-window W] [--connect-window C] [--path /api/v1/websocket]
         [--instances K [--dsn ADMIN_DSN] [--beside N]] [--client-procs P] [--tls | --deflate]
         [--soak DURATION [--sample-every DURATION] [--churn N] [--slow N] [--ping-flood N]]

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
  --path P            WebSocket path (default /api/v1/websocket)
  --instances K       start K instances sharing one port (WS_ASSETS_REUSE_PORT) and one
                      throwaway PostgreSQL database, and report each one's role, clients,
                      CPU and memory (default: one standalone server, memory store)
  --dsn ADMIN_DSN     where to create (and at the end drop) that database, without TLS
                      (default postgresql://postgres@127.0.0.1:5432/postgres)
  --beside N          with --instances K: run the same benchmark with N instances first
                      (e.g. 1), then with K, and compare the two: every client's lateness
                      behind its second, spread, and the followers' lag
  --client-procs P    processes driving the clients, each holding its share of the
                      sockets (default: as few as the open-file limit allows)
  --tls               run the benchmark twice in one go, plain and then with the server
                      speaking TLS (a certificate made with openssl) and the clients wss,
                      and compare: CPU per point, memory per connection, setup time,
                      handshakes per core-second
  --deflate           run the benchmark twice against fresh servers, plain clients first,
                      then clients offering permessage-deflate (every phase the same),
                      and compare setup time, history bytes on the wire, reactor CPU per
                      point and memory per connection
  --soak DURATION     instead of the benchmark: keep the clients subscribed for DURATION
                      (30m, 90s, 1h) with churn and a few misbehaving clients, sampling the
                      server's RSS and open files and the points lost
  --sample-every D    time between soak samples (default 60s)
  --churn N           soak: reconnects or resubscribes per second (default clients/500)
  --slow N            soak: clients that read slowly and ask for histories (default 5)
  --ping-flood N      soak: clients that ping without pause and never read (default 5)";

/// Parses `30m`, `90s`, `1h`, `500ms` or a number of seconds.
pub fn duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" | "min" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

fn duration_flag(flag: &str, value: Option<String>) -> Result<Duration, OptionsError> {
    let v = value.ok_or_else(|| OptionsError::Bad(format!("{flag} needs a duration")))?;
    match duration(&v) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(OptionsError::Bad(format!(
            "{flag} {v:?}: expected a duration such as 30m, 90s, 1h or 500ms"
        ))),
    }
}

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
        let mut o = Options::defaults(default_server);
        let mut later = Later::default();
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            if flag == "--help" || flag == "-h" {
                return Err(OptionsError::Help);
            }
            if flag == "--tls" {
                o.tls = true;
                continue;
            }
            if flag == "--deflate" {
                o.deflate = true;
                continue;
            }
            o.take(&flag, it.next(), &mut later)?;
        }
        o.check_numbers()?;
        o.soak = later.soak()?;
        if let Some(soak) = o.soak
            && soak.slow + soak.flood >= o.clients
        {
            return Err(OptionsError::Bad(format!(
                "--slow {} and --ping-flood {} leave no steady client of {}",
                soak.slow, soak.flood, o.clients
            )));
        }
        if let Some(n) = o.beside {
            match o.instances {
                Some(k) if k != n && o.soak.is_none() && !o.tls && !o.deflate => {}
                _ => {
                    return Err(OptionsError::Bad(format!(
                        "--beside {n} compares with --instances K (K other than {n}), \
                         not with --soak, --tls or --deflate"
                    )));
                }
            }
        }
        if o.instances.is_some() && later.addr.is_some() {
            return Err(OptionsError::Bad(
                "--instances starts its own servers: not with --addr".into(),
            ));
        }
        o.target = later.target(o.target)?;
        if o.tls && (o.soak.is_some() || o.instances.is_some() || later.addr.is_some()) {
            return Err(OptionsError::Bad(
                "--tls compares one server it starts, plain and TLS: not with --soak, \
                 --instances or --addr"
                    .into(),
            ));
        }
        if o.tls && o.deflate {
            return Err(OptionsError::Bad(
                "--tls and --deflate are two comparisons: one at a time".into(),
            ));
        }
        if o.deflate && o.soak.is_some() {
            return Err(OptionsError::Bad(
                "--deflate compares two benchmark runs: not with --soak".into(),
            ));
        }
        if o.deflate && o.server_path().is_none() {
            return Err(OptionsError::Bad(
                "--deflate starts a fresh server for each run: not with --addr".into(),
            ));
        }
        Ok(o)
    }

    /// Every setting as it is without flags.
    fn defaults(default_server: PathBuf) -> Options {
        Options {
            clients: 1000,
            ticks: 10,
            src_ips: 4,
            target: Target::Spawn(default_server),
            mode: Mode::Full,
            sub_window: 64,
            connect_window: 256,
            path: "/api/v1/websocket".to_string(),
            instances: None,
            dsn: DEFAULT_ADMIN_DSN.to_string(),
            client_procs: None,
            beside: None,
            soak: None,
            tls: false,
            deflate: false,
            offer_deflate: false,
        }
    }

    /// Takes one flag and its value; the flags that depend on others wait in `later`.
    fn take(
        &mut self,
        flag: &str,
        value: Option<String>,
        later: &mut Later,
    ) -> Result<(), OptionsError> {
        match flag {
            "--clients" => self.clients = number(flag, value, "a number of clients, 1 or more")?,
            "--ticks" => self.ticks = number(flag, value, "a number of ticks, 1 or more")?,
            "--src-ips" => self.src_ips = number(flag, value, "1..=250")?,
            "--sub-window" => self.sub_window = number(flag, value, "a number, 1 or more")?,
            "--connect-window" => self.connect_window = number(flag, value, "a number, 1 or more")?,
            "--path" => self.path = number(flag, value, "a path starting with /")?,
            "--instances" => self.instances = Some(one_to_16(flag, value, "instances")?),
            "--dsn" => self.dsn = number(flag, value, "a PostgreSQL DSN")?,
            "--client-procs" => self.client_procs = Some(one_to_16(flag, value, "processes")?),
            "--beside" => self.beside = Some(one_to_16(flag, value, "instances")?),
            "--mode" => {
                self.mode = match value.as_deref() {
                    Some("full") => Mode::Full,
                    Some("quick") => Mode::Quick,
                    other => {
                        return Err(OptionsError::Bad(format!(
                            "--mode {other:?}: expected full or quick"
                        )));
                    }
                }
            }
            _ => later.take(flag, value)?,
        }
        Ok(())
    }

    /// The counts and the path are in range.
    fn check_numbers(&self) -> Result<(), OptionsError> {
        if self.clients == 0 || self.ticks == 0 || self.sub_window == 0 || self.connect_window == 0
        {
            return Err(OptionsError::Bad(
                "--clients, --ticks and the windows must be 1 or more".into(),
            ));
        }
        if self.src_ips == 0 || self.src_ips > 250 {
            return Err(OptionsError::Bad(format!(
                "--src-ips {}: expected 1..=250",
                self.src_ips
            )));
        }
        if !self.path.starts_with('/') {
            return Err(OptionsError::Bad(format!(
                "--path {:?}: expected a path starting with /",
                self.path
            )));
        }
        Ok(())
    }
    /// The server binary the tool starts (None when it attaches to a running server).
    pub fn server_path(&self) -> Option<&Path> {
        match &self.target {
            Target::Spawn(p) => Some(p),
            Target::Attach { .. } => None,
        }
    }

    /// "full" or "quick", as the report names the mode.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Full => "full",
            Mode::Quick => "quick",
        }
    }
}

/// Flags that only mean something together (the server to use; the soak's settings),
/// kept until every flag has been read.
struct Later {
    server: Option<PathBuf>,
    addr: Option<SocketAddr>,
    pid: Option<u32>,
    soak: Soak,
    /// The first soak setting given, to refuse it without `--soak`.
    soak_setting: Option<String>,
}

impl Default for Later {
    fn default() -> Self {
        Later {
            server: None,
            addr: None,
            pid: None,
            soak: Soak {
                duration: Duration::ZERO,
                sample_every: Duration::from_secs(60),
                churn_per_s: None,
                slow: 5,
                flood: 5,
            },
            soak_setting: None,
        }
    }
}

impl Later {
    /// Takes one of the flags kept for later; any other flag is unknown.
    fn take(&mut self, flag: &str, value: Option<String>) -> Result<(), OptionsError> {
        match flag {
            "--server" => {
                self.server = Some(PathBuf::from(number::<String>(flag, value, "a path")?))
            }
            "--addr" => self.addr = Some(number(flag, value, "HOST:PORT, e.g. 127.0.0.1:8080")?),
            "--pid" => self.pid = Some(number(flag, value, "a process id")?),
            "--soak" => self.soak.duration = duration_flag(flag, value)?,
            "--sample-every" => self.soak.sample_every = duration_flag(flag, value)?,
            "--churn" => self.soak.churn_per_s = Some(number(flag, value, "a number per second")?),
            "--slow" => self.soak.slow = number(flag, value, "a number of clients")?,
            "--ping-flood" => self.soak.flood = number(flag, value, "a number of clients")?,
            other => return Err(OptionsError::Bad(format!("unknown flag {other:?}"))),
        }
        if self.soak_setting.is_none() && is_soak_setting(flag) {
            self.soak_setting = Some(flag.to_string());
        }
        Ok(())
    }

    /// The soak, if `--soak` was given; its settings alone are an error.
    fn soak(&self) -> Result<Option<Soak>, OptionsError> {
        if !self.soak.duration.is_zero() {
            return Ok(Some(self.soak));
        }
        match &self.soak_setting {
            Some(flag) => Err(OptionsError::Bad(format!("{flag} needs --soak"))),
            None => Ok(None),
        }
    }

    /// The server under test: `default` unless `--server` or `--addr` with `--pid`.
    fn target(&self, default: Target) -> Result<Target, OptionsError> {
        Ok(match (&self.server, self.addr, self.pid) {
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
            (Some(path), None, None) => Target::Spawn(path.clone()),
            (None, None, None) => default,
        })
    }
}

fn is_soak_setting(flag: &str) -> bool {
    matches!(
        flag,
        "--sample-every" | "--churn" | "--slow" | "--ping-flood"
    )
}

/// A count of 1..=16 `what` (instances, processes).
fn one_to_16(flag: &str, value: Option<String>, what: &str) -> Result<usize, OptionsError> {
    let n: usize = number(flag, value, &format!("1..=16 {what}"))?;
    if !(1..=16).contains(&n) {
        return Err(OptionsError::Bad(format!("{flag} {n}: expected 1..=16")));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, OptionsError> {
        Options::parse(
            args.iter().map(|s| s.to_string()),
            PathBuf::from("/x/ws_assets"),
        )
    }

    #[test]
    fn tls_is_a_flag_of_its_own_and_only_for_the_benchmark() {
        let o = parse(&["--tls", "--clients", "20"]).unwrap();
        assert!(o.tls);
        assert_eq!(o.clients, 20);
        assert!(!parse(&[]).unwrap().tls);
        assert!(parse(&["--tls", "--soak", "1m"]).is_err());
        assert!(parse(&["--tls", "--instances", "2"]).is_err());
    }

    #[test]
    fn defaults() {
        let o = parse(&[]).unwrap();
        assert_eq!(
            (o.clients, o.ticks, o.src_ips, o.mode),
            (1000, 10, 4, Mode::Full)
        );
        assert_eq!(o.target, Target::Spawn(PathBuf::from("/x/ws_assets")));
        assert_eq!((o.deflate, o.offer_deflate), (false, false));
    }

    #[test]
    fn deflate_is_a_flag_without_a_value() {
        let o = parse(&["--deflate", "--clients", "50"]).unwrap();
        assert!(o.deflate);
        assert_eq!(o.clients, 50);
        // The flag asks for the comparison; each run's clients are set by the runs.
        assert!(!o.offer_deflate);
        let o = parse(&["--clients", "7", "--deflate"]).unwrap();
        assert!(o.deflate && o.clients == 7);
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
    fn instances_and_soak_flags() {
        let o = parse(&[
            "--instances",
            "2",
            "--client-procs",
            "2",
            "--dsn",
            "postgresql://x@h/db",
        ])
        .unwrap();
        assert_eq!(
            (o.instances, o.client_procs, o.dsn.as_str(), o.soak),
            (Some(2), Some(2), "postgresql://x@h/db", None)
        );
        assert_eq!(parse(&[]).unwrap().dsn, DEFAULT_ADMIN_DSN);
        assert_eq!(parse(&[]).unwrap().beside, None);
        let o = parse(&["--instances", "2", "--beside", "1"]).unwrap();
        assert_eq!((o.instances, o.beside), (Some(2), Some(1)));
        let o = parse(&["--soak", "30m", "--sample-every", "2s", "--churn", "7"]).unwrap();
        assert_eq!(
            o.soak,
            Some(Soak {
                duration: Duration::from_secs(1800),
                sample_every: Duration::from_secs(2),
                churn_per_s: Some(7),
                slow: 5,
                flood: 5,
            })
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration("m"), None);
        assert_eq!(duration("5d"), None);
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
            &["--instances", "0"],
            &["--instances", "17"],
            &["--instances", "2", "--addr", "127.0.0.1:1", "--pid", "1"],
            &["--client-procs", "0"],
            &["--beside", "1"],
            &["--instances", "2", "--beside", "2"],
            &["--instances", "2", "--beside", "1", "--soak", "1m"],
            &["--instances", "2", "--beside", "1", "--deflate"],
            &["--deflate", "--soak", "1m"],
            &["--deflate", "--tls"],
            &["--deflate", "--addr", "127.0.0.1:1", "--pid", "1"],
            &["--soak", "0s"],
            &["--soak", "soon"],
            &["--churn", "3"],
            &[
                "--soak",
                "1m",
                "--clients",
                "10",
                "--slow",
                "5",
                "--ping-flood",
                "5",
            ],
        ] {
            match parse(bad) {
                Err(OptionsError::Bad(why)) => assert!(!why.is_empty()),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert_eq!(parse(&["--help"]), Err(OptionsError::Help));
    }
}
