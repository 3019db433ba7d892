//! Tests of the mailcow API emulator: a replay of the recorded session against the
//! real mailcow (`tests/data/mailcow-transcript.jsonl`), one test per API.md fact the
//! emulator pins, the test-facing Rust API (seeding, snapshots, counters, faults) and
//! the standalone binary. HTTP goes through a tiny std-only client so that headers,
//! raw bodies and connection handling are fully controlled.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sync_test_support::mailcow::{
    DomainSpec, Emulator, EmulatorOptions, Fault, KeyAccess, MailboxSpec, RO_KEY, RW_KEY, SEED_PASSWORD, emulated_hash,
};

// ------------------------------------------------------------------ tiny client

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// `msg` of every entry of a write response.
    fn msgs(&self) -> Vec<Value> {
        match self.json() {
            Value::Array(a) => a.iter().map(|e| e["msg"].clone()).collect(),
            other => vec![other["msg"].clone()],
        }
    }
    /// `(type, msg)` of every entry.
    fn entries(&self) -> Vec<(String, Value)> {
        match self.json() {
            Value::Array(a) => a
                .iter()
                .map(|e| (e["type"].as_str().unwrap_or("").to_string(), e["msg"].clone()))
                .collect(),
            other => vec![(other["type"].as_str().unwrap_or("").to_string(), other["msg"].clone())],
        }
    }
}

struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(emu: &Emulator) -> Client {
        let s = TcpStream::connect(("127.0.0.1", emu.port())).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Client {
            reader: BufReader::new(s),
        }
    }

    fn send(&mut self, raw: &[u8]) -> io::Result<Resp> {
        self.reader.get_mut().write_all(raw)?;
        self.read_response()
    }

    fn read_response(&mut self) -> io::Result<Resp> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed without a response",
            ));
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let mut body = Vec::new();
        match len {
            Some(n) => {
                body.resize(n, 0);
                self.reader.read_exact(&mut body)?;
            }
            None => {
                self.reader.read_to_end(&mut body)?;
            }
        }
        Ok(Resp { status, headers, body })
    }
}

#[derive(Clone, Copy)]
enum Key {
    Rw,
    Ro,
    Wrong,
    None,
}

fn raw_request(method: &str, path: &str, key: Key, ctype: Option<&str>, body: &[u8], close: bool) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    match key {
        Key::Rw => r.push_str(&format!("X-API-Key: {RW_KEY}\r\n")),
        Key::Ro => r.push_str(&format!("X-API-Key: {RO_KEY}\r\n")),
        Key::Wrong => r.push_str("X-API-Key: WRONG-KEY-9999\r\n"),
        Key::None => {}
    }
    if let Some(ct) = ctype {
        r.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if close {
        r.push_str("Connection: close\r\n");
    }
    r.push_str("\r\n");
    let mut v = r.into_bytes();
    v.extend_from_slice(body);
    v
}

/// One request on its own connection.
fn call(emu: &Emulator, method: &str, path: &str, key: Key, ctype: Option<&str>, body: &[u8]) -> Resp {
    Client::connect(emu)
        .send(&raw_request(method, path, key, ctype, body, true))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn get(emu: &Emulator, path: &str) -> Resp {
    call(emu, "GET", path, Key::Rw, None, b"")
}

fn post(emu: &Emulator, path: &str, body: Value) -> Resp {
    call(
        emu,
        "POST",
        path,
        Key::Rw,
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

fn start() -> Emulator {
    Emulator::start(EmulatorOptions::default()).expect("start emulator")
}

/// example.org with mailcow's add/domain defaults (10 mailboxes, 3072/10240/10240 MiB).
fn with_domain() -> Emulator {
    let emu = start();
    emu.add_domain(DomainSpec::default());
    emu
}

fn add_mb(emu: &Emulator, local: &str, quota_mib: i64) {
    emu.add_mailbox(MailboxSpec {
        local_part: local.into(),
        quota_mib,
        ..MailboxSpec::default()
    })
    .unwrap_or_else(|e| panic!("seed {local}: {e}"));
}

fn add_body(local: &str, extra: Value) -> Value {
    let mut b = json!({"local_part": local, "domain": "example.org", "quota": "1024",
        "password": "Plain-Pass-1", "password2": "Plain-Pass-1"});
    if let (Some(m), Value::Object(e)) = (b.as_object_mut(), extra) {
        m.extend(e);
    }
    b
}

// ------------------------------------------------------------- transcript replay

/// Docker-less artefacts of the recording (README): dropped, or mapped to what a real
/// server sends.
fn normalise_expected(entries: &[Value], request: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for e in entries {
        let t = e["type"].as_str().unwrap_or("").to_string();
        let msg = e["msg"].clone();
        if t == "warning"
            && msg.as_str().is_some_and(|m| {
                m.starts_with("Could not move maildir to garbage collector")
                    || m.starts_with("Could not move mail storage to garbage collector")
            })
        {
            continue;
        }
        if msg == json!("domain_added_sogo_failed") {
            out.push(("success".into(), json!(["domain_added", request["domain"]])));
            continue;
        }
        out.push((t, msg));
    }
    out
}

/// Fields whose value depends on the clock: only their JSON type must match.
const VOLATILE: &[&str] = &["created", "modified", "passwd_update"];

fn compare_structure(path: &str, want: &Value, got: &Value, diffs: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                match g.get(k) {
                    None => diffs.push(format!("{p}: missing")),
                    Some(gv) if VOLATILE.contains(&k.as_str()) => {
                        if std::mem::discriminant(wv) != std::mem::discriminant(gv) {
                            diffs.push(format!("{p}: want {wv}, got {gv} (type)"));
                        }
                    }
                    Some(gv) => compare_structure(&p, wv, gv, diffs),
                }
            }
            for k in g.keys().filter(|k| !w.contains_key(*k)) {
                diffs.push(format!("{path}.{k}: unexpected"));
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            if w.len() != g.len() {
                diffs.push(format!("{path}: length want {}, got {}", w.len(), g.len()));
            }
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                compare_structure(&format!("{path}[{i}]"), wv, gv, diffs);
            }
        }
        (w, g) if w == g => {}
        (w, g) => diffs.push(format!("{path}: want {w}, got {g}")),
    }
}

/// Lines with `setup_sql` that are read-only SELECTs (state snapshots of the recording):
/// nothing to replay, the API lines around them show the same state.
const READ_ONLY_SQL_LINES: &[usize] = &[14, 38, 52, 58, 98, 108, 110, 112, 113, 146, 154];

#[test]
fn transcript_replay() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mailcow-transcript.jsonl");
    let text = std::fs::read_to_string(path).expect("transcript");
    let emu = start();
    let mut mismatches: Vec<String> = Vec::new();
    let mut replayed = 0usize;
    let mut read_only = Vec::new();
    let mut resets = 0;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let d: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {n}: {e}"));
        let Some(method) = d["method"].as_str() else {
            if let Some(sql) = d["setup_sql"].as_str() {
                if let Some(rest) = sql.strip_prefix("UPDATE api SET allow_from='") {
                    let list = rest.split('\'').next().unwrap_or("");
                    assert!(sql.ends_with("WHERE access='rw'"), "line {n}: unexpected {sql}");
                    emu.set_allow_from(KeyAccess::Rw, Some(list));
                } else if sql.starts_with("SELECT") {
                    read_only.push(n);
                } else {
                    mismatches.push(format!("line {n}: unhandled setup_sql {sql}"));
                }
            } else if d["section"]
                .as_str()
                .is_some_and(|s| s.starts_with("verification run 2"))
            {
                emu.reset();
                resets += 1;
            } else {
                mismatches.push(format!("line {n}: unknown non-request line"));
            }
            continue;
        };
        let path = d["path"].as_str().expect("path");
        let key = match d["api_key"].as_str() {
            Some("rw") => Key::Rw,
            Some("ro") => Key::Ro,
            Some("wrong") => Key::Wrong,
            _ => Key::None,
        };
        // The recording client sent a JSON content type (line 6 shows it on a GET);
        // the two "extra" lines describe their raw bodies instead of holding them.
        let (ctype, body): (Option<&str>, Vec<u8>) = match (&d["request"], d["request_raw"].as_str()) {
            (_, Some("(form-urlencoded attr=<json>, the UI style)")) => (
                Some("application/x-www-form-urlencoded"),
                format!(
                    "attr={}",
                    urlencode(r#"{"local_part":"f1","domain":"example.org","password":"Form-Pass-1","password2":"Form-Pass-1"}"#)
                )
                .into_bytes(),
            ),
            (_, Some("(raw JSON body, no Content-Type header)")) => (
                None,
                br#"{"local_part":"f2","domain":"example.org","password":"Form-Pass-1","password2":"Form-Pass-1"}"#.to_vec(),
            ),
            (_, Some(raw)) => (Some("application/json"), raw.as_bytes().to_vec()),
            (Value::Null, None) => (Some("application/json"), Vec::new()),
            (req, None) => (Some("application/json"), req.to_string().into_bytes()),
        };
        let resp = call(&emu, method, path, key, ctype, &body);
        replayed += 1;
        let want_status = d["status"].as_u64().unwrap_or(0) as u16;
        if resp.status != want_status {
            mismatches.push(format!(
                "line {n} {method} {path}: status want {want_status}, got {} ({})",
                resp.status,
                resp.text()
            ));
            continue;
        }
        if d["response_raw"].as_str() == Some("") {
            if !resp.body.is_empty() {
                mismatches.push(format!("line {n}: want empty body, got {:?}", resp.text()));
            }
            continue;
        }
        let Ok(got) = serde_json::from_slice::<Value>(&resp.body) else {
            mismatches.push(format!("line {n}: body is not JSON: {:?}", resp.text()));
            continue;
        };
        let want = &d["response"];
        let is_get_data = path.starts_with("/api/v1/get/") && want_status == 200;
        if is_get_data {
            let mut diffs = Vec::new();
            compare_structure("", want, &got, &mut diffs);
            for diff in diffs.into_iter().take(8) {
                mismatches.push(format!("line {n} GET {path}: {diff}"));
            }
        } else {
            let want_entries = match want {
                Value::Array(a) => normalise_expected(a, &d["request"]),
                obj => vec![(obj["type"].as_str().unwrap_or("").to_string(), obj["msg"].clone())],
            };
            let got_entries = match &got {
                Value::Array(a) => a
                    .iter()
                    .map(|e| (e["type"].as_str().unwrap_or("").to_string(), e["msg"].clone()))
                    .collect(),
                obj => vec![(obj["type"].as_str().unwrap_or("").to_string(), obj["msg"].clone())],
            };
            if want_entries != got_entries {
                mismatches.push(format!(
                    "line {n} {method} {path}:\n    want {want_entries:?}\n    got  {got_entries:?}"
                ));
            }
        }
    }
    assert_eq!(read_only, READ_ONLY_SQL_LINES, "read-only setup_sql lines changed");
    assert_eq!(resets, 1, "expected exactly one run-2 boundary");
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    // 158 lines = 144 API calls + 13 setup_sql lines + 1 boundary line.
    assert_eq!(replayed, 144, "replayed too few lines");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ----------------------------------------------------- protocol and auth facts

#[test]
fn no_key_get_gives_empty_200() {
    let emu = with_domain();
    let r = call(&emu, "GET", "/api/v1/get/mailbox/all", Key::None, None, b"");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "{:?}", r.text());
}

#[test]
fn no_key_add_gives_empty_200_and_adds_nothing() {
    let emu = with_domain();
    let body = add_body("alice", json!({}));
    let r = call(
        &emu,
        "POST",
        "/api/v1/add/mailbox",
        Key::None,
        Some("application/json"),
        body.to_string().as_bytes(),
    );
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(emu.mailbox_count(), 0);
}

#[test]
fn no_key_edit_and_delete_are_403() {
    let emu = with_domain();
    for p in ["/api/v1/edit/mailbox", "/api/v1/delete/mailbox"] {
        let r = call(&emu, "POST", p, Key::None, Some("application/json"), b"[]");
        assert_eq!(r.status, 403, "{p}");
        assert_eq!(
            r.json(),
            json!({"type": "error", "msg": "API read/write access denied"})
        );
    }
}

#[test]
fn unknown_key_is_401() {
    let emu = start();
    let r = call(&emu, "GET", "/api/v1/get/domain/all", Key::Wrong, None, b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), json!({"type": "error", "msg": "authentication failed"}));
}

#[test]
fn key_chars_outside_alnum_dash_are_stripped() {
    let emu = start();
    let raw =
        format!("GET /api/v1/get/domain/all HTTP/1.1\r\nHost: x\r\nX-API-Key: {RW_KEY}!#\r\nConnection: close\r\n\r\n");
    let r = Client::connect(&emu).send(raw.as_bytes()).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
}

#[test]
fn ro_key_write_is_403() {
    let emu = with_domain();
    let r = call(
        &emu,
        "POST",
        "/api/v1/add/mailbox",
        Key::Ro,
        Some("application/json"),
        add_body("alice", json!({})).to_string().as_bytes(),
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"type": "error", "msg": "API read/write access denied"})
    );
    assert_eq!(emu.mailbox_count(), 0);
    let r = call(&emu, "GET", "/api/v1/get/domain/example.org", Key::Ro, None, b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["domain_name"], "example.org");
}

#[test]
fn allow_from_rejects_other_ips_with_401() {
    let emu = start();
    emu.set_allow_from(KeyAccess::Rw, Some("10.9.9.9"));
    let r = get(&emu, "/api/v1/get/domain/all");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["msg"], "api access denied for ip 127.0.0.1");
    emu.set_allow_from(KeyAccess::Rw, Some("10.0.0.0/8, 127.0.0.0/8"));
    assert_eq!(get(&emu, "/api/v1/get/domain/all").status, 200);
}

#[test]
fn unknown_route_is_404() {
    let emu = start();
    for p in ["/api/v1/get/nosuchthing/all", "/api/v1/frobnicate/mailbox/all"] {
        let r = get(&emu, p);
        assert_eq!(r.status, 404, "{p}");
        assert_eq!(r.json(), json!({"type": "error", "msg": "route not found"}));
    }
}

#[test]
fn wrong_method_is_405() {
    let emu = start();
    let r = call(
        &emu,
        "POST",
        "/api/v1/get/mailbox/all",
        Key::Rw,
        Some("application/json"),
        b"{}",
    );
    assert_eq!(
        (r.status, r.json()["msg"].clone()),
        (405, json!("only GET method is allowed"))
    );
    let r = call(
        &emu,
        "GET",
        "/api/v1/add/mailbox",
        Key::Rw,
        Some("application/json"),
        b"{}",
    );
    assert_eq!(
        (r.status, r.json()["msg"].clone()),
        (405, json!("only POST method is allowed"))
    );
}

#[test]
fn body_check_runs_before_method_check() {
    let emu = start();
    // GET to add/* without a body: "Cannot find attributes", HTTP 200 (API.md 1).
    let r = call(&emu, "GET", "/api/v1/add/mailbox", Key::Rw, None, b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"type": "error", "msg": "Cannot find attributes in post data"})
    );
}

#[test]
fn invalid_json_is_400() {
    let emu = start();
    let r = call(
        &emu,
        "POST",
        "/api/v1/edit/mailbox",
        Key::Rw,
        Some("application/json; charset=utf-8"),
        b"not json",
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"type": "error", "msg": "Request body doesn't contain valid json!"})
    );
}

#[test]
fn missing_content_type_cannot_find_attributes() {
    let emu = with_domain();
    let body = add_body("alice", json!({}));
    let r = call(
        &emu,
        "POST",
        "/api/v1/add/mailbox",
        Key::Rw,
        None,
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"type": "error", "msg": "Cannot find attributes in post data"})
    );
    assert_eq!(emu.mailbox_count(), 0);
}

#[test]
fn form_encoded_attr_is_accepted() {
    let emu = with_domain();
    let body = format!("attr={}", urlencode(&add_body("alice", json!({})).to_string()));
    let r = call(
        &emu,
        "POST",
        "/api/v1/add/mailbox",
        Key::Rw,
        Some("application/x-www-form-urlencoded"),
        body.as_bytes(),
    );
    assert_eq!(r.msgs().last(), Some(&json!(["mailbox_added", "alice@example.org"])));
}

#[test]
fn every_response_is_json_with_a_session_cookie() {
    let emu = start();
    for (key, path) in [
        (Key::Rw, "/api/v1/get/domain/all"),
        (Key::Wrong, "/api/v1/get/domain/all"),
        (Key::Rw, "/api/v1/nope"),
        (Key::None, "/api/v1/get/domain/all"),
    ] {
        let r = call(&emu, "GET", path, key, None, b"");
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        assert!(
            r.header("set-cookie").is_some_and(|c| c.starts_with("MCSESSID=")),
            "{path}"
        );
    }
}

#[test]
fn get_is_pretty_and_writes_are_compact() {
    let emu = with_domain();
    add_mb(&emu, "alice", 1024);
    let g = get(&emu, "/api/v1/get/mailbox/alice@example.org").text();
    assert!(g.starts_with("{\n    \"username\": \"alice@example.org\",\n"), "{g}");
    let w = post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["alice@example.org"], "attr": {"name": "A"}}),
    )
    .text();
    assert!(
        w.starts_with("[{\"type\":\"success\",\"log\":") && !w.contains('\n'),
        "{w}"
    );
}

#[test]
fn sec_fetch_dest_other_than_empty_is_403() {
    let emu = start();
    let raw = format!(
        "GET /api/v1/get/domain/all HTTP/1.1\r\nHost: x\r\nX-API-Key: {RW_KEY}\r\nSec-Fetch-Dest: document\r\nConnection: close\r\n\r\n"
    );
    let r = Client::connect(&emu).send(raw.as_bytes()).unwrap();
    assert_eq!((r.status, r.body.len()), (403, 0));
}

#[test]
fn plus_in_path_is_mangled_unless_encoded_twice() {
    let emu = with_domain();
    add_mb(&emu, "u+tag", 0);
    assert_eq!(get(&emu, "/api/v1/get/mailbox/u+tag@example.org").text(), "{}");
    assert_eq!(get(&emu, "/api/v1/get/mailbox/u%2Btag@example.org").text(), "{}");
    assert_eq!(
        get(&emu, "/api/v1/get/mailbox/u%252Btag@example.org").json()["username"],
        "u+tag@example.org"
    );
}

// ------------------------------------------------------------------ mailboxes

#[test]
fn empty_mailbox_list_is_an_object() {
    let emu = start();
    assert_eq!(get(&emu, "/api/v1/get/mailbox/all").text(), "{}");
    assert_eq!(get(&emu, "/api/v1/get/mailbox/reduced").text(), "{}");
    assert_eq!(get(&emu, "/api/v1/get/domain/all").text(), "{}");
    assert_eq!(get(&emu, "/api/v1/get/alias/all").text(), "{}");
}

#[test]
fn missing_mailbox_is_an_empty_object_with_200() {
    let emu = with_domain();
    let r = get(&emu, "/api/v1/get/mailbox/nobody@example.org");
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
}

#[test]
fn tag_filtered_domain_list_is_an_array() {
    let emu = with_domain();
    add_mb(&emu, "alice", 0);
    let r = get(&emu, "/api/v1/get/mailbox/example.org?tags=nothing");
    assert_eq!(r.text(), "[]");
}

#[test]
fn quota_in_mib_in_bytes_out() {
    let emu = with_domain();
    let r = post(&emu, "/api/v1/add/mailbox", add_body("alice", json!({"quota": 1536})));
    assert_eq!(r.status, 200);
    let mb = get(&emu, "/api/v1/get/mailbox/alice@example.org").json();
    assert_eq!(mb["quota"], json!(1536 * 1_048_576_i64));
    assert_eq!(mb["percent_in_use"], json!(0));
    assert_eq!(mb["percent_class"], "success");
    let d = get(&emu, "/api/v1/get/domain/example.org").json();
    assert_eq!(d["quota_used_in_domain"], json!((1536 * 1_048_576_i64).to_string()));
    assert_eq!(d["max_quota_for_mbox"], json!(10240 * 1_048_576_i64));
}

#[test]
fn omitted_quota_is_unlimited_and_skips_domain_quota_checks() {
    let emu = start();
    emu.add_domain(DomainSpec {
        maxquota_mib: 100,
        quota_mib: 100,
        defquota_mib: 100,
        ..DomainSpec::default()
    });
    let mut body = add_body("alice", json!({}));
    body.as_object_mut().unwrap().remove("quota");
    let r = post(&emu, "/api/v1/add/mailbox", body);
    assert_eq!(r.msgs().last(), Some(&json!(["mailbox_added", "alice@example.org"])));
    let mb = emu.mailbox("alice@example.org").unwrap();
    assert_eq!(
        (
            mb["quota"].clone(),
            mb["percent_in_use"].clone(),
            mb["percent_class"].clone()
        ),
        (json!(0), json!("- "), json!("info"))
    );
    // Non-numeric is intval 0 too.
    let r = post(&emu, "/api/v1/add/mailbox", add_body("bob", json!({"quota": "abc"})));
    assert_eq!(r.msgs().last(), Some(&json!(["mailbox_added", "bob@example.org"])));
}

#[test]
fn omitted_name_is_empty_and_brackets_are_stripped() {
    let emu = with_domain();
    post(&emu, "/api/v1/add/mailbox", add_body("alice", json!({})));
    assert_eq!(emu.mailbox("alice@example.org").unwrap()["name"], "");
    post(&emu, "/api/v1/add/mailbox", add_body("bob", json!({"name": "<Bob B>"})));
    assert_eq!(emu.mailbox("bob@example.org").unwrap()["name"], "Bob B");
}

#[test]
fn add_success_is_rl_saved_then_mailbox_added() {
    let emu = with_domain();
    let r = post(&emu, "/api/v1/add/mailbox", add_body(" Alice ", json!({})));
    assert_eq!(
        r.entries(),
        vec![
            ("success".into(), json!(["rl_saved", "alice@example.org"])),
            ("success".into(), json!(["mailbox_added", "alice@example.org"]))
        ]
    );
}

#[test]
fn add_unknown_domain_is_access_denied() {
    let emu = with_domain();
    let r = post(
        &emu,
        "/api/v1/add/mailbox",
        json!({"local_part": "e1", "domain": "nosuchdomain.org", "password": "Plain-Pass-1", "password2": "Plain-Pass-1"}),
    );
    assert_eq!(r.entries(), vec![("danger".into(), json!("access_denied"))]);
}

#[test]
fn add_validation_order() {
    let emu = with_domain();
    add_mb(&emu, "alice", 0);
    emu.add_alias("info@example.org", "alice@example.org", true);
    let first = |b: Value| post(&emu, "/api/v1/add/mailbox", b).msgs()[0].clone();
    // invalid address beats an unknown domain
    assert_eq!(
        first(json!({"local_part": "a b", "domain": "nosuch.org"})),
        json!("mailbox_invalid")
    );
    // quarantine category before the domain check
    assert_eq!(
        first(json!({"local_part": "x", "domain": "nosuch.org", "quarantine_category": "bogus"})),
        json!("quarantine_category_invalid")
    );
    // existence before the password
    assert_eq!(
        first(json!({"local_part": "alice", "domain": "example.org"})),
        json!(["object_exists", "alice@example.org"])
    );
    assert_eq!(
        first(json!({"local_part": "info", "domain": "example.org"})),
        json!(["is_alias", "info@example.org"])
    );
    // password before limits and quota
    assert_eq!(
        first(add_body("carol", json!({"password2": "Other-Pass-1", "quota": 99999}))),
        json!("password_mismatch")
    );
    assert_eq!(
        first(add_body(
            "carol",
            json!({"password": "", "password2": "", "quota": 99999})
        )),
        json!("password_complexity")
    );
    assert_eq!(
        first(add_body("carol", json!({"quota": 99999}))),
        json!(["mailbox_quota_exceeded", 10240])
    );
    assert_eq!(emu.mailbox_count(), 1);
}

#[test]
fn add_limits_count_and_domain_quota() {
    let emu = start();
    emu.add_domain(DomainSpec {
        mailboxes: 2,
        defquota_mib: 1024,
        maxquota_mib: 2048,
        quota_mib: 3072,
        ..DomainSpec::default()
    });
    assert_eq!(
        post(&emu, "/api/v1/add/mailbox", add_body("a", json!({"quota": 2048}))).msgs()[1],
        json!(["mailbox_added", "a@example.org"])
    );
    assert_eq!(
        post(&emu, "/api/v1/add/mailbox", add_body("b", json!({"quota": 2000}))).msgs(),
        vec![json!(["mailbox_quota_left_exceeded", 1024])]
    );
    assert_eq!(
        post(&emu, "/api/v1/add/mailbox", add_body("b", json!({"quota": 1024}))).msgs()[1],
        json!(["mailbox_added", "b@example.org"])
    );
    assert_eq!(
        post(&emu, "/api/v1/add/mailbox", add_body("c", json!({"quota": 1}))).msgs(),
        vec![json!(["max_mailbox_exceeded", 2, 2])]
    );
}

#[test]
fn inactive_domain_accepts_mailboxes() {
    let emu = start();
    emu.add_domain(DomainSpec {
        active: false,
        ..DomainSpec::default()
    });
    let r = post(&emu, "/api/v1/add/mailbox", add_body("sleeper", json!({})));
    assert_eq!(r.msgs()[1], json!(["mailbox_added", "sleeper@example.org"]));
    assert_eq!(emu.mailbox("sleeper@example.org").unwrap()["active"], 1);
    assert_eq!(emu.domain("example.org").unwrap()["active"], 0);
}

#[test]
fn active_2_is_kept_on_add_and_edit() {
    let emu = with_domain();
    post(&emu, "/api/v1/add/mailbox", add_body("dave", json!({"active": "2"})));
    add_mb(&emu, "carol", 0);
    post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["carol@example.org"], "attr": {"active": 2}}),
    );
    for u in ["dave@example.org", "carol@example.org"] {
        let mb = get(&emu, &format!("/api/v1/get/mailbox/{u}")).json();
        assert_eq!(
            (mb["active"].clone(), mb["active_int"].clone()),
            (json!(2), json!(2)),
            "{u}"
        );
    }
    let red = get(&emu, "/api/v1/get/mailbox/reduced").json();
    assert!(red.as_array().unwrap().iter().all(|m| m["active"] == 2));
}

#[test]
fn mailbox_object_types_follow_php_mysqlnd() {
    let emu = with_domain();
    emu.add_mailbox(MailboxSpec {
        local_part: "alice".into(),
        quota_mib: 1024,
        tls_in: true,
        tags: vec!["b".into()],
        ..MailboxSpec::default()
    })
    .unwrap();
    let mb = get(&emu, "/api/v1/get/mailbox/alice@example.org").json();
    for k in [
        "active",
        "active_int",
        "quota",
        "messages",
        "quota_used",
        "last_imap_login",
        "max_new_quota",
        "spam_aliases",
        "pushover_active",
        "is_relayed",
    ] {
        assert!(mb[k].is_i64(), "{k} should be a JSON number: {}", mb[k]);
    }
    let attrs = mb["attributes"].as_object().unwrap();
    for k in [
        "force_pw_update",
        "force_tfa",
        "tls_enforce_in",
        "tls_enforce_out",
        "sogo_access",
        "imap_access",
        "pop3_access",
        "smtp_access",
        "sieve_access",
        "eas_access",
        "dav_access",
        "relayhost",
        "passwd_update",
        "mailbox_format",
        "quarantine_notification",
        "quarantine_category",
        "attribute_hash",
    ] {
        assert!(attrs[k].is_string(), "attributes.{k} should be a string: {}", attrs[k]);
    }
    assert_eq!(attrs["tls_enforce_in"], "1");
    assert!(!attrs.contains_key("recovery_email"), "only after the first edit");
    assert_eq!(mb["custom_attributes"], json!([]));
    assert_eq!(mb["rl"], json!(false));
    assert_eq!(mb["sender_acl"], json!([]));
    assert_eq!(mb["authsource"], "mailcow");
    assert_eq!(mb["tags"], json!(["b"]));
    add_mb(&emu, "bob", 0);
    assert!(
        emu.mailbox("bob@example.org").unwrap().get("tags").is_none(),
        "tags absent when none"
    );
    // ≈ 0.9–1.3 KB of compact JSON per full object.
    let size = serde_json::to_string(&mb).unwrap().len();
    assert!((800..1500).contains(&size), "{size} bytes");
}

#[test]
fn reduced_has_exact_keys_in_order() {
    let emu = with_domain();
    emu.add_mailbox(MailboxSpec {
        local_part: "alice".into(),
        tags: vec!["t".into()],
        ..MailboxSpec::default()
    })
    .unwrap();
    let text = get(&emu, "/api/v1/get/mailbox/reduced").text();
    let keys = [
        "username",
        "active",
        "active_int",
        "domain",
        "name",
        "local_part",
        "quota",
        "messages",
        "attributes",
        "custom_attributes",
        "quota_used",
        "percent_in_use",
        "created",
        "modified",
        "authsource",
        "percent_class",
        "last_imap_login",
        "last_smtp_login",
        "last_pop3_login",
        "last_sso_login",
        "tags",
    ];
    // Top-level keys are indented by 8 spaces inside the array.
    let found: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("        \""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert_eq!(found, keys);
    let full = get(&emu, "/api/v1/get/mailbox/all").json();
    for k in [
        "max_new_quota",
        "spam_aliases",
        "pushover_active",
        "rl",
        "rl_scope",
        "is_relayed",
        "sender_acl",
    ] {
        assert!(full[0].get(k).is_some(), "full object lacks {k}");
    }
}

#[test]
fn username_lookup_is_case_insensitive() {
    let emu = with_domain();
    add_mb(&emu, "alice", 0);
    assert_eq!(
        get(&emu, "/api/v1/get/mailbox/Alice@Example.ORG").json()["username"],
        "alice@example.org"
    );
}

#[test]
fn unknown_domain_all_returns_everything() {
    let emu = start();
    emu.add_domain(DomainSpec::default());
    emu.add_domain(DomainSpec {
        name: "example.net".into(),
        ..DomainSpec::default()
    });
    for u in ["bob", "alice"] {
        add_mb(&emu, u, 0);
    }
    emu.add_mailbox(MailboxSpec {
        local_part: "erin".into(),
        domain: "example.net".into(),
        ..MailboxSpec::default()
    })
    .unwrap();
    let names = |r: Resp| -> Vec<String> {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["username"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(get(&emu, "/api/v1/get/mailbox/all")),
        ["erin@example.net", "alice@example.org", "bob@example.org"]
    );
    assert_eq!(
        names(get(&emu, "/api/v1/get/mailbox/all/example.net")),
        ["erin@example.net"]
    );
    // Every mailbox of every domain, in username order…
    assert_eq!(
        names(get(&emu, "/api/v1/get/mailbox/all/nosuchdomain.org")),
        ["alice@example.org", "bob@example.org", "erin@example.net"]
    );
    assert_eq!(
        names(get(&emu, "/api/v1/get/mailbox/reduced/nosuchdomain.org")).len(),
        3
    );
    // …and duplicates when mixed with a real domain.
    assert_eq!(
        names(get(&emu, "/api/v1/get/mailbox/all/example.net,nosuchdomain.org")),
        [
            "erin@example.net",
            "alice@example.org",
            "bob@example.org",
            "erin@example.net"
        ]
    );
}

#[test]
fn tag_filter_is_substring_and_tags_sorted_case_insensitively() {
    let emu = with_domain();
    emu.add_mailbox(MailboxSpec {
        local_part: "alice".into(),
        tags: vec!["team-b".into(), "ldap-sync".into(), "Team-A".into()],
        ..MailboxSpec::default()
    })
    .unwrap();
    add_mb(&emu, "bob", 0);
    assert_eq!(
        emu.mailbox("alice@example.org").unwrap()["tags"],
        json!(["ldap-sync", "Team-A", "team-b"])
    );
    let r = get(&emu, "/api/v1/get/mailbox/all?tags=SYNC").json();
    assert_eq!(r.as_array().unwrap().len(), 1);
    let r = get(&emu, "/api/v1/get/mailbox/ample.org?tags=team").json();
    assert_eq!(r[0]["username"], "alice@example.org");
}

// ----------------------------------------------------------------- passwords

#[test]
fn prehashed_ssha_stored_as_is() {
    let emu = with_domain();
    let h = "{SSHA256}ZwKlt9ByRaPlQ/YslwmfNR6UHda3h+xseHzDlK3Wl11jNjhiMzA5M2IyMTk3MjFk";
    post(
        &emu,
        "/api/v1/add/mailbox",
        add_body("bob", json!({"password": h, "password2": h})),
    );
    assert_eq!(emu.stored_password("bob@example.org").as_deref(), Some(h));
    // The scheme match is case-insensitive.
    let lower = "{ssha}c2FsdHl2YWx1ZQ==";
    post(
        &emu,
        "/api/v1/add/mailbox",
        add_body("carol", json!({"password": lower, "password2": lower})),
    );
    assert_eq!(emu.stored_password("carol@example.org").as_deref(), Some(lower));
}

#[test]
fn unknown_scheme_is_rehashed() {
    let emu = with_domain();
    let h = "{PBKDF2-SHA512}10000$abcdef$0123456789";
    post(
        &emu,
        "/api/v1/add/mailbox",
        add_body("dave", json!({"password": h, "password2": h})),
    );
    assert_eq!(emu.stored_password("dave@example.org"), Some(emulated_hash(h)));
    post(&emu, "/api/v1/add/mailbox", add_body("erin", json!({})));
    assert_eq!(
        emu.stored_password("erin@example.org"),
        Some(emulated_hash("Plain-Pass-1"))
    );
    assert_ne!(emulated_hash("Plain-Pass-1"), "Plain-Pass-1");
}

#[test]
fn complexity_applies_to_hash_string() {
    let emu = with_domain();
    emu.set_password_policy(10, true, true, true, true);
    let weak = "{plain}abc";
    let r = post(
        &emu,
        "/api/v1/add/mailbox",
        add_body("a", json!({"password": weak, "password2": weak})),
    );
    assert_eq!(r.msgs(), vec![json!("password_complexity")]);
    let real = "{SSHA256}ZwKlt9ByRaPlQ/YslwmfNR6UHda3h+xseHzDlK3Wl11jNjhiMzA5M2IyMTk3MjFk";
    let r = post(
        &emu,
        "/api/v1/add/mailbox",
        add_body("b", json!({"password": real, "password2": real})),
    );
    assert_eq!(r.msgs()[1], json!(["mailbox_added", "b@example.org"]));
}

#[test]
fn password_policy_get_and_edit_use_strings() {
    let emu = start();
    assert_eq!(
        get(&emu, "/api/v1/get/passwordpolicy").json(),
        json!({"length": "6", "chars": "0", "special_chars": "0", "lowerupper": "0", "numbers": "0"})
    );
    let r = post(
        &emu,
        "/api/v1/edit/passwordpolicy",
        json!({"items": ["none"], "attr": {"length": "12", "numbers": 1}}),
    );
    assert_eq!(r.entries(), vec![("success".into(), json!("password_policy_saved"))]);
    assert_eq!(
        get(&emu, "/api/v1/get/passwordpolicy").json(),
        json!({"length": "12", "chars": "0", "special_chars": "0", "lowerupper": "0", "numbers": "1"})
    );
}

#[test]
fn authsource_ldap_without_idp_becomes_mailcow() {
    let emu = with_domain();
    let r = post(
        &emu,
        "/api/v1/add/mailbox",
        json!({"local_part": "l", "domain": "example.org", "authsource": "ldap"}),
    );
    assert_eq!(r.msgs(), vec![json!("password_complexity")]);
    post(
        &emu,
        "/api/v1/add/mailbox",
        add_body("l", json!({"authsource": "ldap"})),
    );
    assert_eq!(emu.mailbox("l@example.org").unwrap()["authsource"], "mailcow");
    let r = post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["l@example.org"], "attr": {"authsource": "ldap"}}),
    );
    assert_eq!(r.msgs(), vec![json!(["mailbox_modified", "l@example.org"])]);
    assert_eq!(emu.mailbox("l@example.org").unwrap()["authsource"], "mailcow");
}

#[test]
fn authsource_ldap_with_ldap_idp_is_kept_and_needs_no_password() {
    let emu = Emulator::start(EmulatorOptions {
        idp_authsource: Some("ldap".into()),
        ..EmulatorOptions::default()
    })
    .unwrap();
    emu.add_domain(DomainSpec::default());
    let r = post(
        &emu,
        "/api/v1/add/mailbox",
        json!({"local_part": "l", "domain": "example.org", "authsource": "ldap", "force_pw_update": 1}),
    );
    assert_eq!(r.msgs()[1], json!(["mailbox_added", "l@example.org"]));
    let mb = emu.mailbox("l@example.org").unwrap();
    assert_eq!(
        (mb["authsource"].clone(), mb["attributes"]["force_pw_update"].clone()),
        (json!("ldap"), json!("0"))
    );
    assert_eq!(emu.stored_password("l@example.org").as_deref(), Some(""));
    // keycloak does not match the configured IdP
    post(
        &emu,
        "/api/v1/add/mailbox",
        add_body("k", json!({"authsource": "keycloak"})),
    );
    assert_eq!(emu.mailbox("k@example.org").unwrap()["authsource"], "mailcow");
}

// ---------------------------------------------------------------------- edit

#[test]
fn edit_batch_one_failure_others_applied() {
    let emu = start();
    emu.add_domain(DomainSpec {
        mailboxes: 20,
        defquota_mib: 1024,
        maxquota_mib: 2048,
        quota_mib: 20480,
        ..DomainSpec::default()
    });
    emu.add_domain(DomainSpec {
        name: "example.net".into(),
        mailboxes: 20,
        defquota_mib: 1024,
        maxquota_mib: 10240,
        quota_mib: 51200,
        ..DomainSpec::default()
    });
    add_mb(&emu, "alice", 1024);
    emu.add_mailbox(MailboxSpec {
        local_part: "erin".into(),
        domain: "example.net".into(),
        quota_mib: 1024,
        ..MailboxSpec::default()
    })
    .unwrap();
    let r = post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["alice@example.org", "erin@example.net", "nobody@example.org"], "attr": {"quota": "3072", "name": "Batch"}}),
    );
    assert_eq!(
        r.entries(),
        vec![
            ("danger".into(), json!(["mailbox_quota_left_exceeded", 2048])),
            ("success".into(), json!(["mailbox_modified", "erin@example.net"])),
            ("danger".into(), json!("access_denied")),
        ]
    );
    let alice = emu.mailbox("alice@example.org").unwrap();
    assert_eq!(
        (alice["quota"].clone(), alice["name"].clone()),
        (json!(1_073_741_824), json!(""))
    );
    let erin = emu.mailbox("erin@example.net").unwrap();
    assert_eq!(
        (erin["quota"].clone(), erin["name"].clone()),
        (json!(3_221_225_472_i64), json!("Batch"))
    );
}

#[test]
fn edit_weak_password_skips_every_item_entirely() {
    let emu = with_domain();
    add_mb(&emu, "alice", 0);
    add_mb(&emu, "bob", 0);
    let before = emu.stored_password("alice@example.org");
    let r = post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["alice@example.org", "bob@example.org"], "attr": {"name": "Weak", "password": "ab", "password2": "ab"}}),
    );
    assert_eq!(
        r.msgs(),
        vec![json!("password_complexity"), json!("password_complexity")]
    );
    let r = post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["alice@example.org"], "attr": {"name": "Mismatch", "password": "Long-Enough-1", "password2": "Long-Enough-2"}}),
    );
    assert_eq!(r.msgs(), vec![json!("password_mismatch")]);
    assert_eq!(emu.mailbox("alice@example.org").unwrap()["name"], "");
    assert_eq!(emu.stored_password("alice@example.org"), before);
    post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": "alice@example.org", "attr": {"password": "New-Pass-22", "password2": "New-Pass-22"}}),
    );
    assert_eq!(
        emu.stored_password("alice@example.org"),
        Some(emulated_hash("New-Pass-22"))
    );
}

#[test]
fn edit_missing_mailbox_is_plain_access_denied_and_bad_item_username_invalid() {
    let emu = with_domain();
    let r = post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["nobody@example.org", "not-an-address"], "attr": {"name": "x"}}),
    );
    assert_eq!(
        r.msgs(),
        vec![json!("access_denied"), json!(["username_invalid", "not-an-address"])]
    );
}

#[test]
fn edit_without_items_is_task_completed() {
    let emu = with_domain();
    let r = post(&emu, "/api/v1/edit/mailbox", json!({"attr": {"name": "no items"}}));
    assert_eq!(r.json(), json!({"type": "success", "msg": "Task completed"}));
    let r = post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": [], "attr": {"name": "x"}}),
    );
    assert_eq!(r.json(), json!({"type": "success", "msg": "Task completed"}));
}

#[test]
fn edit_echoes_the_item_as_sent() {
    let emu = with_domain();
    add_mb(&emu, "alice", 0);
    let r = post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": "Alice@Example.org", "attr": {"name": "A"}}),
    );
    assert_eq!(r.msgs(), vec![json!(["mailbox_modified", "Alice@Example.org"])]);
    assert_eq!(emu.mailbox("alice@example.org").unwrap()["name"], "A");
}

#[test]
fn edit_ignores_tls_enforce() {
    let emu = with_domain();
    add_mb(&emu, "alice", 0);
    let r = post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["alice@example.org"], "attr": {"tls_enforce_in": "1", "tls_enforce_out": "1"}}),
    );
    assert_eq!(r.msgs(), vec![json!(["mailbox_modified", "alice@example.org"])]);
    let a = &emu.mailbox("alice@example.org").unwrap()["attributes"];
    assert_eq!(
        (a["tls_enforce_in"].clone(), a["tls_enforce_out"].clone()),
        (json!("0"), json!("0"))
    );
}

#[test]
fn tls_policy_sets_flags() {
    let emu = with_domain();
    add_mb(&emu, "alice", 0);
    add_mb(&emu, "bob", 0);
    let r = post(
        &emu,
        "/api/v1/edit/tls_policy",
        json!({"items": ["alice@example.org", "nobody@example.org", "bob@example.org"], "attr": {"tls_enforce_in": 1, "tls_enforce_out": "1"}}),
    );
    assert_eq!(
        r.msgs(),
        vec![
            json!(["mailbox_modified", "alice@example.org"]),
            json!("access_denied"),
            json!(["mailbox_modified", "bob@example.org"])
        ]
    );
    post(
        &emu,
        "/api/v1/edit/tls_policy",
        json!({"items": "alice@example.org", "attr": {"tls_enforce_out": 0}}),
    );
    let a = &emu.mailbox("alice@example.org").unwrap()["attributes"];
    assert_eq!(
        (a["tls_enforce_in"].clone(), a["tls_enforce_out"].clone()),
        (json!("1"), json!("0"))
    );
    let b = &get(&emu, "/api/v1/get/mailbox/reduced/example.org").json()[1]["attributes"];
    assert_eq!(
        (b["tls_enforce_in"].clone(), b["tls_enforce_out"].clone()),
        (json!("1"), json!("1"))
    );
}

#[test]
fn tags_additive() {
    let emu = with_domain();
    emu.add_mailbox(MailboxSpec {
        local_part: "alice".into(),
        tags: vec!["ldap-sync".into(), "Team-A".into()],
        ..MailboxSpec::default()
    })
    .unwrap();
    let tags = |emu: &Emulator| emu.mailbox("alice@example.org").unwrap()["tags"].clone();
    let edit = |t: Value| {
        post(
            &emu,
            "/api/v1/edit/mailbox",
            json!({"items": ["alice@example.org"], "attr": {"tags": t}}),
        )
        .msgs()
    };
    assert_eq!(
        edit(json!("team-b")),
        vec![json!(["mailbox_modified", "alice@example.org"])]
    );
    assert_eq!(tags(&emu), json!(["ldap-sync", "Team-A"]), "a string is ignored");
    edit(json!(["ldap-sync", "team-b"]));
    assert_eq!(tags(&emu), json!(["ldap-sync", "Team-A", "team-b"]));
    edit(json!([]));
    assert_eq!(
        tags(&emu),
        json!(["ldap-sync", "Team-A", "team-b"]),
        "[] removes nothing"
    );
    let r = post(
        &emu,
        "/api/v1/delete/mailbox/tag/alice@example.org",
        json!(["Team-A", "nope"]),
    );
    assert_eq!(r.msgs(), vec![json!(["mailbox_modified", "alice@example.org"])]);
    assert_eq!(tags(&emu), json!(["ldap-sync", "team-b"]));
    // On add, a non-array value is ignored too.
    post(
        &emu,
        "/api/v1/add/mailbox",
        add_body("bob", json!({"tags": "ldap-sync"})),
    );
    assert!(emu.mailbox("bob@example.org").unwrap().get("tags").is_none());
}

#[test]
fn edit_empty_name_keeps_old_and_attribute_hash_resets() {
    let emu = with_domain();
    post(
        &emu,
        "/api/v1/add/mailbox",
        add_body("alice", json!({"name": "Alice", "attribute_hash": "h1"})),
    );
    assert_eq!(
        emu.mailbox("alice@example.org").unwrap()["attributes"]["attribute_hash"],
        "h1"
    );
    post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["alice@example.org"], "attr": {"name": ""}}),
    );
    let mb = emu.mailbox("alice@example.org").unwrap();
    assert_eq!(mb["name"], "Alice");
    assert_eq!(mb["attributes"]["attribute_hash"], "");
    assert_eq!(
        mb["attributes"]["recovery_email"],
        Value::Null,
        "key appears after an edit"
    );
    post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["alice@example.org"], "attr": {"attribute_hash": "h2"}}),
    );
    assert_eq!(
        emu.mailbox("alice@example.org").unwrap()["attributes"]["attribute_hash"],
        "h2"
    );
}

#[test]
fn edit_password_ignored_for_non_mailcow_authsource() {
    let emu = Emulator::start(EmulatorOptions {
        idp_authsource: Some("ldap".into()),
        ..EmulatorOptions::default()
    })
    .unwrap();
    emu.add_domain(DomainSpec::default());
    emu.add_mailbox(MailboxSpec {
        local_part: "l".into(),
        authsource: "ldap".into(),
        ..MailboxSpec::default()
    })
    .unwrap();
    let r = post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["l@example.org"], "attr": {"password": "x", "password2": "y", "name": "L"}}),
    );
    assert_eq!(r.msgs(), vec![json!(["mailbox_modified", "l@example.org"])]);
    assert_eq!(emu.stored_password("l@example.org").as_deref(), Some(""));
    assert_eq!(emu.mailbox("l@example.org").unwrap()["name"], "L");
}

#[test]
fn edit_quota_is_checked_against_max_new_quota() {
    let emu = with_domain();
    add_mb(&emu, "alice", 1024);
    add_mb(&emu, "bob", 2048);
    let r = post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["alice@example.org"], "attr": {"quota": "999999"}}),
    );
    // min(10240 − 2048, 10240) MiB
    assert_eq!(r.msgs(), vec![json!(["mailbox_quota_left_exceeded", 8192])]);
    assert_eq!(
        emu.mailbox("alice@example.org").unwrap()["max_new_quota"],
        json!(8192 * 1_048_576_i64)
    );
}

// -------------------------------------------------------------------- delete

#[test]
fn delete_needs_bare_array() {
    let emu = with_domain();
    add_mb(&emu, "alice", 0);
    add_mb(&emu, "bob", 0);
    let r = post(&emu, "/api/v1/delete/mailbox", json!({"items": ["alice@example.org"]}));
    assert_eq!(r.msgs(), vec![json!("access_denied")]);
    assert_eq!(emu.mailbox_count(), 2);
    let r = post(&emu, "/api/v1/delete/mailbox", json!("alice@example.org"));
    assert_eq!(r.msgs(), vec![json!(["mailbox_removed", "alice@example.org"])]);
    let r = post(
        &emu,
        "/api/v1/delete/mailbox",
        json!(["nobody@example.org", "bob@example.org"]),
    );
    assert_eq!(
        r.msgs(),
        vec![json!("access_denied"), json!(["mailbox_removed", "bob@example.org"])]
    );
    assert_eq!(emu.mailbox_count(), 0);
}

#[test]
fn delete_mailbox_removes_aliases_pointing_only_to_it() {
    let emu = with_domain();
    add_mb(&emu, "alice", 0);
    add_mb(&emu, "bob", 0);
    emu.add_alias("only@example.org", "alice@example.org", true);
    emu.add_alias("multi@example.org", "alice@example.org,bob@example.org", true);
    post(&emu, "/api/v1/delete/mailbox", json!(["alice@example.org"]));
    let aliases = emu.aliases();
    assert_eq!(aliases.len(), 1);
    assert_eq!(
        (aliases[0]["address"].clone(), aliases[0]["goto"].clone()),
        (json!("multi@example.org"), json!("bob@example.org"))
    );
}

// ------------------------------------------------------------------- aliases

#[test]
fn alias_defaults_are_zero_and_id_is_a_string_in_msg2() {
    let emu = with_domain();
    add_mb(&emu, "alice", 0);
    let r = post(
        &emu,
        "/api/v1/add/alias",
        json!({"address": "a1@example.org A2@Example.ORG", "goto": "alice@example.org"}),
    );
    assert_eq!(
        r.msgs(),
        vec![
            json!(["alias_added", "a1@example.org", "2"]),
            json!(["alias_added", "A2@example.org", "3"])
        ]
    );
    let a = get(&emu, "/api/v1/get/alias/2").json();
    for k in ["active", "sogo_visible", "sender_allowed", "internal"] {
        assert_eq!(a[k], json!(0), "{k}");
    }
    assert!(a["id"].is_i64());
    assert_eq!(a["modified"], Value::Null);
}

#[test]
fn alias_ids_not_reused() {
    let emu = with_domain();
    // Mailbox self-alias rows take ids 1 and 2.
    add_mb(&emu, "alice", 0);
    add_mb(&emu, "bob", 0);
    assert_eq!(emu.add_alias("x@example.org", "alice@example.org", true), 3);
    post(&emu, "/api/v1/delete/alias", json!([3]));
    assert_eq!(emu.add_alias("y@example.org", "alice@example.org", true), 4);
    post(&emu, "/api/v1/delete/mailbox", json!(["bob@example.org"]));
    add_mb(&emu, "carol", 0);
    assert_eq!(emu.add_alias("z@example.org", "alice@example.org", true), 6);
    emu.reset();
    emu.add_domain(DomainSpec::default());
    assert_eq!(
        emu.add_alias("z@example.org", "a@elsewhere.test", true),
        1,
        "reset restarts ids"
    );
}

#[test]
fn alias_goto_order_kept_exact_duplicates_dropped() {
    let emu = with_domain();
    let r = post(
        &emu,
        "/api/v1/add/alias",
        json!({"address": "team@example.org", "goto": "carol@example.org, Bob@Example.ORG,alice@example.org,alice@example.org,Alice@example.org", "active": 1}),
    );
    assert_eq!(r.msgs()[0][0], "alias_added");
    assert_eq!(
        emu.aliases()[0]["goto"],
        "carol@example.org,Bob@example.org,alice@example.org,Alice@example.org"
    );
    let r = post(
        &emu,
        "/api/v1/add/alias",
        json!({"address": "sales@example.org", "goto": "not-an-email"}),
    );
    assert_eq!(r.msgs(), vec![json!(["goto_invalid", "@"])]);
    let r = post(
        &emu,
        "/api/v1/add/alias",
        json!({"address": "x@nosuchdomain.org", "goto": "a@example.org"}),
    );
    assert_eq!(r.msgs(), vec![json!(["domain_not_found", "nosuchdomain.org"])]);
    let r = post(
        &emu,
        "/api/v1/add/alias",
        json!({"address": "team@example.org", "goto": "a@example.org"}),
    );
    assert_eq!(r.msgs(), vec![json!(["is_alias_or_mailbox", "team@example.org"])]);
}

#[test]
fn alias_equal_to_its_goto_is_task_completed() {
    let emu = with_domain();
    let r = post(
        &emu,
        "/api/v1/add/alias",
        json!({"address": "a@example.org", "goto": "a@example.org", "active": 1}),
    );
    assert_eq!(r.json(), json!({"type": "success", "msg": "Task completed"}));
    assert!(emu.aliases().is_empty());
}

#[test]
fn alias_edit_goto_verbatim_identical_dropped_and_missing_items() {
    let emu = with_domain();
    let id = emu.add_alias("team@example.org", "a@example.org", true);
    let r = post(
        &emu,
        "/api/v1/edit/alias",
        json!({"items": [id], "attr": {"goto": "frank@example.net,Carol@Example.ORG"}}),
    );
    assert_eq!(r.msgs(), vec![json!(["alias_modified", "team@example.org"])]);
    assert_eq!(
        get(&emu, &format!("/api/v1/get/alias/{id}")).json()["goto"],
        "frank@example.net,Carol@Example.ORG"
    );
    post(
        &emu,
        "/api/v1/edit/alias",
        json!({"items": "team@example.org", "attr": {"active": 0, "goto": ""}}),
    );
    let a = get(&emu, "/api/v1/get/alias/team@example.org").json();
    assert_eq!(
        (a["active"].clone(), a["goto"].clone()),
        (json!(0), json!("frank@example.net,Carol@Example.ORG"))
    );
    assert!(a["modified"].is_string());
    let r = post(
        &emu,
        "/api/v1/edit/alias",
        json!({"items": [id.to_string()], "attr": {"goto": "team@example.org,bob@example.org"}}),
    );
    assert_eq!(
        r.entries(),
        vec![
            ("danger".into(), json!("alias_goto_identical")),
            ("success".into(), json!(["alias_modified", "team@example.org"]))
        ]
    );
    assert_eq!(emu.aliases()[0]["goto"], "bob@example.org");
    let r = post(
        &emu,
        "/api/v1/edit/alias",
        json!({"items": [999999], "attr": {"goto": "a@example.org"}}),
    );
    assert_eq!(r.msgs(), vec![json!(["alias_invalid", null])]);
    let r = post(&emu, "/api/v1/delete/alias", json!(["team@example.org", 999999]));
    assert_eq!(
        r.msgs(),
        vec![json!(["alias_removed", "team@example.org"]), json!("access_denied")]
    );
}

#[test]
fn alias_lookup_by_address_collides_with_leading_digits() {
    let emu = with_domain();
    for i in 1..=16 {
        emu.add_alias(&format!("a{i}@example.org"), "x@elsewhere.test", true);
    }
    let id = emu.add_alias("16x@example.org", "y@elsewhere.test", true);
    assert_eq!(id, 17);
    // id 16 (a16@…) wins over the address match.
    assert_eq!(
        get(&emu, "/api/v1/get/alias/16x@example.org").json()["address"],
        "a16@example.org"
    );
}

// -------------------------------------------------------------- domains, rename

#[test]
fn domain_object_fields() {
    let emu = start();
    emu.add_domain(DomainSpec {
        name: "inactive.example".into(),
        description: "inactive".into(),
        aliases: 10,
        mailboxes: 5,
        defquota_mib: 100,
        maxquota_mib: 500,
        quota_mib: 1000,
        active: false,
    });
    emu.add_mailbox(MailboxSpec {
        local_part: "sleeper".into(),
        domain: "inactive.example".into(),
        quota_mib: 100,
        ..MailboxSpec::default()
    })
    .unwrap();
    let d = get(&emu, "/api/v1/get/domain/inactive.example").json();
    let want = json!({"max_new_mailbox_quota": 524288000, "def_new_mailbox_quota": 104857600, "quota_used_in_domain": "104857600",
        "bytes_total": 0, "msgs_total": 0, "mboxes_in_domain": 1, "mboxes_left": 4, "domain_name": "inactive.example",
        "domain_h_name": "inactive.example", "description": "inactive", "max_num_aliases_for_domain": 10, "max_num_mboxes_for_domain": 5,
        "def_quota_for_mbox": 104857600, "max_quota_for_mbox": 524288000, "max_quota_for_domain": 1048576000, "relayhost": "0",
        "backupmx": 0, "backupmx_int": 0, "gal": 1, "gal_int": 1, "rl": false, "active": 0, "active_int": 0, "relay_all_recipients": 0,
        "relay_all_recipients_int": 0, "relay_unknown_only": 0, "relay_unknown_only_int": 0, "created": d["created"], "modified": null,
        "aliases_in_domain": 0, "aliases_left": 10, "domain_admins": "-"});
    assert_eq!(d, want);
    assert_eq!(get(&emu, "/api/v1/get/domain/nosuch.example").text(), "{}");
}

#[test]
fn add_domain_over_api_reports_dkim_then_domain_added() {
    let emu = start();
    let r = post(
        &emu,
        "/api/v1/add/domain",
        json!({"domain": "example.net", "mailboxes": "2"}),
    );
    assert_eq!(
        r.msgs(),
        vec![
            json!(["dkim_added", "example.net"]),
            json!(["domain_added", "example.net"])
        ]
    );
    let r = post(&emu, "/api/v1/add/domain", json!({"domain": "example.net"}));
    assert_eq!(r.msgs(), vec![json!(["domain_exists", "example.net"])]);
    let r = post(&emu, "/api/v1/delete/domain", json!(["example.net"]));
    assert_eq!(r.msgs(), vec![json!(["domain_removed", "example.net"])]);
}

#[test]
fn rename_mbox_keeps_case_and_moves_single_target_aliases() {
    let emu = with_domain();
    add_mb(&emu, "dave", 0);
    let single = emu.add_alias("single@example.org", "dave@example.org", true);
    let multi = emu.add_alias("multi@example.org", "dave@example.org,x@elsewhere.test", true);
    let r = post(
        &emu,
        "/api/v1/edit/rename-mbox",
        json!({"attr": {"domain": "example.org", "old_local_part": "dave", "new_local_part": "David", "create_alias": 1}}),
    );
    assert_eq!(
        r.msgs(),
        vec![
            json!(["alias_added", "dave@example.org", "4"]),
            json!(["mailbox_renamed", "dave@example.org", "David@example.org"])
        ]
    );
    assert_eq!(
        emu.mailbox("david@example.org").unwrap()["username"],
        "David@example.org"
    );
    assert_eq!(
        get(&emu, &format!("/api/v1/get/alias/{single}")).json()["goto"],
        "David@example.org"
    );
    assert_eq!(
        get(&emu, &format!("/api/v1/get/alias/{multi}")).json()["goto"],
        "dave@example.org,x@elsewhere.test"
    );
    let r = post(
        &emu,
        "/api/v1/edit/rename-mbox",
        json!({"attr": {"new_local_part": "x"}}),
    );
    assert_eq!(r.msgs(), vec![json!(["username_invalid", "@"])]);
}

// ------------------------------------------------ faults, accounting, transport

#[test]
fn fault_status_500_applies_nothing() {
    let emu = with_domain();
    emu.inject_fault(1, Fault::Status(500));
    let r = post(&emu, "/api/v1/add/mailbox", add_body("alice", json!({})));
    assert_eq!(r.status, 500);
    assert_eq!(emu.mailbox_count(), 0);
    let r = post(&emu, "/api/v1/add/mailbox", add_body("alice", json!({})));
    assert_eq!(r.status, 200);
    assert_eq!(emu.mailbox_count(), 1);
}

#[test]
fn fault_on_the_nth_request() {
    let emu = with_domain();
    emu.inject_fault(2, Fault::Status(502));
    assert_eq!(get(&emu, "/api/v1/get/mailbox/all").status, 200);
    assert_eq!(get(&emu, "/api/v1/get/mailbox/all").status, 502);
    assert_eq!(get(&emu, "/api/v1/get/mailbox/all").status, 200);
}

#[test]
fn fault_close_connection() {
    let emu = with_domain();
    emu.inject_fault(1, Fault::CloseConnection);
    let mut c = Client::connect(&emu);
    let res = c.send(&raw_request(
        "POST",
        "/api/v1/add/mailbox",
        Key::Rw,
        Some("application/json"),
        add_body("alice", json!({})).to_string().as_bytes(),
        false,
    ));
    assert!(res.is_err(), "expected no response");
    assert_eq!(emu.mailbox_count(), 0);
    assert_eq!(emu.requests().last().map(|r| r.status), Some(0));
}

#[test]
fn fault_delay() {
    let emu = with_domain();
    emu.inject_fault(1, Fault::Delay(Duration::from_millis(300)));
    let t = Instant::now();
    let r = post(&emu, "/api/v1/add/mailbox", add_body("alice", json!({})));
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status, 200);
    assert_eq!(emu.mailbox_count(), 1, "delayed requests are still applied");
}

#[test]
fn fault_non_json_and_empty_body() {
    let emu = with_domain();
    emu.inject_fault(1, Fault::NonJson);
    emu.inject_fault(2, Fault::EmptyBody);
    let r = get(&emu, "/api/v1/get/mailbox/all");
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    let r = post(&emu, "/api/v1/add/mailbox", add_body("alice", json!({})));
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(emu.mailbox_count(), 0);
}

#[test]
fn fault_empty_object_answers_an_empty_list_once() {
    let emu = with_domain();
    post(&emu, "/api/v1/add/mailbox", add_body("alice", json!({})));
    emu.inject_fault(1, Fault::EmptyObject);
    let r = get(&emu, "/api/v1/get/mailbox/reduced");
    assert_eq!(r.status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&r.body).unwrap(), json!({}));
    let r = get(&emu, "/api/v1/get/mailbox/reduced");
    let list: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "the next answer is the real one"
    );
}

#[test]
fn request_counting() {
    let emu = with_domain();
    get(&emu, "/api/v1/get/mailbox/all");
    get(&emu, "/api/v1/get/mailbox/all?tags=x");
    post(&emu, "/api/v1/add/mailbox", add_body("alice", json!({})));
    call(&emu, "GET", "/api/v1/get/mailbox/all", Key::Wrong, None, b"");
    assert_eq!(emu.count("GET", "/api/v1/get/mailbox/all"), 3);
    assert_eq!(emu.count_writes(), 1);
    assert_eq!(emu.total_requests(), 4);
    let statuses: Vec<u16> = emu.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 401]);
    // Admin endpoints are not counted.
    let stats = get(&emu, "/__emulator/stats").json();
    assert_eq!(stats["requests"], 4);
    assert_eq!(stats["by_endpoint"]["GET /api/v1/get/mailbox/all"], 3);
    assert_eq!(stats["writes"], 1);
    emu.reset_counts();
    assert_eq!(emu.total_requests(), 0);
}

#[test]
fn request_delay_applies_to_every_request() {
    let emu = Emulator::start(EmulatorOptions {
        request_delay: Some(Duration::from_millis(150)),
        ..EmulatorOptions::default()
    })
    .unwrap();
    let t = Instant::now();
    get(&emu, "/api/v1/get/domain/all");
    get(&emu, "/api/v1/get/domain/all");
    assert!(t.elapsed() >= Duration::from_millis(300));
    emu.set_request_delay(None);
    let t = Instant::now();
    get(&emu, "/api/v1/get/domain/all");
    assert!(t.elapsed() < Duration::from_millis(150));
}

#[test]
fn keep_alive_and_chunked_bodies() {
    let emu = with_domain();
    let mut c = Client::connect(&emu);
    for _ in 0..3 {
        let r = c
            .send(&raw_request(
                "GET",
                "/api/v1/get/domain/example.org",
                Key::Rw,
                None,
                b"",
                false,
            ))
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    let body = add_body("alice", json!({})).to_string();
    let (a, b) = body.split_at(10);
    let raw = format!(
        "POST /api/v1/add/mailbox HTTP/1.1\r\nHost: x\r\nX-API-Key: {RW_KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let r = c.send(raw.as_bytes()).unwrap();
    assert_eq!(r.msgs()[1], json!(["mailbox_added", "alice@example.org"]));
}

#[test]
fn concurrent_connections_are_served() {
    let emu = Emulator::start(EmulatorOptions {
        request_delay: Some(Duration::from_millis(200)),
        ..EmulatorOptions::default()
    })
    .unwrap();
    emu.add_domain(DomainSpec {
        mailboxes: 100,
        ..DomainSpec::default()
    });
    let t = Instant::now();
    std::thread::scope(|s| {
        for i in 0..8 {
            let emu = &emu;
            s.spawn(move || {
                let r = post(
                    emu,
                    "/api/v1/add/mailbox",
                    add_body(&format!("u{i}"), json!({"quota": 1})),
                );
                assert_eq!(r.status, 200);
            });
        }
    });
    assert_eq!(emu.mailbox_count(), 8);
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "requests were serialised: {:?}",
        t.elapsed()
    );
}

#[test]
fn drop_closes_the_listener() {
    let emu = start();
    let port = emu.port();
    drop(emu);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn seeding_fails_like_the_api() {
    let emu = with_domain();
    assert_eq!(
        emu.add_mailbox(MailboxSpec {
            local_part: "x".into(),
            domain: "nosuch.org".into(),
            ..MailboxSpec::default()
        }),
        Err(json!("access_denied"))
    );
    assert_eq!(
        emu.add_mailbox(MailboxSpec {
            local_part: "x".into(),
            password: "ab".into(),
            ..MailboxSpec::default()
        }),
        Err(json!("password_complexity"))
    );
    add_mb(&emu, "x", 0);
    assert_eq!(
        emu.add_mailbox(MailboxSpec {
            local_part: "X".into(),
            ..MailboxSpec::default()
        }),
        Err(json!(["object_exists", "x@example.org"]))
    );
    assert_eq!(emu.stored_password("x@example.org"), Some(emulated_hash(SEED_PASSWORD)));
}

#[test]
fn large_list_renders_fast() {
    let emu = start();
    let n = 100_000;
    emu.add_domain(DomainSpec {
        mailboxes: n as i64,
        quota_mib: n as i64 * 1024,
        ..DomainSpec::default()
    });
    let t = Instant::now();
    let specs = (0..n).map(|i| MailboxSpec {
        local_part: format!("user{i:06}"),
        name: format!("User {i}"),
        quota_mib: 1024,
        ..MailboxSpec::default()
    });
    assert_eq!(emu.add_mailboxes(specs), Ok(n));
    let seeded = t.elapsed();
    let t = Instant::now();
    let r = get(&emu, "/api/v1/get/mailbox/all");
    let listed = t.elapsed();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v.as_array().map(Vec::len), Some(n));
    assert_eq!(v[n - 1]["max_new_quota"], json!(1024 * 1_048_576_i64));
    assert!(seeded < Duration::from_secs(30), "seeding took {seeded:?}");
    assert!(listed < Duration::from_secs(30), "listing took {listed:?}");
    eprintln!(
        "100k mailboxes: seeded in {seeded:?}, get/mailbox/all in {listed:?} ({} MB)",
        r.body.len() / 1_000_000
    );
}

#[test]
fn binary_starts_and_answers() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailcow-emulator"))
        .args([
            "--port",
            "0",
            "--domain",
            "example.org",
            "--mailboxes",
            "3",
            "--rw-key",
            "BIN-KEY-1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn emulator binary");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("mailcow emulator listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_string();
    let addr = url.strip_prefix("http://").unwrap().to_string();
    let send = |raw: String| {
        let s = TcpStream::connect(&addr).unwrap();
        Client {
            reader: BufReader::new(s),
        }
        .send(raw.as_bytes())
        .unwrap()
    };
    let r = send(
        "GET /api/v1/get/mailbox/all HTTP/1.1\r\nHost: x\r\nX-API-Key: BIN-KEY-1\r\nConnection: close\r\n\r\n".into(),
    );
    let names: Vec<Value> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].clone())
        .collect();
    assert_eq!(
        names,
        [
            json!("user000001@example.org"),
            json!("user000002@example.org"),
            json!("user000003@example.org")
        ]
    );
    let stats = send("GET /__emulator/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into()).json();
    assert_eq!(stats["by_endpoint"]["GET /api/v1/get/mailbox/all"], 1);
    let _ = child.kill();
    let _ = child.wait();
}

// --------------------------------------------------------------------- HTTPS mode

fn start_tls() -> Emulator {
    Emulator::start(EmulatorOptions {
        tls: true,
        ..EmulatorOptions::default()
    })
    .expect("start HTTPS emulator")
}

/// A ureq agent (rustls/ring, the main crate's client stack) that trusts only the CA in
/// `ca_file`, or ureq's default roots (Mozilla's) with None; `verify: false` is the tool's
/// `--do-not-verify`. HTTP error statuses are returned, not turned into errors.
fn https_agent(ca_file: Option<&std::path::Path>, verify: bool) -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder().disable_verification(!verify);
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).expect("read CA file");
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item.expect("valid PEM") {
                ureq::tls::PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(certs.len(), 1, "the CA file holds exactly the CA certificate");
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn ureq_get(agent: &ureq::Agent, emu: &Emulator, path: &str) -> Result<(u16, Value), ureq::Error> {
    let mut r = agent
        .get(format!("{}{path}", emu.url()))
        .header("X-API-Key", RW_KEY)
        .call()?;
    let status = r.status().as_u16();
    let text = r.body_mut().with_config().limit(64 << 20).read_to_string()?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// The rustls error behind a ureq error, whether ureq reports it directly or inside an
/// `io::Error` from the handshake.
fn rustls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    }
}

#[test]
fn https_request_verified_against_the_generated_ca() {
    let emu = start_tls();
    assert_eq!(emu.url(), format!("https://127.0.0.1:{}", emu.port()));
    let ca = emu.ca_file().expect("TLS mode has a CA file");
    let pem = std::fs::read_to_string(ca).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    emu.add_domain(DomainSpec {
        mailboxes: 1000,
        quota_mib: 1000 * 1024,
        ..DomainSpec::default()
    });
    let agent = https_agent(Some(ca), true);

    let (status, v) = ureq_get(&agent, &emu, "/api/v1/get/domain/all").expect("HTTPS GET with the CA");
    assert_eq!(status, 200);
    assert_eq!(v[0]["domain_name"], json!("example.org"));

    let mut r = agent
        .post(format!("{}/api/v1/add/mailbox", emu.url()))
        .header("X-API-Key", RW_KEY)
        .send_json(add_body("alice", json!({})))
        .expect("HTTPS POST");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.body_mut().read_json().unwrap();
    assert_eq!(v[0]["type"], json!("success"), "{v}");
    assert!(emu.mailbox("alice@example.org").is_some());

    // A body far larger than one TLS record and rustls' 64 KiB send buffer, on the same
    // keep-alive connection.
    let specs = (0..600).map(|i| MailboxSpec {
        local_part: format!("user{i:04}"),
        quota_mib: 1024,
        ..MailboxSpec::default()
    });
    assert_eq!(emu.add_mailboxes(specs), Ok(600));
    let (status, v) = ureq_get(&agent, &emu, "/api/v1/get/mailbox/all").unwrap();
    assert_eq!(status, 200);
    assert_eq!(v.as_array().map(Vec::len), Some(601));
    let (status, v) = ureq_get(&agent, &emu, "/api/v1/get/mailbox/alice@example.org").unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["username"], json!("alice@example.org"));
    assert_eq!(emu.total_requests(), 4);
}

#[test]
fn https_without_the_ca_fails_with_a_certificate_error() {
    let emu = start_tls();
    emu.add_domain(DomainSpec::default());

    // ureq's default roots (Mozilla's) do not know the emulator's private CA.
    let err = ureq_get(&https_agent(None, true), &emu, "/api/v1/get/domain/all").expect_err("must not verify");
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "expected an unknown-issuer certificate error, got {err:?}"
    );

    // Another emulator's CA is a wrong CA.
    let other = start_tls();
    let err = ureq_get(&https_agent(other.ca_file(), true), &emu, "/api/v1/get/domain/all")
        .expect_err("must not verify against another CA");
    assert!(
        matches!(rustls_error(&err), Some(rustls::Error::InvalidCertificate(_))),
        "expected a certificate error, got {err:?}"
    );
    assert_eq!(emu.total_requests(), 0, "nothing reached the API");

    // The emulator is still fine for a client that trusts its CA.
    let (status, _) = ureq_get(&https_agent(emu.ca_file(), true), &emu, "/api/v1/get/domain/all").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn https_without_verification_works() {
    // What the tool's --do-not-verify does: no CA at all, verification off.
    let emu = start_tls();
    emu.add_domain(DomainSpec::default());
    let (status, v) = ureq_get(&https_agent(None, false), &emu, "/api/v1/get/domain/all").unwrap();
    assert_eq!(status, 200);
    assert_eq!(v[0]["domain_name"], json!("example.org"));
}

#[test]
fn https_faults_still_apply() {
    let emu = start_tls();
    emu.add_domain(DomainSpec::default());
    let agent = https_agent(emu.ca_file(), true);

    emu.inject_fault(1, Fault::CloseConnection);
    let err = ureq_get(&agent, &emu, "/api/v1/get/domain/all").expect_err("socket closed without an answer");
    assert!(rustls_error(&err).is_none(), "not a TLS setup error: {err:?}");
    assert_eq!(emu.requests().last().map(|r| r.status), Some(0));

    emu.inject_fault(1, Fault::Status(503));
    let (status, v) = ureq_get(&agent, &emu, "/api/v1/get/domain/all").unwrap();
    assert_eq!(status, 503);
    assert!(v.as_str().is_some_and(|s| s.contains("503 Service")), "{v}");

    emu.inject_fault(1, Fault::Delay(Duration::from_millis(300)));
    let t = Instant::now();
    let (status, _) = ureq_get(&agent, &emu, "/api/v1/get/domain/all").unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(status, 200);
    let statuses: Vec<u16> = emu.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [0, 503, 200]);
}

#[test]
fn https_plain_http_to_the_tls_port_gets_no_answer() {
    let emu = start_tls();
    let t = Instant::now();
    let res = Client::connect(&emu).send(&raw_request("GET", "/api/v1/get/domain/all", Key::Rw, None, b"", true));
    assert!(res.is_err(), "a plain-HTTP request must not be answered");
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    assert_eq!(emu.total_requests(), 0);
}

#[test]
fn https_cert_dir_is_removed_on_drop() {
    let emu = start_tls();
    let ca = emu.ca_file().unwrap().to_path_buf();
    let dir = ca.parent().unwrap().to_path_buf();
    assert!(ca.is_file());
    // An open connection that never starts the handshake must not hold up the drop.
    let _idle = TcpStream::connect(("127.0.0.1", emu.port())).unwrap();
    let port = emu.port();
    let t = Instant::now();
    drop(emu);
    assert!(t.elapsed() < Duration::from_secs(5), "drop took {:?}", t.elapsed());
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn plain_mode_is_unchanged() {
    let emu = with_domain();
    assert_eq!(emu.url(), format!("http://127.0.0.1:{}", emu.port()));
    assert_eq!(emu.ca_file(), None);
    let (status, v) = ureq_get(&https_agent(None, true), &emu, "/api/v1/get/domain/all").unwrap();
    assert_eq!(status, 200);
    assert_eq!(v[0]["domain_name"], json!("example.org"));
}

#[test]
fn binary_serves_https_with_tls_flag() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailcow-emulator"))
        .args(["--tls", "--domain", "example.org", "--mailboxes", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn emulator binary");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut line1, mut line2) = (String::new(), String::new());
    out.read_line(&mut line1).unwrap();
    out.read_line(&mut line2).unwrap();
    let url = line1
        .trim()
        .strip_prefix("mailcow emulator listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line1:?}"))
        .to_string();
    let ca = std::path::PathBuf::from(
        line2
            .trim()
            .strip_prefix("mailcow emulator CA file: ")
            .unwrap_or_else(|| panic!("unexpected line {line2:?}")),
    );
    let result = std::panic::catch_unwind(|| {
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        let mut r = https_agent(Some(&ca), true)
            .get(format!("{url}/api/v1/get/mailbox/all"))
            .header("X-API-Key", RW_KEY)
            .call()
            .expect("HTTPS GET against the binary");
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.body_mut().read_json().unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(2));
    });
    let _ = child.kill();
    let _ = child.wait();
    // Killed, the binary cannot clean up its certificate directory.
    if let Some(dir) = ca.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

// ------------------------------------------- app passwords and the EAS cache (offboarding)
// docs/mailcow-api-offboarding.md: functions.app_passwd.inc.php, mailbox('delete','eas_cache').

#[test]
fn app_passwords_are_listed_as_whole_rows_per_mailbox_and_empty_is_an_object() {
    let emu = with_domain();
    add_mb(&emu, "alice", 1024);
    add_mb(&emu, "bob", 1024);
    let a1 = emu.add_app_password("alice@example.org", "Phone <1>");
    let b1 = emu.add_app_password("bob@example.org", "Laptop");
    let a2 = emu.add_app_password("alice@example.org", "Thunderbird");
    assert_eq!((a1, b1, a2), (1, 2, 3), "AUTO_INCREMENT ids");

    let r = get(&emu, "/api/v1/get/app-passwd/all/alice@example.org");
    assert_eq!(r.status, 200);
    let rows = r.json();
    let rows = rows.as_array().expect("a list");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], json!(1), "ids are JSON numbers");
    assert_eq!(rows[0]["name"], json!("Phone &lt;1&gt;"), "htmlspecialchars");
    assert_eq!(rows[0]["mailbox"], json!("alice@example.org"));
    assert!(
        rows[0]["password"].as_str().is_some_and(|p| !p.is_empty()),
        "the hash is handed out"
    );
    assert_eq!(rows[1]["id"], json!(3));
    assert_eq!(emu.app_passwords("alice@example.org"), rows.to_vec());
    // Case-insensitive lookup.
    assert_eq!(
        get(&emu, "/api/v1/get/app-passwd/all/ALICE@example.org")
            .json()
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // None, no such mailbox, not an address (the session user `API` has none): `{}`.
    add_mb(&emu, "carol", 1024);
    for path in [
        "/api/v1/get/app-passwd/all/carol@example.org",
        "/api/v1/get/app-passwd/all/nobody@example.org",
        "/api/v1/get/app-passwd/all/not-an-address",
        "/api/v1/get/app-passwd/all",
    ] {
        let r = get(&emu, path);
        assert_eq!((r.status, r.text()), (200, "{}".to_owned()), "{path}");
    }
}

#[test]
fn app_passwords_are_deleted_by_bare_id_arrays_and_an_unknown_id_stops_the_rest() {
    let emu = with_domain();
    add_mb(&emu, "alice", 1024);
    add_mb(&emu, "bob", 1024);
    let a1 = emu.add_app_password("alice@example.org", "one");
    let a2 = emu.add_app_password("alice@example.org", "two");
    let b1 = emu.add_app_password("bob@example.org", "bob's");

    let r = post(&emu, "/api/v1/delete/app-passwd", json!([a1, a2.to_string()]));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.msgs(),
        vec![json!(["app_passwd_removed", "1"]), json!(["app_passwd_removed", "2"])],
        "the id comes back as a string"
    );
    assert_eq!(emu.app_password_ids(), vec![b1], "only bob's is left");

    let a3 = emu.add_app_password("alice@example.org", "three");
    let r = post(&emu, "/api/v1/delete/app-passwd", json!([999, a3]));
    assert_eq!(r.msgs(), vec![json!("app_passwd_id_invalid")]);
    assert_eq!(r.json()[0]["type"], json!("danger"));
    assert_eq!(
        emu.app_password_ids(),
        vec![b1, a3],
        "return false: the ids after it stay"
    );

    // An empty array: nothing done, the generic success object.
    let r = post(&emu, "/api/v1/delete/app-passwd", json!([]));
    assert_eq!(r.json(), json!({"type": "success", "msg": "Task completed"}));

    // A read-only key may not.
    let r = call(
        &emu,
        "POST",
        "/api/v1/delete/app-passwd",
        Key::Ro,
        Some("application/json"),
        b"[4]",
    );
    assert_eq!(r.status, 403);

    // Deleting the mailbox takes its app passwords (ON DELETE CASCADE).
    emu.delete_mailbox("alice@example.org");
    assert_eq!(emu.app_password_ids(), vec![b1]);
}

#[test]
fn eas_cache_resets_answer_per_username_and_an_unknown_one_is_access_denied() {
    let emu = with_domain();
    add_mb(&emu, "alice", 1024);
    let r = post(
        &emu,
        "/api/v1/delete/eas_cache",
        json!(["nobody@example.org", "alice@example.org"]),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.msgs(),
        vec![json!("access_denied"), json!(["eas_reset", "alice@example.org"])]
    );
    assert_eq!(emu.eas_resets(), vec!["alice@example.org".to_owned()]);
    // A bare string works too.
    let r = post(&emu, "/api/v1/delete/eas_cache", json!("alice@example.org"));
    assert_eq!(r.msgs(), vec![json!(["eas_reset", "alice@example.org"])]);
}

// ------------------------------------------------------------------- add/domain

const MIB: i64 = 1_048_576;

#[test]
fn add_domain_takes_the_default_template_and_answers_dkim_then_domain_added() {
    let emu = start();
    let r = post(&emu, "/api/v1/add/domain", json!({"domain": " New.Example "}));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.entries(),
        vec![
            ("success".into(), json!(["dkim_added", "new.example"])),
            ("success".into(), json!(["domain_added", "new.example"])),
        ]
    );
    let d = emu.domain("new.example").expect("domain listed");
    // functions.mailbox.inc.php: an empty description becomes the domain's name.
    assert_eq!(d["description"], "new.example");
    // init_db.inc.php's Default domain template, the quotas stored in MiB, listed in bytes.
    assert_eq!(d["max_num_mboxes_for_domain"], 10);
    assert_eq!(d["max_num_aliases_for_domain"], 400);
    assert_eq!(d["def_quota_for_mbox"], 3072 * MIB);
    assert_eq!(d["max_quota_for_mbox"], 10240 * MIB);
    assert_eq!(d["max_quota_for_domain"], 10240 * MIB);
    assert_eq!(d["active"], 1);
}

#[test]
fn add_domain_fields_are_mib_and_counts_as_sent() {
    let emu = start();
    let r = post(
        &emu,
        "/api/v1/add/domain",
        json!({"domain": "big.example", "description": "made by a test", "mailboxes": 1000, "aliases": "4000",
            "defquota": 3072, "maxquota": 10240, "quota": 10_240_000, "active": 1}),
    );
    assert_eq!(r.msgs().last().cloned(), Some(json!(["domain_added", "big.example"])));
    let d = emu.domain("big.example").unwrap();
    assert_eq!(d["description"], "made by a test");
    assert_eq!(d["max_num_mboxes_for_domain"], 1000);
    assert_eq!(d["max_num_aliases_for_domain"], 4000);
    assert_eq!(d["max_quota_for_domain"], 10_240_000 * MIB);
    // A mailbox in it is checked against those limits, in MiB.
    let big = json!({"local_part": "u1", "domain": "big.example", "quota": 10241,
        "password": "Plain-Pass-1", "password2": "Plain-Pass-1"});
    assert_eq!(
        post(&emu, "/api/v1/add/mailbox", big).msgs()[0],
        json!(["mailbox_quota_exceeded", 10240])
    );
    let ok = json!({"local_part": "u1", "domain": "big.example", "quota": 10240,
        "password": "Plain-Pass-1", "password2": "Plain-Pass-1"});
    assert!(
        post(&emu, "/api/v1/add/mailbox", ok)
            .msgs()
            .contains(&json!(["mailbox_added", "u1@big.example"]))
    );
}

#[test]
fn add_domain_checks_in_the_php_order_and_fails_with_http_200() {
    let emu = with_domain();
    let refuse = |body: Value| {
        let r = post(&emu, "/api/v1/add/domain", body);
        assert_eq!(r.status, 200, "mailcow answers a refused add with HTTP 200");
        let entries = r.entries();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].0, "danger");
        entries[0].1.clone()
    };
    // The quota relations come before the name is looked at.
    assert_eq!(
        refuse(json!({"domain": "not a name", "defquota": 5, "maxquota": 4, "quota": 10})),
        json!("mailbox_defquota_exceeds_mailbox_maxquota")
    );
    assert_eq!(
        refuse(json!({"domain": "not a name", "maxquota": 4096, "quota": 2048})),
        json!("mailbox_quota_exceeds_domain_quota")
    );
    assert_eq!(
        refuse(json!({"domain": "q.example", "defquota": 0})),
        json!("defquota_empty")
    );
    assert_eq!(
        refuse(json!({"domain": "q.example", "defquota": -1, "maxquota": 0})),
        json!("maxquota_empty")
    );
    for bad in [
        "",
        "-lead.example",
        "trail-.example",
        "under_score.example",
        "dot..example",
        "a b.example",
    ] {
        assert_eq!(refuse(json!({"domain": bad})), json!("domain_invalid"), "{bad:?}");
    }
    assert_eq!(
        refuse(json!({"domain": "EXAMPLE.org"})),
        json!(["domain_exists", "example.org"])
    );
    emu.set_mailcow_hostname(Some("mail.example.org"));
    assert_eq!(
        refuse(json!({"domain": "Mail.Example.org"})),
        json!("domain_cannot_match_hostname")
    );
    // Nothing of the refused ones was stored.
    assert!(emu.domain("q.example").is_none());
    // is_valid_domain_name() asks for no dot: a single label is a domain to add/domain.
    let r = post(&emu, "/api/v1/add/domain", json!({"domain": "intranet"}));
    assert_eq!(r.msgs().last().cloned(), Some(json!(["domain_added", "intranet"])));
}

/// A GET with extra header lines, on its own connection.
fn get_with(emu: &Emulator, path: &str, headers: &str) -> Resp {
    let mut raw = raw_request("GET", path, Key::Rw, None, b"", true);
    let at = raw.len() - 2;
    raw.splice(at..at, headers.bytes());
    Client::connect(emu).send(&raw).unwrap()
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// The emulator notes what it sent after sending it, so a client may read the answer
/// first: wait for the last record's note.
fn wait_sent(emu: &Emulator) {
    let started = std::time::Instant::now();
    while emu.requests().last().is_none_or(|r| r.bytes == 0) && started.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn gzip_as_mailcows_nginx_for_json_of_256_bytes_and_more() {
    let emu = with_domain();
    for i in 0..5 {
        add_mb(&emu, &format!("gz{i}"), 100);
    }
    let list = "/api/v1/get/mailbox/all";
    let plain = get(&emu, list);
    assert_eq!(plain.header("content-encoding"), None, "not asked for");
    assert!(plain.body.len() >= 256);
    // Else its late note could land on the next request's record.
    wait_sent(&emu);
    emu.reset_counts();

    let gz = get_with(&emu, list, "Accept-Encoding: deflate, gzip;q=0.9\r\n");
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("Accept-Encoding"));
    assert_eq!(gz.header("content-length"), Some(gz.body.len().to_string().as_str()));
    assert!(
        gz.body.len() < plain.body.len() / 2,
        "{} vs {}",
        gz.body.len(),
        plain.body.len()
    );
    assert_eq!(gunzip(&gz.body), plain.body, "the same JSON once decoded");
    wait_sent(&emu);
    let rec = emu.requests();
    assert_eq!(rec.len(), 1);
    assert!(rec[0].gzip);
    assert!(rec[0].bytes > gz.body.len() as u64 && rec[0].bytes < plain.body.len() as u64);
    assert_eq!(emu.gzip_responses(), 1);
    assert_eq!(emu.bytes_sent(), rec[0].bytes);

    // Below gzip_min_length: as it is. `gzip_proxied off`: not for a request with Via.
    let small = get_with(
        &emu,
        "/api/v1/get/mailbox/nobody@example.org",
        "Accept-Encoding: gzip\r\n",
    );
    assert!(small.body.len() < 256, "{}", small.text());
    assert_eq!(small.header("content-encoding"), None);
    let proxied = get_with(&emu, list, "Accept-Encoding: gzip\r\nVia: 1.1 proxy\r\n");
    assert_eq!(proxied.header("content-encoding"), None);
    // Other encodings only: as it is.
    let br = get_with(&emu, list, "Accept-Encoding: br, gzipx\r\n");
    assert_eq!(br.header("content-encoding"), None);
    // Switched off (bench: bytes with and without): as it is.
    emu.set_gzip(false);
    let off = get_with(&emu, list, "Accept-Encoding: gzip\r\n");
    assert_eq!(off.header("content-encoding"), None);
    assert_eq!(off.body, plain.body);
    assert_eq!(emu.gzip_responses(), 1);
}

// ------------------------------------------------------------- protocol access

/// The `*_access` flags as mailcow keeps them (functions.mailbox.inc.php: add takes each flag
/// or the template's 1, edit keeps every flag it is not sent, `protocol_access` sets the six
/// it does not list to 0 and leaves sogo_access alone), shown as strings in `attributes`.
#[test]
fn access_flags_are_kept_per_flag_on_add_and_edit() {
    let emu = with_domain();
    let flags = |emu: &Emulator, who: &str| {
        let mb = get(emu, &format!("/api/v1/get/mailbox/{who}@example.org")).json();
        let a = &mb["attributes"];
        ["imap", "pop3", "smtp", "sieve", "sogo", "eas", "dav"]
            .map(|p| a[format!("{p}_access")].as_str().unwrap_or("?").to_owned())
            .join("")
    };
    let r = post(
        &emu,
        "/api/v1/add/mailbox",
        add_body("ann", json!({"pop3_access": 0, "sogo_access": "0"})),
    );
    assert!(r.text().contains("mailbox_added"), "{}", r.text());
    assert_eq!(
        flags(&emu, "ann"),
        "1011011",
        "the flags sent, the template's 1 for the others"
    );
    let r = post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["ann@example.org"], "attr": {"eas_access": 0, "pop3_access": 1}}),
    );
    assert!(r.text().contains("mailbox_modified"), "{}", r.text());
    assert_eq!(flags(&emu, "ann"), "1111001", "only the flags sent change");
    let reduced = get(&emu, "/api/v1/get/mailbox/reduced").json();
    assert_eq!(reduced[0]["attributes"]["eas_access"], "0", "reduced carries them too");
    let r = post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["ann@example.org"], "attr": {"protocol_access": ["imap"]}}),
    );
    assert!(r.text().contains("mailbox_modified"), "{}", r.text());
    assert_eq!(
        flags(&emu, "ann"),
        "1000000",
        "protocol_access zeroes the six protocols it does not list"
    );
}

// ------------------------------------------------- templates, user ACLs, rate limits

#[test]
fn templates_are_listed_with_bytes_and_supply_the_defaults_of_add_mailbox() {
    let emu = with_domain();
    let list = get(&emu, "/api/v1/get/mailbox/template/all").json();
    assert_eq!(list[0]["id"], 2, "the domain Default template took id 1");
    assert_eq!(list[0]["template"], "Default");
    assert_eq!(list[0]["attributes"]["quota"], 0);
    let r = post(
        &emu,
        "/api/v1/add/mailbox/template",
        json!({"template": "Staff", "quota": 2048, "protocol_access": ["imap", "smtp"], "acl": ["spam_alias", "app_passwds"],
               "tags": ["staff"], "rl_value": "50", "rl_frame": "h", "sogo_access": 0}),
    );
    assert!(r.text().contains("template_added"), "{}", r.text());
    let again = post(&emu, "/api/v1/add/mailbox/template", json!({"template": "Staff"}));
    assert!(again.text().contains("template_exists"), "{}", again.text());
    let staff = get(&emu, "/api/v1/get/mailbox/template/3").json();
    assert_eq!(staff["template"], "Staff");
    assert_eq!(staff["attributes"]["quota"], 2048_i64 * 1_048_576, "stored in bytes");
    assert_eq!(staff["attributes"]["pop3_access"], 0);
    assert_eq!(get(&emu, "/api/v1/get/mailbox/template/99").text(), "{}");

    // By id: its defaults; explicit fields win. A name is ignored (Default is used).
    let mut body = add_body("ann", json!({"template": 3}));
    body.as_object_mut().unwrap().remove("quota");
    let r = post(&emu, "/api/v1/add/mailbox", body);
    assert!(r.text().contains("mailbox_added"), "{}", r.text());
    let ann = emu.mailbox("ann@example.org").unwrap();
    assert_eq!(ann["quota"], 2048_i64 * 1_048_576);
    assert_eq!(ann["attributes"]["pop3_access"], "0");
    assert_eq!(ann["attributes"]["sogo_access"], "0");
    assert_eq!(ann["tags"], json!(["staff"]), "no tags sent: the template's");
    assert_eq!(ann["rl"], json!({"value": "50", "frame": "h"}));
    assert_eq!(emu.user_acl("ann@example.org"), ["app_passwds", "spam_alias"]);
    let r = post(
        &emu,
        "/api/v1/add/mailbox",
        add_body("bob", json!({"template": "Staff", "tags": ["x"], "pop3_access": 0})),
    );
    assert!(r.text().contains("mailbox_added"), "{}", r.text());
    let bob = emu.mailbox("bob@example.org").unwrap();
    assert_eq!(bob["quota"], 1024_i64 * 1_048_576);
    assert_eq!(bob["attributes"]["sogo_access"], "1", "a name: the Default template");
    assert_eq!(bob["attributes"]["pop3_access"], "0");
    assert_eq!(bob["tags"], json!(["x"]), "tags sent: only those");
    assert_eq!(bob["rl"], json!(false));
    assert!(emu.user_acl("bob@example.org").contains(&"tls_policy".to_owned()));
}

#[test]
fn user_acl_edits_replace_the_set_and_rate_limits_are_set_and_removed() {
    let emu = with_domain();
    add_mb(&emu, "ann", 1024);
    let before = emu.user_acl("ann@example.org");
    assert!(before.len() > 2, "{before:?}");
    let r = post(
        &emu,
        "/api/v1/edit/user-acl",
        json!({"items": ["ann@example.org", "ghost@example.org"], "attr": {"user_acl": ["pw_reset", "syncjobs"]}}),
    );
    let v = r.json();
    assert_eq!(v[0]["msg"], json!(["acl_saved", "ann@example.org"]));
    assert_eq!(v[1]["msg"], "access_denied");
    assert_eq!(
        emu.user_acl("ann@example.org"),
        ["pw_reset", "syncjobs"],
        "every other ACL is 0"
    );
    let r = post(
        &emu,
        "/api/v1/edit/rl-mbox",
        json!({"items": ["ann@example.org"], "attr": {"rl_value": 10, "rl_frame": "m"}}),
    );
    assert_eq!(r.json()[0]["msg"], json!(["rl_saved", "ann@example.org"]));
    assert_eq!(
        emu.mailbox("ann@example.org").unwrap()["rl"],
        json!({"value": "10", "frame": "m"})
    );
    let r = post(
        &emu,
        "/api/v1/edit/rl-mbox",
        json!({"items": ["ann@example.org"], "attr": {"rl_value": 10, "rl_frame": "w"}}),
    );
    assert_eq!(r.json()[0]["msg"], "rl_timeframe");
    let r = post(
        &emu,
        "/api/v1/edit/rl-mbox",
        json!({"items": ["ann@example.org"], "attr": {"rl_value": "", "rl_frame": "s"}}),
    );
    assert_eq!(r.json()[0]["msg"], json!(["rl_saved", "ann@example.org"]));
    assert_eq!(
        emu.mailbox("ann@example.org").unwrap()["rl"],
        json!(false),
        "an empty value removes it"
    );
}

// ------------------------------------------------------------------ identity provider

/// `get/identity-provider` prints `identity_provider('get')` (functions.inc.php) for an
/// admin key: no provider gives only the `login_provisioning` default; an LDAP provider
/// gives every row, booleans for the converted keys, decoded `mappers`, the LDAP TLS
/// defaults, and its `bindpass` in clear (the API passes no `hide_sensitive`).
#[test]
fn identity_provider_get_shows_every_row_secrets_included() {
    let emu = start();
    emu.add_domain(DomainSpec::default());
    assert_eq!(
        get(&emu, "/api/v1/get/identity-provider").json(),
        json!({"login_provisioning": 1})
    );
    emu.set_identity_provider(Some(json!({
        "authsource": "ldap", "host": "ldap.corp", "port": "389", "basedn": "dc=corp",
        "binddn": "cn=mc,dc=corp", "bindpass": "S3cret", "periodic_sync": "1", "import_users": "0",
        "login_provisioning": "0", "mappers": ["staff"], "templates": ["Default"],
    })));
    let r = get(&emu, "/api/v1/get/identity-provider");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["authsource"], "ldap");
    assert_eq!(v["bindpass"], "S3cret", "mailcow hands out the bind password");
    assert_eq!(v["periodic_sync"], "1");
    assert_eq!(v["login_provisioning"], json!(false));
    assert_eq!(v["use_ssl"], json!(false));
    assert_eq!(v["mappers"], json!(["staff"]));
    // The IdP now accepts authsource ldap on add, as before with set_idp_authsource.
    let r = post(
        &emu,
        "/api/v1/add/mailbox",
        json!({"local_part": "idp", "domain": "example.org", "authsource": "ldap"}),
    );
    assert!(r.text().contains("mailbox_added"), "{}", r.text());
    assert_eq!(emu.mailbox("idp@example.org").unwrap()["authsource"], "ldap");
    emu.set_identity_provider(None);
    assert_eq!(
        get(&emu, "/api/v1/get/identity-provider").json(),
        json!({"login_provisioning": 1})
    );
}

// ------------------------------------------------------------------ domain admins

/// `domain_admin('add'|'edit'|'delete')` and `get/domain-admin/all` as the PHP has them
/// (docs/mailcow-api-admins.md).
#[test]
fn domain_admin_add_edit_delete_and_list() {
    let emu = with_domain();
    emu.add_domain(DomainSpec {
        name: "example.net".into(),
        ..DomainSpec::default()
    });
    assert_eq!(get(&emu, "/api/v1/get/domain-admin/all").json(), json!({}));
    let add = |body: Value| post(&emu, "/api/v1/add/domain-admin", body);
    // An e-mail address is not a valid admin name; domains are required.
    let r = add(
        json!({"username": "a@example.org", "password": "Secret-123", "password2": "Secret-123", "domains": ["example.org"], "active": 1}),
    );
    assert_eq!(r.msgs(), vec![json!(["username_invalid", "a@example.org"])]);
    let r = add(json!({"username": "alice", "password": "Secret-123", "password2": "Secret-123", "active": 1}));
    assert_eq!(r.msgs(), vec![json!("domain_invalid")]);
    let r = add(json!({"username": "alice", "password": "x", "password2": "y", "domains": ["example.org"]}));
    assert_eq!(r.entries()[0].0, "danger");
    // A missing domain is reported and skipped; the others are granted.
    let r = add(
        json!({"username": "Alice", "password": "Secret-123", "password2": "Secret-123",
        "domains": ["example.org", "missing.org"], "active": 1}),
    );
    assert_eq!(
        r.msgs(),
        vec![
            json!(["domain_invalid", "missing.org"]),
            json!(["domain_admin_added", "alice"])
        ]
    );
    let r = add(
        json!({"username": "alice", "password": "Secret-123", "password2": "Secret-123", "domains": ["example.org"]}),
    );
    assert_eq!(r.msgs(), vec![json!(["object_exists", "alice"])]);
    let list = get(&emu, "/api/v1/get/domain-admin/all").json();
    assert_eq!(list[0]["username"], "alice");
    assert_eq!(list[0]["active"], json!(1));
    assert_eq!(list[0]["selected_domains"], json!(["example.org"]));
    assert_eq!(list[0]["unselected_domains"], json!(["example.net"]));
    assert_eq!(emu.domain_admin_password("alice").unwrap(), emulated_hash("Secret-123"));

    // edit: domains replace the set; active kept when absent; unknown → access_denied.
    let r = post(
        &emu,
        "/api/v1/edit/domain-admin",
        json!({"items": ["alice", "nobody"], "attr": {"domains": ["example.net"]}}),
    );
    assert_eq!(
        r.msgs(),
        vec![json!(["domain_admin_modified", "alice"]), json!("access_denied")]
    );
    let a = &emu.domain_admins()[0];
    assert_eq!(a["selected_domains"], json!(["example.net"]));
    assert_eq!(a["active"], json!(1));
    let r = post(
        &emu,
        "/api/v1/edit/domain-admin",
        json!({"items": ["alice"], "attr": {"domains": ["missing.org"]}}),
    );
    assert_eq!(r.msgs(), vec![json!(["domain_invalid", "missing.org"])]);

    // delete: unknown → username_invalid.
    let r = post(&emu, "/api/v1/delete/domain-admin", json!(["alice", "nobody"]));
    assert_eq!(
        r.msgs(),
        vec![
            json!(["domain_admin_removed", "alice"]),
            json!(["username_invalid", "nobody"])
        ]
    );
    assert!(emu.domain_admins().is_empty());
}

// ------------------------------------------------------------------- sender_acl

/// `edit/mailbox` `sender_acl` replaces the mailbox's whole internal list; values must be an
/// address of table `alias` (a mailbox or an alias), a known domain (stored `@domain`) or `*`;
/// others are dropped with `sender_acl_invalid` while the rest is saved and the item still
/// reports `mailbox_modified` (functions.mailbox.inc.php 3278-3403); `get/mailbox/{id}`
/// returns the list (2026-07a, 5326-5333), `reduced` does not.
#[test]
fn sender_acl_replaces_the_list_validates_values_and_reads_back() {
    let emu = with_domain();
    for m in ["a", "b", "info"] {
        add_mb(&emu, m, 100);
    }
    let team = emu.add_alias("team@example.org", "b@example.org", true);
    let edit = |list: Value| {
        post(
            &emu,
            "/api/v1/edit/mailbox",
            json!({"items": ["a@example.org"], "attr": {"sender_acl": list}}),
        )
        .msgs()
    };
    let msgs = edit(json!([
        "info@example.org",
        "team@example.org",
        "ghost@example.org",
        "example.org",
        "@nosuch.org"
    ]));
    assert_eq!(
        msgs,
        [
            json!(["sender_acl_invalid", "ghost@example.org"]),
            json!(["sender_acl_invalid", "@nosuch.org"]),
            json!(["mailbox_modified", "a@example.org"])
        ]
    );
    let got = get(&emu, "/api/v1/get/mailbox/a@example.org").json();
    assert_eq!(
        got["sender_acl"],
        json!(["info@example.org", "team@example.org", "@example.org"])
    );
    // Not in reduced objects.
    let reduced = get(&emu, "/api/v1/get/mailbox/reduced").json();
    assert!(
        reduced
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.get("sender_acl").is_none())
    );
    // A second edit replaces the list; "default" alone (or []) clears it; "*" wins alone.
    edit(json!(["team@example.org"]));
    assert_eq!(emu.sender_acl("a@example.org"), ["team@example.org"]);
    edit(json!(["default"]));
    assert!(emu.sender_acl("a@example.org").is_empty());
    edit(json!(["info@example.org", "*"]));
    assert_eq!(emu.sender_acl("a@example.org"), ["*"]);
    edit(json!([]));
    assert!(emu.sender_acl("a@example.org").is_empty());
    // An alias that lets its target send already is not stored for it.
    emu.set_alias_sender_allowed(team, true);
    post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["b@example.org"], "attr": {"sender_acl": ["team@example.org", "info@example.org"]}}),
    );
    assert_eq!(emu.sender_acl("b@example.org"), ["info@example.org"]);
    // Editing an alias's goto deletes its targets' entries for it.
    post(
        &emu,
        "/api/v1/edit/mailbox",
        json!({"items": ["a@example.org"], "attr": {"sender_acl": ["team@example.org", "info@example.org"]}}),
    );
    post(
        &emu,
        "/api/v1/edit/alias",
        json!({"items": [team], "attr": {"goto": "a@example.org,b@example.org"}}),
    );
    assert_eq!(emu.sender_acl("a@example.org"), ["info@example.org"]);
    // Deleting the address deletes the entries naming it.
    post(&emu, "/api/v1/delete/mailbox", json!(["info@example.org"]));
    assert!(emu.sender_acl("b@example.org").is_empty());
    // An older mailcow: no sender_acl field at all.
    emu.set_sender_acl_hidden(true);
    assert!(
        get(&emu, "/api/v1/get/mailbox/a@example.org")
            .json()
            .get("sender_acl")
            .is_none()
    );
}
