//! Prometheus node_exporter textfile metrics, written after each pass.
//!
//! node_exporter's textfile collector reads `*.prom` files from a directory; a half-written
//! file would be read as garbage, so the file is written beside its target and renamed over it.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::edge::random::random_bytes;
use crate::edge::state_db::RunRecord;
use crate::error::{Error, Result};

/// A gauge with one sample per `{action="…"}` label.
fn by_action(out: &mut String, name: &str, help: &str, counts: &[(&str, usize)]) {
    let labels: Vec<(String, f64)> = counts
        .iter()
        .map(|(a, n)| (format!("{{action=\"{a}\"}}"), *n as f64))
        .collect();
    let samples: Vec<(&str, f64)> = labels.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    gauge(out, name, help, &samples);
}

fn gauge(out: &mut String, name: &str, help: &str, samples: &[(&str, f64)]) {
    let _ = writeln!(out, "# HELP mailcow_ldap_sync_{name} {help}");
    let _ = writeln!(out, "# TYPE mailcow_ldap_sync_{name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(out, "mailcow_ldap_sync_{name}{labels} {value}");
    }
}

/// The metrics of one pass. `managed` and `last_success` come from the state database.
pub fn render(run: &RunRecord, duration: Duration, managed: Option<usize>, last_success: Option<i64>) -> String {
    let mut out = String::new();
    gauge(
        &mut out,
        "last_run_timestamp_seconds",
        "When the last pass finished (unix time).",
        &[("", run.finished as f64)],
    );
    gauge(
        &mut out,
        "last_run_duration_seconds",
        "How long the last pass took.",
        &[("", duration.as_secs_f64())],
    );
    gauge(
        &mut out,
        "last_run_exit_code",
        "Exit code of the last pass (0 ok, 1 unreachable, 3 items failed, 4 guard, …).",
        &[("", f64::from(run.exit_code))],
    );
    if let Some(ts) = last_success {
        gauge(
            &mut out,
            "last_success_timestamp_seconds",
            "When the last pass with exit code 0 finished (unix time).",
            &[("", ts as f64)],
        );
    }
    let actions = [
        ("created", run.counts.created),
        ("updated", run.counts.updated),
        ("disabled", run.counts.disabled),
        ("offboarded", run.counts.offboarded),
        ("deleted", run.counts.deleted),
        ("unchanged", run.counts.unchanged),
        ("skipped", run.counts.skipped),
        ("failed", run.counts.failed),
    ];
    by_action(
        &mut out,
        "last_run_mailboxes",
        "Mailboxes by what the last pass did to them.",
        &actions,
    );
    let admins = [
        ("created", run.counts.admins_created),
        ("updated", run.counts.admins_updated),
        ("deleted", run.counts.admins_deleted),
    ];
    by_action(
        &mut out,
        "last_run_domain_admins",
        "Domain admins by what the last pass did to them (domain_admins).",
        &admins,
    );
    let send_as = [
        ("granted", run.counts.send_as_granted),
        ("revoked", run.counts.send_as_revoked),
    ];
    by_action(
        &mut out,
        "last_run_send_as",
        "Send-as grants (groups.as sender_acl) the last pass added and took back.",
        &send_as,
    );
    gauge(
        &mut out,
        "last_run_domains_created",
        "Mail domains the last pass added in mailcow (sync.create_domains).",
        &[("", run.counts.domains_created as f64)],
    );
    gauge(
        &mut out,
        "last_run_failures",
        "Items that failed in the last pass.",
        &[("", run.counts.failed as f64)],
    );
    gauge(
        &mut out,
        "ldap_users",
        "Usable LDAP users seen by the last pass.",
        &[("", run.users as f64)],
    );
    if let Some(n) = managed {
        gauge(
            &mut out,
            "managed_mailboxes",
            "Mailboxes this tool manages.",
            &[("", n as f64)],
        );
    }
    out
}

/// Write `text` to `path` atomically: a temporary file in the same directory, then rename.
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, mut file) = create_temp(dir, &name).map_err(|e| Error::io(path, "write the metrics file", e))?;
    let result = (|| {
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, "write the metrics file", e)
    })
}

/// Tries at a fresh temporary name before giving up.
const TEMP_ATTEMPTS: usize = 8;

/// A new file `.<name>.<random>.tmp` in `dir`, mode 0644 (node_exporter must read it). The
/// textfile directory may be writable by others: a predictable name would let them plant a
/// symlink there and have this tool write through it, so the name is random and the file
/// must not exist yet (`create_new` also refuses a symlink, dangling or not).
fn create_temp(dir: &Path, name: &str) -> std::io::Result<(PathBuf, File)> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o644);
    }
    for _ in 0..TEMP_ATTEMPTS {
        let random: String = random_bytes(8).iter().map(|b| format!("{b:02x}")).collect();
        let tmp = dir.join(format!(".{name}.{random}.tmp"));
        match options.open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("{TEMP_ATTEMPTS} fresh temporary names in {} all existed", dir.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_textfile_format() {
        let run = RunRecord {
            finished: 1_800_000_000,
            exit_code: 3,
            users: 10,
            counts: crate::core::model::Counts {
                created: 2,
                failed: 1,
                ..Default::default()
            },
            ..RunRecord::default()
        };
        let text = render(&run, Duration::from_millis(1500), Some(9), Some(1_799_999_000));
        assert!(text.contains("mailcow_ldap_sync_last_run_exit_code 3\n"));
        assert!(text.contains("mailcow_ldap_sync_last_run_mailboxes{action=\"created\"} 2\n"));
        assert!(text.contains("mailcow_ldap_sync_last_run_duration_seconds 1.5\n"));
        assert!(text.contains("mailcow_ldap_sync_managed_mailboxes 9\n"));
        assert!(text.contains("# TYPE mailcow_ldap_sync_ldap_users gauge\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap_or_else(|_| panic!("bad sample {line}"));
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_planted_at_a_temporary_name_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("mls-metrics-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        // The name the tool used to write through, predictable from its pid.
        let old_name = dir.join(format!(".sync.prom.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_name).unwrap();

        let target = dir.join("sync.prom");
        write_atomically(&target, "metric 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "metric 1\n");
        assert!(!std::fs::symlink_metadata(&target).unwrap().file_type().is_symlink());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o022, 0, "not writable by group or others: {mode:o}");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp") && !old_name.ends_with(n))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");

        // Two temporary files of the same target never share a name.
        let (first, _) = create_temp(&dir, "sync.prom").unwrap();
        let (second, _) = create_temp(&dir, "sync.prom").unwrap();
        assert_ne!(first, second);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
