//! mailcow's HTTP API: the calls a pass makes ([`MailcowApi`]), the HTTP client that makes
//! them ([`http::HttpMailcow`]), and the reading of mailcow's answers (`wire`).
//!
//! The trait is the test seam: `apply` runs a plan against any `MailcowApi`, so its order
//! and stop rules are unit-tested against an in-memory fake (`fake`, tests only).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::core::access::MailboxTemplate;
use crate::core::model::{Domain, IdentityProvider, Mailbox, Mailboxes, MailcowAlias, ManagedRows};
use crate::error::Result;

#[cfg(test)]
pub(crate) mod fake;
pub mod http;
mod wire;

pub use http::HttpMailcow;
pub use wire::{
    AliasResult, AppPasswordsResult, Entry, ItemResult, match_items, parse_domain_list, parse_entries,
    parse_identity_provider, parse_mailbox_list, parse_mailboxes, parse_one_mailbox,
};

/// Whether `get/mailbox/{address}` finds this address: nginx decodes the path and PHP parses
/// it again as a query string, so `+` turns into a space and `%`, `&`, `#` break it (API.md 1).
pub fn by_name_safe(address: &str) -> bool {
    address
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'))
}

/// Every call a pass and `check` make. An `Err` is fatal (unreachable, key rejected, an
/// answer that is not mailcow's) and stops the pass; a write's per-item failures are in its
/// `Ok` answer, keyed by lowercased address. `Sync`: a pass sends from several threads.
pub trait MailcowApi: Sync {
    /// Every mailbox, from one `get/mailbox/reduced`, noting which carry `tag`, held
    /// against the state's rows.
    fn mailboxes(&self, tag: Option<&str>, state: Arc<ManagedRows>) -> Result<Mailboxes>;

    /// One mailbox, from one `get/mailbox/{address}` (`None`: mailcow has none there). Only
    /// for addresses that survive nginx's decoding of the path (see [`by_name_safe`]).
    fn mailbox(&self, address: &str, tag: Option<&str>) -> Result<Option<Mailbox>>;

    /// Every domain, from one `get/domain/all`.
    fn domains(&self) -> Result<Vec<Domain>>;

    /// Every alias (mailbox self-aliases excluded), from one `get/alias/all`.
    fn aliases(&self) -> Result<Vec<MailcowAlias>>;

    /// `add/domain` of one domain (`attrs["domain"]`): confirmed only by a
    /// `["domain_added", domain]` entry (docs/mailcow-api-domains.md).
    fn add_domain(&self, attrs: &Value) -> Result<ItemResult>;

    /// `add/mailbox` of one mailbox: confirmed only by a `mailbox_added` entry.
    fn add_mailbox(&self, attrs: &Value) -> Result<ItemResult>;

    /// `edit/mailbox` for many items sharing one `attr`; one result per item.
    fn edit_mailbox(&self, items: &[String], attr: &Value) -> Result<BTreeMap<String, ItemResult>>;

    /// `edit/tls_policy` (edit/mailbox ignores the TLS flags: API.md 4.6).
    fn edit_tls_policy(&self, items: &[String], tls_in: bool, tls_out: bool) -> Result<BTreeMap<String, ItemResult>>;

    /// `edit/rename-mbox` of one mailbox to a new address in its domain, with
    /// `create_alias` so that the old address keeps receiving mail: confirmed only by a
    /// `mailbox_renamed` entry (API.md 4.9).
    fn rename_mailbox(&self, old: &str, new: &str) -> Result<ItemResult>;

    /// `delete/mailbox` of many mailboxes.
    fn delete_mailboxes(&self, items: &[String]) -> Result<BTreeMap<String, ItemResult>>;

    /// `add/alias` for several addresses sharing one goto: the new id of each.
    fn add_aliases(
        &self,
        addresses: &[String],
        goto: &str,
        sender_allowed: bool,
    ) -> Result<BTreeMap<String, AliasResult>>;

    /// `edit/alias` of one alias's goto, by id (one per call: a failure's message does not
    /// reliably name its alias).
    fn edit_alias(&self, id: u64, address: &str, goto: &str) -> Result<ItemResult>;

    /// The internal send-as list of one mailbox, from one `get/mailbox/{address}`: `None`
    /// when mailcow has no such mailbox, `Some(None)` when its answer has no `sender_acl`
    /// (mailcow before 2026-07a: docs/mailcow-api-sender-acl.md).
    fn sender_acl(&self, address: &str) -> Result<Option<Option<Vec<String>>>>;

    /// `edit/mailbox` of one mailbox's whole `sender_acl` list (an empty one is sent as
    /// `["default"]`, mailcow's reset). `Ok(Ok(refused))`: confirmed by `mailbox_modified`,
    /// with the values mailcow dropped as `sender_acl_invalid`.
    fn edit_sender_acl(&self, mailbox: &str, list: &[String]) -> Result<std::result::Result<Vec<String>, String>>;

    /// `delete/alias` by ids; `addresses` (the same order) match the answer to its items.
    fn delete_aliases(&self, ids: &[u64], addresses: &[String]) -> Result<BTreeMap<String, ItemResult>>;

    /// The ids of `mailbox`'s app passwords, from one `get/app-passwd/all/{mailbox}`
    /// (`{}`: none). An answer listing another mailbox's is an item failure.
    fn app_passwords(&self, mailbox: &str) -> Result<AppPasswordsResult>;

    /// `delete/app-passwd` of these ids: confirmed only if every id is reported removed.
    fn delete_app_passwords(&self, ids: &[u64]) -> Result<ItemResult>;

    /// `delete/eas_cache` of one mailbox (a failure there names no mailbox).
    fn reset_eas_cache(&self, mailbox: &str) -> Result<ItemResult>;

    /// mailcow's identity provider, from one `get/identity-provider` (`None`: none is
    /// configured), its secrets dropped. Only `check` asks: a pass needs no request for the
    /// IdP's mailboxes, whose authsource `ldap` already names them.
    fn identity_provider(&self) -> Result<Option<IdentityProvider>>;

    /// Every domain admin, from one `get/domain-admin/all` (superadmins are not listed).
    fn domain_admins(&self) -> Result<Vec<crate::core::admins::MailcowAdmin>>;

    /// `add/domain-admin` of one admin (`attrs["username"]`): confirmed only by a
    /// `["domain_admin_added", username]` entry.
    fn add_domain_admin(&self, attrs: &Value) -> Result<ItemResult>;

    /// `edit/domain-admin` of one admin's domains (they replace its set): confirmed only by
    /// `["domain_admin_modified", username]`.
    fn edit_domain_admin(&self, username: &str, domains: &[String]) -> Result<ItemResult>;

    /// `delete/domain-admin` of several admins.
    fn delete_domain_admins(&self, usernames: &[String]) -> Result<BTreeMap<String, ItemResult>>;

    /// A write that changes nothing, which only a read-write key may make.
    fn check_write_access(&self) -> Result<()>;

    /// `get/mailbox/template/all`: the mailbox templates, with what re-applying one sets.
    fn templates(&self) -> Result<Vec<MailboxTemplate>>;

    /// `edit/user-acl`: these user ACLs on, every other one off (the whole set is replaced).
    fn edit_user_acl(&self, items: &[String], acl: &[String]) -> Result<BTreeMap<String, ItemResult>>;

    /// `edit/rl-mbox`: the mailbox's rate limit (`value` 0 removes it).
    fn edit_ratelimit(&self, items: &[String], value: u64, frame: &str) -> Result<BTreeMap<String, ItemResult>>;
}
