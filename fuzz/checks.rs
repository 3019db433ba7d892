// The invariants the fuzz targets check, written once and shared: each target in
// fuzz_targets/ and the corpus replay in tests/integration/fuzz_corpus.rs bring this file in
// with `include!`, so it uses only std, serde_json and the main crate. Each function takes the
// raw fuzz input and panics (with the reason) when an invariant is broken; an input the
// function cannot use is simply ignored. README.md in this directory describes the input
// format of each target.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use mailcow_ldap_sync::config::{
    self, ActiveFormat, AddressChange, Config, EnvSecrets, LdapTls, MAX_QUOTA_MIB, MaxRemovals, QuotaUnit, Secret, UserMapping,
};
use mailcow_ldap_sync::core::directory::{self, DirectoryBuilder, RawGroup, Reading};
use mailcow_ldap_sync::error::exit;
use mailcow_ldap_sync::edge::mailcow::{self, Entry};
use mailcow_ldap_sync::core::model::{DirUser, ManagedMailbox, RawEntry, ManagedRows};
use mailcow_ldap_sync::core::model::new_row;
use mailcow_ldap_sync::core::policy::Fingerprinter;
use serde_json::Value;

/// The names of the targets; the corpus of each is `corpus/<name>/`.
pub const TARGETS: &[&str] = &["config", "ldap_values", "mailcow_responses", "planner"];

/// Run the check of `target` on one input.
pub fn check(target: &str, data: &[u8]) {
    match target {
        "config" => check_config(data),
        "ldap_values" => check_ldap_values(data),
        "mailcow_responses" => check_mailcow_responses(data),
        "planner" => check_planner(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Whether the check `id` is switched off with `FUZZ_SKIP_CHECKS=id,id` (for fuzzing past a
/// known bug until it is fixed; README.md lists the ids). The replay test never sets it.
fn skipped(id: &str) -> bool {
    static SKIPPED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SKIPPED
        .get_or_init(|| {
            let list = std::env::var("FUZZ_SKIP_CHECKS").unwrap_or_default();
            list.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .iter()
        .any(|s| s == id)
}

// ---------------------------------------------------------------------------------------------
// config: `config::parse` on any text.

/// The config is "read" from a directory that does not exist, so that a relative
/// `bind_pw_file` / `mailcow_api_key_file` fails to open instead of reading a real file.
pub const CONFIG_PATH: &str = "/nonexistent/mailcow-ldap-sync-fuzz/config.json";
/// Secrets of the seed configs contain this marker; an error must never show such a value.
pub const SECRET_MARKER: &str = "FUZZSECRET";
const ENV_BIND_PW: &str = "FUZZSECRET-env-bind-pw";
const ENV_API_KEY: &str = "FUZZSECRET-env-api-key";

pub fn check_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let root: Option<Value> = serde_json::from_str(&text).ok();
    if root.as_ref().is_some_and(reads_outside_sandbox) {
        // An absolute secret file path would make parse() read a real file (/dev/zero never ends).
        return;
    }
    let inline: Vec<String> = root.as_ref().map(inline_secrets).unwrap_or_default();
    let with_env = EnvSecrets {
        ldap_bind_pw: Some(Secret::new(ENV_BIND_PW)),
        mailcow_api_key: Some(Secret::new(ENV_API_KEY)),
    };
    for env in [EnvSecrets::default(), with_env] {
        let mut secrets = inline.clone();
        secrets.extend(
            env.ldap_bind_pw
                .iter()
                .chain(&env.mailcow_api_key)
                .map(|s| s.expose().to_owned()),
        );
        let result = config::parse(Path::new(CONFIG_PATH), &text, &env);
        let shown = match &result {
            Ok(config) => {
                check_config_ok(config, &env);
                format!("{config:?}")
            }
            Err(e) => {
                let message = e.to_string();
                assert!(!message.trim().is_empty(), "a config error has an empty message");
                assert_eq!(e.exit_code(), exit::CONFIG, "a config error must exit 2: {message}");
                if root.is_none() {
                    assert!(
                        !message.contains(SECRET_MARKER),
                        "a JSON syntax error shows text of the file: {message}"
                    );
                }
                message
            }
        };
        for secret in &secrets {
            assert!(
                !shown.contains(secret.as_str()) || appears_outside_secrets(root.as_ref(), secret),
                "secret {secret:?} shown: {shown}"
            );
        }
    }
}

/// Whether a secret file key holds an absolute path.
fn reads_outside_sandbox(root: &Value) -> bool {
    [
        root.get("mailcow_api_key_file"),
        root.get("ldap").and_then(|l| l.get("bind_pw_file")),
    ]
    .into_iter()
    .flatten()
    .filter_map(Value::as_str)
    .any(|p| Path::new(p.trim()).is_absolute())
}

/// The inline secrets worth tracking: string values of `ldap.bind_pw` and `mailcow_api_key`
/// that carry the marker (a short or common value could appear in a message by chance).
fn inline_secrets(root: &Value) -> Vec<String> {
    [
        root.get("mailcow_api_key"),
        root.get("ldap").and_then(|l| l.get("bind_pw")),
    ]
    .into_iter()
    .flatten()
    .filter_map(Value::as_str)
    .filter(|s| s.contains(SECRET_MARKER))
    .map(str::to_owned)
    .collect()
}

/// Whether `secret` is part of a key or a string value other than the two secret values (then
/// a message may show it for that other reason).
fn appears_outside_secrets(root: Option<&Value>, secret: &str) -> bool {
    fn walk(value: &Value, secret: &str, secret_slot: bool) -> bool {
        match value {
            Value::String(s) => !secret_slot && s.contains(secret),
            Value::Array(items) => items.iter().any(|v| walk(v, secret, false)),
            Value::Object(map) => map
                .iter()
                .any(|(k, v)| k.contains(secret) || walk(v, secret, k == "bind_pw" || k == "mailcow_api_key")),
            _ => false,
        }
    }
    root.is_some_and(|r| walk(r, secret, false))
}

fn check_config_ok(c: &Config, env: &EnvSecrets) {
    if let Some(pw) = &env.ldap_bind_pw {
        assert_eq!(c.ldap.bind_pw, *pw, "the environment's bind password must win");
    }
    if let Some(key) = &env.mailcow_api_key {
        assert_eq!(c.mailcow.api_key, *key, "the environment's API key must win");
    }
    let url = &c.mailcow.base_url;
    assert!(
        url.starts_with("https://") || url.starts_with("http://"),
        "base_url {url:?} is not http(s)"
    );
    if !skipped("base-url-slash") {
        assert!(!url.ends_with('/'), "base_url {url:?} ends with /");
    }
    let tls_ok = match c.ldap.tls {
        LdapTls::Ldaps => c.ldap.uri.starts_with("ldaps://"),
        LdapTls::StartTls | LdapTls::None => c.ldap.uri.starts_with("ldap://"),
    };
    assert!(tls_ok, "uri {:?} does not match {:?}", c.ldap.uri, c.ldap.tls);
    check_mapping(&c.ldap.mapping);
    assert!(
        c.ldap.search_filter.starts_with('('),
        "user filter {:?}",
        c.ldap.search_filter
    );
    assert!(c.ldap.timeout.as_secs() >= 1 && c.mailcow_timeout.as_secs() >= 1);
    assert!(c.ldap.page_size <= i32::MAX as u32);
    assert!(
        (1..=64).contains(&c.sync.concurrency),
        "concurrency {}",
        c.sync.concurrency
    );
    if let Some(q) = c.sync.default_quota_mib {
        assert!(q <= MAX_QUOTA_MIB, "default_quota_mib {q} above the maximum");
    }
    if let MaxRemovals::Percent(p) = c.sync.max_removals {
        assert!((0.0..=100.0).contains(&p), "max_removals {p}%");
    }
    for d in &c.sync.domains {
        assert!(d.contains('.') && !d.contains('@'), "domain {d:?}");
        assert_eq!(*d, d.trim().to_ascii_lowercase(), "domain {d:?} not normalised");
    }
    if let Some(g) = &c.groups {
        assert!(!g.search_base.is_empty());
        assert!(g.search_filter.starts_with('('), "group filter {:?}", g.search_filter);
    }
    assert!(c.state_file.is_absolute(), "state_file {:?} not resolved", c.state_file);
}

fn check_mapping(m: &UserMapping) {
    assert!(
        !m.mail.is_empty() && m.mail == m.mail.trim(),
        "mail attribute {:?}",
        m.mail
    );
    for attr in [
        &m.firstname,
        &m.lastname,
        &m.password,
        &m.quota,
        &m.active,
        &m.tls_enforce_in,
        &m.tls_enforce_out,
        &m.name,
        &m.uid,
        &m.aliases,
    ]
    .into_iter()
    .flatten()
    {
        assert!(!attr.is_empty() && attr == attr.trim(), "mapped attribute {attr:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// ldap_values: directory entries through DirectoryBuilder, read_group and resolve_groups.
//
// Input, LDIF-like: an optional first line `# option option …`, then entries separated by
// empty lines; each entry is `dn: <dn>` and `<attr>: <value>` lines (`<attr>:: <hex>` for a
// value in hex; `<attr>;range=0-1: …` marks the attribute as ranged). Values are raw bytes.
// Options: unit=B|KiB|MiB|GiB active=mailcow|bool|ad|auto activeattr=<a> uid=dn|<a> name=<a>
// aliases=<a> nopassword.

/// Password values with this marker must never appear in a warning or a skip reason.
pub const PASSWORD_MARKER: &str = "FUZZPW";
const PASSWORD_ATTR: &str = "userPassword";
const GROUP_MAIL_ATTR: &str = "mail";
const GROUP_MEMBER_ATTR: &str = "member";

pub struct LdapInput {
    pub reading: Reading,
    pub options: String,
    pub entries: Vec<RawEntry>,
}

pub fn parse_ldap_input(data: &[u8]) -> LdapInput {
    let mut mapping = UserMapping {
        mail: "mail".into(),
        firstname: Some("givenName".into()),
        lastname: Some("sn".into()),
        password: Some(PASSWORD_ATTR.into()),
        quota: Some("mailQuota".into()),
        active: Some("mailActive".into()),
        tls_enforce_in: Some("tlsIn".into()),
        tls_enforce_out: Some("tlsOut".into()),
        name: None,
        uid: Some("entryUUID".into()),
        aliases: Some("proxyAddresses".into()),
        mail_rewrite: Default::default(),
    };
    let mut quota_unit = QuotaUnit::MiB;
    let mut active_format = ActiveFormat::Auto;
    let mut want_password = true;
    let mut rest = data;
    let mut options = String::new();
    if data.starts_with(b"#") {
        let end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        options = String::from_utf8_lossy(&data[1..end]).into_owned();
        rest = data.get(end + 1..).unwrap_or_default();
        for token in options.split_whitespace() {
            let (key, value) = token.split_once('=').unwrap_or((token, ""));
            let attr = (!value.is_empty()).then(|| value.to_owned());
            match key {
                "unit" => {
                    quota_unit = match value {
                        "B" => QuotaUnit::Bytes,
                        "KiB" => QuotaUnit::KiB,
                        "GiB" => QuotaUnit::GiB,
                        _ => QuotaUnit::MiB,
                    }
                }
                "active" => {
                    active_format = match value {
                        "mailcow" => ActiveFormat::Mailcow,
                        "bool" => ActiveFormat::Bool,
                        "ad" => ActiveFormat::Ad,
                        _ => ActiveFormat::Auto,
                    }
                }
                "activeattr" => mapping.active = attr,
                "uid" if value == "dn" => mapping.uid = None,
                "uid" => mapping.uid = attr,
                "name" => mapping.name = attr,
                "aliases" => mapping.aliases = attr,
                "nopassword" => want_password = false,
                _ => {}
            }
        }
    }
    let mut entries = Vec::new();
    let mut current: Option<RawEntry> = None;
    for line in rest.split(|&b| b == b'\n') {
        if line.is_empty() {
            entries.extend(current.take());
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let entry = current.get_or_insert_with(RawEntry::default);
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_ascii_lowercase();
        let mut value = &line[colon + 1..];
        let hex = value.first() == Some(&b':');
        if hex {
            value = &value[1..];
        }
        value = value.strip_prefix(b" ").unwrap_or(value);
        let value = if hex { from_hex(value) } else { value.to_vec() };
        if name == "dn" {
            entry.dn = String::from_utf8_lossy(&value).into_owned();
            continue;
        }
        let (attr, ranged) = match name.split_once(';') {
            Some((attr, option)) => (attr.to_owned(), option.starts_with("range=")),
            None => (name, false),
        };
        if ranged && !entry.ranged.contains(&attr) {
            entry.ranged.push(attr.clone());
        }
        entry.attrs.entry(attr).or_default().push(value);
    }
    entries.extend(current);
    LdapInput {
        reading: Reading {
            mapping,
            quota_unit,
            active_format,
            want_password,
            access: None,
        },
        options,
        entries,
    }
}

fn from_hex(text: &[u8]) -> Vec<u8> {
    let digits: Vec<u8> = text
        .iter()
        .filter_map(|&c| (c as char).to_digit(16))
        .map(|d| d as u8)
        .collect();
    digits.chunks_exact(2).map(|p| p[0] << 4 | p[1]).collect()
}

/// Read against state rows that record every readable entry (the last row of a uid wins),
/// the directory must hold the same users and skip the same entries; only hashes whose
/// fingerprint a row holds may be left out, and marked so.
fn check_held_as_rows(input: &LdapInput, dir: &directory::Directory, users: &[DirUser]) {
    let fingerprinter = Fingerprinter::new(b"fuzz-key");
    let rows = input.entries.iter().flat_map(|entry| {
        let mut alone = DirectoryBuilder::new(input.reading.clone());
        alone.add(entry);
        alone.finish().to_users().into_iter().map(|u| ManagedMailbox {
            password_fp: u.password.as_ref().map(|p| fingerprinter.of(p)),
            ..new_row(&u, 0)
        })
    });
    let state = std::sync::Arc::new(ManagedRows::from_rows(rows.collect::<Vec<_>>()));
    let mut builder = DirectoryBuilder::against(input.reading.clone(), state, Some(fingerprinter));
    for entry in &input.entries {
        builder.add(entry);
    }
    let held = builder.finish();
    assert_eq!(held.skipped, dir.skipped, "the same entries skipped against rows");
    assert_eq!(held.len(), users.len());
    let held_users = held.to_users();
    assert_eq!(held_users.len(), users.len());
    for (h, u) in held_users.iter().zip(users) {
        if h.password_elided {
            assert!(u.password.is_some() && h.password.is_none(), "{}: elided without a hash", u.mail);
            let unelided = DirUser {
                password: u.password.clone(),
                password_elided: false,
                ..h.clone()
            };
            assert_eq!(&unelided, u, "held as a row");
        } else {
            assert_eq!(h, u, "held as a row");
        }
        assert!(held.has_uid(&u.uid) && held.has_mail(&u.mail), "{}: not found held as a row", u.mail);
        assert_eq!(held.user(&u.uid).as_ref(), Some(h));
        assert_eq!(held.user_by_mail(&u.mail).as_ref(), Some(h));
    }
}

pub fn check_ldap_values(data: &[u8]) {
    let input = parse_ldap_input(data);
    let m = &input.reading.mapping;
    let mut builder = DirectoryBuilder::new(input.reading.clone());
    for entry in &input.entries {
        builder.add(entry);
    }
    let dir = builder.finish();
    let users = dir.to_users();
    check_held_as_rows(&input, &dir, &users);

    assert_eq!(dir.entries, input.entries.len());
    assert_eq!(
        users.len() + dir.skipped.len(),
        input.entries.len(),
        "every entry is a user or skipped: {:?}",
        dir.skipped
    );
    let mut mails = BTreeSet::new();
    for pair in users.windows(2) {
        assert!(
            pair[0].uid < pair[1].uid,
            "users not sorted by a unique uid: {:?}",
            pair[0].uid
        );
    }
    for u in &users {
        assert!(mails.insert(u.mail.as_str()), "two users with mail {}", u.mail);
        assert_eq!(
            directory::normalize_mail(&u.mail).as_ref(),
            Ok(&u.mail),
            "mail not a fixed point"
        );
        assert!(
            dir.has_uid(&u.uid) && dir.has_mail(&u.mail),
            "{}: not found by uid or mail",
            u.mail
        );
        assert_eq!(dir.user(&u.uid).as_ref(), Some(u), "lookup by uid {:?}", u.uid);
        assert_eq!(dir.user_by_mail(&u.mail).as_ref(), Some(u), "lookup by mail {}", u.mail);
        if let Some(q) = u.quota_mib {
            assert!(q <= MAX_QUOTA_MIB, "{}: quota {q} MiB above the maximum", u.mail);
        }
        if let Some(a) = u.active {
            assert!(a <= 2, "{}: active {a}", u.mail);
        }
        for pair in u.aliases.windows(2) {
            assert!(pair[0] < pair[1], "{}: aliases not sorted and unique", u.mail);
        }
        for alias in &u.aliases {
            assert_ne!(alias, &u.mail, "the mail is its own alias");
            assert_eq!(
                directory::normalize_mail(alias).as_ref(),
                Ok(alias),
                "alias not a fixed point"
            );
        }
        if let Some(name) = &u.name {
            check_name(name);
        }
        if let Some(pw) = &u.password {
            let scheme = directory::scheme_of(pw.expose()).expect("a synced password has a {SCHEME}");
            assert!(
                directory::ACCEPTED_SCHEMES
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(scheme)),
                "password scheme {scheme:?} is not one mailcow stores as is"
            );
            assert!(input.reading.want_password);
        }
    }

    check_no_password_shown(&input, &dir);
    check_groups(&input, &users);
    for entry in &input.entries {
        for values in entry.attrs.values() {
            for value in values {
                check_value(value);
            }
        }
        if let Some(guid) = entry
            .attrs
            .get("objectguid")
            .and_then(|v| v.first())
            .filter(|v| v.len() == 16)
        {
            let text = directory::guid_text(guid);
            assert_eq!(text.len(), 36, "guid {text}");
        }
        let mail = users.iter().find(|u| u.dn == entry.dn).map(|u| u.mail.clone());
        if let (Some(mail), Some(attr)) = (mail, &m.aliases) {
            let values = entry.attrs.get(&attr.to_ascii_lowercase()).cloned().unwrap_or_default();
            let mut warnings = Vec::new();
            let aliases = directory::read_aliases(&values, attr, &mail, &Default::default(), &mut warnings);
            assert!(!aliases.contains(&mail));
        }
    }
}

/// A display name as mailcow stores it: mailcow strips every leading `<` and trailing `>`
/// (`ltrim(rtrim($name, '>'), '<')`), so a name that changes under that would never compare
/// equal on the next pass.
fn check_name(name: &str) {
    // Not `name.trim()`: cutting to 255 characters may leave a space at the end, which mailcow
    // keeps as it is.
    assert!(
        !name.trim().is_empty() && name == name.trim_start(),
        "name {name:?} not trimmed"
    );
    assert!(name.chars().count() <= 255, "name longer than 255 characters");
    assert!(
        !name.chars().any(char::is_control),
        "name {name:?} has control characters"
    );
    let stored = name.trim_end_matches('>').trim_start_matches('<');
    if !skipped("mailcow-name") {
        assert_eq!(stored, name, "mailcow would store the name {name:?} as {stored:?}");
    }
}

/// Free functions on any value: no panic, results in range, and the formats agree.
fn check_value(value: &[u8]) {
    let Ok(text) = std::str::from_utf8(value) else {
        return;
    };
    if let Ok(mail) = directory::normalize_mail(text) {
        assert_eq!(
            directory::normalize_mail(&mail),
            Ok(mail.clone()),
            "normalize_mail not idempotent"
        );
    }
    let quotas: Vec<Result<u64, String>> = [QuotaUnit::Bytes, QuotaUnit::KiB, QuotaUnit::MiB, QuotaUnit::GiB]
        .into_iter()
        .map(|unit| directory::parse_quota(text, unit))
        .collect();
    for q in quotas.iter().flatten() {
        assert!(*q <= MAX_QUOTA_MIB, "quota {q} MiB from {text:?} above the maximum");
    }
    for pair in quotas.windows(2) {
        if let (Ok(small), Ok(big)) = (&pair[0], &pair[1]) {
            assert!(small <= big, "quota {text:?}: a larger unit gave fewer MiB");
        }
    }
    if let Ok(mib) = &quotas[2] {
        assert_eq!(text.trim().parse::<u64>().ok(), Some(*mib), "quota {text:?} in MiB");
    }
    for e in quotas.iter().filter_map(|q| q.as_ref().err()) {
        assert!(!e.is_empty());
    }
    let boolean = directory::parse_bool(text);
    for (attr, format) in [
        ("mailActive", ActiveFormat::Mailcow),
        ("mailActive", ActiveFormat::Bool),
        ("mailActive", ActiveFormat::Ad),
        ("mailActive", ActiveFormat::Auto),
        ("userAccountControl", ActiveFormat::Auto),
    ] {
        if let Ok(a) = directory::parse_active(text, attr, format) {
            assert!(a <= 2, "active {a} from {text:?}");
        }
    }
    assert_eq!(
        directory::parse_active(text, "x", ActiveFormat::Bool).ok(),
        boolean.ok().map(u8::from),
        "active in bool format must read as parse_bool does: {text:?}"
    );
}

/// Password values carrying the marker must not show in warnings, skip reasons or a user's
/// Debug output. Checked only when the marker appears nowhere else in the input and no other
/// mapped field reads the password attribute (then showing it would be legitimate).
fn check_no_password_shown(input: &LdapInput, dir: &directory::Directory) {
    let m = &input.reading.mapping;
    let pw_attr = PASSWORD_ATTR.to_ascii_lowercase();
    let others = [
        Some(&m.mail),
        m.firstname.as_ref(),
        m.lastname.as_ref(),
        m.quota.as_ref(),
        m.active.as_ref(),
        m.tls_enforce_in.as_ref(),
        m.tls_enforce_out.as_ref(),
        m.name.as_ref(),
        m.uid.as_ref(),
        m.aliases.as_ref(),
    ];
    if others.into_iter().flatten().any(|a| a.eq_ignore_ascii_case(&pw_attr))
        || [GROUP_MAIL_ATTR, GROUP_MEMBER_ATTR].contains(&pw_attr.as_str())
    {
        return;
    }
    let marker = PASSWORD_MARKER.as_bytes();
    let contains = |hay: &[u8]| hay.windows(marker.len()).any(|w| w == marker);
    let elsewhere = contains(input.options.as_bytes())
        || input.entries.iter().any(|e| {
            contains(e.dn.as_bytes())
                || e.ranged.iter().any(|r| contains(r.as_bytes()))
                || e.attrs.iter().any(|(name, values)| {
                    contains(name.as_bytes()) || (*name != pw_attr && values.iter().any(|v| contains(v)))
                })
        });
    if elsewhere {
        return;
    }
    let shown: Vec<String> = dir
        .warnings
        .iter()
        .map(|w| w.text.clone())
        .chain(dir.skipped.iter().map(|s| format!("{}: {}", s.dn, s.reason)))
        .chain(dir.users().map(|u| format!("{u:?}")))
        .collect();
    for entry in &input.entries {
        for value in entry.attrs.get(&pw_attr).into_iter().flatten() {
            let value = String::from_utf8_lossy(value);
            if !value.contains(PASSWORD_MARKER) {
                continue;
            }
            if skipped("password-scheme-only")
                && directory::scheme_of(&value).is_some_and(|s| value.len() == s.len() + 2)
            {
                continue;
            }
            for line in &shown {
                assert!(
                    !line.contains(value.as_ref()),
                    "password value {value:?} shown in: {line}"
                );
            }
        }
    }
}

/// Every entry read as a group too: resolution terminates, members are known users' addresses,
/// sorted and unique, never the group's own address, and the flat set is within the nested one.
fn check_groups(input: &LdapInput, users: &[mailcow_ldap_sync::core::model::DirUser]) {
    let mut warnings = Vec::new();
    let groups: Vec<RawGroup> = input
        .entries
        .iter()
        .map(|e| {
            directory::read_group(
                e,
                input.reading.mapping.uid.as_deref(),
                GROUP_MAIL_ATTR,
                GROUP_MEMBER_ATTR,
                &mut warnings,
            )
        })
        .collect();
    for (g, e) in groups.iter().zip(&input.entries) {
        assert_eq!(g.dn, e.dn);
        if let Some(mail) = &g.mail {
            assert_eq!(directory::normalize_mail(mail).as_ref(), Ok(mail));
        }
        for member in &g.members {
            assert_eq!(&directory::normalize_dn(member), member, "member DN not normalised");
        }
    }
    let all: BTreeMap<String, RawGroup> = groups
        .iter()
        .map(|g| (directory::normalize_dn(&g.dn), g.clone()))
        .collect();
    let alias_groups: Vec<RawGroup> = groups.iter().filter(|g| g.mail.is_some()).cloned().collect();
    let by_dn: BTreeMap<String, String> = users
        .iter()
        .map(|u| (directory::normalize_dn(&u.dn), u.mail.clone()))
        .collect();
    let known: BTreeSet<&String> = by_dn.values().collect();
    let nested = directory::resolve_groups(&alias_groups, &all, &by_dn, true);
    let flat = directory::resolve_groups(&alias_groups, &all, &by_dn, false);
    assert_eq!(nested.len(), alias_groups.len());
    assert_eq!(flat.len(), alias_groups.len());
    for resolved in [&nested, &flat] {
        for pair in resolved.windows(2) {
            assert!(pair[0].mail <= pair[1].mail, "groups not sorted by mail");
        }
        for g in resolved {
            for pair in g.members.windows(2) {
                assert!(pair[0] < pair[1], "group {} members not sorted and unique", g.mail);
            }
            for member in &g.members {
                assert!(known.contains(member), "group {} member {member} is no user", g.mail);
                assert_ne!(member, &g.mail, "group {} is its own member", g.mail);
            }
        }
    }
    for (n, f) in nested.iter().zip(&flat) {
        assert_eq!(n.dn, f.dn);
        assert!(
            f.members.iter().all(|m| n.members.contains(m)),
            "group {}: a direct member is lost when nesting is followed",
            n.mail
        );
    }
}

// ---------------------------------------------------------------------------------------------
// mailcow_responses: one response body through every reader of mailcow answers.

const ITEMS: &[&str] = &[
    "alice@example.org",
    "Bob@Example.org",
    "nobody@example.org",
    "ALICE@example.org",
];
const OK_KEYS: &[&str] = &["mailbox_modified", "mailbox_added", "mailbox_removed", "alias_added"];

pub fn check_mailcow_responses(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match mailcow::parse_entries(&text) {
        Err(message) => assert!(!message.trim().is_empty(), "parse_entries: empty error"),
        Ok(entries) => check_entries(&entries),
    }

    let list = mailcow::parse_mailbox_list("get/mailbox/reduced", data, Some("ldap-sync"));
    assert_same(
        &list,
        &mailcow::parse_mailbox_list("get/mailbox/reduced", Trickle::new(data, 1), Some("ldap-sync")),
    );
    assert_same(
        &list,
        &mailcow::parse_mailbox_list("get/mailbox/reduced", Trickle::new(data, 7), Some("ldap-sync")),
    );
    match &list {
        Ok(mailboxes) => {
            for pair in mailboxes.windows(2) {
                assert!(
                    pair[0].username < pair[1].username,
                    "mailboxes not sorted and unique: {:?}, {:?}",
                    pair[0].username,
                    pair[1].username
                );
            }
            for m in mailboxes {
                assert_eq!(*m.username, m.username.to_ascii_lowercase(), "username not lowercased");
                assert!(!m.authsource.is_empty(), "{}: empty authsource", m.username);
                assert!(
                    m.attribute_hash.as_deref() != Some(""),
                    "{}: empty attribute_hash kept",
                    m.username
                );
            }
        }
        Err(e) => check_mailcow_error(e),
    }

    let domains = mailcow::parse_domain_list("get/domain/all", data);
    assert_same(
        &domains,
        &mailcow::parse_domain_list("get/domain/all", Trickle::new(data, 3)),
    );
    match &domains {
        Ok(domains) => {
            for d in domains {
                assert_eq!(d.name, d.name.to_ascii_lowercase(), "domain name not lowercased");
            }
        }
        Err(e) => check_mailcow_error(e),
    }
}

fn check_mailcow_error(e: &mailcow_ldap_sync::error::Error) {
    let message = e.to_string();
    assert!(!message.trim().is_empty());
    assert_eq!(e.exit_code(), exit::UNREACHABLE, "{message}");
}

fn is_failure(e: &Entry) -> bool {
    e.kind == "danger" || e.kind == "error"
}

fn check_entries(entries: &[Entry]) {
    let mut items: Vec<String> = ITEMS.iter().map(|s| s.to_string()).collect();
    for e in entries {
        let _ = e.message();
        if let Some(address) = e.address() {
            assert_eq!(address, address.to_ascii_lowercase());
            items.push(address.to_ascii_uppercase());
        }
    }
    let mut keys: Vec<&str> = OK_KEYS.to_vec();
    keys.extend(entries.iter().filter_map(Entry::key));
    for ok_key in keys {
        for items in [&items[..], &items[..1], &[]] {
            let results = mailcow::match_items(items, entries, ok_key);
            let wanted: BTreeSet<String> = items.iter().map(|i| i.to_ascii_lowercase()).collect();
            let got: BTreeSet<String> = results.keys().cloned().collect();
            assert_eq!(got, wanted, "match_items must give one result per item");
            for (item, result) in &results {
                let named = |e: &&Entry| e.address().as_deref() == Some(item.as_str());
                match result {
                    Ok(()) => assert!(
                        entries
                            .iter()
                            .filter(named)
                            .any(|e| !is_failure(e) && e.key() == Some(ok_key)),
                        "{item} succeeded without a `{ok_key}` entry naming it"
                    ),
                    Err(message) => {
                        let _ = message;
                    }
                }
                if entries.iter().filter(named).any(is_failure) {
                    assert!(result.is_err(), "{item} succeeded although an entry says it failed");
                }
            }
        }
    }
}

/// Both results equal: the same value, or errors with the same message.
fn assert_same<T: PartialEq + std::fmt::Debug>(
    a: &Result<T, mailcow_ldap_sync::error::Error>,
    b: &Result<T, mailcow_ldap_sync::error::Error>,
) {
    match (a, b) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "a reader in small chunks parsed differently"),
        (Err(a), Err(b)) => assert_eq!(
            a.to_string(),
            b.to_string(),
            "a reader in small chunks failed differently"
        ),
        _ => panic!("a reader in small chunks disagrees: {a:?} / {b:?}"),
    }
}

/// A reader that hands out at most `chunk` bytes per read, like a slow network.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl<'a> Trickle<'a> {
    fn new(data: &'a [u8], chunk: usize) -> Trickle<'a> {
        Trickle { data, chunk }
    }
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// planner: random (directory, mailcow, state) triples through `plan::plan` and
// `aliases::plan_aliases`. Whatever the inputs: no removal of a mailbox that is not managed,
// not tagged (with a tag set), or whose user is still in LDAP (usable or skipped); no
// adoption of an untagged mailbox unless asked; no alias deleted whose owner is still in LDAP
// with an empty alias attribute or skipped; nothing removed or forgotten from a partial view.

/// Reads the fuzz input as small numbers; past its end every number is 0.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self, below: u8) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b % below.max(1)
    }
    fn flag(&mut self) -> bool {
        self.next(2) == 1
    }
}

fn fuzz_address(i: u8) -> String {
    format!("u{i}@example.org")
}
fn fuzz_uid(i: u8) -> String {
    format!("id{i}")
}
fn fuzz_dn(i: u8) -> String {
    format!("uid=u{i},ou=people,dc=example,dc=org")
}

pub fn check_planner(data: &[u8]) {
    use mailcow_ldap_sync::core::aliases::{self, AliasActionKind, AliasInputs};
    use mailcow_ldap_sync::config::{Adopt, Authsource, IdpMailboxes, OnRemoved, PasswordMode};
    use mailcow_ldap_sync::core::directory::Directory;
    use mailcow_ldap_sync::core::model::{Domain, MIB, ManagedAlias, MailcowAlias, Mailbox, Mailboxes};
    use mailcow_ldap_sync::core::plan::{self, ActionKind};
    use mailcow_ldap_sync::core::policy::{Offboard, Policy};

    let mut b = Bytes(data);
    let on_removed = [OnRemoved::Disable, OnRemoved::DisallowLogin, OnRemoved::Delete, OnRemoved::Keep][usize::from(b.next(4))];
    let tag = b.flag().then(|| "ldap-sync".to_owned());
    let adopt = if b.flag() { Adopt::ByAddress } else { Adopt::Tagged };
    let partial = b.next(4) == 0;

    let mut users = Vec::new();
    for _ in 0..b.next(8) {
        let (u, m) = (b.next(10), b.next(10));
        let aliases: BTreeSet<String> = (0..b.next(3)).map(|_| format!("a{}@example.org", b.next(8))).collect();
        users.push(DirUser {
            uid: fuzz_uid(u),
            dn: fuzz_dn(u),
            mail: fuzz_address(m),
            name: b.flag().then(|| format!("User {u}")),
            aliases_listed: !aliases.is_empty() || b.flag(),
            aliases: aliases.into_iter().collect(),
            active: [None, Some(0), Some(1), Some(2)][usize::from(b.next(4))],
            quota_mib: b.flag().then_some(1024),
            ..DirUser::default()
        });
    }
    // The builder drops users sharing a uid or an address; so does this input.
    let mut seen_uid = BTreeSet::new();
    let mut seen_mail = BTreeSet::new();
    users.retain(|u| {
        let new_uid = seen_uid.insert(u.uid.clone());
        seen_mail.insert(u.mail.clone()) && new_uid
    });
    let mut dir = Directory::from_users(users.clone());
    let mut skipped = Vec::new();
    for _ in 0..b.next(3) {
        let (u, m, d) = (b.next(12), b.next(12), b.next(12));
        let uid = b.flag().then(|| fuzz_uid(u));
        let mail = b.flag().then(|| fuzz_address(m));
        dir.add_skipped(fuzz_dn(d), "fuzz".into(), uid.clone(), mail.clone());
        dir.entries += 1;
        skipped.push((uid, mail, fuzz_dn(d)));
    }

    let mut mailbox_list = Vec::new();
    for _ in 0..b.next(10) {
        mailbox_list.push(Mailbox {
            username: fuzz_address(b.next(12)).into(),
            name: "".into(),
            quota_bytes: 1024 * MIB,
            authsource: "mailcow".into(),
            active: b.next(3),
            tagged: b.flag(),
            ..Mailbox::default()
        });
    }
    let mailboxes = Mailboxes::from_list(mailbox_list);
    let mut rows = Vec::new();
    for _ in 0..b.next(10) {
        let (u, a) = (b.next(12), b.next(12));
        rows.push(ManagedMailbox {
            uid: fuzz_uid(u),
            address: fuzz_address(a),
            dn: fuzz_dn(if b.flag() { u } else { b.next(12) }),
            disabled_at: b.flag().then_some(1),
            authsource: Some("mailcow".into()),
            ..ManagedMailbox::default()
        });
    }
    let state = ManagedRows::from_rows(rows);
    // Read after the directory, mailcow and state parts (the bytes after them were read
    // as alias inputs by seeds made before these two settings existed).
    let delete_after_days = if b.flag() { 0 } else { 30 };
    let on_address_change = if b.flag() {
        AddressChange::Recreate
    } else {
        AddressChange::Rename
    };
    let policy = Policy {
        on_removed,
        delete_after_days,
        on_address_change,
        max_removals: MaxRemovals::Count(1000),
        password: PasswordMode::Changed,
        authsource: Authsource::Mailcow,
        tag: tag.clone(),
        adopt,
        // No byte read for it either (the seeds keep their meaning); the core's unit tests
        // cover `adopt`.
        idp_mailboxes: IdpMailboxes::Protect,
        // No byte read for it (the seeds keep their meaning): both settings are covered.
        offboard: Offboard {
            app_passwords: true,
            eas: delete_after_days == 0,
        },
        listed_by_original_tool: BTreeSet::new(),
        default_quota_mib: None,
        domains: BTreeSet::new(),
        create_domains: None,
        fingerprinter: Fingerprinter::new(b"fuzz"),
        partial_view: partial.then(|| "fuzz".to_owned()),
        changes_only: None,
        rows_owned: None,
        access_managed: 0,
        templates: Vec::new(),
    };
    let domains = [Domain {
        name: "example.org".into(),
        active: true,
        def_quota_bytes: 1024 * MIB,
        max_quota_bytes: 10240 * MIB,
    }];
    let p = plan::plan(&dir, &mailboxes, &domains, &state, &policy, 1_000_000);

    let in_ldap = |uid: &str, address: &str, dn: &str| {
        users.iter().any(|u| u.uid == uid || u.mail == address)
            || skipped.iter().any(|(u, m, d)| {
                u.as_deref() == Some(uid) || m.as_deref() == Some(address) || d.as_str() == dn
            })
    };
    for action in &p.actions {
        let mailbox = mailboxes.get(&action.address);
        match &action.kind {
            ActionKind::Deactivate { .. } | ActionKind::Delete => {
                assert!(!partial, "a removal from a partial view: {action:?}");
                let row = state
                    .get(&action.uid)
                    .unwrap_or_else(|| panic!("removal of an unmanaged mailbox: {action:?}"));
                assert_eq!(row.address, action.address, "removal at another address than its row's");
                assert!(!in_ldap(&row.uid, &row.address, &row.dn), "removal of a user present in LDAP: {action:?}");
                assert!(
                    tag.is_none() || mailbox.is_some_and(|m| m.tagged),
                    "removal of a mailbox without the tag: {action:?}"
                );
                assert_ne!(on_removed, OnRemoved::Keep, "a removal with on_removed = keep");
            }
            ActionKind::Update { add_tag: Some(_), .. } | ActionKind::Password { .. } | ActionKind::Tls { .. }
                if adopt == Adopt::Tagged =>
            {
                // Writes to a mailbox nobody handed over: only to rows this tool holds.
                let managed = state.position_by_address(&action.address).is_some();
                let tagged = tag.is_some() && mailbox.as_ref().is_some_and(|m| m.tagged);
                assert!(managed || tagged, "adoption of an untagged mailbox: {action:?}");
            }
            _ => {}
        }
    }
    // An offboarding follows the disable of its mailbox, in the same part of the plan.
    for (i, action) in p.actions.iter().enumerate() {
        if let ActionKind::Offboard { .. } = action.kind {
            let before = i.checked_sub(1).map(|j| &p.actions[j]);
            assert!(
                before.is_some_and(|b| b.uid == action.uid && b.address == action.address && b.kind.disables()),
                "an offboarding not right after its disable: {action:?} after {before:?}"
            );
        }
    }
    let disables = p.actions.iter().filter(|a| a.kind.disables()).count();
    assert_eq!(p.count("offboard"), disables, "one offboarding per disable");
    if partial {
        assert!(
            !p.state_ops.iter().any(|op| matches!(op, plan::StateOp::Forget { .. })),
            "a row forgotten from a partial view: {:?}",
            p.state_ops
        );
    }

    // Aliases: owned rows (some present in mailcow), some foreign aliases.
    let mut alias_state = mailcow_ldap_sync::core::model::AliasState::new();
    let mut mailcow_aliases = Vec::new();
    for id in 0..u64::from(b.next(6)) {
        let address = format!("a{}@example.org", b.next(8));
        let owner = if b.flag() { format!("user:{}", fuzz_uid(b.next(12))) } else { "group:g".to_owned() };
        let goto = fuzz_address(b.next(12));
        if b.flag() {
            mailcow_aliases.push(MailcowAlias {
                id,
                address: address.clone(),
                goto: goto.clone(),
                active: true,
                sender_allowed: b.flag(),
            });
        }
        alias_state.insert(address.clone(), ManagedAlias { address, id, goto, owner });
    }
    let creating: BTreeSet<String> = p
        .actions
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::Create { .. }))
        .map(|a| a.address.clone())
        .collect();
    let not_synced: BTreeSet<String> = p.skipped.iter().map(|s| s.address.clone()).collect();
    let protected = BTreeSet::new();
    let scope = BTreeSet::new();
    let alias_plan = aliases::plan_aliases(
        &dir,
        &AliasInputs {
            groups: None,
            group_entries: 0,
            mailboxes: &mailboxes,
            aliases: &mailcow_aliases,
            domains: &domains,
            state: &alias_state,
            creating: &creating,
            protected: &protected,
            on_removed,
            scope: &scope,
            mailbox_state: &state,
            not_synced: &not_synced,
            partial_view: partial,
            max_removals: MaxRemovals::Count(1000),
        },
    );
    if partial {
        assert!(alias_plan.forget.is_empty(), "alias rows forgotten from a partial view");
    }
    for action in &alias_plan.actions {
        let AliasActionKind::Delete { .. } = action.kind else { continue };
        assert!(!partial, "an alias deleted from a partial view: {action:?}");
        let row = alias_state
            .get(&action.address)
            .unwrap_or_else(|| panic!("deletion of an alias not owned: {action:?}"));
        let Some(uid) = row.owner.strip_prefix("user:") else { continue };
        assert!(
            !skipped.iter().any(|(u, _, _)| u.as_deref() == Some(uid)),
            "deletion of an alias whose owner is skipped: {action:?}"
        );
        if let Some(user) = users.iter().find(|u| u.uid == uid) {
            assert!(user.aliases_listed, "deletion of an alias whose owner lists none: {action:?}");
        }
    }
}
