//! `groups.as: "sender_acl"`: a group's members may send as its address, through their
//! mailboxes' `sender_acl` lists, against slapd and the emulator.

use serde_json::{Value, json};
use sync_test_support::mailcow::MailboxSpec;

use crate::util::{Env, group_ldif, groups_ou_ldif, users};

const EDIT_MAILBOX: &str = "/api/v1/edit/mailbox";

fn set_members(env: &Env, cn: &str, members: &[&str]) {
    let base = env.slapd.base_dn().to_owned();
    let mut ldif = format!("dn: cn={cn},ou=groups,{base}\nchangetype: modify\nreplace: member\n");
    for m in members {
        ldif.push_str(&format!("member: uid={m},ou=people,{base}\n"));
    }
    ldif.push('\n');
    env.slapd.apply_ldif(&ldif).unwrap();
}

/// Four users, the shared mailbox info@ made by the admin in mailcow, and the group
/// `info` (info@example.org: user00001, user00002) synced as send-as rights.
fn with_send_as_group() -> Env {
    let mut env = Env::start(users(4));
    let base = env.slapd.base_dn().to_owned();
    env.slapd
        .apply_ldif(&format!(
            "{}{}",
            groups_ou_ldif(&base),
            group_ldif(
                &base,
                "info",
                Some("info@example.org"),
                &[
                    format!("uid=user00001,ou=people,{base}"),
                    format!("uid=user00002,ou=people,{base}")
                ]
            )
        ))
        .unwrap();
    env.emu
        .add_mailbox(MailboxSpec {
            local_part: "info".into(),
            quota_mib: 100,
            ..MailboxSpec::default()
        })
        .unwrap();
    env.set("/groups/search_base", json!(format!("ou=groups,{base}")));
    env.set("/groups/search_filter", json!("(&(objectClass=groupOfNames)(mail=*))"));
    env.set("/groups/as", json!("sender_acl"));
    env
}

fn summary(run: &Value) -> &Value {
    &run["summary"]
}

#[test]
fn members_get_send_as_on_the_group_address_and_lose_only_what_this_tool_granted() {
    let mut env = with_send_as_group();
    // The first pass creates the mailboxes; their rights come with the next pass, which
    // reads their lists.
    env.pass();
    assert!(env.emu.sender_acl("user00001@example.org").is_empty());
    assert!(env.emu.aliases().is_empty(), "no distribution alias in this mode");
    // An entry the admin made by hand.
    env.emu.edit_mailbox(
        "user00001@example.org",
        json!({"sender_acl": ["user00004@example.org"]}),
    );

    env.emu.reset_counts();
    let dry = env.run(&["--dry-run", "--json"]);
    dry.expect(0);
    assert_eq!(env.emu.count_writes(), 0, "a dry-run writes nothing");
    let report = dry.json();
    assert_eq!(summary(&report)["send_as_granted"], json!(2), "{report:#}");
    let change = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "user00001@example.org")
        .cloned()
        .expect("a planned sender_acl change");
    assert_eq!(change["action"], "sender_acl_update");
    assert_eq!(
        change["fields"]["sender_acl"],
        json!({"old": ["user00004@example.org"], "new": ["user00004@example.org", "info@example.org"]})
    );

    env.set("/sync/metrics_file", json!("send-as.prom"));
    let run = env.run(&["-v"]);
    run.expect(0);
    assert!(
        run.stderr
            .contains("applied sender_acl_update user00002@example.org send-as (none → info@example.org)"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("send-as 2 granted, 0 revoked"), "{}", run.stderr);
    assert_eq!(
        env.emu.sender_acl("user00001@example.org"),
        ["user00004@example.org", "info@example.org"],
        "the admin's entry is kept"
    );
    assert_eq!(env.emu.sender_acl("user00002@example.org"), ["info@example.org"]);
    assert_eq!(env.emu.count("POST", EDIT_MAILBOX), 2, "one edit per member mailbox");
    let metrics = std::fs::read_to_string(env.dir.path().join("send-as.prom")).unwrap();
    assert!(
        metrics.contains("mailcow_ldap_sync_last_run_send_as{action=\"granted\"} 2"),
        "{metrics}"
    );

    // Nothing changed: no write.
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0);

    // user00001 leaves: only the grant this tool made goes.
    set_members(&env, "info", &["user00002", "user00003"]);
    // user00003 had the right already, from the admin: it is not recorded as ours.
    env.emu
        .edit_mailbox("user00003@example.org", json!({"sender_acl": ["info@example.org"]}));
    env.emu.reset_counts();
    let run = env.pass();
    assert!(run.stderr.contains("send-as 0 granted, 1 revoked"), "{}", run.stderr);
    assert_eq!(env.emu.sender_acl("user00001@example.org"), ["user00004@example.org"]);
    assert_eq!(env.emu.count("POST", EDIT_MAILBOX), 1, "user00003 needs no write");
    // user00003 leaves too: its entry was not ours, so it stays.
    set_members(&env, "info", &["user00002"]);
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0);
    assert_eq!(env.emu.sender_acl("user00003@example.org"), ["info@example.org"]);

    // The group search finds nothing while grants are held: refused, then forced.
    env.slapd
        .apply_ldif(&format!(
            "dn: cn=info,ou=groups,{}\nchangetype: delete\n\n",
            env.slapd.base_dn()
        ))
        .unwrap();
    let run = env.run(&[]);
    run.expect(4);
    assert!(run.stderr.contains("send-as grants"), "{}", run.stderr);
    assert_eq!(env.emu.sender_acl("user00002@example.org"), ["info@example.org"]);
    env.run(&["--force"]).expect(0);
    assert!(env.emu.sender_acl("user00002@example.org").is_empty());
    assert_eq!(env.emu.sender_acl("user00003@example.org"), ["info@example.org"]);
}

#[test]
fn a_mailcow_that_hides_the_lists_gets_no_send_as_writes() {
    let env = with_send_as_group();
    env.pass();
    env.emu.set_sender_acl_hidden(true);
    env.emu.reset_counts();
    let run = env.run(&[]);
    run.expect(3);
    assert!(run.stderr.contains("2026-07a"), "{}", run.stderr);
    assert_eq!(env.emu.count("POST", EDIT_MAILBOX), 0);
    assert!(env.emu.sender_acl("user00001@example.org").is_empty());
}

#[test]
fn a_group_address_mailcow_does_not_have_fails_and_shared_is_refused() {
    let mut env = with_send_as_group();
    env.emu.delete_mailbox("info@example.org");
    let run = env.run(&[]);
    run.expect(3);
    assert!(
        run.stderr
            .contains("failed sender_acl_update info@example.org: send-as for group:")
            && run.stderr.contains("neither a mailbox nor an alias"),
        "{}",
        run.stderr
    );
    assert_eq!(env.emu.mailbox_count(), 4, "the users' mailboxes are made all the same");
    env.run(&[]).expect(3);
    assert_eq!(env.emu.count("POST", EDIT_MAILBOX), 0);

    let check = env.run(&["check"]);
    assert!(
        check
            .stdout
            .contains("1 with an address and members, as sender_acl: info@example.org"),
        "{}{}",
        check.stdout,
        check.stderr
    );

    env.set("/groups/as", json!("shared"));
    let run = env.run(&[]);
    run.expect(2);
    assert!(
        run.stderr.contains("groups.as") && run.stderr.contains("cannot grant IMAP ACLs"),
        "{}",
        run.stderr
    );
}
