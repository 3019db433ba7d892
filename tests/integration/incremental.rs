//! Incremental passes (`ldap.incremental`): a real slapd with the syncprov overlay, the
//! emulator, and the requests mailcow gets counted.

use serde_json::json;
use sync_test_support::mailcow::EmulatorOptions;
use sync_test_support::slapd::SlapdOptions;

use crate::util::{Env, users};

/// slapd with syncprov (no session log: deletions come as a present phase) and `n` users;
/// the sync search is not paged, so the reader's size limit is off.
fn syncrepl_env(n: usize, sessionlog: Option<usize>) -> Env {
    let mut env = Env::with(
        SlapdOptions {
            users: users(n),
            size_limit: 0,
            syncprov: true,
            sessionlog,
            ..SlapdOptions::default()
        },
        EmulatorOptions::default(),
    );
    env.set("/ldap/incremental", json!("syncrepl"));
    env
}

fn kind_of(run: &crate::util::Run) -> (String, String) {
    let report = run.json();
    let pass = &report["pass"];
    (
        pass["kind"].as_str().unwrap_or_default().to_owned(),
        pass["why"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn an_unchanged_incremental_pass_sends_nothing_and_a_change_reads_only_its_mailbox() {
    for sessionlog in [None, Some(100)] {
        let env = syncrepl_env(30, sessionlog);
        let first = env.run(&["--json"]);
        first.expect(0);
        assert_eq!(kind_of(&first), ("full".into(), "first pass".into()));
        assert_eq!(env.emu.mailbox_count(), 30);
        assert!(first.stderr.contains("(full, 30 LDAP entries"), "{}", first.stderr);

        // Nothing changed: not one request to mailcow.
        env.emu.reset_counts();
        let second = env.run(&["--json"]);
        second.expect(0);
        assert_eq!(kind_of(&second).0, "incremental", "{}", second.stderr);
        assert_eq!(env.emu.total_requests(), 0, "{:?}", env.emu.requests());
        assert!(
            second
                .stderr
                .contains("(incremental, 0 LDAP entries, 0 reads, 0 writes"),
            "{}",
            second.stderr
        );

        // One user changed: its mailbox alone is read, and written once.
        env.slapd.modify_attr("user00003", "sn", &["Changed"]).unwrap();
        env.emu.reset_counts();
        let third = env.run(&["--json"]);
        third.expect(0);
        assert_eq!(kind_of(&third).0, "incremental");
        let paths: Vec<String> = env
            .emu
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert_eq!(
            paths,
            [
                "GET /api/v1/get/domain/all",
                "GET /api/v1/get/mailbox/user00003@example.org",
                "POST /api/v1/edit/mailbox",
            ],
            "{}",
            third.stderr
        );
        assert!(
            env.mailbox("user00003@example.org")["name"]
                .as_str()
                .unwrap()
                .ends_with("Changed")
        );

        // A user deleted: found gone against the directory's full uid list, disabled.
        env.slapd.delete_user("user00005").unwrap();
        let fourth = env.run(&["--json"]);
        fourth.expect(0);
        assert_eq!(kind_of(&fourth).0, "incremental");
        assert_eq!(fourth.json()["summary"]["disabled"], 1, "{}", fourth.stderr);
        assert_eq!(env.mailbox("user00005@example.org")["active"], 0);

        // A new user is created; --full reads everything and changes nothing more.
        env.slapd
            .add_users(&sync_test_support::slapd::generate_users(31, "example.org")[30..])
            .unwrap();
        let fifth = env.run(&["--json"]);
        fifth.expect(0);
        assert_eq!(fifth.json()["summary"]["created"], 1, "{}", fifth.stderr);
        assert_eq!(env.emu.mailbox_count(), 31);
        env.emu.reset_counts();
        let full = env.run(&["--json", "--full"]);
        full.expect(0);
        assert_eq!(kind_of(&full), ("full".into(), "--full".into()));
        assert_eq!(env.emu.count_writes(), 0, "{}", full.stderr);
    }
}
