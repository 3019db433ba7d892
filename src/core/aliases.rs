//! The pure alias plan: user aliases (mailAlternateAddress, proxyAddresses) and group
//! distribution aliases, against mailcow's aliases and the ones this tool owns.
//!
//! Ownership is the rule: an alias is changed or removed only if the state database says
//! this tool created it. An address that is a mailbox, or an alias someone else made, is a
//! conflict: a warning, that alias skipped, everything else applied.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::directory::Directory;
use crate::core::model::{
    AliasState, DirGroup, Domain, Mailboxes, MailcowAlias, ManagedAlias, ManagedRows, Warning, domain_of,
};
use crate::core::plan::PlannedFailure;
use crate::core::policy::{MaxRemovals, OnRemoved};
use crate::core::sender_acl::SenderGrant;

/// What to do to one alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasActionKind {
    /// `add/alias`.
    Add { goto: String, sender_allowed: bool },
    /// `edit/alias` of the goto, by id.
    Edit { id: u64, old_goto: String, goto: String },
    /// `delete/alias`, by id.
    Delete { id: u64, goto: String },
    /// `edit/mailbox` `sender_acl` of the member mailbox `address` (`groups.as:
    /// "sender_acl"`, core/sender_acl.rs): the whole list, `old` as mailcow returned it and
    /// `new` with only this tool's entries added (`grant`: address, owner) or taken out.
    /// Its outcome's id is a mask of the `grant` entries mailcow refused (bit i: entry i).
    SendAs {
        old: Vec<String>,
        new: Vec<String>,
        grant: Vec<(String, String)>,
        revoke: Vec<String>,
    },
}

impl AliasActionKind {
    pub fn verb(&self) -> &'static str {
        match self {
            AliasActionKind::Add { .. } => "alias_add",
            AliasActionKind::Edit { .. } => "alias_update",
            AliasActionKind::Delete { .. } => "alias_delete",
            AliasActionKind::SendAs { .. } => "sender_acl_update",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasAction {
    pub address: String,
    /// `user:<uid>` or `group:<uid>`.
    pub owner: String,
    pub kind: AliasActionKind,
}

#[derive(Debug, Clone, Default)]
pub struct AliasPlan {
    pub actions: Vec<AliasAction>,
    /// Rows to drop without a write (the alias is gone from mailcow already).
    pub forget: Vec<String>,
    /// Rows whose owner changed without a goto change.
    pub reown: Vec<ManagedAlias>,
    pub warnings: Vec<Warning>,
    /// (address, reason) of aliases that cannot be made.
    pub failures: Vec<PlannedFailure>,
    pub unchanged: usize,
    /// Deletions and group changes not made because the view was partial.
    pub held_back: usize,
    pub guard: Option<String>,
    /// Send-as grants whose owner changed without a write.
    pub grants_reown: Vec<SenderGrant>,
    /// Send-as grants to drop without a write (mailcow has them no longer).
    pub grants_forget: Vec<(String, String)>,
    /// (group address or member mailbox, reason) of send-as changes that cannot be made.
    pub grant_failures: Vec<PlannedFailure>,
}

/// A goto as mailcow stores it when sent sorted, lowercased and de-duplicated (API.md 4.7).
pub fn normalize_goto(goto: &str) -> String {
    let set: BTreeSet<String> = goto
        .split([',', ' ', ';', '\n'])
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

/// Inputs of the alias plan beside the directory.
pub struct AliasInputs<'a> {
    pub groups: Option<&'a [DirGroup]>,
    /// How many group entries the group search returned (for the guard).
    pub group_entries: usize,
    pub mailboxes: &'a Mailboxes,
    pub aliases: &'a [MailcowAlias],
    pub domains: &'a [Domain],
    pub state: &'a AliasState,
    /// Addresses whose mailbox this pass creates.
    pub creating: &'a BTreeSet<String>,
    /// Owners (`group:<uid>`) present in LDAP whose data could not be read this pass: their
    /// aliases are left as they are.
    pub protected: &'a BTreeSet<String>,
    pub on_removed: OnRemoved,
    /// Empty = every domain.
    pub scope: &'a BTreeSet<String>,
    /// The managed mailboxes: a user alias's owner is still there when its mailbox row's
    /// person is (by address or by the DN of a skipped entry).
    pub mailbox_state: &'a ManagedRows,
    /// Addresses of users the mailbox plan skipped or failed: they get no new aliases, and
    /// keep the ones they have.
    pub not_synced: &'a BTreeSet<String>,
    /// The view of LDAP or of mailcow's aliases is partial: nothing is deleted or forgotten,
    /// and group aliases (whose members may be missing from the view) are left as they are.
    pub partial_view: bool,
    pub max_removals: MaxRemovals,
}

pub fn plan_aliases(dir: &Directory, input: &AliasInputs<'_>) -> AliasPlan {
    let mut p = AliasPlan::default();
    let in_scope = |a: &str| input.scope.is_empty() || input.scope.contains(domain_of(a));
    let mailbox_set: BTreeSet<&str> = input.mailboxes.usernames().collect();
    let existing: BTreeMap<&str, &MailcowAlias> = input.aliases.iter().map(|a| (a.address.as_str(), a)).collect();
    let domains: BTreeSet<&str> = input.domains.iter().map(|d| d.name.as_str()).collect();

    // What LDAP wants: address → (goto, owner, sender_allowed); two claims on one address void both.
    let mut wanted: BTreeMap<String, (String, String, bool)> = BTreeMap::new();
    let mut contested: BTreeSet<String> = BTreeSet::new();
    let mut claim = |address: &str, goto: String, owner: String, sender: bool, p: &mut AliasPlan| {
        if contested.contains(address) {
            return;
        }
        if let Some((_, other, _)) = wanted.get(address) {
            p.warnings.push(Warning::admin(format!(
                "alias {address} is claimed by {other} and {owner}; skipped for both"
            )));
            wanted.remove(address);
            contested.insert(address.to_owned());
            return;
        }
        wanted.insert(address.to_owned(), (goto, owner, sender));
    };
    for user in dir.users() {
        // Aliases follow their mailbox: only for users whose mailbox exists or is being made,
        // and that this pass syncs (an unadopted mailbox gets no aliases from LDAP).
        if (!mailbox_set.contains(user.mail.as_str()) && !input.creating.contains(&user.mail))
            || input.not_synced.contains(&user.mail)
        {
            continue;
        }
        for alias in &user.aliases {
            claim(alias, user.mail.clone(), format!("user:{}", user.uid), true, &mut p);
        }
    }
    if let Some(groups) = input.groups {
        for group in groups {
            if group.members.is_empty() {
                continue;
            }
            claim(
                &group.mail,
                group.members.join(","),
                format!("group:{}", group.uid),
                false,
                &mut p,
            );
        }
    }

    for (address, (goto, owner, sender_allowed)) in &wanted {
        if !in_scope(address) {
            continue;
        }
        let ours = input.state.get(address);
        // Members outside a partial view would be dropped from a group's goto; an owned alias
        // missing from an empty alias list may well exist.
        if input.partial_view
            && (owner.starts_with("group:") || (ours.is_some() && !existing.contains_key(address.as_str())))
        {
            p.held_back += 1;
            continue;
        }
        match existing.get(address.as_str()) {
            _ if mailbox_set.contains(address.as_str()) || input.creating.contains(address) => {
                p.warnings.push(Warning::admin(format!(
                    "alias {address} ({owner}) is a mailbox address in mailcow; skipped"
                )));
            }
            Some(found) if ours.is_some_and(|o| o.id == found.id) => {
                let ours = ours.expect("checked above");
                if normalize_goto(&found.goto) != *goto {
                    p.actions.push(AliasAction {
                        address: address.clone(),
                        owner: owner.clone(),
                        kind: AliasActionKind::Edit {
                            id: found.id,
                            old_goto: found.goto.clone(),
                            goto: goto.clone(),
                        },
                    });
                } else {
                    p.unchanged += 1;
                    if ours.owner != *owner || ours.goto != *goto {
                        p.reown.push(ManagedAlias {
                            address: address.clone(),
                            id: found.id,
                            goto: goto.clone(),
                            owner: owner.clone(),
                        });
                    }
                }
            }
            Some(_) => p.warnings.push(Warning::admin(format!(
                "alias {address} ({owner}) already exists in mailcow and was not made by this tool; left alone"
            ))),
            None if !domains.contains(domain_of(address)) => p.failures.push(PlannedFailure {
                address: address.clone(),
                reason: format!(
                    "alias domain {} does not exist in mailcow; add the domain in mailcow first",
                    domain_of(address)
                ),
            }),
            None => p.actions.push(AliasAction {
                address: address.clone(),
                owner: owner.clone(),
                kind: AliasActionKind::Add {
                    goto: goto.clone(),
                    sender_allowed: *sender_allowed,
                },
            }),
        }
    }

    let mut deletions = 0usize;
    for (address, row) in input.state {
        if wanted.contains_key(address)
            || contested.contains(address)
            || input.protected.contains(&row.owner)
            || !in_scope(address)
        {
            continue;
        }
        if input.partial_view {
            p.held_back += 1;
            continue;
        }
        let Some(found) = existing.get(address.as_str()).filter(|f| f.id == row.id) else {
            p.forget.push(address.clone());
            continue;
        };
        let kept_for_its_user = row
            .owner
            .strip_prefix("user:")
            .is_some_and(|uid| !user_alias_may_go(dir, input, &mut p, uid, address, found));
        if kept_for_its_user {
            continue;
        }
        deletions += 1;
        p.actions.push(AliasAction {
            address: address.clone(),
            owner: row.owner.clone(),
            kind: AliasActionKind::Delete {
                id: found.id,
                goto: found.goto.clone(),
            },
        });
    }

    let managed_group_aliases = input.state.values().filter(|r| r.owner.starts_with("group:")).count();
    let owned = input.state.keys().filter(|a| in_scope(a)).count();
    let allowed = input.max_removals.allowed(owned);
    if input.groups.is_some() && input.group_entries == 0 && managed_group_aliases > 0 {
        p.guard = Some(format!(
            "the group search returned no groups while {managed_group_aliases} group aliases are managed; \
             check groups.search_base, or run once with --force"
        ));
    } else if deletions > 1 && deletions == owned {
        p.guard = Some(format!(
            "every one of the {owned} aliases this tool owns would be deleted; an alias attribute that reads empty \
             (user_mapping.aliases, read rights) or a wrong group search would do that. If this is intended, run once \
             with --force"
        ));
    } else if deletions as u64 > allowed {
        p.guard = Some(format!(
            "{deletions} aliases would be deleted (sync.max_removals = {} allows {allowed} of {owned} owned). Check \
             user_mapping.aliases and the group search; if this is intended, run once with --force or raise \
             sync.max_removals",
            input.max_removals
        ));
    }
    p
}

/// Whether a user alias this tool owns, which LDAP no longer lists, may be deleted. Only
/// when its owner left LDAP (and `on_removed` does not keep mailboxes as they are), or when
/// its owner is synced and still lists other alias values: an owner whose alias attribute
/// reads empty (a mistyped attribute, a lost read right) or whose entry was skipped keeps it.
fn user_alias_may_go(
    dir: &Directory,
    input: &AliasInputs<'_>,
    p: &mut AliasPlan,
    uid: &str,
    address: &str,
    found: &MailcowAlias,
) -> bool {
    // An entry with this uid was skipped: which of the two owns the alias cannot be told.
    if dir.has_skipped_uid(uid) {
        return false;
    }
    if let Some(user) = dir.user(uid) {
        let synced = (input.mailboxes.get(&user.mail).is_some() || input.creating.contains(&user.mail))
            && !input.not_synced.contains(&user.mail);
        if synced && !user.aliases_listed {
            p.warnings.push(Warning::admin(format!(
                "alias {address}: its owner {} is in LDAP but lists no alias values now (a mistyped \
                 user_mapping.aliases, or lost read rights?); kept. Delete it in mailcow if it should go",
                user.mail
            )));
        }
        return synced && user.aliases_listed;
    }
    // Present but skipped (by uid, by its mailbox row's address or DN, or by the address the
    // alias points at): still there.
    let row_present = input
        .mailbox_state
        .get(uid)
        .is_some_and(|r| dir.holds_person(uid, &r.address, &r.dn));
    let goto = normalize_goto(&found.goto);
    if dir.has_uid(uid) || row_present || (!goto.contains(',') && dir.has_mail(&goto)) {
        return false;
    }
    input.on_removed != OnRemoved::Keep
}

/// Alias rows to write and addresses to drop from the state database.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AliasDelta {
    pub put: Vec<ManagedAlias>,
    pub delete: Vec<String>,
    /// Send-as grant rows to write, and (mailbox, address) rows to drop.
    pub grants_put: Vec<SenderGrant>,
    pub grants_delete: Vec<(String, String)>,
}

/// The alias rows to write and to delete after the alias actions ran. `confirmed[i]` holds
/// the new alias id for a confirmed add (and any id for other confirmed actions).
pub fn settle_aliases(plan: &AliasPlan, confirmed: &[Option<u64>]) -> AliasDelta {
    let mut put = plan.reown.clone();
    let mut delete = plan.forget.clone();
    let mut grants_put = plan.grants_reown.clone();
    let mut grants_delete = plan.grants_forget.clone();
    for (action, result) in plan.actions.iter().zip(confirmed) {
        let Some(new_id) = result else { continue };
        match &action.kind {
            AliasActionKind::SendAs { grant, revoke, .. } => {
                let refused = |i: usize| i >= 64 || new_id & (1 << i) != 0;
                grants_put.extend(
                    grant
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !refused(*i))
                        .map(|(_, (a, o))| SenderGrant {
                            mailbox: action.address.clone(),
                            send_as: a.clone(),
                            owner: o.clone(),
                        }),
                );
                grants_delete.extend(revoke.iter().map(|a| (action.address.clone(), a.clone())));
            }
            AliasActionKind::Add { goto, .. } => put.push(ManagedAlias {
                address: action.address.clone(),
                id: *new_id,
                goto: goto.clone(),
                owner: action.owner.clone(),
            }),
            AliasActionKind::Edit { id, goto, .. } => put.push(ManagedAlias {
                address: action.address.clone(),
                id: *id,
                goto: goto.clone(),
                owner: action.owner.clone(),
            }),
            AliasActionKind::Delete { .. } => delete.push(action.address.clone()),
        }
    }
    AliasDelta {
        put,
        delete,
        grants_put,
        grants_delete,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::model::{DirUser, MIB, Mailbox};

    fn dir(users: Vec<DirUser>) -> Directory {
        Directory::from_users(users)
    }

    fn user(uid: &str, aliases: &[&str]) -> DirUser {
        DirUser {
            uid: uid.into(),
            mail: format!("{uid}@example.org"),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            aliases_listed: !aliases.is_empty(),
            ..DirUser::default()
        }
    }

    /// An active mailbox of 1 MiB (the send-as tests use it too).
    pub(crate) fn mailbox(address: &str) -> Mailbox {
        Mailbox {
            username: address.into(),
            quota_bytes: MIB,
            active: 1,
            ..Mailbox::default()
        }
    }

    struct World {
        mailboxes: Vec<Mailbox>,
        aliases: Vec<MailcowAlias>,
        domains: Vec<Domain>,
        state: AliasState,
        creating: BTreeSet<String>,
        protected: BTreeSet<String>,
        scope: BTreeSet<String>,
        groups: Option<Vec<DirGroup>>,
        not_synced: BTreeSet<String>,
        partial_view: bool,
    }

    impl World {
        fn new(mailboxes: &[&str]) -> World {
            World {
                mailboxes: mailboxes.iter().map(|m| mailbox(m)).collect(),
                aliases: Vec::new(),
                domains: vec![Domain {
                    name: "example.org".into(),
                    ..Domain::default()
                }],
                state: AliasState::new(),
                creating: BTreeSet::new(),
                protected: BTreeSet::new(),
                scope: BTreeSet::new(),
                groups: None,
                not_synced: BTreeSet::new(),
                partial_view: false,
            }
        }
        fn plan(&self, d: &Directory) -> AliasPlan {
            plan_aliases(
                d,
                &AliasInputs {
                    groups: self.groups.as_deref(),
                    group_entries: self.groups.as_ref().map_or(0, Vec::len),
                    mailboxes: &Mailboxes::from_list(self.mailboxes.clone()),
                    aliases: &self.aliases,
                    domains: &self.domains,
                    state: &self.state,
                    creating: &self.creating,
                    protected: &self.protected,
                    on_removed: OnRemoved::Disable,
                    scope: &self.scope,
                    mailbox_state: &ManagedRows::new(),
                    not_synced: &self.not_synced,
                    partial_view: self.partial_view,
                    max_removals: MaxRemovals::Count(100),
                },
            )
        }
        fn own(&mut self, address: &str, id: u64, goto: &str, owner: &str) {
            self.aliases.push(MailcowAlias {
                id,
                address: address.into(),
                goto: goto.into(),
                active: true,
                sender_allowed: false,
            });
            self.state.insert(
                address.into(),
                ManagedAlias {
                    address: address.into(),
                    id,
                    goto: goto.into(),
                    owner: owner.into(),
                },
            );
        }
    }

    #[test]
    fn new_user_alias_is_added_then_unchanged() {
        let mut w = World::new(&["a@example.org"]);
        let d = dir(vec![user("a", &["alt@example.org"])]);
        let p = w.plan(&d);
        assert_eq!(p.actions.len(), 1);
        assert_eq!(
            p.actions[0].kind,
            AliasActionKind::Add {
                goto: "a@example.org".into(),
                sender_allowed: true
            }
        );
        let delta = settle_aliases(&p, &[Some(17)]);
        assert_eq!(delta.put[0].id, 17);
        assert!(
            settle_aliases(&p, &[None]).put.is_empty(),
            "an unconfirmed add records nothing"
        );
        w.own("alt@example.org", 17, "a@example.org", "user:a");
        let p = w.plan(&d);
        assert!(p.actions.is_empty());
        assert_eq!(p.unchanged, 1);
    }

    #[test]
    fn foreign_aliases_and_mailboxes_are_conflicts() {
        let mut w = World::new(&["a@example.org", "b@example.org"]);
        w.aliases.push(MailcowAlias {
            id: 3,
            address: "sales@example.org".into(),
            goto: "b@example.org".into(),
            active: true,
            sender_allowed: false,
        });
        let d = dir(vec![user(
            "a",
            &["sales@example.org", "b@example.org", "ok@example.org"],
        )]);
        let p = w.plan(&d);
        assert_eq!(p.actions.len(), 1, "{:?}", p.actions);
        assert_eq!(p.actions[0].address, "ok@example.org");
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    }

    #[test]
    fn owned_aliases_follow_ldap_and_foreign_ones_are_never_removed() {
        let mut w = World::new(&["a@example.org"]);
        w.own("old@example.org", 5, "a@example.org", "user:a");
        w.aliases.push(MailcowAlias {
            id: 6,
            address: "manual@example.org".into(),
            goto: "a@example.org".into(),
            active: true,
            sender_allowed: false,
        });
        // The owner still lists an alias value, just not this one: the admin removed it.
        let p = w.plan(&dir(vec![user("a", &["a@example.org"])]));
        assert_eq!(p.actions.len(), 1);
        assert_eq!(
            p.actions[0].kind,
            AliasActionKind::Delete {
                id: 5,
                goto: "a@example.org".into()
            }
        );
    }

    #[test]
    fn an_owner_whose_alias_attribute_reads_empty_keeps_its_aliases() {
        let mut w = World::new(&["a@example.org"]);
        w.own("old@example.org", 5, "a@example.org", "user:a");
        let p = w.plan(&dir(vec![user("a", &[])]));
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p.warnings[0].text.contains("lists no alias values"), "{:?}", p.warnings);
        assert!(p.warnings[0].needs_admin);
    }

    #[test]
    fn an_owner_skipped_or_not_synced_keeps_its_aliases() {
        let mut w = World::new(&["a@example.org"]);
        w.own("old@example.org", 5, "a@example.org", "user:a");
        // Skipped entry (its uid unreadable), known by its address only.
        let mut skipped = Directory::from_users(Vec::new());
        skipped.add_skipped(
            "uid=a,dc=example,dc=org".into(),
            "no uid".into(),
            None,
            Some("a@example.org".into()),
        );
        skipped.entries = 1;
        let p = w.plan(&skipped);
        assert!(p.actions.is_empty(), "skipped owner: {:?}", p.actions);
        // Usable, listing other aliases, but not synced this pass (an unadopted mailbox).
        w.not_synced.insert("a@example.org".into());
        let p = w.plan(&dir(vec![user("a", &["new@example.org"])]));
        assert!(p.actions.is_empty(), "not synced: {:?}", p.actions);
    }

    #[test]
    fn a_partial_view_deletes_forgets_and_regroups_nothing() {
        let mut w = World::new(&["a@example.org", "b@example.org"]);
        w.own("old@example.org", 5, "gone@example.org", "user:gone");
        w.own("team@example.org", 9, "a@example.org,b@example.org", "group:g");
        w.state.insert(
            "vanished@example.org".into(),
            ManagedAlias {
                address: "vanished@example.org".into(),
                id: 7,
                goto: "a@example.org".into(),
                owner: "user:a".into(),
            },
        );
        w.groups = Some(vec![DirGroup {
            uid: "g".into(),
            dn: "cn=team".into(),
            mail: "team@example.org".into(),
            members: vec!["a@example.org".into()],
        }]);
        w.partial_view = true;
        let p = w.plan(&dir(vec![user("a", &["new@example.org"])]));
        assert_eq!(p.forget, Vec::<String>::new());
        assert!(
            p.actions
                .iter()
                .all(|a| matches!(a.kind, AliasActionKind::Add { .. }) && a.owner == "user:a"),
            "{:?}",
            p.actions
        );
        assert_eq!(p.held_back, 3, "the delete, the forget and the group shrink");
        w.partial_view = false;
        let p = w.plan(&dir(vec![user("a", &["new@example.org"])]));
        assert_eq!(p.forget, ["vanished@example.org"]);
        assert!(
            p.actions
                .iter()
                .any(|a| matches!(a.kind, AliasActionKind::Delete { id: 5, .. }))
        );
    }

    #[test]
    fn alias_deletions_are_under_the_guard() {
        let mut w = World::new(&["a@example.org"]);
        for i in 0..4 {
            w.own(&format!("x{i}@example.org"), i, "gone@example.org", "user:gone");
        }
        let p = w.plan(&dir(vec![user("a", &[])]));
        assert!(
            p.guard.as_deref().unwrap_or("").contains("every one of the 4 aliases"),
            "{:?}",
            p.guard
        );
        // Three of five owned, with an allowance of two.
        w.own("keep@example.org", 10, "a@example.org", "user:a");
        w.own("x0@example.org", 0, "a@example.org", "user:a");
        let plan = |w: &World, max: MaxRemovals| {
            plan_aliases(
                &dir(vec![user("a", &["keep@example.org", "x0@example.org"])]),
                &AliasInputs {
                    groups: None,
                    group_entries: 0,
                    mailboxes: &Mailboxes::from_list(w.mailboxes.clone()),
                    aliases: &w.aliases,
                    domains: &w.domains,
                    state: &w.state,
                    creating: &w.creating,
                    protected: &w.protected,
                    on_removed: OnRemoved::Disable,
                    scope: &w.scope,
                    mailbox_state: &ManagedRows::new(),
                    not_synced: &w.not_synced,
                    partial_view: false,
                    max_removals: max,
                },
            )
        };
        let p = plan(&w, MaxRemovals::Count(2));
        assert!(
            p.guard.as_deref().unwrap_or("").contains("3 aliases would be deleted"),
            "{:?}",
            p.guard
        );
        assert_eq!(plan(&w, MaxRemovals::Count(3)).guard, None);
    }

    #[test]
    fn group_membership_change_is_one_edit() {
        let mut w = World::new(&["a@example.org", "b@example.org"]);
        w.own("team@example.org", 9, "a@example.org", "group:g");
        w.groups = Some(vec![DirGroup {
            uid: "g".into(),
            dn: "cn=team".into(),
            mail: "team@example.org".into(),
            members: vec!["a@example.org".into(), "b@example.org".into()],
        }]);
        let p = w.plan(&dir(vec![user("a", &[]), user("b", &[])]));
        assert_eq!(
            p.actions[0].kind,
            AliasActionKind::Edit {
                id: 9,
                old_goto: "a@example.org".into(),
                goto: "a@example.org,b@example.org".into()
            }
        );
        w.groups = Some(vec![]);
        let p = w.plan(&dir(vec![user("a", &[])]));
        assert!(p.guard.is_some(), "no groups at all while group aliases are managed");
    }

    #[test]
    fn alias_in_a_missing_domain_fails_and_goto_normalises() {
        let w = World::new(&["a@example.org"]);
        let p = w.plan(&dir(vec![user("a", &["x@elsewhere.test"])]));
        assert!(p.actions.is_empty());
        assert_eq!(p.failures.len(), 1);
        assert_eq!(normalize_goto("b@x.org, A@x.org,a@x.org"), "a@x.org,b@x.org");
    }
}
