//! What a pass tells the admin: the summary line, the `-v` lines and the `--json` report.
//!
//! All three are read off the same plan and the same outcomes, so they cannot disagree. A
//! pass holds its plan one chunk at a time, so everything here takes the plan in parts: the
//! counts and the lines are added up part by part as the pass goes, and the JSON report is
//! written at the end from the parts made again (the plan is pure: the same inputs give the
//! same parts) with the outcomes the pass kept, one byte an action.
//! Secrets never reach here: password actions are reported as "changed", without values.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io::{self, Write};

use serde_json::{Value, json};

use crate::apply::{AliasOutcome, ItemOutcome};
use crate::core::aliases::{AliasActionKind, AliasPlan};
use crate::core::directory::Directory;
pub use crate::core::model::Counts;
use crate::core::plan::{Action, ActionKind, Plan};

/// Version of the `--json` report's schema (README: "JSON report").
pub const REPORT_SCHEMA: u32 = 1;

/// One part of the plan (a chunk of users, or the removals) with what happened to each of
/// its actions: `None` while only planned (a dry-run, a refused pass).
#[derive(Clone, Copy)]
pub struct Part<'a> {
    pub plan: &'a Plan,
    pub outcomes: Option<&'a [ItemOutcome]>,
}

/// The alias plan with what happened to each action (`None` = planned only).
#[derive(Clone, Copy)]
pub struct AliasPart<'a> {
    pub plan: &'a AliasPlan,
    pub outcomes: Option<&'a [AliasOutcome]>,
}

fn status(outcome: Option<&ItemOutcome>) -> (&'static str, Option<&str>) {
    match outcome {
        None => ("planned", None),
        Some(ItemOutcome::NotAttempted) => ("not_attempted", None),
        Some(ItemOutcome::Applied) => ("applied", None),
        Some(ItemOutcome::Failed(e)) => ("failed", Some(e)),
    }
}

fn alias_status(outcome: Option<&AliasOutcome>) -> (&'static str, Option<&str>) {
    match outcome {
        None => ("planned", None),
        Some(AliasOutcome::NotAttempted) => ("not_attempted", None),
        Some(AliasOutcome::Applied(_)) => ("applied", None),
        Some(AliasOutcome::Failed(e)) => ("failed", Some(e)),
    }
}

impl Part<'_> {
    fn outcome(&self, i: usize) -> Option<&ItemOutcome> {
        self.outcomes.map(|o| &o[i])
    }

    /// Add this part to the counts: per mailbox, so a mailbox with a name change and a
    /// password change is one update, and a failed mailbox is one failure.
    pub fn count(&self, c: &mut Counts) {
        c.unchanged += self.plan.unchanged;
        c.skipped += self.plan.skipped.len();
        let mut updated = BTreeSet::new();
        let mut failed: BTreeSet<&str> = self.plan.failures.iter().map(|f| f.address.as_str()).collect();
        for (i, action) in self.plan.actions.iter().enumerate() {
            match self.outcome(i) {
                None | Some(ItemOutcome::Applied) => {}
                Some(ItemOutcome::Failed(_)) => {
                    failed.insert(&action.address);
                    continue;
                }
                Some(ItemOutcome::NotAttempted) => continue,
            }
            match &action.kind {
                ActionKind::Create { .. } => c.created += 1,
                ActionKind::Update { .. }
                | ActionKind::Template { .. }
                | ActionKind::Password { .. }
                | ActionKind::Tls { .. }
                | ActionKind::Rename { .. } => {
                    updated.insert(&action.address);
                }
                ActionKind::Deactivate { .. } => c.disabled += 1,
                ActionKind::Delete => c.deleted += 1,
                ActionKind::Offboard { .. } => c.offboarded += 1,
                ActionKind::CreateDomain(_) => c.domains_created += 1,
            }
        }
        c.updated += updated.len();
        c.failed += failed.len();
    }

    /// One line per change and failure (for `-v`, and the failure list of `-q`). Skips are
    /// not among them: every pass warns about each one, `-q` or not.
    pub fn item_lines(&self, only_failures: bool) -> Vec<String> {
        let mut lines = Vec::new();
        for f in &self.plan.failures {
            lines.push(format!("failed {}: {}", f.address, f.reason));
        }
        for (i, action) in self.plan.actions.iter().enumerate() {
            let (state, error) = status(self.outcome(i));
            if only_failures && state != "failed" {
                continue;
            }
            let what = describe(action);
            lines.push(match error {
                Some(e) => format!("failed {} {}{what}: {e}", action.kind.verb(), action.address),
                None => format!("{state} {} {}{what}", action.kind.verb(), action.address),
            });
        }
        lines
    }

    /// The `changes` entries of the JSON report.
    fn write_changes(&self, out: &mut JsonList<'_>) -> io::Result<()> {
        for (i, action) in self.plan.actions.iter().enumerate() {
            let (state, error) = status(self.outcome(i));
            let mut v = json!({
                "action": action.kind.verb(),
                "address": action.address,
                "uid": action.uid,
                "fields": fields(action),
                "status": state,
            });
            if let Some(e) = error {
                v["error"] = json!(e);
            }
            out.item(&v)?;
        }
        Ok(())
    }
}

impl AliasPart<'_> {
    fn outcome(&self, i: usize) -> Option<&AliasOutcome> {
        self.outcomes.map(|o| &o[i])
    }

    pub fn count(&self, c: &mut Counts) {
        let mut failed: BTreeSet<&str> = self
            .plan
            .failures
            .iter()
            .chain(&self.plan.grant_failures)
            .map(|f| f.address.as_str())
            .collect();
        for (i, action) in self.plan.actions.iter().enumerate() {
            match alias_status(self.outcome(i)) {
                ("planned" | "applied", _) => match &action.kind {
                    AliasActionKind::Add { .. } => c.aliases_added += 1,
                    AliasActionKind::Edit { .. } => c.aliases_updated += 1,
                    AliasActionKind::Delete { .. } => c.aliases_deleted += 1,
                    AliasActionKind::SendAs { grant, revoke, .. } => {
                        let refused = self.outcome(i).and_then(AliasOutcome::id).unwrap_or(0);
                        c.send_as_granted += grant.len() - (refused.count_ones() as usize).min(grant.len());
                        c.send_as_revoked += revoke.len();
                    }
                },
                ("failed", _) => {
                    failed.insert(&action.address);
                }
                _ => {}
            }
        }
        c.failed += failed.len();
    }

    pub fn item_lines(&self, only_failures: bool) -> Vec<String> {
        let mut lines = Vec::new();
        for f in &self.plan.failures {
            lines.push(format!("failed alias_add {}: {}", f.address, f.reason));
        }
        for f in &self.plan.grant_failures {
            lines.push(format!("failed sender_acl_update {}: {}", f.address, f.reason));
        }
        for (i, a) in self.plan.actions.iter().enumerate() {
            let (state, error) = alias_status(self.outcome(i));
            if only_failures && state != "failed" {
                continue;
            }
            let goto = match &a.kind {
                AliasActionKind::Add { goto, .. } => format!(" → {goto}"),
                AliasActionKind::Edit { old_goto, goto, .. } => format!(" ({old_goto} → {goto})"),
                AliasActionKind::Delete { .. } => String::new(),
                AliasActionKind::SendAs { old, new, .. } => {
                    let list = |l: &[String]| if l.is_empty() { "none".to_owned() } else { l.join(",") };
                    format!(" send-as ({} → {})", list(old), list(new))
                }
            };
            lines.push(match error {
                Some(e) => format!("failed {} {}{goto}: {e}", a.kind.verb(), a.address),
                None => format!("{state} {} {}{goto}", a.kind.verb(), a.address),
            });
        }
        lines
    }

    fn write_changes(&self, out: &mut JsonList<'_>) -> io::Result<()> {
        for (i, a) in self.plan.actions.iter().enumerate() {
            let (state, error) = alias_status(self.outcome(i));
            let fields = match &a.kind {
                AliasActionKind::Add { goto, sender_allowed } => {
                    json!({"goto": {"old": null, "new": goto}, "sender_allowed": sender_allowed})
                }
                AliasActionKind::Edit { old_goto, goto, .. } => json!({"goto": {"old": old_goto, "new": goto}}),
                AliasActionKind::Delete { goto, .. } => json!({"goto": {"old": goto, "new": null}}),
                AliasActionKind::SendAs { old, new, .. } => json!({"sender_acl": {"old": old, "new": new}}),
            };
            let mut v = json!({"action": a.kind.verb(), "address": a.address, "owner": a.owner, "fields": fields, "status": state});
            if let Some(e) = error {
                v["error"] = json!(e);
            }
            out.item(&v)?;
        }
        Ok(())
    }
}

/// The figures of a whole pass, beside its items.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub counts: Counts,
    /// Mailboxes taken over from the original tool's database this pass.
    pub taken_over: usize,
    pub dry_run: bool,
    /// Whether anything was sent (false for a dry-run or a refused pass: writes are planned).
    pub applied: bool,
    /// Whether aliases or groups are synced.
    pub aliases: bool,
    pub started: i64,
    pub finished: i64,
    pub exit_code: u8,
    pub error: Option<String>,
    pub ldap_entries: usize,
    /// The guard's base (managed mailboxes in scope, not disabled).
    pub managed_before: usize,
    /// Bulk reads made (mailboxes, domains, aliases).
    pub reads: usize,
    /// Write requests made (planned, for a dry-run or a refused pass).
    pub writes: usize,
    pub guard: Option<String>,
    /// With `ldap.incremental` on: `"full"` or `"incremental"`, and why.
    pub kind: Option<(&'static str, String)>,
    /// With `domain_admins` on: the planned or applied admin changes and skips, as JSON
    /// (no password: only whether it is the LDAP value or a random one).
    pub domain_admins: Option<serde_json::Value>,
    /// With several sources: each one's name, entries, users, skips and error, as JSON.
    pub sources: Vec<serde_json::Value>,
}

impl Summary {
    /// The one line on stderr.
    pub fn line(&self) -> String {
        let c = &self.counts;
        let verb = if self.dry_run { "dry-run, would be: " } else { "" };
        let writes_word = if self.applied { "writes" } else { "writes planned" };
        let secs = (self.finished - self.started).max(0);
        let aliases = if self.aliases {
            let send_as = if c.send_as_granted + c.send_as_revoked > 0 {
                format!(", send-as {} granted, {} revoked", c.send_as_granted, c.send_as_revoked)
            } else {
                String::new()
            };
            format!(
                ", aliases {} added, {} updated, {} deleted{send_as}",
                c.aliases_added, c.aliases_updated, c.aliases_deleted
            )
        } else {
            String::new()
        };
        // After the seven counts INTERFACE.md fixes (scripts parse them), and only when any.
        let offboarded = if c.offboarded > 0 {
            format!(", {} offboarded", c.offboarded)
        } else {
            String::new()
        };
        // Only when incremental passes are on: which kind ran.
        let kind = match &self.kind {
            Some((kind, _)) => format!("{kind}, "),
            None => String::new(),
        };
        // The same for the domains `sync.create_domains` added.
        let domains = if c.domains_created > 0 {
            format!(", {} domains created", c.domains_created)
        } else {
            String::new()
        };
        let admins = if c.admins_created + c.admins_updated + c.admins_deleted > 0 {
            format!(
                ", domain admins {} created, {} updated, {} deleted",
                c.admins_created, c.admins_updated, c.admins_deleted
            )
        } else {
            String::new()
        };
        format!(
            "mailcow-ldap-sync: {verb}{} created, {} updated, {} disabled, {} deleted, {} unchanged, {} skipped, {} failed{offboarded}{domains}{aliases}{admins} ({kind}{} LDAP entries, {} reads, {} {writes_word}, {secs} s)",
            c.created,
            c.updated,
            c.disabled,
            c.deleted,
            c.unchanged,
            c.skipped,
            c.failed,
            self.ldap_entries,
            self.reads,
            self.writes
        )
    }
}

/// Calls its argument once per part of the plan, in the pass's order (the chunks of users,
/// then the removals): the JSON report walks the parts once per list it writes.
pub type Parts<'a> = dyn FnMut(&mut dyn FnMut(Part<'_>) -> io::Result<()>) -> io::Result<()> + 'a;

/// Write the `--json` report: the summary first, then each list, one entry a line, so that
/// nothing but one part of the plan is held at a time.
pub fn write_json(
    out: &mut dyn Write,
    summary: &Summary,
    dirs: &[&Directory],
    parts: &mut Parts<'_>,
    aliases: Option<AliasPart<'_>>,
) -> io::Result<()> {
    let c = &summary.counts;
    let head = json!({
        "schema": REPORT_SCHEMA,
        "version": env!("CARGO_PKG_VERSION"),
        "dry_run": summary.dry_run,
        "started": summary.started,
        "finished": summary.finished,
        "exit_code": summary.exit_code,
        "error": summary.error,
        "ldap_entries": summary.ldap_entries,
        "managed_before": summary.managed_before,
        "requests": {"reads": summary.reads, "writes": summary.writes},
        "guard": summary.guard,
        "taken_over": summary.taken_over,
        "pass": summary.kind.as_ref().map(|(kind, why)| json!({"kind": kind, "why": why})),
        "summary": {
            "created": c.created, "updated": c.updated, "disabled": c.disabled, "offboarded": c.offboarded, "deleted": c.deleted,
            "domains_created": c.domains_created,
            "unchanged": c.unchanged, "skipped": c.skipped, "failed": c.failed,
            "aliases_added": c.aliases_added, "aliases_updated": c.aliases_updated, "aliases_deleted": c.aliases_deleted,
            "send_as_granted": c.send_as_granted, "send_as_revoked": c.send_as_revoked,
            "domain_admins_created": c.admins_created, "domain_admins_updated": c.admins_updated,
            "domain_admins_deleted": c.admins_deleted,
        },
        "domain_admins": summary.domain_admins,
    });
    let mut head = head;
    if !summary.sources.is_empty() {
        head["sources"] = serde_json::Value::Array(summary.sources.clone());
    }
    // The head's members, then the four lists in place of the closing brace.
    let head = serde_json::to_string_pretty(&head).map_err(io::Error::other)?;
    out.write_all(head.trim_end().trim_end_matches('}').trim_end().as_bytes())?;

    let mut list = JsonList::open(out, "changes")?;
    parts(&mut |part| part.write_changes(&mut list))?;
    if let Some(aliases) = aliases {
        aliases.write_changes(&mut list)?;
    }
    list.close()?;

    let mut list = JsonList::open(out, "failures")?;
    parts(&mut |part| {
        for f in &part.plan.failures {
            list.item(&json!({"address": f.address, "error": f.reason}))?;
        }
        Ok(())
    })?;
    if let Some(aliases) = aliases {
        for f in aliases.plan.failures.iter().chain(&aliases.plan.grant_failures) {
            list.item(&json!({"address": f.address, "error": f.reason}))?;
        }
    }
    list.close()?;

    let mut list = JsonList::open(out, "skipped")?;
    for s in dirs.iter().flat_map(|d| &d.skipped) {
        list.item(&json!({"dn": s.dn, "reason": s.reason}))?;
    }
    parts(&mut |part| {
        for s in &part.plan.skipped {
            list.item(&json!({"address": s.address, "reason": s.reason}))?;
        }
        Ok(())
    })?;
    list.close()?;

    let mut list = JsonList::open(out, "warnings")?;
    for w in dirs.iter().flat_map(|d| &d.warnings) {
        list.item(&json!(w.text))?;
    }
    parts(&mut |part| {
        for w in &part.plan.warnings {
            list.item(&json!(w.text))?;
        }
        Ok(())
    })?;
    if let Some(aliases) = aliases {
        for w in &aliases.plan.warnings {
            list.item(&json!(w.text))?;
        }
    }
    list.close()?;
    out.write_all(b"\n}\n")?;
    out.flush()
}

/// One list member of the report's object, written entry by entry.
struct JsonList<'a> {
    out: &'a mut dyn Write,
    empty: bool,
}

impl<'a> JsonList<'a> {
    fn open(out: &'a mut dyn Write, key: &str) -> io::Result<JsonList<'a>> {
        write!(out, ",\n  \"{key}\": [")?;
        Ok(JsonList { out, empty: true })
    }

    /// One entry, pretty-printed and indented as the whole report would be.
    fn item(&mut self, value: &Value) -> io::Result<()> {
        self.out.write_all(if self.empty { b"\n" } else { b",\n" })?;
        self.empty = false;
        let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
        for (i, line) in text.lines().enumerate() {
            if i > 0 {
                self.out.write_all(b"\n")?;
            }
            self.out.write_all(b"    ")?;
            self.out.write_all(line.as_bytes())?;
        }
        Ok(())
    }

    fn close(self) -> io::Result<()> {
        self.out.write_all(if self.empty { b"]" } else { b"\n  ]" })
    }
}

/// `{field: {old, new}}` of an action; passwords only say that they change.
fn fields(action: &Action) -> Value {
    match &action.kind {
        ActionKind::Create {
            name,
            quota_mib,
            active,
            tls_in,
            tls_out,
            password,
            authsource,
            tags,
            access,
            template,
            ..
        } => {
            let mut fields = json!({
            "name": {"old": null, "new": name},
            "quota": {"old": null, "new": quota_mib},
            "active": {"old": null, "new": active},
            "tls_enforce_in": {"old": null, "new": tls_in},
            "tls_enforce_out": {"old": null, "new": tls_out},
            "password": {"set": !matches!(password, crate::core::plan::NewPassword::None), "source": match password {
                crate::core::plan::NewPassword::Ldap(_) | crate::core::plan::NewPassword::Elided => "ldap",
                crate::core::plan::NewPassword::Random => "random",
                crate::core::plan::NewPassword::None => "none",
            }},
            "authsource": {"old": null, "new": authsource.as_str()},
            "tags": {"old": null, "new": tags},
            });
            if let Some((id, name)) = template {
                fields["template"] = json!({"old": null, "new": name, "id": id});
            }
            for (protocol, on) in access {
                fields[protocol.field()] = json!({"old": null, "new": u8::from(*on)});
            }
            fields
        }
        ActionKind::Update { changes, add_tag, .. } => {
            let mut map = serde_json::Map::new();
            for c in changes {
                map.insert(c.field.as_str().into(), json!({"old": c.old, "new": c.new}));
            }
            if let Some(tag) = add_tag {
                map.insert("tags".into(), json!({"add": tag}));
            }
            Value::Object(map)
        }
        ActionKind::Template {
            name,
            old,
            changes,
            tags,
            acl,
            rl,
            ..
        } => {
            let mut map = serde_json::Map::new();
            map.insert("template".into(), json!({"old": old, "new": name}));
            for c in changes {
                map.insert(c.field.as_str().into(), json!({"old": c.old, "new": c.new}));
            }
            if !tags.is_empty() {
                map.insert("tags".into(), json!({"add": tags}));
            }
            map.insert("acl".into(), json!({"new": acl}));
            map.insert("rate_limit".into(), json!({"new": {"value": rl.0, "frame": rl.1}}));
            Value::Object(map)
        }
        ActionKind::Password { .. } => json!({"password": {"changed": true}}),
        ActionKind::Rename { from, .. } => json!({"address": {"old": from, "new": action.address}, "alias_kept": from}),
        ActionKind::Tls { tls_in, tls_out, old } => json!({
            "tls_enforce_in": {"old": old.0, "new": tls_in},
            "tls_enforce_out": {"old": old.1, "new": tls_out},
        }),
        ActionKind::Deactivate {
            active, old, add_tag, ..
        } => match add_tag {
            Some(tag) => json!({"active": {"old": old, "new": active}, "tags": {"add": tag}}),
            None => json!({"active": {"old": old, "new": active}}),
        },
        ActionKind::Delete => json!({}),
        ActionKind::Offboard { app_passwords, eas } => json!({
            "app_passwords": {"revoke": app_passwords},
            "eas_cache": {"reset": eas},
        }),
        // As add/domain takes them: quotas in MiB.
        ActionKind::CreateDomain(d) => json!({
            "description": {"old": null, "new": d.description},
            "mailboxes": {"old": null, "new": d.mailboxes},
            "aliases": {"old": null, "new": d.aliases},
            "defquota": {"old": null, "new": d.default_quota_mib},
            "maxquota": {"old": null, "new": d.max_quota_mib},
            "quota": {"old": null, "new": d.quota_mib},
            "active": {"old": null, "new": u8::from(d.active)},
        }),
    }
}

/// A short "(quota 1024 → 2048, name …)" for the `-v` lines.
fn describe(action: &Action) -> String {
    let parts: Vec<String> = match &action.kind {
        ActionKind::Update { changes, add_tag, .. } => changes
            .iter()
            .map(|c| format!("{} {} → {}", c.field.as_str(), c.old, c.new))
            .chain(add_tag.iter().map(|t| format!("tag +{t}")))
            .collect(),
        ActionKind::Template { name, old, changes, .. } => {
            std::iter::once(format!("template {} → {name}", old.as_deref().unwrap_or("-")))
                .chain(
                    changes
                        .iter()
                        .map(|c| format!("{} {} → {}", c.field.as_str(), c.old, c.new)),
                )
                .collect()
        }
        ActionKind::Tls { tls_in, tls_out, .. } => vec![format!("tls_enforce_in {tls_in}, tls_enforce_out {tls_out}")],
        ActionKind::Rename { from, .. } => vec![format!("from {from}, kept as an alias")],
        ActionKind::Deactivate {
            active, old, add_tag, ..
        } => std::iter::once(format!("active {old} → {active}"))
            .chain(add_tag.iter().map(|t| format!("tag +{t}")))
            .collect(),
        ActionKind::Offboard { app_passwords, eas } => [
            app_passwords.then(|| "revoke app passwords".to_owned()),
            eas.then(|| "reset the ActiveSync cache".to_owned()),
        ]
        .into_iter()
        .flatten()
        .collect(),
        ActionKind::CreateDomain(d) => vec![d.to_string()],
        _ => Vec::new(),
    };
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// `text` as it may reach a terminal: every control character (C0, DEL, C1) and every
/// bidirectional override becomes a visible escape (`\x1b`, `\u{202e}`). DNs, names and server
/// messages come from LDAP and mailcow; an ESC in one could recolour, hide or rewrite the lines
/// an admin reads, and a newline could forge a line of its own. JSON output needs none of this:
/// serde escapes control characters there.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !unsafe_char(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// Unix seconds as `2026-11-27 11:42:18 UTC` (no time-zone database on a router).
pub fn format_utc(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::{format_utc, terminal_safe};

    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(
            terminal_safe("uid=evil\u{1b}[31m,ou=people"),
            "uid=evil\\x1b[31m,ou=people"
        );
        assert_eq!(
            terminal_safe("a\nwarning: forged\r\t\u{0}\u{7f}"),
            "a\\x0awarning: forged\\x0d\\x09\\x00\\x7f"
        );
        assert_eq!(
            terminal_safe("\u{9b}31m \u{202e}txt.exe"),
            "\\u{9b}31m \\u{202e}txt.exe"
        );
        assert!(matches!(
            terminal_safe("Jörg Müller, cn=a\\,b"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_795_778_938), "2026-11-27 11:28:58 UTC");
    }
}
