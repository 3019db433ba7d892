//! A real, throwaway Samba Active Directory domain controller for integration tests.
//!
//! Most directories the sync meets are Active Directory, and AD differs from OpenLDAP in ways a
//! mock would only guess at: binary `objectGUID`s, `userAccountControl` flags, `proxyAddresses`,
//! nested groups resolved by the in-chain matching rule, referrals in subtree searches from the
//! domain root. [`SambaDc::start`] gives each test a real DC (Debian's `samba` packages) for
//! the domain `example.test` (base `DC=example,DC=test`), listening on its own loopback address
//! `127.0.0.X`, because AD's ports 389/636 are fixed. Only Samba's LDAP service runs (ports
//! 389, 636, 3268, 3269); nothing listens beyond that address.
//!
//! A start copies a provisioned template (`samba/template.rs`: provisioned once, then cached),
//! writes `smb.conf` and, with TLS, a CA plus a certificate for the instance's IP. It
//! bulk-loads many users and groups into the database with one offline `ldbmodify`, starts
//! `samba -F -M single`, and waits until the process owns its listening socket and answers an
//! authenticated search; a few users and groups go in with one `ldapadd` after that. [`Drop`]
//! stops Samba (SIGTERM, wait, SIGKILL after 10 s) and removes the temp directory. Several DCs
//! can run at once, in one process or several; the tests run in parallel and no mutex
//! serialises them: one DC needs ≈ 60 MB and little CPU once started.
//!
//! The test-facing helpers shell out to the OpenLDAP client tools (`ldapadd`/`ldapmodify`) for
//! writes, as an administrator would, and use ldap3 for lookups. Needs the Debian packages that
//! `scripts/deps-samba.sh` installs, and root (or `CAP_NET_BIND_SERVICE`) for the fixed ports.
//!
//! Knobs: `SKIP_SAMBA_TESTS=1` makes [`samba_tests_enabled`] skip instead of fail when Samba is
//! missing; `SYNC_TEST_SAMBA_KEEP=1` keeps instance directories; `SYNC_TEST_SAMBA_DEBUG=<n>`
//! passes `-d <n>` to samba (its log is `DIR/samba.log`); `SYNC_TEST_SAMBA_FRESH=1` provisions
//! a new template.

mod net;
mod objects;
mod template;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ldap3::{LdapConn, LdapConnSettings, Scope, SearchEntry, ldap_escape};

use crate::certs::{self, CertNames};
use crate::process::{self, AttemptError, Probe, Server, ServerKind};

pub use objects::{AdGroup, AdUser, UAC_DISABLED, UAC_NORMAL, generate_ad_users, guid_to_string};

/// The DNS domain and Kerberos realm (lower case).
pub const REALM: &str = "example.test";
/// The NetBIOS domain name.
pub const NETBIOS_DOMAIN: &str = "EXAMPLE";
/// The domain's naming context.
pub const BASE_DN: &str = "DC=example,DC=test";
/// AD's default container for users and groups.
pub const USERS_DN: &str = "CN=Users,DC=example,DC=test";
/// The domain administrator's DN.
pub const ADMIN_DN: &str = "CN=Administrator,CN=Users,DC=example,DC=test";
/// The administrator's user principal name; AD accepts it as the bind name, like the DN.
pub const ADMIN_BIND: &str = "Administrator@example.test";
/// The administrator's password (it meets AD's complexity rules and never expires).
pub const ADMIN_PW: &str = "Adm1n-Secret!";

/// How Samba runs: one start attempt may wait 60 s for it to answer. It answers in 0.3–1 s
/// when the machine is idle; a 2-core CI box running other tests is slower. Samba exiting
/// (address taken, bad config) is noticed at once, not after this. A stop sends SIGTERM and
/// waits 10 s before it sends SIGKILL. stdout and stderr both go to the log.
static SAMBA: ServerKind = ServerKind {
    name: "samba",
    keep_var: "SYNC_TEST_SAMBA_KEEP",
    ready_timeout: Duration::from_secs(60),
    poll: Duration::from_millis(20),
    taken_markers: &["ADDRESS_ALREADY_ASSOCIATED", "failed to bind", "Address already in use"],
    stop_grace: Some(Duration::from_secs(10)),
    stdout_to_log: true,
};
/// From this many users plus groups on, [`SambaDc::start`] loads them into the database before
/// Samba starts (one `ldbmodify`) instead of over LDAP after it started (one `ldapadd`).
const OFFLINE_LOAD_MIN: usize = 50;
/// Start attempts on fresh addresses when another process took ours in the meantime.
const ADDRESS_ATTEMPTS: usize = 8;
/// Tools a DC needs, and the Debian package of each.
const TOOLS: [(&str, &str); 7] = [
    ("samba", "samba"),
    ("samba-tool", "samba-common-bin"),
    ("ldbmodify", "ldb-tools"),
    ("ldbsearch", "ldb-tools"),
    ("ldapmodify", "ldap-utils"),
    ("ldapadd", "ldap-utils"),
    ("openssl", "openssl"),
];

/// How to build a DC. `SambaOptions::default()` means no extra users or groups, TLS on.
#[derive(Clone, Debug)]
pub struct SambaOptions {
    /// Created at start, with their OUs ([`AdUser::ou`]). From 50 users plus groups on they are
    /// loaded into the database with one `ldbmodify` before Samba starts (1,200 users take
    /// ≈ 2.8 s, half the time `ldapadd` needs); fewer go in with one `ldapadd` after it started.
    pub users: Vec<AdUser>,
    /// Created after the users, then filled with their members (loaded like the users).
    pub groups: Vec<AdGroup>,
    /// Generate a CA and a certificate for the instance's address and serve `ldaps://` (636)
    /// and StartTLS. Without it Samba runs with `tls enabled = no`.
    pub tls: bool,
}

impl Default for SambaOptions {
    fn default() -> Self {
        SambaOptions {
            users: Vec::new(),
            groups: Vec::new(),
            tls: true,
        }
    }
}

/// Where the time of [`SambaDc::start`] went.
#[derive(Clone, Debug, Default)]
pub struct SambaTimings {
    /// Provisioning the template, if this start had to (else `None`: a cached one was used).
    pub provision: Option<Duration>,
    /// Copying the template's databases.
    pub copy: Duration,
    /// Making the CA and the server certificate.
    pub certs: Duration,
    /// From spawning `samba` to its first answer (the successful attempt).
    pub ready: Duration,
    /// Loading [`SambaOptions::users`] and [`SambaOptions::groups`] (offline before Samba
    /// starts, or over LDAP after, see [`SambaOptions::users`]).
    pub load: Duration,
    /// All of [`SambaDc::start`].
    pub total: Duration,
}

/// True if the programs a DC needs are installed (see [`missing_samba_tools`]).
pub fn samba_available() -> bool {
    missing_samba_tools().is_empty()
}

/// The programs a DC needs that are not installed, with their Debian package in parentheses.
pub fn missing_samba_tools() -> Vec<String> {
    TOOLS
        .iter()
        .filter(|(tool, _)| find_tool(tool).is_err())
        .map(|(tool, pkg)| format!("{tool} ({pkg})"))
        .collect()
}

/// Call first in every Samba test: `if !samba_tests_enabled() { return; }`. It returns
/// `false` (and says so on stderr) only when `SKIP_SAMBA_TESTS=1` is set. If Samba is missing
/// and skipping was not asked for, it panics with what is missing and how to install it, so a
/// machine without Samba never passes these tests silently.
pub fn samba_tests_enabled() -> bool {
    if std::env::var("SKIP_SAMBA_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: Samba AD test skipped because SKIP_SAMBA_TESTS=1");
        return false;
    }
    let missing = missing_samba_tools();
    assert!(
        missing.is_empty(),
        "Samba AD tests need {}; install them with `scripts/deps-samba.sh` (Debian packages samba \
         samba-dsdb-modules samba-vfs-modules samba-ad-provision ldb-tools ldap-utils openssl), \
         or set SKIP_SAMBA_TESTS=1 to skip these tests explicitly",
        missing.join(", ")
    );
    true
}

/// A running Samba AD DC plus its temp directory. Dropping it stops Samba (SIGTERM, then
/// SIGKILL after 10 s, always reaped) and removes the directory.
///
/// Users and groups go to `CN=Users,DC=example,DC=test` unless an [`AdUser::ou`] says
/// otherwise. As in a real domain, that container also holds built-in accounts without `mail`
/// (`Administrator` 66048, `Guest` 66082 and `krbtgt` 514 — both disabled —, `dns-dc1` 512) and
/// groups (`Domain Users`, …), and `OU=Domain Controllers` holds the computer `DC1$`, which
/// `(objectClass=user)` matches too: filter on `objectCategory=person` or on `mail=*`.
pub struct SambaDc {
    dir: PathBuf,
    conf: PathBuf,
    pw_file: PathBuf,
    server: Server,
    lease: Option<net::Lease>,
    tls: bool,
    ca_file: Option<PathBuf>,
    token: String,
    ldif_counter: AtomicU64,
    timings: SambaTimings,
}

static INSTANCE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl SambaDc {
    /// Builds and starts a DC, loads the users and groups, and returns once it answers. An
    /// error says what failed, with the end of Samba's log where that helps.
    pub fn start(opts: SambaOptions) -> io::Result<SambaDc> {
        let started = Instant::now();
        let missing = missing_samba_tools();
        if !missing.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("Samba DC: missing {}; run scripts/deps-samba.sh", missing.join(", ")),
            ));
        }
        let token = process::unique_name("sync-test-samba", &INSTANCE_COUNTER);
        let dir = std::env::temp_dir().join(&token);
        fs::create_dir(&dir)?;
        // From here on, Drop removes the directory if anything fails.
        let mut dc = SambaDc {
            conf: dir.join("etc/smb.conf"),
            pw_file: dir.join("admin.pw"),
            server: Server::new(&SAMBA, dir.join("samba.log")),
            dir,
            lease: None,
            tls: opts.tls,
            ca_file: None,
            token,
            ldif_counter: AtomicU64::new(0),
            timings: SambaTimings::default(),
        };
        fs::set_permissions(&dc.dir, fs::Permissions::from_mode(0o700))?;
        let (tpl, provision) = template::get()?;
        dc.timings.provision = provision;
        let t = Instant::now();
        copy_tree(&tpl.join("private"), &dc.dir.join("private"))?;
        dc.timings.copy = t.elapsed();
        for sub in [
            "etc",
            "lock",
            "state",
            "cache",
            "bind-dns",
            "pid",
            "ncalrpc",
            "winbindd",
            "ntp_signd",
        ] {
            fs::create_dir_all(dc.dir.join(sub))?;
        }
        fs::write(&dc.pw_file, ADMIN_PW)?;
        fs::set_permissions(&dc.pw_file, fs::Permissions::from_mode(0o600))?;

        // Many objects load faster into the stopped database; ldbmodify's fixed ≈ 0.35 s for
        // loading the schema makes a few faster over LDAP once Samba runs.
        let count = opts.users.len() + opts.groups.len();
        let offline = count >= OFFLINE_LOAD_MIN;
        if offline {
            let t = Instant::now();
            // The config only tells ldbmodify where the databases are; the address is set
            // when Samba starts.
            fs::write(&dc.conf, dc.render_conf(Ipv4Addr::LOCALHOST, None))?;
            let ldif = objects::bulk_ldif(&opts.users, &opts.groups, &BTreeSet::new(), &|name| {
                dc.offline_find_dn(name)
            })?;
            dc.load_offline(&ldif)?;
            dc.timings.load = t.elapsed();
        }
        dc.start_on_free_address()?;
        if !offline && count > 0 {
            let t = Instant::now();
            dc.add(&opts.users, &opts.groups)?;
            dc.timings.load = t.elapsed();
        }
        dc.timings.total = started.elapsed();
        Ok(dc)
    }

    /// Applies LDIF to the stopped DC's database with `ldbmodify` (records without a
    /// `changetype` are adds). It runs the same Samba modules as an LDAP write (RIDs, SIDs,
    /// GUIDs, password hashing, linked `memberOf`), as the system, and takes about half the
    /// time of `ldapadd` against the running DC: 1,200 users in ≈ 2.8 s instead of ≈ 6 s.
    fn load_offline(&self, ldif: &str) -> io::Result<()> {
        let file = self.dir.join("initial.ldif");
        fs::write(&file, ldif)?;
        let out = Command::new(find_tool("ldbmodify")?)
            .arg("--nosync")
            .arg(format!("--configfile={}", self.conf.display()))
            .arg("-H")
            .arg(self.dir.join("private/sam.ldb"))
            .arg(&file)
            .stdin(Stdio::null())
            .output()?;
        let _ = fs::remove_file(&file);
        if out.status.success() {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "loading the initial users and groups with ldbmodify failed ({}): {} {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    /// The DN of the object with this `sAMAccountName`, read from the stopped DC's database.
    fn offline_find_dn(&self, sam: &str) -> io::Result<String> {
        let out = Command::new(find_tool("ldbsearch")?)
            .arg(format!("--configfile={}", self.conf.display()))
            .arg("-H")
            .arg(self.dir.join("private/sam.ldb"))
            .args(["-b", BASE_DN])
            .arg(format!("(sAMAccountName={})", ldap_escape(sam)))
            .arg("1.1")
            .stdin(Stdio::null())
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dns: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("dn: ")).collect();
        match dns.as_slice() {
            [dn] if out.status.success() => Ok((*dn).to_string()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no single object with sAMAccountName={sam} in {BASE_DN} ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )),
        }
    }

    fn start_on_free_address(&mut self) -> io::Result<()> {
        process::retry_while_taken(ADDRESS_ATTEMPTS, "Samba DC: no free loopback address", || {
            let lease = net::lease()?;
            let ip = lease.ip();
            self.lease = Some(lease);
            if self.tls {
                let t = Instant::now();
                let files = certs::generate(
                    &self.dir.join("tls"),
                    &CertNames {
                        ca_cn: &format!("sync-test Samba CA {}", self.token),
                        server_cn: "dc1.example.test",
                        alt_names: &format!("IP:{ip},DNS:dc1.example.test"),
                    },
                )?;
                self.timings.certs = t.elapsed();
                self.ca_file = Some(files.ca_cert.clone());
                fs::write(&self.conf, self.render_conf(ip, Some(&files)))?;
            } else {
                fs::write(&self.conf, self.render_conf(ip, None))?;
            }
            let result = self.spawn_and_wait();
            if matches!(result, Err(AttemptError::Taken(_))) {
                self.lease = None;
            }
            result
        })
    }

    fn render_conf(&self, ip: Ipv4Addr, tls: Option<&certs::TlsFiles>) -> String {
        let d = self.dir.display();
        let tls_lines = match tls {
            Some(f) => format!(
                "\ttls enabled = yes\n\ttls keyfile = {}\n\ttls certfile = {}\n\ttls cafile = {}\n",
                f.server_key.display(),
                f.server_cert.display(),
                f.ca_cert.display()
            ),
            None => "\ttls enabled = no\n".to_string(),
        };
        format!(
            "# written by sync-test-support's Samba launcher\n\
             [global]\n\
             \tnetbios name = DC1\n\
             \trealm = {realm}\n\
             \tworkgroup = {NETBIOS_DOMAIN}\n\
             \tserver role = active directory domain controller\n\
             \tserver services = ldap\n\
             \t# the /8 is required: without it Samba listens on nothing and keeps running\n\
             \tinterfaces = {ip}/8\n\
             \tbind interfaces only = yes\n\
             \tldap server require strong auth = no\n\
             \tldb:nosync = true\n\
             \tidmap_ldb:use rfc2307 = yes\n\
             {tls_lines}\
             \tprivate dir = {d}/private\n\
             \tlock directory = {d}/lock\n\
             \tstate directory = {d}/state\n\
             \tcache directory = {d}/cache\n\
             \tbinddns dir = {d}/bind-dns\n\
             \tpid directory = {d}/pid\n\
             \tncalrpc dir = {d}/ncalrpc\n\
             \twinbindd socket directory = {d}/winbindd\n\
             \tntp signd socket directory = {d}/ntp_signd\n\
             \tlog file = {d}/log.samba\n",
            realm = REALM.to_uppercase(),
        )
    }

    /// One attempt: start Samba with the current config and wait until it answers as us.
    /// Another process on our address's ports is [`AttemptError::Taken`]: try another address.
    fn spawn_and_wait(&mut self) -> Result<(), AttemptError> {
        let mut cmd = Command::new(find_tool("samba")?);
        cmd.args(["-F", "--debug-stdout", "-M", "single", "-s"]).arg(&self.conf);
        if let Ok(level) = std::env::var("SYNC_TEST_SAMBA_DEBUG") {
            cmd.args(["-d", &level]);
        }
        let (ip, tls, url) = (self.ip(), self.tls, self.ldap_url());
        let t = Instant::now();
        self.server.start(cmd, &url, |pid| {
            let ours = net::listening_pid_owns(ip, 389, pid) && (!tls || net::listening_pid_owns(ip, 636, pid));
            if ours && probe(&url).is_ok() {
                Probe::Ready
            } else {
                Probe::NotYet(format!(" (listening: {ours})"))
            }
        })?;
        self.timings.ready = t.elapsed();
        Ok(())
    }

    /// The instance's loopback address `127.0.0.X`.
    pub fn ip(&self) -> Ipv4Addr {
        self.lease.as_ref().map_or(Ipv4Addr::UNSPECIFIED, net::Lease::ip)
    }

    /// `ldap://127.0.0.X:389` (plain LDAP; StartTLS is offered when TLS is on; simple binds
    /// are allowed without TLS).
    pub fn ldap_url(&self) -> String {
        format!("ldap://{}:389", self.ip())
    }

    /// `ldaps://127.0.0.X:636`. Panics if the DC was started with `tls: false`.
    pub fn ldaps_url(&self) -> String {
        assert!(self.tls, "SambaDc::ldaps_url: this DC was started with tls: false");
        format!("ldaps://{}:636", self.ip())
    }

    /// The PEM file of this DC's own CA. Panics if it was started with `tls: false`.
    pub fn ca_file(&self) -> &Path {
        self.ca_file
            .as_deref()
            .expect("SambaDc::ca_file: this DC was started with tls: false")
    }

    /// `DC=example,DC=test`.
    pub fn base_dn(&self) -> &str {
        BASE_DN
    }

    /// `CN=Users,DC=example,DC=test`, where users without an OU and all groups go.
    pub fn users_dn(&self) -> &str {
        USERS_DN
    }

    /// `OU=<ou>,DC=example,DC=test`, where users with [`AdUser::ou`] = `ou` go.
    pub fn ou_dn(&self, ou: &str) -> String {
        objects::ou_dn(ou)
    }

    /// `CN=Administrator,CN=Users,DC=example,DC=test`.
    pub fn admin_dn(&self) -> &str {
        ADMIN_DN
    }

    /// `Administrator@example.test`: the same account as [`SambaDc::admin_dn`], as a UPN.
    pub fn admin_bind(&self) -> &str {
        ADMIN_BIND
    }

    /// The administrator's password.
    pub fn admin_pw(&self) -> &str {
        ADMIN_PW
    }

    /// The DN of the object with this `sAMAccountName`, wherever it lives (looked up as admin).
    /// If there is none, or the DC is down, it returns where [`AdUser::new`] would put it:
    /// `CN=<sam>,CN=Users,DC=example,DC=test`.
    pub fn user_dn(&self, sam: &str) -> String {
        self.find_dn(sam)
            .unwrap_or_else(|_| format!("CN={},{USERS_DN}", crate::slapd::escape_dn_value(sam)))
    }

    /// Runs `ldapmodify -a` as the administrator over plain LDAP. Records without a
    /// `changetype` are adds; `add`/`modify`/`delete`/`modrdn` records all work. Records are
    /// separated by blank lines. The error carries ldapmodify's output.
    pub fn apply_ldif(&self, ldif: &str) -> io::Result<()> {
        let n = self.ldif_counter.fetch_add(1, Ordering::Relaxed);
        let file = self.dir.join(format!("apply-{n}.ldif"));
        process::ldapmodify(
            &find_tool("ldapmodify")?,
            &self.ldap_url(),
            ADMIN_BIND,
            &self.pw_file,
            &file,
            ldif,
            &[],
        )
    }

    /// Adds users to the running DC (one `ldapadd`) and creates their OUs if missing.
    pub fn add_users(&self, users: &[AdUser]) -> io::Result<()> {
        self.add(users, &[])
    }

    /// Adds groups to the running DC and fills them. Members may be users or groups that
    /// already exist, or groups of the same call.
    pub fn add_groups(&self, groups: &[AdGroup]) -> io::Result<()> {
        self.add(&[], groups)
    }

    fn add(&self, users: &[AdUser], groups: &[AdGroup]) -> io::Result<()> {
        let existing = self.existing_ous()?;
        let ldif = objects::bulk_ldif(users, groups, &existing, &|name| self.find_dn(name))?;
        self.apply_ldif(&ldif)
    }

    /// Sets or clears `ACCOUNTDISABLE` (0x2) in the user's `userAccountControl`, keeping the
    /// other bits.
    pub fn set_disabled(&self, sam: &str, disabled: bool) -> io::Result<()> {
        let (dn, entry) = self.get(sam, vec!["userAccountControl"])?;
        let uac: u32 = entry
            .attrs
            .get("userAccountControl")
            .and_then(|v| v.first())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other(format!("{dn} has no numeric userAccountControl")))?;
        let new = if disabled {
            uac | UAC_DISABLED
        } else {
            uac & !UAC_DISABLED
        };
        self.apply_ldif(&objects::replace_record(&dn, "userAccountControl", &[&new.to_string()]))
    }

    /// Replaces all values of `attr` on the object with this `sAMAccountName`. With no
    /// `values`, it removes the attribute (a no-op if it is absent).
    pub fn modify_attr(&self, sam: &str, attr: &str, values: &[&str]) -> io::Result<()> {
        let dn = self.find_dn(sam)?;
        self.apply_ldif(&objects::replace_record(&dn, attr, values))
    }

    /// Sets the user's password (`unicodePwd`, ≈ 23 ms; the domain's complexity rules apply,
    /// see [`AdUser::password`]).
    pub fn set_password(&self, sam: &str, password: &str) -> io::Result<()> {
        let dn = self.find_dn(sam)?;
        self.apply_ldif(&objects::password_record(&dn, password))
    }

    /// Deletes the object with this `sAMAccountName` (user or group). AD removes it from the
    /// groups it was a member of.
    pub fn delete_user(&self, sam: &str) -> io::Result<()> {
        let dn = self.find_dn(sam)?;
        self.apply_ldif(&objects::delete_record(&dn))
    }

    /// Adds `member` (a user's or a group's `sAMAccountName`) to `group`'s `member`.
    pub fn add_to_group(&self, group: &str, member: &str) -> io::Result<()> {
        let (g, m) = (self.find_dn(group)?, self.find_dn(member)?);
        self.apply_ldif(&objects::member_change(&g, "add", &[m]))
    }

    /// Removes `member` from `group`'s `member`.
    pub fn remove_from_group(&self, group: &str, member: &str) -> io::Result<()> {
        let (g, m) = (self.find_dn(group)?, self.find_dn(member)?);
        self.apply_ldif(&objects::member_change(&g, "delete", &[m]))
    }

    /// The object's `objectGUID` as canonical text (`525dcc64-caca-43ec-a1c3-81e09eb0e14f`,
    /// the form `<GUID=…>` DNs, PowerShell and `ldbsearch` use; see [`guid_to_string`]).
    pub fn object_guid(&self, sam: &str) -> io::Result<String> {
        let (dn, entry) = self.get(sam, vec!["objectGUID"])?;
        // ldap3 puts a value in `attrs` when it happens to be valid UTF-8, else in `bin_attrs`.
        let raw: Option<Vec<u8>> = entry
            .bin_attrs
            .get("objectGUID")
            .and_then(|v| v.first().cloned())
            .or_else(|| {
                entry
                    .attrs
                    .get("objectGUID")
                    .and_then(|v| v.first())
                    .map(|s| s.clone().into_bytes())
            });
        raw.as_deref()
            .and_then(guid_to_string)
            .ok_or_else(|| io::Error::other(format!("{dn}: no 16-byte objectGUID")))
    }

    /// Stops Samba: SIGTERM, then SIGKILL if it has not exited within 10 s; always reaped.
    /// Clients then see "connection refused". The databases stay, so [`SambaDc::restart`] can
    /// bring the same DC back on the same address.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts Samba again on the same address with the same data (after [`SambaDc::stop`]; it
    /// stops a running one first). Fails if another process took the address meanwhile.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn_and_wait()
            .map_err(|e| e.into_restart_error("samba restart: address taken"))
    }

    /// The process id of the current (or last) samba process.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// The instance's temp directory (`etc/smb.conf`, `private/sam.ldb`, `tls/`,
    /// `samba.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the time of [`SambaDc::start`] went.
    pub fn timings(&self) -> &SambaTimings {
        &self.timings
    }

    /// The one object with `sAMAccountName=<sam>` in the domain, with the given attributes.
    fn get(&self, sam: &str, attrs: Vec<&str>) -> io::Result<(String, SearchEntry)> {
        let mut conn = connect_admin(&self.ldap_url(), Duration::from_secs(5))?;
        let filter = format!("(sAMAccountName={})", ldap_escape(sam));
        let (entries, _) = conn
            .search(BASE_DN, Scope::Subtree, &filter, attrs)
            .and_then(|r| r.success())
            .map_err(io_err)?;
        let _ = conn.unbind();
        // A subtree search from the domain root also returns referrals (to the configuration
        // partition). ldap3's search() already moves them to the result's `refs`; filter
        // anyway, since SearchEntry::construct panics on one.
        let mut found: Vec<SearchEntry> = entries
            .into_iter()
            .filter(|e| !e.is_ref())
            .map(SearchEntry::construct)
            .collect();
        match found.len() {
            1 => {
                let e = found.remove(0);
                Ok((e.dn.clone(), e))
            }
            0 => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no object with sAMAccountName={sam} in {BASE_DN}"),
            )),
            _ => Err(io::Error::other(format!("sAMAccountName={sam} is ambiguous"))),
        }
    }

    fn find_dn(&self, sam: &str) -> io::Result<String> {
        self.get(sam, vec!["1.1"]).map(|(dn, _)| dn)
    }

    /// Names of the OUs directly below the base.
    fn existing_ous(&self) -> io::Result<BTreeSet<String>> {
        let mut conn = connect_admin(&self.ldap_url(), Duration::from_secs(5))?;
        let (entries, _) = conn
            .search(BASE_DN, Scope::OneLevel, "(objectClass=organizationalUnit)", vec!["ou"])
            .and_then(|r| r.success())
            .map_err(io_err)?;
        let _ = conn.unbind();
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_ref())
            .filter_map(|e| SearchEntry::construct(e).attrs.remove("ou"))
            .flatten()
            .collect())
    }
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("SYNC_TEST_SAMBA_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl std::fmt::Debug for SambaDc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SambaDc")
            .field("ldap_url", &self.ldap_url())
            .field("tls", &self.tls)
            .field("pid", &self.server.pid())
            .field("running", &self.server.is_running())
            .field("dir", &self.dir)
            .finish()
    }
}

/// Copies a directory tree with file modes (Samba checks some of them).
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::metadata(from)?.permissions())?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else {
            fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// A connection bound as the administrator over plain `url`.
fn connect_admin(url: &str, timeout: Duration) -> io::Result<LdapConn> {
    let settings = LdapConnSettings::new().set_conn_timeout(timeout);
    let mut conn = LdapConn::with_settings(settings, url).map_err(io_err)?;
    conn.with_timeout(timeout);
    conn.simple_bind(ADMIN_BIND, ADMIN_PW)
        .and_then(|r| r.success())
        .map_err(io_err)?;
    conn.with_timeout(Duration::from_secs(30));
    Ok(conn)
}

/// An authenticated base search of the naming context at `url`.
fn probe(url: &str) -> io::Result<()> {
    let mut conn = connect_admin(url, Duration::from_secs(2))?;
    conn.search(BASE_DN, Scope::Base, "(objectClass=*)", vec!["1.1"])
        .and_then(|r| r.success())
        .map_err(io_err)?;
    let _ = conn.unbind();
    Ok(())
}

fn io_err(e: ldap3::LdapError) -> io::Error {
    io::Error::other(format!("LDAP: {e}"))
}

/// Finds a tool on `PATH` or in the sbin directories a non-root `PATH` often lacks (`samba`
/// lives in `/usr/sbin`).
fn find_tool(name: &str) -> io::Result<PathBuf> {
    process::find_tool(name, "run scripts/deps-samba.sh")
}
