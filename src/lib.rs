//! mailcow-ldap-sync: copy the users of an LDAP directory into mailcow, one pass per run.
//!
//! The flow of a pass (`run_pass`): config → lock → state → read LDAP once → read mailcow
//! once → `plan::plan` (pure) → guard → dry-run report, or `apply` → `plan::settle` →
//! one state transaction → report. Each edge (LDAP, mailcow, SQLite) lives in its own module;
//! the decisions live in `directory` and `plan`, which do no I/O.

pub mod aliases;
pub mod apply;
pub mod cli;
pub mod config;
pub mod directory;
pub mod error;
pub mod ldap;
pub mod mailcow;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod report;
pub mod state;

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::{Cli, Command, Parsed};
use crate::config::{Config, ConfigLocation, EnvSecrets, PasswordMode};
use crate::directory::{DirectoryBuilder, Reading};
use crate::error::{Error, Result, exit};
use crate::plan::{PlannedFailure, Policy};
use crate::report::PassReport;
use crate::state::{FailureRecord, RunRecord, Store};

/// Where messages go, by verbosity: `-q` silences everything but failures and alerts.
struct Output {
    quiet: bool,
    verbose: bool,
}

impl Output {
    fn warn(&self, message: &str) {
        if !self.quiet {
            eprint_line(&format!("warning: {message}"));
        }
    }
    /// A warning that `-q` does not silence: one that needs an admin's action (a user not
    /// synced, an incomplete view), or a setting that exposes a secret.
    fn alert(&self, message: &str) {
        eprint_line(&format!("warning: {message}"));
    }
    fn info(&self, message: &str) {
        if !self.quiet {
            eprint_line(message);
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One line on stderr. Every human-readable line goes through here or [`print_line`]: they
/// carry DNs, names and server messages, which must not reach a terminal as control bytes.
fn eprint_line(line: &str) {
    eprintln!("{}", report::terminal_safe(line));
}

/// One human-readable line on stdout, made terminal-safe like [`eprint_line`].
fn print_line(line: &str) {
    print_stdout(&format!("{}\n", report::terminal_safe(line)));
}

/// Print to stdout; a closed pipe (`… | head`) is not an error worth a panic.
fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// The whole program: arguments in, exit code out.
pub fn main_with_args(program: &str, args: &[String]) -> u8 {
    let cli = match cli::parse(program, args) {
        Parsed::Run(cli) => cli,
        Parsed::Help(text) => {
            print_stdout(&text);
            return exit::OK;
        }
        Parsed::UsageError(text) => {
            eprintln!("{}", text.trim_end());
            eprintln!("Run {program} --help for usage.");
            return exit::CONFIG;
        }
    };
    if cli.version {
        print_stdout(&format!("mailcow-ldap-sync {}\n", env!("CARGO_PKG_VERSION")));
        return exit::OK;
    }
    let out = Output {
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    let location = ConfigLocation::resolve(
        cli.config_flag().map(|p| p.as_path()),
        std::env::var("MAILCOW_LDAP_SYNC_CONFIG").ok(),
    );
    let result = match &cli.command {
        Some(Command::Init(_)) => run_init(&location.path, &out),
        Some(Command::Status(args)) => load(&location, &out).and_then(|c| {
            alert_insecure(&c, &out);
            run_status(&c, args.json)
        }),
        Some(Command::Check(args)) => load(&location, &out).and_then(|mut c| {
            c.mailcow.verify_tls = !(args.do_not_verify || cli.do_not_verify);
            run_check(&c)
        }),
        None => load(&location, &out).and_then(|c| run_pass(c, &cli, &out)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprint_line(&format!("error: {e}"));
            e.exit_code()
        }
    }
}

fn load(location: &ConfigLocation, out: &Output) -> Result<Config> {
    let loaded = config::load(location, &EnvSecrets::from_env())?;
    // Loose modes of files holding secrets: shown under -q too.
    for warning in &loaded.warnings {
        out.alert(warning);
    }
    Ok(loaded.config)
}

/// The config's insecure settings, one `warning:` line each, also under `-q`.
fn alert_insecure(config: &Config, out: &Output) {
    for warning in config.security_warnings() {
        out.alert(&warning);
    }
}

fn run_init(path: &Path, out: &Output) -> Result<u8> {
    config::write_template(path)?;
    out.info(&format!(
        "wrote a config template to {} (mode 0600); edit ldap.uri, ldap.bind_dn, ldap.bind_pw, ldap.user_search_base, mailcow_host and mailcow_api_key",
        path.display()
    ));
    Ok(exit::OK)
}

/// The part of the config the planner needs.
fn policy(config: &Config, fingerprinter: plan::Fingerprinter) -> Policy {
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

fn require_api_key(config: &Config) -> Result<()> {
    if config.mailcow.api_key.is_empty() {
        return Err(Error::config(
            &config.file,
            Some("mailcow_api_key"),
            "is empty; create a read-write API key in mailcow (System → Configuration → Access → API) and set it here, in mailcow_api_key_file or in $MAILCOW_API_KEY",
        ));
    }
    Ok(())
}

/// Read every user of the directory (paged), normalised.
fn read_directory(config: &Config, filter: &str) -> Result<DirectoryRead> {
    let conn = ldap::Directory::connect(&config.ldap)?;
    search_directory(conn, config, filter, DirectoryBuilder::new(reading(config)))
}

/// How the config says entries are read.
fn reading(config: &Config) -> Reading {
    Reading {
        mapping: config.ldap.mapping.clone(),
        quota_unit: config.sync.quota_unit,
        active_format: config.sync.active_format,
        want_password: !matches!(config.sync.password, PasswordMode::Never | PasswordMode::Random)
            && config.sync.authsource == config::Authsource::Mailcow,
    }
}

/// Search a bound connection: the users (paged), then the groups when group sync is on.
/// The connection stays open for reading elided password hashes again.
fn search_directory(
    mut conn: ldap::Directory,
    config: &Config,
    filter: &str,
    mut builder: DirectoryBuilder,
) -> Result<DirectoryRead> {
    let users = conn.search(
        &config.ldap.search_base,
        filter,
        &config.ldap.mapping.attributes(),
        |entry| builder.add(&entry),
    )?;
    let mut dir = builder.finish();
    let mut partial = Vec::new();
    if !users.references.is_empty() {
        partial.push(format!(
            "the user search under `{}` returned continuation references to {} (users there were not read; \
             search the server that holds them)",
            config.ldap.search_base,
            users.references.join(", ")
        ));
    }
    let mut group_failure = None;
    let groups = match &config.groups {
        Some(groups) => match read_groups(&mut conn, config, groups, filter, &mut dir) {
            Ok(read) => {
                if !read.references.is_empty() {
                    partial.push(format!(
                        "the group search under `{}` returned continuation references to {}",
                        groups.search_base,
                        read.references.join(", ")
                    ));
                }
                Some(read)
            }
            // The users were read completely: they are synced, and the group aliases, which
            // cannot be known this pass, are left as they are.
            Err(e) => {
                partial.push(format!("the group search failed ({e})"));
                group_failure = Some(PlannedFailure {
                    address: groups.search_base.clone(),
                    reason: format!("group search failed, group aliases left as they are: {e}"),
                });
                None
            }
        },
        None => None,
    };
    Ok(DirectoryRead {
        dir,
        groups,
        conn,
        partial,
        group_failure,
    })
}

/// The directory, the groups when group sync is on, and the open connection.
struct DirectoryRead {
    dir: directory::Directory,
    groups: Option<GroupsRead>,
    conn: ldap::Directory,
    /// Why the view of the directory is incomplete (none: complete).
    partial: Vec<String>,
    /// The group search failed: an item failure of the pass.
    group_failure: Option<PlannedFailure>,
}

struct GroupsRead {
    groups: Vec<model::DirGroup>,
    /// Group entries the search returned (usable or not), for the guard.
    entries: usize,
    /// Owners whose group is present but unreadable: their aliases are left alone.
    protected: std::collections::BTreeSet<String>,
    /// Continuation references met by the group searches.
    references: Vec<String>,
}

/// Every group class a member DN may point at, for resolving nested groups client-side.
const NESTED_GROUP_FILTER: &str = "(|(objectClass=group)(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))";

fn read_groups(
    conn: &mut ldap::Directory,
    config: &Config,
    groups: &config::GroupsConfig,
    user_filter: &str,
    dir: &mut directory::Directory,
) -> Result<GroupsRead> {
    use std::collections::{BTreeMap, BTreeSet};
    let uid_attr = config.ldap.mapping.uid.as_deref();
    let mut attrs = vec![groups.mail.as_str(), groups.member.as_str()];
    attrs.extend(uid_attr);
    let mut alias_groups = Vec::new();
    let mut protected = BTreeSet::new();
    let mut entries = 0;
    let mut references = Vec::new();
    let done = conn.search(&groups.search_base, &groups.search_filter, &attrs, |entry| {
        entries += 1;
        let group = directory::read_group(&entry, uid_attr, &groups.mail, &groups.member, &mut dir.warnings);
        if group.mail.is_none() && entry.attrs.contains_key(&groups.mail.to_ascii_lowercase()) {
            protected.insert(format!("group:{}", group.uid));
        }
        alias_groups.push(group);
    })?;
    references.extend(done.references);
    let mut all_groups: BTreeMap<String, directory::RawGroup> = BTreeMap::new();
    if groups.nested {
        let member = [groups.member.as_str()];
        let done = conn.search(&groups.search_base, NESTED_GROUP_FILTER, &member, |entry| {
            let g = directory::read_group(&entry, None, &groups.mail, &groups.member, &mut Vec::new());
            all_groups.insert(directory::normalize_dn(&g.dn), g);
        })?;
        references.extend(done.references);
    }
    // Active Directory sends only the first 1500 members of a large group (`member;range=…`).
    // Then ask AD itself for every user in the group's chain (nested included), with the
    // LDAP_MATCHING_RULE_IN_CHAIN rule, instead of walking partial member lists.
    let ranged = alias_groups.iter().any(|g| g.members_incomplete) || all_groups.values().any(|g| g.members_incomplete);
    for group in alias_groups
        .iter_mut()
        .filter(|g| g.mail.is_some() && (ranged || g.members_incomplete))
    {
        let filter = format!(
            "(&{user_filter}(memberOf:1.2.840.113556.1.4.1941:={}))",
            ldap3::ldap_escape(&group.dn)
        );
        let mut members = Vec::new();
        let done = conn.search(&config.ldap.search_base, &filter, &["1.1"], |entry| {
            members.push(directory::normalize_dn(&entry.dn))
        })?;
        references.extend(done.references);
        group.members = members;
        group.members_incomplete = false;
    }
    let user_mail_by_dn: BTreeMap<String, String> = dir
        .users()
        .map(|u| (directory::normalize_dn(&u.dn), u.mail.clone()))
        .collect();
    let resolved = directory::resolve_groups(&alias_groups, &all_groups, &user_mail_by_dn, groups.nested && !ranged);
    Ok(GroupsRead {
        groups: resolved,
        entries,
        protected,
        references,
    })
}

fn run_pass(mut config: Config, cli: &Cli, out: &Output) -> Result<u8> {
    require_api_key(&config)?;
    if cli.do_not_verify {
        config.mailcow.verify_tls = false;
    }
    alert_insecure(&config, out);
    let started = now();
    let _lock = if cli.dry_run {
        None
    } else {
        Some(state::lock(&config.state_file)?)
    };
    let mut store = if cli.dry_run {
        Store::open_read_only(&config.state_file)?
    } else {
        Some(Store::open(&config.state_file)?)
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
    store: Option<&mut Store>,
    started: i64,
) -> Result<Finished> {
    let state = std::sync::Arc::new(match &store {
        Some(s) => s.load()?,
        None => model::State::new(),
    });
    let fingerprint_key = match &store {
        Some(s) => s.fingerprint_key()?,
        None => state::random_bytes(32),
    };
    let filter = cli.override_filter.as_deref().unwrap_or(&config.ldap.search_filter);
    let alias_sync = config.ldap.mapping.aliases.is_some() || config.groups.is_some();
    let alias_state = match (&store, alias_sync) {
        (Some(s), true) => s.load_aliases()?,
        _ => model::AliasState::new(),
    };
    let client = mailcow::MailcowClient::new(&config.mailcow, config.mailcow_timeout)?;
    // Bind first, so that a wrong LDAP password or a server that is down stops the pass
    // before mailcow is contacted; then read both sides at the same time: a pass costs the
    // slower of the two reads, not their sum.
    let conn = ldap::Directory::connect(&config.ldap)?;
    let fingerprinter = plan::Fingerprinter::new(&fingerprint_key);
    // A hash whose fingerprint the state already holds is not kept in memory, unless
    // `always` sends it on every pass.
    let elide = matches!(config.sync.password, PasswordMode::Changed | PasswordMode::Create);
    let builder = DirectoryBuilder::against(reading(config), state.clone(), elide.then(|| fingerprinter.clone()));
    let (directory, mailcow_read) = std::thread::scope(|scope| {
        let mailcow = scope.spawn(|| -> Result<_> {
            let domains = client.domains()?;
            let mailboxes = client.mailboxes(config.sync.tag.as_deref(), state.clone())?;
            let aliases = if alias_sync { client.aliases()? } else { Vec::new() };
            Ok((domains, mailboxes, aliases))
        });
        let directory = search_directory(conn, config, filter, builder);
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
        read_elided_passwords(&mut conn, config, &dir, &mut plan, &policy.fingerprinter);
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
        if let Some(Err(message)) = result {
            failures.push(FailureRecord {
                address: action.address.clone(),
                uid: Some(action.uid.clone()),
                action: action.kind.verb().into(),
                message: message.clone(),
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
            if let Some(Err(message)) = result {
                failures.push(FailureRecord {
                    address: action.address.clone(),
                    uid: None,
                    action: action.kind.verb().into(),
                    message: message.clone(),
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

/// Read again the password hashes that new mailboxes need but the directory did not hold
/// (their fingerprints matched the state: a managed mailbox that is gone from mailcow). A
/// hash that cannot be read makes that create a planned failure; nothing is created without it.
fn read_elided_passwords(
    conn: &mut ldap::Directory,
    config: &Config,
    dir: &directory::Directory,
    plan: &mut plan::Plan,
    fingerprinter: &plan::Fingerprinter,
) {
    let Some(attr) = config.ldap.mapping.password.as_deref() else {
        return;
    };
    let mut failed = Vec::new();
    for (i, action) in plan.actions.iter_mut().enumerate() {
        let plan::ActionKind::Create {
            password, password_fp, ..
        } = &mut action.kind
        else {
            continue;
        };
        if *password != plan::NewPassword::Elided {
            continue;
        }
        let Some(dn) = dir.user(&action.uid).map(|u| u.dn.clone()) else {
            failed.push((i, "its LDAP entry is no longer known".to_owned()));
            continue;
        };
        let mut values = None;
        let read = conn.search(&dn, "(objectClass=*)", &[attr], |entry| {
            if directory::normalize_dn(&entry.dn) == directory::normalize_dn(&dn) {
                values = entry.attrs.get(&attr.to_ascii_lowercase()).cloned();
            }
        });
        let mut warnings = Vec::new();
        let secret = match read {
            Err(e) => Err(e.to_string()),
            Ok(_) => values
                .and_then(|v| directory::read_password(&v, attr, &action.address, &mut warnings))
                .ok_or_else(|| format!("`{dn}` has no usable `{attr}` value now")),
        };
        match secret {
            Ok(secret) => {
                let fp = fingerprinter.of(&secret);
                *password_fp = Some(fp.clone());
                if let Some(row) = &mut action.row {
                    row.password_fp = Some(fp);
                }
                *password = plan::NewPassword::Ldap(secret);
            }
            Err(reason) => failed.push((i, reason)),
        }
    }
    for (i, reason) in failed.into_iter().rev() {
        let action = plan.actions.remove(i);
        plan.failures.push(plan::PlannedFailure {
            address: action.address,
            reason: format!("the password hash for the new mailbox could not be read again: {reason}"),
        });
    }
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

fn run_status(config: &Config, json: bool) -> Result<u8> {
    let Some(store) = Store::open_read_only(&config.state_file)? else {
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
    if json {
        let runs: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "started": r.started, "finished": r.finished, "duration_secs": r.finished - r.started,
                    "exit_code": r.exit_code, "users": r.users, "created": r.counts.created, "updated": r.counts.updated,
                    "disabled": r.counts.disabled, "deleted": r.counts.deleted, "unchanged": r.counts.unchanged,
                    "skipped": r.counts.skipped, "failed": r.counts.failed, "message": r.message,
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
            "failed_last_pass": failures,
            "runs": runs,
        });
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
    for f in &failures {
        text.push_str(&format!("  failed {} {}: {}\n", f.action, f.address, f.message));
    }
    text.push_str("last passes (newest first):\n");
    if runs.is_empty() {
        text.push_str("  none\n");
    }
    for r in &runs {
        text.push_str(&format!(
            "  {} exit {} in {} s: {} created, {} updated, {} disabled, {} deleted, {} unchanged, {} skipped, {} failed{}\n",
            report::format_utc(r.started),
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

fn run_check(config: &Config) -> Result<u8> {
    let mut ok = true;
    // Insecure settings lead the report; they do not fail the check.
    for warning in config.security_warnings() {
        print_line(&format!("[WARN] {warning}"));
    }
    let mut line = |good: bool, what: &str| {
        ok &= good;
        print_line(&format!("[{}] {what}", if good { " ok " } else { "FAIL" }));
    };
    let dir = match read_directory(config, &config.ldap.search_filter) {
        Ok(DirectoryRead {
            dir,
            groups,
            conn,
            partial,
            ..
        }) => {
            for reason in &partial {
                line(false, reason);
            }
            conn.close();
            if let Some(g) = &groups {
                let with_members = g.groups.iter().filter(|g| !g.members.is_empty()).count();
                line(
                    true,
                    &format!(
                        "LDAP groups: {} entries, {} with an address and members",
                        g.entries, with_members
                    ),
                );
            }
            line(
                true,
                &format!(
                    "LDAP {}: bound as `{}`, {} entries, {} usable users",
                    config.ldap.uri,
                    config.ldap.bind_dn,
                    dir.entries,
                    dir.len()
                ),
            );
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            for user in dir.users().take(3) {
                let scheme = user
                    .password
                    .as_ref()
                    .and_then(|p| directory::shown_scheme(p.expose()).map(str::to_owned));
                print_line(&format!(
                    "       {}: name {:?}, quota {}, active {}, password {}, aliases {}",
                    user.mail,
                    user.name.as_deref().unwrap_or(""),
                    or_dash(user.quota_mib.map(|q| format!("{q} MiB"))),
                    or_dash(user.active.map(|a| a.to_string())),
                    or_dash(scheme.map(|s| format!("{{{s}}} hash"))),
                    if user.aliases.is_empty() {
                        "-".into()
                    } else {
                        user.aliases.join(", ")
                    },
                ));
            }
            for s in dir.skipped.iter().take(5) {
                print_line(&format!("       skipped {}: {}", s.dn, s.reason));
            }
            Some(dir)
        }
        Err(e) => {
            line(false, &format!("{e}"));
            None
        }
    };
    if let Err(e) = require_api_key(config) {
        line(false, &e.to_string());
        return Ok(exit::CONFIG);
    }
    let client = mailcow::MailcowClient::new(&config.mailcow, config.mailcow_timeout)?;
    match client.domains() {
        Ok(domains) => {
            line(
                true,
                &format!(
                    "mailcow {}: API key accepted, {} domains",
                    config.mailcow.base_url,
                    domains.len()
                ),
            );
            match client.check_write_access() {
                Ok(()) => line(true, "API key may write (checked with an edit of no items)"),
                Err(e) => line(false, &format!("{e}")),
            }
            if let Some(dir) = &dir {
                let known: std::collections::BTreeSet<&str> = domains.iter().map(|d| d.name.as_str()).collect();
                let mut missing: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
                for user in dir.users() {
                    if !known.contains(user.domain()) {
                        *missing.entry(user.domain().to_owned()).or_default() += 1;
                    }
                }
                if missing.is_empty() {
                    line(true, "every mail domain of the LDAP users exists in mailcow");
                } else {
                    let list: Vec<String> = missing.iter().map(|(d, n)| format!("{d} ({n} users)")).collect();
                    line(
                        false,
                        &format!(
                            "domains missing in mailcow: {}; add them in mailcow first",
                            list.join(", ")
                        ),
                    );
                }
            }
        }
        Err(e) => line(false, &format!("{e}")),
    }
    Ok(if ok { exit::OK } else { exit::UNREACHABLE })
}
