//! The ways a pass could lose mail, each closed: a directory or mailcow view that is only
//! partial, entries that are skipped, alias attributes that read empty, mailboxes that are
//! not provably ours. Each test shows the loss it prevents against slapd and the emulator.

use serde_json::json;
use sync_test_support::mailcow::{Fault, MailboxSpec};

use crate::util::{Env, managed_rows, users};

fn owned_aliases(env: &Env) -> Vec<String> {
    let store = mailcow_ldap_sync::edge::state_db::StateDb::open_read_only(&env.state_file())
        .expect("open state")
        .expect("a state file");
    store.load_aliases().expect("load aliases").into_keys().collect()
}

fn active(env: &Env, address: &str) -> serde_json::Value {
    env.mailbox(address)["active"].clone()
}

/// Three users with two alternate addresses each, synced.
fn synced_with_aliases(max_removals: serde_json::Value) -> Env {
    let mut list = users(3);
    for (i, user) in list.iter_mut().enumerate() {
        user.aliases = vec![format!("alt{i}a@example.org"), format!("alt{i}b@example.org")];
    }
    let mut env = Env::start(list);
    env.set("/ldap/user_mapping/aliases", json!("mailAlternateAddress"));
    env.set("/sync/max_removals", max_removals);
    env.pass();
    assert_eq!(env.emu.aliases().len(), 6);
    env
}

#[test]
fn an_alias_attribute_that_reads_empty_deletes_no_alias() {
    // A typo in the mapping: the attribute reads empty for everyone.
    let mut env = synced_with_aliases(json!("10%"));
    env.set("/ldap/user_mapping/aliases", json!("mailAlternateAdress"));
    for on_removed in ["disable", "keep"] {
        env.set("/sync/on_removed", json!(on_removed));
        env.emu.reset_counts();
        let run = env.run(&[]);
        run.expect(0);
        assert_eq!(env.emu.count_writes(), 0, "{on_removed}: {:?}", env.emu.requests());
        assert!(run.stderr.contains("lists no alias values"), "{}", run.stderr);
        assert_eq!(env.emu.aliases().len(), 6);
        assert_eq!(owned_aliases(&env).len(), 6);
    }
    // The bind account loses read access to the attribute: the same, one user at a time.
    env.set("/ldap/user_mapping/aliases", json!("mailAlternateAddress"));
    env.slapd.modify_attr("user00001", "mailAlternateAddress", &[]).unwrap();
    env.pass();
    assert_eq!(env.emu.aliases().len(), 6, "an owner still in LDAP keeps its aliases");
    // An admin's removal of one of two values is a removal.
    env.slapd
        .modify_attr("user00002", "mailAlternateAddress", &["alt1a@example.org"])
        .unwrap();
    env.pass();
    assert_eq!(env.emu.aliases().len(), 5);
    assert!(!owned_aliases(&env).contains(&"alt1b@example.org".to_owned()));
}

#[test]
fn alias_deletions_count_against_max_removals() {
    let env = synced_with_aliases(json!(2));
    // Two users leave with their four aliases: two mailbox removals are allowed, four alias
    // deletions are not.
    env.slapd.delete_user("user00001").unwrap();
    env.slapd.delete_user("user00002").unwrap();
    env.emu.reset_counts();
    let run = env.run(&[]);
    run.expect(4);
    assert!(run.stderr.contains("4 aliases would be deleted"), "{}", run.stderr);
    assert_eq!(env.emu.count_writes(), 0);
    env.run(&["--force"]).expect(0);
    assert_eq!(env.emu.aliases().len(), 2);
    assert_eq!(active(&env, "user00001@example.org"), json!(0));
}

#[test]
fn a_user_whose_uid_attribute_is_removed_keeps_the_mailbox() {
    let mut env = Env::start(users(3));
    for (i, uid) in ["user00001", "user00002", "user00003"].iter().enumerate() {
        env.slapd
            .modify_attr(uid, "employeeNumber", &[&format!("E{i}")])
            .unwrap();
    }
    env.set("/ldap/user_mapping/uid", json!("employeeNumber"));
    env.pass();
    env.slapd.modify_attr("user00002", "employeeNumber", &[]).unwrap();
    env.emu.reset_counts();
    let run = env.run(&[]);
    run.expect(0);
    assert!(
        run.stderr.contains("employeeNumber"),
        "the skip is named: {}",
        run.stderr
    );
    assert_eq!(env.emu.count_writes(), 0, "{:?}", env.emu.requests());
    assert_eq!(active(&env, "user00002@example.org"), json!(1));
    // Neither uid nor mail readable: the DN still protects it.
    env.slapd.modify_attr("user00002", "mail", &[]).unwrap();
    env.run(&[]).expect(0);
    assert_eq!(active(&env, "user00002@example.org"), json!(1));
    assert_eq!(managed_rows(&env.state_file()).len(), 3);
}

#[test]
fn users_behind_a_continuation_reference_are_not_removed() {
    let env = Env::start(users(3));
    env.pass();
    // user00003 now lives on another server: this one only refers to it.
    env.slapd.delete_user("user00003").unwrap();
    env.slapd
        .add_referral("remote", "ldap://127.0.0.1:9/ou=remote,dc=example,dc=org")
        .unwrap();
    env.emu.reset_counts();
    let run = env.run(&["-q"]);
    run.expect(0);
    assert!(
        run.stderr.contains("no removals this pass") && run.stderr.contains("continuation references"),
        "said even under -q: {}",
        run.stderr
    );
    assert_eq!(env.emu.count_writes(), 0);
    assert_eq!(active(&env, "user00003@example.org"), json!(1));
    assert_eq!(managed_rows(&env.state_file()).len(), 3);
}

#[test]
fn an_empty_mailbox_list_from_mailcow_refuses_the_pass_and_forgets_nothing() {
    let env = Env::start(users(3));
    env.pass();
    env.slapd.delete_user("user00003").unwrap();
    // Requests: domains, then mailboxes.
    env.emu.inject_fault(2, Fault::EmptyObject);
    let run = env.run(&[]);
    run.expect(4);
    assert!(run.stderr.contains("mailcow listed no mailboxes"), "{}", run.stderr);
    assert_eq!(managed_rows(&env.state_file()).len(), 3, "no row forgotten");
    // Forced (mailcow set up anew): creates, but still no removal and no row forgotten.
    env.emu.inject_fault(2, Fault::EmptyObject);
    let run = env.run(&["--force"]);
    assert!(run.stderr.contains("no removals this pass"), "{}", run.stderr);
    assert_eq!(managed_rows(&env.state_file()).len(), 3);
    // Healthy again: user00003 is disabled as it should be.
    env.pass();
    assert_eq!(active(&env, "user00003@example.org"), json!(0));
}

#[test]
fn an_empty_alias_list_from_mailcow_forgets_no_owned_alias() {
    let env = synced_with_aliases(json!("10%"));
    // Requests: domains, mailboxes, aliases.
    env.emu.inject_fault(3, Fault::EmptyObject);
    env.emu.reset_counts();
    let run = env.run(&[]);
    run.expect(0);
    assert!(
        run.stderr.contains("no alias removals this pass"),
        "said: {}",
        run.stderr
    );
    assert_eq!(env.emu.count_writes(), 0, "{:?}", env.emu.requests());
    assert_eq!(owned_aliases(&env).len(), 6, "every owned alias row kept");
    env.emu.reset_counts();
    let run = env.pass();
    assert!(!run.stderr.contains("not made by this tool"), "{}", run.stderr);
    assert_eq!(env.emu.count_writes(), 0);
}

#[test]
fn override_filter_removes_nothing() {
    let mut env = Env::start(users(10));
    env.set("/sync/max_removals", json!("100%"));
    env.pass();
    env.emu.reset_counts();
    let run = env.run(&["--override-filter", "(uid=user00001)"]);
    run.expect(0);
    assert!(run.stderr.contains("no removals this pass"), "{}", run.stderr);
    assert_eq!(env.emu.count_writes(), 0, "{:?}", env.emu.requests());
    assert_eq!(active(&env, "user00002@example.org"), json!(1));
}

#[test]
fn a_mailbox_made_again_by_hand_is_not_removed() {
    let env = Env::start(users(3));
    env.pass();
    env.slapd.delete_user("user00003").unwrap();
    env.pass();
    assert_eq!(active(&env, "user00003@example.org"), json!(0));
    // The admin deletes the disabled mailbox and makes a new one by hand at its address.
    env.emu.delete_mailbox("user00003@example.org");
    env.emu
        .add_mailbox(MailboxSpec {
            local_part: "user00003".into(),
            name: "Someone Else".into(),
            quota_mib: 100,
            ..MailboxSpec::default()
        })
        .unwrap();
    let mut env = env;
    env.set("/sync/on_removed", json!("delete"));
    let run = env.run(&[]);
    run.expect(0);
    assert!(run.stderr.contains("no longer carries the tag"), "{}", run.stderr);
    assert_eq!(
        active(&env, "user00003@example.org"),
        json!(1),
        "not deleted, not disabled"
    );
    assert_eq!(managed_rows(&env.state_file()).len(), 2, "no longer managed");
}
