//! `check`: bind to LDAP, read the users, check the API key reads and writes; changes nothing.

use crate::commands::require_api_key;
use crate::config::Config;
use crate::core::directory;
use crate::edge::mailcow::{HttpMailcow, MailcowApi};
use crate::error::{Result, exit};
use crate::ldap_read::{self, DirectoryRead};
use crate::output::{print_line, print_stdout};

/// The checks as they are made: printed one line each at once, or gathered for `--json`.
struct Checks {
    json: bool,
    warnings: Vec<String>,
    checks: Vec<serde_json::Value>,
    ok: bool,
}

impl Checks {
    /// A setting that does not fail the check but should be seen: `[WARN]`.
    fn warning(&mut self, message: &str) {
        if self.json {
            self.warnings.push(message.to_owned());
        } else {
            print_line(&format!("[WARN] {message}"));
        }
    }

    fn check(&mut self, name: &str, good: bool, message: &str) {
        self.ok &= good;
        if self.json {
            self.checks
                .push(serde_json::json!({"name": name, "ok": good, "message": message}));
        } else {
            print_line(&format!("[{}] {message}", if good { " ok " } else { "FAIL" }));
        }
    }

    /// A line under the last check (sample users, skipped entries): `details` in JSON.
    fn detail(&mut self, text: &str) {
        if !self.json {
            print_line(&format!("       {text}"));
            return;
        }
        if let Some(serde_json::Value::Object(last)) = self.checks.last_mut() {
            let details = last.entry("details").or_insert_with(|| serde_json::json!([]));
            if let Some(list) = details.as_array_mut() {
                list.push(text.into());
            }
        }
    }

    /// The JSON document, when asked for; the exit code either way.
    fn finish(self, code: u8) -> u8 {
        if self.json {
            let doc = serde_json::json!({
                "ok": self.ok && code == exit::OK,
                "exit_code": code,
                "warnings": self.warnings,
                "checks": self.checks,
            });
            print_stdout(&format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default()));
        }
        code
    }
}

pub fn run(config: &Config, json: bool) -> Result<u8> {
    let mut checks = Checks {
        json,
        warnings: Vec::new(),
        checks: Vec::new(),
        ok: true,
    };
    // Insecure settings lead the report; they do not fail the check.
    for warning in config.security_warnings() {
        checks.warning(&warning);
    }
    let dir = match ldap_read::read_directory(config, &config.ldap.search_filter) {
        Ok(DirectoryRead {
            dir,
            groups,
            conn,
            partial,
            ..
        }) => {
            for reason in &partial {
                checks.check("ldap_complete", false, reason);
            }
            let mut conn = conn;
            if let Some(admins) = &config.domain_admins {
                let mut warnings = Vec::new();
                match ldap_read::read_domain_admins(&mut conn, config, admins, &mut warnings) {
                    Ok(members) => {
                        let names: Vec<&str> = members.iter().map(|m| m.username.as_str()).collect();
                        checks.check(
                            "ldap_domain_admins",
                            true,
                            &format!(
                                "domain admin group `{}`: {} members ({}) for {}",
                                admins.group,
                                members.len(),
                                names.join(", "),
                                admins.domains.iter().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        );
                        for w in warnings.iter().take(5) {
                            checks.detail(w);
                        }
                    }
                    Err(e) => checks.check("ldap_domain_admins", false, &e),
                }
            }
            conn.close();
            if let Some(g) = &groups {
                let with_members = g.groups.iter().filter(|g| !g.members.is_empty()).count();
                let send_as = config
                    .groups
                    .as_ref()
                    .is_some_and(|c| c.mode == crate::config::GroupMode::SenderAcl);
                let mut text = format!(
                    "LDAP groups: {} entries, {with_members} with an address and members, as {}:",
                    g.entries,
                    if send_as { "sender_acl" } else { "alias" }
                );
                for (i, group) in g.groups.iter().filter(|g| !g.members.is_empty()).enumerate() {
                    if i == 5 {
                        text.push_str(" …");
                        break;
                    }
                    text.push(' ');
                    text.push_str(&group.mail);
                }
                checks.check("ldap_groups", true, &text);
            }
            checks.check(
                "ldap",
                true,
                &bound_line(config.sources.first().map(|s| s.name.as_str()), config, &dir),
            );
            if !config.ldap.mapping.mail_rewrite.is_empty() {
                let pairs: Vec<String> = config
                    .ldap
                    .mapping
                    .mail_rewrite
                    .0
                    .iter()
                    .map(|(from, to)| format!("{from} → {to}"))
                    .collect();
                checks.detail(&format!("mail_rewrite: {}", pairs.join(", ")));
            }
            if let Some(access) = &config.access {
                use crate::core::access::flag_list;
                let managed: Vec<&str> = flag_list(access.managed, 0).map(|(p, _)| p.name()).collect();
                let mut off: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
                for user in dir.users() {
                    for (p, on) in flag_list(access.managed, user.access.unwrap_or(access.default)) {
                        if !on {
                            *off.entry(p.name()).or_default() += 1;
                        }
                    }
                }
                checks.check(
                    "access",
                    true,
                    &format!(
                        "access: manages {} ({} rules, {} groups read)",
                        managed.join(", "),
                        access.rules.len(),
                        access.groups().len()
                    ),
                );
                let off: Vec<String> = flag_list(access.managed, 0)
                    .map(|(p, _)| format!("{} off for {} users", p.name(), off.get(p.name()).unwrap_or(&0)))
                    .collect();
                checks.detail(&off.join(", "));
            }
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            for user in dir.users().take(3) {
                let scheme = user
                    .password
                    .as_ref()
                    .and_then(|p| directory::shown_scheme(p.expose()).map(str::to_owned));
                checks.detail(&format!(
                    "{}: name {:?}, quota {}, active {}, password {}, aliases {}",
                    user.mail,
                    user.name.as_deref().unwrap_or(""),
                    or_dash(user.quota_mib.map(|q| format!("{q} MiB"))),
                    or_dash(user.active.map(|a| a.to_string())),
                    or_dash(scheme.map(|s| format!("{{{s}}} hash"))),
                    if user.aliases.is_empty() {
                        "-".into()
                    } else {
                        user.aliases.join(", ")
                    },
                ));
            }
            for s in dir.skipped.iter().take(5) {
                checks.detail(&format!("skipped {}: {}", s.dn, s.reason));
            }
            Some(dir)
        }
        Err(e) => {
            let source = source_prefix(config.sources.first().map(|s| s.name.as_str()));
            checks.check("ldap", false, &format!("{source}{e}"));
            None
        }
    };
    // The other sources: each binds and is counted (the first is the one above).
    for (i, source) in config.sources.iter().enumerate().skip(1) {
        let seen = config.for_source(i);
        match ldap_read::read_directory(&seen, &seen.ldap.search_filter) {
            Ok(read) => {
                for reason in &read.partial {
                    checks.check(
                        "ldap_complete",
                        false,
                        &format!("{}{reason}", source_prefix(Some(&source.name))),
                    );
                }
                checks.check("ldap", true, &bound_line(Some(&source.name), &seen, &read.dir));
                for s in read.dir.skipped.iter().take(5) {
                    checks.detail(&format!("skipped {}: {}", s.dn, s.reason));
                }
                read.conn.close();
            }
            Err(e) => checks.check("ldap", false, &format!("{}{e}", source_prefix(Some(&source.name)))),
        }
    }
    if let Err(e) = require_api_key(config) {
        checks.check("mailcow_api_key", false, &e.to_string());
        return Ok(checks.finish(exit::CONFIG));
    }
    let client = match HttpMailcow::new(&config.mailcow, config.mailcow_timeout) {
        Ok(client) => client,
        Err(e) if json => {
            checks.check("mailcow", false, &e.to_string());
            return Ok(checks.finish(e.exit_code()));
        }
        Err(e) => return Err(e),
    };
    match client.domains() {
        Ok(domains) => {
            checks.check(
                "mailcow",
                true,
                &format!(
                    "mailcow {}: API key accepted, {} domains",
                    config.mailcow.base_url,
                    domains.len()
                ),
            );
            match client.check_write_access() {
                Ok(()) => checks.check(
                    "mailcow_write",
                    true,
                    "API key may write (checked with an edit of no items)",
                ),
                Err(e) => checks.check("mailcow_write", false, &format!("{e}")),
            }
            if let Some(dir) = &dir {
                let known: std::collections::BTreeSet<&str> = domains.iter().map(|d| d.name.as_str()).collect();
                let mut missing: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
                // Only the domains a pass touches (`sync.domains`).
                let in_scope = |d: &str| config.sync.domains.is_empty() || config.sync.domains.contains(d);
                for user in dir.users() {
                    if !known.contains(user.domain()) && in_scope(user.domain()) {
                        *missing.entry(user.domain().to_owned()).or_default() += 1;
                    }
                }
                if missing.is_empty() {
                    checks.check(
                        "mailcow_domains",
                        true,
                        "every mail domain of the LDAP users exists in mailcow",
                    );
                } else if let Some(new) = &config.sync.create_domains {
                    let list: Vec<String> = missing.iter().map(|(d, n)| format!("{d} ({n} users)")).collect();
                    checks.check(
                        "mailcow_domains",
                        true,
                        &format!(
                            "domains missing in mailcow: {}; sync.create_domains adds them with {new}",
                            list.join(", ")
                        ),
                    );
                } else {
                    let list: Vec<String> = missing.iter().map(|(d, n)| format!("{d} ({n} users)")).collect();
                    checks.check(
                        "mailcow_domains",
                        false,
                        &format!(
                            "domains missing in mailcow: {}; add them in mailcow first",
                            list.join(", ")
                        ),
                    );
                }
            }
        }
        Err(e) => checks.check("mailcow", false, &format!("{e}")),
    }
    if let Some(rules) = &config.templates {
        match client.templates() {
            Ok(listed) => {
                let resolved = crate::commands::sync::resolve_templates(&rules.names, listed);
                let missing = resolved.iter().filter(|(_, t)| t.is_none()).count();
                let lines: Vec<String> = resolved
                    .iter()
                    .map(|(name, t)| match t {
                        Some(t) => format!("{name} → id {}", t.id),
                        None => format!("{name}: no such template"),
                    })
                    .collect();
                checks.check(
                    "mailcow_templates",
                    missing == 0,
                    &format!("templates: {}", lines.join(", ")),
                );
                if let Some(dir) = &dir {
                    let mut per: Vec<usize> = vec![0; rules.names.len()];
                    let mut none = 0;
                    for user in dir.users() {
                        match user.template {
                            Some(t) => per[usize::from(t)] += 1,
                            None => none += 1,
                        }
                    }
                    let counts: Vec<String> = rules
                        .names
                        .iter()
                        .zip(&per)
                        .map(|(name, n)| format!("{name}: {n} users"))
                        .chain((none > 0).then(|| format!("no template: {none} users")))
                        .collect();
                    checks.detail(&counts.join(", "));
                }
            }
            Err(e) => checks.check("mailcow_templates", false, &format!("templates: {e}")),
        }
    }
    if checks.ok {
        identity_provider(&mut checks, config, &client);
    }
    let code = if checks.ok { exit::OK } else { exit::UNREACHABLE };
    Ok(checks.finish(code))
}

/// mailcow's own identity provider and what each side owns (issue 18 part 7): the IdP's
/// settings without its secrets, the `ldap` mailboxes it manages (untagged) against the
/// ones this tool made or adopted (tagged), and the writes of both sides that collide.
fn identity_provider(checks: &mut Checks, config: &Config, client: &dyn MailcowApi) {
    let idp = match client.identity_provider() {
        Ok(Some(idp)) => idp,
        Ok(None) => return,
        Err(e) => {
            checks.warning(&format!("mailcow's identity provider could not be read: {e}"));
            return;
        }
    };
    if idp.authsource != "ldap" {
        checks.check(
            "mailcow_idp",
            true,
            &format!(
                "mailcow identity provider: {} (not LDAP: this tool's mailboxes stay authsource `{}`)",
                idp.authsource,
                config.sync.authsource.as_str()
            ),
        );
        return;
    }
    let on = |b: bool| if b { "on" } else { "off" };
    checks.check(
        "mailcow_idp",
        true,
        &format!(
            "mailcow identity provider: LDAP {} (base `{}`), periodic_sync {}, import_users {}, login_provisioning {}, \
             {} template mappers{}",
            idp.server,
            idp.base_dn,
            on(idp.periodic_sync),
            on(idp.import_users),
            on(idp.login_provisioning),
            idp.mappers,
            if idp.default_template.is_empty() {
                String::new()
            } else {
                format!(", default template `{}`", idp.default_template)
            }
        ),
    );
    let tag = config.sync.tag.as_deref();
    let mailboxes = match client.mailboxes(tag, std::sync::Arc::new(crate::core::model::ManagedRows::new())) {
        Ok(m) => m.to_list(),
        Err(e) => {
            checks.warning(&format!("mailboxes could not be read: {e}"));
            return;
        }
    };
    let ldap: Vec<_> = mailboxes.iter().filter(|m| m.authsource == "ldap").collect();
    let ours = ldap.iter().filter(|m| tag.is_some() && m.tagged).count();
    let theirs = ldap.len() - ours;
    let policy = config.sync.idp_mailboxes;
    checks.detail(&format!(
        "mailcow's IdP owns {theirs} authsource `ldap` mailboxes without the `{}` tag: {}",
        tag.unwrap_or(""),
        match policy {
            crate::core::policy::IdpMailboxes::Protect => {
                "never adopted, edited, disabled or deleted by this tool (sync.idp_mailboxes = \"protect\")"
            }
            crate::core::policy::IdpMailboxes::Adopt => {
                "adopted when an LDAP user has the address and sync.adopt allows it (sync.idp_mailboxes = \"adopt\")"
            }
        }
    ));
    checks.detail(&format!(
        "this tool owns the mailboxes it made or adopted ({} with its tag, {ours} of them authsource `ldap`); \
         it creates authsource `{}`",
        mailboxes.iter().filter(|m| tag.is_some() && m.tagged).count(),
        config.sync.authsource.as_str()
    ));
    if idp.periodic_sync && ours > 0 {
        checks.warning(&format!(
            "mailcow's periodic LDAP sync (periodic_sync) also rewrites the {ours} authsource `ldap` mailboxes this \
             tool manages (name and mapped template): both sides write them; turn periodic_sync off in mailcow"
        ));
    }
    if idp.import_users {
        checks.warning(
            "mailcow's LDAP sync creates mailboxes itself (import_users): those are its own, and this tool leaves \
             them alone unless sync.idp_mailboxes is \"adopt\"",
        );
    }
    if idp.mappers > 0 {
        checks.warning(
            "mailcow re-applies its mapped mailbox template at every login of an authsource `ldap` mailbox \
             (ldap_mbox_login): quota, ACLs and protocol access from the template replace what this tool set",
        );
    }
}

/// "source `NAME`: " before a line about one of several sources; nothing for `ldap`.
fn source_prefix(source: Option<&str>) -> String {
    source.map(|name| format!("source `{name}`: ")).unwrap_or_default()
}

/// The `ldap` check's line for a directory read.
fn bound_line(source: Option<&str>, config: &Config, dir: &directory::Directory) -> String {
    format!(
        "{}LDAP {}: bound as `{}`, {} entries, {} usable users",
        source_prefix(source),
        config.ldap.uri,
        config.ldap.bind_dn,
        dir.entries,
        dir.len()
    )
}
