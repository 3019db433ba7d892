//! A throwaway certificate authority and server certificate, made with `openssl`, for each
//! slapd and each HTTPS mailcow emulator.
//!
//! The sync must verify LDAP servers against a CA file (`ldap.ca_file`) and mailcow against
//! `mailcow_ca_file`. To test that for real, every instance gets its own CA, and a server
//! certificate that CA signs for `localhost` and `127.0.0.1`. Since each CA is unique, another
//! instance's CA is a ready-made "wrong CA".
//! The keys are EC P-256 because they take milliseconds to generate, where RSA takes tens of
//! them. GnuTLS (slapd) and rustls/ring (ldap3, ureq, the emulator) all accept P-256.
//! The extensions are explicit (v3, CA:TRUE on the CA, CA:FALSE plus serverAuth on the leaf)
//! because webpki rejects certificates that lack them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::slapd::find_tool;

/// Paths of the PEM files written by [`generate`].
pub(crate) struct TlsFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

const OPENSSL_CNF: &str = "\
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
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// Writes `ca.pem`/`ca.key` and `server.pem`/`server.key` into `dir`. `label` goes into the
/// CA's common name, so two instances' CAs never share an issuer name.
pub(crate) fn generate(dir: &Path, label: &str) -> io::Result<TlsFiles> {
    let openssl = find_tool("openssl")?;
    let cnf = dir.join("openssl.cnf");
    fs::write(&cnf, OPENSSL_CNF)?;
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
    ca.args(["-subj", &format!("/CN=sync-test CA {label}")]);
    run(ca, "create the test CA")?;

    let mut server = Command::new(&openssl);
    server.arg("req").args(common).arg(&cnf);
    server.args(["-extensions", "server_ext"]).args(ec);
    server.arg("-CA").arg(&files.ca_cert).arg("-CAkey").arg(&ca_key);
    server.arg("-keyout").arg(&files.server_key);
    server.arg("-out").arg(&files.server_cert);
    server.args(["-subj", "/CN=localhost"]);
    run(server, "create the server certificate")?;
    Ok(files)
}

fn run(mut cmd: Command, what: &str) -> io::Result<()> {
    let out = cmd.output()?;
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
