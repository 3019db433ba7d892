//! Active Directory, tested against a real Samba AD domain controller: paged search past
//! AD's 1000-entry page limit, objectGUID identity, userAccountControl, proxyAddresses
//! aliases, a nested-group distribution alias, send-as rights from a nested group, and random
//! passwords (AD has no hashes).

use serde_json::{Value, json};
use sync_test_support::mailcow::{Emulator, EmulatorOptions};
use sync_test_support::samba::{AdGroup, SambaDc, SambaOptions, generate_ad_users, samba_tests_enabled};

use crate::util::{Run, TempDir, managed_rows, roomy_domain, run_bin};

struct AdEnv {
    dc: SambaDc,
    emu: Emulator,
    dir: TempDir,
    config: Value,
}

impl AdEnv {
    fn start(options: SambaOptions) -> AdEnv {
        let dc = SambaDc::start(options).expect("start the Samba AD DC");
        let emu = Emulator::start(EmulatorOptions::default()).unwrap();
        emu.add_domain(roomy_domain("example.test"));
        let config = json!({
            "ldap": {
                "uri": dc.ldaps_url(),
                "ca_file": dc.ca_file(),
                "bind_dn": dc.admin_bind(),
                "bind_pw": dc.admin_pw(),
                "user_search_base": dc.base_dn(),
                "user_search_filter": "(&(objectCategory=person)(objectClass=user)(mail=*))",
                "page_size": 300,
                "user_mapping": {
                    "mail": "mail", "firstname": "givenName", "lastname": "sn", "name": "displayName",
                    "password": "", "quota": "", "active": "userAccountControl",
                    "uid": "objectGUID", "aliases": "proxyAddresses"
                }
            },
            "mailcow_host": emu.url(),
            "mailcow_api_key": sync_test_support::mailcow::RW_KEY,
            "state_file": "state.sqlite3",
            "sync": { "password": "random", "active_format": "ad", "default_quota_mib": 2048, "concurrency": 4 },
            "groups": {
                "search_base": dc.users_dn(),
                "search_filter": "(&(objectClass=group)(mail=*))"
            }
        });
        AdEnv {
            dc,
            emu,
            dir: TempDir::new("ad"),
            config,
        }
    }

    /// `"incremental": "usn"`, with no aliases and no groups: with either, every pass is full.
    fn incremental_by_usn(&mut self) {
        self.incremental_by("usn");
    }

    /// `"incremental": mode` (`"usn"` or `"dirsync"`), with no aliases and no groups.
    fn incremental_by(&mut self, mode: &str) {
        self.config["ldap"]["incremental"] = json!(mode);
        self.config["ldap"]["user_mapping"]
            .as_object_mut()
            .unwrap()
            .remove("aliases");
        self.config.as_object_mut().unwrap().remove("groups");
    }

    fn run(&self, args: &[&str]) -> Run {
        let path = self.dir.path().join("config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&self.config).unwrap()).unwrap();
        let mut all = vec!["-c", path.to_str().unwrap()];
        all.extend_from_slice(args);
        run_bin(self.dir.path(), &all, &[])
    }
}

fn alias<'a>(aliases: &'a [Value], address: &str) -> Option<&'a Value> {
    aliases.iter().find(|a| a["address"] == address)
}

#[test]
fn active_directory_end_to_end() {
    if !samba_tests_enabled() {
        return;
    }
    let mut users = generate_ad_users(1100, "example.test");
    users[1].disabled = true;
    users[2].proxy_addresses.push("smtp:Second.Name@example.test".into());
    users[2]
        .proxy_addresses
        .push("X500:/o=Example/ou=Exchange/cn=user00003".into());
    let inner = AdGroup {
        name: "inner".into(),
        mail: None,
        members: vec!["user00005".into(), "user00006".into()],
    };
    let team = AdGroup {
        name: "team".into(),
        mail: Some("team@example.test".into()),
        members: vec!["user00004".into(), "inner".into()],
    };
    let env = AdEnv::start(SambaOptions {
        users,
        groups: vec![inner, team],
        ..SambaOptions::default()
    });

    let run = env.run(&["--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(
        report["summary"]["created"],
        json!(1100),
        "paged past 1000: {}",
        run.stderr
    );
    assert_eq!(env.emu.mailbox_count(), 1100);
    assert_eq!(
        env.emu.mailbox("user00002@example.test").unwrap()["active"],
        json!(0),
        "ACCOUNTDISABLE → active 0"
    );
    assert_eq!(env.emu.mailbox("user00001@example.test").unwrap()["active"], json!(1));
    assert_eq!(
        env.emu.mailbox("user00001@example.test").unwrap()["name"],
        "User00001 Tester"
    );
    assert_eq!(
        env.emu.mailbox("user00001@example.test").unwrap()["quota"],
        json!(2048u64 << 20)
    );
    assert!(
        !env.emu.stored_password("user00001@example.test").unwrap().is_empty(),
        "random password set"
    );

    // objectGUID is the identity, in the canonical text form.
    let guid = env.dc.object_guid("user00001").unwrap();
    let rows = managed_rows(&env.dir.path().join("state.sqlite3"));
    assert!(
        rows.iter()
            .any(|(uid, address)| uid == &guid && address == "user00001@example.test"),
        "{guid}"
    );

    let aliases = env.emu.aliases();
    assert_eq!(
        alias(&aliases, "second.name@example.test").unwrap()["goto"],
        "user00003@example.test"
    );
    assert_eq!(
        alias(&aliases, "team@example.test").unwrap()["goto"],
        "user00004@example.test,user00005@example.test,user00006@example.test",
        "nested group members"
    );
    assert_eq!(
        aliases.len(),
        2,
        "SMTP: primaries and X500 values are not aliases: {aliases:?}"
    );

    env.emu.reset_counts();
    let run = env.run(&[]);
    run.expect(0);
    assert_eq!(env.emu.count_writes(), 0, "unchanged: {:?}", env.emu.requests());

    // Disabling an account in AD is one write; removing it from the nested group, one more.
    env.dc.set_disabled("user00010", true).unwrap();
    env.dc.remove_from_group("inner", "user00006").unwrap();
    env.emu.reset_counts();
    env.run(&[]).expect(0);
    assert_eq!(env.emu.count_writes(), 2, "{:?}", env.emu.requests());
    assert_eq!(env.emu.mailbox("user00010@example.test").unwrap()["active"], json!(0));
    assert_eq!(
        alias(&env.emu.aliases(), "team@example.test").unwrap()["goto"],
        "user00004@example.test,user00005@example.test"
    );
}

/// `groups.as: "sender_acl"` with an AD group (nested): its members may send as the shared
/// mailbox's address; a member taken out of the nested group loses the right.
#[test]
fn a_nested_ad_group_gives_send_as_on_a_shared_mailbox() {
    if !samba_tests_enabled() {
        return;
    }
    let inner = AdGroup {
        name: "inner".into(),
        mail: None,
        members: vec!["user00002".into(), "user00003".into()],
    };
    let sales = AdGroup {
        name: "sales".into(),
        mail: Some("sales@example.test".into()),
        members: vec!["user00001".into(), "inner".into()],
    };
    let mut env = AdEnv::start(SambaOptions {
        users: generate_ad_users(3, "example.test"),
        groups: vec![inner, sales],
        ..SambaOptions::default()
    });
    env.emu
        .add_mailbox(sync_test_support::mailcow::MailboxSpec {
            local_part: "sales".into(),
            domain: "example.test".into(),
            quota_mib: 100,
            ..Default::default()
        })
        .unwrap();
    env.config["groups"]["as"] = json!("sender_acl");
    env.run(&[]).expect(0);
    let run = env.run(&[]);
    run.expect(0);
    assert!(run.stderr.contains("send-as 3 granted"), "{}", run.stderr);
    for user in ["user00001", "user00002", "user00003"] {
        assert_eq!(
            env.emu.sender_acl(&format!("{user}@example.test")),
            ["sales@example.test"],
            "{user}"
        );
    }
    assert!(env.emu.aliases().iter().all(|a| a["address"] != "sales@example.test"));

    env.dc.remove_from_group("inner", "user00003").unwrap();
    env.emu.reset_counts();
    env.run(&[]).expect(0);
    assert_eq!(env.emu.count_writes(), 1, "{:?}", env.emu.requests());
    assert!(env.emu.sender_acl("user00003@example.test").is_empty());
    assert_eq!(env.emu.sender_acl("user00002@example.test"), ["sales@example.test"]);
}

/// `templates` and `access` by `memberOf`, which AD keeps on the user: one attribute rule each,
/// matched whatever the letter case and spacing of the group's DN.
#[test]
fn templates_and_access_by_member_of_in_active_directory() {
    if !samba_tests_enabled() {
        return;
    }
    let staff = AdGroup {
        name: "staff".into(),
        mail: None,
        members: vec!["user00001".into()],
    };
    let mut env = AdEnv::start(SambaOptions {
        users: generate_ad_users(3, "example.test"),
        groups: vec![staff],
        ..SambaOptions::default()
    });
    env.config.as_object_mut().unwrap().remove("groups");
    let group = env.dc.user_dn("staff").to_ascii_lowercase().replace(',', ", ");
    env.emu
        .add_template(json!({"template": "Staff", "protocol_access": ["imap", "smtp"], "tags": ["staff"]}));
    env.config["templates"] = json!([{"when": {"attribute": "memberOf", "value": group}, "template": "Staff"}]);
    env.config["access"] = json!({
        "default": {"dav": true},
        "rules": [{"when": {"attribute": "memberOf", "value": group}, "set": {"dav": false}}]
    });
    env.run(&[]).expect(0);
    let flags = |address: &str, key: &str| env.emu.mailbox(address).unwrap()["attributes"][key].clone();
    assert_eq!(
        flags("user00001@example.test", "pop3_access"),
        "0",
        "the Staff template"
    );
    assert_eq!(
        flags("user00001@example.test", "dav_access"),
        "0",
        "access wins for its flag"
    );
    assert_eq!(flags("user00002@example.test", "pop3_access"), "1");
    assert_eq!(flags("user00002@example.test", "dav_access"), "1");
    let tags = env.emu.mailbox("user00001@example.test").unwrap()["tags"].clone();
    assert!(tags.as_array().unwrap().contains(&json!("staff")), "{tags}");

    // user00002 joins the group in AD: its memberOf changes, and so does its mailbox.
    env.dc.add_to_group("staff", "user00002").unwrap();
    let run = env.run(&["--json"]);
    run.expect(0);
    let report = run.json();
    let template = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "template")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(template["address"], "user00002@example.test");
    assert_eq!(flags("user00002@example.test", "pop3_access"), "0");
    assert_eq!(flags("user00002@example.test", "dav_access"), "0");
    env.emu.reset_counts();
    env.run(&[]).expect(0);
    assert_eq!(env.emu.count_writes(), 0, "{:?}", env.emu.requests());
}

/// The pass kind and reason from a `--json` report.
fn pass_of(run: &Run) -> (String, String) {
    let report = run.json();
    (
        report["pass"]["kind"].as_str().unwrap_or_default().to_owned(),
        report["pass"]["why"].as_str().unwrap_or_default().to_owned(),
    )
}

fn request_paths(emu: &Emulator) -> Vec<String> {
    emu.requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// The DC's highestCommittedUSN now, through the tool's own LDAP edge.
fn dc_usn(config: &Value) -> u64 {
    let text = config.to_string();
    let parsed = mailcow_ldap_sync::config::parse(
        std::path::Path::new("/nonexistent/config.json"),
        &text,
        &mailcow_ldap_sync::config::EnvSecrets::default(),
    )
    .expect("a valid config");
    let mut conn = mailcow_ldap_sync::edge::ldap::LdapConnection::connect(&parsed.ldap).expect("bind to Samba");
    conn.usn_mark().expect("usn mark").highest_committed_usn
}

/// The USN the last pass stored as its change mark.
fn stored_usn(env: &AdEnv) -> String {
    let path = env.dir.path().join("state.sqlite3");
    let db = mailcow_ldap_sync::edge::state_db::StateDb::open_read_only(&path)
        .expect("open state")
        .expect("a state file");
    let mark = db.change_mark().expect("read the mark").expect("a change mark");
    assert_eq!(mark.kind, "usn", "{mark:?}");
    mark.position
}

#[test]
fn active_directory_incremental_passes_by_usn_changed() {
    if !samba_tests_enabled() {
        return;
    }
    let mut env = AdEnv::start(SambaOptions {
        users: generate_ad_users(20, "example.test"),
        ..SambaOptions::default()
    });
    env.incremental_by_usn();

    let first = env.run(&["--json"]);
    first.expect(0);
    assert_eq!(
        pass_of(&first),
        ("full".into(), "first pass".into()),
        "{}",
        first.stderr
    );
    assert_eq!(env.emu.mailbox_count(), 20);
    let after_first = stored_usn(&env);
    let dc_before_second = dc_usn(&env.config);
    eprintln!(
        "Samba: after the first pass the mark is USN {after_first}; the DC is at {dc_before_second} before the second"
    );

    // Nothing changed in the directory: not one request to mailcow, whether or not the DC's
    // highestCommittedUSN moved on its own meanwhile.
    let second = silent_incremental_pass(&env, "no user changed");
    let after_second = stored_usn(&env);
    eprintln!(
        "Samba: second pass: {}; mark USN {after_first} -> {after_second}",
        second.stderr.lines().last().unwrap_or_default()
    );
    assert!(
        second
            .stderr
            .contains("(incremental, 0 LDAP entries, 0 reads, 0 writes"),
        "{}",
        second.stderr
    );

    // The DC's USN moves without a user changing (here: an OU is added; in a real domain,
    // e.g. a computer account or a group): the pass finds no changed user and sends nothing.
    env.dc
        .apply_ldif("dn: OU=Elsewhere,DC=example,DC=test\nchangetype: add\nobjectClass: organizationalUnit\n\n")
        .unwrap();
    let moved = dc_usn(&env.config);
    assert!(
        moved > after_second.parse::<u64>().unwrap(),
        "{moved} vs {after_second}"
    );
    let quiet = silent_incremental_pass(&env, "no user changed");
    assert_eq!(stored_usn(&env), moved.to_string(), "the mark moves on");
    eprintln!(
        "Samba: USN {after_second} -> {moved} by an OU: {}",
        quiet.stderr.lines().last().unwrap_or_default()
    );

    // One user changed: only its mailbox is read, and written once.
    let third = one_changed_user_costs_three_requests(&env);
    assert!(
        third.stderr.contains("(incremental, 1 LDAP entries, 2 reads, 1 write"),
        "{}",
        third.stderr
    );
    eprintln!("Samba: third pass: {}", third.stderr.lines().last().unwrap_or_default());

    // Disabled in AD: the mailbox is disabled, by an incremental pass.
    env.dc.set_disabled("user00004", true).unwrap();
    env.emu.reset_counts();
    let fourth = env.run(&["--json"]);
    fourth.expect(0);
    assert_eq!(pass_of(&fourth).0, "incremental", "{}", fourth.stderr);
    assert_eq!(env.emu.mailbox("user00004@example.test").unwrap()["active"], json!(0));
    assert_eq!(env.emu.count_writes(), 1, "{:?}", env.emu.requests());
    eprintln!(
        "Samba: fourth pass (disabled): {} {:?}",
        fourth.stderr.lines().last().unwrap_or_default(),
        request_paths(&env.emu)
    );

    // Deleted in AD: found gone against the live uid list, its mailbox disabled.
    env.dc.delete_user("user00005").unwrap();
    env.emu.reset_counts();
    let fifth = env.run(&["--json"]);
    fifth.expect(0);
    assert_eq!(pass_of(&fifth).0, "incremental", "{}", fifth.stderr);
    assert_eq!(fifth.json()["summary"]["disabled"], 1, "{}", fifth.stderr);
    assert_eq!(env.emu.mailbox("user00005@example.test").unwrap()["active"], json!(0));
    assert_eq!(env.emu.count_writes(), 1, "{:?}", env.emu.requests());
    eprintln!(
        "Samba: fifth pass (deleted): {} {:?}",
        fifth.stderr.lines().last().unwrap_or_default(),
        request_paths(&env.emu)
    );

    // --full reads everything and finds nothing left to do.
    env.emu.reset_counts();
    let full = env.run(&["--json", "--full"]);
    full.expect(0);
    assert_eq!(pass_of(&full), ("full".into(), "--full".into()));
    assert_eq!(env.emu.count_writes(), 0, "{}", full.stderr);
    assert_eq!(env.emu.mailbox_count(), 20);
    eprintln!("Samba: --full: {}", full.stderr.lines().last().unwrap_or_default());

    // And the pass after it is incremental again, still silent.
    silent_incremental_pass(&env, "no user changed");
    eprintln!(
        "Samba: DC USN at the end {}; stored mark {}",
        dc_usn(&env.config),
        stored_usn(&env)
    );
}

/// Random directory changes on a real Samba AD DC, each followed by an incremental pass by
/// uSNChanged and, beside it, a full pass into its own mailcow and state: after every step
/// both end equal (the slapd version of this is in incremental.rs).
#[test]
fn active_directory_incremental_passes_end_as_full_passes_do() {
    ad_equivalence("usn", 0x5eed_00ad);
}

/// The same by DirSync: the changed objects of the domain, each read again in full, and with
/// objectGUID as the uid the users who left told by DirSync alone (no uid list read).
#[test]
fn active_directory_dirsync_passes_end_as_full_passes_do() {
    ad_equivalence("dirsync", 0x5eed_00ad);
}

/// DirSync with the DN as the uid: a tombstone does not say whose row it was, so a change
/// that may be a leaver reads the directory's uids, as by uSNChanged.
#[test]
fn active_directory_dirsync_passes_with_dn_uids_end_as_full_passes_do() {
    ad_equivalence_with("dirsync", 0x5eed_00ad, "");
}

fn ad_equivalence(mode: &str, seed: u64) {
    ad_equivalence_with(mode, seed, "objectGUID");
}

fn ad_equivalence_with(mode: &str, seed: u64, uid: &str) {
    use crate::incremental::{FullTwin, Steps};
    if !samba_tests_enabled() {
        return;
    }
    let mut env = AdEnv::start(SambaOptions {
        users: generate_ad_users(10, "example.test"),
        ..SambaOptions::default()
    });
    env.incremental_by(mode);
    env.config["ldap"]["user_mapping"]["uid"] = json!(uid);
    env.config["sync"]["max_removals"] = json!(100);
    let twin = FullTwin::with(&env.config, &["example.test"]);
    let mut rng = Steps(seed);
    let mut present: Vec<String> = generate_ad_users(10, "example.test")
        .into_iter()
        .map(|u| u.sam)
        .collect();
    let mut next_user = 11;
    let mut log = Vec::new();
    let mut incremental_passes = 0;
    let steps = 80;
    for step in 0..steps {
        let op = rng.below(6);
        let pick = rng.below(present.len().max(1));
        let sam = present.get(pick).cloned().unwrap_or_default();
        let what = match op {
            0 => {
                let sam = format!("user{next_user:05}");
                next_user += 1;
                env.dc
                    .add_users(&[sync_test_support::samba::AdUser::new(&sam, "example.test")])
                    .unwrap();
                present.push(sam.clone());
                format!("add {sam}")
            }
            1 if present.len() > 3 => {
                env.dc.delete_user(&sam).unwrap();
                present.remove(pick);
                format!("delete {sam}")
            }
            2 => {
                let name = format!("{sam} N{}", rng.below(1000));
                env.dc.modify_attr(&sam, "displayName", &[&name]).unwrap();
                format!("displayName {sam} {name}")
            }
            3 => {
                let disabled = rng.below(2) == 0;
                env.dc.set_disabled(&sam, disabled).unwrap();
                format!("disabled {sam} {disabled}")
            }
            4 => {
                let mail = format!("{sam}.{}@example.test", rng.below(20));
                env.dc.modify_attr(&sam, "mail", &[&mail]).unwrap();
                format!("mail {sam} {mail}")
            }
            _ => {
                // Out of the filter and back: no mail, then the address again.
                let keep = rng.below(2) == 0;
                let mail = format!("{sam}@example.test");
                let values: Vec<&str> = if keep { vec![mail.as_str()] } else { Vec::new() };
                env.dc.modify_attr(&sam, "mail", &values).unwrap();
                format!("mail of {sam} {}", if keep { "back" } else { "removed" })
            }
        };
        log.push(format!("step {step}: {what}"));
        let inc = env.run(&["--json"]);
        // 4: every user's mail removed, so the guard refuses, on both sides.
        if twin.agrees(&inc, &env.emu, &env.dir.path().join("state.sqlite3"), &[0, 3, 4], &log) {
            incremental_passes += 1;
            assert!(!inc.stderr.contains("refused DirSync"), "{}", inc.stderr);
        }
        if inc.code == 0 {
            assert_eq!(stored_mark(&env)["kind"], mode, "{}", inc.stderr);
        }
    }
    assert!(
        incremental_passes * 2 > steps,
        "only {incremental_passes} of {steps} passes were incremental"
    );
    eprintln!(
        "Samba ({mode}, uid {uid:?}): {incremental_passes} of {steps} passes incremental, each equal to its full twin"
    );
}

/// An incremental pass that must send nothing to mailcow (`what` says which, for messages).
fn silent_incremental_pass(env: &AdEnv, what: &str) -> Run {
    env.emu.reset_counts();
    let run = env.run(&["--json"]);
    run.expect(0);
    assert_eq!(pass_of(&run).0, "incremental", "{what}: {}", run.stderr);
    assert_eq!(env.emu.total_requests(), 0, "{what}: {:?}", env.emu.requests());
    run
}

/// An incremental pass after one user's displayName changed: exactly the domain list, that
/// mailbox by name and one edit; the new name is in mailcow.
fn one_changed_user_costs_three_requests(env: &AdEnv) -> crate::util::Run {
    env.dc
        .modify_attr("user00003", "displayName", &["Renamed Three"])
        .unwrap();
    env.emu.reset_counts();
    let third = env.run(&["--json"]);
    third.expect(0);
    assert_eq!(pass_of(&third).0, "incremental", "{}", third.stderr);
    assert_eq!(
        request_paths(&env.emu),
        [
            "GET /api/v1/get/domain/all",
            "GET /api/v1/get/mailbox/user00003@example.test",
            "POST /api/v1/edit/mailbox",
        ],
        "{}",
        third.stderr
    );
    assert_eq!(
        env.emu.mailbox("user00003@example.test").unwrap()["name"],
        "Renamed Three"
    );
    third
}

/// The change mark the last pass stored (`meta.change_mark`), and a way to forge one.
fn stored_mark(env: &AdEnv) -> Value {
    let conn = rusqlite::Connection::open(env.dir.path().join("state.sqlite3")).unwrap();
    let text: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'change_mark'", [], |r| r.get(0))
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn store_mark(env: &AdEnv, mark: &Value) {
    let conn = rusqlite::Connection::open(env.dir.path().join("state.sqlite3")).unwrap();
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'change_mark'",
        [serde_json::to_string(mark).unwrap()],
    )
    .unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// DirSync on a real Samba DC: the mark is its cookie, an unchanged pass sends nothing to
/// mailcow, a change and a deletion come through, and a cookie that cannot be trusted
/// (garbage, another DC's invocationId, one the DC cannot unmarshal) makes a full pass that
/// loses nothing.
#[test]
fn active_directory_incremental_passes_by_dirsync() {
    if !samba_tests_enabled() {
        return;
    }
    let mut env = AdEnv::start(SambaOptions {
        users: generate_ad_users(20, "example.test"),
        ..SambaOptions::default()
    });
    env.incremental_by("dirsync");

    let first = env.run(&["--json"]);
    first.expect(0);
    assert_eq!(
        pass_of(&first),
        ("full".into(), "first pass".into()),
        "{}",
        first.stderr
    );
    assert_eq!(env.emu.mailbox_count(), 20);
    let mark = stored_mark(&env);
    assert_eq!(mark["kind"], "dirsync", "{mark}");
    let cookie = unhex(mark["position"].as_str().unwrap());
    let info = mailcow_ldap_sync::edge::ldap_dirsync::cookie_info(&cookie).expect("a Samba DirSync cookie");
    // The cookie taken before the full pass read is at the DC's USN then, and names the DC.
    let server = mark["server"].as_str().unwrap();
    assert!(server.ends_with(&hex(&info.invocation_id)), "{server} vs {info:?}");
    assert!(info.usn <= dc_usn(&env.config), "{info:?}");
    eprintln!("Samba: DirSync cookie of {} bytes at USN {}", cookie.len(), info.usn);

    // Nothing changed: not one request to mailcow.
    let second = silent_incremental_pass(&env, "no user changed");
    assert!(
        second
            .stderr
            .contains("(incremental, 0 LDAP entries, 0 reads, 0 writes"),
        "{}",
        second.stderr
    );

    // An OU is added (the DC's USN moves, no user changed): still nothing sent.
    env.dc
        .apply_ldif("dn: OU=Elsewhere,DC=example,DC=test\nchangetype: add\nobjectClass: organizationalUnit\n\n")
        .unwrap();
    silent_incremental_pass(&env, "no user changed");

    // One user changed: read in full again, only its mailbox read and written.
    one_changed_user_costs_three_requests(&env);

    // Deleted: its tombstone's objectGUID says who left; the mailbox is disabled.
    env.dc.delete_user("user00005").unwrap();
    env.emu.reset_counts();
    let fifth = env.run(&["--json"]);
    fifth.expect(0);
    assert_eq!(pass_of(&fifth).0, "incremental", "{}", fifth.stderr);
    assert_eq!(fifth.json()["summary"]["disabled"], 1, "{}", fifth.stderr);
    assert_eq!(env.emu.mailbox("user00005@example.test").unwrap()["active"], json!(0));
    assert_eq!(env.emu.count_writes(), 1, "{:?}", env.emu.requests());

    // Faults: each stored cookie below must make a full pass with its reason, and lose
    // nothing: a change made meanwhile is applied and no mailbox is disabled.
    let good = stored_mark(&env);
    let good_cookie = unhex(good["position"].as_str().unwrap());
    let mut foreign = good_cookie.clone();
    foreign[52..68].copy_from_slice(&[0x5a; 16]);
    let faults: [(&str, Vec<u8>, &str); 3] = [
        (
            "garbage",
            b"not a cookie".to_vec(),
            "the stored DirSync cookie is not readable",
        ),
        (
            "another DC's",
            foreign,
            "the stored DirSync cookie is another domain controller's (its invocationId differs)",
        ),
        (
            "the DC cannot unmarshal",
            {
                // its header reads well (a vector of 32 bytes follows), the vector does not
                let mut cut = good_cookie[..100].to_vec();
                cut[24..28].copy_from_slice(&32u32.to_le_bytes());
                cut
            },
            "the domain controller refused the DirSync cookie (rc=12",
        ),
    ];
    for (n, (what, cookie, reason)) in faults.into_iter().enumerate() {
        let mut forged = good.clone();
        forged["position"] = json!(hex(&cookie));
        store_mark(&env, &forged);
        let name = format!("Fault {n}");
        env.dc.modify_attr("user00007", "displayName", &[&name]).unwrap();
        env.emu.reset_counts();
        let run = env.run(&["--json"]);
        run.expect(0);
        let (kind, why) = pass_of(&run);
        assert_eq!(kind, "full", "{what}: {}", run.stderr);
        assert!(why.contains(reason), "{what}: {why}\n{}", run.stderr);
        assert_eq!(
            env.emu.mailbox("user00007@example.test").unwrap()["name"],
            name,
            "{what}"
        );
        assert_eq!(run.json()["summary"]["disabled"], 0, "{what}: {}", run.stderr);
        assert_eq!(env.emu.mailbox_count(), 20, "{what}");
        assert_eq!(stored_mark(&env)["kind"], "dirsync", "{what}");
        eprintln!("Samba: a cookie {what}: {why}");
        // and the pass after it is incremental again, silent
        silent_incremental_pass(&env, what);
    }

    // --full agrees that nothing is left to do.
    env.emu.reset_counts();
    let full = env.run(&["--json", "--full"]);
    full.expect(0);
    assert_eq!(env.emu.count_writes(), 0, "{}", full.stderr);
}

/// A bind account without the replication right: DirSync is refused (rc=50), the pass says so
/// and goes on by uSNChanged, incrementally, until the next full pass tries DirSync again.
#[test]
fn a_refused_dirsync_falls_back_to_usn_changed() {
    if !samba_tests_enabled() {
        return;
    }
    let mut env = AdEnv::start(SambaOptions {
        users: generate_ad_users(5, "example.test"),
        ..SambaOptions::default()
    });
    env.incremental_by("dirsync");
    env.dc.set_password("user00001", "Us3r-Secret!x").unwrap();
    env.config["ldap"]["bind_dn"] = json!(env.dc.user_dn("user00001"));
    env.config["ldap"]["bind_pw"] = json!("Us3r-Secret!x");

    let first = env.run(&["--json"]);
    first.expect(0);
    assert!(
        first.stderr.contains("refused DirSync (rc=50") && first.stderr.contains("uSNChanged is used instead"),
        "{}",
        first.stderr
    );
    assert_eq!(stored_mark(&env)["kind"], "usn");
    assert_eq!(env.emu.mailbox_count(), 5);
    silent_incremental_pass(&env, "no user changed");
    env.dc.modify_attr("user00002", "displayName", &["Two"]).unwrap();
    let third = env.run(&["--json"]);
    third.expect(0);
    assert_eq!(pass_of(&third).0, "incremental", "{}", third.stderr);
    assert_eq!(env.emu.mailbox("user00002@example.test").unwrap()["name"], "Two");
    // --full tries DirSync again, and is refused again, with the same message.
    let full = env.run(&["--json", "--full"]);
    full.expect(0);
    assert!(full.stderr.contains("refused DirSync (rc=50"), "{}", full.stderr);
    assert_eq!(stored_mark(&env)["kind"], "usn");
}
