//! The process handling the slapd and Samba launchers share: finding a tool, running one server
//! in the foreground with its output in a log file, waiting until it answers, stopping and
//! reaping it, retrying when another process took its port or address, and the `ldapmodify`
//! both use for writes.
//!
//! What differs between the two servers (names, timeouts, how a taken port shows in the log,
//! SIGKILL at once or SIGTERM first) is a [`ServerKind`]; how to tell that the server answers
//! as the instance it should be is the launcher's probe.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Finds a tool on `PATH` or in the sbin directories that a non-root `PATH` often lacks
/// (`slapd`, `slapadd` and `samba` live in `/usr/sbin`). `hint` ends the error: how to install it.
pub(crate) fn find_tool(name: &str, hint: &str) -> io::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("`{name}` not found on PATH or in /usr/sbin; {hint}"),
            )
        })
}

/// Why one start attempt failed.
pub(crate) enum AttemptError {
    /// Another process holds our port or address: try again with a new one.
    Taken(String),
    /// Anything else: give up.
    Fatal(io::Error),
}

impl From<io::Error> for AttemptError {
    fn from(e: io::Error) -> Self {
        AttemptError::Fatal(e)
    }
}

impl AttemptError {
    /// The error of a restart, which has no other port or address to try: a taken one is
    /// `AddrInUse`, `taken` saying what (e.g. `slapd restart: port taken`).
    pub(crate) fn into_restart_error(self, taken: &str) -> io::Error {
        match self {
            AttemptError::Taken(why) => io::Error::new(io::ErrorKind::AddrInUse, format!("{taken}: {why}")),
            AttemptError::Fatal(e) => e,
        }
    }
}

/// Runs `attempt` up to `attempts` times while it fails with [`AttemptError::Taken`]. When
/// all were taken, the error is `AddrInUse`: `<what> after <attempts> attempts; last: <why>`.
pub(crate) fn retry_while_taken(
    attempts: usize,
    what: &str,
    mut attempt: impl FnMut() -> Result<(), AttemptError>,
) -> io::Result<()> {
    let mut last = String::new();
    for _ in 0..attempts {
        match attempt() {
            Ok(()) => return Ok(()),
            Err(AttemptError::Taken(why)) => last = why,
            Err(AttemptError::Fatal(e)) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("{what} after {attempts} attempts; last: {last}"),
    ))
}

/// What the launcher's probe found while [`Server::start`] waits.
pub(crate) enum Probe {
    /// The server answers as this instance.
    Ready,
    /// Not yet; the text is added to the timeout error after "within …" (may be empty).
    NotYet(String),
    /// Someone else answers on our port or address.
    Taken(String),
}

/// What sets one kind of server apart in [`Server`].
pub(crate) struct ServerKind {
    /// The program's name in messages (`slapd`, `samba`).
    pub name: &'static str,
    /// The variable that keeps the instance directory (and so the log), named in errors.
    pub keep_var: &'static str,
    /// How long one start attempt may wait for the server to answer.
    pub ready_timeout: Duration,
    /// The pause between two checks while waiting.
    pub poll: Duration,
    /// Log text by which a server that exited during start-up says its port or address was
    /// taken (then [`AttemptError::Taken`] with the log's end).
    pub taken_markers: &'static [&'static str],
    /// `None`: stop with SIGKILL at once. `Some(t)`: SIGTERM, then SIGKILL after `t`.
    pub stop_grace: Option<Duration>,
    /// Whether the server's stdout goes into the log too (else to `/dev/null`); stderr always
    /// does.
    pub stdout_to_log: bool,
}

/// One server process (at most one at a time) with its log file.
pub(crate) struct Server {
    kind: &'static ServerKind,
    log: PathBuf,
    child: Option<Child>,
    pid: u32,
}

impl Server {
    pub(crate) fn new(kind: &'static ServerKind, log: PathBuf) -> Server {
        Server {
            kind,
            log,
            child: None,
            pid: 0,
        }
    }

    /// The process id of the current (or last) process; 0 before the first start.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// True from a spawn until [`Server::stop`].
    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// One start attempt: spawns `cmd` (stdin closed, output into a fresh log file) and waits
    /// until `probe` (given the process id) says the server answers as this instance. The
    /// process exiting is noticed at once: a taken port or address (the kind's markers in the
    /// log) is [`AttemptError::Taken`], anything else is fatal with the log's end, as is no
    /// answer on `url` within the kind's timeout. On any failure the process is stopped.
    pub(crate) fn start(
        &mut self,
        mut cmd: Command,
        url: &str,
        probe: impl FnMut(u32) -> Probe,
    ) -> Result<(), AttemptError> {
        let log = fs::File::create(&self.log)?;
        let stdout = if self.kind.stdout_to_log {
            Stdio::from(log.try_clone()?)
        } else {
            Stdio::null()
        };
        let child = cmd.stdin(Stdio::null()).stdout(stdout).stderr(log).spawn()?;
        self.pid = child.id();
        self.child = Some(child);
        let result = self.wait_ready(url, probe);
        if result.is_err() {
            self.stop();
        }
        result
    }

    fn wait_ready(&mut self, url: &str, mut probe: impl FnMut(u32) -> Probe) -> Result<(), AttemptError> {
        let kind = self.kind;
        let started = Instant::now();
        loop {
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(e.to_string()),
                None => Some("not started".to_string()),
            };
            if let Some(status) = exited {
                let tail = self.log_tail();
                if kind.taken_markers.iter().any(|m| tail.contains(m)) {
                    return Err(AttemptError::Taken(tail));
                }
                return Err(AttemptError::Fatal(io::Error::other(format!(
                    "{} exited during start-up ({status}); end of {} (kept if {}=1):\n{tail}",
                    kind.name,
                    self.log.display(),
                    kind.keep_var
                ))));
            }
            let note = match probe(self.pid) {
                Probe::Ready => return Ok(()),
                Probe::Taken(why) => return Err(AttemptError::Taken(why)),
                Probe::NotYet(note) => note,
            };
            if started.elapsed() > kind.ready_timeout {
                return Err(AttemptError::Fatal(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} did not answer on {url} within {:?}{note}; log {}:\n{}",
                        kind.name,
                        kind.ready_timeout,
                        self.log.display(),
                        self.log_tail()
                    ),
                )));
            }
            thread::sleep(kind.poll);
        }
    }

    /// Stops the process (see [`ServerKind::stop_grace`]) and always reaps it, so no zombie is
    /// left; a no-op if none runs. The log stays.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(grace) = self.kind.stop_grace {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            // The child is not reaped yet, so its PID cannot have been reused.
            sigterm(child.id());
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The last ~4 KiB of the server's log.
    fn log_tail(&self) -> String {
        let mut buf = Vec::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
            let _ = f.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).trim().to_string()
    }
}

unsafe extern "C" {
    /// kill(2) from the C library that std already links.
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Sends SIGTERM to `pid`.
fn sigterm(pid: u32) {
    const SIGTERM: i32 = 15;
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) takes two integers and touches no memory of ours. Callers pass the
        // PID of their own unreaped child, so it cannot name another process.
        unsafe {
            kill(pid, SIGTERM);
        }
    }
}

/// Runs `ldapmodify -a` (the binary `tool`) against `url` with a simple bind as `bind_dn`, the
/// password read from `pw_file`. The LDIF goes through `file`, which is removed afterwards.
/// Records without a `changetype` are adds. The error carries ldapmodify's output.
pub(crate) fn ldapmodify(
    tool: &Path,
    url: &str,
    bind_dn: &str,
    pw_file: &Path,
    file: &Path,
    ldif: &str,
    extra_args: &[&str],
) -> io::Result<()> {
    fs::write(file, ldif)?;
    let out = Command::new(tool)
        .env("LDAPNOINIT", "1")
        .args(extra_args)
        .args(["-x", "-a", "-H", url, "-D", bind_dn, "-y"])
        .arg(pw_file)
        .arg("-f")
        .arg(file)
        .stdin(Stdio::null())
        .output()?;
    let _ = fs::remove_file(file);
    if out.status.success() {
        return Ok(());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last_lines: Vec<&str> = stdout.lines().rev().take(3).collect();
    Err(io::Error::other(format!(
        "ldapmodify failed ({}): {} [last output: {}]",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        last_lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
    )))
}

/// A name no other instance in this or another process has: `<prefix>-<pid>-<n>-<nanos>`, `n`
/// counted by `counter`. The launchers name their temp directories (and CAs) with it.
pub(crate) fn unique_name(prefix: &str, counter: &AtomicU64) -> String {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}
