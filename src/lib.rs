//! ws_assets: a WebSocket service that streams currency quotes.
//!
//! One `mio` reactor thread owns every socket and all in-memory state; blocking work
//! (feed fetches, database calls) runs on a small worker pool.

pub mod config;
pub mod conn;
pub mod feed;
pub mod frame;
pub mod healthcheck;
pub mod http;
pub mod limits;
pub mod market;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod reactor;
pub mod service;
pub mod store;
pub mod throttle;
pub mod workers;
pub mod writebehind;
