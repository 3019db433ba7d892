//! The mailcow HTTP client: one ureq agent and every call this tool makes. It sends and
//! checks what every answer must pass (reachable, key accepted, HTTP 200); reading the
//! body is `wire`'s. A 401 counts towards fail2ban's ban, so it is never retried.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::wire::{self, Entry};
use super::{AliasResult, ItemResult, MailcowApi};
use crate::config::MailcowConfig;
use crate::core::access::MailboxTemplate;
use crate::core::model::{Domain, Mailbox, Mailboxes, MailcowAlias, ManagedRows};
use crate::error::{Error, Result};

/// A connected mailcow API client.
pub struct HttpMailcow {
    agent: ureq::Agent,
    base_url: String,
    api_key: String,
}

impl fmt::Debug for HttpMailcow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpMailcow")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// mailcow's addresses, looked up once a pass. ureq (3.5) looks the host up again for
/// every request, each time on a thread of its own when a timeout is set
/// (`resolver::resolve_async`): 2,000 threads and lookups for an incremental pass with
/// 1,000 changes.
#[derive(Debug, Default)]
struct ResolveOnce {
    found: std::sync::Mutex<Option<(String, ureq::unversioned::resolver::ResolvedSocketAddrs)>>,
}

impl ureq::unversioned::resolver::Resolver for ResolveOnce {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> std::result::Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let key = format!("{:?} {:?}", uri.scheme(), uri.authority());
        // Held while the first lookup runs: the other workers need its answer too.
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, addrs)) = found.as_ref().filter(|(k, _)| *k == key) {
            return Ok(addrs.clone());
        }
        let addrs = ureq::unversioned::resolver::DefaultResolver::default().resolve(uri, config, timeout)?;
        *found = Some((key, addrs.clone()));
        Ok(addrs)
    }
}

impl HttpMailcow {
    /// Build the one agent of the pass: timeouts, a User-Agent, the CA or no verification,
    /// and no cookie jar (a session cookie would stay logged in as admin for 3 h: API.md 10.22).
    pub fn new(config: &MailcowConfig, timeout: Duration) -> Result<HttpMailcow> {
        let mut tls = ureq::tls::TlsConfig::builder()
            .unversioned_rustls_crypto_provider(crate::edge::tls::provider())
            .disable_verification(!config.verify_tls);
        if let Some(ca_file) = &config.ca_file {
            let pem = std::fs::read(ca_file).map_err(|e| Error::io(ca_file, "read mailcow_ca_file", e))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(Error::config(
                            ca_file,
                            Some("mailcow_ca_file"),
                            format!("not a valid PEM file: {e}"),
                        ));
                    }
                }
            }
            if certs.is_empty() {
                return Err(Error::config(ca_file, Some("mailcow_ca_file"), "holds no certificate"));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("mailcow-ldap-sync/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build();
        let agent = ureq::Agent::with_parts(
            agent,
            ureq::unversioned::transport::DefaultConnector::default(),
            ResolveOnce::default(),
        );
        Ok(HttpMailcow {
            agent,
            base_url: config.base_url.clone(),
            api_key: config.api_key.expose().to_owned(),
        })
    }

    fn url(&self, endpoint: &str) -> String {
        format!("{}/api/v1/{endpoint}", self.base_url)
    }

    /// Send a request and check what every answer must pass: reachable, key accepted,
    /// HTTP 200, a non-empty body. Returns the response for the caller to parse.
    fn send(&self, endpoint: &str, body: Option<&Value>) -> Result<ureq::http::Response<ureq::Body>> {
        let url = self.url(endpoint);
        let result = match body {
            None => self
                .agent
                .get(&url)
                .header("X-API-Key", &self.api_key)
                .header("Accept", "application/json")
                .call(),
            Some(body) => self
                .agent
                .post(&url)
                .header("X-API-Key", &self.api_key)
                .header("Accept", "application/json")
                .send_json(body),
        };
        let mut response = result.map_err(|e| Error::Mailcow {
            endpoint: endpoint.to_owned(),
            message: transport_message(&e),
        })?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(response);
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("msg").map(wire::render_msg))
            .unwrap_or_else(|| wire::snippet(&text));
        let err = match status {
            401 => Error::MailcowAuth {
                endpoint: endpoint.to_owned(),
                message: format!("HTTP 401, API key rejected ({detail})"),
            },
            403 => Error::MailcowAuth {
                endpoint: endpoint.to_owned(),
                message: format!("HTTP 403, access denied ({detail}); the API key must be a read-write key"),
            },
            _ => Error::Mailcow {
                endpoint: endpoint.to_owned(),
                message: format!("HTTP {status} ({detail})"),
            },
        };
        Err(err)
    }

    /// Read a write call's answer: a JSON array of entries, or one object.
    fn send_write(&self, endpoint: &str, body: &Value) -> Result<Vec<Entry>> {
        let mut response = self.send(endpoint, Some(body))?;
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| Error::Mailcow {
                endpoint: endpoint.to_owned(),
                message: format!("reading the answer failed: {}", transport_message(&e)),
            })?;
        wire::parse_entries(&text).map_err(|message| Error::Mailcow {
            endpoint: endpoint.to_owned(),
            message,
        })
    }
}

/// The calls of a pass and of `check`, as the HTTP API makes them.
impl MailcowApi for HttpMailcow {
    /// One `get/mailbox/reduced` (it carries every field this tool compares).
    fn mailboxes(&self, tag: Option<&str>, state: Arc<ManagedRows>) -> Result<Mailboxes> {
        let endpoint = "get/mailbox/reduced";
        let mut response = self.send(endpoint, None)?;
        wire::parse_mailboxes(endpoint, response.body_mut().as_reader(), tag, state)
    }

    fn mailbox(&self, address: &str, tag: Option<&str>) -> Result<Option<Mailbox>> {
        let endpoint = format!("get/mailbox/{address}");
        let mut response = self.send(&endpoint, None)?;
        wire::parse_one_mailbox(&endpoint, response.body_mut().as_reader(), address, tag)
    }

    /// One `get/domain/all`.
    fn domains(&self) -> Result<Vec<Domain>> {
        let endpoint = "get/domain/all";
        let mut response = self.send(endpoint, None)?;
        wire::parse_domain_list(endpoint, response.body_mut().as_reader())
    }

    /// One `get/alias/all`.
    fn aliases(&self) -> Result<Vec<MailcowAlias>> {
        let endpoint = "get/alias/all";
        let mut response = self.send(endpoint, None)?;
        wire::parse_alias_list(endpoint, response.body_mut().as_reader())
    }

    fn templates(&self) -> Result<Vec<MailboxTemplate>> {
        let endpoint = "get/mailbox/template/all";
        let mut response = self.send(endpoint, None)?;
        wire::parse_template_list(endpoint, response.body_mut().as_reader())
    }

    /// `attr.user_acl`, not `acl` (functions.acl.inc.php 19).
    fn edit_user_acl(&self, items: &[String], acl: &[String]) -> Result<BTreeMap<String, ItemResult>> {
        let body = serde_json::json!({ "items": items, "attr": { "user_acl": acl } });
        let entries = self.send_write("edit/user-acl", &body)?;
        Ok(wire::match_items(items, &entries, "acl_saved"))
    }

    fn edit_ratelimit(&self, items: &[String], value: u64, frame: &str) -> Result<BTreeMap<String, ItemResult>> {
        let body = serde_json::json!({ "items": items, "attr": { "rl_value": value, "rl_frame": frame } });
        let entries = self.send_write("edit/rl-mbox", &body)?;
        Ok(wire::match_items(items, &entries, "rl_saved"))
    }

    /// One `get/identity-provider`; the body is read here and parsed without being kept or
    /// logged (it holds the IdP's bind password).
    fn identity_provider(&self) -> Result<Option<crate::core::model::IdentityProvider>> {
        let endpoint = "get/identity-provider";
        let mut response = self.send(endpoint, None)?;
        let text = response
            .body_mut()
            .with_config()
            .limit(1024 * 1024)
            .read_to_string()
            .map_err(|e| Error::Mailcow {
                endpoint: endpoint.to_owned(),
                message: format!("reading the answer failed: {}", transport_message(&e)),
            })?;
        wire::parse_identity_provider(endpoint, &text)
    }

    /// One `get/domain-admin/all`.
    fn domain_admins(&self) -> Result<Vec<crate::core::admins::MailcowAdmin>> {
        let endpoint = "get/domain-admin/all";
        let mut response = self.send(endpoint, None)?;
        wire::parse_domain_admins(endpoint, response.body_mut().as_reader())
    }

    fn add_domain_admin(&self, attrs: &Value) -> Result<ItemResult> {
        let entries = self.send_write("add/domain-admin", attrs)?;
        Ok(wire::admin_confirmed(
            attrs["username"].as_str().unwrap_or_default(),
            "domain_admin_added",
            &entries,
        ))
    }

    fn edit_domain_admin(&self, username: &str, domains: &[String]) -> Result<ItemResult> {
        let body = serde_json::json!({ "items": [username], "attr": { "domains": domains } });
        let entries = self.send_write("edit/domain-admin", &body)?;
        Ok(wire::admin_confirmed(username, "domain_admin_modified", &entries))
    }

    fn delete_domain_admins(&self, usernames: &[String]) -> Result<BTreeMap<String, ItemResult>> {
        let entries = self.send_write("delete/domain-admin", &serde_json::json!(usernames))?;
        Ok(wire::admins_removed(usernames, &entries))
    }

    fn add_domain(&self, attrs: &Value) -> Result<ItemResult> {
        let entries = self.send_write("add/domain", attrs)?;
        Ok(wire::domain_added(
            attrs["domain"].as_str().unwrap_or_default(),
            &entries,
        ))
    }

    fn add_mailbox(&self, attrs: &Value) -> Result<ItemResult> {
        let entries = self.send_write("add/mailbox", attrs)?;
        Ok(wire::mailbox_added(&entries))
    }

    fn edit_mailbox(&self, items: &[String], attr: &Value) -> Result<BTreeMap<String, ItemResult>> {
        let body = serde_json::json!({ "items": items, "attr": attr });
        let entries = self.send_write("edit/mailbox", &body)?;
        Ok(wire::match_items(items, &entries, "mailbox_modified"))
    }

    fn rename_mailbox(&self, old: &str, new: &str) -> Result<ItemResult> {
        let (old_local, domain) = old.rsplit_once('@').unwrap_or((old, ""));
        let new_local = new.rsplit_once('@').map_or(new, |(local, _)| local);
        // `items` is not read by mailcow for this call; one mailbox per call.
        let body = serde_json::json!({ "attr": {
            "domain": domain, "old_local_part": old_local, "new_local_part": new_local, "create_alias": 1,
        } });
        let entries = self.send_write("edit/rename-mbox", &body)?;
        Ok(wire::mailbox_renamed(&entries))
    }

    fn edit_tls_policy(&self, items: &[String], tls_in: bool, tls_out: bool) -> Result<BTreeMap<String, ItemResult>> {
        let body = serde_json::json!({ "items": items, "attr": { "tls_enforce_in": u8::from(tls_in), "tls_enforce_out": u8::from(tls_out) } });
        let entries = self.send_write("edit/tls_policy", &body)?;
        Ok(wire::match_items(items, &entries, "mailbox_modified"))
    }

    /// A bare array (an `{"items":…}` object would fail: API.md 4.5).
    fn delete_mailboxes(&self, items: &[String]) -> Result<BTreeMap<String, ItemResult>> {
        let body = Value::from(items.to_vec());
        let entries = self.send_write("delete/mailbox", &body)?;
        Ok(wire::match_items(items, &entries, "mailbox_removed"))
    }

    fn add_aliases(
        &self,
        addresses: &[String],
        goto: &str,
        sender_allowed: bool,
    ) -> Result<BTreeMap<String, AliasResult>> {
        let body = serde_json::json!({
            "address": addresses.join(","),
            "goto": goto,
            "active": 1,
            "sogo_visible": 1,
            "sender_allowed": u8::from(sender_allowed),
        });
        let entries = self.send_write("add/alias", &body)?;
        Ok(wire::aliases_added(addresses, &entries))
    }

    fn edit_alias(&self, id: u64, address: &str, goto: &str) -> Result<ItemResult> {
        let body = serde_json::json!({ "items": [id], "attr": { "goto": goto } });
        let entries = self.send_write("edit/alias", &body)?;
        let mut r = wire::match_items(&[address.to_owned()], &entries, "alias_modified");
        Ok(r.remove(&address.to_ascii_lowercase())
            .unwrap_or_else(|| Err("no result".into())))
    }

    fn sender_acl(&self, address: &str) -> Result<Option<Option<Vec<String>>>> {
        let endpoint = format!("get/mailbox/{address}");
        let mut response = self.send(&endpoint, None)?;
        wire::parse_sender_acl(&endpoint, response.body_mut().as_reader(), address)
    }

    fn edit_sender_acl(&self, mailbox: &str, list: &[String]) -> Result<std::result::Result<Vec<String>, String>> {
        let reset = ["default".to_owned()];
        let list = if list.is_empty() { &reset[..] } else { list };
        let body = serde_json::json!({ "items": [mailbox], "attr": { "sender_acl": list } });
        let entries = self.send_write("edit/mailbox", &body)?;
        Ok(wire::sender_acl_result(mailbox, &entries))
    }

    /// A bare array of ids (address lookups collide: API.md 4.7).
    fn delete_aliases(&self, ids: &[u64], addresses: &[String]) -> Result<BTreeMap<String, ItemResult>> {
        let body = Value::from(ids.to_vec());
        let entries = self.send_write("delete/alias", &body)?;
        Ok(wire::match_items(addresses, &entries, "alias_removed"))
    }

    /// The address in the path encoded twice: nginx decodes it once and PHP's query parsing
    /// again (`+` would become a space: API.md 1).
    fn app_passwords(&self, mailbox: &str) -> Result<super::AppPasswordsResult> {
        let endpoint = format!("get/app-passwd/all/{}", path_segment(mailbox));
        let mut response = self.send(&endpoint, None)?;
        wire::parse_app_passwords("get/app-passwd/all", response.body_mut().as_reader(), mailbox)
    }

    /// A bare array of ids.
    fn delete_app_passwords(&self, ids: &[u64]) -> Result<ItemResult> {
        let entries = self.send_write("delete/app-passwd", &Value::from(ids.to_vec()))?;
        Ok(wire::app_passwords_removed(ids, &entries))
    }

    fn reset_eas_cache(&self, mailbox: &str) -> Result<ItemResult> {
        let entries = self.send_write("delete/eas_cache", &serde_json::json!([mailbox]))?;
        Ok(wire::eas_reset(&entries))
    }

    /// An `edit/mailbox` of no items.
    fn check_write_access(&self) -> Result<()> {
        let body = serde_json::json!({ "items": [], "attr": {} });
        let entries = self.send_write("edit/mailbox", &body)?;
        match entries.iter().find(|e| e.kind == "danger" || e.kind == "error") {
            Some(e) => Err(Error::Mailcow {
                endpoint: "edit/mailbox".into(),
                message: format!("write check failed: {}", e.message()),
            }),
            None => Ok(()),
        }
    }
}

/// A path segment that reaches PHP as `text`: every byte but `A-Z a-z 0-9 @ . _ -` is
/// percent-encoded twice (`+` → `%252B`), since nginx and then PHP's query parsing decode it.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%25{b:02X}"));
        }
    }
    out
}

fn transport_message(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("no answer in time ({t}); mailcow is slow or unreachable"),
        ureq::Error::Io(io) if io.to_string().contains("certificate") => {
            format!(
                "TLS certificate not accepted ({io}); set mailcow_ca_file to the CA that signed mailcow's certificate, or use --do-not-verify"
            )
        }
        ureq::Error::Io(io) => format!("connection failed: {io}"),
        ureq::Error::HostNotFound => "host not found (check mailcow_host)".into(),
        ureq::Error::ConnectionFailed => "connection failed (check mailcow_host and the port)".into(),
        ureq::Error::Tls(t) => format!("TLS failed: {t} (set mailcow_ca_file, or --do-not-verify)"),
        ureq::Error::Rustls(t) => format!("TLS failed: {t} (set mailcow_ca_file, or --do-not-verify)"),
        other => other.to_string(),
    }
}
