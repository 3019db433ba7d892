//! The sync pass: one run of the tool without a subcommand.
//!
//! [`pass`] is the pass as its sequence: state → snapshot (both sides, in parallel) → plan
//! → guard → dry-run, or apply → settle → commit chunk by chunk → outcome → commit → report.
//! It returns one [`Outcome`]; [`run`] around it holds the lock, records a pass that stopped
//! early and writes the metrics. The plan is held one chunk at a time (`plan::user_chunks`),
//! so a pass's memory follows a chunk, not the number of changes.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::sync::Arc;

use crate::apply::{self, AliasOutcome, ItemOutcome};
use crate::cli::Cli;
use crate::commands::incremental;
use crate::commands::{alert_insecure, now, require_api_key};
use crate::config::{Config, Incremental, PasswordMode};
use crate::core::aliases::{self, AliasInputs, AliasPlan};
use crate::core::directory::{Directory, DirectoryBuilder};
use crate::core::model::{AliasState, Domain, Mailboxes, MailcowAlias, ManagedMailbox, ManagedRows};
use crate::core::plan::{self, CHUNK_ITEMS, Plan, PlanInputs, PlannedFailure};
use crate::core::policy::{ChangesOnly, Fingerprinter, Policy, RowsOwned};
use crate::core::sender_acl;
use crate::edge::ldap::LdapConnection;
use crate::edge::mailcow::{HttpMailcow, MailcowApi};
use crate::edge::state_db::{self, FailureRecord, PassEnd, Reread, RunRecord, StateDb};
use crate::error::{Error, Result, exit};
use crate::ldap_read::{self, DirectoryRead, GroupsRead, HashRereader};
use crate::metrics;
use crate::output::{Output, eprint_line};
use crate::report::{AliasPart, Counts, Part, Summary};

/// At most this many failures are kept for `status` (the report names every one).
const MAX_RECORDED_FAILURES: usize = 1000;

/// How a pass ended.
pub enum Outcome {
    /// A dry-run: the plan was shown, nothing was written.
    DryRun,
    /// The pass ran to its end and committed; the record's exit code says whether items
    /// failed (3) or not (0).
    Done(RunRecord),
    /// An error stopped the pass: the guard, LDAP or mailcow unreachable, the state
    /// database. `committed`: the state database holds the pass's record (and what mailcow
    /// confirmed before the error); otherwise nothing was written.
    Stopped {
        error: Error,
        run: RunRecord,
        committed: bool,
    },
}

impl Outcome {
    /// A pass stopped before it wrote anything.
    fn stopped(error: Error, started: i64) -> Outcome {
        let run = RunRecord {
            started,
            finished: now(),
            exit_code: error.exit_code(),
            message: Some(error.to_string()),
            ..RunRecord::default()
        };
        Outcome::Stopped {
            error,
            run,
            committed: false,
        }
    }

    fn run(&self) -> Option<&RunRecord> {
        match self {
            Outcome::DryRun => None,
            Outcome::Done(run) | Outcome::Stopped { run, .. } => Some(run),
        }
    }

    fn into_result(self) -> Result<u8> {
        match self {
            Outcome::DryRun => Ok(exit::OK),
            Outcome::Done(run) => Ok(run.exit_code),
            Outcome::Stopped { error, .. } => Err(error),
        }
    }
}

pub fn run(mut config: Config, cli: &Cli, out: &Output) -> Result<u8> {
    require_api_key(&config)?;
    if cli.do_not_verify {
        config.mailcow.verify_tls = false;
    }
    alert_insecure(&config, out);
    let clock = std::time::Instant::now();
    let started = now();
    if cli.dry_run {
        let mut db = StateDb::open_read_only(&config.state_file)?;
        return pass(&config, cli, out, db.as_mut(), started).into_result();
    }
    let _lock = state_db::lock(&config.state_file)?;
    let mut db = StateDb::open(&config.state_file)?;
    let outcome = pass(&config, cli, out, Some(&mut db), started);
    match &outcome {
        // Recorded for `status` (the pass's own error is what matters), unless the state
        // database is what failed.
        Outcome::Stopped {
            error,
            run,
            committed: false,
        } if !matches!(error, Error::State { .. }) => {
            let _ = db.record_run(run);
        }
        _ => {}
    }
    if let (Some(run), Some(path)) = (
        outcome.run(),
        cli.metrics_file.as_ref().or(config.sync.metrics_file.as_ref()),
    ) {
        let managed = db.managed_count().ok();
        let last_success = db.last_success().ok().flatten();
        let text = metrics::render(run, clock.elapsed(), managed, last_success);
        if let Err(e) = metrics::write_atomically(path, &text) {
            // Monitoring reads this file: a stale one needs an admin.
            out.alert(&e.to_string());
        }
    }
    outcome.into_result()
}

/// One pass, from the state database as it is to the report.
fn pass(config: &Config, cli: &Cli, out: &Output, mut db: Option<&mut StateDb>, started: i64) -> Outcome {
    macro_rules! or_stop {
        ($step:expr) => {
            match $step {
                Ok(value) => value,
                Err(error) => return Outcome::stopped(error, started),
            }
        };
    }
    let alias_sync = config.ldap.mapping.aliases.is_some()
        || config.groups.is_some()
        || config
            .sources
            .iter()
            .any(|s| s.ldap.mapping.aliases.is_some() || s.groups.is_some());
    let client = or_stop!(HttpMailcow::new(&config.mailcow, config.mailcow_timeout));
    let filter = cli.override_filter.as_deref().unwrap_or(&config.ldap.search_filter);
    // With several sources, each is read as the config it sees (its ldap, groups and sync);
    // one directory is read as the config itself.
    let several = config.several_sources();
    let source_configs: Vec<Config> = match several {
        true => (0..config.sources.len()).map(|i| config.for_source(i)).collect(),
        false => Vec::new(),
    };
    let seen_by = |i: usize| source_configs.get(i).unwrap_or(config);

    // Bind first: a wrong LDAP password or a server that is down stops the pass before
    // mailcow is contacted. Then the kind of pass: full, or only what changed. (Several
    // sources: each binds as it is read, and one that fails leaves the others to sync.)
    let mut conn = match several {
        true => None,
        false => Some(or_stop!(LdapConnection::connect(&config.ldap))),
    };
    let mut notes = Vec::new();
    let mut start = match conn.as_mut() {
        None => None,
        Some(_) if config.ldap.incremental == Incremental::Off => None,
        Some(conn) => {
            or_stop!(incremental::start(
                config,
                cli,
                db.as_deref(),
                conn,
                alias_sync,
                started,
                &mut notes
            ))
        }
    };
    for note in &notes {
        out.warn(note);
    }
    let mut changes = None;
    if let (Some(start), Some(db), Some(conn)) = (start.as_mut(), db.as_deref(), conn.as_mut()) {
        if start.kind.incremental {
            match or_stop!(incremental::read_changes(config, db, conn, &client, start, started)) {
                Ok(read) => changes = Some(read),
                Err(why) => or_stop!(incremental::fall_back_to_full(start, why, config, conn, started)),
            }
        }
    }

    // State, and the snapshot: both sides, read once (an incremental pass: what changed).
    let (state, mut snap) = match (changes, conn) {
        (Some(changes), Some(conn)) => {
            let state = or_stop!(LoadedState::changed_rows(db.as_deref(), changes.rows.clone()));
            (state, Snapshot::of_changes(changes, conn))
        }
        (_, Some(conn)) => {
            let state = or_stop!(LoadedState::load(db.as_deref(), alias_sync));
            let snap = or_stop!(Snapshot::take(config, filter, &state, &client, alias_sync, conn));
            (state, snap)
        }
        (_, None) => {
            let state = or_stop!(LoadedState::load(db.as_deref(), alias_sync));
            let snap = or_stop!(Snapshot::take_sources(
                &source_configs,
                cli.override_filter.as_deref(),
                &state,
                &client,
                alias_sync
            ));
            (state, snap)
        }
    };
    // The first pass after the original tool: its mailboxes that mailcow has become ours.
    let state = or_stop!(state.take_over_original_tool(db.as_deref_mut(), &snap.mailboxes, started));
    if state.taken_over > 0 {
        out.info(&format!(
            "took over {} mailboxes from the original tool's database ({}){}",
            state.taken_over,
            config.state_file.display(),
            if cli.dry_run { " (dry-run: not recorded)" } else { "" }
        ));
    }

    // Several sources: who holds which person, and which source removes which row.
    let joined = match several {
        true => Some(or_stop!(join_sources(&mut snap, &state.rows, db.as_deref(), out))),
        false => None,
    };

    // Domain admins: their group and mailcow's admins (every pass with them is full; with
    // several sources, the group is read from the first).
    let admins_read = match (&config.domain_admins, snap.sources[0].conn.as_mut()) {
        (Some(admins), Some(conn)) => Some(or_stop!(crate::commands::admins::read(
            config,
            admins,
            conn,
            &client,
            db.as_deref()
        ))),
        (Some(_), None) => {
            out.alert("domain_admins: its group is read from the first source, which could not be read; domain admins are left as they are this pass");
            None
        }
        (None, _) => None,
    };

    // Plan.
    let override_note = cli
        .override_filter
        .as_ref()
        .map(|filter| format!("--override-filter `{filter}` reads only part of the directory"));
    // The templates `templates` names, resolved to mailcow's (one read; none by an
    // incremental pass with nothing to plan, which sends no request at all).
    let nothing_changed = snap.changes_only.is_some() && snap.sources[0].dir.is_empty() && state.rows.is_empty();
    let templates = match config.templates.as_ref().filter(|_| !nothing_changed) {
        Some(rules) => {
            let listed = or_stop!(client.templates());
            let resolved = resolve_templates(&rules.names, listed);
            for (name, found) in &resolved {
                if found.is_none() {
                    out.alert(&format!(
                        "templates: mailcow has no mailbox template `{name}`; its users are created and kept without it"
                    ));
                }
            }
            resolved
        }
        None => Vec::new(),
    };
    // One policy per source read (the only one with the `ldap` section); a source that
    // could not be read plans nothing. Their connections stay open for hashes read again.
    let mut conns: Vec<Option<LdapConnection>> = snap.sources.iter_mut().map(|s| s.conn.take()).collect();
    let mut policies = Vec::new();
    for (i, source) in snap.sources.iter().enumerate().filter(|(_, s)| s.failed.is_none()) {
        let partial: Vec<&String> = source.partial.iter().chain(&override_note).collect();
        policies.push((
            i,
            Policy {
                templates: templates.clone(),
                listed_by_original_tool: state.listed_by_original_tool.clone(),
                partial_view: (!partial.is_empty())
                    .then(|| partial.iter().map(|p| p.as_str()).collect::<Vec<_>>().join("; ")),
                changes_only: snap.changes_only,
                rows_owned: joined.as_ref().map(|j| RowsOwned {
                    owners: j.owners.clone(),
                    source: i as u16,
                }),
                ..policy(seen_by(i), Fingerprinter::new(&state.fingerprint_key))
            },
        ));
    }
    let inputs: Vec<PlanInputs<'_>> = policies
        .iter()
        .map(|(i, policy)| PlanInputs {
            dir: &snap.sources[*i].dir,
            mailboxes: &snap.mailboxes,
            domains: &snap.domains,
            state: &state.rows,
            policy,
            now: started,
        })
        .collect();
    let mut removals: Vec<Plan> = inputs.iter().map(|inputs| plan::removals(*inputs)).collect();
    if several {
        for ((i, _), plan) in policies.iter().zip(&mut removals) {
            let name = &config.sources[*i].name;
            plan.guard = plan.guard.take().map(|g| format!("source `{name}`: {g}"));
            plan.partial_view = plan.partial_view.take().map(|p| format!("source `{name}`: {p}"));
        }
    }
    // mailcow's `{}` for an empty list, while aliases are owned, proves nothing either.
    let aliases_unlisted = alias_sync && snap.aliases.is_empty() && !state.aliases.is_empty();
    // Several sources: one alias plan over all of them (a source unread is a partial view).
    let alias_plan = alias_sync.then(|| {
        let partial = removals.iter().any(|r| r.partial_view.is_some())
            || snap.sources.iter().any(|s| s.failed.is_some())
            || aliases_unlisted;
        plan_aliases(config, &snap, &state, &inputs, partial)
    });
    for source in &snap.sources {
        for warning in &source.dir.warnings {
            out.warning(warning);
        }
    }
    for warning in removals.iter().flat_map(|r| &r.warnings) {
        out.warning(warning);
    }
    for warning in alias_plan.iter().flat_map(|p| &p.warnings) {
        out.warning(warning);
    }
    let admin_plan = match (&config.domain_admins, &admins_read) {
        (Some(admins), Some(read)) => Some(crate::commands::admins::plan(config, admins, read)),
        _ => None,
    };
    if let (Some(read), Some(p)) = (&admins_read, &admin_plan) {
        for warning in &read.warnings {
            out.alert(warning);
        }
        if let Err(e) = &read.members {
            out.alert(&format!(
                "no domain admin removals this pass ({} held back): {e}",
                p.held_back
            ));
        }
        for (who, why) in &p.skipped {
            out.alert(&format!("skipped domain admin {who}: {why}"));
        }
        let known: std::collections::BTreeSet<&str> = snap.domains.iter().map(|d| d.name.as_str()).collect();
        for domain in config.domain_admins.iter().flat_map(|a| &a.domains) {
            if !known.contains(domain.as_str()) {
                out.alert(&format!(
                    "domain_admins.domains: `{domain}` is not a domain in mailcow (mailcow refuses it)"
                ));
            }
        }
    }
    // A user who is not synced needs an admin's action, under cron too.
    for skipped in snap.sources.iter().flat_map(|s| &s.dir.skipped) {
        out.alert(&format!("skipped {}: {}", skipped.dn, skipped.reason));
    }
    for ((i, _), removals) in policies.iter().zip(&removals) {
        let Some(reason) = &removals.partial_view else { continue };
        let aliases_held = alias_plan.as_ref().map_or(0, |p| p.held_back);
        let message = format!(
            "no removals this pass ({} managed mailboxes and {aliases_held} alias changes held back): {reason}",
            removals.held_back
        );
        // An incomplete view needs an admin's eye, unless asked for with --override-filter.
        if snap.sources[*i].partial.is_empty() && cli.override_filter.is_some() {
            out.warn(&message);
        } else {
            out.alert(&message);
        }
    }
    if aliases_unlisted && removals.iter().all(|r| r.partial_view.is_none()) {
        out.alert(&format!(
            "no alias removals this pass: mailcow listed no aliases while {} are owned by this tool",
            state.aliases.len()
        ));
    }
    let mut summary = Summary {
        taken_over: state.taken_over,
        dry_run: cli.dry_run,
        aliases: alias_sync,
        started,
        ldap_entries: snap.sources.iter().map(|s| s.dir.entries).sum(),
        managed_before: removals.iter().map(|r| r.managed).sum::<usize>()
            + joined.as_ref().map_or(0, |j| j.held_unread),
        reads: snap.reads.unwrap_or(
            2 + usize::from(alias_sync)
                + snap
                    .send_as
                    .iter()
                    .filter(|(m, _)| crate::edge::mailcow::by_name_safe(m))
                    .count(),
        ) + usize::from(config.templates.is_some() && !nothing_changed),
        kind: start.as_ref().map(|s| (s.kind.name(), s.kind.why.clone())),
        domain_admins: admin_plan.as_ref().map(|p| crate::commands::admins::report(p, None)),
        sources: match several {
            true => snap.sources.iter().map(SourceDir::report).collect(),
            false => Vec::new(),
        },
        ..Summary::default()
    };
    let show = Show {
        out,
        cli,
        admin_requests: admin_plan.as_ref().map_or(0, crate::commands::admins::requests),
    };

    // Guard.
    let guard = removals
        .iter()
        .find_map(|r| r.guard.clone())
        .or_else(|| alias_plan.as_ref().and_then(|p| p.guard.clone()))
        .or_else(|| admin_plan.as_ref().and_then(|p| p.guard.clone()));
    summary.guard = guard.clone();
    if let Some(guard) = &guard {
        if !cli.force {
            summary.exit_code = exit::GUARD;
            summary.error = Some(format!("refused: {guard}"));
            show.admin_lines(admin_plan.as_ref(), None);
            show.planned(&mut summary, &inputs, &removals, alias_plan.as_ref());
            return Outcome::stopped(Error::Guard(guard.clone()), started);
        }
        out.warn(&format!("--force overrides the safety guard: {guard}"));
    }

    // Dry-run.
    if cli.dry_run {
        show.admin_lines(admin_plan.as_ref(), None);
        show.planned(&mut summary, &inputs, &removals, alias_plan.as_ref());
        return Outcome::DryRun;
    }

    // Apply → settle → commit, one chunk at a time, then the removals, then the aliases.
    let mut applying = Applying {
        client: &client,
        db: db.as_deref_mut(),
        state: &state.rows,
        concurrency: config.sync.concurrency,
        progress: Progress::new(out, &inputs, &removals),
        fatal: None,
        writes: 0,
        kept: KeptOutcomes::default(),
        failures: FailureLog::default(),
        counts: Counts::default(),
        domains: apply::DomainGate::default(),
    };
    let mut unread = Vec::new();
    // A renamed mailbox gets its other changes next pass: an incremental one reads its
    // entry again for them.
    let mut follow_ups: Vec<Reread> = Vec::new();
    for ((i, policy), inputs) in policies.iter().zip(&inputs) {
        let mut rereader = conns[*i].take().map(|conn| HashRereader::new(seen_by(*i), conn));
        applying.write_for(&config.sources, *i);
        for mut chunk in plan::user_chunks(*inputs, CHUNK_ITEMS) {
            show.announce(&chunk);
            for action in &chunk.actions {
                if matches!(action.kind, plan::ActionKind::Rename { .. }) {
                    follow_ups.extend(inputs.dir.user(&action.uid).map(|u| Reread {
                        dn: u.dn,
                        follow_up: true,
                    }));
                }
            }
            if let Some(rereader) = rereader.as_mut().filter(|_| applying.fatal.is_none()) {
                let failed = rereader.fill(&mut chunk, inputs.dir, &policy.fingerprinter);
                unread.extend(failed);
            }
            let outcomes = applying.part(&chunk);
            show.lines(&Part {
                plan: &chunk,
                outcomes: Some(&outcomes),
            });
        }
        if let Some(rereader) = rereader {
            rereader.close();
        }
    }
    let mut removal_outcomes = Vec::new();
    for ((i, _), removals) in policies.iter().zip(&removals) {
        applying.write_for(&config.sources, *i);
        let outcomes = applying.part(removals);
        show.lines(&Part {
            plan: removals,
            outcomes: Some(&outcomes),
        });
        removal_outcomes.push(outcomes);
    }
    let (alias_outcomes, alias_delta) = match &alias_plan {
        Some(p) => {
            let outcomes = applying.aliases(p);
            let delta = aliases::settle_aliases(p, &outcomes.iter().map(AliasOutcome::id).collect::<Vec<_>>());
            (Some(outcomes), delta)
        }
        None => (None, aliases::AliasDelta::default()),
    };
    applying.progress.finish();
    let alias_part = alias_plan.as_ref().map(|plan| AliasPart {
        plan,
        outcomes: alias_outcomes.as_deref(),
    });
    if let Some(part) = &alias_part {
        show.alias_lines(part);
        part.count(&mut applying.counts);
        applying.failures.add_aliases(part);
    }
    // Domain admins last: a fatal error before them leaves them unsent.
    let admin_outcomes = match &admin_plan {
        Some(p) if applying.fatal.is_none() => {
            let (outcomes, fatal) = apply::apply_admins(&client, p);
            applying.writes += crate::commands::admins::requests(p);
            if applying.fatal.is_none() {
                applying.fatal = fatal;
            }
            Some(outcomes)
        }
        _ => None,
    };
    let mut admin_record = (Vec::new(), Vec::new());
    if let (Some(p), Some(outcomes)) = (&admin_plan, &admin_outcomes) {
        show.admin_lines(Some(p), Some(outcomes));
        crate::commands::admins::count(outcomes, p.skipped.len(), &mut applying.counts);
        for o in outcomes.iter().filter(|o| o.result.is_err()) {
            applying.failures.add(FailureRecord {
                address: o.action.username.clone(),
                uid: None,
                action: format!("domain_admin_{}", o.action.kind.verb()),
                message: o.result.clone().err().unwrap_or_default(),
            });
        }
        admin_record = crate::commands::admins::settle(p, outcomes);
        summary.domain_admins = Some(crate::commands::admins::report(p, Some(outcomes)));
    }
    if let (Some(read), Some(admins)) = (&admins_read, &config.domain_admins) {
        if let Err(e) = &read.members {
            applying.failures.add(FailureRecord {
                address: admins.group.clone(),
                uid: None,
                action: "domain_admin_group".into(),
                message: e.clone(),
            });
            applying.counts.failed += 1;
        }
    }
    if let Some(group_failure) = &snap.group_failure {
        applying.failures.add(FailureRecord {
            address: group_failure.address.clone(),
            uid: None,
            action: "group_search".into(),
            message: group_failure.reason.clone(),
        });
    }
    // A source that could not be read is a failure of the pass (exit 3); the others synced.
    for (source, config) in snap.sources.iter().zip(&config.sources) {
        if let Some(error) = &source.failed {
            applying.failures.add(FailureRecord {
                address: format!("source {}", config.name),
                uid: None,
                action: "source_read".into(),
                message: error.to_string(),
            });
            applying.counts.failed += 1;
        }
    }

    // Outcome.
    let Applying {
        fatal,
        writes,
        kept,
        failures,
        mut counts,
        ..
    } = applying;
    counts.skipped += snap.sources.iter().map(|s| s.dir.skipped.len()).sum::<usize>();
    let exit_code = match (&fatal, counts.failed) {
        (Some(e), _) => e.exit_code(),
        (None, 0) if snap.group_failure.is_none() => exit::OK,
        (None, _) => exit::ITEMS_FAILED,
    };
    summary.applied = true;
    summary.writes = writes;
    summary.exit_code = exit_code;
    summary.finished = now();
    summary.error = fatal.as_ref().map(ToString::to_string);
    summary.counts = counts.clone();
    let run = RunRecord {
        started,
        finished: summary.finished,
        exit_code,
        // An incremental pass read only the changed users: the count is the last full pass's.
        users: match &start {
            Some(s) if s.kind.incremental => s.next.users,
            _ => snap.sources.iter().map(|s| s.dir.len()).sum(),
        },
        counts,
        message: summary.error.clone(),
        kind: start.as_ref().map(|s| s.kind.name().to_owned()),
        why: start.as_ref().map(|s| s.kind.why.clone()),
    };
    // The mark moves only with a pass that ran to its end; a pass that stopped keeps the
    // old one, so that its changes are read again. Incremental passes off: no mark, so that
    // turning them on later never starts from a stale one.
    let reread: Option<Vec<Reread>> = match &start {
        None => None,
        // Nothing changed (then nothing was renamed either): the table stays as it is.
        Some(s) if s.kind.incremental && snap.reread.is_none() => None,
        Some(_) => {
            let skipped = snap.reread.clone().unwrap_or_else(|| {
                snap.sources[0]
                    .dir
                    .skipped
                    .iter()
                    .map(|s| Reread {
                        dn: s.dn.clone(),
                        follow_up: false,
                    })
                    .collect()
            });
            Some(skipped.into_iter().chain(follow_ups).collect())
        }
    };
    if let Some(s) = start.as_mut().filter(|s| !s.kind.incremental) {
        s.next.users = snap.sources[0].dir.len();
    }
    let end = PassEnd {
        mark: start.as_ref().filter(|_| fatal.is_none()).map(|s| &s.next),
        clear_mark: start.is_none(),
        reread: reread.as_deref(),
    };

    // Commit. A pass that ran to its end has used the original tool's table: it goes, and
    // with it the password hashes that tool copied from LDAP.
    let committed = match db {
        Some(db) => db
            .commit_domain_admins(&admin_record.0, &admin_record.1, started)
            .and_then(|()| db.commit(&alias_delta, &failures.records, &run, &end))
            .and_then(|()| match &fatal {
                None if state.listed_by_original_tool.is_empty() => Ok(()),
                None => db.drop_original_tool_table(),
                Some(_) => Ok(()),
            })
            .and_then(|()| db.set_row_sources(joined.as_ref().map_or(&[][..], |j| &j.moved))),
        None => Ok(()),
    };

    // Report.
    let dirs: Vec<&Directory> = snap.sources.iter().map(|s| &s.dir).collect();
    show.end(
        &summary,
        &dirs,
        &mut |sink: &mut Sink<'_>| {
            let mut at = 0;
            for chunk in inputs.iter().flat_map(|inputs| plan::user_chunks(*inputs, CHUNK_ITEMS)) {
                let mut chunk = chunk;
                chunk.fail_creates(&unread);
                let outcomes = kept.outcomes(at, chunk.actions.len());
                at += chunk.actions.len();
                sink(Part {
                    plan: &chunk,
                    outcomes: Some(&outcomes),
                })?;
            }
            for (removals, outcomes) in removals.iter().zip(&removal_outcomes) {
                sink(Part {
                    plan: removals,
                    outcomes: Some(outcomes),
                })?;
            }
            Ok(())
        },
        alias_part,
    );
    match (fatal, committed) {
        (_, Err(error)) => Outcome::Stopped {
            error,
            run,
            committed: false,
        },
        (Some(error), Ok(())) => Outcome::Stopped {
            error,
            run,
            committed: true,
        },
        (None, Ok(())) => Outcome::Done(run),
    }
}

/// The part of the config the planner needs.
fn policy(config: &Config, fingerprinter: Fingerprinter) -> Policy {
    Policy {
        on_removed: config.sync.on_removed,
        delete_after_days: config.sync.delete_after_days,
        max_removals: config.sync.max_removals,
        offboard: config.sync.offboard,
        password: config.sync.password,
        authsource: config.sync.authsource,
        tag: config.sync.tag.clone(),
        adopt: config.sync.adopt,
        idp_mailboxes: config.sync.idp_mailboxes,
        on_address_change: config.sync.on_address_change,
        listed_by_original_tool: BTreeSet::new(),
        default_quota_mib: config.sync.default_quota_mib,
        domains: config.sync.domains.clone(),
        create_domains: config.sync.create_domains.clone(),
        fingerprinter,
        partial_view: None,
        changes_only: None,
        rows_owned: None,
        access_managed: config.access.as_ref().map_or(0, |a| a.managed),
        templates: Vec::new(),
    }
}

/// Each name with mailcow's template of that name (the first, should two share it).
pub fn resolve_templates(
    names: &[String],
    listed: Vec<crate::core::access::MailboxTemplate>,
) -> Vec<(String, Option<crate::core::access::MailboxTemplate>)> {
    names
        .iter()
        .map(|name| (name.clone(), listed.iter().find(|t| &t.name == name).cloned()))
        .collect()
}

/// What the state database holds at the start of a pass (empty for a dry-run without one).
struct LoadedState {
    rows: Arc<ManagedRows>,
    fingerprint_key: Vec<u8>,
    aliases: AliasState,
    /// The send-as grants this tool made (`groups.as: "sender_acl"`).
    grants: sender_acl::GrantState,
    /// Addresses the original tool's `user` table lists.
    listed_by_original_tool: BTreeSet<String>,
    /// Its rows (the DN it recorded, the address), until they are taken over.
    original_tool_rows: Vec<(String, String)>,
    /// Rows this pass took over from that table.
    taken_over: usize,
}

impl LoadedState {
    fn load(db: Option<&StateDb>, alias_sync: bool) -> Result<LoadedState> {
        let Some(db) = db else {
            return Ok(LoadedState {
                rows: Arc::default(),
                fingerprint_key: crate::edge::random::random_bytes(32),
                aliases: AliasState::new(),
                grants: sender_acl::GrantState::new(),
                listed_by_original_tool: BTreeSet::new(),
                original_tool_rows: Vec::new(),
                taken_over: 0,
            });
        };
        let original_tool_rows = db.original_tool_rows()?;
        Ok(LoadedState {
            rows: Arc::new(db.load()?),
            fingerprint_key: db.fingerprint_key()?,
            aliases: if alias_sync {
                db.load_aliases()?
            } else {
                AliasState::new()
            },
            grants: if alias_sync {
                db.load_grants()?
            } else {
                sender_acl::GrantState::new()
            },
            listed_by_original_tool: original_tool_rows.iter().map(|(_, mail)| mail.clone()).collect(),
            original_tool_rows,
            taken_over: 0,
        })
    }

    /// The state of an incremental pass: the rows the changes touch (the original tool's
    /// table is gone: its takeover forces a full pass).
    fn changed_rows(db: Option<&StateDb>, rows: Arc<ManagedRows>) -> Result<LoadedState> {
        Ok(LoadedState {
            rows,
            fingerprint_key: match db {
                Some(db) => db.fingerprint_key()?,
                None => crate::edge::random::random_bytes(32),
            },
            aliases: AliasState::new(),
            grants: sender_acl::GrantState::new(),
            listed_by_original_tool: BTreeSet::new(),
            original_tool_rows: Vec::new(),
            taken_over: 0,
        })
    }

    /// Take over the original tool's mailboxes: each address its `user` table lists that
    /// mailcow has and no row manages yet becomes a managed row (uid = the DN it recorded),
    /// so that a user who left before the switch is handled by `on_removed` like any other.
    /// A writing pass records them at once; a dry-run holds them in memory.
    fn take_over_original_tool(
        mut self,
        db: Option<&mut StateDb>,
        mailboxes: &Mailboxes,
        now: i64,
    ) -> Result<LoadedState> {
        let rows = &self.rows;
        let new: Vec<(String, String)> = std::mem::take(&mut self.original_tool_rows)
            .into_iter()
            .filter(|(uid, mail)| {
                mailboxes.get(mail).is_some() && !rows.contains(uid) && rows.by_address(mail).is_none()
            })
            .collect();
        let Some(db) = db.filter(|_| !new.is_empty()) else {
            return Ok(self);
        };
        if db.is_read_only() {
            self.taken_over = new.len();
            let taken = new.into_iter().map(|(uid, mail)| ManagedMailbox {
                dn: uid.clone(),
                uid,
                address: mail,
                first_seen: now,
                last_seen: now,
                ..ManagedMailbox::default()
            });
            self.rows = Arc::new(ManagedRows::from_rows(self.rows.values().chain(taken)));
        } else {
            self.taken_over = db.record_taken_over(&new, now)?;
            self.rows = Arc::new(db.load()?);
        }
        Ok(self)
    }
}

/// Both sides as one pass reads them.
struct Snapshot {
    /// The directory of the `ldap` section, or one per source (in the config's order).
    sources: Vec<SourceDir>,
    groups: Option<GroupsRead>,
    group_failure: Option<PlannedFailure>,
    domains: Vec<Domain>,
    mailboxes: Mailboxes,
    aliases: Vec<MailcowAlias>,
    /// The send-as lists of the member mailboxes (`groups.as: "sender_acl"`).
    send_as: sender_acl::SendAsLists,
    /// Set for an incremental pass: what its guard counts from.
    changes_only: Option<ChangesOnly>,
    /// mailcow reads an incremental pass made (a full pass: its fixed bulk reads).
    reads: Option<usize>,
    /// The DNs to read again next pass, when an incremental pass says which.
    reread: Option<Vec<Reread>>,
}

/// One directory as a pass read it.
struct SourceDir {
    /// The source's name (`sources`); `None` for the `ldap` section.
    name: Option<String>,
    dir: Directory,
    /// Why the view of it is incomplete (none: complete).
    partial: Vec<String>,
    /// Kept open for password hashes read again; `None` once taken, or when unread.
    conn: Option<LdapConnection>,
    /// Why it could not be read (several sources: the others sync; one alone stops the pass).
    failed: Option<Error>,
}

impl SourceDir {
    fn read(name: Option<String>, read: DirectoryRead) -> SourceDir {
        SourceDir {
            name,
            dir: read.dir,
            partial: read.partial,
            conn: Some(read.conn),
            failed: None,
        }
    }

    /// Its line in the JSON report.
    fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "ldap_entries": self.dir.entries,
            "users": self.dir.len(),
            "skipped": self.dir.skipped.len(),
            "error": self.failed.as_ref().map(ToString::to_string),
        })
    }
}

impl Snapshot {
    fn of_changes(changes: incremental::Changes, conn: LdapConnection) -> Snapshot {
        let mut dir = changes.dir;
        dir.entries = changes.changed_entries;
        Snapshot {
            sources: vec![SourceDir {
                name: None,
                dir,
                partial: Vec::new(),
                conn: Some(conn),
                failed: None,
            }],
            groups: None,
            group_failure: None,
            domains: changes.domains,
            mailboxes: changes.mailboxes,
            aliases: Vec::new(),
            send_as: sender_acl::SendAsLists::new(),
            changes_only: Some(changes.changes_only),
            reads: Some(changes.reads),
            reread: changes.reread,
        }
    }

    /// Bind first, so that a wrong LDAP password or a server that is down stops the pass
    /// before mailcow is contacted; then read both sides at the same time: a pass costs the
    /// slower of the two reads, not their sum. An LDAP failure is reported first: a short
    /// directory must never reach the planner.
    fn take(
        config: &Config,
        filter: &str,
        state: &LoadedState,
        client: &dyn MailcowApi,
        alias_sync: bool,
        conn: LdapConnection,
    ) -> Result<Snapshot> {
        let builder = builder_for(config, state);
        let (directory, mailcow) = std::thread::scope(|scope| {
            let mailcow = scope.spawn(|| read_mailcow(config, client, state, alias_sync));
            let directory = ldap_read::search_directory(conn, config, filter, builder);
            (directory, joined(mailcow))
        });
        let mut read = directory?;
        let mailcow = mailcow?;
        let groups = read.groups.take();
        let group_failure = read.group_failure.take();
        let sources = vec![SourceDir::read(None, read)];
        Snapshot::of_full_pass(config, client, state, sources, groups, group_failure, mailcow)
    }

    /// Several sources: each binds and is read in its own thread, beside mailcow's read.
    /// A source that cannot be bound or read is kept as failed; the pass stops only when
    /// every one fails (with the first's error).
    fn take_sources(
        configs: &[Config],
        override_filter: Option<&str>,
        state: &LoadedState,
        client: &dyn MailcowApi,
        alias_sync: bool,
    ) -> Result<Snapshot> {
        let conns: Vec<Result<LdapConnection>> = configs.iter().map(|c| LdapConnection::connect(&c.ldap)).collect();
        if conns.iter().all(Result::is_err) {
            return Err(first_error(conns));
        }
        let (reads, mailcow) = std::thread::scope(|scope| {
            let mailcow = scope.spawn(|| read_mailcow(&configs[0], client, state, alias_sync));
            let readers: Vec<_> = configs
                .iter()
                .zip(conns)
                .map(|(config, conn)| {
                    scope.spawn(move || {
                        let builder = builder_for(config, state);
                        let filter = override_filter.unwrap_or(&config.ldap.search_filter);
                        ldap_read::search_directory(conn?, config, filter, builder)
                    })
                })
                .collect();
            let reads: Vec<Result<DirectoryRead>> = readers.into_iter().map(joined).collect();
            (reads, joined(mailcow))
        });
        let mailcow = mailcow?;
        if reads.iter().all(Result::is_err) {
            return Err(first_error(reads));
        }
        // The groups of every source are one list: a group address two sources claim is
        // nobody's alias (the alias plan voids both claims).
        let mut groups: Option<GroupsRead> = None;
        let mut group_failure = None;
        let sources = configs
            .iter()
            .zip(reads)
            .enumerate()
            .map(|(i, (_, read))| {
                let name = Some(configs[0].sources[i].name.clone());
                match read {
                    Ok(mut read) => {
                        if let Some(read) = read.groups.take() {
                            let all = groups.get_or_insert_with(GroupsRead::default);
                            all.groups.extend(read.groups);
                            all.entries += read.entries;
                            all.protected.extend(read.protected);
                            all.references.extend(read.references);
                        }
                        group_failure = group_failure.take().or(read.group_failure.take());
                        SourceDir::read(name, read)
                    }
                    Err(error) => SourceDir {
                        name,
                        dir: Directory::default(),
                        partial: Vec::new(),
                        conn: None,
                        failed: Some(error),
                    },
                }
            })
            .collect();
        Snapshot::of_full_pass(&configs[0], client, state, sources, groups, group_failure, mailcow)
    }

    /// A full pass's snapshot from what it read, with the send-as lists of the groups'
    /// members when groups give send-as rights (one read by name each).
    fn of_full_pass(
        config: &Config,
        client: &dyn MailcowApi,
        state: &LoadedState,
        sources: Vec<SourceDir>,
        groups: Option<GroupsRead>,
        group_failure: Option<PlannedFailure>,
        (domains, mailboxes, aliases): (Vec<Domain>, Mailboxes, Vec<MailcowAlias>),
    ) -> Result<Snapshot> {
        let send_as = match &groups {
            Some(g) if config.groups_send_as() => read_send_as(
                client,
                &sender_acl::mailboxes_to_read(&g.groups, &state.grants, &mailboxes),
            )?,
            _ => sender_acl::SendAsLists::new(),
        };
        Ok(Snapshot {
            sources,
            groups,
            group_failure,
            domains,
            mailboxes,
            aliases,
            send_as,
            changes_only: None,
            reads: None,
            reread: None,
        })
    }
}

/// The directory of a full pass, read against the state's rows. A hash whose fingerprint
/// the state already holds is not kept in memory, unless `always` sends it on every pass.
fn builder_for(config: &Config, state: &LoadedState) -> DirectoryBuilder {
    let elide = matches!(config.sync.password, PasswordMode::Changed | PasswordMode::Create);
    let fingerprinter = elide.then(|| Fingerprinter::new(&state.fingerprint_key));
    DirectoryBuilder::against(ldap_read::reading(config), state.rows.clone(), fingerprinter)
}

/// mailcow's side of a full pass: domains, mailboxes (and aliases when they are synced).
fn read_mailcow(
    config: &Config,
    client: &dyn MailcowApi,
    state: &LoadedState,
    alias_sync: bool,
) -> Result<(Vec<Domain>, Mailboxes, Vec<MailcowAlias>)> {
    let domains = client.domains()?;
    let mailboxes = client.mailboxes(config.sync.tag.as_deref(), state.rows.clone())?;
    let aliases = if alias_sync { client.aliases()? } else { Vec::new() };
    Ok((domains, mailboxes, aliases))
}

/// The first error of results that all failed.
fn first_error<T>(results: Vec<Result<T>>) -> Error {
    match results.into_iter().find_map(Result::err) {
        Some(error) => error,
        None => Error::Usage("no source to read".into()),
    }
}

/// The result of a reading thread (one that panicked is an error, not a pass that hangs).
fn joined<T>(thread: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    thread.join().unwrap_or_else(|_| {
        Err(Error::Mailcow {
            endpoint: "get".into(),
            message: "the reading thread failed".into(),
        })
    })
}

/// How several sources share the state: who owns which row, which rows moved.
struct Joined {
    /// The owning source of each state row (see [`RowsOwned`]).
    owners: Arc<Vec<u16>>,
    /// Rows whose user is now in another source than the one recorded: (uid, source).
    moved: Vec<(String, String)>,
    /// Managed mailboxes of sources that could not be read (left alone this pass).
    held_unread: usize,
}

/// Several sources read: skip the users that two of them hold (same uid or address),
/// tell each directory about the people of the others, and find each row's source.
fn join_sources(snap: &mut Snapshot, rows: &ManagedRows, db: Option<&StateDb>, out: &Output) -> Result<Joined> {
    let names: Vec<String> = snap
        .sources
        .iter()
        .map(|s| s.name.clone().unwrap_or_default())
        .collect();
    // Rows: the recorded source; none recorded = the first (a config that had `ldap`).
    let mut owners = vec![0u16; rows.len()];
    for (uid, source) in db.map(StateDb::row_sources).transpose()?.unwrap_or_default() {
        if let Some(r) = rows.position(&uid) {
            owners[r] = names
                .iter()
                .position(|n| *n == source)
                .map_or(RowsOwned::NOBODY, |i| i as u16);
        }
    }
    // Users two sources hold: neither is synced (nothing of theirs changes) until one lets go.
    let mut conflicts: Vec<std::collections::HashMap<String, String>> = vec![Default::default(); names.len()];
    for (i, source) in snap.sources.iter().enumerate() {
        source.dir.each_person(|uid, mail| {
            for (j, other) in snap.sources.iter().enumerate().filter(|(j, _)| *j != i) {
                if other.dir.holds_user(uid, mail) {
                    conflicts[i].insert(
                        uid.to_owned(),
                        format!(
                            "{mail} (or its uid) is also a user of source `{}`: neither is synced until only one source has it",
                            names[j]
                        ),
                    );
                }
            }
        });
    }
    for (source, conflicts) in snap.sources.iter_mut().zip(&conflicts) {
        if !conflicts.is_empty() {
            source.dir.exclude(|uid, _| conflicts.get(uid).cloned());
        }
    }
    // A source that could not be read still holds its people: its rows are nobody else's.
    let mut held_unread = 0;
    let mut unread = crate::core::directory::Elsewhere::default();
    for (r, owner) in owners.iter().enumerate() {
        if snap.sources.get(*owner as usize).is_some_and(|s| s.failed.is_some()) {
            let row = rows.view(r);
            unread.add(row.uid, row.address);
            held_unread += usize::from(row.disabled_at.is_none());
        }
    }
    for (i, source) in snap.sources.iter().enumerate() {
        if let Some(error) = &source.failed {
            let held = owners.iter().filter(|&&o| o as usize == i).count();
            out.alert(&format!(
                "source `{}` could not be read, so its {held} managed mailboxes are left as they are this pass: {error}",
                names[i]
            ));
        }
    }
    let everyone: Vec<Arc<crate::core::directory::Elsewhere>> = (0..snap.sources.len())
        .map(|i| {
            let mut elsewhere = crate::core::directory::Elsewhere::default();
            elsewhere.extend(&unread);
            for (_, other) in snap.sources.iter().enumerate().filter(|(j, _)| *j != i) {
                elsewhere.add_directory(&other.dir);
            }
            Arc::new(elsewhere)
        })
        .collect();
    for (source, elsewhere) in snap.sources.iter_mut().zip(everyone) {
        source.dir.set_elsewhere(elsewhere);
    }
    // Rows whose user is in another source now (the rows written this pass say so anyway).
    let mut moved = Vec::new();
    let mut orphans = 0;
    for (r, owner) in owners.iter_mut().enumerate() {
        let uid = rows.uid_at(r);
        match snap.sources.iter().position(|s| s.dir.holds_uid(uid)) {
            Some(i) if i as u16 != *owner => {
                moved.push((uid.to_owned(), names[i].clone()));
                *owner = i as u16;
            }
            None if *owner == RowsOwned::NOBODY => orphans += 1,
            _ => {}
        }
    }
    if orphans > 0 {
        out.alert(&format!(
            "{orphans} managed mailboxes belong to a source the config no longer names; no source removes them \
             (give the source its old name back, or remove them by hand)"
        ));
    }
    Ok(Joined {
        owners: Arc::new(owners),
        moved,
        held_unread,
    })
}

/// The alias plan. It needs to know which users this pass creates and which it does not
/// sync, so the users' plan is walked once for that (a chunk at a time) before anything is
/// applied, and the alias guard is known before the first write.
fn plan_aliases(
    config: &Config,
    snap: &Snapshot,
    state: &LoadedState,
    inputs: &[PlanInputs<'_>],
    partial_view: bool,
) -> AliasPlan {
    let mut creating = BTreeSet::new();
    let mut not_synced = BTreeSet::new();
    for chunk in inputs.iter().flat_map(|inputs| plan::user_chunks(*inputs, CHUNK_ITEMS)) {
        creating.extend(
            chunk
                .actions
                .iter()
                .filter(|a| matches!(a.kind, plan::ActionKind::Create { .. }))
                .map(|a| a.address.clone()),
        );
        not_synced.extend(chunk.skipped.into_iter().map(|s| s.address));
        not_synced.extend(chunk.failures.into_iter().map(|f| f.address));
    }
    let no_protection = BTreeSet::new();
    let merged = match snap.sources.len() {
        1 => None,
        _ => Some(Directory::merged(
            &snap.sources.iter().map(|s| &s.dir).collect::<Vec<_>>(),
        )),
    };
    let send_as = config.groups_send_as();
    let mut plan = aliases::plan_aliases(
        merged.as_ref().unwrap_or(&snap.sources[0].dir),
        &AliasInputs {
            groups: snap.groups.as_ref().filter(|_| !send_as).map(|g| g.groups.as_slice()),
            group_entries: snap.groups.as_ref().map_or(0, |g| g.entries),
            mailboxes: &snap.mailboxes,
            aliases: &snap.aliases,
            domains: &snap.domains,
            state: &state.aliases,
            creating: &creating,
            protected: snap.groups.as_ref().map_or(&no_protection, |g| &g.protected),
            on_removed: config.sync.on_removed,
            scope: &config.sync.domains,
            mailbox_state: &state.rows,
            not_synced: &not_synced,
            // A failed group search is part of the plan's partial view.
            partial_view,
            max_removals: config.sync.max_removals,
        },
    );
    if let Some(g) = snap.groups.as_ref().filter(|_| send_as) {
        let inputs = sender_acl::GrantInputs {
            groups: &g.groups,
            group_entries: g.entries,
            mailboxes: &snap.mailboxes,
            aliases: &snap.aliases,
            lists: &snap.send_as,
            state: &state.grants,
            not_synced: &not_synced,
            protected: &g.protected,
            scope: &config.sync.domains,
            partial_view,
            max_removals: config.sync.max_removals,
        };
        sender_acl::plan_grants(&inputs, &mut plan);
    }
    plan
}

/// The send-as list of each mailbox (one `get/mailbox/{address}` each); an address that
/// cannot be named in a path is not read, its list unknown, so it is never written.
fn read_send_as(client: &dyn MailcowApi, mailboxes: &[&str]) -> Result<sender_acl::SendAsLists> {
    let mut out = sender_acl::SendAsLists::new();
    for m in mailboxes {
        let list = if crate::edge::mailcow::by_name_safe(m) {
            match client.sender_acl(m)? {
                Some(list) => list,
                None => continue,
            }
        } else {
            None
        };
        out.push(((*m).to_owned(), list));
    }
    Ok(out)
}

/// The applying half of a pass: each part applied, settled and committed, its outcomes
/// counted and kept (compactly) for the report.
struct Applying<'a> {
    client: &'a dyn MailcowApi,
    db: Option<&'a mut StateDb>,
    state: &'a ManagedRows,
    concurrency: usize,
    progress: Progress,
    /// The error that stopped the pass: nothing is sent after it.
    fatal: Option<Error>,
    writes: usize,
    kept: KeptOutcomes,
    failures: FailureLog,
    counts: Counts,
    /// The domains whose creation failed in an earlier part.
    domains: apply::DomainGate,
}

impl Applying<'_> {
    /// The rows written from now on are those of source `i` (with `sources`).
    fn write_for(&mut self, sources: &[crate::config::Source], i: usize) {
        if let Some(db) = self.db.as_deref_mut() {
            db.write_for_source(sources.get(i).map(|s| s.name.as_str()));
        }
    }

    /// Apply one part (unless the pass has stopped: then it is not attempted), record in the
    /// state database what mailcow confirmed, and the state changes that need no write.
    fn part(&mut self, part: &Plan) -> Vec<ItemOutcome> {
        let outcomes = if self.fatal.is_none() {
            let progress = &mut self.progress;
            let applied = apply::apply_with(
                self.client,
                part,
                self.concurrency,
                &mut self.domains,
                &mut |done, _| progress.show(done),
            );
            self.progress.sent(applied.requests);
            self.writes += applied.requests;
            self.fatal = applied.fatal;
            applied.results
        } else {
            vec![ItemOutcome::NotAttempted; part.actions.len()]
        };
        let confirmed: Vec<bool> = outcomes.iter().map(ItemOutcome::is_applied).collect();
        let delta = plan::settle(self.state, part, &confirmed);
        if let Some(Err(e)) = self.db.as_deref_mut().map(|db| db.commit_rows(&delta)) {
            // Nothing more is sent that could not be recorded.
            self.fatal.get_or_insert(e);
        }
        let reported = Part {
            plan: part,
            outcomes: Some(&outcomes),
        };
        reported.count(&mut self.counts);
        self.failures.add_part(&reported);
        self.kept.keep(&outcomes);
        outcomes
    }

    /// Apply the alias plan, unless the mailbox changes stopped the pass.
    fn aliases(&mut self, plan: &AliasPlan) -> Vec<AliasOutcome> {
        if self.fatal.is_some() {
            return vec![AliasOutcome::NotAttempted; plan.actions.len()];
        }
        let applied = apply::apply_aliases(self.client, plan);
        self.writes += applied.requests;
        self.fatal = applied.fatal;
        applied.results
    }
}

/// The outcome of every mailbox action of a pass in four bytes each (a failure's message
/// is kept once however many actions failed with it), for the report made at the end.
#[derive(Default)]
struct KeptOutcomes {
    /// `NOT_ATTEMPTED`, `APPLIED`, or `FAILED + k` for the k-th message.
    codes: Vec<u32>,
    messages: Vec<String>,
    message_codes: std::collections::BTreeMap<String, u32>,
}

const NOT_ATTEMPTED: u32 = 0;
const APPLIED: u32 = 1;
const FAILED: u32 = 2;

impl KeptOutcomes {
    fn keep(&mut self, outcomes: &[ItemOutcome]) {
        for outcome in outcomes {
            let code = match outcome {
                ItemOutcome::NotAttempted => NOT_ATTEMPTED,
                ItemOutcome::Applied => APPLIED,
                ItemOutcome::Failed(message) => match self.message_codes.get(message) {
                    Some(&k) => FAILED + k,
                    None => {
                        let k = self.messages.len() as u32;
                        self.messages.push(message.clone());
                        self.message_codes.insert(message.clone(), k);
                        FAILED + k
                    }
                },
            };
            self.codes.push(code);
        }
    }

    /// The outcomes of `n` actions from the `at`-th on (not attempted past the last kept).
    fn outcomes(&self, at: usize, n: usize) -> Vec<ItemOutcome> {
        (at..at + n)
            .map(|i| match self.codes.get(i).copied().unwrap_or(NOT_ATTEMPTED) {
                NOT_ATTEMPTED => ItemOutcome::NotAttempted,
                APPLIED => ItemOutcome::Applied,
                k => ItemOutcome::Failed(self.messages[(k - FAILED) as usize].clone()),
            })
            .collect()
    }
}

/// Where the report's walk over the parts hands each part.
type Sink<'a> = dyn FnMut(Part<'_>) -> std::io::Result<()> + 'a;

/// The failures of a pass, for `status`: the first [`MAX_RECORDED_FAILURES`].
#[derive(Default)]
struct FailureLog {
    records: Vec<FailureRecord>,
}

impl FailureLog {
    fn add(&mut self, record: FailureRecord) {
        if self.records.len() < MAX_RECORDED_FAILURES {
            self.records.push(record);
        }
    }

    fn add_part(&mut self, part: &Part<'_>) {
        let failed = part.plan.actions.iter().zip(part.outcomes.unwrap_or_default());
        self.add_all(
            &part.plan.failures,
            "create",
            failed.filter_map(|(a, o)| {
                let uid = Some(a.uid.as_str()).filter(|u| !u.is_empty());
                Some((a.address.as_str(), uid, a.kind.verb(), o.error()?))
            }),
        );
    }

    fn add_aliases(&mut self, part: &AliasPart<'_>) {
        let failed = part.plan.actions.iter().zip(part.outcomes.unwrap_or_default());
        self.add_all(
            &part.plan.failures,
            "alias_add",
            failed.filter_map(|(a, o)| Some((a.address.as_str(), None, a.kind.verb(), o.error()?))),
        );
        self.add_all(&part.plan.grant_failures, "sender_acl_update", std::iter::empty());
    }

    /// The planned failures (recorded as `planned_as`), then each failed action:
    /// (address, uid, verb, message).
    fn add_all<'a>(
        &mut self,
        planned: &[PlannedFailure],
        planned_as: &str,
        failed: impl Iterator<Item = (&'a str, Option<&'a str>, &'a str, &'a str)>,
    ) {
        for f in planned {
            self.add(FailureRecord {
                address: f.address.clone(),
                uid: None,
                action: planned_as.into(),
                message: f.reason.clone(),
            });
        }
        for (address, uid, verb, message) in failed {
            self.add(FailureRecord {
                address: address.to_owned(),
                uid: uid.map(str::to_owned),
                action: verb.into(),
                message: message.to_owned(),
            });
        }
    }
}

/// On a terminal, a progress line for long imports; nothing when stderr is not a terminal.
struct Progress {
    /// The mailbox requests the plan needs: counted (one walk over the plan) only for a
    /// terminal, and 0 otherwise, which shows nothing.
    total: usize,
    /// Requests of the parts already applied.
    before: usize,
}

impl Progress {
    fn new(out: &Output, inputs: &[PlanInputs<'_>], removals: &[Plan]) -> Progress {
        let mut total = 0;
        if !out.quiet && std::io::stderr().is_terminal() {
            total = inputs
                .iter()
                .flat_map(|inputs| plan::user_chunks(*inputs, CHUNK_ITEMS))
                .map(|chunk| apply::request_count(&chunk))
                .sum::<usize>()
                + removals.iter().map(apply::request_count).sum::<usize>();
        }
        Progress {
            total: if total >= 20 { total } else { 0 },
            before: 0,
        }
    }

    fn show(&mut self, done: usize) {
        if self.total > 0 {
            eprint!("\r{}/{} requests", self.before + done, self.total);
        }
    }

    fn sent(&mut self, requests: usize) {
        self.before += requests;
    }

    fn finish(&self) {
        if self.total > 0 {
            eprint!("\r\x1b[K");
        }
    }
}

/// What the pass says as it goes, by verbosity: every warning and skip of a part before it
/// is applied, its item lines after (all with `-v`, failures otherwise), the summary line
/// and the JSON report at the end.
struct Show<'a> {
    out: &'a Output,
    cli: &'a Cli,
    /// Write requests the domain admin plan takes (added to a planned pass's count).
    admin_requests: usize,
}

impl Show<'_> {
    fn announce(&self, part: &Plan) {
        for warning in &part.warnings {
            self.out.warning(warning);
        }
        for skipped in &part.skipped {
            self.out
                .alert(&format!("skipped {}: {}", skipped.address, skipped.reason));
        }
    }

    /// Every item is shown with `-v`, and by a dry-run (its plan is what it is for) unless
    /// `-q`; otherwise only failures.
    fn only_failures(&self) -> bool {
        !(self.out.verbose || (self.cli.dry_run && !self.out.quiet))
    }

    fn lines(&self, part: &Part<'_>) {
        for line in part.item_lines(self.only_failures()) {
            eprint_line(&line);
        }
    }

    fn admin_lines(&self, plan: Option<&crate::core::admins::AdminPlan>, outcomes: Option<&[apply::AdminOutcome<'_>]>) {
        if let Some(plan) = plan {
            for line in crate::commands::admins::lines(plan, outcomes, self.only_failures()) {
                eprint_line(&line);
            }
        }
    }

    fn alias_lines(&self, part: &AliasPart<'_>) {
        for line in part.item_lines(self.only_failures()) {
            eprint_line(&line);
        }
    }

    /// The report of a pass that sends nothing (a dry-run, or refused by the guard).
    fn planned(
        &self,
        summary: &mut Summary,
        inputs: &[PlanInputs<'_>],
        removals: &[Plan],
        aliases: Option<&AliasPlan>,
    ) {
        let mut counts = Counts::default();
        let mut writes = 0;
        for chunk in inputs.iter().flat_map(|inputs| plan::user_chunks(*inputs, CHUNK_ITEMS)) {
            self.announce(&chunk);
            let part = Part {
                plan: &chunk,
                outcomes: None,
            };
            self.lines(&part);
            part.count(&mut counts);
            writes += apply::request_count(&chunk);
        }
        for removals in removals {
            let part = Part {
                plan: removals,
                outcomes: None,
            };
            self.lines(&part);
            part.count(&mut counts);
            writes += apply::request_count(removals);
        }
        let alias_part = aliases.map(|plan| AliasPart { plan, outcomes: None });
        if let Some(part) = &alias_part {
            self.alias_lines(part);
            part.count(&mut counts);
            writes += apply::alias_request_count(part.plan);
        }
        counts.skipped += inputs.iter().map(|i| i.dir.skipped.len()).sum::<usize>();
        summary.counts = counts;
        summary.writes = writes + self.admin_requests;
        summary.finished = now();
        let dirs: Vec<&Directory> = inputs.iter().map(|i| i.dir).collect();
        self.end(
            summary,
            &dirs,
            &mut |sink: &mut Sink<'_>| {
                for chunk in inputs.iter().flat_map(|inputs| plan::user_chunks(*inputs, CHUNK_ITEMS)) {
                    sink(Part {
                        plan: &chunk,
                        outcomes: None,
                    })?;
                }
                for removals in removals {
                    sink(Part {
                        plan: removals,
                        outcomes: None,
                    })?;
                }
                Ok(())
            },
            alias_part,
        );
    }

    /// The summary on stderr (also under `-q` when the pass failed), the JSON on stdout.
    fn end(
        &self,
        summary: &Summary,
        dirs: &[&Directory],
        parts: &mut crate::report::Parts<'_>,
        aliases: Option<AliasPart<'_>>,
    ) {
        if !self.out.quiet || summary.exit_code != exit::OK {
            eprint_line(&summary.line());
        }
        if self.cli.json {
            let stdout = std::io::stdout();
            let mut lock = std::io::BufWriter::new(stdout.lock());
            // A closed pipe (`… | head`) is not an error worth more than stopping the report.
            let _ = crate::report::write_json(&mut lock, summary, dirs, parts, aliases);
        }
    }
}
