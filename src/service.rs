//! Start-up: builds the store, the feed and the market from a [`Config`], warms the
//! history, binds the listener and hands everything to the [`Reactor`].

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use log::{info, warn};

use crate::config::Config;
use crate::feed::fxcm::FxcmFeed;
use crate::feed::simulated::SimulatedFeed;
use crate::feed::{Feed, FeedSource};
use crate::limits;
use crate::market::{Market, Point, default_assets};
use crate::reactor::{Parts, Reactor, epoch_now};
use crate::store::memory::MemoryStore;
use crate::store::migrate::Applied;
use crate::store::postgres::{self, PostgresStore};
use crate::store::{Store, StoreError};

/// Accept backlog of the listener.
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

    let store = open_store(&config)?;
    let assets = store.load_assets().map_err(StartError::Store)?;
    if assets.is_empty() {
        return Err(StartError::NoAssets);
    }
    let mut market = Market::new(assets.clone(), config.history_seconds);
    let now = epoch_now().as_secs() as i64;
    let window_start = now - i64::from(config.history_seconds) + 1;
    let stored = store
        .load_points_since(window_start)
        .map_err(StartError::Store)?;
    let warmed = market.warm(&stored, now);

    let mut initial_writes: Vec<Point> = Vec::new();
    let (feed, feed_text): (Arc<dyn Feed>, String) = match &config.feed {
        FeedSource::Simulated => {
            let seed = config.simulated_seed.unwrap_or_else(|| fastrand::u64(1..));
            let simulated = Arc::new(SimulatedFeed::new(seed));
            if config.simulated_backfill && stored.is_empty() {
                initial_writes = simulated.backfill(&assets, window_start, now);
                market.warm(&initial_writes, now);
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
    let listener = mio::net::TcpListener::bind(addr).map_err(|e| StartError::Bind(addr, e))?;
    if let Err(e) = limits::set_backlog(&listener, BACKLOG) {
        warn!("cannot raise the accept backlog: {e}");
    }
    let history = if initial_writes.is_empty() {
        format!("{warmed} points of history loaded")
    } else {
        format!(
            "history backfilled with {} simulated points",
            initial_writes.len()
        )
    };
    let store_text = match &config.postgresql {
        None => "memory (history does not survive a restart)".to_string(),
        Some(pg) => format!("{} {}", store.kind().label(), pg.redacted()),
    };
    let reactor = Reactor::new(Parts {
        config: config.clone(),
        listener,
        market,
        feed,
        store,
        initial_writes,
    })
    .map_err(StartError::Reactor)?;
    let bound = reactor.local_addr().map_err(StartError::Reactor)?;
    info!(
        "listening on {bound} (store: {store_text}; feed: {feed_text}; {history}; \
         max {} connections)",
        config.max_connections
    );
    Ok(reactor)
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
