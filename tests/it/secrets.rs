//! Passwords never leave the process in text (issue 13, part 1): the real binary, run with
//! a distinctive password in `WS_ASSETS_POSTGRESQL_DSN` (URL and key=value forms, and an
//! `sslpassword`) and in `WS_ASSETS_RATES_URL`'s user info, across the paths that fail
//! (bad syntax, bad port, a closed port, an unknown host, a refused login, an unknown
//! database) and those that succeed (a running service's log, `/health`, `/metrics`, the
//! page; `ws_assets migrate`). The password must appear nowhere in standard output,
//! standard error or an HTTP answer.
//!
//! The test server trusts local logins, so a refused password is played by a fake
//! PostgreSQL server that asks for the password in clear, receives it, and refuses it,
//! once politely and once quoting it back (which a real server never does, and which the
//! service must still not repeat).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::common::{Exited, Server, run_to_exit};
use crate::fakefeed::{FakeFeed, Reply, rates_body};
use crate::pgdb::TestDb;
use ws_assets::store::dsn;

const DB_PASSWORD: &str = "Db-pa55-Hunter2-x";
const SSL_PASSWORD: &str = "Ssl-pa55-Hunter3-y";
const FEED_PASSWORD: &str = "Feed-pa55-Hunter4-z";
const FEED_TOKEN: &str = "Feed-t0ken-Hunter5-q";
const DSN: &str = "WS_ASSETS_POSTGRESQL_DSN";
const RATES_URL: &str = "WS_ASSETS_RATES_URL";
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// Start-up gives up on an unreachable database after this long.
const STARTUP_TIMEOUT: (&str, &str) = ("WS_ASSETS_POSTGRESQL_STARTUP_TIMEOUT_SECONDS", "1");

/// Fails the test if any of the secrets, or a recognisable piece of one, is in `text`.
fn assert_no_secret(what: &str, text: &str) {
    for secret in [DB_PASSWORD, SSL_PASSWORD, FEED_PASSWORD, FEED_TOKEN] {
        // The distinctive middle of each, so a secret cut in two is caught too.
        let core = &secret[3..secret.len() - 2];
        assert!(
            !text.contains(core),
            "{what}: a secret ({secret}) is in:\n{text}"
        );
    }
}

/// Runs the binary to its exit and checks neither stream holds a secret.
fn run(what: &str, args: &[&str], env: &[(&str, &str)]) -> Exited {
    let mut all = vec![STARTUP_TIMEOUT];
    all.extend_from_slice(env);
    let run = run_to_exit(args, &all, RUN_LIMIT);
    assert_no_secret(&format!("{what}: stdout"), &run.stdout);
    assert_no_secret(&format!("{what}: stderr"), &run.stderr);
    run
}

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    listener.local_addr().expect("local address").port()
}

#[test]
fn a_refused_value_is_named_without_the_password() {
    let cases: &[(&str, String)] = &[
        (DSN, format!("postgresql://u:{DB_PASSWORD}@h:notaport/db")),
        (
            DSN,
            format!("postgresql+asyncpg://u:{DB_PASSWORD}@h:99999/db"),
        ),
        (DSN, format!("host=h password={DB_PASSWORD} port=notaport")),
        (DSN, format!("host=h password='{DB_PASSWORD} dbname=x")),
        (
            DSN,
            format!("host=h password={DB_PASSWORD} sslpassword={SSL_PASSWORD}"),
        ),
        (
            DSN,
            format!("postgresql://u:{DB_PASSWORD}@h/db?sslpassword={SSL_PASSWORD}"),
        ),
        // An `@` in the password, unencoded: the driver would read the rest as the host.
        (DSN, format!("postgresql://u:x@{DB_PASSWORD}@h/db")),
        (DSN, format!("mysql://u:{DB_PASSWORD}@h/db")),
        (RATES_URL, format!("ftp://u:{FEED_PASSWORD}@h/x")),
        (RATES_URL, format!("http://u:{FEED_PASSWORD}@h:notaport/x")),
        (
            RATES_URL,
            format!("https://u:{FEED_PASSWORD}@/x?token={FEED_TOKEN}"),
        ),
        (RATES_URL, format!("http://u:{FEED_PASSWORD}@h/a b")),
    ];
    for (variable, value) in cases {
        for args in [&[][..], &["migrate"][..]] {
            let what = format!("{variable}={value} {args:?}");
            let run = run(&what, args, &[(variable, value)]);
            assert_eq!(run.code, Some(2), "{what}:\n{}", run.stderr);
            assert!(run.stderr.contains(variable), "{what}:\n{}", run.stderr);
        }
    }
}

#[test]
fn an_unreachable_database_is_named_without_the_password() {
    let port = closed_port();
    for dsn_text in [
        format!("postgresql://u:{DB_PASSWORD}@127.0.0.1:{port}/db"),
        format!("host=127.0.0.1 port={port} user=u password='{DB_PASSWORD}' dbname=db"),
        format!("postgresql://u:{DB_PASSWORD}@no-such-host.invalid/db"),
        format!("postgresql://u:{DB_PASSWORD}@127.0.0.1:{port}/db?password={DB_PASSWORD}"),
    ] {
        for args in [&[][..], &["migrate"][..]] {
            let what = format!("{dsn_text} {args:?}");
            let run = run(&what, args, &[(DSN, &dsn_text)]);
            assert_eq!(run.code, Some(1), "{what}:\n{}", run.stderr);
            assert!(
                run.stderr.contains("did not answer"),
                "{what}:\n{}",
                run.stderr
            );
        }
    }
}

/// A fake PostgreSQL server that asks every client for its password in clear, records
/// it, and refuses the login (quoting the password back when `echo`).
struct RefusingServer {
    port: u16,
    received: Arc<Mutex<Vec<String>>>,
}

impl RefusingServer {
    fn start(echo: bool) -> RefusingServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake server");
        let port = listener.local_addr().expect("local address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sink = Arc::clone(&sink);
                thread::spawn(move || {
                    if let Some(password) = refuse_login(stream, echo) {
                        sink.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(password);
                    }
                });
            }
        });
        RefusingServer { port, received }
    }

    fn received(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One message of the start-up phase: a 4-byte length (itself included), then the body.
fn read_untyped(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let len = usize::try_from(u32::from_be_bytes(len))
        .ok()?
        .checked_sub(4)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

/// Plays the server's side of a login up to the refusal; returns the password received.
fn refuse_login(mut stream: TcpStream, echo: bool) -> Option<String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut startup = read_untyped(&mut stream)?;
    // An SSLRequest (code 80877103) first: no TLS here.
    if startup == 80_877_103u32.to_be_bytes() {
        stream.write_all(b"N").ok()?;
        startup = read_untyped(&mut stream)?;
    }
    drop(startup);
    // AuthenticationCleartextPassword.
    stream.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).ok()?;
    let mut tag = [0u8; 1];
    stream.read_exact(&mut tag).ok()?;
    let body = read_untyped(&mut stream)?;
    let password = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).into_owned();
    let message = if echo {
        format!("password authentication failed: \"{password}\" is wrong")
    } else {
        "password authentication failed for user \"u\"".to_string()
    };
    let mut fields = Vec::new();
    for (code, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "28P01"),
        (b'M', message.as_str()),
    ] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut reply = vec![b'E'];
    reply.extend_from_slice(&u32::try_from(fields.len() + 4).ok()?.to_be_bytes());
    reply.extend_from_slice(&fields);
    stream.write_all(&reply).ok()?;
    Some(password)
}

#[test]
fn a_refused_login_is_reported_without_the_password_even_when_the_server_quotes_it() {
    for echo in [false, true] {
        let server = RefusingServer::start(echo);
        let port = server.port;
        for dsn_text in [
            format!("postgresql://u:{DB_PASSWORD}@127.0.0.1:{port}/db"),
            format!("host=127.0.0.1 port={port} user=u password={DB_PASSWORD} dbname=db"),
        ] {
            for args in [&[][..], &["migrate"][..]] {
                let what = format!("echo {echo}: {dsn_text} {args:?}");
                let run = run(&what, args, &[(DSN, &dsn_text)]);
                assert_eq!(run.code, Some(1), "{what}:\n{}", run.stderr);
                assert!(
                    run.stderr.contains("password authentication failed"),
                    "{what}:\n{}",
                    run.stderr
                );
            }
        }
        // The password did reach the server: the refusal was about it.
        let received = server.received();
        assert!(!received.is_empty(), "the fake server got no login");
        assert!(received.iter().all(|p| p == DB_PASSWORD), "{received:?}");
    }
}

#[test]
fn an_unknown_database_is_reported_without_the_password() {
    let db = TestDb::create();
    let hosts = dsn::host_list(&db.config());
    let user = db.config().get_user().unwrap_or("postgres").to_string();
    let dsn_text = format!(
        "postgresql://{user}:{DB_PASSWORD}@{hosts}/{}_missing",
        db.name()
    );
    for args in [&[][..], &["migrate"][..]] {
        let run = run(
            &format!("unknown database {args:?}"),
            args,
            &[(DSN, &dsn_text)],
        );
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
    }
}

/// The DSN of `db` with a password in it (the test server ignores it: trust), in both forms.
fn dsns_with_password(db: &TestDb) -> [String; 2] {
    let config = db.config();
    let user = config.get_user().unwrap_or("postgres").to_string();
    let hosts = dsn::host_list(&config);
    let addr = db.server_addr();
    [
        format!("postgresql://{user}:{DB_PASSWORD}@{hosts}/{}", db.name()),
        format!(
            "host={} port={} user={user} password='{DB_PASSWORD}' dbname={}",
            addr.ip(),
            addr.port(),
            db.name()
        ),
    ]
}

#[test]
fn migrate_succeeds_without_printing_the_password() {
    let db = TestDb::create();
    let [url, key_value] = dsns_with_password(&db);
    let first = run("migrate (URL)", &["migrate"], &[(DSN, &url)]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert!(first.stdout.contains("applied"), "{}", first.stdout);
    let again = run("migrate (key=value)", &["migrate"], &[(DSN, &key_value)]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again.stdout.contains("up to date"), "{}", again.stdout);
}

#[test]
fn a_running_service_shows_no_password_in_its_log_or_its_answers() {
    let rows = [
        ("EURUSD", "1.1", "1.2"),
        ("USDJPY", "150.1", "150.2"),
        ("GBPUSD", "1.3", "1.4"),
        ("AUDUSD", "0.6", "0.7"),
        ("USDCAD", "1.35", "1.36"),
    ];
    let body = rates_body(&rows);
    let feed = FakeFeed::scripted(move |_| Reply::Ok(body.clone()));
    let feed_url = format!(
        "http://feeduser:{FEED_PASSWORD}@{}/rates?token={FEED_TOKEN}",
        feed.addr
    );
    let db = TestDb::create();
    for dsn_text in dsns_with_password(&db) {
        let mut server = Server::start(&[(DSN, &dsn_text), (RATES_URL, &feed_url)]);
        // A tick from the feed, so that the answers hold a real feed state.
        let mut client = server.client();
        client.subscribe_history(1);
        client.recv_point();
        let mut answers = Vec::new();
        for path in ["/health", "/metrics", "/", "/nowhere"] {
            let response = server.request(&format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
            answers.push(format!("{path}: {}\n{}", response.head, response.text()));
        }
        let (status, health) = server.health();
        assert_eq!(status, 200, "{health}");
        assert!(
            health["feed"]["source"]
                .as_str()
                .is_some_and(|s| s.contains(&feed.addr.to_string())),
            "{health}"
        );
        drop(client);
        let log = server.stop_and_log();
        assert_no_secret("/health, /metrics, / and a 404", &answers.join("\n"));
        assert_no_secret("the log", &log);
        assert!(log.contains("listening on"), "{log}");
    }
    // The feed was asked with the credentials: they were used, just never shown.
    let requests = feed.requests();
    assert!(!requests.is_empty(), "the feed was never asked");
    assert!(
        requests
            .iter()
            .any(|head| head.to_ascii_lowercase().contains("authorization: basic")),
        "{requests:?}"
    );
}
