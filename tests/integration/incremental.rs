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

/// A second mailcow and state file beside an [`Env`], synced by full passes from the same
/// directory: what the incremental side must end up equal to.
struct FullTwin {
    emu: sync_test_support::mailcow::Emulator,
    dir: crate::util::TempDir,
    config: serde_json::Value,
}

impl FullTwin {
    fn beside(env: &Env) -> FullTwin {
        let emu = sync_test_support::mailcow::Emulator::start(EmulatorOptions::default()).expect("start the emulator");
        for domain in ["example.org", "example.net"] {
            emu.add_domain(crate::util::roomy_domain(domain));
        }
        let mut config = env.config.clone();
        config["mailcow_host"] = json!(emu.url());
        FullTwin {
            emu,
            dir: crate::util::TempDir::new("twin"),
            config,
        }
    }

    fn pass(&self) -> crate::util::Run {
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
fn mailcow_contents(emu: &sync_test_support::mailcow::Emulator) -> Vec<String> {
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
fn state_contents(path: &std::path::Path) -> Vec<String> {
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
struct Steps(u64);

impl Steps {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
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
        let full = twin.pass();
        let context = || {
            format!(
                "seed {seed}\n{}\nincremental:\n{}\nfull:\n{}",
                log.join("\n"),
                inc.stderr,
                full.stderr
            )
        };
        assert!(
            matches!(inc.code, 0 | 3),
            "incremental pass exit {}\n{}",
            inc.code,
            context()
        );
        assert_eq!(inc.code, full.code, "exit codes differ\n{}", context());
        if inc.json()["pass"]["kind"] == "incremental" {
            incremental_passes += 1;
        }
        assert_eq!(
            mailcow_contents(&env.emu),
            mailcow_contents(&twin.emu),
            "mailcow differs\n{}",
            context()
        );
        assert_eq!(
            state_contents(&env.state_file()),
            state_contents(&twin.dir.path().join("state.sqlite3")),
            "state differs\n{}",
            context()
        );
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
