//! Standalone mailcow API emulator, for trying the sync tool by hand or from scripts.
//!
//! ```text
//! mailcow-emulator [--port N] [--rw-key K] [--ro-key K] [--delay-ms N]
//!                  [--per-mailbox-delay-us N] [--idp ldap] [--allow-from LIST] [--tls]
//!                  [--domain example.org ...]
//!                  [--mailboxes N --domain-for-mailboxes example.org]
//! ```
//!
//! * `--port 0` (the default) picks a free port. The first stdout line is
//!   `mailcow emulator listening on http://127.0.0.1:PORT`; the process then serves
//!   until killed.
//! * `--tls` serves HTTPS with a certificate (for `localhost` and `127.0.0.1`) from a fresh
//!   CA; the first line then says `https://…`, and a second line
//!   `mailcow emulator CA file: PATH` names the CA's PEM file (point `mailcow_ca_file` at
//!   it). Its temp directory is removed only on a clean exit, not when the process is
//!   killed; it is named `sync-test-mailcow-emu-*` under the temp dir.
//! * `--domain` (repeatable) creates domains with room for a million mailboxes and
//!   aliases and 1024/10240 MiB default/max mailbox quota.
//! * `--mailboxes N` seeds `user000001@D` … with name `User 1` …, quota 1024 MiB and
//!   password `Seed-Pass-1`, into `--domain-for-mailboxes D` (created if needed;
//!   default: the first `--domain`, else `example.org`).
//! * Keys default to `RW-KEY-0000` (read/write) and `RO-KEY-0000` (read-only).
//!
//! Like mailcow's nginx, answers of 256 bytes and more go gzip-compressed to a client that
//! sends `Accept-Encoding: gzip` (see `http.rs`, `gzip_wanted`).
//!
//! Besides mailcow's `/api/v1/…`, these admin endpoints (not part of mailcow, no key
//! needed, not counted) let scripts read the request counters:
//!
//! * `GET /__emulator/stats` → `{"requests":N,"by_endpoint":{"GET /api/v1/get/mailbox/all":n,…},"writes":n,
//!   "bytes_sent":n,"gzip_responses":n}` (bytes of the answers as written: heads and bodies, before TLS)
//! * `POST /__emulator/reset-stats` → clears the counters
//! * `POST /__emulator/gzip/off`, `POST /__emulator/gzip/on` → answer without gzip, or as nginx again
//! * `POST /__emulator/reset` → empties the emulated server (domains, mailboxes, aliases)

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use sync_test_support::mailcow::{DomainSpec, Emulator, EmulatorOptions, MailboxSpec};

struct Args {
    opts: EmulatorOptions,
    domains: Vec<String>,
    mailboxes: usize,
    mailbox_domain: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        opts: EmulatorOptions::default(),
        domains: Vec::new(),
        mailboxes: 0,
        mailbox_domain: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|_| format!("{flag}: not a number: {v}"));
        match flag.as_str() {
            "--port" => a.opts.port = num(value()?)? as u16,
            "--rw-key" => a.opts.rw_key = value()?,
            "--ro-key" => a.opts.ro_key = value()?,
            "--delay-ms" => a.opts.request_delay = Some(Duration::from_millis(num(value()?)?)),
            "--per-mailbox-delay-us" => a.opts.per_mailbox_delay = Some(Duration::from_micros(num(value()?)?)),
            "--idp" => a.opts.idp_authsource = Some(value()?),
            "--allow-from" => a.opts.allow_from = Some(value()?),
            "--tls" => a.opts.tls = true,
            "--domain" => a.domains.push(value()?.to_ascii_lowercase()),
            "--mailboxes" => a.mailboxes = num(value()?)? as usize,
            "--domain-for-mailboxes" => a.mailbox_domain = Some(value()?.to_ascii_lowercase()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("mailcow-emulator: {e}");
            }
            eprintln!(
                "usage: mailcow-emulator [--port N] [--rw-key K] [--ro-key K] [--delay-ms N] \
                 [--per-mailbox-delay-us N] [--idp ldap] [--allow-from LIST] [--tls] [--domain D ...] \
                 [--mailboxes N --domain-for-mailboxes D]"
            );
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let emu = match Emulator::start(args.opts) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("mailcow-emulator: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut domains = args.domains;
    let mailbox_domain = args
        .mailbox_domain
        .or_else(|| domains.first().cloned())
        .unwrap_or_else(|| "example.org".into());
    if args.mailboxes > 0 && !domains.contains(&mailbox_domain) {
        domains.push(mailbox_domain.clone());
    }
    for d in &domains {
        emu.add_domain(DomainSpec {
            name: d.clone(),
            mailboxes: 1_000_000,
            aliases: 1_000_000,
            defquota_mib: 1024,
            maxquota_mib: 10240,
            // Room for every seeded mailbox at 1024 MiB plus headroom.
            quota_mib: (args.mailboxes as i64 + 1000) * 1024,
            ..DomainSpec::default()
        });
    }
    if args.mailboxes > 0 {
        let specs = (1..=args.mailboxes).map(|i| MailboxSpec {
            local_part: format!("user{i:06}"),
            domain: mailbox_domain.clone(),
            name: format!("User {i}"),
            quota_mib: 1024,
            ..MailboxSpec::default()
        });
        if let Err(e) = emu.add_mailboxes(specs) {
            eprintln!("mailcow-emulator: seeding failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "mailcow emulator listening on {}", emu.url());
    if let Some(ca) = emu.ca_file() {
        let _ = writeln!(stdout, "mailcow emulator CA file: {}", ca.display());
    }
    let _ = stdout.flush();
    loop {
        std::thread::park();
    }
}
