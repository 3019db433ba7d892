//! `status`: what the state database knows, without contacting LDAP or mailcow.

use crate::config::Config;
use crate::core::plan::deletion_due;
use crate::edge::state_db::StateDb;
use crate::error::{Result, exit};
use crate::output::{print_line, print_stdout};
use crate::report;

pub fn run(config: &Config, json: bool) -> Result<u8> {
    let Some(store) = StateDb::open_read_only(&config.state_file)? else {
        if json {
            print_stdout("{\"managed\":0,\"runs\":[]}\n");
        } else {
            print_stdout(&format!(
                "no state database yet at {}: no pass has run\n",
                config.state_file.display()
            ));
        }
        return Ok(exit::OK);
    };
    let state = store.load()?;
    let runs = store.runs(10)?;
    let failures = store.failures()?;
    let disabled = state.values().filter(|r| r.disabled_at.is_some()).count();
    let by_source = sources_of(config, &store)?;
    // Mailboxes whose user left, disabled, waiting out `delete_after_days`: (address, since, due).
    let pending: Vec<(String, i64, i64)> = state
        .values()
        .filter_map(|r| {
            let since = r.disabled_at?;
            let due = deletion_due(since, config.sync.on_removed, config.sync.delete_after_days)?;
            Some((r.address, since, due))
        })
        .collect();
    if json {
        let runs: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "started": r.started, "finished": r.finished, "duration_secs": r.finished - r.started,
                    "exit_code": r.exit_code, "users": r.users, "created": r.counts.created, "updated": r.counts.updated,
                    "disabled": r.counts.disabled, "deleted": r.counts.deleted, "unchanged": r.counts.unchanged,
                    "skipped": r.counts.skipped, "failed": r.counts.failed, "message": r.message,
                    "kind": r.kind, "why": r.why,
                })
            })
            .collect();
        let failures: Vec<serde_json::Value> = failures
            .iter()
            .map(|f| serde_json::json!({"address": f.address, "action": f.action, "error": f.message}))
            .collect();
        let doc = serde_json::json!({
            "state_file": config.state_file.display().to_string(),
            "managed": state.len(),
            "active": state.len() - disabled,
            "disabled": disabled,
            "pending_deletion": pending
                .iter()
                .map(|(address, since, due)| serde_json::json!({"address": address, "disabled_at": since, "delete_after": due}))
                .collect::<Vec<_>>(),
            "failed_last_pass": failures,
            "runs": runs,
        });
        let mut doc = doc;
        if !config.sources.is_empty() {
            doc["sources"] = by_source
                .iter()
                .map(|(name, managed, disabled)| serde_json::json!({"name": name, "managed": managed, "disabled": disabled}))
                .collect();
        }
        print_stdout(&format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default()));
        return Ok(exit::OK);
    }
    let mut text = format!(
        "state database: {}\nmanaged mailboxes: {} ({} active, {} disabled by this tool)\nfailed in the last pass: {}\n",
        config.state_file.display(),
        state.len(),
        state.len() - disabled,
        disabled,
        failures.len()
    );
    for (name, managed, disabled) in &by_source {
        text.push_str(&format!(
            "  source {name}: {managed} ({disabled} disabled by this tool)\n"
        ));
    }
    for f in &failures {
        text.push_str(&format!("  failed {} {}: {}\n", f.action, f.address, f.message));
    }
    if !pending.is_empty() {
        text.push_str(&format!(
            "pending deletion (sync.delete_after_days = {}): {}\n",
            config.sync.delete_after_days,
            pending.len()
        ));
        for (address, since, due) in &pending {
            text.push_str(&format!(
                "  {address}: disabled since {}, deleted from {} if its user does not return\n",
                report::format_utc(*since),
                report::format_utc(*due)
            ));
        }
    }
    text.push_str("last passes (newest first):\n");
    if runs.is_empty() {
        text.push_str("  none\n");
    }
    for r in &runs {
        text.push_str(&format!(
            "  {} {}exit {} in {} s: {} created, {} updated, {} disabled, {} deleted, {} unchanged, {} skipped, {} failed{}\n",
            report::format_utc(r.started),
            match (&r.kind, &r.why) {
                (Some(kind), Some(why)) => format!("{kind} ({why}), "),
                (Some(kind), None) => format!("{kind}, "),
                _ => String::new(),
            },
            r.exit_code,
            r.finished - r.started,
            r.counts.created,
            r.counts.updated,
            r.counts.disabled,
            r.counts.deleted,
            r.counts.unchanged,
            r.counts.skipped,
            r.counts.failed,
            r.message.as_ref().map(|m| format!(" — {m}")).unwrap_or_default()
        ));
    }
    // Failure messages and run messages were recorded from LDAP and mailcow text.
    for line in text.lines() {
        print_line(line);
    }
    Ok(exit::OK)
}

/// Managed mailboxes per source, with `sources` (rows without one are the first source's):
/// (name, managed, disabled), in the config's order, then sources it no longer names.
fn sources_of(config: &Config, store: &StateDb) -> Result<Vec<(String, usize, usize)>> {
    if config.sources.is_empty() {
        return Ok(Vec::new());
    }
    let mut counts: Vec<(String, usize, usize)> = config.sources.iter().map(|s| (s.name.clone(), 0, 0)).collect();
    for (source, managed, disabled) in store.managed_by_source()? {
        let name = source.unwrap_or_else(|| config.sources[0].name.clone());
        match counts.iter().position(|(n, _, _)| *n == name) {
            Some(i) => {
                counts[i].1 += managed;
                counts[i].2 += disabled;
            }
            None => counts.push((format!("{name} (no longer in the config)"), managed, disabled)),
        }
    }
    Ok(counts)
}
