//! A user's life over months, with the clock moved by `faketime` (issue 15): leaving with a
//! grace period before the delete, coming back within it; and the switch from the original
//! tool, whose database is taken over.

use std::process::Command;

use serde_json::json;
use sync_test_support::mailcow::{Fault, MailboxSpec};
use sync_test_support::slapd::TestUser;

use crate::util::{BIN, Env, Run, managed_rows, users};

const ADD: &str = "/api/v1/add/mailbox";
const DELETE: &str = "/api/v1/delete/mailbox";

/// A pass (or a subcommand) run `days` days from now.
fn run_days_later(env: &Env, days: u32, args: &[&str]) -> Run {
    env.write_config();
    let out = Command::new("faketime")
        .arg("-f")
        .arg(format!("+{days}d"))
        .arg(BIN)
        .arg("-c")
        .arg(env.config_path())
        .args(args)
        .current_dir(env.dir.path())
        .env_clear()
        .output()
        .expect("faketime runs the binary");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn delete_waits_out_the_grace_period_and_a_returning_user_keeps_the_mailbox() {
    let mut env = Env::start(users(3));
    env.set("/sync/on_removed", json!("delete"));
    env.set("/sync/max_removals", json!(5));
    env.pass();
    assert_eq!(env.emu.mailbox_count(), 3);

    // Two users leave: disabled, not deleted; `status` says when each goes.
    env.slapd.delete_user("user00002").unwrap();
    env.slapd.delete_user("user00003").unwrap();
    run_days_later(&env, 0, &[]).expect(0);
    for gone in ["user00002@example.org", "user00003@example.org"] {
        assert_eq!(
            env.emu.mailbox(gone).expect("still there")["active"],
            json!(0),
            "{gone}"
        );
    }
    let status = run_days_later(&env, 0, &["status", "--json"]);
    status.expect(0);
    let pending = status.json()["pending_deletion"].clone();
    assert_eq!(pending.as_array().unwrap().len(), 2, "{pending}");
    let since = pending[0]["disabled_at"].as_i64().unwrap();
    assert_eq!(pending[0]["delete_after"].as_i64().unwrap(), since + 30 * 86_400);

    // Ten days on, one comes back (same entry, same DN): enabled again, mail kept.
    env.slapd
        .add_users(&[TestUser::new("user00003", "example.org")])
        .unwrap();
    env.emu.reset_counts();
    run_days_later(&env, 10, &[]).expect(0);
    assert_eq!(env.emu.count("POST", ADD), 0, "not created again");
    assert_eq!(env.emu.mailbox("user00003@example.org").unwrap()["active"], json!(1));

    // Day 29: still waiting, nothing written.
    env.emu.reset_counts();
    run_days_later(&env, 29, &[]).expect(0);
    assert_eq!(env.emu.count_writes(), 0, "{:?}", env.emu.requests());
    assert!(env.emu.mailbox("user00002@example.org").is_some());

    // Day 31: the one still gone is deleted; the one who returned stays.
    env.emu.reset_counts();
    let run = run_days_later(&env, 31, &["-v"]);
    run.expect(0);
    assert_eq!(env.emu.count("POST", DELETE), 1, "{}", run.stderr);
    assert!(
        env.emu.mailbox("user00002@example.org").is_none(),
        "deleted after the grace period"
    );
    assert!(env.emu.mailbox("user00003@example.org").is_some());
    let status = run_days_later(&env, 31, &["status", "--json"]);
    assert_eq!(status.json()["pending_deletion"], json!([]));
    assert_eq!(status.json()["managed"], json!(2));
}

#[test]
fn a_grace_period_of_zero_deletes_at_once() {
    let mut env = Env::start(users(3));
    env.set("/sync/on_removed", json!("delete"));
    env.set("/sync/delete_after_days", json!(0));
    env.set("/sync/max_removals", json!(5));
    env.pass();
    env.slapd.delete_user("user00002").unwrap();
    env.pass();
    assert!(env.emu.mailbox("user00002@example.org").is_none());
    assert_eq!(env.emu.mailbox_count(), 2);
}

/// The original tool's database at the state file's path: its `user` table as SQLAlchemy
/// creates it, with the LDAP hashes it copied, and no schema version.
fn write_original_tool_database(env: &Env) {
    let conn = rusqlite::Connection::open(env.state_file()).unwrap();
    conn.execute_batch(
        "CREATE TABLE user (id INTEGER NOT NULL, uid VARCHAR, active BOOLEAN, mail VARCHAR, first_name VARCHAR, \
         last_name VARCHAR, password VARCHAR, quota INTEGER, tls_enforce_in BOOLEAN, tls_enforce_out BOOLEAN, \
         PRIMARY KEY (id));
         INSERT INTO user (id, uid, active, mail, password) VALUES
           (1, 'uid=user00001,ou=people,dc=example,dc=org', 1, 'user00001@example.org', '{SSHA}copied-hash-one'),
           (2, 'uid=gone,ou=people,dc=example,dc=org', 1, 'gone@example.org', '{SSHA}copied-hash-gone'),
           (3, 'uid=never,ou=people,dc=example,dc=org', 1, 'never@example.org', '{SSHA}copied-hash-never');",
    )
    .unwrap();
}

/// mailcow as the original tool left it: its mailboxes carry no tag.
fn add_untagged(env: &Env, local_part: &str) {
    env.emu
        .add_mailbox(MailboxSpec {
            local_part: local_part.into(),
            name: "Old Name".into(),
            quota_mib: 1024,
            ..MailboxSpec::default()
        })
        .unwrap();
}

#[test]
fn the_original_tools_database_is_taken_over_and_its_hashes_removed() {
    let env = Env::start(users(2));
    write_original_tool_database(&env);
    add_untagged(&env, "user00001");
    add_untagged(&env, "gone");

    // A dry-run says what it would take over and leaves the file as it is.
    let before = std::fs::read(env.state_file()).unwrap();
    let dry = env.run(&["--dry-run", "--json"]);
    dry.expect(0);
    // Two of its three mailboxes are in mailcow: those are taken over.
    assert!(
        dry.stderr
            .contains("took over 2 mailboxes from the original tool's database"),
        "{}",
        dry.stderr
    );
    assert_eq!(dry.json()["taken_over"], json!(2));
    assert_eq!(
        std::fs::read(env.state_file()).unwrap(),
        before,
        "a dry-run changes nothing"
    );

    let run = env.run(&["-v"]);
    run.expect(0);
    assert!(run.stderr.contains("took over 2 mailboxes"), "{}", run.stderr);
    // Still in LDAP: adopted (tagged, brought up to date), not created again.
    let kept = env.emu.mailbox("user00001@example.org").unwrap();
    assert_eq!(kept["tags"], json!(["ldap-sync"]), "{kept}");
    assert_eq!(kept["name"], json!("User00001 Tester"));
    // Left before the switch: handled by on_removed (disable), and tagged as ours from now on.
    let gone = env.emu.mailbox("gone@example.org").unwrap();
    assert_eq!(
        (gone["active"].clone(), gone["tags"].clone()),
        (json!(0), json!(["ldap-sync"])),
        "{gone}"
    );
    // Listed but not in mailcow: not taken over. The user the original tool did not know: created.
    assert!(env.emu.mailbox("never@example.org").is_none());
    assert!(env.emu.mailbox("user00002@example.org").is_some());
    let mut managed: Vec<String> = managed_rows(&env.state_file()).into_iter().map(|(_, a)| a).collect();
    managed.sort();
    assert_eq!(
        managed,
        ["gone@example.org", "user00001@example.org", "user00002@example.org"]
    );

    // The table and every hash it copied are gone from the file.
    let conn = rusqlite::Connection::open(env.state_file()).unwrap();
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'user'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(tables, 0);
    drop(conn);
    let bytes = std::fs::read(env.state_file()).unwrap();
    assert!(
        !bytes.windows(b"copied-hash".len()).any(|w| w == b"copied-hash"),
        "no copied hash left in the file"
    );

    // Converged, and the next pass takes over nothing.
    env.emu.reset_counts();
    let again = env.run(&[]);
    again.expect(0);
    assert_eq!(env.emu.count_writes(), 0, "{:?}", env.emu.requests());
    assert!(!again.stderr.contains("took over"), "{}", again.stderr);
}

const RENAME: &str = "/api/v1/edit/rename-mbox";

#[test]
fn an_address_change_renames_the_mailbox_and_keeps_the_old_address_as_an_alias() {
    let env = Env::start(users(2));
    env.pass();
    env.slapd
        .modify_attr("user00001", "mail", &["ann.new@example.org"])
        .unwrap();
    env.emu.reset_counts();
    let run = env.run(&["-v"]);
    run.expect(0);
    assert!(
        run.stderr
            .contains("applied rename ann.new@example.org (from user00001@example.org, kept as an alias)"),
        "{}",
        run.stderr
    );
    assert_eq!(env.emu.count("POST", RENAME), 1);
    assert_eq!(env.emu.count("POST", ADD), 0, "renamed, not made anew");
    let renamed = env.emu.mailbox("ann.new@example.org").expect("the renamed mailbox");
    assert_eq!(renamed["name"], json!("User00001 Tester"), "its data went with it");
    assert!(env.emu.mailbox("user00001@example.org").is_none());
    assert_eq!(env.emu.mailbox_count(), 2);
    let kept = env.emu.aliases();
    assert!(
        kept.iter()
            .any(|a| a["address"] == json!("user00001@example.org") && a["goto"] == json!("ann.new@example.org")),
        "the old address still receives mail: {kept:?}"
    );
    let managed: Vec<String> = managed_rows(&env.state_file()).into_iter().map(|(_, a)| a).collect();
    assert!(managed.contains(&"ann.new@example.org".to_owned()), "{managed:?}");
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0, "converged: {:?}", env.emu.requests());
}

#[test]
fn a_pass_killed_after_the_rename_converges_with_one_mailbox() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    use sync_test_support::mailcow::Fault;

    let env = Env::start(users(2));
    env.pass();
    env.slapd
        .modify_attr("user00001", "mail", &["ann.new@example.org"])
        .unwrap();
    env.slapd.add_users(&[TestUser::new("late", "example.org")]).unwrap();
    env.emu.reset_counts();
    // Requests: domains, mailboxes, the rename, then the create, which hangs: killed there,
    // before the chunk's rows are recorded.
    env.emu.inject_fault(4, Fault::Delay(Duration::from_secs(3)));
    env.write_config();
    let mut child = Command::new(BIN)
        .arg("-c")
        .arg(env.config_path())
        .current_dir(env.dir.path())
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while env.emu.count("POST", RENAME) == 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "no rename");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
    std::thread::sleep(Duration::from_secs(3)); // the hung create completes on the server
    let managed: Vec<String> = managed_rows(&env.state_file()).into_iter().map(|(_, a)| a).collect();
    assert!(
        managed.contains(&"user00001@example.org".to_owned()),
        "not recorded: {managed:?}"
    );

    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count("POST", RENAME), 0, "not renamed twice");
    assert!(env.emu.mailbox("ann.new@example.org").is_some());
    assert!(env.emu.mailbox("user00001@example.org").is_none());
    assert_eq!(env.emu.mailbox_count(), 3, "one mailbox each, no duplicate");
    let managed: Vec<String> = managed_rows(&env.state_file()).into_iter().map(|(_, a)| a).collect();
    assert!(managed.contains(&"ann.new@example.org".to_owned()), "{managed:?}");
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0, "converged: {:?}", env.emu.requests());
}

// ------------------------------------------------------------ offboarding (issue 15.4)

const LIST_APP_PASSWORDS: &str = "/api/v1/get/app-passwd/all/user00002@example.org";
const DELETE_APP_PASSWORDS: &str = "/api/v1/delete/app-passwd";
const DELETE_EAS: &str = "/api/v1/delete/eas_cache";

/// Three synced users, each with two app passwords; the ids of those not user00002's.
fn with_app_passwords(env: &Env) -> Vec<u64> {
    env.pass().expect(0);
    let mut others = Vec::new();
    for uid in ["user00001", "user00002", "user00003"] {
        let first = env.emu.add_app_password(&format!("{uid}@example.org"), "Phone");
        let second = env.emu.add_app_password(&format!("{uid}@example.org"), "Laptop");
        if uid != "user00002" {
            others.extend([first, second]);
        }
    }
    others
}

#[test]
fn a_disable_revokes_the_app_passwords_and_nothing_else_and_a_return_does_not_bring_them_back() {
    let env = Env::start(users(3));
    let others = with_app_passwords(&env);
    let before: Vec<_> = ["user00001@example.org", "user00003@example.org"]
        .iter()
        .map(|a| env.emu.mailbox(a))
        .collect();

    // The dry-run shows the offboarding and sends nothing.
    env.slapd.delete_user("user00002").unwrap();
    env.emu.reset_counts();
    let dry = env.run(&["--dry-run"]);
    dry.expect(0);
    assert!(
        dry.stderr
            .contains("planned offboard user00002@example.org (revoke app passwords)"),
        "{}",
        dry.stderr
    );
    assert!(
        dry.stderr.contains("1 disabled, 0 deleted,") && dry.stderr.contains(" failed, 1 offboarded"),
        "{}",
        dry.stderr
    );
    assert_eq!(env.emu.total_requests(), 2, "reads only: {:?}", env.emu.requests());

    let run = env.run(&["--json", "-v"]);
    run.expect(0);
    assert_eq!(env.mailbox("user00002@example.org")["active"], json!(0));
    assert!(env.emu.app_passwords("user00002@example.org").is_empty(), "revoked");
    assert_eq!(env.emu.app_password_ids(), others, "the other mailboxes keep theirs");
    assert_eq!(env.emu.count("GET", LIST_APP_PASSWORDS), 1);
    assert_eq!(
        env.emu.count("POST", DELETE_APP_PASSWORDS),
        1,
        "one delete with both ids"
    );
    assert_eq!(env.emu.count("POST", DELETE_EAS), 0, "not asked for");
    assert!(env.emu.eas_resets().is_empty());
    let after: Vec<_> = ["user00001@example.org", "user00003@example.org"]
        .iter()
        .map(|a| env.emu.mailbox(a))
        .collect();
    assert_eq!(before, after, "nothing else changed");
    let report = run.json();
    assert_eq!(report["summary"]["offboarded"], json!(1));
    assert_eq!(report["summary"]["disabled"], json!(1));
    let changes = report["changes"].as_array().unwrap();
    let verbs: Vec<_> = changes
        .iter()
        .map(|c| (c["action"].clone(), c["status"].clone()))
        .collect();
    assert_eq!(
        verbs,
        vec![
            (json!("disable"), json!("applied")),
            (json!("offboard"), json!("applied"))
        ]
    );
    assert_eq!(changes[1]["fields"]["app_passwords"], json!({"revoke": true}));

    // The next pass has nothing to do.
    env.emu.reset_counts();
    env.pass().expect(0);
    assert_eq!(env.emu.count_writes(), 0);

    // The user returns: enabled again, the old app passwords stay gone.
    env.slapd
        .add_users(&[TestUser::new("user00002", "example.org")])
        .unwrap();
    env.emu.reset_counts();
    env.pass().expect(0);
    assert_eq!(env.mailbox("user00002@example.org")["active"], json!(1));
    assert!(env.emu.app_passwords("user00002@example.org").is_empty());
    assert_eq!(
        env.emu.count("GET", LIST_APP_PASSWORDS),
        0,
        "an enable offboards nothing"
    );
}

#[test]
fn offboard_empty_leaves_the_app_passwords_and_eas_resets_the_device_cache() {
    let mut env = Env::start(users(3));
    env.set("/sync/offboard", json!([]));
    with_app_passwords(&env);
    env.slapd.delete_user("user00002").unwrap();
    env.emu.reset_counts();
    env.pass().expect(0);
    assert_eq!(env.mailbox("user00002@example.org")["active"], json!(0));
    assert_eq!(env.emu.app_passwords("user00002@example.org").len(), 2, "[] = off");
    assert_eq!(env.emu.count("GET", LIST_APP_PASSWORDS), 0);

    // "eas" alone, on a mailbox LDAP's `active` disables.
    env.set("/sync/offboard", json!(["eas"]));
    env.set("/ldap/user_mapping/active", json!("mailActive"));
    env.slapd.modify_attr("user00003", "mailActive", &["0"]).unwrap();
    env.emu.reset_counts();
    let run = env.run(&["-v"]);
    run.expect(0);
    assert_eq!(env.mailbox("user00003@example.org")["active"], json!(0));
    assert_eq!(env.emu.count("POST", DELETE_EAS), 1, "{}", run.stderr);
    assert_eq!(env.emu.eas_resets(), vec!["user00003@example.org".to_owned()]);
    assert_eq!(env.emu.app_passwords("user00003@example.org").len(), 2, "not asked for");
    assert!(
        run.stderr
            .contains("applied offboard user00003@example.org (reset the ActiveSync cache)"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_mailcow_fault_in_the_offboarding_stops_the_pass_and_the_disable_stands() {
    let env = Env::start(users(3));
    with_app_passwords(&env);
    env.slapd.delete_user("user00002").unwrap();
    // Requests: the two reads, the disable, then the list of app passwords: a 502.
    env.emu.inject_fault(4, Fault::Status(502));
    let run = env.run(&["--json"]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert_eq!(env.mailbox("user00002@example.org")["active"], json!(0), "not undone");
    assert_eq!(env.emu.app_passwords("user00002@example.org").len(), 2);
    let report = run.json();
    let offboard = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == json!("offboard"))
        .cloned();
    assert_eq!(offboard.map(|c| c["status"].clone()), Some(json!("not_attempted")));
    // The next pass: the mailbox is disabled already, so no second offboarding is planned.
    env.emu.reset_counts();
    env.pass().expect(0);
    assert_eq!(env.emu.count("GET", LIST_APP_PASSWORDS), 0);
}

#[test]
fn a_move_to_another_domain_makes_a_new_mailbox_and_the_old_one_is_removed_as_a_leaver() {
    let env = Env::start(users(2));
    env.emu.add_domain(crate::util::roomy_domain("example.net"));
    env.pass();
    env.slapd
        .modify_attr("user00001", "mail", &["user00001@example.net"])
        .unwrap();
    let run = env.run(&[]);
    run.expect(0);
    assert!(run.stderr.contains("moved_domain"), "{}", run.stderr);
    assert!(env.emu.mailbox("user00001@example.net").is_some(), "the new one");
    let old = env
        .emu
        .mailbox("user00001@example.org")
        .expect("the old one keeps its mail");
    assert_eq!(old["active"], json!(1), "not in the pass that made the new one");
    // From the next pass, the old mailbox is a user who left: on_removed (disable).
    env.pass();
    assert_eq!(env.emu.mailbox("user00001@example.org").unwrap()["active"], json!(0));
    assert_eq!(env.emu.mailbox("user00001@example.net").unwrap()["active"], json!(1));
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0, "converged: {:?}", env.emu.requests());
}
