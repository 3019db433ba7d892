//! A throwaway CA and server certificate for each Samba DC, made with `openssl`.
//!
//! Samba's auto-generated certificate is issued to `DC1.example.test` with no IP address, so a
//! client that connects to `ldaps://127.0.0.X` cannot verify it, and generating its RSA key
//! adds seconds to every start. Each DC instead gets its own CA and a certificate for its own
//! loopback address (`IP:127.0.0.X`, `DNS:dc1.example.test`), so LDAPS and StartTLS verify
//! fully against [`super::SambaDc::ca_file`], and another instance's CA is a ready-made wrong
//! CA. Keys are EC P-256 (milliseconds to make; GnuTLS and rustls/ring accept them), with the
//! explicit v3 extensions webpki insists on.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::find_tool;

/// Paths of the PEM files written by [`generate`].
pub(super) struct TlsFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Writes `ca.pem`/`ca.key` and `server.pem`/`server.key` into `dir` (created if missing).
/// `label` goes into the CA's common name, so two instances' CAs never share an issuer name.
pub(super) fn generate(dir: &Path, ip: Ipv4Addr, label: &str) -> io::Result<TlsFiles> {
    let openssl = find_tool("openssl")?;
    fs::create_dir_all(dir)?;
    let cnf = dir.join("openssl.cnf");
    fs::write(
        &cnf,
        format!(
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n\
             [ca_ext]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n\
             [server_ext]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
             extendedKeyUsage = serverAuth\nsubjectAltName = IP:{ip},DNS:dc1.example.test\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
        ),
    )?;
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
    ca.args(["-subj", &format!("/CN=sync-test Samba CA {label}")]);
    run(ca, "create the test CA")?;

    let mut server = Command::new(&openssl);
    server.arg("req").args(common).arg(&cnf);
    server.args(["-extensions", "server_ext"]).args(ec);
    server.arg("-CA").arg(&files.ca_cert).arg("-CAkey").arg(&ca_key);
    server.arg("-keyout").arg(&files.server_key);
    server.arg("-out").arg(&files.server_cert);
    server.args(["-subj", "/CN=dc1.example.test"]);
    run(server, "create the server certificate")?;
    // Samba refuses a key file that others can read ("Invalid permissions on TLS private key").
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
