//! The pure send-as plan (`groups.as: "sender_acl"`): each member of a group with an address
//! may send as that address, through the member mailbox's `sender_acl` list.
//!
//! mailcow's `edit/mailbox` replaces a mailbox's whole list (docs/mailcow-api-sender-acl.md),
//! so a change is written as the list mailcow returned with only this tool's entries added
//! or taken out. The state database remembers which (mailbox, address) grants this tool
//! made: only those are ever taken out; an entry someone else made is never touched, even
//! when it equals one a group wants. A mailcow that does not return the list (older than
//! 2026-07a) gets no send-as writes at all: writing blind would drop entries we cannot see.

use std::collections::BTreeSet;

use crate::core::aliases::{AliasAction, AliasActionKind, AliasPlan};
use crate::core::model::{DirGroup, Mailboxes, MailcowAlias, domain_of};
use crate::core::plan::PlannedFailure;
use crate::core::policy::MaxRemovals;

/// The grants this tool made, sorted by mailbox and address (the state database's order).
pub type GrantState = Vec<SenderGrant>;

/// Each mailbox's internal send-as list (lowercased) as `get/mailbox/{mailbox}` returned it,
/// sorted by mailbox, for every mailbox of [`mailboxes_to_read`] that mailcow still has;
/// `None`: not known (mailcow's answer has no `sender_acl` field, before 2026-07a, or the
/// address cannot be looked up by name).
pub type SendAsLists = Vec<(String, Option<Vec<String>>)>;

/// One grant row of the state database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderGrant {
    pub mailbox: String,
    pub send_as: String,
    /// `group:<uid>`.
    pub owner: String,
}

/// The mailboxes whose lists the plan needs, sorted: every member mailbox of a group with an
/// address, and every mailbox holding a grant of ours, that mailcow has.
pub fn mailboxes_to_read<'a>(groups: &'a [DirGroup], state: &'a GrantState, mailboxes: &Mailboxes) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for g in groups {
        out.extend(g.members.iter().map(String::as_str));
    }
    out.extend(state.iter().map(|r| r.mailbox.as_str()));
    out.retain(|m| mailboxes.get(m).is_some());
    out.sort_unstable();
    out.dedup();
    out
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
    list.iter()
        .any(|e| e == "*" || e == address || e.strip_prefix('@') == Some(domain_of(address)))
}

fn fail(p: &mut AliasPlan, address: &str, reason: &str) {
    p.grant_failures.push(PlannedFailure {
        address: address.to_owned(),
        reason: reason.to_owned(),
    });
}

/// The send-as plan, as alias-plan actions (`AliasActionKind::SendAs`, one per member
/// mailbox whose list changes) and rows, merged into `p`.
pub fn plan_grants(input: &GrantInputs<'_>, p: &mut AliasPlan) {
    let in_scope = |a: &str| input.scope.is_empty() || input.scope.contains(domain_of(a));
    // Each group whose address mailcow has, with the alias at that address if there is one.
    let mut usable: Vec<(&DirGroup, Option<&MailcowAlias>)> = Vec::new();
    for g in input.groups {
        let alias = input.aliases.iter().find(|a| a.address == g.mail);
        if alias.is_some() || input.mailboxes.get(&g.mail).is_some() {
            usable.push((g, alias));
        } else if !g.members.is_empty() {
            let reason = format!(
                "send-as for group:{}: {} is neither a mailbox nor an alias in mailcow; create it there first",
                g.uid, g.mail
            );
            fail(p, &g.mail, &reason);
        }
    }
    // The rows of mailboxes mailcow no longer has: mailcow deleted their entries with them.
    for r in input.state {
        if input.lists.binary_search_by(|(k, _)| k.cmp(&r.mailbox)).is_err() {
            if input.partial_view {
                p.held_back += 1;
            } else {
                p.grants_forget.push((r.mailbox.clone(), r.send_as.clone()));
            }
        }
    }
    let mut revokes = 0usize;
    for (m, read) in input.lists {
        let m = m.as_str();
        if input.not_synced.contains(m) || !in_scope(m) {
            continue;
        }
        // (address, uid) of the groups that want m to send as their address.
        let mut want: Vec<(&str, &str)> = Vec::new();
        for (g, alias) in &usable {
            if g.mail == m || g.members.binary_search_by(|x| x.as_str().cmp(m)).is_err() {
                continue;
            }
            if want.iter().any(|(a, _)| *a == g.mail) {
                continue;
            }
            // An alias that lets its targets send as it already does (mailcow stores no entry
            // for it: functions.mailbox.inc.php 3384).
            let fixed =
                alias.is_some_and(|a| a.sender_allowed && a.goto.split(',').any(|t| t.trim().eq_ignore_ascii_case(m)));
            if fixed {
                p.unchanged += 1;
            } else {
                want.push((&g.mail, &g.uid));
            }
        }
        let mine: Vec<&SenderGrant> = input.state.iter().filter(|r| r.mailbox == m).collect();
        let Some(list) = read else {
            if !want.is_empty() || !mine.is_empty() {
                fail(
                    p,
                    m,
                    "send-as not changed: mailcow did not return this mailbox's sender_acl list (mailcow before \
                     2026-07a, or an address it cannot look up by name), which an edit replaces whole",
                );
            }
            continue;
        };
        let mut grant: Vec<(String, String)> = Vec::new();
        for (a, uid) in &want {
            let ours = mine.iter().find(|r| r.send_as == *a);
            if list.iter().any(|e| e == a) && ours.is_some() {
                p.unchanged += 1;
                let old = ours.map_or("", |r| r.owner.as_str());
                if old.strip_prefix("group:") != Some(*uid) {
                    p.grants_reown.push(SenderGrant {
                        mailbox: m.to_owned(),
                        send_as: (*a).to_owned(),
                        owner: format!("group:{uid}"),
                    });
                }
            } else if covers(list, a) {
                // Someone else's entry, or a wider one (`@domain`, `*`): nothing to add.
                p.unchanged += 1;
            } else {
                grant.push(((*a).to_owned(), format!("group:{uid}")));
            }
        }
        let mut revoke: Vec<String> = Vec::new();
        for r in &mine {
            if want.iter().any(|(a, _)| r.send_as == *a) || input.protected.contains(&r.owner) {
                continue;
            }
            if input.partial_view {
                p.held_back += 1;
            } else if list.contains(&r.send_as) {
                revoke.push(r.send_as.clone());
            } else {
                p.grants_forget.push((r.mailbox.clone(), r.send_as.clone()));
            }
        }
        if grant.is_empty() && revoke.is_empty() {
            continue;
        }
        revokes += revoke.len();
        let mut new: Vec<String> = Vec::new();
        for e in list.iter().chain(grant.iter().map(|(a, _)| a)) {
            if !revoke.contains(e) && !new.contains(e) {
                new.push(e.clone());
            }
        }
        let mut owners: Vec<&str> = grant.iter().map(|(_, o)| o.as_str()).collect();
        owners.extend(
            mine.iter()
                .filter(|r| revoke.contains(&r.send_as))
                .map(|r| r.owner.as_str()),
        );
        owners.sort_unstable();
        owners.dedup();
        p.actions.push(AliasAction {
            address: m.to_owned(),
            owner: owners.join(","),
            kind: AliasActionKind::SendAs {
                old: list.clone(),
                new,
                grant,
                revoke,
            },
        });
    }

    let owned = input.state.len();
    let allowed = input.max_removals.allowed(owned);
    if p.guard.is_some() {
        return;
    }
    if input.group_entries == 0 && owned > 0 {
        p.guard = Some(format!(
            "the group search returned no groups while {owned} send-as grants are held; check \
             groups.search_base, or run once with --force"
        ));
    } else if revokes as u64 > allowed {
        p.guard = Some(format!(
            "{revokes} send-as grants would be taken back (sync.max_removals = {} allows {allowed} of {owned}); \
             if this is intended, run once with --force or raise sync.max_removals",
            input.max_removals
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::aliases::tests::mailbox;

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
            self.state.push(SenderGrant {
                mailbox: m.into(),
                send_as: a.into(),
                owner: "group:g".into(),
            });
            self.state
                .sort_by(|x, y| (&x.mailbox, &x.send_as).cmp(&(&y.mailbox, &y.send_as)));
        }
        fn list(&mut self, m: &str, list: Option<Vec<&str>>) {
            let list = list.map(|l| l.into_iter().map(str::to_owned).collect());
            match self.lists.binary_search_by(|(k, _)| k.as_str().cmp(m)) {
                Ok(i) => self.lists[i].1 = list,
                Err(i) => self.lists.insert(i, (m.to_owned(), list)),
            }
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
        w.list("a@x.org", Some(vec!["@y.org", "c@x.org"]));
        let p = w.plan();
        assert_eq!(p.actions.len(), 2, "{:?}", p.actions);
        assert_eq!(send_as(&p, "a@x.org").0, ["@y.org", "c@x.org", "info@x.org"]);
        assert_eq!(send_as(&p, "b@x.org").0, ["info@x.org"]);
        // Once granted and recorded: nothing to do.
        w.list("a@x.org", Some(vec!["@y.org", "c@x.org", "info@x.org"]));
        w.list("b@x.org", Some(vec!["info@x.org"]));
        w.grant("a@x.org", "info@x.org");
        w.grant("b@x.org", "info@x.org");
        let p = w.plan();
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.unchanged, 2);
    }

    #[test]
    fn a_grant_mailcow_refused_is_not_recorded() {
        let mut w = World::new();
        w.groups.push(group("h", "c@x.org", &["a@x.org"]));
        let p = w.plan();
        let i = p.actions.iter().position(|a| a.address == "a@x.org").unwrap();
        let mut confirmed = vec![Some(0); p.actions.len()];
        // Bit 0: the first grant of a@ (info@x.org: the groups in the order read) was refused.
        confirmed[i] = Some(1);
        let delta = crate::core::aliases::settle_aliases(&p, &confirmed);
        let a: Vec<&str> = delta
            .grants_put
            .iter()
            .filter(|g| g.mailbox == "a@x.org")
            .map(|g| g.send_as.as_str())
            .collect();
        assert_eq!(a, ["c@x.org"], "{:?}", p.actions[i]);
        assert!(delta.grants_put.iter().any(|g| g.mailbox == "b@x.org"));
    }

    #[test]
    fn a_member_who_leaves_loses_only_our_grant() {
        let mut w = World::new();
        w.groups = vec![group("g", "info@x.org", &["b@x.org"])];
        w.list("a@x.org", Some(vec!["c@x.org", "info@x.org"]));
        w.list("b@x.org", Some(vec!["info@x.org"]));
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
        w.list("a@x.org", Some(vec!["info@x.org"]));
        w.list("b@x.org", Some(vec!["@x.org"]));
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
        w.list("a@x.org", None);
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
        w.list("a@x.org", Some(vec!["info@x.org"]));
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
