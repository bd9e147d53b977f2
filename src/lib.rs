//! ws_assets: a WebSocket service that streams currency quotes.
//!
//! One `mio` reactor thread owns every socket and all in-memory state; blocking work
//! (feed fetches, database calls) runs on a small worker pool.
//!
//! # How it fits together
//!
//! A tick, from feed result to client write:
//! [`reactor`]'s `ticks.rs` starts one fetch per wall-clock second on a worker
//! (`workers.rs`) that calls the [`feed`] (`feed/simulated.rs`, or `feed/fxcm.rs` with
//! `feed/ratesjson.rs` parsing the body); the result comes back to `reactor/mod.rs`
//! (`deliver`), which records each point in `market.rs` (history ring, subscribers,
//! the point's frame encoded once by `protocol.rs` and framed by `frame.rs`), writes
//! that frame to every subscriber in `reactor/clients.rs` (`fan_out`, through each
//! connection's `outbox.rs`), and queues the points for the [`store`] in
//! `reactor/store_jobs.rs` (`writebehind.rs` batches them for `store/postgres.rs` or
//! `store/memory.rs`).
//!
//! A request, from bytes to reply: `reactor/clients.rs` (the connection table) hands a
//! connection's events to its driver in `conn/` (`Conn`), which reads the socket into
//! the reactor's one buffer; an HTTP head is parsed and routed by `http.rs` (the page,
//! `/health` and `/metrics` answered from `reactor/ops.rs` and `metrics.rs`, or the
//! WebSocket upgrade, with permessage-deflate negotiated by `deflate.rs`); WebSocket
//! frames are read by `conn/reader.rs` (compressed ones inflated by `deflate.rs`), the JSON request
//! parsed by `protocol.rs`, answered in `conn/` from `market.rs`, and written through
//! `outbox.rs`. With TLS configured, the driver's stream is the socket wrapped by
//! `reactor/transport.rs` in [`tls`]'s `stream.rs` (rustls, in the same loop), whose
//! configuration `tls/acceptor.rs` builds from the files `tls/identity.rs` reads and
//! renews on SIGHUP (`reactor/ops.rs`).
//!
//! On a follower (several instances on one database) the points come instead from the
//! leader's notifications, heard by `cluster/listen.rs` and handed to the loop by
//! `reactor/role.rs`, into the same `deliver`, and are not stored again.
//!
//! Start-up is `service.rs` (from [`config`] to a running [`reactor::Reactor`]);
//! `limits.rs` raises the open-file limit and `give_back.rs` returns freed memory to
//! the system while the service runs.

pub mod asset;
mod clock;
pub mod cluster;
pub mod config;
mod conn;
mod conninfo;
pub mod deflate;
pub mod feed;
mod frame;
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
mod give_back;
pub mod health_command;
mod http;
pub mod limits;
pub mod logsink;
mod market;
mod metrics;
mod outbox;
mod protocol;
pub mod reactor;
pub mod redact;
pub mod service;
pub mod store;
mod throttle;
pub mod tls;
mod workers;
mod writebehind;
