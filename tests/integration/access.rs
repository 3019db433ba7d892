//! `access`: mailcow's per-mailbox protocol access flags from LDAP groups and attributes,
//! against slapd and the emulator (docs/mailcow-api-templates.md).

use serde_json::{Value, json};
use sync_test_support::mailcow::EmulatorOptions;
use sync_test_support::slapd::SlapdOptions;

use crate::util::{Env, group_ldif, groups_ou_ldif, report_changes, users};

/// The seven flags of a mailbox in mailcow, as "imap pop3 smtp sieve sogo eas dav" digits.
fn flags(env: &Env, address: &str) -> String {
    let mb = env.mailbox(address);
    ["imap", "pop3", "smtp", "sieve", "sogo", "eas", "dav"]
        .map(|p| {
            mb["attributes"][format!("{p}_access")]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        })
        .join("")
}

/// user00001 in `cn=no-pop`, user00002 with `employeeType: no-mobile`, user00003 neither.
fn access_env(incremental: bool) -> Env {
    let mut env = Env::with(
        SlapdOptions {
            users: users(3),
            size_limit: if incremental { 0 } else { 20 },
            syncprov: incremental,
            ..SlapdOptions::default()
        },
        EmulatorOptions::default(),
    );
    let base = env.slapd.base_dn().to_owned();
    env.slapd
        .apply_ldif(&format!(
            "{}{}",
            groups_ou_ldif(&base),
            group_ldif(&base, "no-pop", None, &[format!("uid=user00001,ou=people,{base}")])
        ))
        .unwrap();
    env.slapd
        .modify_attr("user00002", "employeeType", &["No-Mobile"])
        .unwrap();
    env.set(
        "/access",
        json!({
            "default": {"pop3": true, "eas": true, "dav": true},
            "rules": [
                {"when": {"group": format!("CN=No-Pop, ou=groups,{base}")}, "set": {"pop3": false}},
                {"when": {"attribute": "employeeType", "value": "no-mobile"}, "set": {"eas": false, "dav": false}}
            ]
        }),
    );
    env
}

#[test]
fn access_flags_follow_groups_and_attributes_and_leave_the_others_alone() {
    let env = access_env(false);
    let base = env.slapd.base_dn().to_owned();

    // The plan carries the flags as data: a dry-run shows them and writes nothing.
    let dry = env.run(&["--dry-run", "--json"]);
    dry.expect(0);
    let report = dry.json();
    let creates = report_changes(&report, "create");
    assert_eq!(creates.len(), 3, "{report}");
    let first = creates
        .iter()
        .find(|c| c["address"] == "user00001@example.org")
        .unwrap();
    assert_eq!(first["fields"]["pop3_access"]["new"], 0, "{first}");
    assert_eq!(first["fields"]["eas_access"]["new"], 1, "{first}");
    assert!(first["fields"].get("imap_access").is_none(), "unmanaged: {first}");
    assert_eq!(env.emu.mailbox_count(), 0);

    env.pass();
    // imap pop3 smtp sieve sogo eas dav
    assert_eq!(flags(&env, "user00001@example.org"), "1011111");
    assert_eq!(flags(&env, "user00002@example.org"), "1111100");
    assert_eq!(flags(&env, "user00003@example.org"), "1111111");

    // An admin turns off IMAP and a managed flag by hand: the managed one is put back, the
    // other stays as the admin left it.
    env.emu
        .edit_mailbox("user00003@example.org", json!({"imap_access": 0, "dav_access": 0}));
    // The group now lists user00003 instead of user00001; user00002 loses its attribute.
    env.slapd
        .apply_ldif(&format!(
            "dn: cn=no-pop,ou=groups,{base}\nchangetype: modify\nreplace: member\nmember: uid=user00003,ou=people,{base}\n-\n\n"
        ))
        .unwrap();
    env.slapd.modify_attr("user00002", "employeeType", &[]).unwrap();
    let run = env.run(&["--json"]);
    run.expect(0);
    let report = run.json();
    let mut updates: Vec<(String, Value)> = report_changes(&report, "update")
        .iter()
        .map(|c| (c["address"].as_str().unwrap().to_owned(), c["fields"].clone()))
        .collect();
    updates.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        updates,
        vec![
            (
                "user00001@example.org".into(),
                json!({"pop3_access": {"old": 0, "new": 1}})
            ),
            (
                "user00002@example.org".into(),
                json!({"eas_access": {"old": 0, "new": 1}, "dav_access": {"old": 0, "new": 1}})
            ),
            (
                "user00003@example.org".into(),
                json!({"pop3_access": {"old": 1, "new": 0}, "dav_access": {"old": 0, "new": 1}})
            ),
        ],
        "{report}"
    );
    assert_eq!(flags(&env, "user00001@example.org"), "1111111");
    assert_eq!(flags(&env, "user00002@example.org"), "1111111");
    assert_eq!(
        flags(&env, "user00003@example.org"),
        "0011111",
        "imap stays off: not managed"
    );

    // Settled: the next pass writes nothing.
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0, "{:?}", env.emu.requests());
}

#[test]
fn a_missing_group_stops_the_pass_before_any_write() {
    let mut env = access_env(false);
    let base = env.slapd.base_dn().to_owned();
    env.set(
        "/access/rules",
        json!([{"when": {"group": format!("cn=nobody-made-this,ou=groups,{base}")}, "set": {"pop3": false}}]),
    );
    let run = env.run(&[]);
    run.expect(1);
    assert!(
        run.stderr
            .contains("access/templates: reading the group `cn=nobody-made-this,ou=groups,"),
        "{}",
        run.stderr
    );
    assert_eq!(env.emu.count_writes(), 0);
    assert_eq!(env.emu.mailbox_count(), 0);
}

#[test]
fn access_by_group_makes_every_incremental_pass_full_and_by_attribute_does_not() {
    let mut env = access_env(true);
    env.set("/ldap/incremental", json!("syncrepl"));
    let kind = |run: &crate::util::Run| {
        run.expect(0);
        let report = run.json();
        (
            report["pass"]["kind"].as_str().unwrap_or_default().to_owned(),
            report["pass"]["why"].as_str().unwrap_or_default().to_owned(),
        )
    };
    env.run(&[]).expect(0);
    assert_eq!(
        kind(&env.run(&["--json"])),
        (
            "full".into(),
            "access or template rules by group are on: every pass is full".into()
        )
    );
    assert_eq!(flags(&env, "user00001@example.org"), "1011111");

    // Attribute rules only: incremental passes, which read the rule's attribute too.
    env.set(
        "/access/rules",
        json!([{"when": {"attribute": "employeeType", "value": "no-mobile"}, "set": {"eas": false}}]),
    );
    env.run(&[]).expect(0);
    assert_eq!(
        flags(&env, "user00001@example.org"),
        "1111111",
        "the group rule is gone"
    );
    env.slapd
        .modify_attr("user00003", "employeeType", &["no-mobile"])
        .unwrap();
    let run = env.run(&["--json"]);
    assert_eq!(kind(&run).0, "incremental", "{}", run.stdout);
    assert_eq!(flags(&env, "user00003@example.org"), "1111101");
}

#[test]
fn check_says_what_access_manages_and_for_how_many_users_a_flag_is_off() {
    let env = access_env(false);
    let run = env.run(&["check"]);
    run.expect(0);
    assert!(
        run.stdout
            .contains("[ ok ] access: manages pop3, eas, dav (2 rules, 1 groups read)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("pop3 off for 1 users, eas off for 1 users, dav off for 1 users"),
        "{}",
        run.stdout
    );
    assert_eq!(env.emu.mailbox_count(), 0, "check changes nothing");
}
