//! Start-up: builds the store, the feed and the market from a [`Config`], warms the
//! history, binds the listener and hands everything to the [`Reactor`].

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use log::{info, warn};
use socket2::{Domain, Protocol, Socket, Type};

use crate::asset::{Point, default_assets};
use crate::clock::epoch_second;
use crate::cluster::{Membership, Role, election};
use crate::config::Config;
use crate::feed::fxcm::FxcmFeed;
use crate::feed::simulated::SimulatedFeed;
use crate::feed::{Feed, FeedSource};
use crate::limits;
use crate::market::Market;
use crate::reactor::{Parts, Reactor};
use crate::store::dsn::PgSettings;
use crate::store::memory::MemoryStore;
use crate::store::migrate::Applied;
use crate::store::postgres::{self, PostgresStore};
use crate::store::{Store, StoreError};
use crate::tls::Acceptor;
use crate::tls::acceptor::SetupError;

/// Accept backlog of the listener, so a burst of thousands of connects is queued
/// instead of retried by the clients a second later.
const BACKLOG: i32 = 4096;
/// File descriptors kept for everything but client connections.
const SPARE_FDS: u64 = 64;

/// Why the service could not start.
#[derive(Debug)]
pub enum StartError {
    /// The store could not be opened or read.
    Store(StoreError),
    /// The store lists no assets.
    NoAssets,
    /// The listen address could not be bound.
    Bind(SocketAddr, std::io::Error),
    /// The event loop could not be set up.
    Reactor(std::io::Error),
    /// The TLS certificate or key could not be used.
    Tls(SetupError),
}

impl StartError {
    /// Whether the configuration is at fault (a file it names is missing or wrong),
    /// which a restart cannot fix: the process exits with code 2, as for a bad value.
    pub fn is_configuration(&self) -> bool {
        matches!(self, StartError::Tls(SetupError::Files(_)))
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Store(e) => write!(f, "{e}"),
            StartError::NoAssets => write!(f, "the store lists no assets; nothing to stream"),
            StartError::Bind(addr, e) => write!(
                f,
                "cannot listen on {addr}: {e} (set WS_ASSETS_HOST / WS_ASSETS_PORT)"
            ),
            StartError::Reactor(e) => write!(f, "cannot start the event loop: {e}"),
            StartError::Tls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Builds everything from `config` and returns the reactor, ready to run.
pub fn start(mut config: Config) -> Result<Reactor, StartError> {
    match limits::raise_open_files() {
        Ok(files) => {
            let most = usize::try_from(files.saturating_sub(SPARE_FDS)).unwrap_or(usize::MAX);
            if config.max_connections > most {
                info!(
                    "open-file limit is {files}: serving at most {most} connections \
                     instead of WS_ASSETS_MAX_CONNECTIONS={}",
                    config.max_connections
                );
                config.max_connections = most.max(1);
            }
        }
        Err(e) => warn!("cannot raise the open-file limit: {e}"),
    }
    // Files named by the configuration are checked before anything slow (the database).
    let tls = match &config.tls {
        None => None,
        Some(files) => Some(Acceptor::load(files.clone()).map_err(StartError::Tls)?),
    };

    let store = open_store(&config)?;
    let membership = match &config.postgresql {
        None => None,
        Some(pg) => Some(elect(pg, &config)?),
    };
    let role = membership.as_ref().map_or(Role::Standalone, |m| m.role);
    let assets = store.load_assets().map_err(StartError::Store)?;
    if assets.is_empty() {
        return Err(StartError::NoAssets);
    }
    let mut market = Market::new(assets.clone(), config.history_seconds);
    let now = epoch_second();
    let window_start = now - i64::from(config.history_seconds) + 1;
    let stored = store
        .load_points_since(window_start)
        .map_err(StartError::Store)?;
    let warmed = market.warm(&stored, now);

    let mut initial_writes: Vec<Point> = Vec::new();
    let mut backfilled = 0;
    let (feed, feed_text): (Arc<dyn Feed>, String) = match &config.feed {
        FeedSource::Simulated => {
            let seed = config.simulated_seed.unwrap_or_else(|| fastrand::u64(1..));
            let simulated = Arc::new(SimulatedFeed::new(seed));
            // Only the instance that polls the feed invents a past; a follower gets
            // the leader's.
            if config.simulated_backfill && stored.is_empty() && role != Role::Follower {
                let backfill = simulated.backfill(&assets, window_start, now);
                market.warm(&backfill, now);
                // Written before anyone can subscribe, and not published: it is history.
                if let Err(e) = store.import_points(&backfill) {
                    warn!("cannot store the backfill now ({e}); it is queued");
                    initial_writes = backfill.clone();
                }
                backfilled = backfill.len();
            }
            (simulated, format!("simulated (seed {seed})"))
        }
        FeedSource::Fxcm(url) => {
            let text = format!(
                "{} (timeout {} ms)",
                url.shown(),
                config.rates_timeout.as_millis()
            );
            let fxcm = FxcmFeed::new(
                url.clone(),
                config.rates_timeout,
                config.rates_max_body_bytes,
            );
            (Arc::new(fxcm), text)
        }
    };

    let addr = SocketAddr::new(config.host, config.port);
    let listener = bind(addr, config.reuse_port).map_err(|e| StartError::Bind(addr, e))?;
    let history = if backfilled == 0 {
        format!("{warmed} points of history loaded")
    } else {
        format!("history backfilled with {backfilled} simulated points")
    };
    let store_text = match &config.postgresql {
        None => "memory (history does not survive a restart)".to_string(),
        Some(pg) => format!("{} {}", store.kind().label(), pg.redacted()),
    };
    let tls_text = match &tls {
        None => String::new(),
        Some(acceptor) => format!("; TLS only (https, wss): {}", acceptor.describe()),
    };
    let reactor = Reactor::new(Parts {
        config: config.clone(),
        tls,
        listener,
        market,
        feed,
        store,
        initial_writes,
        history_until: now,
        membership,
    })
    .map_err(StartError::Reactor)?;
    let bound = reactor.local_addr().map_err(StartError::Reactor)?;
    let shared = if config.reuse_port {
        ", port shared"
    } else {
        ""
    };
    info!(
        "listening on {bound}{shared} (role: {}; store: {store_text}; feed: {feed_text}; \
         {history}; max {} connections{tls_text})",
        role.label(),
        config.max_connections
    );
    Ok(reactor)
}

/// Binds the listener; with `reuse_port`, other processes may bind the same port and
/// the kernel spreads new connections across them.
fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Tries the leadership lock once on a connection of its own: the role this instance
/// starts in, and what the reactor needs to keep competing.
fn elect(pg: &PgSettings, config: &Config) -> Result<Membership, StartError> {
    let mut lock_client = postgres::connect_session(pg, config.postgresql_startup_timeout)
        .map_err(StartError::Store)?;
    let leading = election::try_lead(&mut lock_client).map_err(StartError::Store)?;
    Ok(Membership {
        config: pg.clone(),
        lock_client,
        role: if leading {
            Role::Leader
        } else {
            Role::Follower
        },
        window: config.history_seconds,
    })
}

fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    let Some(pg) = &config.postgresql else {
        let capacity = default_assets().len() * config.history_seconds as usize * 2;
        return Ok(Arc::new(MemoryStore::new(default_assets(), capacity)));
    };
    info!(
        "connecting to {} (up to {} s)",
        pg.redacted(),
        config.postgresql_startup_timeout.as_secs()
    );
    let store = PostgresStore::connect(
        pg,
        config.postgresql_pool_size,
        config.postgresql_startup_timeout,
        config.auto_apply_migrations,
    )
    .map_err(StartError::Store)?;
    Ok(Arc::new(store))
}

/// `ws_assets migrate`: applies pending migrations and lists them.
pub fn migrate(config: &Config) -> Result<Vec<Applied>, StoreError> {
    let Some(pg) = &config.postgresql else {
        return Err(StoreError::Query(
            "WS_ASSETS_POSTGRESQL_DSN is empty: there is no database to migrate".into(),
        ));
    };
    postgres::migrate(pg, config.postgresql_startup_timeout)
}
