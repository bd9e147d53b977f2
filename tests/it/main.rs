//! The black-box tests, in one binary so the harness is compiled and linked once.
//!
//! Each module is one area of the service, driven from outside: the real server binary
//! on a free port, real WebSocket and HTTP clients, a real PostgreSQL (a throwaway
//! database per test), a fake quote feed, Chromium for the page, and certificates made
//! by the test. The harness is [`common`]; [`pgdb`], [`fakefeed`], [`cdp`] and
//! [`testca`] are the database, feed, browser and certificate helpers.
// A test fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cdp;
mod common;
mod fakefeed;
mod pgdb;
mod testca;

mod browser;
mod cluster;
mod deflate;
mod feed_service;
mod fxcm_feed;
mod haproxy;
mod health_command;
mod http;
mod hung_database;
mod interop;
mod limits;
mod many_clients;
mod operations;
mod postgres_service;
mod postgres_store;
mod postgres_tls;
mod protocol;
mod reliability;
mod secrets;
mod security;
mod startup;
mod tls;
