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

        // `status` says which kind each pass was, and why.
        let config = env.config_path();
        let status = crate::util::run_bin(
            env.dir.path(),
            &["status", "-c", config.to_str().unwrap(), "--json"],
            &[],
        );
        status.expect(0);
        let runs = status.json()["runs"].clone();
        assert_eq!(runs[0]["kind"], "full");
        assert_eq!(runs[0]["why"], "--full");
        assert_eq!(runs[1]["kind"], "incremental");
        // An incremental pass reports the directory's users as the last full pass counted them.
        assert_eq!(runs[1]["users"], 30, "{runs}");
        assert_eq!(runs[0]["users"], 30);
        let text = crate::util::run_bin(env.dir.path(), &["status", "-c", config.to_str().unwrap()], &[]);
        assert!(text.stdout.contains("full (--full), exit 0"), "{}", text.stdout);
    }
}

/// A second mailcow and state file beside an [`Env`], synced by full passes from the same
/// directory: what the incremental side must end up equal to.
pub struct FullTwin {
    pub emu: sync_test_support::mailcow::Emulator,
    pub dir: crate::util::TempDir,
    config: serde_json::Value,
}

impl FullTwin {
    fn beside(env: &Env) -> FullTwin {
        FullTwin::with(&env.config, &["example.org", "example.net"])
    }

    /// A twin of `config`'s pass, with its own emulator holding `domains`.
    pub fn with(config: &serde_json::Value, domains: &[&str]) -> FullTwin {
        let emu = sync_test_support::mailcow::Emulator::start(EmulatorOptions::default()).expect("start the emulator");
        for domain in domains {
            emu.add_domain(crate::util::roomy_domain(domain));
        }
        let mut config = config.clone();
        config["mailcow_host"] = json!(emu.url());
        FullTwin {
            emu,
            dir: crate::util::TempDir::new("twin"),
            config,
        }
    }

    pub fn state_file(&self) -> std::path::PathBuf {
        self.dir.path().join("state.sqlite3")
    }

    /// Run the twin's full pass after `inc`, the incremental pass of `emu` and `state`, and
    /// assert that both ended alike: exit code (one of `codes`), mailcow's contents and the
    /// state's rows. `log` (the steps so far) is shown when they differ. Whether `inc` was
    /// incremental.
    pub fn agrees(
        &self,
        inc: &crate::util::Run,
        emu: &sync_test_support::mailcow::Emulator,
        state: &std::path::Path,
        codes: &[i32],
        log: &[String],
    ) -> bool {
        let full = self.pass();
        let context = || {
            format!(
                "{}\nincremental:\n{}\nfull:\n{}",
                log.join("\n"),
                inc.stderr,
                full.stderr
            )
        };
        assert!(
            codes.contains(&inc.code),
            "incremental pass exit {}\n{}",
            inc.code,
            context()
        );
        assert_eq!(inc.code, full.code, "exit codes differ\n{}", context());
        assert_eq!(
            mailcow_contents(emu),
            mailcow_contents(&self.emu),
            "mailcow differs\n{}",
            context()
        );
        assert_eq!(
            state_contents(state),
            state_contents(&self.state_file()),
            "state differs\n{}",
            context()
        );
        inc.json()["pass"]["kind"] == "incremental"
    }

    pub fn pass(&self) -> crate::util::Run {
        let path = self.dir.path().join("config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&self.config).unwrap()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        crate::util::run_bin(
            self.dir.path(),
            &["-c", path.to_str().unwrap(), "--full", "--json"],
            &[],
        )
    }
}

/// mailcow's contents that a pass decides, without times.
pub fn mailcow_contents(emu: &sync_test_support::mailcow::Emulator) -> Vec<String> {
    let mut out: Vec<String> = emu
        .mailboxes()
        .iter()
        .map(|m| {
            let username = m["username"].as_str().unwrap_or_default();
            format!(
                "{username} name={} quota={} active={} tags={} authsource={} tls={}/{} pw={}",
                m["name"],
                m["quota"],
                m["active"],
                m["tags"],
                m["authsource"],
                m["attributes"]["tls_enforce_in"],
                m["attributes"]["tls_enforce_out"],
                emu.stored_password(username).unwrap_or_default().len()
            )
        })
        .collect();
    out.sort();
    out
}

/// The state's rows without times (when disabled is kept as whether).
pub fn state_contents(path: &std::path::Path) -> Vec<String> {
    let Some(store) = mailcow_ldap_sync::edge::state_db::StateDb::open_read_only(path).expect("open state") else {
        return Vec::new();
    };
    let mut out: Vec<String> = store
        .load()
        .expect("load state")
        .values()
        .map(|r| {
            format!(
                "{} {} {} name={:?} quota={:?} active={:?} tls={:?}/{:?} pw={} auth={:?} disabled={}",
                r.uid,
                r.address,
                r.dn,
                r.name,
                r.quota_mib,
                r.active,
                r.tls_in,
                r.tls_out,
                r.password_fp.is_some(),
                r.authsource,
                r.disabled_at.is_some()
            )
        })
        .collect();
    out.sort();
    out
}

/// A small seeded generator (xorshift64*): the same seed, the same steps.
pub struct Steps(pub u64);

impl Steps {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random directory changes, each followed by an incremental pass and, beside it, a full
/// pass into its own mailcow and state: after every step both end equal.
fn equivalence(seed: u64, steps: usize, uid_attr: &str, on_removed: &str, sessionlog: Option<usize>) {
    let mut env = syncrepl_env(12, sessionlog);
    env.emu.add_domain(crate::util::roomy_domain("example.net"));
    env.set("/ldap/user_mapping/uid", json!(uid_attr));
    env.set(
        "/ldap/user_search_filter",
        json!("(&(objectClass=inetOrgPerson)(!(description=hidden)))"),
    );
    env.set("/sync/on_removed", json!(on_removed));
    env.set("/sync/delete_after_days", json!(0));
    let twin = FullTwin::beside(&env);
    let mut rng = Steps(seed | 1);
    // uids that exist (with their OU), that were deleted, and the next new one.
    let mut present: Vec<(String, &str)> = (1..=12).map(|i| (format!("user{i:05}"), "people")).collect();
    let mut deleted: Vec<String> = Vec::new();
    let mut next_user = 13;
    let mut log: Vec<String> = Vec::new();
    let mut incremental_passes = 0;
    for step in 0..steps {
        for _ in 0..1 + rng.below(3) {
            let op = rng.below(11);
            if present.is_empty() && op != 0 {
                continue;
            }
            let pick = if present.is_empty() {
                0
            } else {
                rng.below(present.len())
            };
            let (uid, ou) = present.get(pick).cloned().unwrap_or_default();
            let what = match op {
                0 => {
                    let (uid, user) = if !deleted.is_empty() && rng.below(2) == 0 {
                        let uid = deleted.remove(rng.below(deleted.len()));
                        let user = sync_test_support::slapd::TestUser::new(&uid, "example.org");
                        (uid, user)
                    } else {
                        let uid = format!("user{next_user:05}");
                        next_user += 1;
                        (
                            uid.clone(),
                            sync_test_support::slapd::TestUser::new(&uid, "example.org"),
                        )
                    };
                    env.slapd.add_users(&[user]).unwrap();
                    present.push((uid.clone(), "people"));
                    format!("add {uid}")
                }
                1 => {
                    env.slapd.delete_user(&uid).unwrap();
                    present.remove(pick);
                    deleted.push(uid.clone());
                    format!("delete {uid}")
                }
                2 => {
                    let name = format!("N{}", rng.below(1000));
                    env.slapd.modify_attr(&uid, "sn", &[&name]).unwrap();
                    format!("sn {uid} {name}")
                }
                3 => {
                    let quota = (1 + rng.below(4) * 512).to_string();
                    env.slapd.modify_attr(&uid, "MailQuota", &[&quota]).unwrap();
                    format!("quota {uid} {quota}")
                }
                4 => {
                    let active = ["TRUE", "FALSE", "2"][rng.below(3)];
                    env.slapd.modify_attr(&uid, "mailActive", &[active]).unwrap();
                    format!("active {uid} {active}")
                }
                5 => {
                    let hash = sync_test_support::slapd::TestUser::new(&format!("{uid}x{}", rng.below(100)), "x")
                        .password
                        .unwrap();
                    env.slapd.modify_attr(&uid, "userPassword", &[&hash]).unwrap();
                    format!("password {uid}")
                }
                6 => {
                    // A new address: same domain (a rename), the other domain (a move), or
                    // another present user's (a duplicate).
                    let domain = ["example.org", "example.net"][rng.below(2)];
                    let mail = match rng.below(3) {
                        0 if present.len() > 1 => {
                            let other = &present[rng.below(present.len())].0;
                            format!("{other}@example.org")
                        }
                        _ => format!("{uid}.{}@{domain}", rng.below(50)),
                    };
                    env.slapd.modify_attr(&uid, "mail", &[&mail]).unwrap();
                    format!("mail {uid} {mail}")
                }
                7 => {
                    let new_ou = if ou == "people" { "staff" } else { "people" };
                    env.slapd.move_user(&uid, new_ou).unwrap();
                    present[pick].1 = new_ou;
                    format!("move {uid} {new_ou}")
                }
                8 => {
                    let hidden = rng.below(2) == 0;
                    env.slapd
                        .modify_attr(&uid, "description", if hidden { &["hidden"] } else { &[] })
                        .unwrap();
                    format!("hidden {uid} {hidden}")
                }
                9 => {
                    env.slapd.modify_attr(&uid, "mail", &[]).unwrap();
                    format!("no mail {uid}")
                }
                _ => {
                    let mail = format!("{uid}@example.org");
                    env.slapd.modify_attr(&uid, "mail", &[&mail]).unwrap();
                    format!("mail back {uid}")
                }
            };
            log.push(format!("step {step}: {what}"));
        }
        let inc = env.run(&["--json"]);
        if twin.agrees(&inc, &env.emu, &env.state_file(), &[0, 3], &log) {
            incremental_passes += 1;
        }
    }
    // The property is about incremental passes: most of them must have been.
    assert!(
        incremental_passes * 2 > steps,
        "only {incremental_passes} of {steps} passes were incremental"
    );
}

#[test]
fn incremental_passes_end_as_full_passes_do_over_random_changes() {
    equivalence(0x5eed_0001, 120, "entryUUID", "disable", None);
}

#[test]
fn incremental_passes_end_as_full_passes_with_dn_uids_deletes_and_a_session_log() {
    equivalence(0x5eed_0002, 50, "", "delete", Some(200));
    equivalence(0x5eed_0003, 40, "uid", "disallow_login", None);
}

#[test]
fn incremental_passes_end_as_full_passes_with_entryuuids_and_a_session_log() {
    // The refresh names who left: a delete phase's uuids, with no uid search.
    equivalence(0x5eed_0004, 50, "entryUUID", "disable", Some(200));
}

#[test]
fn a_directory_emptied_stops_an_incremental_pass_at_the_guard() {
    // The refresh lists no uuid (a present phase) or only deletions (a session log): either
    // way the uids are read in full before a pass may say the directory is empty.
    for sessionlog in [None, Some(100)] {
        let env = syncrepl_env(3, sessionlog);
        env.run(&[]).expect(0);
        for i in 1..=3 {
            env.slapd.delete_user(&format!("user{i:05}")).unwrap();
        }
        env.emu.reset_counts();
        let run = env.run(&["--json"]);
        run.expect(4);
        assert_eq!(kind_of(&run).0, "incremental", "{}", run.stderr);
        assert!(
            run.stderr
                .contains("LDAP returned no users while 3 mailboxes are managed"),
            "{}",
            run.stderr
        );
        assert_eq!(env.emu.count_writes(), 0, "{}", run.stderr);
        assert_eq!(env.mailbox("user00002@example.org")["active"], 1);
    }
}

/// The mark the last pass stored, and a way to put a forged one in its place.
fn stored_mark(env: &Env) -> serde_json::Value {
    let conn = rusqlite::Connection::open(env.state_file()).unwrap();
    let text: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'change_mark'", [], |r| r.get(0))
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn store_mark(env: &Env, mark: &serde_json::Value) {
    let conn = rusqlite::Connection::open(env.state_file()).unwrap();
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'change_mark'",
        [serde_json::to_string(mark).unwrap()],
    )
    .unwrap();
}

#[test]
fn a_pass_killed_after_reading_the_changes_keeps_the_old_cookie_and_the_next_converges() {
    let env = syncrepl_env(10, None);
    env.run(&[]).expect(0);
    let cookie_before = stored_mark(&env)["position"].clone();
    for uid in ["user00002", "user00004", "user00006"] {
        env.slapd.modify_attr(uid, "sn", &["Killed"]).unwrap();
    }
    // Requests: domains, three mailboxes, three edits; the second edit hangs and the pass
    // is killed, one change applied in mailcow and none recorded.
    env.emu.reset_counts();
    env.emu.inject_fault(
        6,
        sync_test_support::mailcow::Fault::Delay(std::time::Duration::from_secs(3)),
    );
    env.write_config();
    let mut child = std::process::Command::new(crate::util::BIN)
        .args(["-c", env.config_path().to_str().unwrap()])
        .current_dir(env.dir.path())
        .env_clear()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while env.emu.requests().len() < 5 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            env.emu.requests()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
    assert_eq!(
        stored_mark(&env)["position"],
        cookie_before,
        "the cookie moved without its pass"
    );
    std::thread::sleep(std::time::Duration::from_secs(3)); // the hung edit completes

    // The next pass reads the same changes again from the old cookie and finishes them.
    let next = env.run(&["--json"]);
    next.expect(0);
    assert_eq!(kind_of(&next).0, "incremental", "{}", next.stderr);
    assert_eq!(next.json()["ldap_entries"], 3);
    for uid in ["user00002", "user00004", "user00006"] {
        let name = env.mailbox(&format!("{uid}@example.org"))["name"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(name.ends_with("Killed"), "{uid}: {name}");
    }
    assert_ne!(stored_mark(&env)["position"], cookie_before);
    env.emu.reset_counts();
    env.run(&[]).expect(0);
    assert_eq!(env.emu.total_requests(), 0, "converged: {:?}", env.emu.requests());
}

#[test]
fn a_cookie_from_another_directory_or_a_restored_backup_means_a_full_pass() {
    let env = syncrepl_env(5, None);
    env.run(&[]).expect(0);
    let good = stored_mark(&env);

    // Another directory at the same address: its base entry's entryUUID differs.
    let mut other = good.clone();
    other["server"] = json!("00000000-0000-0000-0000-000000000000");
    store_mark(&env, &other);
    let run = env.run(&["--json"]);
    run.expect(0);
    assert_eq!(
        kind_of(&run),
        (
            "full".into(),
            "another directory (the search base's entryUUID differs)".into()
        )
    );

    // A restored backup: the stored cookie is ahead of the server's contextCSN.
    let mut ahead = stored_mark(&env);
    let cookie = "rid=000,csn=29991231235959.999999Z#000000#000#000000";
    ahead["position"] = json!(cookie.bytes().map(|b| format!("{b:02x}")).collect::<String>());
    store_mark(&env, &ahead);
    let run = env.run(&["--json"]);
    run.expect(0);
    assert_eq!(
        kind_of(&run),
        (
            "full".into(),
            "the directory is behind the stored cookie (restored from a backup?)".into()
        )
    );

    // An unreadable cookie, which slapd would take as none (hiding deletions).
    let mut garbage = stored_mark(&env);
    garbage["position"] = json!("6a756e6b");
    store_mark(&env, &garbage);
    let run = env.run(&["--json"]);
    assert_eq!(kind_of(&run).0, "full", "{}", run.stderr);

    // Each full pass stored a good mark again: the next pass is incremental, and a deleted
    // user is still found gone.
    env.slapd.delete_user("user00002").unwrap();
    let run = env.run(&["--json"]);
    run.expect(0);
    assert_eq!(kind_of(&run).0, "incremental");
    assert_eq!(env.mailbox("user00002@example.org")["active"], 0);
}

#[test]
fn full_every_a_failed_pass_and_a_config_change_each_bring_a_full_pass() {
    let mut env = syncrepl_env(5, None);
    env.run(&[]).expect(0);
    assert_eq!(kind_of(&env.run(&["--json"])).0, "incremental");

    env.set("/sync/full_every", json!("0s"));
    let run = env.run(&["--json"]);
    assert_eq!(kind_of(&run), ("full".into(), "sync.full_every (0s) is over".into()));
    env.set("/sync/full_every", json!("1h"));

    env.set("/sync/default_quota_mib", json!(2048));
    let run = env.run(&["--json"]);
    assert_eq!(
        kind_of(&run),
        (
            "full".into(),
            "the config changed (mapping, filter, domains or sync rules)".into()
        )
    );
    assert_eq!(kind_of(&env.run(&["--json"])).0, "incremental");

    // A pass that stopped (mailcow unreachable): the next one reads everything.
    env.slapd.modify_attr("user00003", "sn", &["Later"]).unwrap();
    env.emu.inject_fault(1, sync_test_support::mailcow::Fault::Status(502));
    env.run(&[]).expect(1);
    let run = env.run(&["--json"]);
    run.expect(0);
    assert_eq!(
        kind_of(&run),
        ("full".into(), "the last pass ended with exit code 1".into())
    );
    assert!(
        env.mailbox("user00003@example.org")["name"]
            .as_str()
            .unwrap()
            .ends_with("Later")
    );

    // Aliases synced: every pass is full, and says why.
    env.set("/ldap/user_mapping/aliases", json!("mailAlternateAddress"));
    let run = env.run(&["--json"]);
    assert_eq!(
        kind_of(&run),
        ("full".into(), "aliases or groups are synced: every pass is full".into())
    );
}

#[test]
fn many_changed_users_are_read_with_one_list_and_a_few_by_name_in_parallel() {
    let mut env = syncrepl_env(120, None);
    env.set("/sync/concurrency", json!(4));
    env.run(&[]).expect(0);
    let count = |env: &Env, prefix: &str| {
        env.emu
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with(prefix))
            .count()
    };

    // Five changed: five reads by name (four in flight), five edits.
    for i in 1..=5 {
        env.slapd.modify_attr(&format!("user{i:05}"), "sn", &["Few"]).unwrap();
    }
    env.emu.reset_counts();
    let few = env.run(&["--json"]);
    few.expect(0);
    assert_eq!(few.json()["summary"]["updated"], 5, "{}", few.stderr);
    assert_eq!(count(&env, "/api/v1/get/mailbox/user"), 5);
    assert_eq!(count(&env, "/api/v1/get/mailbox/reduced"), 0);

    // 101 changed, above the 100 read by name: one list read instead.
    let ldif: String = (1..=101)
        .map(|i| {
            format!("dn: uid=user{i:05},ou=people,dc=example,dc=org\nchangetype: modify\nreplace: sn\nsn: Many\n-\n\n")
        })
        .collect();
    env.slapd.apply_ldif(&ldif).unwrap();
    env.emu.reset_counts();
    let many = env.run(&["--json"]);
    many.expect(0);
    assert_eq!(kind_of(&many).0, "incremental");
    assert_eq!(many.json()["summary"]["updated"], 101, "{}", many.stderr);
    assert_eq!(count(&env, "/api/v1/get/mailbox/reduced"), 1);
    assert_eq!(count(&env, "/api/v1/get/mailbox/user"), 0);
}
