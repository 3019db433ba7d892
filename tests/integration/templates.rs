//! `templates`: the mailcow mailbox template of each user from LDAP groups and attributes,
//! against slapd and the emulator's templates (docs/mailcow-api-templates.md).

use serde_json::{Value, json};

use crate::util::{Env, report_changes, users};

const MIB: i64 = 1_048_576;

fn change<'a>(report: &'a Value, action: &str, address: &str) -> &'a Value {
    report_changes(report, action)
        .into_iter()
        .find(|c| c["address"] == address)
        .unwrap_or_else(|| panic!("no {action} of {address} in {report}"))
}

fn attr(env: &Env, address: &str, key: &str) -> Value {
    env.mailbox(address)["attributes"][key].clone()
}

/// user00001 in `cn=staff` (template Staff), user00002 `employeeType: contractor`
/// (Contractors), user00003 neither (Default). Quota is not mapped.
fn templates_env() -> Env {
    let mut env = Env::start(users(3));
    let base = env.slapd.base_dn().to_owned();
    env.slapd
        .apply_ldif(&format!(
            "dn: ou=groups,{base}\nobjectClass: organizationalUnit\nou: groups\n\n\
             dn: cn=staff,ou=groups,{base}\nobjectClass: groupOfNames\ncn: staff\nmember: uid=user00001,ou=people,{base}\n\n"
        ))
        .unwrap();
    env.slapd
        .modify_attr("user00002", "employeeType", &["contractor"])
        .unwrap();
    let staff = env.emu.add_template(json!({
        "template": "Staff", "quota": 2048, "protocol_access": ["imap", "smtp", "sieve"],
        "acl": ["spam_alias", "app_passwds"], "tags": ["staff"], "rl_value": "50", "rl_frame": "h"
    }));
    let contractors = env.emu.add_template(json!({
        "template": "Contractors", "quota": 512, "protocol_access": ["imap", "smtp"], "sogo_access": 0,
        "tags": ["contractor"]
    }));
    assert_eq!((staff, contractors), (3, 4));
    env.set("/ldap/user_mapping/quota", json!(""));
    env.set(
        "/templates",
        json!([
            {"when": {"group": format!("cn=staff,ou=groups,{base}")}, "template": "Staff"},
            {"when": {"attribute": "employeeType", "value": "Contractor"}, "template": "Contractors"},
            {"when": "default", "template": "Default"}
        ]),
    );
    env
}

#[test]
fn templates_are_given_on_create_and_applied_by_edits_when_the_match_changes() {
    let env = templates_env();
    let base = env.slapd.base_dn().to_owned();
    let run = env.run(&["--json"]);
    run.expect(0);
    let report = run.json();
    let first = change(&report, "create", "user00001@example.org");
    assert_eq!(
        first["fields"]["template"],
        json!({"old": null, "new": "Staff", "id": 3}),
        "{first}"
    );
    assert_eq!(first["fields"]["quota"]["new"], 2048, "quota unmapped: the template's");
    assert_eq!(first["fields"]["tags"]["new"], json!(["ldap-sync", "staff"]));

    let one = "user00001@example.org";
    assert_eq!(env.mailbox(one)["quota"], 2048 * MIB);
    assert_eq!(attr(&env, one, "pop3_access"), "0");
    assert_eq!(attr(&env, one, "sieve_access"), "1");
    assert_eq!(env.mailbox(one)["tags"], json!(["ldap-sync", "staff"]));
    assert_eq!(env.mailbox(one)["rl"], json!({"value": "50", "frame": "h"}));
    assert_eq!(env.emu.user_acl(one), ["app_passwds", "spam_alias"]);
    let two = "user00002@example.org";
    assert_eq!(env.mailbox(two)["quota"], 512 * MIB);
    assert_eq!(attr(&env, two, "sogo_access"), "0");
    assert_eq!(attr(&env, two, "sieve_access"), "0");
    let three = "user00003@example.org";
    assert_eq!(
        env.mailbox(three)["quota"],
        3072 * MIB,
        "Default's quota is 0 (unlimited): the domain's default instead"
    );
    assert_eq!(attr(&env, three, "pop3_access"), "1");
    assert!(env.emu.user_acl(three).contains(&"tls_policy".to_owned()));

    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0, "applied once: {:?}", env.emu.requests());

    // user00001 leaves staff, user00003 joins: each gets its new template by edits.
    env.slapd
        .apply_ldif(&format!(
            "dn: cn=staff,ou=groups,{base}\nchangetype: modify\nreplace: member\nmember: uid=user00003,ou=people,{base}\n-\n\n"
        ))
        .unwrap();
    let dry = env.run(&["--dry-run", "--json"]);
    dry.expect(0);
    assert_eq!(report_changes(&dry.json(), "template").len(), 2, "{}", dry.stdout);
    assert_eq!(attr(&env, three, "pop3_access"), "1", "a dry-run writes nothing");
    let run = env.run(&["--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report_changes(&report, "template").len(), 2, "{report}");
    let joined = change(&report, "template", three);
    assert_eq!(joined["fields"]["template"], json!({"old": "Default", "new": "Staff"}));
    assert_eq!(joined["fields"]["quota"], json!({"old": 3072, "new": 2048}));
    assert_eq!(joined["fields"]["pop3_access"], json!({"old": 1, "new": 0}));
    assert_eq!(report["summary"]["updated"], 2, "{report}");
    assert_eq!(env.mailbox(three)["quota"], 2048 * MIB);
    assert_eq!(attr(&env, three, "pop3_access"), "0");
    assert_eq!(attr(&env, three, "eas_access"), "0");
    assert_eq!(env.mailbox(three)["rl"], json!({"value": "50", "frame": "h"}));
    assert_eq!(env.emu.user_acl(three), ["app_passwds", "spam_alias"]);
    let tags = env.mailbox(three)["tags"].clone();
    assert!(tags.as_array().unwrap().contains(&json!("staff")), "{tags}");
    // Back to Default: its flags, ACLs and no rate limit; its quota is 0, so the quota stays.
    assert_eq!(env.mailbox(one)["quota"], 2048 * MIB);
    assert_eq!(attr(&env, one, "pop3_access"), "1");
    assert_eq!(env.mailbox(one)["rl"], json!(false));
    assert!(env.emu.user_acl(one).contains(&"tls_policy".to_owned()));

    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0, "{:?}", env.emu.requests());
}

#[test]
fn check_resolves_each_template_name_and_a_missing_one_fails_it() {
    let mut env = templates_env();
    let run = env.run(&["check"]);
    run.expect(0);
    assert!(
        run.stdout
            .contains("[ ok ] templates: Staff → id 3, Contractors → id 4, Default → id 2"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Staff: 1 users, Contractors: 1 users, Default: 1 users"),
        "{}",
        run.stdout
    );
    env.set("/templates", json!([{"when": "default", "template": "Nope"}]));
    let run = env.run(&["check"]);
    run.expect(1);
    assert!(
        run.stdout.contains("[FAIL] templates: Nope: no such template"),
        "{}",
        run.stdout
    );
    // A pass says so and creates the mailboxes without it.
    let run = env.run(&[]);
    run.expect(0);
    assert!(
        run.stderr.contains("templates: mailcow has no mailbox template `Nope`"),
        "{}",
        run.stderr
    );
    assert_eq!(env.emu.mailbox_count(), 3);
}

#[test]
fn a_bad_templates_rule_is_a_config_error_naming_the_key() {
    let mut env = Env::start(users(1));
    for (templates, expected) in [
        (json!({"template": "x"}), "templates: expected an array"),
        (json!([{"template": "Staff"}]), "templates[0].when: is missing"),
        (
            json!([{"when": "default", "template": ""}]),
            "templates[0].template: is missing or empty",
        ),
        (
            json!([{"when": "default", "template": "A"}, {"when": {"attribute": "a", "value": "b"}, "template": "B"}]),
            "templates[1].when: follows the \"default\" rule",
        ),
        (
            json!([{"when": {"attribute": "a"}, "template": "B"}]),
            "templates[0].when.value: is missing",
        ),
        (
            json!([{"when": "always", "template": "B"}]),
            "templates[0].when: expected",
        ),
        (
            json!([{"when": "default", "templat": "B"}]),
            "templates[0].templat: unknown key",
        ),
    ] {
        env.set("/templates", templates.clone());
        let run = env.run(&[]);
        run.expect(2);
        assert!(run.stderr.contains(expected), "{templates}: {}", run.stderr);
    }
    assert_eq!(env.emu.total_requests(), 0);
}

#[test]
fn template_rules_by_group_make_every_incremental_pass_full() {
    use sync_test_support::mailcow::EmulatorOptions;
    use sync_test_support::slapd::SlapdOptions;
    let mut env = Env::with(
        SlapdOptions {
            users: users(2),
            size_limit: 0,
            syncprov: true,
            ..SlapdOptions::default()
        },
        EmulatorOptions::default(),
    );
    let base = env.slapd.base_dn().to_owned();
    env.slapd
        .apply_ldif(&format!(
            "dn: ou=groups,{base}\nobjectClass: organizationalUnit\nou: groups\n\n\
             dn: cn=staff,ou=groups,{base}\nobjectClass: groupOfNames\ncn: staff\nmember: uid=user00001,ou=people,{base}\n\n"
        ))
        .unwrap();
    env.emu
        .add_template(json!({"template": "Staff", "protocol_access": ["imap"]}));
    env.set("/ldap/incremental", json!("syncrepl"));
    env.set(
        "/templates",
        json!([{"when": {"group": format!("cn=staff,ou=groups,{base}")}, "template": "Staff"}]),
    );
    env.pass();
    let run = env.run(&["--json"]);
    run.expect(0);
    let pass = &run.json()["pass"];
    assert_eq!(pass["kind"], "full", "{pass}");
    assert_eq!(
        pass["why"],
        "access or template rules by group are on: every pass is full"
    );
    assert_eq!(attr(&env, "user00001@example.org", "pop3_access"), "0");
    assert_eq!(
        attr(&env, "user00002@example.org", "pop3_access"),
        "1",
        "no rule, no default: no template"
    );
}

#[test]
fn template_rules_by_attribute_keep_an_unchanged_incremental_pass_silent() {
    use sync_test_support::mailcow::EmulatorOptions;
    use sync_test_support::slapd::SlapdOptions;
    let mut env = Env::with(
        SlapdOptions {
            users: users(2),
            size_limit: 0,
            syncprov: true,
            ..SlapdOptions::default()
        },
        EmulatorOptions::default(),
    );
    env.slapd
        .modify_attr("user00002", "employeeType", &["contractor"])
        .unwrap();
    env.emu
        .add_template(json!({"template": "Contractors", "protocol_access": ["imap"]}));
    env.set("/ldap/incremental", json!("syncrepl"));
    env.set(
        "/templates",
        json!([{"when": {"attribute": "employeeType", "value": "contractor"}, "template": "Contractors"}]),
    );
    env.pass();
    // Nothing changed: not even the template list is read.
    env.emu.reset_counts();
    let run = env.run(&["--json"]);
    run.expect(0);
    assert_eq!(run.json()["pass"]["kind"], "incremental", "{}", run.stderr);
    assert_eq!(env.emu.total_requests(), 0, "{:?}", env.emu.requests());
    // A change: the templates are read again, and the changed user planned with them.
    env.slapd.modify_attr("user00002", "sn", &["Later"]).unwrap();
    env.emu.reset_counts();
    let run = env.run(&["--json"]);
    run.expect(0);
    assert_eq!(run.json()["pass"]["kind"], "incremental");
    assert_eq!(env.emu.count("GET", "/api/v1/get/mailbox/template/all"), 1);
    assert!(
        env.mailbox("user00002@example.org")["name"]
            .as_str()
            .unwrap()
            .ends_with("Later")
    );
}
