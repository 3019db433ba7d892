//! config.json: read, check every key, and turn it into a validated [`Config`].
//!
//! The file is first parsed as plain JSON (so a syntax error reports its line and column),
//! then walked section by section against the keys INTERFACE.md defines. Walking by hand
//! rather than deriving serde structs lets every error name the full key path
//! (`ldap.user_maping`) and the expected type, which serde's derive cannot do. Keys of the
//! original Python tool keep their meaning; every newer key is optional with its default.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::core::access::{AccessRule, Condition, MAX_TEMPLATES, Protocol};
pub use crate::core::access::{AccessRules, TemplateRules};
pub use crate::core::policy::{
    ActiveFormat, AddressChange, Adopt, Authsource, IdpMailboxes, MAX_QUOTA_MIB, MailRewrite, MaxRemovals, NewDomain,
    Offboard, OnRemoved, PasswordMode, QuotaUnit, Secret, UserMapping,
};
use crate::error::{Error, Result};

/// How the LDAP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdapTls {
    /// `ldap://` without StartTLS: plain text.
    None,
    /// `ldap://` upgraded with StartTLS.
    StartTls,
    /// `ldaps://`.
    Ldaps,
}

#[derive(Debug, Clone)]
pub struct LdapConfig {
    pub uri: String,
    pub tls: LdapTls,
    /// Skip certificate checks (the original tool's `allow_self_signed`).
    pub allow_self_signed: bool,
    pub ca_file: Option<PathBuf>,
    pub bind_dn: String,
    pub bind_pw: Secret,
    /// Where `bind_pw` came from, when it came from a file (checked for loose permissions).
    pub bind_pw_file: Option<PathBuf>,
    pub search_base: String,
    pub search_filter: String,
    /// RFC 2696 page size; 0 = no paging.
    pub page_size: u32,
    /// `ldap.incremental`: how a pass may read only what changed.
    pub incremental: Incremental,
    pub timeout: Duration,
    pub mapping: UserMapping,
}

/// `ldap.incremental`: read only the changes since the last pass, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incremental {
    /// Every pass reads everything (the default until an admin turns it on).
    Off,
    /// RFC 4533 where the root DSE offers it, else `uSNChanged` where it is an AD.
    Auto,
    /// RFC 4533 Content Synchronization, refreshOnly (OpenLDAP's syncprov).
    Syncrepl,
    /// Active Directory's DirSync control (needs the replication right; refused: `usn`).
    Dirsync,
    /// Active Directory / Samba: `uSNChanged` above the last pass's `highestCommittedUSN`.
    Usn,
}

#[derive(Debug, Clone)]
pub struct MailcowConfig {
    /// `https://host` or the URL given, without a trailing slash; `/api/v1/…` is appended.
    pub base_url: String,
    pub api_key: Secret,
    /// Where `api_key` came from, when it came from a file.
    pub api_key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// False with `--do-not-verify`.
    pub verify_tls: bool,
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub on_removed: OnRemoved,
    /// With `on_removed = "delete"`: days disabled before the delete (0 = at once).
    pub delete_after_days: u64,
    pub max_removals: MaxRemovals,
    pub password: PasswordMode,
    pub authsource: Authsource,
    /// Tag put on every mailbox this tool creates or adopts; `None` = no tag.
    pub tag: Option<String>,
    pub adopt: Adopt,
    /// `sync.idp_mailboxes` (`"auto"` resolved by `authsource`).
    pub idp_mailboxes: IdpMailboxes,
    pub on_address_change: AddressChange,
    /// `sync.offboard`: what a disable by this tool revokes.
    pub offboard: Offboard,
    pub quota_unit: QuotaUnit,
    pub default_quota_mib: Option<u64>,
    pub active_format: ActiveFormat,
    /// Empty = every domain.
    pub domains: BTreeSet<String>,
    /// `sync.create_domains`: `None` = off (false, the default).
    pub create_domains: Option<NewDomain>,
    pub concurrency: usize,
    pub metrics_file: Option<PathBuf>,
    /// `sync.full_every`: in incremental mode, a full pass at least this often.
    pub full_every: Duration,
}

#[derive(Debug, Clone)]
pub struct GroupsConfig {
    pub search_base: String,
    pub search_filter: String,
    pub mail: String,
    pub member: String,
    pub nested: bool,
    /// `groups.as`: what a group with an address becomes in mailcow.
    pub mode: GroupMode,
}

/// `groups.as` (docs/mailcow-api-sender-acl.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupMode {
    /// `"alias"` (the default): one distribution alias, goto = the members.
    Alias,
    /// `"sender_acl"`: the members may send as the group's (existing) address.
    SenderAcl,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    pub ldap: LdapConfig,
    pub mailcow: MailcowConfig,
    pub state_file: PathBuf,
    /// Time allowed for one mailcow request, the whole answer included: reading 100k
    /// mailboxes takes the real server minutes.
    pub mailcow_timeout: Duration,
    pub sync: SyncConfig,
    /// `None` when `groups.search_base` is empty.
    pub groups: Option<GroupsConfig>,
    /// `sources`, when the config lists its directories so (empty with the `ldap` form).
    /// `ldap`, `groups` and `sync` above are then those of the first source.
    pub sources: Vec<Source>,
    /// `access`: protocol access flags from groups and attributes; `None` = off.
    pub access: Option<AccessRules>,
    /// `templates`: the mailcow template of each mailbox from groups and attributes;
    /// `None` = off.
    pub templates: Option<TemplateRules>,
    /// `domain_admins`: `None` when absent (off).
    pub domain_admins: Option<DomainAdminsConfig>,
}

/// One directory of `sources`.
#[derive(Debug, Clone)]
pub struct Source {
    /// Recorded with each mailbox the source manages.
    pub name: String,
    pub ldap: LdapConfig,
    pub groups: Option<GroupsConfig>,
    /// The top-level `sync` with the source's own keys over it.
    pub sync: SyncConfig,
}

impl Config {
    /// Whether several directories are synced (`sources` with more than one).
    pub fn several_sources(&self) -> bool {
        self.sources.len() > 1
    }

    /// Whether groups give send-as rights (`groups.as: "sender_acl"`), in the `ldap` form or
    /// in any source (they all sync their groups one way).
    pub fn groups_send_as(&self) -> bool {
        self.groups
            .iter()
            .chain(self.sources.iter().filter_map(|s| s.groups.as_ref()))
            .any(|g| g.mode == GroupMode::SenderAcl)
    }

    /// The config as source `i` sees it: its `ldap`, `groups` and `sync`.
    pub fn for_source(&self, i: usize) -> Config {
        let source = &self.sources[i];
        Config {
            ldap: source.ldap.clone(),
            groups: source.groups.clone(),
            sync: source.sync.clone(),
            ..self.clone()
        }
    }
}

/// `domain_admins`: the members of one LDAP group become mailcow domain admins of
/// `domains` (docs/mailcow-api-admins.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainAdminsConfig {
    /// The group's DN.
    pub group: String,
    /// The mail domains they administer (non-empty; each must exist in mailcow).
    pub domains: BTreeSet<String>,
    /// The group's attribute listing member DNs.
    pub member: String,
    /// The member entry's attribute that names the admin (mailcow admin names cannot be
    /// addresses).
    pub username: String,
    /// `"ldap"`: the member's `user_mapping.password` value (a `{SCHEME}` hash mailcow keeps),
    /// a random one where it has none; `"random"`: always a random one.
    pub random_passwords: bool,
}

impl Config {
    /// One warning per setting that leaves a secret or a connection unprotected. Shown on
    /// every pass, by `check` and `status`, also under `-q`: an insecure setting must not
    /// become quiet once cron runs it. None of them holds a secret.
    pub fn security_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.mailcow.base_url.starts_with("http://") {
            warnings.push(format!(
                "mailcow_host {} is plain http://: the API key travels in clear text; use https://",
                origin_of(&self.mailcow.base_url)
            ));
        }
        if !self.mailcow.verify_tls {
            warnings.push(
                "--do-not-verify: mailcow's TLS certificate is not checked, so anyone on the path can pose as mailcow and read the API key; set mailcow_ca_file instead"
                    .to_owned(),
            );
        }
        let ldaps: Vec<(String, &LdapConfig)> = if self.sources.is_empty() {
            vec![(String::new(), &self.ldap)]
        } else {
            self.sources
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("sources[{i}]."), &s.ldap))
                .collect()
        };
        for (at, ldap) in ldaps {
            let mut add = |message: &str| warnings.push(message.replace("ldap.", &format!("{at}ldap.")));
            if ldap.allow_self_signed {
                add(
                    "ldap.allow_self_signed is true: the LDAP server's certificate is not checked, so anyone on the path can pose as it and read the bind password; set ldap.ca_file instead",
                );
            }
            if ldap.ca_file.is_some() {
                if ldap.tls == LdapTls::None {
                    add(
                        "ldap.ca_file is set but ignored: ldap.uri is plain ldap:// without ldap.starttls, so the connection is not encrypted at all; use ldaps:// or set ldap.starttls",
                    );
                } else if ldap.allow_self_signed {
                    add(
                        "ldap.ca_file is set but ignored because ldap.allow_self_signed is true; set allow_self_signed to false to check the certificate against it",
                    );
                }
            }
        }
        warnings
    }
}

/// Scheme, host and port of a URL (its origin), for messages: a `user:password@` part or a query could
/// hold a secret.
fn origin_of(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}")
}

/// The config in the working directory: looked for first when no path is given, and where a
/// pass with no config anywhere writes its template (as the original tool did).
pub const LOCAL_CONFIG: &str = "config.json";

/// The config where packages install it, looked for when there is no `./config.json`.
pub const SYSTEM_CONFIG: &str = "/etc/mailcow-ldap-sync/config.json";

/// Where the config is read from, and whether it was found by looking at the defaults
/// (neither `--config` nor `$MAILCOW_LDAP_SYNC_CONFIG` named it).
#[derive(Debug, Clone)]
pub struct ConfigLocation {
    pub path: PathBuf,
    pub is_default: bool,
}

/// What loading does when the config is not at a default path either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenMissing {
    /// A pass: write the template at `./config.json`, say so, exit 2.
    WriteTemplate,
    /// `check`, `status`: write nothing, name the paths tried, exit 2.
    Fail,
}

impl ConfigLocation {
    /// `--config`, else `$MAILCOW_LDAP_SYNC_CONFIG`, else `./config.json` if it exists, else
    /// `/etc/mailcow-ldap-sync/config.json`.
    pub fn resolve(flag: Option<&Path>, env: Option<String>) -> ConfigLocation {
        // A dangling symlink at ./config.json still counts: better its error than another file.
        ConfigLocation::resolve_with(flag, env, |p| p.symlink_metadata().is_ok())
    }

    fn resolve_with(flag: Option<&Path>, env: Option<String>, exists: impl Fn(&Path) -> bool) -> ConfigLocation {
        let (path, is_default) = match (flag, env.filter(|e| !e.is_empty())) {
            (Some(path), _) => (path.to_owned(), false),
            (None, Some(env)) => (PathBuf::from(env), false),
            (None, None) if exists(Path::new(LOCAL_CONFIG)) => (PathBuf::from(LOCAL_CONFIG), true),
            (None, None) => (PathBuf::from(SYSTEM_CONFIG), true),
        };
        ConfigLocation { path, is_default }
    }

    /// The default paths, as an admin would look for them (the working directory spelled out).
    fn defaults_tried() -> String {
        let local = std::env::current_dir()
            .map(|d| d.join(LOCAL_CONFIG))
            .unwrap_or_else(|_| PathBuf::from(LOCAL_CONFIG));
        format!("{} and {SYSTEM_CONFIG}", local.display())
    }
}

/// Secrets that may come from the environment instead of the file.
#[derive(Debug, Default, Clone)]
pub struct EnvSecrets {
    pub ldap_bind_pw: Option<Secret>,
    pub mailcow_api_key: Option<Secret>,
}

impl EnvSecrets {
    pub fn from_env() -> EnvSecrets {
        let get = |name| std::env::var(name).ok().filter(|v| !v.is_empty()).map(Secret::new);
        EnvSecrets {
            ldap_bind_pw: get("LDAP_BIND_PW"),
            mailcow_api_key: get("MAILCOW_API_KEY"),
        }
    }
}

/// A loaded config and the warnings worth showing (loose file permissions).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// The template `init` writes: every key with its default, valid JSON.
pub const TEMPLATE: &str = include_str!("config.template.json");

/// Write the template at `path` with mode 0600, never overwriting; missing parent
/// directories are created with mode 0700 (the file holds secrets). Returns the topmost
/// directory it created, if any.
pub fn write_template(path: &Path) -> Result<Option<PathBuf>> {
    use std::io::Write;
    let created = create_parents(path)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::config(path, None, "already exists; not overwritten")
        } else {
            Error::io(path, "write the config template", e)
        }
    })?;
    file.write_all(TEMPLATE.as_bytes())
        .map_err(|e| Error::io(path, "write the config template", e))?;
    Ok(created)
}

/// Create the missing directories above `path` (mode 0700); the topmost one created, if any.
fn create_parents(path: &Path) -> Result<Option<PathBuf>> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(None);
    };
    let topmost = parent
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && a.symlink_metadata().is_err())
        .last()
        .map(Path::to_path_buf);
    if topmost.is_none() {
        return Ok(None);
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(parent)
        .map_err(|e| Error::io(parent, "create the config directory", e))?;
    Ok(topmost)
}

/// Read and validate the config at `location`. With no config at either default path, a
/// pass gets a template at `./config.json` ([`WhenMissing::WriteTemplate`]).
pub fn load(location: &ConfigLocation, env: &EnvSecrets, missing: WhenMissing) -> Result<Loaded> {
    let path = &location.path;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if location.is_default {
                let tried = ConfigLocation::defaults_tried();
                if missing == WhenMissing::Fail {
                    return Err(Error::Usage(format!(
                        "no config found (tried {tried}); write one with: mailcow-ldap-sync init \
                         [-c PATH], or name it with -c or $MAILCOW_LDAP_SYNC_CONFIG"
                    )));
                }
                let template = PathBuf::from(LOCAL_CONFIG);
                write_template(&template)?;
                return Err(Error::TemplateWritten(template));
            }
            return Err(Error::config(
                path,
                None,
                format!(
                    "file not found (create a template with: mailcow-ldap-sync init -c {})",
                    path.display()
                ),
            ));
        }
        Err(e) => return Err(Error::io(path, "read the config", e)),
    };
    let mut warnings = Vec::new();
    if let Some(warning) = permission_warning(path) {
        warnings.push(warning);
    }
    let config = parse(path, &text, env)?;
    for secret_file in [&config.ldap.bind_pw_file, &config.mailcow.api_key_file]
        .into_iter()
        .chain(config.sources.iter().skip(1).map(|s| &s.ldap.bind_pw_file))
        .flatten()
    {
        warnings.extend(permission_warning(secret_file));
    }
    if !config.sources.is_empty() && env.ldap_bind_pw.is_some() {
        warnings.push(
            "$LDAP_BIND_PW is set but not used: with `sources`, each source has its own bind_pw or bind_pw_file".into(),
        );
    }
    Ok(Loaded { config, warnings })
}

/// A warning when a file holding secrets can be read by group or others.
fn permission_warning(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Some(format!(
                "{} is readable by group or others (mode {mode:04o}) and holds secrets; run: chmod 600 {}",
                path.display(),
                path.display()
            ));
        }
    }
    let _ = path;
    None
}

/// The config text as JSON, refusing a key given twice in one object: serde_json keeps
/// the last silently, so a second `uri` pasted below the first would quietly win.
fn parse_json(path: &Path, text: &str) -> Result<Value> {
    use serde::de::DeserializeSeed;
    let duplicate = std::cell::RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = UniqueKeys {
        path: String::new(),
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    parsed.map_err(|e| match duplicate.take() {
        Some(key) => Error::config(
            path,
            Some(&key),
            format!(
                "is given twice (the second at line {}, column {}); keep one",
                e.line(),
                e.column()
            ),
        ),
        None => Error::config(
            path,
            None,
            format!(
                "invalid JSON at line {}, column {}: {}",
                e.line(),
                e.column(),
                strip_position(&e.to_string())
            ),
        ),
    })
}

/// Deserializes a JSON value like `Value` does, but fails on a repeated object key and
/// records its full key path in `duplicate`.
struct UniqueKeys<'d> {
    /// The key path of the value being read (`ldap.user_mapping`); "" at the top.
    path: String,
    duplicate: &'d std::cell::RefCell<Option<String>>,
}

impl UniqueKeys<'_> {
    fn child(&self, key: &str) -> Self {
        UniqueKeys {
            path: if self.path.is_empty() {
                key.to_owned()
            } else {
                format!("{}.{key}", self.path)
            },
            duplicate: self.duplicate,
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> std::result::Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> std::result::Result<Value, E> {
        Ok(Value::from(n))
    }
    fn visit_u64<E>(self, n: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(n))
    }
    fn visit_f64<E>(self, n: f64) -> std::result::Result<Value, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, s: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> std::result::Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let element = UniqueKeys {
                path: format!("{}[{}]", self.path, items.len()),
                duplicate: self.duplicate,
            };
            let Some(item) = seq.next_element_seed(element)? else {
                break;
            };
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> std::result::Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let child = self.child(&key);
            if map.contains_key(&key) {
                let message = format!("duplicate key `{}`", child.path);
                *self.duplicate.borrow_mut() = Some(child.path);
                return Err(serde::de::Error::custom(message));
            }
            let value = access.next_value_seed(child)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

fn base_dir(config_path: &Path) -> PathBuf {
    match config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Parse and validate config text. `path` is used for errors and to resolve relative paths.
pub fn parse(path: &Path, text: &str, env: &EnvSecrets) -> Result<Config> {
    let root = parse_json(path, text)?;
    let dir = base_dir(path);
    let Value::Object(map) = &root else {
        return Err(Error::config(path, None, "the top level must be a JSON object { … }"));
    };
    let mut top = Section::new(path, "", map, TOP_KEYS)?;

    let ldap_section = top.section("ldap", LDAP_KEYS)?;
    let sources_given = top.get("sources").is_some();
    let host = top.string("mailcow_host", "")?;
    let base_url = mailcow_base_url(&host).map_err(|m| top.error("mailcow_host", m))?;
    let api_key = top.secret(
        "mailcow_api_key",
        "mailcow_api_key_file",
        &dir,
        env.mailcow_api_key.clone(),
    )?;
    let api_key_file = top.path("mailcow_api_key_file", &dir)?;
    let mailcow_ca_file = top.path("mailcow_ca_file", &dir)?;
    let state_file = top
        .path("state_file", &dir)?
        .unwrap_or_else(|| dir.join("mailcow.sqlite3"));
    let mailcow_timeout = Duration::from_secs(top.uint("mailcow_timeout_secs", 300, 1, 24 * 3600)?);

    let top_sync = top.section("sync", SYNC_KEYS)?;
    let sync = match &top_sync {
        Some(section) => parse_sync(section.clone(), &dir)?,
        None => SyncConfig::default_with(&dir),
    };

    let groups = parse_groups(top.section("groups", GROUP_KEYS)?)?;
    // The directories: one `ldap` section (with `groups` beside it), or a list of sources.
    let (ldap, sync, groups, sources) = match (ldap_section, sources_given) {
        (Some(_), true) => {
            return Err(top.error(
                "sources",
                "cannot be used with `ldap`: a config has one `ldap` section or a list of `sources`, not both",
            ));
        }
        (None, false) => return Err(top.missing("ldap")),
        (Some(section), false) => (
            parse_ldap(section, &dir, env.ldap_bind_pw.clone())?,
            sync,
            groups,
            Vec::new(),
        ),
        (None, true) => {
            if top.get("groups").is_some() {
                return Err(top.error(
                    "groups",
                    "cannot be used with `sources`: give each source its own `groups`",
                ));
            }
            let sources = parse_sources(&top, &dir, top_sync.as_ref().map(|s| s.map))?;
            let first = &sources[0];
            (first.ldap.clone(), first.sync.clone(), first.groups.clone(), sources)
        }
    };
    let access = top.access("access")?;
    let templates = top.templates("templates")?;
    let domain_admins = match top.section("domain_admins", DOMAIN_ADMIN_KEYS)? {
        Some(mut a) => {
            let group = a.string("group", "")?;
            if group.trim().is_empty() {
                return Err(a.error("group", "the DN of the admin group is required".to_owned()));
            }
            let domains = a.domains("domains")?;
            if domains.is_empty() {
                return Err(a.error("domains", "at least one mail domain is required".to_owned()));
            }
            let member = a.string("member", "member")?;
            let username = a.string("username", "uid")?;
            let random_passwords = a.choice("password", "ldap", &[("ldap", false), ("random", true)])?;
            Some(DomainAdminsConfig {
                group: group.trim().to_owned(),
                domains,
                member,
                username,
                random_passwords,
            })
        }
        None => None,
    };

    Ok(Config {
        file: path.to_owned(),
        ldap,
        mailcow: MailcowConfig {
            base_url,
            api_key,
            api_key_file,
            ca_file: mailcow_ca_file,
            verify_tls: true,
        },
        state_file,
        mailcow_timeout,
        sync,
        groups,
        sources,
        access,
        templates,
        domain_admins,
    })
}

/// `sources`: a list of `{"name", "ldap", "groups", "sync"}`. A source's `sync` holds only
/// the keys that may differ between directories; it is read over the top-level `sync`.
fn parse_sources(top: &Section<'_>, dir: &Path, top_sync: Option<&Map<String, Value>>) -> Result<Vec<Source>> {
    let list = match top.get("sources") {
        Some(Value::Array(list)) => list,
        Some(other) => return Err(top.wrong_type("sources", "a list [ … ] of sources", other)),
        None => return Err(top.missing("sources")),
    };
    if list.is_empty() {
        return Err(top.error(
            "sources",
            "is empty: list at least one source {\"name\": …, \"ldap\": {…}}",
        ));
    }
    let mut sources: Vec<Source> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let path = format!("sources[{i}]");
        let Value::Object(map) = item else {
            return Err(Error::config(
                top.file,
                Some(&path),
                format!("expected an object {{ … }}, found {}", describe(item)),
            ));
        };
        let mut s = Section::new(top.file, &path, map, SOURCE_KEYS)?;
        let name = s.string("name", "")?;
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(s.error(
                "name",
                format!(
                    "`{name}` must be 1 to 64 letters, digits, `.`, `_` or `-`: the state database records it for each mailbox"
                ),
            ));
        }
        if let Some(j) = sources.iter().position(|o| o.name == name) {
            return Err(s.error("name", format!("`{name}` is already the name of sources[{j}]")));
        }
        let ldap = parse_ldap(
            s.section("ldap", LDAP_KEYS)?.ok_or_else(|| s.missing("ldap"))?,
            dir,
            None,
        )?;
        let groups = parse_groups(s.section("groups", GROUP_KEYS)?)?;
        let mut merged = top_sync.cloned().unwrap_or_default();
        match s.get("sync") {
            None => {}
            Some(Value::Object(own)) => {
                let own_path = s.key_path("sync");
                for key in own.keys() {
                    if SYNC_KEYS.contains(&key.as_str()) && !SOURCE_SYNC_KEYS.contains(&key.as_str()) {
                        return Err(Error::config(
                            top.file,
                            Some(&format!("{own_path}.{key}")),
                            "is one setting for all mailboxes and cannot differ between sources: set it in the top-level `sync`",
                        ));
                    }
                }
                Section::new(top.file, &own_path, own, SOURCE_SYNC_KEYS)?;
                merged.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Some(other) => return Err(s.wrong_type("sync", "an object { … }", other)),
        }
        let sync = parse_sync(Section::new(top.file, &s.key_path("sync"), &merged, SYNC_KEYS)?, dir)?;
        sources.push(Source {
            name,
            ldap,
            groups,
            sync,
        });
    }
    if sources.len() > 1 {
        for (i, source) in sources.iter().enumerate() {
            let at = |key: &str| format!("sources[{i}].{key}");
            let first_mode = sources.iter().find_map(|s| s.groups.as_ref()).map(|g| g.mode);
            if source.groups.as_ref().is_some_and(|g| Some(g.mode) != first_mode) {
                return Err(Error::config(
                    top.file,
                    Some(&at("groups.as")),
                    "differs from the first source with groups: every source's groups are synced one way, \
                     as aliases or as send-as rights",
                ));
            }
            if source.ldap.incremental != Incremental::Off {
                return Err(Error::config(
                    top.file,
                    Some(&at("ldap.incremental")),
                    "incremental passes follow one directory; with several sources every pass is full: set it to \"off\"",
                ));
            }
        }
    }
    Ok(sources)
}

/// One `ldap` object: the top-level one, or a source's.
fn parse_ldap(mut s: Section<'_>, dir: &Path, env_bind_pw: Option<Secret>) -> Result<LdapConfig> {
    let uri = s.string("uri", "")?;
    let starttls = s.bool("starttls", false)?;
    let tls = if uri.starts_with("ldaps://") {
        if starttls {
            return Err(s.error(
                "starttls",
                "cannot be used with an ldaps:// uri (use ldap:// with StartTLS, or ldaps:// alone)",
            ));
        }
        LdapTls::Ldaps
    } else if uri.starts_with("ldap://") {
        if starttls { LdapTls::StartTls } else { LdapTls::None }
    } else if uri.is_empty() {
        return Err(s.error("uri", "is empty; set it to ldap://host or ldaps://host"));
    } else {
        return Err(s.error("uri", format!("`{uri}` must start with ldap:// or ldaps://")));
    };
    let allow_self_signed = s.bool("allow_self_signed", false)?;
    let ca_file = s.path("ca_file", dir)?;
    let bind_dn = s.string("bind_dn", "")?;
    let bind_pw = s.secret("bind_pw", "bind_pw_file", dir, env_bind_pw)?;
    let bind_pw_file = s.path("bind_pw_file", dir)?;
    if !bind_dn.is_empty() && bind_pw.is_empty() {
        // RFC 4513 5.1.2: a name with an empty password is an "unauthenticated bind",
        // which many servers answer with success without checking anything.
        return Err(s.error(
            "bind_pw",
            "is empty while ldap.bind_dn is set: an empty password makes an unauthenticated bind, which \
             many servers accept without checking anything; set ldap.bind_pw, ldap.bind_pw_file or \
             $LDAP_BIND_PW, or leave ldap.bind_dn empty for an anonymous bind",
        ));
    }
    let search_base = s.string("user_search_base", "")?;
    let mut search_filter = s.string("user_search_filter", DEFAULT_USER_FILTER)?;
    if search_filter.trim().is_empty() {
        // The original tool's generated config holds "": it means "the default".
        search_filter = DEFAULT_USER_FILTER.to_owned();
    }
    check_filter(&search_filter).map_err(|m| s.error("user_search_filter", m))?;
    let page_size = s.uint("page_size", 500, 0, i32::MAX as u64)? as u32;
    let incremental = s.choice(
        "incremental",
        "off",
        &[
            ("off", Incremental::Off),
            ("auto", Incremental::Auto),
            ("syncrepl", Incremental::Syncrepl),
            ("dirsync", Incremental::Dirsync),
            ("usn", Incremental::Usn),
        ],
    )?;
    let timeout_secs = s.uint("timeout_secs", 30, 1, 24 * 3600)?;
    let mut m = s
        .section("user_mapping", MAPPING_KEYS)?
        .ok_or_else(|| s.missing("user_mapping"))?;
    let mapping = UserMapping {
        mail: m.opt_string("mail")?.ok_or_else(|| {
            m.error(
                "mail",
                "must name the LDAP attribute holding the address (e.g. \"mail\")",
            )
        })?,
        firstname: m.opt_string_default("firstname", "givenName")?,
        lastname: m.opt_string_default("lastname", "sn")?,
        password: m.opt_string_default("password", "userPassword")?,
        quota: m.opt_string_default("quota", "MailQuota")?,
        active: m.opt_string("active")?,
        tls_enforce_in: m.opt_string("tls_enforce_in")?,
        tls_enforce_out: m.opt_string("tls_enforce_out")?,
        name: m.opt_string("name")?,
        uid: m.opt_string("uid")?,
        aliases: m.opt_string("aliases")?,
        mail_rewrite: m.mail_rewrite("mail_rewrite")?,
    };
    Ok(LdapConfig {
        uri,
        tls,
        allow_self_signed,
        ca_file,
        bind_dn,
        bind_pw,
        bind_pw_file,
        search_base,
        search_filter,
        page_size,
        incremental,
        timeout: Duration::from_secs(timeout_secs),
        mapping,
    })
}

/// One `sync` object: the top-level one, or a source's merged over it.
fn parse_sync(mut s: Section<'_>, dir: &Path) -> Result<SyncConfig> {
    let authsource = s.choice(
        "authsource",
        "mailcow",
        &[("mailcow", Authsource::Mailcow), ("ldap", Authsource::Ldap)],
    )?;
    let idp_mailboxes = s
        .choice(
            "idp_mailboxes",
            "auto",
            &[
                ("auto", None),
                ("protect", Some(IdpMailboxes::Protect)),
                ("adopt", Some(IdpMailboxes::Adopt)),
            ],
        )?
        .unwrap_or_else(|| IdpMailboxes::auto(authsource));
    Ok(SyncConfig {
        on_removed: s.choice(
            "on_removed",
            "disable",
            &[
                ("disable", OnRemoved::Disable),
                ("disallow_login", OnRemoved::DisallowLogin),
                ("delete", OnRemoved::Delete),
                ("keep", OnRemoved::Keep),
            ],
        )?,
        delete_after_days: s.uint("delete_after_days", DEFAULT_DELETE_AFTER_DAYS, 0, 36_500)?,
        max_removals: s.max_removals("max_removals")?,
        password: s.choice(
            "password",
            "changed",
            &[
                ("changed", PasswordMode::Changed),
                ("always", PasswordMode::Always),
                ("create", PasswordMode::Create),
                ("never", PasswordMode::Never),
                ("random", PasswordMode::Random),
            ],
        )?,
        authsource,
        tag: s.opt_string_default("tag", "ldap-sync")?,
        adopt: s.choice(
            "adopt",
            "tagged",
            &[("tagged", Adopt::Tagged), ("by_address", Adopt::ByAddress)],
        )?,
        idp_mailboxes,
        on_address_change: s.choice(
            "on_address_change",
            "rename",
            &[("rename", AddressChange::Rename), ("recreate", AddressChange::Recreate)],
        )?,
        offboard: s.offboard("offboard")?,
        quota_unit: s.choice(
            "quota_unit",
            "MiB",
            &[
                ("B", QuotaUnit::Bytes),
                ("KiB", QuotaUnit::KiB),
                ("MiB", QuotaUnit::MiB),
                ("GiB", QuotaUnit::GiB),
            ],
        )?,
        default_quota_mib: s.opt_uint("default_quota_mib", 0, MAX_QUOTA_MIB)?,
        active_format: s.choice(
            "active_format",
            "auto",
            &[
                ("mailcow", ActiveFormat::Mailcow),
                ("bool", ActiveFormat::Bool),
                ("ad", ActiveFormat::Ad),
                ("auto", ActiveFormat::Auto),
            ],
        )?,
        domains: s.domains("domains")?,
        create_domains: s.create_domains("create_domains")?,
        concurrency: s.uint("concurrency", DEFAULT_CONCURRENCY, 1, 64)? as usize,
        metrics_file: s.path("metrics_file", dir)?,
        full_every: s.duration("full_every", DEFAULT_FULL_EVERY)?,
    })
}

/// One `groups` object: `None` when absent or its `search_base` is empty.
fn parse_groups(section: Option<Section<'_>>) -> Result<Option<GroupsConfig>> {
    Ok(match section {
        Some(mut g) => {
            let search_base = g.string("search_base", "")?;
            let search_filter = g.string("search_filter", DEFAULT_GROUP_FILTER)?;
            check_filter(&search_filter).map_err(|m| g.error("search_filter", m))?;
            let mail = g.string("mail", "mail")?;
            let member = g.string("member", "member")?;
            let nested = g.bool("nested", true)?;
            let mode = match g.string("as", "alias")?.as_str() {
                "alias" => GroupMode::Alias,
                "sender_acl" => GroupMode::SenderAcl,
                // mailcow's API has no call that sets IMAP ACLs: refuse rather than pretend.
                "shared" => {
                    return Err(g.error(
                        "as",
                        "\"shared\" cannot be built: mailcow's API cannot grant IMAP ACLs. Share the \
                         mailbox's folders from SOGo or IMAP, and use \"sender_acl\" for sending \
                         (docs/mailcow-api-sender-acl.md)"
                            .to_owned(),
                    ));
                }
                other => {
                    return Err(g.error(
                        "as",
                        format!("`{other}` is not one of \"alias\", \"sender_acl\", \"shared\""),
                    ));
                }
            };
            (!search_base.is_empty()).then_some(GroupsConfig {
                search_base,
                search_filter,
                mail,
                member,
                nested,
                mode,
            })
        }
        None => None,
    })
}

impl SyncConfig {
    fn default_with(_dir: &Path) -> SyncConfig {
        SyncConfig {
            on_removed: OnRemoved::Disable,
            delete_after_days: DEFAULT_DELETE_AFTER_DAYS,
            max_removals: MaxRemovals::Percent(10.0),
            password: PasswordMode::Changed,
            authsource: Authsource::Mailcow,
            tag: Some("ldap-sync".to_owned()),
            adopt: Adopt::Tagged,
            idp_mailboxes: IdpMailboxes::Protect,
            on_address_change: AddressChange::Rename,
            offboard: Offboard::APP_PASSWORDS,
            quota_unit: QuotaUnit::MiB,
            default_quota_mib: None,
            active_format: ActiveFormat::Auto,
            domains: BTreeSet::new(),
            create_domains: None,
            concurrency: DEFAULT_CONCURRENCY as usize,
            metrics_file: None,
            full_every: DEFAULT_FULL_EVERY,
        }
    }
}

/// An hour: an edit in mailcow's UI is put right within the hour, while the passes between
/// cost what changed.
const DEFAULT_FULL_EVERY: Duration = Duration::from_secs(3600);

/// A month: long enough to notice a mistake in LDAP, short enough for a mailbox to go.
const DEFAULT_DELETE_AFTER_DAYS: u64 = 30;

/// Requests in flight while applying. Measured (bench/README.md): against 120 ms per
/// request, 4 gave 3.7× the speed of 1 while keeping a real mailcow's PHP workers and
/// database far from saturation; 8 gave 6.5× against an emulator that has no such limits.
const DEFAULT_CONCURRENCY: u64 = 4;

const DEFAULT_USER_FILTER: &str = "(objectClass=inetOrgPerson)";
const DEFAULT_GROUP_FILTER: &str = "(&(|(objectClass=group)(objectClass=groupOfNames))(mail=*))";

const TOP_KEYS: &[&str] = &[
    "ldap",
    "sources",
    "mailcow_host",
    "mailcow_api_key",
    "mailcow_api_key_file",
    "mailcow_ca_file",
    "mailcow_timeout_secs",
    "state_file",
    "sync",
    "groups",
    "access",
    "templates",
    "domain_admins",
];
const SOURCE_KEYS: &[&str] = &["name", "ldap", "groups", "sync"];
/// The `sync` keys a source may set for its own users.
const SOURCE_SYNC_KEYS: &[&str] = &[
    "on_removed",
    "delete_after_days",
    "on_address_change",
    "max_removals",
    "password",
    "authsource",
    "offboard",
    "quota_unit",
    "default_quota_mib",
    "active_format",
    "domains",
];
const TEMPLATE_RULE_KEYS: &[&str] = &["when", "template"];
const ACCESS_KEYS: &[&str] = &["default", "rules", "member"];
const ACCESS_RULE_KEYS: &[&str] = &["when", "set"];
const CONDITION_KEYS: &[&str] = &["group", "attribute", "value"];
const PROTOCOL_KEYS: &[&str] = &["imap", "pop3", "smtp", "sieve", "sogo", "eas", "dav"];
const LDAP_KEYS: &[&str] = &[
    "uri",
    "starttls",
    "allow_self_signed",
    "ca_file",
    "bind_dn",
    "bind_pw",
    "bind_pw_file",
    "user_search_base",
    "user_search_filter",
    "page_size",
    "incremental",
    "timeout_secs",
    "user_mapping",
];
const MAPPING_KEYS: &[&str] = &[
    "mail",
    "firstname",
    "lastname",
    "password",
    "quota",
    "active",
    "tls_enforce_in",
    "tls_enforce_out",
    "name",
    "uid",
    "aliases",
    "mail_rewrite",
];
const SYNC_KEYS: &[&str] = &[
    "on_removed",
    "delete_after_days",
    "on_address_change",
    "max_removals",
    "password",
    "authsource",
    "tag",
    "adopt",
    "idp_mailboxes",
    "offboard",
    "quota_unit",
    "default_quota_mib",
    "active_format",
    "domains",
    "create_domains",
    "concurrency",
    "metrics_file",
    "full_every",
];
const NEW_DOMAIN_KEYS: &[&str] = &[
    "description",
    "mailboxes",
    "aliases",
    "default_quota_mib",
    "max_quota_mib",
    "quota_mib",
    "active",
];
const DOMAIN_ADMIN_KEYS: &[&str] = &["group", "domains", "member", "username", "password"];
const GROUP_KEYS: &[&str] = &["search_base", "search_filter", "mail", "member", "nested", "as"];

/// `"90s"`, `"30m"`, `"1h"`, `"2d"`, or whole seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit_secs = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(unit_secs).map(Duration::from_secs)
}

/// serde_json appends " at line L column C" to its messages; we say it once, up front.
fn strip_position(msg: &str) -> &str {
    msg.rfind(" at line ").map_or(msg, |i| &msg[..i])
}

/// A light check that catches the usual filter typos (unbalanced parentheses) at load time
/// rather than as a server error mid-pass.
fn check_filter(filter: &str) -> std::result::Result<(), String> {
    let mut depth = 0i32;
    for c in filter.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("`{filter}` has a `)` without its `(`"));
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("`{filter}` has unbalanced parentheses"));
    }
    if !filter.starts_with('(') {
        return Err(format!(
            "`{filter}` must be enclosed in parentheses, e.g. (objectClass=person)"
        ));
    }
    Ok(())
}

/// `mail.example.com` → `https://mail.example.com`; a full URL is kept (without a trailing
/// slash, and without a trailing `/api/v1` that some admins paste in).
fn mailcow_base_url(host: &str) -> std::result::Result<String, String> {
    let host = host.trim();
    if host.is_empty() {
        return Err("is empty; set it to your mailcow host name, e.g. \"mail.example.com\"".into());
    }
    let url = if let Some((scheme, rest)) = host.split_once("://") {
        if scheme != "https" && scheme != "http" {
            return Err(format!("`{host}`: only https:// (or http://) URLs are possible"));
        }
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("`{host}` has no host name"));
        }
        host.to_owned()
    } else {
        if host.contains('/') || host.contains(' ') {
            return Err(format!("`{host}` is neither a host name nor a URL"));
        }
        format!("https://{host}")
    };
    // Admins paste `…/api/v1/` too; strip it (and slashes) until nothing changes.
    let mut url = url.as_str();
    loop {
        let next = url.trim_end_matches('/');
        let next = next.strip_suffix("/api/v1").unwrap_or(next);
        if next == url {
            return Ok(url.to_owned());
        }
        url = next;
    }
}

/// One JSON object of the config being walked: knows its key path, rejects unknown keys.
#[derive(Clone)]
struct Section<'a> {
    file: &'a Path,
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Section<'a> {
    fn new(file: &'a Path, path: &str, map: &'a Map<String, Value>, known: &[&str]) -> Result<Section<'a>> {
        let section = Section {
            file,
            path: path.to_owned(),
            map,
        };
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                let hint = closest(key, known)
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                return Err(Error::config(
                    file,
                    Some(&section.key_path(key)),
                    format!("unknown key{hint}; known keys here: {}", known.join(", ")),
                ));
            }
        }
        Ok(section)
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn error(&self, key: &str, message: impl Into<String>) -> Error {
        Error::config(self.file, Some(&self.key_path(key)), message)
    }

    fn missing(&self, key: &str) -> Error {
        self.error(key, "is missing")
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &Value) -> Error {
        self.error(key, format!("expected {expected}, found {}", describe(found)))
    }

    /// The value, or `None` when absent or `null`.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn section(&self, key: &str, known: &[&str]) -> Result<Option<Section<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Section::new(self.file, &self.key_path(key), map, known).map(Some),
            Some(other) => Err(self.wrong_type(key, "an object { … }", other)),
        }
    }

    fn string(&mut self, key: &str, default: &str) -> Result<String> {
        match self.get(key) {
            None => Ok(default.to_owned()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.wrong_type(key, "a string", other)),
        }
    }

    /// A string where `""` means "not set".
    fn opt_string(&mut self, key: &str) -> Result<Option<String>> {
        let s = self.string(key, "")?;
        Ok((!s.trim().is_empty()).then(|| s.trim().to_owned()))
    }

    /// Absent → `default`; `""` → not set.
    fn opt_string_default(&mut self, key: &str, default: &str) -> Result<Option<String>> {
        if self.get(key).is_none() {
            return Ok(Some(default.to_owned()));
        }
        self.opt_string(key)
    }

    fn bool(&mut self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.wrong_type(key, "true or false", other)),
        }
    }

    fn uint(&mut self, key: &str, default: u64, min: u64, max: u64) -> Result<u64> {
        Ok(self.opt_uint(key, min, max)?.unwrap_or(default))
    }

    fn opt_uint(&mut self, key: &str, min: u64, max: u64) -> Result<Option<u64>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let expected = format!("a whole number from {min} to {max}");
        let n = value.as_u64().ok_or_else(|| self.wrong_type(key, &expected, value))?;
        if n < min || n > max {
            return Err(self.error(key, format!("{n} is out of range: expected {expected}")));
        }
        Ok(Some(n))
    }

    fn path(&mut self, key: &str, dir: &Path) -> Result<Option<PathBuf>> {
        Ok(self.opt_string(key)?.map(|p| dir.join(p)))
    }

    fn choice<T: Copy>(&mut self, key: &str, default: &str, choices: &[(&str, T)]) -> Result<T> {
        let value = self.string(key, default)?;
        choices
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                self.error(key, format!("`{value}` is not one of {}", names.join(", ")))
            })
    }

    /// A duration such as `"1h"`, `"30m"`, `"2d"`, `"90s"` (a bare number is seconds).
    fn duration(&mut self, key: &str, default: Duration) -> Result<Duration> {
        let expected = "a duration such as \"1h\", \"30m\", \"1d\" or \"90s\"";
        let text = match self.get(key) {
            None => return Ok(default),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(secs) => return Ok(Duration::from_secs(secs)),
                None => return Err(self.wrong_type(key, expected, &Value::Number(n.clone()))),
            },
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(other) => return Err(self.wrong_type(key, expected, other)),
        };
        parse_duration(&text).ok_or_else(|| self.error(key, format!("`{text}` is not {expected}")))
    }

    fn max_removals(&mut self, key: &str) -> Result<MaxRemovals> {
        let expected = "a number of mailboxes (10) or a percentage (\"10%\")";
        match self.get(key) {
            None => Ok(MaxRemovals::Percent(10.0)),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(MaxRemovals::Count)
                .ok_or_else(|| self.wrong_type(key, expected, &Value::Number(n.clone()))),
            Some(Value::String(s)) => {
                let s = s.trim();
                let parsed = match s.strip_suffix('%') {
                    Some(p) => p
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|p| (0.0..=100.0).contains(p))
                        .map(MaxRemovals::Percent),
                    None => s.parse::<u64>().ok().map(MaxRemovals::Count),
                };
                parsed
                    .ok_or_else(|| self.error(key, format!("`{s}` is not {expected}; percentages go from 0% to 100%")))
            }
            Some(other) => Err(self.wrong_type(key, expected, other)),
        }
    }

    /// A list of `"app_passwords"` and `"eas"`; absent = `["app_passwords"]`, `[]` = nothing.
    fn offboard(&mut self, key: &str) -> Result<Offboard> {
        let expected = "a list of \"app_passwords\", \"eas\" ([] = none)";
        match self.get(key) {
            None => Ok(Offboard::APP_PASSWORDS),
            Some(Value::Array(items)) => {
                let mut offboard = Offboard::default();
                for item in items {
                    match item.as_str() {
                        Some("app_passwords") => offboard.app_passwords = true,
                        Some("eas") => offboard.eas = true,
                        Some(other) => {
                            return Err(self.error(key, format!("`{other}` is not one of \"app_passwords\", \"eas\"")));
                        }
                        None => return Err(self.wrong_type(key, expected, item)),
                    }
                }
                Ok(offboard)
            }
            Some(other) => Err(self.wrong_type(key, expected, other)),
        }
    }

    /// `{"@corp.local": "@example.org"}`: each side `@` and a domain an address may have;
    /// lowercased. A key given twice in other letter case is an error, as any key twice.
    fn mail_rewrite(&mut self, key: &str) -> Result<MailRewrite> {
        let expected = "an object {\"@old.domain\": \"@new.domain\"}";
        let map = match self.get(key) {
            None => return Ok(MailRewrite::default()),
            Some(Value::Object(map)) => map,
            Some(other) => return Err(self.wrong_type(key, expected, other)),
        };
        let path = self.key_path(key);
        let side = |text: &str, what: &str| -> std::result::Result<String, String> {
            let text = text.trim().to_ascii_lowercase();
            let Some(domain) = text.strip_prefix('@') else {
                return Err(format!(
                    "{what} `{text}` must start with '@' (\"@corp.local\": \"@example.org\")"
                ));
            };
            if domain.is_empty() {
                return Err(format!("{what} `{text}` has no domain after the '@'"));
            }
            crate::core::directory::normalize_mail(&format!("x{text}"))
                .map_err(|e| format!("{what} `{text}`: an address with it {e}"))?;
            Ok(text)
        };
        let mut rewrite = MailRewrite::default();
        for (from, to) in map {
            let error = |m: String| Error::config(self.file, Some(&format!("{path}.{from}")), m);
            let from_domain = side(from, "key").map_err(error)?;
            let Value::String(to) = to else {
                return Err(error(format!(
                    "expected a string \"@new.domain\", found {}",
                    describe(to)
                )));
            };
            let to_domain = side(to, "target").map_err(error)?;
            if rewrite.0.insert(from_domain.clone(), to_domain).is_some() {
                return Err(error(format!(
                    "`{from_domain}` is given twice (keys ignore letter case)"
                )));
            }
        }
        Ok(rewrite)
    }

    /// `access`: `{"default": {flag: bool…}, "rules": [{"when": …, "set": {flag: bool…}}…],
    /// "member": "member"}`. The keys of `default` are the managed flags; a rule may set
    /// only those.
    fn access(&mut self, key: &str) -> Result<Option<AccessRules>> {
        let Some(mut a) = self.section(key, ACCESS_KEYS)? else {
            return Ok(None);
        };
        let (managed, default) = match a.section("default", PROTOCOL_KEYS)? {
            Some(d) => d.flags()?,
            None => {
                return Err(a.error(
                    "default",
                    "is missing: name the managed flags and their values, e.g. {\"pop3\": true}",
                ));
            }
        };
        if managed == 0 {
            return Err(a.error(
                "default",
                "names no flag; known flags: imap, pop3, smtp, sieve, sogo, eas, dav",
            ));
        }
        let member = a.string("member", "member")?;
        if member.trim().is_empty() {
            return Err(a.error("member", "is empty"));
        }
        let mut rules = Vec::new();
        match a.get("rules") {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{}.rules[{i}]", a.path);
                    let Value::Object(map) = item else {
                        return Err(Error::config(
                            a.file,
                            Some(&path),
                            format!(
                                "expected an object {{\"when\": …, \"set\": …}}, found {}",
                                describe(item)
                            ),
                        ));
                    };
                    let rule = Section::new(a.file, &path, map, ACCESS_RULE_KEYS)?;
                    let when = rule
                        .section("when", CONDITION_KEYS)?
                        .ok_or_else(|| rule.missing("when"))?;
                    let when = when.condition()?;
                    let (mask, value) = rule
                        .section("set", PROTOCOL_KEYS)?
                        .ok_or_else(|| rule.missing("set"))?
                        .flags()?;
                    if let Some(p) = Protocol::ALL.into_iter().find(|p| mask & p.bit() & !managed != 0) {
                        return Err(rule.error(
                            "set",
                            format!(
                                "sets `{}`, which access.default does not name (only flags in default are managed)",
                                p.name()
                            ),
                        ));
                    }
                    rules.push(AccessRule { when, mask, value });
                }
            }
            Some(other) => return Err(a.wrong_type("rules", "an array [ … ]", other)),
        }
        Ok(Some(AccessRules {
            managed,
            default,
            rules,
            member: member.trim().to_owned(),
        }))
    }

    /// `templates`: `[{"when": {"group": DN} | {"attribute": A, "value": V}, "template": NAME}…,
    /// {"when": "default", "template": NAME}]`; the default, if any, comes last.
    fn templates(&mut self, key: &str) -> Result<Option<TemplateRules>> {
        let items = match self.get(key) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(self.wrong_type(key, "an array [ {\"when\": …, \"template\": …} … ]", other)),
        };
        let mut rules = TemplateRules::default();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", self.key_path(key));
            let Value::Object(map) = item else {
                return Err(Error::config(
                    self.file,
                    Some(&path),
                    format!(
                        "expected an object {{\"when\": …, \"template\": …}}, found {}",
                        describe(item)
                    ),
                ));
            };
            let mut rule = Section::new(self.file, &path, map, TEMPLATE_RULE_KEYS)?;
            let name = rule.string("template", "")?.trim().to_owned();
            if name.is_empty() {
                return Err(rule.error(
                    "template",
                    "is missing or empty: the name of a mailbox template in mailcow",
                ));
            }
            let index = match rules.names.iter().position(|n| *n == name) {
                Some(at) => at,
                None if rules.names.len() == MAX_TEMPLATES => {
                    return Err(rule.error("template", format!("more than {MAX_TEMPLATES} distinct templates")));
                }
                None => {
                    rules.names.push(name);
                    rules.names.len() - 1
                }
            } as u8;
            if rules.default.is_some() {
                return Err(rule.error("when", "follows the \"default\" rule, which must come last"));
            }
            match rule.get("when") {
                Some(Value::String(s)) if s == "default" => rules.default = Some(index),
                Some(Value::Object(_)) => {
                    let when = rule
                        .section("when", CONDITION_KEYS)?
                        .ok_or_else(|| rule.missing("when"))?;
                    rules.rules.push((when.condition()?, index));
                }
                None => return Err(rule.missing("when")),
                Some(other) => {
                    return Err(rule.wrong_type(
                        "when",
                        "{\"group\": DN}, {\"attribute\": A, \"value\": V} or \"default\"",
                        other,
                    ));
                }
            }
        }
        Ok(Some(rules))
    }

    /// An object of protocol flags → (the flags named, those set to true).
    fn flags(&self) -> Result<(u8, u8)> {
        let (mut named, mut on) = (0, 0);
        for (name, value) in self.map {
            let Some(p) = Protocol::by_name(name) else { continue };
            match value {
                Value::Bool(b) => {
                    named |= p.bit();
                    if *b {
                        on |= p.bit();
                    }
                }
                other => return Err(self.wrong_type(name, "true or false", other)),
            }
        }
        Ok((named, on))
    }

    /// `{"group": DN}` or `{"attribute": A, "value": V}`.
    fn condition(&self) -> Result<Condition> {
        let text = |key: &str| -> Result<Option<String>> {
            match self.get(key) {
                None => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
                Some(Value::String(_)) => Err(self.error(key, "is empty")),
                Some(other) => Err(self.wrong_type(key, "a string", other)),
            }
        };
        match (text("group")?, text("attribute")?, text("value")?) {
            (Some(dn), None, None) => Ok(Condition::Group(crate::core::directory::normalize_dn(&dn))),
            (None, Some(name), Some(value)) => Ok(Condition::Attribute {
                name: name.to_ascii_lowercase(),
                value,
            }),
            (None, Some(_), None) => Err(self.missing("value")),
            (None, None, Some(_)) => Err(self.missing("attribute")),
            (Some(_), _, _) => Err(self.error(
                "group",
                "cannot be combined with attribute/value: one condition per rule",
            )),
            (None, None, None) => Err(Error::config(
                self.file,
                Some(&self.path),
                "needs {\"group\": DN} or {\"attribute\": A, \"value\": V}",
            )),
        }
    }

    /// `false` (off), `true` (the defaults of [`NewDomain`]) or an object overriding them.
    /// The checks `add/domain` makes (docs/mailcow-api-domains.md) are made here, so that a
    /// value mailcow would refuse is a config error rather than a failure per domain.
    fn create_domains(&mut self, key: &str) -> Result<Option<NewDomain>> {
        match self.get(key) {
            None | Some(Value::Bool(false)) => return Ok(None),
            Some(Value::Bool(true)) => return Ok(Some(NewDomain::default())),
            Some(Value::Object(_)) => {}
            Some(other) => return Err(self.wrong_type(key, "true, false or an object { … }", other)),
        }
        let Some(mut d) = self.section(key, NEW_DOMAIN_KEYS)? else {
            return Ok(None);
        };
        // mailcow's columns: `mailboxes`/`aliases` INT(10), the quotas BIGINT MiB.
        const INT_MAX: u64 = i32::MAX as u64;
        let description = d
            .string("description", NewDomain::DEFAULT_DESCRIPTION)?
            .trim()
            .to_owned();
        let mailboxes = d.uint("mailboxes", NewDomain::DEFAULT_MAILBOXES, 1, INT_MAX)?;
        let aliases = d.uint("aliases", NewDomain::DEFAULT_ALIASES, 0, INT_MAX)?;
        let default_quota_mib = d.uint("default_quota_mib", NewDomain::DEFAULT_QUOTA_MIB, 1, MAX_QUOTA_MIB)?;
        let max_quota_mib = d.uint("max_quota_mib", NewDomain::DEFAULT_MAX_QUOTA_MIB, 1, MAX_QUOTA_MIB)?;
        if default_quota_mib > max_quota_mib {
            return Err(d.error(
                "default_quota_mib",
                format!("{default_quota_mib} is above max_quota_mib {max_quota_mib} (mailcow refuses that)"),
            ));
        }
        let quota_mib = d.uint(
            "quota_mib",
            NewDomain::default_domain_quota(mailboxes, max_quota_mib),
            1,
            NewDomain::MAX_DOMAIN_QUOTA_MIB,
        )?;
        if max_quota_mib > quota_mib {
            return Err(d.error(
                "quota_mib",
                format!("{quota_mib} is below max_quota_mib {max_quota_mib} (mailcow refuses that)"),
            ));
        }
        let active = d.bool("active", true)?;
        Ok(Some(NewDomain {
            description,
            mailboxes,
            aliases,
            default_quota_mib,
            max_quota_mib,
            quota_mib,
            active,
        }))
    }

    fn domains(&mut self, key: &str) -> Result<BTreeSet<String>> {
        match self.get(key) {
            None => Ok(BTreeSet::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(d) if d.contains('.') && !d.contains('@') => Ok(d.trim().to_ascii_lowercase()),
                    Value::String(d) => Err(self.error(key, format!("`{d}` is not a domain name"))),
                    other => Err(self.wrong_type(key, "a list of domain names", other)),
                })
                .collect(),
            Some(other) => Err(self.wrong_type(key, "a list of domain names [\"example.org\"]", other)),
        }
    }

    /// A secret from the environment, else `<file_key>`, else `<key>`; both keys set is an error.
    fn secret(&mut self, key: &str, file_key: &str, dir: &Path, env: Option<Secret>) -> Result<Secret> {
        let inline = self.string(key, "")?;
        let file = self.path(file_key, dir)?;
        if !inline.is_empty() && file.is_some() {
            return Err(self.error(
                file_key,
                format!(
                    "set either {} or {}, not both",
                    self.key_path(key),
                    self.key_path(file_key)
                ),
            ));
        }
        if let Some(env) = env {
            return Ok(env);
        }
        if let Some(file) = file {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| self.error(file_key, format!("cannot read {}: {e}", file.display())))?;
            return Ok(Secret::new(text.trim_end_matches(['\n', '\r'])));
        }
        Ok(Secret::new(inline))
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The known key nearest to a typo, if it is near enough to be a useful hint.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_location_flag_then_env_then_local_then_system() {
        let here = |exists: bool| move |p: &Path| exists && p == Path::new(LOCAL_CONFIG);
        let flag = Path::new("/x/flag.json");
        let at = |l: ConfigLocation| (l.path, l.is_default);
        let resolve = ConfigLocation::resolve_with;
        assert_eq!(
            at(resolve(Some(flag), Some("/x/env.json".into()), here(true))),
            (flag.to_owned(), false)
        );
        assert_eq!(
            at(resolve(None, Some("/x/env.json".into()), here(true))),
            (PathBuf::from("/x/env.json"), false)
        );
        // An empty variable is no variable.
        assert_eq!(
            at(resolve(None, Some(String::new()), here(true))),
            (PathBuf::from("config.json"), true)
        );
        assert_eq!(
            at(resolve(None, None, here(false))),
            (PathBuf::from("/etc/mailcow-ldap-sync/config.json"), true)
        );
    }

    fn parse_str(text: &str) -> Result<Config> {
        parse(Path::new("/etc/mls/config.json"), text, &EnvSecrets::default())
    }

    fn err(text: &str) -> String {
        parse_str(text).unwrap_err().to_string()
    }

    #[test]
    fn access_is_rules_on_the_flags_of_its_default_and_names_the_key_on_errors() {
        let base = |access: &str| {
            format!(
                r#"{{"ldap":{{"uri":"ldap://l","user_mapping":{{"mail":"mail"}}}},"mailcow_host":"m","access":{access}}}"#
            )
        };
        assert!(
            parse_str(r#"{"ldap":{"uri":"ldap://l","user_mapping":{"mail":"mail"}},"mailcow_host":"m"}"#)
                .unwrap()
                .access
                .is_none()
        );
        let config = parse_str(&base(
            r#"{"default":{"pop3":true,"eas":false},"rules":[
                {"when":{"group":"CN=No POP, ou=Groups,dc=x"},"set":{"pop3":false}},
                {"when":{"attribute":"employeeType","value":"mobile"},"set":{"eas":true}}]}"#,
        ))
        .unwrap();
        let access = config.access.unwrap();
        assert_eq!(access.managed, Protocol::Pop3.bit() | Protocol::Eas.bit());
        assert_eq!(access.default, Protocol::Pop3.bit());
        assert_eq!(access.member, "member");
        assert_eq!(
            access.rules[0].when,
            Condition::Group("cn=no pop,ou=groups,dc=x".into())
        );
        assert_eq!((access.rules[0].mask, access.rules[0].value), (Protocol::Pop3.bit(), 0));
        assert_eq!(
            access.rules[1].when,
            Condition::Attribute {
                name: "employeetype".into(),
                value: "mobile".into()
            }
        );
        for (access, expected) in [
            (r#"{"rules":[]}"#, "access.default: is missing"),
            (r#"{"default":{}}"#, "access.default: names no flag"),
            (
                r#"{"default":{"imap":1}}"#,
                "access.default.imap: expected true or false",
            ),
            (
                r#"{"default":{"imapp":true}}"#,
                "access.default.imapp: unknown key (did you mean `imap`?)",
            ),
            (r#"{"default":{"imap":true},"rule":[]}"#, "access.rule: unknown key"),
            (
                r#"{"default":{"imap":true},"rules":[{"when":{"group":"cn=g"},"set":{"pop3":false}}]}"#,
                "access.rules[0].set: sets `pop3`, which access.default does not name",
            ),
            (
                r#"{"default":{"imap":true},"rules":[{"when":{"attribute":"a"},"set":{}}]}"#,
                "access.rules[0].when.value: is missing",
            ),
            (
                r#"{"default":{"imap":true},"rules":[{"when":{"group":"cn=g","attribute":"a","value":"v"},"set":{}}]}"#,
                "access.rules[0].when.group: cannot be combined",
            ),
            (
                r#"{"default":{"imap":true},"rules":[{"when":{"grp":"cn=g"},"set":{}}]}"#,
                "access.rules[0].when.grp: unknown key",
            ),
            (
                r#"{"default":{"imap":true},"rules":[{"set":{}}]}"#,
                "access.rules[0].when: is missing",
            ),
            (
                r#"{"default":{"imap":true},"rules":{}}"#,
                "access.rules: expected an array",
            ),
        ] {
            let e = err(&base(access));
            assert!(e.contains(expected), "{access}: {e}");
        }
    }

    #[test]
    fn sources_list_directories_with_their_own_sync_keys_and_named_errors() {
        let ldap = |host: &str| format!(r#"{{"uri":"ldap://{host}","user_mapping":{{"mail":"mail"}}}}"#);
        let config = parse_str(&format!(
            r#"{{"sources":[{{"name":"hq","ldap":{}}},{{"name":"branch-2","ldap":{},"sync":{{"on_removed":"keep","domains":["b.example"]}}}}],
                "mailcow_host":"m","sync":{{"on_removed":"disallow_login","tag":"t"}}}}"#,
            ldap("a"),
            ldap("b")
        ))
        .unwrap();
        assert!(config.several_sources());
        assert_eq!(config.ldap.uri, "ldap://a", "the first source is the config's ldap");
        let branch = config.for_source(1);
        assert_eq!(branch.ldap.uri, "ldap://b");
        assert_eq!(branch.sync.on_removed, OnRemoved::Keep, "the source's own key");
        assert_eq!(
            config.sync.on_removed,
            OnRemoved::DisallowLogin,
            "the top level's elsewhere"
        );
        assert_eq!(
            branch.sync.tag.as_deref(),
            Some("t"),
            "keys it does not set come from the top level"
        );
        assert!(branch.sync.domains.contains("b.example") && config.sync.domains.is_empty());

        let one = |source: &str| format!(r#"{{"sources":[{source}],"mailcow_host":"m"}}"#);
        let two = |a: &str, b: &str| format!(r#"{{"sources":[{a},{b}],"mailcow_host":"m"}}"#);
        let named = |name: &str, extra: &str| format!(r#"{{"name":"{name}","ldap":{}{extra}}}"#, ldap("a"));
        let e = err(&format!(r#"{{"ldap":{},"sources":[],"mailcow_host":"m"}}"#, ldap("a")));
        assert!(e.contains("sources") && e.contains("not both"), "{e}");
        let e = err(r#"{"sources":[],"mailcow_host":"m"}"#);
        assert!(e.contains("sources") && e.contains("is empty"), "{e}");
        let e = err(&one(&named("", "")));
        assert!(e.contains("sources[0].name") && e.contains("1 to 64"), "{e}");
        let e = err(&two(&named("x", ""), &named("x", "")));
        assert!(
            e.contains("sources[1].name") && e.contains("already the name of sources[0]"),
            "{e}"
        );
        let e = err(&one(&named("x", r#","sync":{"tag":"other"}"#)));
        assert!(
            e.contains("sources[0].sync.tag") && e.contains("cannot differ between sources"),
            "{e}"
        );
        let e = err(&one(&named("x", r#","sync":{"on_remove":"keep"}"#)));
        assert!(
            e.contains("sources[0].sync.on_remove") && e.contains("did you mean `on_removed`"),
            "{e}"
        );
        let e = err(&one(&named("x", r#","sync":{"on_removed":"maybe"}"#)));
        assert!(e.contains("sources[0].sync.on_removed"), "{e}");
        let e = err(&one(
            r#"{"name":"x","ldap":{"uri":"ftp://a","user_mapping":{"mail":"mail"}}}"#,
        ));
        assert!(e.contains("sources[0].ldap.uri"), "{e}");
        let e = err(&format!(
            r#"{{"sources":[{}],"groups":{{"search_base":"ou=g"}},"mailcow_host":"m"}}"#,
            named("x", "")
        ));
        assert!(e.contains("groups") && e.contains("its own `groups`"), "{e}");
        // One source may be incremental; two may not.
        let incremental =
            r#"{"name":"x","ldap":{"uri":"ldap://a","incremental":"auto","user_mapping":{"mail":"mail"}}}"#.to_string();
        assert!(parse_str(&one(&incremental)).is_ok());
        let e = err(&two(&named("y", ""), &incremental));
        assert!(
            e.contains("sources[1].ldap.incremental") && e.contains("every pass is full"),
            "{e}"
        );
        let groups = two(&named("y", r#","groups":{"search_base":"ou=g"}"#), &named("z", ""));
        let config = parse_str(&groups).unwrap();
        assert!(config.sources[0].groups.is_some() && config.sources[1].groups.is_none());
        let send_as = r#","groups":{"search_base":"ou=g","as":"sender_acl"}"#;
        let config = parse_str(&two(&named("y", ""), &named("z", send_as))).unwrap();
        assert!(
            config.groups_send_as() && config.groups.is_none(),
            "the second source's mode counts"
        );
        let e = err(&two(
            &named("y", send_as),
            &named("z", r#","groups":{"search_base":"ou=h"}"#),
        ));
        assert!(
            e.contains("sources[1].groups.as") && e.contains("differs from the first source"),
            "{e}"
        );
    }

    #[test]
    fn each_source_gets_its_own_security_warnings() {
        let config = parse_str(
            r#"{"sources":[{"name":"a","ldap":{"uri":"ldap://a","user_mapping":{"mail":"mail"}}},
                {"name":"b","ldap":{"uri":"ldaps://b","allow_self_signed":true,"user_mapping":{"mail":"mail"}}}],
                "mailcow_host":"m"}"#,
        )
        .unwrap();
        let warnings = config.security_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("sources[1].ldap.allow_self_signed is true")
                && warnings[0].contains("set sources[1].ldap.ca_file"),
            "{warnings:?}"
        );
    }

    #[test]
    fn incremental_and_full_every_are_read_with_defaults_and_named_errors() {
        let base = |ldap_extra: &str, sync: &str| {
            format!(
                r#"{{"ldap":{{"uri":"ldap://l"{ldap_extra},"user_mapping":{{"mail":"mail"}}}},"mailcow_host":"m"{sync}}}"#
            )
        };
        let config = parse_str(&base("", "")).unwrap();
        assert_eq!(config.ldap.incremental, Incremental::Off);
        assert_eq!(config.sync.full_every, Duration::from_secs(3600));
        let config = parse_str(&base(r#","incremental":"syncrepl""#, r#","sync":{"full_every":"30m"}"#)).unwrap();
        assert_eq!(config.ldap.incremental, Incremental::Syncrepl);
        assert_eq!(config.sync.full_every, Duration::from_secs(1800));
        let config = parse_str(&base(r#","incremental":"usn""#, r#","sync":{"full_every":"2d"}"#)).unwrap();
        assert_eq!(config.ldap.incremental, Incremental::Usn);
        assert_eq!(config.sync.full_every, Duration::from_secs(2 * 86_400));
        let e = err(&base(r#","incremental":"yes""#, ""));
        assert!(e.contains("ldap.incremental: `yes` is not one of \"off\""), "{e}");
        let e = err(&base("", r#","sync":{"full_every":"1 week"}"#));
        assert!(e.contains("sync.full_every: `1 week` is not a duration"), "{e}");
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("h"), None);
    }

    #[test]
    fn original_generated_config_loads_unchanged() {
        let text = include_str!("../tests/data/config.generated-by-original.json");
        let config = parse_str(text).unwrap();
        assert_eq!(config.ldap.search_filter, DEFAULT_USER_FILTER);
        assert_eq!(config.ldap.mapping.quota.as_deref(), Some("MailQuota"));
        assert_eq!(config.ldap.mapping.active, None);
        assert_eq!(config.mailcow.base_url, "https://mail.example.com");
        assert_eq!(config.state_file, PathBuf::from("/etc/mls/mailcow.sqlite3"));
        assert_eq!(config.sync.on_removed, OnRemoved::Disable);
        // The key is new: absent, the default revokes app passwords.
        assert_eq!(config.sync.offboard, Offboard::APP_PASSWORDS);
    }

    #[test]
    fn offboard_parses_its_list_and_names_the_key_on_errors() {
        let with = |v: &str| {
            parse_str(&format!(
                r#"{{"ldap":{{"uri":"ldap://l","user_mapping":{{"mail":"mail"}}}},"mailcow_host":"m","sync":{{"offboard":{v}}}}}"#
            ))
        };
        assert_eq!(with("[]").unwrap().sync.offboard, Offboard::default());
        assert_eq!(with("null").unwrap().sync.offboard, Offboard::APP_PASSWORDS);
        assert_eq!(
            with(r#"["eas"]"#).unwrap().sync.offboard,
            Offboard {
                app_passwords: false,
                eas: true
            }
        );
        assert_eq!(
            with(r#"["app_passwords","eas"]"#).unwrap().sync.offboard,
            Offboard {
                app_passwords: true,
                eas: true
            }
        );
        let e = with(r#"["app_passwords","sogo"]"#).unwrap_err().to_string();
        assert!(e.contains("sync.offboard: `sogo` is not one of"), "{e}");
        let e = with(r#""app_passwords""#).unwrap_err().to_string();
        assert!(e.contains("sync.offboard: expected a list"), "{e}");
        let e = with("[1]").unwrap_err().to_string();
        assert!(e.contains("sync.offboard: expected a list"), "{e}");
    }

    #[test]
    fn mail_rewrite_is_a_map_of_domains_and_names_the_key_on_errors() {
        let with = |v: &str| {
            parse_str(&format!(
                r#"{{"ldap":{{"uri":"ldap://l","user_mapping":{{"mail":"mail","mail_rewrite":{v}}}}},"mailcow_host":"m"}}"#
            ))
        };
        let c = with(r#"{"@Corp.Local": " @Example.org", "@old.example": "@example.net"}"#).unwrap();
        let got: Vec<(&str, &str)> = c
            .ldap
            .mapping
            .mail_rewrite
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, [("@corp.local", "@example.org"), ("@old.example", "@example.net")]);
        assert!(with("{}").unwrap().ldap.mapping.mail_rewrite.is_empty());
        assert!(with("null").unwrap().ldap.mapping.mail_rewrite.is_empty());
        let err = |v: &str| with(v).unwrap_err().to_string();
        let e = err(r#"{"corp.local": "@example.org"}"#);
        assert!(
            e.contains("ldap.user_mapping.mail_rewrite.corp.local: key `corp.local` must start with '@'"),
            "{e}"
        );
        let e = err(r#"{"@corp.local": ""}"#);
        assert!(
            e.contains("ldap.user_mapping.mail_rewrite.@corp.local: target `` must start with '@'"),
            "{e}"
        );
        let e = err(r#"{"@corp.local": "@"}"#);
        assert!(e.contains("mail_rewrite.@corp.local: target `@` has no domain"), "{e}");
        let e = err(r#"{"@corp.local": "@exa mple.org"}"#);
        assert!(
            e.contains("mail_rewrite.@corp.local: target `@exa mple.org`: an address with it"),
            "{e}"
        );
        let e = err(r#"{"@corp.local": 1}"#);
        assert!(e.contains("mail_rewrite.@corp.local: expected a string"), "{e}");
        let e = err(r#"{"@corp.local": "@a.org", "@CORP.local": "@b.org"}"#);
        assert!(e.contains("is given twice"), "{e}");
        let e = err(r#"["@corp.local"]"#);
        assert!(e.contains("ldap.user_mapping.mail_rewrite: expected an object"), "{e}");
    }

    #[test]
    fn create_domains_is_a_switch_or_the_values_of_new_domains() {
        let with = |v: &str| {
            parse_str(&format!(
                r#"{{"ldap":{{"uri":"ldap://l","user_mapping":{{"mail":"mail"}}}},"mailcow_host":"m","sync":{{"create_domains":{v}}}}}"#
            ))
        };
        assert_eq!(with("false").unwrap().sync.create_domains, None);
        assert_eq!(with("null").unwrap().sync.create_domains, None);
        let d = with("true").unwrap().sync.create_domains.unwrap();
        assert_eq!(d, NewDomain::default());
        assert_eq!(
            (
                d.mailboxes,
                d.aliases,
                d.default_quota_mib,
                d.max_quota_mib,
                d.quota_mib,
                d.active
            ),
            (1000, 4000, 3072, 10240, 10_240_000, true)
        );
        let d = with(r#"{"mailboxes": 50, "max_quota_mib": 2048, "default_quota_mib": 1024, "description": "Corp", "active": false}"#)
            .unwrap()
            .sync
            .create_domains
            .unwrap();
        assert_eq!(
            (d.mailboxes, d.quota_mib, d.active, d.description.as_str()),
            (50, 50 * 2048, false, "Corp")
        );
        assert_eq!(with("{}").unwrap().sync.create_domains, Some(NewDomain::default()));
        let err = |v: &str| with(v).unwrap_err().to_string();
        let e = err(r#"{"mailbox": 5}"#);
        assert!(
            e.contains("sync.create_domains.mailbox: unknown key (did you mean `mailboxes`?)"),
            "{e}"
        );
        let e = err(r#"{"mailboxes": 0}"#);
        assert!(e.contains("sync.create_domains.mailboxes: 0 is out of range"), "{e}");
        let e = err(r#"{"default_quota_mib": 4096, "max_quota_mib": 2048}"#);
        assert!(
            e.contains("sync.create_domains.default_quota_mib: 4096 is above max_quota_mib 2048"),
            "{e}"
        );
        let e = err(r#"{"quota_mib": 1024}"#);
        assert!(
            e.contains("sync.create_domains.quota_mib: 1024 is below max_quota_mib 10240"),
            "{e}"
        );
        let e = err(r#""yes""#);
        assert!(
            e.contains("sync.create_domains: expected true, false or an object"),
            "{e}"
        );
    }

    #[test]
    fn template_loads_with_documented_defaults() {
        // The template names a bind DN, so it needs the password from somewhere.
        let env = EnvSecrets {
            ldap_bind_pw: Some(Secret::new("pw")),
            mailcow_api_key: None,
        };
        let config = parse(Path::new("/etc/mls/config.json"), TEMPLATE, &env).unwrap();
        assert_eq!(config.ldap.page_size, 500);
        assert_eq!(config.ldap.timeout, Duration::from_secs(30));
        assert_eq!(config.sync.max_removals, MaxRemovals::Percent(10.0));
        assert_eq!(config.sync.tag.as_deref(), Some("ldap-sync"));
        assert_eq!(config.sync.concurrency, 4);
        assert_eq!(config.sync.offboard, Offboard::APP_PASSWORDS);
        assert_eq!(config.sync.create_domains, None);
        assert!(config.ldap.mapping.mail_rewrite.is_empty());
        assert!(config.groups.is_none());
    }

    #[test]
    fn unknown_key_names_full_path_and_suggests() {
        let e = err(r#"{"ldap":{"uri":"ldap://l","user_maping":{}},"mailcow_host":"m"}"#);
        assert!(
            e.contains("ldap.user_maping: unknown key (did you mean `user_mapping`?)"),
            "{e}"
        );
        let e = err(r#"{"ldap":{"uri":"ldap://l","user_mapping":{"mail":"mail","quotaa":"q"}},"mailcow_host":"m"}"#);
        assert!(e.contains("ldap.user_mapping.quotaa: unknown key"), "{e}");
    }

    #[test]
    fn malformed_json_gives_line_and_column() {
        let e = err("{\n  \"ldap\": {\n    \"uri\": \"ldap://l\"\n    \"x\": 1\n}");
        assert!(e.contains("invalid JSON at line 4, column 5"), "{e}");
    }

    #[test]
    fn wrong_type_gives_key_and_expected_type() {
        let e =
            err(r#"{"ldap":{"uri":"ldap://l","page_size":"500","user_mapping":{"mail":"mail"}},"mailcow_host":"m"}"#);
        assert!(
            e.contains("ldap.page_size: expected a whole number from 0 to 2147483647, found a string"),
            "{e}"
        );
        let e = err(
            r#"{"ldap":{"uri":"ldap://l","allow_self_signed":"no","user_mapping":{"mail":"mail"}},"mailcow_host":"m"}"#,
        );
        assert!(
            e.contains("ldap.allow_self_signed: expected true or false, found a string"),
            "{e}"
        );
        let e = err(
            r#"{"ldap":{"uri":"ldap://l","user_mapping":{"mail":"mail"}},"mailcow_host":"m","sync":{"on_removed":"purge"}}"#,
        );
        assert!(e.contains("sync.on_removed: `purge` is not one of"), "{e}");
    }

    #[test]
    fn max_removals_number_or_percentage() {
        let c = parse_str(r#"{"ldap":{"uri":"ldap://l","user_mapping":{"mail":"mail"}},"mailcow_host":"m","sync":{"max_removals":25}}"#).unwrap();
        assert_eq!(c.sync.max_removals, MaxRemovals::Count(25));
        let c = parse_str(r#"{"ldap":{"uri":"ldap://l","user_mapping":{"mail":"mail"}},"mailcow_host":"m","sync":{"max_removals":"5%"}}"#).unwrap();
        assert_eq!(c.sync.max_removals, MaxRemovals::Percent(5.0));
        assert_eq!(MaxRemovals::Percent(10.0).allowed(5), 1);
        assert_eq!(MaxRemovals::Percent(10.0).allowed(200), 20);
        let e = err(
            r#"{"ldap":{"uri":"ldap://l","user_mapping":{"mail":"mail"}},"mailcow_host":"m","sync":{"max_removals":"150%"}}"#,
        );
        assert!(e.contains("sync.max_removals"), "{e}");
    }

    #[test]
    fn mailcow_host_forms() {
        assert_eq!(
            mailcow_base_url("mail.example.com").unwrap(),
            "https://mail.example.com"
        );
        assert_eq!(
            mailcow_base_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            mailcow_base_url("https://m.example/api/v1/").unwrap(),
            "https://m.example"
        );
        assert_eq!(
            mailcow_base_url("https://m.example/api/v1//api/v1").unwrap(),
            "https://m.example"
        );
        assert!(mailcow_base_url("ftp://m").is_err());
        assert!(mailcow_base_url("").is_err());
    }

    #[test]
    fn relative_paths_resolve_against_config_dir() {
        let c = parse_str(r#"{"ldap":{"uri":"ldaps://l","ca_file":"ca.pem","user_mapping":{"mail":"mail"}},"mailcow_host":"m","state_file":"db/state.sqlite3","mailcow_ca_file":"/abs/ca.pem"}"#).unwrap();
        assert_eq!(c.ldap.ca_file, Some(PathBuf::from("/etc/mls/ca.pem")));
        assert_eq!(c.state_file, PathBuf::from("/etc/mls/db/state.sqlite3"));
        assert_eq!(c.mailcow.ca_file, Some(PathBuf::from("/abs/ca.pem")));
        assert_eq!(c.ldap.tls, LdapTls::Ldaps);
    }

    #[test]
    fn env_secret_wins_and_both_keys_is_an_error() {
        let env = EnvSecrets {
            ldap_bind_pw: Some(Secret::new("from-env")),
            mailcow_api_key: None,
        };
        let c = parse(Path::new("c.json"), r#"{"ldap":{"uri":"ldap://l","bind_pw":"inline","user_mapping":{"mail":"mail"}},"mailcow_host":"m","mailcow_api_key":"K"}"#, &env).unwrap();
        assert_eq!(c.ldap.bind_pw.expose(), "from-env");
        assert_eq!(c.mailcow.api_key.expose(), "K");
        let e = err(
            r#"{"ldap":{"uri":"ldap://l","bind_pw":"x","bind_pw_file":"pw","user_mapping":{"mail":"mail"}},"mailcow_host":"m"}"#,
        );
        assert!(
            e.contains("ldap.bind_pw_file: set either ldap.bind_pw or ldap.bind_pw_file"),
            "{e}"
        );
    }

    #[test]
    fn idp_mailboxes_and_domain_admins() {
        let base = r#"{"ldap":{"uri":"ldap://l","user_mapping":{"mail":"mail"}},"mailcow_host":"m""#;
        let with = |rest: &str| parse_str(&format!("{base}{rest}}}"));
        let c = with("").unwrap();
        assert_eq!(c.sync.idp_mailboxes, IdpMailboxes::Protect);
        assert_eq!(c.domain_admins, None, "off by default");
        let c = with(r#","sync":{"authsource":"ldap"}"#).unwrap();
        assert_eq!(c.sync.idp_mailboxes, IdpMailboxes::Adopt, "auto follows the authsource");
        let c = with(r#","sync":{"authsource":"ldap","idp_mailboxes":"protect"}"#).unwrap();
        assert_eq!(c.sync.idp_mailboxes, IdpMailboxes::Protect);
        let e = with(r#","sync":{"idp_mailboxes":"keep"}"#).unwrap_err().to_string();
        assert!(e.contains("sync.idp_mailboxes"), "{e}");

        let c = with(r#","domain_admins":{"group":"cn=a,dc=x","domains":["Example.org"]}"#).unwrap();
        let a = c.domain_admins.unwrap();
        assert_eq!(
            (
                a.group.as_str(),
                a.member.as_str(),
                a.username.as_str(),
                a.random_passwords
            ),
            ("cn=a,dc=x", "member", "uid", false)
        );
        assert_eq!(a.domains, ["example.org".to_owned()].into());
        let e = with(r#","domain_admins":{"group":"cn=a","domains":["example.org"],"grup":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("grup"), "{e}");
        let e = with(r#","domain_admins":{"domains":["example.org"]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("domain_admins.group"), "{e}");
        let e = with(r#","domain_admins":{"group":"cn=a"}"#).unwrap_err().to_string();
        assert!(e.contains("domain_admins.domains"), "{e}");
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(<redacted>)");
    }

    #[test]
    fn filter_typos_are_caught() {
        let e = err(
            r#"{"ldap":{"uri":"ldap://l","user_search_filter":"(&(uid=*)","user_mapping":{"mail":"mail"}},"mailcow_host":"m"}"#,
        );
        assert!(e.contains("ldap.user_search_filter"), "{e}");
    }

    #[test]
    fn starttls_with_ldaps_is_refused() {
        let e =
            err(r#"{"ldap":{"uri":"ldaps://l","starttls":true,"user_mapping":{"mail":"mail"}},"mailcow_host":"m"}"#);
        assert!(e.contains("ldap.starttls"), "{e}");
    }

    #[test]
    fn a_key_given_twice_is_an_error_naming_its_path() {
        let e =
            err(r#"{"ldap":{"uri":"ldap://a","uri":"ldap://b","user_mapping":{"mail":"mail"}},"mailcow_host":"m"}"#);
        assert!(e.contains("ldap.uri: is given twice"), "{e}");
        let e = err(
            r#"{"ldap":{"uri":"ldap://a","user_mapping":{"mail":"mail","mail":"x"}},"mailcow_host":"m","mailcow_host":"n"}"#,
        );
        assert!(e.contains("ldap.user_mapping.mail: is given twice"), "{e}");
        let e =
            err(r#"{"mailcow_host":"m","ldap":{"uri":"ldap://a","user_mapping":{"mail":"mail"}},"mailcow_host":"n"}"#);
        assert!(
            e.contains("config /etc/mls/config.json: mailcow_host: is given twice"),
            "{e}"
        );
        // The same key in different objects is no duplicate.
        parse_str(
            r#"{"ldap":{"uri":"ldap://a","user_mapping":{"mail":"mail"}},"mailcow_host":"m","groups":{"mail":"mail"}}"#,
        )
        .unwrap();
    }

    #[test]
    fn groups_as_defaults_to_alias_and_refuses_shared() {
        let text = |as_: &str| {
            format!(
                r#"{{"ldap":{{"uri":"ldap://a","user_mapping":{{"mail":"mail"}}}},"mailcow_host":"m","groups":{{"search_base":"ou=g"{as_}}}}}"#
            )
        };
        let mode = |t: String| parse_str(&t).map(|c| c.groups.expect("groups on").mode);
        assert_eq!(mode(text("")).unwrap(), GroupMode::Alias);
        assert_eq!(mode(text(r#","as":"sender_acl""#)).unwrap(), GroupMode::SenderAcl);
        let e = mode(text(r#","as":"shared""#)).unwrap_err().to_string();
        assert!(e.contains("groups.as") && e.contains("cannot grant IMAP ACLs"), "{e}");
        let e = mode(text(r#","as":"list""#)).unwrap_err().to_string();
        assert!(e.contains("groups.as") && e.contains("`list` is not one of"), "{e}");
    }

    #[test]
    fn bind_dn_with_an_empty_password_is_refused() {
        let text = r#"{"ldap":{"uri":"ldap://l","bind_dn":"cn=reader","bind_pw":"","user_mapping":{"mail":"mail"}},"mailcow_host":"m"}"#;
        let e = parse_str(text).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::CONFIG);
        let e = e.to_string();
        assert!(
            e.contains("ldap.bind_pw: is empty") && e.contains("unauthenticated bind"),
            "{e}"
        );
        // The environment fills the gap.
        let env = EnvSecrets {
            ldap_bind_pw: Some(Secret::new("from-env")),
            mailcow_api_key: None,
        };
        parse(Path::new("c.json"), text, &env).unwrap();
        // An anonymous bind (no name, no password) stays allowed.
        parse_str(r#"{"ldap":{"uri":"ldap://l","user_mapping":{"mail":"mail"}},"mailcow_host":"m"}"#).unwrap();
    }

    #[test]
    fn bind_pw_file_that_is_empty_is_refused() {
        let dir = std::env::temp_dir().join(format!("mls-config-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw"), "\n").unwrap();
        let e = parse(
            &dir.join("c.json"),
            r#"{"ldap":{"uri":"ldap://l","bind_dn":"cn=r","bind_pw_file":"pw","user_mapping":{"mail":"mail"}},"mailcow_host":"m"}"#,
            &EnvSecrets::default(),
        )
        .unwrap_err()
        .to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(e.contains("ldap.bind_pw: is empty"), "{e}");
    }

    fn security_warnings_of(ldap: &str, host: &str) -> Vec<String> {
        parse_str(&format!(
            r#"{{"ldap":{{{ldap},"user_mapping":{{"mail":"mail"}}}},"mailcow_host":"{host}"}}"#
        ))
        .unwrap()
        .security_warnings()
    }

    #[test]
    fn each_insecure_setting_has_its_warning() {
        assert_eq!(
            security_warnings_of(r#""uri":"ldaps://l","ca_file":"ca.pem""#, "m.example"),
            Vec::<String>::new()
        );
        let w = security_warnings_of(r#""uri":"ldaps://l""#, "http://127.0.0.1:8080");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("http://127.0.0.1:8080") && w[0].contains("API key travels in clear"),
            "{w:?}"
        );
        let w = security_warnings_of(r#""uri":"ldaps://l""#, "http://admin:hunter2@m.example/x?key=s3cret");
        assert!(w[0].contains("http://m.example is plain"), "{w:?}");
        assert!(!w[0].contains("hunter2") && !w[0].contains("s3cret"), "{w:?}");

        let w = security_warnings_of(r#""uri":"ldap://l","ca_file":"ca.pem""#, "m.example");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("ldap.ca_file is set but ignored: ldap.uri is plain ldap://"),
            "{w:?}"
        );
        assert!(security_warnings_of(r#""uri":"ldap://l","starttls":true,"ca_file":"ca.pem""#, "m").is_empty());

        let w = security_warnings_of(r#""uri":"ldaps://l","allow_self_signed":true,"ca_file":"ca.pem""#, "m");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("ldap.allow_self_signed is true"), "{w:?}");
        assert!(
            w[1].contains("ldap.ca_file is set but ignored because ldap.allow_self_signed"),
            "{w:?}"
        );

        let mut c =
            parse_str(r#"{"ldap":{"uri":"ldaps://l","user_mapping":{"mail":"mail"}},"mailcow_host":"m"}"#).unwrap();
        c.mailcow.verify_tls = false;
        let w = c.security_warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("--do-not-verify"), "{w:?}");
    }
}
