//! Schema migrations: the SQL files in `sql/`, embedded in the binary and applied in order.
//!
//! Each file runs in its own transaction and is recorded in `schema_migrations` with a
//! checksum of its text; an applied file that later changed is refused, naming the file.
//! A session-level advisory lock around the whole apply lets several instances start at
//! once: the first applies, the others wait and then find nothing left to do.
//! Because every file runs inside a transaction, statements that refuse to run in one
//! (`CREATE INDEX CONCURRENTLY`, `VACUUM`) do not belong in a migration.

use std::collections::BTreeMap;

use super::StoreError;
use super::pgerror::{classify, error_text};

/// One migration file: `sql/{name}.sql`, where `name` starts with the zero-padded version.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Position in the apply order; the `NNNN` of the file name.
    pub version: i32,
    /// File name without directory and `.sql`, e.g. `0001_init`.
    pub name: &'static str,
    /// The file's text.
    pub sql: &'static str,
}

impl Migration {
    /// The path shown in messages, e.g. `sql/0001_init.sql`.
    pub fn file(&self) -> String {
        format!("sql/{}.sql", self.name)
    }

    /// The checksum recorded when this migration is applied.
    pub fn checksum(&self) -> String {
        checksum(self.sql)
    }
}

/// Every migration this build knows, in apply order. Add new files here, and only here.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "0001_init",
    sql: include_str!("../../sql/0001_init.sql"),
}];

/// A migration applied by this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The migration's version.
    pub version: i32,
    /// The migration's name, e.g. `0001_init`.
    pub name: &'static str,
}

/// The table that records applied migrations.
pub const TABLE: &str = "schema_migrations";

/// Advisory lock key held while migrations are applied (ASCII `ws_asmig`).
pub const LOCK_KEY: i64 = 0x7773_5f61_736d_6967;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Applies every pending migration of this build; returns the ones applied now, in order.
pub fn apply(client: &mut postgres::Client) -> Result<Vec<Applied>, StoreError> {
    apply_set(client, MIGRATIONS)
}

/// Succeeds when every migration of this build is applied unchanged.
///
/// For start-up with auto-apply off: a schema that is behind gives
/// [`StoreError::SchemaBehind`] naming the pending files; a changed file gives
/// [`StoreError::Migration`].
pub fn check(client: &mut postgres::Client) -> Result<(), StoreError> {
    check_set(client, MIGRATIONS)
}

/// [`apply`] for an explicit list, so tests and tools can use their own files.
pub fn apply_set(
    client: &mut postgres::Client,
    set: &[Migration],
) -> Result<Vec<Applied>, StoreError> {
    validate_order(set)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .map_err(|e| classify(&e))?;
    let result = apply_locked(client, set);
    if let Err(e) = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]) {
        // The lock dies with the session; the caller's next use of this client fails anyway.
        log::warn!("could not release the migration lock: {}", error_text(&e));
    }
    result
}

/// [`check`] for an explicit list.
pub fn check_set(client: &mut postgres::Client, set: &[Migration]) -> Result<(), StoreError> {
    validate_order(set)?;
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .and_then(|row| row.try_get(0))
        .map_err(|e| classify(&e))?;
    let recorded = if exists {
        read_recorded(client)?
    } else {
        BTreeMap::new()
    };
    let pending = pending(set, &recorded)?;
    if pending.is_empty() {
        return Ok(());
    }
    let files: Vec<String> = pending.iter().map(|m| m.file()).collect();
    Err(StoreError::SchemaBehind(format!(
        "the database schema is behind this build: {} pending migration(s): {}",
        files.len(),
        files.join(", ")
    )))
}

fn apply_locked(
    client: &mut postgres::Client,
    set: &[Migration],
) -> Result<Vec<Applied>, StoreError> {
    client
        .batch_execute(CREATE_TABLE)
        .map_err(|e| classify(&e))?;
    let recorded = read_recorded(client)?;
    let mut applied = Vec::new();
    for migration in pending(set, &recorded)? {
        apply_one(client, migration)?;
        log::info!("applied migration {}", migration.file());
        applied.push(Applied {
            version: migration.version,
            name: migration.name,
        });
    }
    Ok(applied)
}

fn apply_one(client: &mut postgres::Client, migration: &Migration) -> Result<(), StoreError> {
    let failed = |e: postgres::Error| match classify(&e) {
        StoreError::Unavailable(why) => {
            StoreError::Unavailable(format!("while applying {}: {why}", migration.file()))
        }
        _ => StoreError::Migration(format!("{}: {}", migration.file(), error_text(&e))),
    };
    let mut tx = client.transaction().map_err(failed)?;
    tx.batch_execute(migration.sql).map_err(failed)?;
    tx.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        &[&migration.version, &migration.name, &migration.checksum()],
    )
    .map_err(failed)?;
    tx.commit().map_err(failed)
}

/// Recorded version -> checksum.
fn read_recorded(client: &mut postgres::Client) -> Result<BTreeMap<i32, String>, StoreError> {
    let rows = client
        .query(
            "SELECT version, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .map_err(|e| classify(&e))?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, postgres::Error>>()
        .map_err(|e| classify(&e))
}

/// The migrations of `set` not yet recorded, after refusing any recorded one that changed.
fn pending<'a>(
    set: &'a [Migration],
    recorded: &BTreeMap<i32, String>,
) -> Result<Vec<&'a Migration>, StoreError> {
    for (version, sum) in recorded {
        match set.iter().find(|m| m.version == *version) {
            Some(m) if m.checksum() != *sum => {
                return Err(StoreError::Migration(format!(
                    "{} was changed after it was applied (recorded checksum {sum}, file now {}); \
                     restore the applied text and put changes in a new migration file",
                    m.file(),
                    m.checksum()
                )));
            }
            Some(_) => {}
            None => log::warn!(
                "the database has migration version {version}, which this build does not know; \
                 it was applied by a newer build"
            ),
        }
    }
    Ok(set
        .iter()
        .filter(|m| !recorded.contains_key(&m.version))
        .collect())
}

/// Refuses a list whose versions are not positive and strictly increasing.
fn validate_order(set: &[Migration]) -> Result<(), StoreError> {
    let mut last = 0;
    for m in set {
        if m.version <= last {
            return Err(StoreError::Migration(format!(
                "{} is out of order: versions must be positive and increasing",
                m.file()
            )));
        }
        last = m.version;
    }
    Ok(())
}

/// FNV-1a 64 of the text with line endings normalised to `\n`, as 16 hex digits.
///
/// Stable across builds and platforms (a CRLF checkout hashes the same); it guards against
/// accidental edits, not against tampering.
pub fn checksum(text: &str) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let bytes = text.as_bytes();
    for (i, &byte) in bytes.iter().enumerate() {
        if byte == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            continue;
        }
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_fnv1a_64() {
        // Reference values of the FNV-1a 64-bit hash.
        assert_eq!(checksum(""), "cbf29ce484222325");
        assert_eq!(checksum("a"), "af63dc4c8601ec8c");
        assert_eq!(checksum("foobar"), "85944171f73967e8");
    }

    #[test]
    fn checksum_ignores_crlf_but_not_content() {
        assert_eq!(checksum("a\r\nb\r\n"), checksum("a\nb\n"));
        assert_ne!(checksum("a\nb\n"), checksum("a\nc\n"));
        assert_ne!(checksum("a\rb"), checksum("ab"));
    }

    #[test]
    fn embedded_list_matches_the_sql_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{}.sql", m.name))
            .collect();
        assert_eq!(
            files, listed,
            "every sql/*.sql file must be listed in MIGRATIONS"
        );
        for m in MIGRATIONS {
            let on_disk = std::fs::read_to_string(dir.join(format!("{}.sql", m.name)))
                .unwrap_or_else(|e| panic!("{}: {e}", m.file()));
            assert_eq!(on_disk, m.sql, "{} is not the embedded text", m.file());
            assert_eq!(
                m.name.get(..4),
                Some(format!("{:04}", m.version).as_str()),
                "{} must start with its zero-padded version",
                m.file()
            );
            assert_eq!(m.name.as_bytes().get(4), Some(&b'_'), "{}", m.file());
        }
        assert!(validate_order(MIGRATIONS).is_ok());
    }

    #[test]
    fn out_of_order_lists_are_refused() {
        let set = [
            Migration {
                version: 2,
                name: "0002_b",
                sql: "",
            },
            Migration {
                version: 2,
                name: "0002_c",
                sql: "",
            },
        ];
        match validate_order(&set) {
            Err(StoreError::Migration(why)) => assert!(why.contains("sql/0002_c.sql"), "{why}"),
            other => panic!("expected a Migration error, got {other:?}"),
        }
    }

    #[test]
    fn pending_skips_recorded_and_refuses_changed_files() {
        let set = [
            Migration {
                version: 1,
                name: "0001_a",
                sql: "select 1",
            },
            Migration {
                version: 2,
                name: "0002_b",
                sql: "select 2",
            },
        ];
        let mut recorded = BTreeMap::new();
        recorded.insert(1, checksum("select 1"));
        recorded.insert(7, "from a newer build".to_string());
        let names: Vec<&str> = match pending(&set, &recorded) {
            Ok(list) => list.iter().map(|m| m.name).collect(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(names, ["0002_b"]);

        recorded.insert(2, checksum("select 2 -- edited"));
        match pending(&set, &recorded) {
            Err(StoreError::Migration(why)) => assert!(why.contains("sql/0002_b.sql"), "{why}"),
            other => panic!("expected a Migration error, got {other:?}"),
        }
    }
}
