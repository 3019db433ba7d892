//! Plain data shared by the edges and the pure core: what LDAP says a user should be, what
//! mailcow says a mailbox is, and what the state database remembers. No I/O, no behaviour
//! beyond small conversions, so the planner can be tested with values typed into a test.

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

/// The compared fields of a mailcow mailbox, parsed from `get/mailbox/reduced`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mailbox {
    /// Lowercased.
    pub username: String,
    pub name: String,
    pub quota_bytes: u64,
    pub active: u8,
    pub authsource: String,
    pub tls_in: bool,
    pub tls_out: bool,
    pub tags: Vec<String>,
    /// Kept only when non-empty: every `edit/mailbox` resets it unless it is sent again.
    pub attribute_hash: Option<String>,
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

/// The managed mailboxes by uid.
pub type State = BTreeMap<String, ManagedMailbox>;

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
