//! The pure heart of a pass: from the directory, mailcow and the state database to a plan.
//!
//! `plan()` takes plain data and the time, does no I/O, and returns every change as data:
//! the dry-run prints it, `apply` executes it, the report lists it, and the tests compare it.
//! `settle()` is its other half: given which actions mailcow confirmed, it says what the
//! state database must hold afterwards, so only confirmed facts are ever recorded.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::core::access::{Protocol, flag_list};
use crate::core::directory::{Directory, Member};
use crate::core::model::{
    DirUser, Domain, MIB, Mailbox, MailboxSlot, Mailboxes, ManagedMailbox, ManagedRows, RowView, Warning, domain_of,
    new_row,
};
use crate::core::policy::{
    AddressChange, Adopt, Authsource, IdpMailboxes, NewDomain, OnRemoved, PasswordMode, Policy, Secret,
};

/// A day: `last_seen` is refreshed at this resolution, so an unchanged pass over a large
/// directory does not rewrite every state row.
const LAST_SEEN_RESOLUTION_SECS: i64 = 24 * 3600;

/// Where a new mailbox's password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewPassword {
    /// The LDAP hash, stored as-is by mailcow.
    Ldap(Secret),
    /// The LDAP hash, not held in memory (see [`DirUser::password_elided`]): the pass reads
    /// it again from the entry before anything is applied.
    Elided,
    /// A random strong password, made when the action runs (never stored or shown).
    Random,
    /// None: the authsource is not mailcow.
    None,
}

/// One mailbox field change, for edits and reports.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub field: Field,
    pub old: Value,
    pub new: Value,
}

/// The fields `edit/mailbox` sets for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    Name,
    Quota,
    Active,
    Authsource,
    /// One protocol access flag (`access`): `imap_access` and so on, 0 or 1.
    Access(Protocol),
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Quota => "quota",
            Field::Active => "active",
            Field::Authsource => "authsource",
            Field::Access(p) => p.field(),
        }
    }
}

/// What to do to one mailbox.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionKind {
    /// `add/mailbox`.
    Create {
        name: Option<String>,
        quota_mib: u64,
        active: u8,
        tls_in: Option<bool>,
        tls_out: Option<bool>,
        password: NewPassword,
        password_fp: Option<String>,
        authsource: Authsource,
        tags: Vec<String>,
        /// The managed protocol access flags (`access`), in [`Protocol::ALL`] order.
        access: Vec<(Protocol, bool)>,
        /// The mailcow template (`templates`): its id, sent as `template`, and its name.
        template: Option<(u64, String)>,
    },
    /// The user's template (`templates`) changed, or was never applied: its attributes by
    /// edits, since mailcow applies a template only on create. `edit/mailbox` with
    /// `changes` (quota unless mapped, the protocol flags `access` does not manage) and the
    /// template's tags (additive), `edit/user-acl` with `acl` (the whole set), `edit/rl-mbox`
    /// with `rl`. Confirmed only when all three are.
    Template {
        name: String,
        old: Option<String>,
        changes: Vec<FieldChange>,
        tags: Vec<String>,
        acl: Vec<String>,
        rl: (u64, String),
        /// Every edit resets attribute_hash unless it is sent again (API.md 4.4).
        attribute_hash: Option<String>,
    },
    /// `edit/mailbox` with the changed fields (and the tag when adopting).
    Update {
        changes: Vec<FieldChange>,
        add_tag: Option<String>,
        attribute_hash: Option<String>,
    },
    /// `edit/mailbox` with only the password, one mailbox per call.
    Password { value: Secret, fingerprint: String },
    /// `edit/tls_policy`.
    Tls {
        tls_in: bool,
        tls_out: bool,
        old: (bool, bool),
    },
    /// `edit/rename-mbox` from `from` to the action's address (same domain, same uid), the
    /// old address kept as an alias by mailcow. An inactive mailbox cannot be renamed
    /// (API.md 4.9): with `reactivate` it is set to active 2 for the call and back to 0.
    Rename { from: String, reactivate: bool },
    /// `edit/mailbox` `active` 0 or 2, because the user left LDAP.
    Deactivate {
        active: u8,
        old: u8,
        attribute_hash: Option<String>,
        /// The tag, for a mailbox taken over from the original tool that lacks it: from
        /// then on it is provably this tool's.
        add_tag: Option<String>,
    },
    /// `delete/mailbox`, because the user left LDAP and `on_removed` is `delete`.
    Delete,
    /// `add/domain` of the action's address (a domain name; no uid, no state row), because
    /// `sync.create_domains` is on and a user planned to be created there needs it. Planned
    /// once per pass, before the first create in it; the creates in it are sent only once
    /// mailcow confirmed it. Domains are never deleted.
    CreateDomain(NewDomain),
    /// What `sync.offboard` revokes from a mailbox this pass disables: planned right after
    /// its disable (a `Deactivate`, or an `Update` setting `active` 0 or 2), applied only
    /// once mailcow confirmed that. Its outcome never changes the state database.
    Offboard {
        /// List the app passwords (`get/app-passwd/all/{mailbox}`) and delete them.
        app_passwords: bool,
        /// Reset the ActiveSync device cache (`delete/eas_cache`).
        eas: bool,
    },
}

impl ActionKind {
    pub fn verb(&self) -> &'static str {
        match self {
            ActionKind::Create { .. } => "create",
            ActionKind::Update { .. } => "update",
            ActionKind::Password { .. } => "password",
            ActionKind::Tls { .. } => "tls",
            ActionKind::Rename { .. } => "rename",
            ActionKind::Deactivate { active: 2, .. } => "disallow_login",
            ActionKind::Deactivate { .. } => "disable",
            ActionKind::Delete => "delete",
            ActionKind::Offboard { .. } => "offboard",
            ActionKind::CreateDomain(_) => "create_domain",
            ActionKind::Template { .. } => "template",
        }
    }

    /// Whether this action takes a mailbox's logins away: a disable or a lock, by the
    /// removals or by LDAP's `active`.
    pub fn disables(&self) -> bool {
        match self {
            ActionKind::Deactivate { .. } => true,
            ActionKind::Update { changes, .. } => changes
                .iter()
                .any(|c| c.field == Field::Active && c.new.as_u64().is_some_and(|a| a != 1)),
            _ => false,
        }
    }
}

/// The offboarding of the mailbox whose disable was just planned, if `sync.offboard` asks
/// for any.
fn plan_offboard(p: &mut Plan, uid: &str, address: &str, policy: &Policy) {
    if !policy.offboard.any() {
        return;
    }
    p.actions.push(Action {
        uid: uid.to_owned(),
        address: address.to_owned(),
        kind: ActionKind::Offboard {
            app_passwords: policy.offboard.app_passwords,
            eas: policy.offboard.eas,
        },
        row: None,
    });
}

/// One planned change.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub uid: String,
    pub address: String,
    pub kind: ActionKind,
    /// The state row to record once this action is confirmed (`None` for a delete).
    pub row: Option<ManagedMailbox>,
}

/// A change to the state database that needs no mailcow write.
#[derive(Debug, Clone, PartialEq)]
pub enum StateOp {
    /// Record or refresh a row (adoption without writes, OU move, last_seen).
    Put(ManagedMailbox),
    /// The row's user re-appeared under a new uid (same address): move it.
    Rekey { old_uid: String, row: ManagedMailbox },
    /// The managed mailbox is gone from mailcow and its user from LDAP: forget it.
    Forget { uid: String },
    /// The user of `uid` moved to another domain and gets a new mailbox there: once that
    /// create is confirmed, the old mailbox stays managed under `row`'s retired uid, a user
    /// who left, so that `on_removed` applies to it from the next pass.
    RetireWhenCreated { uid: String, row: ManagedMailbox },
}

/// The uid under which the old mailbox of a user who moved to another domain stays managed.
pub fn retired_uid(uid: &str, old_address: &str) -> String {
    format!("moved-from:{old_address}:{uid}")
}

/// A user the plan leaves out on purpose, and why (the admin must act for it to be synced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedUser {
    pub address: String,
    pub reason: String,
}

/// A new mailbox's password hash that could not be read again from LDAP, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadHash {
    pub uid: String,
    pub reason: String,
}

/// A user that cannot be applied, decided at planning time (no request is made for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFailure {
    pub address: String,
    pub reason: String,
}

/// The whole pass as data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub state_ops: Vec<StateOp>,
    pub failures: Vec<PlannedFailure>,
    /// Users deliberately not synced (no usable password for a new mailbox, a mailbox
    /// this tool may not take over).
    pub skipped: Vec<SkippedUser>,
    pub warnings: Vec<Warning>,
    /// Users whose mailbox already matches.
    pub unchanged: usize,
    /// Deactivations and deletions planned.
    pub removals: usize,
    /// Managed mailboxes whose user is missing from a partial view: neither removed nor
    /// forgotten this pass.
    pub held_back: usize,
    /// Why the view was partial, when it was (the policy's reason, or mailcow's empty list).
    pub partial_view: Option<String>,
    /// Managed mailboxes in scope before the pass that are not disabled already (the
    /// guard's base: rows of long-gone users do not widen the allowance year by year).
    pub managed: usize,
    /// The guard's refusal, if it refuses (the caller honours `--force`).
    pub guard: Option<String>,
}

impl Plan {
    pub fn count(&self, verb: &str) -> usize {
        self.actions.iter().filter(|a| a.kind.verb() == verb).count()
    }

    /// The items this plan holds (its counts aside): what a chunk is measured in. A state
    /// change without a write counts an eighth: it is one row, and the daily refresh of
    /// every row's `last_seen` then goes in chunks of 4,000 rows (25 transactions at 100k
    /// users rather than 200, each one a sync of the state file).
    pub fn items(&self) -> usize {
        self.actions.len() + self.state_ops.len() / 8 + self.failures.len() + self.skipped.len() + self.warnings.len()
    }

    /// Make these creates planned failures: their password hash, not held by the
    /// directory, could not be read again. The same call makes the same part again.
    pub fn fail_creates(&mut self, failed: &[UnreadHash]) {
        for UnreadHash { uid, reason } in failed {
            let Some(i) = self
                .actions
                .iter()
                .position(|a| &a.uid == uid && matches!(a.kind, ActionKind::Create { .. }))
            else {
                continue;
            };
            let action = self.actions.remove(i);
            self.failures.push(PlannedFailure {
                address: action.address,
                reason: format!("the password hash for the new mailbox could not be read again: {reason}"),
            });
        }
    }

    /// Append a later part of the same pass's plan (a chunk, or the removals).
    pub fn absorb(&mut self, later: Plan) {
        self.actions.extend(later.actions);
        self.state_ops.extend(later.state_ops);
        self.failures.extend(later.failures);
        self.skipped.extend(later.skipped);
        self.warnings.extend(later.warnings);
        self.unchanged += later.unchanged;
        self.removals += later.removals;
        self.held_back += later.held_back;
        self.managed += later.managed;
        self.partial_view = self.partial_view.take().or(later.partial_view);
        self.guard = self.guard.take().or(later.guard);
    }
}

/// What a plan is made from: both sides of a pass as read, the state, the rules and the time.
#[derive(Clone, Copy)]
pub struct PlanInputs<'a> {
    pub dir: &'a Directory,
    pub mailboxes: &'a Mailboxes,
    pub domains: &'a [Domain],
    pub state: &'a ManagedRows,
    pub policy: &'a Policy,
    pub now: i64,
}

/// Items (actions, state changes, failures, skips, warnings) per chunk of the users' plan:
/// a pass holds one chunk at a time, however many users change.
pub const CHUNK_ITEMS: usize = 500;

/// Build the whole plan: the users' part, then the removals. Deterministic: same inputs,
/// same plan, in uid order. A pass takes the same plan in chunks ([`user_chunks`], then
/// [`removals`]); this is their concatenation.
pub fn plan(
    dir: &Directory,
    mailboxes: &Mailboxes,
    domains: &[Domain],
    state: &ManagedRows,
    policy: &Policy,
    now: i64,
) -> Plan {
    let inputs = PlanInputs {
        dir,
        mailboxes,
        domains,
        state,
        policy,
        now,
    };
    let mut whole = Plan::default();
    for chunk in user_chunks(inputs, CHUNK_ITEMS) {
        whole.absorb(chunk);
    }
    whole.absorb(removals(inputs));
    whole
}

/// The users' part of the plan (creates, updates, passwords, TLS, state rows to record), in
/// uid order, in chunks of about `items` items (a user's actions are never split). A chunk
/// whose users are all unchanged holds nothing but its count.
pub fn user_chunks(inputs: PlanInputs<'_>, items: usize) -> UserChunks<'_> {
    UserChunks {
        domain_by_name: inputs.domains.iter().map(|d| (d.name.as_str(), d)).collect(),
        // Positions mean the same rows to the directory, the mailboxes and the planner only
        // when all three hold this very state; then a user held as its row with a mailbox
        // held as a slot of it is checked without being rebuilt (nearly every user of a pass).
        shared: inputs.dir.shares(inputs.state) && inputs.mailboxes.shares(inputs.state),
        members: Box::new(inputs.dir.members()),
        inputs,
        items: items.max(1),
        new_domains: BTreeMap::new(),
    }
}

/// See [`user_chunks`].
pub struct UserChunks<'a> {
    inputs: PlanInputs<'a>,
    domain_by_name: BTreeMap<&'a str, &'a Domain>,
    shared: bool,
    members: Box<dyn Iterator<Item = Member> + 'a>,
    items: usize,
    /// The domains this pass adds (`sync.create_domains`), as the planner takes them for
    /// the creates in them: each gets its `CreateDomain` in the chunk of its first create.
    new_domains: BTreeMap<String, Domain>,
}

impl Iterator for UserChunks<'_> {
    type Item = Plan;

    fn next(&mut self) -> Option<Plan> {
        let mut p = Plan::default();
        let mut any = false;
        while p.items() < self.items {
            let Some(member) = self.members.next() else { break };
            any = true;
            self.plan_member(&mut p, member);
        }
        any.then_some(p)
    }
}

impl UserChunks<'_> {
    fn plan_member(&mut self, p: &mut Plan, member: Member) {
        let PlanInputs {
            dir,
            mailboxes,
            state,
            policy,
            now,
            ..
        } = self.inputs;
        let user = match member {
            Member::Row(r) if self.shared && unchanged_as_recorded(state.view(r), mailboxes.slot(r), policy, now) => {
                p.unchanged += 1;
                return;
            }
            Member::Row(r) => dir.rebuild(r),
            Member::Whole(user) => user,
        };
        let user = &user;
        if !policy.in_scope(&user.mail) {
            return;
        }
        // The row of this user: by uid, else a row for the same address whose uid is gone
        // from LDAP (the entry was re-created: same person, new entryUUID). The removals
        // never see such a row: its address is in the directory.
        let mut row = state.get(&user.uid);
        // The row holding this address, when it is not this user's own (rare: looked up only then).
        let row_by_address = match &row {
            Some(r) if r.address == user.mail => None,
            _ => state.by_address(&user.mail),
        };
        let orphaned = row_by_address
            .as_ref()
            .filter(|old| row.is_none() && !dir.has_uid(&old.uid));
        if let Some(old) = orphaned {
            let moved = ManagedMailbox {
                uid: user.uid.clone(),
                dn: user.dn.clone(),
                ..old.clone()
            };
            p.state_ops.push(StateOp::Rekey {
                old_uid: old.uid.clone(),
                row: moved.clone(),
            });
            row = Some(moved);
        }
        let row = match row {
            Some(r) if r.address != user.mail => match plan_address_change(p, user, r, mailboxes, policy) {
                AddressChangePlan::Done => return,
                AddressChangePlan::Continue(moved) => moved.map(|m| *m),
            },
            row => row,
        };
        match mailboxes.get(&user.mail) {
            None => self.plan_create_in_domain(p, user, row.as_ref()),
            Some(mailbox) => plan_existing(p, user, &mailbox, row.as_ref(), row_by_address.as_ref(), policy, now),
        }
    }
}

impl UserChunks<'_> {
    /// A create in the user's domain: one mailcow has, one this pass adds, or, with
    /// `sync.create_domains`, one it adds now (its `CreateDomain` just before the create,
    /// and only if the create is planned: a skipped user needs no domain).
    fn plan_create_in_domain(&mut self, p: &mut Plan, user: &DirUser, row: Option<&ManagedMailbox>) {
        let PlanInputs { policy, now, .. } = self.inputs;
        let name = user.domain();
        if let Some(domain) = self.domain_by_name.get(name) {
            return plan_create(p, user, row, Some(domain), policy, now);
        }
        if let Some(domain) = self.new_domains.get(name) {
            return plan_create(p, user, row, Some(domain), policy, now);
        }
        let Some(new) = &policy.create_domains else {
            return plan_create(p, user, row, None, policy, now);
        };
        let domain = Domain {
            name: name.to_owned(),
            active: new.active,
            def_quota_bytes: new.default_quota_mib * MIB,
            max_quota_bytes: new.max_quota_mib * MIB,
        };
        let before = p.actions.len();
        plan_create(p, user, row, Some(&domain), policy, now);
        if p.actions.len() == before {
            return;
        }
        p.actions.insert(
            before,
            Action {
                uid: String::new(),
                address: name.to_owned(),
                kind: ActionKind::CreateDomain(new.clone()),
                row: None,
            },
        );
        self.new_domains.insert(name.to_owned(), domain);
    }
}

/// What an address change left to the rest of the user's planning.
enum AddressChangePlan {
    /// Planned (a rename, or a skip): nothing more for this user this pass.
    Done,
    /// Plan the user at the new address as usual, with this row (`None`: as a new user).
    Continue(Option<Box<ManagedMailbox>>),
}

/// The same user (same uid) with a new `mail`: rename the mailbox within its domain and
/// keep the old address as an alias, or (another domain, or `recreate`) make a new one.
fn plan_address_change(
    p: &mut Plan,
    user: &DirUser,
    row: ManagedMailbox,
    mailboxes: &Mailboxes,
    policy: &Policy,
) -> AddressChangePlan {
    let old = mailboxes.get(&row.address);
    let new = mailboxes.get(&user.mail);
    let same_domain = domain_of(&row.address) == user.domain();
    match (old, new) {
        // A pass that renamed it and died before recording: the row follows the mailbox.
        (None, Some(new)) if new.tagged && same_domain => {
            let moved = ManagedMailbox {
                address: user.mail.clone(),
                ..row
            };
            p.state_ops.push(StateOp::Put(moved.clone()));
            AddressChangePlan::Continue(Some(Box::new(moved)))
        }
        (_, Some(_)) => {
            p.skipped.push(SkippedUser {
                address: user.mail.clone(),
                reason: format!(
                    "its address changed in LDAP from {} to {}, but a mailbox {} already exists in mailcow; \
                     nothing changed: remove or rename one of them by hand",
                    row.address, user.mail, user.mail
                ),
            });
            AddressChangePlan::Done
        }
        // The managed mailbox is gone from mailcow: made anew at the new address.
        (None, None) => AddressChangePlan::Continue(None),
        (Some(old), None) if same_domain && policy.on_address_change == AddressChange::Rename => {
            p.actions.push(Action {
                uid: user.uid.clone(),
                address: user.mail.clone(),
                kind: ActionKind::Rename {
                    from: row.address.clone(),
                    reactivate: old.active == 0,
                },
                row: Some(ManagedMailbox {
                    address: user.mail.clone(),
                    ..row
                }),
            });
            AddressChangePlan::Done
        }
        (Some(old), None) => {
            let why = if same_domain {
                "sync.on_address_change is \"recreate\""
            } else {
                "mailcow cannot move a mailbox to another domain"
            };
            // Only a mailbox provably this tool's is handled as a user who left.
            let ours = policy.tag.is_none() || old.tagged;
            let then = if ours {
                "keeps its mail and is handled as a user who left (sync.on_removed) from the next pass"
            } else {
                "is left as it is, with its mail, and no longer managed by this tool (it lacks the tag)"
            };
            // A mailbox left behind unmanaged is the admin's to clear; a retired one is not.
            let text = format!(
                "moved_domain {}: address changed in LDAP from {} to {} ({why}): a new mailbox is made at {}; {} {then}",
                user.uid, row.address, user.mail, user.mail, row.address
            );
            p.warnings.push(if ours {
                Warning::note(text)
            } else {
                Warning::admin(text)
            });
            if ours {
                p.state_ops.push(StateOp::RetireWhenCreated {
                    uid: user.uid.clone(),
                    row: ManagedMailbox {
                        uid: retired_uid(&row.uid, &row.address),
                        ..row
                    },
                });
            }
            AddressChangePlan::Continue(None)
        }
    }
}

/// The removals' part of the plan: managed mailboxes whose user is gone from LDAP
/// (disabled, locked, deleted, or forgotten when mailcow lost them), the guard's base, and
/// the guard's verdict on the whole pass.
pub fn removals(inputs: PlanInputs<'_>) -> Plan {
    let PlanInputs {
        dir,
        mailboxes,
        state,
        policy,
        now,
        ..
    } = inputs;
    let mut p = Plan::default();
    let mut rows_in_scope = 0;
    for (position, row) in (0..state.len()).map(|r| (r, state.view(r))) {
        if policy.owns_row(position) && policy.in_scope(row.address) {
            rows_in_scope += 1;
            p.managed += usize::from(row.disabled_at.is_none());
        }
    }
    // mailcow answers `{}` for an empty list; with mailboxes under management that is a
    // fault (or a mailcow set up anew), never a reason to forget or remove anything. An
    // incremental pass reads mailboxes one by one, where `{}` is mailcow's "no such mailbox".
    let mailcow_empty = policy.changes_only.is_none() && mailboxes.is_empty() && rows_in_scope > 0;
    let directory_empty = match policy.changes_only {
        Some(changes) => {
            p.managed = changes.managed;
            changes.directory_empty
        }
        None => dir.is_empty(),
    };
    p.partial_view = policy
        .partial_view
        .clone()
        .or_else(|| mailcow_empty.then(|| format!("mailcow listed no mailboxes while {rows_in_scope} are managed")));
    let shared = dir.shares(state);
    for (position, (uid, address)) in state.keys().enumerate() {
        if !policy.owns_row(position) {
            continue;
        }
        if (shared && dir.holds_row(position)) || dir.has_uid(uid) || dir.has_mail(address) || !policy.in_scope(address)
        {
            continue;
        }
        // Unpacked only for the few rows whose user left.
        let row = state.at(position);
        if dir.has_skipped_dn(&row.dn) {
            continue;
        }
        if p.partial_view.is_some() {
            p.held_back += 1;
            continue;
        }
        let Some(mailbox) = mailboxes.get(&row.address) else {
            p.state_ops.push(StateOp::Forget { uid: row.uid.clone() });
            continue;
        };
        if policy.on_removed == OnRemoved::Keep {
            continue;
        }
        // Only a mailbox that still carries the tag is provably the one this tool made: one
        // deleted and made again by hand at the address is not removed, and not ours any more.
        // The original tool's database is the same proof for the mailboxes it lists.
        let taken_over = policy.listed_by_original_tool.contains(&row.address);
        let missing_tag = policy.tag.as_ref().filter(|_| !mailbox.tagged && !taken_over);
        if let Some(tag) = missing_tag {
            p.warnings.push(Warning::admin(format!(
                "{}: its LDAP user is gone, but the mailbox no longer carries the tag `{tag}` (made again by hand?); \
                 left as it is and no longer managed by this tool",
                row.address
            )));
            p.state_ops.push(StateOp::Forget { uid: row.uid.clone() });
            continue;
        }
        // With `delete`, a mailbox is disabled first and deleted only once it has been
        // disabled for the grace period: a user who comes back meanwhile keeps their mail.
        let target = match policy.on_removed {
            OnRemoved::Delete if grace_is_over(row.disabled_at, policy, now) => None,
            OnRemoved::Keep | OnRemoved::Delete | OnRemoved::Disable => Some(0),
            OnRemoved::DisallowLogin => Some(2),
        };
        match target {
            None => {
                p.removals += 1;
                p.actions.push(Action {
                    uid: row.uid.clone(),
                    address: row.address.clone(),
                    kind: ActionKind::Delete,
                    row: None,
                });
            }
            Some(active) if mailbox.active != active => {
                p.removals += 1;
                p.actions.push(Action {
                    uid: row.uid.clone(),
                    address: row.address.clone(),
                    kind: ActionKind::Deactivate {
                        active,
                        old: mailbox.active,
                        attribute_hash: mailbox.attribute_hash.as_deref().map(str::to_owned),
                        add_tag: policy.tag.clone().filter(|_| !mailbox.tagged),
                    },
                    // Since when it is disabled stays as first recorded (it may have been
                    // enabled again by hand meanwhile): the grace period counts from then.
                    row: Some(ManagedMailbox {
                        active: Some(active),
                        disabled_at: row.disabled_at.or(Some(now)),
                        ..row.clone()
                    }),
                });
                plan_offboard(&mut p, &row.uid, &row.address, policy);
            }
            // Already at its target (a pass that died after mailcow confirmed the change, or
            // a disable by hand): record it, so that the user is enabled again on return.
            Some(active) if row.disabled_at.is_none() => p.state_ops.push(StateOp::Put(ManagedMailbox {
                active: Some(active),
                disabled_at: Some(now),
                ..row
            })),
            Some(_) => {}
        }
    }

    let allowed = policy.max_removals.allowed(p.managed);
    // Usable users: entries that all fail to map (a mistyped `mail` attribute) are no
    // directory either.
    if directory_empty && p.managed > 0 {
        p.guard = Some(format!(
            "LDAP returned no users while {} mailboxes are managed; a wrong search base or an empty \
             directory would otherwise {} them all. If this is intended, run once with --force",
            p.managed,
            removal_verb(policy.on_removed)
        ));
    } else if mailcow_empty {
        p.guard = Some(format!(
            "mailcow listed no mailboxes while {rows_in_scope} are managed; an API fault would otherwise have every \
             one of them created again. If mailcow was set up anew and they should be, run once with --force"
        ));
    } else if p.removals as u64 > allowed {
        p.guard = Some(format!(
            "{} mailboxes would be {} (sync.max_removals = {} allows {} of {} managed). \
             Check the LDAP search; if this is intended, run once with --force or raise sync.max_removals",
            p.removals,
            removal_past(policy.on_removed),
            policy.max_removals,
            allowed,
            p.managed
        ));
    }
    p
}

/// Whether a user held as its state row, with its mailbox held as a slot of the same row,
/// needs nothing: no write and no state change. It is [`compare`] itself, on borrowed
/// fields, so that the unchanged check and the full comparison cannot disagree.
fn unchanged_as_recorded(row: RowView<'_>, mailbox: Option<MailboxSlot>, policy: &Policy, now: i64) -> bool {
    let Some(slot) = mailbox else {
        return false;
    };
    let user = UserFields {
        dn: row.dn,
        name: row.name,
        quota_mib: row.quota_mib,
        active: row.active,
        tls_in: row.tls_in,
        tls_out: row.tls_out,
        access: None,
    };
    let mailbox = MailboxFields {
        name: row.name.unwrap_or_default(),
        quota_bytes: slot.quota_bytes,
        active: slot.active,
        authsource: slot.authsource,
        tagged: slot.tagged,
        tls_in: slot.tls_in,
        tls_out: slot.tls_out,
        access: slot.access,
    };
    policy.in_scope(row.address)
        && compare(&user, &mailbox, Some(&RecordedFields::of_view(&row)), policy, now).is_nothing()
}

/// The compared fields of what LDAP wants, borrowed.
struct UserFields<'a> {
    dn: &'a str,
    name: Option<&'a str>,
    quota_mib: Option<u64>,
    active: Option<u8>,
    tls_in: Option<bool>,
    tls_out: Option<bool>,
    access: Option<u8>,
}

impl<'a> UserFields<'a> {
    fn of(user: &'a DirUser) -> UserFields<'a> {
        UserFields {
            dn: &user.dn,
            name: user.name.as_deref(),
            quota_mib: user.quota_mib,
            active: user.active,
            tls_in: user.tls_in,
            tls_out: user.tls_out,
            access: user.access,
        }
    }
}

/// The compared fields of the mailbox in mailcow, borrowed.
struct MailboxFields<'a> {
    name: &'a str,
    quota_bytes: u64,
    active: u8,
    authsource: &'a str,
    tagged: bool,
    tls_in: bool,
    tls_out: bool,
    access: u8,
}

impl<'a> MailboxFields<'a> {
    fn of(mailbox: &'a Mailbox) -> MailboxFields<'a> {
        MailboxFields {
            name: &mailbox.name,
            quota_bytes: mailbox.quota_bytes,
            active: mailbox.active,
            authsource: &mailbox.authsource,
            tagged: mailbox.tagged,
            tls_in: mailbox.tls_in,
            tls_out: mailbox.tls_out,
            access: mailbox.access,
        }
    }
}

/// The compared fields of the state row, borrowed.
struct RecordedFields<'a> {
    dn: &'a str,
    name: Option<&'a str>,
    quota_mib: Option<u64>,
    active: Option<u8>,
    tls_in: Option<bool>,
    tls_out: Option<bool>,
    authsource: Option<&'a str>,
    last_seen: i64,
    disabled_at: Option<i64>,
}

impl<'a> RecordedFields<'a> {
    fn of(row: &'a ManagedMailbox) -> RecordedFields<'a> {
        RecordedFields {
            dn: &row.dn,
            name: row.name.as_deref(),
            quota_mib: row.quota_mib,
            active: row.active,
            tls_in: row.tls_in,
            tls_out: row.tls_out,
            authsource: row.authsource.as_deref(),
            last_seen: row.last_seen,
            disabled_at: row.disabled_at,
        }
    }

    fn of_view(row: &RowView<'a>) -> RecordedFields<'a> {
        RecordedFields {
            dn: row.dn,
            name: row.name,
            quota_mib: row.quota_mib,
            active: row.active,
            tls_in: row.tls_in,
            tls_out: row.tls_out,
            authsource: row.authsource,
            last_seen: row.last_seen,
            disabled_at: row.disabled_at,
        }
    }
}

/// What differs between a user, its mailbox and its row: the one comparison of the planner.
struct Comparison {
    /// Fields `edit/mailbox` must set.
    changes: Vec<FieldChange>,
    /// The mailbox lacks the tag.
    add_tag: bool,
    /// mailcow kept another authsource than the one written before (a warning, no write).
    source_ignored: bool,
    /// The mailbox authenticates as this tool wants once the changes are applied.
    source_wanted_after: bool,
    /// The TLS policy to set, when it differs.
    tls: Option<(bool, bool)>,
    /// With no update, the row already records everything (no state write either).
    row_current: bool,
}

impl Comparison {
    /// Nothing to write to mailcow or to the state (a password aside: see `plan_existing`).
    fn is_nothing(&self) -> bool {
        self.changes.is_empty() && !self.add_tag && !self.source_ignored && self.tls.is_none() && self.row_current
    }
}

fn compare(
    user: &UserFields<'_>,
    mailbox: &MailboxFields<'_>,
    row: Option<&RecordedFields<'_>>,
    policy: &Policy,
    now: i64,
) -> Comparison {
    let mut changes = Vec::new();
    if let Some(name) = user.name.filter(|&name| name != mailbox.name) {
        changes.push(FieldChange {
            field: Field::Name,
            old: json!(mailbox.name),
            new: json!(name),
        });
    }
    let quota = user.quota_mib.or(policy.default_quota_mib);
    if let Some(quota) = quota.filter(|q| q.checked_mul(MIB) != Some(mailbox.quota_bytes)) {
        changes.push(FieldChange {
            field: Field::Quota,
            old: json!(mailbox.quota_bytes / MIB),
            new: json!(quota),
        });
    }
    // A mailbox this tool disabled comes back when its user does, even if `active` is unmapped.
    let re_enable = row.and_then(|r| r.disabled_at).map(|_| 1);
    let active = user.active.or(re_enable);
    if let Some(active) = active.filter(|&active| active != mailbox.active) {
        changes.push(FieldChange {
            field: Field::Active,
            old: json!(mailbox.active),
            new: json!(active),
        });
    }
    // Protocol access: only the managed flags, each one its own field.
    if let Some(want) = user.access {
        let differ = (want ^ mailbox.access) & policy.access_managed;
        for (protocol, on) in flag_list(differ, want) {
            changes.push(FieldChange {
                field: Field::Access(protocol),
                old: json!(u8::from(!on)),
                new: json!(u8::from(on)),
            });
        }
    }
    // The authsource this tool wants; mailcow silently keeps the old one when its identity
    // provider does not match (API.md 5), so a value already written is not sent again.
    let want_source = policy.authsource.as_str();
    let mut source_ignored = false;
    let mut source_wanted_after = mailbox.authsource == want_source;
    if !source_wanted_after {
        if row.and_then(|r| r.authsource) == Some(want_source) {
            source_ignored = true;
        } else {
            changes.push(FieldChange {
                field: Field::Authsource,
                old: json!(mailbox.authsource),
                new: json!(want_source),
            });
            source_wanted_after = true;
        }
    }
    let want_tls = (
        user.tls_in.unwrap_or(mailbox.tls_in),
        user.tls_out.unwrap_or(mailbox.tls_out),
    );
    let tls = (want_tls != (mailbox.tls_in, mailbox.tls_out)).then_some(want_tls);
    // The row after this pass (see `plan_existing`) equals the row as it is.
    let row_current = row.is_some_and(|r| {
        let same = |want: Option<&str>, had: Option<&str>| want.is_none_or(|w| had == Some(w));
        r.dn == user.dn
            && r.disabled_at.is_none()
            && same(user.name, r.name)
            && user.quota_mib.is_none_or(|q| r.quota_mib == Some(q))
            && active.is_none_or(|a| r.active == Some(a))
            && (!source_wanted_after || r.authsource == Some(want_source))
            && (now - r.last_seen < LAST_SEEN_RESOLUTION_SECS || r.last_seen == now)
            && (tls.is_some()
                || (user.tls_in.is_none_or(|t| r.tls_in == Some(t))
                    && user.tls_out.is_none_or(|t| r.tls_out == Some(t))))
    });
    Comparison {
        changes,
        add_tag: policy.tag.is_some() && !mailbox.tagged,
        source_ignored,
        source_wanted_after,
        tls,
        row_current,
    }
}

/// Whether a mailbox disabled since `disabled_at` (by this tool, its user gone) may now be
/// deleted under `on_removed = "delete"`.
fn grace_is_over(disabled_at: Option<i64>, policy: &Policy, now: i64) -> bool {
    match disabled_at {
        _ if policy.delete_after_days == 0 => true,
        Some(at) => deletion_due(at, policy.on_removed, policy.delete_after_days).is_some_and(|due| now >= due),
        None => false,
    }
}

/// When a mailbox this tool disabled at `disabled_at` is deleted: under `delete` with a
/// grace period of `delete_after_days` (`None`: never, or at once).
pub fn deletion_due(disabled_at: i64, on_removed: OnRemoved, delete_after_days: u64) -> Option<i64> {
    (on_removed == OnRemoved::Delete && delete_after_days > 0).then(|| {
        let grace = i64::try_from(delete_after_days)
            .unwrap_or(i64::MAX)
            .saturating_mul(24 * 3600);
        disabled_at.saturating_add(grace)
    })
}

fn removal_verb(on_removed: OnRemoved) -> &'static str {
    match on_removed {
        OnRemoved::Disable => "disable",
        OnRemoved::DisallowLogin => "lock",
        OnRemoved::Delete => "delete",
        OnRemoved::Keep => "keep",
    }
}

fn removal_past(on_removed: OnRemoved) -> &'static str {
    match on_removed {
        OnRemoved::Disable => "disabled",
        OnRemoved::DisallowLogin => "locked (disallow_login)",
        OnRemoved::Delete => "deleted",
        OnRemoved::Keep => "kept",
    }
}

fn plan_create(
    p: &mut Plan,
    user: &DirUser,
    row: Option<&ManagedMailbox>,
    domain: Option<&Domain>,
    policy: &Policy,
    now: i64,
) {
    let Some(domain) = domain else {
        p.failures.push(PlannedFailure {
            address: user.mail.clone(),
            reason: format!(
                "domain {} does not exist in mailcow; add the domain in mailcow first (or set sync.create_domains)",
                user.domain()
            ),
        });
        return;
    };
    let (password, password_fp) = match (policy.authsource, policy.password, &user.password) {
        (Authsource::Ldap, _, _) => (NewPassword::None, None),
        (_, PasswordMode::Random | PasswordMode::Never, _) => (NewPassword::Random, None),
        (_, _, Some(pw)) => (NewPassword::Ldap(pw.clone()), Some(policy.fingerprinter.of(pw))),
        // Elided because the row holds its fingerprint: the same value as before.
        (_, _, None) if user.password_elided => (NewPassword::Elided, row.and_then(|r| r.password_fp.clone())),
        (_, _, None) => {
            p.skipped.push(SkippedUser {
                address: user.mail.clone(),
                reason: "no usable password hash in LDAP for a new mailbox (set sync.password to \"random\" to create it with a random password)".to_owned(),
            });
            return;
        }
    };
    let template = user
        .template
        .and_then(|t| policy.templates.get(usize::from(t)))
        .and_then(|(name, found)| found.as_ref().map(|t| (name, t)));
    // Always send an explicit quota: an omitted one means "unlimited" (API.md 7). Unmapped,
    // it is the template's, unless that is 0 (unlimited).
    let quota_mib = user
        .quota_mib
        .or(policy.default_quota_mib)
        .or(template.map(|(_, t)| t.quota_mib).filter(|&q| q > 0))
        .unwrap_or(domain.def_quota_bytes / MIB);
    // mailcow takes the template's tags only when none are sent (mailbox.inc 1077).
    let mut tags: Vec<String> = policy.tag.iter().cloned().collect();
    for tag in template.iter().flat_map(|(_, t)| &t.tags) {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    let mut record = new_row(user, now);
    record.quota_mib = Some(quota_mib);
    record.password_fp = password_fp.clone();
    record.authsource = Some(policy.authsource.as_str().to_owned());
    record.template = template.map(|(name, _)| name.clone());
    if let Some(old) = row {
        record.first_seen = old.first_seen;
    }
    p.actions.push(Action {
        uid: user.uid.clone(),
        address: user.mail.clone(),
        kind: ActionKind::Create {
            name: user.name.clone(),
            quota_mib,
            active: user.active.unwrap_or(1),
            tls_in: user.tls_in,
            tls_out: user.tls_out,
            password,
            password_fp,
            authsource: policy.authsource,
            tags,
            template: template.map(|(name, t)| (t.id, name.clone())),
            access: user
                .access
                .map(|a| flag_list(policy.access_managed, a).collect())
                .unwrap_or_default(),
        },
        row: Some(record),
    });
}

/// Why a user whose address holds a mailbox of mailcow's own LDAP identity provider is skipped.
pub const IDP_OWNED: &str = "the mailbox at this address has authsource `ldap` and no tag of this tool: mailcow's own \
     LDAP identity provider manages it (its sync and every login re-apply its template), so it is left alone; to hand it \
     over, set sync.idp_mailboxes to \"adopt\" (or tag it in mailcow)";

/// Whether the mailbox at a new user's address may be taken over; a refusal skips the user
/// with the reason, a permitted adoption of an untagged mailbox is said out loud.
fn may_adopt(p: &mut Plan, user: &DirUser, mailbox: &Mailbox, policy: &Policy) -> bool {
    let tagged = policy.tag.is_some() && mailbox.tagged;
    let listed = policy.listed_by_original_tool.contains(&user.mail);
    // An untagged `ldap` mailbox is mailcow's own IdP's (only an LDAP IdP lets mailcow store
    // that authsource, API.md 5): its sync and its logins write it; this tool stays out.
    if !tagged && mailbox.authsource == "ldap" && policy.idp_mailboxes == IdpMailboxes::Protect {
        p.skipped.push(SkippedUser {
            address: user.mail.clone(),
            reason: IDP_OWNED.to_owned(),
        });
        return false;
    }
    match policy.adopt {
        _ if tagged || listed => true,
        Adopt::ByAddress => {
            p.warnings.push(Warning::note(format!(
                "{}: adopting the existing mailbox by its address (sync.adopt = \"by_address\"); from now on LDAP \
                 entry `{}` manages it",
                user.mail, user.dn
            )));
            true
        }
        Adopt::Tagged => {
            let how = match &policy.tag {
                Some(tag) => format!("add the tag `{tag}` to it in mailcow"),
                None => "set sync.tag".to_owned(),
            };
            p.skipped.push(SkippedUser {
                address: user.mail.clone(),
                reason: format!(
                    "a mailbox with this address exists in mailcow that this tool did not make (it has no `{}` tag); \
                     to hand it over, {how}, or set sync.adopt to \"by_address\"",
                    policy.tag.as_deref().unwrap_or("")
                ),
            });
            false
        }
    }
}

fn plan_existing(
    p: &mut Plan,
    user: &DirUser,
    mailbox: &Mailbox,
    row: Option<&ManagedMailbox>,
    other_row: Option<&ManagedMailbox>,
    policy: &Policy,
    now: i64,
) {
    if let (None, Some(other)) = (row, other_row) {
        // Another LDAP user, still present, manages this address (its mail changed away):
        // two users cannot own one mailbox.
        p.failures.push(PlannedFailure {
            address: user.mail.clone(),
            reason: format!(
                "mailbox is managed for another LDAP entry ({}); resolve the address conflict in LDAP",
                other.dn
            ),
        });
        return;
    }
    if row.is_none() && !may_adopt(p, user, mailbox, policy) {
        return;
    }
    let found = compare(
        &UserFields::of(user),
        &MailboxFields::of(mailbox),
        row.map(RecordedFields::of).as_ref(),
        policy,
        now,
    );
    let want_source = policy.authsource.as_str();
    if found.source_ignored {
        p.warnings.push(Warning::admin(format!(
            "{}: mailcow keeps authsource `{}` although `{want_source}` was sent; is mailcow's identity provider \
             (System → Configuration → Access → Identity Provider) set to LDAP?",
            user.mail, mailbox.authsource
        )));
    }
    let password = password_to_send(user, row, &found, policy);
    let template = template_to_apply(user, mailbox, row, policy);
    if found.is_nothing() && password.is_none() && template.is_none() {
        p.unchanged += 1;
        return;
    }

    // The row as it stands after this pass if every action below is confirmed. Fields that
    // need a write take their new value only through that write's action.
    let mut record = row.cloned().unwrap_or_else(|| new_row(user, now));
    record.dn = user.dn.clone();
    record.disabled_at = None;
    if let Some(name) = &user.name {
        record.name = Some(name.clone());
    }
    if let Some(quota) = user.quota_mib {
        record.quota_mib = Some(quota);
    }
    if let Some(active) = user.active.or(row.and_then(|r| r.disabled_at).map(|_| 1)) {
        record.active = Some(active);
    }
    if found.source_wanted_after {
        record.authsource = Some(want_source.to_owned());
    }
    let seen_lately = row.filter(|r| r.dn == user.dn && now - r.last_seen < LAST_SEEN_RESOLUTION_SECS);
    record.last_seen = seen_lately.map_or(now, |r| r.last_seen);

    let update_planned = !found.changes.is_empty() || found.add_tag;
    if update_planned {
        let kind = ActionKind::Update {
            changes: found.changes,
            add_tag: if found.add_tag { policy.tag.clone() } else { None },
            attribute_hash: mailbox.attribute_hash.as_deref().map(str::to_owned),
        };
        let disables = kind.disables();
        p.actions.push(Action {
            uid: user.uid.clone(),
            address: user.mail.clone(),
            kind,
            row: Some(record.clone()),
        });
        if disables {
            plan_offboard(p, &user.uid, &user.mail, policy);
        }
    }
    match found.tls {
        Some((tls_in, tls_out)) => p.actions.push(Action {
            uid: user.uid.clone(),
            address: user.mail.clone(),
            kind: ActionKind::Tls {
                tls_in,
                tls_out,
                old: (mailbox.tls_in, mailbox.tls_out),
            },
            row: Some(ManagedMailbox {
                tls_in: Some(tls_in),
                tls_out: Some(tls_out),
                ..record.clone()
            }),
        }),
        None => {
            record.tls_in = user.tls_in.or(record.tls_in);
            record.tls_out = user.tls_out.or(record.tls_out);
        }
    }
    if let Some((value, fingerprint)) = &password {
        p.actions.push(Action {
            uid: user.uid.clone(),
            address: user.mail.clone(),
            kind: ActionKind::Password {
                value: (*value).clone(),
                fingerprint: fingerprint.clone(),
            },
            row: Some(ManagedMailbox {
                password_fp: Some(fingerprint.clone()),
                ..record.clone()
            }),
        });
    }
    if let Some(kind) = template {
        let name = match &kind {
            ActionKind::Template { name, .. } => Some(name.clone()),
            _ => None,
        };
        p.actions.push(Action {
            uid: user.uid.clone(),
            address: user.mail.clone(),
            kind,
            row: Some(ManagedMailbox {
                template: name,
                ..record.clone()
            }),
        });
    } else if !update_planned && found.tls.is_none() && password.is_none() {
        p.unchanged += 1;
    }
    // Without an update, the row's fields already equal mailcow's: record it now (this is
    // also how an adoption without writes, an OU move or a re-enable by hand is recorded).
    if !update_planned && !found.row_current {
        p.state_ops.push(StateOp::Put(record));
    }
}

/// The template to apply to an existing mailbox: the user's (`templates`), when mailcow has
/// it and the row does not record it as applied.
fn template_to_apply(
    user: &DirUser,
    mailbox: &Mailbox,
    row: Option<&ManagedMailbox>,
    policy: &Policy,
) -> Option<ActionKind> {
    let (name, found) = policy.templates.get(usize::from(user.template?))?;
    let t = found.as_ref()?;
    let old = row.and_then(|r| r.template.clone());
    if old.as_deref() == Some(name.as_str()) {
        return None;
    }
    let mut changes = Vec::new();
    let quota_mapped = user.quota_mib.is_some() || policy.default_quota_mib.is_some();
    if !quota_mapped && t.quota_mib > 0 && t.quota_mib.checked_mul(MIB) != Some(mailbox.quota_bytes) {
        changes.push(FieldChange {
            field: Field::Quota,
            old: json!(mailbox.quota_bytes / MIB),
            new: json!(t.quota_mib),
        });
    }
    let differ = (t.access ^ mailbox.access) & !policy.access_managed & crate::core::access::ALL_ON;
    for (protocol, on) in flag_list(differ, t.access) {
        changes.push(FieldChange {
            field: Field::Access(protocol),
            old: json!(u8::from(!on)),
            new: json!(u8::from(on)),
        });
    }
    Some(ActionKind::Template {
        name: name.clone(),
        old,
        changes,
        tags: t.tags.clone(),
        acl: t.acl.clone(),
        rl: (t.rl_value, t.rl_frame.clone()),
        attribute_hash: mailbox.attribute_hash.as_deref().map(str::to_owned),
    })
}

/// The password to send to an existing mailbox, with its fingerprint. Passwords only mean
/// something on mailcow-authenticated mailboxes (API.md 5); after a switch to `mailcow` the
/// password goes in its own, later call (apply runs edits first).
fn password_to_send<'u>(
    user: &'u DirUser,
    row: Option<&ManagedMailbox>,
    found: &Comparison,
    policy: &Policy,
) -> Option<(&'u Secret, String)> {
    let pw = user.password.as_ref()?;
    if !found.source_wanted_after || policy.authsource != Authsource::Mailcow {
        return None;
    }
    let fp = policy.fingerprinter.of(pw);
    let send = match policy.password {
        PasswordMode::Always => true,
        PasswordMode::Changed => row.and_then(|r| r.password_fp.as_deref()) != Some(fp.as_str()),
        PasswordMode::Create | PasswordMode::Never | PasswordMode::Random => false,
    };
    send.then_some((pw, fp))
}

/// The state rows to write and the uids to delete after a pass.
#[derive(Debug, Default, PartialEq)]
pub struct StateDelta {
    pub put: BTreeMap<String, ManagedMailbox>,
    pub delete: BTreeSet<String>,
}

impl StateDelta {
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.delete.is_empty()
    }
}

/// What the state database must record, given which actions mailcow confirmed
/// (`confirmed[i]` for `plan.actions[i]`). Unconfirmed actions leave their rows as they were.
pub fn settle(state: &ManagedRows, plan: &Plan, confirmed: &[bool]) -> StateDelta {
    let mut delta = StateDelta::default();
    let current = |uid: &str, delta: &StateDelta| -> Option<ManagedMailbox> {
        if delta.delete.contains(uid) {
            return None;
        }
        delta.put.get(uid).cloned().or_else(|| state.get(uid))
    };
    for op in &plan.state_ops {
        match op {
            StateOp::Put(row) => {
                delta.delete.remove(&row.uid);
                delta.put.insert(row.uid.clone(), row.clone());
            }
            StateOp::Rekey { old_uid, row } => {
                delta.put.remove(old_uid);
                delta.delete.insert(old_uid.clone());
                delta.delete.remove(&row.uid);
                delta.put.insert(row.uid.clone(), row.clone());
            }
            StateOp::Forget { uid } => {
                delta.put.remove(uid);
                delta.delete.insert(uid.clone());
            }
            // After the actions: it depends on a create's confirmation.
            StateOp::RetireWhenCreated { .. } => {}
        }
    }
    for (action, ok) in plan.actions.iter().zip(confirmed) {
        if !ok {
            continue;
        }
        match (&action.kind, &action.row) {
            // Revoked app passwords and devices are not state: nothing to record; nor is a
            // domain (never removed, so never tracked).
            (ActionKind::Offboard { .. } | ActionKind::CreateDomain(_), _) => {}
            (ActionKind::Delete, _) | (_, None) => {
                delta.put.remove(&action.uid);
                delta.delete.insert(action.uid.clone());
            }
            (kind, Some(row)) => {
                // Merge into what earlier confirmed actions of this uid recorded, so that a
                // confirmed password does not undo a confirmed update and vice versa.
                let merged = match (current(&action.uid, &delta), kind) {
                    (Some(prev), ActionKind::Password { fingerprint, .. }) => ManagedMailbox {
                        password_fp: Some(fingerprint.clone()),
                        ..prev
                    },
                    (Some(prev), ActionKind::Tls { tls_in, tls_out, .. }) => ManagedMailbox {
                        tls_in: Some(*tls_in),
                        tls_out: Some(*tls_out),
                        dn: row.dn.clone(),
                        last_seen: row.last_seen,
                        ..prev
                    },
                    (Some(prev), ActionKind::Update { .. }) if prev.address == row.address => ManagedMailbox {
                        password_fp: prev.password_fp,
                        tls_in: prev.tls_in,
                        tls_out: prev.tls_out,
                        template: prev.template,
                        ..row.clone()
                    },
                    (Some(prev), ActionKind::Template { name, .. }) => ManagedMailbox {
                        template: Some(name.clone()),
                        dn: row.dn.clone(),
                        last_seen: row.last_seen,
                        ..prev
                    },
                    (None, ActionKind::Template { .. }) => continue,
                    // Only password and TLS may apply to a row not yet recorded if the
                    // adopting update failed: then there is nothing to record.
                    (None, ActionKind::Password { .. } | ActionKind::Tls { .. }) => continue,
                    _ => row.clone(),
                };
                delta.delete.remove(&action.uid);
                delta.put.insert(action.uid.clone(), merged);
            }
        }
    }
    for op in &plan.state_ops {
        let StateOp::RetireWhenCreated { uid, row } = op else {
            continue;
        };
        let created = plan
            .actions
            .iter()
            .zip(confirmed)
            .any(|(a, ok)| *ok && &a.uid == uid && matches!(a.kind, ActionKind::Create { .. }));
        if created {
            delta.delete.remove(&row.uid);
            delta.put.insert(row.uid.clone(), row.clone());
        }
    }
    delta
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
