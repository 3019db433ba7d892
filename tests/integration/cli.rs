//! The command line and config loading, through the built binary. Most of these tests need
//! no server: they stop before contacting anything (or use `status`, which reads only the
//! state file); `check --json` and `-q` run against slapd and the emulator.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;
use sync_test_support::slapd::TestUser;

use crate::util::{Env, TempDir, run_bin, users};

/// Where packages install the config; the tests never write there.
const SYSTEM_CONFIG: &str = "/etc/mailcow-ldap-sync/config.json";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn entries(dir: &TempDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn short_help_and_version_exit_0_also_for_subcommands() {
    let dir = TempDir::new("cli");
    let run = run_bin(dir.path(), &["-V"], &[]);
    run.expect(0);
    assert_eq!(
        run.stdout.trim(),
        format!("mailcow-ldap-sync {}", env!("CARGO_PKG_VERSION"))
    );
    let long = run_bin(dir.path(), &["--help"], &[]);
    let short = run_bin(dir.path(), &["-h"], &[]);
    short.expect(0);
    assert_eq!(short.stdout, long.stdout, "-h is --help");
    assert!(short.stdout.contains("-V, --version") && short.stdout.contains("-h, --help"));
    for sub in ["check", "init", "status"] {
        for flag in ["-h", "--help"] {
            let run = run_bin(dir.path(), &[sub, flag], &[]);
            run.expect(0);
            assert!(
                run.stdout.starts_with(&format!("Usage: mailcow-ldap-sync {sub}")),
                "{sub} {flag}:\n{}",
                run.stdout
            );
        }
    }
    let run = run_bin(dir.path(), &["check", "-h"], &[]);
    assert!(run.stdout.contains("--json"), "{}", run.stdout);
    assert!(entries(&dir).is_empty(), "help writes nothing: {:?}", entries(&dir));
}

#[test]
fn version_and_help() {
    let dir = TempDir::new("cli");
    let run = run_bin(dir.path(), &["--version"], &[]);
    run.expect(0);
    assert_eq!(
        run.stdout.trim(),
        format!("mailcow-ldap-sync {}", env!("CARGO_PKG_VERSION"))
    );
    let run = run_bin(dir.path(), &["--help"], &[]);
    run.expect(0);
    for needle in [
        "--dry-run",
        "--override-filter",
        "--update-only-on-change-by-ldap",
        "--do-not-verify",
        "check",
        "init",
        "status",
        "Error codes",
        "crontab",
    ] {
        assert!(
            run.stdout.to_lowercase().contains(&needle.to_lowercase()),
            "--help lacks {needle}:\n{}",
            run.stdout
        );
    }
    assert!(
        !dir.path().join("config.json").exists(),
        "--help must not write a template"
    );
}

#[test]
fn unknown_flag_is_exit_2() {
    let dir = TempDir::new("cli");
    let run = run_bin(dir.path(), &["--no-such-flag"], &[]);
    run.expect(2);
    assert!(run.stderr.contains("--no-such-flag"), "{}", run.stderr);
}

#[test]
fn missing_default_config_writes_a_0600_template_and_exits_2() {
    let dir = TempDir::new("cli");
    let run = run_bin(dir.path(), &[], &[]);
    run.expect(2);
    let path = dir.path().join("config.json");
    assert!(
        run.stderr.contains("wrote a template") && run.stderr.contains("config.json"),
        "{}",
        run.stderr
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let template: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(template["sync"]["on_removed"], "disable");
    assert!(!dir.path().join("mailcow.sqlite3").exists(), "nothing else is written");
    // The template is a valid config: the next run gets past parsing and stops at the bind
    // DN without a password (exit 2 again); given the password, at the empty API key. Still
    // without contacting anything.
    let run = run_bin(dir.path(), &[], &[]);
    run.expect(2);
    assert!(run.stderr.contains("ldap.bind_pw: is empty"), "{}", run.stderr);
    let run = run_bin(dir.path(), &[], &[("LDAP_BIND_PW", "pw")]);
    run.expect(2);
    assert!(run.stderr.contains("mailcow_api_key: is empty"), "{}", run.stderr);
}

#[test]
fn explicit_missing_config_is_an_error_not_a_template() {
    let dir = TempDir::new("cli");
    let run = run_bin(dir.path(), &["-c", "nope.json"], &[]);
    run.expect(2);
    assert!(
        run.stderr.contains("file not found") && run.stderr.contains("init"),
        "{}",
        run.stderr
    );
    assert!(!dir.path().join("nope.json").exists());
}

#[test]
fn init_writes_once_and_never_overwrites() {
    let dir = TempDir::new("cli");
    let path = dir.path().join("sub.json");
    run_bin(dir.path(), &["init", "-c", "sub.json"], &[]).expect(0);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::write(&path, "{\"mine\": true}").unwrap();
    let run = run_bin(dir.path(), &["init", "-c", "sub.json"], &[]);
    run.expect(2);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"mine\": true}");
}

#[test]
fn config_path_from_environment() {
    let dir = TempDir::new("cli");
    let run = run_bin(dir.path(), &["init"], &[("MAILCOW_LDAP_SYNC_CONFIG", "from-env.json")]);
    run.expect(0);
    assert!(dir.path().join("from-env.json").exists());
}

fn write(dir: &TempDir, text: &str, mode: u32) -> String {
    let path = dir.path().join("c.json");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn config_errors_name_the_key_and_exit_2() {
    let dir = TempDir::new("cli");
    let cases = [
        (
            r#"{"ldap":{"uri":"ldap://127.0.0.1:9","user_maping":{}},"mailcow_host":"x"}"#,
            "ldap.user_maping: unknown key (did you mean `user_mapping`?)",
        ),
        ("{\n \"ldap\": {\n  \"uri\": 5,\n}", "invalid JSON at line 4, column 1"),
        (
            r#"{"ldap":{"uri":5,"user_mapping":{"mail":"mail"}},"mailcow_host":"x"}"#,
            "ldap.uri: expected a string, found a number",
        ),
        (
            r#"{"ldap":{"uri":"ldap://h","user_mapping":{"mail":"mail"}},"mailcow_host":"x","sync":{"quota_unit":"TB"}}"#,
            "sync.quota_unit: `TB` is not one of",
        ),
        (
            r#"{"ldap":{"uri":"http://h","user_mapping":{"mail":"mail"}},"mailcow_host":"x"}"#,
            "ldap.uri: `http://h` must start with ldap:// or ldaps://",
        ),
        (
            "{\"ldap\":{\"uri\":\"ldap://h\",\n \"uri\":\"ldap://other\",\"user_mapping\":{\"mail\":\"mail\"}},\"mailcow_host\":\"x\"}",
            "ldap.uri: is given twice (the second at line 2",
        ),
        (
            r#"{"ldap":{"uri":"ldap://h","bind_dn":"cn=reader","user_mapping":{"mail":"mail"}},"mailcow_host":"x"}"#,
            "ldap.bind_pw: is empty while ldap.bind_dn is set: an empty password makes an unauthenticated bind",
        ),
    ];
    for (text, expected) in cases {
        let path = write(&dir, text, 0o600);
        let run = run_bin(dir.path(), &["-c", &path], &[]);
        run.expect(2);
        assert!(
            run.stderr.contains(expected),
            "expected {expected:?} in:\n{}",
            run.stderr
        );
    }
}

#[test]
fn original_tools_config_loads_and_loose_mode_warns() {
    let dir = TempDir::new("cli");
    let original = include_str!("../data/config.generated-by-original.json");
    let path = write(&dir, original, 0o644);
    // `status` reads only the config and the (absent) state file: it contacts nothing.
    let run = run_bin(dir.path(), &["status", "-c", &path], &[]);
    run.expect(0);
    assert!(run.stdout.contains("no pass has run"), "{}", run.stdout);
    assert!(
        run.stderr.contains("readable by group or others") && run.stderr.contains("chmod 600"),
        "{}",
        run.stderr
    );
    let path = write(&dir, original, 0o600);
    let run = run_bin(dir.path(), &["status", "-c", &path], &[]);
    assert!(!run.stderr.contains("readable by group"), "{}", run.stderr);
}

#[test]
fn insecure_settings_warn_also_under_quiet() {
    let dir = TempDir::new("cli");
    let config = r#"{
        "ldap": {"uri": "ldaps://ldap.example.org", "allow_self_signed": true, "ca_file": "ca.pem",
                 "bind_dn": "cn=reader", "bind_pw": "hunter2-bind", "user_mapping": {"mail": "mail"}},
        "mailcow_host": "http://mail.example.org:8080", "mailcow_api_key": "KEY-hunter2-api"
    }"#;
    let path = write(&dir, config, 0o644);
    // `status` reads only the config and the (absent) state file: it contacts nothing.
    let run = run_bin(dir.path(), &["-q", "status", "-c", &path], &[]);
    run.expect(0);
    let warnings: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("warning: ")).collect();
    for expected in [
        "warning: mailcow_host http://mail.example.org:8080 is plain http://: the API key travels in clear text",
        "warning: ldap.allow_self_signed is true: the LDAP server's certificate is not checked",
        "warning: ldap.ca_file is set but ignored because ldap.allow_self_signed is true",
        "is readable by group or others (mode 0644)",
    ] {
        assert!(
            warnings.iter().any(|w| w.contains(expected)),
            "expected {expected:?} under -q in:\n{}",
            run.stderr
        );
    }
    assert_eq!(warnings.len(), 4, "{}", run.stderr);
    assert!(
        !run.stderr.contains("hunter2"),
        "no secret in a warning:\n{}",
        run.stderr
    );
    // A plain ldap:// URI ignores the CA file for another reason.
    let path = write(
        &dir,
        &config
            .replace("ldaps://", "ldap://")
            .replace(r#""allow_self_signed": true,"#, ""),
        0o600,
    );
    let run = run_bin(dir.path(), &["-q", "status", "-c", &path], &[]);
    run.expect(0);
    assert!(
        run.stderr
            .contains("warning: ldap.ca_file is set but ignored: ldap.uri is plain ldap:// without ldap.starttls"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("readable by group"), "{}", run.stderr);
}

#[test]
fn init_creates_missing_directories_0700_and_the_file_0600() {
    let dir = TempDir::new("cli");
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::set_permissions(dir.path().join("etc"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("etc/mailcow-ldap-sync/deeper/config.json");
    let run = run_bin(dir.path(), &["init", "-c", path.to_str().unwrap()], &[]);
    run.expect(0);
    assert!(
        run.stderr.contains("etc/mailcow-ldap-sync (mode 0700)"),
        "says what it created: {}",
        run.stderr
    );
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("etc/mailcow-ldap-sync")), 0o700);
    assert_eq!(mode(&dir.path().join("etc/mailcow-ldap-sync/deeper")), 0o700);
    assert_eq!(
        mode(&dir.path().join("etc")),
        0o755,
        "an existing directory is left as it is"
    );
    let template: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(template["sync"]["on_removed"], "disable");
    std::fs::write(&path, "{}").unwrap();
    let run = run_bin(dir.path(), &["init", "-c", path.to_str().unwrap()], &[]);
    run.expect(2);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}", "never overwritten");
}

/// A config `status` can read without a server, whose state file names where it came from.
fn config_naming(dir: &Path, name: &str) -> std::path::PathBuf {
    let mut config: serde_json::Value =
        serde_json::from_str(include_str!("../data/config.generated-by-original.json")).unwrap();
    config["state_file"] = json!(format!("{name}.sqlite3"));
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, config.to_string()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn config_path_is_flag_then_environment_then_working_directory() {
    let dir = TempDir::new("cli");
    let flag = config_naming(dir.path(), "flag");
    let env = config_naming(dir.path(), "env");
    std::fs::rename(config_naming(dir.path(), "cwd"), dir.path().join("config.json")).unwrap();
    let var = [("MAILCOW_LDAP_SYNC_CONFIG", env.to_str().unwrap())];
    let state_of = |args: &[&str], env: &[(&str, &str)]| {
        let run = run_bin(dir.path(), args, env);
        run.expect(0);
        run.stdout
    };
    assert!(
        state_of(&["status"], &[]).contains("cwd.sqlite3"),
        "./config.json when it exists"
    );
    assert!(
        state_of(&["status"], &var).contains("env.sqlite3"),
        "the variable over ./config.json"
    );
    let flag_args = ["status", "-c", flag.to_str().unwrap()];
    assert!(
        state_of(&flag_args, &var).contains("flag.sqlite3"),
        "--config over the variable"
    );
    // A pass reads ./config.json too (and stops at its empty API key, contacting nothing).
    let pass = run_bin(dir.path(), &["--dry-run"], &[]);
    pass.expect(2);
    assert!(
        pass.stderr.contains("config config.json: mailcow_api_key: is empty"),
        "{}",
        pass.stderr
    );
}

#[test]
fn without_a_config_check_and_status_name_the_paths_tried_write_nothing_and_exit_2() {
    if Path::new(SYSTEM_CONFIG).exists() {
        eprintln!("skipped: {SYSTEM_CONFIG} exists on this machine");
        return;
    }
    let dir = TempDir::new("cli");
    for args in [&["status"][..], &["check"], &["check", "--json"], &["status", "--json"]] {
        let run = run_bin(dir.path(), args, &[]);
        run.expect(2);
        let local = dir.path().join("config.json");
        assert!(
            run.stderr.contains("no config found")
                && run.stderr.contains(local.to_str().unwrap())
                && run.stderr.contains(SYSTEM_CONFIG),
            "{args:?} names both paths: {}",
            run.stderr
        );
        assert!(entries(&dir).is_empty(), "{args:?} wrote {:?}", entries(&dir));
    }
    // An empty variable is no variable.
    let run = run_bin(dir.path(), &["status"], &[("MAILCOW_LDAP_SYNC_CONFIG", "")]);
    run.expect(2);
    assert!(run.stderr.contains(SYSTEM_CONFIG), "{}", run.stderr);
    // A named config that is missing is named, and no template is written either.
    let run = run_bin(
        dir.path(),
        &["check"],
        &[("MAILCOW_LDAP_SYNC_CONFIG", "elsewhere.json")],
    );
    run.expect(2);
    assert!(run.stderr.contains("elsewhere.json: file not found"), "{}", run.stderr);
    assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
    // Only a pass writes the template, at ./config.json, and says so on stderr.
    let run = run_bin(dir.path(), &["-q"], &[]);
    run.expect(2);
    assert!(
        run.stderr.contains("wrote a template to config.json (mode 0600)"),
        "{}",
        run.stderr
    );
    assert_eq!(entries(&dir), ["config.json"]);
    assert_eq!(mode(&dir.path().join("config.json")), 0o600);
}

#[test]
fn check_json_lists_each_check_and_exits_as_check_does() {
    let env = Env::start(vec![
        TestUser::new("user00001", "example.org"),
        TestUser::new("stranger", "missing.test"),
    ]);
    let text = env.run(&["check"]);
    text.expect(1);
    let run = env.run(&["check", "--json"]);
    run.expect(1);
    let doc = run.json();
    assert_eq!(doc["ok"], json!(false));
    assert_eq!(doc["exit_code"], json!(1));
    let checks = doc["checks"].as_array().unwrap();
    for check in checks {
        assert!(
            check["name"].is_string() && check["ok"].is_boolean() && check["message"].is_string(),
            "{check}"
        );
    }
    let by_name = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name} in {doc}"))
    };
    assert_eq!(by_name("ldap")["ok"], json!(true));
    assert!(by_name("ldap")["message"].as_str().unwrap().contains("2 usable users"));
    assert_eq!(by_name("mailcow_write")["ok"], json!(true));
    let domains = by_name("mailcow_domains");
    assert_eq!(domains["ok"], json!(false));
    assert!(domains["message"].as_str().unwrap().contains("missing.test (1 users)"));
    // The same checks as the text, one line each.
    let lines = text
        .stdout
        .lines()
        .filter(|l| l.starts_with("[ ok ]") || l.starts_with("[FAIL]"));
    assert_eq!(lines.count(), checks.len(), "{}", text.stdout);
    assert!(doc["warnings"][0].as_str().unwrap().contains("plain http://"), "{doc}");
    assert!(!run.stderr.contains("error:"), "{}", run.stderr);
    assert_eq!(env.emu.mailbox_count(), 0, "check writes nothing");

    env.emu.add_domain(crate::util::roomy_domain("missing.test"));
    let run = env.run(&["check", "--json"]);
    run.expect(0);
    assert_eq!(run.json()["ok"], json!(true));
}

#[test]
fn quiet_keeps_what_needs_an_admin_and_is_silent_on_an_unchanged_pass() {
    let env = Env::start(users(2));
    // The emulator speaks plain http://: that warning is the one line -q keeps on success.
    let http = format!(
        "warning: mailcow_host {} is plain http://: the API key travels in clear text; use https://\n",
        env.emu.url()
    );
    env.run(&["-q"]).expect(0);
    let unchanged = env.run(&["-q"]);
    unchanged.expect(0);
    assert_eq!(
        (unchanged.stdout.as_str(), unchanged.stderr.as_str()),
        ("", http.as_str())
    );
    // A new user without a usable hash is skipped, and a mailbox in a domain mailcow lacks is
    // not created: both need an admin, both are said under -q.
    let mut cleartext = TestUser::new("cleartext", "example.org");
    cleartext.password = Some("hunter2-cleartext".into());
    env.slapd
        .add_users(&[cleartext, TestUser::new("nodomain", "missing.test")])
        .unwrap();
    let run = env.run(&["-q"]);
    run.expect(3);
    assert!(
        run.stderr.contains("warning: skipped cleartext@example.org") && run.stderr.contains("no usable password hash"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("failed nodomain@missing.test"), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
}

/// `-q` by the warning's severity, one kind each (directory, removals, aliases), over https
/// with the emulator's CA so that a clean pass has nothing at all to say.
#[test]
fn quiet_shows_each_kind_of_admin_warning_and_hides_the_notes() {
    use sync_test_support::mailcow::{EmulatorOptions, MailboxSpec};
    use sync_test_support::slapd::SlapdOptions;

    let mut list = users(3);
    list[0].aliases = vec!["taken@example.org".into()];
    let mut env = Env::with(
        SlapdOptions {
            users: list,
            ..SlapdOptions::default()
        },
        EmulatorOptions {
            tls: true,
            ..EmulatorOptions::default()
        },
    );
    env.set("/mailcow_ca_file", json!(env.emu.ca_file().unwrap().to_str().unwrap()));
    env.set("/ldap/user_mapping/aliases", json!("mailAlternateAddress"));
    let silent = |run: &crate::util::Run| {
        run.expect(0);
        assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""), "silent");
    };
    // A clean first pass and a clean unchanged pass: not a byte on stdout or stderr.
    silent(&env.run(&["-q"]));
    assert_eq!(env.emu.mailbox_count(), 3);
    silent(&env.run(&["-q"]));

    // A note (sync.adopt = "by_address", as configured): said without -q, silent with it.
    env.emu
        .add_mailbox(MailboxSpec {
            local_part: "byhand".into(),
            name: "By Hand".into(),
            ..MailboxSpec::default()
        })
        .unwrap();
    env.slapd.add_users(&[TestUser::new("byhand", "example.org")]).unwrap();
    env.set("/sync/adopt", json!("by_address"));
    let dry = env.run(&["--dry-run"]);
    dry.expect(0);
    assert!(
        dry.stderr.contains("warning: byhand@example.org: adopting"),
        "{}",
        dry.stderr
    );
    silent(&env.run(&["-q"]));
    assert_eq!(
        env.mailbox("byhand@example.org")["tags"],
        json!(["ldap-sync"]),
        "adopted"
    );

    // The directory: a quota LDAP holds that cannot be used; the field is not synced.
    env.slapd.modify_attr("user00002", "MailQuota", &["lots"]).unwrap();
    let run = env.run(&["-q"]);
    run.expect(0);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("warning: user00002@example.org: quota `MailQuota`")
            && run.stderr.contains("quota left unchanged"),
        "{}",
        run.stderr
    );
    env.slapd.modify_attr("user00002", "MailQuota", &["1024"]).unwrap();
    silent(&env.run(&["-q"]));

    // The removals: a user left, but the mailbox at the address was made again by hand
    // (untagged): left in mailcow, unmanaged, for the admin to clear.
    env.slapd.delete_user("user00003").unwrap();
    env.emu.delete_mailbox("user00003@example.org");
    env.emu
        .add_mailbox(MailboxSpec {
            local_part: "user00003".into(),
            name: "Someone Else".into(),
            ..MailboxSpec::default()
        })
        .unwrap();
    let run = env.run(&["-q"]);
    run.expect(0);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr
            .contains("warning: user00003@example.org: its LDAP user is gone")
            && run.stderr.contains("no longer carries the tag"),
        "{}",
        run.stderr
    );
    silent(&env.run(&["-q"]));

    // The aliases: LDAP wants an address an alias the tool did not make already holds.
    env.emu.add_alias("manual@example.org", "user00002@example.org", true);
    env.slapd
        .modify_attr(
            "user00001",
            "mailAlternateAddress",
            &["taken@example.org", "manual@example.org"],
        )
        .unwrap();
    let run = env.run(&["-q"]);
    run.expect(0);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("warning: alias manual@example.org (")
            && run
                .stderr
                .contains("already exists in mailcow and was not made by this tool"),
        "{}",
        run.stderr
    );
    // Said on every pass until someone acts: under cron, it is mailed each time.
    let again = env.run(&["-q"]);
    assert!(again.stderr.contains("already exists in mailcow"), "{}", again.stderr);
}
