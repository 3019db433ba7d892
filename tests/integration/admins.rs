//! Domain admins from an LDAP group (issue 18 part 6) against slapd and the emulator:
//! members become domain admins of the configured domains, leavers lose the account,
//! hand-made admins are never touched, and the guard holds mass deletions.

use serde_json::{Value, json};
use sync_test_support::mailcow::EmulatorOptions;
use sync_test_support::slapd::{SlapdOptions, TestUser};

use crate::util::{Env, roomy_domain, users};

const ADD: &str = "/api/v1/add/domain-admin";
const DELETE: &str = "/api/v1/delete/domain-admin";

fn admin<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|a| a["username"] == name)
}

/// Four users; `cn=mailadmins` lists user00001 and user00002.
fn with_admin_group() -> (Env, String) {
    admin_group_in(Env::start(users(4)))
}

fn admin_group_in(mut env: Env) -> (Env, String) {
    env.emu.add_domain(roomy_domain("example.net"));
    let base = env.slapd.base_dn().to_owned();
    let group = format!("cn=mailadmins,ou=groups,{base}");
    env.slapd
        .apply_ldif(&format!(
            "dn: ou=groups,{base}\nobjectClass: organizationalUnit\nou: groups\n\n\
             dn: {group}\nobjectClass: groupOfNames\ncn: mailadmins\nmember: {}\nmember: {}\n\n",
            env.slapd.user_dn("user00001"),
            env.slapd.user_dn("user00002"),
        ))
        .unwrap();
    env.set(
        "/domain_admins",
        json!({"group": group, "domains": ["example.org", "example.net"]}),
    );
    (env, group)
}

fn set_members(env: &Env, group: &str, uids: &[&str]) {
    let mut ldif = format!("dn: {group}\nchangetype: modify\nreplace: member\n");
    for uid in uids {
        ldif.push_str(&format!("member: {}\n", env.slapd.user_dn(uid)));
    }
    if uids.is_empty() {
        // groupOfNames needs a member: the usual placeholder, an entry that does not exist.
        ldif.push_str(&format!("member: cn=nobody,{}\n", env.slapd.base_dn()));
    }
    ldif.push('\n');
    env.slapd.apply_ldif(&ldif).unwrap();
}

#[test]
fn group_members_become_domain_admins_and_leavers_are_removed() {
    let (mut env, group) = with_admin_group();
    let run = env.run(&["--dry-run", "--json"]);
    run.expect(0);
    let report = run.json();
    let changes = report["domain_admins"]["changes"].as_array().unwrap().clone();
    assert_eq!(changes.len(), 2, "{report}");
    assert_eq!(changes[0]["action"], "create");
    assert_eq!(changes[0]["password"], "LDAP");
    assert!(!report.to_string().contains("{SSHA"), "no password in the report");
    assert!(env.emu.domain_admins().is_empty(), "dry-run writes nothing");

    let run = env.run(&[]);
    run.expect(0);
    assert!(
        run.stderr.contains("domain admins 2 created, 0 updated, 0 deleted"),
        "{}",
        run.stderr
    );
    let list = env.emu.domain_admins();
    let a = admin(&list, "user00001").expect("user00001 is a domain admin");
    assert_eq!(a["selected_domains"], json!(["example.net", "example.org"]));
    assert_eq!(a["active"], json!(1));
    assert_eq!(
        env.emu.domain_admin_password("user00001").unwrap(),
        TestUser::new("user00001", "example.org").password.unwrap(),
        "the LDAP hash, kept as it is"
    );
    assert!(admin(&list, "user00002").is_some());

    // Unchanged: no admin writes.
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count("POST", ADD), 0);
    assert_eq!(env.emu.count_writes(), 0, "{:?}", env.emu.requests());

    // user00002 leaves, user00003 joins: one delete, one add.
    set_members(&env, &group, &["user00001", "user00003"]);
    env.emu.reset_counts();
    let run = env.pass();
    assert!(
        run.stderr.contains("domain admins 1 created, 0 updated, 1 deleted"),
        "{}",
        run.stderr
    );
    let list = env.emu.domain_admins();
    assert!(admin(&list, "user00002").is_none());
    assert!(admin(&list, "user00003").is_some());
    assert_eq!(env.emu.count("POST", DELETE), 1);

    // The configured domains change: an edit gives them.
    env.set("/domain_admins/domains", json!(["example.org"]));
    let run = env.pass();
    assert!(run.stderr.contains("2 updated, 0 deleted"), "{}", run.stderr);
    let list = env.emu.domain_admins();
    assert_eq!(
        admin(&list, "user00001").unwrap()["selected_domains"],
        json!(["example.org"])
    );
}

#[test]
fn hand_made_admins_are_left_alone_and_the_guard_holds() {
    let (mut env, group) = with_admin_group();
    // An admin named like a member, made by hand: skipped, never edited or deleted.
    let status = env.emu.add_domain_admin_for_test("user00002", &["example.net"]);
    assert!(status, "seeded");
    env.set("/sync/max_removals", json!(0));
    let run = env.run(&[]);
    run.expect(0);
    assert!(
        run.stderr.contains("skipped domain admin user00002") && run.stderr.contains("did not create"),
        "{}",
        run.stderr
    );
    let list = env.emu.domain_admins();
    assert_eq!(
        admin(&list, "user00002").unwrap()["selected_domains"],
        json!(["example.net"])
    );

    // The group empties: the guard refuses the pass, nothing is deleted.
    set_members(&env, &group, &[]);
    let run = env.run(&[]);
    run.expect(4);
    assert!(run.stderr.contains("domain admin"), "{}", run.stderr);
    assert!(admin(&env.emu.domain_admins(), "user00001").is_some());
    // --force: user00001 (made by this tool) goes; the hand-made one stays.
    env.run(&["--force"]).expect(0);
    let list = env.emu.domain_admins();
    assert!(admin(&list, "user00001").is_none());
    assert!(admin(&list, "user00002").is_some(), "never touched");
}

#[test]
fn a_missing_group_fails_the_pass_and_removes_nothing() {
    let (mut env, _) = with_admin_group();
    env.pass();
    assert_eq!(env.emu.domain_admins().len(), 2);
    env.set("/domain_admins/group", json!("cn=nope,dc=nowhere"));
    let run = env.run(&[]);
    run.expect(3);
    assert!(run.stderr.contains("no domain admin removals"), "{}", run.stderr);
    assert_eq!(env.emu.domain_admins().len(), 2);
}

#[test]
fn with_domain_admins_every_incremental_pass_is_full() {
    let (mut env, _) = admin_group_in(Env::with(
        SlapdOptions {
            users: users(4),
            size_limit: 0,
            syncprov: true,
            ..SlapdOptions::default()
        },
        EmulatorOptions::default(),
    ));
    env.set("/ldap/incremental", json!("syncrepl"));
    env.pass();
    let run = env.run(&["--json"]);
    run.expect(0);
    let pass = &run.json()["pass"];
    assert_eq!(pass["kind"], "full", "{pass}");
    assert!(pass["why"].as_str().unwrap_or("").contains("domain_admins"), "{pass}");
}

#[test]
fn check_names_the_admin_group_members() {
    let (env, _) = with_admin_group();
    let run = env.run(&["check"]);
    run.expect(0);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains("2 members (user00001, user00002) for example.net, example.org"),
        "{out}"
    );
    assert!(env.emu.domain_admins().is_empty(), "check writes nothing");
}
