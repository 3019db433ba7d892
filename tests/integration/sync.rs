//! The sync pass end to end: the built binary, a real slapd, the mailcow emulator.

use std::time::Duration;

use serde_json::json;
use sync_test_support::mailcow::{EmulatorOptions, Fault, MailboxSpec, RO_KEY};
use sync_test_support::slapd::{Slapd, SlapdOptions, TestUser};

use crate::util::{Env, TempDir, managed_rows, run_bin, users};

const MIB: u64 = 1 << 20;
const REDUCED: &str = "/api/v1/get/mailbox/reduced";
const ADD: &str = "/api/v1/add/mailbox";
const EDIT: &str = "/api/v1/edit/mailbox";

/// The userPassword value `TestUser::new` stored for `uid`.
fn ldap_password(uid: &str) -> String {
    TestUser::new(uid, "example.org").password.unwrap()
}

#[test]
fn import_past_the_size_limit_then_an_unchanged_pass_is_one_read() {
    let env = Env::start(users(45));
    let first = env.pass();
    assert!(first.stderr.contains("45 created"), "{}", first.stderr);
    assert_eq!(
        env.emu.mailbox_count(),
        45,
        "paging must see past the server's size limit of 20"
    );
    assert_eq!(env.emu.count("POST", ADD), 45);
    let mb = env.mailbox("user00001@example.org");
    assert_eq!(mb["quota"], json!(1024 * MIB));
    assert_eq!(mb["name"], "User00001 Tester");
    assert_eq!(mb["tags"], json!(["ldap-sync"]));
    assert_eq!(
        env.emu.stored_password("user00001@example.org").unwrap(),
        ldap_password("user00001"),
        "a {{SSHA}} hash is handed over as it is"
    );
    assert_eq!(managed_rows(&env.state_file()).len(), 45);

    env.emu.reset_counts();
    let second = env.pass();
    assert_eq!(env.emu.count("GET", REDUCED), 1, "one mailbox read");
    assert_eq!(env.emu.count_writes(), 0, "zero writes: {:?}", env.emu.requests());
    assert_eq!(
        env.emu.total_requests(),
        2,
        "mailboxes + domains: {:?}",
        env.emu.requests()
    );
    assert!(
        second.stderr.contains("0 created, 0 updated") && second.stderr.contains("45 unchanged"),
        "{}",
        second.stderr
    );
}

#[test]
fn a_managed_mailbox_deleted_in_mailcow_is_created_again_with_the_ldap_hash() {
    // An unchanged user is held as its state row without its hash; a new mailbox needs the
    // hash, so the pass reads it again from the entry.
    let env = Env::start(users(3));
    env.pass().expect(0);
    env.emu.delete_mailbox("user00002@example.org");
    env.emu.reset_counts();
    let run = env.pass();
    run.expect(0);
    assert!(run.stderr.contains("1 created, 0 updated"), "{}", run.stderr);
    assert_eq!(env.emu.count("POST", ADD), 1);
    assert_eq!(
        env.emu.stored_password("user00002@example.org").unwrap(),
        ldap_password("user00002"),
        "the hash read again is handed over as it is"
    );
    assert_eq!(managed_rows(&env.state_file()).len(), 3);

    // In a dry run nothing is read again and nothing is written.
    env.emu.delete_mailbox("user00003@example.org");
    env.emu.reset_counts();
    let dry = env.run(&["--dry-run", "--json"]);
    dry.expect(0);
    assert_eq!(env.emu.count_writes(), 0);
    let report = dry.json();
    let create = &report["changes"][0];
    assert_eq!(create["action"], "create", "{}", dry.stdout);
    assert_eq!(create["fields"]["password"], json!({"set": true, "source": "ldap"}));

    env.emu.reset_counts();
    env.pass().expect(0);
    assert_eq!(
        env.emu.stored_password("user00003@example.org").unwrap(),
        ldap_password("user00003")
    );
    env.emu.reset_counts();
    let unchanged = env.pass();
    unchanged.expect(0);
    assert_eq!(env.emu.count_writes(), 0, "{}", unchanged.stderr);
}

#[test]
fn an_unpaged_search_is_cut_by_the_size_limit_and_fails_loudly() {
    let mut env = Env::start(users(25));
    env.set("/ldap/page_size", json!(0));
    let run = env.run(&[]);
    run.expect(1);
    assert!(
        run.stderr.contains("size limit") && run.stderr.contains("page_size"),
        "{}",
        run.stderr
    );
    assert_eq!(env.emu.count_writes(), 0, "a short list must never be applied");
}

#[test]
fn each_attribute_changed_alone_is_exactly_one_write() {
    let env = Env::start(users(3));
    env.pass();
    let who = "user00002";
    let addr = "user00002@example.org";
    let new_hash = sync_test_support::slapd::ssha("another-password", b"saltsalt");
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("givenName", vec!["Renamed".into()], EDIT),
        ("MailQuota", vec!["2048".into()], EDIT),
        ("mailActive", vec!["FALSE".into()], EDIT),
        ("mailTLSEnforceIn", vec!["TRUE".into()], "/api/v1/edit/tls_policy"),
        ("userPassword", vec![new_hash.clone()], EDIT),
    ];
    for (attr, values, endpoint) in cases {
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        env.slapd.modify_attr(who, attr, &values).unwrap();
        env.emu.reset_counts();
        env.pass();
        assert_eq!(env.emu.count_writes(), 1, "{attr}: {:?}", env.emu.requests());
        assert_eq!(env.emu.count("POST", endpoint), 1, "{attr}");
        env.emu.reset_counts();
        env.pass();
        assert_eq!(
            env.emu.count_writes(),
            0,
            "{attr}: the next pass writes nothing: {:?}",
            env.emu.requests()
        );
    }
    let mb = env.mailbox(addr);
    assert_eq!(mb["name"], "Renamed Tester");
    assert_eq!(mb["quota"], json!(2048 * MIB));
    assert_eq!(mb["active"], json!(0));
    assert_eq!(mb["attributes"]["tls_enforce_in"], "1");
    assert_eq!(env.emu.stored_password(addr).unwrap(), new_hash);
    // The others were never rewritten.
    assert_eq!(env.mailbox("user00001@example.org")["name"], "User00001 Tester");
}

#[test]
fn removal_policies_and_unmanaged_mailboxes() {
    for (policy, active) in [
        ("disable", 0),
        ("disallow_login", 2),
        // Disabled first: deleted after `delete_after_days` (tests/integration/lifecycle.rs).
        ("delete", 0),
        ("keep", 1),
    ] {
        let mut env = Env::start(users(4));
        env.set("/sync/on_removed", json!(policy));
        env.emu
            .add_mailbox(MailboxSpec {
                local_part: "postmaster".into(),
                ..MailboxSpec::default()
            })
            .unwrap();
        env.pass();
        env.slapd.delete_user("user00004").unwrap();
        let run = env.run(&["-v"]);
        run.expect(0);
        let gone = env.emu.mailbox("user00004@example.org");
        assert_eq!(gone.expect("kept")["active"], json!(active), "{policy}: {}", run.stderr);
        assert_eq!(
            env.mailbox("postmaster@example.org")["active"],
            json!(1),
            "{policy}: unmanaged mailbox untouched"
        );
        assert_eq!(env.mailbox("user00001@example.org")["active"], json!(1));
        env.emu.reset_counts();
        env.pass();
        assert_eq!(env.emu.count_writes(), 0, "{policy}: converged");
    }
}

#[test]
fn returning_user_is_enabled_again() {
    let env = Env::start(users(3));
    env.pass();
    let user = TestUser::new("user00003", "example.org");
    env.slapd.delete_user("user00003").unwrap();
    env.pass();
    assert_eq!(env.mailbox("user00003@example.org")["active"], json!(0));
    env.slapd.add_users(&[user]).unwrap();
    env.pass();
    assert_eq!(env.mailbox("user00003@example.org")["active"], json!(1));
    assert_eq!(env.emu.mailbox_count(), 3, "no duplicate");
}

#[test]
fn existing_mailbox_is_adopted_only_when_tagged_or_asked() {
    let mut env = Env::start(users(3));
    env.emu
        .add_mailbox(MailboxSpec {
            local_part: "user00002".into(),
            name: "Old Name".into(),
            quota_mib: 500,
            ..MailboxSpec::default()
        })
        .unwrap();
    // By default a hand-made mailbox is not taken over by whoever has its address in LDAP.
    let run = env.pass();
    assert!(
        run.stderr.contains("skipped user00002@example.org") && run.stderr.contains("did not make"),
        "{}",
        run.stderr
    );
    assert_eq!(env.emu.count("POST", ADD), 2);
    let mb = env.mailbox("user00002@example.org");
    assert_eq!(mb["name"], "Old Name", "untouched");
    assert_ne!(mb["tags"], json!(["ldap-sync"]), "not tagged");
    assert_eq!(managed_rows(&env.state_file()).len(), 2);

    env.set("/sync/adopt", json!("by_address"));
    let run = env.pass();
    assert!(
        run.stderr.contains("adopting the existing mailbox by its address"),
        "{}",
        run.stderr
    );
    let mb = env.mailbox("user00002@example.org");
    assert_eq!(mb["tags"], json!(["ldap-sync"]), "an adopted mailbox is tagged");
    assert_eq!(mb["quota"], json!(1024 * MIB));
    assert_eq!(mb["name"], "User00002 Tester");
    assert_eq!(
        env.emu.stored_password("user00002@example.org").unwrap(),
        ldap_password("user00002")
    );
    assert_eq!(managed_rows(&env.state_file()).len(), 3);
    assert_eq!(env.emu.count("POST", ADD), 2, "adopted, not created again");
}

#[test]
fn zero_users_guard_and_force() {
    let mut env = Env::start(users(3));
    env.pass();
    env.emu.reset_counts();
    let run = env.run(&["--override-filter", "(uid=nobody)"]);
    run.expect(4);
    assert!(
        run.stderr.contains("no users") && run.stderr.contains("--force"),
        "{}",
        run.stderr
    );
    assert_eq!(env.emu.count_writes(), 0);
    // --override-filter never removes: forced, it still disables nobody.
    let run = env.run(&["--override-filter", "(uid=nobody)", "--force"]);
    run.expect(0);
    assert!(run.stderr.contains("no removals this pass"), "{}", run.stderr);
    assert_eq!(env.mailbox("user00001@example.org")["active"], json!(1));
    // The configured filter finding nobody, forced: the intended removal happens.
    env.set("/ldap/user_search_filter", json!("(uid=nobody)"));
    env.run(&[]).expect(4);
    env.run(&["--force"]).expect(0);
    assert_eq!(env.mailbox("user00001@example.org")["active"], json!(0));
}

#[test]
fn max_removals_guard() {
    let mut env = Env::start(users(10));
    env.set("/sync/max_removals", json!(2));
    env.pass();
    for uid in ["user00001", "user00002", "user00003"] {
        env.slapd.delete_user(uid).unwrap();
    }
    env.emu.reset_counts();
    let run = env.run(&[]);
    run.expect(4);
    assert!(
        run.stderr.contains("3 mailboxes would be disabled") && run.stderr.contains("max_removals"),
        "{}",
        run.stderr
    );
    assert_eq!(env.emu.count_writes(), 0);
    env.set("/sync/max_removals", json!("30%"));
    env.run(&[]).expect(0);
    assert_eq!(env.mailbox("user00001@example.org")["active"], json!(0));
}

#[test]
fn dry_run_writes_nothing_anywhere() {
    let env = Env::start(users(5));
    let run = env.run(&["--dry-run", "--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["dry_run"], json!(true));
    assert_eq!(report["summary"]["created"], json!(5));
    assert!(
        report["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "planned")
    );
    assert_eq!(env.emu.count_writes(), 0);
    assert_eq!(env.emu.mailbox_count(), 0);
    assert!(!env.state_file().exists(), "dry-run creates no state file");
    assert!(!env.dir.path().join("state.sqlite3.lock").exists());
}

#[test]
fn dry_run_prints_every_planned_change_and_quiet_silences_it() {
    let env = Env::start(users(3));
    env.pass();
    env.slapd.modify_attr("user00001", "sn", &["Renamed"]).unwrap();
    env.slapd.delete_user("user00002").unwrap();
    env.slapd.add_users(&[TestUser::new("late", "example.org")]).unwrap();
    let run = env.run(&["--dry-run"]);
    run.expect(0);
    let lines: Vec<&str> = run.stderr.lines().collect();
    let planned: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("planned ")).collect();
    // The disable brings its offboarding (sync.offboard's default).
    assert_eq!(planned.len(), 4, "{}", run.stderr);
    assert!(
        planned.contains(&"planned offboard user00002@example.org (revoke app passwords)"),
        "{planned:?}"
    );
    assert!(
        planned
            .iter()
            .any(|l| l.starts_with("planned update user00001@example.org (name ")),
        "{planned:?}"
    );
    assert!(
        planned.contains(&"planned disable user00002@example.org (active 1 → 0)"),
        "{planned:?}"
    );
    assert!(planned.contains(&"planned create late@example.org"), "{planned:?}");
    let summary = lines.last().unwrap();
    assert!(
        summary.contains("dry-run, would be: 1 created, 1 updated, 1 disabled"),
        "{summary}"
    );
    assert!(!run.stderr.contains("{SSHA}"), "no secret in the plan");
    let quiet = env.run(&["--dry-run", "-q"]);
    quiet.expect(0);
    // Only the emulator's plain-http warning, which -q never hides, is left.
    assert!(
        quiet.stderr.lines().all(|l| l.contains("plain http://")),
        "-q silences the plan: {}",
        quiet.stderr
    );
    assert_eq!(env.emu.mailbox("late@example.org"), None, "a dry-run writes nothing");
}

#[test]
fn json_report_lists_changes_old_to_new_without_secrets() {
    let env = Env::start(users(2));
    env.pass();
    env.slapd.modify_attr("user00001", "MailQuota", &["4096"]).unwrap();
    env.slapd
        .modify_attr("user00002", "userPassword", &["{SSHA}bmV3LWhhc2gtdmFsdWUtMTIzNA=="])
        .unwrap();
    let run = env.run(&["--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["schema"], json!(1));
    assert_eq!(report["exit_code"], json!(0));
    let changes = report["changes"].as_array().unwrap();
    let quota = changes
        .iter()
        .find(|c| c["address"] == "user00001@example.org")
        .unwrap();
    assert_eq!(quota["action"], "update");
    assert_eq!(quota["status"], "applied");
    assert_eq!(quota["fields"]["quota"], json!({"old": 1024, "new": 4096}));
    let password = changes
        .iter()
        .find(|c| c["address"] == "user00002@example.org")
        .unwrap();
    assert_eq!(password["action"], "password");
    assert_eq!(password["fields"], json!({"password": {"changed": true}}));
    assert!(!run.stdout.contains("bmV3LWhhc2gt"), "no hash in the report");
    assert_eq!(report["summary"]["updated"], json!(2));
}

#[test]
fn a_held_lock_exits_5_and_touches_nothing() {
    let env = Env::start(users(2));
    env.write_config();
    let lock_path = env.dir.path().join("state.sqlite3.lock");
    // Another process holds the lock: the same flock(2) lock, taken with util-linux's flock(1)
    // on a descriptor the shell keeps as it becomes `sleep`.
    let mut holder = std::process::Command::new("sh")
        .args([
            "-c",
            r#"exec 9>>"$1" && flock --exclusive --nonblock 9 && echo locked && exec sleep 60"#,
        ])
        .arg("sh")
        .arg(&lock_path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.take().unwrap()), &mut ready).unwrap();
    assert_eq!(ready, "locked\n", "flock(1) took the lock");
    let started = std::time::Instant::now();
    let run = env.run(&[]);
    run.expect(5);
    assert!(
        started.elapsed().as_secs() < 5,
        "the second pass does not wait for the lock"
    );
    assert!(run.stderr.contains("another pass is running"), "{}", run.stderr);
    assert_eq!(env.emu.total_requests(), 0);
    // Killed, the holder's lock is released by the OS, though the lock file stays.
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(lock_path.exists());
    env.pass();
}

#[test]
fn item_failures_exit_3_and_everything_else_is_applied() {
    let mut list = users(3);
    list.push(TestUser::new("stranger", "unknown-domain.test"));
    let mut weak = TestUser::new("weak", "example.org");
    weak.password = Some("{PLAIN}ab".into());
    list.push(weak);
    let env = Env::start(list);
    env.emu.set_password_policy(12, false, false, false, false);
    let run = env.run(&[]);
    run.expect(3);
    assert!(
        run.stderr.contains("stranger@unknown-domain.test") && run.stderr.contains("does not exist in mailcow"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("weak@example.org") && run.stderr.contains("password_complexity"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("3 created") && run.stderr.contains("2 failed"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("{PLAIN}ab"), "the hash is never shown");
    assert_eq!(env.emu.mailbox_count(), 3);
    // The failures stay failures, nothing is duplicated.
    env.run(&[]).expect(3);
    assert_eq!(env.emu.mailbox_count(), 3);
    let status = env.run(&["status"]);
    status.expect(0);
    assert!(
        status
            .stdout
            .contains("failed create weak@example.org: password_complexity"),
        "{}",
        status.stdout
    );
}

#[test]
fn mailcow_faults_midway_then_the_next_pass_converges() {
    let faults = [
        ("500", Fault::Status(500)),
        ("cut connection", Fault::CloseConnection),
        ("slow answer", Fault::Delay(Duration::from_secs(4))),
        ("non-JSON", Fault::NonJson),
    ];
    for (name, fault) in faults {
        let mut env = Env::start(users(8));
        env.set("/mailcow_timeout_secs", json!(2));
        // Requests: domains, mailboxes, then one add per user: the 5th is the 3rd add.
        env.emu.inject_fault(5, fault);
        let run = env.run(&[]);
        run.expect(1);
        let created = env.emu.mailbox_count();
        assert!(
            (2..=3).contains(&created),
            "{name}: {created} created before the fault\n{}",
            run.stderr
        );
        let managed = managed_rows(&env.state_file());
        assert_eq!(
            managed.len(),
            2,
            "{name}: the state records exactly the confirmed creates"
        );
        for (_, address) in &managed {
            assert!(
                env.emu.mailbox(address).is_some(),
                "{name}: state row {address} exists in mailcow"
            );
        }
        if name == "slow answer" {
            // The server applies the request after the client gave up.
            std::thread::sleep(Duration::from_secs(3));
        }
        let before = env.emu.mailbox_count();
        env.emu.reset_counts();
        env.pass();
        assert_eq!(env.emu.mailbox_count(), 8, "{name}");
        assert_eq!(managed_rows(&env.state_file()).len(), 8, "{name}");
        assert_eq!(
            env.emu.count("POST", ADD),
            8 - before,
            "{name}: only the missing ones are created, the rest adopted"
        );
        env.emu.reset_counts();
        env.pass();
        assert_eq!(env.emu.count_writes(), 0, "{name}: converged");
    }
}

#[test]
fn rejected_api_keys_exit_1_without_retrying() {
    let mut env = Env::start(users(2));
    env.set("/mailcow_api_key", json!("WRONG-KEY"));
    let run = env.run(&[]);
    run.expect(1);
    assert!(
        run.stderr.contains("401") && run.stderr.contains("not retried"),
        "{}",
        run.stderr
    );
    assert_eq!(
        env.emu.total_requests(),
        1,
        "one 401 and no retry: {:?}",
        env.emu.requests()
    );
    assert!(!run.stderr.contains("WRONG-KEY"));

    env.emu.reset_counts();
    env.set("/mailcow_api_key", json!(RO_KEY));
    let run = env.run(&[]);
    run.expect(1);
    assert!(
        run.stderr.contains("403") && run.stderr.contains("read-write"),
        "{}",
        run.stderr
    );
    assert_eq!(env.emu.count_writes(), 1, "stops at the first refused write");
    assert_eq!(env.emu.mailbox_count(), 0);
}

#[test]
fn ldap_down_or_bind_refused_exit_1() {
    let mut env = Env::start(users(2));
    env.set("/ldap/bind_pw", json!("not-the-password"));
    let run = env.run(&[]);
    run.expect(1);
    assert!(
        run.stderr.contains("refused") && run.stderr.contains("rc=49"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("not-the-password"));
    env.set("/ldap/bind_pw", json!(env.slapd.reader_pw()));
    env.slapd.stop();
    let run = env.run(&[]);
    run.expect(1);
    assert!(run.stderr.contains("LDAP"), "{}", run.stderr);
    assert_eq!(env.emu.total_requests(), 0, "mailcow is not contacted when LDAP fails");
}

#[test]
fn ldaps_and_starttls_with_ca_file_and_a_wrong_ca() {
    let mut env = Env::start(users(2));
    let ca = env.slapd.ca_file().to_str().unwrap().to_owned();
    env.set("/ldap/uri", json!(env.slapd.ldaps_url()));
    env.set("/ldap/ca_file", json!(ca));
    env.pass();
    assert_eq!(env.emu.mailbox_count(), 2);
    env.set("/ldap/uri", json!(env.slapd.ldap_url()));
    env.set("/ldap/starttls", json!(true));
    env.pass();
    // Another instance's CA did not sign this server's certificate.
    let other = Slapd::start(SlapdOptions::default()).unwrap();
    env.set("/ldap/ca_file", json!(other.ca_file().to_str().unwrap()));
    let run = env.run(&[]);
    run.expect(1);
    assert!(run.stderr.to_lowercase().contains("certificate"), "{}", run.stderr);
    env.set("/ldap/starttls", json!(false));
    env.set("/ldap/uri", json!(env.slapd.ldaps_url()));
    let run = env.run(&[]);
    run.expect(1);
    assert!(run.stderr.to_lowercase().contains("certificate"), "{}", run.stderr);
}

#[test]
fn secrets_from_environment_and_files_and_paths_relative_to_the_config() {
    let mut env = Env::start(users(2));
    env.set("/ldap/bind_pw", json!(""));
    env.set("/mailcow_api_key", json!(""));
    std::fs::write(env.dir.path().join("api.key"), "RW-KEY-0000\n").unwrap();
    env.set("/mailcow_api_key_file", json!("api.key"));
    env.write_config();
    let elsewhere = TempDir::new("cwd");
    let config = env.config_path();
    let run = run_bin(
        elsewhere.path(),
        &["-c", config.to_str().unwrap()],
        &[("LDAP_BIND_PW", env.slapd.reader_pw())],
    );
    run.expect(0);
    // The key file was written with the default mode 0644: it holds a secret, so it warns.
    assert!(
        run.stderr.contains("api.key is readable by group or others"),
        "{}",
        run.stderr
    );
    assert!(
        env.state_file().exists(),
        "state_file is relative to the config's directory"
    );
    assert!(!elsewhere.path().join("state.sqlite3").exists());
}

#[test]
fn an_ou_move_changes_nothing_in_mailcow() {
    let env = Env::start(users(3));
    env.pass();
    env.slapd.move_user("user00002", "moved").unwrap();
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0);
    assert_eq!(env.mailbox("user00002@example.org")["active"], json!(1));
}

#[test]
fn no_secret_appears_in_any_output_or_the_state_file() {
    let mut env = Env::start(users(3));
    env.pass();
    env.slapd
        .modify_attr("user00001", "userPassword", &["{SSHA}c2VjcmV0LWhhc2gtdmFsdWU="])
        .unwrap();
    env.slapd.delete_user("user00003").unwrap();
    let mut secrets: Vec<String> = vec![
        env.slapd.reader_pw().into(),
        "RW-KEY-0000".into(),
        "c2VjcmV0LWhhc2gtdmFsdWU".into(),
    ];
    secrets.extend(["user00001", "user00002", "user00003"].iter().map(|u| ldap_password(u)));
    let mut outputs = Vec::new();
    for args in [
        &["-v", "--json", "--dry-run"][..],
        &["-v", "--json"],
        &["status"],
        &["status", "--json"],
        &["check"],
    ] {
        let run = env.run(args);
        outputs.push(format!("{args:?}\n{}\n{}", run.stdout, run.stderr));
    }
    env.set("/mailcow_api_key", json!("WRONG-KEY-4242"));
    secrets.push("WRONG-KEY-4242".into());
    let run = env.run(&["-v"]);
    run.expect(1);
    outputs.push(run.stderr.clone());
    env.set("/ldap/bind_pw", json!("wrong-bind-pw-4242"));
    secrets.push("wrong-bind-pw-4242".into());
    outputs.push(env.run(&["-v", "--json"]).stderr);
    let state = std::fs::read(env.state_file()).unwrap();
    for secret in &secrets {
        for out in &outputs {
            assert!(!out.contains(secret.as_str()), "secret {secret:?} leaked in:\n{out}");
        }
        assert!(
            !state.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret {secret:?} in the state file"
        );
    }
}

#[test]
fn status_reports_managed_mailboxes_and_runs() {
    let env = Env::start(users(3));
    env.pass();
    env.pass();
    let run = env.run(&["status", "--json"]);
    run.expect(0);
    let status = run.json();
    assert_eq!(status["managed"], json!(3));
    assert_eq!(status["runs"].as_array().unwrap().len(), 2);
    assert_eq!(status["runs"][0]["unchanged"], json!(3));
    assert_eq!(status["runs"][1]["created"], json!(3));
}

#[test]
fn check_verifies_ldap_key_and_domains() {
    let mut list = users(2);
    list.push(TestUser::new("x", "missing.test"));
    let mut env = Env::with(
        SlapdOptions {
            users: list,
            ..SlapdOptions::default()
        },
        EmulatorOptions::default(),
    );
    let run = env.run(&["check"]);
    run.expect(1);
    assert!(run.stdout.contains("3 entries"), "{}", run.stdout);
    assert!(run.stdout.contains("API key may write"), "{}", run.stdout);
    assert!(run.stdout.contains("missing.test (1 users)"), "{}", run.stdout);
    assert_eq!(env.emu.count_writes(), 1, "only the no-item write check");
    assert_eq!(env.emu.mailbox_count(), 0);
    env.set("/mailcow_api_key", json!(RO_KEY));
    let run = env.run(&["check"]);
    run.expect(1);
    assert!(
        run.stdout.contains("[FAIL]") && run.stdout.contains("403"),
        "{}",
        run.stdout
    );
}

fn insecure_http_warning(env: &Env) -> String {
    format!(
        "warning: mailcow_host {} is plain http://: the API key travels in clear text; use https://\n",
        env.emu.url()
    )
}

#[test]
fn insecure_settings_warn_on_every_pass_also_under_quiet_and_in_check() {
    let env = Env::start(users(2));
    for _ in 0..2 {
        let run = env.run(&["-q", "--do-not-verify"]);
        run.expect(0);
        assert!(run.stderr.starts_with(&insecure_http_warning(&env)), "{}", run.stderr);
        assert!(
            run.stderr
                .contains("warning: --do-not-verify: mailcow's TLS certificate is not checked"),
            "{}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 2, "{}", run.stderr);
    }
    let run = env.run(&["check"]);
    run.expect(0);
    assert!(
        run.stdout.starts_with(&format!(
            "[WARN] {}",
            insecure_http_warning(&env).trim_start_matches("warning: ")
        )),
        "{}",
        run.stdout
    );
}

#[test]
fn quiet_is_silent_on_success_and_names_failures_otherwise() {
    let env = Env::start(users(2));
    let run = env.run(&["-q"]);
    run.expect(0);
    // The emulator speaks plain http://, and that warning is the one thing -q keeps.
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str()),
        ("", insecure_http_warning(&env).as_str()),
        "nothing else on success"
    );
    env.slapd
        .add_users(&[TestUser::new("nodomain", "missing.test")])
        .unwrap();
    let run = env.run(&["-q"]);
    run.expect(3);
    assert!(
        run.stderr.contains("failed nodomain@missing.test") && run.stderr.contains("1 failed"),
        "{}",
        run.stderr
    );
    let run = env.run(&["-v"]);
    run.expect(3);
    assert!(run.stderr.contains("failed nodomain@missing.test"), "{}", run.stderr);
    env.slapd.modify_attr("user00001", "MailQuota", &["1500"]).unwrap();
    let run = env.run(&["-v"]);
    assert!(
        run.stderr
            .contains("applied update user00001@example.org (quota 1024 → 1500)"),
        "{}",
        run.stderr
    );
}

#[test]
fn metrics_file_is_written_after_each_pass() {
    let mut env = Env::start(users(3));
    env.set("/sync/metrics_file", json!("metrics/mailcow-ldap-sync.prom"));
    std::fs::create_dir_all(env.dir.path().join("metrics")).unwrap();
    env.pass();
    let path = env.dir.path().join("metrics/mailcow-ldap-sync.prom");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("mailcow_ldap_sync_last_run_mailboxes{action=\"created\"} 3\n"),
        "{text}"
    );
    assert!(text.contains("mailcow_ldap_sync_managed_mailboxes 3\n"), "{text}");
    assert!(text.contains("mailcow_ldap_sync_last_run_exit_code 0\n"), "{text}");
    env.set("/mailcow_api_key", json!("WRONG"));
    env.run(&[]).expect(1);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("mailcow_ldap_sync_last_run_exit_code 1\n"), "{text}");
    assert!(
        text.contains("mailcow_ldap_sync_last_success_timestamp_seconds"),
        "{text}"
    );
    let other = env.dir.path().join("flag.prom");
    env.set("/mailcow_api_key", json!(sync_test_support::mailcow::RW_KEY));
    env.run(&["--metrics-file", other.to_str().unwrap()]).expect(0);
    assert!(
        std::fs::read_to_string(&other)
            .unwrap()
            .contains("last_run_mailboxes{action=\"unchanged\"} 3")
    );
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path().join("metrics"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left");
}

#[test]
fn concurrent_import_gives_the_same_result_and_survives_a_fault() {
    let mut env = Env::with(
        SlapdOptions {
            users: users(30),
            ..SlapdOptions::default()
        },
        EmulatorOptions {
            request_delay: Some(Duration::from_millis(10)),
            ..EmulatorOptions::default()
        },
    );
    env.set("/sync/concurrency", json!(4));
    let run = env.run(&["--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["summary"]["created"], json!(30));
    assert!(
        report["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "applied")
    );
    let addresses: Vec<&str> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    let mut sorted = addresses.clone();
    sorted.sort();
    assert_eq!(
        addresses, sorted,
        "the report keeps plan order whatever order requests finish in"
    );
    assert_eq!(env.emu.mailbox_count(), 30);
    assert_eq!(managed_rows(&env.state_file()).len(), 30);
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0);

    // A fault in the middle of a concurrent import: only confirmed creates are recorded.
    for uid in [
        "user00001",
        "user00002",
        "user00003",
        "user00004",
        "user00005",
        "user00006",
        "user00007",
    ] {
        env.slapd.modify_attr(uid, "MailQuota", &["777"]).unwrap();
    }
    env.slapd
        .add_users(
            &(31..=50)
                .map(|i| TestUser::new(&format!("user{i:05}"), "example.org"))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    env.emu.reset_counts();
    env.emu.inject_fault(6, Fault::Status(500));
    env.run(&[]).expect(1);
    for (_, address) in managed_rows(&env.state_file()) {
        assert!(
            env.emu.mailbox(&address).is_some(),
            "state row {address} exists in mailcow"
        );
    }
    env.pass();
    assert_eq!(env.emu.mailbox_count(), 50);
    assert_eq!(managed_rows(&env.state_file()).len(), 50);
    assert_eq!(env.mailbox("user00007@example.org")["quota"], json!(777 * MIB));
}

#[test]
fn mailcow_over_https_with_ca_file_wrong_ca_and_do_not_verify() {
    let mut env = Env::with(
        SlapdOptions {
            users: users(2),
            ..SlapdOptions::default()
        },
        EmulatorOptions {
            tls: true,
            ..EmulatorOptions::default()
        },
    );
    assert!(env.emu.url().starts_with("https://"));
    let run = env.run(&[]);
    run.expect(1);
    assert!(
        run.stderr.contains("TLS") && run.stderr.contains("mailcow_ca_file"),
        "{}",
        run.stderr
    );
    assert_eq!(env.emu.mailbox_count(), 0);
    env.run(&["--do-not-verify"]).expect(0);
    assert_eq!(env.emu.mailbox_count(), 2);
    env.set("/mailcow_ca_file", json!(env.emu.ca_file().unwrap().to_str().unwrap()));
    env.pass();
    let other = sync_test_support::mailcow::Emulator::start(EmulatorOptions {
        tls: true,
        ..EmulatorOptions::default()
    })
    .unwrap();
    env.set("/mailcow_ca_file", json!(other.ca_file().unwrap().to_str().unwrap()));
    let run = env.run(&[]);
    run.expect(1);
    assert!(run.stderr.contains("TLS"), "{}", run.stderr);
}

#[test]
fn random_passwords_for_directories_without_hashes() {
    let mut list = users(2);
    for u in &mut list {
        u.password = None;
    }
    let mut env = Env::start(list);
    env.emu.set_password_policy(16, true, true, true, true);
    env.set("/sync/password", json!("random"));
    let run = env.run(&["-v", "--json"]);
    run.expect(0);
    let stored = env.emu.stored_password("user00001@example.org").unwrap();
    assert!(!stored.is_empty());
    assert_ne!(stored, env.emu.stored_password("user00002@example.org").unwrap());
    assert!(
        !run.stdout.contains(&stored) && !run.stderr.contains(&stored),
        "never printed"
    );
    assert!(run.stdout.contains("\"source\": \"random\""), "{}", run.stdout);
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0, "a random password is set once, on create");
}

#[test]
fn authsource_ldap_creates_mailboxes_without_passwords() {
    let mut env = Env::with(
        SlapdOptions {
            users: users(2),
            ..SlapdOptions::default()
        },
        EmulatorOptions {
            idp_authsource: Some("ldap".into()),
            ..EmulatorOptions::default()
        },
    );
    env.set("/sync/authsource", json!("ldap"));
    env.pass();
    let mb = env.mailbox("user00001@example.org");
    assert_eq!(mb["authsource"], "ldap");
    assert_eq!(env.emu.stored_password("user00001@example.org").unwrap(), "");
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0);
    // Without an LDAP identity provider mailcow refuses a mailbox without password.
    env.emu.set_idp_authsource(None);
    env.slapd.add_users(&[TestUser::new("late", "example.org")]).unwrap();
    let run = env.run(&[]);
    run.expect(3);
    assert!(
        run.stderr.contains("late@example.org") && run.stderr.contains("identity provider"),
        "{}",
        run.stderr
    );
}

#[test]
fn progress_shows_on_a_terminal_and_never_in_cron() {
    let env = Env::start(users(25));
    env.write_config();
    let config = env.config_path();
    // `script` runs the pass with a pseudo-terminal as stderr, as an admin at a shell would.
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} -c {}", crate::util::BIN, config.display()),
            "/dev/null",
        ])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("\r1/25 requests") && text.contains("\r25/25 requests"),
        "{text:?}"
    );
    env.slapd
        .add_users(
            &(26..=50)
                .map(|i| TestUser::new(&format!("user{i:05}"), "example.org"))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let run = env.run(&[]);
    run.expect(0);
    assert!(
        !run.stderr.contains("requests\r") && !run.stderr.contains("/25 requests"),
        "{}",
        run.stderr
    );
}

#[test]
fn state_and_lock_files_are_owner_only_after_a_pass() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::start(users(2));
    env.pass();
    let mut lock = env.state_file().into_os_string();
    lock.push(".lock");
    for path in [env.state_file(), lock.into()] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}

/// mailcow's nginx compresses JSON for a client that accepts gzip. Built with the `gzip`
/// feature, the tool asks for it and its passes work on the compressed lists (the mailbox list
/// is parsed from the decoding reader); without it, it does not ask and gets plain JSON. The
/// emulator records which answers went compressed and their bytes.
#[test]
fn passes_read_gzip_from_mailcow_with_the_gzip_feature() {
    let env = Env::start(users(40));
    env.pass();
    assert_eq!(env.emu.mailbox_count(), 40);
    env.emu.reset_counts();
    let run = env.pass();
    assert!(run.stderr.contains("40 unchanged"), "{}", run.stderr);
    let records = env.emu.requests();
    let list = records
        .iter()
        .find(|r| r.path == REDUCED)
        .expect("the mailbox list was read");
    assert_eq!(
        list.gzip,
        cfg!(feature = "gzip"),
        "the mailbox list came gzip-compressed with the feature only: {list:?}"
    );
    let first_bytes = env.emu.bytes_sent();

    // The same unchanged pass with gzip off on the server: the same outcome.
    env.emu.set_gzip(false);
    env.emu.reset_counts();
    let run = env.pass();
    assert!(run.stderr.contains("40 unchanged"), "{}", run.stderr);
    assert_eq!(env.emu.gzip_responses(), 0);
    let plain_bytes = env.emu.bytes_sent();
    if cfg!(feature = "gzip") {
        assert!(
            first_bytes * 4 < plain_bytes,
            "gzip {first_bytes} B vs plain {plain_bytes} B"
        );
    } else {
        assert_eq!(first_bytes, plain_bytes, "not asked for, not sent");
    }

    // A change read from a compressed list is applied.
    env.emu.set_gzip(true);
    env.slapd.modify_attr("user00007", "sn", &["Zipped"]).unwrap();
    env.pass();
    assert_eq!(env.mailbox("user00007@example.org")["name"], "User00007 Zipped");
    assert_eq!(env.emu.gzip_responses() > 0, cfg!(feature = "gzip"));
}
