//! PostgreSQL over TLS, through the real binary against the test PostgreSQL, which
//! `.ci/start-postgres` sets up to serve TLS with a certificate for `localhost` signed
//! by a test CA of its own; the CA's certificate is `ws_assets-ca.crt` in the directory of the
//! server's certificate file.
//!
//! Each mode is checked by what the server sees (`pg_stat_ssl` for the service's own
//! sessions) or by how start-up ends: `require` encrypts, `disable` does not, `verify-ca`
//! accepts the test CA as root and refuses another, `verify-full` accepts the name the
//! certificate carries and refuses an address it does not.

use crate::pgdb;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Exited, Server, run_to_exit};
use crate::pgdb::TestDb;
use postgres::NoTls;

/// Bound on a run expected to end by itself (`migrate`, a refused start-up).
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// Bound on the service opening its pooled sessions.
const SOON: Duration = Duration::from_secs(15);

fn admin() -> postgres::Client {
    pgdb::admin_config()
        .connect(NoTls)
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL: {e}"))
}

/// The certificate of the CA that signed the server's: `ws_assets-ca.crt` beside the server's
/// certificate file, where `.ci/start-postgres` puts it. Panics unless the server has
/// TLS on and the file is there.
fn test_ca() -> PathBuf {
    let mut admin = admin();
    let ssl: String = admin
        .query_one("SHOW ssl", &[])
        .and_then(|row| row.try_get(0))
        .unwrap_or_else(|e| panic!("SHOW ssl: {e}"));
    assert_eq!(
        ssl, "on",
        "the test PostgreSQL must serve TLS: run .ci/start-postgres"
    );
    let file: String = admin
        .query_one("SHOW ssl_cert_file", &[])
        .and_then(|row| row.try_get(0))
        .unwrap_or_else(|e| panic!("SHOW ssl_cert_file: {e}"));
    let ca = Path::new(&file).with_file_name("ws_assets-ca.crt");
    assert!(
        ca.is_file(),
        "no test CA at {} beside the server's certificate {file}: run .ci/start-postgres, \
         which makes one and a certificate for localhost signed by it",
        ca.display()
    );
    ca
}

/// `db`'s DSN with `host` in place of its host and `params` as its query.
fn dsn(db: &TestDb, host: &str, params: &str) -> String {
    let plain = db.dsn();
    let (scheme, rest) = plain.split_once("://").expect("a URL DSN");
    let (credentials, address) = rest.rsplit_once('@').map_or(("", rest), |(c, a)| (c, a));
    let (host_port, database) = address.split_once('/').expect("a database in the DSN");
    let port = host_port.rsplit_once(':').map_or("5432", |(_, port)| port);
    let at = if credentials.is_empty() { "" } else { "@" };
    format!("{scheme}://{credentials}{at}{host}:{port}/{database}?{params}")
}

fn dsn_var(dsn: &str) -> (&'static str, &str) {
    ("WS_ASSETS_POSTGRESQL_DSN", dsn)
}

/// An `application_name` unique to this test process and call, to find the service's
/// sessions in `pg_stat_activity`.
fn application_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "ws_assets_tls_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits until the server shows sessions named `application_name` and returns
/// `(sessions, encrypted sessions)`.
fn sessions(application_name: &str) -> (i64, i64) {
    let deadline = Instant::now() + SOON;
    loop {
        let row = admin()
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
                 WHERE a.application_name = $1",
                &[&application_name],
            )
            .unwrap_or_else(|e| panic!("pg_stat_ssl: {e}"));
        let counts: (i64, i64) = (row.get(0), row.get(1));
        if counts.0 > 0 || Instant::now() >= deadline {
            return counts;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the service on `dsn` and returns what the server sees of its sessions.
fn sessions_of_a_running_service(dsn: &str, application_name: &str) -> (i64, i64) {
    let server = Server::start(&[dsn_var(dsn)]);
    let counts = sessions(application_name);
    assert!(
        counts.0 > 0,
        "no session named {application_name}; log:\n{}",
        server.log()
    );
    counts
}

fn assert_migrated(run: &Exited) {
    assert_eq!(
        run.code,
        Some(0),
        "migrate failed:\n{}{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.contains("applied 0001_init"), "{}", run.stdout);
}

/// Starts the service on `db` at 127.0.0.1 with the TLS `params`, expects start-up to end
/// at once (no retrying) with exit code 1 and a message, not a panic; returns the message.
fn start_up_refusal(db: &TestDb, params: &str) -> String {
    refusal(&[dsn_var(&dsn(db, "127.0.0.1", params))])
}

/// Starts the service with `env`, expects start-up to end at once (no retrying) with exit
/// code 1 and a message, not a panic; returns the message.
fn refusal(env: &[(&str, &str)]) -> String {
    let run = run_to_exit(&[], env, RUN_LIMIT);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(!run.stderr.contains("listening on"), "{}", run.stderr);
    assert!(
        run.took < Duration::from_secs(10),
        "retried for {:?}",
        run.took
    );
    run.stderr
        .lines()
        .find(|line| line.contains("cannot start"))
        .unwrap_or_else(|| panic!("no start-up error in:\n{}", run.stderr))
        .to_string()
}

#[test]
fn require_encrypts_every_session() {
    test_ca();
    let db = TestDb::create();
    let name = application_name();
    let dsn = dsn(
        &db,
        "127.0.0.1",
        &format!("sslmode=require&application_name={name}"),
    )
    .replacen("postgresql://", "postgresql+asyncpg://", 1);
    let (all, encrypted) = sessions_of_a_running_service(&dsn, &name);
    assert_eq!(encrypted, all, "{all} session(s), {encrypted} encrypted");
}

#[test]
fn disable_connects_in_clear() {
    test_ca();
    let db = TestDb::create();
    let name = application_name();
    let dsn = dsn(
        &db,
        "127.0.0.1",
        &format!("sslmode=disable&application_name={name}"),
    );
    let (_, encrypted) = sessions_of_a_running_service(&dsn, &name);
    assert_eq!(encrypted, 0);
}

#[test]
fn verify_ca_accepts_a_certificate_the_root_signed_whatever_the_host_name() {
    let ca = test_ca();
    let db = TestDb::create();
    let root = ca.display();
    let dsn = dsn(
        &db,
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={root}"),
    );
    assert_migrated(&run_to_exit(&["migrate"], &[dsn_var(&dsn)], RUN_LIMIT));
}

#[test]
fn verify_full_accepts_the_name_the_certificate_carries() {
    let ca = test_ca();
    let db = TestDb::create();
    // The key=value form, with the name the server's certificate carries.
    let pairs = localhost_pairs(
        &db,
        &format!("sslmode=verify-full sslrootcert='{}'", ca.display()),
    );
    assert_migrated(&run_to_exit(&["migrate"], &[dsn_var(&pairs)], RUN_LIMIT));
}

/// `db`'s DSN as libpq `key=value` pairs by the name `localhost` (the name the server's
/// certificate carries), followed by `params`.
fn localhost_pairs(db: &TestDb, params: &str) -> String {
    let config = pgdb::admin_config();
    let mut pairs = format!(
        "host=localhost port={} dbname={} {params}",
        config.get_ports().first().copied().unwrap_or(5432),
        db.name(),
    );
    if let Some(user) = config.get_user() {
        pairs.push_str(&format!(" user={user}"));
    }
    if let Some(password) = config.get_password() {
        pairs.push_str(&format!(
            " password='{}'",
            String::from_utf8_lossy(password)
        ));
    }
    pairs
}

#[test]
fn verify_full_without_a_root_file_trusts_the_systems_roots() {
    // The system's roots are where SSL_CERT_FILE says, here the test CA alone.
    let ca = test_ca();
    let roots = ca.display().to_string();
    for params in [
        "sslmode=verify-full",
        "sslmode=verify-full sslrootcert=system",
    ] {
        let db = TestDb::create();
        let pairs = localhost_pairs(&db, params);
        let run = run_to_exit(
            &["migrate"],
            &[dsn_var(&pairs), ("SSL_CERT_FILE", &roots)],
            RUN_LIMIT,
        );
        assert_migrated(&run);
    }
}

#[test]
fn system_roots_that_did_not_sign_the_server_refuse_it() {
    test_ca();
    let dir = TempDir::new();
    let other_root = dir.path().join("other-ca.pem");
    make_self_signed_ca(&other_root);
    let message = refusal_with_system_roots(&other_root);
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("sslrootcert"), "{message}");
}

/// Starts the service on a fresh database with `sslmode=verify-full` by the name
/// `localhost` and the system's roots moved to `roots` (SSL_CERT_FILE); expects it to
/// refuse to start, and returns its message.
fn refusal_with_system_roots(roots: &Path) -> String {
    let db = TestDb::create();
    let roots = roots.display().to_string();
    refusal(&[
        dsn_var(&localhost_pairs(&db, "sslmode=verify-full")),
        ("SSL_CERT_FILE", &roots),
    ])
}

#[test]
fn no_system_roots_fail_at_start_up_saying_what_to_install() {
    test_ca();
    let dir = TempDir::new();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write an empty file");
    let message = refusal_with_system_roots(&empty);
    assert!(
        message.contains("no trusted root certificates found"),
        "{message}"
    );
    assert!(message.contains("sslrootcert=PATH"), "{message}");
}

#[test]
fn a_root_file_without_a_certificate_fails_at_start_up_naming_it() {
    test_ca();
    let dir = TempDir::new();
    let junk = dir.path().join("not-a-certificate.pem");
    std::fs::write(&junk, "this is not a certificate\n").expect("write a file");
    let db = TestDb::create();
    let message = start_up_refusal(
        &db,
        &format!("sslmode=verify-ca&sslrootcert={}", junk.display()),
    );
    assert!(
        message.contains(&format!("sslrootcert {} is not usable", junk.display())),
        "{message}"
    );
    assert!(message.contains("PEM certificates"), "{message}");
}

#[test]
fn verify_full_refuses_an_address_the_certificate_does_not_carry() {
    let ca = test_ca();
    let db = TestDb::create();
    let root = ca.display();
    let message = start_up_refusal(&db, &format!("sslmode=verify-full&sslrootcert={root}"));
    assert!(message.contains("not valid for name"), "{message}");
    assert!(message.contains("127.0.0.1"), "{message}");
    assert!(message.contains("localhost"), "{message}");
}

#[test]
fn verify_ca_with_another_root_fails_at_start_up_naming_the_problem() {
    test_ca();
    let dir = TempDir::new();
    let other_root = dir.path().join("other-ca.pem");
    make_self_signed_ca(&other_root);
    let db = TestDb::create();
    let root = other_root.display();
    let message = start_up_refusal(&db, &format!("sslmode=verify-ca&sslrootcert={root}"));
    assert!(message.contains("invalid peer certificate"), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("sslrootcert"), "{message}");
}

#[test]
fn an_unreadable_root_file_fails_at_start_up_naming_it() {
    let dir = TempDir::new();
    let missing = dir.path().join("missing.pem");
    let dsn = format!(
        "postgresql://postgres@127.0.0.1:1/none?sslmode=verify-full&sslrootcert={}",
        missing.display()
    );
    for args in [&[][..], &["migrate"][..]] {
        let run = run_to_exit(args, &[dsn_var(&dsn)], RUN_LIMIT);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("cannot read sslrootcert {}", missing.display())),
            "{args:?}: {}",
            run.stderr
        );
    }
}

/// Writes a fresh self-signed CA certificate, unrelated to the server's, to `path` with
/// openssl.
fn make_self_signed_ca(path: &Path) {
    let key = path.with_extension("key");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=ws_assets unrelated test CA"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (Debian: apt-get install openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ws_assets_tls_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
