//! `check`: bind to LDAP, read the users, check the API key reads and writes; changes nothing.

use crate::commands::require_api_key;
use crate::config::Config;
use crate::core::directory;
use crate::edge::mailcow::{HttpMailcow, MailcowApi};
use crate::error::{Result, exit};
use crate::ldap_read::{self, DirectoryRead};
use crate::output::print_line;

pub fn run(config: &Config) -> Result<u8> {
    let mut ok = true;
    // Insecure settings lead the report; they do not fail the check.
    for warning in config.security_warnings() {
        print_line(&format!("[WARN] {warning}"));
    }
    let mut line = |good: bool, what: &str| {
        ok &= good;
        print_line(&format!("[{}] {what}", if good { " ok " } else { "FAIL" }));
    };
    let dir = match ldap_read::read_directory(config, &config.ldap.search_filter) {
        Ok(DirectoryRead {
            dir,
            groups,
            conn,
            partial,
            ..
        }) => {
            for reason in &partial {
                line(false, reason);
            }
            conn.close();
            if let Some(g) = &groups {
                let with_members = g.groups.iter().filter(|g| !g.members.is_empty()).count();
                line(
                    true,
                    &format!(
                        "LDAP groups: {} entries, {} with an address and members",
                        g.entries, with_members
                    ),
                );
            }
            line(
                true,
                &format!(
                    "LDAP {}: bound as `{}`, {} entries, {} usable users",
                    config.ldap.uri,
                    config.ldap.bind_dn,
                    dir.entries,
                    dir.len()
                ),
            );
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            for user in dir.users().take(3) {
                let scheme = user
                    .password
                    .as_ref()
                    .and_then(|p| directory::shown_scheme(p.expose()).map(str::to_owned));
                print_line(&format!(
                    "       {}: name {:?}, quota {}, active {}, password {}, aliases {}",
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
                print_line(&format!("       skipped {}: {}", s.dn, s.reason));
            }
            Some(dir)
        }
        Err(e) => {
            line(false, &format!("{e}"));
            None
        }
    };
    if let Err(e) = require_api_key(config) {
        line(false, &e.to_string());
        return Ok(exit::CONFIG);
    }
    let client = HttpMailcow::new(&config.mailcow, config.mailcow_timeout)?;
    match client.domains() {
        Ok(domains) => {
            line(
                true,
                &format!(
                    "mailcow {}: API key accepted, {} domains",
                    config.mailcow.base_url,
                    domains.len()
                ),
            );
            match client.check_write_access() {
                Ok(()) => line(true, "API key may write (checked with an edit of no items)"),
                Err(e) => line(false, &format!("{e}")),
            }
            if let Some(dir) = &dir {
                let known: std::collections::BTreeSet<&str> = domains.iter().map(|d| d.name.as_str()).collect();
                let mut missing: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
                for user in dir.users() {
                    if !known.contains(user.domain()) {
                        *missing.entry(user.domain().to_owned()).or_default() += 1;
                    }
                }
                if missing.is_empty() {
                    line(true, "every mail domain of the LDAP users exists in mailcow");
                } else {
                    let list: Vec<String> = missing.iter().map(|(d, n)| format!("{d} ({n} users)")).collect();
                    line(
                        false,
                        &format!(
                            "domains missing in mailcow: {}; add them in mailcow first",
                            list.join(", ")
                        ),
                    );
                }
            }
        }
        Err(e) => line(false, &format!("{e}")),
    }
    Ok(if ok { exit::OK } else { exit::UNREACHABLE })
}
