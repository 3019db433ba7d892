//! Plain data shared by the edges and the pure core: what LDAP says a user should be, what
//! mailcow says a mailbox is, and what the state database remembers. No I/O, no behaviour
//! beyond small conversions, so the planner can be tested with values typed into a test.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::config::Secret;

/// One byte count per MiB; mailcow takes quotas in MiB and answers in bytes.
pub const MIB: u64 = 1 << 20;

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
    pub quota_mib: Option<u64>,
    /// mailcow's 0/1/2.
    pub active: Option<u8>,
    pub tls_in: Option<bool>,
    pub tls_out: Option<bool>,
    /// Extra addresses (mailAlternateAddress, proxyAddresses `smtp:`), lowercased, sorted,
    /// without `mail` itself.
    pub aliases: Vec<String>,
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
/// 100k of these are held at once.
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
    pub created: usize,
    pub updated: usize,
    pub disabled: usize,
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
}

/// The managed mailboxes, by uid and by address.
///
/// Packed: every row's strings sit in one arena and each row is a fixed-size record, sorted
/// by uid, with an index sorted by address. A row is unpacked into a [`ManagedMailbox`] when
/// it is read: a row costs a 72-byte record, a 4-byte index entry and its strings, with no
/// allocation of its own (a map of owned rows took about 520 bytes a row: eight allocations
/// and a share of a map node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    arena: String,
    rows: Vec<PackedRow>,
    /// Indices into `rows`, sorted by address.
    by_address: Vec<u32>,
}

#[cfg(test)]
impl State {
    /// Change one row (the whole state is packed again: for tests).
    pub fn edit(&mut self, uid: &str, change: impl FnOnce(&mut ManagedMailbox)) {
        let mut rows: Vec<ManagedMailbox> = self.values().collect();
        change(rows.iter_mut().find(|r| r.uid == uid).expect("a row with this uid"));
        *self = State::from_rows(rows);
    }

    /// Add or replace a row (the whole state is packed again: for tests).
    pub fn insert(&mut self, row: ManagedMailbox) {
        *self = State::from_rows(self.values().chain([row]));
    }
}

/// Where a row's strings are in the arena (uid, address, dn, name, password_fp,
/// authsource, in that order) and its other fields. The fingerprint (32 hex digits) and the
/// authsource (`mailcow`, `ldap`) are held coded when they have their usual form, the rest
/// with sentinels instead of `Option`s: 72 bytes a row, and 39 fewer in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackedRow {
    at: u32,
    /// Lengths of the six strings; `ABSENT` for a `None` or a coded value.
    lens: [u16; 6],
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
    let nibble = |c: u8| HEX.iter().position(|&h| h == c).map(|v| v as u8);
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

impl State {
    pub fn new() -> State {
        State::default()
    }

    /// Pack rows; a later row with the same uid replaces an earlier one.
    pub fn from_rows(rows: impl IntoIterator<Item = ManagedMailbox>) -> State {
        let mut rows: Vec<ManagedMailbox> = rows.into_iter().collect();
        // Reversed, a stable sort puts the last row of each uid first; dedup keeps it.
        rows.reverse();
        rows.sort_by(|a, b| a.uid.cmp(&b.uid));
        rows.dedup_by(|a, b| a.uid == b.uid);
        let mut state = State::new();
        for row in &rows {
            state.push_sorted(row);
        }
        state.index();
        state
    }

    /// Append a row whose uid sorts after every row already here (rows read `ORDER BY uid`);
    /// call [`State::index`] once after the last one. Strings longer than 65,534 bytes are
    /// cut (no uid, address or DN comes near that).
    pub fn push_sorted(&mut self, row: &ManagedMailbox) {
        let at = u32::try_from(self.arena.len()).expect("state arena below 4 GiB");
        let fp = row.password_fp.as_deref().and_then(fp_bytes);
        let source = match row.authsource.as_deref() {
            Some("mailcow") => SOURCE_MAILCOW,
            Some("ldap") => SOURCE_LDAP,
            _ => 0,
        };
        let mut lens = [ABSENT; 6];
        let parts = [
            Some(row.uid.as_str()),
            Some(row.address.as_str()),
            Some(row.dn.as_str()),
            row.name.as_deref(),
            row.password_fp.as_deref().filter(|_| fp.is_none()),
            row.authsource.as_deref().filter(|_| source == 0),
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

    /// Build the address index (after the last [`State::push_sorted`]).
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
        let i = self.by_address.partition_point(|&r| self.address_at(r) < address);
        self.by_address
            .get(i)
            .filter(|&&r| self.address_at(r) == address)
            .map(|&r| self.unpack(r as usize))
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
        let row = &self.rows[i];
        let owned = |n: usize| self.text_opt(row, n).map(str::to_owned);
        let authsource = match row.coded & (SOURCE_MAILCOW | SOURCE_LDAP) {
            SOURCE_MAILCOW => Some("mailcow".to_owned()),
            SOURCE_LDAP => Some("ldap".to_owned()),
            _ => owned(5),
        };
        ManagedMailbox {
            uid: self.text(row, 0).to_owned(),
            address: self.text(row, 1).to_owned(),
            dn: self.text(row, 2).to_owned(),
            name: owned(3),
            quota_mib: (row.quota_mib != NO_QUOTA).then_some(row.quota_mib),
            active: row.active,
            tls_in: row.tls_in,
            tls_out: row.tls_out,
            password_fp: if row.coded & FP_CODED != 0 {
                Some(fp_text(&row.fp))
            } else {
                owned(4)
            },
            authsource,
            first_seen: row.first_seen,
            last_seen: row.last_seen,
            disabled_at: (row.disabled_at != NOT_DISABLED).then_some(row.disabled_at),
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
            ..row("b-uid", "juergen@example.org")
        };
        let empty_name = ManagedMailbox {
            name: Some(String::new()),
            ..row("c-uid", "alice@example.org")
        };
        let rows = vec![full.clone(), row("a-uid", "zed@example.org"), empty_name.clone()];
        let state = State::from_rows(rows.clone());
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
        let state = State::from_rows([odd.clone(), upper.clone()]);
        assert_eq!(state.get("a"), Some(odd));
        assert_eq!(state.get("b"), Some(upper));
        assert_eq!(fp_bytes(&"0a".repeat(16)), Some([10; 16]));
        assert_eq!(fp_text(&[10; 16]), "0a".repeat(16));
    }

    #[test]
    fn a_later_row_of_a_uid_replaces_the_earlier() {
        let state = State::from_rows([row("u", "old@example.org"), row("u", "new@example.org")]);
        assert_eq!(state.len(), 1);
        assert_eq!(state.get("u").unwrap().address, "new@example.org");
        assert_eq!(state.by_address("old@example.org"), None);
    }
}
