//! Unit tests of the pure planner: typed-in inputs, exact plans out.

use std::sync::Arc;

use super::*;
use crate::core::policy::{Fingerprinter, IdpMailboxes, MaxRemovals, Offboard, fingerprint};

/// The planner as the tests call it, with the mailboxes as a list. Each plan is made three
/// times: with the directory and the mailboxes held whole, with the mailboxes held against
/// the state, and with both held against it (as a pass holds them). All must be the same
/// plan, except that a create for a user whose hash was not held says so.
fn plan(
    dir: &Directory,
    mailboxes: &[Mailbox],
    domains: &[Domain],
    state: &ManagedRows,
    policy: &Policy,
    now: i64,
) -> Plan {
    let rows = Arc::new(state.clone());
    let mut held = Mailboxes::holding(rows.clone());
    for mailbox in mailboxes {
        held.add(mailbox.clone());
    }
    held.finish();
    let whole = Mailboxes::from_list(mailboxes.to_vec());
    assert_eq!(held.to_list(), whole.to_list(), "the same mailboxes either way");
    let p = super::plan(dir, &whole, domains, state, policy, now);
    assert_eq!(
        p,
        super::plan(dir, &held, domains, state, policy, now),
        "the same plan either way"
    );

    let elide = matches!(policy.password, PasswordMode::Changed | PasswordMode::Create);
    let held_dir = dir.held_against(rows.clone(), elide.then(|| policy.fingerprinter.clone()));
    assert_eq!(held_dir.len(), dir.len());
    // The same state for all three, as a pass shares it: users held as rows are then
    // checked without being rebuilt.
    assert!(held_dir.shares(&rows) && held.shares(&rows));
    let mut from_rows = super::plan(&held_dir, &held, domains, &rows, policy, now);
    for action in &mut from_rows.actions {
        if let ActionKind::Create {
            password: password @ NewPassword::Elided,
            ..
        } = &mut action.kind
        {
            let user = dir.user(&action.uid).expect("a user of the directory");
            *password = NewPassword::Ldap(user.password.clone().expect("an elided hash was there"));
        }
    }
    assert_eq!(p, from_rows, "the same plan with the directory held against the state");

    // A pass takes the plan in chunks: the smallest chunks make the same plan.
    let inputs = PlanInputs {
        dir: &held_dir,
        mailboxes: &held,
        domains,
        state: &rows,
        policy,
        now,
    };
    let mut chunked = Plan::default();
    let mut chunks = 0;
    for chunk in user_chunks(inputs, 1) {
        assert!(
            chunk.actions.len() <= 3,
            "one user's actions at most in a chunk of one item"
        );
        chunks += 1;
        chunked.absorb(chunk);
    }
    chunked.absorb(removals(inputs));
    assert!(chunks <= dir.len().max(1), "{chunks} chunks for {} users", dir.len());
    for action in &mut chunked.actions {
        if let ActionKind::Create {
            password: password @ NewPassword::Elided,
            ..
        } = &mut action.kind
        {
            let user = dir.user(&action.uid).expect("a user of the directory");
            *password = NewPassword::Ldap(user.password.clone().expect("an elided hash was there"));
        }
    }
    assert_eq!(p, chunked, "the same plan in chunks of one item");
    p
}

const NOW: i64 = 1_800_000_000;
const KEY: &[u8] = b"test-key";

fn policy() -> Policy {
    Policy {
        on_removed: OnRemoved::Disable,
        delete_after_days: 30,
        max_removals: MaxRemovals::Count(10),
        password: PasswordMode::Changed,
        authsource: Authsource::Mailcow,
        tag: Some("ldap-sync".into()),
        adopt: Adopt::Tagged,
        idp_mailboxes: IdpMailboxes::Protect,
        on_address_change: AddressChange::Rename,
        // Off here: the offboarding has its own tests below.
        offboard: Offboard::default(),
        listed_by_original_tool: BTreeSet::new(),
        default_quota_mib: None,
        domains: BTreeSet::new(),
        create_domains: None,
        fingerprinter: Fingerprinter::new(KEY),
        partial_view: None,
        changes_only: None,
        rows_owned: None,
        access_managed: 0,
        templates: Vec::new(),
    }
}

fn user(uid: &str) -> DirUser {
    DirUser {
        uid: uid.into(),
        dn: format!("uid={uid},ou=people,dc=example,dc=org"),
        mail: format!("{uid}@example.org"),
        name: Some(format!("User {uid}")),
        password: Some(Secret::new(format!("{{SSHA}}hash-of-{uid}"))),
        password_elided: false,
        quota_mib: Some(1024),
        active: None,
        tls_in: None,
        tls_out: None,
        aliases: Vec::new(),
        aliases_listed: false,
        access: None,
        template: None,
    }
}

fn dir(users: Vec<DirUser>) -> Directory {
    Directory::from_users(users)
}

/// The mailbox mailcow would hold for `u` after our create.
fn mailbox_of(u: &DirUser) -> Mailbox {
    Mailbox {
        username: u.mail.clone().into(),
        name: u.name.clone().unwrap_or_default().into(),
        quota_bytes: u.quota_mib.unwrap_or(0) * MIB,
        active: u.active.unwrap_or(1),
        authsource: "mailcow".into(),
        tls_in: false,
        tls_out: false,
        tagged: true,
        attribute_hash: None,
        access: crate::core::access::ALL_ON,
    }
}

/// The state row recorded after a confirmed create of `u`.
fn row_of(u: &DirUser) -> ManagedMailbox {
    ManagedMailbox {
        uid: u.uid.clone(),
        address: u.mail.clone(),
        dn: u.dn.clone(),
        name: u.name.clone(),
        quota_mib: u.quota_mib,
        active: u.active,
        tls_in: None,
        tls_out: None,
        password_fp: u.password.as_ref().map(|p| fingerprint(KEY, p)),
        authsource: Some("mailcow".into()),
        first_seen: NOW - 60,
        last_seen: NOW - 60,
        disabled_at: None,
        template: None,
    }
}

fn domains() -> Vec<Domain> {
    vec![Domain {
        name: "example.org".into(),
        active: true,
        def_quota_bytes: 3072 * MIB,
        max_quota_bytes: 10240 * MIB,
    }]
}

fn state_of(rows: &[ManagedMailbox]) -> ManagedRows {
    ManagedRows::from_rows(rows.iter().cloned())
}

/// A directory, mailcow and state that are fully in sync, for `n` users.
fn synced(n: usize) -> (Vec<DirUser>, Vec<Mailbox>, ManagedRows) {
    let users: Vec<DirUser> = (0..n).map(|i| user(&format!("u{i:03}"))).collect();
    let mailboxes = users.iter().map(mailbox_of).collect();
    let state = state_of(&users.iter().map(row_of).collect::<Vec<_>>());
    (users, mailboxes, state)
}

fn verbs(p: &Plan) -> Vec<(&str, &str)> {
    p.actions.iter().map(|a| (a.kind.verb(), a.address.as_str())).collect()
}

#[test]
fn new_user_is_created_with_explicit_quota_tag_and_hash() {
    let mut u = user("alice");
    u.quota_mib = None;
    let p = plan(
        &dir(vec![u.clone()]),
        &[],
        &domains(),
        &ManagedRows::new(),
        &policy(),
        NOW,
    );
    assert_eq!(verbs(&p), vec![("create", "alice@example.org")]);
    let ActionKind::Create {
        quota_mib,
        tags,
        password,
        password_fp,
        active,
        ..
    } = &p.actions[0].kind
    else {
        panic!("not a create")
    };
    assert_eq!(
        *quota_mib, 3072,
        "the domain's default quota, never an omitted (unlimited) one"
    );
    assert_eq!(tags, &vec!["ldap-sync".to_string()]);
    assert_eq!(*active, 1);
    assert_eq!(password, &NewPassword::Ldap(u.password.clone().unwrap()));
    assert_eq!(
        password_fp.as_deref(),
        Some(fingerprint(KEY, u.password.as_ref().unwrap()).as_str())
    );
}

#[test]
fn unchanged_directory_plans_nothing_and_writes_no_state() {
    let (users, mailboxes, state) = synced(50);
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy(), NOW);
    assert!(p.actions.is_empty(), "{:?}", verbs(&p));
    assert!(p.state_ops.is_empty(), "{:?}", p.state_ops);
    assert_eq!(p.unchanged, 50);
    assert!(p.guard.is_none());
    assert!(settle(&state, &p, &[]).is_empty());
}

#[test]
fn each_field_changed_alone_gives_one_action() {
    type Change = fn(&mut DirUser);
    let cases: [(&str, Change); 3] = [
        ("name", |u| u.name = Some("New Name".into())),
        ("quota", |u| u.quota_mib = Some(2048)),
        ("active", |u| u.active = Some(0)),
    ];
    for (field, change) in cases {
        let (mut users, mailboxes, state) = synced(3);
        change(&mut users[1]);
        let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy(), NOW);
        assert_eq!(verbs(&p), vec![("update", "u001@example.org")], "{field}");
        let ActionKind::Update { changes, add_tag, .. } = &p.actions[0].kind else {
            panic!()
        };
        assert_eq!(changes.len(), 1, "{field}");
        assert_eq!(changes[0].field.as_str(), field);
        assert!(add_tag.is_none());
        assert_eq!(p.unchanged, 2);
    }
}

#[test]
fn password_change_is_one_password_action() {
    let (mut users, mailboxes, state) = synced(2);
    users[0].password = Some(Secret::new("{SSHA}new-hash"));
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy(), NOW);
    assert_eq!(verbs(&p), vec![("password", "u000@example.org")]);
    let delta = settle(&state, &p, &[true]);
    assert_eq!(
        delta.put["u000"].password_fp,
        Some(fingerprint(KEY, &Secret::new("{SSHA}new-hash")))
    );
    assert_eq!(
        settle(&state, &p, &[false]),
        StateDelta::default(),
        "an unconfirmed password leaves the row"
    );
}

#[test]
fn a_managed_mailbox_gone_from_mailcow_is_created_again_with_its_hash_read_again() {
    let (users, mut mailboxes, state) = synced(2);
    mailboxes.remove(1);
    let rows = Arc::new(state.clone());
    let held = dir(users.clone()).held_against(rows.clone(), Some(policy().fingerprinter));
    let p = super::plan(
        &held,
        &Mailboxes::from_list(mailboxes),
        &domains(),
        &state,
        &policy(),
        NOW,
    );
    assert_eq!(verbs(&p), vec![("create", "u001@example.org")]);
    let ActionKind::Create {
        password, password_fp, ..
    } = &p.actions[0].kind
    else {
        panic!("{:?}", p.actions[0].kind)
    };
    assert_eq!(
        *password,
        NewPassword::Elided,
        "the hash was not held: read again before applying"
    );
    let recorded = state.get("u001").unwrap().password_fp;
    assert!(recorded.is_some());
    assert_eq!(*password_fp, recorded, "the fingerprint the row holds");
    assert_eq!(p.actions[0].row.as_ref().unwrap().password_fp, recorded);
    assert_eq!(p.unchanged, 1);
}

/// Users that LDAP leaves as their rows record them, with a change on the mailcow side or in
/// the state: each must be planned as if the user were held whole (the wrapper compares).
#[test]
fn changes_beside_users_held_as_rows_are_all_seen() {
    type Change = fn(&mut Vec<DirUser>, &mut Vec<Mailbox>, &mut Vec<ManagedMailbox>, &mut Policy);
    let cases: Vec<(&str, Change, Vec<&str>, usize)> = vec![
        (
            "quota changed in mailcow",
            |_, m, _, _| m[1].quota_bytes = 2048 * MIB,
            vec!["update"],
            0,
        ),
        (
            "disabled by this tool, the user back",
            |_, m, r, _| {
                r[1].disabled_at = Some(NOW - 100);
                m[1].active = 0;
            },
            vec!["update"],
            0,
        ),
        (
            "disabled by this tool, enabled by hand",
            |_, _, r, _| r[1].disabled_at = Some(NOW - 100),
            vec![],
            1,
        ),
        (
            "active mapped, changed in mailcow",
            |u, m, r, _| {
                u[1].active = Some(1);
                r[1].active = Some(1);
                m[1].active = 0;
            },
            vec!["update"],
            0,
        ),
        // Written before and kept by mailcow: a warning only (see the authsource tests).
        (
            "authsource changed in mailcow",
            |_, m, _, _| m[1].authsource = "ldap".into(),
            vec![],
            0,
        ),
        (
            "authsource changed, never written",
            |_, m, r, _| {
                m[1].authsource = "ldap".into();
                r[1].authsource = None;
            },
            vec!["update"],
            0,
        ),
        (
            "authsource never recorded",
            |_, _, r, _| r[1].authsource = None,
            vec![],
            1,
        ),
        (
            "tag removed in mailcow",
            |_, m, _, _| m[1].tagged = false,
            vec!["update"],
            0,
        ),
        (
            "TLS mapped, changed in mailcow",
            |u, m, r, _| {
                u[1].tls_in = Some(true);
                r[1].tls_in = Some(true);
                m[1].tls_in = false;
            },
            vec!["tls"],
            0,
        ),
        (
            "TLS out mapped, changed in mailcow",
            |u, m, r, _| {
                u[1].tls_out = Some(false);
                r[1].tls_out = Some(false);
                m[1].tls_out = true;
            },
            vec!["tls"],
            0,
        ),
        (
            "last seen two days ago",
            |_, _, r, _| r[1].last_seen = NOW - 2 * 24 * 3600,
            vec![],
            1,
        ),
        (
            "default quota, mailbox smaller",
            |u, _, r, p| {
                u[1].quota_mib = None;
                r[1].quota_mib = None;
                p.default_quota_mib = Some(4096);
            },
            vec!["update"],
            0,
        ),
    ];
    for (what, change, verbs_wanted, puts) in cases {
        let (mut users, mut mailboxes, state) = synced(3);
        let mut rows: Vec<ManagedMailbox> = state.values().collect();
        let mut pol = policy();
        change(&mut users, &mut mailboxes, &mut rows, &mut pol);
        let state = state_of(&rows);
        let p = plan(&dir(users), &mailboxes, &domains(), &state, &pol, NOW);
        let got: Vec<&str> = p.actions.iter().map(|a| a.kind.verb()).collect();
        assert_eq!(got, verbs_wanted, "{what}");
        assert!(p.actions.iter().all(|a| a.uid == "u001"), "{what}");
        assert_eq!(p.state_ops.len(), puts, "{what}: {:?}", p.state_ops);
        assert_eq!(p.unchanged, 3 - got.len().min(1), "{what}");
    }
    // Out of scope: nothing at all, held as rows or not.
    let (users, mailboxes, state) = synced(3);
    let mut pol = policy();
    pol.domains = BTreeSet::from(["other.org".to_owned()]);
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &pol, NOW);
    assert_eq!((p.actions.len(), p.state_ops.len(), p.unchanged), (0, 0, 0));
}

#[test]
fn password_modes() {
    let (mut users, mailboxes, state) = synced(1);
    users[0].password = Some(Secret::new("{SSHA}other"));
    for (mode, expect) in [
        (PasswordMode::Changed, 1),
        (PasswordMode::Always, 1),
        (PasswordMode::Create, 0),
        (PasswordMode::Never, 0),
        (PasswordMode::Random, 0),
    ] {
        let p = plan(
            &dir(users.clone()),
            &mailboxes,
            &domains(),
            &state,
            &Policy {
                password: mode,
                ..policy()
            },
            NOW,
        );
        assert_eq!(p.count("password"), expect, "{mode:?}");
    }
    let (users, mailboxes, state) = synced(1);
    let p = plan(
        &dir(users),
        &mailboxes,
        &domains(),
        &state,
        &Policy {
            password: PasswordMode::Always,
            ..policy()
        },
        NOW,
    );
    assert_eq!(p.count("password"), 1, "always sends even when unchanged");
}

#[test]
fn no_password_for_non_mailcow_mailboxes() {
    let (mut users, mut mailboxes, state) = synced(1);
    users[0].password = Some(Secret::new("{SSHA}other"));
    mailboxes[0].authsource = "ldap".into();
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy(), NOW);
    assert!(p.actions.is_empty());
}

#[test]
fn existing_mailbox_is_adopted_with_the_tag() {
    let (users, mut mailboxes, _) = synced(1);
    mailboxes[0].tagged = false;
    let by_address = Policy {
        adopt: Adopt::ByAddress,
        ..policy()
    };
    let p = plan(
        &dir(users.clone()),
        &mailboxes,
        &domains(),
        &ManagedRows::new(),
        &by_address,
        NOW,
    );
    assert_eq!(
        verbs(&p),
        vec![("update", "u000@example.org"), ("password", "u000@example.org")]
    );
    assert!(
        !p.warnings[0].needs_admin
            && p.warnings[0]
                .text
                .contains("adopting the existing mailbox by its address"),
        "{:?}",
        p.warnings
    );
    let ActionKind::Update { changes, add_tag, .. } = &p.actions[0].kind else {
        panic!()
    };
    assert!(changes.is_empty());
    assert_eq!(add_tag.as_deref(), Some("ldap-sync"));
    let delta = settle(&ManagedRows::new(), &p, &[true, true]);
    let row = &delta.put["u000"];
    assert_eq!(row.address, "u000@example.org");
    assert!(
        row.password_fp.is_some(),
        "the confirmed password merges into the adopted row"
    );
    let delta = settle(&ManagedRows::new(), &p, &[false, true]);
    assert!(
        delta.put.is_empty(),
        "no adoption recorded when the tagging edit failed"
    );
}

#[test]
fn adoption_without_tag_or_changes_is_recorded_without_writes() {
    let (mut users, mut mailboxes, _) = synced(1);
    users[0].password = None;
    mailboxes[0].tagged = false;
    let p = plan(
        &dir(users),
        &mailboxes,
        &domains(),
        &ManagedRows::new(),
        &Policy {
            tag: None,
            adopt: Adopt::ByAddress,
            ..policy()
        },
        NOW,
    );
    assert!(p.actions.is_empty());
    assert!(matches!(&p.state_ops[..], [StateOp::Put(row)] if row.uid == "u000"));
}

#[test]
fn only_tagged_or_original_tool_mailboxes_are_adopted_by_default() {
    let (users, mut mailboxes, _) = synced(2);
    mailboxes[0].tagged = false;
    mailboxes[1].tagged = false;
    let p = plan(
        &dir(users.clone()),
        &mailboxes,
        &domains(),
        &ManagedRows::new(),
        &policy(),
        NOW,
    );
    assert!(p.actions.is_empty() && p.state_ops.is_empty(), "{:?}", p);
    assert_eq!(p.skipped.len(), 2);
    assert!(p.skipped[0].reason.contains("did not make"), "{:?}", p.skipped);
    // Listed by the original tool: taken over (and tagged).
    let listed = Policy {
        listed_by_original_tool: BTreeSet::from(["u001@example.org".to_owned()]),
        ..policy()
    };
    let p = plan(
        &dir(users.clone()),
        &mailboxes,
        &domains(),
        &ManagedRows::new(),
        &listed,
        NOW,
    );
    assert_eq!(p.skipped.len(), 1);
    assert!(verbs(&p).contains(&("update", "u001@example.org")), "{:?}", verbs(&p));
    // Tagged (made by this tool in a pass that died before its commit): adopted silently.
    mailboxes[0].tagged = true;
    let p = plan(&dir(users), &mailboxes, &domains(), &ManagedRows::new(), &policy(), NOW);
    assert_eq!(p.skipped.len(), 1);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert!(matches!(&p.state_ops[..], [StateOp::Put(row)] if row.uid == "u000"));
}

#[test]
fn removal_policies() {
    for (on_removed, expect) in [
        (OnRemoved::Disable, Some(("disable", Some(0)))),
        (OnRemoved::DisallowLogin, Some(("disallow_login", Some(2)))),
        (OnRemoved::Delete, Some(("delete", None))),
        (OnRemoved::Keep, None),
    ] {
        let (mut users, mailboxes, state) = synced(3);
        users.remove(2);
        // No grace period here: `delete` deletes at once (see the grace tests below).
        let p = plan(
            &dir(users),
            &mailboxes,
            &domains(),
            &state,
            &Policy {
                on_removed,
                delete_after_days: 0,
                ..policy()
            },
            NOW,
        );
        match expect {
            None => assert!(p.actions.is_empty() && p.removals == 0, "{on_removed:?}"),
            Some((verb, active)) => {
                assert_eq!(verbs(&p), vec![(verb, "u002@example.org")], "{on_removed:?}");
                assert_eq!(p.removals, 1);
                let delta = settle(&state, &p, &[true]);
                match active {
                    Some(a) => {
                        assert_eq!(delta.put["u002"].active, Some(a));
                        assert_eq!(delta.put["u002"].disabled_at, Some(NOW));
                    }
                    None => assert!(delta.delete.contains("u002")),
                }
            }
        }
    }
}

const DAY: i64 = 24 * 3600;

/// `delete` with a grace period: the user who left, as the state and mailcow hold them
/// `days_disabled` days after the first disable (`None`: not disabled yet).
fn gone_user(days_disabled: Option<i64>) -> (Vec<DirUser>, Vec<Mailbox>, ManagedRows, Policy) {
    let (mut users, mut mailboxes, mut state) = synced(3);
    users.remove(2);
    if let Some(days) = days_disabled {
        mailboxes[2].active = 0;
        state.edit("u002", |row| {
            row.active = Some(0);
            row.disabled_at = Some(NOW - days * DAY);
        });
    }
    let policy = Policy {
        on_removed: OnRemoved::Delete,
        delete_after_days: 30,
        ..policy()
    };
    (users, mailboxes, state, policy)
}

#[test]
fn delete_disables_first_and_deletes_after_the_grace_period() {
    // Day 0: disabled (a removal under the guard), since now.
    let (users, mailboxes, state, policy) = gone_user(None);
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy, NOW);
    assert_eq!(verbs(&p), vec![("disable", "u002@example.org")]);
    assert_eq!(p.removals, 1);
    assert_eq!(settle(&state, &p, &[true]).put["u002"].disabled_at, Some(NOW));
    assert_eq!(
        deletion_due(NOW, policy.on_removed, policy.delete_after_days),
        Some(NOW + 30 * DAY)
    );

    // Day 29: nothing to do, nothing counted.
    let (users, mailboxes, state, policy) = gone_user(Some(29));
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy, NOW);
    assert!(
        p.actions.is_empty() && p.state_ops.is_empty() && p.removals == 0,
        "{p:?}"
    );

    // Day 30: deleted, and the delete counts against max_removals like a disable.
    let (users, mailboxes, state, policy) = gone_user(Some(30));
    let p = plan(&dir(users.clone()), &mailboxes, &domains(), &state, &policy, NOW);
    assert_eq!(verbs(&p), vec![("delete", "u002@example.org")]);
    assert_eq!(p.removals, 1);
    assert!(settle(&state, &p, &[true]).delete.contains("u002"));
    let strict = Policy {
        max_removals: MaxRemovals::Count(0),
        ..policy
    };
    assert!(
        plan(&dir(users), &mailboxes, &domains(), &state, &strict, NOW)
            .guard
            .is_some()
    );
}

#[test]
fn a_mailbox_enabled_again_by_hand_in_its_grace_period_is_disabled_again_keeping_its_date() {
    let (users, mut mailboxes, state, policy) = gone_user(Some(10));
    mailboxes[2].active = 1;
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy, NOW);
    assert_eq!(verbs(&p), vec![("disable", "u002@example.org")]);
    assert_eq!(
        settle(&state, &p, &[true]).put["u002"].disabled_at,
        Some(NOW - 10 * DAY),
        "the grace period still counts from the first disable"
    );
}

#[test]
fn a_user_back_within_the_grace_period_is_enabled_and_keeps_the_mailbox() {
    let (_, mailboxes, state, policy) = gone_user(Some(29));
    let (all, _, _) = synced(3);
    let p = plan(&dir(all), &mailboxes, &domains(), &state, &policy, NOW);
    assert_eq!(verbs(&p), vec![("update", "u002@example.org")]);
    let ActionKind::Update { changes, .. } = &p.actions[0].kind else {
        panic!("{p:?}")
    };
    assert_eq!((changes[0].field, changes[0].new.clone()), (Field::Active, json!(1)));
    assert_eq!(settle(&state, &p, &[true]).put["u002"].disabled_at, None);
}

#[test]
fn no_grace_period_and_other_policies_have_no_deletion_date() {
    assert_eq!(deletion_due(NOW, OnRemoved::Delete, 0), None);
    assert_eq!(deletion_due(NOW, OnRemoved::Disable, 30), None);
    assert_eq!(deletion_due(NOW, OnRemoved::Delete, u64::MAX), Some(i64::MAX));
}

#[test]
fn unmanaged_mailboxes_are_never_touched() {
    let (users, mut mailboxes, state) = synced(2);
    mailboxes.push(Mailbox {
        username: "postmaster@example.org".into(),
        active: 1,
        ..Mailbox::default()
    });
    let p = plan(
        &dir(users),
        &mailboxes,
        &domains(),
        &state,
        &Policy {
            on_removed: OnRemoved::Delete,
            ..policy()
        },
        NOW,
    );
    assert!(p.actions.is_empty());
}

#[test]
fn already_disabled_mailbox_is_not_disabled_again() {
    let (mut users, mut mailboxes, state) = synced(2);
    users.remove(1);
    mailboxes[1].active = 0;
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy(), NOW);
    assert!(p.actions.is_empty());
    assert_eq!(p.removals, 0);
}

#[test]
fn returning_user_is_re_enabled() {
    let (users, mut mailboxes, mut state) = synced(1);
    mailboxes[0].active = 0;
    state.edit("u000", |row| {
        row.disabled_at = Some(NOW - 100);
        row.active = Some(0);
    });
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy(), NOW);
    assert_eq!(verbs(&p), vec![("update", "u000@example.org")]);
    let ActionKind::Update { changes, .. } = &p.actions[0].kind else {
        panic!()
    };
    assert_eq!(changes[0].field, Field::Active);
    assert_eq!(changes[0].new, json!(1));
    let delta = settle(&state, &p, &[true]);
    assert_eq!(delta.put["u000"].disabled_at, None);
}

#[test]
fn a_skipped_entry_keeps_its_mailbox() {
    let (mut users, mailboxes, state) = synced(2);
    let gone = users.remove(1);
    let mut d = dir(users);
    // The entry is still in LDAP, only unusable (say, a duplicate address).
    d.add_skipped(gone.dn.clone(), "duplicate".into(), Some(gone.uid.clone()), None);
    d.entries += 1;
    let p = plan(&d, &mailboxes, &domains(), &state, &policy(), NOW);
    assert!(p.actions.is_empty());
}

#[test]
fn guard_zero_users() {
    let (_, mailboxes, state) = synced(3);
    let p = plan(&dir(vec![]), &mailboxes, &domains(), &state, &policy(), NOW);
    let guard = p.guard.expect("guard must refuse");
    assert!(
        guard.contains("no users") && guard.contains("3 mailboxes") && guard.contains("--force"),
        "{guard}"
    );
}

#[test]
fn guard_max_removals() {
    let (users, mailboxes, state) = synced(20);
    let keep = users[..15].to_vec();
    let p = plan(
        &dir(keep.clone()),
        &mailboxes,
        &domains(),
        &state,
        &Policy {
            max_removals: MaxRemovals::Count(4),
            ..policy()
        },
        NOW,
    );
    let guard = p.guard.expect("5 removals > 4");
    assert!(
        guard.contains("5 mailboxes would be disabled") && guard.contains("--force"),
        "{guard}"
    );
    let p = plan(
        &dir(keep.clone()),
        &mailboxes,
        &domains(),
        &state,
        &Policy {
            max_removals: MaxRemovals::Count(5),
            ..policy()
        },
        NOW,
    );
    assert!(p.guard.is_none());
    let p = plan(
        &dir(keep),
        &mailboxes,
        &domains(),
        &state,
        &Policy {
            max_removals: MaxRemovals::Percent(10.0),
            ..policy()
        },
        NOW,
    );
    assert!(p.guard.is_some(), "10% of 20 = 2 < 5");
}

#[test]
fn missing_domain_is_a_planned_failure() {
    let mut u = user("bob");
    u.mail = "bob@unknown.test".into();
    let p = plan(&dir(vec![u]), &[], &domains(), &ManagedRows::new(), &policy(), NOW);
    assert!(p.actions.is_empty());
    assert_eq!(p.failures.len(), 1);
    assert!(p.failures[0].reason.contains("unknown.test does not exist in mailcow"));
}

#[test]
fn create_domains_plans_each_missing_domain_once_before_its_first_create() {
    let in_domain = |uid: &str, domain: &str, quota: Option<u64>| DirUser {
        mail: format!("{uid}@{domain}"),
        quota_mib: quota,
        ..user(uid)
    };
    let mut no_hash = in_domain("a3", "skipped.test", None);
    no_hash.password = None;
    let users = vec![
        in_domain("a1", "new.test", None),
        in_domain("a2", "new.test", Some(512)),
        no_hash,
        in_domain("a4", "example.org", None),
        in_domain("a5", "other.test", None),
    ];
    let new = NewDomain {
        default_quota_mib: 2048,
        ..NewDomain::default()
    };
    let on = Policy {
        create_domains: Some(new.clone()),
        ..policy()
    };
    let p = plan(&dir(users.clone()), &[], &domains(), &ManagedRows::new(), &on, NOW);
    assert_eq!(
        verbs(&p),
        vec![
            ("create_domain", "new.test"),
            ("create", "a1@new.test"),
            ("create", "a2@new.test"),
            ("create", "a4@example.org"),
            ("create_domain", "other.test"),
            ("create", "a5@other.test"),
        ],
        "a domain whose only user is skipped is not created"
    );
    assert_eq!(p.actions[0].kind, ActionKind::CreateDomain(new.clone()));
    assert_eq!(p.actions[0].uid, "");
    assert!(p.actions[0].row.is_none());
    let quota = |i: usize| match &p.actions[i].kind {
        ActionKind::Create { quota_mib, .. } => *quota_mib,
        other => panic!("{other:?}"),
    };
    // Without an LDAP quota, the new domain's default, as mailcow's own would be.
    assert_eq!((quota(1), quota(2), quota(3)), (2048, 512, 3072));
    assert!(p.failures.is_empty());
    assert_eq!(p.skipped.len(), 1);

    // A confirmed domain records nothing; its users' creates record their rows.
    let delta = settle(&ManagedRows::new(), &p, &[true; 6]);
    assert_eq!(delta.put.len(), 4);
    assert!(delta.delete.is_empty(), "{:?}", delta.delete);

    // Only domains sync.domains allows.
    let scoped = Policy {
        domains: ["new.test".to_string(), "example.org".to_string()].into(),
        ..on.clone()
    };
    let p = plan(&dir(users.clone()), &[], &domains(), &ManagedRows::new(), &scoped, NOW);
    assert_eq!(
        verbs(&p),
        vec![
            ("create_domain", "new.test"),
            ("create", "a1@new.test"),
            ("create", "a2@new.test"),
            ("create", "a4@example.org"),
        ]
    );

    // Off (the default): those users fail, as before, and nothing is created.
    let p = plan(&dir(users), &[], &domains(), &ManagedRows::new(), &policy(), NOW);
    assert_eq!(verbs(&p), vec![("create", "a4@example.org")]);
    assert_eq!(
        p.failures.len(),
        4,
        "the one without a hash too: the domain is checked first"
    );
    assert!(
        p.failures[0].reason.contains("set sync.create_domains"),
        "{:?}",
        p.failures
    );
}

#[test]
fn new_user_without_usable_hash_is_skipped_unless_random() {
    let mut u = user("carol");
    u.password = None;
    let p = plan(
        &dir(vec![u.clone()]),
        &[],
        &domains(),
        &ManagedRows::new(),
        &policy(),
        NOW,
    );
    assert!(p.actions.is_empty());
    assert_eq!(p.skipped.len(), 1);
    let p = plan(
        &dir(vec![u]),
        &[],
        &domains(),
        &ManagedRows::new(),
        &Policy {
            password: PasswordMode::Random,
            ..policy()
        },
        NOW,
    );
    assert!(matches!(
        &p.actions[0].kind,
        ActionKind::Create {
            password: NewPassword::Random,
            ..
        }
    ));
}

#[test]
fn ou_move_changes_only_the_state_row() {
    let (mut users, mailboxes, state) = synced(1);
    users[0].dn = "uid=u000,ou=moved,dc=example,dc=org".into();
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy(), NOW);
    assert!(p.actions.is_empty());
    let delta = settle(&state, &p, &[]);
    assert_eq!(delta.put["u000"].dn, "uid=u000,ou=moved,dc=example,dc=org");
}

#[test]
fn recreated_entry_with_new_uid_takes_over_the_row() {
    let (mut users, mailboxes, state) = synced(1);
    users[0].uid = "new-uuid".into();
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy(), NOW);
    assert!(p.actions.is_empty(), "{:?}", verbs(&p));
    assert_eq!(p.removals, 0);
    let delta = settle(&state, &p, &[]);
    assert!(delta.delete.contains("u000"));
    assert_eq!(delta.put["new-uuid"].address, "u000@example.org");
    assert!(
        delta.put["new-uuid"].password_fp.is_some(),
        "the fingerprint moves with the row"
    );
}

/// The user of row u000 with a new address.
fn renamed_user(users: &mut [DirUser], mail: &str) {
    users[0].mail = mail.into();
}

#[test]
fn an_address_change_in_the_domain_is_one_rename_and_the_row_follows() {
    let (mut users, mailboxes, state) = synced(2);
    renamed_user(&mut users, "ann.new@example.org");
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy(), NOW);
    assert_eq!(verbs(&p), vec![("rename", "ann.new@example.org")]);
    assert_eq!(
        p.actions[0].kind,
        ActionKind::Rename {
            from: "u000@example.org".into(),
            reactivate: false
        }
    );
    assert_eq!(p.removals, 0, "the old address is not a removal");
    let delta = settle(&state, &p, &[true]);
    assert_eq!(delta.put["u000"].address, "ann.new@example.org");
    assert_eq!(
        delta.put["u000"].password_fp,
        state.get("u000").unwrap().password_fp,
        "the row moves whole"
    );
    assert!(
        settle(&state, &p, &[false]).is_empty(),
        "an unconfirmed rename records nothing"
    );
}

#[test]
fn an_inactive_mailbox_is_renamed_with_reactivation() {
    let (mut users, mut mailboxes, state) = synced(1);
    mailboxes[0].active = 0;
    users[0].active = Some(0);
    renamed_user(&mut users, "ann.new@example.org");
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy(), NOW);
    assert!(
        matches!(p.actions[0].kind, ActionKind::Rename { reactivate: true, .. }),
        "{p:?}"
    );
}

#[test]
fn an_address_change_onto_an_existing_mailbox_skips_the_user_and_changes_nothing() {
    let (mut users, mut mailboxes, state) = synced(1);
    renamed_user(&mut users, "taken@example.org");
    mailboxes.push(Mailbox {
        username: "taken@example.org".into(),
        tagged: false,
        ..mailboxes[0].clone()
    });
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy(), NOW);
    assert!(p.actions.is_empty() && p.state_ops.is_empty(), "{p:?}");
    assert_eq!(p.skipped.len(), 1);
    assert!(
        p.skipped[0].reason.contains("already exists in mailcow"),
        "{:?}",
        p.skipped
    );
}

#[test]
fn a_rename_done_by_a_pass_that_died_is_recorded_not_repeated() {
    let (mut users, mut mailboxes, state) = synced(1);
    renamed_user(&mut users, "ann.new@example.org");
    mailboxes[0].username = "ann.new@example.org".into();
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy(), NOW);
    assert!(p.actions.is_empty(), "{:?}", verbs(&p));
    assert_eq!(settle(&state, &p, &[]).put["u000"].address, "ann.new@example.org");
}

#[test]
fn another_domain_or_recreate_makes_a_new_mailbox_and_leaves_the_old() {
    let mut two_domains = domains();
    two_domains.push(Domain {
        name: "example.net".into(),
        ..two_domains[0].clone()
    });
    for (mail, on_address_change) in [
        ("ann@example.net", AddressChange::Rename),
        ("ann.new@example.org", AddressChange::Recreate),
    ] {
        let (mut users, mailboxes, state) = synced(1);
        renamed_user(&mut users, mail);
        let policy = Policy {
            on_address_change,
            ..policy()
        };
        let p = plan(&dir(users.clone()), &mailboxes, &two_domains, &state, &policy, NOW);
        assert_eq!(verbs(&p), vec![("create", mail)], "{mail}");
        assert!(
            p.warnings
                .iter()
                .any(|w| !w.needs_admin && w.text.starts_with("moved_domain u000")),
            "{:?}",
            p.warnings
        );
        assert_eq!(p.removals, 0, "{mail}: the old mailbox keeps its mail");
        // Once the new mailbox is confirmed, the old one stays managed as a user who left.
        let retired = retired_uid("u000", "u000@example.org");
        let delta = settle(&state, &p, &[true]);
        assert_eq!(delta.put["u000"].address, mail);
        assert_eq!(delta.put[&retired].address, "u000@example.org");
        assert!(
            !settle(&state, &p, &[false]).put.contains_key(&retired),
            "not without the new one"
        );
        // The next pass: the retired row's user is gone, so `on_removed` applies to it.
        let mut after = state.clone();
        after.insert(delta.put["u000"].clone());
        after.insert(delta.put[&retired].clone());
        let mut both = mailboxes.clone();
        both.push(Mailbox {
            username: mail.into(),
            ..mailboxes[0].clone()
        });
        let next = plan(&dir(users.clone()), &both, &two_domains, &after, &policy, NOW);
        assert_eq!(verbs(&next), vec![("disable", "u000@example.org")], "{mail}");
    }
}

#[test]
fn a_move_that_leaves_an_untagged_mailbox_behind_needs_an_admin() {
    let mut two_domains = domains();
    two_domains.push(Domain {
        name: "example.net".into(),
        ..two_domains[0].clone()
    });
    let (mut users, mut mailboxes, state) = synced(1);
    renamed_user(&mut users, "ann@example.net");
    mailboxes[0].tagged = false;
    let p = plan(&dir(users), &mailboxes, &two_domains, &state, &policy(), NOW);
    let moved: Vec<_> = p
        .warnings
        .iter()
        .filter(|w| w.text.starts_with("moved_domain u000"))
        .collect();
    assert_eq!(moved.len(), 1, "{:?}", p.warnings);
    assert!(moved[0].text.contains("no longer managed by this tool"), "{moved:?}");
    assert!(moved[0].needs_admin, "an unmanaged mailbox is left behind: {moved:?}");
}

#[test]
fn managed_mailbox_deleted_in_mailcow_is_created_again_or_forgotten() {
    let (users, mut mailboxes, state) = synced(2);
    mailboxes.remove(0);
    let p = plan(&dir(users.clone()), &mailboxes, &domains(), &state, &policy(), NOW);
    assert_eq!(verbs(&p), vec![("create", "u000@example.org")]);
    let p = plan(
        &dir(users[1..].to_vec()),
        &mailboxes,
        &domains(),
        &state,
        &policy(),
        NOW,
    );
    assert!(p.actions.is_empty());
    assert_eq!(p.state_ops, vec![StateOp::Forget { uid: "u000".into() }]);
}

#[test]
fn domain_scope_limits_everything() {
    let (mut users, mut mailboxes, state) = synced(2);
    users[0].mail = "x@other.org".into();
    mailboxes.push(Mailbox {
        username: "x@other.org".into(),
        ..Mailbox::default()
    });
    let scoped = Policy {
        domains: ["example.org".to_string()].into(),
        ..policy()
    };
    // u000 changed address to an out-of-scope domain: nothing happens there, and its old
    // example.org mailbox is not treated as removed (the user still exists).
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &scoped, NOW);
    assert!(p.actions.is_empty(), "{:?}", verbs(&p));
}

#[test]
fn tls_flags_use_their_own_action() {
    let (mut users, mailboxes, state) = synced(2);
    users[0].tls_in = Some(true);
    users[1].tls_in = Some(false);
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy(), NOW);
    assert_eq!(verbs(&p), vec![("tls", "u000@example.org")]);
    let delta = settle(&state, &p, &[true]);
    assert_eq!(delta.put["u000"].tls_in, Some(true));
    assert_eq!(
        delta.put["u000"].tls_out,
        Some(false),
        "both flags are sent, so both are recorded"
    );
    assert_eq!(
        delta.put["u001"].tls_in,
        Some(false),
        "an equal value is recorded without a write"
    );
}

#[test]
fn failed_create_records_nothing() {
    let u = user("dave");
    let p = plan(&dir(vec![u]), &[], &domains(), &ManagedRows::new(), &policy(), NOW);
    assert!(settle(&ManagedRows::new(), &p, &[false]).is_empty());
    let delta = settle(&ManagedRows::new(), &p, &[true]);
    assert_eq!(delta.put["dave"].quota_mib, Some(1024));
}

#[test]
fn plan_is_deterministic_whatever_the_input_order() {
    let (users, mailboxes, state) = synced(30);
    // Users 0..5 are gone (5 removals), the rest get a new quota: the plan has work in it.
    let changed: Vec<DirUser> = users[5..]
        .iter()
        .cloned()
        .map(|mut u| {
            u.quota_mib = Some(4096);
            u
        })
        .collect();
    let a = plan(&dir(changed.clone()), &mailboxes, &domains(), &state, &policy(), NOW);
    let mut reversed_users = changed;
    reversed_users.reverse();
    let mut reversed_mailboxes = mailboxes.clone();
    reversed_mailboxes.reverse();
    let b = plan(
        &dir(reversed_users),
        &reversed_mailboxes,
        &domains(),
        &state,
        &policy(),
        NOW,
    );
    assert_eq!(a.actions.len(), 30, "25 updates and 5 disables");
    assert_eq!(a.actions, b.actions);
    assert_eq!(a.state_ops, b.state_ops);
}

#[test]
fn authsource_switch_to_ldap_once_and_never_again_when_mailcow_ignores_it() {
    let (users, mailboxes, state) = synced(1);
    let ldap = Policy {
        authsource: Authsource::Ldap,
        ..policy()
    };
    let p = plan(&dir(users.clone()), &mailboxes, &domains(), &state, &ldap, NOW);
    assert_eq!(verbs(&p), vec![("update", "u000@example.org")]);
    let delta = settle(&state, &p, &[true]);
    assert_eq!(delta.put["u000"].authsource.as_deref(), Some("ldap"));
    // mailcow kept `mailcow` (no LDAP identity provider): warn, do not write again.
    let mut after = state.clone();
    after.insert(delta.put["u000"].clone());
    let p = plan(&dir(users), &mailboxes, &domains(), &after, &ldap, NOW);
    assert!(p.actions.is_empty(), "{:?}", verbs(&p));
    assert!(p.warnings[0].text.contains("identity provider"), "{:?}", p.warnings);
    assert!(p.warnings[0].needs_admin);
}

#[test]
fn switch_to_mailcow_sends_the_password_in_a_later_call() {
    let (users, mut mailboxes, mut state) = synced(1);
    mailboxes[0].authsource = "ldap".into();
    state.edit("u000", |row| {
        row.authsource = Some("ldap".into());
        row.password_fp = None;
    });
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy(), NOW);
    assert_eq!(
        verbs(&p),
        vec![("update", "u000@example.org"), ("password", "u000@example.org")]
    );
}

#[test]
fn a_skipped_entry_protects_its_mailbox_by_uid_address_or_dn() {
    let (users, mailboxes, state) = synced(4);
    let mut d = dir(users[..1].to_vec());
    // Skipped with only its uid, only its address, only its DN readable.
    d.add_skipped(users[1].dn.clone(), "bad".into(), Some(users[1].uid.clone()), None);
    d.add_skipped(users[2].dn.clone(), "no uid".into(), None, Some(users[2].mail.clone()));
    d.add_skipped(users[3].dn.to_uppercase(), "no uid, no mail".into(), None, None);
    d.entries = 4;
    let p = plan(&d, &mailboxes, &domains(), &state, &policy(), NOW);
    assert!(p.actions.is_empty() && p.state_ops.is_empty(), "{:?}", p);
    assert_eq!(p.removals, 0);
    // Every entry skipped: no usable user at all, which the guard treats as an empty directory.
    let mut none = Directory::from_users(Vec::new());
    none.add_skipped("uid=x,dc=example,dc=org".into(), "no mail".into(), None, None);
    none.entries = 1;
    let p = plan(&none, &mailboxes, &domains(), &state, &policy(), NOW);
    assert!(p.guard.unwrap_or_default().contains("no users"));
}

#[test]
fn a_partial_view_removes_and_forgets_nothing() {
    let (users, mut mailboxes, state) = synced(3);
    mailboxes.remove(1); // u001's mailbox is gone from mailcow too
    let partial = Policy {
        partial_view: Some("continuation references".into()),
        ..policy()
    };
    let p = plan(&dir(users[..1].to_vec()), &mailboxes, &domains(), &state, &partial, NOW);
    assert!(p.actions.is_empty() && p.state_ops.is_empty(), "{:?}", p);
    assert_eq!((p.removals, p.held_back), (0, 2));
    assert_eq!(p.partial_view.as_deref(), Some("continuation references"));
    let p = plan(
        &dir(users[..1].to_vec()),
        &mailboxes,
        &domains(),
        &state,
        &policy(),
        NOW,
    );
    assert_eq!(verbs(&p), vec![("disable", "u002@example.org")]);
    assert_eq!(p.state_ops, vec![StateOp::Forget { uid: "u001".into() }]);
}

#[test]
fn an_empty_mailbox_list_while_mailboxes_are_managed_is_refused_and_forgets_nothing() {
    let (users, _, state) = synced(3);
    let p = plan(&dir(users[..2].to_vec()), &[], &domains(), &state, &policy(), NOW);
    assert!(p.guard.unwrap_or_default().contains("mailcow listed no mailboxes"));
    assert!(p.state_ops.is_empty() && p.removals == 0, "{:?}", p.state_ops);
    assert!(p.partial_view.is_some());
}

#[test]
fn a_mailbox_without_the_tag_is_not_removed_and_its_row_is_forgotten() {
    let (users, mut mailboxes, state) = synced(3);
    mailboxes[2].tagged = false; // deleted and made again by hand
    let p = plan(
        &dir(users[..2].to_vec()),
        &mailboxes,
        &domains(),
        &state,
        &policy(),
        NOW,
    );
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.state_ops, vec![StateOp::Forget { uid: "u002".into() }]);
    assert!(
        p.warnings[0].text.contains("no longer carries the tag"),
        "{:?}",
        p.warnings
    );
    assert!(p.warnings[0].needs_admin);
    // Without a tag configured, nothing can be proven either way: the row decides.
    let untagged = Policy { tag: None, ..policy() };
    let p = plan(
        &dir(users[..2].to_vec()),
        &mailboxes,
        &domains(),
        &state,
        &untagged,
        NOW,
    );
    assert_eq!(verbs(&p), vec![("disable", "u002@example.org")]);
}

#[test]
fn a_mailbox_found_at_its_target_is_recorded_as_disabled() {
    let (users, mut mailboxes, state) = synced(2);
    mailboxes[1].active = 0; // a pass died after mailcow confirmed the disable
    let p = plan(
        &dir(users[..1].to_vec()),
        &mailboxes,
        &domains(),
        &state,
        &policy(),
        NOW,
    );
    assert!(p.actions.is_empty());
    let delta = settle(&state, &p, &[]);
    assert_eq!(delta.put["u001"].disabled_at, Some(NOW));
    assert_eq!(delta.put["u001"].active, Some(0));
    // So the returning user is enabled again.
    let later = ManagedRows::from_rows(state.values().map(|r| delta.put.get(&r.uid).cloned().unwrap_or(r)));
    let p = plan(&dir(users), &mailboxes, &domains(), &later, &policy(), NOW + 60);
    assert_eq!(verbs(&p), vec![("update", "u001@example.org")]);
}

#[test]
fn rows_disabled_long_ago_do_not_widen_the_guard() {
    let (users, mailboxes, state) = synced(20);
    let mut state = state;
    for i in 10..20 {
        state.edit(&format!("u{i:03}"), |r| {
            r.disabled_at = Some(NOW - 86400 * 365);
            r.active = Some(0);
        });
    }
    let mut mailboxes = mailboxes;
    for m in &mut mailboxes[10..] {
        m.active = 0;
    }
    // 2 of the 10 active ones leave: 20 % of what is really managed, over a 10 % allowance.
    let p = plan(
        &dir(users[..8].to_vec()),
        &mailboxes,
        &domains(),
        &state,
        &Policy {
            max_removals: MaxRemovals::Percent(10.0),
            ..policy()
        },
        NOW,
    );
    assert_eq!(p.managed, 10);
    assert!(p.guard.unwrap_or_default().contains("2 mailboxes would be disabled"));
}

// ------------------------------------------------------------ offboarding (issue 15.4)

fn offboarding(app_passwords: bool, eas: bool) -> Policy {
    Policy {
        offboard: Offboard { app_passwords, eas },
        ..policy()
    }
}

#[test]
fn a_disable_by_the_removals_is_followed_by_its_offboarding() {
    for on_removed in [OnRemoved::Disable, OnRemoved::DisallowLogin, OnRemoved::Delete] {
        let (mut users, mailboxes, state) = synced(3);
        users.remove(1);
        let policy = Policy {
            on_removed,
            ..offboarding(true, true)
        };
        let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy, NOW);
        let verb = if on_removed == OnRemoved::DisallowLogin {
            "disallow_login"
        } else {
            "disable"
        };
        assert_eq!(
            verbs(&p),
            vec![(verb, "u001@example.org"), ("offboard", "u001@example.org")],
            "{on_removed:?}"
        );
        assert_eq!(
            p.actions[1].kind,
            ActionKind::Offboard {
                app_passwords: true,
                eas: true
            }
        );
        assert_eq!(p.actions[1].uid, "u001");
        // Not a removal: the guard counts the disable only.
        assert_eq!(p.removals, 1);
        // Its outcome records nothing: the state is the disable's.
        assert_eq!(settle(&state, &p, &[true, true]), settle(&state, &p, &[true, false]));
        assert!(settle(&state, &p, &[false, true]).is_empty());
    }
}

#[test]
fn a_delete_a_keep_and_an_already_disabled_mailbox_are_not_offboarded() {
    // The delete after the grace period: mailcow's cascade takes the app passwords.
    let (users, mailboxes, state, policy) = gone_user(Some(30));
    let policy = Policy {
        offboard: Offboard::APP_PASSWORDS,
        ..policy
    };
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &policy, NOW);
    assert_eq!(verbs(&p), vec![("delete", "u002@example.org")]);

    let (mut users, mailboxes, state) = synced(2);
    users.remove(1);
    let keep = Policy {
        on_removed: OnRemoved::Keep,
        ..offboarding(true, false)
    };
    assert!(
        plan(&dir(users.clone()), &mailboxes, &domains(), &state, &keep, NOW)
            .actions
            .is_empty()
    );

    let mut disabled = mailboxes.clone();
    disabled[1].active = 0;
    let p = plan(
        &dir(users),
        &disabled,
        &domains(),
        &state,
        &offboarding(true, false),
        NOW,
    );
    assert_eq!(p.count("offboard"), 0, "{p:?}");
}

#[test]
fn ldap_turning_active_to_0_or_2_offboards_and_turning_it_to_1_does_not() {
    for (active, offboarded) in [(0, true), (2, true), (1, false)] {
        let (mut users, mut mailboxes, state) = synced(1);
        users[0].active = Some(active);
        mailboxes[0].active = if active == 1 { 0 } else { 1 };
        let p = plan(
            &dir(users),
            &mailboxes,
            &domains(),
            &state,
            &offboarding(true, false),
            NOW,
        );
        let want = if offboarded {
            vec![("update", "u000@example.org"), ("offboard", "u000@example.org")]
        } else {
            vec![("update", "u000@example.org")]
        };
        assert_eq!(verbs(&p), want, "active {active}");
        assert!(p.actions[0].kind.disables() == offboarded);
    }
}

#[test]
fn offboard_off_plans_no_offboarding() {
    let (mut users, mailboxes, state) = synced(2);
    users.remove(1);
    users[0].active = Some(0);
    let p = plan(
        &dir(users),
        &mailboxes,
        &domains(),
        &state,
        &offboarding(false, false),
        NOW,
    );
    assert_eq!(
        verbs(&p),
        vec![("update", "u000@example.org"), ("disable", "u001@example.org")]
    );
}

#[test]
fn an_offboarding_stays_in_the_chunk_of_its_disable() {
    // Chunks of one item: a user's actions are never split.
    let (mut users, mut mailboxes, state) = synced(4);
    for (u, m) in users.iter_mut().zip(&mut mailboxes) {
        u.active = Some(0);
        m.active = 1;
    }
    let directory = dir(users);
    let policy = offboarding(true, false);
    let mailboxes = Mailboxes::from_list(mailboxes);
    let domains = domains();
    let inputs = PlanInputs {
        dir: &directory,
        mailboxes: &mailboxes,
        domains: &domains,
        state: &state,
        policy: &policy,
        now: NOW,
    };
    let chunks: Vec<Plan> = user_chunks(inputs, 1).collect();
    assert_eq!(chunks.len(), 4);
    for chunk in &chunks {
        assert_eq!(
            chunk.actions.iter().map(|a| a.kind.verb()).collect::<Vec<_>>(),
            vec!["update", "offboard"]
        );
        assert_eq!(chunk.actions[0].uid, chunk.actions[1].uid);
    }
}

#[test]
fn access_flags_edit_only_the_managed_ones_that_differ() {
    use crate::core::access::Protocol;
    let (mut users, mut mailboxes, state) = synced(3);
    let managed = Protocol::Pop3.bit() | Protocol::Eas.bit();
    let access = Policy {
        access_managed: managed,
        ..policy()
    };
    // u000 wants pop3 off; u001 wants what it has; u002's mailbox has imap off by hand,
    // which is not managed, and eas off, which is.
    users[0].access = Some(Protocol::Eas.bit());
    users[1].access = Some(managed);
    users[2].access = Some(managed);
    mailboxes[2].access = crate::core::access::ALL_ON & !Protocol::Imap.bit() & !Protocol::Eas.bit();
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &access, NOW);
    assert_eq!(
        verbs(&p),
        vec![("update", "u000@example.org"), ("update", "u002@example.org")]
    );
    let changes = |i: usize| match &p.actions[i].kind {
        ActionKind::Update { changes, .. } => changes
            .iter()
            .map(|c| (c.field.as_str(), c.old.clone(), c.new.clone()))
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(changes(0), vec![("pop3_access", json!(1), json!(0))]);
    assert_eq!(changes(1), vec![("eas_access", json!(0), json!(1))]);
    // The flags are not recorded: settling an access edit writes the row as it was.
    let delta = settle(&state, &p, &[true, true]);
    assert!(
        delta
            .put
            .values()
            .all(|r| state.get(&r.uid).is_some_and(|old| old.quota_mib == r.quota_mib))
    );
}

#[test]
fn a_create_sends_the_managed_access_flags_only() {
    use crate::core::access::Protocol;
    let mut u = user("dave");
    u.access = Some(Protocol::Dav.bit());
    let access = Policy {
        access_managed: Protocol::Dav.bit() | Protocol::Sogo.bit(),
        ..policy()
    };
    let p = plan(&dir(vec![u]), &[], &domains(), &ManagedRows::new(), &access, NOW);
    match &p.actions[0].kind {
        ActionKind::Create { access, .. } => {
            assert_eq!(access, &vec![(Protocol::Sogo, false), (Protocol::Dav, true)])
        }
        other => panic!("{other:?}"),
    }
}

fn staff() -> crate::core::access::MailboxTemplate {
    use crate::core::access::Protocol;
    crate::core::access::MailboxTemplate {
        id: 3,
        name: "Staff".into(),
        quota_mib: 2048,
        access: crate::core::access::ALL_ON & !Protocol::Pop3.bit(),
        tags: vec!["staff".into()],
        acl: vec!["app_passwds".into()],
        rl_value: 50,
        rl_frame: "h".into(),
    }
}

#[test]
fn a_create_names_its_template_by_id_with_its_quota_and_tags() {
    let mut u = user("dave");
    u.quota_mib = None;
    u.template = Some(0);
    let templates = Policy {
        templates: vec![("Staff".into(), Some(staff()))],
        ..policy()
    };
    let p = plan(
        &dir(vec![u.clone()]),
        &[],
        &domains(),
        &ManagedRows::new(),
        &templates,
        NOW,
    );
    match &p.actions[0].kind {
        ActionKind::Create {
            template,
            quota_mib,
            tags,
            ..
        } => {
            assert_eq!(template, &Some((3, "Staff".to_owned())));
            assert_eq!(*quota_mib, 2048);
            assert_eq!(tags, &vec!["ldap-sync".to_owned(), "staff".to_owned()]);
        }
        other => panic!("{other:?}"),
    }
    let delta = settle(&ManagedRows::new(), &p, &[true]);
    assert_eq!(delta.put["dave"].template.as_deref(), Some("Staff"));
    // Mapped quota wins; a name mailcow lacks gives a create without a template.
    u.quota_mib = Some(100);
    let missing = Policy {
        templates: vec![("Staff".into(), None)],
        ..policy()
    };
    let p = plan(&dir(vec![u]), &[], &domains(), &ManagedRows::new(), &missing, NOW);
    match &p.actions[0].kind {
        ActionKind::Create {
            template, quota_mib, ..
        } => assert_eq!((template, *quota_mib), (&None, 100)),
        other => panic!("{other:?}"),
    }
    assert_eq!(settle(&ManagedRows::new(), &p, &[true]).put["dave"].template, None);
}

#[test]
fn a_template_is_applied_once_when_the_row_does_not_record_it() {
    let (mut users, mailboxes, mut state) = synced(2);
    for u in &mut users {
        u.template = Some(0);
    }
    state.edit("u001", |r| r.template = Some("Staff".into()));
    let templates = Policy {
        templates: vec![("Staff".into(), Some(staff()))],
        access_managed: crate::core::access::Protocol::Eas.bit(),
        ..policy()
    };
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &templates, NOW);
    assert_eq!(verbs(&p), vec![("template", "u000@example.org")]);
    match &p.actions[0].kind {
        ActionKind::Template {
            name,
            old,
            changes,
            acl,
            rl,
            ..
        } => {
            assert_eq!((name.as_str(), old), ("Staff", &None));
            // Quota is mapped (1024 in LDAP): not the template's. pop3 differs.
            let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
            assert_eq!(fields, ["pop3_access"]);
            assert_eq!(acl, &vec!["app_passwds".to_owned()]);
            assert_eq!(rl, &(50, "h".to_owned()));
        }
        other => panic!("{other:?}"),
    }
    assert!(settle(&state, &p, &[false]).is_empty(), "unconfirmed: nothing recorded");
    let delta = settle(&state, &p, &[true]);
    assert_eq!(delta.put["u000"].template.as_deref(), Some("Staff"));
    assert_eq!(delta.put["u000"].quota_mib, state.get("u000").unwrap().quota_mib);
}

#[test]
fn a_template_leaves_the_flags_access_manages_to_access() {
    use crate::core::access::{ALL_ON, Protocol};
    let (mut users, mailboxes, state) = synced(1);
    users[0].template = Some(0);
    users[0].access = Some(Protocol::Pop3.bit());
    let both = Policy {
        templates: vec![("Staff".into(), Some(staff()))],
        access_managed: Protocol::Pop3.bit(),
        ..policy()
    };
    assert_eq!(mailboxes[0].access, ALL_ON);
    let p = plan(&dir(users), &mailboxes, &domains(), &state, &both, NOW);
    // Staff turns pop3 off; access keeps it on, and nothing else differs.
    assert_eq!(verbs(&p), vec![("template", "u000@example.org")]);
    match &p.actions[0].kind {
        ActionKind::Template { changes, .. } => assert!(changes.is_empty(), "{changes:?}"),
        other => panic!("{other:?}"),
    }
}

/// Part 7 of issue 18: an untagged `ldap` mailbox belongs to mailcow's own LDAP identity
/// provider; only `idp_mailboxes: adopt` (or a tag, or a state row) lets this tool take it.
#[test]
fn idp_mailboxes_are_protected_unless_adopt_is_set() {
    let (users, mut mailboxes, state) = synced(3);
    for m in &mut mailboxes {
        m.authsource = "ldap".into();
        m.tagged = false;
    }
    // u001 carries the tag (this tool made it, or the admin handed it over).
    mailboxes[1].tagged = true;
    let by_address = Policy {
        adopt: Adopt::ByAddress,
        ..policy()
    };
    let p = plan(
        &dir(users.clone()),
        &mailboxes,
        &domains(),
        &ManagedRows::new(),
        &by_address,
        NOW,
    );
    let skipped: Vec<&str> = p.skipped.iter().map(|s| s.address.as_str()).collect();
    assert_eq!(skipped, ["u000@example.org", "u002@example.org"]);
    assert!(p.skipped.iter().all(|s| s.reason == IDP_OWNED), "{:?}", p.skipped);
    assert!(
        p.actions.iter().all(|a| a.address == "u001@example.org"),
        "nothing planned for the IdP's mailboxes: {:?}",
        verbs(&p)
    );
    assert!(
        p.state_ops
            .iter()
            .all(|op| !matches!(op, StateOp::Put(r) if r.uid != "u001")),
        "nor recorded"
    );

    // The same mailboxes, already managed (rows in the state): they stay this tool's.
    let p = plan(&dir(users.clone()), &mailboxes, &domains(), &state, &by_address, NOW);
    assert!(p.skipped.is_empty(), "{:?}", p.skipped);

    // Told to adopt: taken over as `sync.adopt` allows.
    let adopt = Policy {
        idp_mailboxes: IdpMailboxes::Adopt,
        ..by_address
    };
    let p = plan(&dir(users), &mailboxes, &domains(), &ManagedRows::new(), &adopt, NOW);
    assert!(p.skipped.is_empty(), "{:?}", p.skipped);
    assert!(verbs(&p).contains(&("update", "u000@example.org")), "{:?}", verbs(&p));
}

#[test]
fn idp_mailboxes_auto_follows_the_authsource() {
    assert_eq!(IdpMailboxes::auto(Authsource::Mailcow), IdpMailboxes::Protect);
    assert_eq!(IdpMailboxes::auto(Authsource::Ldap), IdpMailboxes::Adopt);
}
