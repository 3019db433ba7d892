//! JSON renderings of domains, mailboxes and aliases, field for field and in the key
//! order of the real server (API.md sections 3, 4.1, 4.2 and 4.7; transcript lines
//! 33, 50, 93 and 157). Types follow PHP 8.2 + mysqlnd: DB integers are JSON numbers,
//! `attributes` flags and SUM() values are strings.

use super::json::Out;
use super::php::datetime;
use super::state::{Alias, AppPassword, Domain, MIB, Mailbox, State, Template};

/// Roughly what one pretty-printed full mailbox object takes, to size buffers.
pub(crate) const MAILBOX_JSON_SIZE: usize = 1800;

pub(crate) fn mailbox(out: &mut Out, st: &State, mb: &Mailbox, full: bool) {
    out.begin_obj();
    out.kv_str("username", &mb.username);
    out.kv_int("active", mb.active);
    out.kv_int("active_int", mb.active);
    out.kv_str("domain", &mb.domain);
    out.kv_str("name", &mb.name);
    out.kv_str("local_part", &mb.local_part);
    out.kv_int("quota", mb.quota);
    out.kv_int("messages", 0);
    out.key("attributes");
    out.begin_obj();
    let f = &mb.flags;
    for (k, v) in [
        ("force_pw_update", f.force_pw_update),
        ("force_tfa", f.force_tfa),
        ("tls_enforce_in", f.tls_in),
        ("tls_enforce_out", f.tls_out),
        ("sogo_access", f.sogo),
        ("imap_access", f.imap),
        ("pop3_access", f.pop3),
        ("smtp_access", f.smtp),
        ("sieve_access", f.sieve),
        ("eas_access", f.eas),
        ("dav_access", f.dav),
    ] {
        out.kv_str(k, &v.to_string());
    }
    out.kv_str("relayhost", &mb.relayhost);
    out.kv_str("passwd_update", &datetime(mb.passwd_update));
    out.kv_str("mailbox_format", "maildir:");
    out.kv_str("quarantine_notification", &mb.quarantine_notification);
    out.kv_str("quarantine_category", &mb.quarantine_category);
    out.kv_str("attribute_hash", &mb.attribute_hash);
    if let Some(r) = &mb.recovery_email {
        out.key("recovery_email");
        out.opt_str(r.as_deref());
    }
    out.end_obj();
    out.key("custom_attributes");
    out.begin_arr();
    out.end_arr();
    out.kv_int("quota_used", 0);
    out.key("percent_in_use");
    if mb.quota == 0 {
        out.str("- ");
    } else {
        out.int(0);
    }
    out.kv_str("created", &datetime(mb.created));
    out.kv_str("modified", &datetime(mb.modified));
    out.kv_str("authsource", &mb.authsource);
    out.kv_str("percent_class", if mb.quota == 0 { "info" } else { "success" });
    for k in [
        "last_imap_login",
        "last_smtp_login",
        "last_pop3_login",
        "last_sso_login",
    ] {
        out.kv_int(k, 0);
    }
    if full {
        out.kv_int("max_new_quota", st.max_new_quota(mb));
        out.kv_int("spam_aliases", 0);
        out.kv_int("pushover_active", 0);
        out.key("rl");
        match &mb.rl {
            // `ratelimit('get', 'mailbox')`: the mailbox's own limit, else the domain's.
            Some((value, frame)) => {
                out.begin_obj();
                out.kv_str("value", &value.to_string());
                out.kv_str("frame", frame);
                out.end_obj();
                out.kv_str("rl_scope", "mailbox");
            }
            None => {
                out.bool(false);
                out.kv_str("rl_scope", "domain");
            }
        }
        out.kv_int("is_relayed", 0);
        if !st.sender_acl_hidden {
            out.key("sender_acl");
            out.begin_arr();
            for v in st.sender_acl_of(&mb.username) {
                out.str(&v);
            }
            out.end_arr();
        }
    }
    if !mb.tags.is_empty() {
        out.key("tags");
        out.begin_arr();
        for t in &mb.tags {
            out.str(t);
        }
        out.end_arr();
    }
    out.end_obj();
}

pub(crate) fn domain(out: &mut Out, st: &State, d: &Domain) {
    let count = d.members.len() as i64;
    let max_new = (d.quota_mib * MIB - d.quota_sum).min(d.maxquota_mib * MIB);
    let aliases = st.aliases_in_domain(&d.name);
    out.begin_obj();
    out.kv_int("max_new_mailbox_quota", max_new);
    out.kv_int("def_new_mailbox_quota", (d.defquota_mib * MIB).min(max_new));
    out.kv_str("quota_used_in_domain", &d.quota_sum.to_string());
    out.kv_int("bytes_total", 0);
    out.kv_int("msgs_total", 0);
    out.kv_int("mboxes_in_domain", count);
    out.kv_int("mboxes_left", d.mailboxes_max - count);
    out.kv_str("domain_name", &d.name);
    out.kv_str("domain_h_name", &d.name);
    out.kv_str("description", &d.description);
    out.kv_int("max_num_aliases_for_domain", d.aliases_max);
    out.kv_int("max_num_mboxes_for_domain", d.mailboxes_max);
    out.kv_int("def_quota_for_mbox", d.defquota_mib * MIB);
    out.kv_int("max_quota_for_mbox", d.maxquota_mib * MIB);
    out.kv_int("max_quota_for_domain", d.quota_mib * MIB);
    out.kv_str("relayhost", "0");
    out.kv_int("backupmx", d.backupmx);
    out.kv_int("backupmx_int", d.backupmx);
    out.kv_int("gal", d.gal);
    out.kv_int("gal_int", d.gal);
    out.key("rl");
    out.bool(false);
    out.kv_int("active", d.active);
    out.kv_int("active_int", d.active);
    out.kv_int("relay_all_recipients", d.relay_all_recipients);
    out.kv_int("relay_all_recipients_int", d.relay_all_recipients);
    out.kv_int("relay_unknown_only", d.relay_unknown_only);
    out.kv_int("relay_unknown_only_int", d.relay_unknown_only);
    out.kv_str("created", &datetime(d.created));
    out.key("modified");
    out.null();
    out.kv_int("aliases_in_domain", aliases);
    out.kv_int("aliases_left", d.aliases_max - aliases);
    out.kv_str("domain_admins", "-");
    out.end_obj();
}

pub(crate) fn alias(out: &mut Out, a: &Alias) {
    out.begin_obj();
    out.kv_str("in_primary_domain", "");
    out.kv_int("id", a.id as i64);
    out.kv_str("domain", &a.domain);
    out.key("public_comment");
    out.opt_str(a.public_comment.as_deref());
    out.key("private_comment");
    out.opt_str(a.private_comment.as_deref());
    out.kv_str("goto", &a.goto);
    out.kv_str("address", &a.address);
    out.kv_int("is_catch_all", i64::from(a.address.starts_with('@')));
    out.kv_int("internal", a.internal);
    out.kv_int("active", a.active);
    out.kv_int("active_int", a.active);
    out.kv_int("sogo_visible", a.sogo_visible);
    out.kv_int("sogo_visible_int", a.sogo_visible);
    out.kv_int("sender_allowed", a.sender_allowed);
    out.kv_str("created", &datetime(a.created));
    out.key("modified");
    match a.modified {
        Some(m) => out.str(&datetime(m)),
        None => out.null(),
    }
    out.end_obj();
}

/// An `app_passwd` row as `app_passwd('details')` returns it: `SELECT *` in column order,
/// the name HTML-escaped, the stored hash included (docs/mailcow-api-offboarding.md).
pub(crate) fn app_password(out: &mut Out, a: &AppPassword) {
    out.begin_obj();
    out.kv_int("id", a.id as i64);
    out.kv_str("name", &html_escape(a.name.trim()));
    out.kv_str("mailbox", &a.mailbox);
    out.kv_str("domain", &a.domain);
    out.kv_str("password", &a.password);
    out.kv_str("created", &datetime(a.created));
    out.key("modified");
    out.null();
    for k in [
        "imap_access",
        "smtp_access",
        "dav_access",
        "eas_access",
        "pop3_access",
        "sieve_access",
        "active",
    ] {
        out.kv_int(k, 1);
    }
    out.end_obj();
}

/// PHP's `htmlspecialchars` with its defaults.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#039;")
}

/// Mailbox templates as `get/mailbox/template/…` prints them: an array for `all`, one object
/// for an id (mailbox.inc 5347–5383, attributes JSON-decoded).
pub(crate) fn templates(list: &[&Template], all: bool) -> String {
    let rows: Vec<serde_json::Value> = list
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id,
                "template": t.name,
                "type": "mailbox",
                "attributes": t.attributes,
                "created": "2026-01-01 00:00:00",
                "modified": null,
            })
        })
        .collect();
    let value = if all {
        serde_json::Value::Array(rows)
    } else {
        rows.into_iter().next().unwrap_or_default()
    };
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// One `domain_admin('details')` object (functions.domain_admin.inc.php): the strings and
/// ints MySQL gives, `selected_domains` (absent when none), `unselected_domains` (`""`
/// when none).
pub(crate) fn domain_admin(st: &State, username: &str, a: &super::state::DomainAdmin) -> serde_json::Value {
    let unselected: Vec<&String> = st.domains.keys().filter(|d| !a.domains.contains(*d)).collect();
    let mut v = serde_json::json!({
        "username": username,
        "tfa_active": 0,
        "tfa_active_int": 0,
        "active": a.active,
        "active_int": a.active,
        "created": datetime(a.created),
        "attributes": {"force_tfa": "0", "force_pw_update": "0"},
        "selected_domains": a.domains,
    });
    v["unselected_domains"] = if unselected.is_empty() {
        serde_json::json!("")
    } else {
        serde_json::json!(unselected)
    };
    v
}
