//! Benchmarks of mailcow-ldap-sync against a real slapd and the mailcow emulator (issue 7).
//! Run by `bench/run.sh`; see `bench/README.md` for what is measured and why.
//!
//! ```text
//! bench run   --tool PATH [--sizes 1000,10000] [--reps R] [--import-reps R]
//!             [--conc-users 500] [--conc-delay-ms 20] [--conc 1,2,4,8] [--no-conc] [--no-version]
//! bench serve --tool PATH --users N [--dir DIR] [--incr [--sessionlog N]]  # set up + import, then hold
//! bench incr  --tool PATH [--sizes 10000,100000] [--reps R] [--sessionlog N]
//! ```
//!
//! `bench incr` (issue 16): slapd with the syncprov overlay and no size limit for the reader,
//! the config with `"incremental": "syncrepl"`; after the import, per repetition: a `--full`
//! pass (unchanged), an unchanged incremental pass, and an incremental pass after 1 % of the
//! users got a new `sn`. Each is compared with the full pass's median wall time.
//!
//! For every N: slapd with N users (size limit 500, so only paging sees them all; the tool binds
//! as the reader, never the rootdn), the emulator in this process without delays, and then
//!
//! * the initial import (empty mailcow, empty state),
//! * the same import with `--json` (the report to a file; its size is noted),
//! * the unchanged pass (the state and mailcow as the import left them),
//! * the daily full pass: the unchanged pass after every state row's `last_seen` was moved back
//!   two days (`sqlite3`), so every user is compared in full and every row written again,
//! * a 1 %-changed pass (a new `sn`, so a new mailbox name, for every 100th user),
//! * the floor: a paged `ldapsearch` of the same entries and attributes as the same DN, plus one
//!   `curl` of `get/mailbox/all`, each to /dev/null,
//! * the emulator alone: `curl` of `get/mailbox/all` and of `get/mailbox/reduced`.
//!
//! Every run goes through `/usr/bin/time -v` (user+sys CPU, peak RSS); wall time is measured
//! here around the child. Medians of the repetitions are printed; the ratio ours/floor is the
//! figure that survives a shared machine.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sync_test_support::mailcow::{DomainSpec, Emulator, EmulatorOptions, RW_KEY};
use sync_test_support::slapd::{Slapd, SlapdOptions, generate_users};

const DOMAIN: &str = "example.org";
/// slapd's size limit for the reader: below every N, so only a paged search sees all users.
const SIZE_LIMIT: usize = 500;
/// RFC 2696 page size for the tool and for ldapsearch.
const PAGE: usize = 500;
const FILTER: &str = "(objectClass=inetOrgPerson)";

struct Opts {
    tool: PathBuf,
    sizes: Vec<usize>,
    reps: Option<usize>,
    import_reps: Option<usize>,
    conc_users: usize,
    conc_delay_ms: u64,
    conc: Vec<usize>,
    no_conc: bool,
    no_version: bool,
    /// `bench incr`: slapd's `syncprov-sessionlog` (None: no session log).
    sessionlog: Option<usize>,
    /// `bench serve --incr`: set up as `bench incr` does.
    incr: bool,
    // serve
    users: usize,
    dir: Option<PathBuf>,
}

fn usage() -> &'static str {
    "usage: bench run --tool PATH [--sizes 1000,10000] [--reps R] [--import-reps R] \
     [--conc-users N] [--conc-delay-ms MS] [--conc 1,2,4,8] [--no-conc] [--no-version]\n       \
     bench serve --tool PATH --users N [--dir DIR] [--incr [--sessionlog N]]\n       \
     bench incr  --tool PATH [--sizes 10000,100000] [--reps R] [--sessionlog N]"
}

fn parse_list(v: &str) -> Result<Vec<usize>, String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s = s.trim().to_ascii_lowercase();
            let (num, mul) = match s.strip_suffix('k') {
                Some(n) => (n.to_string(), 1000),
                None => (s.clone(), 1),
            };
            num.parse::<usize>()
                .map(|n| n * mul)
                .map_err(|_| format!("not a number: {s}"))
        })
        .collect()
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        tool: PathBuf::new(),
        sizes: vec![1000, 10_000],
        reps: None,
        import_reps: None,
        conc_users: 500,
        conc_delay_ms: 20,
        conc: vec![1, 2, 4, 8],
        no_conc: false,
        no_version: false,
        sessionlog: None,
        incr: false,
        users: 1000,
        dir: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|_| format!("{flag}: not a number: {v}"));
        match flag.as_str() {
            "--tool" => o.tool = PathBuf::from(value()?),
            "--sizes" => o.sizes = parse_list(&value()?)?,
            "--reps" => o.reps = Some(num(value()?)?.max(1)),
            "--import-reps" => o.import_reps = Some(num(value()?)?.max(1)),
            "--conc-users" => o.conc_users = num(value()?)?,
            "--conc-delay-ms" => o.conc_delay_ms = num(value()?)? as u64,
            "--conc" => o.conc = parse_list(&value()?)?,
            "--no-conc" => o.no_conc = true,
            "--no-version" => o.no_version = true,
            "--users" => o.users = parse_list(&value()?)?.first().copied().unwrap_or(1000),
            "--dir" => o.dir = Some(PathBuf::from(value()?)),
            "--sessionlog" => o.sessionlog = Some(num(value()?)?),
            "--incr" => o.incr = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    if o.tool.as_os_str().is_empty() {
        return Err("--tool PATH is required".into());
    }
    o.tool = std::fs::canonicalize(&o.tool).map_err(|e| format!("{}: {e}", o.tool.display()))?;
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) if c == "run" || c == "serve" || c == "incr" => (c.clone(), r.to_vec()),
        _ => {
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };
    let opts = match parse(&rest) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let result = match cmd.as_str() {
        "serve" => serve(&opts),
        "incr" => incr(&opts),
        _ => run(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

// ------------------------------------------------------------------ measuring

/// One measured child process.
#[derive(Clone, Debug, Default)]
struct Sample {
    wall: f64,
    /// user + sys seconds (10 ms resolution, from /usr/bin/time).
    cpu: f64,
    /// peak RSS, KiB.
    rss_kib: u64,
    code: i32,
    /// CPU the servers spent meanwhile: slapd (10 ms ticks) + the in-process emulator.
    server_cpu: f64,
}

/// Run `cmd` under `/usr/bin/time -v`, stdout to `stdout` (or null), stderr captured.
fn measure(program: &Path, args: &[String], cwd: &Path, stdout_to: Option<&Path>) -> Result<(Sample, String), String> {
    let time_out = cwd.join(format!("time-{}.txt", std::process::id()));
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v").arg("-o").arg(&time_out).arg(program).args(args);
    cmd.current_dir(cwd).env("LDAPNOINIT", "1").stdin(Stdio::null());
    match stdout_to {
        Some(p) => {
            cmd.stdout(std::fs::File::create(p).map_err(|e| e.to_string())?);
        }
        None => {
            cmd.stdout(Stdio::null());
        }
    }
    cmd.stderr(Stdio::piped());
    let cpu_before = children_cpu();
    let started = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("run /usr/bin/time {}: {e}", program.display()))?;
    let wall = started.elapsed().as_secs_f64();
    let cpu_precise = children_cpu().zip(cpu_before).map(|(a, b)| a - b);
    let text = std::fs::read_to_string(&time_out).map_err(|e| format!("read {}: {e}", time_out.display()))?;
    let _ = std::fs::remove_file(&time_out);
    let field = |name: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
    };
    let f = |name: &str| field(name).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0);
    let sample = Sample {
        wall,
        // /usr/bin/time prints 10 ms steps; the kernel's child accounting has µs (it includes
        // /usr/bin/time's own ≈ 1 ms).
        cpu: cpu_precise.unwrap_or(f("User time (seconds)") + f("System time (seconds)")),
        rss_kib: f("Maximum resident set size (kbytes)") as u64,
        code: field("Exit status").and_then(|v| v.trim().parse().ok()).unwrap_or(-1),
        server_cpu: 0.0,
    };
    Ok((sample, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// user + sys seconds of every reaped child so far (`getrusage(RUSAGE_CHILDREN)`): the
/// difference around one child is that child's CPU with µs resolution. slapd is a child too,
/// but it is reaped only at the end, so it never counts.
fn children_cpu() -> Option<f64> {
    rusage_cpu(-1) // RUSAGE_CHILDREN
}

/// user + sys seconds of this process: the in-process emulator's threads (the main thread only
/// waits while a child runs).
fn self_cpu() -> Option<f64> {
    rusage_cpu(0) // RUSAGE_SELF
}

/// user + sys seconds of another process from `/proc/PID/stat` (clock ticks, assumed 100 Hz).
fn proc_cpu(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn rusage_cpu(who: i32) -> Option<f64> {
    #[repr(C)]
    struct RUsage {
        utime: [i64; 2],
        stime: [i64; 2],
        rest: [i64; 14],
    }
    unsafe extern "C" {
        fn getrusage(who: i32, usage: *mut RUsage) -> i32;
    }
    let mut ru = RUsage {
        utime: [0; 2],
        stime: [0; 2],
        rest: [0; 14],
    };
    // SAFETY: `ru` has the layout of `struct rusage` on 64-bit Linux (2 timevals + 14 longs).
    if unsafe { getrusage(who, &mut ru) } != 0 {
        return None;
    }
    let secs = |t: [i64; 2]| t[0] as f64 + t[1] as f64 / 1e6;
    Some(secs(ru.utime) + secs(ru.stime))
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn rusage_cpu(_who: i32) -> Option<f64> {
    None
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians of several samples.
#[derive(Clone, Debug, Default)]
struct Stat {
    wall: f64,
    cpu: f64,
    rss_kib: u64,
    /// min..max of the walls, to show the spread.
    wall_min: f64,
    wall_max: f64,
    n: usize,
    /// Median of (own CPU + the servers' CPU).
    total_cpu: f64,
}

fn stat(samples: &[Sample]) -> Stat {
    let walls: Vec<f64> = samples.iter().map(|s| s.wall).collect();
    Stat {
        wall: median(walls.clone()),
        cpu: median(samples.iter().map(|s| s.cpu).collect()),
        rss_kib: median(samples.iter().map(|s| s.rss_kib as f64).collect()) as u64,
        wall_min: walls.iter().copied().fold(f64::INFINITY, f64::min),
        wall_max: walls.iter().copied().fold(0.0, f64::max),
        n: samples.len(),
        total_cpu: median(samples.iter().map(|s| s.cpu + s.server_cpu).collect()),
    }
}

fn fmt_s(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

fn fmt_mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

// ---------------------------------------------------------------- environment

struct Env {
    slapd: Slapd,
    emu: Emulator,
    dir: PathBuf,
    tool: PathBuf,
    /// `ldap.incremental` for the config (`bench incr`), None: off.
    incremental: Option<&'static str>,
}

/// How `bench incr` sets up slapd: the syncprov overlay, and its session log.
#[derive(Clone, Copy, Debug)]
struct Incr {
    sessionlog: Option<usize>,
}

fn roomy_domain() -> DomainSpec {
    DomainSpec {
        name: DOMAIN.into(),
        mailboxes: 10_000_000,
        aliases: 10_000_000,
        defquota_mib: 3072,
        maxquota_mib: 1 << 20,
        quota_mib: 1 << 40,
        ..DomainSpec::default()
    }
}

const MAPPING_ATTRS: [&str; 9] = [
    "mail",
    "givenName",
    "sn",
    "userPassword",
    "MailQuota",
    "mailActive",
    "mailTLSEnforceIn",
    "mailTLSEnforceOut",
    "entryUUID",
];

impl Env {
    fn start(tool: &Path, users: usize, dir: PathBuf, emu_opts: EmulatorOptions) -> Result<Env, String> {
        Env::start_with(tool, users, dir, emu_opts, None)
    }

    /// [`Env::start`]; with `incr`, slapd has the syncprov overlay and no size limit for the
    /// reader (a sync search is not paged), and the config says `"incremental": "syncrepl"`.
    fn start_with(
        tool: &Path,
        users: usize,
        dir: PathBuf,
        emu_opts: EmulatorOptions,
        incr: Option<Incr>,
    ) -> Result<Env, String> {
        let t = Instant::now();
        let slapd = Slapd::start(SlapdOptions {
            users: generate_users(users, DOMAIN),
            size_limit: if incr.is_some() { 0 } else { SIZE_LIMIT },
            tls: false,
            syncprov: incr.is_some(),
            sessionlog: incr.and_then(|i| i.sessionlog),
        })
        .map_err(|e| format!("slapd: {e}"))?;
        let emu = Emulator::start(emu_opts).map_err(|e| format!("emulator: {e}"))?;
        emu.add_domain(roomy_domain());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        eprintln!(
            "  slapd with {users} users on {} and the emulator on {} ready in {:.1} s",
            slapd.ldap_url(),
            emu.url(),
            t.elapsed().as_secs_f64()
        );
        let env = Env {
            slapd,
            emu,
            dir,
            tool: tool.to_path_buf(),
            incremental: incr.map(|_| "syncrepl"),
        };
        env.write_config(None)?;
        Ok(env)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("state.sqlite3")
    }

    /// The config every pass uses; `concurrency` None leaves the tool's default.
    fn write_config(&self, concurrency: Option<usize>) -> Result<(), String> {
        let mut sync = json!({ "max_removals": "100%" });
        if let Some(c) = concurrency {
            sync["concurrency"] = json!(c);
        }
        if self.incremental.is_some() {
            // The bench's --full passes are the full ones; none is forced by the clock.
            sync["full_every"] = json!("1d");
        }
        let mut config = json!({
            "ldap": {
                "uri": self.slapd.ldap_url(),
                "bind_dn": self.slapd.reader_dn(),
                "bind_pw": self.slapd.reader_pw(),
                "user_search_base": self.slapd.base_dn(),
                "user_search_filter": FILTER,
                "page_size": PAGE,
                "user_mapping": {
                    "mail": "mail", "firstname": "givenName", "lastname": "sn",
                    "password": "userPassword", "quota": "MailQuota", "active": "mailActive",
                    "tls_enforce_in": "mailTLSEnforceIn", "tls_enforce_out": "mailTLSEnforceOut",
                    "uid": "entryUUID"
                }
            },
            "mailcow_host": self.emu.url(),
            "mailcow_api_key": RW_KEY,
            "state_file": "state.sqlite3",
            "sync": sync
        });
        if let Some(mode) = self.incremental {
            config["ldap"]["incremental"] = json!(mode);
        }
        let path = self.config_path();
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        Ok(())
    }

    fn server_cpu(&self) -> f64 {
        self_cpu().unwrap_or(0.0) + proc_cpu(self.slapd.pid()).unwrap_or(0.0)
    }

    /// [`measure`], plus the CPU slapd and the emulator spent meanwhile.
    fn measure(&self, program: &Path, args: &[String], stdout_to: Option<&Path>) -> Result<(Sample, String), String> {
        let before = self.server_cpu();
        let (mut sample, stderr) = measure(program, args, &self.dir, stdout_to)?;
        sample.server_cpu = (self.server_cpu() - before).max(0.0);
        Ok((sample, stderr))
    }

    /// One pass of the tool; it must exit 0.
    fn pass(&self) -> Result<(Sample, Requests, String), String> {
        self.pass_with(&[], None)
    }

    /// [`Env::pass`] with extra arguments, stdout to `stdout_to` (or null).
    fn pass_with(&self, extra: &[&str], stdout_to: Option<&Path>) -> Result<(Sample, Requests, String), String> {
        self.emu.reset_counts();
        let mut args = vec!["-c".to_string(), self.config_path().display().to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        let (sample, stderr) = self.measure(&self.tool, &args, stdout_to)?;
        if sample.code != 0 {
            return Err(format!("the tool exited {}:\n{}", sample.code, tail(&stderr, 20)));
        }
        Ok((sample, Requests::of(&self.emu), stderr))
    }

    /// Empty mailcow (one roomy domain) and no state: ready for an initial import.
    fn reset_target(&self) {
        self.emu.reset();
        self.emu.add_domain(roomy_domain());
        for suffix in ["", "-wal", "-shm", "-journal", ".lock"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.state_file().display()));
        }
    }

    fn ldapsearch_args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "-x",
            "-LLL",
            "-o",
            "ldif-wrap=no",
            "-H",
            &self.slapd.ldap_url(),
            "-D",
            self.slapd.reader_dn(),
            "-w",
            self.slapd.reader_pw(),
            "-b",
            self.slapd.base_dn(),
            "-E",
            &format!("pr={PAGE}/noprompt"),
            FILTER,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(MAPPING_ATTRS.iter().map(|s| s.to_string()));
        a
    }

    fn curl_args(&self, endpoint: &str) -> Vec<String> {
        vec![
            "-sS".into(),
            "--fail".into(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{size_download}".into(),
            "-H".into(),
            format!("X-API-Key: {RW_KEY}"),
            format!("{}/api/v1/{endpoint}", self.emu.url()),
        ]
    }

    /// A paged ldapsearch to /dev/null; checks the entry count via a count file.
    fn ldapsearch(&self) -> Result<Sample, String> {
        let (s, err) = self.measure(Path::new("/usr/bin/ldapsearch"), &self.ldapsearch_args(), None)?;
        if s.code != 0 {
            return Err(format!("ldapsearch exited {}: {}", s.code, tail(&err, 5)));
        }
        Ok(s)
    }

    /// One curl of an endpoint; returns the sample and the bytes downloaded.
    fn curl(&self, endpoint: &str) -> Result<(Sample, u64), String> {
        let out = self.dir.join("curl.out");
        let (s, err) = self.measure(Path::new("/usr/bin/curl"), &self.curl_args(endpoint), Some(&out))?;
        if s.code != 0 {
            return Err(format!("curl {endpoint} exited {}: {}", s.code, tail(&err, 5)));
        }
        let bytes = std::fs::read_to_string(&out)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        Ok((s, bytes))
    }

    /// One statement through the `sqlite3` CLI on the state file; its output, trimmed.
    fn state_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("sqlite3")
            .arg(self.state_file())
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("sqlite3: {e} (apt-get install sqlite3)"))?;
        if !out.status.success() {
            return Err(format!(
                "sqlite3 {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Move every state row's `last_seen` back by `secs`, so the next pass finds no row seen
    /// within the last day and compares every user in full (as once a day in production).
    /// Returns the rows aged.
    fn age_state(&self, secs: i64) -> Result<usize, String> {
        let out = self.state_sql(&format!(
            "UPDATE mailbox SET last_seen = last_seen - {secs}; SELECT changes();"
        ))?;
        out.parse().map_err(|_| format!("sqlite3 changes(): {out:?}"))
    }

    /// State rows whose `last_seen` is more than a day old.
    fn stale_rows(&self) -> Result<usize, String> {
        let out = self.state_sql("SELECT count(*) FROM mailbox WHERE last_seen <= strftime('%s', 'now') - 86400;")?;
        out.parse().map_err(|_| format!("sqlite3 count(*): {out:?}"))
    }

    /// Give every 100th user (offset `round`) a new `sn`, in one bulk ldapmodify as rootdn.
    fn change_one_percent(&self, users: usize, round: usize) -> Result<usize, String> {
        let mut ldif = String::new();
        let mut n = 0;
        let mut i = 1 + round % 100;
        while i <= users {
            let _ = write!(
                ldif,
                "dn: uid=user{i:05},ou=people,{}\nchangetype: modify\nreplace: sn\nsn: Changed{round}\n-\n\n",
                self.slapd.base_dn()
            );
            n += 1;
            i += 100;
        }
        self.slapd.apply_ldif(&ldif).map_err(|e| format!("ldapmodify: {e}"))?;
        Ok(n)
    }
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Requests of one pass, by method and endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Requests {
    by: BTreeMap<String, usize>,
    writes: usize,
    mailbox_reads: usize,
}

impl Requests {
    fn of(emu: &Emulator) -> Requests {
        let mut r = Requests::default();
        for rec in emu.requests() {
            let path = rec.path.strip_prefix("/api/v1/").unwrap_or(&rec.path);
            if rec.method == "POST" {
                r.writes += 1;
            }
            if rec.method == "GET" && path.starts_with("get/mailbox/") {
                r.mailbox_reads += 1;
            }
            *r.by.entry(format!("{} {path}", rec.method)).or_default() += 1;
        }
        r
    }

    fn short(&self) -> String {
        self.by
            .iter()
            .map(|(k, n)| {
                let k = k.replace("GET get/", "").replace("POST ", "");
                format!("{k} {n}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// ------------------------------------------------------------------ the suite

struct Row {
    n: usize,
    pass: &'static str,
    ours: Stat,
    requests: Requests,
    floor: Option<Floor>,
    note: String,
}

#[derive(Clone, Debug)]
struct Floor {
    ldap: Stat,
    curl: Stat,
    /// Sum of the medians of the two halves.
    wall: f64,
    cpu: f64,
    /// Clients + servers.
    total_cpu: f64,
}

struct Alone {
    n: usize,
    all: Stat,
    all_bytes: u64,
    reduced: Stat,
    reduced_bytes: u64,
}

fn reps_for(n: usize, given: Option<usize>) -> usize {
    given.unwrap_or(if n >= 50_000 { 3 } else { 5 })
}

fn import_reps_for(n: usize, given: Option<usize>) -> usize {
    given.unwrap_or(if n >= 50_000 { 1 } else { 3 })
}

fn bench_size(opts: &Opts, n: usize, root: &Path, rows: &mut Vec<Row>, alone: &mut Vec<Alone>) -> Result<(), String> {
    eprintln!("== N = {n}");
    let env = Env::start(&opts.tool, n, root.join(format!("n{n}")), EmulatorOptions::default())?;
    let reps = reps_for(n, opts.reps);

    // Initial import: empty mailcow, no state.
    let import_reps = import_reps_for(n, opts.import_reps);
    let mut imports = Vec::new();
    let mut import_req = Requests::default();
    for r in 0..import_reps {
        env.reset_target();
        let (s, req, _) = env.pass()?;
        eprintln!(
            "  import #{}: {} wall, {} peak",
            r + 1,
            fmt_s(s.wall),
            fmt_mib(s.rss_kib)
        );
        if env.emu.mailbox_count() != n {
            return Err(format!("import made {} mailboxes, not {n}", env.emu.mailbox_count()));
        }
        imports.push(s);
        import_req = req;
    }

    // The same import with --json, the report to a file. The last one leaves the synced state
    // behind.
    let report = env.dir.join("report.json");
    let mut json_imports = Vec::new();
    let mut json_req = Requests::default();
    let mut json_bytes = 0;
    for r in 0..import_reps {
        env.reset_target();
        let (s, req, _) = env.pass_with(&["--json"], Some(&report))?;
        json_bytes = std::fs::metadata(&report)
            .map_err(|e| format!("{}: {e}", report.display()))?
            .len();
        eprintln!(
            "  import --json #{}: {} wall, {} peak, report {:.1} MB",
            r + 1,
            fmt_s(s.wall),
            fmt_mib(s.rss_kib),
            json_bytes as f64 / 1e6
        );
        if env.emu.mailbox_count() != n {
            return Err(format!(
                "import --json made {} mailboxes, not {n}",
                env.emu.mailbox_count()
            ));
        }
        json_imports.push(s);
        json_req = req;
    }
    let _ = std::fs::remove_file(&report);

    // Unchanged passes interleaved with the floor and the emulator alone.
    let (mut ours, mut ldap, mut curl_all, mut curl_red) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut all_bytes, mut red_bytes) = (0, 0);
    let mut unchanged_req = None::<Requests>;
    for r in 0..reps {
        let (s, req, _) = env.pass()?;
        if let Some(prev) = unchanged_req.as_ref().filter(|prev| **prev != req) {
            return Err(format!(
                "unchanged passes differ in requests: {} vs {}",
                prev.short(),
                req.short()
            ));
        }
        unchanged_req = Some(req);
        ours.push(s);
        ldap.push(env.ldapsearch()?);
        let (c, b) = env.curl("get/mailbox/all")?;
        curl_all.push(c);
        all_bytes = b;
        let (c, b) = env.curl("get/mailbox/reduced")?;
        curl_red.push(c);
        red_bytes = b;
        eprintln!(
            "  unchanged #{}: {} (floor {} + {})",
            r + 1,
            fmt_s(ours.last().unwrap().wall),
            fmt_s(ldap.last().unwrap().wall),
            fmt_s(curl_all.last().unwrap().wall)
        );
    }
    let floor = {
        let (l, c) = (stat(&ldap), stat(&curl_all));
        Floor {
            wall: l.wall + c.wall,
            cpu: l.cpu + c.cpu,
            total_cpu: l.total_cpu + c.total_cpu,
            ldap: l,
            curl: c,
        }
    };
    alone.push(Alone {
        n,
        all: stat(&curl_all),
        all_bytes,
        reduced: stat(&curl_red),
        reduced_bytes: red_bytes,
    });

    // Daily full passes: the unchanged pass after every row's last_seen was aged by two days,
    // so no user takes the fast path and every row is written again.
    let mut daily = Vec::new();
    let mut daily_req = Requests::default();
    let mut aged = 0;
    for r in 0..reps {
        aged = env.age_state(2 * 86_400)?;
        let (s, req, _) = env.pass()?;
        let stale = env.stale_rows()?;
        if stale != 0 {
            return Err(format!("daily full #{}: {stale} rows still older than a day", r + 1));
        }
        eprintln!("  daily full #{}: {} ({aged} rows aged)", r + 1, fmt_s(s.wall));
        daily.push(s);
        daily_req = req;
    }

    // 1 %-changed passes: each round renames a different 1 % of the users.
    let mut changed = Vec::new();
    let mut changed_req = Requests::default();
    let mut changed_users = 0;
    for r in 0..reps {
        changed_users = env.change_one_percent(n, r + 1)?;
        let (s, req, _) = env.pass()?;
        eprintln!(
            "  1%-changed #{}: {} ({} users renamed)",
            r + 1,
            fmt_s(s.wall),
            changed_users
        );
        changed.push(s);
        changed_req = req;
    }

    rows.push(Row {
        n,
        pass: "import",
        ours: stat(&imports),
        requests: import_req,
        floor: None,
        note: "emulator without delay".into(),
    });
    rows.push(Row {
        n,
        pass: "import --json",
        ours: stat(&json_imports),
        requests: json_req,
        floor: None,
        note: format!(
            "report {:.1} MB ({:.0} B/user)",
            json_bytes as f64 / 1e6,
            json_bytes as f64 / n as f64
        ),
    });
    let unchanged_req = unchanged_req.unwrap_or_default();
    let note = if unchanged_req.mailbox_reads == 1 && unchanged_req.writes == 0 {
        "1 mailbox read, 0 writes: OK".to_string()
    } else {
        format!(
            "TARGET MISSED: {} mailbox reads, {} writes",
            unchanged_req.mailbox_reads, unchanged_req.writes
        )
    };
    rows.push(Row {
        n,
        pass: "unchanged",
        ours: stat(&ours),
        requests: unchanged_req,
        floor: Some(floor.clone()),
        note,
    });
    let note = if daily_req.mailbox_reads == 1 && daily_req.writes == 0 {
        format!("{aged} rows aged 2 days, all refreshed; 1 mailbox read, 0 writes")
    } else {
        format!(
            "{aged} rows aged 2 days; {} mailbox reads, {} writes",
            daily_req.mailbox_reads, daily_req.writes
        )
    };
    rows.push(Row {
        n,
        pass: "daily full",
        ours: stat(&daily),
        requests: daily_req,
        floor: Some(floor.clone()),
        note,
    });
    rows.push(Row {
        n,
        pass: "1% changed",
        ours: stat(&changed),
        requests: changed_req,
        floor: Some(floor),
        note: format!("{changed_users} names changed"),
    });
    Ok(())
}

struct ConcRow {
    c: usize,
    s: Sample,
    requests: Requests,
}

fn bench_concurrency(opts: &Opts, root: &Path) -> Result<Vec<ConcRow>, String> {
    let n = opts.conc_users;
    eprintln!(
        "== import concurrency: {n} users, {} ms per request",
        opts.conc_delay_ms
    );
    let env = Env::start(&opts.tool, n, root.join("conc"), EmulatorOptions::default())?;
    let mut rows = Vec::new();
    let mut reference: Option<Vec<Value>> = None;
    for &c in &opts.conc {
        env.write_config(Some(c))?;
        env.reset_target();
        env.emu
            .set_request_delay(Some(Duration::from_millis(opts.conc_delay_ms)));
        let result = env.pass();
        env.emu.set_request_delay(None);
        let (s, requests, _) = result?;
        // Same outcome at every concurrency: the mailboxes as mailcow holds them.
        let mut boxes: Vec<Value> = env
            .emu
            .mailboxes()
            .into_iter()
            .map(|m| json!([m["username"], m["name"], m["quota"], m["active"], m["tags"]]))
            .collect();
        boxes.sort_by_key(|v| v.to_string());
        if boxes.len() != n {
            return Err(format!("concurrency {c}: {} mailboxes, not {n}", boxes.len()));
        }
        match &reference {
            None => reference = Some(boxes),
            Some(r) if *r != boxes => return Err(format!("concurrency {c}: mailboxes differ from concurrency 1")),
            Some(_) => {}
        }
        eprintln!("  concurrency {c}: {}", fmt_s(s.wall));
        rows.push(ConcRow { c, s, requests });
    }
    Ok(rows)
}

struct VersionTime {
    mean_ms: f64,
    median_ms: f64,
    stddev_ms: f64,
    min_ms: f64,
    runs: usize,
}

fn bench_version(tool: &Path, root: &Path) -> Result<VersionTime, String> {
    let json_path = root.join("hyperfine.json");
    let out = Command::new("hyperfine")
        .args(["-N", "--warmup", "20", "--runs", "300", "--export-json"])
        .arg(&json_path)
        .arg(format!("{} --version", tool.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("hyperfine: {e} (apt-get install hyperfine)"))?;
    if !out.status.success() {
        return Err(format!("hyperfine failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let r = &v["results"][0];
    let ms = |k: &str| r[k].as_f64().unwrap_or(f64::NAN) * 1000.0;
    Ok(VersionTime {
        mean_ms: ms("mean"),
        median_ms: ms("median"),
        stddev_ms: ms("stddev"),
        min_ms: ms("min"),
        runs: r["times"].as_array().map_or(0, Vec::len),
    })
}

fn run(opts: &Opts) -> Result<(), String> {
    let root = std::env::temp_dir().join(format!("mailcow-ldap-sync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let result = run_in(opts, &root);
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run_in(opts: &Opts, root: &Path) -> Result<(), String> {
    let started = Instant::now();
    let load_start = loadavg();
    let mut rows = Vec::new();
    let mut alone = Vec::new();
    for &n in &opts.sizes {
        bench_size(opts, n, root, &mut rows, &mut alone)?;
    }
    let conc = if opts.no_conc || opts.conc.is_empty() {
        Vec::new()
    } else {
        bench_concurrency(opts, root)?
    };
    let version = if opts.no_version {
        None
    } else {
        Some(bench_version(&opts.tool, root)?)
    };

    let mut o = String::new();
    let _ = writeln!(o, "\n## mailcow-ldap-sync benchmark\n");
    let _ = writeln!(o, "{}", machine_line());
    let _ = writeln!(
        o,
        "tool: {} ({} bytes); slapd size limit {SIZE_LIMIT}, page size {PAGE}, bind as the reader; \
         emulator in-process without delays; medians [repetitions: min–max]\n",
        opts.tool.display(),
        std::fs::metadata(&opts.tool).map(|m| m.len()).unwrap_or(0)
    );
    let _ = writeln!(
        o,
        "| N | pass | wall | CPU user+sys | peak RSS | requests | floor wall | ours/floor (wall) | ours/floor (CPU incl. servers) | note |"
    );
    let _ = writeln!(o, "|---:|---|---:|---:|---:|---|---:|---:|---:|---|");
    for r in &rows {
        let (fw, ratio, cratio) = match &r.floor {
            Some(f) => (
                fmt_s(f.wall),
                format!("{:.2}", r.ours.wall / f.wall),
                format!("{:.2}", r.ours.total_cpu / f.total_cpu),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} [{}: {}–{}] | {} | {} | {} | {} | {} | {} | {} |",
            r.n,
            r.pass,
            fmt_s(r.ours.wall),
            r.ours.n,
            fmt_s(r.ours.wall_min),
            fmt_s(r.ours.wall_max),
            fmt_s(r.ours.cpu),
            fmt_mib(r.ours.rss_kib),
            r.requests.short(),
            fw,
            ratio,
            cratio,
            r.note
        );
    }

    let _ = writeln!(
        o,
        "\n### The floor (same run): paged ldapsearch + one curl of get/mailbox/all\n"
    );
    let _ = writeln!(
        o,
        "| N | ldapsearch wall | ldapsearch CPU | curl get/mailbox/all wall | floor wall | floor CPU (clients) | floor CPU (clients + slapd + emulator) | ours unchanged CPU | ours unchanged CPU (+ slapd + emulator) |"
    );
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows.iter().filter(|r| r.pass == "unchanged") {
        if let Some(f) = &r.floor {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.n,
                fmt_s(f.ldap.wall),
                fmt_s(f.ldap.cpu),
                fmt_s(f.curl.wall),
                fmt_s(f.wall),
                fmt_s(f.cpu),
                fmt_s(f.total_cpu),
                fmt_s(r.ours.cpu),
                fmt_s(r.ours.total_cpu)
            );
        }
    }

    let _ = writeln!(o, "\n### Memory: peak RSS of the unchanged pass\n");
    let unchanged: Vec<&Row> = rows.iter().filter(|r| r.pass == "unchanged").collect();
    let _ = writeln!(o, "| N | peak RSS | growth from the previous N | bytes per user |");
    let _ = writeln!(o, "|---:|---:|---:|---:|");
    for (i, r) in unchanged.iter().enumerate() {
        let (growth, per) = if i == 0 {
            ("—".to_string(), "—".to_string())
        } else {
            let p = unchanged[i - 1];
            let d = r.ours.rss_kib as f64 - p.ours.rss_kib as f64;
            (
                format!("{:+.1} MiB", d / 1024.0),
                format!("{:.0}", d * 1024.0 / (r.n as f64 - p.n as f64)),
            )
        };
        let _ = writeln!(o, "| {} | {} | {} | {} |", r.n, fmt_mib(r.ours.rss_kib), growth, per);
    }
    for pass in ["import", "import --json", "daily full", "1% changed"] {
        let v: Vec<&Row> = rows.iter().filter(|r| r.pass == pass).collect();
        if v.len() >= 2 {
            let (a, b) = (v[0], v[v.len() - 1]);
            let d = b.ours.rss_kib as f64 - a.ours.rss_kib as f64;
            let _ = writeln!(
                o,
                "\n{pass}: {} at {} → {} at {}: {:.0} bytes per user",
                fmt_mib(a.ours.rss_kib),
                a.n,
                fmt_mib(b.ours.rss_kib),
                b.n,
                d * 1024.0 / (b.n as f64 - a.n as f64)
            );
        }
    }

    let _ = writeln!(o, "\n### The emulator alone (curl to /dev/null, same run)\n");
    let _ = writeln!(
        o,
        "| N | get/mailbox/all | size | get/mailbox/reduced | size | ours unchanged (wall) |"
    );
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|");
    for a in &alone {
        let ours = unchanged.iter().find(|r| r.n == a.n).map_or(f64::NAN, |r| r.ours.wall);
        let _ = writeln!(
            o,
            "| {} | {} | {:.1} MB ({:.0} B/mailbox) | {} | {:.1} MB ({:.0} B/mailbox) | {} |",
            a.n,
            fmt_s(a.all.wall),
            a.all_bytes as f64 / 1e6,
            a.all_bytes as f64 / a.n as f64,
            fmt_s(a.reduced.wall),
            a.reduced_bytes as f64 / 1e6,
            a.reduced_bytes as f64 / a.n as f64,
            fmt_s(ours)
        );
    }

    if !conc.is_empty() {
        let _ = writeln!(
            o,
            "\n### Import concurrency: {} users, emulator delay {} ms per request (real mailcow: ≈ 120 ms per add/mailbox)\n",
            opts.conc_users, opts.conc_delay_ms
        );
        let _ = writeln!(o, "| sync.concurrency | wall | speed-up | CPU | peak RSS | requests |");
        let _ = writeln!(o, "|---:|---:|---:|---:|---:|---|");
        let base = conc[0].s.wall;
        for c in &conc {
            let _ = writeln!(
                o,
                "| {} | {} | {:.2}× | {} | {} | {} |",
                c.c,
                fmt_s(c.s.wall),
                base / c.s.wall,
                fmt_s(c.s.cpu),
                fmt_mib(c.s.rss_kib),
                c.requests.short()
            );
        }
        let _ = writeln!(o, "\n(mailboxes in mailcow identical at every concurrency: checked)");
    }
    if let Some(v) = version {
        let _ = writeln!(
            o,
            "\n### `--version` (hyperfine -N, {} runs)\n\nmean {:.2} ms ± {:.2} ms, median {:.2} ms, min {:.2} ms",
            v.runs, v.mean_ms, v.stddev_ms, v.median_ms, v.min_ms
        );
    }
    let _ = writeln!(
        o,
        "\n(bench took {:.0} s; load average {load_start} at the start, {} at the end)",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    print!("{o}");
    Ok(())
}

fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(String::new(), |k| {
            format!(", {:.0} GiB RAM", k as f64 / 1024.0 / 1024.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "machine: {cpu}, {cores} cores{mem}, Linux {}; date: {date}",
        kernel.trim()
    )
}

// ---------------------------------------------------------------------- serve

/// Set up slapd + emulator with N users, import once, then hold while `DIR/hold` exists, so a
/// profiler can run the tool by hand: `valgrind … TOOL -c DIR/config.json`.
fn serve(opts: &Opts) -> Result<(), String> {
    let dir = opts
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("mailcow-ldap-sync-bench-serve-{}", opts.users)));
    let incr = opts.incr.then_some(Incr {
        sessionlog: opts.sessionlog,
    });
    let env = Env::start_with(&opts.tool, opts.users, dir.clone(), EmulatorOptions::default(), incr)?;
    let (s, req, _) = env.pass()?;
    eprintln!(
        "  import: {} wall, {} peak, requests: {}",
        fmt_s(s.wall),
        fmt_mib(s.rss_kib),
        req.short()
    );
    let hold = dir.join("hold");
    std::fs::write(&hold, "remove this file to stop\n").map_err(|e| e.to_string())?;
    println!("config: {}", env.config_path().display());
    println!("ldapsearch {}", env.ldapsearch_args().join(" "));
    println!("emulator: {} (GET /__emulator/stats for counters)", env.emu.url());
    println!("holding until {} is removed", hold.display());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    while hold.exists() {
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

// ---------------------------------------------------------------- incremental

struct IncrRow {
    n: usize,
    pass: &'static str,
    ours: Stat,
    requests: Requests,
    total_requests: usize,
    /// The summary line's parenthesis, e.g. `incremental, 0 LDAP entries, 0 reads, 0 writes, 0.01 s`.
    summary: String,
    note: String,
}

/// The parenthesis of the summary line (`(incremental, N LDAP entries, …)`).
fn summary_of(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| l.contains(" LDAP entries, "))
        .and_then(|l| {
            let start = l.rfind('(')?;
            Some(l[start + 1..].trim_end_matches(')').to_string())
        })
        .unwrap_or_default()
}

fn total(req: &Requests) -> usize {
    req.by.values().sum()
}

/// [`Requests::short`] with the reads of single mailboxes counted as one kind.
fn short_grouped(req: &Requests) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for (k, n) in &req.by {
        let k = match k.strip_prefix("GET get/mailbox/") {
            Some(rest) if rest.contains('@') => "GET get/mailbox/{address}".to_string(),
            _ => k.clone(),
        };
        *by.entry(k).or_default() += n;
    }
    Requests {
        by,
        ..Requests::default()
    }
    .short()
}

fn bench_incr_size(opts: &Opts, n: usize, root: &Path, rows: &mut Vec<IncrRow>) -> Result<(), String> {
    eprintln!("== N = {n} (syncprov, sessionlog {:?})", opts.sessionlog);
    let env = Env::start_with(
        &opts.tool,
        n,
        root.join(format!("incr{n}")),
        EmulatorOptions::default(),
        Some(Incr {
            sessionlog: opts.sessionlog,
        }),
    )?;
    let reps = reps_for(n, opts.reps);
    let (s, _, stderr) = env.pass()?;
    let summary = summary_of(&stderr);
    eprintln!("  import: {} ({summary})", fmt_s(s.wall));
    if env.emu.mailbox_count() != n || !summary.starts_with("full") {
        return Err(format!("import: {} mailboxes, {summary}", env.emu.mailbox_count()));
    }

    let expect_kind = |what: &str, kind: &str, summary: &str| -> Result<(), String> {
        if summary.starts_with(kind) {
            Ok(())
        } else {
            Err(format!("{what}: expected a {kind} pass, got ({summary})"))
        }
    };
    let mut version = Vec::new();
    let (mut full, mut unchanged, mut changed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut full_last, mut unchanged_last, mut changed_last) = (None, None, None);
    let mut changed_users = 0;
    let (mut full_changed, mut full_changed_last) = (Vec::new(), None);
    for r in 0..reps {
        let (s, req, err) = env.pass_with(&["--full"], None)?;
        let sum = summary_of(&err);
        expect_kind("--full", "full", &sum)?;
        eprintln!("  --full #{}: {} ({sum})", r + 1, fmt_s(s.wall));
        full.push(s);
        full_last = Some((req, sum));

        let (s, req, err) = env.pass()?;
        let sum = summary_of(&err);
        expect_kind("unchanged", "incremental", &sum)?;
        eprintln!("  incremental unchanged #{}: {} ({sum})", r + 1, fmt_s(s.wall));
        unchanged.push(s);
        unchanged_last = Some((req, sum));

        changed_users = env.change_one_percent(n, r + 1)?;
        let (s, req, err) = env.pass()?;
        let sum = summary_of(&err);
        expect_kind("1% changed", "incremental", &sum)?;
        eprintln!(
            "  incremental 1% changed #{}: {} ({sum}; {changed_users} users renamed)",
            r + 1,
            fmt_s(s.wall)
        );
        changed.push(s);
        changed_last = Some((req, sum));

        // The same change read by a full pass, for comparison.
        env.change_one_percent(n, 50 + r)?;
        let (s, req, err) = env.pass_with(&["--full"], None)?;
        let sum = summary_of(&err);
        expect_kind("1% changed --full", "full", &sum)?;
        eprintln!("  --full 1% changed #{}: {} ({sum})", r + 1, fmt_s(s.wall));
        full_changed.push(s);
        full_changed_last = Some((req, sum));

        let (s, _) = env.measure(&env.tool, &["--version".to_string()], None)?;
        version.push(s);
    }
    let full_wall = stat(&full).wall;
    let mut push = |pass: &'static str, samples: &[Sample], last: Option<(Requests, String)>, note: String| {
        let (requests, summary) = last.unwrap_or_default();
        rows.push(IncrRow {
            n,
            pass,
            ours: stat(samples),
            total_requests: total(&requests),
            requests,
            summary,
            note,
        });
    };
    push("full (--full, unchanged)", &full, full_last, String::new());
    let ratio = stat(&unchanged).wall / full_wall;
    let req0 = unchanged_last.as_ref().map_or(usize::MAX, |(r, _)| total(r));
    push(
        "incremental, unchanged",
        &unchanged,
        unchanged_last,
        format!(
            "≤ 5 % and 0 requests: {}",
            if ratio <= 0.05 && req0 == 0 { "met" } else { "MISSED" }
        ),
    );
    let ratio = stat(&changed).wall / full_wall;
    push(
        "incremental, 1 % changed",
        &changed,
        changed_last,
        format!(
            "{changed_users} users renamed; ≤ 10 %: {}",
            if ratio <= 0.10 { "met" } else { "MISSED" }
        ),
    );
    let ratio = stat(&changed).wall / stat(&full_changed).wall;
    push(
        "full (--full), 1 % changed",
        &full_changed,
        full_changed_last,
        format!("the incremental 1 %-changed pass is {:.1} % of this", 100.0 * ratio),
    );
    push("`--version` (process start)", &version, None, String::new());
    Ok(())
}

fn incr(opts: &Opts) -> Result<(), String> {
    let root = std::env::temp_dir().join(format!("mailcow-ldap-sync-bench-incr-{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let load_start = loadavg();
    let mut rows = Vec::new();
    let mut result = Ok(());
    for &n in &opts.sizes {
        result = bench_incr_size(opts, n, &root, &mut rows);
        if result.is_err() {
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    result?;
    let mut o = String::new();
    let _ = writeln!(o, "\n## mailcow-ldap-sync incremental benchmark (issue 16)\n");
    let _ = writeln!(o, "{}", machine_line());
    let _ = writeln!(
        o,
        "tool: {} ({} bytes); slapd with syncprov (sessionlog {}), no size limit for the reader; \
         `\"incremental\": \"syncrepl\"`; emulator in-process without delays; medians [repetitions: min–max]\n",
        opts.tool.display(),
        std::fs::metadata(&opts.tool).map(|m| m.len()).unwrap_or(0),
        opts.sessionlog.map_or("none".to_string(), |n| n.to_string())
    );
    let _ = writeln!(
        o,
        "| N | pass | wall | / full | CPU user+sys | peak RSS | mailcow requests | summary line | note |"
    );
    let _ = writeln!(o, "|---:|---|---:|---:|---:|---:|---|---|---|");
    for r in &rows {
        let full = rows
            .iter()
            .find(|f| f.n == r.n && f.pass.starts_with("full"))
            .map_or(f64::NAN, |f| f.ours.wall);
        let requests = if r.pass.starts_with('`') {
            "—".to_string()
        } else if r.total_requests == 0 {
            "0".to_string()
        } else {
            format!("{} ({})", r.total_requests, short_grouped(&r.requests))
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} [{}: {}–{}] | {:.1} % | {} | {} | {} | {} | {} |",
            r.n,
            r.pass,
            fmt_s(r.ours.wall),
            r.ours.n,
            fmt_s(r.ours.wall_min),
            fmt_s(r.ours.wall_max),
            100.0 * r.ours.wall / full,
            fmt_s(r.ours.cpu),
            fmt_mib(r.ours.rss_kib),
            requests,
            r.summary,
            r.note
        );
    }
    let _ = writeln!(
        o,
        "\n(bench took {:.0} s; load average {load_start} at the start, {} at the end)",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    print!("{o}");
    Ok(())
}
