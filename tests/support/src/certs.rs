//! A throwaway certificate authority and server certificate, made with `openssl`, for each
//! slapd, each Samba DC and each HTTPS mailcow emulator.
//!
//! The sync must verify LDAP servers against a CA file (`ldap.ca_file`) and mailcow against
//! `mailcow_ca_file`. To test that for real, every instance gets its own CA, and a server
//! certificate that CA signs for the names a client uses to reach it: slapd and the emulator
//! get `DNS:localhost,IP:127.0.0.1` ([`generate_localhost`]); a Samba DC gets its own loopback
//! address and `DNS:dc1.example.test`, since Samba's auto-generated certificate has no IP
//! address (and its RSA key adds seconds to every start). Since each CA is unique, another
//! instance's CA is a ready-made "wrong CA".
//! The keys are EC P-256 because they take milliseconds to generate, where RSA takes tens of
//! them. GnuTLS (slapd, Samba) and rustls/ring (ldap3, ureq, the emulator) all accept P-256.
//! The extensions are explicit (v3, CA:TRUE on the CA, CA:FALSE plus serverAuth on the leaf)
//! because webpki rejects certificates that lack them.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::slapd::find_tool;

/// Paths of the PEM files written by [`generate`].
pub(crate) struct TlsFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// The names in the certificates [`generate`] makes.
pub(crate) struct CertNames<'a> {
    /// The CA's common name. Make it unique per instance, so two CAs never share an issuer name.
    pub ca_cn: &'a str,
    /// The server certificate's common name.
    pub server_cn: &'a str,
    /// The server certificate's `subjectAltName` in openssl's syntax, e.g.
    /// `DNS:localhost,IP:127.0.0.1`.
    pub alt_names: &'a str,
}

/// The openssl config: `[ca_ext]` for the CA, `[server_ext]` for the leaf with `alt_names`.
fn openssl_cnf(alt_names: &str) -> String {
    format!(
        "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = {alt_names}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"
    )
}

/// [`generate`] for a server on `localhost`/`127.0.0.1` (slapd, the emulator). `label` goes
/// into the CA's common name `sync-test CA <label>`.
pub(crate) fn generate_localhost(dir: &Path, label: &str) -> io::Result<TlsFiles> {
    generate(
        dir,
        &CertNames {
            ca_cn: &format!("sync-test CA {label}"),
            server_cn: "localhost",
            alt_names: "DNS:localhost,IP:127.0.0.1",
        },
    )
}

/// Writes `ca.pem`/`ca.key` and `server.pem`/`server.key` into `dir` (created if missing).
/// The server key is readable by its owner only: Samba refuses one that others can read
/// ("Invalid permissions on TLS private key").
pub(crate) fn generate(dir: &Path, names: &CertNames<'_>) -> io::Result<TlsFiles> {
    let openssl = find_tool("openssl")?;
    fs::create_dir_all(dir)?;
    let cnf = dir.join("openssl.cnf");
    fs::write(&cnf, openssl_cnf(names.alt_names))?;
    let files = TlsFiles {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    };
    let ca_key = dir.join("ca.key");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let common = ["-x509", "-nodes", "-days", "3650", "-config"];

    let mut ca = Command::new(&openssl);
    ca.arg("req").args(common).arg(&cnf);
    ca.args(["-extensions", "ca_ext"]).args(ec);
    ca.arg("-keyout").arg(&ca_key).arg("-out").arg(&files.ca_cert);
    ca.args(["-subj", &format!("/CN={}", names.ca_cn)]);
    run(ca, "create the test CA")?;

    let mut server = Command::new(&openssl);
    server.arg("req").args(common).arg(&cnf);
    server.args(["-extensions", "server_ext"]).args(ec);
    server.arg("-CA").arg(&files.ca_cert).arg("-CAkey").arg(&ca_key);
    server.arg("-keyout").arg(&files.server_key);
    server.arg("-out").arg(&files.server_cert);
    server.args(["-subj", &format!("/CN={}", names.server_cn)]);
    run(server, "create the server certificate")?;
    fs::set_permissions(&files.server_key, fs::Permissions::from_mode(0o600))?;
    Ok(files)
}

fn run(mut cmd: Command, what: &str) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "openssl failed to {what} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
