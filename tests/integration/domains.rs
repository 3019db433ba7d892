//! Other mail domains: `ldap.user_mapping.mail_rewrite` and `sync.create_domains`, against
//! slapd and the emulator's `add/domain` (docs/mailcow-api-domains.md).

use serde_json::json;
use sync_test_support::slapd::TestUser;

use crate::util::{Env, managed_rows, report_changes};

const MIB: i64 = 1_048_576;

fn summary_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("mailcow-ldap-sync: "))
        .unwrap_or_else(|| panic!("no summary line in {stderr}"))
}

#[test]
fn mail_rewrite_turns_ldap_addresses_into_mailcow_ones_everywhere() {
    let mut anna = TestUser::new("anna", "Corp.Local");
    anna.aliases = vec!["Anna.Alt@corp.local".into(), "anna@corp.local".into()];
    // Two entries that meet at one address once rewritten: both skipped, as duplicates.
    let dup_old = TestUser::new("dup", "corp.local");
    let mut dup_new = TestUser::new("dup2", "example.org");
    dup_new.mail = Some("dup@example.org".into());
    let bob = TestUser::new("bob", "example.org");
    let mut env = Env::start(vec![anna, dup_old, dup_new, bob]);
    env.set("/ldap/user_mapping/aliases", json!("mailAlternateAddress"));
    env.set(
        "/ldap/user_mapping/mail_rewrite",
        json!({"@CORP.local": "@example.org"}),
    );

    let check = env.run(&["check"]);
    assert!(
        check.stdout.contains("mail_rewrite: @corp.local → @example.org")
            || check.stderr.contains("mail_rewrite: @corp.local → @example.org"),
        "{}\n{}",
        check.stdout,
        check.stderr
    );

    let run = env.run(&["--json"]);
    run.expect(0);
    let report = run.json();
    let mut created: Vec<&str> = report_changes(&report, "create")
        .iter()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    // The plan goes in uid (entryUUID) order.
    created.sort_unstable();
    assert_eq!(created, ["anna@example.org", "bob@example.org"]);
    assert!(env.emu.mailbox("anna@corp.local").is_none());
    assert_eq!(env.mailbox("anna@example.org")["name"], "Anna Tester");
    let aliases = env.emu.aliases();
    let alt = aliases
        .iter()
        .find(|a| a["address"] == "anna.alt@example.org")
        .expect("the alias value rewritten too");
    assert_eq!(alt["goto"], "anna@example.org");
    assert!(
        !aliases
            .iter()
            .any(|a| a["address"].as_str().unwrap().ends_with("@corp.local"))
    );
    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .all(|s| s["reason"].as_str().unwrap().contains("dup@example.org")),
        "{skipped:?}"
    );
    let rows: Vec<String> = managed_rows(&env.state_file()).into_iter().map(|(_, a)| a).collect();
    assert_eq!(rows, ["anna@example.org", "bob@example.org"]);

    // The next pass reads the same rewritten addresses: nothing to do.
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0, "{:?}", env.emu.requests());
}

#[test]
fn a_bad_mail_rewrite_is_a_config_error_naming_the_key() {
    let mut env = Env::start(vec![TestUser::new("anna", "example.org")]);
    env.set("/ldap/user_mapping/mail_rewrite", json!({"corp.local": "@example.org"}));
    let run = env.run(&[]);
    run.expect(2);
    assert!(
        run.stderr.contains("ldap.user_mapping.mail_rewrite.corp.local") && run.stderr.contains("must start with '@'"),
        "{}",
        run.stderr
    );
    env.set("/ldap/user_mapping/mail_rewrite", json!({"@corp.local": ""}));
    let run = env.run(&[]);
    run.expect(2);
    assert!(
        run.stderr.contains("mail_rewrite.@corp.local: target"),
        "{}",
        run.stderr
    );
    assert_eq!(env.emu.total_requests(), 0, "nothing contacted");
}

fn three_domains() -> Env {
    let mut env = Env::start(vec![
        TestUser::new("nina", "new.test"),
        TestUser::new("nils", "new.test"),
        TestUser::new("eve", "example.org"),
        TestUser::new("otto", "outside.test"),
    ]);
    env.set("/sync/domains", json!(["example.org", "new.test"]));
    env
}

#[test]
fn without_create_domains_a_missing_domain_fails_its_users_as_before() {
    let env = three_domains();
    let run = env.run(&[]);
    run.expect(3);
    assert!(
        run.stderr.contains("new.test does not exist in mailcow") && run.stderr.contains("sync.create_domains"),
        "{}",
        run.stderr
    );
    assert!(summary_line(&run.stderr).contains("1 created"), "{}", run.stderr);
    assert!(!summary_line(&run.stderr).contains("domains created"), "{}", run.stderr);
    assert_eq!(env.emu.count("POST", "/api/v1/add/domain"), 0);
    assert!(env.emu.domain("new.test").is_none());
}

#[test]
fn create_domains_adds_the_missing_domain_before_its_users_and_only_in_scope() {
    let mut env = three_domains();
    env.set(
        "/sync/create_domains",
        json!({"mailboxes": 50, "description": "Corp mail", "max_quota_mib": 4096}),
    );
    env.set("/sync/metrics_file", json!("metrics.prom"));

    let check = env.run(&["check"]);
    let text = format!("{}{}", check.stdout, check.stderr);
    assert!(
        text.contains(
            "domains missing in mailcow: new.test (2 users); sync.create_domains adds them with 50 mailboxes"
        ),
        "{text}"
    );
    assert!(!text.contains("outside.test"), "out of sync.domains: {text}");

    // Dry-run: the domain is in the plan, nothing is written (check's one write aside).
    env.emu.reset_counts();
    let dry = env.run(&["--dry-run", "--json"]);
    dry.expect(0);
    let report = dry.json();
    let planned = report_changes(&report, "create_domain");
    assert_eq!(planned.len(), 1, "{report}");
    assert_eq!(planned[0]["address"], "new.test");
    assert_eq!(planned[0]["status"], "planned");
    assert_eq!(planned[0]["fields"]["mailboxes"]["new"], 50);
    assert_eq!(planned[0]["fields"]["quota"]["new"], 50 * 4096);
    assert_eq!(report["summary"]["domains_created"], 1);
    assert_eq!(report["summary"]["created"], 3);
    assert_eq!(env.emu.count_writes(), 0);
    assert!(env.emu.domain("new.test").is_none());

    let run = env.run(&["-v"]);
    run.expect(0);
    let line = summary_line(&run.stderr);
    assert!(
        line.contains(
            "3 created, 0 updated, 0 disabled, 0 deleted, 0 unchanged, 0 skipped, 0 failed, 1 domains created"
        ),
        "{line}"
    );
    assert!(
        run.stderr.contains("applied create_domain new.test (50 mailboxes"),
        "{}",
        run.stderr
    );
    let d = env.emu.domain("new.test").expect("the domain was added");
    assert_eq!(d["description"], "Corp mail");
    assert_eq!(d["max_num_mboxes_for_domain"], 50);
    assert_eq!(d["max_quota_for_mbox"], 4096 * MIB);
    assert_eq!(d["max_quota_for_domain"], 50 * 4096 * MIB);
    assert_eq!(d["def_quota_for_mbox"], 3072 * MIB);
    assert_eq!(d["active"], 1);
    assert!(
        env.emu.domain("outside.test").is_none(),
        "never a domain outside sync.domains"
    );
    assert_eq!(env.mailbox("nina@new.test")["quota"], 1024 * MIB);
    assert!(env.emu.mailbox("nils@new.test").is_some());
    // The domain's request came before the creates in it.
    let posts: Vec<String> = env
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path)
        .collect();
    assert_eq!(posts[0], "/api/v1/add/domain", "{posts:?}");
    assert_eq!(posts.iter().filter(|p| p.ends_with("/add/domain")).count(), 1);
    let metrics = std::fs::read_to_string(env.dir.path().join("metrics.prom")).unwrap();
    assert!(
        metrics.contains("mailcow_ldap_sync_last_run_domains_created 1\n"),
        "{metrics}"
    );

    // The next pass finds the domain and its mailboxes: nothing to do.
    env.emu.reset_counts();
    let again = env.pass();
    assert_eq!(env.emu.count_writes(), 0, "{:?}", env.emu.requests());
    assert!(
        !summary_line(&again.stderr).contains("domains created"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_domain_mailcow_refuses_fails_its_users_and_sends_nothing_for_them() {
    let mut env = Env::start(vec![
        TestUser::new("postmaster", "mail.example.test"),
        TestUser::new("root", "mail.example.test"),
        TestUser::new("eve", "example.org"),
    ]);
    env.set("/sync/create_domains", json!(true));
    // mailcow refuses its own host name as a mail domain.
    env.emu.set_mailcow_hostname(Some("mail.example.test"));
    let run = env.run(&["--json"]);
    run.expect(3);
    let report = run.json();
    let domain = report_changes(&report, "create_domain");
    assert_eq!(domain.len(), 1);
    assert_eq!(domain[0]["status"], "failed");
    assert_eq!(domain[0]["error"], "domain_cannot_match_hostname");
    let creates = report_changes(&report, "create");
    let mut failed: Vec<&str> = creates
        .iter()
        .filter(|c| c["status"] == "failed")
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    failed.sort_unstable();
    assert_eq!(failed, ["postmaster@mail.example.test", "root@mail.example.test"]);
    assert!(
        creates
            .iter()
            .filter(|c| c["status"] == "failed")
            .all(|c| c["error"].as_str().unwrap().contains("could not be created in mailcow")),
        "{creates:?}"
    );
    assert_eq!(report["summary"]["failed"], 3, "the domain and its two users");
    assert_eq!(report["summary"]["domains_created"], 0);
    assert!(env.emu.mailbox("eve@example.org").is_some(), "other domains go on");
    assert_eq!(
        env.emu.count("POST", "/api/v1/add/mailbox"),
        1,
        "only eve's create was sent"
    );
    let rows: Vec<String> = managed_rows(&env.state_file()).into_iter().map(|(_, a)| a).collect();
    assert_eq!(rows, ["eve@example.org"], "nothing recorded for the users not created");

    // Once the admin sorts it out, the next pass creates them: nothing was lost.
    env.emu.set_mailcow_hostname(None);
    env.pass();
    assert!(env.emu.mailbox("postmaster@mail.example.test").is_some());
    assert_eq!(managed_rows(&env.state_file()).len(), 3);
}
