//! Quote feeds: where each tick's prices come from.
//!
//! A feed is asked once per tick, on a worker thread, for the current price of every
//! known asset. It may block (HTTP) but must give up within its own timeout.

pub mod fxcm;
pub mod ratesjson;
pub mod simulated;

use std::fmt;

use crate::asset::Asset;
use fxcm::{FeedUrl, FeedUrlError};

/// What `WS_ASSETS_RATES_URL` calls the simulated feed.
pub const SIMULATED: &str = "simulated";

/// Where quotes come from: `WS_ASSETS_RATES_URL`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedSource {
    /// The built-in random walk ([`SIMULATED`]).
    Simulated,
    /// An FXCM ratesjson feed at this URL.
    Fxcm(FeedUrl),
}

impl FeedSource {
    /// [`SIMULATED`] (exactly), or an `http(s)://` URL by [`FeedUrl::parse`]'s rule.
    pub fn parse(text: &str) -> Result<FeedSource, FeedUrlError> {
        if text == SIMULATED {
            Ok(FeedSource::Simulated)
        } else {
            FeedUrl::parse(text).map(FeedSource::Fxcm)
        }
    }
}

/// One asset's price from one fetch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quote {
    /// The asset's id.
    pub asset_id: i32,
    /// `(bid + ask) / 2`, finite and positive.
    pub value: f64,
}

/// What one fetch produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fetched {
    /// Prices of the assets the feed had; an asset missing here has no point this tick.
    pub quotes: Vec<Quote>,
    /// Entries for known assets that were present but unusable (malformed, non-positive).
    pub rejected: u32,
}

/// Why a fetch produced nothing at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedError {
    /// The feed did not answer within the configured timeout.
    Timeout,
    /// The feed answered with a status other than 200.
    Status(u16),
    /// The feed could not be reached (DNS, connect, TLS, reset).
    Connect(String),
    /// The answer's body was larger than the configured cap (bytes).
    TooLarge(u64),
    /// The body could not be parsed as FXCM ratesjson.
    Parse(String),
}

impl fmt::Display for FeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedError::Timeout => write!(f, "feed did not answer within its timeout"),
            FeedError::Status(code) => write!(f, "feed answered HTTP {code}"),
            FeedError::Connect(e) => write!(f, "feed unreachable: {e}"),
            FeedError::TooLarge(cap) => write!(f, "feed body larger than {cap} bytes"),
            FeedError::Parse(e) => write!(f, "feed body malformed: {e}"),
        }
    }
}

impl std::error::Error for FeedError {}

/// A source of quotes. Two exist: the simulated random walk and the FXCM HTTP feed.
pub trait Feed: Send + Sync {
    /// Short description for logs and `/health`, e.g. `simulated` or the URL without its
    /// user info and query; never a credential.
    fn describe(&self) -> String;

    /// Fetches the current quotes of `assets` for the tick at `time` (epoch seconds).
    /// Runs on a worker thread; must return within the feed's timeout.
    fn fetch(&self, time: i64, assets: &[Asset]) -> Result<Fetched, FeedError>;
}
