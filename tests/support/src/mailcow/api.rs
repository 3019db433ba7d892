//! Request handling in the order mailcow's nginx + `json_api.php` apply it:
//! authentication (API.md section 2), the `query=` rewrite of the path, action and
//! method checks, body decoding (section 1), then the GET renderers and the write
//! operations of `state.rs`.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::http::{Request, Response};
use super::json::Out;
use super::php::{intval_str, parse_query, percent_decode, valid_domain_name};
use super::render;
use super::state::{Mailbox, Outcome, State, Template};
use super::{Auth, Shared};

/// What a handled request produced, plus how many mailbox objects a list GET
/// rendered (for the optional per-mailbox cost model).
pub(crate) struct Handled {
    pub resp: Response,
    pub listed: usize,
    pub full_objects: bool,
}

fn done(resp: Response) -> Handled {
    Handled {
        resp,
        listed: 0,
        full_objects: false,
    }
}

fn error(status: u16, msg: &str) -> Response {
    let mut o = Out::new(false);
    o.begin_obj();
    o.kv_str("type", "error");
    o.kv_str("msg", msg);
    o.end_obj();
    Response::json(status, o.finish())
}

enum Access {
    Rw,
    Ro,
}

/// mailcow removes every character outside `[A-Za-z0-9-]` before the key lookup.
pub(crate) fn strip_key(raw: &str) -> String {
    raw.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect()
}

/// X-API-Key check, then the key's IP allow-list. Err carries the 401 response.
fn authenticate(auth: &Auth, req: &Request, peer: IpAddr) -> Result<Option<Access>, Response> {
    let Some(raw) = req.header("x-api-key") else {
        return Ok(None);
    };
    let key = strip_key(raw);
    let (access, allow) = if !key.is_empty() && key == auth.rw_key {
        (Access::Rw, &auth.allow_rw)
    } else if !key.is_empty() && key == auth.ro_key {
        (Access::Ro, &auth.allow_ro)
    } else {
        return Err(error(401, "authentication failed"));
    };
    if allow.as_ref().is_some_and(|list| !ip_allowed(list, peer)) {
        let ip = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        return Err(error(401, &format!("api access denied for ip {ip}")));
    }
    Ok(Some(access))
}

/// `allow_from`: single IPs and CIDRs separated by comma, space, semicolon or newline.
pub(crate) fn ip_allowed(list: &str, peer: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
        v4 => v4,
    };
    list.split([',', ' ', ';', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            let (net, bits) = match entry.split_once('/') {
                Some((n, b)) => (n, b.parse::<u32>().ok()),
                None => (entry, None),
            };
            match (net.parse::<IpAddr>(), peer) {
                (Ok(IpAddr::V4(n)), IpAddr::V4(p)) => {
                    let bits = bits.unwrap_or(32).min(32);
                    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
                    u32::from(n) & mask == u32::from(p) & mask
                }
                (Ok(IpAddr::V6(n)), IpAddr::V6(p)) => {
                    let bits = bits.unwrap_or(128).min(128);
                    let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
                    u128::from(n) & mask == u128::from(p) & mask
                }
                _ => false,
            }
        })
}

pub(crate) fn handle(shared: &Shared, req: &Request, peer: IpAddr, now: u64) -> Handled {
    // Browsers' fetch metadata is refused outright (API.md section 1).
    if req
        .header("sec-fetch-dest")
        .is_some_and(|d| !d.eq_ignore_ascii_case("empty"))
    {
        return done(Response::json(403, Vec::new()));
    }
    let access = {
        let auth = shared.auth.lock().unwrap_or_else(|e| e.into_inner());
        match authenticate(&auth, req, peer) {
            Ok(a) => a,
            Err(resp) => return done(resp),
        }
    };

    // nginx: /api/v1/<q> → json_api.php?query=<decoded q>&<original args>; PHP then
    // parses that string again ('+' → space, %xx decoded twice, '&'/'#' cut).
    let Some(rest) = req.path().strip_prefix("/api/v1/") else {
        return done(error(404, "route not found"));
    };
    let mut qs = format!("query={}", percent_decode(rest));
    if !req.query().is_empty() {
        qs.push('&');
        qs.push_str(req.query());
    }
    if let Some(p) = qs.find('#') {
        qs.truncate(p);
    }
    let params = parse_query(&qs);
    let param = |k: &str| params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str());
    let query = param("query").unwrap_or("");
    let mut seg = query.split('/');
    let action = seg.next().unwrap_or("");
    let category = seg.next().unwrap_or("");
    let object = seg.next().unwrap_or("");
    let extra = seg.next().unwrap_or("");
    let tags: Option<Vec<String>> = param("tags")
        .filter(|t| !t.is_empty())
        .map(|t| t.split(',').map(str::to_string).collect());

    let Some(access) = access else {
        // Without a key nothing is echoed, except edit/delete's ACL check.
        return done(match action {
            "edit" | "delete" => error(403, "API read/write access denied"),
            _ => Response::json(200, Vec::new()),
        });
    };
    if !matches!(action, "get" | "add" | "edit" | "delete" | "search") {
        return done(error(404, "route not found"));
    }
    if matches!(access, Access::Ro) && matches!(action, "add" | "edit" | "delete") {
        return done(error(403, "API read/write access denied"));
    }
    if action == "get" {
        if req.method != "GET" {
            return done(error(405, "only GET method is allowed"));
        }
        let st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        return get(&st, category, object, extra, tags.as_deref());
    }

    // Body: JSON only with a JSON content type; otherwise legacy form fields.
    let ctype = req.header("content-type").unwrap_or("").to_ascii_lowercase();
    let payload = if ctype.contains("application/json") {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(v) if !v.is_null() => Payload::Json(v),
            _ => return done(error(400, "Request body doesn't contain valid json!")),
        }
    } else if ctype.contains("application/x-www-form-urlencoded") {
        Payload::Form(parse_query(&String::from_utf8_lossy(&req.body)))
    } else {
        Payload::None
    };
    let Some((items, attr)) = payload.split(action) else {
        return done(error(200, "Cannot find attributes in post data"));
    };
    if req.method != "POST" {
        return done(error(405, "only POST method is allowed"));
    }
    if action == "search" {
        // The DataTables search protocol is not emulated.
        return done(error(404, "route not found"));
    }
    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    let outcome = match (action, category, object) {
        ("add", "domain", "") => st.add_domain(&attr, now),
        ("add", "mailbox", "") => st.add_mailbox(&attr, now),
        ("add", "mailbox", "template") => st.add_mailbox_template(&attr),
        ("add", "alias", "") => st.add_aliases(&attr, now),
        ("edit", "mailbox", "") => no_items_or(&items, |i| st.edit_mailboxes(i, &attr, now)),
        ("edit", "tls_policy", _) => no_items_or(&items, |i| st.edit_tls_policy(i, &attr, now)),
        ("edit", "alias", "") => no_items_or(&items, |i| st.edit_aliases(i, &attr, now)),
        ("edit", "passwordpolicy", _) => st.edit_password_policy(&attr),
        ("edit", "user-acl", _) => no_items_or(&items, |i| st.edit_user_acl(i, &attr)),
        ("edit", "rl-mbox", _) => no_items_or(&items, |i| st.edit_ratelimit(i, &attr)),
        ("edit", "rename-mbox", _) => st.rename_mailbox(&attr, &items, now),
        ("delete", "mailbox", "") => st.delete_mailboxes(&items),
        ("delete", "mailbox", "tag") => st.delete_mailbox_tags(extra, &items),
        ("delete", "alias", "") => st.delete_aliases(&items),
        ("delete", "domain", "") => st.delete_domains(&items),
        ("delete", "app-passwd", "") => st.delete_app_passwords(&items),
        ("delete", "eas_cache", "") => st.delete_eas_cache(&items),
        ("add", "domain-admin", "") => st.add_domain_admin(&attr, now),
        ("edit", "domain-admin", "") => no_items_or(&items, |i| st.edit_domain_admins(i, &attr)),
        ("delete", "domain-admin", "") => st.delete_domain_admins(&items),
        _ => return done(error(404, "route not found")),
    };
    drop(st);
    done(Response::json(200, write_body(outcome, action)))
}

fn no_items_or(items: &[Value], f: impl FnOnce(&[Value]) -> Outcome) -> Outcome {
    if items.is_empty() {
        Outcome {
            entries: Vec::new(),
            ok: true,
        }
    } else {
        f(items)
    }
}

enum Payload {
    Json(Value),
    Form(Vec<(String, String)>),
    None,
}

/// PHP's `(array)` cast: arrays stay, objects become their values, scalars a list of one.
fn as_items(v: Option<Value>) -> Vec<Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(Value::Object(m)) => m.into_iter().map(|(_, v)| v).collect(),
        Some(other) => vec![other],
    }
}

fn as_attr(v: Option<Value>) -> Map<String, Value> {
    match v {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

impl Payload {
    /// (items, attr) for the action, or None for "Cannot find attributes in post data".
    fn split(self, action: &str) -> Option<(Vec<Value>, Map<String, Value>)> {
        match self {
            Payload::None => None,
            Payload::Json(v) => Some(match action {
                "add" => (Vec::new(), as_attr(Some(v))),
                "edit" => {
                    let mut m = as_attr(Some(v));
                    (as_items(m.remove("items")), as_attr(m.remove("attr")))
                }
                _ => (as_items(Some(v)), Map::new()),
            }),
            Payload::Form(fields) => {
                let field = |k: &str| {
                    fields
                        .iter()
                        .find(|(fk, _)| fk == k)
                        .map(|(_, v)| serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.clone())))
                };
                let attr = field("attr");
                let items = field("items");
                match action {
                    "add" => attr.map(|a| (Vec::new(), as_attr(Some(a)))),
                    "edit" if attr.is_some() || items.is_some() => Some((as_items(items), as_attr(attr))),
                    "delete" => items.map(|i| (as_items(Some(i)), Map::new())),
                    _ => None,
                }
            }
        }
    }
}

/// `process_*_return`: the entries, or the generic object when there are none.
fn write_body(o: Outcome, action: &str) -> String {
    let mut out = Out::new(false);
    if o.entries.is_empty() {
        out.begin_obj();
        if o.ok {
            out.kv_str("type", "success");
            out.kv_str("msg", "Task completed");
        } else {
            out.kv_str("type", "error");
            out.kv_str(
                "msg",
                match action {
                    "add" => "Cannot add item",
                    "edit" => "Cannot edit item",
                    _ => "Cannot delete item",
                },
            );
        }
        out.end_obj();
        return out.finish();
    }
    out.begin_arr();
    for e in &o.entries {
        out.begin_obj();
        out.kv_str("type", e.kind);
        out.key("log");
        out.value(&e.log);
        out.key("msg");
        out.value(&e.msg);
        out.end_obj();
    }
    out.end_arr();
    out.finish()
}

/// GET bodies: the rendering, or mailcow's `{}` / `[]` for "nothing".
fn or_empty(body: Option<String>, empty: &str) -> Response {
    Response::json(200, body.unwrap_or_else(|| empty.to_string()))
}

fn get(st: &State, category: &str, object: &str, extra: &str, tags: Option<&[String]>) -> Handled {
    match category {
        "domain" => {
            if object == "all" {
                // Domain tags are not modelled, so a tag filter matches nothing.
                let mut out = Out::new(true);
                let mut n = 0;
                out.begin_arr();
                if tags.is_none() {
                    for d in st.domains.values() {
                        render::domain(&mut out, st, d);
                        n += 1;
                    }
                }
                out.end_arr();
                done(or_empty((n > 0).then(|| out.finish()), "{}"))
            } else {
                let body = st.domains.get(&object.to_ascii_lowercase()).map(|d| {
                    let mut out = Out::new(true);
                    render::domain(&mut out, st, d);
                    out.finish()
                });
                done(or_empty(body, "{}"))
            }
        }
        "mailbox" => match object {
            "all" | "reduced" => {
                let full = object == "all";
                let list = mailbox_list(st, extra, tags);
                let n = list.len();
                let body = (n > 0).then(|| render_mailboxes(st, &list, full));
                Handled {
                    resp: or_empty(body, "{}"),
                    listed: n,
                    full_objects: full,
                }
            }
            // `get/mailbox/template/all` or `/{id}` (json_api.php 991–999): `{}` for none.
            "template" => {
                let list: Vec<&Template> = match extra {
                    "all" => st.templates.values().collect(),
                    id => st.templates.get(&(intval_str(id).max(0) as u64)).into_iter().collect(),
                };
                let body = (!list.is_empty()).then(|| render::templates(&list, extra == "all"));
                done(or_empty(body, "{}"))
            }
            _ => match tags {
                // get/mailbox/{domain}?tags=… lists; an empty result is `[]` here.
                Some(t) => {
                    let list = mailboxes_of(st, object, Some(t));
                    let n = list.len();
                    let body = (n > 0).then(|| render_mailboxes(st, &list, true));
                    Handled {
                        resp: or_empty(body, "[]"),
                        listed: n,
                        full_objects: true,
                    }
                }
                None => {
                    let body = st.mailbox(object).map(|mb| {
                        let mut out = Out::new(true);
                        render::mailbox(&mut out, st, mb, true);
                        out.finish()
                    });
                    done(or_empty(body, "{}"))
                }
            },
        },
        "alias" => {
            if object == "all" {
                let domains: Vec<String> = if extra.is_empty() {
                    st.domains.keys().cloned().collect()
                } else {
                    extra.split(',').map(|d| d.to_ascii_lowercase()).collect()
                };
                let mut out = Out::new(true);
                let mut n = 0;
                out.begin_arr();
                for d in &domains {
                    for a in st.aliases.values().filter(|a| &a.domain == d) {
                        render::alias(&mut out, a);
                        n += 1;
                    }
                }
                out.end_arr();
                done(or_empty((n > 0).then(|| out.finish()), "{}"))
            } else {
                let body = st.find_alias(&Value::String(object.to_string())).map(|id| {
                    let mut out = Out::new(true);
                    render::alias(&mut out, &st.aliases[&id]);
                    out.finish()
                });
                done(or_empty(body, "{}"))
            }
        }
        // `get/app-passwd/all/{mailbox}`: the rows, or `{}` for none.
        "app-passwd" if object == "all" => {
            let rows = st.app_passwords_of(extra);
            let body = (!rows.is_empty()).then(|| {
                let mut out = Out::new(true);
                out.begin_arr();
                for a in rows {
                    render::app_password(&mut out, a);
                }
                out.end_arr();
                out.finish()
            });
            done(or_empty(body, "{}"))
        }
        // `domain_admin('details')` of each listed one (superadmins excluded), or `{}`.
        "domain-admin" if object == "all" => {
            let list: Vec<Value> = st
                .domain_admins
                .iter()
                .filter(|(_, a)| !a.domains.is_empty())
                .map(|(name, a)| render::domain_admin(st, name, a))
                .collect();
            let body = (!list.is_empty()).then(|| serde_json::to_string_pretty(&list).unwrap_or_default());
            done(or_empty(body, "{}"))
        }
        // json_api.php: `process_get_return($iam_settings)` for an admin session (an API key).
        "identity-provider" => {
            let body = serde_json::to_string_pretty(&Value::Object(st.identity_provider())).unwrap_or_default();
            done(Response::json(200, body))
        }
        "passwordpolicy" => {
            let p = &st.policy;
            let mut out = Out::new(true);
            out.begin_obj();
            out.kv_str("length", &p.length.to_string());
            out.kv_str("chars", &p.chars.to_string());
            out.kv_str("special_chars", &p.special_chars.to_string());
            out.kv_str("lowerupper", &p.lowerupper.to_string());
            out.kv_str("numbers", &p.numbers.to_string());
            out.end_obj();
            done(Response::json(200, out.finish()))
        }
        _ => done(error(404, "route not found")),
    }
}

fn render_mailboxes(st: &State, list: &[&Mailbox], full: bool) -> String {
    let mut out = Out::with_capacity(true, list.len() * render::MAILBOX_JSON_SIZE + 16);
    out.begin_arr();
    for mb in list {
        render::mailbox(&mut out, st, mb, full);
    }
    out.end_arr();
    out.finish()
}

/// `all[/{d1,d2}]`: per listed (or every) domain, skipping invalid names; a domain
/// that fails the access check contributes every mailbox (API.md 4.2 DANGER).
fn mailbox_list<'a>(st: &'a State, extra: &str, tags: Option<&[String]>) -> Vec<&'a Mailbox> {
    let domains: Vec<String> = if extra.is_empty() {
        st.domains.keys().cloned().collect()
    } else {
        extra.split(',').map(str::to_string).collect()
    };
    let mut res = Vec::new();
    for d in domains {
        if valid_domain_name(&d) {
            res.extend(mailboxes_of(st, &d, tags));
        }
    }
    res
}

/// `mailbox('get','mailboxes', $domain, $tags)`.
fn mailboxes_of<'a>(st: &'a State, domain: &str, tags: Option<&[String]>) -> Vec<&'a Mailbox> {
    let known = st.domains.get(&domain.to_ascii_lowercase());
    let tag_ok = |mb: &Mailbox| match tags {
        None => true,
        // `tag_name LIKE %tag%`, case-insensitive.
        Some(t) => mb.tags.iter().any(|have| {
            let have = have.to_ascii_lowercase();
            t.iter().any(|want| have.contains(&want.to_ascii_lowercase()))
        }),
    };
    match (known, tags) {
        (Some(d), None) => d.members.iter().filter_map(|k| st.mailboxes.get(k)).collect(),
        (Some(_), Some(_)) => {
            // The tag query matches usernames with `LIKE %domain%` (substring).
            let needle = domain.to_ascii_lowercase();
            st.mailboxes
                .iter()
                .filter(|(k, mb)| k.contains(&needle) && tag_ok(mb))
                .map(|(_, mb)| mb)
                .collect()
        }
        // [assumed for the tag variant] the failed access check drops the domain filter.
        (None, _) => st.mailboxes.values().filter(|mb| tag_ok(mb)).collect(),
    }
}
