//! A real, throwaway OpenLDAP `slapd` for integration tests.
//!
//! The sync's LDAP side has to be tested against a server that behaves like the ones it meets:
//! size limits that force paging, TLS with a private CA, ACLs on `userPassword`, entries that
//! move between OUs and keep their `entryUUID`. A mock would encode our own guesses instead.
//! [`Slapd::start`] builds a fresh instance in its own temp directory. It writes a
//! `slapd.conf`, a CA and a server certificate, and bulk-loads users with `slapadd`. Then it
//! starts slapd in the foreground on free loopback ports and waits until the instance answers.
//! [`Drop`] kills the process and removes the directory. Many instances can run at once.
//! Needs the Debian packages `slapd ldap-utils openssl`. Nothing leaves 127.0.0.1.
//!
//! Debug knobs: `SYNC_TEST_SLAPD_DEBUG=<level>` (e.g. `stats`, `-1`) is passed to `slapd -d`.
//! `SYNC_TEST_SLAPD_KEEP=1` keeps the temp dir after drop. slapd's stderr is in `DIR/slapd.log`.

mod config;
mod hash;
mod users;

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ldap3::{LdapConn, LdapConnSettings, Scope, SearchEntry, ldap_escape};

use crate::process::{self, AttemptError, Probe, Server, ServerKind};
use crate::{certs, encoding};

pub use hash::ssha;
pub(crate) use users::capitalized;
pub use users::{TestUser, escape_dn_value, generate_users};

/// The suffix of every instance.
pub const BASE_DN: &str = "dc=example,dc=org";
/// The rootdn. It bypasses ACLs and size limits, so never use it to test them.
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
/// The rootdn's password.
pub const ADMIN_PW: &str = "admin-secret";
/// The account a sync binds as: subject to the size limit, allowed to read `userPassword`.
pub const READER_DN: &str = "cn=reader,ou=service,dc=example,dc=org";
/// The reader's password.
pub const READER_PW: &str = "reader-secret";

/// How slapd runs: one start attempt may wait 10 s for it to answer before giving up. That is
/// generous because slapd normally answers in ~30 ms, but a 2-core CI box running many tests is
/// slower. A slapd that exits (bad config, port taken) is noticed at once, not after this. It
/// is stopped with SIGKILL; its stderr is the log.
static SLAPD: ServerKind = ServerKind {
    name: "slapd",
    keep_var: "SYNC_TEST_SLAPD_KEEP",
    ready_timeout: Duration::from_secs(10),
    poll: Duration::from_millis(5),
    taken_markers: &["Address already in use"],
    stop_grace: None,
    stdout_to_log: false,
};
/// Start attempts with fresh ports when another process took one of ours in the meantime.
const PORT_ATTEMPTS: usize = 8;

/// How to build an instance. `SlapdOptions::default()` means no users, a size limit of 20
/// and TLS on.
#[derive(Clone, Debug)]
pub struct SlapdOptions {
    /// Loaded with `slapadd` before slapd starts (20,000 users take about half a second).
    /// OUs named in [`TestUser::ou`] are created.
    pub users: Vec<TestUser>,
    /// Soft and hard size limit for every bind except the rootdn, with
    /// `size.prtotal=unlimited` so that a paged search still sees every entry. 0 = unlimited.
    pub size_limit: usize,
    /// Generate a CA and a server certificate (SAN `DNS:localhost`, `IP:127.0.0.1`), listen on
    /// `ldaps://` too, and offer StartTLS on `ldap://`.
    pub tls: bool,
    /// Load the `syncprov` overlay (RFC 4533 content synchronization provider) on the
    /// database, so refreshOnly sync searches with cookies work. Off by default.
    pub syncprov: bool,
    /// With `syncprov`: keep a session log of this many operations (`syncprov-sessionlog`),
    /// so a refresh from a recent cookie gets a delete phase instead of a present phase.
    pub sessionlog: Option<usize>,
}

impl Default for SlapdOptions {
    fn default() -> Self {
        SlapdOptions {
            users: Vec::new(),
            size_limit: 20,
            tls: true,
            syncprov: false,
            sessionlog: None,
        }
    }
}

/// A running slapd plus its temp directory. Dropping it kills the process (SIGKILL + wait, so
/// no zombie) and removes the directory.
///
/// The tree is `dc=example,dc=org`, with `ou=people` (default home of [`TestUser`]s),
/// `ou=service` (holds [`READER_DN`]), and any OU that users or [`Slapd::move_user`] need.
/// Anonymous binds can read everything but `userPassword`, including the root DSE and schema.
/// `userPassword` is readable by the reader and by the entry itself.
pub struct Slapd {
    dir: PathBuf,
    conf: PathBuf,
    server: Server,
    ldap_port: u16,
    ldaps_port: Option<u16>,
    ca_file: Option<PathBuf>,
    token: String,
    ldif_counter: AtomicU64,
}

static INSTANCE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Slapd {
    /// Builds and starts an instance and returns once it answers LDAP searches. An error says
    /// what failed and includes the tail of slapd's log.
    pub fn start(opts: SlapdOptions) -> io::Result<Slapd> {
        let token = process::unique_name("sync-test-slapd", &INSTANCE_COUNTER);
        let dir = std::env::temp_dir().join(&token);
        fs::create_dir(&dir)?;
        // From here on, Drop cleans up the directory if anything fails.
        let mut slapd = Slapd {
            conf: dir.join("slapd.conf"),
            server: Server::new(&SLAPD, dir.join("slapd.log")),
            dir,
            ldap_port: 0,
            ldaps_port: None,
            ca_file: None,
            token,
            ldif_counter: AtomicU64::new(0),
        };
        slapd.prepare(&opts)?;
        slapd.spawn_on_free_ports(opts.tls)?;
        Ok(slapd)
    }

    /// Writes schema, certificates and config, and loads the base entries and users.
    fn prepare(&mut self, opts: &SlapdOptions) -> io::Result<()> {
        let dir = self.dir.clone();
        let schema_file = dir.join("mailcow-test.schema");
        fs::write(&schema_file, config::TEST_SCHEMA)?;
        let root_dse_file = dir.join("rootdse.ldif");
        fs::write(&root_dse_file, config::root_dse(&self.token))?;
        fs::write(dir.join("admin.pw"), ADMIN_PW)?;
        let db_dir = dir.join("db");
        fs::create_dir(&db_dir)?;
        let tls = if opts.tls {
            Some(certs::generate_localhost(&dir, &self.token)?)
        } else {
            None
        };
        self.ca_file = tls.as_ref().map(|t| t.ca_cert.clone());
        let conf = config::render(&config::ConfigInput {
            dir: &dir,
            schema_file: &schema_file,
            root_dse_file: &root_dse_file,
            db_dir: &db_dir,
            size_limit: opts.size_limit,
            tls: tls.as_ref().map(|t| (&*t.ca_cert, &*t.server_cert, &*t.server_key)),
            syncprov: opts.syncprov.then_some(opts.sessionlog),
        });
        fs::write(&self.conf, conf)?;

        let mut ous: Vec<&str> = opts.users.iter().map(TestUser::ou_name).collect();
        ous.sort_unstable();
        ous.dedup();
        let mut ldif = config::base_ldif(&ous);
        for u in &opts.users {
            ldif.push_str(&u.to_ldif(BASE_DN));
        }
        let ldif_file = dir.join("initial.ldif");
        fs::write(&ldif_file, ldif)?;
        let mut slapadd = Command::new(find_tool("slapadd")?);
        if opts.syncprov {
            // writes the suffix's contextCSN, so the first cookie covers the loaded entries
            slapadd.arg("-w");
        }
        let out = slapadd
            .arg("-q")
            .arg("-f")
            .arg(&self.conf)
            .arg("-l")
            .arg(&ldif_file)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "slapadd failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let _ = fs::remove_file(&ldif_file);
        Ok(())
    }

    fn spawn_on_free_ports(&mut self, tls: bool) -> io::Result<()> {
        process::retry_while_taken(PORT_ATTEMPTS, "slapd: no free port pair", || {
            // Hold both listeners while reading their numbers, so the two ports differ.
            let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            let b = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            self.ldap_port = a.local_addr()?.port();
            self.ldaps_port = if tls { Some(b.local_addr()?.port()) } else { None };
            drop((a, b));
            self.spawn_and_wait()
        })
    }

    /// One attempt: start slapd on the current ports and wait until it answers as us. A port
    /// taken before slapd bound it is [`AttemptError::Taken`]: try again with new ports.
    fn spawn_and_wait(&mut self) -> Result<(), AttemptError> {
        let mut urls = self.ldap_url() + "/";
        if let Some(p) = self.ldaps_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
        }
        // `-d none` keeps slapd in the foreground and prints only uncategorised messages:
        // start/stop and errors such as "bind(7) failed errno=98 (Address already in use)"
        // or config errors. `-d 0` would print nothing at all.
        let debug = std::env::var("SYNC_TEST_SLAPD_DEBUG").unwrap_or_else(|_| "none".into());
        let mut cmd = Command::new(find_tool("slapd")?);
        cmd.arg("-f").arg(&self.conf).arg("-h").arg(&urls).arg("-d").arg(&debug);
        let (url, port, token) = (self.ldap_url(), self.ldap_port, &self.token);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        self.server.start(cmd, &url, |_| {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                match root_dse_description(&url) {
                    Ok(d) if d == *token => return Probe::Ready,
                    Ok(other) => {
                        return Probe::Taken(format!("port {port} answers as {other:?}, not as this instance"));
                    }
                    // Listening but not serving yet, or a non-LDAP process on the port (then
                    // our slapd exits, which the wait notices at once).
                    Err(_) => {}
                }
            }
            Probe::NotYet(String::new())
        })
    }

    /// `ldap://127.0.0.1:PORT` (plain LDAP; StartTLS is offered when TLS is on).
    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    /// `ldaps://127.0.0.1:PORT`. Panics if the instance was started with `tls: false`.
    pub fn ldaps_url(&self) -> String {
        let port = self
            .ldaps_port
            .expect("Slapd::ldaps_url: this instance was started with tls: false");
        format!("ldaps://127.0.0.1:{port}")
    }

    /// The PEM file of this instance's test CA. Panics if it was started with `tls: false`.
    pub fn ca_file(&self) -> &Path {
        self.ca_file
            .as_deref()
            .expect("Slapd::ca_file: this instance was started with tls: false")
    }

    /// `dc=example,dc=org`.
    pub fn base_dn(&self) -> &str {
        BASE_DN
    }

    /// `ou=people,dc=example,dc=org`.
    pub fn people_dn(&self) -> String {
        config::ou_dn("people")
    }

    /// The rootdn `cn=admin,dc=example,dc=org` (ignores ACLs and size limits).
    pub fn admin_dn(&self) -> &str {
        ADMIN_DN
    }

    /// The rootdn's password.
    pub fn admin_pw(&self) -> &str {
        ADMIN_PW
    }

    /// `cn=reader,ou=service,dc=example,dc=org`: bind as this to test like a sync does.
    pub fn reader_dn(&self) -> &str {
        READER_DN
    }

    /// The reader's password.
    pub fn reader_pw(&self) -> &str {
        READER_PW
    }

    /// The DN of the entry with this `uid`, wherever it lives now (looked up as admin). If
    /// there is no such entry, or the server is down, it returns where
    /// [`TestUser::new`] would put it: `uid=<uid>,ou=people,dc=example,dc=org`.
    pub fn user_dn(&self, uid: &str) -> String {
        self.find_user_dn(uid)
            .unwrap_or_else(|_| format!("uid={},{}", escape_dn_value(uid), self.people_dn()))
    }

    /// Runs `ldapmodify -a` as the rootdn against the running server. Records without a
    /// `changetype` are adds, and `add`/`modify`/`delete`/`modrdn` records all work. Records
    /// are separated by blank lines. The error carries ldapmodify's output.
    pub fn apply_ldif(&self, ldif: &str) -> io::Result<()> {
        self.modify(ldif, &[])
    }

    fn modify(&self, ldif: &str, extra_args: &[&str]) -> io::Result<()> {
        let n = self.ldif_counter.fetch_add(1, Ordering::Relaxed);
        let file = self.dir.join(format!("apply-{n}.ldif"));
        let pw_file = self.dir.join("admin.pw");
        process::ldapmodify(
            &find_tool("ldapmodify")?,
            &self.ldap_url(),
            ADMIN_DN,
            &pw_file,
            &file,
            ldif,
            extra_args,
        )
    }

    /// Adds `ou=<ou>` below the base DN as a referral object (objectClass `referral`) to
    /// `url`: a subtree search over the base then returns a continuation reference for it
    /// instead of its entries (added with ManageDsaIT, `ldapmodify -M`).
    pub fn add_referral(&self, ou: &str, url: &str) -> io::Result<()> {
        let ldif = format!(
            "dn: ou={ou},{BASE_DN}\nobjectClass: referral\nobjectClass: extensibleObject\nou: {ou}\nref: {url}\n\n"
        );
        self.modify(&ldif, &["-M"])
    }

    /// Adds users to the running server and creates their OUs if missing.
    pub fn add_users(&self, users: &[TestUser]) -> io::Result<()> {
        let mut ous: Vec<&str> = users.iter().map(TestUser::ou_name).collect();
        ous.sort_unstable();
        ous.dedup();
        for ou in ous {
            self.ensure_ou(ou)?;
        }
        let ldif: String = users.iter().map(|u| u.to_ldif(BASE_DN)).collect();
        self.apply_ldif(&ldif)
    }

    /// Replaces all values of `attr` on the user's entry. With no `values`, it removes the
    /// attribute, and does nothing if the attribute is absent.
    pub fn modify_attr(&self, uid: &str, attr: &str, values: &[&str]) -> io::Result<()> {
        let dn = self.find_user_dn(uid)?;
        let mut ldif = String::new();
        encoding::push_attr(&mut ldif, "dn", &dn);
        ldif.push_str("changetype: modify\n");
        ldif.push_str(&format!("replace: {attr}\n"));
        for v in values {
            encoding::push_attr(&mut ldif, attr, v);
        }
        ldif.push_str("-\n\n");
        self.apply_ldif(&ldif)
    }

    /// Deletes the user's entry.
    pub fn delete_user(&self, uid: &str) -> io::Result<()> {
        let dn = self.find_user_dn(uid)?;
        let mut ldif = String::new();
        encoding::push_attr(&mut ldif, "dn", &dn);
        ldif.push_str("changetype: delete\n\n");
        self.apply_ldif(&ldif)
    }

    /// Moves the user's entry to `ou=<new_ou>,dc=example,dc=org` with a modrdn and a new
    /// superior. It creates the OU if missing. The RDN, `entryUUID` and every attribute stay
    /// the same; only the DN changes.
    pub fn move_user(&self, uid: &str, new_ou: &str) -> io::Result<()> {
        let dn = self.find_user_dn(uid)?;
        let new_parent = self.ensure_ou(new_ou)?;
        let rdn = first_rdn(&dn);
        let mut ldif = String::new();
        encoding::push_attr(&mut ldif, "dn", &dn);
        ldif.push_str("changetype: modrdn\n");
        encoding::push_attr(&mut ldif, "newrdn", rdn);
        ldif.push_str("deleteoldrdn: 1\n");
        encoding::push_attr(&mut ldif, "newsuperior", &new_parent);
        ldif.push('\n');
        self.apply_ldif(&ldif)
    }

    /// Kills slapd (SIGKILL) and reaps it, so clients see "connection refused". The data
    /// directory stays, so [`Slapd::restart`] can bring the same directory back.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts slapd again on the same ports with the same data (after [`Slapd::stop`], or
    /// kills it first if it runs). Fails if another process took a port in the meantime.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn_and_wait()
            .map_err(|e| e.into_restart_error("slapd restart: port taken"))
    }

    /// The process id of the current (or last) slapd process.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// The instance's temp directory (config, certificates, `slapd.log`, `db/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens a connection bound as the rootdn over plain `ldap://`.
    fn admin_conn(&self) -> io::Result<LdapConn> {
        let settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(5));
        let mut conn = LdapConn::with_settings(settings, &self.ldap_url()).map_err(io_err)?;
        conn.with_timeout(Duration::from_secs(10));
        conn.simple_bind(ADMIN_DN, ADMIN_PW)
            .and_then(|r| r.success())
            .map_err(io_err)?;
        Ok(conn)
    }

    /// The DN of the one entry with `uid=<uid>` below the base. It is an error if there is no
    /// such entry, or more than one.
    fn find_user_dn(&self, uid: &str) -> io::Result<String> {
        let mut conn = self.admin_conn()?;
        let filter = format!("(uid={})", ldap_escape(uid));
        let (entries, _) = conn
            .search(BASE_DN, Scope::Subtree, &filter, vec!["1.1"])
            .and_then(|r| r.success())
            .map_err(io_err)?;
        let _ = conn.unbind();
        let mut dns: Vec<String> = entries.into_iter().map(|e| SearchEntry::construct(e).dn).collect();
        match dns.len() {
            1 => Ok(dns.remove(0)),
            0 => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no entry with uid={uid} below {BASE_DN}"),
            )),
            _ => Err(io::Error::other(format!("uid={uid} is ambiguous: {}", dns.join("; ")))),
        }
    }

    /// Creates `ou=<ou>` below the base unless it exists, and returns its DN.
    fn ensure_ou(&self, ou: &str) -> io::Result<String> {
        let dn = config::ou_dn(ou);
        let mut conn = self.admin_conn()?;
        let res = conn
            .add(
                &dn,
                vec![("objectClass", ["organizationalUnit"].into()), ("ou", [ou].into())],
            )
            .map_err(io_err)?;
        let _ = conn.unbind();
        match res.rc {
            0 | 68 => Ok(dn), // 68 = entryAlreadyExists
            _ => Err(io::Error::other(format!("adding {dn}: {res}"))),
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("SYNC_TEST_SLAPD_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl std::fmt::Debug for Slapd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slapd")
            .field("ldap_url", &self.ldap_url())
            .field("ldaps_port", &self.ldaps_port)
            .field("pid", &self.server.pid())
            .field("running", &self.server.is_running())
            .field("dir", &self.dir)
            .finish()
    }
}

/// Anonymous base search of the root DSE at `url` for `description`.
fn root_dse_description(url: &str) -> io::Result<String> {
    let settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(1));
    let mut conn = LdapConn::with_settings(settings, url).map_err(io_err)?;
    let (entries, _) = conn
        .with_timeout(Duration::from_secs(1))
        .search("", Scope::Base, "(objectClass=*)", vec!["description"])
        .and_then(|r| r.success())
        .map_err(io_err)?;
    let _ = conn.unbind();
    entries
        .into_iter()
        .next()
        .map(SearchEntry::construct)
        .and_then(|e| e.attrs.get("description").and_then(|v| v.first().cloned()))
        .ok_or_else(|| io::Error::other("root DSE has no description"))
}

/// The first RDN of a DN: everything up to the first `,` that is not escaped.
fn first_rdn(dn: &str) -> &str {
    let mut escaped = false;
    for (i, c) in dn.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => return &dn[..i],
            _ => {}
        }
    }
    dn
}

fn io_err(e: ldap3::LdapError) -> io::Error {
    io::Error::other(format!("LDAP: {e}"))
}

/// Finds an OpenLDAP/OpenSSL tool on `PATH` or in the sbin directories that a non-root `PATH`
/// often lacks (`slapd` and `slapadd` live in `/usr/sbin`).
pub(crate) fn find_tool(name: &str) -> io::Result<PathBuf> {
    process::find_tool(name, "install the Debian packages slapd ldap-utils openssl")
}

#[cfg(test)]
mod tests {
    use super::first_rdn;

    #[test]
    fn first_rdn_respects_escapes() {
        assert_eq!(first_rdn("uid=a,ou=people,dc=x"), "uid=a");
        assert_eq!(first_rdn("uid=a\\,b,ou=people"), "uid=a\\,b");
        assert_eq!(first_rdn("uid=a\\\\,ou=p"), "uid=a\\\\");
        assert_eq!(first_rdn("dc=x"), "dc=x");
    }
}
