//! The pure send-as plan (`groups.as: "sender_acl"`): each member of a group with an address
//! may send as that address, through the member mailbox's `sender_acl` list.
//!
//! mailcow's `edit/mailbox` replaces a mailbox's whole list (docs/mailcow-api-sender-acl.md),
//! so a change is written as the list mailcow returned with only this tool's entries added
//! or taken out. The state database remembers which (mailbox, address) grants this tool
//! made: only those are ever taken out; an entry someone else made is never touched, even
//! when it equals one a group wants. A mailcow that does not return the list (older than
//! 2026-07a) gets no send-as writes at all: writing blind would drop entries we cannot see.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::aliases::{AliasAction, AliasActionKind, AliasPlan};
use crate::core::model::{DirGroup, Mailboxes, MailcowAlias, domain_of};
use crate::core::plan::PlannedFailure;
use crate::core::policy::MaxRemovals;

/// The grants this tool made: (mailbox, send-as address) → owner (`group:<uid>`).
pub type GrantState = BTreeMap<(String, String), String>;

/// Each mailbox's internal send-as list as `get/mailbox/{mailbox}` returned it; `None`:
/// mailcow's answer has no `sender_acl` field (a mailcow older than 2026-07a).
pub type SendAsLists = BTreeMap<String, Option<Vec<String>>>;

/// One grant row of the state database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderGrant {
    pub mailbox: String,
    pub send_as: String,
    pub owner: String,
}

/// The mailboxes whose lists the plan needs: every member mailbox of a group with an
/// address, and every mailbox holding a grant of ours, that mailcow has.
pub fn mailboxes_to_read(groups: &[DirGroup], state: &GrantState, mailboxes: &Mailboxes) -> Vec<String> {
    let mut out: BTreeSet<&str> = BTreeSet::new();
    for g in groups {
        out.extend(g.members.iter().map(String::as_str).filter(|m| *m != g.mail));
    }
    out.extend(state.keys().map(|(m, _)| m.as_str()));
    out.into_iter()
        .filter(|m| mailboxes.get(m).is_some())
        .map(str::to_owned)
        .collect()
}

pub struct GrantInputs<'a> {
    pub groups: &'a [DirGroup],
    /// How many group entries the group search returned (for the guard).
    pub group_entries: usize,
    pub mailboxes: &'a Mailboxes,
    pub aliases: &'a [MailcowAlias],
    pub lists: &'a SendAsLists,
    pub state: &'a GrantState,
    /// Members whose mailbox the mailbox plan skipped or failed: their grants stay as they are.
    pub not_synced: &'a BTreeSet<String>,
    /// Owners whose group is present but unreadable: their grants stay.
    pub protected: &'a BTreeSet<String>,
    /// Empty = every domain (of the member mailbox edited).
    pub scope: &'a BTreeSet<String>,
    /// Grants are added but none taken out or forgotten.
    pub partial_view: bool,
    pub max_removals: MaxRemovals,
}

/// Whether `list` lets its mailbox send as `address`: the address itself, its domain, or `*`.
fn covers(list: &[String], address: &str) -> bool {
    let domain = format!("@{}", domain_of(address));
    list.iter()
        .any(|e| e == "*" || e.eq_ignore_ascii_case(address) || e.eq_ignore_ascii_case(&domain))
}

/// The send-as plan, as alias-plan actions (`AliasActionKind::SendAs`, one per member
/// mailbox whose list changes) and rows, merged into `p`.
pub fn plan_grants(input: &GrantInputs<'_>, p: &mut AliasPlan) {
    let in_scope = |a: &str| input.scope.is_empty() || input.scope.contains(domain_of(a));
    let aliases: BTreeMap<&str, &MailcowAlias> = input.aliases.iter().map(|a| (a.address.as_str(), a)).collect();
    // mailbox → address → owner.
    let mut wanted: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
    let mut held: BTreeSet<&str> = BTreeSet::new();
    for g in input.groups {
        let owner = format!("group:{}", g.uid);
        let exists = input.mailboxes.get(&g.mail).is_some() || aliases.contains_key(g.mail.as_str());
        if !exists {
            if !g.members.is_empty() {
                p.grant_failures.push(PlannedFailure {
                    address: g.mail.clone(),
                    reason: format!(
                        "send-as for {owner}: {} is neither a mailbox nor an alias in mailcow, and mailcow grants \
                         send-as only on an address it has; create the shared mailbox or an alias there first",
                        g.mail
                    ),
                });
            }
            continue;
        }
        for m in &g.members {
            if *m == g.mail || input.mailboxes.get(m).is_none() || !in_scope(m) {
                continue;
            }
            if input.not_synced.contains(m) {
                held.insert(m);
                continue;
            }
            // An alias that lets its targets send as it already does (mailcow stores no
            // entry for it: functions.mailbox.inc.php 3384).
            let fixed = aliases
                .get(g.mail.as_str())
                .is_some_and(|a| a.sender_allowed && a.goto.split(',').any(|t| t.trim().eq_ignore_ascii_case(m)));
            if fixed {
                p.unchanged += 1;
                continue;
            }
            wanted.entry(m).or_default().entry(&g.mail).or_insert(owner.clone());
        }
    }

    let mut ours: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for ((m, a), owner) in input.state {
        ours.entry(m).or_default().insert(a, owner);
    }
    let every: BTreeSet<&str> = wanted.keys().chain(ours.keys()).copied().collect();
    let empty_want = BTreeMap::new();
    let empty_ours = BTreeMap::new();
    let mut revokes = 0usize;
    for m in every {
        if held.contains(m) {
            continue;
        }
        let want = wanted.get(m).unwrap_or(&empty_want);
        let mine = ours.get(m).unwrap_or(&empty_ours);
        let Some(read) = input.lists.get(m) else {
            if input.mailboxes.get(m).is_some() {
                // There, but its address cannot be read by name (edge::mailcow::by_name_safe).
                if !want.is_empty() || !mine.is_empty() {
                    p.grant_failures.push(PlannedFailure {
                        address: m.to_owned(),
                        reason: "send-as not managed: mailcow cannot look this address up by name".to_owned(),
                    });
                }
                continue;
            }
            // The mailbox is gone from mailcow, and its rows with it.
            if input.partial_view {
                p.held_back += mine.len();
            } else {
                p.grants_forget
                    .extend(mine.keys().map(|a| (m.to_owned(), (*a).to_owned())));
            }
            continue;
        };
        let Some(list) = read else {
            let changes = want.keys().any(|a| !mine.contains_key(a)) || mine.keys().any(|a| !want.contains_key(a));
            if changes {
                p.grant_failures.push(PlannedFailure {
                    address: m.to_owned(),
                    reason: "send-as not changed: this mailcow does not return a mailbox's sender_acl (get/mailbox \
                             has it from mailcow 2026-07a on), and edit/mailbox replaces the whole list, so writing \
                             it would drop entries this tool cannot see; upgrade mailcow"
                        .to_owned(),
                });
            }
            continue;
        };
        let mut grant: Vec<(String, String)> = Vec::new();
        for (a, owner) in want {
            let exact = list.iter().any(|e| e.eq_ignore_ascii_case(a));
            match mine.get(a) {
                Some(old) if exact => {
                    p.unchanged += 1;
                    if *old != owner {
                        p.grants_reown.push(SenderGrant {
                            mailbox: m.to_owned(),
                            send_as: (*a).to_owned(),
                            owner: owner.clone(),
                        });
                    }
                }
                // Someone else's entry, or a wider one (`@domain`, `*`): nothing to add.
                _ if covers(list, a) => p.unchanged += 1,
                _ => grant.push(((*a).to_owned(), owner.clone())),
            }
        }
        let mut revoke: Vec<String> = Vec::new();
        for (a, owner) in mine {
            if want.contains_key(a) || input.protected.contains(*owner) || !in_scope(m) {
                continue;
            }
            if input.partial_view {
                p.held_back += 1;
            } else if list.iter().any(|e| e.eq_ignore_ascii_case(a)) {
                revoke.push((*a).to_owned());
            } else {
                p.grants_forget.push((m.to_owned(), (*a).to_owned()));
            }
        }
        if grant.is_empty() && revoke.is_empty() {
            continue;
        }
        revokes += revoke.len();
        let mut new: Vec<String> = Vec::new();
        for e in list {
            let dropped = revoke.iter().any(|r| r.eq_ignore_ascii_case(e));
            if !dropped && !new.iter().any(|n| n.eq_ignore_ascii_case(e)) {
                new.push(e.clone());
            }
        }
        new.extend(grant.iter().map(|(a, _)| a.clone()));
        let owners: BTreeSet<&str> = grant
            .iter()
            .map(|(_, o)| o.as_str())
            .chain(revoke.iter().filter_map(|a| mine.get(a.as_str()).copied()))
            .collect();
        p.actions.push(AliasAction {
            address: m.to_owned(),
            owner: owners.into_iter().collect::<Vec<_>>().join(","),
            kind: AliasActionKind::SendAs {
                old: list.clone(),
                new,
                grant,
                revoke,
                attribute_hash: input
                    .mailboxes
                    .get(m)
                    .and_then(|mb| mb.attribute_hash.as_deref().map(str::to_owned)),
            },
        });
    }

    let owned = input.state.len();
    let allowed = input.max_removals.allowed(owned);
    let guard = if input.group_entries == 0 && owned > 0 {
        Some(format!(
            "the group search returned no groups while this tool holds {owned} send-as grants; check \
             groups.search_base, or run once with --force"
        ))
    } else if revokes as u64 > allowed {
        Some(format!(
            "{revokes} send-as grants would be taken back (sync.max_removals = {} allows {allowed} of {owned} \
             held). Check the group search; if this is intended, run once with --force or raise sync.max_removals",
            input.max_removals
        ))
    } else {
        None
    };
    if p.guard.is_none() {
        p.guard = guard;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{MIB, Mailbox};

    fn mailbox(address: &str) -> Mailbox {
        Mailbox {
            username: address.into(),
            quota_bytes: MIB,
            active: 1,
            ..Mailbox::default()
        }
    }

    struct World {
        mailboxes: Mailboxes,
        aliases: Vec<MailcowAlias>,
        groups: Vec<DirGroup>,
        lists: SendAsLists,
        state: GrantState,
        not_synced: BTreeSet<String>,
        partial_view: bool,
    }

    impl World {
        fn new() -> World {
            World {
                mailboxes: Mailboxes::from_list(
                    ["a@x.org", "b@x.org", "c@x.org", "info@x.org"]
                        .iter()
                        .map(|m| mailbox(m))
                        .collect(),
                ),
                aliases: Vec::new(),
                groups: vec![group("g", "info@x.org", &["a@x.org", "b@x.org"])],
                lists: ["a@x.org", "b@x.org", "c@x.org"]
                    .iter()
                    .map(|m| (m.to_string(), Some(Vec::new())))
                    .collect(),
                state: GrantState::new(),
                not_synced: BTreeSet::new(),
                partial_view: false,
            }
        }
        fn plan(&self) -> AliasPlan {
            let mut p = AliasPlan::default();
            plan_grants(
                &GrantInputs {
                    groups: &self.groups,
                    group_entries: self.groups.len(),
                    mailboxes: &self.mailboxes,
                    aliases: &self.aliases,
                    lists: &self.lists,
                    state: &self.state,
                    not_synced: &self.not_synced,
                    protected: &BTreeSet::new(),
                    scope: &BTreeSet::new(),
                    partial_view: self.partial_view,
                    max_removals: MaxRemovals::Count(10),
                },
                &mut p,
            );
            p
        }
        fn grant(&mut self, m: &str, a: &str) {
            self.state.insert((m.into(), a.into()), "group:g".into());
        }
    }

    fn group(uid: &str, mail: &str, members: &[&str]) -> DirGroup {
        DirGroup {
            uid: uid.into(),
            dn: format!("cn={uid}"),
            mail: mail.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn send_as(p: &AliasPlan, m: &str) -> (Vec<String>, Vec<String>) {
        let a = p.actions.iter().find(|a| a.address == m).expect("an action");
        match &a.kind {
            AliasActionKind::SendAs { new, revoke, .. } => (new.clone(), revoke.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn members_get_the_group_address_and_others_entries_are_kept() {
        let mut w = World::new();
        w.lists
            .insert("a@x.org".into(), Some(vec!["@y.org".into(), "c@x.org".into()]));
        let p = w.plan();
        assert_eq!(p.actions.len(), 2, "{:?}", p.actions);
        assert_eq!(send_as(&p, "a@x.org").0, ["@y.org", "c@x.org", "info@x.org"]);
        assert_eq!(send_as(&p, "b@x.org").0, ["info@x.org"]);
        // Once granted and recorded: nothing to do.
        w.lists.insert(
            "a@x.org".into(),
            Some(vec!["@y.org".into(), "c@x.org".into(), "info@x.org".into()]),
        );
        w.lists.insert("b@x.org".into(), Some(vec!["info@x.org".into()]));
        w.grant("a@x.org", "info@x.org");
        w.grant("b@x.org", "info@x.org");
        let p = w.plan();
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.unchanged, 2);
    }

    #[test]
    fn a_member_who_leaves_loses_only_our_grant() {
        let mut w = World::new();
        w.groups = vec![group("g", "info@x.org", &["b@x.org"])];
        w.lists
            .insert("a@x.org".into(), Some(vec!["c@x.org".into(), "info@x.org".into()]));
        w.lists.insert("b@x.org".into(), Some(vec!["info@x.org".into()]));
        w.grant("a@x.org", "info@x.org");
        w.grant("b@x.org", "info@x.org");
        let p = w.plan();
        assert_eq!(
            send_as(&p, "a@x.org"),
            (vec!["c@x.org".into()], vec!["info@x.org".into()])
        );
        assert_eq!(p.actions.len(), 1);
        // In a partial view the right stays.
        w.partial_view = true;
        let p = w.plan();
        assert!(p.actions.is_empty());
        assert_eq!(p.held_back, 1);
    }

    #[test]
    fn an_entry_someone_else_made_is_neither_recorded_nor_taken_out() {
        let mut w = World::new();
        w.lists.insert("a@x.org".into(), Some(vec!["info@x.org".into()]));
        w.lists.insert("b@x.org".into(), Some(vec!["@x.org".into()]));
        let p = w.plan();
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.unchanged, 2);
        // a leaves the group: its entry was not ours, so it stays.
        w.groups = vec![group("g", "info@x.org", &["b@x.org"])];
        assert!(w.plan().actions.is_empty());
    }

    #[test]
    fn an_unreadable_list_is_never_written() {
        let mut w = World::new();
        w.lists.insert("a@x.org".into(), None);
        let p = w.plan();
        assert_eq!(p.actions.len(), 1, "b only: {:?}", p.actions);
        assert_eq!(p.grant_failures.len(), 1);
        assert!(
            p.grant_failures[0].reason.contains("2026-07a"),
            "{:?}",
            p.grant_failures
        );
    }

    #[test]
    fn the_address_must_exist_and_a_sending_alias_already_covers_its_targets() {
        let mut w = World::new();
        w.groups = vec![group("g", "team@x.org", &["a@x.org", "b@x.org"])];
        let p = w.plan();
        assert!(p.actions.is_empty());
        assert!(
            p.grant_failures[0].reason.contains("neither a mailbox nor an alias"),
            "{:?}",
            p.failures
        );
        w.aliases.push(MailcowAlias {
            id: 4,
            address: "team@x.org".into(),
            goto: "a@x.org".into(),
            active: true,
            sender_allowed: true,
        });
        let p = w.plan();
        assert!(p.grant_failures.is_empty());
        assert_eq!(p.actions.len(), 1, "a sends as team@ through the alias already");
        assert_eq!(send_as(&p, "b@x.org").0, ["team@x.org"]);
    }

    #[test]
    fn vanished_groups_are_guarded_and_gone_mailboxes_forgotten() {
        let mut w = World::new();
        w.grant("a@x.org", "info@x.org");
        w.grant("gone@x.org", "info@x.org");
        w.lists.insert("a@x.org".into(), Some(vec!["info@x.org".into()]));
        w.groups.clear();
        let p = w.plan();
        assert!(p.guard.as_deref().unwrap_or("").contains("no groups"), "{:?}", p.guard);
        assert_eq!(p.grants_forget, [("gone@x.org".to_string(), "info@x.org".to_string())]);
        // A member not synced this pass keeps its grant.
        w.groups = vec![group("g", "info@x.org", &["b@x.org"])];
        w.not_synced.insert("a@x.org".into());
        w.groups[0].members.push("a@x.org".into());
        let p = w.plan();
        assert!(p.actions.iter().all(|a| a.address != "a@x.org"), "{:?}", p.actions);
    }
}
