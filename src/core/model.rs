//! Plain data shared by the edges and the pure core: what LDAP says a user should be, what
//! mailcow says a mailbox is, and what the state database remembers. No I/O, no behaviour
//! beyond small conversions, so the planner can be tested with values typed into a test.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::core::policy::Secret;

/// One byte count per MiB; mailcow takes quotas in MiB and answers in bytes.
pub const MIB: u64 = 1 << 20;

/// A warning of the pass, with its severity as data: `needs_admin` when the sync stays
/// incomplete until someone acts (an entry or alias skipped, an address conflict, a value in
/// LDAP that cannot be used, a mailbox left unmanaged, mailcow set up otherwise than the
/// tool needs). Those are shown under `-q` too, so cron mails them; the others say what the
/// pass did as configured and are silent under `-q`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub needs_admin: bool,
    pub text: String,
}

impl Warning {
    /// The sync stays incomplete until an admin acts.
    pub fn admin(text: String) -> Self {
        Warning {
            needs_admin: true,
            text,
        }
    }

    /// What the pass did, as configured: nothing to fix.
    pub fn note(text: String) -> Self {
        Warning {
            needs_admin: false,
            text,
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// One directory entry as the search returned it: the DN and the requested attributes, with
/// values as raw bytes (LDAP values need not be UTF-8: objectGUID is binary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEntry {
    pub dn: String,
    /// Attribute names lowercased (LDAP names are case-insensitive).
    pub attrs: BTreeMap<String, Vec<Vec<u8>>>,
    /// Attributes the server sent only in part (AD's `member;range=0-1499`): their values
    /// here are incomplete.
    pub ranged: Vec<String>,
}

/// A user as the directory wants its mailbox to be. `None` in a field means "not managed
/// for this user" (attribute unmapped, absent, or unusable): mailcow's value is left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirUser {
    /// Stable identity (entryUUID, objectGUID as GUID text, or the DN).
    pub uid: String,
    pub dn: String,
    /// Lowercased, trimmed, checked address.
    pub mail: String,
    pub name: Option<String>,
    /// The LDAP password value, only when it carries a `{SCHEME}` mailcow stores as-is.
    pub password: Option<Secret>,
    /// The entry has such a value, but it was not kept: its fingerprint equals the one the
    /// state row records, so only a new mailbox would need it, and then it is read again.
    pub password_elided: bool,
    pub quota_mib: Option<u64>,
    /// mailcow's 0/1/2.
    pub active: Option<u8>,
    pub tls_in: Option<bool>,
    pub tls_out: Option<bool>,
    /// Extra addresses (mailAlternateAddress, proxyAddresses `smtp:`), lowercased, sorted,
    /// without `mail` itself.
    pub aliases: Vec<String>,
    /// The alias attribute is mapped and the entry has at least one value of it (its own
    /// address counts). Only then does a missing address mean the admin removed it: an
    /// attribute that reads empty may be a typo or a lost read right, and deletes nothing.
    pub aliases_listed: bool,
    /// The protocol access flags `access` gives this user (bits of
    /// [`crate::core::access::Protocol`]); `None` when `access` is off.
    pub access: Option<u8>,
    /// The template `templates` gives this user: an index into its names; `None` when
    /// `templates` is off or no rule matches.
    pub template: Option<u8>,
}

impl DirUser {
    pub fn domain(&self) -> &str {
        domain_of(&self.mail)
    }
}

/// The domain part of an address (everything after the last `@`).
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// The compared fields of a mailcow mailbox, parsed from `get/mailbox/reduced`. Compact:
/// every mailbox unlike its state row is held as one of these (see [`Mailboxes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mailbox {
    /// Lowercased.
    pub username: Box<str>,
    pub name: Box<str>,
    pub quota_bytes: u64,
    /// `mailcow`, `ldap`, … (the common ones without an allocation).
    pub authsource: Cow<'static, str>,
    /// Kept only when non-empty: every `edit/mailbox` resets it unless it is sent again.
    pub attribute_hash: Option<Box<str>>,
    pub active: u8,
    pub tls_in: bool,
    pub tls_out: bool,
    /// Carries this tool's tag (`sync.tag`); no other tag matters, so no other is kept.
    pub tagged: bool,
    /// The `*_access` attributes, bits of [`crate::core::access::Protocol`].
    pub access: u8,
}

/// The mailboxes of one read, held against the state.
///
/// mailcow answers with every mailbox, and nearly all of them are the ones this tool manages,
/// at the address and with the name their state row records. Such a mailbox is held as a
/// 16-byte slot of its row, its strings read from the row; any other mailbox is held whole.
/// With 100k mailboxes that was 1.6 MB instead of 12.5 MB (heaptrack).
#[derive(Debug, Default)]
pub struct Mailboxes {
    state: Arc<ManagedRows>,
    /// One per state row, in the state's uid order.
    slots: Vec<Slot>,
    /// The mailboxes without a slot, sorted by username once the read is complete.
    others: Vec<Mailbox>,
}

/// The fields of a mailbox held as a slot; its address and name are its row's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxSlot {
    pub quota_bytes: u64,
    pub active: u8,
    pub tls_in: bool,
    pub tls_out: bool,
    pub tagged: bool,
    pub authsource: &'static str,
    pub access: u8,
}

/// A mailbox at its row's address, with its row's name and no attribute hash.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    quota_bytes: u64,
    active: u8,
    /// `SLOT_*` bits.
    flags: u8,
    /// The protocol access bits.
    access: u8,
}

const SLOT_PRESENT: u8 = 1;
const SLOT_TLS_IN: u8 = 2;
const SLOT_TLS_OUT: u8 = 4;
const SLOT_TAGGED: u8 = 8;
const SLOT_LDAP: u8 = 16;

impl Mailboxes {
    /// An empty set that will hold mailboxes against these state rows.
    pub fn holding(state: Arc<ManagedRows>) -> Mailboxes {
        Mailboxes {
            slots: vec![Slot::default(); state.len()],
            state,
            others: Vec::new(),
        }
    }

    /// Exactly these mailboxes, held whole (the first of a username wins).
    pub fn from_list(list: Vec<Mailbox>) -> Mailboxes {
        let mut mailboxes = Mailboxes::default();
        for mailbox in list {
            mailboxes.add(mailbox);
        }
        mailboxes.finish();
        mailboxes
    }

    /// Add one mailbox as the read gives it; call [`Mailboxes::finish`] after the last.
    pub fn add(&mut self, mailbox: Mailbox) {
        let source = match &*mailbox.authsource {
            "mailcow" => 0,
            "ldap" => SLOT_LDAP,
            _ => u8::MAX,
        };
        let row = self.state.position_by_address(&mailbox.username);
        let plain = row.filter(|&r| {
            source != u8::MAX && mailbox.attribute_hash.is_none() && self.state.name_of(r) == Some(&*mailbox.name)
        });
        let Some(r) = plain else {
            if row.is_none_or(|r| self.slots[r].flags & SLOT_PRESENT == 0) {
                self.others.push(mailbox);
            }
            return;
        };
        let slot = &mut self.slots[r];
        if slot.flags & SLOT_PRESENT != 0 {
            return;
        }
        let bit = |on: bool, bit: u8| if on { bit } else { 0 };
        *slot = Slot {
            quota_bytes: mailbox.quota_bytes,
            active: mailbox.active,
            flags: SLOT_PRESENT
                | source
                | bit(mailbox.tls_in, SLOT_TLS_IN)
                | bit(mailbox.tls_out, SLOT_TLS_OUT)
                | bit(mailbox.tagged, SLOT_TAGGED),
            access: mailbox.access,
        };
    }

    /// Sort the mailboxes held whole and drop repeated usernames (the first one stays).
    pub fn finish(&mut self) {
        self.others.sort_by(|a, b| a.username.cmp(&b.username));
        self.others.dedup_by(|later, first| later.username == first.username);
        self.others.shrink_to_fit();
        // A slot filled after a mailbox of its address was held whole came second: drop it.
        for mailbox in &self.others {
            if let Some(r) = self.state.position_by_address(&mailbox.username) {
                self.slots[r].flags = 0;
            }
        }
    }

    /// The mailbox at an address.
    pub fn get(&self, address: &str) -> Option<Cow<'_, Mailbox>> {
        if let Ok(i) = self.others.binary_search_by(|m| (*m.username).cmp(address)) {
            return Some(Cow::Borrowed(&self.others[i]));
        }
        let r = self.state.position_by_address(address)?;
        self.slot_mailbox(r).map(Cow::Owned)
    }

    /// Whether the slots are those of this very state (positions mean its rows).
    pub fn shares(&self, state: &ManagedRows) -> bool {
        std::ptr::eq(Arc::as_ptr(&self.state), state)
    }

    /// The mailbox held as a slot of the row at `position`, if there is one.
    pub fn slot(&self, position: usize) -> Option<MailboxSlot> {
        let slot = self.slots.get(position).filter(|s| s.flags & SLOT_PRESENT != 0)?;
        let on = |bit: u8| slot.flags & bit != 0;
        Some(MailboxSlot {
            quota_bytes: slot.quota_bytes,
            active: slot.active,
            tls_in: on(SLOT_TLS_IN),
            tls_out: on(SLOT_TLS_OUT),
            tagged: on(SLOT_TAGGED),
            authsource: if on(SLOT_LDAP) { "ldap" } else { "mailcow" },
            access: slot.access,
        })
    }

    /// How many mailboxes there are.
    pub fn len(&self) -> usize {
        self.others.len() + self.slots.iter().filter(|s| s.flags & SLOT_PRESENT != 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every mailbox's address (lowercased), in no particular order.
    pub fn usernames(&self) -> impl Iterator<Item = &str> + '_ {
        let slotted = (0..self.slots.len())
            .filter(|&r| self.slots[r].flags & SLOT_PRESENT != 0)
            .map(|r| self.state.address_of(r));
        self.others.iter().map(|m| &*m.username).chain(slotted)
    }

    /// Every mailbox, sorted by address.
    pub fn to_list(&self) -> Vec<Mailbox> {
        let mut list: Vec<Mailbox> = (0..self.slots.len())
            .filter_map(|r| self.slot_mailbox(r))
            .chain(self.others.iter().cloned())
            .collect();
        list.sort_by(|a, b| a.username.cmp(&b.username));
        list
    }

    fn slot_mailbox(&self, r: usize) -> Option<Mailbox> {
        let slot = self.slot(r)?;
        Some(Mailbox {
            username: self.state.address_of(r).into(),
            name: self.state.name_of(r).unwrap_or_default().into(),
            quota_bytes: slot.quota_bytes,
            authsource: Cow::Borrowed(slot.authsource),
            attribute_hash: None,
            active: slot.active,
            tls_in: slot.tls_in,
            tls_out: slot.tls_out,
            tagged: slot.tagged,
            access: slot.access,
        })
    }
}

/// A mailcow domain, from `get/domain/all`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Domain {
    /// Lowercased ASCII/punycode.
    pub name: String,
    pub active: bool,
    pub def_quota_bytes: u64,
    pub max_quota_bytes: u64,
}

/// Counts of the summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub aliases_added: usize,
    pub aliases_updated: usize,
    pub aliases_deleted: usize,
    /// Send-as grants (`groups.as: "sender_acl"`) added and taken back (report and metrics only).
    pub send_as_granted: usize,
    pub send_as_revoked: usize,
    pub created: usize,
    pub updated: usize,
    pub disabled: usize,
    /// Disabled mailboxes whose app passwords / ActiveSync cache were revoked (not stored
    /// in the run table: the pass's report and metrics only).
    pub offboarded: usize,
    /// Domains `sync.create_domains` added (the report and metrics only, as `offboarded`).
    pub domains_created: usize,
    /// Domain admins (`domain_admins`) created, given the configured domains, deleted (the
    /// report and metrics only, as `offboarded`).
    pub admins_created: usize,
    pub admins_updated: usize,
    pub admins_deleted: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub skipped: usize,
    pub failed: usize,
}

/// What the tool last confirmed about a mailbox it manages (one state database row).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedMailbox {
    pub uid: String,
    pub address: String,
    pub dn: String,
    /// Values last written (or found equal), `None` = never managed.
    pub name: Option<String>,
    pub quota_mib: Option<u64>,
    pub active: Option<u8>,
    pub tls_in: Option<bool>,
    pub tls_out: Option<bool>,
    /// Keyed fingerprint of the LDAP password value last sent; never the value.
    pub password_fp: Option<String>,
    /// The authsource last written (`mailcow`, `ldap`).
    pub authsource: Option<String>,
    /// Unix seconds.
    pub first_seen: i64,
    pub last_seen: i64,
    /// Set when this tool disabled the mailbox because its user left LDAP.
    pub disabled_at: Option<i64>,
    /// The mailcow template (`templates`) last applied: on create, or by edits when the
    /// user's template changed; `None` = never.
    pub template: Option<String>,
}

/// The state row of a user first seen at `now`, before anything is written for it.
pub fn new_row(user: &DirUser, now: i64) -> ManagedMailbox {
    ManagedMailbox {
        uid: user.uid.clone(),
        address: user.mail.clone(),
        dn: user.dn.clone(),
        name: user.name.clone(),
        quota_mib: user.quota_mib,
        active: user.active,
        tls_in: user.tls_in,
        tls_out: user.tls_out,
        password_fp: None,
        authsource: None,
        first_seen: now,
        last_seen: now,
        disabled_at: None,
        template: None,
    }
}

/// The managed mailboxes, by uid and by address.
///
/// Packed: every row's strings sit in one arena and each row is a fixed-size record, sorted
/// by uid, with an index sorted by address. A row is unpacked into a [`ManagedMailbox`] when
/// it is read: a row costs a 72-byte record, a 4-byte index entry and its strings, with no
/// allocation of its own (a map of owned rows took about 520 bytes a row: eight allocations
/// and a share of a map node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedRows {
    arena: String,
    rows: Vec<PackedRow>,
    /// Indices into `rows`, sorted by address.
    by_address: Vec<u32>,
}

#[cfg(test)]
impl ManagedRows {
    /// Change one row (the whole state is packed again: for tests).
    pub fn edit(&mut self, uid: &str, change: impl FnOnce(&mut ManagedMailbox)) {
        let mut rows: Vec<ManagedMailbox> = self.values().collect();
        change(rows.iter_mut().find(|r| r.uid == uid).expect("a row with this uid"));
        *self = ManagedRows::from_rows(rows);
    }

    /// Add or replace a row (the whole state is packed again: for tests).
    pub fn insert(&mut self, row: ManagedMailbox) {
        *self = ManagedRows::from_rows(self.values().chain([row]));
    }
}

/// Where a row's strings are in the arena (uid, address, dn, name, password_fp,
/// authsource, template, in that order) and its other fields. The fingerprint (32 hex digits) and the
/// authsource (`mailcow`, `ldap`) are held coded when they have their usual form, the rest
/// with sentinels instead of `Option`s: 72 bytes a row, and 39 fewer in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackedRow {
    at: u32,
    /// Lengths of the seven strings; `ABSENT` for a `None` or a coded value.
    lens: [u16; 7],
    active: Option<u8>,
    tls_in: Option<bool>,
    tls_out: Option<bool>,
    /// `FP_CODED` and one of the `SOURCE_*` values.
    coded: u8,
    /// `NO_QUOTA` for `None`.
    quota_mib: u64,
    first_seen: i64,
    last_seen: i64,
    /// `NOT_DISABLED` for `None`.
    disabled_at: i64,
    /// The fingerprint's bytes when `coded` has `FP_CODED`.
    fp: [u8; 16],
}

/// Some fields of a row, borrowed from the packed state.
#[derive(Debug, Clone, Copy)]
pub struct RowView<'a> {
    pub uid: &'a str,
    pub address: &'a str,
    pub dn: &'a str,
    pub name: Option<&'a str>,
    pub quota_mib: Option<u64>,
    pub active: Option<u8>,
    pub tls_in: Option<bool>,
    pub tls_out: Option<bool>,
    pub authsource: Option<&'a str>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub disabled_at: Option<i64>,
    pub template: Option<&'a str>,
    fp_bytes: Option<&'a [u8; 16]>,
    fp_text: Option<&'a str>,
}

impl RowView<'_> {
    /// Whether the row's password fingerprint is this one.
    pub fn password_fp_is(&self, fingerprint: &str) -> bool {
        match (self.fp_bytes, self.fp_text) {
            (Some(bytes), _) => fp_bytes(fingerprint).as_ref() == Some(bytes),
            (None, text) => text == Some(fingerprint),
        }
    }
}

const FP_CODED: u8 = 1;
const SOURCE_MAILCOW: u8 = 2;
const SOURCE_LDAP: u8 = 4;
const NO_QUOTA: u64 = u64::MAX;
const NOT_DISABLED: i64 = i64::MIN;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The 16 bytes of a fingerprint in its usual form (32 lowercase hex digits).
fn fp_bytes(text: &str) -> Option<[u8; 16]> {
    let digits = text.as_bytes();
    if digits.len() != 32 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; 16];
    for (byte, pair) in out.iter_mut().zip(digits.chunks(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn fp_text(bytes: &[u8; 16]) -> String {
    let mut out = String::with_capacity(32);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

const ABSENT: u16 = u16::MAX;

impl ManagedRows {
    pub fn new() -> ManagedRows {
        ManagedRows::default()
    }

    /// An empty state with room for `rows` rows holding `bytes` of strings.
    pub fn with_capacity(rows: usize, bytes: usize) -> ManagedRows {
        ManagedRows {
            arena: String::with_capacity(bytes),
            rows: Vec::with_capacity(rows),
            by_address: Vec::new(),
        }
    }

    /// Pack rows; a later row with the same uid replaces an earlier one.
    pub fn from_rows(rows: impl IntoIterator<Item = ManagedMailbox>) -> ManagedRows {
        let mut rows: Vec<ManagedMailbox> = rows.into_iter().collect();
        // Reversed, a stable sort puts the last row of each uid first; dedup keeps it.
        rows.reverse();
        rows.sort_by(|a, b| a.uid.cmp(&b.uid));
        rows.dedup_by(|a, b| a.uid == b.uid);
        let mut state = ManagedRows::new();
        for row in &rows {
            state.push_sorted(row);
        }
        state.index();
        state
    }

    /// Append a row whose uid sorts after every row already here (rows read `ORDER BY uid`);
    /// call [`ManagedRows::index`] once after the last one. Strings longer than 65,534 bytes are
    /// cut (no uid, address or DN comes near that).
    pub fn push_sorted(&mut self, row: &ManagedMailbox) {
        let at = u32::try_from(self.arena.len()).expect("state arena below 4 GiB");
        let fp = row.password_fp.as_deref().and_then(fp_bytes);
        let source = match row.authsource.as_deref() {
            Some("mailcow") => SOURCE_MAILCOW,
            Some("ldap") => SOURCE_LDAP,
            _ => 0,
        };
        let mut lens = [ABSENT; 7];
        let parts = [
            Some(row.uid.as_str()),
            Some(row.address.as_str()),
            Some(row.dn.as_str()),
            row.name.as_deref(),
            row.password_fp.as_deref().filter(|_| fp.is_none()),
            row.authsource.as_deref().filter(|_| source == 0),
            row.template.as_deref(),
        ];
        for (len, part) in lens.iter_mut().zip(parts) {
            if let Some(text) = part {
                let mut end = text.len().min(usize::from(ABSENT) - 1);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                self.arena.push_str(&text[..end]);
                *len = end as u16;
            }
        }
        self.rows.push(PackedRow {
            at,
            lens,
            active: row.active,
            tls_in: row.tls_in,
            tls_out: row.tls_out,
            coded: source | if fp.is_some() { FP_CODED } else { 0 },
            quota_mib: row.quota_mib.unwrap_or(NO_QUOTA),
            first_seen: row.first_seen,
            last_seen: row.last_seen,
            disabled_at: row.disabled_at.unwrap_or(NOT_DISABLED),
            fp: fp.unwrap_or_default(),
        });
    }

    /// Build the address index (after the last [`ManagedRows::push_sorted`]).
    pub fn index(&mut self) {
        self.arena.shrink_to_fit();
        self.rows.shrink_to_fit();
        let mut by_address: Vec<u32> = (0..self.rows.len() as u32).collect();
        by_address.sort_by(|&a, &b| {
            self.text(&self.rows[a as usize], 1)
                .cmp(self.text(&self.rows[b as usize], 1))
        });
        self.by_address = by_address;
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row of a uid.
    pub fn get(&self, uid: &str) -> Option<ManagedMailbox> {
        self.find(uid).map(|i| self.unpack(i))
    }

    /// Whether a uid has a row.
    pub fn contains(&self, uid: &str) -> bool {
        self.find(uid).is_some()
    }

    /// The row of an address (addresses are unique among rows in practice; the first wins).
    pub fn by_address(&self, address: &str) -> Option<ManagedMailbox> {
        self.position_by_address(address).map(|r| self.unpack(r))
    }

    /// The position (in uid order) of the row of an address, as [`ManagedRows::by_address`] picks it.
    pub fn position_by_address(&self, address: &str) -> Option<usize> {
        let i = self.by_address.partition_point(|&r| self.address_at(r) < address);
        self.by_address
            .get(i)
            .filter(|&&r| self.address_at(r) == address)
            .map(|&r| r as usize)
    }

    /// The position (in uid order) of the row of a uid.
    pub fn position(&self, uid: &str) -> Option<usize> {
        self.find(uid)
    }

    /// The row at a position, unpacked.
    pub fn at(&self, position: usize) -> ManagedMailbox {
        self.unpack(position)
    }

    /// The row at a position, borrowed: no allocation (the fingerprint stays coded).
    pub fn view(&self, position: usize) -> RowView<'_> {
        let row = &self.rows[position];
        RowView {
            uid: self.text(row, 0),
            address: self.text(row, 1),
            dn: self.text(row, 2),
            name: self.text_opt(row, 3),
            quota_mib: (row.quota_mib != NO_QUOTA).then_some(row.quota_mib),
            active: row.active,
            tls_in: row.tls_in,
            tls_out: row.tls_out,
            authsource: match row.coded & (SOURCE_MAILCOW | SOURCE_LDAP) {
                SOURCE_MAILCOW => Some("mailcow"),
                SOURCE_LDAP => Some("ldap"),
                _ => self.text_opt(row, 5),
            },
            first_seen: row.first_seen,
            last_seen: row.last_seen,
            disabled_at: (row.disabled_at != NOT_DISABLED).then_some(row.disabled_at),
            template: self.text_opt(row, 6),
            fp_bytes: (row.coded & FP_CODED != 0).then_some(&row.fp),
            fp_text: self.text_opt(row, 4),
        }
    }

    /// The uid, address and name of the row at a position, without unpacking it.
    pub fn uid_at(&self, position: usize) -> &str {
        self.text(&self.rows[position], 0)
    }

    pub fn address_of(&self, position: usize) -> &str {
        self.text(&self.rows[position], 1)
    }

    pub fn name_of(&self, position: usize) -> Option<&str> {
        self.text_opt(&self.rows[position], 3)
    }

    /// Positions of the rows of an address.
    pub fn positions_with_address<'a>(&'a self, address: &'a str) -> impl Iterator<Item = usize> + 'a {
        let start = self.by_address.partition_point(|&r| self.address_at(r) < address);
        self.by_address[start..]
            .iter()
            .take_while(move |&&r| self.address_at(r) == address)
            .map(|&r| r as usize)
    }

    /// Positions of rows in address order (rows sharing an address are neighbours).
    pub fn positions_by_address(&self) -> impl Iterator<Item = usize> + '_ {
        self.by_address.iter().map(|&r| r as usize)
    }

    /// Every row's uid and address, in uid order, without unpacking the rows.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.rows.iter().map(|row| (self.text(row, 0), self.text(row, 1)))
    }

    /// Every row, in uid order.
    pub fn values(&self) -> impl Iterator<Item = ManagedMailbox> + '_ {
        (0..self.rows.len()).map(|i| self.unpack(i))
    }

    fn find(&self, uid: &str) -> Option<usize> {
        self.rows.binary_search_by(|row| self.text(row, 0).cmp(uid)).ok()
    }

    /// The address of row `r` (an entry of `by_address`).
    fn address_at(&self, r: u32) -> &str {
        self.text(&self.rows[r as usize], 1)
    }

    /// String `n` of a row (`""` for an absent one).
    fn text(&self, row: &PackedRow, n: usize) -> &str {
        self.text_opt(row, n).unwrap_or("")
    }

    fn text_opt(&self, row: &PackedRow, n: usize) -> Option<&str> {
        let start = row.at as usize
            + row.lens[..n]
                .iter()
                .filter(|&&l| l != ABSENT)
                .map(|&l| usize::from(l))
                .sum::<usize>();
        let len = row.lens[n];
        (len != ABSENT).then(|| &self.arena[start..start + usize::from(len)])
    }

    fn unpack(&self, i: usize) -> ManagedMailbox {
        let row = self.view(i);
        let owned = |text: Option<&str>| text.map(str::to_owned);
        ManagedMailbox {
            uid: row.uid.to_owned(),
            address: row.address.to_owned(),
            dn: row.dn.to_owned(),
            name: owned(row.name),
            quota_mib: row.quota_mib,
            active: row.active,
            tls_in: row.tls_in,
            tls_out: row.tls_out,
            password_fp: row.fp_bytes.map(fp_text).or_else(|| owned(row.fp_text)),
            authsource: owned(row.authsource),
            first_seen: row.first_seen,
            last_seen: row.last_seen,
            disabled_at: row.disabled_at,
            template: owned(row.template),
        }
    }
}

/// An LDAP group with a mail address, its members resolved to addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirGroup {
    /// Stable identity: the configured uid attribute, else the DN.
    pub uid: String,
    pub dn: String,
    /// The group's address, lowercased.
    pub mail: String,
    /// Members' addresses (nested groups expanded), lowercased, sorted, de-duplicated.
    pub members: Vec<String>,
}

/// A mailcow alias, from `get/alias/all` (mailbox self-aliases are not listed there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailcowAlias {
    pub id: u64,
    /// Lowercased.
    pub address: String,
    /// As stored: comma-separated.
    pub goto: String,
    pub active: bool,
    /// Its targets may send as it (postfix's sender login map lists an alias's goto then).
    pub sender_allowed: bool,
}

/// An alias this tool created (one state database row).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedAlias {
    pub address: String,
    pub id: u64,
    /// The goto last written (normalised).
    pub goto: String,
    /// `user:<uid>` or `group:<uid>`.
    pub owner: String,
}

/// The managed aliases by address.
pub type AliasState = BTreeMap<String, ManagedAlias>;

#[cfg(test)]
mod tests {
    use super::*;

    fn row(uid: &str, address: &str) -> ManagedMailbox {
        ManagedMailbox {
            uid: uid.into(),
            address: address.into(),
            dn: format!("cn={uid},dc=example,dc=org"),
            first_seen: 1,
            last_seen: 2,
            ..ManagedMailbox::default()
        }
    }

    #[test]
    fn packed_state_gives_back_every_row_as_it_was() {
        let full = ManagedMailbox {
            name: Some("Jürgen Ünal".into()),
            quota_mib: Some(3072),
            active: Some(2),
            tls_in: Some(true),
            tls_out: Some(false),
            password_fp: Some("00ff".repeat(8)),
            authsource: Some("ldap".into()),
            disabled_at: Some(5),
            template: Some("Staff".into()),
            ..row("b-uid", "juergen@example.org")
        };
        let empty_name = ManagedMailbox {
            name: Some(String::new()),
            ..row("c-uid", "alice@example.org")
        };
        let rows = vec![full.clone(), row("a-uid", "zed@example.org"), empty_name.clone()];
        let state = ManagedRows::from_rows(rows.clone());
        assert_eq!(state.len(), 3);
        assert_eq!(state.get("b-uid"), Some(full.clone()));
        assert_eq!(state.get("c-uid"), Some(empty_name));
        assert_eq!(state.get("zz"), None);
        assert_eq!(state.by_address("juergen@example.org"), Some(full));
        assert_eq!(state.by_address("alice@example.org").unwrap().uid, "c-uid");
        assert_eq!(state.by_address("nobody@example.org"), None);
        let uids: Vec<String> = state.values().map(|r| r.uid).collect();
        assert_eq!(uids, ["a-uid", "b-uid", "c-uid"]);
        let keys: Vec<(&str, &str)> = state.keys().collect();
        assert_eq!(keys[1], ("b-uid", "juergen@example.org"));
    }

    #[test]
    fn fingerprints_and_authsources_out_of_their_usual_form_are_kept_as_text() {
        let odd = ManagedMailbox {
            password_fp: Some("not-hex".into()),
            authsource: Some("keycloak".into()),
            quota_mib: Some(0),
            disabled_at: Some(0),
            ..row("a", "a@example.org")
        };
        let upper = ManagedMailbox {
            password_fp: Some("00FF".repeat(8)),
            authsource: Some("mailcow".into()),
            ..row("b", "b@example.org")
        };
        let state = ManagedRows::from_rows([odd.clone(), upper.clone()]);
        assert_eq!(state.get("a"), Some(odd));
        assert_eq!(state.get("b"), Some(upper));
        assert_eq!(fp_bytes(&"0a".repeat(16)), Some([10; 16]));
        assert_eq!(fp_text(&[10; 16]), "0a".repeat(16));
    }

    fn mailbox(username: &str, name: &str) -> Mailbox {
        Mailbox {
            username: username.into(),
            name: name.into(),
            quota_bytes: 3 * MIB,
            authsource: Cow::Borrowed("mailcow"),
            active: 1,
            tls_in: true,
            tagged: true,
            ..Mailbox::default()
        }
    }

    #[test]
    fn mailboxes_held_against_the_state_give_back_what_was_read() {
        let named = |uid: &str, address: &str| ManagedMailbox {
            name: Some(format!("Name {uid}")),
            ..row(uid, address)
        };
        let state = Arc::new(ManagedRows::from_rows([
            named("1", "a@example.org"),
            named("2", "b@example.org"),
            named("3", "c@example.org"),
            row("4", "d@example.org"),
        ]));
        let ldap = Mailbox {
            authsource: Cow::Borrowed("ldap"),
            active: 2,
            tls_out: true,
            tagged: false,
            ..mailbox("b@example.org", "Name 2")
        };
        let read = vec![
            mailbox("a@example.org", "Name 1"),
            ldap.clone(),
            // Renamed in mailcow, an unusual authsource, an attribute hash, no row, no name:
            // held whole.
            mailbox("c@example.org", "Renamed"),
            Mailbox {
                attribute_hash: Some("h".into()),
                ..mailbox("x@example.org", "")
            },
            mailbox("d@example.org", ""),
            // A repeated address: the first one stays.
            mailbox("a@example.org", "Other"),
        ];
        let mut held = Mailboxes::holding(state.clone());
        for m in read.clone() {
            held.add(m);
        }
        held.finish();
        assert_eq!(held.others.len(), 3, "{:?}", held.others);
        let whole = Mailboxes::from_list(read.clone());
        assert_eq!(held.to_list(), whole.to_list());
        assert_eq!(held.len(), 5);
        assert_eq!(held.get("a@example.org").as_deref(), Some(&read[0]));
        assert_eq!(held.get("b@example.org").as_deref(), Some(&ldap));
        assert_eq!(held.get("c@example.org").unwrap().name.as_ref(), "Renamed");
        assert_eq!(held.get("y@example.org"), None);
        let mut names: Vec<&str> = held.usernames().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "a@example.org",
                "b@example.org",
                "c@example.org",
                "d@example.org",
                "x@example.org"
            ]
        );

        // A repeated address whose first mailbox was held whole: the later slot is dropped.
        let mut held = Mailboxes::holding(state);
        held.add(mailbox("a@example.org", "Other"));
        held.add(mailbox("a@example.org", "Name 1"));
        held.finish();
        assert_eq!(held.len(), 1);
        assert_eq!(held.get("a@example.org").unwrap().name.as_ref(), "Other");
    }

    #[test]
    fn a_later_row_of_a_uid_replaces_the_earlier() {
        let state = ManagedRows::from_rows([row("u", "old@example.org"), row("u", "new@example.org")]);
        assert_eq!(state.len(), 1);
        assert_eq!(state.get("u").unwrap().address, "new@example.org");
        assert_eq!(state.by_address("old@example.org"), None);
    }
}

/// mailcow's identity provider as `get/identity-provider` describes it, without its secrets
/// (the answer carries the LDAP `bindpass` and the OIDC `client_secret` in clear: they are
/// never read into this value; docs/mailcow-api-admins.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityProvider {
    /// `ldap`, `keycloak` or `generic-oidc`.
    pub authsource: String,
    /// LDAP: `host:port`, and the base DN its sync and logins search.
    pub server: String,
    pub base_dn: String,
    /// `periodic_sync`: mailcow's cron re-applies the mapped template (and the name) to every
    /// `ldap` mailbox of an LDAP user it finds.
    pub periodic_sync: bool,
    /// `import_users`: the cron creates an `ldap` mailbox for every LDAP user it finds.
    pub import_users: bool,
    /// `login_provisioning`: a first login creates the mailbox (mailcow's default: on).
    pub login_provisioning: bool,
    /// `mappers`: attribute values that pick a template; at every login of a matching
    /// `ldap` mailbox mailcow re-applies that template.
    pub mappers: usize,
    /// `default_template`, for users no mapper matches ("" = none).
    pub default_template: String,
}
