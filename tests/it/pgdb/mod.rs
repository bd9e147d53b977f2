//! Test harness for the real PostgreSQL: a throwaway database per test with the queries
//! tests make of it (`execute`, `scalar`, `table_exists`, the stored points), and a TCP
//! proxy that can cut or black-hole the connection to simulate an outage, at once or at
//! a given statement (`cut_when_sent`, `blackhole_when_sent`).
//!
//! The admin DSN comes from `WS_ASSETS_TEST_POSTGRESQL_DSN` (default
//! `postgresql://postgres@127.0.0.1:5432/postgres`); `.ci/start-postgres` provides it.
//! Shared by several test crates, each using part of it.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::config::Host;
use postgres::{Client, Config, NoTls};
use ws_assets::store::dsn;

/// Env var naming the admin DSN used to create and drop test databases.
pub const ADMIN_DSN_VAR: &str = "WS_ASSETS_TEST_POSTGRESQL_DSN";
/// Admin DSN when the env var is unset.
pub const DEFAULT_ADMIN_DSN: &str = "postgresql://postgres@127.0.0.1:5432/postgres";

/// The admin DSN text in force.
pub fn admin_dsn() -> String {
    std::env::var(ADMIN_DSN_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ADMIN_DSN.to_string())
}

/// The admin DSN parsed; panics with a hint when it is malformed.
pub fn admin_config() -> Config {
    let text = admin_dsn();
    dsn::parse(&text).unwrap_or_else(|e| panic!("{ADMIN_DSN_VAR}: {e}"))
}

fn admin_client(config: &Config) -> Client {
    dsn::with_service_defaults(config)
        .connect(NoTls)
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach the test PostgreSQL at {} ({}); run .ci/start-postgres or set {ADMIN_DSN_VAR}",
                dsn::redacted(config),
                dsn::error_text(&e)
            )
        })
}

/// A database that exists for one test and is dropped (`WITH (FORCE)`) when this value is,
/// also when the test panics.
pub struct TestDb {
    name: String,
    admin: Config,
}

impl TestDb {
    /// Creates an empty database with a name unique to this process and call.
    pub fn create() -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "ws_assets_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = admin_config();
        let mut client = admin_client(&admin);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {}", dsn::error_text(&e)));
        TestDb { name, admin }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection settings for this database, directly to the server.
    pub fn config(&self) -> Config {
        let mut config = self.admin.clone();
        config.dbname(&self.name);
        config
    }

    /// The same settings as a DSN text (for code that takes a string).
    pub fn dsn(&self) -> String {
        let config = self.config();
        let mut text = String::from("postgresql://");
        if let Some(user) = config.get_user() {
            text.push_str(user);
            if let Some(password) = config.get_password() {
                text.push(':');
                text.push_str(&percent_encode(password));
            }
            text.push('@');
        }
        text.push_str(&dsn::host_list(&config));
        text.push('/');
        text.push_str(&self.name);
        text
    }

    /// Connection settings for this database through `proxy` (127.0.0.1 and its port).
    pub fn config_via(&self, proxy: &Proxy) -> Config {
        let mut config = Config::new();
        if let Some(user) = self.admin.get_user() {
            config.user(user);
        }
        if let Some(password) = self.admin.get_password() {
            config.password(password);
        }
        config
            .dbname(&self.name)
            .host("127.0.0.1")
            .port(proxy.addr().port());
        config
    }

    /// The DSN text of [`TestDb::config_via`], for the server binary: this database
    /// through `proxy`, with the admin user and password, in clear (`sslmode=disable`)
    /// so that the proxy can see the statements it is told to cut at.
    pub fn dsn_via(&self, proxy: &Proxy) -> String {
        let mut text = String::from("postgresql://");
        if let Some(user) = self.admin.get_user() {
            text.push_str(user);
            if let Some(password) = self.admin.get_password() {
                text.push(':');
                text.push_str(&percent_encode(password));
            }
            text.push('@');
        }
        text.push_str(&format!(
            "127.0.0.1:{}/{}?sslmode=disable",
            proxy.addr().port(),
            self.name
        ));
        text
    }

    /// A fresh client on this database.
    pub fn client(&self) -> Client {
        admin_client(&self.config())
    }

    /// The server's TCP address, for [`Proxy::start`].
    pub fn server_addr(&self) -> SocketAddr {
        server_addr(&self.admin)
    }

    /// Runs `sql` (one or more statements); a failure fails the test.
    pub fn execute(&self, sql: &str) {
        self.client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {}", dsn::error_text(&e)));
    }

    /// The `int8` in the first column of the one row `sql` returns, e.g. a `count(*)`.
    pub fn scalar(&self, sql: &str) -> i64 {
        self.client()
            .query_one(sql, &[])
            .and_then(|row| row.try_get(0))
            .unwrap_or_else(|e| panic!("{sql}: {}", dsn::error_text(&e)))
    }

    /// Whether a table (or other relation) of that name exists.
    pub fn table_exists(&self, table: &str) -> bool {
        self.client()
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .and_then(|row| row.try_get(0))
            .unwrap_or_else(|e| panic!("to_regclass({table}): {}", dsn::error_text(&e)))
    }

    /// `(time, value)` of every stored point of an asset, oldest first.
    pub fn stored(&self, asset_id: i32) -> Vec<(i64, f64)> {
        let sql = "SELECT floor(extract(epoch FROM time))::int8, value FROM points \
                   WHERE asset_id = $1 ORDER BY time";
        self.client()
            .query(sql, &[&asset_id])
            .unwrap_or_else(|e| panic!("{sql}: {}", dsn::error_text(&e)))
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }

    /// Stored times per asset id, oldest first.
    pub fn stored_times(&self) -> BTreeMap<i32, Vec<i64>> {
        let sql = "SELECT asset_id, floor(extract(epoch FROM time))::int8 FROM points \
                   ORDER BY asset_id, time";
        let mut times: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for row in self
            .client()
            .query(sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {}", dsn::error_text(&e)))
        {
            times.entry(row.get(0)).or_default().push(row.get(1));
        }
        times
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let dropped = dsn::with_service_defaults(&self.admin)
            .connect(NoTls)
            .and_then(|mut client| {
                client.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
            });
        if let Err(e) = dropped {
            eprintln!(
                "warning: could not drop test database {}: {}",
                self.name,
                dsn::error_text(&e)
            );
        }
    }
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The first TCP address of a config's first host.
pub fn server_addr(config: &Config) -> SocketAddr {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => panic!(
            "the test proxy needs a TCP host, not the socket directory {}",
            path.display()
        ),
        None => "127.0.0.1".to_string(),
    };
    (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("cannot resolve {host}:{port}"))
}

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward both ways to the server.
    Forward,
    /// Accept and close at once, like a server that is gone.
    Refuse,
    /// Keep connections open but pass no bytes, like a hung server.
    Blackhole,
}

struct ProxyShared {
    upstream: SocketAddr,
    mode: Mutex<ProxyMode>,
    /// Bytes which, sent by a client, switch the proxy to a mode instead of reaching the
    /// server.
    trip: Mutex<Option<(Vec<u8>, ProxyMode)>>,
    /// Both ends of every forwarded connection, and every black-holed one.
    streams: Mutex<Vec<TcpStream>>,
    /// One flag per forwarded connection: set, it passes no more bytes (see
    /// [`Proxy::hang_open`]).
    hung: Mutex<Vec<Arc<AtomicBool>>>,
    stopping: AtomicBool,
}

impl ProxyShared {
    fn mode(&self) -> MutexGuard<'_, ProxyMode> {
        self.mode
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn trip(&self) -> MutexGuard<'_, Option<(Vec<u8>, ProxyMode)>> {
        self.trip
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn streams(&self) -> MutexGuard<'_, Vec<TcpStream>> {
        self.streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Switches mode; every open connection is closed.
    fn set_mode(&self, mode: ProxyMode) {
        *self.trip() = None;
        *self.mode() = mode;
        self.close_all();
    }

    /// The mode to switch to if `seen` (the tail of earlier bytes plus the new ones) trips
    /// the pattern.
    fn trips(&self, seen: &[u8]) -> Option<ProxyMode> {
        self.trip().as_ref().and_then(|(pattern, mode)| {
            seen.windows(pattern.len())
                .any(|w| w == pattern.as_slice())
                .then_some(*mode)
        })
    }

    fn close_all(&self) {
        for stream in self.streams().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.hung
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// A new flag for a forwarded connection, not set.
    fn new_connection(&self) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.hung
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Arc::clone(&flag));
        flag
    }

    /// Sets the flag of every connection forwarded so far.
    fn hang_open(&self) {
        for flag in self
            .hung
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
        {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

/// A loopback TCP proxy in front of the server whose connections a test can cut and restore.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("cannot bind the test proxy: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("test proxy address: {e}"));
        let shared = Arc::new(ProxyShared {
            upstream,
            mode: Mutex::new(ProxyMode::Forward),
            trip: Mutex::new(None),
            streams: Mutex::new(Vec::new()),
            hung: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name("pg-test-proxy".to_string())
            .spawn(move || accept_loop(&listener, &for_thread))
            .unwrap_or_else(|e| panic!("cannot start the test proxy: {e}"));
        Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection through the proxy; new ones are closed on arrival.
    pub fn cut(&self) {
        self.set_mode(ProxyMode::Refuse);
    }

    /// Forwards until a client sends bytes containing `pattern` (e.g. the text of a
    /// statement), then cuts as [`Proxy::cut`] does, without passing those bytes on: the
    /// database never sees that statement. A way to make an outage begin at an exact
    /// point of the conversation.
    pub fn cut_when_sent(&self, pattern: &str) {
        *self.shared.trip() = Some((pattern.as_bytes().to_vec(), ProxyMode::Refuse));
    }

    /// Forwards until a client sends bytes containing `pattern`, then black-holes as
    /// [`Proxy::blackhole`] does, without passing those bytes on: the statement is sent,
    /// the connection stays open, and no answer ever comes, like a server that hangs in
    /// the middle of it. The pattern is only seen on connections without TLS
    /// (`sslmode=disable`).
    pub fn blackhole_when_sent(&self, pattern: &str) {
        *self.shared.trip() = Some((pattern.as_bytes().to_vec(), ProxyMode::Blackhole));
    }

    /// Stops answering: open connections stay open but their bytes are dropped, and new
    /// ones are accepted and never answered, like a hung server or a host that vanished.
    /// Nothing is closed either: a connection the server ends stays open on the client's
    /// side.
    pub fn blackhole(&self) {
        *self.shared.mode() = ProxyMode::Blackhole;
    }

    /// Black-holes the connections open now, as [`Proxy::blackhole`] does, and forwards
    /// new ones: the client's connections hang (not cut), and the ones it opens to
    /// replace them work.
    pub fn hang_open(&self) {
        self.shared.hang_open();
    }

    /// Forwards new connections again; every open one is closed (a black hole may have
    /// left them mid-message).
    pub fn restore(&self) {
        self.set_mode(ProxyMode::Forward);
    }

    fn set_mode(&self, mode: ProxyMode) {
        self.shared.set_mode(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.close_all();
        // Wake the blocking accept so the thread sees `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<ProxyShared>) {
    for incoming in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        let mode = *shared.mode();
        match mode {
            ProxyMode::Refuse => drop(client),
            ProxyMode::Blackhole => shared.streams().push(client),
            ProxyMode::Forward => {
                if let Err(e) = forward(client, shared) {
                    eprintln!("test proxy: cannot forward a connection: {e}");
                }
            }
        }
    }
}

fn forward(client: TcpStream, shared: &Arc<ProxyShared>) -> io::Result<()> {
    let server = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(2))?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut streams = shared.streams();
        streams.push(client.try_clone()?);
        streams.push(server.try_clone()?);
    }
    let hung = shared.new_connection();
    pump(
        client.try_clone()?,
        server.try_clone()?,
        Arc::clone(shared),
        Arc::clone(&hung),
        true,
    )?;
    pump(server, client, Arc::clone(shared), hung, false)?;
    Ok(())
}

/// Copies `from` to `to` on its own thread, dropping the bytes while the proxy is a black
/// hole or the connection `hung`; when either side ends, both are shut, except that a
/// black hole passes no close either. What a client sends (`from_client`) is checked for
/// the pattern of [`Proxy::cut_when_sent`].
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    shared: Arc<ProxyShared>,
    hung: Arc<AtomicBool>,
    from_client: bool,
) -> io::Result<()> {
    thread::Builder::new()
        .name("pg-test-pump".to_string())
        .spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            // The end of the previous read, so a pattern split across reads is still seen.
            let mut seen: Vec<u8> = Vec::new();
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if from_client {
                    seen.extend_from_slice(&buf[..n]);
                    match shared.trips(&seen) {
                        Some(ProxyMode::Blackhole) => {
                            *shared.trip() = None;
                            *shared.mode() = ProxyMode::Blackhole;
                            seen.clear();
                            continue;
                        }
                        Some(mode) => {
                            shared.set_mode(mode);
                            break;
                        }
                        None => {}
                    }
                    let keep = seen.len().min(256);
                    seen.drain(..seen.len() - keep);
                }
                if *shared.mode() == ProxyMode::Blackhole || hung.load(Ordering::SeqCst) {
                    continue;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            if *shared.mode() != ProxyMode::Blackhole && !hung.load(Ordering::SeqCst) {
                let _ = to.shutdown(Shutdown::Both);
            }
        })
        .map(|_| ())
}
