//! Test environment: a real slapd, the mailcow emulator, a temp directory with a config
//! file, and a runner for the built binary with a clean environment.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use sync_test_support::mailcow::{DomainSpec, Emulator, EmulatorOptions, RW_KEY};
use sync_test_support::slapd::{Slapd, SlapdOptions, TestUser};

pub const BIN: &str = env!("CARGO_BIN_EXE_mailcow-ldap-sync");

/// A temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "mls-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
    /// Assert the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Run the binary in `cwd` with only the given environment variables set.
pub fn run_bin(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the binary");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// slapd + emulator + a config in a temp directory.
pub struct Env {
    pub slapd: Slapd,
    pub emu: Emulator,
    pub dir: TempDir,
    pub config: Value,
}

/// A roomy example.org (the API's default allows only 10 mailboxes).
pub fn roomy_domain(name: &str) -> DomainSpec {
    DomainSpec {
        name: name.into(),
        mailboxes: 100_000,
        aliases: 100_000,
        defquota_mib: 3072,
        maxquota_mib: 1 << 20,
        quota_mib: 1 << 30,
        ..DomainSpec::default()
    }
}

impl Env {
    /// `users` in slapd (size limit 20), example.org in mailcow.
    pub fn start(users: Vec<TestUser>) -> Env {
        Env::with(
            SlapdOptions {
                users,
                ..SlapdOptions::default()
            },
            EmulatorOptions::default(),
        )
    }

    pub fn with(slapd: SlapdOptions, emu: EmulatorOptions) -> Env {
        let slapd = Slapd::start(slapd).expect("start slapd");
        let emu = Emulator::start(emu).expect("start the emulator");
        emu.add_domain(roomy_domain("example.org"));
        let dir = TempDir::new("env");
        let config = json!({
            "ldap": {
                "uri": slapd.ldap_url(),
                "bind_dn": slapd.reader_dn(),
                "bind_pw": slapd.reader_pw(),
                "user_search_base": slapd.base_dn(),
                "user_search_filter": "(objectClass=inetOrgPerson)",
                "page_size": 7,
                "timeout_secs": 10,
                "user_mapping": {
                    "mail": "mail", "firstname": "givenName", "lastname": "sn",
                    "password": "userPassword", "quota": "MailQuota", "active": "mailActive",
                    "tls_enforce_in": "mailTLSEnforceIn", "tls_enforce_out": "mailTLSEnforceOut",
                    "uid": "entryUUID"
                }
            },
            "mailcow_host": emu.url(),
            "mailcow_api_key": RW_KEY,
            "mailcow_timeout_secs": 10,
            "state_file": "state.sqlite3",
            // One request at a time: fault tests count requests to hit a known one.
            "sync": { "max_removals": 100, "concurrency": 1 }
        });
        Env {
            slapd,
            emu,
            dir,
            config,
        }
    }

    /// Set a config value by JSON pointer (`/sync/on_removed`), creating objects on the way.
    pub fn set(&mut self, pointer: &str, value: Value) {
        set_pointer(&mut self.config, pointer, value);
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("state.sqlite3")
    }

    pub fn write_config(&self) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.config_path();
        std::fs::write(&path, serde_json::to_string_pretty(&self.config).unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Run the binary with this config (written first) and extra arguments.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.write_config();
        let config = self.config_path();
        let mut all = vec!["-c", config.to_str().unwrap()];
        all.extend_from_slice(args);
        run_bin(self.dir.path(), &all, env)
    }

    /// A pass that must succeed.
    #[track_caller]
    pub fn pass(&self) -> Run {
        let run = self.run(&[]);
        run.expect(0);
        run
    }

    pub fn mailbox(&self, address: &str) -> Value {
        self.emu
            .mailbox(address)
            .unwrap_or_else(|| panic!("no mailbox {address} in mailcow"))
    }
}

/// Set a value below `node` by JSON pointer (`/sync/on_removed`), creating objects on the way.
pub fn set_pointer(mut node: &mut Value, pointer: &str, value: Value) {
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for part in &parts[..parts.len() - 1] {
        node = node
            .as_object_mut()
            .unwrap()
            .entry(part.to_string())
            .or_insert_with(|| json!({}));
    }
    node.as_object_mut()
        .unwrap()
        .insert(parts[parts.len() - 1].to_string(), value);
}

/// The `changes` of a `--json` report with this action.
pub fn report_changes<'a>(report: &'a Value, action: &str) -> Vec<&'a Value> {
    report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == action)
        .collect()
}

/// The `ou=groups` entry below `base`, which the groups of [`group_ldif`] live in.
pub fn groups_ou_ldif(base: &str) -> String {
    format!("dn: ou=groups,{base}\nobjectClass: organizationalUnit\nou: groups\n\n")
}

/// A groupOfNames `cn={cn},ou=groups,{base}` (extensibleObject, so that it may have a
/// `mail`) with these member DNs.
pub fn group_ldif(base: &str, cn: &str, mail: Option<&str>, members: &[String]) -> String {
    let mut ldif =
        format!("dn: cn={cn},ou=groups,{base}\nobjectClass: groupOfNames\nobjectClass: extensibleObject\ncn: {cn}\n");
    if let Some(mail) = mail {
        ldif.push_str(&format!("mail: {mail}\n"));
    }
    for m in members {
        ldif.push_str(&format!("member: {m}\n"));
    }
    ldif.push('\n');
    ldif
}

/// The (uid, address) rows of a state file, read through the library's own store.
pub fn managed_rows(path: &Path) -> Vec<(String, String)> {
    let Some(store) = mailcow_ldap_sync::edge::state_db::StateDb::open_read_only(path).expect("open state") else {
        return Vec::new();
    };
    let mut rows: Vec<(String, String)> = store
        .load()
        .expect("load state")
        .values()
        .map(|r| (r.uid, r.address))
        .collect();
    rows.sort_by(|a, b| a.1.cmp(&b.1));
    rows
}

/// `n` users `user00001…` at example.org.
pub fn users(n: usize) -> Vec<TestUser> {
    sync_test_support::slapd::generate_users(n, "example.org")
}
