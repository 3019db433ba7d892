//! The command line and config loading, through the built binary. None of these tests
//! needs a server: they stop before contacting anything (or use `status`, which reads only
//! the state file).

use std::os::unix::fs::PermissionsExt;

use crate::util::{TempDir, run_bin};

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
