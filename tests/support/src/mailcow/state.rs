//! The emulated mailcow database and the write operations on it.
//!
//! Each operation follows the PHP function it stands for (`mailbox('add','mailbox')`,
//! `mailbox('edit','alias')`, …) as described in `shared/mailcow/API.md`: same
//! validation order, same message keys and argument types, same silent quirks.
//! Operations return the `$_SESSION['return']` entries; `api.rs` turns them into
//! HTTP responses. Records are kept compact and rendered on request (`render.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::php::{
    empty, eq_ci, intval, mysql_numeric_prefix, php_valid_domain_name, split_list, strval, trim, valid_domain_name,
    valid_email,
};

pub(crate) const MIB: i64 = 1_048_576;

/// Schemes `hash_password` stores as-is (API.md section 5).
const PREHASHED_SCHEMES: &[&str] = &[
    "ARGON2I",
    "ARGON2ID",
    "BLF-CRYPT",
    "CLEAR",
    "CLEARTEXT",
    "CRYPT",
    "DES-CRYPT",
    "LDAP-MD5",
    "MD5",
    "MD5-CRYPT",
    "PBKDF2",
    "PLAIN",
    "PLAIN-MD4",
    "PLAIN-MD5",
    "PLAIN-TRUNC",
    "SHA",
    "SHA1",
    "SHA256",
    "SHA256-CRYPT",
    "SHA512",
    "SHA512-CRYPT",
    "SMD5",
    "SSHA",
    "SSHA256",
    "SSHA512",
];

/// mailcow keeps at most this index in the tag list (`$index > TAGGING_LIMIT` stops).
const TAGGING_LIMIT: usize = 25;

/// One `$_SESSION['return']` entry.
pub(crate) struct Entry {
    pub kind: &'static str,
    pub log: Value,
    pub msg: Value,
}

/// Entries plus the function's boolean result (decides "Task completed" vs
/// "Cannot … item" when there are no entries).
pub(crate) struct Outcome {
    pub entries: Vec<Entry>,
    pub ok: bool,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            entries: Vec::new(),
            ok: true,
        }
    }
    fn push(&mut self, kind: &'static str, log: &Value, msg: Value) {
        self.entries.push(Entry {
            kind,
            log: log.clone(),
            msg,
        });
    }
    fn fail(mut self, log: &Value, msg: Value) -> Outcome {
        self.push("danger", log, msg);
        self.ok = false;
        self
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub length: i64,
    pub chars: i64,
    pub special_chars: i64,
    pub lowerupper: i64,
    pub numbers: i64,
}

impl Default for Policy {
    /// The entrypoint's defaults (API.md 4.9).
    fn default() -> Policy {
        Policy {
            length: 6,
            chars: 0,
            special_chars: 0,
            lowerupper: 0,
            numbers: 0,
        }
    }
}

/// A domain administrator (functions.domain_admin.inc.php).
#[derive(Clone, Debug)]
pub(crate) struct DomainAdmin {
    /// `hash_password` of what was sent.
    pub password: String,
    pub active: i64,
    /// Rows of `domain_admins`; may be empty after an add whose domains were all invalid
    /// (then `get` no longer lists it, though its `admin` row exists).
    pub domains: BTreeSet<String>,
    pub created: u64,
}

pub(crate) struct Domain {
    pub name: String,
    pub description: String,
    pub aliases_max: i64,
    pub mailboxes_max: i64,
    pub defquota_mib: i64,
    pub maxquota_mib: i64,
    pub quota_mib: i64,
    pub active: i64,
    pub backupmx: i64,
    pub gal: i64,
    pub relay_all_recipients: i64,
    pub relay_unknown_only: i64,
    pub created: u64,
    /// Lowercased usernames, in the order mailcow lists a domain's mailboxes.
    pub members: BTreeSet<String>,
    /// Sum of the members' quotas in bytes (kept up to date so that `max_new_quota`
    /// of 100k mailboxes is not quadratic).
    pub quota_sum: i64,
}

/// The 0/1 flags of a mailbox's `attributes` (stored as ints, printed as strings).
#[derive(Clone, Copy)]
pub(crate) struct Flags {
    pub force_pw_update: i32,
    pub force_tfa: i32,
    pub tls_in: i32,
    pub tls_out: i32,
    pub sogo: i32,
    pub imap: i32,
    pub pop3: i32,
    pub smtp: i32,
    pub sieve: i32,
    pub eas: i32,
    pub dav: i32,
}

pub(crate) struct Mailbox {
    pub username: String,
    pub local_part: String,
    pub domain: String,
    pub name: String,
    pub quota: i64,
    pub active: i64,
    pub authsource: String,
    pub flags: Flags,
    pub relayhost: String,
    pub passwd_update: u64,
    pub quarantine_notification: String,
    pub quarantine_category: String,
    pub attribute_hash: String,
    /// None: key absent (never edited); Some(None): `null`.
    pub recovery_email: Option<Option<String>>,
    pub created: u64,
    pub modified: u64,
    /// Sorted case-insensitively, as the tag index returns them.
    pub tags: Vec<String>,
    pub password: String,
    /// Table `user_acl`: each ACL of [`USER_ACLS`], 0 or 1.
    pub acl: BTreeMap<&'static str, i64>,
    /// Redis `RL_VALUE` of the mailbox as `(value, frame)`; `None` = no limit of its own.
    pub rl: Option<(i64, String)>,
}

/// The columns of `user_acl` besides `username`, in their order.
pub const USER_ACLS: [&str; 15] = [
    "spam_alias",
    "tls_policy",
    "spam_score",
    "spam_policy",
    "delimiter_action",
    "syncjobs",
    "eas_reset",
    "sogo_profile_reset",
    "pushover",
    "quarantine",
    "quarantine_attachments",
    "quarantine_notification",
    "quarantine_category",
    "app_passwds",
    "pw_reset",
];

/// One row of `templates` with `type = 'mailbox'`.
pub(crate) struct Template {
    pub id: u64,
    pub name: String,
    /// As stored: quota in bytes, flags and `acl_*` as ints.
    pub attributes: Map<String, Value>,
}

/// The Default mailbox template (init_db.inc.php, `$default_mailbox_template`).
fn default_mailbox_template() -> Template {
    let acl_on = [
        "spam_alias",
        "tls_policy",
        "spam_score",
        "spam_policy",
        "delimiter_action",
        "eas_reset",
        "pushover",
        "quarantine",
        "quarantine_attachments",
        "quarantine_notification",
        "quarantine_category",
        "app_passwds",
    ];
    let mut attributes = json!({
        "tags": [], "quota": 0, "quarantine_notification": "hourly", "quarantine_category": "reject",
        "rl_frame": "s", "rl_value": "", "force_pw_update": 0, "force_tfa": 0, "sogo_access": 1, "active": 1,
        "tls_enforce_in": 0, "tls_enforce_out": 0, "imap_access": 1, "pop3_access": 1, "smtp_access": 1,
        "sieve_access": 1, "eas_access": 1, "dav_access": 1,
    });
    for acl in USER_ACLS.iter().take(14) {
        attributes[format!("acl_{acl}")] = json!(i64::from(acl_on.contains(acl)));
    }
    // The domain Default template is inserted first and takes id 1.
    Template {
        id: 2,
        name: "Default".into(),
        attributes: attributes.as_object().cloned().unwrap_or_default(),
    }
}

pub(crate) struct Alias {
    pub id: u64,
    pub address: String,
    pub goto: String,
    pub domain: String,
    pub active: i64,
    pub sogo_visible: i64,
    pub sender_allowed: i64,
    pub internal: i64,
    pub public_comment: Option<String>,
    pub private_comment: Option<String>,
    pub created: u64,
    pub modified: Option<u64>,
}

/// One row of table `app_passwd` (docs/mailcow-api-offboarding.md).
pub(crate) struct AppPassword {
    pub id: u64,
    pub name: String,
    /// The owner's username as stored.
    pub mailbox: String,
    pub domain: String,
    pub password: String,
    pub created: u64,
}

pub(crate) struct State {
    pub domains: BTreeMap<String, Domain>,
    /// Keyed by lowercased username: iteration order is the primary-key order the
    /// "unknown domain returns everything" path shows.
    pub mailboxes: BTreeMap<String, Mailbox>,
    /// Real aliases only; mailbox self-alias rows exist in mailcow but only their ids
    /// matter here (they are consumed from `next_alias_id`).
    pub aliases: BTreeMap<u64, Alias>,
    pub alias_index: HashMap<String, u64>,
    pub next_alias_id: u64,
    pub policy: Policy,
    /// DKIM keys live in Redis, which the recorded reset did not clear; so they
    /// survive `reset()` and domain deletion (run 2 answers `domain_add_dkim_available`).
    pub dkim: HashSet<String>,
    pub idp_authsource: Option<String>,
    /// The other rows of table `identity_provider` (`host`, `bindpass`, `periodic_sync`,
    /// `mappers`, ...), as `set_identity_provider` gave them; rendered by
    /// `get/identity-provider` with `authsource`.
    pub idp_settings: Map<String, Value>,
    /// Tables `admin` (superadmin 0) + `domain_admins`, by username.
    pub domain_admins: BTreeMap<String, DomainAdmin>,
    /// Table `app_passwd`, by id (AUTO_INCREMENT from 1).
    pub app_passwords: BTreeMap<u64, AppPassword>,
    pub next_app_password_id: u64,
    /// Usernames whose `sogo_cache_folder` rows `delete/eas_cache` cleared, in order.
    pub eas_resets: Vec<String>,
    /// `MAILCOW_HOSTNAME` of mailcow.conf: `add/domain` refuses that name.
    pub hostname: Option<String>,
    /// Mailbox templates by id, the Default one first.
    pub templates: BTreeMap<u64, Template>,
    /// AUTO_INCREMENT of `templates` (shared with domain templates).
    pub next_template_id: u64,
    /// Table `sender_acl` (`external` = 0 rows only: `extended_sender_acl` is not
    /// emulated), in id order: (logged_in_as, send_as).
    pub sender_acl: Vec<(String, String)>,
    /// Render full mailbox objects without `sender_acl`, as mailcow before 2026-07a did.
    pub sender_acl_hidden: bool,
}

impl State {
    pub fn new(idp_authsource: Option<String>) -> State {
        State {
            domains: BTreeMap::new(),
            mailboxes: BTreeMap::new(),
            aliases: BTreeMap::new(),
            alias_index: HashMap::new(),
            next_alias_id: 1,
            policy: Policy::default(),
            dkim: HashSet::new(),
            idp_authsource,
            idp_settings: Map::new(),
            domain_admins: BTreeMap::new(),
            app_passwords: BTreeMap::new(),
            next_app_password_id: 1,
            eas_resets: Vec::new(),
            hostname: None,
            templates: BTreeMap::from([(2, default_mailbox_template())]),
            next_template_id: 3,
            sender_acl: Vec::new(),
            sender_acl_hidden: false,
        }
    }

    /// Empty server, default policy; DKIM keys and the IdP setting stay.
    pub fn reset(&mut self) {
        let dkim = std::mem::take(&mut self.dkim);
        let idp = self.idp_authsource.take();
        let idp_settings = std::mem::take(&mut self.idp_settings);
        let hostname = self.hostname.take();
        *self = State::new(idp);
        self.idp_settings = idp_settings;
        self.dkim = dkim;
        self.hostname = hostname;
    }

    pub fn mailbox(&self, username: &str) -> Option<&Mailbox> {
        self.mailboxes.get(&username.to_ascii_lowercase())
    }

    /// min(domain quota − the other mailboxes' quotas, domain maxquota), bytes.
    pub fn max_new_quota(&self, mb: &Mailbox) -> i64 {
        match self.domains.get(&mb.domain) {
            Some(d) => {
                let others = d.quota_sum - mb.quota;
                (d.quota_mib * MIB - others).min(d.maxquota_mib * MIB)
            }
            None => 0,
        }
    }

    pub fn aliases_in_domain(&self, domain: &str) -> i64 {
        self.aliases.values().filter(|a| a.domain == domain).count() as i64
    }

    fn take_alias_id(&mut self) -> u64 {
        let id = self.next_alias_id;
        self.next_alias_id += 1;
        id
    }

    /// `identity_provider('get')` (functions.inc.php), as `get/identity-provider` prints it
    /// for an admin key: every row, `mappers`/`templates`/`redirect_url_extra` JSON-decoded,
    /// four keys as booleans, `login_provisioning` 1 when absent, the LDAP TLS defaults. The
    /// secrets (`bindpass`, `client_secret`) are **not** hidden: the API passes no
    /// `hide_sensitive`.
    pub fn identity_provider(&self) -> Map<String, Value> {
        let mut out = Map::new();
        if let Some(a) = &self.idp_authsource {
            out.insert("authsource".into(), Value::String(a.clone()));
        }
        for (k, v) in &self.idp_settings {
            let v = match k.as_str() {
                "redirect_url_extra" | "mappers" | "templates" => v.clone(),
                "use_ssl" | "use_tls" | "login_provisioning" | "ignore_ssl_errors" => {
                    Value::Bool(!matches!(strval(v).as_str(), "" | "0"))
                }
                _ => Value::String(strval(v)),
            };
            out.insert(k.clone(), v);
        }
        out.entry("login_provisioning").or_insert(Value::from(1));
        if self.idp_authsource.as_deref() == Some("ldap") {
            for k in ["use_ssl", "use_tls", "ignore_ssl_errors"] {
                out.entry(k).or_insert(Value::Bool(false));
            }
        }
        out
    }

    // ------------------------------------------------------------ domain admins

    /// `domain_admin('add')`: `domains` empty → `domain_invalid`; the username must be
    /// `[A-Za-z0-9_.-]+` and not `API`; no mailbox, admin or domain admin of that name;
    /// `password_check`; then one `domain_admins` row per existing domain (others:
    /// `["domain_invalid", d]`), the `admin` row only if one was valid, and the success entry
    /// either way.
    pub fn add_domain_admin(&mut self, data: &Map<String, Value>, now: u64) -> Outcome {
        let log = log4("domain_admin", "add", "", data);
        let log = json!([log[0], log[1], log[3]]);
        let out = Outcome::new();
        let username = trim(&strval(data.get("username").unwrap_or(&Value::Null))).to_ascii_lowercase();
        let domains: Vec<String> = match data.get("domains") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.iter().map(strval).collect(),
            Some(v) => vec![strval(v)],
        };
        if domains.iter().all(|d| d.is_empty()) {
            return out.fail(&log, json!("domain_invalid"));
        }
        if !admin_name_ok(&username) || username == "api" {
            return out.fail(&log, json!(["username_invalid", username]));
        }
        if self.mailboxes.contains_key(&username) || self.domain_admins.contains_key(&username) {
            return out.fail(&log, json!(["object_exists", username]));
        }
        let password = match self.password_check(data.get("password"), data.get("password2")) {
            Ok(p) => hash_password(&p),
            Err(e) => return out.fail(&json!(["password_check", null, null]), json!(e)),
        };
        let mut out = out;
        let mut valid = BTreeSet::new();
        for d in domains {
            if !valid_domain_name(&d) || !self.domains.contains_key(&d) {
                out.push("danger", &log, json!(["domain_invalid", d]));
                continue;
            }
            valid.insert(d);
        }
        if !valid.is_empty() {
            self.domain_admins.insert(
                username.clone(),
                DomainAdmin {
                    password,
                    active: intval(data.get("active").unwrap_or(&Value::Null)),
                    domains: valid,
                    created: now,
                },
            );
        }
        out.push("success", &log, json!(["domain_admin_added", username]));
        out
    }

    /// `domain_admin('edit')` as admin: per username (unknown → `access_denied`); every
    /// domain must exist (else `["domain_invalid", d]`, that user skipped); `domains`
    /// replaces the set (absent or empty keeps it); `active` absent keeps it; a non-empty
    /// password failing `password_check` ends the whole call.
    pub fn edit_domain_admins(&mut self, items: &[Value], attr: &Map<String, Value>) -> Outcome {
        let log = json!(["domain_admin", "edit", attr]);
        let mut out = Outcome::new();
        for item in items {
            let username = strval(item);
            let Some(now) = self
                .domain_admins
                .get(&username)
                .filter(|a| !a.domains.is_empty())
                .cloned()
            else {
                out.push("danger", &log, json!("access_denied"));
                continue;
            };
            let domains: Vec<String> = match attr.get("domains") {
                Some(Value::Array(a)) if !a.is_empty() => a.iter().map(strval).collect(),
                Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
                _ => now.domains.iter().cloned().collect(),
            };
            if let Some(bad) = domains
                .iter()
                .find(|d| !valid_domain_name(d) || !self.domains.contains_key(d.as_str()))
            {
                out.push("danger", &log, json!(["domain_invalid", bad]));
                continue;
            }
            let active = attr.get("active").map_or(now.active, intval);
            let mut password = now.password.clone();
            if !empty(attr.get("password")) {
                match self.password_check(attr.get("password"), attr.get("password2")) {
                    Ok(p) => password = hash_password(&p),
                    Err(e) => {
                        out.push("danger", &json!(["password_check", null, null]), json!(e));
                        out.ok = false;
                        return out;
                    }
                }
            }
            self.domain_admins.insert(
                username.clone(),
                DomainAdmin {
                    password,
                    active,
                    domains: domains.into_iter().collect(),
                    created: now.created,
                },
            );
            out.push("success", &log, json!(["domain_admin_modified", username]));
        }
        out
    }

    /// `domain_admin('delete')`: unknown → `["username_invalid", u]`.
    pub fn delete_domain_admins(&mut self, items: &[Value]) -> Outcome {
        let log = json!(["domain_admin", "delete", {"username": items}]);
        let mut out = Outcome::new();
        for item in items {
            let username = strval(item);
            match self.domain_admins.get(&username) {
                Some(a) if !a.domains.is_empty() => {
                    self.domain_admins.remove(&username);
                    out.push("success", &log, json!(["domain_admin_removed", username]));
                }
                _ => out.push("danger", &log, json!(["username_invalid", username])),
            }
        }
        out
    }

    fn effective_authsource(&self, requested: &str) -> Option<String> {
        let known = ["mailcow", "keycloak", "generic-oidc", "ldap"];
        if !known.contains(&requested) {
            return None;
        }
        if requested == "mailcow" || self.idp_authsource.as_deref() == Some(requested) {
            Some(requested.to_string())
        } else {
            None
        }
    }

    /// `password_check`: empty → complexity, unequal → mismatch, then the policy.
    fn password_check(&self, p1: Option<&Value>, p2: Option<&Value>) -> Result<String, &'static str> {
        if empty(p1) || empty(p2) {
            return Err("password_complexity");
        }
        let a = strval(p1.unwrap_or(&Value::Null));
        let b = strval(p2.unwrap_or(&Value::Null));
        if a != b {
            return Err("password_mismatch");
        }
        let p = &self.policy;
        let has = |f: fn(&u8) -> bool| a.as_bytes().iter().any(f);
        let fails = (a.len() as i64) < p.length
            || (p.special_chars == 1 && !has(|c| !c.is_ascii_alphanumeric()))
            || (p.chars == 1 && !has(|c| c.is_ascii_alphabetic()))
            || (p.numbers == 1 && !has(|c| c.is_ascii_digit()))
            || (p.lowerupper == 1 && !(has(|c| c.is_ascii_lowercase()) && has(|c| c.is_ascii_uppercase())));
        if fails {
            return Err("password_complexity");
        }
        Ok(a)
    }

    // ------------------------------------------------------------------ domains

    /// `mailbox('add', 'domain')` (functions.mailbox.inc.php), its checks in its order:
    /// the quota relations, the empty quotas, the name, then an existing domain. Absent
    /// fields take the Default domain template's values (init_db.inc.php); quotas are MiB.
    pub fn add_domain(&mut self, data: &Map<String, Value>, now: u64) -> Outcome {
        let log = log4("mailbox", "add", "domain", data);
        let out = Outcome::new();
        let domain = trim(&strval(data.get("domain").unwrap_or(&Value::Null))).to_ascii_lowercase();
        // PHP's isset(): absent or null takes the template's value, anything else is (int).
        let num = |k: &str, default: i64| data.get(k).filter(|v| !v.is_null()).map(intval).unwrap_or(default);
        let description = data.get("description").map(strval).unwrap_or_default();
        let d = Domain {
            name: domain.clone(),
            // `if (empty($description)) $description = $domain;`
            description: if description.is_empty() || description == "0" {
                domain.clone()
            } else {
                description
            },
            aliases_max: num("aliases", 400),
            mailboxes_max: num("mailboxes", 10),
            defquota_mib: num("defquota", 3072),
            maxquota_mib: num("maxquota", 10240),
            quota_mib: num("quota", 10240),
            active: num("active", 1),
            backupmx: num("backupmx", 0),
            gal: num("gal", 1),
            relay_all_recipients: num("relay_all_recipients", 0),
            relay_unknown_only: num("relay_unknown_only", 0),
            created: now,
            members: BTreeSet::new(),
            quota_sum: 0,
        };
        if d.defquota_mib > d.maxquota_mib {
            return out.fail(&log, json!("mailbox_defquota_exceeds_mailbox_maxquota"));
        }
        if d.maxquota_mib > d.quota_mib {
            return out.fail(&log, json!("mailbox_quota_exceeds_domain_quota"));
        }
        if d.defquota_mib == 0 {
            return out.fail(&log, json!("defquota_empty"));
        }
        if d.maxquota_mib == 0 {
            return out.fail(&log, json!("maxquota_empty"));
        }
        if !php_valid_domain_name(&domain) {
            return out.fail(&log, json!("domain_invalid"));
        }
        if self.domains.contains_key(&domain) {
            return out.fail(&log, json!(["domain_exists", domain]));
        }
        if self.hostname.as_deref() == Some(domain.as_str()) {
            return out.fail(&log, json!("domain_cannot_match_hostname"));
        }
        let mut out = out;
        if self.dkim.contains(&domain) {
            out.push("success", &log, json!("domain_add_dkim_available"));
        } else {
            self.dkim.insert(domain.clone());
            let dkim_log = json!(["dkim", "add", {"key_size": 2048, "dkim_selector": "dkim", "domains": domain}]);
            out.push("success", &dkim_log, json!(["dkim_added", domain]));
        }
        self.domains.insert(domain.clone(), d);
        out.push("success", &log, json!(["domain_added", domain]));
        out
    }

    pub fn delete_domains(&mut self, items: &[Value]) -> Outcome {
        let log = json!(["mailbox", "delete", "domain", {"domain": items}, null]);
        let mut out = Outcome::new();
        for item in items {
            let d = trim(&strval(item)).to_ascii_lowercase();
            if !valid_domain_name(&d) {
                out.push("danger", &log, json!("domain_invalid"));
                continue;
            }
            // [assumed] a missing domain fails the admin domain-access check.
            let Some(dom) = self.domains.get(&d) else {
                out.push("danger", &log, json!("access_denied"));
                continue;
            };
            if !dom.members.is_empty() {
                out.push("danger", &log, json!(["domain_not_empty", d]));
                continue;
            }
            self.domains.remove(&d);
            let gone: Vec<u64> = self.aliases.values().filter(|a| a.domain == d).map(|a| a.id).collect();
            for id in gone {
                self.remove_alias(id);
            }
            out.push("success", &log, json!(["domain_removed", d]));
        }
        out
    }

    // ---------------------------------------------------------------- mailboxes

    pub fn add_mailbox(&mut self, data: &Map<String, Value>, now: u64) -> Outcome {
        let log = log4("mailbox", "add", "mailbox", data);
        let out = Outcome::new();
        let get = |k: &str| data.get(k).filter(|v| !v.is_null());
        let local_part = trim(&strval(get("local_part").unwrap_or(&Value::Null))).to_ascii_lowercase();
        let domain = trim(&strval(get("domain").unwrap_or(&Value::Null))).to_ascii_lowercase();
        let username = format!("{local_part}@{domain}");
        if !valid_email(&username) || empty(data.get("local_part")) {
            return out.fail(&log, json!("mailbox_invalid"));
        }
        let authsource = get("authsource")
            .and_then(|v| self.effective_authsource(&strval(v)))
            .unwrap_or_else(|| "mailcow".to_string());
        let quarantine_category = get("quarantine_category")
            .map(strval)
            .unwrap_or_else(|| "reject".into());
        if !["add_header", "reject", "all"].contains(&quarantine_category.as_str()) {
            return out.fail(&log, json!("quarantine_category_invalid"));
        }
        // `if ($_data['template'])` that template's attributes, else (none, a name, an unknown
        // id) the first one, Default, are the defaults (mailbox.inc 1065–1072).
        let chosen = get("template")
            .map(intval)
            .filter(|&id| id != 0)
            .and_then(|id| self.templates.get(&(id as u64)));
        let template = chosen
            .or_else(|| self.templates.values().next())
            .map(|t| t.attributes.clone())
            .unwrap_or_default();
        let tval = |k: &str, default: i64| template.get(k).map(intval).unwrap_or(default);
        let Some(dom) = self.domains.get(&domain) else {
            // The admin domain-access check only knows existing domains.
            return out.fail(&log, json!("access_denied"));
        };
        if self.mailboxes.contains_key(&username) {
            return out.fail(&log, json!(["object_exists", username]));
        }
        if self.alias_index.contains_key(&username) {
            return out.fail(&log, json!(["is_alias", username]));
        }
        let mut password = String::new();
        if authsource == "mailcow" {
            match self.password_check(data.get("password"), data.get("password2")) {
                Ok(p) => password = hash_password(&p),
                Err(e) => return out.fail(&json!(["password_check", null, null]), json!(e)),
            }
        }
        let count = dom.members.len() as i64;
        if count >= dom.mailboxes_max {
            return out.fail(&log, json!(["max_mailbox_exceeded", count, dom.mailboxes_max]));
        }
        let quota_m = get("quota").map(intval).unwrap_or(tval("quota", 0) / MIB);
        if quota_m != 0 {
            if quota_m > dom.maxquota_mib {
                return out.fail(&log, json!(["mailbox_quota_exceeded", dom.maxquota_mib]));
            }
            // mailcow sums in SQL as ROUND(SUM(quota)/1048576).
            let used_m = (dom.quota_sum as f64 / MIB as f64).round() as i64;
            if used_m + quota_m > dom.quota_mib {
                return out.fail(&log, json!(["mailbox_quota_left_exceeded", dom.quota_mib - used_m]));
            }
        }

        let flag = |k: &str, default: i64| get(k).map(|v| intval(v) as i32).unwrap_or(tval(k, default) as i32);
        let mut flags = Flags {
            force_pw_update: flag("force_pw_update", 0),
            force_tfa: flag("force_tfa", 0),
            tls_in: flag("tls_enforce_in", 0),
            tls_out: flag("tls_enforce_out", 0),
            sogo: flag("sogo_access", 1),
            imap: flag("imap_access", 1),
            pop3: flag("pop3_access", 1),
            smtp: flag("smtp_access", 1),
            sieve: flag("sieve_access", 1),
            eas: flag("eas_access", 1),
            dav: flag("dav_access", 1),
        };
        // `acl` given: exactly those; else the template's `acl_*` (mailbox.inc 1318–1356).
        let acl: BTreeMap<&'static str, i64> = match get("acl") {
            Some(list) => {
                let list: Vec<String> = match list {
                    Value::Array(a) => a.iter().map(strval).collect(),
                    other => vec![strval(other)],
                };
                USER_ACLS
                    .iter()
                    .map(|&a| (a, i64::from(list.iter().any(|x| x == a))))
                    .collect()
            }
            None => USER_ACLS.iter().map(|&a| (a, tval(&format!("acl_{a}"), 0))).collect(),
        };
        let rl_value = get("rl_value").map(intval).unwrap_or_else(|| tval("rl_value", 0));
        let rl_frame = get("rl_frame")
            .or_else(|| template.get("rl_frame"))
            .map(strval)
            .unwrap_or_else(|| "s".into());
        if let Some(pa) = get("protocol_access") {
            apply_protocol_access(&mut flags, pa);
        }
        if authsource != "mailcow" {
            flags.force_pw_update = 0;
        }
        if authsource == "generic-oidc" {
            flags.force_tfa = 0;
        }
        let name = get("name").map(|v| strip_name(&strval(v))).unwrap_or_default();
        let mut out = out;
        let mut tags: Vec<String> = Vec::new();
        // `isset($_data['tags']) ? $_data['tags'] : $MAILBOX_DEFAULT_ATTRIBUTES['tags']`: the
        // template's tags only when none are sent.
        let tag_list = get("tags").or_else(|| template.get("tags"));
        if let Some(Value::Array(list)) = tag_list {
            for (index, t) in list.iter().enumerate() {
                if empty(Some(t)) {
                    continue;
                }
                if index > TAGGING_LIMIT {
                    out.push(
                        "warning",
                        &log,
                        json!(["tag_limit_exceeded", format!("limit {TAGGING_LIMIT}")]),
                    );
                    break;
                }
                add_tag(&mut tags, &strval(t));
            }
        }
        let mb = Mailbox {
            username: username.clone(),
            local_part,
            domain: domain.clone(),
            name,
            quota: quota_m * MIB,
            active: get("active").map(intval).unwrap_or(1),
            authsource,
            flags,
            relayhost: get("relayhost").map(intval).unwrap_or(0).to_string(),
            passwd_update: now,
            quarantine_notification: get("quarantine_notification")
                .map(strval)
                .unwrap_or_else(|| "hourly".into()),
            quarantine_category,
            attribute_hash: if empty(data.get("attribute_hash")) {
                String::new()
            } else {
                strval(&data["attribute_hash"])
            },
            recovery_email: None,
            created: now,
            modified: now,
            tags,
            password,
            acl,
            rl: (rl_value != 0 && ["s", "m", "h", "d"].contains(&rl_frame.as_str()))
                .then(|| (rl_value, rl_frame.clone())),
        };
        // The mailbox's own alias row takes an alias id.
        self.take_alias_id();
        let dom = self.domains.get_mut(&domain).expect("checked above");
        dom.members.insert(username.clone());
        dom.quota_sum += mb.quota;
        self.mailboxes.insert(username.clone(), mb);
        let rl_log = json!(["ratelimit", "edit", "mailbox", {"object": username, "rl_frame": rl_frame, "rl_value": get("rl_value").cloned().unwrap_or_else(|| template.get("rl_value").cloned().unwrap_or(json!("")))}]);
        out.push("success", &rl_log, json!(["rl_saved", username]));
        out.push("success", &log, json!(["mailbox_added", username]));
        out
    }

    pub fn edit_mailboxes(&mut self, items: &[Value], attr: &Map<String, Value>, now: u64) -> Outcome {
        let mut data = attr.clone();
        data.insert("username".into(), Value::Array(items.to_vec()));
        let log = log4("mailbox", "edit", "mailbox", &data);
        let mut out = Outcome::new();
        let get = |k: &str| attr.get(k).filter(|v| !v.is_null());
        for item in items {
            let user = strval(item);
            if !matches!(item, Value::String(_)) || !valid_email(&user) {
                out.push("danger", &log, json!(["username_invalid", item]));
                continue;
            }
            let key = user.to_ascii_lowercase();
            let Some(mb) = self.mailboxes.get(&key) else {
                out.push("danger", &log, json!("access_denied"));
                continue;
            };
            // Quota: checked first, against max_new_quota (API.md 4.4).
            let new_quota_m = get("quota").filter(|v| v.as_str() != Some("")).map(intval);
            if let Some(q) = new_quota_m {
                let max_new = self.max_new_quota(mb);
                if (q as f64) > max_new as f64 / MIB as f64 {
                    out.push(
                        "danger",
                        &log,
                        json!(["mailbox_quota_left_exceeded", php_div_mib(max_new)]),
                    );
                    continue;
                }
                let maxquota_bytes = self.domains.get(&mb.domain).map(|d| d.maxquota_mib * MIB).unwrap_or(0);
                // mailcow compares MiB with bytes here, so this practically never fires.
                if q > maxquota_bytes {
                    out.push("danger", &log, json!(["mailbox_quota_exceeded", maxquota_bytes]));
                    continue;
                }
            }
            // sender_acl is written before the password is checked (functions.mailbox.inc.php
            // 3278-3403), so a failing password still leaves the new list.
            if let Some(list) = attr.get("sender_acl").filter(|v| !v.is_null()) {
                let username = mb.username.clone();
                self.edit_sender_acl(&username, list, &log, &mut out);
            }
            let Some(mb) = self.mailboxes.get(&key) else { continue };
            // Password: only for mailcow mailboxes; a failure skips the whole item.
            let mut new_password = None;
            if mb.authsource == "mailcow" && (!empty(attr.get("password")) || !empty(attr.get("password2"))) {
                match self.password_check(attr.get("password"), attr.get("password2")) {
                    Ok(p) => new_password = Some(hash_password(&p)),
                    Err(e) => {
                        out.push("danger", &json!(["password_check", null, null]), json!(e));
                        continue;
                    }
                }
            }
            let new_authsource = get("authsource").and_then(|v| self.effective_authsource(&strval(v)));
            let domain = mb.domain.clone();
            let old_quota = mb.quota;
            let mb = self.mailboxes.get_mut(&key).expect("looked up above");
            if let Some(v) = get("active") {
                mb.active = intval(v);
            }
            if !empty(attr.get("name")) {
                mb.name = strip_name(&strval(&attr["name"]));
            }
            if let Some(q) = new_quota_m {
                mb.quota = q * MIB;
            }
            let f = &mut mb.flags;
            for (k, slot) in [
                ("force_pw_update", &mut f.force_pw_update),
                ("force_tfa", &mut f.force_tfa),
                ("sogo_access", &mut f.sogo),
                ("imap_access", &mut f.imap),
                ("pop3_access", &mut f.pop3),
                ("smtp_access", &mut f.smtp),
                ("sieve_access", &mut f.sieve),
                ("eas_access", &mut f.eas),
                ("dav_access", &mut f.dav),
            ] {
                if let Some(v) = get(k) {
                    *slot = intval(v) as i32;
                }
            }
            if let Some(pa) = get("protocol_access") {
                apply_protocol_access(&mut mb.flags, pa);
            }
            if let Some(v) = get("relayhost") {
                mb.relayhost = intval(v).to_string();
            }
            // The password is written before the authsource changes (API.md 4.4).
            if let Some(p) = new_password {
                mb.password = p;
                mb.passwd_update = now;
            }
            if let Some(a) = new_authsource {
                mb.authsource = a;
            }
            if mb.authsource != "mailcow" {
                mb.flags.force_pw_update = 0;
            }
            if let Some(Value::Array(list)) = get("tags") {
                for t in list {
                    if !empty(Some(t)) {
                        add_tag(&mut mb.tags, &strval(t));
                    }
                }
            }
            mb.attribute_hash = if empty(attr.get("attribute_hash")) {
                String::new()
            } else {
                strval(&attr["attribute_hash"])
            };
            match get("pw_recovery_email") {
                Some(v) if mb.authsource == "mailcow" => {
                    let s = strval(v);
                    mb.recovery_email = Some(if s.is_empty() { None } else { Some(s) });
                }
                _ => {
                    if mb.recovery_email.is_none() {
                        mb.recovery_email = Some(None);
                    }
                }
            }
            mb.modified = now;
            let delta = mb.quota - old_quota;
            if let Some(d) = self.domains.get_mut(&domain) {
                d.quota_sum += delta;
            }
            out.push("success", &log, json!(["mailbox_modified", item]));
        }
        out
    }

    pub fn edit_tls_policy(&mut self, items: &[Value], attr: &Map<String, Value>, now: u64) -> Outcome {
        let mut data = attr.clone();
        data.insert("username".into(), Value::Array(items.to_vec()));
        let log = log4("mailbox", "edit", "tls_policy", &data);
        let mut out = Outcome::new();
        for item in items {
            let user = strval(item);
            let Some(mb) = self
                .mailboxes
                .get_mut(&user.to_ascii_lowercase())
                .filter(|_| valid_email(&user))
            else {
                out.push("danger", &log, json!("access_denied"));
                continue;
            };
            if let Some(v) = attr.get("tls_enforce_in").filter(|v| !v.is_null()) {
                mb.flags.tls_in = intval(v) as i32;
            }
            if let Some(v) = attr.get("tls_enforce_out").filter(|v| !v.is_null()) {
                mb.flags.tls_out = intval(v) as i32;
            }
            mb.modified = now;
            out.push("success", &log, json!(["mailbox_modified", item]));
        }
        out
    }

    pub fn delete_mailboxes(&mut self, items: &[Value]) -> Outcome {
        let log = json!(["mailbox", "delete", "mailbox", {"username": items}, null]);
        let mut out = Outcome::new();
        for item in items {
            let user = strval(item);
            let key = user.to_ascii_lowercase();
            if !matches!(item, Value::String(_)) || !valid_email(&user) || !self.mailboxes.contains_key(&key) {
                out.push("danger", &log, json!("access_denied"));
                continue;
            }
            let mb = self.mailboxes.remove(&key).expect("checked");
            // functions.mailbox.inc.php 6031.
            self.sender_acl
                .retain(|(login, send_as)| !eq_ci(login, &mb.username) && !eq_ci(send_as, &mb.username));
            // `fk_username_app_passwd … ON DELETE CASCADE`.
            self.app_passwords.retain(|_, a| !eq_ci(&a.mailbox, &mb.username));
            if let Some(d) = self.domains.get_mut(&mb.domain) {
                d.members.remove(&key);
                d.quota_sum -= mb.quota;
            }
            // Aliases pointing only here go (`goto = :username`, case-insensitive);
            // multi-target aliases lose the first exact occurrence.
            let mut gone = Vec::new();
            for a in self.aliases.values_mut() {
                if eq_ci(&a.goto, &mb.username) {
                    gone.push(a.id);
                } else if a.goto.split(',').any(|g| eq_ci(g, &mb.username)) {
                    let mut parts: Vec<&str> = a.goto.split(',').collect();
                    if let Some(pos) = parts.iter().position(|g| *g == user || *g == mb.username) {
                        parts.remove(pos);
                        a.goto = parts.join(",");
                    }
                }
            }
            for id in gone {
                self.remove_alias(id);
            }
            out.push("success", &log, json!(["mailbox_removed", user]));
        }
        out
    }

    pub fn delete_mailbox_tags(&mut self, username: &str, tags: &[Value]) -> Outcome {
        let log = json!(["mailbox", "delete", "tags_mailbox", {"tags": tags, "username": username}, null]);
        let mut out = Outcome::new();
        let Some(mb) = self.mailboxes.get_mut(&username.to_ascii_lowercase()) else {
            return out.fail(&log, json!("access_denied"));
        };
        let remove: Vec<String> = tags.iter().map(strval).collect();
        mb.tags.retain(|t| !remove.contains(t));
        out.push("success", &log, json!(["mailbox_modified", username]));
        out
    }

    pub fn rename_mailbox(&mut self, attr: &Map<String, Value>, items: &[Value], now: u64) -> Outcome {
        let mut data = Map::new();
        data.insert("mailbox".into(), Value::Array(items.to_vec()));
        data.extend(attr.clone());
        let log = log4("mailbox", "edit", "mailbox_rename", &data);
        let out = Outcome::new();
        let s = |k: &str| attr.get(k).map(strval).unwrap_or_default();
        let domain = trim(&s("domain")).to_ascii_lowercase();
        let old = format!("{}@{domain}", s("old_local_part"));
        let new_local = s("new_local_part");
        let new = format!("{new_local}@{domain}");
        if !valid_email(&old) {
            return out.fail(&log, json!(["username_invalid", old]));
        }
        if !valid_email(&new) {
            return out.fail(&log, json!(["username_invalid", new]));
        }
        let old_key = old.to_ascii_lowercase();
        let new_key = new.to_ascii_lowercase();
        match self.mailboxes.get(&old_key) {
            Some(mb) if mb.active != 0 => {}
            _ => return out.fail(&log, json!("access_denied")),
        }
        if new_key != old_key && (self.mailboxes.contains_key(&new_key) || self.alias_index.contains_key(&new_key)) {
            // Not pre-checked by mailcow: the UPDATE fails on the primary key.
            let msg = format!(
                "SQLSTATE[23000]: Integrity constraint violation: 1062 Duplicate entry '{new}' for key 'PRIMARY'"
            );
            return out.fail(&log, json!(msg));
        }
        let mut mb = self.mailboxes.remove(&old_key).expect("checked");
        let old_username = mb.username.clone();
        mb.username = new.clone();
        mb.local_part = new_local;
        mb.modified = now;
        if let Some(d) = self.domains.get_mut(&domain) {
            d.members.remove(&old_key);
            d.members.insert(new_key.clone());
        }
        self.mailboxes.insert(new_key, mb);
        for a in self.aliases.values_mut() {
            if eq_ci(&a.goto, &old_username) {
                a.goto = new.clone();
                a.modified = Some(now);
            }
        }
        let mut out = out;
        if intval(attr.get("create_alias").unwrap_or(&Value::Null)) == 1 {
            let comment = format!("Mailbox was renamed from {old} to {new}");
            let alias_data: Map<String, Value> = serde_json::from_value(json!({
                "address": old, "goto": new, "active": 1, "sogo_visible": 1, "private_comment": comment
            }))
            .expect("object");
            let added = self.add_aliases(&alias_data, now);
            out.entries.extend(added.entries);
        }
        out.push("success", &log, json!(["mailbox_renamed", old, new]));
        out
    }

    // ------------------------------------------------------------------ aliases

    /// `edit/mailbox` `sender_acl` for one mailbox as the API's admin session does it
    /// (functions.mailbox.inc.php 3278-3403, `sender_acl_handles` 4267-4345).
    fn edit_sender_acl(&mut self, username: &str, list: &Value, log: &Value, out: &mut Outcome) {
        // `(array)`: a scalar becomes a one-element list.
        let mut values: Vec<Value> = match list {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        let is_alias = |st: &State, a: &str| {
            let k = a.to_ascii_lowercase();
            st.alias_index.contains_key(&k) || st.mailboxes.contains_key(&k)
        };
        let domain_known = |st: &State, d: &str| st.domains.contains_key(&d.to_ascii_lowercase());
        // The stored rows the admin cannot "access" (read-only, kept whatever is sent): an
        // address no longer in table `alias`, a domain no longer in mailcow.
        let ro: Vec<String> = self
            .sender_acl
            .iter()
            .filter(|(login, _)| eq_ci(login, username))
            .map(|(_, v)| v.clone())
            .filter(|v| match v.strip_prefix('@') {
                Some(d) => !domain_known(self, d),
                None => v != "*" && !is_alias(self, v),
            })
            .map(|v| v.trim_start_matches('@').to_string())
            .collect();
        let strs: Vec<String> = values.iter().map(strval).collect();
        let wanted: Vec<String> = if strs.iter().any(|v| v == "*") {
            vec!["*".into()]
        } else if strs == ["default"] {
            Vec::new()
        } else {
            if let Some(i) = strs.iter().position(|v| v == "default") {
                values.remove(i);
            }
            values.iter().map(strval).collect()
        };
        let mut valid = Vec::new();
        for v in wanted {
            let domain = v.trim_start_matches('@');
            let ok = if v == "*" {
                true
            } else if valid_email(&v) {
                is_alias(self, &v) && domain_known(self, v.rsplit_once('@').map_or("", |(_, d)| d))
            } else {
                valid_domain_name(domain) && domain_known(self, domain)
            };
            if ok {
                valid.push(v);
            } else {
                out.push("danger", log, json!(["sender_acl_invalid", v]));
            }
        }
        let mut merged: Vec<String> = valid.into_iter().chain(ro).collect();
        if merged.iter().any(|v| v == "*") {
            merged = vec!["*".into()];
        }
        self.sender_acl.retain(|(login, _)| !eq_ci(login, username));
        // `fixed_sender_aliases_allowed`: aliases that already let this mailbox send.
        let fixed: Vec<String> = self
            .aliases
            .values()
            .filter(|a| a.sender_allowed == 1 && a.goto.split(',').any(|g| g == username))
            .map(|a| a.address.clone())
            .collect();
        for v in merged {
            let v = if !valid_email(&v) && v != "*" && valid_domain_name(v.trim_start_matches('@')) {
                format!("@{}", v.trim_start_matches('@'))
            } else {
                v
            };
            if fixed.contains(&v) {
                continue;
            }
            self.sender_acl.push((username.to_string(), v));
        }
    }

    /// The mailbox's `external = 0` send-as entries, in row order.
    pub fn sender_acl_of(&self, username: &str) -> Vec<String> {
        self.sender_acl
            .iter()
            .filter(|(login, _)| eq_ci(login, username))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn remove_alias(&mut self, id: u64) {
        if let Some(a) = self.aliases.remove(&id) {
            self.alias_index.remove(&a.address.to_ascii_lowercase());
        }
    }

    /// `id = X OR address = X`, first row in id order (so `16x@…` can hit id 16).
    pub fn find_alias(&self, item: &Value) -> Option<u64> {
        let n = mysql_numeric_prefix(item);
        let addr = match item {
            Value::String(s) => Some(s.to_ascii_lowercase()),
            _ => None,
        };
        let by_addr = addr.as_ref().and_then(|a| self.alias_index.get(a).copied());
        let by_id = n
            .and_then(|n| u64::try_from(n).ok())
            .filter(|id| self.aliases.contains_key(id));
        match (by_id, by_addr) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn add_aliases(&mut self, data: &Map<String, Value>, now: u64) -> Outcome {
        let log = log4("mailbox", "add", "alias", data);
        let mut out = Outcome::new();
        let get = |k: &str| data.get(k).filter(|v| !v.is_null());
        let flag = |k: &str| get(k).map(intval).unwrap_or(0);
        let addresses = split_list(&get("address").map(strval).unwrap_or_default());
        if addresses.is_empty() {
            return out.fail(&log, json!("alias_empty"));
        }
        for k in ["public_comment", "private_comment"] {
            if get(k).is_some_and(|v| strval(v).chars().count() > 160) {
                return out.fail(&log, json!("comment_too_long"));
            }
        }
        let mut gotos: Vec<String> = Vec::new();
        if flag("goto_null") == 1 {
            gotos.push("null@localhost".into());
        } else if flag("goto_spam") == 1 {
            gotos.push("spam@localhost".into());
        } else if flag("goto_ham") == 1 {
            gotos.push("ham@localhost".into());
        } else {
            let raw = split_list(&get("goto").map(strval).unwrap_or_default());
            if raw.is_empty() {
                return out.fail(&log, json!("goto_empty"));
            }
            for g in raw {
                // Domain lowercased (idn_to_ascii), local part kept; no '@' gives "@".
                let (local, dom) = match g.find('@') {
                    Some(p) => (&g[..p], &g[p + 1..]),
                    None => ("", ""),
                };
                let norm = format!("{local}@{}", dom.to_ascii_lowercase());
                if !valid_email(&norm) {
                    out.push("danger", &log, json!(["goto_invalid", norm]));
                    continue;
                }
                if !gotos.contains(&norm) {
                    gotos.push(norm);
                }
            }
            if gotos.is_empty() {
                out.ok = false;
                return out;
            }
        }
        let goto = gotos.join(",");
        for address in addresses {
            let (local, dom) = match address.find('@') {
                Some(p) => (address[..p].to_string(), address[p + 1..].to_ascii_lowercase()),
                None => (String::new(), String::new()),
            };
            let address = format!("{local}@{dom}");
            if gotos.contains(&address) {
                // An alias equal to one of its targets is skipped without a word.
                continue;
            }
            if !local.is_empty() && !valid_email(&address) {
                out.push("danger", &log, json!(["alias_invalid", address]));
                continue;
            }
            let Some(d) = self.domains.get(&dom) else {
                out.push("danger", &log, json!(["domain_not_found", dom]));
                continue;
            };
            let key = address.to_ascii_lowercase();
            if self.alias_index.contains_key(&key) || self.mailboxes.contains_key(&key) {
                out.push("danger", &log, json!(["is_alias_or_mailbox", address]));
                continue;
            }
            if self.aliases_in_domain(&dom) >= d.aliases_max {
                return out.fail(&log, json!("max_alias_exceeded"));
            }
            let id = self.take_alias_id();
            self.aliases.insert(
                id,
                Alias {
                    id,
                    address: address.clone(),
                    goto: goto.clone(),
                    domain: dom,
                    active: flag("active"),
                    sogo_visible: flag("sogo_visible"),
                    sender_allowed: flag("sender_allowed"),
                    internal: flag("internal"),
                    public_comment: get("public_comment").map(strval),
                    private_comment: get("private_comment").map(strval),
                    created: now,
                    modified: None,
                },
            );
            self.alias_index.insert(key, id);
            out.push("success", &log, json!(["alias_added", address, id.to_string()]));
        }
        out
    }

    pub fn edit_aliases(&mut self, items: &[Value], attr: &Map<String, Value>, now: u64) -> Outcome {
        let mut data = attr.clone();
        data.insert("id".into(), Value::Array(items.to_vec()));
        let log = log4("mailbox", "edit", "alias", &data);
        let mut out = Outcome::new();
        let get = |k: &str| attr.get(k).filter(|v| !v.is_null());
        // mailcow reports a missing item with the previous item's (stale) address.
        let mut last_address: Option<String> = None;
        for item in items {
            let Some(id) = self.find_alias(item) else {
                out.push("danger", &log, json!(["alias_invalid", last_address]));
                continue;
            };
            let current = self.aliases[&id].address.clone();
            // Address change.
            let mut new_address = None;
            if let Some(v) = get("address").filter(|v| !empty(Some(v))) {
                let a = trim(&strval(v)).to_string();
                if !eq_ci(&a, &current) {
                    let (local, dom) = match a.find('@') {
                        Some(p) => (a[..p].to_string(), a[p + 1..].to_ascii_lowercase()),
                        None => (String::new(), String::new()),
                    };
                    let a = format!("{local}@{dom}");
                    if !local.is_empty() && !valid_email(&a) {
                        out.push("danger", &log, json!(["alias_invalid", a]));
                        continue;
                    }
                    if !self.domains.contains_key(&dom) {
                        out.push("danger", &log, json!(["domain_not_found", dom]));
                        continue;
                    }
                    let k = a.to_ascii_lowercase();
                    if self.alias_index.contains_key(&k) || self.mailboxes.contains_key(&k) {
                        out.push("danger", &log, json!(["is_alias_or_mailbox", a]));
                        continue;
                    }
                    new_address = Some((a, dom));
                }
            }
            let address_now = new_address.as_ref().map(|(a, _)| a.clone()).unwrap_or(current.clone());
            // New goto list, stored verbatim; an empty string counts as omitted.
            let mut new_goto = None;
            if intval(attr.get("goto_null").unwrap_or(&Value::Null)) == 1 {
                new_goto = Some("null@localhost".to_string());
            } else if intval(attr.get("goto_spam").unwrap_or(&Value::Null)) == 1 {
                new_goto = Some("spam@localhost".to_string());
            } else if intval(attr.get("goto_ham").unwrap_or(&Value::Null)) == 1 {
                new_goto = Some("ham@localhost".to_string());
            } else if let Some(v) = get("goto").filter(|v| !strval(v).is_empty()) {
                let mut kept: Vec<String> = Vec::new();
                for g in split_list(&strval(v)) {
                    if eq_ci(&g, &address_now) {
                        out.push("danger", &log, json!("alias_goto_identical"));
                        continue;
                    }
                    if !valid_email(&g) {
                        out.push("danger", &log, json!(["goto_invalid", g]));
                        continue;
                    }
                    // A target of the alias needs no send-as entry for it: mailcow deletes
                    // it "to prevent duplicates" (functions.mailbox.inc.php 2727-2733).
                    self.sender_acl
                        .retain(|(login, send_as)| !(login == &g && send_as == &address_now));
                    if !kept.contains(&g) {
                        kept.push(g);
                    }
                }
                if !kept.is_empty() {
                    new_goto = Some(kept.join(","));
                }
            }
            if let Some((a, dom)) = new_address {
                self.alias_index.remove(&current.to_ascii_lowercase());
                self.alias_index.insert(a.to_ascii_lowercase(), id);
                let al = self.aliases.get_mut(&id).expect("found");
                al.address = a;
                al.domain = dom;
            }
            let al = self.aliases.get_mut(&id).expect("found");
            if let Some(g) = new_goto {
                al.goto = g;
            }
            for (k, slot) in [
                ("active", &mut al.active),
                ("sogo_visible", &mut al.sogo_visible),
                ("sender_allowed", &mut al.sender_allowed),
                ("internal", &mut al.internal),
            ] {
                if let Some(v) = get(k) {
                    *slot = intval(v);
                }
            }
            if let Some(v) = get("public_comment") {
                al.public_comment = Some(strval(v));
            }
            if let Some(v) = get("private_comment") {
                al.private_comment = Some(strval(v));
            }
            al.modified = Some(now);
            last_address = Some(al.address.clone());
            out.push("success", &log, json!(["alias_modified", al.address]));
        }
        out
    }

    pub fn delete_aliases(&mut self, items: &[Value]) -> Outcome {
        let log = json!(["mailbox", "delete", "alias", {"id": items}, null]);
        let mut out = Outcome::new();
        for item in items {
            match self.find_alias(item) {
                Some(id) => {
                    let address = self.aliases[&id].address.clone();
                    self.remove_alias(id);
                    // functions.mailbox.inc.php 5881.
                    self.sender_acl.retain(|(_, send_as)| !eq_ci(send_as, &address));
                    out.push("success", &log, json!(["alias_removed", address]));
                }
                None => out.push("danger", &log, json!("access_denied")),
            }
        }
        out
    }

    // ---------------------------------------------------- app passwords, EAS

    /// `app_passwd('add')` as far as tests need it: a row for an existing mailbox.
    pub fn add_app_password(&mut self, username: &str, name: &str, now: u64) -> Option<u64> {
        let mb = self.mailbox(username)?;
        let (mailbox, domain) = (mb.username.clone(), mb.domain.clone());
        let id = self.next_app_password_id;
        self.next_app_password_id += 1;
        self.app_passwords.insert(
            id,
            AppPassword {
                id,
                name: name.to_string(),
                mailbox,
                domain,
                password: hash_password(&format!("app-{id}")),
                created: now,
            },
        );
        Some(id)
    }

    /// `app_passwd('get', ['username' => …])`: the rows of a mailbox the API may see. An
    /// invalid address falls back to the session user `API`, who has none; a mailbox that
    /// does not exist fails `hasMailboxObjectAccess`. Either way: nothing.
    pub fn app_passwords_of(&self, username: &str) -> Vec<&AppPassword> {
        if !valid_email(username) {
            return Vec::new();
        }
        let Some(mb) = self.mailbox(username) else {
            return Vec::new();
        };
        if !self.domains.contains_key(&mb.domain) {
            return Vec::new();
        }
        self.app_passwords
            .values()
            .filter(|a| eq_ci(&a.mailbox, username))
            .collect()
    }

    /// `app_passwd('delete')`: per id in order; an unknown id stops the rest.
    pub fn delete_app_passwords(&mut self, items: &[Value]) -> Outcome {
        let log = json!(["app_passwd", "delete", {"id": items}]);
        let mut out = Outcome::new();
        for item in items {
            // `WHERE id = :id`: MariaDB reads a string's numeric prefix.
            let found = mysql_numeric_prefix(item)
                .and_then(|n| u64::try_from(n).ok())
                .filter(|id| self.app_passwords.contains_key(id));
            let Some(id) = found else {
                return out.fail(&log, json!("app_passwd_id_invalid"));
            };
            self.app_passwords.remove(&id);
            out.push("success", &log, json!(["app_passwd_removed", strval(item)]));
        }
        out
    }

    /// `mailbox('delete', 'eas_cache')`: per username; an unknown one is `access_denied`
    /// (naming no one) and the rest go on.
    pub fn delete_eas_cache(&mut self, items: &[Value]) -> Outcome {
        let log = json!(["mailbox", "delete", "eas_cache", {"username": items}, null]);
        let mut out = Outcome::new();
        for item in items {
            let user = strval(item);
            if !valid_email(&user) || self.mailbox(&user).is_none() {
                out.push("danger", &log, json!("access_denied"));
                continue;
            }
            self.eas_resets.push(user.clone());
            out.push("success", &log, json!(["eas_reset", user]));
        }
        out
    }

    // ----------------------------------------------------------------- policy

    pub fn edit_password_policy(&mut self, attr: &Map<String, Value>) -> Outcome {
        let log = json!(["password_complexity", "edit", attr]);
        let get = |k: &str| attr.get(k).filter(|v| !v.is_null()).map(intval);
        let p = &mut self.policy;
        if let Some(l) = get("length").filter(|l| *l >= 3) {
            p.length = l;
        }
        p.chars = get("chars").unwrap_or(p.chars);
        p.lowerupper = get("lowerupper").unwrap_or(p.lowerupper);
        p.special_chars = get("special_chars").unwrap_or(p.special_chars);
        p.numbers = get("numbers").unwrap_or(p.numbers);
        let mut out = Outcome::new();
        out.push("success", &log, json!("password_policy_saved"));
        out
    }
}

/// `["mailbox", action, type, data-with-passwords-masked, null]`.
fn log4(f: &str, action: &str, kind: &str, data: &Map<String, Value>) -> Value {
    let mut masked = data.clone();
    for k in ["password", "password2"] {
        if masked.contains_key(k) {
            masked.insert(k.into(), json!("*"));
        }
    }
    json!([f, action, kind, masked, null])
}

fn strip_name(s: &str) -> String {
    s.trim_end_matches('>').trim_start_matches('<').to_string()
}

fn add_tag(tags: &mut Vec<String>, tag: &str) {
    // The tag table's unique key uses a case-insensitive collation.
    if tags.iter().any(|t| eq_ci(t, tag)) {
        return;
    }
    tags.push(tag.to_string());
    tags.sort_by_key(|t| t.to_ascii_lowercase());
}

fn apply_protocol_access(f: &mut Flags, v: &Value) {
    let list: Vec<String> = match v {
        Value::Array(a) => a.iter().map(strval).collect(),
        other => vec![strval(other)],
    };
    let has = |p: &str| i32::from(list.iter().any(|x| x == p));
    f.imap = has("imap");
    f.pop3 = has("pop3");
    f.smtp = has("smtp");
    f.sieve = has("sieve");
    f.eas = has("eas");
    f.dav = has("dav");
}

/// `bytes / 1048576` as PHP prints it: an int when exact, else a float.
fn php_div_mib(bytes: i64) -> Value {
    if bytes % MIB == 0 {
        json!(bytes / MIB)
    } else {
        json!(bytes as f64 / MIB as f64)
    }
}

/// `hash_password`: listed `{SCHEME}` prefixes are stored as-is, anything else is
/// hashed (here: an emulated BLF-CRYPT string, see [`emulated_hash`]).
pub(crate) fn hash_password(p: &str) -> String {
    let scheme = p
        .strip_prefix('{')
        .and_then(|rest| rest.split_once('}'))
        .map(|(s, _)| s.to_ascii_uppercase());
    if scheme.is_some_and(|s| PREHASHED_SCHEMES.contains(&s.as_str())) {
        return p.to_string();
    }
    emulated_hash(p)
}

/// The value the emulator stores for a password it had to hash itself. Not a real
/// bcrypt hash (that would cost ~50 ms per mailbox), but deterministic and clearly
/// distinguishable from an as-is stored pre-hashed value.
pub fn emulated_hash(cleartext: &str) -> String {
    // FNV-1a 64, twice with different offsets, is enough to tell values apart.
    let fnv = |seed: u64| {
        cleartext
            .bytes()
            .fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
    };
    format!(
        "{{BLF-CRYPT}}$2y$10$emulated.{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

// -------------------------------------------------------- templates, ACLs, rate limits

impl State {
    /// `mailbox('add', 'mailbox_templates')` (mailbox.inc 1706–1835): the name must be new;
    /// quota MiB → bytes; flags default to mailcow's, `acl` omitted → every `acl_*` 0.
    pub fn add_mailbox_template(&mut self, data: &Map<String, Value>) -> Outcome {
        let log = log4("mailbox", "add", "mailbox_templates", data);
        let out = Outcome::new();
        let get = |k: &str| data.get(k).filter(|v| !v.is_null());
        if empty(data.get("template")) {
            return out.fail(&log, json!("template_name_invalid"));
        }
        let name = strval(&data["template"]);
        if self.templates.values().any(|t| t.name == name) {
            return out.fail(&log, json!(["template_exists", name]));
        }
        let int = |k: &str, default: i64| get(k).map(intval).unwrap_or(default);
        let mut a = json!({
            "quota": int("quota", 0) * MIB,
            "tags": get("tags").cloned().unwrap_or(json!([])),
            "tagged_mail_handler": get("tagged_mail_handler").map(strval).unwrap_or_else(|| "none".into()),
            "quarantine_notification": get("quarantine_notification").map(strval).unwrap_or_else(|| "hourly".into()),
            "quarantine_category": get("quarantine_category").map(strval).unwrap_or_else(|| "reject".into()),
            "rl_frame": if empty(data.get("rl_frame")) { "s".to_owned() } else { strval(&data["rl_frame"]) },
            "rl_value": if empty(data.get("rl_value")) { String::new() } else { strval(&data["rl_value"]) },
            "force_pw_update": int("force_pw_update", 0),
            "force_tfa": int("force_tfa", 0),
            "sogo_access": int("sogo_access", 1),
            "active": int("active", 1),
            "tls_enforce_in": int("tls_enforce_in", 0),
            "tls_enforce_out": int("tls_enforce_out", 0),
        });
        let listed = |k: &str| -> Option<Vec<String>> {
            get(k).map(|v| match v {
                Value::Array(list) => list.iter().map(strval).collect(),
                other => vec![strval(other)],
            })
        };
        let protocols = listed("protocol_access");
        for p in ["imap", "pop3", "smtp", "sieve", "eas", "dav"] {
            let on = protocols.as_ref().is_none_or(|l| l.iter().any(|x| x == p));
            a[format!("{p}_access")] = json!(i64::from(on));
        }
        let acl = listed("acl");
        // Without `acl`, mailcow's code sets every acl_* but pw_reset to 0.
        let names = if acl.is_some() {
            &USER_ACLS[..]
        } else {
            &USER_ACLS[..14]
        };
        for name in names {
            let on = acl.as_ref().is_some_and(|l| l.iter().any(|x| x == name));
            a[format!("acl_{name}")] = json!(i64::from(on));
        }
        let id = self.next_template_id;
        self.next_template_id += 1;
        self.templates.insert(
            id,
            Template {
                id,
                name: name.clone(),
                attributes: a.as_object().cloned().unwrap_or_default(),
            },
        );
        let mut out = out;
        out.push("success", &log, json!(["template_added", name]));
        out
    }

    /// `acl('edit', 'user')` (functions.acl.inc.php 9–62): the ACLs listed in `user_acl`
    /// become 1, every other one 0; `acl_saved` per mailbox, `access_denied` for an unknown one.
    pub fn edit_user_acl(&mut self, items: &[Value], attr: &Map<String, Value>) -> Outcome {
        let mut data = attr.clone();
        data.insert("username".into(), Value::Array(items.to_vec()));
        let log = json!(["acl", "edit", "user", data]);
        let list: Vec<String> = match attr.get("user_acl") {
            Some(Value::Array(a)) => a.iter().map(strval).collect(),
            None | Some(Value::Null) => Vec::new(),
            Some(other) => vec![strval(other)],
        };
        let mut out = Outcome::new();
        for item in items {
            let username = strval(item);
            let Some(mb) = self.mailboxes.get_mut(&username.to_ascii_lowercase()) else {
                out.push("danger", &log, json!("access_denied"));
                continue;
            };
            for (name, value) in mb.acl.iter_mut() {
                *value = i64::from(list.iter().any(|x| x == name));
            }
            out.push("success", &log, json!(["acl_saved", username]));
        }
        out
    }

    /// `ratelimit('edit', 'mailbox')` (functions.ratelimit.inc.php 77–130): `rl_frame` must
    /// be s/m/h/d; an empty or 0 `rl_value` removes the limit.
    pub fn edit_ratelimit(&mut self, items: &[Value], attr: &Map<String, Value>) -> Outcome {
        let mut data = attr.clone();
        data.insert("object".into(), Value::Array(items.to_vec()));
        let log = json!(["ratelimit", "edit", "mailbox", data]);
        let value = attr.get("rl_value").map(intval).unwrap_or(0);
        let frame = attr.get("rl_frame").map(strval).unwrap_or_default();
        let mut out = Outcome::new();
        for item in items {
            let username = strval(item);
            if !["s", "m", "h", "d"].contains(&frame.as_str()) {
                out.push("danger", &log, json!("rl_timeframe"));
                continue;
            }
            let Some(mb) = self.mailboxes.get_mut(&username.to_ascii_lowercase()) else {
                out.push("danger", &log, json!("access_denied"));
                continue;
            };
            mb.rl = (value != 0).then(|| (value, frame.clone()));
            out.push("success", &log, json!(["rl_saved", username]));
        }
        out
    }
}

/// `ctype_alnum(str_replace(['_', '.', '-'], '', $username))`, not empty: no `@`.
fn admin_name_ok(username: &str) -> bool {
    let rest: String = username.chars().filter(|c| !matches!(c, '_' | '.' | '-')).collect();
    !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric())
}
