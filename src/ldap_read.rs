//! How a pass reads LDAP: the users (paged), the groups when group sync is on (with Active
//! Directory's in-chain rule for groups too large to list), and password hashes read again
//! for the few new mailboxes that need one the read did not keep. The connection is the
//! edge's; turning entries into users is the core's; this is the order of the searches.

use crate::config::{self, Config, PasswordMode};
use crate::core::access::{AccessReading, Memberships};
use crate::core::directory::{self, DirectoryBuilder, Reading};
use crate::core::model;
use crate::core::plan::{self, PlannedFailure};
use crate::core::policy::Fingerprinter;
use crate::core::policy::Secret;
use crate::edge::ldap;
use crate::error::Result;

/// Read every user of the directory (paged), normalised.
pub fn read_directory(config: &Config, filter: &str) -> Result<DirectoryRead> {
    let conn = ldap::LdapConnection::connect(&config.ldap)?;
    search_directory(conn, config, filter, DirectoryBuilder::new(reading(config)))
}

/// How the config says entries are read.
pub fn reading(config: &Config) -> Reading {
    Reading {
        mapping: config.ldap.mapping.clone(),
        quota_unit: config.sync.quota_unit,
        active_format: config.sync.active_format,
        want_password: !matches!(config.sync.password, PasswordMode::Never | PasswordMode::Random)
            && config.sync.authsource == config::Authsource::Mailcow,
        // The members of the groups the rules name are filled in by `search_directory`.
        access: (config.access.is_some() || config.templates.is_some()).then(|| {
            std::sync::Arc::new(AccessReading {
                rules: config.access.clone(),
                templates: config.templates.clone(),
                members: Memberships::default(),
            })
        }),
    }
}

/// The attributes a user search asks for: the mapping's and those `access` rules test.
pub fn user_attributes(config: &Config) -> Vec<&str> {
    let mut attrs = config.ldap.mapping.attributes();
    if let Some(access) = &config.access {
        attrs.extend(access.attributes());
    }
    if let Some(templates) = &config.templates {
        attrs.extend(templates.attributes());
    }
    attrs.sort_unstable();
    attrs.dedup();
    attrs
}

/// The groups `access` and `templates` rules name, with the attribute listing their members
/// (`access.member` for access rules, `member` for template rules).
pub fn rule_groups(config: &Config) -> Vec<(&str, &str)> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    if let Some(access) = &config.access {
        groups.extend(access.groups().into_iter().map(|g| (g, access.member.as_str())));
    }
    if let Some(templates) = &config.templates {
        groups.extend(templates.groups().into_iter().map(|g| (g, "member")));
    }
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// The direct members of each group `access` and `templates` rules name, read by DN (one
/// search each). A group that cannot be read stops the pass: flags or templates decided
/// without it would change every mailbox of its members.
pub fn read_access_members(conn: &mut ldap::LdapConnection, config: &Config) -> Result<Memberships> {
    let mut members = Memberships::default();
    for (group, attr) in rule_groups(config) {
        let mut found: Option<std::collections::BTreeSet<String>> = None;
        conn.search(group, "(objectClass=*)", &[attr], |entry| {
            if directory::normalize_dn(&entry.dn) == group {
                let values = entry.attrs.get(&attr.to_ascii_lowercase()).cloned().unwrap_or_default();
                found = Some(
                    values
                        .iter()
                        .map(|v| directory::normalize_dn(&String::from_utf8_lossy(v)))
                        .collect(),
                );
            }
        })
        .map_err(|e| match e {
            crate::error::Error::Ldap { server, message } => crate::error::Error::Ldap {
                server,
                message: format!("access/templates: reading the group `{group}`: {message}"),
            },
            other => other,
        })?;
        let Some(list) = found else {
            return Err(crate::error::Error::Ldap {
                server: config.ldap.uri.clone(),
                message: format!("access/templates: the group `{group}` was not found"),
            });
        };
        members.0.entry(group.to_owned()).or_default().extend(list);
    }
    Ok(members)
}

/// Search a bound connection: the users (paged), then the groups when group sync is on.
/// The connection stays open for reading elided password hashes again.
pub fn search_directory(
    mut conn: ldap::LdapConnection,
    config: &Config,
    filter: &str,
    mut builder: DirectoryBuilder,
) -> Result<DirectoryRead> {
    if !rule_groups(config).is_empty() {
        let members = read_access_members(&mut conn, config)?;
        builder.set_access_members(members);
    }
    let users = conn.search(&config.ldap.search_base, filter, &user_attributes(config), |entry| {
        builder.add(&entry)
    })?;
    let mut dir = builder.finish();
    let mut partial = Vec::new();
    if !users.references.is_empty() {
        partial.push(format!(
            "the user search under `{}` returned continuation references to {} (users there were not read; \
             search the server that holds them)",
            config.ldap.search_base,
            users.references.join(", ")
        ));
    }
    let mut group_failure = None;
    let groups = match &config.groups {
        Some(groups) => match read_groups(&mut conn, config, groups, filter, &mut dir) {
            Ok(read) => {
                if !read.references.is_empty() {
                    partial.push(format!(
                        "the group search under `{}` returned continuation references to {}",
                        groups.search_base,
                        read.references.join(", ")
                    ));
                }
                Some(read)
            }
            // The users were read completely: they are synced, and the group aliases, which
            // cannot be known this pass, are left as they are.
            Err(e) => {
                partial.push(format!("the group search failed ({e})"));
                group_failure = Some(PlannedFailure {
                    address: groups.search_base.clone(),
                    reason: format!("group search failed, group aliases left as they are: {e}"),
                });
                None
            }
        },
        None => None,
    };
    Ok(DirectoryRead {
        dir,
        groups,
        conn,
        partial,
        group_failure,
    })
}

/// The directory, the groups when group sync is on, and the open connection.
pub struct DirectoryRead {
    pub dir: directory::Directory,
    pub groups: Option<GroupsRead>,
    pub conn: ldap::LdapConnection,
    /// Why the view of the directory is incomplete (none: complete).
    pub partial: Vec<String>,
    /// The group search failed: an item failure of the pass.
    pub group_failure: Option<PlannedFailure>,
}

#[derive(Default)]
pub struct GroupsRead {
    pub groups: Vec<model::DirGroup>,
    /// Group entries the search returned (usable or not), for the guard.
    pub entries: usize,
    /// Owners whose group is present but unreadable: their aliases are left alone.
    pub protected: std::collections::BTreeSet<String>,
    /// Continuation references met by the group searches.
    pub references: Vec<String>,
}

/// Every group class a member DN may point at, for resolving nested groups client-side.
const NESTED_GROUP_FILTER: &str = "(|(objectClass=group)(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))";

fn read_groups(
    conn: &mut ldap::LdapConnection,
    config: &Config,
    groups: &config::GroupsConfig,
    user_filter: &str,
    dir: &mut directory::Directory,
) -> Result<GroupsRead> {
    use std::collections::{BTreeMap, BTreeSet};
    let uid_attr = config.ldap.mapping.uid.as_deref();
    let mut attrs = vec![groups.mail.as_str(), groups.member.as_str()];
    attrs.extend(uid_attr);
    let mut alias_groups = Vec::new();
    let mut protected = BTreeSet::new();
    let mut entries = 0;
    let mut references = Vec::new();
    let done = conn.search(&groups.search_base, &groups.search_filter, &attrs, |entry| {
        entries += 1;
        let group = directory::read_group(&entry, uid_attr, &groups.mail, &groups.member, &mut dir.warnings);
        if group.mail.is_none() && entry.attrs.contains_key(&groups.mail.to_ascii_lowercase()) {
            protected.insert(format!("group:{}", group.uid));
        }
        alias_groups.push(group);
    })?;
    references.extend(done.references);
    let mut all_groups: BTreeMap<String, directory::RawGroup> = BTreeMap::new();
    if groups.nested {
        let member = [groups.member.as_str()];
        let done = conn.search(&groups.search_base, NESTED_GROUP_FILTER, &member, |entry| {
            let g = directory::read_group(&entry, None, &groups.mail, &groups.member, &mut Vec::new());
            all_groups.insert(directory::normalize_dn(&g.dn), g);
        })?;
        references.extend(done.references);
    }
    // Active Directory sends only the first 1500 members of a large group (`member;range=…`).
    // Then ask AD itself for every user in the group's chain (nested included), with the
    // LDAP_MATCHING_RULE_IN_CHAIN rule, instead of walking partial member lists.
    let ranged = alias_groups.iter().any(|g| g.members_incomplete) || all_groups.values().any(|g| g.members_incomplete);
    for group in alias_groups
        .iter_mut()
        .filter(|g| g.mail.is_some() && (ranged || g.members_incomplete))
    {
        let filter = format!(
            "(&{user_filter}(memberOf:1.2.840.113556.1.4.1941:={}))",
            ldap3::ldap_escape(&group.dn)
        );
        let mut members = Vec::new();
        let done = conn.search(&config.ldap.search_base, &filter, &["1.1"], |entry| {
            members.push(directory::normalize_dn(&entry.dn))
        })?;
        references.extend(done.references);
        group.members = members;
        group.members_incomplete = false;
    }
    let user_mail_by_dn: BTreeMap<String, String> = dir
        .users()
        .map(|u| (directory::normalize_dn(&u.dn), u.mail.clone()))
        .collect();
    let resolved = directory::resolve_groups(&alias_groups, &all_groups, &user_mail_by_dn, groups.nested && !ranged);
    Ok(GroupsRead {
        groups: resolved,
        entries,
        protected,
        references,
    })
}

/// Reads again the password hashes that new mailboxes need but the directory did not hold
/// (their fingerprints matched the state: a managed mailbox that is gone from mailcow). It
/// keeps the pass's connection, and binds anew once when that connection fails (a long
/// import outlives a server's idle timeout).
pub struct HashRereader<'a> {
    config: &'a Config,
    conn: Option<ldap::LdapConnection>,
}

impl<'a> HashRereader<'a> {
    pub fn new(config: &'a Config, conn: ldap::LdapConnection) -> HashRereader<'a> {
        HashRereader {
            config,
            conn: Some(conn),
        }
    }

    /// Fill in the elided hashes of this part's creates. A hash that cannot be read makes
    /// that create a planned failure; nothing is created without it. Returns the uids that
    /// failed, with the reason, for [`plan::Plan::fail_creates`] to make the same part again.
    pub fn fill(
        &mut self,
        part: &mut plan::Plan,
        dir: &directory::Directory,
        fingerprinter: &Fingerprinter,
    ) -> Vec<plan::UnreadHash> {
        let mut failed = Vec::new();
        let Some(attr) = self.config.ldap.mapping.password.clone() else {
            return failed;
        };
        for action in &mut part.actions {
            let plan::ActionKind::Create {
                password, password_fp, ..
            } = &mut action.kind
            else {
                continue;
            };
            if *password != plan::NewPassword::Elided {
                continue;
            }
            let Some(dn) = dir.user(&action.uid).map(|u| u.dn) else {
                failed.push(plan::UnreadHash {
                    uid: action.uid.clone(),
                    reason: "its LDAP entry is no longer known".to_owned(),
                });
                continue;
            };
            let secret = self.read(&dn, &attr, &action.address);
            match secret {
                Ok(secret) => {
                    let fp = fingerprinter.of(&secret);
                    *password_fp = Some(fp.clone());
                    if let Some(row) = &mut action.row {
                        row.password_fp = Some(fp);
                    }
                    *password = plan::NewPassword::Ldap(secret);
                }
                Err(reason) => failed.push(plan::UnreadHash {
                    uid: action.uid.clone(),
                    reason,
                }),
            }
        }
        part.fail_creates(&failed);
        failed
    }

    fn read(&mut self, dn: &str, attr: &str, address: &str) -> std::result::Result<Secret, String> {
        let mut last_error = String::new();
        for _attempt in 0..2 {
            let mut conn = match self.conn.take() {
                Some(conn) => conn,
                None => match ldap::LdapConnection::connect(&self.config.ldap) {
                    Ok(conn) => conn,
                    Err(e) => return Err(e.to_string()),
                },
            };
            let mut values = None;
            let read = conn.search(dn, "(objectClass=*)", &[attr], |entry| {
                if directory::normalize_dn(&entry.dn) == directory::normalize_dn(dn) {
                    values = entry.attrs.get(&attr.to_ascii_lowercase()).cloned();
                }
            });
            match read {
                Ok(_) => {
                    self.conn = Some(conn);
                    let mut warnings = Vec::new();
                    return values
                        .and_then(|v| directory::read_password(&v, attr, address, &mut warnings))
                        .ok_or_else(|| format!("`{dn}` has no usable `{attr}` value now"));
                }
                // The connection is dropped; the second attempt binds anew.
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(last_error)
    }

    pub fn close(self) {
        if let Some(conn) = self.conn {
            conn.close();
        }
    }
}

/// The members of the `domain_admins` group, each read from its own entry (a base-scope
/// read per member DN; an admin group is small). A member entry without the username
/// attribute (a nested group, a missing entry) is left out with a warning. An `Err` (the
/// group cannot be read, or is missing) means: this pass cannot know the admins, so none
/// is removed.
pub fn read_domain_admins(
    conn: &mut ldap::LdapConnection,
    config: &Config,
    admins: &config::DomainAdminsConfig,
    warnings: &mut Vec<String>,
) -> std::result::Result<Vec<crate::core::admins::AdminMember>, String> {
    let text = |entry: &model::RawEntry, attr: &str| -> Option<String> {
        entry
            .attrs
            .get(&attr.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(|v| String::from_utf8_lossy(v).trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let group = conn
        .read_entry(&admins.group, &[admins.member.as_str()])
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the domain admin group `{}` does not exist", admins.group))?;
    if group.ranged.iter().any(|a| a.eq_ignore_ascii_case(&admins.member)) {
        return Err(format!(
            "the domain admin group `{}` lists its members only in ranges; its member list is incomplete",
            admins.group
        ));
    }
    let password_attr = config.ldap.mapping.password.as_deref();
    let mut attrs = vec![admins.username.as_str()];
    attrs.extend(password_attr);
    let mut members = Vec::new();
    let dns = group
        .attrs
        .get(&admins.member.to_ascii_lowercase())
        .cloned()
        .unwrap_or_default();
    for dn in dns {
        let dn = String::from_utf8_lossy(&dn).trim().to_owned();
        match conn.read_entry(&dn, &attrs).map_err(|e| e.to_string())? {
            Some(entry) => match text(&entry, &admins.username) {
                Some(name) => members.push(crate::core::admins::AdminMember {
                    dn: entry.dn.clone(),
                    username: name.to_ascii_lowercase(),
                    password: password_attr.and_then(|a| text(&entry, a)).map(Secret::new),
                }),
                None => warnings.push(format!(
                    "domain admin group member `{dn}` has no `{}`: not a domain admin",
                    admins.username
                )),
            },
            None => warnings.push(format!("domain admin group member `{dn}` does not exist")),
        }
    }
    Ok(members)
}
