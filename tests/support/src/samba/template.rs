//! One provisioned domain, copied for every DC instead of provisioning each time.
//!
//! `samba-tool domain provision` takes 5–7 s on two cores, and copying its result takes a few
//! milliseconds. The first DC a process starts looks for a finished template in
//! `$TMPDIR/sync-test-samba-template-<samba version>-<layout>` and provisions one there if
//! there is none. It provisions into a private directory, then renames it into place, so
//! parallel processes never see half a template, and the first one to finish wins. The template
//! is kept on purpose, as a cache (≈ 33 MB), so the next test binary starts its first DC in
//! under a second too. Every copy shares the template's domain SID and GUIDs, which no test
//! cares about. Objects created in a DC get fresh GUIDs as usual.
//!
//! After provisioning, the Administrator's password is set to never expire, so a template
//! kept for weeks still binds. Set `SYNC_TEST_SAMBA_FRESH=1` to ignore the cached template and
//! provision a new one into it.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{ADMIN_DN, ADMIN_PW, NETBIOS_DOMAIN, REALM, find_tool};

/// Bump when the provisioning options or post-provision edits change, so old caches are
/// not used.
const LAYOUT: &str = "v1";
/// Written last into a finished template.
const MARKER: &str = "template-complete";

static TEMPLATE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The template's directory (it has `private/` with the provisioned databases). The duration
/// is how long provisioning took if this call provisioned, `None` if a template existed.
pub(super) fn get() -> io::Result<(PathBuf, Option<Duration>)> {
    let mut guard = TEMPLATE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = guard.as_ref().filter(|d| d.join(MARKER).is_file()) {
        return Ok((dir.clone(), None));
    }
    let dir = std::env::temp_dir().join(format!("sync-test-samba-template-{}-{LAYOUT}", samba_version()?));
    let fresh = std::env::var_os("SYNC_TEST_SAMBA_FRESH").is_some_and(|v| v == "1");
    let mut took = None;
    if fresh || !dir.join(MARKER).is_file() {
        let t = Instant::now();
        provision_into_place(&dir, fresh)?;
        took = Some(t.elapsed());
    }
    *guard = Some(dir.clone());
    Ok((dir, took))
}

/// `samba --version`, reduced to characters safe in a file name (e.g. `4.17.12-Debian`).
fn samba_version() -> io::Result<String> {
    let out = Command::new(find_tool("samba")?)
        .arg("--version")
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: String = text
        .trim()
        .trim_start_matches("Version ")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.status.success() || v.is_empty() {
        return Err(io::Error::other(format!("`samba --version` failed ({})", out.status)));
    }
    Ok(v)
}

fn provision_into_place(dir: &Path, replace: bool) -> io::Result<()> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let parent = dir.parent().unwrap_or(Path::new("/tmp"));
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("sync-test-samba-template");
    let work = parent.join(format!("{name}.tmp-{}-{nanos}", std::process::id()));
    let result = provision(&work).and_then(|()| {
        if replace || (dir.exists() && !dir.join(MARKER).is_file()) {
            let _ = fs::remove_dir_all(dir);
        }
        match fs::rename(&work, dir) {
            Ok(()) => Ok(()),
            // Another process finished first: use its template.
            Err(_) if dir.join(MARKER).is_file() => Ok(()),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("moving the template to {}: {e}", dir.display()),
            )),
        }
    });
    let _ = fs::remove_dir_all(&work);
    result
}

fn provision(work: &Path) -> io::Result<()> {
    fs::create_dir(work)?;
    fs::set_permissions(work, fs::Permissions::from_mode(0o700))?;
    let mut cmd = Command::new(find_tool("samba-tool")?);
    cmd.args(["domain", "provision", "-s", "/dev/null"])
        .arg(format!("--targetdir={}", work.display()))
        .arg(format!("--realm={}", REALM.to_uppercase()))
        .arg(format!("--domain={NETBIOS_DOMAIN}"))
        .args(["--server-role=dc", "--dns-backend=NONE", "--use-rfc2307"])
        .args(["--host-name=dc1", "--host-ip=127.0.0.2"])
        .arg(format!("--adminpass={ADMIN_PW}"))
        .arg("--option=ldb:nosync=true")
        // samba-tool is Python and only imports Samba's modules under /usr/bin/python3.
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME");
    run(cmd, "samba-tool domain provision", &work.join("provision.log"))?;

    let ldif = work.join("admin-never-expires.ldif");
    fs::write(
        &ldif,
        // 0x10200 = NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD
        format!("dn: {ADMIN_DN}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 66048\n-\n"),
    )?;
    let mut cmd = Command::new(find_tool("ldbmodify")?);
    cmd.arg("-H").arg(work.join("private/sam.ldb")).arg(&ldif);
    run(cmd, "ldbmodify of the template", &work.join("ldbmodify.log"))?;
    fs::write(work.join(MARKER), "provisioned by sync-test-support\n")?;
    Ok(())
}

/// Runs `cmd` with its output in `log`; on failure the error carries the log's end.
fn run(mut cmd: Command, what: &str, log: &Path) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let _ = fs::write(log, &text);
    if out.status.success() {
        return Ok(());
    }
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    Err(io::Error::other(format!(
        "{what} failed ({}):\n{}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )))
}
