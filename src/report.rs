//! What a pass tells the admin: the summary line, the `-v` lines and the `--json` report.
//!
//! All three are read off the same plan and the same results, so they cannot disagree.
//! Secrets never reach here: password actions are reported as "changed", without values.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::apply::{AliasOutcome, ItemOutcome};
use crate::core::aliases::{AliasActionKind, AliasPlan};
use crate::core::directory::Directory;
pub use crate::core::model::Counts;
use crate::core::plan::{Action, ActionKind, Plan};

/// Version of the `--json` report's schema (README: "JSON report").
pub const REPORT_SCHEMA: u32 = 1;

/// Everything a report needs.
pub struct PassReport<'a> {
    pub dir: &'a Directory,
    pub plan: &'a Plan,
    /// The alias plan, when aliases or groups are synced.
    pub aliases: Option<&'a AliasPlan>,
    /// `None` for a dry-run, a refused pass, or when the mailbox changes stopped the pass.
    pub alias_results: Option<&'a [AliasOutcome]>,
    /// `None` for a dry-run or a refused pass.
    pub results: Option<&'a [ItemOutcome]>,
    pub dry_run: bool,
    pub started: i64,
    pub finished: i64,
    pub exit_code: u8,
    /// Bulk reads made (mailboxes, domains, aliases).
    pub reads: usize,
    /// Write requests made (planned, for a dry-run or a refused pass).
    pub writes: usize,
    pub error: Option<String>,
}

fn status(result: Option<&ItemOutcome>) -> (&'static str, Option<String>) {
    match result {
        None => ("planned", None),
        Some(ItemOutcome::NotAttempted) => ("not_attempted", None),
        Some(ItemOutcome::Applied) => ("applied", None),
        Some(ItemOutcome::Failed(e)) => ("failed", Some(e.clone())),
    }
}

impl PassReport<'_> {
    fn result(&self, i: usize) -> Option<&ItemOutcome> {
        self.results.map(|r| &r[i])
    }

    /// Counted per mailbox: a mailbox with a name change and a password change is one update.
    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            unchanged: self.plan.unchanged,
            skipped: self.dir.skipped.len() + self.plan.skipped.len(),
            ..Counts::default()
        };
        let mut updated = BTreeSet::new();
        let mut failed: BTreeSet<&str> = self.plan.failures.iter().map(|f| f.address.as_str()).collect();
        for (i, action) in self.plan.actions.iter().enumerate() {
            let counts = match self.result(i) {
                None => true,
                Some(ItemOutcome::Applied) => true,
                Some(ItemOutcome::Failed(_)) => {
                    failed.insert(&action.address);
                    false
                }
                Some(ItemOutcome::NotAttempted) => false,
            };
            if !counts {
                continue;
            }
            match &action.kind {
                ActionKind::Create { .. } => c.created += 1,
                ActionKind::Update { .. } | ActionKind::Password { .. } | ActionKind::Tls { .. } => {
                    updated.insert(&action.address);
                }
                ActionKind::Deactivate { .. } => c.disabled += 1,
                ActionKind::Delete => c.deleted += 1,
            }
        }
        if let Some(aliases) = self.aliases {
            failed.extend(aliases.failures.iter().map(|(a, _)| a.as_str()));
            for (i, action) in aliases.actions.iter().enumerate() {
                match self.alias_status(i) {
                    ("planned" | "applied", _) => match action.kind {
                        AliasActionKind::Add { .. } => c.aliases_added += 1,
                        AliasActionKind::Edit { .. } => c.aliases_updated += 1,
                        AliasActionKind::Delete { .. } => c.aliases_deleted += 1,
                    },
                    ("failed", _) => {
                        failed.insert(&action.address);
                    }
                    _ => {}
                }
            }
        }
        c.updated = updated.len();
        c.failed = failed.len();
        c
    }

    fn alias_status(&self, i: usize) -> (&'static str, Option<String>) {
        match (self.results, self.alias_results) {
            (None, _) => ("planned", None),
            (Some(_), None) => ("not_attempted", None),
            (Some(_), Some(r)) => match &r[i] {
                AliasOutcome::NotAttempted => ("not_attempted", None),
                AliasOutcome::Applied(_) => ("applied", None),
                AliasOutcome::Failed(e) => ("failed", Some(e.clone())),
            },
        }
    }

    fn alias_changes(&self) -> Vec<Value> {
        let Some(aliases) = self.aliases else { return Vec::new() };
        aliases
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let (state, error) = self.alias_status(i);
                let fields = match &a.kind {
                    AliasActionKind::Add { goto, sender_allowed } => {
                        json!({"goto": {"old": null, "new": goto}, "sender_allowed": sender_allowed})
                    }
                    AliasActionKind::Edit { old_goto, goto, .. } => json!({"goto": {"old": old_goto, "new": goto}}),
                    AliasActionKind::Delete { goto, .. } => json!({"goto": {"old": goto, "new": null}}),
                };
                let mut v = json!({"action": a.kind.verb(), "address": a.address, "owner": a.owner, "fields": fields, "status": state});
                if let Some(e) = error {
                    v["error"] = json!(e);
                }
                v
            })
            .collect()
    }

    /// The one line on stderr.
    pub fn summary_line(&self) -> String {
        let c = self.counts();
        let verb = if self.dry_run { "dry-run, would be: " } else { "" };
        let writes_word = if self.results.is_some() {
            "writes"
        } else {
            "writes planned"
        };
        let secs = (self.finished - self.started).max(0);
        let aliases = match self.aliases {
            Some(_) => format!(
                ", aliases {} added, {} updated, {} deleted",
                c.aliases_added, c.aliases_updated, c.aliases_deleted
            ),
            None => String::new(),
        };
        format!(
            "mailcow-ldap-sync: {verb}{} created, {} updated, {} disabled, {} deleted, {} unchanged, {} skipped, {} failed{aliases} ({} LDAP entries, {} reads, {} {writes_word}, {secs} s)",
            c.created,
            c.updated,
            c.disabled,
            c.deleted,
            c.unchanged,
            c.skipped,
            c.failed,
            self.dir.entries,
            self.reads,
            self.writes
        )
    }

    /// One line per change and failure (for `-v`, and the failure list of `-q`). Skips are
    /// not among them: every pass warns about each one, `-q` or not.
    pub fn item_lines(&self, only_failures: bool) -> Vec<String> {
        let mut lines = Vec::new();
        for f in &self.plan.failures {
            lines.push(format!("failed {}: {}", f.address, f.reason));
        }
        for (i, action) in self.plan.actions.iter().enumerate() {
            let (state, error) = status(self.result(i));
            if only_failures && state != "failed" {
                continue;
            }
            let what = describe(action);
            lines.push(match error {
                Some(e) => format!("failed {} {}{what}: {e}", action.kind.verb(), action.address),
                None => format!("{state} {} {}{what}", action.kind.verb(), action.address),
            });
        }
        if let Some(aliases) = self.aliases {
            for (address, reason) in &aliases.failures {
                lines.push(format!("failed alias_add {address}: {reason}"));
            }
            for (i, a) in aliases.actions.iter().enumerate() {
                let (state, error) = self.alias_status(i);
                if only_failures && state != "failed" {
                    continue;
                }
                let goto = match &a.kind {
                    AliasActionKind::Add { goto, .. } => format!(" → {goto}"),
                    AliasActionKind::Edit { old_goto, goto, .. } => format!(" ({old_goto} → {goto})"),
                    AliasActionKind::Delete { .. } => String::new(),
                };
                lines.push(match error {
                    Some(e) => format!("failed {} {}{goto}: {e}", a.kind.verb(), a.address),
                    None => format!("{state} {} {}{goto}", a.kind.verb(), a.address),
                });
            }
        }
        lines
    }

    /// The `--json` report.
    pub fn to_json(&self) -> Value {
        let c = self.counts();
        let changes: Vec<Value> = self
            .plan
            .actions
            .iter()
            .enumerate()
            .map(|(i, action)| {
                let (state, error) = status(self.result(i));
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
                v
            })
            .collect();
        let mut changes = changes;
        changes.extend(self.alias_changes());
        let mut failures: Vec<Value> = self
            .plan
            .failures
            .iter()
            .map(|f| json!({"address": f.address, "error": f.reason}))
            .collect();
        if let Some(aliases) = self.aliases {
            failures.extend(aliases.failures.iter().map(|(a, r)| json!({"address": a, "error": r})));
        }
        let mut skipped: Vec<Value> = self
            .dir
            .skipped
            .iter()
            .map(|s| json!({"dn": s.dn, "reason": s.reason}))
            .collect();
        skipped.extend(
            self.plan
                .skipped
                .iter()
                .map(|(a, r)| json!({"address": a, "reason": r})),
        );
        let mut warnings: Vec<&String> = self.dir.warnings.iter().collect();
        warnings.extend(&self.plan.warnings);
        if let Some(aliases) = self.aliases {
            warnings.extend(&aliases.warnings);
        }
        json!({
            "schema": REPORT_SCHEMA,
            "version": env!("CARGO_PKG_VERSION"),
            "dry_run": self.dry_run,
            "started": self.started,
            "finished": self.finished,
            "exit_code": self.exit_code,
            "error": self.error,
            "ldap_entries": self.dir.entries,
            "managed_before": self.plan.managed,
            "requests": {"reads": self.reads, "writes": self.writes},
            "guard": self.plan.guard,
            "summary": {
                "created": c.created, "updated": c.updated, "disabled": c.disabled, "deleted": c.deleted,
                "unchanged": c.unchanged, "skipped": c.skipped, "failed": c.failed,
                "aliases_added": c.aliases_added, "aliases_updated": c.aliases_updated, "aliases_deleted": c.aliases_deleted,
            },
            "changes": changes,
            "failures": failures,
            "skipped": skipped,
            "warnings": warnings,
        })
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
            ..
        } => json!({
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
        }),
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
        ActionKind::Password { .. } => json!({"password": {"changed": true}}),
        ActionKind::Tls { tls_in, tls_out, old } => json!({
            "tls_enforce_in": {"old": old.0, "new": tls_in},
            "tls_enforce_out": {"old": old.1, "new": tls_out},
        }),
        ActionKind::Deactivate { active, old, .. } => json!({"active": {"old": old, "new": active}}),
        ActionKind::Delete => json!({}),
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
        ActionKind::Tls { tls_in, tls_out, .. } => vec![format!("tls_enforce_in {tls_in}, tls_enforce_out {tls_out}")],
        ActionKind::Deactivate { active, old, .. } => vec![format!("active {old} → {active}")],
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
