//! Incremental passes (`ldap.incremental`): which kind of pass runs and why, and for an
//! incremental one the changed users, their rows and their mailboxes: the same inputs the
//! planner takes in a full pass, cut down to what changed, so that the plan, the guard and
//! the lifecycle rules are the full pass's own.
//!
//! What an incremental pass reads:
//! - LDAP: the entries changed since the stored mark (RFC 4533 refreshOnly with the cookie,
//!   or AD's `uSNChanged` above the stored `highestCommittedUSN`). When entries may have left
//!   (a deletion, a present phase, any USN step), the uids of the whole directory, one
//!   attribute each, so that a row is found gone only against a complete list; with
//!   `entryUUID` as the uid, the refresh's own list is that list (the uuids of its present
//!   phase, or of its deletions), and no second search is made. The entries
//!   of rows the changes touch (same address, due for deletion) and of entries skipped last
//!   time are read again one by one, so that duplicate and conflict rules see both sides.
//! - The state database: only those rows, by its indexes (a 100k state is never loaded).
//! - mailcow: nothing when nothing changed; else the domains and each affected mailbox by
//!   name (one list read instead when there are many, or a name nginx would mangle).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::cli::Cli;
use crate::config::{Config, Incremental, PasswordMode};
use crate::core::directory::{self, Directory, DirectoryBuilder};
use crate::core::model::{Domain, Mailboxes, ManagedMailbox, ManagedRows, RawEntry, domain_of};
use crate::core::policy::ChangesOnly;
use crate::edge::ldap::LdapConnection;
use crate::edge::ldap_dirsync;
use crate::edge::ldap_sync::{CookieCheck, SYNC_REQUEST_OID, SyncEnd, SyncItem, SyncUuid};
use crate::edge::mailcow::{MailcowApi, by_name_safe};
use crate::edge::state_db::{ChangeMark, Reread, StateDb};
use crate::error::{Error, Result};
use crate::ldap_read;

/// How the directory tells what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracking {
    /// RFC 4533 refreshOnly (OpenLDAP's syncprov).
    Syncrepl,
    /// Active Directory's `uSNChanged`.
    Usn,
    /// Active Directory's DirSync control (needs the replication right; `ldap_dirsync`).
    Dirsync,
}

impl Tracking {
    pub fn name(self) -> &'static str {
        match self {
            Tracking::Syncrepl => "syncrepl",
            Tracking::Usn => "usn",
            Tracking::Dirsync => "dirsync",
        }
    }
}

/// The kind of pass, for the report, `status` and the `run` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassKind {
    pub incremental: bool,
    pub why: String,
}

impl PassKind {
    pub fn name(&self) -> &'static str {
        if self.incremental { "incremental" } else { "full" }
    }

    fn full(why: impl Into<String>) -> PassKind {
        PassKind {
            incremental: false,
            why: why.into(),
        }
    }
}

/// Where a pass starts from, once LDAP is bound: the kind of pass, and the mark to store
/// if it ends well.
pub struct Start {
    pub tracking: Tracking,
    pub kind: PassKind,
    /// The stored mark an incremental pass reads from.
    pub previous: Option<ChangeMark>,
    /// The server's identity and position *before* this pass reads: changes made while it
    /// reads come again next pass instead of being lost.
    pub next: ChangeMark,
}

/// The fingerprint of every setting that shapes the plan of an unchanged user: when any
/// changes, the next pass is full.
pub fn config_fingerprint(config: &Config) -> String {
    let l = &config.ldap;
    let s = &config.sync;
    let mut text = format!(
        "{}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
        l.uri,
        l.search_base,
        l.search_filter,
        l.mapping,
        s.on_removed,
        s.delete_after_days,
        s.max_removals,
        s.password,
        s.authsource,
        s.tag,
        s.adopt,
        s.on_address_change,
        s.quota_unit,
        s.default_quota_mib,
        s.active_format,
        s.domains,
        config.mailcow.base_url,
    );
    // Only when set: a config without `access` keeps the mark it had.
    if let Some(access) = &config.access {
        text.push_str(&format!("|{access:?}"));
    }
    if let Some(templates) = &config.templates {
        text.push_str(&format!("|{templates:?}"));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Why this pass must read everything, before LDAP is contacted (`None`: it may be
/// incremental if the server agrees).
fn full_before_reading(
    config: &Config,
    cli: &Cli,
    db: Option<&StateDb>,
    mark: Option<&ChangeMark>,
    alias_sync: bool,
    now: i64,
) -> Result<Option<String>> {
    if cli.full {
        return Ok(Some("--full".into()));
    }
    if alias_sync {
        return Ok(Some("aliases or groups are synced: every pass is full".into()));
    }
    if !ldap_read::rule_groups(config).is_empty() {
        return Ok(Some(
            "access or template rules by group are on: every pass is full".into(),
        ));
    }
    // A group's membership is not an entry change LDAP reports for the users: the admin
    // group is read in full, and so is every pass while it is on.
    if config.domain_admins.is_some() {
        return Ok(Some(
            "domain_admins is on (its group is read in full): every pass is full".into(),
        ));
    }
    if config.sync.password == PasswordMode::Always {
        return Ok(Some("sync.password is \"always\": every pass sends every hash".into()));
    }
    if cli.override_filter.is_some() {
        return Ok(Some("--override-filter".into()));
    }
    let Some(db) = db else {
        return Ok(Some("first pass".into()));
    };
    if !db.original_tool_rows()?.is_empty() {
        return Ok(Some("the original tool's database is taken over first".into()));
    }
    let Some(mark) = mark else {
        return Ok(Some("first pass".into()));
    };
    if mark.config != config_fingerprint(config) {
        return Ok(Some(
            "the config changed (mapping, filter, domains or sync rules)".into(),
        ));
    }
    let every = config.sync.full_every.as_secs() as i64;
    if now.saturating_sub(mark.last_full) >= every {
        return Ok(Some(format!("sync.full_every ({}) is over", describe_duration(every))));
    }
    match db.runs(1)?.first() {
        Some(last) if last.exit_code != 0 => Ok(Some(format!("the last pass ended with exit code {}", last.exit_code))),
        _ => Ok(None),
    }
}

fn describe_duration(secs: i64) -> String {
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// What the server offers, for `"auto"`: RFC 4533 if its root DSE lists the control, else
/// `uSNChanged` if it is an Active Directory.
fn tracking_of(config: &Config, conn: &mut LdapConnection) -> Result<Option<Tracking>> {
    match config.ldap.incremental {
        Incremental::Off => Ok(None),
        Incremental::Syncrepl => Ok(Some(Tracking::Syncrepl)),
        Incremental::Usn => Ok(Some(Tracking::Usn)),
        Incremental::Dirsync => Ok(Some(Tracking::Dirsync)),
        Incremental::Auto => {
            let dse = conn.read_entry("", &["supportedControl", "highestCommittedUSN"])?;
            let Some(dse) = dse else { return Ok(None) };
            let offers_sync = dse
                .attrs
                .get("supportedcontrol")
                .is_some_and(|values| values.iter().any(|v| v == SYNC_REQUEST_OID.as_bytes()));
            Ok(if offers_sync {
                Some(Tracking::Syncrepl)
            } else if dse.attrs.contains_key("highestcommittedusn") {
                Some(Tracking::Usn)
            } else {
                None
            })
        }
    }
}

/// Decide the kind of pass and take the server's mark before anything is read. `None`:
/// incremental passes are off (or the server offers no change tracking, said in `notes`).
pub fn start(
    config: &Config,
    cli: &Cli,
    db: Option<&StateDb>,
    conn: &mut LdapConnection,
    alias_sync: bool,
    now: i64,
    notes: &mut Vec<String>,
) -> Result<Option<Start>> {
    let Some(tracking) = tracking_of(config, conn)? else {
        if config.ldap.incremental == Incremental::Auto {
            notes.push(
                "ldap.incremental is \"auto\" but the server offers neither RFC 4533 content synchronization nor \
                 uSNChanged: every pass is full"
                    .into(),
            );
        }
        return Ok(None);
    };
    let mut tracking = tracking;
    let stored = match db {
        Some(db) => db.change_mark()?,
        None => None,
    };
    // DirSync that the last full pass found refused leaves a uSNChanged mark: passes go on by
    // uSNChanged, and the next full pass tries DirSync again.
    let usn_until_full = tracking == Tracking::Dirsync && stored.as_ref().is_some_and(|m| m.kind == "usn");
    let previous = stored.filter(|m| m.kind == tracking.name() || usn_until_full);
    let mut why = full_before_reading(config, cli, db, previous.as_ref(), alias_sync, now)?;
    if usn_until_full && why.is_none() {
        tracking = Tracking::Usn;
    }
    let base = &config.ldap.search_base;
    let (server, position) = match tracking {
        Tracking::Syncrepl => {
            let mark = conn.directory_mark(base)?;
            if let (None, Some(previous)) = (&why, &previous) {
                let cookie = from_hex(&previous.position).unwrap_or_default();
                why = if previous.server != mark.base_uuid {
                    Some("another directory (the search base's entryUUID differs)".into())
                } else {
                    match mark.check_cookie(&cookie) {
                        CookieCheck::Ahead => {
                            Some("the directory is behind the stored cookie (restored from a backup?)".into())
                        }
                        CookieCheck::ForeignServer => Some("the stored cookie is another server's".into()),
                        // slapd takes an unreadable cookie as none and hides deletions.
                        CookieCheck::Malformed => Some("the stored cookie is not readable".into()),
                        CookieCheck::Behind | CookieCheck::Unknown => None,
                    }
                };
            }
            // A full pass takes the cookie before it reads; an incremental one keeps the
            // stored one until its refresh returns a newer.
            let position = match (&why, &previous) {
                (None, Some(previous)) => previous.position.clone(),
                _ => to_hex(&conn.current_cookie(base)?),
            };
            (mark.base_uuid, position)
        }
        Tracking::Usn => {
            let mark = conn.usn_mark()?;
            let server = dc_identity(&mark);
            if let (None, Some(previous)) = (&why, &previous) {
                let stored_usn: u64 = previous.position.parse().unwrap_or(u64::MAX);
                why = if previous.server != server {
                    Some("another domain controller, or one restored from a backup (its identity differs)".into())
                } else if mark.highest_committed_usn < stored_usn {
                    Some("the domain controller's highestCommittedUSN went back (restored from a backup?)".into())
                } else {
                    None
                };
            }
            (server, mark.highest_committed_usn.to_string())
        }
        Tracking::Dirsync => {
            let mark = conn.usn_mark()?;
            let server = dc_identity(&mark);
            if let (None, Some(previous)) = (&why, &previous) {
                let stored = from_hex(&previous.position).and_then(|c| ldap_dirsync::cookie_info(&c));
                why = if previous.server != server {
                    Some("another domain controller, or one restored from a backup (its identity differs)".into())
                } else {
                    match stored {
                        None => Some("the stored DirSync cookie is not readable".into()),
                        Some(c) if mark.invocation_id.is_some_and(|id| id != c.invocation_id) => Some(
                            "the stored DirSync cookie is another domain controller's (its invocationId differs)"
                                .into(),
                        ),
                        Some(c) if c.usn > mark.highest_committed_usn => Some(
                            "the stored DirSync cookie is ahead of the domain controller (restored from a backup?)"
                                .into(),
                        ),
                        Some(_) => None,
                    }
                };
            }
            match (&why, &previous) {
                (None, Some(previous)) => (server, previous.position.clone()),
                _ => {
                    let root = ldap_dirsync::domain_root(base);
                    match conn.dirsync_cookie(root)? {
                        Ok(cookie) => (server, to_hex(&cookie)),
                        Err(refused) => {
                            notes.push(dirsync_refused(&refused));
                            tracking = Tracking::Usn;
                            (server, mark.highest_committed_usn.to_string())
                        }
                    }
                }
            }
        }
    };
    let kind = match why {
        Some(why) => PassKind::full(why),
        None => PassKind {
            incremental: true,
            why: format!("changes since the last pass ({})", tracking.name()),
        },
    };
    // A full pass sets `users` once it has read the directory.
    let (last_full, users) = match (&kind.incremental, &previous) {
        (true, Some(previous)) => (previous.last_full, previous.users),
        _ => (now, 0),
    };
    Ok(Some(Start {
        tracking,
        kind,
        previous,
        next: ChangeMark {
            kind: tracking.name().into(),
            server,
            position,
            config: config_fingerprint(config),
            last_full,
            users,
        },
    }))
}

/// An incremental pass that turned out to need a full one: the position is taken again,
/// before the full read.
pub fn fall_back_to_full(
    start: &mut Start,
    why: String,
    config: &Config,
    conn: &mut LdapConnection,
    now: i64,
) -> Result<()> {
    start.kind = PassKind::full(why);
    start.next.last_full = now;
    start.next.position = match start.tracking {
        Tracking::Syncrepl => to_hex(&conn.current_cookie(&config.ldap.search_base)?),
        Tracking::Usn => conn.usn_mark()?.highest_committed_usn.to_string(),
        Tracking::Dirsync => {
            let root = ldap_dirsync::domain_root(&config.ldap.search_base);
            match conn.dirsync_cookie(root)? {
                Ok(cookie) => to_hex(&cookie),
                Err(refused) => {
                    start.kind.why = format!("{}; {}", start.kind.why, dirsync_refused(&refused));
                    start.tracking = Tracking::Usn;
                    start.next.kind = Tracking::Usn.name().into();
                    conn.usn_mark()?.highest_committed_usn.to_string()
                }
            }
        }
    };
    Ok(())
}

/// A DC's identity for a mark: its dsServiceName and invocationId (new after a restore).
fn dc_identity(mark: &crate::edge::ldap_sync::UsnMark) -> String {
    match mark.invocation_id {
        Some(id) => format!("{}#{}", mark.ds_service_name, to_hex(&id)),
        None => mark.ds_service_name.clone(),
    }
}

fn dirsync_refused(refused: &str) -> String {
    format!(
        "the domain controller refused DirSync ({refused}; it needs the \"Replicating Directory Changes\" right \
         on the domain for the bind account): uSNChanged is used instead until the next full pass"
    )
}

/// Both sides as an incremental pass reads them: the planner's inputs, cut down.
pub struct Changes {
    pub dir: Directory,
    pub rows: Arc<ManagedRows>,
    pub mailboxes: Mailboxes,
    pub domains: Vec<Domain>,
    pub changes_only: ChangesOnly,
    /// Changed entries the directory sent.
    pub changed_entries: usize,
    /// mailcow reads made.
    pub reads: usize,
    /// The DNs to read again next pass (`None`: as they are).
    pub reread: Option<Vec<Reread>>,
}

/// Read the changes since `start.previous`; `Err(why)` inside `Ok`: the server refused the
/// mark, a full pass must run instead.
pub fn read_changes(
    config: &Config,
    db: &StateDb,
    conn: &mut LdapConnection,
    client: &dyn MailcowApi,
    start: &mut Start,
    now: i64,
) -> Result<std::result::Result<Changes, String>> {
    let previous = start.previous.clone().ok_or_else(|| Error::Ldap {
        server: config.ldap.uri.clone(),
        message: "an incremental pass without a stored mark".into(),
    })?;
    let base = config.ldap.search_base.as_str();
    let filter = config.ldap.search_filter.as_str();
    let attrs = ldap_read::user_attributes(config);
    let mapping = &config.ldap.mapping;
    let mut raws: Vec<RawEntry> = Vec::new();
    // Whether a user may have left: then the directory's uids are read in full, unless the
    // refresh itself told which (below).
    let mut may_have_left = false;
    // DirSync with objectGUID as the uid: exactly the uids that left (deleted, or no longer
    // matching the base and filter), without the directory's uid list.
    let mut left: BTreeSet<String> = BTreeSet::new();
    // With entryUUID as the uid, the refresh names the uids itself: what it listed as
    // present or changed, and what as deleted (RFC 4533 3.4). Kept only while every
    // changed entry's entryUUID reads as the uuid the protocol sent with it.
    let mut by_uuid = mapping
        .uid
        .as_deref()
        .is_some_and(|a| a.eq_ignore_ascii_case("entryUUID"));
    let mut listed: HashSet<u64> = HashSet::new();
    let mut deleted: HashSet<u64> = HashSet::new();
    let mut from_refresh: Option<Live> = None;
    match start.tracking {
        Tracking::Syncrepl => {
            let cookie = from_hex(&previous.position).unwrap_or_default();
            let end = conn.sync_refresh(base, filter, &attrs, Some(&cookie), |item| {
                let (uuid, present) = match &item {
                    SyncItem::Changed { uuid, entry, .. } => {
                        by_uuid &= directory::entry_uid(entry, mapping) == Some(uuid.to_string());
                        (uuid_hash(uuid), true)
                    }
                    SyncItem::Present(uuid) => (uuid_hash(uuid), true),
                    SyncItem::Deleted(uuid) => (uuid_hash(uuid), false),
                    SyncItem::NewCookie(_) => return,
                };
                if by_uuid {
                    if present {
                        deleted.remove(&uuid);
                        listed.insert(uuid);
                    } else {
                        listed.remove(&uuid);
                        deleted.insert(uuid);
                    }
                }
                match item {
                    SyncItem::Changed { entry, .. } => raws.push(entry),
                    _ => may_have_left = true,
                }
            })?;
            match end {
                SyncEnd::Done {
                    cookie, present_phase, ..
                } => {
                    may_have_left |= present_phase;
                    if by_uuid && may_have_left {
                        from_refresh = Some(if present_phase {
                            Live::Listed(std::mem::take(&mut listed))
                        } else {
                            Live::AllBut(std::mem::take(&mut deleted))
                        });
                    }
                    if let Some(cookie) = cookie {
                        start.next.position = to_hex(&cookie);
                    }
                }
                SyncEnd::RefreshRequired { .. } => {
                    return Ok(Err(
                        "the server refused the stored cookie (e-syncRefreshRequired)".into()
                    ));
                }
            }
        }
        Tracking::Usn => {
            let stored: u64 = previous.position.parse().unwrap_or(u64::MAX);
            let highest: u64 = start.next.position.parse().unwrap_or(0);
            if highest > stored {
                // Any step may be a deletion or an entry leaving the filter, which the
                // changed-entries search cannot return.
                may_have_left = true;
                let changed = format!("(&{filter}(uSNChanged>={}))", stored + 1);
                conn.search(base, &changed, &attrs, |entry| raws.push(entry))?;
            }
        }
        Tracking::Dirsync => {
            // Every object of the naming context with a changed attribute the plan reads, the
            // filter tests, or `name` (a move or rename); tombstones too. Each is read again
            // in full, where the base and filter decide.
            let cookie = from_hex(&previous.position).unwrap_or_default();
            let tested = ldap_dirsync::filter_attributes(filter);
            let mut asked: Vec<&str> = attrs.clone();
            asked.extend(tested.iter().map(String::as_str));
            asked.extend(["name", "isDeleted", "objectGUID"]);
            let root = ldap_dirsync::domain_root(base);
            let mut changed: Vec<RawEntry> = Vec::new();
            match conn.dirsync(root, "(objectClass=*)", &asked, &cookie, &mut |entry| {
                changed.push(entry)
            })? {
                Ok(cookie) => start.next.position = to_hex(&cookie),
                Err(refused) => {
                    return Ok(Err(format!(
                        "the domain controller refused the DirSync cookie ({refused})"
                    )));
                }
            }
            let by_guid = config
                .ldap
                .mapping
                .uid
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case("objectGUID"));
            let base_n = directory::normalize_dn(base);
            for object in changed {
                let deleted = object
                    .attrs
                    .get("isdeleted")
                    .is_some_and(|v| v.iter().any(|v| v.eq_ignore_ascii_case(b"TRUE")));
                let dn_n = directory::normalize_dn(&object.dn);
                let under_base = dn_n == base_n || dn_n.ends_with(&format!(",{base_n}"));
                let entry = match (deleted, under_base) {
                    (false, true) => conn.read_entry_matching(&object.dn, filter, &attrs)?,
                    _ => None,
                };
                match (entry, by_guid) {
                    (Some(entry), _) => raws.push(entry),
                    (None, true) => left.extend(directory::entry_uid(&object, &config.ldap.mapping)),
                    (None, false) => may_have_left = true,
                }
            }
        }
    }
    let changed_entries = raws.len();
    let scope = &config.sync.domains;
    let in_scope = |address: &str| scope.is_empty() || scope.contains(domain_of(address));
    let due_before = (config.sync.on_removed == crate::config::OnRemoved::Delete)
        .then(|| now - (config.sync.delete_after_days as i64) * 86_400);
    let retired = config.sync.on_removed != crate::config::OnRemoved::Keep;

    // The rows that need a look even when the directory sent nothing: due for deletion, or
    // the old mailbox of a user who moved to another domain.
    let standing = db.rows_for(&[], &[], due_before, retired)?;
    let reread_before = db.reread()?;
    let follow_ups = reread_before.iter().any(|r| r.follow_up);
    if raws.is_empty() && !may_have_left && left.is_empty() && standing.is_empty() && !follow_ups {
        return Ok(Ok(Changes {
            dir: DirectoryBuilder::new(ldap_read::reading(config)).finish(),
            rows: Arc::new(ManagedRows::new()),
            mailboxes: Mailboxes::from_list(Vec::new()),
            domains: Vec::new(),
            changes_only: ChangesOnly {
                managed: 0,
                directory_empty: false,
            },
            changed_entries,
            reads: 0,
            reread: None,
        }));
    }

    // The directory's uids, when a user may have left or a row may be removed: as the
    // refresh named them, else read in full. A delete phase alone does not say whether rows
    // standing for removal are back.
    let from_refresh = from_refresh.filter(|l| matches!(l, Live::Listed(_)) || standing.is_empty());
    let mut live = match from_refresh {
        Some(live) => Some(live),
        None if may_have_left || !standing.is_empty() => match read_uids(conn, config)? {
            Some(live) => Some(live),
            None => return Ok(Err("the user search returned continuation references".into())),
        },
        None => None,
    };
    // Enabled rows: the guard's base, and those whose uid the directory no longer has.
    let scan = |live: &Option<Live>| -> Result<(usize, Vec<String>)> {
        // No one left, every domain in scope: the rows need only be counted.
        if live.is_none() && left.is_empty() && scope.is_empty() {
            return Ok((db.enabled_count()?, Vec::new()));
        }
        let (mut managed, mut gone) = (0usize, Vec::new());
        db.each_enabled_row(|uid, address| {
            if in_scope(address) {
                managed += 1;
                if live.as_ref().is_some_and(|l| !l.holds(uid)) || left.contains(uid) {
                    gone.push(uid.to_owned());
                }
            }
        })?;
        Ok((managed, gone))
    };
    let (mut managed, mut gone) = scan(&live)?;
    // Uids named by the refresh, and no managed row left among them: either the directory
    // is empty now (a delete phase does not tell) or its uuids are not the rows' uids at
    // all. Only the uids read in full can tell.
    if gone.len() == managed && live.as_ref().is_some_and(|l| !matches!(l, Live::Read(..))) {
        live = match read_uids(conn, config)? {
            Some(live) => Some(live),
            None => return Ok(Err("the user search returned continuation references".into())),
        };
        (managed, gone) = scan(&live)?;
    }

    // Entries skipped last time are read again with the changes: a duplicate or a conflict
    // may be resolved by the entry that changed.
    let mut seen_dns: BTreeSet<String> = raws.iter().map(|r| directory::normalize_dn(&r.dn)).collect();
    for dn in reread_before.iter().map(|r| &r.dn) {
        if seen_dns.contains(&directory::normalize_dn(dn)) {
            continue;
        }
        if let Some(entry) = conn.read_entry_matching(dn, filter, &attrs)? {
            seen_dns.insert(directory::normalize_dn(&entry.dn));
            raws.push(entry);
        }
    }

    // The rows that may be removed: those standing and those whose user left, read once.
    let mut rows: BTreeMap<String, ManagedMailbox> = BTreeMap::new();
    let gone_refs: Vec<&str> = gone.iter().map(String::as_str).collect();
    for row in standing
        .values()
        .chain(db.rows_for(&gone_refs, &[], None, false)?.values())
    {
        rows.insert(row.uid.clone(), row);
    }
    // Such a row is still kept while another entry claims its address (the planner's rule):
    // those entries are found by the address, whether they changed or not.
    for row in rows.values() {
        let by_mail = format!("(&{filter}({}={}))", mapping.mail, escape_filter_value(&row.address));
        let mut found = Vec::new();
        conn.search(base, &by_mail, &attrs, |entry| found.push(entry))?;
        for entry in found {
            if seen_dns.insert(directory::normalize_dn(&entry.dn)) {
                raws.push(entry);
            }
        }
    }

    // Rows the changes touch, and the entries of those rows read again, until no new row
    // comes in (a row found by address may belong to an unchanged user).
    let gone_set: BTreeSet<&str> = gone.iter().map(String::as_str).collect();
    let mut reread_rows: BTreeSet<String> = BTreeSet::new();
    let dir = loop {
        let dir = build(config, &raws);
        let mut uids: Vec<String> = Vec::new();
        let mut addresses: Vec<String> = Vec::new();
        for user in dir.users() {
            uids.push(user.uid.clone());
            addresses.push(user.mail.clone());
        }
        uids.extend(dir.skipped_uids().map(str::to_owned));
        addresses.extend(dir.skipped_mails().map(str::to_owned));
        let uid_refs: Vec<&str> = uids.iter().map(String::as_str).collect();
        let address_refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
        for row in db.rows_for(&uid_refs, &address_refs, None, false)?.values() {
            rows.entry(row.uid.clone()).or_insert(row);
        }
        let mut more = false;
        for row in rows.values() {
            let known = dir.has_uid(&row.uid) || dir.has_skipped_uid(&row.uid) || gone_set.contains(row.uid.as_str());
            let live_row = live.as_ref().is_none_or(|l| l.holds(&row.uid));
            if known || !live_row || !reread_rows.insert(row.uid.clone()) {
                continue;
            }
            if seen_dns.contains(&directory::normalize_dn(&row.dn)) {
                continue;
            }
            match conn.read_entry_matching(&row.dn, filter, &attrs)? {
                Some(entry) if directory::entry_uid(&entry, mapping).as_deref() == Some(row.uid.as_str()) => {
                    seen_dns.insert(directory::normalize_dn(&entry.dn));
                    raws.push(entry);
                    more = true;
                }
                // The user is in the directory, but not where its row says, and the changes
                // did not say it moved: only a full pass can tell.
                _ => {
                    return Ok(Err(format!(
                        "the entry of managed mailbox {} is not at its recorded DN",
                        row.address
                    )));
                }
            }
        }
        if !more {
            break dir;
        }
    };
    let rows = Arc::new(ManagedRows::from_rows(rows.into_values()));
    // Users left by DirSync's word, without the uid list: the empty directory rule still
    // needs to know whether any user is left at all.
    let empty_directory = live.is_none() && !gone.is_empty() && !conn.has_entry(base, filter)?;

    // mailcow: the affected mailboxes only, or nothing when there are none.
    let mut addresses: BTreeSet<String> = rows.values().map(|r| r.address).collect();
    addresses.extend(dir.users().map(|u| u.mail));
    addresses.extend(dir.skipped_mails().map(str::to_owned));
    let (mailboxes, domains, reads) = if addresses.is_empty() {
        (Mailboxes::from_list(Vec::new()), Vec::new(), 0)
    } else if addresses.len() > BY_NAME_AT_MOST.max(managed / 10) || !addresses.iter().all(|a| by_name_safe(a)) {
        let domains = client.domains()?;
        let mailboxes = client.mailboxes(config.sync.tag.as_deref(), rows.clone())?;
        (mailboxes, domains, 2)
    } else {
        let domains = client.domains()?;
        let addresses: Vec<String> = addresses.into_iter().collect();
        let list = read_by_name(client, &addresses, config.sync.tag.as_deref(), config.sync.concurrency)?;
        (Mailboxes::from_list(list), domains, 1 + addresses.len())
    };
    let skipped_now: Vec<Reread> = dir
        .skipped
        .iter()
        .map(|s| Reread {
            dn: s.dn.clone(),
            follow_up: false,
        })
        .collect();
    Ok(Ok(Changes {
        changes_only: ChangesOnly {
            managed,
            directory_empty: live.is_some_and(|l| l.is_empty()) || empty_directory,
        },
        dir,
        rows,
        mailboxes,
        domains,
        changed_entries,
        reads,
        reread: Some(skipped_now),
    }))
}

/// Which uids the directory holds, as far as a pass knows (as [`uid_hash`]es).
enum Live {
    /// Exactly these, read in full, and how many entries the search returned.
    Read(HashSet<u64>, usize),
    /// Exactly these: the entryUUIDs a refresh listed as present or changed in its present
    /// phase (RFC 4533 3.4: every entry not listed is gone).
    Listed(HashSet<u64>),
    /// Every uid but these: the entryUUIDs a refresh listed as deleted (no present phase).
    AllBut(HashSet<u64>),
}

impl Live {
    fn holds(&self, uid: &str) -> bool {
        match self {
            Live::Read(uids, _) | Live::Listed(uids) => uids.contains(&uid_hash(uid)),
            Live::AllBut(gone) => !gone.contains(&uid_hash(uid)),
        }
    }

    /// The directory holds no entry. `AllBut` is only used with a managed row still held.
    fn is_empty(&self) -> bool {
        match self {
            Live::Read(_, entries) => *entries == 0,
            Live::Listed(uids) => uids.is_empty(),
            Live::AllBut(_) => false,
        }
    }
}

/// The directory's uids in full, one attribute each (`None`: the search returned
/// continuation references, so it is not complete).
fn read_uids(conn: &mut LdapConnection, config: &Config) -> Result<Option<Live>> {
    let mapping = &config.ldap.mapping;
    let uid_attrs: Vec<&str> = match mapping.uid.as_deref() {
        Some(attr) => vec![attr],
        None => vec!["1.1"],
    };
    let mut live = HashSet::new();
    let mut entries = 0usize;
    let done = conn.search(
        &config.ldap.search_base,
        &config.ldap.search_filter,
        &uid_attrs,
        |entry| {
            entries += 1;
            if let Some(uid) = directory::entry_uid(&entry, mapping) {
                live.insert(uid_hash(&uid));
            }
        },
    )?;
    Ok(done.references.is_empty().then_some(Live::Read(live, entries)))
}

/// Each mailbox by name, `workers` requests in flight (`sync.concurrency`).
fn read_by_name(
    client: &dyn MailcowApi,
    addresses: &[String],
    tag: Option<&str>,
    workers: usize,
) -> Result<Vec<crate::core::model::Mailbox>> {
    let per_worker = addresses.len().div_ceil(workers.max(1)).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = addresses
            .chunks(per_worker)
            .map(|part| {
                scope.spawn(move || -> Result<Vec<crate::core::model::Mailbox>> {
                    let mut found = Vec::new();
                    for address in part {
                        found.extend(client.mailbox(address, tag)?);
                    }
                    Ok(found)
                })
            })
            .collect();
        let mut all = Vec::new();
        for part in parts {
            let found = part.join().unwrap_or_else(|_| {
                Err(Error::Mailcow {
                    endpoint: "get/mailbox".into(),
                    message: "a reading thread failed".into(),
                })
            })?;
            all.extend(found);
        }
        Ok(all)
    })
}

/// Up to this many affected mailboxes (or a tenth of those managed, if more), each is read
/// by name; above it, one list read. On the real API `get/mailbox/reduced` of 2000 mailboxes
/// took 5.22 s (issue 16), about 2.6 ms a mailbox; a read by name costs one round trip.
const BY_NAME_AT_MOST: usize = 100;

fn build(config: &Config, raws: &[RawEntry]) -> Directory {
    let mut builder = DirectoryBuilder::new(ldap_read::reading(config));
    for raw in raws {
        builder.add(raw);
    }
    builder.finish()
}

/// A uid's 64-bit hash: the directory's uid list held as these costs 8 bytes a user. Two
/// uids sharing one would only keep a row from being found gone (until the next full pass).
fn uid_hash(uid: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut hasher);
    hasher.finish()
}

/// [`uid_hash`] of a uuid's text form (as [`SyncUuid`] displays it, the form of the
/// `entryUUID` attribute), without building a `String` for each of 100k present uuids.
fn uuid_hash(uuid: &SyncUuid) -> u64 {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 36];
    let mut at = 0;
    for (i, b) in uuid.0.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text[at] = b'-';
            at += 1;
        }
        text[at] = HEX[usize::from(b >> 4)];
        text[at + 1] = HEX[usize::from(b & 15)];
        at += 2;
    }
    uid_hash(std::str::from_utf8(&text).unwrap_or_default())
}

/// A value inside an LDAP filter (RFC 4515 3): `*`, `(`, `)`, `\` and NUL escaped.
fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_go_through_hex_and_back() {
        let cookie = b"rid=000,csn=20261204190000.000000Z#000000#000#000000".to_vec();
        assert_eq!(from_hex(&to_hex(&cookie)), Some(cookie));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn a_uuid_hashes_as_its_entryuuid_text() {
        let uuid = SyncUuid([
            0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0,
        ]);
        assert_eq!(uuid_hash(&uuid), uid_hash("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"));
        assert_eq!(uuid_hash(&uuid), uid_hash(&uuid.to_string()));
    }

    #[test]
    fn filter_values_are_escaped() {
        assert_eq!(escape_filter_value("a*(b)\\c"), "a\\2a\\28b\\29\\5cc");
        assert_eq!(escape_filter_value("u@example.org"), "u@example.org");
    }

    #[test]
    fn durations_are_said_in_their_largest_unit() {
        assert_eq!(describe_duration(3600), "1h");
        assert_eq!(describe_duration(86_400 * 2), "2d");
        assert_eq!(describe_duration(90), "90s");
        assert_eq!(describe_duration(1800), "30m");
    }
}
