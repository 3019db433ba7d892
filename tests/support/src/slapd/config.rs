//! The `slapd.conf`, test schema and base entries of one instance.
//!
//! All the server's policy lives here in one readable place: size limits, ACLs, mdb settings,
//! TLS files, and the directory tree that exists before any user. The rest of the launcher
//! does processes, ports and I/O.
//! The file-based `slapd.conf` (`-f`) is used, not cn=config, because it is one plain text
//! file that starts in milliseconds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::hash::ssha;
use super::{ADMIN_DN, ADMIN_PW, BASE_DN, READER_DN, READER_PW};
use crate::encoding::push_attr;

/// The test schema (auxiliary class `mailcowUser`), in `include` format.
pub(crate) const TEST_SCHEMA: &str = include_str!("../../schema/mailcow-test.schema");

/// What [`render`] needs to know about the instance.
pub(crate) struct ConfigInput<'a> {
    pub dir: &'a Path,
    pub schema_file: &'a Path,
    pub root_dse_file: &'a Path,
    pub db_dir: &'a Path,
    pub size_limit: usize,
    /// `(ca, cert, key)` when TLS is on.
    pub tls: Option<(&'a Path, &'a Path, &'a Path)>,
    /// `Some(sessionlog)` loads the syncprov overlay, with a session log when `sessionlog` is
    /// `Some(n)`.
    pub syncprov: Option<Option<usize>>,
}

/// The system schema directory and the module directory holding `back_mdb` (`None` if the
/// backend is built into slapd), looked up at the usual Debian / RPM / BSD places.
fn system_paths() -> (PathBuf, Option<PathBuf>) {
    let schema = [
        "/etc/ldap/schema",
        "/etc/openldap/schema",
        "/usr/local/etc/openldap/schema",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.join("core.schema").is_file())
    .unwrap_or_else(|| PathBuf::from("/etc/ldap/schema"));
    let modules = [
        "/usr/lib/ldap",
        "/usr/lib64/openldap",
        "/usr/lib/openldap",
        "/usr/libexec/openldap",
        "/usr/local/libexec/openldap",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.join("back_mdb.so").exists() || p.join("back_mdb.la").exists());
    (schema, modules)
}

fn q(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

/// The complete `slapd.conf`.
pub(crate) fn render(input: &ConfigInput<'_>) -> String {
    let (schema_dir, module_dir) = system_paths();
    let mut c = String::new();
    for s in ["core", "cosine", "inetorgperson"] {
        let _ = writeln!(c, "include {}", q(&schema_dir.join(format!("{s}.schema"))));
    }
    let _ = writeln!(c, "include {}", q(input.schema_file));
    if let Some(m) = module_dir {
        let _ = writeln!(c, "modulepath {}\nmoduleload back_mdb", q(&m));
        // syncprov is a module in the same directory wherever back_mdb is one (Debian ships
        // /usr/lib/ldap/syncprov.so); a slapd with everything built in needs no moduleload.
        if input.syncprov.is_some() {
            c.push_str("moduleload syncprov\n");
        }
    }
    let _ = writeln!(c, "pidfile {}", q(&input.dir.join("slapd.pid")));
    let _ = writeln!(c, "rootDSE {}", q(input.root_dse_file));
    if let Some((ca, cert, key)) = input.tls {
        let _ = writeln!(c, "TLSCACertificateFile {}", q(ca));
        let _ = writeln!(c, "TLSCertificateFile {}", q(cert));
        let _ = writeln!(c, "TLSCertificateKeyFile {}", q(key));
    }
    // The limit applies to every identity except the rootdn. Without
    // size.prtotal=unlimited the hard limit would also cap the total of a paged search.
    let limit = match input.size_limit {
        0 => "unlimited".to_string(),
        n => n.to_string(),
    };
    let _ = writeln!(
        c,
        "sizelimit size.soft={limit} size.hard={limit} size.prtotal=unlimited"
    );
    // Frontend ACLs: anyone may read the root DSE (readiness probe) and the schema.
    c.push_str("access to dn.base=\"\" by * read\n");
    c.push_str("access to dn.base=\"cn=Subschema\" by * read\n\n");

    c.push_str("database mdb\n");
    c.push_str("maxsize 1073741824\n");
    c.push_str("dbnosync\n");
    let _ = writeln!(c, "suffix \"{BASE_DN}\"");
    let _ = writeln!(c, "rootdn \"{ADMIN_DN}\"");
    let _ = writeln!(c, "rootpw {ADMIN_PW}");
    let _ = writeln!(c, "directory {}", q(input.db_dir));
    c.push_str("index objectClass,uid,mail,entryUUID eq\n");
    // userPassword: the owner may change it, the sync account may read it (the product
    // copies hashes), anonymous may only use it to authenticate; nobody else sees it.
    let _ = writeln!(
        c,
        "access to attrs=userPassword\n    by self write\n    by dn.exact=\"{READER_DN}\" read\n    by anonymous auth\n    by * none"
    );
    c.push_str("access to * by * read\n");
    if let Some(sessionlog) = input.syncprov {
        // entryCSN is what syncprov compares cookies with. The overlay comes last, after
        // every database directive. The checkpoint writes contextCSN to the suffix entry
        // every 10 writes or 1 minute.
        c.push_str("index entryCSN eq\n");
        c.push_str("overlay syncprov\nsyncprov-checkpoint 10 1\n");
        if let Some(n) = sessionlog {
            let _ = writeln!(c, "syncprov-sessionlog {n}");
        }
    }
    c
}

/// The root DSE extension file. Its `description` carries a token unique to the instance, so
/// the readiness probe can tell our slapd from another process that took the port.
pub(crate) fn root_dse(token: &str) -> String {
    format!("dn:\ndescription: {token}\n\n")
}

/// The entries every instance starts with: the suffix, `ou=service` with the reader account,
/// and an OU for each name in `ous` (`people` always included).
pub(crate) fn base_ldif(ous: &[&str]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n"
    );
    let mut names = vec!["people", "service"];
    for ou in ous {
        if !names.contains(ou) {
            names.push(ou);
        }
    }
    for ou in names {
        out.push_str(&ou_ldif(ou));
    }
    push_attr(&mut out, "dn", READER_DN);
    out.push_str("objectClass: person\nobjectClass: simpleSecurityObject\ncn: reader\n");
    out.push_str("sn: reader\ndescription: the account the sync binds as\n");
    push_attr(&mut out, "userPassword", &ssha(READER_PW, b"reader-salt"));
    out.push('\n');
    out
}

/// An `organizationalUnit` directly below the base DN.
pub(crate) fn ou_ldif(ou: &str) -> String {
    let mut out = String::new();
    push_attr(&mut out, "dn", &ou_dn(ou));
    out.push_str("objectClass: organizationalUnit\n");
    push_attr(&mut out, "ou", ou);
    out.push('\n');
    out
}

/// `ou=<ou>,dc=example,dc=org`.
pub(crate) fn ou_dn(ou: &str) -> String {
    format!("ou={},{BASE_DN}", super::users::escape_dn_value(ou))
}
