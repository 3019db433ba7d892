//! Run a plan against mailcow with as few requests as the API allows.
//!
//! Edits that set identical attributes share one request (mailcow takes many items per
//! edit and answers per item); creates and password changes go one mailbox per call,
//! because mailcow's API demands it for creates and because a password failure in a batch
//! would fail every item of it (API.md 10.12). Each action ends confirmed, failed with
//! mailcow's message, or not attempted: a fatal error (key rejected, server down, 5xx)
//! stops the pass at once, and only confirmed actions reach the state database.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::config::Authsource;
use crate::core::plan::{ActionKind, Field, NewPassword, Plan};
use crate::edge::mailcow::{AliasResult, ItemResult, MailcowApi};
use crate::error::Error;

/// Items per edit request: large enough to make an unchanged-to-changed pass cheap, small
/// enough that one request stays a few hundred KB.
const BATCH: usize = 500;

/// What became of one mailbox action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Not sent: a fatal error stopped the pass before it (or during its request).
    NotAttempted,
    /// mailcow confirmed it.
    Applied,
    /// mailcow refused it (its message), or it was held back for a reason given here.
    Failed(String),
}

impl ItemOutcome {
    pub fn is_applied(&self) -> bool {
        matches!(self, ItemOutcome::Applied)
    }

    /// The failure's message, for a failed action.
    pub fn error(&self) -> Option<&str> {
        match self {
            ItemOutcome::Failed(message) => Some(message),
            _ => None,
        }
    }
}

impl From<ItemResult> for ItemOutcome {
    fn from(result: ItemResult) -> ItemOutcome {
        match result {
            Ok(()) => ItemOutcome::Applied,
            Err(message) => ItemOutcome::Failed(message),
        }
    }
}

/// What became of one alias action: an applied one carries its alias's id (the new one,
/// for an add).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasOutcome {
    NotAttempted,
    Applied(u64),
    Failed(String),
}

impl AliasOutcome {
    /// The alias id, for an applied action.
    pub fn id(&self) -> Option<u64> {
        match self {
            AliasOutcome::Applied(id) => Some(*id),
            _ => None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            AliasOutcome::Failed(message) => Some(message),
            _ => None,
        }
    }
}

impl From<AliasResult> for AliasOutcome {
    fn from(result: AliasResult) -> AliasOutcome {
        match result {
            Ok(id) => AliasOutcome::Applied(id),
            Err(message) => AliasOutcome::Failed(message),
        }
    }
}

/// What happened to each action of the plan (`results[i]` for `plan.actions[i]`).
#[derive(Debug)]
pub struct Applied {
    pub results: Vec<ItemOutcome>,
    /// The error that stopped the pass, if one did.
    pub fatal: Option<Error>,
    /// Requests sent (the one that failed fatally included).
    pub requests: usize,
}

/// What one domain admin change came to: the plan's action and mailcow's answer.
pub struct AdminOutcome<'a> {
    pub action: &'a crate::core::admins::AdminAction,
    pub result: std::result::Result<(), String>,
}

/// Apply the domain admin plan: each create and domain change alone (one answer names one
/// admin), the deletions in one request. A fatal error stops here: the rest stay unsent
/// and are reported so.
pub fn apply_admins<'a>(
    client: &dyn MailcowApi,
    plan: &'a crate::core::admins::AdminPlan,
) -> (Vec<AdminOutcome<'a>>, Option<crate::error::Error>) {
    use crate::core::admins::{AdminActionKind, AdminPassword};
    let mut outcomes = Vec::new();
    let mut fatal = None;
    let unsent = || Err("not sent: the pass stopped before it".to_owned());
    let mut deletes = Vec::new();
    for action in &plan.actions {
        if fatal.is_some() {
            outcomes.push(AdminOutcome {
                action,
                result: unsent(),
            });
            continue;
        }
        let sent = match &action.kind {
            AdminActionKind::Create { domains, password } => {
                let secret = match password {
                    AdminPassword::Ldap(s) => s.expose().to_owned(),
                    AdminPassword::Random => random_password(),
                };
                let body = json!({
                    "username": action.username, "domains": domains, "active": 1,
                    "password": secret, "password2": secret,
                });
                client.add_domain_admin(&body)
            }
            AdminActionKind::SetDomains { domains, .. } => client.edit_domain_admin(&action.username, domains),
            AdminActionKind::Delete => {
                deletes.push(action);
                continue;
            }
        };
        match sent {
            Ok(result) => outcomes.push(AdminOutcome { action, result }),
            Err(e) => {
                outcomes.push(AdminOutcome {
                    action,
                    result: Err(e.to_string()),
                });
                fatal = Some(e);
            }
        }
    }
    if !deletes.is_empty() {
        let names: Vec<String> = deletes.iter().map(|a| a.username.clone()).collect();
        let answer = match &fatal {
            Some(_) => None,
            None => match client.delete_domain_admins(&names) {
                Ok(results) => Some(results),
                Err(e) => {
                    fatal = Some(e);
                    None
                }
            },
        };
        for action in deletes {
            let result = match &answer {
                Some(results) => results
                    .get(&action.username)
                    .cloned()
                    .unwrap_or_else(|| Err("mailcow's answer did not confirm this item".into())),
                None => unsent(),
            };
            outcomes.push(AdminOutcome { action, result });
        }
    }
    (outcomes, fatal)
}

#[cfg(test)]
impl Applied {
    pub fn confirmed(&self) -> Vec<bool> {
        self.results.iter().map(ItemOutcome::is_applied).collect()
    }
}

/// Progress callback: (requests done, requests planned).
pub type Progress<'a> = &'a mut (dyn FnMut(usize, usize) + Send);

/// One request to make: which actions it carries.
enum Request {
    /// `add/domain`, before every create (the creates in it wait for its confirmation).
    CreateDomain(usize),
    Create(usize),
    Edit {
        items: Vec<usize>,
        attr: Value,
    },
    Tls {
        items: Vec<usize>,
        tls_in: bool,
        tls_out: bool,
    },
    Password(usize),
    Rename(usize),
    Delete(Vec<usize>),
    /// One mailbox's offboarding: list and delete its app passwords, reset its EAS cache.
    Offboard(usize),
    /// One mailbox's template re-applied: `edit/mailbox`, `edit/user-acl`, `edit/rl-mbox`.
    Template(usize),
}

/// The requests for a plan, in the order they run: changes to existing mailboxes first,
/// then creates, then removals (so a pass cut short removes nothing it need not), then the
/// offboardings of the mailboxes disabled meanwhile.
fn requests(plan: &Plan) -> Vec<Request> {
    let mut edits: BTreeMap<String, (Value, Vec<usize>)> = BTreeMap::new();
    let mut tls: BTreeMap<(bool, bool), Vec<usize>> = BTreeMap::new();
    let mut removals: BTreeMap<String, (Value, Vec<usize>)> = BTreeMap::new();
    let mut creates = Vec::new();
    let mut passwords = Vec::new();
    let mut deletes = Vec::new();
    let mut renames = Vec::new();
    let mut offboards = Vec::new();
    let mut domains = Vec::new();
    let mut templates = Vec::new();
    for (i, action) in plan.actions.iter().enumerate() {
        match &action.kind {
            ActionKind::CreateDomain(_) => domains.push(i),
            ActionKind::Create { .. } => creates.push(i),
            ActionKind::Rename { .. } => renames.push(i),
            ActionKind::Update {
                changes,
                add_tag,
                attribute_hash,
            } => {
                let mut attr = serde_json::Map::new();
                for change in changes {
                    attr.insert(change.field.as_str().into(), change.new.clone());
                }
                if let Some(tag) = add_tag {
                    attr.insert("tags".into(), json!([tag]));
                }
                // Every edit resets attribute_hash unless it is sent again (API.md 4.4).
                if let Some(hash) = attribute_hash {
                    attr.insert("attribute_hash".into(), json!(hash));
                }
                let attr = Value::Object(attr);
                edits
                    .entry(attr.to_string())
                    .or_insert_with(|| (attr, Vec::new()))
                    .1
                    .push(i);
            }
            ActionKind::Tls { tls_in, tls_out, .. } => tls.entry((*tls_in, *tls_out)).or_default().push(i),
            ActionKind::Password { .. } => passwords.push(i),
            ActionKind::Deactivate {
                active,
                attribute_hash,
                add_tag,
                ..
            } => {
                let mut attr = json!({ "active": active });
                if let Some(hash) = attribute_hash {
                    attr["attribute_hash"] = json!(hash);
                }
                if let Some(tag) = add_tag {
                    attr["tags"] = json!([tag]);
                }
                removals
                    .entry(attr.to_string())
                    .or_insert_with(|| (attr, Vec::new()))
                    .1
                    .push(i);
            }
            ActionKind::Delete => deletes.push(i),
            ActionKind::Offboard { .. } => offboards.push(i),
            ActionKind::Template { .. } => templates.push(i),
        }
    }
    // Renames first: a new user may be created at an address another one leaves.
    let mut out: Vec<Request> = renames.into_iter().map(Request::Rename).collect();
    for (_, (attr, items)) in edits {
        for chunk in items.chunks(BATCH) {
            out.push(Request::Edit {
                items: chunk.to_vec(),
                attr: attr.clone(),
            });
        }
    }
    out.extend(templates.into_iter().map(Request::Template));
    for ((tls_in, tls_out), items) in tls {
        for chunk in items.chunks(BATCH) {
            out.push(Request::Tls {
                items: chunk.to_vec(),
                tls_in,
                tls_out,
            });
        }
    }
    out.extend(domains.into_iter().map(Request::CreateDomain));
    out.extend(passwords.into_iter().map(Request::Password));
    out.extend(creates.into_iter().map(Request::Create));
    for (_, (attr, items)) in removals {
        for chunk in items.chunks(BATCH) {
            out.push(Request::Edit {
                items: chunk.to_vec(),
                attr: attr.clone(),
            });
        }
    }
    for chunk in deletes.chunks(BATCH) {
        out.push(Request::Delete(chunk.to_vec()));
    }
    out.extend(offboards.into_iter().map(Request::Offboard));
    out
}

/// The `add/domain` body of a domain's creation: quotas in MiB, counts as numbers, no
/// `restart_sogo` (docs/mailcow-api-domains.md).
fn domain_body(domain: &str, kind: &ActionKind) -> Value {
    let ActionKind::CreateDomain(new) = kind else {
        return Value::Null;
    };
    json!({
        "domain": domain,
        "description": new.description,
        "mailboxes": new.mailboxes,
        "aliases": new.aliases,
        "defquota": new.default_quota_mib,
        "maxquota": new.max_quota_mib,
        "quota": new.quota_mib,
        "active": u8::from(new.active),
    })
}

/// The `add/mailbox` body of a create action.
fn create_body(address: &str, kind: &ActionKind) -> Value {
    let ActionKind::Create {
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
    } = kind
    else {
        return Value::Null;
    };
    let (local_part, domain) = address.rsplit_once('@').unwrap_or((address, ""));
    let mut body = json!({
        "local_part": local_part,
        "domain": domain,
        "quota": quota_mib,
        "active": active,
    });
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    if !tags.is_empty() {
        body["tags"] = json!(tags);
    }
    if let Some(v) = tls_in {
        body["tls_enforce_in"] = json!(u8::from(*v));
    }
    if let Some(v) = tls_out {
        body["tls_enforce_out"] = json!(u8::from(*v));
    }
    // One `*_access` flag each, never `protocol_access`: that list sets every protocol
    // it does not name to 0 (functions.mailbox.inc.php, add mailbox).
    for (protocol, on) in access {
        body[protocol.field()] = json!(u8::from(*on));
    }
    // The template's id: a name is silently ignored (API.md 4.3).
    if let Some((id, _)) = template {
        body["template"] = json!(id);
    }
    if *authsource != Authsource::Mailcow {
        body["authsource"] = json!(authsource.as_str());
    }
    let secret = match password {
        NewPassword::Ldap(secret) => Some(secret.expose().to_owned()),
        NewPassword::Random => Some(random_password()),
        // The pass reads an elided hash again before applying; an unread one is never sent.
        NewPassword::Elided | NewPassword::None => None,
    };
    if let Some(secret) = secret {
        body["password"] = json!(secret);
        body["password2"] = json!(secret);
    }
    body
}

/// A random password that passes mailcow's strictest policy: 24 characters with upper and
/// lower case, digits and specials. Never stored, never shown.
pub fn random_password() -> String {
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    const LOWER: &[u8] = b"abcdefghijkmnpqrstuvwxyz";
    const DIGIT: &[u8] = b"23456789";
    const SPECIAL: &[u8] = b"!#%+-.:=?@_";
    let bytes = crate::edge::random::random_bytes(24);
    bytes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let set = match i % 4 {
                0 => UPPER,
                1 => LOWER,
                2 => DIGIT,
                _ => SPECIAL,
            };
            set[*b as usize % set.len()] as char
        })
        .collect()
}

/// Send one request; the result of each action it carries.
fn execute(client: &dyn MailcowApi, plan: &Plan, request: &Request) -> Result<Vec<(usize, ItemResult)>, Error> {
    let address = |i: usize| plan.actions[i].address.clone();
    let per_item = |items: &[usize], answer: BTreeMap<String, ItemResult>| -> Vec<(usize, ItemResult)> {
        items
            .iter()
            .map(|&i| {
                let result = answer
                    .get(&address(i))
                    .cloned()
                    .unwrap_or_else(|| Err("mailcow's answer did not confirm this item".into()));
                (i, result)
            })
            .collect()
    };
    let addresses = |items: &[usize]| -> Vec<String> { items.iter().map(|&i| address(i)).collect() };
    match request {
        Request::CreateDomain(i) => {
            let action = &plan.actions[*i];
            Ok(vec![(
                *i,
                client.add_domain(&domain_body(&action.address, &action.kind))?,
            )])
        }
        Request::Create(i) => {
            let action = &plan.actions[*i];
            let result = client.add_mailbox(&create_body(&action.address, &action.kind))?;
            let ldap_source = matches!(
                action.kind,
                ActionKind::Create {
                    authsource: Authsource::Ldap,
                    ..
                }
            );
            let result = result.map_err(|e| {
                if e.starts_with("object_exists") {
                    format!("{e} (the mailbox appeared meanwhile; it is adopted on the next pass)")
                } else if e.starts_with("password_complexity") && ldap_source {
                    format!(
                        "{e}: mailcow wants a password, so its identity provider is not LDAP \
                         (System → Configuration → Access → Identity Provider); sync.authsource \"ldap\" needs it"
                    )
                } else {
                    e
                }
            });
            Ok(vec![(*i, result)])
        }
        Request::Edit { items, attr } => Ok(per_item(items, client.edit_mailbox(&addresses(items), attr)?)),
        Request::Tls { items, tls_in, tls_out } => Ok(per_item(
            items,
            client.edit_tls_policy(&addresses(items), *tls_in, *tls_out)?,
        )),
        Request::Password(i) => {
            let ActionKind::Password { value, .. } = &plan.actions[*i].kind else {
                return Ok(Vec::new());
            };
            let attr = json!({ "password": value.expose(), "password2": value.expose() });
            Ok(per_item(&[*i], client.edit_mailbox(&[address(*i)], &attr)?))
        }
        Request::Rename(i) => {
            let action = &plan.actions[*i];
            let ActionKind::Rename { from, reactivate } = &action.kind else {
                return Ok(Vec::new());
            };
            Ok(vec![(*i, rename(client, from, &action.address, *reactivate)?)])
        }
        Request::Delete(items) => Ok(per_item(items, client.delete_mailboxes(&addresses(items))?)),
        Request::Template(i) => {
            let ActionKind::Template {
                name,
                changes,
                tags,
                acl,
                rl,
                attribute_hash,
                ..
            } = &plan.actions[*i].kind
            else {
                return Ok(Vec::new());
            };
            let mailbox = [address(*i)];
            let mut attr = serde_json::Map::new();
            for change in changes {
                attr.insert(change.field.as_str().into(), change.new.clone());
            }
            if !tags.is_empty() {
                attr.insert("tags".into(), json!(tags));
            }
            let failed = |what: &str, answer: BTreeMap<String, ItemResult>| -> Option<String> {
                match answer.into_values().next() {
                    Some(Ok(())) => None,
                    Some(Err(e)) => Some(format!("template {name}: {what} failed: {e}")),
                    None => Some(format!("template {name}: mailcow did not confirm {what}")),
                }
            };
            if !attr.is_empty() {
                if let Some(hash) = attribute_hash {
                    attr.insert("attribute_hash".into(), json!(hash));
                }
                if let Some(e) = failed("edit/mailbox", client.edit_mailbox(&mailbox, &Value::Object(attr))?) {
                    return Ok(vec![(*i, Err(e))]);
                }
            }
            if let Some(e) = failed("edit/user-acl", client.edit_user_acl(&mailbox, acl)?) {
                return Ok(vec![(*i, Err(e))]);
            }
            if let Some(e) = failed("edit/rl-mbox", client.edit_ratelimit(&mailbox, rl.0, &rl.1)?) {
                return Ok(vec![(*i, Err(e))]);
            }
            Ok(vec![(*i, Ok(()))])
        }
        Request::Offboard(i) => {
            let ActionKind::Offboard { app_passwords, eas } = plan.actions[*i].kind else {
                return Ok(Vec::new());
            };
            let mailbox = address(*i);
            let mut failures = Vec::new();
            if app_passwords {
                // One list per mailbox, one delete with every id; none listed, no delete.
                match client.app_passwords(&mailbox)? {
                    Ok(ids) if ids.is_empty() => {}
                    Ok(ids) => {
                        if let Err(e) = client.delete_app_passwords(&ids)? {
                            failures.push(format!("app passwords not revoked: {e}"));
                        }
                    }
                    Err(e) => failures.push(format!("app passwords not revoked: {e}")),
                }
            }
            let eas_reset = if eas { client.reset_eas_cache(&mailbox)? } else { Ok(()) };
            if let Err(e) = eas_reset {
                failures.push(format!("ActiveSync cache not reset: {e}"));
            }
            let result = if failures.is_empty() {
                Ok(())
            } else {
                Err(format!("{} (the mailbox stays disabled)", failures.join("; ")))
            };
            Ok(vec![(*i, result)])
        }
    }
}

/// Rename one mailbox. mailcow refuses to rename an inactive one (API.md 4.9): it is set to
/// active 2 (mail delivered, no login) for the call and to 0 again after. A rename that is
/// not confirmed as a whole is a failure; the next pass finds the mailbox where it is.
fn rename(client: &dyn MailcowApi, from: &str, to: &str, reactivate: bool) -> Result<ItemResult, Error> {
    if reactivate {
        let answer = client.edit_mailbox(&[from.to_owned()], &json!({ "active": 2 }))?;
        if let Some(Err(e)) = answer.get(from) {
            return Ok(Err(format!(
                "not renamed: it is inactive, and enabling it for the rename failed: {e}"
            )));
        }
    }
    let renamed = client.rename_mailbox(from, to)?;
    if renamed.is_err() || !reactivate {
        return Ok(renamed.map_err(|e| format!("rename from {from} failed: {e}")));
    }
    let answer = client.edit_mailbox(&[to.to_owned()], &json!({ "active": 0 }))?;
    Ok(match answer.get(to) {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(format!("renamed from {from}, but disabling it again failed: {e}")),
        None => Err(format!(
            "renamed from {from}, but mailcow did not confirm disabling it again"
        )),
    })
}

/// Run the plan with up to `concurrency` requests in flight (threads over one agent).
/// Removals start only after every other change is done. Stops handing out requests at
/// the first fatal error; every action ends applied, failed, or not attempted.
/// Results are kept per action, so they do not depend on the order requests finish in.
#[cfg(test)]
pub fn apply(client: &dyn MailcowApi, plan: &Plan, concurrency: usize, progress: Progress<'_>) -> Applied {
    apply_with(client, plan, concurrency, &mut DomainGate::default(), progress)
}

/// The domains whose creation failed earlier in this pass (`sync.create_domains`), with
/// mailcow's message: a pass applies its plan in parts, and a create in a later part must
/// not be sent to a domain an earlier part could not add.
#[derive(Debug, Default)]
pub struct DomainGate {
    failed: BTreeMap<String, String>,
}

impl DomainGate {
    /// Creates whose domain could not be created: not sent, each failed with the reason.
    fn blocked(&self, plan: &Plan, results: &[ItemOutcome]) -> BTreeMap<usize, String> {
        let mut failed: BTreeMap<&str, &str> = self.failed.iter().map(|(d, e)| (d.as_str(), e.as_str())).collect();
        for (action, result) in plan.actions.iter().zip(results) {
            if let (ActionKind::CreateDomain(_), Some(e)) = (&action.kind, result.error()) {
                failed.insert(&action.address, e);
            }
        }
        plan.actions
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a.kind, ActionKind::Create { .. }))
            .filter_map(|(i, a)| {
                let domain = crate::core::model::domain_of(&a.address);
                let e = failed.get(domain)?;
                Some((
                    i,
                    format!("not sent: its domain {domain} could not be created in mailcow: {e}"),
                ))
            })
            .collect()
    }

    /// Remember this part's failed domain creations for the parts after it.
    fn learn(&mut self, plan: &Plan, results: &[ItemOutcome]) {
        for (action, result) in plan.actions.iter().zip(results) {
            if let (ActionKind::CreateDomain(_), Some(e)) = (&action.kind, result.error()) {
                self.failed.insert(action.address.clone(), e.to_owned());
            }
        }
    }
}

/// [`apply`] as one part of a pass: `gate` carries the domains whose creation failed in
/// the parts before.
pub fn apply_with(
    client: &dyn MailcowApi,
    plan: &Plan,
    concurrency: usize,
    gate: &mut DomainGate,
    progress: Progress<'_>,
) -> Applied {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let requests = requests(plan);
    let total = requests.len();
    // Phases: renames and edits of existing mailboxes (an authsource switch must land before its
    // password), then the new domains, then passwords and creates (a create only in a domain
    // mailcow has), then removals, then the offboardings (each only once its mailbox's disable
    // is confirmed). The requests come in phase order; a phase starts where the first request
    // of it or a later one stands.
    let phase_of = |r: &Request| match r {
        Request::Edit { items, .. } if matches!(plan.actions[items[0]].kind, ActionKind::Deactivate { .. }) => 3,
        Request::Rename(_) | Request::Edit { .. } | Request::Tls { .. } | Request::Template(_) => 0,
        Request::CreateDomain(_) => 1,
        Request::Password(_) | Request::Create(_) => 2,
        Request::Delete(_) => 3,
        Request::Offboard(_) => 4,
    };
    let start_of = |phase: usize| requests.iter().position(|r| phase_of(r) >= phase).unwrap_or(total);
    let (domains, second, split, offboarding) = (start_of(1), start_of(2), start_of(3), start_of(4));
    let results: Mutex<Vec<ItemOutcome>> = Mutex::new(vec![ItemOutcome::NotAttempted; plan.actions.len()]);
    let fatal: Mutex<Option<Error>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let progress = Mutex::new(progress);

    for phase in [
        &requests[..domains],
        &requests[domains..second],
        &requests[second..split],
        &requests[split..offboarding],
        &requests[offboarding..],
    ] {
        let next = AtomicUsize::new(0);
        let (blocked, unconfirmed_disables, without_domain) = {
            let results = results.lock().unwrap_or_else(|e| e.into_inner());
            (
                passwords_without_their_authsource(plan, &results),
                offboards_without_their_disable(plan, &results),
                gate.blocked(plan, &results),
            )
        };
        let work = || {
            while !stop.load(Ordering::SeqCst) {
                let n = next.fetch_add(1, Ordering::SeqCst);
                let Some(request) = phase.get(n) else { break };
                let executed = match request {
                    Request::Password(i) if blocked.contains(i) => {
                        let mut results = results.lock().unwrap_or_else(|e| e.into_inner());
                        results[*i] = ItemOutcome::Failed(
                            "not sent: the switch of its authsource to mailcow failed, and mailcow ignores a password \
                             for a mailbox that authenticates elsewhere"
                                .to_owned(),
                        );
                        continue;
                    }
                    Request::Create(i) if without_domain.contains_key(i) => {
                        let mut results = results.lock().unwrap_or_else(|e| e.into_inner());
                        results[*i] = ItemOutcome::Failed(without_domain[i].clone());
                        continue;
                    }
                    // Left not attempted: its disable failed (that is the failure).
                    Request::Offboard(i) if unconfirmed_disables.contains(i) => continue,
                    _ => execute(client, plan, request),
                };
                match executed {
                    Ok(items) => {
                        let mut results = results.lock().unwrap_or_else(|e| e.into_inner());
                        for (i, result) in items {
                            results[i] = result.into();
                        }
                        drop(results);
                        let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                        (progress.lock().unwrap_or_else(|e| e.into_inner()))(finished, total);
                    }
                    Err(e) => {
                        done.fetch_add(1, Ordering::SeqCst);
                        stop.store(true, Ordering::SeqCst);
                        fatal.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                    }
                }
            }
        };
        let workers = concurrency.clamp(1, phase.len().max(1));
        if workers == 1 {
            work();
        } else {
            std::thread::scope(|scope| {
                for _ in 0..workers {
                    scope.spawn(work);
                }
            });
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    gate.learn(plan, &results);
    Applied {
        results,
        fatal: fatal.into_inner().unwrap_or_else(|e| e.into_inner()),
        requests: done.into_inner(),
    }
}

/// Password actions whose mailbox's authsource switch to `mailcow` (an update of the same
/// uid) did not succeed: mailcow would answer success and ignore the password (API.md 5),
/// so sending it would record a password mailcow never took.
fn passwords_without_their_authsource(plan: &Plan, results: &[ItemOutcome]) -> std::collections::BTreeSet<usize> {
    let failed_switches: std::collections::BTreeSet<&str> = plan
        .actions
        .iter()
        .zip(results)
        .filter(|(action, result)| {
            let switches = matches!(&action.kind, ActionKind::Update { changes, .. }
                if changes.iter().any(|c| c.field == Field::Authsource));
            switches && !result.is_applied()
        })
        .map(|(action, _)| action.uid.as_str())
        .collect();
    plan.actions
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a.kind, ActionKind::Password { .. }) && failed_switches.contains(a.uid.as_str()))
        .map(|(i, _)| i)
        .collect()
}

/// Offboard actions whose mailbox's disable (a `Deactivate`, or an `Update` setting
/// `active` 0 or 2, of the same uid) mailcow has not confirmed: revoking a working
/// mailbox's app passwords is not what was planned.
fn offboards_without_their_disable(plan: &Plan, results: &[ItemOutcome]) -> std::collections::BTreeSet<usize> {
    let disabled: std::collections::BTreeSet<&str> = plan
        .actions
        .iter()
        .zip(results)
        .filter(|(action, result)| action.kind.disables() && result.is_applied())
        .map(|(action, _)| action.uid.as_str())
        .collect();
    plan.actions
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a.kind, ActionKind::Offboard { .. }) && !disabled.contains(a.uid.as_str()))
        .map(|(i, _)| i)
        .collect()
}

/// How many requests the plan needs (for reports and the dry-run): an offboarding counts
/// as one (its list, and the delete when there is something to delete).
pub fn request_count(plan: &Plan) -> usize {
    requests(plan).len()
}

/// What happened to each alias action (`results[i]` for `plan.actions[i]`).
#[derive(Debug, Default)]
pub struct AppliedAliases {
    pub results: Vec<AliasOutcome>,
    pub fatal: Option<Error>,
    /// Requests sent.
    pub requests: usize,
}

#[cfg(test)]
impl AppliedAliases {
    /// For `settle_aliases`: the id of each confirmed action.
    pub fn confirmed(&self) -> Vec<Option<u64>> {
        self.results.iter().map(AliasOutcome::id).collect()
    }
}

/// Run the alias plan: edits (one per call), adds (one call per goto), deletes (one call).
pub fn apply_aliases(client: &dyn MailcowApi, plan: &crate::core::aliases::AliasPlan) -> AppliedAliases {
    use crate::core::aliases::AliasActionKind;
    let mut out = AppliedAliases {
        results: vec![AliasOutcome::NotAttempted; plan.actions.len()],
        fatal: None,
        requests: 0,
    };
    let mut adds: BTreeMap<(String, bool), Vec<usize>> = BTreeMap::new();
    let mut deletes: Vec<usize> = Vec::new();
    let mut run = || -> Result<(), Error> {
        for (i, action) in plan.actions.iter().enumerate() {
            match &action.kind {
                AliasActionKind::Edit { id, goto, .. } => {
                    out.requests += 1;
                    out.results[i] = client.edit_alias(*id, &action.address, goto)?.map(|()| *id).into();
                }
                AliasActionKind::Add { goto, sender_allowed } => {
                    adds.entry((goto.clone(), *sender_allowed)).or_default().push(i)
                }
                AliasActionKind::Delete { .. } => deletes.push(i),
                AliasActionKind::SendAs { new, grant, .. } => {
                    out.requests += 1;
                    out.results[i] = match client.edit_sender_acl(&action.address, new)? {
                        // A refused grant is not recorded: the next pass plans it again.
                        Ok(refused) => {
                            let mask = grant.iter().enumerate().fold(0u64, |mask, (i, (a, _))| {
                                let no = refused.iter().any(|r| r.eq_ignore_ascii_case(a));
                                if no && i < 64 { mask | 1 << i } else { mask }
                            });
                            AliasOutcome::Applied(mask)
                        }
                        Err(message) => AliasOutcome::Failed(message),
                    };
                }
            }
        }
        for ((goto, sender_allowed), items) in &adds {
            let addresses: Vec<String> = items.iter().map(|&i| plan.actions[i].address.clone()).collect();
            out.requests += 1;
            let answer = client.add_aliases(&addresses, goto, *sender_allowed)?;
            for &i in items {
                let r = answer
                    .get(&plan.actions[i].address)
                    .cloned()
                    .unwrap_or_else(|| Err("no result".into()));
                out.results[i] = r.into();
            }
        }
        if !deletes.is_empty() {
            let ids: Vec<u64> = deletes
                .iter()
                .filter_map(|&i| match plan.actions[i].kind {
                    AliasActionKind::Delete { id, .. } => Some(id),
                    _ => None,
                })
                .collect();
            let addresses: Vec<String> = deletes.iter().map(|&i| plan.actions[i].address.clone()).collect();
            out.requests += 1;
            let answer = client.delete_aliases(&ids, &addresses)?;
            for (&i, id) in deletes.iter().zip(&ids) {
                let r = answer
                    .get(&plan.actions[i].address)
                    .cloned()
                    .unwrap_or_else(|| Err("no result".into()));
                out.results[i] = r.map(|()| *id).into();
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        out.fatal = Some(e);
    }
    out
}

/// How many requests the alias plan needs.
pub fn alias_request_count(plan: &crate::core::aliases::AliasPlan) -> usize {
    use crate::core::aliases::AliasActionKind;
    let mut adds = std::collections::BTreeSet::new();
    let mut n = 0;
    let mut deletes = false;
    for a in &plan.actions {
        match &a.kind {
            AliasActionKind::Edit { .. } | AliasActionKind::SendAs { .. } => n += 1,
            AliasActionKind::Add { goto, sender_allowed } => {
                adds.insert((goto.clone(), *sender_allowed));
            }
            AliasActionKind::Delete { .. } => deletes = true,
        }
    }
    n + adds.len() + usize::from(deletes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::aliases::{AliasAction, AliasActionKind, AliasPlan};
    use crate::core::plan::{Action, FieldChange};
    use crate::edge::mailcow::fake::{Call, FakeMailcow};

    /// An action for `address`, its uid the local part.
    fn action(address: &str, kind: ActionKind) -> Action {
        Action {
            uid: address.split('@').next().unwrap_or_default().into(),
            address: address.into(),
            kind,
            row: None,
        }
    }

    fn update(address: &str, quota: u64) -> Action {
        action(
            address,
            ActionKind::Update {
                changes: vec![FieldChange {
                    field: Field::Quota,
                    old: json!(1),
                    new: json!(quota),
                }],
                add_tag: None,
                attribute_hash: None,
            },
        )
    }

    /// The switch of a mailbox's authsource from `ldap` to `mailcow`.
    fn switch(address: &str) -> Action {
        action(
            address,
            ActionKind::Update {
                changes: vec![FieldChange {
                    field: Field::Authsource,
                    old: json!("ldap"),
                    new: json!("mailcow"),
                }],
                add_tag: None,
                attribute_hash: None,
            },
        )
    }

    fn password(address: &str) -> Action {
        action(
            address,
            ActionKind::Password {
                value: crate::config::Secret::new("{SSHA}x".to_owned()),
                fingerprint: "f".into(),
            },
        )
    }

    fn create(address: &str) -> Action {
        action(
            address,
            ActionKind::Create {
                name: None,
                quota_mib: 1024,
                active: 1,
                tls_in: None,
                tls_out: None,
                password: NewPassword::Random,
                password_fp: None,
                authsource: Authsource::Mailcow,
                tags: Vec::new(),
                access: Vec::new(),
                template: None,
            },
        )
    }

    fn create_domain(domain: &str) -> Action {
        Action {
            uid: String::new(),
            address: domain.into(),
            kind: ActionKind::CreateDomain(crate::core::policy::NewDomain::default()),
            row: None,
        }
    }

    #[test]
    fn domains_are_created_before_the_creates_and_a_failed_one_holds_its_creates_back_in_every_part() {
        let client = FakeMailcow::new().failing("bad.test", "domain_invalid");
        let first = Plan {
            actions: vec![
                create("a@new.test"),
                update("u@example.org", 2048),
                create_domain("new.test"),
                create("b@bad.test"),
                create_domain("bad.test"),
                create("c@example.org"),
            ],
            ..Plan::default()
        };
        let mut gate = DomainGate::default();
        let mut progress = |_: usize, _: usize| {};
        let applied = apply_with(&client, &first, 4, &mut gate, &mut progress);
        assert!(applied.fatal.is_none());
        assert_eq!(applied.confirmed(), vec![true, true, true, false, false, true]);
        assert_eq!(
            applied.results[3],
            ItemOutcome::Failed("not sent: its domain bad.test could not be created in mailcow: domain_invalid".into())
        );
        let endpoints = client.endpoints();
        let last_domain = endpoints.iter().rposition(|e| *e == "add/domain").unwrap();
        let first_create = endpoints.iter().position(|e| *e == "add/mailbox").unwrap();
        assert!(last_domain < first_create, "{endpoints:?}");
        assert_eq!(endpoints[0], "edit/mailbox", "edits of existing mailboxes come first");
        assert!(
            !client.calls().iter().any(|c| c.items == items(&["b@bad.test"])),
            "nothing was sent for a user of the failed domain"
        );
        let calls = client.calls();
        let body = &calls.iter().find(|c| c.items == items(&["new.test"])).unwrap().attr;
        assert_eq!(
            body,
            &json!({"domain": "new.test", "description": "added by mailcow-ldap-sync", "mailboxes": 1000,
                "aliases": 4000, "defquota": 3072, "maxquota": 10240, "quota": 10_240_000, "active": 1})
        );

        // A later part of the same pass: the failed domain still holds its creates back.
        let later = Plan {
            actions: vec![create("d@bad.test"), create("e@new.test")],
            ..Plan::default()
        };
        let applied = apply_with(&client, &later, 1, &mut gate, &mut progress);
        assert_eq!(applied.confirmed(), vec![false, true]);
        assert!(
            applied.results[0]
                .error()
                .unwrap()
                .contains("bad.test could not be created")
        );
        assert_eq!(client.count_endpoint("add/domain"), 2, "each domain is asked for once");
    }

    #[test]
    fn a_fatal_error_on_a_domain_leaves_its_creates_not_attempted() {
        let client = FakeMailcow::new().fatal_at(1, "HTTP 500");
        let applied = run(&client, vec![create_domain("new.test"), create("a@new.test")], 1);
        assert!(applied.fatal.is_some());
        assert_eq!(
            applied.results,
            vec![ItemOutcome::NotAttempted, ItemOutcome::NotAttempted]
        );
        assert_eq!(client.endpoints(), vec!["add/domain"]);
    }

    fn tls(address: &str) -> Action {
        action(
            address,
            ActionKind::Tls {
                tls_in: true,
                tls_out: false,
                old: (false, false),
            },
        )
    }

    fn deactivate(address: &str) -> Action {
        action(
            address,
            ActionKind::Deactivate {
                active: 0,
                old: 1,
                attribute_hash: None,
                add_tag: None,
            },
        )
    }

    fn delete(address: &str) -> Action {
        action(address, ActionKind::Delete)
    }

    fn run(client: &FakeMailcow, actions: Vec<Action>, concurrency: usize) -> Applied {
        let plan = Plan {
            actions,
            ..Plan::default()
        };
        let mut progress = |_: usize, _: usize| {};
        apply(client, &plan, concurrency, &mut progress)
    }

    /// Which phase a call belongs to: 0 edits of existing mailboxes, 1 passwords and creates,
    /// 2 removals (as the helpers above build them).
    fn phase(call: &Call) -> u8 {
        match call.endpoint {
            "add/mailbox" => 1,
            "edit/mailbox" if call.attr.get("password").is_some() => 1,
            "edit/mailbox" if call.attr == json!({ "active": 0 }) => 2,
            "delete/mailbox" => 2,
            _ => 0,
        }
    }

    /// (endpoint, items) of each call.
    fn sent(client: &FakeMailcow) -> Vec<(&'static str, Vec<String>)> {
        client.calls().into_iter().map(|c| (c.endpoint, c.items)).collect()
    }

    fn items(addresses: &[&str]) -> Vec<String> {
        addresses.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn a_password_waits_for_its_authsource_switch_to_succeed() {
        let plan = Plan {
            actions: vec![
                switch("a@example.org"),
                password("a@example.org"),
                switch("b@example.org"),
                password("b@example.org"),
                password("c@example.org"),
            ],
            ..Plan::default()
        };
        // a's switch failed, b's was confirmed, c needed none.
        let results = vec![
            ItemOutcome::Failed("refused".to_owned()),
            ItemOutcome::NotAttempted,
            ItemOutcome::Applied,
            ItemOutcome::NotAttempted,
            ItemOutcome::NotAttempted,
        ];
        let blocked = passwords_without_their_authsource(&plan, &results);
        assert_eq!(blocked.into_iter().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn edits_come_first_then_passwords_and_creates_then_removals() {
        let client = FakeMailcow::new();
        let applied = run(
            &client,
            vec![
                delete("e@x.org"),
                create("d@x.org"),
                deactivate("f@x.org"),
                password("b@x.org"),
                tls("c@x.org"),
                update("a@x.org", 5),
            ],
            1,
        );
        assert_eq!(
            sent(&client),
            [
                ("edit/mailbox", items(&["a@x.org"])),
                ("edit/tls_policy", items(&["c@x.org"])),
                ("edit/mailbox", items(&["b@x.org"])),
                ("add/mailbox", items(&["d@x.org"])),
                ("edit/mailbox", items(&["f@x.org"])),
                ("delete/mailbox", items(&["e@x.org"])),
            ]
        );
        let calls = client.calls();
        assert_eq!(calls[0].attr, json!({ "quota": 5 }));
        assert_eq!(calls[2].attr["password"], "{SSHA}x");
        assert_eq!(calls[4].attr, json!({ "active": 0 }));
        assert!(
            applied.results.iter().all(ItemOutcome::is_applied),
            "{:?}",
            applied.results
        );
        assert!(applied.fatal.is_none());
        assert_eq!(applied.requests, 6);
    }

    #[test]
    fn an_authsource_switch_lands_before_its_password() {
        let client = FakeMailcow::new();
        let applied = run(&client, vec![password("a@x.org"), switch("a@x.org")], 1);
        let calls = client.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].attr, json!({ "authsource": "mailcow" }));
        assert!(calls[1].attr.get("password").is_some());
        assert_eq!(applied.results, [ItemOutcome::Applied, ItemOutcome::Applied]);
    }

    #[test]
    fn a_failed_switch_keeps_its_password_back() {
        let client = FakeMailcow::new().failing("a@x.org", "authsource_invalid");
        let applied = run(
            &client,
            vec![switch("a@x.org"), password("a@x.org"), password("b@x.org")],
            1,
        );
        assert_eq!(
            sent(&client),
            [
                ("edit/mailbox", items(&["a@x.org"])),
                ("edit/mailbox", items(&["b@x.org"]))
            ]
        );
        assert_eq!(applied.results[0], ItemOutcome::Failed("authsource_invalid".into()));
        let held = applied.results[1].error().unwrap_or_default();
        assert!(held.starts_with("not sent: the switch of its authsource"), "{held}");
        assert_eq!(applied.results[2], ItemOutcome::Applied);
        assert!(applied.fatal.is_none());
        assert_eq!(applied.requests, 2, "a password held back is no request");
    }

    #[test]
    fn identical_edits_share_one_request() {
        let plan = Plan {
            actions: vec![update("a@x.org", 5), update("b@x.org", 5), update("c@x.org", 7)],
            ..Plan::default()
        };
        let reqs = requests(&plan);
        assert_eq!(reqs.len(), 2);
        let sizes: Vec<usize> = reqs
            .iter()
            .map(|r| match r {
                Request::Edit { items, .. } => items.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, vec![2, 1]);
    }

    #[test]
    fn identical_edits_go_500_to_a_request() {
        let mut actions: Vec<Action> = (0..1201).map(|n| update(&format!("u{n}@x.org"), 5)).collect();
        actions.push(update("v@x.org", 7));
        actions.push(update("w@x.org", 7));
        let client = FakeMailcow::new();
        let applied = run(&client, actions.clone(), 1);
        let calls = client.calls();
        let sizes: Vec<usize> = calls.iter().map(|c| c.items.len()).collect();
        assert_eq!(sizes, [500, 500, 201, 2]);
        assert!(calls[..3].iter().all(|c| c.attr == json!({ "quota": 5 })));
        assert_eq!(calls[3].attr, json!({ "quota": 7 }));
        let mut sent: Vec<String> = calls.into_iter().flat_map(|c| c.items).collect();
        sent.sort();
        let mut planned: Vec<String> = actions.into_iter().map(|a| a.address).collect();
        planned.sort();
        assert_eq!(sent, planned, "every mailbox sent once");
        assert!(applied.results.iter().all(ItemOutcome::is_applied));
        assert_eq!(applied.requests, 4);
    }

    #[test]
    fn a_fatal_error_stops_the_pass() {
        let client = FakeMailcow::new().fatal_at(2, "HTTP 500 (Internal Server Error)");
        let applied = run(
            &client,
            vec![
                update("a@x.org", 5),
                update("b@x.org", 7),
                update("c@x.org", 9),
                create("d@x.org"),
                delete("e@x.org"),
            ],
            1,
        );
        assert_eq!(
            sent(&client),
            [
                ("edit/mailbox", items(&["a@x.org"])),
                ("edit/mailbox", items(&["b@x.org"]))
            ],
            "nothing after the failed call is sent"
        );
        assert_eq!(
            applied.results,
            [
                ItemOutcome::Applied,
                ItemOutcome::NotAttempted,
                ItemOutcome::NotAttempted,
                ItemOutcome::NotAttempted,
                ItemOutcome::NotAttempted,
            ]
        );
        match &applied.fatal {
            Some(Error::Mailcow { endpoint, message }) => {
                assert_eq!(endpoint, "edit/mailbox");
                assert!(message.contains("HTTP 500"), "{message}");
            }
            other => panic!("expected the fatal error, got {other:?}"),
        }
        assert_eq!(applied.requests, 2, "the failed request counts");
        assert_eq!(applied.confirmed(), [true, false, false, false, false]);
    }

    #[test]
    fn no_removal_after_a_fatal_error_in_an_earlier_phase() {
        for concurrency in [1, 4] {
            let client = FakeMailcow::new().fatal_at(1, "connection failed");
            let applied = run(
                &client,
                vec![
                    create("a@x.org"),
                    create("b@x.org"),
                    create("c@x.org"),
                    deactivate("d@x.org"),
                    delete("e@x.org"),
                ],
                concurrency,
            );
            let calls = client.calls();
            assert!(calls.iter().all(|c| c.endpoint == "add/mailbox"), "{calls:?}");
            assert!(applied.fatal.is_some());
            assert_eq!(applied.results[3], ItemOutcome::NotAttempted);
            assert_eq!(applied.results[4], ItemOutcome::NotAttempted);
            if concurrency == 1 {
                assert_eq!(calls.len(), 1);
                assert!(applied.results[..3].iter().all(|r| *r == ItemOutcome::NotAttempted));
            }
        }
    }

    #[test]
    fn item_failures_do_not_stop_the_pass() {
        let client = FakeMailcow::new()
            .failing("b@x.org", "mailbox_quota_left_exceeded 2048")
            .failing("d@x.org", "object_exists d@x.org");
        let applied = run(
            &client,
            vec![
                update("a@x.org", 5),
                update("b@x.org", 5),
                update("c@x.org", 5),
                create("d@x.org"),
                create("e@x.org"),
                delete("f@x.org"),
            ],
            1,
        );
        assert_eq!(
            client.endpoints(),
            ["edit/mailbox", "add/mailbox", "add/mailbox", "delete/mailbox"]
        );
        assert_eq!(
            applied.results,
            [
                ItemOutcome::Applied,
                ItemOutcome::Failed("mailbox_quota_left_exceeded 2048".into()),
                ItemOutcome::Applied,
                ItemOutcome::Failed(
                    "object_exists d@x.org (the mailbox appeared meanwhile; it is adopted on the next pass)".into()
                ),
                ItemOutcome::Applied,
                ItemOutcome::Applied,
            ]
        );
        assert!(applied.fatal.is_none());
        assert_eq!(applied.confirmed(), [true, false, true, false, true, true]);
    }

    #[test]
    fn concurrency_gives_the_same_results_per_action() {
        let mut actions = Vec::new();
        for n in 0..12 {
            actions.push(create(&format!("new{n}@x.org")));
            actions.push(update(&format!("old{n}@x.org"), n % 3));
            actions.push(password(&format!("pw{n}@x.org")));
            actions.push(deactivate(&format!("gone{n}@x.org")));
        }
        actions.push(switch("sw@x.org"));
        actions.push(password("sw@x.org"));
        actions.push(tls("t@x.org"));
        actions.push(delete("del@x.org"));
        let script = || {
            FakeMailcow::new()
                .failing("new3@x.org", "domain_not_found")
                .failing("old4@x.org", "access_denied")
                .failing("pw5@x.org", "password_complexity")
                .failing("sw@x.org", "authsource_invalid")
        };
        let serial_client = script();
        let serial = run(&serial_client, actions.clone(), 1);
        for concurrency in [2, 8] {
            let client = script();
            let parallel = run(&client, actions.clone(), concurrency);
            assert_eq!(parallel.results, serial.results, "concurrency {concurrency}");
            assert_eq!(parallel.requests, serial.requests);
            assert!(parallel.fatal.is_none());
            let calls = client.calls();
            let phases: Vec<u8> = calls.iter().map(phase).collect();
            assert!(phases.is_sorted(), "phases out of order: {phases:?}");
            let mut calls = sent(&client);
            calls.sort();
            let mut serial_calls = sent(&serial_client);
            serial_calls.sort();
            assert_eq!(calls, serial_calls);
        }
        assert_eq!(serial.results.iter().filter(|r| r.error().is_some()).count(), 5);
    }

    fn alias(address: &str, kind: AliasActionKind) -> AliasAction {
        AliasAction {
            address: address.into(),
            owner: "user:u".into(),
            kind,
        }
    }

    fn alias_plan(actions: Vec<AliasAction>) -> AliasPlan {
        AliasPlan {
            actions,
            ..AliasPlan::default()
        }
    }

    fn add(address: &str, goto: &str) -> AliasAction {
        alias(
            address,
            AliasActionKind::Add {
                goto: goto.into(),
                sender_allowed: true,
            },
        )
    }

    #[test]
    fn alias_edits_then_adds_per_goto_then_one_delete() {
        let plan = alias_plan(vec![
            alias(
                "old@x.org",
                AliasActionKind::Delete {
                    id: 7,
                    goto: "u@x.org".into(),
                },
            ),
            add("x@x.org", "u@x.org"),
            alias(
                "e@x.org",
                AliasActionKind::Edit {
                    id: 5,
                    old_goto: "u@x.org".into(),
                    goto: "v@x.org".into(),
                },
            ),
            add("y@x.org", "u@x.org"),
            add("z@x.org", "v@x.org"),
        ]);
        let client = FakeMailcow::new().failing("y@x.org", "alias_invalid");
        let applied = apply_aliases(&client, &plan);
        assert_eq!(
            sent(&client),
            [
                ("edit/alias", items(&["e@x.org"])),
                ("add/alias", items(&["x@x.org", "y@x.org"])),
                ("add/alias", items(&["z@x.org"])),
                ("delete/alias", items(&["old@x.org"])),
            ]
        );
        assert_eq!(client.calls()[3].attr, json!([7]));
        // The fake's ids: 1000 + 10 × the call's number + the address's place in it.
        assert_eq!(
            applied.results,
            [
                AliasOutcome::Applied(7),
                AliasOutcome::Applied(1020),
                AliasOutcome::Applied(5),
                AliasOutcome::Failed("alias_invalid".into()),
                AliasOutcome::Applied(1030),
            ]
        );
        assert_eq!(applied.confirmed(), [Some(7), Some(1020), Some(5), None, Some(1030)]);
        assert!(applied.fatal.is_none());
        assert_eq!(applied.requests, 4);
    }

    #[test]
    fn a_fatal_alias_call_stops_the_alias_pass() {
        let plan = alias_plan(vec![
            add("x@x.org", "u@x.org"),
            add("z@x.org", "v@x.org"),
            alias(
                "old@x.org",
                AliasActionKind::Delete {
                    id: 7,
                    goto: "u@x.org".into(),
                },
            ),
        ]);
        let client = FakeMailcow::new().fatal_at(1, "HTTP 502 (Bad Gateway)");
        let applied = apply_aliases(&client, &plan);
        assert_eq!(client.endpoints(), ["add/alias"]);
        assert_eq!(
            applied.results,
            [
                AliasOutcome::NotAttempted,
                AliasOutcome::NotAttempted,
                AliasOutcome::NotAttempted
            ]
        );
        assert!(matches!(applied.fatal, Some(Error::Mailcow { .. })));
        assert_eq!(applied.requests, 1);
    }

    #[test]
    fn random_passwords_meet_every_policy_class() {
        let p = random_password();
        assert_eq!(p.len(), 24);
        assert!(p.chars().any(|c| c.is_ascii_uppercase()));
        assert!(p.chars().any(|c| c.is_ascii_lowercase()));
        assert!(p.chars().any(|c| c.is_ascii_digit()));
        assert!(p.chars().any(|c| !c.is_ascii_alphanumeric()));
        assert_ne!(p, random_password());
    }

    fn offboard(address: &str, eas: bool) -> Action {
        action(
            address,
            ActionKind::Offboard {
                app_passwords: true,
                eas,
            },
        )
    }

    fn disable_by_ldap(address: &str) -> Action {
        action(
            address,
            ActionKind::Update {
                changes: vec![FieldChange {
                    field: Field::Active,
                    old: json!(1),
                    new: json!(0),
                }],
                add_tag: None,
                attribute_hash: None,
            },
        )
    }

    #[test]
    fn an_offboarding_runs_after_its_disable_lists_once_and_deletes_every_id_at_once() {
        let client = FakeMailcow::new()
            .with_app_passwords("gone@example.org", &[3, 7])
            .with_app_passwords("stays@example.org", &[5]);
        let applied = run(
            &client,
            vec![
                deactivate("gone@example.org"),
                offboard("gone@example.org", true),
                update("stays@example.org", 9),
            ],
            4,
        );
        assert_eq!(applied.results, vec![ItemOutcome::Applied; 3]);
        assert_eq!(
            client.endpoints(),
            vec![
                "edit/mailbox",
                "edit/mailbox",
                "get/app-passwd/all",
                "delete/app-passwd",
                "delete/eas_cache"
            ]
        );
        let calls = client.calls();
        assert_eq!(
            calls[1].items,
            vec!["gone@example.org".to_owned()],
            "the disable before the offboarding"
        );
        assert_eq!(calls[3].attr, json!([3, 7]));
        assert!(client.app_passwords_of("gone@example.org").is_empty());
        assert_eq!(client.app_passwords_of("stays@example.org"), vec![5]);
        assert_eq!(applied.requests, 3);
        assert_eq!(
            request_count(&Plan {
                actions: vec![deactivate("a@x.org"), offboard("a@x.org", false)],
                ..Plan::default()
            }),
            2
        );
    }

    #[test]
    fn nothing_to_revoke_sends_no_delete() {
        let client = FakeMailcow::new();
        let applied = run(
            &client,
            vec![disable_by_ldap("u@example.org"), offboard("u@example.org", false)],
            1,
        );
        assert_eq!(applied.results, vec![ItemOutcome::Applied; 2]);
        assert_eq!(client.endpoints(), vec!["edit/mailbox", "get/app-passwd/all"]);
    }

    #[test]
    fn a_failed_disable_leaves_its_offboarding_not_attempted() {
        let client = FakeMailcow::new()
            .failing("u@example.org", "access_denied")
            .with_app_passwords("u@example.org", &[1])
            .with_app_passwords("v@example.org", &[2]);
        let applied = run(
            &client,
            vec![
                deactivate("u@example.org"),
                offboard("u@example.org", true),
                disable_by_ldap("v@example.org"),
                offboard("v@example.org", false),
            ],
            2,
        );
        assert_eq!(applied.results[0], ItemOutcome::Failed("access_denied".into()));
        assert_eq!(applied.results[1], ItemOutcome::NotAttempted);
        assert_eq!(applied.results[2..], [ItemOutcome::Applied, ItemOutcome::Applied]);
        assert_eq!(
            client.app_passwords_of("u@example.org"),
            vec![1],
            "a mailbox not disabled keeps them"
        );
        assert!(client.app_passwords_of("v@example.org").is_empty());
        assert!(
            !client
                .calls()
                .iter()
                .any(|c| c.endpoint != "edit/mailbox" && c.items == ["u@example.org"])
        );
    }

    #[test]
    fn a_failed_revocation_fails_the_item_and_keeps_the_disable() {
        let client = FakeMailcow::new()
            .with_app_passwords("u@example.org", &[4])
            .failing_at("delete/app-passwd", "u@example.org", "app_passwd_id_invalid")
            .failing_at("delete/eas_cache", "u@example.org", "access_denied");
        let applied = run(
            &client,
            vec![deactivate("u@example.org"), offboard("u@example.org", true)],
            1,
        );
        assert_eq!(applied.results[0], ItemOutcome::Applied, "the disable stands");
        let message = applied.results[1].error().expect("the offboarding failed").to_owned();
        assert!(
            message.contains("app passwords not revoked: app_passwd_id_invalid"),
            "{message}"
        );
        assert!(
            message.contains("ActiveSync cache not reset: access_denied"),
            "{message}"
        );
        assert!(applied.fatal.is_none());
        // Nothing undoes the disable: no enabling edit was sent.
        assert_eq!(client.count_endpoint("edit/mailbox"), 1);
    }

    #[test]
    fn a_fatal_error_in_an_offboarding_stops_the_pass() {
        // Calls: 1 the disable of a, 2 of b (one request: same attr), 3 list a → fatal.
        let client = FakeMailcow::new()
            .with_app_passwords("a@example.org", &[1])
            .with_app_passwords("b@example.org", &[2])
            .fatal_at(2, "HTTP 502");
        let applied = run(
            &client,
            vec![
                deactivate("a@example.org"),
                offboard("a@example.org", false),
                deactivate("b@example.org"),
                offboard("b@example.org", false),
            ],
            1,
        );
        assert!(applied.fatal.is_some());
        assert_eq!(applied.results[0], ItemOutcome::Applied);
        assert_eq!(applied.results[1], ItemOutcome::NotAttempted);
        assert_eq!(applied.results[3], ItemOutcome::NotAttempted);
        assert_eq!(client.endpoints(), vec!["edit/mailbox", "get/app-passwd/all"]);
        assert_eq!(client.app_passwords_of("b@example.org"), vec![2]);
    }
}
