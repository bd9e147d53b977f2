//! A throwaway PostgreSQL database for `--instances`: created on the admin connection
//! before the instances start, dropped (`WITH (FORCE)`) when the run ends, also when it
//! fails half-way.

use postgres::{Client, Config, NoTls};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use ws_assets::store::dsn;

/// Why the database could not be made.
#[derive(Debug)]
pub struct DbError(String);

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A database that exists for one run.
pub struct ThrowawayDb {
    name: String,
    admin: Config,
}

fn connect(admin: &Config) -> Result<Client, DbError> {
    dsn::with_service_defaults(admin)
        .connect(NoTls)
        .map_err(|e| {
            DbError(format!(
                "cannot reach PostgreSQL at {} ({}); start it or pass --dsn",
                dsn::redacted(admin),
                dsn::error_text(&e)
            ))
        })
}

impl ThrowawayDb {
    /// Creates `wsbench_PID_NANOS` through `admin_dsn` (a database the user may connect to
    /// with the right to create databases; without TLS, as for a local server).
    pub fn create(admin_dsn: &str) -> Result<ThrowawayDb, DbError> {
        let admin = dsn::parse(admin_dsn).map_err(|e| DbError(format!("--dsn: {e}")))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("wsbench_{}_{nanos}", std::process::id());
        connect(&admin)?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| DbError(format!("CREATE DATABASE {name}: {}", dsn::error_text(&e))))?;
        Ok(ThrowawayDb { name, admin })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A DSN for the instances: the admin's user, password and hosts, this database.
    pub fn dsn(&self) -> String {
        let mut text = String::from("postgresql://");
        if let Some(user) = self.admin.get_user() {
            text.push_str(&encode(user.as_bytes()));
            if let Some(password) = self.admin.get_password() {
                text.push(':');
                text.push_str(&encode(password));
            }
            text.push('@');
        }
        text.push_str(&dsn::host_list(&self.admin));
        text.push('/');
        text.push_str(&self.name);
        text
    }
}

fn encode(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Drop for ThrowawayDb {
    fn drop(&mut self) {
        let dropped = connect(&self.admin).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .map_err(|e| DbError(dsn::error_text(&e)))
        });
        if let Err(e) = dropped {
            eprintln!("wsbench: could not drop database {}: {e}", self.name);
        }
    }
}
