//! The `domain_admins` part of a pass (issue 18 part 6): read the group and mailcow's
//! domain admins, plan (`core::admins`), and after applying, what to record and report.

use serde_json::{Value, json};

use crate::apply::AdminOutcome;
use crate::config::{Config, DomainAdminsConfig};
use crate::core::admins::{
    self, AdminAction, AdminActionKind, AdminInputs, AdminMember, AdminPassword, AdminPlan, MailcowAdmin, ManagedAdmins,
};
use crate::core::model::Counts;
use crate::edge::ldap::LdapConnection;
use crate::edge::mailcow::MailcowApi;
use crate::edge::state_db::StateDb;
use crate::error::Result;
use crate::ldap_read;

/// Both sides of the admins, read once.
pub struct AdminsRead {
    /// `Err`: the group could not be read (nothing is removed this pass).
    pub members: std::result::Result<Vec<AdminMember>, String>,
    pub mailcow: Vec<MailcowAdmin>,
    pub managed: ManagedAdmins,
    /// Members left out while reading (no username attribute, missing entry).
    pub warnings: Vec<String>,
}

/// Read the group (on the pass's connection), mailcow's admins, and the ones this tool made.
/// An `Err` (mailcow or the state unreadable) stops the pass.
pub fn read(
    config: &Config,
    admins: &DomainAdminsConfig,
    conn: &mut LdapConnection,
    client: &dyn MailcowApi,
    db: Option<&StateDb>,
) -> Result<AdminsRead> {
    let mut warnings = Vec::new();
    let members = ldap_read::read_domain_admins(conn, config, admins, &mut warnings);
    let mailcow = client.domain_admins()?;
    let managed = match db {
        Some(db) => db.load_domain_admins()?,
        None => ManagedAdmins::new(),
    };
    Ok(AdminsRead {
        members,
        mailcow,
        managed,
        warnings,
    })
}

pub fn plan(config: &Config, admins: &DomainAdminsConfig, read: &AdminsRead) -> AdminPlan {
    admins::plan_admins(AdminInputs {
        members: read.members.as_ref().ok().map(Vec::as_slice),
        mailcow: &read.mailcow,
        managed: &read.managed,
        domains: &admins.domains,
        random_passwords: admins.random_passwords,
        max_removals: config.sync.max_removals,
    })
}

fn describe(action: &AdminAction) -> String {
    match &action.kind {
        AdminActionKind::Create { domains, password } => format!(
            "create domain admin {} for {} ({} password)",
            action.username,
            domains.join(", "),
            password_kind(password)
        ),
        AdminActionKind::SetDomains { domains, old } => format!(
            "update domain admin {}: domains {} → {}",
            action.username,
            old.join(", "),
            domains.join(", ")
        ),
        AdminActionKind::Delete => format!("delete domain admin {} (left the group)", action.username),
    }
}

fn password_kind(password: &AdminPassword) -> &'static str {
    match password {
        AdminPassword::Ldap(_) => "LDAP",
        AdminPassword::Random => "random",
    }
}

/// One line per change (with its outcome once applied); failures only, when asked.
pub fn lines(plan: &AdminPlan, outcomes: Option<&[AdminOutcome<'_>]>, only_failures: bool) -> Vec<String> {
    match outcomes {
        None => {
            if only_failures {
                return Vec::new();
            }
            plan.actions.iter().map(|a| format!("plan: {}", describe(a))).collect()
        }
        Some(outcomes) => outcomes
            .iter()
            .filter(|o| !only_failures || o.result.is_err())
            .map(|o| match &o.result {
                Ok(()) => describe(o.action),
                Err(e) => format!("FAILED {}: {e}", describe(o.action)),
            })
            .collect(),
    }
}

/// The `domain_admins` member of the JSON report: every change (planned, or with its
/// outcome), the skipped members, and the deletions held back. No password, only its kind.
pub fn report(plan: &AdminPlan, outcomes: Option<&[AdminOutcome<'_>]>) -> Value {
    let change = |a: &AdminAction, result: Option<&std::result::Result<(), String>>| {
        let mut v = json!({"username": a.username, "dn": a.dn, "action": a.kind.verb()});
        match &a.kind {
            AdminActionKind::Create { domains, password } => {
                v["domains"] = json!(domains);
                v["password"] = json!(password_kind(password));
            }
            AdminActionKind::SetDomains { domains, old } => {
                v["domains"] = json!(domains);
                v["old_domains"] = json!(old);
            }
            AdminActionKind::Delete => {}
        }
        if let Some(result) = result {
            v["ok"] = json!(result.is_ok());
            if let Err(e) = result {
                v["error"] = json!(e);
            }
        }
        v
    };
    let changes: Vec<Value> = match outcomes {
        Some(outcomes) => outcomes.iter().map(|o| change(o.action, Some(&o.result))).collect(),
        None => plan.actions.iter().map(|a| change(a, None)).collect(),
    };
    json!({
        "changes": changes,
        "skipped": plan.skipped.iter().map(|(who, why)| json!({"member": who, "reason": why})).collect::<Vec<_>>(),
        "held_back": plan.held_back,
        "guard": plan.guard,
    })
}

/// Add the outcomes to the pass's counts.
pub fn count(outcomes: &[AdminOutcome<'_>], skipped: usize, counts: &mut Counts) {
    for o in outcomes {
        match (&o.result, &o.action.kind) {
            (Err(_), _) => counts.failed += 1,
            (Ok(()), AdminActionKind::Create { .. }) => counts.admins_created += 1,
            (Ok(()), AdminActionKind::SetDomains { .. }) => counts.admins_updated += 1,
            (Ok(()), AdminActionKind::Delete) => counts.admins_deleted += 1,
        }
    }
    counts.skipped += skipped;
}

/// What the state records: the confirmed creates (username, DN), and the confirmed deletes
/// plus the admins forgotten (gone from mailcow and from the group).
pub fn settle(plan: &AdminPlan, outcomes: &[AdminOutcome<'_>]) -> (Vec<(String, String)>, Vec<String>) {
    let mut put = Vec::new();
    let mut delete = plan.forget.clone();
    for o in outcomes.iter().filter(|o| o.result.is_ok()) {
        match o.action.kind {
            AdminActionKind::Create { .. } => put.push((o.action.username.clone(), o.action.dn.clone())),
            AdminActionKind::Delete => delete.push(o.action.username.clone()),
            AdminActionKind::SetDomains { .. } => {}
        }
    }
    (put, delete)
}

/// The write requests the plan takes: one per create and per change, one for the deletions.
pub fn requests(plan: &AdminPlan) -> usize {
    plan.count("create") + plan.count("update") + usize::from(plan.count("delete") > 0)
}
