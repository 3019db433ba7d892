//! The sync pass: one run of the tool without a subcommand.

use crate::apply;
use crate::cli::Cli;
use crate::commands::{alert_insecure, now, require_api_key};
use crate::config::{Config, PasswordMode};
use crate::core::aliases;
use crate::core::directory::DirectoryBuilder;
use crate::core::model;
use crate::core::plan;
use crate::core::policy::{Fingerprinter, Policy};
use crate::edge::ldap;
use crate::edge::mailcow::{HttpMailcow, MailcowApi};
use crate::edge::state_db::{self, FailureRecord, RunRecord, StateDb};
use crate::error::{Error, Result, exit};
use crate::ldap_read::{self, DirectoryRead};
use crate::metrics;
use crate::output::{Output, eprint_line, print_stdout};
use crate::report::PassReport;

/// The part of the config the planner needs.
fn policy(config: &Config, fingerprinter: Fingerprinter) -> Policy {
    Policy {
        on_removed: config.sync.on_removed,
        max_removals: config.sync.max_removals,
        password: config.sync.password,
        authsource: config.sync.authsource,
        tag: config.sync.tag.clone(),
        adopt: config.sync.adopt,
        listed_by_original_tool: std::collections::BTreeSet::new(),
        default_quota_mib: config.sync.default_quota_mib,
        domains: config.sync.domains.clone(),
        fingerprinter,
        partial_view: None,
    }
}

pub fn run(mut config: Config, cli: &Cli, out: &Output) -> Result<u8> {
    require_api_key(&config)?;
    if cli.do_not_verify {
        config.mailcow.verify_tls = false;
    }
    alert_insecure(&config, out);
    let started = now();
    let _lock = if cli.dry_run {
        None
    } else {
        Some(state_db::lock(&config.state_file)?)
    };
    let mut store = if cli.dry_run {
        StateDb::open_read_only(&config.state_file)?
    } else {
        Some(StateDb::open(&config.state_file)?)
    };
    let clock = std::time::Instant::now();
    let result = pass_with_store(&config, cli, out, store.as_mut(), started);
    if cli.dry_run {
        return result.map(|finished| finished.run.exit_code);
    }
    let (run, outcome) = match result {
        Ok(Finished { run, error: None }) => {
            let code = run.exit_code;
            (run, Ok(code))
        }
        Ok(Finished { run, error: Some(e) }) => (run, Err(e)),
        Err(e) => {
            let run = RunRecord {
                started,
                finished: now(),
                exit_code: e.exit_code(),
                message: Some(e.to_string()),
                ..RunRecord::default()
            };
            // Record the failed pass for `status`; the pass's own error is what matters.
            if let Some(store) = store.as_mut()
                && !matches!(e, Error::State { .. })
            {
                let _ = store.record_run(&run);
            }
            (run, Err(e))
        }
    };
    let metrics_file = cli.metrics_file.as_ref().or(config.sync.metrics_file.as_ref());
    if let Some(path) = metrics_file {
        let managed = store.as_ref().and_then(|s| s.managed_count().ok());
        let last_success = store.as_ref().and_then(|s| s.last_success().ok().flatten());
        let text = metrics::render(&run, clock.elapsed(), managed, last_success);
        if let Err(e) = metrics::write_atomically(path, &text) {
            out.warn(&e.to_string());
        }
    }
    outcome
}

/// A pass that got as far as applying: its record, and the error that stopped it, if any
/// (the state was committed either way).
struct Finished {
    run: RunRecord,
    error: Option<Error>,
}

fn pass_with_store(
    config: &Config,
    cli: &Cli,
    out: &Output,
    store: Option<&mut StateDb>,
    started: i64,
) -> Result<Finished> {
    let state = std::sync::Arc::new(match &store {
        Some(s) => s.load()?,
        None => model::ManagedRows::new(),
    });
    let fingerprint_key = match &store {
        Some(s) => s.fingerprint_key()?,
        None => state_db::random_bytes(32),
    };
    let filter = cli.override_filter.as_deref().unwrap_or(&config.ldap.search_filter);
    let alias_sync = config.ldap.mapping.aliases.is_some() || config.groups.is_some();
    let alias_state = match (&store, alias_sync) {
        (Some(s), true) => s.load_aliases()?,
        _ => model::AliasState::new(),
    };
    let client = HttpMailcow::new(&config.mailcow, config.mailcow_timeout)?;
    // Bind first, so that a wrong LDAP password or a server that is down stops the pass
    // before mailcow is contacted; then read both sides at the same time: a pass costs the
    // slower of the two reads, not their sum.
    let conn = ldap::LdapConnection::connect(&config.ldap)?;
    let fingerprinter = Fingerprinter::new(&fingerprint_key);
    // A hash whose fingerprint the state already holds is not kept in memory, unless
    // `always` sends it on every pass.
    let elide = matches!(config.sync.password, PasswordMode::Changed | PasswordMode::Create);
    let builder = DirectoryBuilder::against(
        ldap_read::reading(config),
        state.clone(),
        elide.then(|| fingerprinter.clone()),
    );
    let (directory, mailcow_read) = std::thread::scope(|scope| {
        let mailcow = scope.spawn(|| -> Result<_> {
            let domains = client.domains()?;
            let mailboxes = client.mailboxes(config.sync.tag.as_deref(), state.clone())?;
            let aliases = if alias_sync { client.aliases()? } else { Vec::new() };
            Ok((domains, mailboxes, aliases))
        });
        let directory = ldap_read::search_directory(conn, config, filter, builder);
        let mailcow_read = mailcow.join().unwrap_or_else(|_| {
            Err(Error::Mailcow {
                endpoint: "get".into(),
                message: "the reading thread failed".into(),
            })
        });
        (directory, mailcow_read)
    });
    // An LDAP failure is reported first: a short directory must never reach the planner.
    let DirectoryRead {
        dir,
        groups,
        mut conn,
        mut partial,
        group_failure,
    } = directory?;
    let (domains, mailboxes, mailcow_aliases) = mailcow_read?;
    let mut policy = policy(config, fingerprinter);
    if let Some(s) = &store {
        policy.listed_by_original_tool = s.original_tool_addresses()?;
    }
    if let Some(filter) = &cli.override_filter {
        partial.push(format!("--override-filter `{filter}` reads only part of the directory"));
    }
    policy.partial_view = (!partial.is_empty()).then(|| partial.join("; "));
    let mut plan = plan::plan(&dir, &mailboxes, &domains, &state, &policy, started);
    if !cli.dry_run {
        ldap_read::read_elided_passwords(&mut conn, config, &dir, &mut plan, &policy.fingerprinter);
    }
    conn.close();
    // mailcow's `{}` for an empty list, while aliases are owned, proves nothing either.
    let aliases_unlisted = alias_sync && mailcow_aliases.is_empty() && !alias_state.is_empty();
    let alias_plan = alias_sync.then(|| {
        let creating = plan
            .actions
            .iter()
            .filter(|a| matches!(a.kind, plan::ActionKind::Create { .. }))
            .map(|a| a.address.clone())
            .collect();
        let not_synced = plan
            .skipped
            .iter()
            .map(|(address, _)| address.clone())
            .chain(plan.failures.iter().map(|f| f.address.clone()))
            .collect();
        let no_protection = std::collections::BTreeSet::new();
        aliases::plan_aliases(
            &dir,
            &aliases::AliasInputs {
                groups: groups.as_ref().map(|g| g.groups.as_slice()),
                group_entries: groups.as_ref().map_or(0, |g| g.entries),
                mailboxes: &mailboxes,
                aliases: &mailcow_aliases,
                domains: &domains,
                state: &alias_state,
                creating: &creating,
                protected: groups.as_ref().map_or(&no_protection, |g| &g.protected),
                on_removed: config.sync.on_removed,
                scope: &config.sync.domains,
                mailbox_state: &state,
                not_synced: &not_synced,
                // A failed group search is part of the plan's partial view.
                partial_view: plan.partial_view.is_some() || aliases_unlisted,
                max_removals: config.sync.max_removals,
            },
        )
    });
    drop(mailboxes);
    drop(mailcow_aliases);

    let alias_warnings = alias_plan.iter().flat_map(|p| p.warnings.iter());
    for warning in dir.warnings.iter().chain(&plan.warnings).chain(alias_warnings) {
        out.warn(warning);
    }
    // A user who is not synced needs an admin's action, under cron too.
    for skipped in &dir.skipped {
        out.alert(&format!("skipped {}: {}", skipped.dn, skipped.reason));
    }
    for (address, reason) in &plan.skipped {
        out.alert(&format!("skipped {address}: {reason}"));
    }
    // An incomplete view needs an admin's eye (unless asked for with --override-filter).
    if let Some(reason) = &plan.partial_view {
        let aliases_held = alias_plan.as_ref().map_or(0, |p| p.held_back);
        let message = format!(
            "no removals this pass ({} managed mailboxes and {aliases_held} alias changes held back): {reason}",
            plan.held_back
        );
        if partial.len() == 1 && cli.override_filter.is_some() {
            out.warn(&message);
        } else {
            out.alert(&message);
        }
    }
    if aliases_unlisted && plan.partial_view.is_none() {
        out.alert(&format!(
            "no alias removals this pass: mailcow listed no aliases while {} are owned by this tool",
            alias_state.len()
        ));
    }

    let requests = apply::request_count(&plan) + alias_plan.as_ref().map_or(0, apply::alias_request_count);
    let guard = plan
        .guard
        .clone()
        .or_else(|| alias_plan.as_ref().and_then(|p| p.guard.clone()));
    let mut report = PassReport {
        dir: &dir,
        plan: &plan,
        aliases: alias_plan.as_ref(),
        alias_results: None,
        results: None,
        dry_run: cli.dry_run,
        started,
        finished: now(),
        exit_code: exit::OK,
        reads: 2 + usize::from(alias_sync),
        writes: requests,
        error: None,
    };

    if let Some(guard) = &guard
        && !cli.force
    {
        report.exit_code = exit::GUARD;
        report.error = Some(format!("refused: {guard}"));
        emit(&report, cli, out);
        return Err(Error::Guard(guard.clone()));
    }
    if let Some(guard) = &guard {
        out.warn(&format!("--force overrides the safety guard: {guard}"));
    }

    if cli.dry_run {
        emit(&report, cli, out);
        return Ok(Finished {
            run: RunRecord {
                exit_code: exit::OK,
                ..RunRecord::default()
            },
            error: None,
        });
    }

    let mut progress = progress_printer(out, requests);
    let applied = apply::apply(&client, &plan, config.sync.concurrency, &mut progress);
    let confirmed = applied.confirmed();
    let delta = plan::settle(&state, &plan, &confirmed);
    let applied_aliases = match &alias_plan {
        Some(p) if applied.fatal.is_none() => apply::apply_aliases(&client, p),
        _ => apply::AppliedAliases::default(),
    };
    let alias_delta = match &alias_plan {
        Some(p) => aliases::settle_aliases(p, &applied_aliases.confirmed()),
        None => aliases::AliasDelta::default(),
    };

    let mut failures: Vec<FailureRecord> = plan
        .failures
        .iter()
        .map(|f| FailureRecord {
            address: f.address.clone(),
            uid: None,
            action: "create".into(),
            message: f.reason.clone(),
        })
        .collect();
    failures.extend(group_failure.as_ref().map(|f| FailureRecord {
        address: f.address.clone(),
        uid: None,
        action: "group_search".into(),
        message: f.reason.clone(),
    }));
    for (action, result) in plan.actions.iter().zip(&applied.results) {
        if let Some(message) = result.error() {
            failures.push(FailureRecord {
                address: action.address.clone(),
                uid: Some(action.uid.clone()),
                action: action.kind.verb().into(),
                message: message.to_owned(),
            });
        }
    }
    if let Some(p) = &alias_plan {
        for (address, reason) in &p.failures {
            failures.push(FailureRecord {
                address: address.clone(),
                uid: None,
                action: "alias_add".into(),
                message: reason.clone(),
            });
        }
        for (action, result) in p.actions.iter().zip(&applied_aliases.results) {
            if let Some(message) = result.error() {
                failures.push(FailureRecord {
                    address: action.address.clone(),
                    uid: None,
                    action: action.kind.verb().into(),
                    message: message.to_owned(),
                });
            }
        }
    }
    report.results = Some(&applied.results);
    if alias_plan.is_some() && applied.fatal.is_none() {
        report.alias_results = Some(&applied_aliases.results);
    }
    report.writes = applied.requests + applied_aliases.requests;
    let fatal = applied.fatal.or(applied_aliases.fatal);
    let counts = report.counts();
    let exit_code = match (&fatal, counts.failed) {
        (Some(e), _) => e.exit_code(),
        (None, 0) if group_failure.is_none() => exit::OK,
        (None, _) => exit::ITEMS_FAILED,
    };
    report.exit_code = exit_code;
    report.finished = now();
    report.error = fatal.as_ref().map(ToString::to_string);
    let run = RunRecord {
        started,
        finished: report.finished,
        exit_code,
        users: dir.len(),
        counts: counts.clone(),
        message: report.error.clone(),
    };
    let committed = match store {
        Some(store) => store.commit(&delta, &alias_delta, &failures, &run),
        None => Ok(()),
    };
    emit(&report, cli, out);
    committed?;
    Ok(Finished { run, error: fatal })
}

/// On a terminal, a progress line for long imports; nothing when stderr is not a terminal.
fn progress_printer(out: &Output, total: usize) -> impl FnMut(usize, usize) + Send {
    use std::io::IsTerminal;
    let show = !out.quiet && total >= 20 && std::io::stderr().is_terminal();
    move |done, total| {
        if show {
            eprint!("\r{done}/{total} requests");
            if done == total {
                eprint!("\r\x1b[K");
            }
        }
    }
}

/// The summary on stderr, the item lines with `-v` (failures also with `-q`), the JSON on stdout.
fn emit(report: &PassReport<'_>, cli: &Cli, out: &Output) {
    let failed = report.exit_code != exit::OK;
    if out.verbose {
        for line in report.item_lines(false) {
            eprint_line(&line);
        }
    } else if failed || !out.quiet {
        for line in report.item_lines(true) {
            eprint_line(&line);
        }
    }
    if !out.quiet || failed {
        eprint_line(&report.summary_line());
    }
    if cli.json {
        let mut text = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
        text.push('\n');
        print_stdout(&text);
    }
}
