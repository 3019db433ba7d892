//! Coexisting with mailcow's own LDAP identity provider (issue 18 part 7): its mailboxes
//! (authsource `ldap`, without this tool's tag) are left alone unless
//! `sync.idp_mailboxes` is `adopt`; `check` says what each side owns, without the IdP's
//! bind password.

use serde_json::json;
use sync_test_support::mailcow::MailboxSpec;

use crate::util::{Env, managed_rows, users};

const BIND_SECRET: &str = "IdP-Bind-Secret-42";

/// Three LDAP users; mailcow's LDAP IdP (periodic sync on, one template mapper) already
/// made user00002's mailbox, with authsource `ldap` and no tag.
fn with_idp() -> Env {
    let mut env = Env::start(users(3));
    env.emu.set_identity_provider(Some(json!({
        "authsource": "ldap", "host": "ldap.corp", "port": "389", "basedn": "dc=corp",
        "binddn": "cn=mailcow,dc=corp", "bindpass": BIND_SECRET, "periodic_sync": "1",
        "import_users": "1", "mappers": ["staff"], "templates": ["Default"],
    })));
    env.emu
        .add_mailbox(MailboxSpec {
            local_part: "user00002".into(),
            name: "From The IdP".into(),
            password: String::new(),
            authsource: "ldap".into(),
            ..MailboxSpec::default()
        })
        .unwrap();
    env.set("/sync/adopt", json!("by_address"));
    env
}

#[test]
fn idp_mailboxes_are_left_alone_by_default() {
    let mut env = with_idp();
    let run = env.run(&["--json"]);
    run.expect(0);
    let report = run.json();
    let text = report.to_string();
    assert!(
        text.contains("user00002@example.org") && text.contains("identity provider"),
        "the skip is in the JSON report: {text}"
    );
    let mb = env.mailbox("user00002@example.org");
    assert_eq!(mb["authsource"], "ldap", "not switched to mailcow");
    assert_eq!(mb["name"], "From The IdP", "not edited");
    assert!(mb.get("tags").is_none(), "not tagged: {mb}");
    let rows = managed_rows(&env.state_file());
    assert_eq!(rows.len(), 2, "only the two it created: {rows:?}");
    assert!(rows.iter().all(|(_, a)| a != "user00002@example.org"));

    // A dry run plans the same skip and writes nothing.
    env.emu.reset_counts();
    let run = env.run(&["--dry-run"]);
    run.expect(0);
    assert!(run.stderr.contains("user00002@example.org"), "{}", run.stderr);
    assert_eq!(env.emu.count_writes(), 0);

    // Told to adopt: taken over (tagged, switched to this tool's authsource).
    env.set("/sync/idp_mailboxes", json!("adopt"));
    env.pass();
    let mb = env.mailbox("user00002@example.org");
    assert_eq!(mb["tags"], json!(["ldap-sync"]));
    assert_eq!(mb["authsource"], "mailcow");
    assert_eq!(managed_rows(&env.state_file()).len(), 3);
}

/// `sync.authsource: "ldap"` (this tool makes the IdP's mailboxes): `auto` adopts, as
/// before the rule existed.
#[test]
fn with_authsource_ldap_idp_mailboxes_are_adopted_as_before() {
    let mut env = with_idp();
    env.set("/sync/authsource", json!("ldap"));
    env.pass();
    let mb = env.mailbox("user00002@example.org");
    assert_eq!(mb["tags"], json!(["ldap-sync"]));
    assert_eq!(mb["authsource"], "ldap");
    assert_eq!(managed_rows(&env.state_file()).len(), 3);
}

#[test]
fn check_says_what_each_side_owns_without_the_bind_password() {
    let mut env = with_idp();
    env.pass();
    let run = env.run(&["check"]);
    run.expect(0);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains("mailcow identity provider: LDAP ldap.corp:389")
            && out.contains("periodic_sync on")
            && out.contains("1 template mappers"),
        "{out}"
    );
    assert!(
        out.contains("mailcow's IdP owns 1 authsource `ldap` mailboxes") && out.contains("\"protect\""),
        "{out}"
    );
    assert!(
        out.contains("re-applies its mapped mailbox template at every login"),
        "{out}"
    );
    assert!(out.contains("import_users"), "{out}");
    assert!(!out.contains(BIND_SECRET), "the bind password never shows: {out}");

    env.set("/sync/authsource", json!("ldap"));
    env.pass();
    let run = env.run(&["check", "--json"]);
    run.expect(0);
    let doc = run.json();
    let text = doc.to_string();
    assert!(!text.contains(BIND_SECRET), "{text}");
    let idp = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "mailcow_idp")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(idp["details"].to_string().contains("\\\"adopt\\\""), "{idp}");
    assert!(
        doc["warnings"].to_string().contains("periodic LDAP sync"),
        "three ldap mailboxes are now this tool's and mailcow's periodic sync writes them too: {text}"
    );
}
