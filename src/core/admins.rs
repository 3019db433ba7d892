//! Domain admins from an LDAP group (`domain_admins`, issue 18 part 6), as a plan.
//!
//! Each member of the group becomes a mailcow domain administrator of the configured
//! domains (`add/domain-admin`); a member who leaves the group loses the account
//! (`delete/domain-admin`). Only accounts this tool created (its state lists them) are ever
//! edited or deleted; an admin of the same name made by hand is left alone, with a reason.
//! Deletions are under the same guard as mailboxes: none from a partial view, none when the
//! group lists nobody while admins are managed, and no more than `max_removals`.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::policy::{MaxRemovals, Secret};

/// A member of the admin group, read from its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminMember {
    pub dn: String,
    /// The `domain_admins.username` attribute's value, lowercased (mailcow lowercases it).
    pub username: String,
    /// The entry's password value (`user_mapping.password`), when it has one.
    pub password: Option<Secret>,
}

/// A domain admin as `get/domain-admin/all` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailcowAdmin {
    pub username: String,
    pub active: bool,
    pub domains: BTreeSet<String>,
}

/// The password a new domain admin gets: mailcow requires one (`password_check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminPassword {
    /// The member's LDAP value, sent as it is (a `{SCHEME}` hash is stored as it is).
    Ldap(Secret),
    /// A random one made when applying (the member has no password value, or
    /// `domain_admins.password` is `"random"`): the admin logs in after a reset in mailcow.
    Random,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminActionKind {
    /// `add/domain-admin` (active 1).
    Create {
        domains: Vec<String>,
        password: AdminPassword,
    },
    /// `edit/domain-admin` with the configured `domains` (they replace the set).
    SetDomains { domains: Vec<String>, old: Vec<String> },
    /// `delete/domain-admin`: the member left the group.
    Delete,
}

impl AdminActionKind {
    pub fn verb(&self) -> &'static str {
        match self {
            AdminActionKind::Create { .. } => "create",
            AdminActionKind::SetDomains { .. } => "update",
            AdminActionKind::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAction {
    pub username: String,
    /// The member's DN (the recorded one for a delete).
    pub dn: String,
    pub kind: AdminActionKind,
}

/// The admins this tool created, by username: the DN of the member it was made for.
pub type ManagedAdmins = BTreeMap<String, String>;

pub struct AdminInputs<'a> {
    /// `None`: the group could not be read this pass (nothing is removed or forgotten).
    pub members: Option<&'a [AdminMember]>,
    pub mailcow: &'a [MailcowAdmin],
    pub managed: &'a ManagedAdmins,
    pub domains: &'a BTreeSet<String>,
    /// `"random"` even where the member has a password value.
    pub random_passwords: bool,
    pub max_removals: MaxRemovals,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminPlan {
    pub actions: Vec<AdminAction>,
    /// (username or DN, reason): members left out on purpose.
    pub skipped: Vec<(String, String)>,
    /// Managed admins that are gone from mailcow and from the group: forget them.
    pub forget: Vec<String>,
    /// Deletions not planned because the view is partial.
    pub held_back: usize,
    /// The guard's refusal (the caller honours `--force`).
    pub guard: Option<String>,
}

impl AdminPlan {
    pub fn count(&self, verb: &str) -> usize {
        self.actions.iter().filter(|a| a.kind.verb() == verb).count()
    }
}

/// mailcow's rule for an admin name: `[A-Za-z0-9_.-]+`, not `api` (so never an address).
pub fn valid_admin_name(name: &str) -> bool {
    !name.is_empty()
        && name != "api"
        && name.chars().any(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub fn plan_admins(inputs: AdminInputs<'_>) -> AdminPlan {
    let mut p = AdminPlan::default();
    let by_name: BTreeMap<&str, &MailcowAdmin> = inputs.mailcow.iter().map(|a| (a.username.as_str(), a)).collect();
    let want: Vec<String> = inputs.domains.iter().cloned().collect();
    let mut wanted: BTreeSet<&str> = BTreeSet::new();
    let members = inputs.members.unwrap_or(&[]);
    for m in members {
        if !valid_admin_name(&m.username) {
            p.skipped.push((
                m.dn.clone(),
                format!(
                    "`{}` is not a mailcow admin name (letters, digits, `_`, `.`, `-` only)",
                    m.username
                ),
            ));
            continue;
        }
        if !wanted.insert(&m.username) {
            p.skipped.push((
                m.dn.clone(),
                format!("another member of the group has the admin name `{}`", m.username),
            ));
            continue;
        }
        let managed = inputs.managed.contains_key(&m.username);
        match by_name.get(m.username.as_str()) {
            Some(_) if !managed => p.skipped.push((
                m.username.clone(),
                "a domain admin of this name exists in mailcow that this tool did not create; it is left alone"
                    .to_owned(),
            )),
            Some(existing) => {
                if existing.domains != *inputs.domains {
                    p.actions.push(AdminAction {
                        username: m.username.clone(),
                        dn: m.dn.clone(),
                        kind: AdminActionKind::SetDomains {
                            domains: want.clone(),
                            old: existing.domains.iter().cloned().collect(),
                        },
                    });
                }
            }
            None => p.actions.push(AdminAction {
                username: m.username.clone(),
                dn: m.dn.clone(),
                kind: AdminActionKind::Create {
                    domains: want.clone(),
                    password: match (&m.password, inputs.random_passwords) {
                        (Some(pw), false) if !pw.is_empty() => AdminPassword::Ldap(pw.clone()),
                        _ => AdminPassword::Random,
                    },
                },
            }),
        }
    }
    let gone: Vec<(&String, &String)> = inputs
        .managed
        .iter()
        .filter(|(name, _)| !wanted.contains(name.as_str()))
        .collect();
    if inputs.members.is_none() {
        p.held_back = gone.len();
        return p;
    }
    let mut deletes = 0u64;
    for (name, dn) in gone {
        if by_name.contains_key(name.as_str()) {
            deletes += 1;
            p.actions.push(AdminAction {
                username: name.clone(),
                dn: dn.clone(),
                kind: AdminActionKind::Delete,
            });
        } else {
            p.forget.push(name.clone());
        }
    }
    if members.is_empty() && deletes > 0 {
        p.guard = Some(format!(
            "the domain admin group lists no members while this tool manages {} domain admins; refusing to \
             delete them (use --force if this is intended)",
            inputs.managed.len()
        ));
    } else if deletes > inputs.max_removals.allowed(inputs.managed.len()) {
        p.guard = Some(format!(
            "{deletes} domain admin deletions exceed sync.max_removals ({}) of {} managed; use --force if this is \
             intended",
            inputs.max_removals,
            inputs.managed.len()
        ));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> AdminMember {
        AdminMember {
            dn: format!("uid={name},ou=people,dc=example,dc=org"),
            username: name.to_owned(),
            password: Some(Secret::new(format!("{{SSHA}}hash-of-{name}"))),
        }
    }

    fn admin(name: &str, domains: &[&str]) -> MailcowAdmin {
        MailcowAdmin {
            username: name.to_owned(),
            active: true,
            domains: domains.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn domains() -> BTreeSet<String> {
        ["example.org".to_owned()].into()
    }

    fn run(members: Option<&[AdminMember]>, mailcow: &[MailcowAdmin], managed: &ManagedAdmins) -> AdminPlan {
        plan_admins(AdminInputs {
            members,
            mailcow,
            managed,
            domains: &domains(),
            random_passwords: false,
            max_removals: MaxRemovals::Count(10),
        })
    }

    fn verbs(p: &AdminPlan) -> Vec<(&str, &str)> {
        p.actions.iter().map(|a| (a.kind.verb(), a.username.as_str())).collect()
    }

    #[test]
    fn members_are_created_and_leavers_deleted_only_when_managed() {
        let mut no_pw = member("carol");
        no_pw.password = None;
        let members = [member("alice"), member("bob"), no_pw, member("Bad@Name")];
        // bob exists by hand; dave was made by this tool and left the group; erin too, but
        // is gone from mailcow already; frank is a hand-made admin outside the group.
        let mailcow = [
            admin("bob", &["example.org"]),
            admin("dave", &["example.org"]),
            admin("frank", &["example.org"]),
        ];
        let managed: ManagedAdmins = [("dave".into(), "uid=dave".into()), ("erin".into(), "uid=erin".into())].into();
        let p = run(Some(&members), &mailcow, &managed);
        assert_eq!(
            verbs(&p),
            [("create", "alice"), ("create", "carol"), ("delete", "dave")]
        );
        let AdminActionKind::Create { domains, password } = &p.actions[0].kind else {
            panic!()
        };
        assert_eq!(domains, &["example.org"]);
        assert_eq!(password, &AdminPassword::Ldap(Secret::new("{SSHA}hash-of-alice")));
        assert!(matches!(
            &p.actions[1].kind,
            AdminActionKind::Create {
                password: AdminPassword::Random,
                ..
            }
        ));
        let skipped: Vec<&str> = p.skipped.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(skipped, ["bob", "uid=Bad@Name,ou=people,dc=example,dc=org"]);
        assert_eq!(p.forget, ["erin"]);
        assert_eq!(p.guard, None);
    }

    #[test]
    fn managed_admins_get_the_configured_domains() {
        let managed: ManagedAdmins = [("alice".into(), "uid=alice".into())].into();
        let p = run(Some(&[member("alice")]), &[admin("alice", &["other.org"])], &managed);
        assert_eq!(
            p.actions[0].kind,
            AdminActionKind::SetDomains {
                domains: vec!["example.org".into()],
                old: vec!["other.org".into()]
            }
        );
        let p = run(Some(&[member("alice")]), &[admin("alice", &["example.org"])], &managed);
        assert!(p.actions.is_empty(), "unchanged: {:?}", p.actions);
    }

    #[test]
    fn the_guard_and_a_partial_view_hold_deletions() {
        let managed: ManagedAdmins = [("a".into(), "uid=a".into()), ("b".into(), "uid=b".into())].into();
        let mailcow = [admin("a", &["example.org"]), admin("b", &["example.org"])];
        let p = run(None, &mailcow, &managed);
        assert!(p.actions.is_empty() && p.forget.is_empty());
        assert_eq!(p.held_back, 2);
        let p = run(Some(&[]), &mailcow, &managed);
        assert!(p.guard.as_deref().unwrap_or("").contains("no members"), "{:?}", p.guard);
        let p = plan_admins(AdminInputs {
            members: Some(&[member("c")]),
            mailcow: &mailcow,
            managed: &managed,
            domains: &domains(),
            random_passwords: true,
            max_removals: MaxRemovals::Count(1),
        });
        assert!(p.guard.as_deref().unwrap_or("").contains("exceed"), "{:?}", p.guard);
        assert!(matches!(
            &p.actions[0].kind,
            AdminActionKind::Create {
                password: AdminPassword::Random,
                ..
            }
        ));
    }

    #[test]
    fn admin_names_follow_mailcow() {
        assert!(valid_admin_name("j.doe-2_x"));
        for bad in ["", "a@example.org", "api", "...", "a b"] {
            assert!(!valid_admin_name(bad), "{bad}");
        }
    }
}
