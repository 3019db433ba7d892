//! The state database: which mailboxes this tool manages and what it last confirmed.
//!
//! SQLite (bundled), one file next to the config. The schema is versioned with
//! `PRAGMA user_version` and migrated forward on open; a file from a newer version is
//! refused rather than guessed at. A pass reads everything once at the start and writes
//! once at the end, in one transaction, with only what mailcow confirmed: a pass that dies
//! midway leaves the previous state, and the next pass converges from there.

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::core::aliases::AliasDelta;
use crate::core::model::{AliasState, Counts, ManagedAlias, ManagedMailbox, ManagedRows};
use crate::core::plan::StateDelta;
use crate::core::sender_acl::{GrantState, SenderGrant};
use crate::edge::random::random_bytes;
use crate::error::{Error, Result};

/// Forward migrations: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 → 1
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
     CREATE TABLE mailbox (
         uid TEXT PRIMARY KEY,
         address TEXT NOT NULL,
         dn TEXT NOT NULL,
         name TEXT,
         quota_mib INTEGER,
         active INTEGER,
         tls_in INTEGER,
         tls_out INTEGER,
         password_fp TEXT,
         first_seen INTEGER NOT NULL,
         last_seen INTEGER NOT NULL,
         disabled_at INTEGER
     );
     CREATE INDEX mailbox_address ON mailbox(address);
     CREATE TABLE run (
         id INTEGER PRIMARY KEY,
         started INTEGER NOT NULL,
         finished INTEGER NOT NULL,
         exit_code INTEGER NOT NULL,
         dry_run INTEGER NOT NULL DEFAULT 0,
         users INTEGER NOT NULL DEFAULT 0,
         created INTEGER NOT NULL DEFAULT 0,
         updated INTEGER NOT NULL DEFAULT 0,
         disabled INTEGER NOT NULL DEFAULT 0,
         deleted INTEGER NOT NULL DEFAULT 0,
         unchanged INTEGER NOT NULL DEFAULT 0,
         skipped INTEGER NOT NULL DEFAULT 0,
         failed INTEGER NOT NULL DEFAULT 0,
         message TEXT
     );
     CREATE TABLE failure (address TEXT PRIMARY KEY, uid TEXT, action TEXT NOT NULL, message TEXT NOT NULL, at INTEGER NOT NULL);",
    // 1 → 2: aliases this tool created (user aliases and group distribution aliases).
    "CREATE TABLE alias (address TEXT PRIMARY KEY, id INTEGER NOT NULL, goto TEXT NOT NULL, owner TEXT NOT NULL);
     ALTER TABLE mailbox ADD COLUMN authsource TEXT;",
    // 2 → 3: incremental passes. `reread`: entries an incremental pass reads again, since
    // LDAP resends only what changed: those the last pass skipped (with the next change),
    // and (`follow_up`) those whose change takes a second pass, e.g. a rename's other edits;
    // which kind of pass each run was, and why.
    "CREATE TABLE reread (dn TEXT PRIMARY KEY, follow_up INTEGER NOT NULL DEFAULT 0);
     CREATE INDEX mailbox_disabled ON mailbox(disabled_at) WHERE disabled_at IS NOT NULL;
     ALTER TABLE run ADD COLUMN kind TEXT;
     ALTER TABLE run ADD COLUMN why TEXT;",
    // 3 → 4: the mailcow template (`templates`) last applied to each mailbox, so that a
    // change of the user's template is seen and applied once.
    "ALTER TABLE mailbox ADD COLUMN template TEXT;",
    // 4 → 5: the domain admins this tool created (`domain_admins`), with the DN of the
    // group member each was made for; only these are ever edited or deleted.
    "CREATE TABLE domain_admin (username TEXT PRIMARY KEY, dn TEXT NOT NULL, created INTEGER NOT NULL);",
    // 5 → 6: the source (`sources`) that manages each mailbox; NULL = the `ldap` section, or
    // the first source.
    "ALTER TABLE mailbox ADD COLUMN source TEXT;",
    // 6 → 7: the send-as grants this tool made (`groups.as: "sender_acl"`): mailbox may send
    // as send_as for the group owner; only these are ever taken out of a mailbox's list.
    "CREATE TABLE sender_grant (mailbox TEXT NOT NULL, send_as TEXT NOT NULL, owner TEXT NOT NULL,
         PRIMARY KEY (mailbox, send_as));",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// `PRAGMA application_id` of a state database of this tool: "MLSY". It tells our file from
/// any other SQLite file at `state_file`, which must not be migrated in place.
pub const APPLICATION_ID: i32 = 0x4D4C_5359;

/// The tables the migrations create, and those the first one does.
const OUR_TABLES: &[&str] = &[
    "alias",
    "domain_admin",
    "failure",
    "mailbox",
    "meta",
    "reread",
    "run",
    "sender_grant",
];
const FIRST_TABLES: &[&str] = &["failure", "mailbox", "meta", "run"];

/// The original Python tool's one table (SQLAlchemy model `DbUser`) and its columns.
const ORIGINAL_TABLE: &str = "user";
const ORIGINAL_COLUMNS: &[&str] = &[
    "active",
    "first_name",
    "id",
    "last_name",
    "mail",
    "password",
    "quota",
    "tls_enforce_in",
    "tls_enforce_out",
    "uid",
];

/// What a SQLite file at `state_file` turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// Stamped with our application id.
    Ours,
    /// No tables, no schema version: a new file.
    Empty,
    /// Our tables and a schema version, from a build that did not stamp the id yet.
    OursUnstamped,
    /// The original tool's database (its `user` table alone).
    Original,
}

/// One finished pass, for the `run` table and `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunRecord {
    pub started: i64,
    pub finished: i64,
    pub exit_code: u8,
    pub users: usize,
    /// The summary counts (alias counts are not kept).
    pub counts: Counts,
    pub message: Option<String>,
    /// `"full"` or `"incremental"` (none: a pass before incremental passes existed, or one
    /// stopped before it knew).
    pub kind: Option<String>,
    /// Why this kind of pass ran (e.g. "first pass", "sync.full_every (1h) is over").
    pub why: Option<String>,
}

/// Where the directory's change tracking stood at the last pass: what the next incremental
/// pass reads from. Kept in `meta` as JSON; written in the pass's last transaction, so a pass
/// that dies keeps the previous mark and the next one reads those changes again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeMark {
    /// `"syncrepl"` or `"usn"`.
    pub kind: String,
    /// Which server and database the position belongs to (the base entry's entryUUID, or
    /// AD's dsServiceName and invocationId): another one means a full pass.
    pub server: String,
    /// The RFC 4533 cookie (hex), or the highestCommittedUSN.
    pub position: String,
    /// The fingerprint of the config that shaped the plan (mapping, filter, domains, …).
    pub config: String,
    /// When the last full pass started (unix seconds).
    pub last_full: i64,
    /// The users the last full pass read: what an incremental pass, which reads only the
    /// changed ones, reports as the directory's count (`run.users`, the metrics, `status`).
    #[serde(default)]
    pub users: usize,
}

/// An entry the next incremental pass reads again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reread {
    pub dn: String,
    /// Read next pass whatever changed (a change that takes two passes); otherwise only
    /// with other changes (an entry skipped, which another entry's change may resolve).
    pub follow_up: bool,
}

/// What a pass's last transaction writes besides its outcome.
#[derive(Debug, Default)]
pub struct PassEnd<'a> {
    /// The new change mark (none: leave it as it is).
    pub mark: Option<&'a ChangeMark>,
    /// Forget the mark: the next pass is full.
    pub clear_mark: bool,
    /// The entries to read again next pass (none: leave the table as it is).
    pub reread: Option<&'a [Reread]>,
}

/// An item that failed in the last pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    pub address: String,
    pub uid: Option<String>,
    pub action: String,
    pub message: String,
}

/// An open state database.
pub struct StateDb {
    conn: Connection,
    path: PathBuf,
    /// Opened read-only on the original tool's database, before any pass migrated it:
    /// it holds none of our tables, so it reads as an empty state (plus its `user` table).
    original_only: bool,
    /// The source whose rows are being written (`sources`); `None` = the `ldap` section.
    source: Option<String>,
}

/// The exclusive lock of a pass: held while this value lives.
#[derive(Debug)]
pub struct PassLock {
    _file: File,
}

/// Take the pass lock (`<state_file>.lock`), or fail at once with `Error::Locked`.
pub fn lock(state_file: &Path) -> Result<PassLock> {
    let mut name = state_file.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let file = owner_only()
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, "create the lock file", e))?;
    match try_lock_exclusive(&file) {
        Ok(true) => Ok(PassLock { _file: file }),
        Ok(false) => Err(Error::Locked(path)),
        Err(e) => Err(Error::io(&path, "lock", e)),
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: true if taken, false if another open file holds it. The lock
/// belongs to the open file, so the OS releases it when the file is closed or the process
/// dies, however it dies; a leftover lock file locks nothing. (What std's `File::try_lock`
/// does on Unix, which needs Rust 1.89; the floor is 1.87.)
#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock takes a descriptor and flags, no memory; `file` owns the descriptor
        // and outlives the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::WouldBlock => return Ok(false),
            std::io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

#[cfg(not(unix))]
fn try_lock_exclusive(_file: &File) -> std::io::Result<bool> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "the pass lock is implemented for Unix only",
    ))
}

/// Options that open a file for writing and create a missing one with mode 0600: the state
/// file holds password fingerprints and the directory's structure, and the lock file sits
/// beside it; neither is anyone else's business.
fn owner_only() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

impl StateDb {
    fn err(&self, what: &str, e: rusqlite::Error) -> Error {
        state_error(&self.path, what, e)
    }

    /// Open (creating and migrating as needed) for a pass that writes.
    pub fn open(path: &Path) -> Result<StateDb> {
        // A new file is created here rather than by SQLite, so that it is never readable by
        // others, not even until the chmod below. An existing one is left to SQLite.
        match owner_only().create_new(true).open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(path, "create the state database", e)),
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| state_error(path, "open", e))?;
        let store = StateDb {
            conn,
            path: path.to_owned(),
            original_only: false,
            source: None,
        };
        store.check_integrity()?;
        let identity = store.identify()?;
        if store.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return Err(Error::State {
                file: path.to_owned(),
                message: "is read-only; the tool must be able to write it (check the file's owner and mode)".into(),
            });
        }
        store.migrate()?;
        if identity != Identity::Ours {
            store
                .conn
                .execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}"))
                .map_err(|e| store.err("mark", e))?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // An older file may have been created with a looser mode: owner only.
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(store)
    }

    /// Open an existing database without writing anything (dry-run, status); `None` when
    /// there is no file yet.
    pub fn open_read_only(path: &Path) -> Result<Option<StateDb>> {
        if !path.exists() {
            return Ok(None);
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| state_error(path, "open", e))?;
        let store = StateDb {
            conn,
            path: path.to_owned(),
            original_only: false,
            source: None,
        };
        store.check_integrity()?;
        if store.identify()? == Identity::Original {
            return Ok(Some(StateDb {
                original_only: true,
                source: None,
                ..store
            }));
        }
        let version = store.version()?;
        if version > SCHEMA_VERSION {
            return Err(store.newer(version));
        }
        if version < SCHEMA_VERSION {
            // Old schema, read-only: a real pass will migrate it; until then it holds nothing we can read.
            return Err(Error::State {
                file: path.to_owned(),
                message: format!(
                    "has schema version {version}; run one pass (not --dry-run) to migrate it to {SCHEMA_VERSION}"
                ),
            });
        }
        Ok(Some(store))
    }

    fn version(&self) -> Result<u32> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err("read the schema version of", e))
    }

    /// Tell this tool's database from any other SQLite file, which is refused rather than
    /// migrated in place (a wrong `state_file` must not grow our tables into someone's data).
    fn identify(&self) -> Result<Identity> {
        let application_id: i32 = self
            .conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|e| self.err("read the application id of", e))?;
        if application_id == APPLICATION_ID {
            return Ok(Identity::Ours);
        }
        let tables = self.tables()?;
        let version = self.version()?;
        if application_id == 0 {
            let ours = |t: &String| OUR_TABLES.contains(&t.as_str()) || t == ORIGINAL_TABLE;
            if tables.is_empty() && version == 0 {
                return Ok(Identity::Empty);
            }
            let has = |name: &str| tables.iter().any(|t| t == name);
            if version > 0 && FIRST_TABLES.iter().all(|t| has(t)) && tables.iter().all(ours) {
                return Ok(Identity::OursUnstamped);
            }
            if version == 0 && tables == [ORIGINAL_TABLE] && self.columns(ORIGINAL_TABLE)? == ORIGINAL_COLUMNS {
                return Ok(Identity::Original);
            }
        }
        let tables = if tables.is_empty() {
            "none".to_owned()
        } else {
            tables.join(", ")
        };
        Err(Error::State {
            file: self.path.clone(),
            message: format!(
                "is not this tool's state database (SQLite application_id {application_id:#010x}, schema version {version}, tables: {tables}); nothing was changed in it: point state_file at another path"
            ),
        })
    }

    /// The names of the tables, sorted, without SQLite's own.
    fn tables(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name")
            .map_err(|e| self.err("read", e))?;
        let names = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err("read", e))?;
        names
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| self.err("read", e))
    }

    /// The column names of `table`, sorted.
    fn columns(&self, table: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY name")
            .map_err(|e| self.err("read", e))?;
        let names = stmt.query_map([table], |r| r.get(0)).map_err(|e| self.err("read", e))?;
        names
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| self.err("read", e))
    }

    fn newer(&self, version: u32) -> Error {
        Error::State {
            file: self.path.clone(),
            message: format!(
                "was written by a newer version of this tool (schema {version}, this build knows {SCHEMA_VERSION}); upgrade the tool"
            ),
        }
    }

    fn check_integrity(&self) -> Result<()> {
        // The check and the load read every page once, in order: a page cache of SQLite's
        // default (2 MB) would only hold pages never read again. 512 KiB. A transaction may
        // hold up to 640 changed pages (2.5 MiB) before it writes them out early, each time
        // after a sync of the journal: a chunk of 500 rows spread over a 100k state dirties
        // about 500 pages, and spilling them cost 44 fsyncs in a pass of 1000 renames.
        self.conn
            .execute_batch("PRAGMA cache_size = -512; PRAGMA cache_spill = 640")
            .map_err(|e| self.err("open", e))?;
        let verdict: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| self.err("check", e))?;
        if verdict != "ok" {
            return Err(Error::State {
                file: self.path.clone(),
                message: format!(
                    "is damaged ({verdict}); move it away to start afresh (mailboxes are then adopted again by address)"
                ),
            });
        }
        Ok(())
    }

    fn migrate(&self) -> Result<()> {
        let version = self.version()?;
        if version > SCHEMA_VERSION {
            return Err(self.newer(version));
        }
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let to = from + 1;
            let batch = format!("BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {to}; COMMIT;");
            self.conn.execute_batch(&batch).map_err(|e| {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.err(&format!("migrate to schema {to}"), e)
            })?;
        }
        Ok(())
    }

    /// The key of the password fingerprints, made on first use.
    pub fn fingerprint_key(&self) -> Result<Vec<u8>> {
        if self.original_only {
            return Ok(random_bytes(32));
        }
        let existing: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'fingerprint_key'", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err("read", e))?;
        if let Some(key) = existing {
            return Ok(key);
        }
        let key = random_bytes(32);
        if !self.is_read_only() {
            self.conn
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('fingerprint_key', ?1)",
                    params![key],
                )
                .map_err(|e| self.err("write", e))?;
        }
        Ok(key)
    }

    /// Every managed mailbox.
    /// Whether this handle may not write (dry-run, status).
    pub fn is_read_only(&self) -> bool {
        self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true)
    }

    pub fn load(&self) -> Result<ManagedRows> {
        if self.original_only {
            return Ok(ManagedRows::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT uid, address, dn, name, quota_mib, active, tls_in, tls_out, password_fp, first_seen, last_seen, disabled_at, authsource, template FROM mailbox ORDER BY uid")
            .map_err(|e| self.err("read", e))?;
        // Room for every row and its strings up front: grown by doubling, the arena and the
        // records took half as much again as they hold (the peak of a 100k pass).
        let (count, bytes): (i64, f64) = self
            .conn
            .query_row(
                "SELECT count(*), total(length(CAST(uid AS BLOB)) + length(CAST(address AS BLOB))
                     + length(CAST(dn AS BLOB)) + ifnull(length(CAST(name AS BLOB)), 0)) FROM mailbox",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err("read", e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err("read", e))?;
        // Rows come sorted by uid and are packed one at a time: no row list is ever held.
        let mut state = ManagedRows::with_capacity(count.max(0) as usize, bytes.max(0.0) as usize);
        while let Some(r) = rows.next().map_err(|e| self.err("read", e))? {
            let row = read_row(r).map_err(|e| self.err("read", e))?;
            state.push_sorted(&row);
        }
        state.index();
        Ok(state)
    }

    /// Every alias this tool created.
    pub fn load_aliases(&self) -> Result<AliasState> {
        if self.original_only {
            return Ok(AliasState::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT address, id, goto, owner FROM alias")
            .map_err(|e| self.err("read", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ManagedAlias {
                    address: r.get(0)?,
                    id: r.get::<_, i64>(1)?.max(0) as u64,
                    goto: r.get(2)?,
                    owner: r.get(3)?,
                })
            })
            .map_err(|e| self.err("read", e))?;
        let mut out = AliasState::new();
        for row in rows {
            let row = row.map_err(|e| self.err("read", e))?;
            out.insert(row.address.clone(), row);
        }
        Ok(out)
    }

    /// The send-as grants this tool made.
    pub fn load_grants(&self) -> Result<GrantState> {
        if self.original_only {
            return Ok(GrantState::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT mailbox, send_as, owner FROM sender_grant ORDER BY mailbox, send_as")
            .map_err(|e| self.err("read", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(SenderGrant {
                    mailbox: r.get(0)?,
                    send_as: r.get(1)?,
                    owner: r.get(2)?,
                })
            })
            .map_err(|e| self.err("read", e))?;
        let mut out = GrantState::new();
        for row in rows {
            out.push(row.map_err(|e| self.err("read", e))?);
        }
        Ok(out)
    }

    /// The domain admins this tool created: username → member DN.
    pub fn load_domain_admins(&self) -> Result<crate::core::admins::ManagedAdmins> {
        if self.original_only {
            return Ok(Default::default());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT username, dn FROM domain_admin")
            .map_err(|e| self.err("read", e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.err("read", e))?;
        let mut out = crate::core::admins::ManagedAdmins::new();
        for row in rows {
            let (username, dn) = row.map_err(|e| self.err("read", e))?;
            out.insert(username, dn);
        }
        Ok(out)
    }

    /// Record what mailcow confirmed of the domain admins, in one transaction: `put`
    /// (username, DN) created, `delete` removed or forgotten.
    pub fn commit_domain_admins(&mut self, put: &[(String, String)], delete: &[String], now: i64) -> Result<()> {
        if put.is_empty() && delete.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| state_error(&path, "write", e);
        let tx = self.conn.transaction().map_err(fail)?;
        for username in delete {
            tx.execute("DELETE FROM domain_admin WHERE username = ?1", params![username])
                .map_err(fail)?;
        }
        for (username, dn) in put {
            tx.execute(
                "INSERT OR REPLACE INTO domain_admin (username, dn, created) VALUES (?1, ?2, ?3)",
                params![username, dn, now],
            )
            .map_err(fail)?;
        }
        tx.commit().map_err(fail)
    }

    /// The original tool's rows (its uid, the entry's DN, and the address), when its `user`
    /// table is in this file.
    pub fn original_tool_rows(&self) -> Result<Vec<(String, String)>> {
        let columns = self.columns(ORIGINAL_TABLE)?;
        if !(columns.iter().any(|c| c == "mail") && columns.iter().any(|c| c == "uid")) {
            return Ok(Vec::new());
        }
        let err = |e| self.err("read the original tool's table `user` of", e);
        let mut stmt = self
            .conn
            .prepare("SELECT uid, mail FROM user WHERE mail IS NOT NULL AND trim(mail) <> '' ORDER BY id")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                let mail = r.get::<_, String>(1)?.trim().to_ascii_lowercase();
                let uid = r.get::<_, Option<String>>(0)?.filter(|u| !u.trim().is_empty());
                Ok((uid.unwrap_or_else(|| mail.clone()), mail))
            })
            .map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    /// Record mailboxes taken over from the original tool (uid = the DN it recorded,
    /// address) as managed rows, in one transaction; a uid or an address already managed is
    /// left as it is. Returns how many were recorded.
    pub fn record_taken_over(&mut self, rows: &[(String, String)], now: i64) -> Result<usize> {
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| state_error(&path, "take over the original tool's mailboxes in", e);
        let tx = self.conn.transaction().map_err(fail)?;
        let mut taken = 0;
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO mailbox (uid, address, dn, first_seen, last_seen)
                     SELECT ?1, ?2, ?1, ?3, ?3
                     WHERE NOT EXISTS (SELECT 1 FROM mailbox WHERE uid = ?1 OR address = ?2)",
                )
                .map_err(fail)?;
            for (uid, mail) in rows {
                taken += insert.execute(params![uid, mail, now]).map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)?;
        Ok(taken)
    }

    /// Drop the original tool's table, and with it the password hashes it copied from LDAP,
    /// from the file: VACUUM rewrites it, so that no freed page keeps one.
    pub fn drop_original_tool_table(&mut self) -> Result<()> {
        if self.columns(ORIGINAL_TABLE)?.is_empty() {
            return Ok(());
        }
        self.conn
            .execute_batch(&format!("DROP TABLE \"{ORIGINAL_TABLE}\"; VACUUM;"))
            .map_err(|e| self.err("drop the original tool's table `user` of", e))
    }

    /// Write the row changes of one part of a pass (what mailcow confirmed) in one
    /// transaction, so that a pass holds one part at a time and a pass cut short keeps
    /// what it confirmed.
    pub fn commit_rows(&mut self, delta: &StateDelta) -> Result<()> {
        if delta.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let fail = |what: &str, e: rusqlite::Error| state_error(&path, what, e);
        let tx = self.conn.transaction().map_err(|e| fail("write", e))?;
        write_rows(&tx, delta, self.source.as_deref()).map_err(|e| fail("write", e))?;
        tx.commit().map_err(|e| fail("write", e))
    }

    /// Write the end of a pass in one transaction (its rows went in with
    /// [`StateDb::commit_rows`]): the alias changes, the failures of this pass (replacing
    /// the last pass's), and the run record.
    pub fn commit(
        &mut self,
        aliases: &AliasDelta,
        failures: &[FailureRecord],
        run: &RunRecord,
        end: &PassEnd<'_>,
    ) -> Result<()> {
        let path = self.path.clone();
        let fail = |what: &str, e: rusqlite::Error| state_error(&path, what, e);
        let tx = self.conn.transaction().map_err(|e| fail("write", e))?;
        write_pass_end(&tx, end).map_err(|e| fail("write", e))?;
        {
            let mut drop_alias = tx
                .prepare_cached("DELETE FROM alias WHERE address = ?1")
                .map_err(|e| fail("write", e))?;
            for address in &aliases.delete {
                drop_alias.execute(params![address]).map_err(|e| fail("write", e))?;
            }
            let mut put_alias = tx
                .prepare_cached("INSERT OR REPLACE INTO alias (address, id, goto, owner) VALUES (?1, ?2, ?3, ?4)")
                .map_err(|e| fail("write", e))?;
            for a in &aliases.put {
                put_alias
                    .execute(params![a.address, a.id as i64, a.goto, a.owner])
                    .map_err(|e| fail("write", e))?;
            }
            for (mailbox, send_as) in &aliases.grants_delete {
                tx.execute(
                    "DELETE FROM sender_grant WHERE mailbox = ?1 AND send_as = ?2",
                    params![mailbox, send_as],
                )
                .map_err(|e| fail("write", e))?;
            }
            for g in &aliases.grants_put {
                tx.execute(
                    "INSERT OR REPLACE INTO sender_grant (mailbox, send_as, owner) VALUES (?1, ?2, ?3)",
                    params![g.mailbox, g.send_as, g.owner],
                )
                .map_err(|e| fail("write", e))?;
            }
            // Clearing a table that is already empty still rewrites its page: on flash, an
            // unchanged pass should write no more than its run record.
            let had_failures: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM failure)", [], |r| r.get(0))
                .map_err(|e| fail("write", e))?;
            if had_failures {
                tx.execute("DELETE FROM failure", []).map_err(|e| fail("write", e))?;
            }
            let mut failure = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO failure (address, uid, action, message, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| fail("write", e))?;
            for f in failures {
                failure
                    .execute(params![f.address, f.uid, f.action, f.message, run.finished])
                    .map_err(|e| fail("write", e))?;
            }
        }
        insert_run(&tx, run).map_err(|e| fail("write", e))?;
        tx.commit().map_err(|e| fail("write", e))
    }

    /// Record a pass that changed no rows (refused, or failed before applying).
    pub fn record_run(&mut self, run: &RunRecord) -> Result<()> {
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| state_error(&path, "write", e);
        let tx = self.conn.transaction().map_err(fail)?;
        insert_run(&tx, run).map_err(fail)?;
        tx.commit().map_err(fail)
    }

    /// The change mark the last pass left (none: the next pass is full).
    pub fn change_mark(&self) -> Result<Option<ChangeMark>> {
        if self.original_only {
            return Ok(None);
        }
        let text: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'change_mark'", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err("read", e))?;
        // A mark this build cannot read only costs a full pass.
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// The entries the last pass left to be read again.
    pub fn reread(&self) -> Result<Vec<Reread>> {
        if self.original_only {
            return Ok(Vec::new());
        }
        read_reread(&self.conn).map_err(|e| self.err("read", e))
    }

    /// The rows an incremental pass plans with, found by the index instead of loading all:
    /// those of these uids and of these addresses; with `due_before`, those disabled at or
    /// before it (their grace may be over); with `retired`, those of users who moved to
    /// another domain and are not disabled yet.
    pub fn rows_for(
        &self,
        uids: &[&str],
        addresses: &[&str],
        due_before: Option<i64>,
        retired: bool,
    ) -> Result<ManagedRows> {
        if self.original_only {
            return Ok(ManagedRows::new());
        }
        const COLUMNS: &str = "uid, address, dn, name, quota_mib, active, tls_in, tls_out, password_fp, first_seen, last_seen, disabled_at, authsource, template";
        // One read transaction for all the lookups: each on its own would lock the file,
        // look for a hot journal and unlock again (2000 lookups for 1000 changed users).
        let _read = match self.conn.is_autocommit() {
            true => Some(self.conn.unchecked_transaction().map_err(|e| self.err("read", e))?),
            false => None,
        };
        let mut found = std::collections::BTreeMap::new();
        let mut collect = |sql: &str, value: &dyn rusqlite::ToSql| -> Result<()> {
            let mut stmt = self
                .conn
                .prepare_cached(&format!("SELECT {COLUMNS} FROM mailbox WHERE {sql}"))
                .map_err(|e| self.err("read", e))?;
            let mut rows = stmt.query([value]).map_err(|e| self.err("read", e))?;
            while let Some(r) = rows.next().map_err(|e| self.err("read", e))? {
                let row = read_row(r).map_err(|e| self.err("read", e))?;
                found.insert(row.uid.clone(), row);
            }
            Ok(())
        };
        for uid in uids {
            collect("uid = ?1", uid)?;
        }
        for address in addresses {
            collect("address = ?1", address)?;
        }
        if let Some(before) = due_before {
            collect("disabled_at IS NOT NULL AND disabled_at <= ?1", &before)?;
        }
        if retired {
            // A range of the primary key (`;` follows `:`): no scan of the table.
            collect(
                "uid >= 'moved-from:' AND uid < 'moved-from;' AND disabled_at IS NULL AND ?1",
                &1,
            )?;
        }
        Ok(ManagedRows::from_rows(found.into_values()))
    }

    /// How many rows [`StateDb::each_enabled_row`] would stream, counted by SQLite (the
    /// disabled ones through their index).
    pub fn enabled_count(&self) -> Result<usize> {
        if self.original_only {
            return Ok(0);
        }
        self.conn
            .query_row(
                "SELECT (SELECT count(*) FROM mailbox) - (SELECT count(*) FROM mailbox WHERE disabled_at IS NOT NULL)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as usize)
            .map_err(|e| self.err("read", e))
    }

    /// Each row not disabled yet, as (uid, address), streamed in no particular order: the
    /// rows a removal may be planned for.
    pub fn each_enabled_row(&self, mut each: impl FnMut(&str, &str)) -> Result<()> {
        if self.original_only {
            return Ok(());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT uid, address FROM mailbox WHERE disabled_at IS NULL")
            .map_err(|e| self.err("read", e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err("read", e))?;
        // In the table's order (`ORDER BY uid` walks the uid index and looks up every row),
        // each value borrowed: an incremental pass in which a user may have left reads them all.
        while let Some(r) = rows.next().map_err(|e| self.err("read", e))? {
            let text = |i: usize| {
                r.get_ref(i)
                    .and_then(|v| v.as_str().map_err(Into::into))
                    .map_err(|e| self.err("read", e))
            };
            each(text(0)?, text(1)?);
        }
        Ok(())
    }

    /// The source the rows written from now on belong to (`sources`; `None` = the `ldap`
    /// section). A row written is the source's that wrote it.
    pub fn write_for_source(&mut self, source: Option<&str>) {
        self.source = source.map(str::to_owned);
    }

    /// The rows a named source manages, as (uid, source); rows of the `ldap` section (NULL)
    /// are not listed.
    pub fn row_sources(&self) -> Result<Vec<(String, String)>> {
        if self.original_only {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT uid, source FROM mailbox WHERE source IS NOT NULL")
            .map_err(|e| self.err("read", e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<(String, String)>>>())
            .map_err(|e| self.err("read", e))?;
        Ok(rows)
    }

    /// Record these rows as managed by these sources (users who moved between sources
    /// without any other change).
    pub fn set_row_sources(&mut self, rows: &[(String, String)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| state_error(&path, "write", e);
        let tx = self.conn.transaction().map_err(fail)?;
        {
            let mut set = tx
                .prepare_cached("UPDATE mailbox SET source = ?2 WHERE uid = ?1")
                .map_err(fail)?;
            for (uid, source) in rows {
                set.execute(params![uid, source]).map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)
    }

    /// Managed mailboxes per source (`None` = the `ldap` section or the first source):
    /// (source, managed, of them disabled).
    pub fn managed_by_source(&self) -> Result<Vec<(Option<String>, usize, usize)>> {
        if self.original_only {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT source, count(*), count(disabled_at) FROM mailbox GROUP BY source ORDER BY source IS NOT NULL, source",
            )
            .map_err(|e| self.err("read", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)?.max(0) as usize,
                    r.get::<_, i64>(2)?.max(0) as usize,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err("read", e))?;
        Ok(rows)
    }

    /// How many mailboxes are managed.
    pub fn managed_count(&self) -> Result<usize> {
        self.conn
            .query_row("SELECT count(*) FROM mailbox", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as usize)
            .map_err(|e| self.err("read", e))
    }

    /// When the last pass with exit code 0 finished.
    pub fn last_success(&self) -> Result<Option<i64>> {
        self.conn
            .query_row("SELECT max(finished) FROM run WHERE exit_code = 0", [], |r| r.get(0))
            .map_err(|e| self.err("read", e))
    }

    /// The last `n` runs, newest first.
    pub fn runs(&self, n: usize) -> Result<Vec<RunRecord>> {
        if self.original_only {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT started, finished, exit_code, users, created, updated, disabled, deleted, unchanged, skipped, failed, message, kind, why FROM run ORDER BY id DESC LIMIT ?1")
            .map_err(|e| self.err("read", e))?;
        let rows = stmt
            .query_map(params![n as i64], |r| {
                let count = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as usize);
                Ok(RunRecord {
                    started: r.get(0)?,
                    finished: r.get(1)?,
                    exit_code: r.get::<_, i64>(2)?.clamp(0, 255) as u8,
                    users: count(3)?,
                    counts: Counts {
                        created: count(4)?,
                        updated: count(5)?,
                        disabled: count(6)?,
                        deleted: count(7)?,
                        unchanged: count(8)?,
                        skipped: count(9)?,
                        failed: count(10)?,
                        ..Counts::default()
                    },
                    message: r.get(11)?,
                    kind: r.get(12)?,
                    why: r.get(13)?,
                })
            })
            .map_err(|e| self.err("read", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err("read", e))
    }

    /// The items that failed in the last pass.
    pub fn failures(&self) -> Result<Vec<FailureRecord>> {
        if self.original_only {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT address, uid, action, message FROM failure ORDER BY address")
            .map_err(|e| self.err("read", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(FailureRecord {
                    address: r.get(0)?,
                    uid: r.get(1)?,
                    action: r.get(2)?,
                    message: r.get(3)?,
                })
            })
            .map_err(|e| self.err("read", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err("read", e))
    }
}

/// One `mailbox` row, its columns in the order of [`StateDb::load`]'s query.
fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ManagedMailbox> {
    Ok(ManagedMailbox {
        uid: r.get(0)?,
        address: r.get(1)?,
        dn: r.get(2)?,
        name: r.get(3)?,
        quota_mib: r.get::<_, Option<i64>>(4)?.map(|q| q.max(0) as u64),
        active: r.get::<_, Option<i64>>(5)?.map(|a| a.clamp(0, 2) as u8),
        tls_in: r.get(6)?,
        tls_out: r.get(7)?,
        password_fp: r.get(8)?,
        first_seen: r.get(9)?,
        last_seen: r.get(10)?,
        disabled_at: r.get(11)?,
        authsource: r.get(12)?,
        template: r.get(13)?,
    })
}

/// The change mark and the DNs to read again, in the caller's transaction.
fn write_pass_end(tx: &rusqlite::Transaction<'_>, end: &PassEnd<'_>) -> rusqlite::Result<()> {
    if let Some(mark) = end.mark {
        let text = serde_json::to_string(mark).unwrap_or_default();
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('change_mark', ?1)",
            params![text],
        )?;
    } else if end.clear_mark {
        tx.execute("DELETE FROM meta WHERE key = 'change_mark'", [])?;
    }
    if let Some(wanted) = end.reread {
        let mut wanted = wanted.to_vec();
        wanted.sort();
        wanted.dedup_by(|a, b| a.dn == b.dn);
        // Unchanged (the usual case): no page is written.
        if read_reread(tx)? != wanted {
            tx.execute("DELETE FROM reread", [])?;
            let mut put = tx.prepare_cached("INSERT OR REPLACE INTO reread (dn, follow_up) VALUES (?1, ?2)")?;
            for r in &wanted {
                put.execute(params![r.dn, r.follow_up])?;
            }
        }
    }
    Ok(())
}

fn read_reread(conn: &Connection) -> rusqlite::Result<Vec<Reread>> {
    let mut stmt = conn.prepare_cached("SELECT dn, follow_up FROM reread ORDER BY dn, follow_up")?;
    let rows = stmt.query_map([], |r| {
        Ok(Reread {
            dn: r.get(0)?,
            follow_up: r.get(1)?,
        })
    })?;
    rows.collect()
}

/// Passes the `run` table keeps for `status` and the metrics: a 5-minute cron writes about
/// 100k a year, which a router's flash should not hold.
pub const KEPT_RUNS: i64 = 1000;

/// The table is pruned only once this many more have gathered, so that most passes touch
/// only the page their own record goes to.
const PRUNED_RUNS_AT_ONCE: i64 = 100;

/// Add a pass's record, and drop the oldest beyond [`KEPT_RUNS`], in the caller's transaction.
fn insert_run(conn: &Connection, run: &RunRecord) -> rusqlite::Result<()> {
    insert_run_row(conn, run)?;
    let (oldest, newest): (Option<i64>, Option<i64>) =
        conn.query_row("SELECT MIN(id), MAX(id) FROM run", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let over = oldest
        .zip(newest)
        .filter(|(oldest, newest)| newest - oldest + 1 > KEPT_RUNS + PRUNED_RUNS_AT_ONCE);
    if let Some((_, newest)) = over {
        conn.execute("DELETE FROM run WHERE id <= ?1", params![newest - KEPT_RUNS])?;
    }
    Ok(())
}

fn insert_run_row(conn: &Connection, run: &RunRecord) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO run (started, finished, exit_code, users, created, updated, disabled, deleted, unchanged, skipped, failed, message, kind, why)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            run.started,
            run.finished,
            i64::from(run.exit_code),
            run.users as i64,
            run.counts.created as i64,
            run.counts.updated as i64,
            run.counts.disabled as i64,
            run.counts.deleted as i64,
            run.counts.unchanged as i64,
            run.counts.skipped as i64,
            run.counts.failed as i64,
            run.message,
            run.kind,
            run.why
        ],
    )
}

fn state_error(path: &Path, what: &str, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let text = e.to_string();
    let code = e.sqlite_error_code();
    let message = match code {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            "is not a readable SQLite database (damaged?); move it away to start afresh (mailboxes are then adopted again by address)".to_owned()
        }
        Some(ErrorCode::ReadOnly) => format!("cannot {what} it: read-only ({text})"),
        Some(ErrorCode::DiskFull) => format!("cannot {what} it: the disk is full ({text})"),
        Some(ErrorCode::SystemIoFailure) => {
            format!("cannot {what} it: the disk is full, the file may not grow, or the disk failed ({text})")
        }
        _ => format!("cannot {what} it: {text}"),
    };
    Error::State {
        file: path.to_owned(),
        message,
    }
}

/// The row changes of a delta, inside the caller's transaction.
fn write_rows(tx: &rusqlite::Transaction<'_>, delta: &StateDelta, source: Option<&str>) -> rusqlite::Result<()> {
    let mut delete = tx.prepare_cached("DELETE FROM mailbox WHERE uid = ?1")?;
    for uid in &delta.delete {
        delete.execute(params![uid])?;
    }
    // A row that exists is updated where it stands: `INSERT OR REPLACE` deletes it and
    // appends it anew, which dirties its page, the last page and both indexes' pages, and
    // a 512 KiB page cache then spills (a journal sync each time) within one chunk.
    let mut update = tx.prepare_cached(
        "UPDATE mailbox SET address = ?2, dn = ?3, name = ?4, quota_mib = ?5, active = ?6, tls_in = ?7, tls_out = ?8,
         password_fp = ?9, first_seen = ?10, last_seen = ?11, disabled_at = ?12, authsource = ?13, template = ?14,
         source = ?15
         WHERE uid = ?1",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO mailbox (uid, address, dn, name, quota_mib, active, tls_in, tls_out, password_fp, first_seen, last_seen, disabled_at, authsource, template, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    for row in delta.put.values() {
        let values = params![
            row.uid,
            row.address,
            row.dn,
            row.name,
            row.quota_mib.map(|q| q as i64),
            row.active.map(i64::from),
            row.tls_in,
            row.tls_out,
            row.password_fp,
            row.first_seen,
            row.last_seen,
            row.disabled_at,
            row.authsource,
            row.template,
            source
        ];
        if update.execute(values)? == 0 {
            insert.execute(values)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("mls-state-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
        fn file(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn a_second_lock_fails_at_once_until_the_first_is_dropped() {
        let dir = Scratch::new("lock");
        let path = dir.file("state.sqlite3");
        let first = lock(&path).unwrap();
        // flock locks belong to the open file: a second open, even in this process, conflicts.
        assert!(matches!(lock(&path), Err(Error::Locked(_))));
        drop(first);
        let _again = lock(&path).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn state_and_lock_files_are_owner_only() {
        let dir = Scratch::new("mode");
        let path = dir.file("state.sqlite3");
        let _lock = lock(&path).unwrap();
        assert_eq!(mode(&dir.file("state.sqlite3.lock")), 0o600);
        StateDb::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        // An older file with a looser mode is tightened.
        let old = dir.file("old.sqlite3");
        std::fs::write(&old, b"").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        StateDb::open(&old).unwrap();
        assert_eq!(mode(&old), 0o600);
    }

    fn sqlite(path: &Path, sql: &str) {
        Connection::open(path).unwrap().execute_batch(sql).unwrap();
    }

    fn pragma(path: &Path, name: &str) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .unwrap()
    }

    fn tables_of(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(|n| n.unwrap()).collect()
    }

    /// The original tool's table as SQLAlchemy creates it.
    const ORIGINAL_SCHEMA: &str = "CREATE TABLE user (id INTEGER NOT NULL, uid VARCHAR, active BOOLEAN, mail VARCHAR, \
         first_name VARCHAR, last_name VARCHAR, password VARCHAR, quota INTEGER, tls_enforce_in BOOLEAN, \
         tls_enforce_out BOOLEAN, PRIMARY KEY (id));
         INSERT INTO user (id, uid, mail) VALUES (1, 'x', 'x@example.org');";

    #[track_caller]
    fn assert_ours(path: &Path) {
        assert_eq!(pragma(path, "application_id"), i64::from(APPLICATION_ID));
        assert_eq!(pragma(path, "user_version"), i64::from(SCHEMA_VERSION));
    }

    #[track_caller]
    fn assert_refused(path: &Path) {
        let before = std::fs::read(path).unwrap();
        for result in [StateDb::open(path).map(drop), StateDb::open_read_only(path).map(drop)] {
            let e = result.unwrap_err();
            assert!(matches!(e, Error::State { .. }), "{e}");
            assert_eq!(e.exit_code(), crate::error::exit::UNREACHABLE);
            let text = e.to_string();
            assert!(
                text.contains(&path.display().to_string()) && text.contains("is not this tool's state database"),
                "{text}"
            );
        }
        assert_eq!(std::fs::read(path).unwrap(), before, "a refused file is left as it was");
    }

    #[test]
    fn a_new_or_empty_file_is_initialised_and_stamped() {
        let dir = Scratch::new("new");
        let path = dir.file("new.sqlite3");
        StateDb::open(&path).unwrap();
        assert_ours(&path);
        let store = StateDb::open(&path).unwrap();
        assert!(store.original_tool_rows().unwrap().is_empty(), "no original table");
        drop(store);
        assert!(StateDb::open_read_only(&path).unwrap().is_some());
        let empty = dir.file("empty.sqlite3");
        std::fs::write(&empty, b"").unwrap();
        StateDb::open(&empty).unwrap();
        assert_ours(&empty);
    }

    #[test]
    fn a_schema_3_file_gains_the_template_column_and_keeps_its_rows() {
        let dir = Scratch::new("schema3");
        let path = dir.file("state.sqlite3");
        sqlite(
            &path,
            &format!(
                "{}; {}; {}; PRAGMA user_version = 3; INSERT INTO mailbox (uid, address, dn, first_seen, last_seen) VALUES ('u', 'u@example.org', 'uid=u', 1, 1);",
                MIGRATIONS[0], MIGRATIONS[1], MIGRATIONS[2]
            ),
        );
        let mut store = StateDb::open(&path).unwrap();
        let row = store.load().unwrap().get("u").unwrap();
        assert_eq!(row.template, None, "no template applied yet");
        let mut delta = StateDelta::default();
        delta.put.insert(
            "u".into(),
            ManagedMailbox {
                template: Some("Staff".into()),
                ..row
            },
        );
        store.commit_rows(&delta).unwrap();
        drop(store);
        assert_eq!(pragma(&path, "user_version"), i64::from(SCHEMA_VERSION));
        let store = StateDb::open(&path).unwrap();
        assert_eq!(
            store.load().unwrap().get("u").unwrap().template.as_deref(),
            Some("Staff")
        );
    }

    #[test]
    fn rows_are_updated_in_place_or_added_and_the_enabled_ones_counted() {
        let dir = Scratch::new("rows");
        let mut store = StateDb::open(&dir.file("state.sqlite3")).unwrap();
        let row = |uid: &str, disabled_at: Option<i64>| ManagedMailbox {
            uid: uid.into(),
            address: format!("{uid}@example.org"),
            dn: format!("uid={uid}"),
            name: Some(uid.into()),
            first_seen: 1,
            last_seen: 1,
            disabled_at,
            ..ManagedMailbox::default()
        };
        let mut delta = StateDelta::default();
        for (uid, disabled_at) in [("a", None), ("b", Some(5)), ("c", None)] {
            delta.put.insert(uid.into(), row(uid, disabled_at));
        }
        store.commit_rows(&delta).unwrap();
        let rowid = |store: &StateDb, uid: &str| -> i64 {
            store
                .conn
                .query_row("SELECT rowid FROM mailbox WHERE uid = ?1", [uid], |r| r.get(0))
                .unwrap()
        };
        let before = rowid(&store, "a");
        let mut delta = StateDelta::default();
        delta.put.insert(
            "a".into(),
            ManagedMailbox {
                name: Some("Renamed".into()),
                disabled_at: Some(9),
                ..row("a", None)
            },
        );
        delta.put.insert("d".into(), row("d", None));
        store.commit_rows(&delta).unwrap();
        assert_eq!(rowid(&store, "a"), before, "updated where it stands");
        let rows = store.load().unwrap();
        assert_eq!(rows.len(), 4);
        let a = rows.get("a").unwrap();
        assert_eq!((a.name.as_deref(), a.disabled_at), (Some("Renamed"), Some(9)));
        let mut enabled = Vec::new();
        store.each_enabled_row(|uid, _| enabled.push(uid.to_owned())).unwrap();
        enabled.sort();
        assert_eq!(enabled, ["c", "d"]);
        assert_eq!(store.enabled_count().unwrap(), 2);
    }

    #[test]
    fn an_older_unstamped_file_of_ours_is_migrated_and_stamped() {
        let dir = Scratch::new("older");
        let path = dir.file("state.sqlite3");
        sqlite(
            &path,
            &format!(
                "{}; PRAGMA user_version = 1; INSERT INTO mailbox (uid, address, dn, first_seen, last_seen) VALUES ('u', 'u@example.org', 'uid=u', 1, 1);",
                MIGRATIONS[0]
            ),
        );
        assert_eq!(pragma(&path, "application_id"), 0);
        let store = StateDb::open(&path).unwrap();
        assert_eq!(store.managed_count().unwrap(), 1);
        drop(store);
        assert_ours(&path);
    }

    #[test]
    fn the_original_tools_database_is_opened_as_before() {
        let dir = Scratch::new("original");
        let path = dir.file("mailcow.sqlite3");
        sqlite(&path, ORIGINAL_SCHEMA);
        let store = StateDb::open(&path).unwrap();
        assert_eq!(
            store.original_tool_rows().unwrap(),
            [("x".to_owned(), "x@example.org".to_owned())],
            "its mailboxes may be taken over"
        );
        drop(store);
        assert_ours(&path);
        // Read-only (a dry-run, status) before any pass migrated it: an empty state.
        let fresh = dir.file("fresh.sqlite3");
        sqlite(&fresh, ORIGINAL_SCHEMA);
        let before = std::fs::read(&fresh).unwrap();
        let store = StateDb::open_read_only(&fresh).unwrap().expect("a file");
        assert!(store.load().unwrap().is_empty() && store.runs(10).unwrap().is_empty());
        assert_eq!(store.original_tool_rows().unwrap().len(), 1);
        drop(store);
        assert_eq!(std::fs::read(&fresh).unwrap(), before, "read, not written");
        assert!(
            tables_of(&path).contains(&"user".to_owned()),
            "its table is not touched here"
        );
        let rows: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM user", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn a_foreign_application_id_is_refused() {
        let dir = Scratch::new("foreign");
        let path = dir.file("other.sqlite3");
        sqlite(&path, "PRAGMA application_id = 1234; CREATE TABLE notes (body TEXT);");
        assert_refused(&path);
        // Even with our tables in it: the id says whose file it is.
        let path = dir.file("other-with-our-tables.sqlite3");
        sqlite(
            &path,
            &format!(
                "{}; PRAGMA user_version = 1; PRAGMA application_id = 1234;",
                MIGRATIONS[0]
            ),
        );
        assert_refused(&path);
    }

    #[test]
    fn unknown_tables_are_refused() {
        let dir = Scratch::new("unknown");
        let path = dir.file("app.sqlite3");
        sqlite(
            &path,
            "CREATE TABLE customers (name TEXT); INSERT INTO customers VALUES ('a');",
        );
        assert_refused(&path);
        assert_eq!(tables_of(&path), ["customers"], "no table of ours was added");
        // A schema version with tables of someone else.
        let path = dir.file("versioned.sqlite3");
        sqlite(&path, "CREATE TABLE mailbox (x TEXT); PRAGMA user_version = 2;");
        assert_refused(&path);
        // Our tables beside another application's.
        let path = dir.file("mixed.sqlite3");
        sqlite(
            &path,
            &format!(
                "{}; CREATE TABLE customers (name TEXT); PRAGMA user_version = 1;",
                MIGRATIONS[0]
            ),
        );
        assert_refused(&path);
        // A `user` table that is not the original tool's.
        let path = dir.file("users.sqlite3");
        sqlite(
            &path,
            "CREATE TABLE user (uid TEXT PRIMARY KEY, mail TEXT, password TEXT);",
        );
        assert_refused(&path);
    }

    #[test]
    fn the_run_history_is_kept_bounded() {
        let dir = Scratch::new("runs");
        let path = dir.file("runs.sqlite3");
        let mut store = StateDb::open(&path).unwrap();
        // A thousand commits, each synced to disk, would take this test half a minute.
        store.conn.execute_batch("PRAGMA synchronous = OFF").unwrap();
        let count = |store: &StateDb| -> i64 {
            store
                .conn
                .query_row("SELECT COUNT(*) FROM run", [], |r| r.get(0))
                .unwrap()
        };
        let total = KEPT_RUNS + PRUNED_RUNS_AT_ONCE + 50;
        for started in 0..total {
            let run = RunRecord {
                started,
                finished: started,
                ..RunRecord::default()
            };
            // Both ways a pass is recorded: at its end, and when it stops early.
            if started % 2 == 0 {
                store
                    .commit(&AliasDelta::default(), &[], &run, &PassEnd::default())
                    .unwrap();
            } else {
                store.record_run(&run).unwrap();
            }
            assert!(count(&store) <= KEPT_RUNS + PRUNED_RUNS_AT_ONCE, "after run {started}");
        }
        // Pruned once, down to the newest KEPT_RUNS, which then grew by the rest.
        assert_eq!(count(&store), KEPT_RUNS + 49);
        assert_eq!(store.runs(1).unwrap()[0].started, total - 1, "the newest is kept");
        let oldest: i64 = store
            .conn
            .query_row("SELECT MIN(started) FROM run", [], |r| r.get(0))
            .unwrap();
        assert_eq!(oldest, total - KEPT_RUNS - 49);
    }

    #[test]
    fn the_original_tools_rows_are_recorded_once_and_its_table_dropped() {
        let dir = Scratch::new("takeover");
        let path = dir.file("mailcow.sqlite3");
        sqlite(&path, ORIGINAL_SCHEMA);
        let mut store = StateDb::open(&path).unwrap();
        let rows = store.original_tool_rows().unwrap();
        assert_eq!(store.record_taken_over(&rows, 7).unwrap(), 1);
        assert_eq!(store.record_taken_over(&rows, 8).unwrap(), 0, "already managed");
        assert_eq!(store.load().unwrap().get("x").unwrap().first_seen, 7);
        store.drop_original_tool_table().unwrap();
        assert!(store.original_tool_rows().unwrap().is_empty());
        assert!(!tables_of(&path).contains(&"user".to_owned()));
        store.drop_original_tool_table().unwrap();
    }
}
