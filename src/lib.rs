//! ws_assets: a WebSocket service that streams currency quotes.
//!
//! One `mio` reactor thread owns every socket and all in-memory state; blocking work
//! (feed fetches, database calls) runs on a small worker pool.

pub mod feed;
pub mod market;
pub mod store;
