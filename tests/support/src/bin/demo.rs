//! A real demo on one machine: a throwaway slapd with sample users, the mailcow emulator,
//! and three passes of the built tool (import, unchanged, one change), with what each pass
//! printed and how many requests it made. Run by `scripts/demo.sh`.
//!
//! Usage: demo <path to the mailcow-ldap-sync binary>
//!        demo --serve DIR
//!
//! `--serve DIR` runs no pass: it starts a slapd (LDAPS) with 25 plain users of example.org
//! and the emulator (HTTPS, its own CA; example.org only) and holds them for trying the tool by hand, as the README's
//! first-install steps do (`cross/walkthrough.sh`). The settings a config needs go to
//! `DIR/servers.json` (mode 0600: it holds the bind password and the API key); stdout names
//! that file, then `DIR/hold`: the servers stop when that file is removed.

use std::path::Path;
use std::process::{Command, ExitCode};

use sync_test_support::mailcow::{DomainSpec, Emulator, EmulatorOptions, MailboxSpec, RW_KEY};
use sync_test_support::slapd::{Slapd, SlapdOptions, TestUser, generate_users};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, dir] if flag == "--serve" => serve(Path::new(dir)),
        [tool] if !tool.starts_with('-') => run(Path::new(tool)),
        _ => {
            eprintln!("usage: demo <path to mailcow-ldap-sync> | demo --serve DIR");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sample_users() -> Vec<TestUser> {
    let mut users = generate_users(24, "example.org");
    users[0].given_name = "Alice".into();
    users[0].sn = "Liddell".into();
    users[0].quota_mib = Some("2048".into());
    users[1].active = Some("FALSE".into());
    users[2].tls_in = Some("TRUE".into());
    // A FreeIPA-style hash mailcow would hash again: the tool warns and skips the password.
    users[3].password = Some("{PBKDF2-SHA512}10000$c2FsdA==$aGFzaA==".into());
    let mut stranger = TestUser::new("visitor", "not-in-mailcow.test");
    stranger.ou = Some("guests".into());
    users.push(stranger);
    users
}

fn run(tool: &Path) -> Result<(), String> {
    let started = std::time::Instant::now();
    let slapd = Slapd::start(SlapdOptions {
        users: sample_users(),
        size_limit: 10,
        tls: true,
        ..SlapdOptions::default()
    })
    .map_err(|e| format!("slapd: {e}"))?;
    let emu = Emulator::start(EmulatorOptions::default()).map_err(|e| format!("emulator: {e}"))?;
    emu.add_domain(DomainSpec {
        name: "example.org".into(),
        mailboxes: 1000,
        quota_mib: 1 << 20,
        ..DomainSpec::default()
    });
    emu.add_mailbox(MailboxSpec {
        local_part: "postmaster".into(),
        name: "Postmaster (made by hand, never touched)".into(),
        ..MailboxSpec::default()
    })
    .map_err(|e| format!("seed mailbox: {e}"))?;
    println!(
        "slapd on {} (25 users, server size limit 10, started in {} ms) and the mailcow emulator on {}",
        slapd.ldaps_url(),
        started.elapsed().as_millis(),
        emu.url()
    );

    let dir = std::env::temp_dir().join(format!("mailcow-ldap-sync-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = serde_json::json!({
        "ldap": {
            "uri": slapd.ldaps_url(),
            "ca_file": slapd.ca_file(),
            "bind_dn": slapd.reader_dn(),
            "bind_pw": slapd.reader_pw(),
            "user_search_base": slapd.base_dn(),
            "page_size": 8,
            "user_mapping": {
                "mail": "mail", "firstname": "givenName", "lastname": "sn",
                "password": "userPassword", "quota": "MailQuota", "active": "mailActive",
                "tls_enforce_in": "mailTLSEnforceIn", "uid": "entryUUID"
            }
        },
        "mailcow_host": emu.url(),
        "mailcow_api_key": RW_KEY,
        "state_file": "state.sqlite3"
    });
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).map_err(|e| e.to_string())?;
    set_private(&config_path);
    println!("config: {}\n", config_path.display());

    let pass = |title: &str, args: &[&str]| -> Result<(), String> {
        println!("=== {title}: mailcow-ldap-sync {}", args.join(" "));
        emu.reset_counts();
        let out = Command::new(tool)
            .arg("-c")
            .arg(&config_path)
            .args(args)
            .output()
            .map_err(|e| format!("run {}: {e}", tool.display()))?;
        print!("{}", String::from_utf8_lossy(&out.stderr));
        print!("{}", String::from_utf8_lossy(&out.stdout));
        println!(
            "--> exit code {}; requests to mailcow: {} ({} writes)\n",
            out.status.code().unwrap_or(-1),
            emu.total_requests(),
            emu.count_writes()
        );
        Ok(())
    };
    pass("check the setup (writes nothing)", &["check"])?;
    pass("first pass: import", &["-v"])?;
    pass("second pass: nothing changed", &[])?;
    slapd
        .modify_attr("user00005", "MailQuota", &["4096"])
        .and_then(|()| slapd.delete_user("user00006"))
        .map_err(|e| format!("change LDAP: {e}"))?;
    println!("(LDAP: user00005's quota set to 4096 MiB, user00006 deleted)\n");
    pass("third pass: one change, one removal, with the JSON report", &["--json"])?;
    pass("status", &["status"])?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// slapd and the emulator for a walkthrough by hand, until `DIR/hold` is removed.
fn serve(dir: &Path) -> Result<(), String> {
    // A clean directory: every user syncs, so a routine pass under -q has nothing to say.
    let mut users = generate_users(25, "example.org");
    users[0].given_name = "Alice".into();
    users[0].sn = "Liddell".into();
    let slapd = Slapd::start(SlapdOptions {
        users,
        size_limit: 10,
        tls: true,
        ..SlapdOptions::default()
    })
    .map_err(|e| format!("slapd: {e}"))?;
    let emu = Emulator::start(EmulatorOptions {
        tls: true,
        ..EmulatorOptions::default()
    })
    .map_err(|e| format!("emulator: {e}"))?;
    emu.add_domain(DomainSpec {
        name: "example.org".into(),
        mailboxes: 1000,
        quota_mib: 1 << 20,
        ..DomainSpec::default()
    });
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let servers = serde_json::json!({
        "ldap_uri": slapd.ldaps_url(),
        "ldap_ca_file": slapd.ca_file(),
        "bind_dn": slapd.reader_dn(),
        "bind_pw": slapd.reader_pw(),
        "user_search_base": slapd.base_dn(),
        "mailcow_host": emu.url(),
        "mailcow_ca_file": emu.ca_file(),
        "mailcow_api_key": RW_KEY,
    });
    let path = dir.join("servers.json");
    std::fs::write(&path, "").map_err(|e| e.to_string())?;
    set_private(&path);
    std::fs::write(&path, serde_json::to_string_pretty(&servers).unwrap()).map_err(|e| e.to_string())?;
    let hold = dir.join("hold");
    std::fs::write(&hold, "remove this file to stop the servers\n").map_err(|e| e.to_string())?;
    println!("servers: {}", path.display());
    println!("holding until {} is removed", hold.display());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    while hold.exists() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(emu);
    drop(slapd);
    Ok(())
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}
