//! The fault matrix of issue 4: for each fault, the exit code, no mailbox lost or
//! duplicated, a consistent state database, and a next healthy pass that converges.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sync_test_support::mailcow::{DomainSpec, Fault};
use sync_test_support::slapd::TestUser;

use crate::util::{BIN, Env, managed_rows, roomy_domain, users};

const ADD: &str = "/api/v1/add/mailbox";

/// Every state row names a mailbox that exists in mailcow, and the state file is sound.
#[track_caller]
fn assert_state_consistent(env: &Env) {
    for (uid, address) in managed_rows(&env.state_file()) {
        assert!(
            env.emu.mailbox(&address).is_some(),
            "state row {uid} → {address} is not in mailcow"
        );
    }
}

/// The next healthy pass converges: `n` mailboxes, all managed, and one more pass is idle.
#[track_caller]
fn assert_converges(env: &Env, n: usize) {
    env.pass();
    assert_eq!(env.emu.mailbox_count(), n, "mailboxes after the healthy pass");
    assert_eq!(
        managed_rows(&env.state_file()).len(),
        n,
        "managed rows after the healthy pass"
    );
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count_writes(), 0, "converged: {:?}", env.emu.requests());
}

fn spawn_pass(env: &Env) -> std::process::Child {
    env.write_config();
    Command::new(BIN)
        .args(["-c", env.config_path().to_str().unwrap()])
        .current_dir(env.dir.path())
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_midway_then_the_next_pass_converges() {
    let env = Env::start(users(10));
    // Requests: domains, mailboxes, then adds; the 4th add hangs, and the process is killed.
    env.emu.inject_fault(6, Fault::Delay(Duration::from_secs(3)));
    let mut child = spawn_pass(&env);
    wait_for("five answered requests", || env.emu.requests().len() >= 5);
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_state_consistent(&env);
    std::thread::sleep(Duration::from_secs(3)); // the hung add completes on the server
    let before = env.emu.mailbox_count();
    assert!((3..=4).contains(&before), "{before}");
    env.emu.reset_counts();
    env.pass();
    assert_eq!(
        env.emu.count("POST", ADD),
        10 - before,
        "the rest created, nothing twice"
    );
    assert_converges(&env, 10);
}

/// An import is applied and recorded a chunk at a time: a pass killed in its second chunk
/// has recorded the first one, and the next pass creates only the rest.
#[test]
fn sigkill_in_the_second_chunk_of_an_import_keeps_the_first_recorded() {
    let env = Env::start(users(1200));
    // Requests: domains, mailboxes, then one add per user; a chunk is 500 of them.
    env.emu.inject_fault(705, Fault::Delay(Duration::from_secs(3)));
    let mut child = spawn_pass(&env);
    wait_for("704 answered requests", || env.emu.requests().len() >= 704);
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
    assert_state_consistent(&env);
    assert_eq!(
        managed_rows(&env.state_file()).len(),
        500,
        "the first chunk is recorded, the second is not"
    );
    std::thread::sleep(Duration::from_secs(3)); // the hung add completes on the server
    let before = env.emu.mailbox_count();
    assert!((702..=703).contains(&before), "{before}");
    env.emu.reset_counts();
    env.pass();
    assert_eq!(
        env.emu.count("POST", ADD),
        1200 - before,
        "the rest created, nothing twice (the unrecorded ones adopted by their tag)"
    );
    assert_converges(&env, 1200);
}

#[test]
fn two_passes_at_once_the_second_exits_5_and_changes_nothing() {
    let env = Env::start(users(3));
    env.emu.inject_fault(1, Fault::Delay(Duration::from_secs(2)));
    let mut first = spawn_pass(&env);
    wait_for("the lock file", || env.dir.path().join("state.sqlite3.lock").exists());
    std::thread::sleep(Duration::from_millis(300));
    let second = env.run(&[]);
    second.expect(5);
    assert!(second.stderr.contains("another pass is running"), "{}", second.stderr);
    assert!(first.wait().unwrap().success());
    assert_eq!(env.emu.count("POST", ADD), 3, "only the first pass wrote");
    assert_converges(&env, 3);
}

#[test]
fn a_corrupt_state_file_is_refused_before_anything_is_contacted() {
    let env = Env::start(users(3));
    std::fs::write(
        env.state_file(),
        b"this is not an SQLite database, it is junk".repeat(200),
    )
    .unwrap();
    let run = env.run(&[]);
    run.expect(1);
    assert!(run.stderr.contains("not a readable SQLite database"), "{}", run.stderr);
    assert_eq!(env.emu.total_requests(), 0);
    std::fs::remove_file(env.state_file()).unwrap();
    assert_converges(&env, 3);
}

#[test]
fn a_read_only_state_file_is_refused_before_any_write() {
    let env = Env::start(users(3));
    env.pass();
    env.slapd.add_users(&[TestUser::new("late", "example.org")]).unwrap();
    // Root ignores file modes, so the pass runs as `nobody`, owning everything but the state file.
    env.write_config();
    let nobody = 65534;
    for entry in std::fs::read_dir(env.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path != env.state_file() {
            std::os::unix::fs::chown(&path, Some(nobody), Some(nobody)).unwrap();
        }
    }
    std::os::unix::fs::chown(env.dir.path(), Some(nobody), Some(nobody)).unwrap();
    let mut perms = std::fs::metadata(env.state_file()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(env.state_file(), perms).unwrap();
    env.emu.reset_counts();
    // A copy of the binary `nobody` can reach wherever the checkout lives (/root is 0700).
    let bin_dir = crate::util::TempDir::new("nobody-bin");
    std::os::unix::fs::chown(bin_dir.path(), Some(nobody), Some(nobody)).unwrap();
    let bin = bin_dir.path().join("mailcow-ldap-sync");
    std::fs::copy(BIN, &bin).unwrap();
    let out = Command::new(&bin)
        .args(["-c", env.config_path().to_str().unwrap()])
        .current_dir(env.dir.path())
        .env_clear()
        .uid(nobody)
        .gid(nobody)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("read-only"), "{stderr}");
    assert_eq!(env.emu.total_requests(), 0, "nothing contacted");
    std::os::unix::fs::chown(env.state_file(), Some(nobody), Some(nobody)).unwrap();
    assert_converges(&env, 4);
}

#[test]
fn a_full_disk_at_commit_keeps_the_old_state_and_the_next_pass_adopts() {
    let env = Env::start(users(2));
    env.pass();
    env.slapd
        .add_users(
            &(3..=300)
                .map(|i| TestUser::new(&format!("user{i:05}"), "example.org"))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    env.write_config();
    // A file size limit stands in for a full disk: writes past it fail with EFBIG.
    let limit = std::fs::metadata(env.state_file()).unwrap().len() + 4096;
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; exec prlimit --fsize={limit} {BIN} -c {}",
            env.config_path().display()
        ))
        .current_dir(env.dir.path())
        .env_clear()
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("state database") && stderr.contains("full"), "{stderr}");
    assert_eq!(env.emu.mailbox_count(), 300, "mailcow got the mailboxes");
    assert_eq!(
        managed_rows(&env.state_file()).len(),
        2,
        "the state kept the previous pass"
    );
    env.emu.reset_counts();
    env.pass();
    assert_eq!(env.emu.count("POST", ADD), 0, "adopted, not created again");
    assert_converges(&env, 300);
}

#[test]
fn an_old_state_schema_migrates_and_a_newer_one_is_refused() {
    let env = Env::start(users(2));
    // The original tool's database: its `user` table as SQLAlchemy creates it, user_version 0.
    let sqlite = |sql: &str| {
        let conn = rusqlite_conn(&env.state_file());
        conn.execute_batch(sql).unwrap();
    };
    sqlite(
        "CREATE TABLE user (id INTEGER NOT NULL, uid VARCHAR, active BOOLEAN, mail VARCHAR, first_name VARCHAR, \
         last_name VARCHAR, password VARCHAR, quota INTEGER, tls_enforce_in BOOLEAN, tls_enforce_out BOOLEAN, \
         PRIMARY KEY (id));
         INSERT INTO user (id, uid, mail, password) VALUES (1, 'x', 'x@example.org', '{SSHA}old');",
    );
    env.pass();
    assert_eq!(managed_rows(&env.state_file()).len(), 2);
    sqlite("PRAGMA user_version = 99;");
    let run = env.run(&[]);
    run.expect(1);
    assert!(run.stderr.contains("newer version"), "{}", run.stderr);
}

#[test]
fn a_sqlite_file_of_another_application_is_refused_untouched() {
    let env = Env::start(users(2));
    let sqlite = |sql: &str| rusqlite_conn(&env.state_file()).execute_batch(sql).unwrap();
    sqlite("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL); INSERT INTO invoices VALUES (1, 9.5);");
    let before = std::fs::read(env.state_file()).unwrap();
    for args in [&[][..], &["--dry-run"][..], &["status"][..]] {
        let run = env.run(args);
        run.expect(1);
        assert!(
            run.stderr.contains(&format!(
                "state database {}: is not this tool's state database",
                env.state_file().display()
            )),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert_eq!(
        std::fs::read(env.state_file()).unwrap(),
        before,
        "not migrated in place"
    );
    assert_eq!(env.emu.count_writes(), 0);
}

fn rusqlite_conn(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[test]
fn ldap_timeout_is_exit_1_and_nothing_is_written() {
    let mut env = Env::start(users(3));
    env.set("/ldap/timeout_secs", json!(1));
    let pid = env.slapd.pid().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let run = env.run(&[]);
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    run.expect(1);
    assert!(run.stderr.contains("no answer in time"), "{}", run.stderr);
    assert_eq!(env.emu.total_requests(), 0);
    assert_converges(&env, 3);
}

/// A TCP proxy to `target` that closes both sides after passing `budget` bytes back.
fn cutting_proxy(target: String, budget: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(&target) else {
                return;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
            });
            let mut passed = 0;
            let mut buf = [0u8; 1024];
            while passed < budget {
                let Ok(n) = server.read(&mut buf) else { break };
                if n == 0 {
                    break;
                }
                let n = n.min(budget - passed);
                if client.write_all(&buf[..n]).is_err() {
                    break;
                }
                passed += n;
            }
            let _ = client.shutdown(std::net::Shutdown::Both);
            let _ = server.shutdown(std::net::Shutdown::Both);
        }
    });
    port
}

#[test]
fn ldap_connection_cut_during_paging_is_exit_1_and_nothing_is_written() {
    let mut env = Env::start(users(60));
    env.pass();
    let target = env
        .slapd
        .ldap_url()
        .trim_start_matches("ldap://")
        .trim_end_matches('/')
        .to_owned();
    let port = cutting_proxy(target, 6000);
    env.set("/ldap/uri", json!(format!("ldap://127.0.0.1:{port}")));
    env.emu.reset_counts();
    let run = env.run(&[]);
    run.expect(1);
    assert!(run.stderr.contains("LDAP"), "{}", run.stderr);
    // mailcow is read while LDAP pages (both reads run at once); nothing is written.
    assert_eq!(env.emu.count_writes(), 0, "a cut search is never applied");
    assert_eq!(env.emu.mailbox_count(), 60);
    assert!(
        env.emu.mailboxes().iter().all(|m| m["active"] == json!(1)),
        "nothing disabled"
    );
}

#[test]
fn an_ldap_referral_is_exit_1() {
    let mut env = Env::start(users(3));
    env.slapd
        .apply_ldif(&format!(
            "dn: ou=elsewhere,{base}\nobjectClass: referral\nobjectClass: extensibleObject\nou: elsewhere\nref: ldap://127.0.0.1:9/ou=elsewhere,{base}\n\n",
            base = env.slapd.base_dn()
        ))
        .unwrap();
    env.set(
        "/ldap/user_search_base",
        json!(format!("ou=elsewhere,{}", env.slapd.base_dn())),
    );
    let run = env.run(&[]);
    run.expect(1);
    assert!(run.stderr.contains("referral"), "{}", run.stderr);
    assert_eq!(env.emu.count_writes(), 0);
}

#[test]
fn zero_results_on_a_fresh_install_is_a_quiet_no_op() {
    let env = Env::start(Vec::new());
    let run = env.run(&[]);
    run.expect(0);
    assert_eq!(env.emu.count_writes(), 0);
}

#[test]
fn mailcow_empty_or_non_json_answers_are_exit_1_with_a_hint() {
    for (fault, needle) in [(Fault::EmptyBody, "empty answer"), (Fault::NonJson, "not valid JSON")] {
        let env = Env::start(users(2));
        env.emu.inject_fault(2, fault);
        let run = env.run(&[]);
        run.expect(1);
        assert!(
            run.stderr.contains(needle) && run.stderr.contains("mailcow_host"),
            "{}",
            run.stderr
        );
        assert_eq!(env.emu.count_writes(), 0);
        assert_converges(&env, 2);
    }
}

#[test]
fn a_batch_with_some_danger_items_applies_the_rest() {
    let mut list = users(3);
    for i in 1..=3 {
        list.push(TestUser::new(&format!("net{i}"), "example.net"));
    }
    let env = Env::start(list);
    env.emu.add_domain(DomainSpec {
        defquota_mib: 1024,
        maxquota_mib: 2048,
        quota_mib: 100_000,
        mailboxes: 100,
        ..roomy_domain("example.net")
    });
    env.pass();
    // The same new quota for all six: one edit request; example.net's cap refuses three items.
    for uid in ["user00001", "user00002", "user00003", "net1", "net2", "net3"] {
        env.slapd.modify_attr(uid, "MailQuota", &["3000"]).unwrap();
    }
    env.emu.reset_counts();
    let run = env.run(&["--json"]);
    run.expect(3);
    assert_eq!(env.emu.count("POST", "/api/v1/edit/mailbox"), 1, "one batch");
    let report = run.json();
    let failed: Vec<&str> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "failed")
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    assert_eq!(failed, vec!["net1@example.net", "net2@example.net", "net3@example.net"]);
    let net1 = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "net1@example.net")
        .unwrap();
    assert!(
        net1["error"].as_str().unwrap().starts_with("mailbox_quota"),
        "mailcow's reason is named: {net1}"
    );
    assert_eq!(env.mailbox("user00001@example.org")["quota"], json!(3000u64 << 20));
    assert_eq!(env.mailbox("net1@example.net")["quota"], json!(1024u64 << 20));
    // The next pass retries only what failed.
    env.emu.reset_counts();
    env.run(&[]).expect(3);
    assert_eq!(env.emu.count_writes(), 1);
}
