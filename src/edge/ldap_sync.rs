//! The LDAP edge of incremental passes: what changed in the directory since the last pass.
//!
//! Two mechanisms, one per kind of server:
//! - OpenLDAP (the `syncprov` overlay): RFC 4533 content synchronization in refreshOnly
//!   mode, [`LdapConnection::sync_refresh`]. The server keeps the state; the client keeps an
//!   opaque cookie and gets back what changed since it, plus either the deletions or the list
//!   of everything still there.
//! - Active Directory / Samba: `uSNChanged`. [`LdapConnection::usn_mark`] reads the DC's
//!   highest committed USN and its identity; the changed entries are a normal paged
//!   [`LdapConnection::search`] with `(&FILTER(uSNChanged>=N))`.
//!
//! Like the rest of the edge, this moves bytes and decides nothing: entries stream to the
//! caller's callback and are never collected here, so 100k entries are never held at once.
//! ldap3 has parsers for the sync controls, but they `panic!` on malformed input and this
//! binary aborts on panic, so every server-supplied value is parsed here, and anything
//! malformed is an [`Error::Ldap`].
//!
//! What OpenLDAP 2.5.13's syncprov sends (tests/integration/incremental_ldap.rs): every
//! entry with state `add`, never `modify`; presence as syncIdSet batches of up to 256 uuids,
//! which the size limit does not count (entries do); with a session log, deletions (and
//! entries that left the filter) as one-uuid syncIdSets with refreshDeletes TRUE. No change
//! since the cookie: no message and a Sync Done without a cookie. A cookie newer than the
//! contextCSN: rc=53 "consumer state is newer than provider!". A CSN it cannot parse: taken
//! as no cookie (the whole content as adds, refreshDeletes TRUE), hence
//! [`CookieCheck::Malformed`].

use std::fmt;

use ldap3::Scope;
use ldap3::asn1::{PL, StructureTag, TagClass, Types, parse_tag};
use ldap3::controls::{MakeCritical, RawControl, RefreshMode, SyncRequest};

use super::ldap::{LdapConnection, describe, parse_entry};
use crate::core::model::RawEntry;
use crate::error::{Error, Result};

/// The Sync Request control (RFC 4533 §2.2).
pub const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
/// The Sync State control, on each entry of a sync search (§2.3).
pub const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
/// The Sync Done control, on the SearchResultDone of a refresh (§2.4).
pub const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";
/// The Sync Info intermediate message (§2.5).
pub const SYNC_INFO_OID: &str = "1.3.6.1.4.1.4203.1.9.1.4";
/// The result code e-syncRefreshRequired (§2.6): the server will not refresh from this
/// cookie; the client must start again without one.
pub const E_SYNC_REFRESH_REQUIRED: u32 = 4096;

/// A filter that matches no entry: a refresh with it and no cookie returns only the cookie.
pub const MATCH_NOTHING: &str = "(&(objectClass=*)(!(objectClass=*)))";

/// An entry's `entryUUID` as the sync protocol sends it: 16 raw bytes. It displays as the
/// text form of the `entryUUID` attribute (lowercase, hyphenated), which is how a full pass
/// identifies the same entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncUuid(pub [u8; 16]);

impl fmt::Display for SyncUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SyncUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncUuid({self})")
    }
}

/// How an entry sent with its attributes changed (the Sync State control's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Add,
    Modify,
}

/// One item of a refresh, in the order the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncItem {
    /// Added to the content or changed since the cookie (a rename or move too: the DN in
    /// `entry` is the new one, the uuid the same). With no cookie, every entry of the
    /// content comes as this.
    Changed {
        uuid: SyncUuid,
        kind: ChangeKind,
        entry: RawEntry,
    },
    /// Gone from the content: deleted, or no longer matching the filter or the base
    /// (Sync State `delete`, or a syncIdSet with refreshDeletes TRUE).
    Deleted(SyncUuid),
    /// Unchanged since the cookie and still in the content (Sync State `present`, or a
    /// syncIdSet with refreshDeletes FALSE). Only sent in a present phase.
    Present(SyncUuid),
    /// A newer cookie sent mid-stream (a syncInfo message, or a cookie on an entry). Just
    /// information: the final one is in [`SyncEnd::Done`].
    NewCookie(Vec<u8>),
}

/// How a refresh ended.
///
/// RFC 4533 §3.4 semantics the caller must apply to its copy of the content (the set of
/// uuids it had after the previous refresh or full pass):
/// - every [`SyncItem::Changed`] replaces (or adds) the entry with that uuid;
/// - every [`SyncItem::Deleted`] uuid is gone;
/// - when `present_phase` is true (the server ended with refreshDeletes FALSE, or sent
///   presence messages, or a refreshPresent syncInfo), every uuid of the previous copy that
///   was neither [`SyncItem::Present`] nor [`SyncItem::Changed`] in this refresh is gone too.
///   That is how deletions are reported without a session log: by what is *not* listed;
/// - when `present_phase` is false (refreshDeletes TRUE, a delete phase only), only the
///   listed deletions happened; every entry not mentioned is unchanged.
///
/// Entries may be reported that did not really change (a cookie is a point in time, not an
/// exact set); applying them again must be harmless. A refresh that fails part-way is an
/// error: nothing of it may be applied and the stored cookie must stay as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEnd {
    Done {
        /// The cookie to store for the next refresh: the Sync Done control's, else the last
        /// one seen in the stream. `None` when the server sent none at all (then the old
        /// cookie stays valid).
        cookie: Option<Vec<u8>>,
        /// The Sync Done control's refreshDeletes (DEFAULT FALSE), as sent.
        refresh_deletes: bool,
        /// Whether a present phase happened, so unlisted entries are gone (see above).
        present_phase: bool,
        /// Entries sent with their attributes ([`SyncItem::Changed`]).
        changed: usize,
    },
    /// The server refused the cookie: rc=4096 e-syncRefreshRequired, or (a cookie sent)
    /// rc=53 unwillingToPerform, which OpenLDAP's syncprov answers to a cookie newer than
    /// its contextCSN ("consumer state is newer than provider!": a restored backup). The
    /// caller must run a full pass and take a fresh cookie.
    RefreshRequired {
        /// The Sync Done control's cookie, if the server sent one.
        cookie: Option<Vec<u8>>,
        /// The result code and the server's text, for the log.
        reason: String,
    },
}

/// What identifies the content a cookie belongs to, read from the search base entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryMark {
    /// The base entry's `entryUUID` (text form). A different one means another directory,
    /// even under the same DN: a cookie stored with the old one means nothing here.
    pub base_uuid: String,
    /// The `contextCSN` values of the naming context (one per server id in multi-provider
    /// setups); empty when the server does not publish one (no syncprov) or the bind
    /// account may not read it.
    pub context_csns: Vec<String>,
}

/// How a stored cookie relates to the server's current state ([`DirectoryMark::check_cookie`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieCheck {
    /// Every CSN of the cookie is at or before the server's contextCSN of the same server id.
    Behind,
    /// A CSN of the cookie is newer than the server's contextCSN for its server id: the
    /// server was restored from a backup (or its clock jumped back). Changes after the
    /// backup that the copy already has may never come again: run a full pass.
    Ahead,
    /// The cookie names a server id this server has no contextCSN for: it came from another
    /// server. Run a full pass.
    ForeignServer,
    /// The server shows a contextCSN (OpenLDAP) but the cookie is not in its
    /// `rid=…,csn=…` form. syncprov treats such a cookie as no cookie and sends the whole
    /// content with refreshDeletes TRUE, which would hide every deletion: run a full pass.
    Malformed,
    /// The server shows no contextCSN (not syncprov, or not readable): nothing can be said.
    Unknown,
}

impl DirectoryMark {
    /// Compare an OpenLDAP cookie with this server's contextCSN values. CSNs are
    /// `YYYYmmddHHMMSS.uuuuuuZ#count#sid#mod`, fixed width, so they compare as strings.
    pub fn check_cookie(&self, cookie: &[u8]) -> CookieCheck {
        if self.context_csns.is_empty() {
            return CookieCheck::Unknown;
        }
        let parsed = match OpenLdapCookie::parse(cookie) {
            Some(parsed) if !parsed.csns.is_empty() => parsed,
            _ => return CookieCheck::Malformed,
        };
        let mut check = CookieCheck::Behind;
        for csn in &parsed.csns {
            let Some(sid) = csn_sid(csn) else {
                return CookieCheck::Malformed;
            };
            match self.context_csns.iter().find(|c| csn_sid(c) == Some(sid)) {
                None => return CookieCheck::ForeignServer,
                Some(server) if csn.as_str() > server.as_str() => check = CookieCheck::Ahead,
                Some(_) => {}
            }
        }
        check
    }
}

/// The server-id field of a CSN (`…#count#SID#mod`).
fn csn_sid(csn: &str) -> Option<&str> {
    let mut fields = csn.split('#');
    let (_time, _count, sid, _mod) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() || sid.is_empty() {
        return None;
    }
    Some(sid)
}

/// An OpenLDAP syncprov cookie, `rid=NNN[,sid=NNN][,csn=CSN[;CSN…]]`. Other servers' cookies
/// are opaque and do not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenLdapCookie {
    pub rid: Option<String>,
    pub sid: Option<String>,
    pub csns: Vec<String>,
}

impl OpenLdapCookie {
    pub fn parse(cookie: &[u8]) -> Option<OpenLdapCookie> {
        let text = std::str::from_utf8(cookie).ok()?;
        let mut parsed = OpenLdapCookie {
            rid: None,
            sid: None,
            csns: Vec::new(),
        };
        for part in text.split(',') {
            let (key, value) = part.split_once('=')?;
            match key {
                "rid" => parsed.rid = Some(value.to_owned()),
                "sid" => parsed.sid = Some(value.to_owned()),
                "csn" => parsed.csns = value.split(';').map(str::to_owned).collect(),
                // later versions may add fields; they do not change the CSNs
                _ => {}
            }
        }
        if parsed.csns.iter().any(|c| csn_sid(c).is_none()) {
            return None;
        }
        Some(parsed)
    }
}

/// What identifies an Active Directory DC and how far its changes go, from the root DSE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsnMark {
    /// `highestCommittedUSN`: every change on this DC so far has a `uSNChanged` at or below
    /// it. The next pass asks for `(uSNChanged>=N+1)`.
    pub highest_committed_usn: u64,
    /// `dsServiceName`: the DN of this DC's NTDS Settings object. USNs are per DC: a
    /// different DC means the stored USN means nothing (full pass).
    pub ds_service_name: String,
    /// The NTDS Settings object's `invocationId` (16 bytes), when readable. AD gives a DC a
    /// new one when it is restored from a backup, so a change means "restored DC" even when
    /// the name stayed.
    pub invocation_id: Option<[u8; 16]>,
}

impl LdapConnection {
    /// A refreshOnly content synchronization (RFC 4533) of the entries under `base` matching
    /// `filter`, from `cookie` (`None`: the whole content, every entry as
    /// [`SyncItem::Changed`]). Items stream to `each` as they arrive; see [`SyncEnd`] for
    /// what the caller must do with them.
    ///
    /// The search is not paged (RFC 4533 does not combine with paging), so the bind account
    /// needs a size limit at least the number of entries the refresh sends; the server's
    /// size limit is an error naming that. Time limit, referral, a missing base and any
    /// malformed message are errors too, as in [`LdapConnection::search`].
    pub fn sync_refresh(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[&str],
        cookie: Option<&[u8]>,
        mut each: impl FnMut(SyncItem),
    ) -> Result<SyncEnd> {
        let server = self.server.clone();
        let fail = |message: String| Error::Ldap {
            server: server.clone(),
            message: format!("sync refresh `{filter}` under `{base}`: {message}"),
        };
        let request = SyncRequest {
            mode: RefreshMode::RefreshOnly,
            cookie: cookie.map(<[u8]>::to_vec),
            reload_hint: false,
        };
        let control: RawControl = request.critical().into();
        // No adapters: the intermediate syncInfo messages must reach this loop.
        let mut stream = self
            .conn
            .with_controls(control)
            .with_timeout(self.config.timeout)
            .streaming_search(base, Scope::Subtree, filter, attrs.to_vec())
            .map_err(|e| fail(format!("failed: {}", describe(&e))))?;
        let mut tracker = Tracker::default();
        loop {
            match stream.next() {
                Ok(Some(entry)) if entry.is_ref() => {
                    return Err(fail(
                        "the server sent a continuation reference: part of the content is on \
                         another server, which a sync refresh cannot follow"
                            .to_owned(),
                    ));
                }
                Ok(Some(entry)) if entry.is_intermediate() => {
                    let info = parse_sync_info(entry.0).map_err(fail)?;
                    tracker.info(info, &mut each);
                }
                Ok(Some(entry)) => {
                    let state = entry
                        .1
                        .iter()
                        .find(|c| c.1.ctype == SYNC_STATE_OID)
                        .ok_or_else(|| fail("an entry came without a Sync State control".to_owned()))?;
                    let state = parse_sync_state(state.1.val.as_deref()).map_err(fail)?;
                    tracker.entry(state, entry.0, &mut each).map_err(fail)?;
                }
                Ok(None) => break,
                Err(e) => return Err(fail(format!("failed: {}", describe(&e)))),
            }
        }
        let result = stream.result();
        let done = result.ctrls.iter().find(|c| c.1.ctype == SYNC_DONE_OID);
        let done = match done {
            Some(c) => Some(parse_sync_done(c.1.val.as_deref()).map_err(fail)?),
            None => None,
        };
        let changed = tracker.changed;
        match result.rc {
            0 => {
                let done = done.ok_or_else(|| fail("the result came without a Sync Done control".to_owned()))?;
                let present_phase = tracker.present_phase || !done.refresh_deletes;
                Ok(SyncEnd::Done {
                    cookie: done.cookie.or(tracker.cookie),
                    refresh_deletes: done.refresh_deletes,
                    present_phase,
                    changed,
                })
            }
            rc if rc == E_SYNC_REFRESH_REQUIRED || (rc == 53 && cookie.is_some()) => Ok(SyncEnd::RefreshRequired {
                cookie: done.and_then(|d| d.cookie),
                reason: format!("rc={rc} {}", result.text),
            }),
            4 => Err(fail(format!(
                "hit the server's size limit after {changed} entries (rc=4); a sync refresh is \
                 not paged, so the bind account needs a size limit of at least the number of \
                 matching entries"
            ))),
            3 => Err(fail(format!(
                "hit the server's time limit after {changed} entries (rc=3)"
            ))),
            10 => Err(fail(format!(
                "the search base is a referral to {}",
                result.refs.join(", ")
            ))),
            12 => Err(fail(
                "the server does not offer content synchronization (rc=12 unavailable critical \
                 extension; OpenLDAP needs the syncprov overlay on this database)"
                    .to_owned(),
            )),
            32 => Err(fail("the search base does not exist (rc=32)".to_owned())),
            rc => Err(fail(format!(
                "ended with rc={rc} {} after {changed} entries",
                result.text
            ))),
        }
    }

    /// The server's current cookie without reading the directory: a refresh with no cookie
    /// and a filter that matches nothing. syncprov cookies carry only the contextCSN, not
    /// the filter, so this cookie works for a later refresh with the real filter. Take it
    /// *before* the full pass it is meant to follow: changes in between then come again in
    /// the next refresh instead of being lost.
    pub fn current_cookie(&mut self, base: &str) -> Result<Vec<u8>> {
        let mut unexpected = 0usize;
        let end = self.sync_refresh(base, MATCH_NOTHING, &["1.1"], None, |item| {
            if !matches!(item, SyncItem::NewCookie(_)) {
                unexpected += 1;
            }
        })?;
        let fail = |message: &str| Error::Ldap {
            server: self.server.clone(),
            message: format!("reading the sync cookie under `{base}`: {message}"),
        };
        if unexpected > 0 {
            return Err(fail("the server sent entries for a filter that matches nothing"));
        }
        match end {
            SyncEnd::Done { cookie: Some(c), .. } => Ok(c),
            SyncEnd::Done { cookie: None, .. } => Err(fail("the server sent no cookie")),
            SyncEnd::RefreshRequired { .. } => Err(fail("the server asked for a refresh without a cookie")),
        }
    }

    /// The base entry's `entryUUID` and the naming context's `contextCSN`, so the caller can
    /// tell whether a stored cookie belongs to this directory ([`DirectoryMark::check_cookie`]).
    pub fn directory_mark(&mut self, base: &str) -> Result<DirectoryMark> {
        let entry = self.read_entry(base, &["entryUUID", "contextCSN"])?;
        let fail = |message: &str| Error::Ldap {
            server: self.server.clone(),
            message: format!("reading `{base}`: {message}"),
        };
        let mut entry = entry.ok_or_else(|| fail("the search base does not exist"))?;
        let text = |values: Vec<Vec<u8>>| -> Option<Vec<String>> {
            values.into_iter().map(|v| String::from_utf8(v).ok()).collect()
        };
        let base_uuid = entry
            .attrs
            .remove("entryuuid")
            .and_then(text)
            .and_then(|mut v| if v.len() == 1 { v.pop() } else { None })
            .ok_or_else(|| fail("no single readable entryUUID"))?;
        let context_csns = match entry.attrs.remove("contextcsn") {
            None => Vec::new(),
            Some(values) => text(values).ok_or_else(|| fail("a contextCSN is not text"))?,
        };
        Ok(DirectoryMark {
            base_uuid,
            context_csns,
        })
    }

    /// Active Directory: this DC's `highestCommittedUSN`, `dsServiceName` and (when the bind
    /// account can read it) its `invocationId`, from the root DSE.
    pub fn usn_mark(&mut self) -> Result<UsnMark> {
        let dse = self.read_entry("", &["highestCommittedUSN", "dsServiceName"])?;
        let fail = |message: String| Error::Ldap {
            server: self.server.clone(),
            message,
        };
        let mut dse = dse.ok_or_else(|| fail("the root DSE is not readable".to_owned()))?;
        let mut single_text = |name: &str| -> Option<String> {
            let mut values = dse.attrs.remove(name)?;
            if values.len() != 1 {
                return None;
            }
            String::from_utf8(values.pop()?).ok()
        };
        let usn = single_text("highestcommittedusn")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                fail("the root DSE has no readable highestCommittedUSN (not an Active Directory DC?)".to_owned())
            })?;
        let service = single_text("dsservicename")
            .ok_or_else(|| fail("the root DSE has no readable dsServiceName".to_owned()))?;
        let invocation_id = self
            .read_entry(&service, &["invocationId"])?
            .and_then(|mut e| e.attrs.remove("invocationid"))
            .and_then(|mut v| if v.len() == 1 { v.pop() } else { None })
            .and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok());
        Ok(UsnMark {
            highest_committed_usn: usn,
            ds_service_name: service,
            invocation_id,
        })
    }
}

/// Folds the stream's messages into items and the facts the end needs.
#[derive(Default)]
struct Tracker {
    cookie: Option<Vec<u8>>,
    present_phase: bool,
    changed: usize,
}

impl Tracker {
    fn new_cookie(&mut self, cookie: Option<Vec<u8>>, each: &mut impl FnMut(SyncItem)) {
        if let Some(c) = cookie {
            self.cookie = Some(c.clone());
            each(SyncItem::NewCookie(c));
        }
    }

    fn entry(&mut self, state: SyncState, entry: StructureTag, each: &mut impl FnMut(SyncItem)) -> Result<(), String> {
        let item = match state.state {
            EntryState::Present => {
                self.present_phase = true;
                SyncItem::Present(state.uuid)
            }
            EntryState::Delete => SyncItem::Deleted(state.uuid),
            EntryState::Add | EntryState::Modify => {
                let entry = parse_entry(entry).ok_or("the server sent a malformed entry")?;
                self.changed += 1;
                SyncItem::Changed {
                    uuid: state.uuid,
                    kind: if state.state == EntryState::Add {
                        ChangeKind::Add
                    } else {
                        ChangeKind::Modify
                    },
                    entry,
                }
            }
        };
        each(item);
        self.new_cookie(state.cookie, each);
        Ok(())
    }

    fn info(&mut self, info: SyncInfo, each: &mut impl FnMut(SyncItem)) {
        match info {
            SyncInfo::NewCookie(c) => self.new_cookie(Some(c), each),
            SyncInfo::RefreshPresent { cookie, .. } => {
                // the end of a present phase (a delete phase may follow)
                self.present_phase = true;
                self.new_cookie(cookie, each);
            }
            SyncInfo::RefreshDelete { cookie, .. } => self.new_cookie(cookie, each),
            SyncInfo::IdSet {
                cookie,
                refresh_deletes,
                uuids,
            } => {
                if !refresh_deletes {
                    self.present_phase = true;
                }
                for uuid in uuids {
                    each(if refresh_deletes {
                        SyncItem::Deleted(uuid)
                    } else {
                        SyncItem::Present(uuid)
                    });
                }
                self.new_cookie(cookie, each);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryState {
    Present,
    Add,
    Modify,
    Delete,
}

/// A Sync State control value: `SEQUENCE { state ENUMERATED, entryUUID OCTET STRING (16),
/// cookie OCTET STRING OPTIONAL }`.
#[derive(Debug, PartialEq, Eq)]
struct SyncState {
    state: EntryState,
    uuid: SyncUuid,
    cookie: Option<Vec<u8>>,
}

/// A Sync Done control value: `SEQUENCE { cookie OCTET STRING OPTIONAL, refreshDeletes
/// BOOLEAN DEFAULT FALSE }`.
#[derive(Debug, PartialEq, Eq)]
struct SyncDone {
    cookie: Option<Vec<u8>>,
    refresh_deletes: bool,
}

/// A syncInfoValue (a CHOICE of context tags 0..=3).
#[derive(Debug, PartialEq, Eq)]
enum SyncInfo {
    NewCookie(Vec<u8>),
    RefreshDelete {
        cookie: Option<Vec<u8>>,
        refresh_done: bool,
    },
    RefreshPresent {
        cookie: Option<Vec<u8>>,
        refresh_done: bool,
    },
    IdSet {
        cookie: Option<Vec<u8>>,
        refresh_deletes: bool,
        uuids: Vec<SyncUuid>,
    },
}

/// One BER value that must fill `bytes` exactly.
pub(super) fn parse_whole(bytes: &[u8], what: &str) -> Result<StructureTag, String> {
    match parse_tag(bytes) {
        Ok(([], tag)) => Ok(tag),
        Ok(_) => Err(format!("malformed {what}: bytes after the value")),
        Err(_) => Err(format!("malformed {what}: not valid BER")),
    }
}

pub(super) fn is_universal(tag: &StructureTag, ty: Types) -> bool {
    tag.class == TagClass::Universal && tag.id == ty as u64
}

pub(super) fn constructed(tag: StructureTag, what: &str) -> Result<Vec<StructureTag>, String> {
    match tag.payload {
        PL::C(inner) => Ok(inner),
        PL::P(_) => Err(format!("malformed {what}: not a constructed value")),
    }
}

pub(super) fn primitive(tag: StructureTag, what: &str) -> Result<Vec<u8>, String> {
    match tag.payload {
        PL::P(bytes) => Ok(bytes),
        PL::C(_) => Err(format!("malformed {what}: a constructed value where bytes belong")),
    }
}

fn boolean(tag: StructureTag, what: &str) -> Result<bool, String> {
    match primitive(tag, what)?.as_slice() {
        [b] => Ok(*b != 0),
        _ => Err(format!("malformed {what}: a BOOLEAN is one byte")),
    }
}

fn uuid(bytes: Vec<u8>, what: &str) -> Result<SyncUuid, String> {
    <[u8; 16]>::try_from(bytes.as_slice())
        .map(SyncUuid)
        .map_err(|_| format!("malformed {what}: an entryUUID of {} bytes, not 16", bytes.len()))
}

/// A sequence `{ cookie OCTET STRING OPTIONAL, flag BOOLEAN DEFAULT default }` and whatever
/// follows (only syncIdSet has more).
fn cookie_and_flag(parts: Vec<StructureTag>, default: bool, what: &str) -> Result<CookieAndFlag, String> {
    let mut parts = parts.into_iter().peekable();
    let mut cookie = None;
    if parts.peek().is_some_and(|t| is_universal(t, Types::OctetString)) {
        cookie = parts.next().map(|t| primitive(t, what)).transpose()?;
    }
    let mut flag = default;
    if parts.peek().is_some_and(|t| is_universal(t, Types::Boolean)) {
        if let Some(t) = parts.next() {
            flag = boolean(t, what)?;
        }
    }
    let rest: Vec<StructureTag> = parts.collect();
    Ok(CookieAndFlag {
        cookie,
        flag,
        rest: rest.into_iter(),
    })
}

/// What [`cookie_and_flag`] read, and the elements after them.
struct CookieAndFlag {
    cookie: Option<Vec<u8>>,
    flag: bool,
    rest: std::vec::IntoIter<StructureTag>,
}

fn parse_sync_state(value: Option<&[u8]>) -> Result<SyncState, String> {
    const WHAT: &str = "Sync State control";
    let value = value.ok_or_else(|| format!("malformed {WHAT}: no value"))?;
    let tag = parse_whole(value, WHAT)?;
    if !is_universal(&tag, Types::Sequence) {
        return Err(format!("malformed {WHAT}: not a SEQUENCE"));
    }
    let mut parts = constructed(tag, WHAT)?.into_iter();
    let state = parts
        .next()
        .filter(|t| is_universal(t, Types::Enumerated))
        .ok_or_else(|| format!("malformed {WHAT}: no state"))?;
    let state = match primitive(state, WHAT)?.as_slice() {
        [0] => EntryState::Present,
        [1] => EntryState::Add,
        [2] => EntryState::Modify,
        [3] => EntryState::Delete,
        other => return Err(format!("malformed {WHAT}: unknown state {other:?}")),
    };
    let uuid_tag = parts
        .next()
        .filter(|t| is_universal(t, Types::OctetString))
        .ok_or_else(|| format!("malformed {WHAT}: no entryUUID"))?;
    let uuid = uuid(primitive(uuid_tag, WHAT)?, WHAT)?;
    let cookie = match parts.next() {
        None => None,
        Some(t) if is_universal(&t, Types::OctetString) => Some(primitive(t, WHAT)?),
        Some(_) => return Err(format!("malformed {WHAT}: the cookie is not an OCTET STRING")),
    };
    if parts.next().is_some() {
        return Err(format!("malformed {WHAT}: unexpected elements after the cookie"));
    }
    Ok(SyncState { state, uuid, cookie })
}

fn parse_sync_done(value: Option<&[u8]>) -> Result<SyncDone, String> {
    const WHAT: &str = "Sync Done control";
    // the value is required, but an empty SEQUENCE is all defaults
    let value = value.ok_or_else(|| format!("malformed {WHAT}: no value"))?;
    let tag = parse_whole(value, WHAT)?;
    if !is_universal(&tag, Types::Sequence) {
        return Err(format!("malformed {WHAT}: not a SEQUENCE"));
    }
    let CookieAndFlag {
        cookie,
        flag: refresh_deletes,
        mut rest,
    } = cookie_and_flag(constructed(tag, WHAT)?, false, WHAT)?;
    if rest.next().is_some() {
        return Err(format!("malformed {WHAT}: unexpected elements"));
    }
    Ok(SyncDone {
        cookie,
        refresh_deletes,
    })
}

/// An IntermediateResponse (`[APPLICATION 25] SEQUENCE { responseName [0] OPTIONAL,
/// responseValue [1] OPTIONAL }`) that must be a syncInfo message.
fn parse_sync_info(message: StructureTag) -> Result<SyncInfo, String> {
    const WHAT: &str = "syncInfo message";
    if message.class != TagClass::Application || message.id != 25 {
        return Err(format!("malformed {WHAT}: not an intermediate response"));
    }
    let mut name = None;
    let mut value = None;
    for part in constructed(message, WHAT)? {
        match (part.class, part.id) {
            (TagClass::Context, 0) if name.is_none() => name = Some(primitive(part, WHAT)?),
            (TagClass::Context, 1) if value.is_none() => value = Some(primitive(part, WHAT)?),
            _ => return Err(format!("malformed {WHAT}: unexpected element")),
        }
    }
    match name {
        Some(oid) if oid == SYNC_INFO_OID.as_bytes() => {}
        Some(oid) => {
            return Err(format!(
                "an unknown intermediate response {:?} in a sync search",
                String::from_utf8_lossy(&oid)
            ));
        }
        None => return Err(format!("malformed {WHAT}: no responseName")),
    }
    let value = value.ok_or_else(|| format!("malformed {WHAT}: no value"))?;
    let tag = parse_whole(&value, WHAT)?;
    if tag.class != TagClass::Context {
        return Err(format!("malformed {WHAT}: not a syncInfoValue choice"));
    }
    match tag.id {
        0 => Ok(SyncInfo::NewCookie(primitive(tag, WHAT)?)),
        1 | 2 => {
            let id = tag.id;
            let CookieAndFlag {
                cookie,
                flag: refresh_done,
                mut rest,
            } = cookie_and_flag(constructed(tag, WHAT)?, true, WHAT)?;
            if rest.next().is_some() {
                return Err(format!("malformed {WHAT}: unexpected elements"));
            }
            Ok(if id == 1 {
                SyncInfo::RefreshDelete { cookie, refresh_done }
            } else {
                SyncInfo::RefreshPresent { cookie, refresh_done }
            })
        }
        3 => {
            let CookieAndFlag {
                cookie,
                flag: refresh_deletes,
                mut rest,
            } = cookie_and_flag(constructed(tag, WHAT)?, false, WHAT)?;
            let set = rest
                .next()
                .filter(|t| is_universal(t, Types::Set))
                .ok_or_else(|| format!("malformed {WHAT}: a syncIdSet without its SET of uuids"))?;
            if rest.next().is_some() {
                return Err(format!("malformed {WHAT}: unexpected elements after the uuids"));
            }
            let uuids = constructed(set, WHAT)?
                .into_iter()
                .map(|t| {
                    if !is_universal(&t, Types::OctetString) {
                        return Err(format!("malformed {WHAT}: a syncUUID is not an OCTET STRING"));
                    }
                    uuid(primitive(t, WHAT)?, WHAT)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SyncInfo::IdSet {
                cookie,
                refresh_deletes,
                uuids,
            })
        }
        other => Err(format!("malformed {WHAT}: unknown choice [{other}]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BER tag-length-value with a short or long length.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = content.len();
        if n < 128 {
            out.push(n as u8);
        } else if n < 256 {
            out.extend([0x81, n as u8]);
        } else {
            out.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        out.extend_from_slice(content);
        out
    }

    fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &parts.concat())
    }

    fn octets(bytes: &[u8]) -> Vec<u8> {
        tlv(0x04, bytes)
    }

    fn boolean_ber(v: bool) -> Vec<u8> {
        tlv(0x01, &[if v { 0xff } else { 0 }])
    }

    fn enumerated(v: u8) -> Vec<u8> {
        tlv(0x0a, &[v])
    }

    const UUID: [u8; 16] = [
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
    ];

    /// An IntermediateResponse as ldap3 hands it over: a parsed [APPLICATION 25] tag.
    fn intermediate(oid: &[u8], value: &[u8]) -> StructureTag {
        let message = tlv(0x79, &[tlv(0x80, oid), tlv(0x81, value)].concat());
        parse_whole(&message, "test").expect("well-formed test message")
    }

    #[test]
    fn uuids_display_like_the_entryuuid_attribute() {
        assert_eq!(SyncUuid(UUID).to_string(), "12345678-9abc-def0-0123-456789abcdef");
    }

    #[test]
    fn sync_state_parses_each_state_and_the_optional_cookie() {
        for (n, state) in [
            (0, EntryState::Present),
            (1, EntryState::Add),
            (2, EntryState::Modify),
            (3, EntryState::Delete),
        ] {
            let value = seq(&[enumerated(n), octets(&UUID)]);
            assert_eq!(
                parse_sync_state(Some(&value)),
                Ok(SyncState {
                    state,
                    uuid: SyncUuid(UUID),
                    cookie: None
                })
            );
        }
        let value = seq(&[enumerated(1), octets(&UUID), octets(b"rid=000,csn=x")]);
        assert_eq!(
            parse_sync_state(Some(&value)).unwrap().cookie,
            Some(b"rid=000,csn=x".to_vec())
        );
    }

    #[test]
    fn malformed_sync_states_are_errors_not_panics() {
        let good = seq(&[enumerated(1), octets(&UUID), octets(b"c")]);
        // every truncation of a good value
        for cut in 0..good.len() {
            assert!(parse_sync_state(Some(&good[..cut])).is_err(), "cut at {cut}");
        }
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (seq(&[enumerated(4), octets(&UUID)]), "unknown state"),
            (seq(&[enumerated(1), octets(&UUID[..15])]), "15 bytes"),
            (seq(&[enumerated(1)]), "no entryUUID"),
            (seq(&[]), "no state"),
            (seq(&[octets(&UUID), enumerated(1)]), "no state"),
            (
                seq(&[enumerated(1), octets(&UUID), boolean_ber(true)]),
                "not an OCTET STRING",
            ),
            (
                seq(&[enumerated(1), octets(&UUID), octets(b"c"), octets(b"d")]),
                "unexpected",
            ),
            (tlv(0x31, &[enumerated(1), octets(&UUID)].concat()), "not a SEQUENCE"),
            ([good.clone(), vec![0]].concat(), "bytes after"),
            (vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff], "not valid BER"),
            (vec![0x30, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9], "not valid BER"),
            (seq(&[tlv(0x0a, &[]), octets(&UUID)]), "unknown state"),
            (seq(&[tlv(0x2a, &[]), octets(&UUID)]), "a constructed value"),
        ];
        for (value, expected) in cases {
            let err = parse_sync_state(Some(&value)).unwrap_err();
            assert!(err.contains(expected), "{value:02x?}: {err}");
            assert!(err.starts_with("malformed Sync State control"), "{err}");
        }
        assert!(parse_sync_state(None).unwrap_err().contains("no value"));
    }

    #[test]
    fn sync_done_defaults_refresh_deletes_to_false() {
        assert_eq!(
            parse_sync_done(Some(&seq(&[]))),
            Ok(SyncDone {
                cookie: None,
                refresh_deletes: false
            })
        );
        assert_eq!(
            parse_sync_done(Some(&seq(&[octets(b"k")]))),
            Ok(SyncDone {
                cookie: Some(b"k".to_vec()),
                refresh_deletes: false
            })
        );
        assert_eq!(
            parse_sync_done(Some(&seq(&[octets(b"k"), boolean_ber(true)]))),
            Ok(SyncDone {
                cookie: Some(b"k".to_vec()),
                refresh_deletes: true
            })
        );
        assert_eq!(
            parse_sync_done(Some(&seq(&[boolean_ber(true)]))),
            Ok(SyncDone {
                cookie: None,
                refresh_deletes: true
            })
        );
    }

    #[test]
    fn malformed_sync_dones_are_errors_not_panics() {
        let good = seq(&[octets(b"cookie"), boolean_ber(true)]);
        for cut in 0..good.len() {
            assert!(parse_sync_done(Some(&good[..cut])).is_err(), "cut at {cut}");
        }
        for value in [
            seq(&[boolean_ber(true), octets(b"k")]),
            seq(&[octets(b"k"), tlv(0x01, &[])]),
            seq(&[octets(b"k"), tlv(0x01, &[1, 1])]),
            seq(&[enumerated(1)]),
            octets(b"k"),
        ] {
            assert!(parse_sync_done(Some(&value)).is_err(), "{value:02x?}");
        }
        assert!(parse_sync_done(None).is_err());
    }

    #[test]
    fn sync_info_parses_every_choice() {
        let info = |value: Vec<u8>| parse_sync_info(intermediate(SYNC_INFO_OID.as_bytes(), &value));
        assert_eq!(info(tlv(0x80, b"new")), Ok(SyncInfo::NewCookie(b"new".to_vec())));
        assert_eq!(
            info(tlv(0xa1, &[])),
            Ok(SyncInfo::RefreshDelete {
                cookie: None,
                refresh_done: true
            })
        );
        assert_eq!(
            info(tlv(0xa2, &[octets(b"c"), boolean_ber(false)].concat())),
            Ok(SyncInfo::RefreshPresent {
                cookie: Some(b"c".to_vec()),
                refresh_done: false
            })
        );
        let other = [0xee; 16];
        assert_eq!(
            info(tlv(
                0xa3,
                &[boolean_ber(true), tlv(0x31, &[octets(&UUID), octets(&other)].concat())].concat()
            )),
            Ok(SyncInfo::IdSet {
                cookie: None,
                refresh_deletes: true,
                uuids: vec![SyncUuid(UUID), SyncUuid(other)]
            })
        );
        assert_eq!(
            info(tlv(0xa3, &[octets(b"c"), tlv(0x31, &octets(&UUID))].concat())),
            Ok(SyncInfo::IdSet {
                cookie: Some(b"c".to_vec()),
                refresh_deletes: false,
                uuids: vec![SyncUuid(UUID)]
            })
        );
    }

    #[test]
    fn malformed_sync_infos_are_errors_not_panics() {
        let oid = SYNC_INFO_OID.as_bytes();
        let good = tlv(
            0xa3,
            &[octets(b"c"), boolean_ber(true), tlv(0x31, &octets(&UUID))].concat(),
        );
        for cut in 0..good.len() {
            assert!(
                parse_sync_info(intermediate(oid, &good[..cut])).is_err(),
                "cut at {cut}"
            );
        }
        for value in [
            tlv(0xa3, &[octets(b"c"), boolean_ber(true)].concat()),
            tlv(0xa3, &tlv(0x31, &octets(&UUID[..4]))),
            tlv(0xa3, &tlv(0x31, &boolean_ber(true))),
            tlv(0xa3, &[tlv(0x31, &[]), tlv(0x31, &[])].concat()),
            tlv(0xa4, &[]),
            tlv(0xa1, &[octets(b"c"), boolean_ber(true), octets(b"d")].concat()),
            tlv(0xa0, &[]),
            tlv(0x80 | 0x01, b"x"),
            octets(b"x"),
        ] {
            assert!(parse_sync_info(intermediate(oid, &value)).is_err(), "{value:02x?}");
        }
        let err = parse_sync_info(intermediate(b"1.2.3", &tlv(0x80, b"c"))).unwrap_err();
        assert!(err.contains("unknown intermediate response"), "{err}");
        // no responseName / no value / wrong message
        let bare = parse_whole(&tlv(0x79, &tlv(0x81, &tlv(0x80, b"c"))), "t").unwrap();
        assert!(parse_sync_info(bare).is_err());
        let bare = parse_whole(&tlv(0x79, &tlv(0x80, oid)), "t").unwrap();
        assert!(parse_sync_info(bare).is_err());
        let entry = parse_whole(&tlv(0x64, &[]), "t").unwrap();
        assert!(parse_sync_info(entry).is_err());
    }

    #[test]
    fn a_large_id_set_with_a_long_length_parses() {
        let uuids: Vec<Vec<u8>> = (0..100u8).map(|i| octets(&[i; 16])).collect();
        let value = tlv(0xa3, &[boolean_ber(false), tlv(0x31, &uuids.concat())].concat());
        match parse_sync_info(intermediate(SYNC_INFO_OID.as_bytes(), &value)) {
            Ok(SyncInfo::IdSet { uuids, .. }) => assert_eq!(uuids.len(), 100),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tracker_turns_id_sets_into_items_and_notes_a_present_phase() {
        let mut items = Vec::new();
        let mut tracker = Tracker::default();
        tracker.info(
            SyncInfo::IdSet {
                cookie: None,
                refresh_deletes: true,
                uuids: vec![SyncUuid(UUID)],
            },
            &mut |i| items.push(i),
        );
        assert!(!tracker.present_phase);
        tracker.info(
            SyncInfo::IdSet {
                cookie: Some(b"c2".to_vec()),
                refresh_deletes: false,
                uuids: vec![SyncUuid([1; 16])],
            },
            &mut |i| items.push(i),
        );
        assert!(tracker.present_phase);
        assert_eq!(tracker.cookie.as_deref(), Some(&b"c2"[..]));
        assert_eq!(
            items,
            [
                SyncItem::Deleted(SyncUuid(UUID)),
                SyncItem::Present(SyncUuid([1; 16])),
                SyncItem::NewCookie(b"c2".to_vec())
            ]
        );
    }

    #[test]
    fn cookies_parse_and_compare_with_the_context_csn() {
        let csn = |t: &str, sid: &str| format!("20261204{t}.000000Z#000000#{sid}#000000");
        let cookie = format!("rid=000,csn={}", csn("120000", "000"));
        let parsed = OpenLdapCookie::parse(cookie.as_bytes()).unwrap();
        assert_eq!(parsed.rid.as_deref(), Some("000"));
        assert_eq!(parsed.csns, [csn("120000", "000")]);
        let mark = |csns: Vec<String>| DirectoryMark {
            base_uuid: "u".into(),
            context_csns: csns,
        };
        assert_eq!(
            mark(vec![csn("120000", "000")]).check_cookie(cookie.as_bytes()),
            CookieCheck::Behind
        );
        assert_eq!(
            mark(vec![csn("130000", "000")]).check_cookie(cookie.as_bytes()),
            CookieCheck::Behind
        );
        assert_eq!(
            mark(vec![csn("110000", "000")]).check_cookie(cookie.as_bytes()),
            CookieCheck::Ahead
        );
        assert_eq!(
            mark(vec![csn("130000", "001")]).check_cookie(cookie.as_bytes()),
            CookieCheck::ForeignServer
        );
        assert_eq!(mark(vec![]).check_cookie(cookie.as_bytes()), CookieCheck::Unknown);
        let any = mark(vec![csn("1", "000")]);
        assert_eq!(any.check_cookie(b"\xff"), CookieCheck::Malformed);
        assert_eq!(any.check_cookie(b"rid=000,csn=junk"), CookieCheck::Malformed);
        assert_eq!(any.check_cookie(b"rid=000"), CookieCheck::Malformed);
        let two = format!("rid=001,sid=002,csn={};{}", csn("120000", "001"), csn("120000", "002"));
        let parsed = OpenLdapCookie::parse(two.as_bytes()).unwrap();
        assert_eq!((parsed.sid.as_deref(), parsed.csns.len()), (Some("002"), 2));
    }
}
