//! The rules of a pass, as plain values: what the config decides about mailboxes (the
//! policy enums the config parses into), how entries map to mailbox fields, and the keyed
//! fingerprint of a password. The config module builds these; the core only reads them.

use std::collections::BTreeSet;
use std::fmt;

use crate::core::model::domain_of;

/// A secret from the config, a file or the environment. Never printed: `Debug` is redacted
/// and there is no `Display`, so it cannot slip into a log line or an error by accident.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The value, for the one place that must send it (the bind, the API header).
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// LDAP attribute names for each mailbox field; `None` = that field is not managed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserMapping {
    pub mail: String,
    pub firstname: Option<String>,
    pub lastname: Option<String>,
    pub password: Option<String>,
    pub quota: Option<String>,
    pub active: Option<String>,
    pub tls_enforce_in: Option<String>,
    pub tls_enforce_out: Option<String>,
    pub name: Option<String>,
    /// `None` = the entry's DN is the user's identity.
    pub uid: Option<String>,
    pub aliases: Option<String>,
    /// `mail_rewrite`: the domain part of every address read (the mail and the alias
    /// values), rewritten before anything else sees it.
    pub mail_rewrite: MailRewrite,
}

/// `ldap.user_mapping.mail_rewrite`: `{"@corp.local": "@example.org"}`. An address whose
/// `@domain` ends it equals a key (ASCII case ignored) gets the value's domain instead.
/// Keys and values are `@` plus a domain, lowercased by the config; at most one key can
/// match an address (the `@` anchors it), so the order of the keys does not matter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailRewrite(pub std::collections::BTreeMap<String, String>);

impl MailRewrite {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The address with its domain rewritten, or as it is (trimmed) when no key matches.
    pub fn apply<'a>(&self, address: &'a str) -> std::borrow::Cow<'a, str> {
        let address = address.trim();
        if let Some(at) = address.rfind('@') {
            let (local, domain) = address.split_at(at);
            if let Some(to) = self.0.get(&domain.to_ascii_lowercase()) {
                return std::borrow::Cow::Owned(format!("{local}{to}"));
            }
        }
        std::borrow::Cow::Borrowed(address)
    }
}

impl UserMapping {
    /// Every attribute the search must return.
    pub fn attributes(&self) -> Vec<&str> {
        let mut attrs: Vec<&str> = [
            Some(&self.mail),
            self.firstname.as_ref(),
            self.lastname.as_ref(),
            self.password.as_ref(),
            self.quota.as_ref(),
            self.active.as_ref(),
            self.tls_enforce_in.as_ref(),
            self.tls_enforce_out.as_ref(),
            self.name.as_ref(),
            self.uid.as_ref(),
            self.aliases.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
        attrs.sort_unstable();
        attrs.dedup();
        attrs
    }
}

/// What happens to a managed mailbox whose user is gone from LDAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRemoved {
    /// `active` 0: no mail accepted, no login.
    Disable,
    /// `active` 2: mail still delivered, every login refused.
    DisallowLogin,
    /// `delete/mailbox` (the original tool's behaviour).
    Delete,
    /// Leave it as it is.
    Keep,
}

/// What a new `mail` for the same user (same uid) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressChange {
    /// `edit/rename-mbox` within the domain, the old address kept as an alias; another
    /// domain gets a new mailbox (mailcow cannot move one between domains).
    Rename,
    /// A new mailbox at the new address; the old one is left as it is.
    Recreate,
}

/// What is revoked when this tool disables a mailbox (`sync.offboard`): a disabled
/// mailbox keeps its app passwords and its ActiveSync devices, which work again the day it
/// is enabled (by hand, or its user back in LDAP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offboard {
    /// `"app_passwords"`: list the mailbox's app passwords and delete them.
    pub app_passwords: bool,
    /// `"eas"`: reset its ActiveSync device cache (`delete/eas_cache`).
    pub eas: bool,
}

impl Offboard {
    /// The default: app passwords revoked, the EAS cache left.
    pub const APP_PASSWORDS: Offboard = Offboard {
        app_passwords: true,
        eas: false,
    };

    pub fn any(self) -> bool {
        self.app_passwords || self.eas
    }
}

/// Which existing mailboxes at an LDAP user's address this tool may take over (adopt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopt {
    /// Only mailboxes that carry `sync.tag` (made by this tool, or tagged by the admin to
    /// hand them over) or that the original tool's database lists.
    Tagged,
    /// Any mailbox at the address (whoever can set their own `mail` takes over a
    /// hand-made mailbox such as `info@`): a warning per adoption.
    ByAddress,
}

/// `sync.idp_mailboxes`: whether a mailbox that mailcow's own LDAP identity provider made
/// (authsource `ldap`, without this tool's tag, no state row) may be taken over. mailcow
/// accepts authsource `ldap` only while its IdP is LDAP (API.md 5), so such a mailbox is its
/// IdP's: its sync (`ldap-sync.php`) and every login re-apply its template to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpMailboxes {
    /// Never adopted, so never edited, disabled or deleted: the user is skipped with the
    /// reason. The default with `sync.authsource: "mailcow"`.
    Protect,
    /// Adopted as `sync.adopt` allows any other mailbox. The default with
    /// `sync.authsource: "ldap"` (this tool makes the IdP's mailboxes, as before).
    Adopt,
}

impl IdpMailboxes {
    /// `"auto"`: protect unless this tool itself makes `ldap` mailboxes.
    pub fn auto(authsource: Authsource) -> IdpMailboxes {
        match authsource {
            Authsource::Mailcow => IdpMailboxes::Protect,
            Authsource::Ldap => IdpMailboxes::Adopt,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IdpMailboxes::Protect => "protect",
            IdpMailboxes::Adopt => "adopt",
        }
    }
}

/// The most removals one pass may make before the guard refuses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxRemovals {
    Count(u64),
    /// A percentage of the managed mailboxes, rounded up.
    Percent(f64),
}

impl MaxRemovals {
    /// The allowed number of removals with `managed` mailboxes under management.
    pub fn allowed(self, managed: usize) -> u64 {
        match self {
            MaxRemovals::Count(n) => n,
            MaxRemovals::Percent(p) => (p / 100.0 * managed as f64).ceil() as u64,
        }
    }
}

impl fmt::Display for MaxRemovals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxRemovals::Count(n) => write!(f, "{n}"),
            MaxRemovals::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// When the LDAP password value is sent to mailcow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordMode {
    /// On create, and when the LDAP value changed since the last pass.
    Changed,
    /// Every pass.
    Always,
    /// Only on create.
    Create,
    /// Never.
    Never,
    /// No hashes in LDAP: a random strong password on create.
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authsource {
    Mailcow,
    Ldap,
}

impl Authsource {
    pub fn as_str(self) -> &'static str {
        match self {
            Authsource::Mailcow => "mailcow",
            Authsource::Ldap => "ldap",
        }
    }
}

/// Unit of the LDAP quota attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaUnit {
    Bytes,
    KiB,
    MiB,
    GiB,
}

impl QuotaUnit {
    pub fn bytes(self) -> u64 {
        match self {
            QuotaUnit::Bytes => 1,
            QuotaUnit::KiB => 1 << 10,
            QuotaUnit::MiB => 1 << 20,
            QuotaUnit::GiB => 1 << 30,
        }
    }
}

/// How the LDAP `active` attribute reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveFormat {
    /// 0/1/2 as mailcow means them.
    Mailcow,
    /// TRUE/FALSE, yes/no, 1/0.
    Bool,
    /// userAccountControl: bit 0x2 set = disabled.
    Ad,
    /// `Ad` when the attribute is userAccountControl, else by the value.
    Auto,
}

/// The largest quota accepted from LDAP or the config: 1 PiB in MiB. mailcow would take more,
/// but such a value is a typo, and a typo must not become a write.
pub const MAX_QUOTA_MIB: u64 = 1 << 30;

/// `sync.create_domains`: what a mail domain this tool adds in mailcow (`add/domain`) gets,
/// for LDAP users whose domain mailcow lacks. Quotas in MiB, as `add/domain` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDomain {
    pub description: String,
    /// Mailboxes the domain may hold (`mailboxes`; mailcow's template has 10).
    pub mailboxes: u64,
    /// Aliases it may hold (`aliases`).
    pub aliases: u64,
    /// Quota of a mailbox created without one (`defquota`).
    pub default_quota_mib: u64,
    /// The largest quota of one mailbox (`maxquota`).
    pub max_quota_mib: u64,
    /// The sum of its mailboxes' quotas (`quota`).
    pub quota_mib: u64,
    pub active: bool,
}

impl NewDomain {
    pub const DEFAULT_MAILBOXES: u64 = 1000;
    pub const DEFAULT_ALIASES: u64 = 4000;
    pub const DEFAULT_QUOTA_MIB: u64 = 3072;
    pub const DEFAULT_MAX_QUOTA_MIB: u64 = 10240;
    pub const DEFAULT_DESCRIPTION: &'static str = "added by mailcow-ldap-sync";
    /// The largest domain quota: mailcow lists it in bytes in a signed 64-bit value.
    pub const MAX_DOMAIN_QUOTA_MIB: u64 = 1 << 42;

    /// The domain quota when none is given: room for every mailbox at the largest quota.
    pub fn default_domain_quota(mailboxes: u64, max_quota_mib: u64) -> u64 {
        mailboxes.saturating_mul(max_quota_mib).min(Self::MAX_DOMAIN_QUOTA_MIB)
    }
}

impl Default for NewDomain {
    fn default() -> NewDomain {
        NewDomain {
            description: Self::DEFAULT_DESCRIPTION.to_owned(),
            mailboxes: Self::DEFAULT_MAILBOXES,
            aliases: Self::DEFAULT_ALIASES,
            default_quota_mib: Self::DEFAULT_QUOTA_MIB,
            max_quota_mib: Self::DEFAULT_MAX_QUOTA_MIB,
            quota_mib: Self::default_domain_quota(Self::DEFAULT_MAILBOXES, Self::DEFAULT_MAX_QUOTA_MIB),
            active: true,
        }
    }
}

impl fmt::Display for NewDomain {
    /// As `check` and `-v` show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} mailboxes, {} aliases, mailbox quota {} MiB by default and {} MiB at most, {} MiB in all, {}",
            self.mailboxes,
            self.aliases,
            self.default_quota_mib,
            self.max_quota_mib,
            self.quota_mib,
            if self.active { "active" } else { "inactive" }
        )
    }
}

/// The policy part of the config, plus the flags of this pass.
#[derive(Debug, Clone)]
pub struct Policy {
    pub on_removed: OnRemoved,
    /// With `on_removed = Delete`: days a mailbox stays disabled before it is deleted
    /// (0 = deleted at once).
    pub delete_after_days: u64,
    pub max_removals: MaxRemovals,
    pub password: PasswordMode,
    pub authsource: Authsource,
    pub tag: Option<String>,
    pub adopt: Adopt,
    /// Whether mailboxes of mailcow's own LDAP identity provider may be adopted.
    pub idp_mailboxes: IdpMailboxes,
    pub on_address_change: AddressChange,
    /// What a disable revokes besides the login.
    pub offboard: Offboard,
    /// Addresses the original tool's database (`mailcow.sqlite3`, table `user`) lists: its
    /// mailboxes may be adopted although they carry no tag.
    pub listed_by_original_tool: BTreeSet<String>,
    pub default_quota_mib: Option<u64>,
    /// Empty = every domain.
    pub domains: BTreeSet<String>,
    /// `sync.create_domains`: a user's domain missing in mailcow is added with these
    /// values; `None` = such a user fails.
    pub create_domains: Option<NewDomain>,
    /// Password fingerprints, keyed with the state database's key.
    pub fingerprinter: Fingerprinter,
    /// Why this pass saw only part of LDAP or mailcow (continuation references, an empty
    /// mailbox list while mailboxes are managed, `--override-filter`, a failed group
    /// search): then a user missing from the view proves nothing, and nothing is removed
    /// or forgotten.
    pub partial_view: Option<String>,
    /// Set by an incremental pass, which plans with the changed users and their rows only.
    pub changes_only: Option<ChangesOnly>,
    /// The protocol access flags `access` manages (bits of
    /// [`crate::core::access::Protocol`]); 0 = off.
    pub access_managed: u8,
    /// `templates`: each name its rules give, with mailcow's template of that name (`None`:
    /// mailcow has none), indexed as [`crate::core::model::DirUser::template`].
    pub templates: Vec<(String, Option<crate::core::access::MailboxTemplate>)>,
    /// With several sources: which state rows this source's removals may touch; `None` =
    /// every row (one directory).
    pub rows_owned: Option<RowsOwned>,
}

/// The state rows of one source: `owners` has one entry per row position (the source's
/// index, or [`RowsOwned::NOBODY`] for a source the config no longer names).
#[derive(Debug, Clone)]
pub struct RowsOwned {
    pub owners: std::sync::Arc<Vec<u16>>,
    pub source: u16,
}

impl RowsOwned {
    pub const NOBODY: u16 = u16::MAX;
}

impl Policy {
    /// Whether the removals of this pass (its source) may touch the row at `position`.
    pub fn owns_row(&self, position: usize) -> bool {
        self.rows_owned
            .as_ref()
            .is_none_or(|o| o.owners.get(position) == Some(&o.source))
    }
}

/// What the guard of an incremental pass counts from, since its rows and users are only the
/// changed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangesOnly {
    /// Managed mailboxes in scope and not disabled: the base of `max_removals`.
    pub managed: usize,
    /// The directory holds no entry now (its uids read in full this pass, or none listed
    /// by the refresh), for the empty directory rule; false when nothing left it.
    pub directory_empty: bool,
}

impl Policy {
    pub fn in_scope(&self, address: &str) -> bool {
        self.domains.is_empty() || self.domains.contains(domain_of(address))
    }
}

/// A keyed fingerprint of a password value: enough to notice a change, useless to recover
/// the value (it is an HMAC under a random key of this state database).
pub fn fingerprint(key: &[u8], value: &Secret) -> String {
    Fingerprinter::new(key).of(value)
}

/// The HMAC key made once per pass: making it costs as much as using it.
#[derive(Clone, Debug)]
pub struct Fingerprinter(ring::hmac::Key);

impl Fingerprinter {
    pub fn new(key: &[u8]) -> Fingerprinter {
        Fingerprinter(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key))
    }

    pub fn of(&self, value: &Secret) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let tag = ring::hmac::sign(&self.0, value.expose().as_bytes());
        let mut out = String::with_capacity(32);
        for b in &tag.as_ref()[..16] {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
        out
    }
}
