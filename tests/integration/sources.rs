//! Several directories in one config (`sources`, issue 18.1): two real slapds, one mailcow.

use serde_json::{Value, json};
use sync_test_support::slapd::{Slapd, SlapdOptions, TestUser, generate_users};

use crate::util::{Env, group_ldif, groups_ou_ldif, roomy_domain, set_pointer, users};

/// slapd `hq` (the Env's own) and slapd `branch`, both sources of one config.
struct Two {
    env: Env,
    branch: Slapd,
}

impl Two {
    fn start(hq: Vec<TestUser>, branch: Vec<TestUser>) -> Two {
        let mut env = Env::start(hq);
        let branch = Slapd::start(SlapdOptions {
            users: branch,
            ..SlapdOptions::default()
        })
        .expect("start the second slapd");
        env.emu.add_domain(roomy_domain("example.net"));
        let hq_ldap = env.config["ldap"].clone();
        let mut branch_ldap = hq_ldap.clone();
        branch_ldap["uri"] = json!(branch.ldap_url());
        branch_ldap["bind_dn"] = json!(branch.reader_dn());
        branch_ldap["bind_pw"] = json!(branch.reader_pw());
        let config = env.config.as_object_mut().unwrap();
        config.remove("ldap");
        config.insert(
            "sources".into(),
            json!([{"name": "hq", "ldap": hq_ldap}, {"name": "branch", "ldap": branch_ldap}]),
        );
        Two { env, branch }
    }

    /// Set a key in source `i` by JSON pointer below it (`/sync/on_removed`).
    fn set_in(&mut self, i: usize, pointer: &str, value: Value) {
        set_pointer(&mut self.env.config["sources"][i], pointer, value);
    }

    /// (address, source) of every managed row; rows without a recorded source show "".
    fn sources(&self) -> Vec<(String, String)> {
        let store = mailcow_ldap_sync::edge::state_db::StateDb::open_read_only(&self.env.state_file())
            .unwrap()
            .unwrap();
        let named = store.row_sources().unwrap();
        let mut rows: Vec<(String, String)> = store
            .load()
            .unwrap()
            .values()
            .map(|r| {
                let source = named.iter().find(|(uid, _)| *uid == r.uid).map(|(_, s)| s.clone());
                (r.address, source.unwrap_or_default())
            })
            .collect();
        rows.sort();
        rows
    }

    /// The source recorded for the mailbox at this address.
    fn source_of(&self, address: &str) -> String {
        let rows = self.sources();
        let row = rows.iter().find(|(a, _)| a == address);
        row.unwrap_or_else(|| panic!("no row for {address}: {rows:?}"))
            .1
            .clone()
    }

    fn active(&self, address: &str) -> i64 {
        self.env.mailbox(address)["active"].as_i64().unwrap()
    }
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(a, s)| (a.to_string(), s.to_string())).collect()
}

#[test]
fn two_sources_fill_one_mailcow_and_each_mailbox_remembers_its_source() {
    let two = Two::start(users(3), generate_users(2, "example.net"));
    let run = two.env.run(&["--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["summary"]["created"], 5, "{}", run.stderr);
    let sources = report["sources"].as_array().expect("the report lists the sources");
    assert_eq!(sources.len(), 2);
    assert_eq!(
        (sources[0]["name"].as_str(), sources[0]["users"].as_u64()),
        (Some("hq"), Some(3))
    );
    assert_eq!(
        (sources[1]["name"].as_str(), sources[1]["users"].as_u64()),
        (Some("branch"), Some(2))
    );
    assert!(sources.iter().all(|s| s["error"].is_null()));
    assert_eq!(
        two.sources(),
        owned(&[
            ("user00001@example.net", "branch"),
            ("user00001@example.org", "hq"),
            ("user00002@example.net", "branch"),
            ("user00002@example.org", "hq"),
            ("user00003@example.org", "hq"),
        ])
    );

    // Unchanged: one mailbox read and one domain read for both directories, no write.
    two.env.emu.reset_counts();
    let run = two.env.pass();
    assert_eq!(two.env.emu.count_writes(), 0, "{}", run.stderr);
    assert_eq!(two.env.emu.total_requests(), 2, "{:?}", two.env.emu.requests());

    let status = two.env.run(&["status"]);
    status.expect(0);
    assert!(status.stdout.contains("source hq: 3 (0 disabled"), "{}", status.stdout);
    assert!(
        status.stdout.contains("source branch: 2 (0 disabled"),
        "{}",
        status.stdout
    );
    let check = two.env.run(&["check"]);
    assert!(
        check.stdout.contains("source `hq`: LDAP") && check.stdout.contains("source `branch`: LDAP"),
        "{}",
        check.stdout
    );
    assert!(check.stdout.contains("2 usable users"), "{}", check.stdout);
}

#[test]
fn an_address_two_sources_hold_is_skipped_in_both_and_its_mailbox_left_alone() {
    let two = Two::start(users(2), generate_users(1, "example.net"));
    two.env.pass();
    let before = two.env.mailbox("user00001@example.org");
    // The branch gets an entry with hq's user's address.
    let mut dup = TestUser::new("dup", "example.org");
    dup.mail = Some("user00001@example.org".into());
    two.branch.add_users(&[dup]).unwrap();
    two.env.emu.reset_counts();
    let run = two.env.run(&["--json"]);
    run.expect(0);
    assert_eq!(two.env.emu.count_writes(), 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("also a user of source `branch`") && run.stderr.contains("also a user of source `hq`"),
        "both sides are named:\n{}",
        run.stderr
    );
    assert_eq!(run.json()["summary"]["skipped"], 2);
    assert_eq!(
        two.env.mailbox("user00001@example.org"),
        before,
        "nothing of it changed"
    );
    assert_eq!(two.source_of("user00001@example.org"), "hq");

    // The duplicate goes: hq's user is synced again, still with nothing to write.
    two.branch.delete_user("dup").unwrap();
    two.env.emu.reset_counts();
    let run = two.env.run(&["--json"]);
    run.expect(0);
    assert_eq!(run.json()["summary"]["skipped"], 0, "{}", run.stderr);
    assert_eq!(two.env.emu.count_writes(), 0);
}

#[test]
fn a_source_that_cannot_be_read_keeps_its_mailboxes_while_the_others_sync() {
    let mut two = Two::start(users(3), generate_users(2, "example.net"));
    two.env.pass();
    two.branch.stop();
    two.env.slapd.delete_user("user00003").unwrap();
    two.env.slapd.add_users(&users(4)[3..]).unwrap();
    let run = two.env.run(&["--json"]);
    run.expect(3);
    assert!(
        run.stderr
            .contains("source `branch` could not be read, so its 2 managed mailboxes are left as they are"),
        "{}",
        run.stderr
    );
    let report = run.json();
    assert_eq!(report["summary"]["created"], 1);
    assert_eq!(report["summary"]["disabled"], 1);
    assert!(report["sources"][1]["error"].is_string());
    assert_eq!(two.active("user00003@example.org"), 0, "hq's leaver is disabled");
    assert_eq!(two.active("user00004@example.org"), 1, "hq's newcomer is created");
    assert_eq!(
        two.active("user00001@example.net"),
        1,
        "the unread source's mailboxes stay"
    );
    assert_eq!(two.active("user00002@example.net"), 1);
    let status = two.env.run(&["status"]);
    assert!(
        status.stdout.contains("failed source_read source branch"),
        "{}",
        status.stdout
    );

    // Back: nothing to do for it.
    two.branch.restart().unwrap();
    two.env.emu.reset_counts();
    two.env.pass();
    assert_eq!(two.env.emu.count_writes(), 0);
}

#[test]
fn every_source_unreadable_stops_the_pass_before_anything_is_written() {
    let mut two = Two::start(users(2), generate_users(1, "example.net"));
    two.env.pass();
    two.branch.stop();
    two.env.slapd.stop();
    two.env.emu.reset_counts();
    let run = two.env.run(&[]);
    assert_ne!(run.code, 0);
    assert_ne!(run.code, 3, "a pass that read nothing is not a pass with failed items");
    assert_eq!(two.env.emu.count_writes(), 0, "{}", run.stderr);
    assert_eq!(two.active("user00001@example.org"), 1);
    assert_eq!(two.active("user00001@example.net"), 1);
}

#[test]
fn the_removal_guard_counts_each_source_on_its_own() {
    let mut two = Two::start(users(18), generate_users(5, "example.net"));
    two.env.set("/sync/max_removals", json!("10%"));
    two.env.pass();
    // 2 of 23 would pass a guard over everything (10 % allows 2); 2 of the branch's 5 do not.
    two.branch.delete_user("user00001").unwrap();
    two.branch.delete_user("user00002").unwrap();
    two.env.emu.reset_counts();
    let run = two.env.run(&[]);
    run.expect(4);
    assert!(
        run.stderr.contains("source `branch`: 2 mailboxes would be disabled"),
        "{}",
        run.stderr
    );
    assert_eq!(two.env.emu.count_writes(), 0);
    assert_eq!(two.active("user00001@example.net"), 1);

    let run = two.env.run(&["--force"]);
    run.expect(0);
    assert_eq!(two.active("user00001@example.net"), 0);
    assert_eq!(two.active("user00002@example.net"), 0);
    assert_eq!(two.active("user00001@example.org"), 1);
}

#[test]
fn a_source_has_its_own_removal_rule() {
    let mut two = Two::start(users(3), generate_users(3, "example.net"));
    two.set_in(1, "/sync/on_removed", json!("disallow_login"));
    two.env.pass();
    two.env.slapd.delete_user("user00002").unwrap();
    two.branch.delete_user("user00002").unwrap();
    two.env.pass();
    assert_eq!(two.active("user00002@example.org"), 0, "hq disables");
    assert_eq!(two.active("user00002@example.net"), 2, "the branch only refuses logins");
    assert_eq!(two.active("user00001@example.net"), 1);
}

#[test]
fn a_user_who_moves_to_another_source_keeps_the_mailbox() {
    let mut two = Two::start(users(3), vec![TestUser::new("nina", "example.net")]);
    // The directories share the login name as the user's identity.
    two.set_in(0, "/ldap/user_mapping/uid", json!("uid"));
    two.set_in(1, "/ldap/user_mapping/uid", json!("uid"));
    two.env.pass();
    assert_eq!(two.source_of("user00003@example.org"), "hq");
    two.env.slapd.delete_user("user00003").unwrap();
    two.branch.add_users(&users(3)[2..]).unwrap();
    two.env.emu.reset_counts();
    let run = two.env.pass();
    assert_eq!(two.env.emu.count_writes(), 0, "{}", run.stderr);
    assert_eq!(two.active("user00003@example.org"), 1);
    assert_eq!(two.source_of("user00003@example.org"), "branch");

    // It leaves the branch too: now the branch's rule removes it.
    two.branch.delete_user("user00003").unwrap();
    two.env.set("/sync/max_removals", json!(10));
    two.env.pass();
    assert_eq!(two.active("user00003@example.org"), 0);
}

#[test]
fn a_source_renamed_in_the_config_leaves_its_mailboxes_to_nobody() {
    let mut two = Two::start(users(2), generate_users(2, "example.net"));
    two.env.pass();
    two.env.config["sources"][1]["name"] = json!("branch2");
    // Its users are the same entries: they are the new name's now.
    let run = two.env.pass();
    assert!(!run.stderr.contains("no longer names"), "{}", run.stderr);
    assert_eq!(two.source_of("user00001@example.net"), "branch2");
    // A source dropped from the config: its mailboxes are removed by nobody.
    let hq_ldap = two.env.config["sources"][0]["ldap"].clone();
    let sources = two.env.config["sources"].as_array_mut().unwrap();
    sources.truncate(1);
    sources.push(json!({"name": "empty", "ldap": hq_ldap}));
    two.env.config["sources"][1]["ldap"]["user_search_filter"] = json!("(uid=nobody)");
    two.env.emu.reset_counts();
    let run = two.env.run(&[]);
    run.expect(0);
    assert!(
        run.stderr
            .contains("2 managed mailboxes belong to a source the config no longer names"),
        "{}",
        run.stderr
    );
    assert_eq!(two.env.emu.count_writes(), 0);
    assert_eq!(two.active("user00001@example.net"), 1);
}

#[test]
fn each_source_brings_its_groups_and_user_aliases() {
    let mut branch_users = generate_users(2, "example.net");
    branch_users[1].aliases = vec!["u2@example.net".into()];
    let mut two = Two::start(users(2), branch_users);
    let base = two.env.slapd.base_dn().to_owned();
    let dn = |uid: &str| format!("uid={uid},ou=people,{base}");
    two.env
        .slapd
        .apply_ldif(&(groups_ou_ldif(&base) + &group_ldif(&base, "team", Some("team@example.org"), &[dn("user00001")])))
        .unwrap();
    two.env
        .slapd
        .apply_ldif(&group_ldif(
            &base,
            "staff",
            Some("staff@example.org"),
            &[dn("user00002")],
        ))
        .unwrap();
    two.branch
        .apply_ldif(
            &(groups_ou_ldif(&base)
                + &group_ldif(
                    &base,
                    "crew",
                    Some("crew@example.net"),
                    &[dn("user00001"), dn("user00002")],
                )),
        )
        .unwrap();
    let groups =
        json!({"search_base": format!("ou=groups,{base}"), "search_filter": "(&(objectClass=groupOfNames)(mail=*))"});
    two.set_in(0, "/groups", groups.clone());
    two.set_in(1, "/groups", groups);
    two.set_in(1, "/ldap/user_mapping/aliases", json!("mailAlternateAddress"));
    two.env.pass();
    let goto = |address: &str| {
        let aliases = two.env.emu.aliases();
        let alias = aliases.iter().find(|a| a["address"] == address);
        alias.map(|a| a["goto"].as_str().unwrap().to_owned())
    };
    assert_eq!(goto("team@example.org").as_deref(), Some("user00001@example.org"));
    assert_eq!(
        goto("crew@example.net").as_deref(),
        Some("user00001@example.net,user00002@example.net")
    );
    assert_eq!(goto("u2@example.net").as_deref(), Some("user00002@example.net"));
    two.env.emu.reset_counts();
    two.env.pass();
    assert_eq!(two.env.emu.count_writes(), 0);

    // A group of hq goes while the branch is down: no alias is removed from a partial view.
    two.env
        .slapd
        .apply_ldif(&format!("dn: cn=team,ou=groups,{base}\nchangetype: delete\n\n"))
        .unwrap();
    two.branch.stop();
    two.env.run(&[]).expect(3);
    assert!(goto("team@example.org").is_some(), "held back while a source is unread");
    assert!(goto("crew@example.net").is_some());
    two.branch.restart().unwrap();
    two.env.pass();
    assert_eq!(goto("team@example.org"), None, "removed once every source is read");
    assert!(goto("crew@example.net").is_some());
    assert!(goto("u2@example.net").is_some());
    assert!(goto("staff@example.org").is_some());
}

#[test]
fn groups_of_two_sources_can_give_send_as_rights() {
    use sync_test_support::mailcow::MailboxSpec;
    let mut two = Two::start(users(2), generate_users(2, "example.net"));
    let base = two.env.slapd.base_dn().to_owned();
    let dn = |uid: &str| format!("uid={uid},ou=people,{base}");
    two.env
        .slapd
        .apply_ldif(&(groups_ou_ldif(&base) + &group_ldif(&base, "info", Some("info@example.org"), &[dn("user00001")])))
        .unwrap();
    two.branch
        .apply_ldif(&(groups_ou_ldif(&base) + &group_ldif(&base, "desk", Some("desk@example.net"), &[dn("user00002")])))
        .unwrap();
    // The shared addresses are the admin's own mailboxes.
    for (local_part, domain) in [("info", "example.org"), ("desk", "example.net")] {
        two.env
            .emu
            .add_mailbox(MailboxSpec {
                local_part: local_part.into(),
                domain: domain.into(),
                quota_mib: 100,
                ..MailboxSpec::default()
            })
            .unwrap();
    }
    let groups = json!({"search_base": format!("ou=groups,{base}"),
        "search_filter": "(&(objectClass=groupOfNames)(mail=*))", "as": "sender_acl"});
    two.set_in(0, "/groups", groups.clone());
    two.set_in(1, "/groups", groups);
    // The first pass makes the mailboxes; the next reads their lists and grants.
    two.env.pass();
    two.env.pass();
    assert_eq!(two.env.emu.sender_acl("user00001@example.org"), ["info@example.org"]);
    assert_eq!(two.env.emu.sender_acl("user00002@example.net"), ["desk@example.net"]);
    assert!(two.env.emu.sender_acl("user00001@example.net").is_empty());
    assert!(two.env.emu.aliases().is_empty(), "no distribution alias in this mode");
}
