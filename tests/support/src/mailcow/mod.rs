//! An HTTP emulator of mailcow's `/api/v1` for the integration tests and benchmarks.
//!
//! It exists so that the sync tool can be exercised against real HTTP without a
//! mailcow installation (dozens of containers). Its behaviour follows
//! `shared/mailcow/API.md`, which was checked against mailcow's real PHP code; the
//! emulator's own tests replay the recorded session `tests/data/mailcow-transcript.jsonl`
//! against it. Beyond the API it offers direct seeding (fast, for 100k-mailbox
//! benchmarks), state snapshots for assertions, request accounting, an optional
//! per-request cost, and fault injection.
//!
//! The server is plain `std::net`: one listener thread and one thread per connection,
//! HTTP/1.1 keep-alive, state behind a `Mutex`. With [`EmulatorOptions::tls`] it speaks
//! HTTPS (rustls) with a certificate from its own throwaway CA ([`Emulator::ca_file`]).
//!
//! Not emulated: alias domains, domain templates, domain tags, domain rate limits, external sender ACLs,
//! `search/*`, and IDN (non-ASCII domains are rejected like invalid ones).

mod api;
mod http;
mod json;
mod php;
mod render;
mod state;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value, json};

use self::http::{Conn, Request, Response};
use self::json::Out;
use self::state::State;

pub use self::state::emulated_hash;

/// Default read/write API key.
pub const RW_KEY: &str = "RW-KEY-0000";
/// Default read-only API key.
pub const RO_KEY: &str = "RO-KEY-0000";
/// Password [`MailboxSpec::default`] uses; passes mailcow's default policy.
pub const SEED_PASSWORD: &str = "Seed-Pass-1";

/// How to start an [`Emulator`].
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    /// 0 picks a free port.
    pub port: u16,
    pub rw_key: String,
    pub ro_key: String,
    /// Slept before every API request is handled (the real server's per-call cost:
    /// ≈ 95 ms for single GETs and edits, ≈ 120 ms for add/mailbox).
    pub request_delay: Option<Duration>,
    /// The identity provider's authsource (`Some("ldap")` lets add/edit keep
    /// `authsource: "ldap"`); None means no IdP, as on a fresh mailcow.
    pub idp_authsource: Option<String>,
    /// Extra cost per mailbox object in `get/mailbox/all|reduced` lists (the real
    /// server: ≈ 3.8 ms per full object); reduced objects cost half.
    pub per_mailbox_delay: Option<Duration>,
    /// `allow_from` of the rw key (IPs/CIDRs); None allows every client.
    pub allow_from: Option<String>,
    /// Serve HTTPS instead of HTTP: a fresh CA and a server certificate for `localhost` and
    /// `127.0.0.1` are generated with `openssl` at start (see [`Emulator::ca_file`]).
    pub tls: bool,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            port: 0,
            rw_key: RW_KEY.to_string(),
            ro_key: RO_KEY.to_string(),
            request_delay: None,
            idp_authsource: None,
            per_mailbox_delay: None,
            allow_from: None,
            tls: false,
        }
    }
}

/// A domain for direct seeding. Quotas are MiB, as in `add/domain`.
#[derive(Clone, Debug)]
pub struct DomainSpec {
    pub name: String,
    pub description: String,
    /// Mailbox count limit.
    pub mailboxes: i64,
    /// Alias count limit.
    pub aliases: i64,
    pub defquota_mib: i64,
    pub maxquota_mib: i64,
    /// Total quota of the domain.
    pub quota_mib: i64,
    pub active: bool,
}

impl Default for DomainSpec {
    /// mailcow's `add/domain` defaults: 10 mailboxes, 400 aliases, 3072/10240/10240 MiB.
    fn default() -> Self {
        DomainSpec {
            name: "example.org".into(),
            description: String::new(),
            mailboxes: 10,
            aliases: 400,
            defquota_mib: 3072,
            maxquota_mib: 10240,
            quota_mib: 10240,
            active: true,
        }
    }
}

/// A mailbox for direct seeding; goes through the same checks as `add/mailbox`.
#[derive(Clone, Debug)]
pub struct MailboxSpec {
    pub local_part: String,
    pub domain: String,
    pub name: String,
    /// MiB; 0 = unlimited (skips the domain quota checks, like the API).
    pub quota_mib: i64,
    /// 0 inactive, 1 active, 2 "disallow login".
    pub active: u8,
    /// Cleartext or `{SCHEME}` pre-hash; checked against the password policy.
    pub password: String,
    pub authsource: String,
    pub tls_in: bool,
    pub tls_out: bool,
    pub tags: Vec<String>,
}

impl Default for MailboxSpec {
    fn default() -> Self {
        MailboxSpec {
            local_part: String::new(),
            domain: "example.org".into(),
            name: String::new(),
            quota_mib: 0,
            active: 1,
            password: SEED_PASSWORD.into(),
            authsource: "mailcow".into(),
            tls_in: false,
            tls_out: false,
            tags: Vec::new(),
        }
    }
}

/// A fault for one upcoming request (see [`Emulator::inject_fault`]). Except for
/// `Delay`, the request is not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a small body (HTML for 5xx like nginx, else JSON).
    Status(u16),
    /// Sleep this long, then handle the request normally.
    Delay(Duration),
    /// Read the request, then close the socket without answering.
    CloseConnection,
    /// 200 with an HTML body.
    NonJson,
    /// 200 with an empty body.
    EmptyBody,
    /// 200 with `{}`: mailcow's answer for an empty list (API.md), given whatever the
    /// request, as a broken or freshly set-up server would.
    EmptyObject,
}

/// One handled API request (admin endpoints are not recorded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    /// Path as sent, without the query string.
    pub path: String,
    /// 0 when the connection was closed by [`Fault::CloseConnection`].
    pub status: u16,
    /// The answer went gzip-compressed (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Bytes of the answer as written: head and body, before TLS (0 with no answer).
    pub bytes: u64,
}

/// Which API key an allow-list applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAccess {
    Rw,
    Ro,
}

pub(crate) struct Auth {
    pub rw_key: String,
    pub ro_key: String,
    pub allow_rw: Option<String>,
    pub allow_ro: Option<String>,
}

#[derive(Default)]
struct Stats {
    records: Vec<RequestRecord>,
    /// Monotonic number of API requests seen; faults are scheduled against it.
    seq: u64,
    faults: Vec<(u64, Fault)>,
}

pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub auth: Mutex<Auth>,
    stats: Mutex<Stats>,
    shutdown: AtomicBool,
    /// Request delay in microseconds (0 = none); atomic so benchmarks can change it.
    delay_us: AtomicU64,
    per_mailbox_ns: AtomicU64,
    cookie_seq: AtomicU64,
    /// Answer `Accept-Encoding: gzip` with gzip, as mailcow's nginx does (on by default).
    gzip: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not take the emulator down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Shared {
    fn next_fault(&self) -> Option<Fault> {
        let mut s = lock(&self.stats);
        s.seq += 1;
        let seq = s.seq;
        let pos = s.faults.iter().position(|(at, _)| *at == seq)?;
        Some(s.faults.remove(pos).1)
    }

    /// Record a request; returns its place in the log, for [`Shared::record_sent`].
    fn record(&self, req: &Request, status: u16) -> usize {
        let mut s = lock(&self.stats);
        s.records.push(RequestRecord {
            method: req.method.clone(),
            path: req.path().to_string(),
            status,
            gzip: false,
            bytes: 0,
        });
        s.records.len() - 1
    }

    /// What a recorded request's answer was on the wire (unless the log was reset meanwhile).
    fn record_sent(&self, at: usize, path: &str, (bytes, gzip): (u64, bool)) {
        if let Some(r) = lock(&self.stats).records.get_mut(at).filter(|r| r.path == path) {
            r.bytes = bytes;
            r.gzip = gzip;
        }
    }

    /// A PHP-style session id (26 chars of 0-9a-v) for the `MCSESSID` cookie.
    fn cookie(&self) -> String {
        let mut x = self.cookie_seq.fetch_add(1, Ordering::Relaxed) ^ (unix_now() << 20);
        let mut s = String::with_capacity(26);
        for i in 0..26 {
            if i % 12 == 0 {
                // splitmix64
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                x ^= z ^ (z >> 31);
            }
            let d = ((x >> ((i % 12) * 5)) & 31) as u32;
            s.push(char::from_digit(d, 32).unwrap_or('0'));
        }
        s
    }
}

/// A running emulator. Dropping it closes the listener and lets connection threads
/// finish (idle keep-alive connections close within a fraction of a second). In TLS mode
/// it also removes the certificate directory.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
    /// Declared after `accept` on purpose: removed after the listener thread is gone.
    tls: Option<TlsDir>,
}

/// The temp directory with the CA and server certificate of one HTTPS emulator; removed on drop.
struct TlsDir {
    dir: PathBuf,
    ca_file: PathBuf,
}

impl Drop for TlsDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

static TLS_DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Generate a CA and server certificate in a fresh temp dir and build the rustls server
/// config (ring provider) from them.
fn tls_setup() -> io::Result<(TlsDir, Arc<ServerConfig>)> {
    let label = crate::process::unique_name("mailcow-emu", &TLS_DIR_COUNTER);
    let dir = std::env::temp_dir().join(format!("sync-test-{label}"));
    fs::create_dir(&dir)?;
    // From here on, dropping `tls_dir` removes the directory if anything fails.
    let mut tls_dir = TlsDir {
        dir: dir.clone(),
        ca_file: PathBuf::new(),
    };
    let files = crate::certs::generate_localhost(&dir, &label)?;
    tls_dir.ca_file = files.ca_cert;
    let pem_err = |what: &str, e: rustls::pki_types::pem::Error| io::Error::other(format!("{what}: {e}"));
    let chain = CertificateDer::pem_file_iter(&files.server_cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_err("reading the emulator's server certificate", e))?;
    let key =
        PrivateKeyDer::from_pem_file(&files.server_key).map_err(|e| pem_err("reading the emulator's server key", e))?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| io::Error::other(format!("emulator TLS config: {e}")))?;
    Ok((tls_dir, Arc::new(config)))
}

impl Emulator {
    /// Bind 127.0.0.1:`opts.port` and start serving (HTTPS with `opts.tls`).
    pub fn start(opts: EmulatorOptions) -> io::Result<Emulator> {
        let (tls_dir, tls_config) = if opts.tls {
            let (dir, config) = tls_setup()?;
            (Some(dir), Some(config))
        } else {
            (None, None)
        };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, opts.port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(opts.idp_authsource.clone())),
            auth: Mutex::new(Auth {
                rw_key: api::strip_key(&opts.rw_key),
                ro_key: api::strip_key(&opts.ro_key),
                allow_rw: opts.allow_from.clone(),
                allow_ro: None,
            }),
            stats: Mutex::new(Stats::default()),
            shutdown: AtomicBool::new(false),
            delay_us: AtomicU64::new(opts.request_delay.map_or(0, |d| d.as_micros() as u64)),
            per_mailbox_ns: AtomicU64::new(opts.per_mailbox_delay.map_or(0, |d| d.as_nanos() as u64)),
            cookie_seq: AtomicU64::new(u64::from(std::process::id()) << 32),
            gzip: AtomicBool::new(true),
        });
        let sh = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name(format!("mailcow-emu-{}", addr.port()))
            .spawn(move || accept_loop(listener, sh, tls_config))?;
        Ok(Emulator {
            shared,
            addr,
            accept: Some(accept),
            tls: tls_dir,
        })
    }

    /// `http://127.0.0.1:PORT`, or `https://127.0.0.1:PORT` in TLS mode.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// In TLS mode, the PEM file of the CA that signed the server certificate (SAN
    /// `DNS:localhost`, `IP:127.0.0.1`); unique per emulator, so another emulator's CA file
    /// is a wrong CA. It lives in a temp directory removed when the emulator is dropped.
    /// None in plain-HTTP mode.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_file.as_path())
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The rw key as the server compares it (characters outside `[A-Za-z0-9-]`
    /// removed, as mailcow does with the header; sending the original works too).
    pub fn rw_key(&self) -> String {
        lock(&self.shared.auth).rw_key.clone()
    }

    /// The ro key as the server compares it.
    pub fn ro_key(&self) -> String {
        lock(&self.shared.auth).ro_key.clone()
    }

    // ------------------------------------------------------------ seeding

    /// Create a domain as `add/domain` would. Panics if mailcow would refuse it
    /// (for example because it exists), since that is a broken test setup.
    pub fn add_domain(&self, d: DomainSpec) {
        let data = obj(json!({
            "domain": d.name, "description": d.description, "aliases": d.aliases,
            "mailboxes": d.mailboxes, "defquota": d.defquota_mib, "maxquota": d.maxquota_mib,
            "quota": d.quota_mib, "active": i64::from(d.active),
        }));
        let out = lock(&self.shared.state).add_domain(&data, unix_now());
        if let Some(e) = out.entries.iter().find(|e| e.kind == "danger") {
            panic!("emulator add_domain({}) refused: {}", d.name, e.msg);
        }
    }

    /// Create a mailbox with `add/mailbox`'s checks. Err is the `msg` of the
    /// `danger` entry the API would return (`"password_complexity"`,
    /// `["object_exists","a@b"]`, …).
    pub fn add_mailbox(&self, m: MailboxSpec) -> Result<(), Value> {
        let mut st = lock(&self.shared.state);
        seed_mailbox(&mut st, m, unix_now())
    }

    /// Like [`Emulator::add_mailbox`] for many mailboxes under one lock; stops at the
    /// first failure. Returns how many were created.
    pub fn add_mailboxes(&self, specs: impl IntoIterator<Item = MailboxSpec>) -> Result<usize, Value> {
        let now = unix_now();
        let mut st = lock(&self.shared.state);
        let mut n = 0;
        for m in specs {
            seed_mailbox(&mut st, m, now)?;
            n += 1;
        }
        Ok(n)
    }

    /// Delete one mailbox as `delete/mailbox` would (an admin's hand in the UI). Panics if
    /// mailcow would refuse it.
    pub fn delete_mailbox(&self, username: &str) {
        let outcome = lock(&self.shared.state).delete_mailboxes(&[Value::from(username)]);
        let kinds: Vec<&str> = outcome.entries.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["success"], "delete_mailbox {username}");
    }

    /// Edit one mailbox as `edit/mailbox` would with this `attr` (an admin's hand in the
    /// UI, e.g. `{"imap_access": 0}`). Panics if mailcow would refuse it.
    pub fn edit_mailbox(&self, username: &str, attr: Value) {
        let outcome = lock(&self.shared.state).edit_mailboxes(&[Value::from(username)], &obj(attr), unix_now());
        let kinds: Vec<&str> = outcome.entries.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["success"], "edit_mailbox {username}");
    }

    /// Create one mailbox template as `add/mailbox/template` would (quota in MiB, `acl` and
    /// `protocol_access` as lists) and return its id. Panics if mailcow would refuse it.
    pub fn add_template(&self, body: Value) -> u64 {
        let mut st = lock(&self.shared.state);
        let outcome = st.add_mailbox_template(&obj(body));
        let kinds: Vec<&str> = outcome.entries.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["success"], "add_template");
        st.next_template_id - 1
    }

    /// The user ACLs of a mailbox that are on (table `user_acl`), in column order.
    pub fn user_acl(&self, username: &str) -> Vec<String> {
        let st = lock(&self.shared.state);
        st.mailbox(username)
            .map(|mb| {
                mb.acl
                    .iter()
                    .filter(|(_, v)| **v == 1)
                    .map(|(k, _)| k.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Create one alias as `add/alias` would (sogo_visible and sender_allowed 0) and
    /// return its id. Panics if mailcow would refuse it.
    pub fn add_alias(&self, address: &str, goto: &str, active: bool) -> u64 {
        let data = obj(json!({"address": address, "goto": goto, "active": i64::from(active)}));
        let out = lock(&self.shared.state).add_aliases(&data, unix_now());
        for e in &out.entries {
            if e.msg.get(0).and_then(Value::as_str) != Some("alias_added") {
                continue;
            }
            if let Some(id) = e.msg.get(2).and_then(Value::as_str).and_then(|s| s.parse().ok()) {
                return id;
            }
        }
        let msgs: Vec<String> = out.entries.iter().map(|e| e.msg.to_string()).collect();
        panic!("emulator add_alias({address} -> {goto}) refused: {msgs:?}");
    }

    /// Give an existing mailbox an app password named `name` (as the user would in SOGo's
    /// settings) and return its id. Panics if the mailbox does not exist.
    pub fn add_app_password(&self, mailbox: &str, name: &str) -> u64 {
        lock(&self.shared.state)
            .add_app_password(mailbox, name, unix_now())
            .unwrap_or_else(|| panic!("emulator add_app_password: no mailbox {mailbox}"))
    }

    // ----------------------------------------------------------- snapshots

    /// `mailbox`'s app passwords as `get/app-passwd/all/{mailbox}` lists them.
    pub fn app_passwords(&self, mailbox: &str) -> Vec<Value> {
        let st = lock(&self.shared.state);
        st.app_passwords_of(mailbox)
            .into_iter()
            .map(|a| {
                let mut out = Out::new(false);
                render::app_password(&mut out, a);
                parse(out.finish())
            })
            .collect()
    }

    /// Every app password id there is, whoever owns it.
    pub fn app_password_ids(&self) -> Vec<u64> {
        lock(&self.shared.state).app_passwords.keys().copied().collect()
    }

    /// The usernames `delete/eas_cache` reset, in order.
    pub fn eas_resets(&self) -> Vec<String> {
        lock(&self.shared.state).eas_resets.clone()
    }

    /// The object `get/mailbox/{username}` returns (None where the API says `{}`).
    pub fn mailbox(&self, username: &str) -> Option<Value> {
        let st = lock(&self.shared.state);
        st.mailbox(username).map(|mb| {
            let mut out = Out::new(false);
            render::mailbox(&mut out, &st, mb, true);
            parse(out.finish())
        })
    }

    /// Every mailbox, as and in the order of `get/mailbox/all`.
    pub fn mailboxes(&self) -> Vec<Value> {
        let st = lock(&self.shared.state);
        let mut v = Vec::with_capacity(st.mailboxes.len());
        for d in st.domains.values() {
            for k in &d.members {
                if let Some(mb) = st.mailboxes.get(k) {
                    let mut out = Out::new(false);
                    render::mailbox(&mut out, &st, mb, true);
                    v.push(parse(out.finish()));
                }
            }
        }
        v
    }

    pub fn mailbox_count(&self) -> usize {
        lock(&self.shared.state).mailboxes.len()
    }

    /// The password column: a pre-hash as sent, or [`emulated_hash`] of the cleartext;
    /// `""` for non-mailcow authsources.
    pub fn stored_password(&self, username: &str) -> Option<String> {
        lock(&self.shared.state).mailbox(username).map(|m| m.password.clone())
    }

    /// Every alias (mailbox self-aliases excluded), as `get/alias/all` lists them.
    pub fn aliases(&self) -> Vec<Value> {
        let st = lock(&self.shared.state);
        let mut v = Vec::new();
        for d in st.domains.keys() {
            for a in st.aliases.values().filter(|a| &a.domain == d) {
                let mut out = Out::new(false);
                render::alias(&mut out, a);
                v.push(parse(out.finish()));
            }
        }
        v
    }

    /// The object `get/domain/{name}` returns.
    pub fn domain(&self, name: &str) -> Option<Value> {
        let st = lock(&self.shared.state);
        st.domains.get(&name.to_ascii_lowercase()).map(|d| {
            let mut out = Out::new(false);
            render::domain(&mut out, &st, d);
            parse(out.finish())
        })
    }

    // ---------------------------------------------------------- accounting

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.stats).records.clone()
    }

    /// Requests with exactly this method and path (no query), e.g.
    /// `("GET", "/api/v1/get/mailbox/all")`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        lock(&self.shared.stats)
            .records
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }

    /// POST requests.
    pub fn count_writes(&self) -> usize {
        lock(&self.shared.stats)
            .records
            .iter()
            .filter(|r| r.method == "POST")
            .count()
    }

    pub fn total_requests(&self) -> usize {
        lock(&self.shared.stats).records.len()
    }

    /// Answers that went gzip-compressed.
    pub fn gzip_responses(&self) -> usize {
        lock(&self.shared.stats).records.iter().filter(|r| r.gzip).count()
    }

    /// Bytes of all answers as written (heads and bodies, before TLS).
    pub fn bytes_sent(&self) -> u64 {
        lock(&self.shared.stats).records.iter().map(|r| r.bytes).sum()
    }

    /// Whether `Accept-Encoding: gzip` is answered with gzip (on at start, as mailcow's nginx).
    pub fn set_gzip(&self, on: bool) {
        self.shared.gzip.store(on, Ordering::SeqCst);
    }

    pub fn reset_counts(&self) {
        lock(&self.shared.stats).records.clear();
    }

    // ------------------------------------------------------------- control

    /// Apply `fault` to the `nth` API request from now (1 = the next one; 0 counts as 1).
    /// Admin (`/__emulator/*`) requests do not count.
    pub fn inject_fault(&self, nth: usize, fault: Fault) {
        let mut s = lock(&self.shared.stats);
        let at = s.seq + nth.max(1) as u64;
        s.faults.push((at, fault));
    }

    /// What `edit/passwordpolicy` sets.
    pub fn set_password_policy(&self, length: u32, chars: bool, special: bool, lowerupper: bool, numbers: bool) {
        let mut st = lock(&self.shared.state);
        st.policy = state::Policy {
            length: i64::from(length),
            chars: i64::from(chars),
            special_chars: i64::from(special),
            lowerupper: i64::from(lowerupper),
            numbers: i64::from(numbers),
        };
    }

    /// Empty server (no domains, mailboxes, aliases; alias ids restart at 1), default
    /// password policy. Keys, allow-lists, IdP, counters and pending faults stay.
    pub fn reset(&self) {
        lock(&self.shared.state).reset();
    }

    /// Answer full mailbox objects without `sender_acl`, as mailcow before 2026-07a did.
    pub fn set_sender_acl_hidden(&self, hidden: bool) {
        lock(&self.shared.state).sender_acl_hidden = hidden;
    }

    /// A mailbox's internal send-as entries (table `sender_acl`, `external` = 0), in row order.
    pub fn sender_acl(&self, username: &str) -> Vec<String> {
        lock(&self.shared.state).sender_acl_of(username)
    }

    /// Let an alias's targets send as it (`edit/alias` `sender_allowed`).
    pub fn set_alias_sender_allowed(&self, id: u64, allowed: bool) {
        if let Some(a) = lock(&self.shared.state).aliases.get_mut(&id) {
            a.sender_allowed = i64::from(allowed);
        }
    }

    /// mailcow's own host name (`MAILCOW_HOSTNAME`), which `add/domain` refuses as a domain.
    pub fn set_mailcow_hostname(&self, hostname: Option<&str>) {
        lock(&self.shared.state).hostname = hostname.map(str::to_ascii_lowercase);
    }

    /// Every domain admin, as `get/domain-admin/all` lists them.
    pub fn domain_admins(&self) -> Vec<Value> {
        let st = lock(&self.shared.state);
        st.domain_admins
            .iter()
            .filter(|(_, a)| !a.domains.is_empty())
            .map(|(name, a)| render::domain_admin(&st, name, a))
            .collect()
    }

    /// Seed a domain admin as an admin would by hand (password `Hand-Made-1`); false if
    /// mailcow refused it.
    pub fn add_domain_admin_for_test(&self, username: &str, domains: &[&str]) -> bool {
        let mut st = lock(&self.shared.state);
        let data = json!({"username": username, "password": "Hand-Made-1", "password2": "Hand-Made-1",
            "domains": domains, "active": 1});
        let Value::Object(map) = data else { return false };
        st.add_domain_admin(&map, unix_now()).ok
    }

    /// The stored password hash of a domain admin.
    pub fn domain_admin_password(&self, username: &str) -> Option<String> {
        lock(&self.shared.state)
            .domain_admins
            .get(username)
            .map(|a| a.password.clone())
    }

    /// Configure the identity provider as the admin UI does: `settings["authsource"]` is
    /// the type (`None` or a missing key: no IdP), every other key is one row of table
    /// `identity_provider` (e.g. `host`, `port`, `basedn`, `bindpass`, `periodic_sync`,
    /// `import_users`, `login_provisioning`, `mappers`, `templates`, `default_template`).
    pub fn set_identity_provider(&self, settings: Option<serde_json::Value>) {
        let mut st = lock(&self.shared.state);
        let mut map = match settings {
            Some(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        st.idp_authsource = map.remove("authsource").and_then(|a| a.as_str().map(str::to_string));
        st.idp_settings = map;
    }

    pub fn set_idp_authsource(&self, authsource: Option<&str>) {
        lock(&self.shared.state).idp_authsource = authsource.map(str::to_string);
    }

    /// Set a key's `allow_from` (None = every client allowed).
    pub fn set_allow_from(&self, key: KeyAccess, allow_from: Option<&str>) {
        let mut a = lock(&self.shared.auth);
        let slot = match key {
            KeyAccess::Rw => &mut a.allow_rw,
            KeyAccess::Ro => &mut a.allow_ro,
        };
        *slot = allow_from.map(str::to_string);
    }

    /// Change the per-request delay (e.g. seed fast, then measure with realistic cost).
    pub fn set_request_delay(&self, delay: Option<Duration>) {
        self.shared
            .delay_us
            .store(delay.map_or(0, |d| d.as_micros() as u64), Ordering::SeqCst);
    }

    pub fn set_per_mailbox_delay(&self, delay: Option<Duration>) {
        self.shared
            .per_mailbox_ns
            .store(delay.map_or(0, |d| d.as_nanos() as u64), Ordering::SeqCst);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the listener gets dropped.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn parse(s: String) -> Value {
    serde_json::from_str(&s).expect("emulator renders valid JSON")
}

fn seed_mailbox(st: &mut State, m: MailboxSpec, now: u64) -> Result<(), Value> {
    let mut data = obj(json!({
        "local_part": m.local_part, "domain": m.domain, "name": m.name, "quota": m.quota_mib,
        "active": m.active, "password": m.password, "password2": m.password,
        "authsource": m.authsource, "tls_enforce_in": i64::from(m.tls_in),
        "tls_enforce_out": i64::from(m.tls_out),
    }));
    if !m.tags.is_empty() {
        data.insert("tags".into(), json!(m.tags));
    }
    let out = st.add_mailbox(&data, now);
    match out.entries.into_iter().find(|e| e.kind == "danger") {
        Some(e) => Err(e.msg),
        None => Ok(()),
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tls: Option<Arc<ServerConfig>>) {
    for conn in listener.incoming() {
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(stream) => {
                let sh = Arc::clone(&shared);
                let tls = tls.clone();
                let spawned = thread::Builder::new()
                    .name("mailcow-emu-conn".into())
                    .spawn(move || serve(sh, stream, tls));
                if spawned.is_err() {
                    thread::sleep(Duration::from_millis(10));
                }
            }
            // e.g. EMFILE under a connection storm: back off instead of spinning.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn serve(shared: Arc<Shared>, stream: TcpStream, tls: Option<Arc<ServerConfig>>) {
    let Ok(mut conn) = Conn::new(stream, tls.as_ref()) else {
        return;
    };
    let peer = conn
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    while let Ok(Some(req)) = conn.next_request(&shared.shutdown) {
        let keep = req.keep_alive && !shared.shutdown.load(Ordering::SeqCst);
        if req.path().starts_with("/__emulator/") {
            let resp = admin(&shared, &req);
            if conn.write_response(&resp, keep, &shared.cookie(), false).is_err() || !keep {
                return;
            }
            continue;
        }
        let fault = shared.next_fault();
        let delay = shared.delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            thread::sleep(Duration::from_micros(delay));
        }
        let handled = match fault {
            Some(Fault::CloseConnection) => {
                shared.record(&req, 0);
                conn.abort();
                return;
            }
            Some(Fault::Status(code)) => Some(fault_status(code)),
            Some(Fault::NonJson) => Some(Response {
                status: 200,
                content_type: "text/html",
                body: b"<html><head><title>mailcow UI</title></head><body>Maintenance</body></html>".to_vec(),
            }),
            Some(Fault::EmptyBody) => Some(Response::json(200, Vec::new())),
            Some(Fault::EmptyObject) => Some(Response::json(200, b"{}".to_vec())),
            Some(Fault::Delay(d)) => {
                thread::sleep(d);
                None
            }
            None => None,
        };
        let resp = match handled {
            Some(r) => r,
            None => {
                let h = api::handle(&shared, &req, peer, unix_now());
                let per = shared.per_mailbox_ns.load(Ordering::SeqCst);
                if per > 0 && h.listed > 0 {
                    let per = if h.full_objects { per } else { per / 2 };
                    thread::sleep(Duration::from_nanos(per.saturating_mul(h.listed as u64)));
                }
                h.resp
            }
        };
        // Recorded before the answer goes out, so a client that got its response
        // always sees the request counted (its bytes follow once written).
        let at = shared.record(&req, resp.status);
        let gzip = shared.gzip.load(Ordering::SeqCst) && http::gzip_wanted(&req);
        match conn.write_response(&resp, keep, &shared.cookie(), gzip) {
            Ok(sent) => shared.record_sent(at, req.path(), sent),
            Err(_) => return,
        }
        if !keep {
            return;
        }
    }
}

fn fault_status(code: u16) -> Response {
    if code >= 500 {
        let reason = http::reason(code);
        Response {
            status: code,
            content_type: "text/html",
            body: format!(
                "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            )
            .into_bytes(),
        }
    } else {
        Response::json(
            code,
            format!("{{\"type\":\"error\",\"msg\":\"emulated fault: HTTP {code}\"}}"),
        )
    }
}

/// `/__emulator/*`: counters for scripts driving the standalone binary.
fn admin(shared: &Shared, req: &Request) -> Response {
    match (req.method.as_str(), req.path()) {
        ("GET", "/__emulator/stats") => {
            let s = lock(&shared.stats);
            let mut by: BTreeMap<String, i64> = BTreeMap::new();
            for r in &s.records {
                *by.entry(format!("{} {}", r.method, r.path)).or_default() += 1;
            }
            let writes = s.records.iter().filter(|r| r.method == "POST").count();
            let mut out = Out::new(false);
            out.begin_obj();
            out.kv_int("requests", s.records.len() as i64);
            out.key("by_endpoint");
            out.begin_obj();
            for (k, n) in &by {
                out.kv_int(k, *n);
            }
            out.end_obj();
            out.kv_int("writes", writes as i64);
            out.kv_int("bytes_sent", s.records.iter().map(|r| r.bytes as i64).sum());
            out.kv_int("gzip_responses", s.records.iter().filter(|r| r.gzip).count() as i64);
            out.end_obj();
            Response::json(200, out.finish())
        }
        ("POST", "/__emulator/reset-stats") => {
            lock(&shared.stats).records.clear();
            Response::json(200, "{\"type\":\"success\",\"msg\":\"stats reset\"}")
        }
        ("POST", "/__emulator/gzip/on") | ("POST", "/__emulator/gzip/off") => {
            shared.gzip.store(req.path().ends_with("/on"), Ordering::SeqCst);
            Response::json(200, "{\"type\":\"success\",\"msg\":\"gzip set\"}")
        }
        ("POST", "/__emulator/reset") => {
            lock(&shared.state).reset();
            Response::json(200, "{\"type\":\"success\",\"msg\":\"state reset\"}")
        }
        _ => Response::json(404, "{\"type\":\"error\",\"msg\":\"no such emulator endpoint\"}"),
    }
}
