//! Reading mailcow's answers, which need care (API.md): item failures come back as HTTP
//! 200 with `"type":"danger"`, `msg` is a string or a list, a missing key gives an empty
//! 200, and an empty list can come as `{}`. Pure: bytes or text in, records out; the HTTP
//! client (`http`) hands its answers here.
//!
//! The mailbox list is parsed as a stream straight into compact [`Mailbox`] records: with
//! 100k mailboxes the answer is ~100 MB of JSON, which must never be held whole in memory.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::core::access::{ALL_ON, MailboxTemplate, Protocol};
use crate::core::model::{Domain, IdentityProvider, Mailbox, Mailboxes, MailcowAlias, ManagedRows};
use crate::error::{Error, Result};

/// The result of one item (one mailbox) of a write call: `Err` holds mailcow's message.
pub type ItemResult = std::result::Result<(), String>;

/// The result of one alias of `add/alias`: the new alias's id, or mailcow's message.
pub type AliasResult = std::result::Result<u64, String>;

/// Parse a mailbox list answer as a stream into compact records held against the state
/// (see [`Mailboxes`]). Only `tag` is looked for among a mailbox's tags.
pub fn parse_mailboxes(
    endpoint: &str,
    reader: impl Read,
    tag: Option<&str>,
    state: Arc<ManagedRows>,
) -> Result<Mailboxes> {
    let mut mailboxes = Mailboxes::holding(state);
    read_list(endpoint, reader, |w: WireMailbox| mailboxes.add(w.into_mailbox(tag)))?;
    mailboxes.finish();
    Ok(mailboxes)
}

/// [`parse_mailboxes`] without a state: every mailbox, sorted by address, the first of an
/// address kept.
pub fn parse_mailbox_list(endpoint: &str, reader: impl Read, tag: Option<&str>) -> Result<Vec<Mailbox>> {
    parse_mailboxes(endpoint, reader, tag, Arc::default()).map(|m| m.to_list())
}

/// A `get/mailbox/{address}` answer: that mailbox, or `None` for mailcow's `{}` (no such
/// mailbox, API.md 4.2). An answer naming another mailbox is refused, not taken.
pub fn parse_one_mailbox(
    endpoint: &str,
    reader: impl Read,
    address: &str,
    tag: Option<&str>,
) -> Result<Option<Mailbox>> {
    let Some(value) = one_mailbox_object(endpoint, reader, address)? else {
        return Ok(None);
    };
    let wire: WireMailbox = serde_json::from_value(value).map_err(|e| json_error(endpoint, &e, ""))?;
    Ok(Some(wire.into_mailbox(tag)))
}

/// The object of a `get/mailbox/{address}` answer, `None` for `{}`; refused unless it is one
/// mailbox object naming `address`.
fn one_mailbox_object(endpoint: &str, reader: impl Read, address: &str) -> Result<Option<Value>> {
    let mut bytes = Vec::new();
    reader
        .take(NON_LIST_LIMIT as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Mailcow {
            endpoint: endpoint.to_owned(),
            message: format!("reading the answer failed: {e}"),
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(empty_answer(endpoint));
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| json_error(endpoint, &e, ""))?;
    let Some(object) = value.as_object() else {
        return Err(not_json(endpoint, "expected one mailbox object or {}"));
    };
    if object.is_empty() {
        return Ok(None);
    }
    let Some(username) = object.get("username") else {
        return Err(not_json(
            endpoint,
            "expected one mailbox object or {}, got an object without `username`",
        ));
    };
    let username = username.as_str().unwrap_or("");
    if !username.eq_ignore_ascii_case(address) {
        return Err(not_json(
            endpoint,
            format_args!("asked for one mailbox, mailcow answered with another ({username})"),
        ));
    }
    Ok(Some(value))
}

/// A `get/mailbox/{address}` answer read for its `sender_acl` only (lowercased): `None`
/// for `{}`, `Some(None)` when the object has no such field (mailcow before 2026-07a).
pub(super) fn parse_sender_acl(
    endpoint: &str,
    reader: impl Read,
    address: &str,
) -> Result<Option<Option<Vec<String>>>> {
    let Some(value) = one_mailbox_object(endpoint, reader, address)? else {
        return Ok(None);
    };
    let Some(list) = value.get("sender_acl") else {
        return Ok(Some(None));
    };
    let list = list
        .as_array()
        .ok_or_else(|| not_json(endpoint, "sender_acl is not a list"))?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_ascii_lowercase))
        .collect();
    Ok(Some(Some(list)))
}

/// Parse a domain list answer.
pub fn parse_domain_list(endpoint: &str, reader: impl Read) -> Result<Vec<Domain>> {
    let mut domains = Vec::new();
    read_list(endpoint, reader, |d: WireDomain| domains.push(Domain::from(d)))?;
    Ok(domains)
}

/// Parse an alias list answer.
pub(super) fn parse_alias_list(endpoint: &str, reader: impl Read) -> Result<Vec<MailcowAlias>> {
    let mut aliases = Vec::new();
    read_list(endpoint, reader, |a: WireAlias| aliases.push(MailcowAlias::from(a)))?;
    Ok(aliases)
}

/// Parse a `get/mailbox/template/all` answer (docs/mailcow-api-templates.md): quota in
/// bytes, flags and `acl_*` as ints (or strings), `{}` for none.
pub(super) fn parse_template_list(endpoint: &str, reader: impl Read) -> Result<Vec<MailboxTemplate>> {
    let mut templates = Vec::new();
    read_list(endpoint, reader, |t: Value| templates.extend(template_of(&t)))?;
    Ok(templates)
}

fn template_of(t: &Value) -> Option<MailboxTemplate> {
    let int = |v: &Value| -> Option<u64> {
        match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            Value::Bool(b) => Some(u64::from(*b)),
            _ => None,
        }
    };
    let id = int(t.get("id")?)?;
    let name = t.get("template")?.as_str()?.to_owned();
    let a = t.get("attributes").cloned().unwrap_or_default();
    let flag = |k: &str| a.get(k).and_then(int).is_none_or(|v| v != 0);
    let access = Protocol::ALL
        .into_iter()
        .filter(|p| flag(p.field()))
        .fold(0, |bits, p| bits | p.bit());
    let mut acl: Vec<String> = a
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("acl_")?, v)))
                .filter(|(_, v)| int(v).is_some_and(|v| v == 1))
                .map(|(k, _)| k.to_owned())
                .collect()
        })
        .unwrap_or_default();
    acl.sort();
    Some(MailboxTemplate {
        id,
        name,
        quota_mib: a.get("quota").and_then(int).unwrap_or(0) / (1 << 20),
        access,
        tags: a
            .get("tags")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        acl,
        rl_value: a.get("rl_value").and_then(int).unwrap_or(0),
        rl_frame: a.get("rl_frame").and_then(Value::as_str).unwrap_or("s").to_owned(),
    })
}

/// The app passwords `get/app-passwd/all/{mailbox}` lists: their ids, or an item failure.
pub type AppPasswordsResult = std::result::Result<Vec<u64>, String>;

/// A `get/app-passwd/all/{mailbox}` answer: whole rows (the stored hash among them, read
/// past and dropped), or `{}` for none (docs/mailcow-api-offboarding.md). Every row must be
/// `mailbox`'s: mailcow answers for its session user when the address is not valid.
pub(super) fn parse_app_passwords(endpoint: &str, reader: impl Read, mailbox: &str) -> Result<AppPasswordsResult> {
    let mut ids = Vec::new();
    let mut foreign = None;
    read_list(endpoint, reader, |w: WireAppPassword| {
        if w.mailbox.eq_ignore_ascii_case(mailbox) {
            ids.push(w.id);
        } else {
            foreign.get_or_insert(w.mailbox);
        }
    })?;
    Ok(match foreign {
        Some(other) => Err(format!(
            "mailcow listed app passwords of another mailbox ({other}); none deleted"
        )),
        None => Ok(ids),
    })
}

/// A `delete/app-passwd` answer: `["app_passwd_removed", "<id>"]` for every id, or the first
/// failure (`app_passwd_id_invalid` stops mailcow at that id).
pub(super) fn app_passwords_removed(ids: &[u64], entries: &[Entry]) -> ItemResult {
    let removed: Vec<u64> = entries
        .iter()
        .filter(|e| !e.is_failure() && e.key() == Some("app_passwd_removed"))
        .filter_map(|e| match &e.msg {
            Value::Array(a) => a
                .get(1)
                .and_then(|id| id.as_u64().or_else(|| id.as_str().and_then(|s| s.trim().parse().ok()))),
            _ => None,
        })
        .collect();
    let missing = ids.iter().filter(|id| !removed.contains(id)).count();
    if missing == 0 {
        return Ok(());
    }
    Err(format!(
        "{missing} of {} not removed: {}",
        ids.len(),
        first_failure(entries)
    ))
}

/// A `delete/eas_cache` answer for one mailbox: confirmed by an `eas_reset` entry.
pub(super) fn eas_reset(entries: &[Entry]) -> ItemResult {
    if entries.iter().any(|e| !e.is_failure() && e.key() == Some("eas_reset")) {
        return Ok(());
    }
    Err(first_failure(entries))
}

/// An `add/mailbox` answer: confirmed only by a `mailbox_added` entry, wherever it stands.
pub(super) fn mailbox_added(entries: &[Entry]) -> ItemResult {
    if entries.iter().any(|e| e.key() == Some("mailbox_added")) {
        return Ok(());
    }
    Err(first_failure(entries))
}

/// An `add/domain` answer: confirmed only by a success `["domain_added", domain]` entry
/// (the last one; a `dkim_added` or `domain_add_dkim_available` comes first). A
/// `domain_exists` is a failure: the name may be an alias domain, which takes no mailboxes.
pub(super) fn domain_added(domain: &str, entries: &[Entry]) -> ItemResult {
    let confirms = |e: &Entry| {
        !e.is_failure()
            && e.key() == Some("domain_added")
            && e.msg
                .get(1)
                .and_then(Value::as_str)
                .is_some_and(|d| d.eq_ignore_ascii_case(domain))
    };
    if entries.iter().any(confirms) {
        return Ok(());
    }
    let failure = first_failure(entries);
    if entries.iter().any(|e| e.key() == Some("domain_exists")) {
        return Err(format!(
            "{failure} (mailcow has it, though not among its domains: an alias domain, or added meanwhile)"
        ));
    }
    Err(failure)
}

/// An `edit/rename-mbox` answer: confirmed only by a `mailbox_renamed` entry (the
/// `alias_added` of the old address comes first).
pub(super) fn mailbox_renamed(entries: &[Entry]) -> ItemResult {
    if entries.iter().any(|e| e.key() == Some("mailbox_renamed")) {
        return Ok(());
    }
    Err(first_failure(entries))
}

/// An `add/alias` answer: the new id of each address, from `["alias_added", address, "id"]`
/// (API.md 4.7).
pub(super) fn aliases_added(addresses: &[String], entries: &[Entry]) -> BTreeMap<String, AliasResult> {
    let mut ids: BTreeMap<String, u64> = BTreeMap::new();
    for e in entries {
        if e.key() != Some("alias_added") {
            continue;
        }
        let (Some(address), Some(id)) = (e.address(), e.msg.get(2)) else {
            continue;
        };
        if let Some(id) = id.as_u64().or_else(|| id.as_str().and_then(|s| s.parse().ok())) {
            ids.insert(address, id);
        }
    }
    let results = match_items(addresses, entries, "alias_added");
    results
        .into_iter()
        .map(|(address, r)| {
            let r = r.and_then(|()| {
                ids.get(&address)
                    .copied()
                    .ok_or_else(|| "mailcow did not say the new alias id".to_owned())
            });
            (address, r)
        })
        .collect()
}

pub(super) fn snippet(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).take(80).collect();
    if clean.trim().is_empty() {
        "empty body".into()
    } else {
        format!("body starts with {clean:?}")
    }
}

/// An answer that is not JSON, or not the JSON of a list.
fn not_json(endpoint: &str, what: impl fmt::Display) -> Error {
    Error::Mailcow {
        endpoint: endpoint.to_owned(),
        message: format!("answer is not valid JSON ({what}); is mailcow_host really mailcow's address?"),
    }
}

/// What a JSON syntax or shape error in an answer means to the admin; `place` says where in
/// the answer it is when serde_json's line and column are relative to a part of it.
fn json_error(endpoint: &str, e: &serde_json::Error, place: &str) -> Error {
    if e.is_syntax() || e.is_eof() {
        return not_json(endpoint, format_args!("{e}{place}"));
    }
    Error::Mailcow {
        endpoint: endpoint.to_owned(),
        message: if e.is_io() {
            format!("reading the answer failed: {e}")
        } else {
            format!("unexpected answer: {e}{place}")
        },
    }
}

/// The part of an answer in memory: `bytes[..end]`. The bytes are zeroed once, as the window
/// grows, not before every read (that took about 3 % of a 100k pass under `perf record`).
struct Window {
    bytes: Vec<u8>,
    end: usize,
}

impl std::ops::Deref for Window {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.end]
    }
}

/// The most an answer that is not a list may hold: error objects and `{}` are small.
const NON_LIST_LIMIT: usize = 1 << 20;

/// No list element of mailcow's is near this size; a broken one is reported at this length.
const ELEMENT_LIMIT: usize = 1 << 20;

/// Read a list answer element by element, handing each to `each`: the answer is never held
/// whole. Elements are parsed from a window of the stream held as a slice, serde_json's fast
/// path (its reader path goes byte by byte: about 30 % of a 10k pass's CPU in a profile); an
/// element cut by the window's end is parsed again once more of the stream is in.
fn read_list<T: de::DeserializeOwned>(endpoint: &str, mut reader: impl Read, mut each: impl FnMut(T)) -> Result<()> {
    const WINDOW: usize = 64 * 1024;
    let io_error = |e: std::io::Error| Error::Mailcow {
        endpoint: endpoint.to_owned(),
        message: format!("reading the answer failed: {e}"),
    };
    let mut buf = Window {
        bytes: Vec::new(),
        end: 0,
    };
    let mut start = 0;
    let mut eof = false;
    // Read more of the stream, keeping `buf[start..]`; false at the end of the answer.
    let mut refill = |buf: &mut Window, start: &mut usize| -> Result<bool> {
        buf.bytes.copy_within(*start..buf.end, 0);
        buf.end -= *start;
        *start = 0;
        let len = buf.end;
        let room = len + WINDOW.max(len);
        if buf.bytes.len() < room {
            buf.bytes.resize(room, 0);
        }
        let n = loop {
            match reader.read(&mut buf.bytes[len..room]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        };
        buf.end = len + n;
        Ok(n > 0)
    };
    let skip_blank = |buf: &[u8], start: &mut usize| {
        *start += buf[*start..].iter().take_while(|b| b.is_ascii_whitespace()).count();
    };

    // An empty 200 is mailcow's answer to a request without a valid key (API.md 2).
    loop {
        skip_blank(&buf, &mut start);
        if start < buf.len() {
            break;
        }
        if !refill(&mut buf, &mut start)? {
            return Err(empty_answer(endpoint));
        }
    }
    if buf[start] != b'[' {
        // `{}` (mailcow's empty list), an error object, or not JSON at all: small, read whole.
        while buf.len() < NON_LIST_LIMIT && refill(&mut buf, &mut start)? {}
        let list: ListOrEmpty<T> = serde_json::from_slice(&buf[start..]).map_err(|e| json_error(endpoint, &e, ""))?;
        list.0.into_iter().for_each(each);
        return Ok(());
    }
    start += 1;
    // Right after `[` or `,` an element must come; after an element, `,` or `]`.
    let mut want_element = true;
    let mut elements = 0usize;
    loop {
        skip_blank(&buf, &mut start);
        let Some(&next) = buf.get(start) else {
            if eof || !refill(&mut buf, &mut start)? {
                return Err(not_json(endpoint, "the answer ends inside the list"));
            }
            continue;
        };
        match (next, want_element) {
            (b']', true) if elements == 0 => {
                start += 1;
                break;
            }
            (b']' | b',', true) => return Err(not_json(endpoint, "a list element is missing after `,`")),
            (b']', false) => {
                start += 1;
                break;
            }
            (b',', false) => {
                start += 1;
                want_element = true;
                continue;
            }
            (_, false) => {
                return Err(not_json(
                    endpoint,
                    format_args!("expected `,` or `]`, got {:?}", char::from(next)),
                ));
            }
            (_, true) => {}
        }
        // One element from the window; an element the window cuts short is read again
        // after a refill (a number cut at the end could parse, so the end never counts).
        loop {
            let mut stream = serde_json::Deserializer::from_slice(&buf[start..]).into_iter::<T>();
            match stream.next() {
                Some(Ok(item)) if eof || start + stream.byte_offset() < buf.len() => {
                    start += stream.byte_offset();
                    each(item);
                    elements += 1;
                    want_element = false;
                    break;
                }
                // Any error may come from the cut (`-` then the window's end is "invalid
                // number"), so only a complete answer or an element past any mailbox's size
                // makes it final; the position is then the same however the stream was cut.
                Some(Err(e)) if eof || buf.len() - start > ELEMENT_LIMIT => {
                    return Err(json_error(endpoint, &e, &format!(" in list element {}", elements + 1)));
                }
                None if eof => return Err(not_json(endpoint, "the answer ends inside the list")),
                _ => eof = !refill(&mut buf, &mut start)?,
            }
        }
    }
    // After the closing `]` only whitespace may follow.
    loop {
        skip_blank(&buf, &mut start);
        if let Some(&b) = buf.get(start) {
            return Err(not_json(
                endpoint,
                format_args!("trailing {:?} after the list", char::from(b)),
            ));
        }
        if eof || !refill(&mut buf, &mut start)? {
            return Ok(());
        }
    }
}

fn empty_answer(endpoint: &str) -> Error {
    Error::Mailcow {
        endpoint: endpoint.to_owned(),
        message: "empty answer: mailcow gives this when the API key is missing, or mailcow_host points \
                  at something else than mailcow"
            .into(),
    }
}

/// One entry of a write call's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub kind: String,
    pub msg: Value,
}

impl Entry {
    /// The message key: `msg` itself when a string, else `msg[0]`.
    pub fn key(&self) -> Option<&str> {
        match &self.msg {
            Value::String(s) => Some(s),
            Value::Array(a) => a.first().and_then(Value::as_str),
            _ => None,
        }
    }

    /// The address in `msg[1]`, lowercased, if there is one.
    pub fn address(&self) -> Option<String> {
        match &self.msg {
            Value::Array(a) => a
                .get(1)
                .and_then(Value::as_str)
                .filter(|s| s.contains('@'))
                .map(str::to_ascii_lowercase),
            _ => None,
        }
    }

    pub fn message(&self) -> String {
        render_msg(&self.msg)
    }

    fn is_failure(&self) -> bool {
        self.kind == "danger" || self.kind == "error"
    }
}

/// `"access_denied"` or `["mailbox_quota_left_exceeded", 2048]` as one readable string.
pub(super) fn render_msg(msg: &Value) -> String {
    match msg {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// Parse a write answer: an array of entries, or a single object.
pub fn parse_entries(text: &str) -> std::result::Result<Vec<Entry>, String> {
    if text.trim().is_empty() {
        return Err("empty answer: mailcow gives this when the API key is missing".into());
    }
    let value: Value = serde_json::from_str(text).map_err(|_| {
        format!(
            "answer is not JSON ({}); is mailcow_host really mailcow's address?",
            snippet(text)
        )
    })?;
    let one = |v: &Value| -> std::result::Result<Entry, String> {
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("answer entry without a type: {}", snippet(&v.to_string())))?;
        Ok(Entry {
            kind: kind.to_owned(),
            msg: v.get("msg").cloned().unwrap_or(Value::Null),
        })
    };
    match &value {
        Value::Array(items) => items.iter().map(one).collect(),
        Value::Object(_) => Ok(vec![one(&value)?]),
        _ => Err(format!("unexpected answer {}", snippet(text))),
    }
}

fn first_failure(entries: &[Entry]) -> String {
    entries
        .iter()
        .find(|e| e.is_failure())
        .map(Entry::message)
        .unwrap_or_else(|| {
            let all: Vec<String> = entries.iter().map(Entry::message).collect();
            format!("not confirmed by mailcow (answer: {})", all.join("; "))
        })
}

/// An `edit/mailbox` answer for one mailbox's `sender_acl`: confirmed only by
/// `["mailbox_modified", mailbox]`; the values of `["sender_acl_invalid", value]` entries
/// were dropped by mailcow while the rest was saved (functions.mailbox.inc.php 3303-3360).
pub(super) fn sender_acl_result(mailbox: &str, entries: &[Entry]) -> std::result::Result<Vec<String>, String> {
    let modified = entries
        .iter()
        .any(|e| e.key() == Some("mailbox_modified") && e.address().as_deref() == Some(&mailbox.to_ascii_lowercase()));
    if !modified {
        return Err(first_failure(entries));
    }
    Ok(entries
        .iter()
        .filter(|e| e.key() == Some("sender_acl_invalid"))
        .filter_map(|e| e.msg.get(1).and_then(Value::as_str).map(str::to_owned))
        .collect())
}

/// Match a batch answer to its items. An item succeeded only if an entry with `ok_key`
/// names it in `msg[1]`. Failures without an address (`"access_denied"`) are given, in
/// answer order, to the first item that has no result yet: mailcow answers in item order.
pub fn match_items(items: &[String], entries: &[Entry], ok_key: &str) -> BTreeMap<String, ItemResult> {
    let wanted: Vec<String> = items.iter().map(|i| i.to_ascii_lowercase()).collect();
    let mut results: BTreeMap<String, ItemResult> = BTreeMap::new();
    for entry in entries {
        let address = entry.address().filter(|a| wanted.contains(a));
        match (address, entry.is_failure()) {
            (Some(addr), false) if entry.key() == Some(ok_key) => {
                results.entry(addr).or_insert(Ok(()));
            }
            (Some(addr), true) => {
                results.insert(addr, Err(entry.message()));
            }
            (None, true) => {
                if let Some(next) = wanted.iter().find(|w| !results.contains_key(*w)) {
                    results.insert(next.clone(), Err(entry.message()));
                }
            }
            _ => {}
        }
    }
    for item in wanted {
        results
            .entry(item)
            .or_insert_with(|| Err("mailcow's answer did not confirm this item".into()));
    }
    results
}

/// A JSON list, or the `{}` mailcow sends for an empty one (API.md 4.1, 4.2).
struct ListOrEmpty<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ListOrEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = ListOrEmpty<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list, or {} for none")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(ListOrEmpty(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
                if let Some((key, _)) = map.next_entry::<String, IgnoredAny>()? {
                    // A non-empty object here is an error object, e.g. {"type":"error",…}.
                    return Err(de::Error::custom(format!(
                        "expected a list, got an object with key `{key}`"
                    )));
                }
                Ok(ListOrEmpty(Vec::new()))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An integer that may come as a number or a numeric string (API.md 3: parse leniently).
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a non-negative integer or numeric string")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<u64, E> {
            // mailcow can hold a negative quota (API.md); it is not ours, read it as 0.
            Ok(v.max(0) as u64)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<u64, E> {
            Ok(if v > 0.0 { v as u64 } else { 0 })
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<u64, E> {
            Ok(u64::from(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<u64, E> {
            let t = v.trim();
            if let Ok(n) = t.parse::<u64>() {
                return Ok(n);
            }
            t.parse::<i64>()
                .map(|n| n.max(0) as u64)
                .map_err(|_| E::custom(format!("`{v}` is not a number")))
        }
        fn visit_unit<E: de::Error>(self) -> std::result::Result<u64, E> {
            Ok(0)
        }
    }
    d.deserialize_any(V)
}

fn lenient_flag<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    lenient_u64(d).map(|v| v != 0)
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// An app password row as `get/app-passwd/all` sends it: only the id and its mailbox are
/// read (the `password` hash and the rest are skipped, never stored).
#[derive(Deserialize)]
struct WireAppPassword {
    #[serde(deserialize_with = "lenient_u64")]
    id: u64,
    #[serde(default, deserialize_with = "lenient_string")]
    mailbox: String,
}

/// A mailbox object as mailcow sends it; unknown keys are skipped without being stored.
#[derive(Deserialize)]
struct WireMailbox {
    username: String,
    #[serde(default, deserialize_with = "lenient_string")]
    name: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    quota: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    active: u64,
    #[serde(default, deserialize_with = "lenient_string")]
    authsource: String,
    #[serde(default)]
    attributes: WireAttributes,
    #[serde(default)]
    tags: Vec<String>,
}

struct WireAttributes {
    tls_in: bool,
    tls_out: bool,
    attribute_hash: Option<String>,
    /// The `*_access` flags, bits of `Protocol`.
    access: u8,
}

// Without attributes, the flags are mailcow's defaults.
impl Default for WireAttributes {
    fn default() -> Self {
        WireAttributes {
            tls_in: false,
            tls_out: false,
            attribute_hash: None,
            access: ALL_ON,
        }
    }
}

/// mailcow's default for an access flag (the Default template): on.
fn on() -> bool {
    true
}

impl<'de> Deserialize<'de> for WireAttributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Object {
            #[serde(default, deserialize_with = "lenient_flag")]
            tls_enforce_in: bool,
            #[serde(default, deserialize_with = "lenient_flag")]
            tls_enforce_out: bool,
            #[serde(default)]
            attribute_hash: Option<String>,
            #[serde(default = "on", deserialize_with = "lenient_flag")]
            imap_access: bool,
            #[serde(default = "on", deserialize_with = "lenient_flag")]
            pop3_access: bool,
            #[serde(default = "on", deserialize_with = "lenient_flag")]
            smtp_access: bool,
            #[serde(default = "on", deserialize_with = "lenient_flag")]
            sieve_access: bool,
            #[serde(default = "on", deserialize_with = "lenient_flag")]
            sogo_access: bool,
            #[serde(default = "on", deserialize_with = "lenient_flag")]
            eas_access: bool,
            #[serde(default = "on", deserialize_with = "lenient_flag")]
            dav_access: bool,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireAttributes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an attributes object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Self::Value, A::Error> {
                let o = Object::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(WireAttributes {
                    tls_in: o.tls_enforce_in,
                    tls_out: o.tls_enforce_out,
                    attribute_hash: o.attribute_hash.filter(|h| !h.is_empty()),
                    access: [
                        (o.imap_access, Protocol::Imap),
                        (o.pop3_access, Protocol::Pop3),
                        (o.smtp_access, Protocol::Smtp),
                        (o.sieve_access, Protocol::Sieve),
                        (o.sogo_access, Protocol::Sogo),
                        (o.eas_access, Protocol::Eas),
                        (o.dav_access, Protocol::Dav),
                    ]
                    .into_iter()
                    .filter(|(on, _)| *on)
                    .fold(0, |bits, (_, p)| bits | p.bit()),
                })
            }
            // Older rows can hold `[]` or null here.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(WireAttributes::default())
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(WireAttributes::default())
            }
        }
        d.deserialize_any(V)
    }
}

impl WireMailbox {
    fn into_mailbox(self, tag: Option<&str>) -> Mailbox {
        let authsource = match self.authsource.as_str() {
            "" | "mailcow" => Cow::Borrowed("mailcow"),
            "ldap" => Cow::Borrowed("ldap"),
            _ => Cow::Owned(self.authsource),
        };
        let mut username = self.username;
        username.make_ascii_lowercase();
        Mailbox {
            username: username.into_boxed_str(),
            name: self.name.into_boxed_str(),
            quota_bytes: self.quota,
            authsource,
            attribute_hash: self.attributes.attribute_hash.map(String::into_boxed_str),
            active: self.active.min(u64::from(u8::MAX)) as u8,
            tls_in: self.attributes.tls_in,
            tls_out: self.attributes.tls_out,
            tagged: tag.is_some_and(|t| self.tags.iter().any(|have| have == t)),
            access: self.attributes.access,
        }
    }
}

#[derive(Deserialize)]
struct WireDomain {
    domain_name: String,
    #[serde(default, deserialize_with = "lenient_flag")]
    active: bool,
    #[serde(default, deserialize_with = "lenient_u64")]
    def_quota_for_mbox: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    max_quota_for_mbox: u64,
}

impl From<WireDomain> for Domain {
    fn from(w: WireDomain) -> Domain {
        Domain {
            name: w.domain_name.to_ascii_lowercase(),
            active: w.active,
            def_quota_bytes: w.def_quota_for_mbox,
            max_quota_bytes: w.max_quota_for_mbox,
        }
    }
}

#[derive(Deserialize)]
struct WireAlias {
    #[serde(deserialize_with = "lenient_u64")]
    id: u64,
    address: String,
    #[serde(default, deserialize_with = "lenient_string")]
    goto: String,
    #[serde(default, deserialize_with = "lenient_flag")]
    active: bool,
    #[serde(default, deserialize_with = "lenient_flag")]
    sender_allowed: bool,
}

impl From<WireAlias> for MailcowAlias {
    fn from(w: WireAlias) -> MailcowAlias {
        MailcowAlias {
            id: w.id,
            address: w.address.to_ascii_lowercase(),
            goto: w.goto,
            active: w.active,
            sender_allowed: w.sender_allowed,
        }
    }
}

/// A `get/identity-provider` answer: `None` when no provider is configured (mailcow then
/// answers `{"login_provisioning":1}`, or `{}`). Only the named, non-secret keys are read:
/// `bindpass`, `client_secret` and `access_token` are never copied out of the parsed value,
/// which is dropped here.
pub fn parse_identity_provider(endpoint: &str, text: &str) -> Result<Option<IdentityProvider>> {
    let value: Value = serde_json::from_str(text).map_err(|e| Error::Mailcow {
        endpoint: endpoint.to_owned(),
        // Not the text: it may hold the IdP's bind password.
        message: format!("the answer is not JSON ({e})"),
    })?;
    let Some(map) = value.as_object() else {
        return Ok(None);
    };
    let text = |key: &str| match map.get(key) {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    // PHP stores "0"/"1" strings; `get` turns some into booleans; 1 is also seen.
    let flag = |key: &str, default: bool| match map.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_u64().is_some_and(|n| n != 0),
        Some(Value::String(s)) => !matches!(s.trim(), "" | "0" | "false"),
        _ => default,
    };
    let authsource = text("authsource");
    if authsource.is_empty() {
        return Ok(None);
    }
    let host = text("host");
    let port = text("port");
    let server = match (host.is_empty(), port.is_empty()) {
        (true, _) => String::new(),
        (false, true) => host,
        (false, false) => format!("{host}:{port}"),
    };
    Ok(Some(IdentityProvider {
        authsource,
        server,
        base_dn: text("basedn"),
        periodic_sync: flag("periodic_sync", false),
        import_users: flag("import_users", false),
        login_provisioning: flag("login_provisioning", true),
        mappers: map.get("mappers").and_then(Value::as_array).map_or(0, |m| m.len()),
        default_template: text("default_template"),
    }))
}

/// A `get/domain-admin/all` answer: the admins with their selected domains (`{}`: none).
pub fn parse_domain_admins(endpoint: &str, reader: impl Read) -> Result<Vec<crate::core::admins::MailcowAdmin>> {
    #[derive(Deserialize)]
    struct WireAdmin {
        username: String,
        #[serde(default)]
        active: Value,
        #[serde(default)]
        selected_domains: Value,
    }
    let mut admins = Vec::new();
    read_list(endpoint, reader, |w: WireAdmin| {
        let domains = match &w.selected_domains {
            Value::Array(list) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect(),
            _ => Default::default(),
        };
        let active = match &w.active {
            Value::Number(n) => n.as_u64().is_some_and(|n| n != 0),
            Value::String(s) => s.trim() != "0" && !s.trim().is_empty(),
            Value::Bool(b) => *b,
            _ => false,
        };
        admins.push(crate::core::admins::MailcowAdmin {
            username: w.username.to_ascii_lowercase(),
            active,
            domains,
        });
    })?;
    Ok(admins)
}

/// A `delete/domain-admin` answer: each username confirmed only by
/// `["domain_admin_removed", username]`; `["username_invalid", username]` and other
/// failures naming it are its error (admin names hold no `@`, so [`match_items`] cannot
/// match them).
pub(super) fn admins_removed(usernames: &[String], entries: &[Entry]) -> BTreeMap<String, ItemResult> {
    let mut results: BTreeMap<String, ItemResult> = BTreeMap::new();
    for entry in entries {
        let named = match &entry.msg {
            Value::Array(a) => a.get(1).and_then(Value::as_str).map(str::to_ascii_lowercase),
            _ => None,
        };
        let Some(name) = named.filter(|n| usernames.iter().any(|u| u.eq_ignore_ascii_case(n))) else {
            continue;
        };
        if entry.is_failure() {
            results.insert(name, Err(entry.message()));
        } else if entry.key() == Some("domain_admin_removed") {
            results.entry(name).or_insert(Ok(()));
        }
    }
    for u in usernames {
        results
            .entry(u.to_ascii_lowercase())
            .or_insert_with(|| Err(first_failure(entries)));
    }
    results
}

/// An `add/domain-admin` or `edit/domain-admin` answer for one admin: confirmed only by
/// `[ok_key, username]` (a `domain_invalid` for one domain comes with the success entry).
pub(super) fn admin_confirmed(username: &str, ok_key: &str, entries: &[Entry]) -> ItemResult {
    let confirms = |e: &Entry| {
        !e.is_failure()
            && e.key() == Some(ok_key)
            && e.msg
                .get(1)
                .and_then(Value::as_str)
                .is_some_and(|u| u.eq_ignore_ascii_case(username))
    };
    if entries.iter().any(confirms) {
        Ok(())
    } else {
        Err(first_failure(entries))
    }
}

#[cfg(test)]
mod tests {
    /// `get/mailbox/{address}` read for its send-as list (docs/mailcow-api-sender-acl.md), and
    /// an `edit/mailbox` answer where mailcow dropped one value and saved the rest.
    #[test]
    fn sender_acl_is_read_and_refused_values_are_told_apart() {
        let read = |body: &str| parse_sender_acl("e", body.as_bytes(), "a@x.org");
        assert_eq!(read("{}").unwrap(), None);
        assert_eq!(
            read(r#"{"username":"A@x.org","sender_acl":["Info@x.org","@y.org","*"]}"#).unwrap(),
            Some(Some(vec!["info@x.org".into(), "@y.org".into(), "*".into()]))
        );
        assert_eq!(
            read(r#"{"username":"a@x.org","quota":1}"#).unwrap(),
            Some(None),
            "before 2026-07a"
        );
        assert!(
            read(r#"{"username":"b@x.org","sender_acl":[]}"#).is_err(),
            "another mailbox"
        );
        let entries = parse_entries(
            r#"[{"type":"danger","msg":["sender_acl_invalid","gone@x.org"]},{"type":"success","msg":["mailbox_modified","a@x.org"]}]"#,
        )
        .unwrap();
        assert_eq!(
            sender_acl_result("a@x.org", &entries),
            Ok(vec!["gone@x.org".to_string()])
        );
        assert!(sender_acl_result("a@x.org", &entries[..1]).is_err(), "not confirmed");
    }

    /// `get/domain-admin/all` and the delete answer, as domain_admin() prints them.
    #[test]
    fn domain_admins_are_read_and_their_removal_matched_by_name() {
        let list = r#"[{"username":"alice","tfa_active":0,"active":"1","active_int":1,"created":"x",
            "attributes":{"force_tfa":"0"},"selected_domains":["Example.org"],"unselected_domains":""}]"#;
        let admins = parse_domain_admins("e", list.as_bytes()).unwrap();
        assert_eq!(admins.len(), 1);
        assert!(admins[0].active);
        assert_eq!(admins[0].domains, ["example.org".to_owned()].into());
        assert!(parse_domain_admins("e", "{}".as_bytes()).unwrap().is_empty());
        let entries = parse_entries(
            r#"[{"type":"success","log":[],"msg":["domain_admin_removed","alice"]},
                {"type":"danger","log":[],"msg":["username_invalid","bob"]}]"#,
        )
        .unwrap();
        let r = admins_removed(&["alice".into(), "bob".into(), "carol".into()], &entries);
        assert_eq!(r["alice"], Ok(()));
        assert!(r["bob"].as_ref().unwrap_err().contains("username_invalid"), "{r:?}");
        assert!(r["carol"].is_err());
    }

    /// The shapes of `identity_provider('get')` (functions.inc.php): strings for most keys,
    /// booleans for the four it converts, JSON arrays for `mappers`; the secret keys dropped.
    #[test]
    fn identity_provider_is_read_without_its_secrets() {
        let text = r#"{"authsource":"ldap","host":"ldap.corp","port":"389","basedn":"dc=corp",
            "binddn":"cn=mc","bindpass":"S3cret-bind","periodic_sync":"1","import_users":"0",
            "login_provisioning":false,"mappers":["a","b"],"templates":["t1","t2"],
            "default_template":"Default","client_secret":"oidc-secret","use_ssl":false}"#;
        let idp = parse_identity_provider("get/identity-provider", text).unwrap().unwrap();
        assert_eq!(idp.authsource, "ldap");
        assert_eq!(idp.server, "ldap.corp:389");
        assert_eq!(idp.base_dn, "dc=corp");
        assert!(idp.periodic_sync && !idp.import_users && !idp.login_provisioning);
        assert_eq!(idp.mappers, 2);
        assert_eq!(idp.default_template, "Default");
        let shown = format!("{idp:?}");
        assert!(!shown.contains("S3cret") && !shown.contains("oidc-secret"), "{shown}");
        // No provider: mailcow adds only its login_provisioning default.
        assert_eq!(
            parse_identity_provider("e", r#"{"login_provisioning":1}"#).unwrap(),
            None
        );
        assert_eq!(parse_identity_provider("e", "{}").unwrap(), None);
        let err = parse_identity_provider("e", "<html>bindpass=x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("bindpass"), "{err}");
    }

    use super::*;

    #[test]
    fn domain_added_is_confirmed_only_by_its_own_entry() {
        let entries = |text: &str| parse_entries(text).unwrap();
        // transcript.jsonl line 9: the DKIM key first, then the domain.
        let ok = entries(
            r#"[{"type":"success","log":[],"msg":["dkim_added","example.net"]},{"type":"success","log":[],"msg":["domain_added","example.net"]}]"#,
        );
        assert_eq!(domain_added("Example.NET", &ok), Ok(()));
        assert!(domain_added("other.net", &ok).is_err(), "another domain's confirmation");
        let exists = entries(r#"[{"type":"danger","log":[],"msg":["domain_exists","example.net"]}]"#);
        let e = domain_added("example.net", &exists).unwrap_err();
        assert!(e.starts_with("domain_exists example.net (mailcow has it"), "{e}");
        let refused = entries(r#"{"type":"danger","msg":"mailbox_quota_exceeds_domain_quota"}"#);
        assert_eq!(
            domain_added("example.net", &refused),
            Err("mailbox_quota_exceeds_domain_quota".into())
        );
        let only_dkim = entries(r#"[{"type":"success","msg":["dkim_added","example.net"]}]"#);
        assert!(
            domain_added("example.net", &only_dkim)
                .unwrap_err()
                .contains("not confirmed")
        );
    }

    fn mailboxes_from(text: &str) -> Result<Vec<Mailbox>> {
        parse_mailbox_list("get/mailbox/reduced", text.as_bytes(), Some("ldap-sync"))
    }

    #[test]
    fn empty_list_is_an_object() {
        assert!(mailboxes_from("{}").unwrap().is_empty());
        assert!(mailboxes_from("[]").unwrap().is_empty());
        let e = mailboxes_from(r#"{"type":"error","msg":"x"}"#).unwrap_err().to_string();
        assert!(e.contains("expected a list"), "{e}");
    }

    /// A reader that hands out `step` bytes at a time, so element boundaries fall everywhere.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn split_values(text: &str, step: usize) -> std::result::Result<Vec<Value>, String> {
        let mut out = Vec::new();
        let reader = Trickle {
            data: text.as_bytes(),
            step,
        };
        read_list("get/x", reader, |v: Value| out.push(v)).map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn list_elements_are_cut_where_serde_json_would_cut_them() {
        let lists = [
            r#"[]"#,
            r#" [ ] "#,
            r#"[{"a":"x]}\"\\","b":[1,{"c":"}"}]},{"d":null}]"#,
            "[\n  {\"username\":\"a@x.org\"},\n  {\"username\":\"b@x.org\",\"tags\":[\"t\"]}\n]\n",
            r#"[1, -2.5e3 ,true,null,"s,]",[],{}]"#,
            r#"[[[["deep"]]]]"#,
        ];
        for text in lists {
            let whole: Vec<Value> = serde_json::from_str(text).unwrap();
            for step in [1, 2, 3, 7, 64, 1 << 16] {
                assert_eq!(split_values(text, step).unwrap(), whole, "{text} in steps of {step}");
            }
        }
    }

    #[test]
    fn broken_lists_are_refused() {
        for text in [
            "[1,]",
            "[,1]",
            "[1 2]",
            "[1] x",
            r#"[{"a":1}"#,
            r#"[{"a":"unterminated"#,
            r#"[{"a":1}}]"#,
            r#"[{"a":}]"#,
            "[1,,2]",
        ] {
            assert!(
                serde_json::from_str::<Value>(text).is_err(),
                "{text} is valid JSON after all"
            );
            for step in [1, 3, 1 << 16] {
                let e = split_values(text, step).unwrap_err();
                assert!(e.contains("not valid JSON"), "{text} (steps of {step}): {e}");
            }
        }
    }

    #[test]
    fn empty_body_says_key_or_url() {
        let e = mailboxes_from("  ").unwrap_err().to_string();
        assert!(e.contains("API key is missing"), "{e}");
        let e = mailboxes_from("<html>login</html>").unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn templates_parse_with_bytes_flags_acls_and_an_empty_answer() {
        let text = r#"[{"id":2,"template":"Default","type":"mailbox","attributes":{"quota":0,"tags":[],
            "imap_access":1,"pop3_access":"0","acl_spam_alias":1,"acl_syncjobs":0,"rl_value":"","rl_frame":"s"}},
            {"id":"3","template":"Staff","attributes":{"quota":2147483648,"tags":["staff"],"acl_pw_reset":"1",
            "rl_value":"50","rl_frame":"h"}},{"template":"no id"}]"#;
        let t = parse_template_list("t", text.as_bytes()).unwrap();
        assert_eq!(t.len(), 2, "a row without an id is dropped");
        assert_eq!((t[0].id, t[0].name.as_str(), t[0].quota_mib), (2, "Default", 0));
        assert_eq!(t[0].access, ALL_ON & !Protocol::Pop3.bit(), "absent flags are on");
        assert_eq!(t[0].acl, ["spam_alias"]);
        assert_eq!((t[0].rl_value, t[0].rl_frame.as_str()), (0, "s"));
        assert_eq!((t[1].id, t[1].quota_mib, t[1].rl_value), (3, 2048, 50));
        assert_eq!(t[1].tags, ["staff"]);
        assert_eq!(t[1].acl, ["pw_reset"]);
        assert!(parse_template_list("t", "{}".as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn mailbox_fields_parse_leniently() {
        let text = r#"[{"username":"A@Example.org","active":2,"name":null,"quota":"3221225472","authsource":"ldap",
            "attributes":{"tls_enforce_in":"1","tls_enforce_out":0,"attribute_hash":""},"tags":["ldap-sync"],
            "percent_in_use":"- ","custom_attributes":[],"rl":false},
            {"username":"b@example.org","active":"1","quota":0,"attributes":[]},
            {"username":"c@example.org","attributes":{"imap_access":"1","pop3_access":"0","smtp_access":"1",
            "sieve_access":"1","sogo_access":"0","eas_access":"1","dav_access":"0"}}]"#;
        let m = mailboxes_from(text).unwrap();
        assert_eq!(&*m[0].username, "a@example.org");
        assert_eq!(m[0].active, 2);
        assert_eq!(m[0].quota_bytes, 3 << 30);
        assert!(m[0].tls_in && !m[0].tls_out);
        assert_eq!(
            m[0].access,
            crate::core::access::ALL_ON,
            "flags absent: mailcow's defaults"
        );
        assert_eq!(
            m[1].access,
            crate::core::access::ALL_ON,
            "attributes `[]`: the defaults"
        );
        use crate::core::access::Protocol::*;
        assert_eq!(m[2].access, Imap.bit() | Smtp.bit() | Sieve.bit() | Eas.bit());
        assert_eq!(m[0].attribute_hash, None);
        assert!(m[0].tagged);
        assert!(!m[1].tagged);
        assert_eq!(m[1].authsource, "mailcow");
        assert_eq!(m[1].active, 1);
    }

    #[test]
    fn batch_results_match_by_address_then_order() {
        let entries = parse_entries(
            r#"[{"type":"danger","log":[],"msg":["mailbox_quota_left_exceeded",2048]},
                {"type":"success","log":[],"msg":["mailbox_modified","Erin@example.net"]},
                {"type":"danger","log":[],"msg":"access_denied"},
                {"type":"success","log":[],"msg":["mailbox_modified","frank@example.net"]}]"#,
        )
        .unwrap();
        let items: Vec<String> = [
            "alice@example.org",
            "erin@example.net",
            "nobody@example.org",
            "frank@example.net",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = match_items(&items, &entries, "mailbox_modified");
        assert_eq!(r["alice@example.org"], Err("mailbox_quota_left_exceeded 2048".into()));
        assert_eq!(r["erin@example.net"], Ok(()));
        assert_eq!(r["nobody@example.org"], Err("access_denied".into()));
        assert_eq!(r["frank@example.net"], Ok(()));
    }

    #[test]
    fn unconfirmed_items_fail() {
        let entries = parse_entries(r#"{"type":"success","msg":"Task completed"}"#).unwrap();
        let r = match_items(&["a@example.org".to_string()], &entries, "mailbox_modified");
        assert!(r["a@example.org"].is_err());
    }

    #[test]
    fn entries_msg_string_or_list() {
        let e = parse_entries(
            r#"[{"type":"success","msg":["rl_saved","a@x.org"]},{"type":"success","msg":["mailbox_added","a@x.org"]}]"#,
        )
        .unwrap();
        assert_eq!(e[1].key(), Some("mailbox_added"));
        assert!(parse_entries("").is_err());
        assert!(parse_entries("<html>").is_err());
    }
}
