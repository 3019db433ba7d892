//! From raw LDAP entries to the users mailcow should have: pure normalisation.
//!
//! Every value from the directory is untrusted: it may be binary, not UTF-8, too long, or
//! simply wrong ("abc" as a quota). Here each value either becomes a clean field or a warning
//! that names the entry and the reason, and the field is then left alone in mailcow. Nothing
//! here does I/O, so the LDAP edge stays free of decisions and every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::core::access::{AccessReading, Memberships};
use crate::core::model::{DirUser, MIB, ManagedRows, RawEntry, Warning};
use crate::core::packed_users::PackedUsers;
use crate::core::policy::Fingerprinter;
use crate::core::policy::{ActiveFormat, MAX_QUOTA_MIB, MailRewrite, QuotaUnit, Secret, UserMapping};

/// Password schemes that mailcow stores as they are (API.md section 5). Any other value is
/// hashed again by mailcow as if it were cleartext, which silently breaks the login.
pub const ACCEPTED_SCHEMES: &[&str] = &[
    "ARGON2I",
    "ARGON2ID",
    "BLF-CRYPT",
    "CLEAR",
    "CLEARTEXT",
    "CRYPT",
    "DES-CRYPT",
    "LDAP-MD5",
    "MD5",
    "MD5-CRYPT",
    "PBKDF2",
    "PLAIN",
    "PLAIN-MD4",
    "PLAIN-MD5",
    "PLAIN-TRUNC",
    "SHA",
    "SHA1",
    "SHA256",
    "SHA256-CRYPT",
    "SHA512",
    "SHA512-CRYPT",
    "SMD5",
    "SSHA",
    "SSHA256",
    "SSHA512",
];

/// mailcow's `name` column is varchar(255).
const MAX_NAME_CHARS: usize = 255;

/// How to read entries: the mapping and the value formats of the config.
#[derive(Debug, Clone)]
pub struct Reading {
    pub mapping: UserMapping,
    pub quota_unit: QuotaUnit,
    pub active_format: ActiveFormat,
    /// Whether password values matter (so that unusable ones deserve a warning).
    pub want_password: bool,
    /// `access`, with the members of the groups it names; `None` = off.
    pub access: Option<Arc<AccessReading>>,
}

/// An entry that yields no user, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub dn: String,
    pub reason: String,
}

/// The users of one search, after normalisation and de-duplication.
///
/// Built for large directories, against the state database's rows: a user whose entry says
/// exactly what its row records (address, DN, name, quota, active, TLS, no alias addresses)
/// is held as one byte of that row, and its password hash, when the row holds its
/// fingerprint, is not held at all (see [`DirUser::password_elided`]). In an unchanged pass
/// that is every user. Other users are held whole, sorted by uid, with an index by address.
#[derive(Debug, Default)]
pub struct Directory {
    /// Usable users that are not held as rows, packed, sorted by uid.
    full: PackedUsers,
    /// Positions in `full`, sorted by address.
    by_mail: Vec<u32>,
    /// The rows the directory was read against.
    state: Arc<ManagedRows>,
    /// One per state row: `RECORDED`, with `PASSWORD_ELIDED`, when a user is held as that row.
    recorded: Vec<u8>,
    /// uids and addresses of entries that exist but were skipped: a skipped entry still
    /// exists, so its mailbox must not be treated as removed.
    other_uids: BTreeSet<String>,
    other_mails: BTreeSet<String>,
    /// Normalised DNs of skipped entries: a state row whose DN is one of them is protected
    /// even when neither its uid nor its address could be read.
    other_dns: BTreeSet<String>,
    pub skipped: Vec<Skipped>,
    /// Field-level problems: the user is synced, that field is left alone.
    pub warnings: Vec<Warning>,
    /// How many entries the search returned.
    pub entries: usize,
    /// With several sources: the people the other sources hold. Such a person exists in
    /// LDAP for this directory too: their row is no removal of this source, and not taken
    /// over by a user of it.
    elsewhere: Option<Arc<Elsewhere>>,
}

/// The uids and addresses of the other sources' entries (usable or skipped, and the rows
/// of a source that could not be read), as 64-bit hashes: a hash that collides only
/// protects a row.
#[derive(Debug, Default)]
pub struct Elsewhere {
    uids: std::collections::HashSet<u64>,
    mails: std::collections::HashSet<u64>,
}

impl Elsewhere {
    pub fn add(&mut self, uid: &str, mail: &str) {
        self.uids.insert(hash_of(uid));
        self.mails.insert(hash_of(mail));
    }

    pub fn extend(&mut self, other: &Elsewhere) {
        self.uids.extend(&other.uids);
        self.mails.extend(&other.mails);
    }

    /// Every person `dir` holds, usable or skipped.
    pub fn add_directory(&mut self, dir: &Directory) {
        dir.each_person(|uid, mail| self.add(uid, mail));
        self.uids.extend(dir.other_uids.iter().map(|u| hash_of(u)));
        self.mails.extend(dir.other_mails.iter().map(|m| hash_of(m)));
    }
}

fn hash_of(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// A user as the directory holds it.
#[derive(Debug, Clone)]
pub enum Member {
    /// Not held as a row: unpacked for the planner.
    Whole(DirUser),
    /// Exactly what the state row at this position records (without a hash, if any).
    Row(usize),
}

const RECORDED: u8 = 1;
const PASSWORD_ELIDED: u8 = 2;
/// The entry lists alias values (all equal to its own address, or it would be held whole).
const ALIASES_LISTED: u8 = 4;

impl Directory {
    /// A directory of exactly these users (no duplicates among them), as the builder makes it.
    pub fn from_users(users: Vec<DirUser>) -> Directory {
        let mut full = PackedUsers::default();
        for user in &users {
            full.push(user);
        }
        let mut dir = Directory {
            entries: users.len(),
            full,
            ..Directory::default()
        };
        dir.index();
        dir
    }

    /// The users of several sources' directories as one (they hold no user in common: the
    /// pass skipped those), with every entry each skipped.
    pub fn merged(dirs: &[&Directory]) -> Directory {
        let mut merged = Directory::from_users(dirs.iter().flat_map(|d| d.users()).collect());
        merged.entries = 0;
        for dir in dirs {
            merged.other_uids.extend(dir.other_uids.iter().cloned());
            merged.other_mails.extend(dir.other_mails.iter().cloned());
            merged.other_dns.extend(dir.other_dns.iter().cloned());
            merged.entries += dir.entries;
        }
        merged
    }

    /// Sort the packed users by uid and index them by address.
    fn index(&mut self) {
        self.full.sort_by_uid();
        self.full.shrink_to_fit();
        self.by_mail = self.full.positions_by_mail();
        self.by_mail.shrink_to_fit();
    }

    /// How many usable users there are.
    pub fn len(&self) -> usize {
        self.full.len() + self.held_as_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every usable user, in uid order (a user held as a row is rebuilt from it).
    pub fn users(&self) -> impl Iterator<Item = DirUser> + '_ {
        self.members().map(|member| match member {
            Member::Whole(user) => user,
            Member::Row(r) => self.rebuild(r),
        })
    }

    /// Every usable user as it is held, in uid order.
    pub fn members(&self) -> impl Iterator<Item = Member> + '_ {
        let mut full = (0..self.full.len()).peekable();
        let mut rows = (0..self.recorded.len()).filter(|&r| self.recorded[r] != 0).peekable();
        std::iter::from_fn(move || {
            let row_first = match (full.peek(), rows.peek()) {
                (Some(&u), Some(&r)) => self.state.uid_at(r) < self.full.uid(u),
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if row_first {
                rows.next().map(Member::Row)
            } else {
                full.next().map(|u| Member::Whole(self.full.get(u)))
            }
        })
    }

    /// Whether users held as rows are held as rows of this very state (positions mean its rows).
    pub fn shares(&self, state: &ManagedRows) -> bool {
        std::ptr::eq(Arc::as_ptr(&self.state), state)
    }

    /// Every usable user, in uid order, owned (for tests and checks).
    pub fn to_users(&self) -> Vec<DirUser> {
        self.users().collect()
    }

    /// Whether an entry with this uid exists in LDAP (usable or skipped; with several
    /// sources, in any of them).
    pub fn has_uid(&self, uid: &str) -> bool {
        self.holds_uid(uid)
            || self.other_uids.contains(uid)
            || self.elsewhere.as_ref().is_some_and(|e| e.uids.contains(&hash_of(uid)))
    }

    /// Whether an entry with this address exists in LDAP (usable or skipped; with several
    /// sources, in any of them).
    pub fn has_mail(&self, mail: &str) -> bool {
        self.holds_mail(mail)
            || self.other_mails.contains(mail)
            || self
                .elsewhere
                .as_ref()
                .is_some_and(|e| e.mails.contains(&hash_of(mail)))
    }

    /// Whether this directory's own entries hold a usable user with this uid or address.
    pub fn holds_user(&self, uid: &str, mail: &str) -> bool {
        self.holds_uid(uid) || self.holds_mail(mail)
    }

    /// Whether this directory's own entries hold a usable user with this address.
    fn holds_mail(&self, mail: &str) -> bool {
        self.position_by_mail(mail).is_some() || self.recorded_with_address(mail).next().is_some()
    }

    /// Whether this directory's own entries hold a usable user with this uid.
    pub fn holds_uid(&self, uid: &str) -> bool {
        self.full.find_uid(uid).is_some() || self.state.position(uid).is_some_and(|r| self.holds_row(r))
    }

    /// The uid and address of every usable user, without unpacking them.
    pub fn each_person(&self, mut each: impl FnMut(&str, &str)) {
        for i in 0..self.full.len() {
            each(self.full.uid(i), self.full.mail(i));
        }
        for r in (0..self.recorded.len()).filter(|&r| self.holds_row(r)) {
            let row = self.state.view(r);
            each(row.uid, row.address);
        }
    }

    /// The people of the other sources (see [`Elsewhere`]).
    pub fn set_elsewhere(&mut self, elsewhere: Arc<Elsewhere>) {
        self.elsewhere = Some(elsewhere);
    }

    /// Skip the users `conflict` names a reason for (a uid or address another source has
    /// too): they stay known as existing entries, so nothing of theirs is removed.
    pub fn exclude(&mut self, mut conflict: impl FnMut(&str, &str) -> Option<String>) {
        let mut excluded = Vec::new();
        for i in 0..self.full.len() {
            if let Some(reason) = conflict(self.full.uid(i), self.full.mail(i)) {
                excluded.push((i, reason));
            }
        }
        let mut skips = Vec::new();
        for (i, reason) in &excluded {
            let (uid, mail, dn) = (self.full.uid(*i), self.full.mail(*i), self.full.dn(*i));
            skips.push((dn.to_owned(), reason.clone(), uid.to_owned(), mail.to_owned()));
        }
        if !excluded.is_empty() {
            let gone: BTreeSet<usize> = excluded.iter().map(|(i, _)| *i).collect();
            self.full.retain(|i| !gone.contains(&i));
            self.index();
        }
        for r in 0..self.recorded.len() {
            if self.holds_row(r) {
                let row = self.state.view(r);
                if let Some(reason) = conflict(row.uid, row.address) {
                    skips.push((row.dn.to_owned(), reason, row.uid.to_owned(), row.address.to_owned()));
                    self.recorded[r] = 0;
                }
            }
        }
        for (dn, reason, uid, mail) in skips {
            self.add_skipped(dn, reason, Some(uid), Some(mail));
        }
    }

    /// Whether an entry with this uid was returned but skipped (a usable user may have the
    /// same uid when the other entry failed for another reason, e.g. it has no address).
    pub fn has_skipped_uid(&self, uid: &str) -> bool {
        self.other_uids.contains(uid)
    }

    /// Whether an entry with this DN was returned but skipped.
    pub fn has_skipped_dn(&self, dn: &str) -> bool {
        !self.other_dns.is_empty() && self.other_dns.contains(&normalize_dn(dn))
    }

    /// Whether the directory still holds the person of a state row, usable or skipped: by
    /// uid, by address, or by the DN of a skipped entry. Such a row is never a removal.
    pub fn holds_person(&self, uid: &str, address: &str, dn: &str) -> bool {
        self.has_uid(uid) || self.has_mail(address) || self.has_skipped_dn(dn)
    }

    pub fn user(&self, uid: &str) -> Option<DirUser> {
        if let Some(i) = self.full.find_uid(uid) {
            return Some(self.full.get(i));
        }
        let r = self.state.position(uid).filter(|&r| self.holds_row(r))?;
        Some(self.rebuild(r))
    }

    pub fn user_by_mail(&self, mail: &str) -> Option<DirUser> {
        if let Some(i) = self.position_by_mail(mail) {
            return Some(self.full.get(i));
        }
        let r = self.recorded_with_address(mail).next()?;
        Some(self.rebuild(r))
    }

    /// The position in `full` of the user with this address.
    fn position_by_mail(&self, mail: &str) -> Option<usize> {
        let i = self
            .by_mail
            .binary_search_by(|&i| self.full.cmp_mail(i as usize, mail))
            .ok()?;
        Some(self.by_mail[i] as usize)
    }

    /// The same directory read against these rows (for tests: every plan test also plans
    /// with its directory held this way).
    #[cfg(test)]
    pub fn held_against(&self, state: Arc<ManagedRows>, fingerprinter: Option<Fingerprinter>) -> Directory {
        let mut builder = DirectoryBuilder::against(
            Reading {
                mapping: UserMapping {
                    mail: "mail".into(),
                    firstname: None,
                    lastname: None,
                    password: None,
                    quota: None,
                    active: None,
                    tls_enforce_in: None,
                    tls_enforce_out: None,
                    name: None,
                    uid: None,
                    aliases: None,
                    mail_rewrite: MailRewrite::default(),
                },
                quota_unit: QuotaUnit::MiB,
                active_format: ActiveFormat::Auto,
                want_password: true,
                access: None,
            },
            state,
            fingerprinter,
        );
        for user in self.to_users() {
            builder.add_user(user);
        }
        let mut held = builder.finish();
        held.other_uids = self.other_uids.clone();
        held.other_mails = self.other_mails.clone();
        held.other_dns = self.other_dns.clone();
        held.skipped = self.skipped.clone();
        held.warnings = self.warnings.clone();
        held.entries = self.entries;
        held
    }

    /// Record an entry that exists but gives no user.
    pub fn add_skipped(&mut self, dn: String, reason: String, uid: Option<String>, mail: Option<String>) {
        self.other_uids.extend(uid);
        self.other_mails.extend(mail);
        if !dn.is_empty() {
            self.other_dns.insert(normalize_dn(&dn));
        }
        self.skipped.push(Skipped { dn, reason });
    }

    /// The uids of skipped entries that had a readable one.
    pub fn skipped_uids(&self) -> impl Iterator<Item = &str> + '_ {
        self.other_uids.iter().map(String::as_str)
    }

    /// The addresses of skipped entries that had a readable one.
    pub fn skipped_mails(&self) -> impl Iterator<Item = &str> + '_ {
        self.other_mails.iter().map(String::as_str)
    }

    /// How many users are held as rows.
    fn held_as_rows(&self) -> usize {
        self.recorded.iter().filter(|&&flags| flags != 0).count()
    }

    /// Whether the user of row `r` of the state is held as that row.
    pub fn holds_row(&self, r: usize) -> bool {
        self.recorded.get(r).is_some_and(|&flags| flags != 0)
    }

    /// Rows held as users that have this address.
    fn recorded_with_address<'a>(&'a self, mail: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.state.positions_with_address(mail).filter(|&r| self.holds_row(r))
    }

    /// The user held as row `r`: exactly what the row records.
    pub fn rebuild(&self, r: usize) -> DirUser {
        let row = self.state.at(r);
        DirUser {
            uid: row.uid,
            dn: row.dn,
            mail: row.address,
            name: row.name,
            password: None,
            password_elided: self.recorded[r] & PASSWORD_ELIDED != 0,
            quota_mib: row.quota_mib,
            active: row.active,
            tls_in: row.tls_in,
            tls_out: row.tls_out,
            aliases: Vec::new(),
            aliases_listed: self.recorded[r] & ALIASES_LISTED != 0,
            access: None,
            template: None,
        }
    }

    /// Hold the user of row `r` whole again (it has a duplicate, so it will be skipped).
    fn unrecord(&mut self, r: usize, into: &mut PackedUsers) {
        if self.holds_row(r) {
            into.push(&self.rebuild(r));
            self.recorded[r] = 0;
        }
    }
}

/// Collects entries one by one (the search streams them) and resolves duplicates at the end.
#[derive(Debug)]
pub struct DirectoryBuilder {
    reading: Reading,
    /// Users not held as rows, packed as they come.
    users: PackedUsers,
    dir: Directory,
    /// Set when password hashes equal to a row's fingerprint need not be held.
    fingerprinter: Option<Fingerprinter>,
}

impl DirectoryBuilder {
    /// A builder that holds every user whole.
    pub fn new(reading: Reading) -> DirectoryBuilder {
        DirectoryBuilder::against(reading, Arc::default(), None)
    }

    /// A builder that holds users equal to their state row as that row. With a fingerprinter,
    /// a hash whose fingerprint the row holds is not kept either (only when the hash is
    /// needed for a new mailbox alone, not when it is sent every pass).
    pub fn against(
        reading: Reading,
        state: Arc<ManagedRows>,
        fingerprinter: Option<Fingerprinter>,
    ) -> DirectoryBuilder {
        DirectoryBuilder {
            reading,
            users: PackedUsers::default(),
            dir: Directory {
                recorded: vec![0; state.len()],
                state,
                ..Directory::default()
            },
            fingerprinter,
        }
    }

    /// The members of the groups `access` rules name, read before the users.
    pub fn set_access_members(&mut self, members: Memberships) {
        if let Some(access) = &mut self.reading.access {
            Arc::make_mut(access).members = members;
        }
    }

    pub fn add(&mut self, entry: &RawEntry) {
        self.dir.entries += 1;
        let mut warnings = Vec::new();
        match read_user(entry, &self.reading, &mut warnings) {
            Ok(user) => self.add_user(user),
            Err(skip) => self.dir.add_skipped(entry.dn.clone(), skip.reason, skip.uid, skip.mail),
        }
        self.dir.warnings.extend(warnings);
    }

    fn add_user(&mut self, user: DirUser) {
        if !self.hold_as_row(&user) {
            self.users.push(&user);
        }
    }

    /// Hold the user as its state row when the row records exactly this user.
    fn hold_as_row(&mut self, user: &DirUser) -> bool {
        let Some(r) = self.dir.state.position(&user.uid) else {
            return false;
        };
        if self.dir.holds_row(r) {
            // A second entry with this uid: both will be skipped, so both are held whole.
            self.dir.unrecord(r, &mut self.users);
            return false;
        }
        let row = self.dir.state.view(r);
        let password = match (&user.password, &self.fingerprinter) {
            (None, _) => Some(0),
            (Some(pw), Some(fp)) if row.password_fp_is(&fp.of(pw)) => Some(PASSWORD_ELIDED),
            (Some(_), _) => None,
        };
        let same = row.address == user.mail
            && row.dn == user.dn
            && row.name == user.name.as_deref()
            && row.quota_mib == user.quota_mib
            && row.active == user.active
            && row.tls_in == user.tls_in
            && row.tls_out == user.tls_out
            && user.aliases.is_empty()
            && user.access.is_none()
            && user.template.is_none()
            && !user.password_elided;
        let listed = if user.aliases_listed { ALIASES_LISTED } else { 0 };
        match password {
            Some(elided) if same => {
                self.dir.recorded[r] = RECORDED | elided | listed;
                true
            }
            _ => false,
        }
    }

    /// Users sharing an address, then users sharing a uid, are all skipped: neither can be
    /// told apart from the other.
    pub fn finish(mut self) -> Directory {
        let mut users = std::mem::take(&mut self.users);
        self.unrecord_duplicates(&mut users);
        self.drop_duplicates(&mut users, Key::Mail);
        self.drop_duplicates(&mut users, Key::Uid);
        self.dir.full = users;
        self.dir.index();
        self.dir.skipped.sort_by(|a, b| a.dn.cmp(&b.dn));
        self.dir
    }

    /// Users held as rows that share a uid or an address with another user are held whole
    /// again, so that the duplicate rules below see them.
    fn unrecord_duplicates(&mut self, users: &mut PackedUsers) {
        if self.dir.held_as_rows() == 0 {
            return;
        }
        let state = self.dir.state.clone();
        let mut clashing: Vec<usize> = Vec::new();
        for i in 0..users.len() {
            clashing.extend(state.position(users.uid(i)).filter(|&r| self.dir.holds_row(r)));
            clashing.extend(self.dir.recorded_with_address(users.mail(i)));
        }
        // Two rows of one address, both held as users.
        let mut previous: Option<usize> = None;
        for r in state.positions_by_address() {
            let same_address_held =
                |p: usize| state.address_of(p) == state.address_of(r) && self.dir.holds_row(p) && self.dir.holds_row(r);
            if let Some(p) = previous.filter(|&p| same_address_held(p)) {
                clashing.extend([p, r]);
            }
            previous = Some(r);
        }
        for r in clashing {
            self.dir.unrecord(r, users);
        }
    }

    /// Take out every user whose key is not unique, each with a skip naming all of them.
    fn drop_duplicates(&mut self, users: &mut PackedUsers, key: Key) {
        let key_of = |i: u32| match key {
            Key::Mail => users.mail(i as usize),
            Key::Uid => users.uid(i as usize),
        };
        let order = match key {
            Key::Mail => users.positions_by_mail(),
            Key::Uid => users.positions_by_uid(),
        };
        let mut dropped = vec![false; users.len()];
        for run in order.chunk_by(|&a, &b| key_of(a) == key_of(b)) {
            if run.len() < 2 {
                continue;
            }
            // Sorted: the message does not depend on the order the entries came in.
            let mut dns: Vec<&str> = run.iter().map(|&i| users.dn(i as usize)).collect();
            dns.sort_unstable();
            let (what, verb, shown) = match key {
                Key::Mail => ("address", "is used by", key_of(run[0]).to_owned()),
                Key::Uid => ("uid", "is shared by", format!("`{}`", key_of(run[0]))),
            };
            let reason = format!(
                "{what} {shown} {verb} {} entries ({}); all of them skipped",
                dns.len(),
                dns.join("; ")
            );
            for &i in run {
                let i = i as usize;
                dropped[i] = true;
                self.dir.add_skipped(
                    users.dn(i).to_owned(),
                    reason.clone(),
                    Some(users.uid(i).to_owned()),
                    Some(users.mail(i).to_owned()),
                );
            }
        }
        if dropped.contains(&true) {
            users.retain(|i| !dropped[i]);
        }
    }
}

/// What two users must not share.
#[derive(Clone, Copy)]
enum Key {
    Mail,
    Uid,
}

/// Why an entry gives no user; the uid and mail when they could be read.
struct Skip {
    reason: String,
    uid: Option<String>,
    mail: Option<String>,
}

fn first<'e>(entry: &'e RawEntry, attr: &str) -> Option<&'e [u8]> {
    entry
        .attrs
        .get(&attr.to_ascii_lowercase())
        .and_then(|v| v.first())
        .map(Vec::as_slice)
}

fn all<'e>(entry: &'e RawEntry, attr: &str) -> &'e [Vec<u8>] {
    entry.attrs.get(&attr.to_ascii_lowercase()).map_or(&[], Vec::as_slice)
}

/// A value as text, or why not.
fn text(value: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(value).map_err(|_| "is not UTF-8 text".to_owned())
}

fn read_user(entry: &RawEntry, reading: &Reading, warnings: &mut Vec<Warning>) -> Result<DirUser, Skip> {
    let m = &reading.mapping;
    // Both are read whatever happens to the other: a skipped entry still protects the
    // mailbox it maps to, by uid or by address.
    let uid = read_uid(entry, m.uid.as_deref());
    let mail = match first(entry, &m.mail) {
        None => Err(format!("no `{}` attribute (no mail address)", m.mail)),
        Some(raw) => text(raw).map_err(|e| format!("`{}` {e}", m.mail)).and_then(|t| {
            // Rewritten first: validation, duplicates and the domain filter see the result.
            let t = m.mail_rewrite.apply(t);
            normalize_mail(&t).map_err(|e| format!("`{}` value {:?}: {e}", m.mail, shorten(&t)))
        }),
    };
    let (uid, mail) = match (uid, mail) {
        (Ok(uid), Ok(mail)) => (uid, mail),
        (Err(reason), mail) => {
            return Err(Skip {
                reason,
                uid: None,
                mail: mail.ok(),
            });
        }
        (Ok(uid), Err(reason)) => {
            return Err(Skip {
                reason,
                uid: Some(uid),
                mail: None,
            });
        }
    };
    let who = &mail;

    let name = read_name(entry, m, who, warnings);
    let quota_mib = m.quota.as_deref().and_then(|attr| {
        let raw = first(entry, attr)?;
        match text(raw).and_then(|t| parse_quota(t, reading.quota_unit)) {
            Ok(q) => Some(q),
            Err(e) => {
                warnings.push(Warning::admin(format!(
                    "{who}: quota `{attr}` {e}; quota left unchanged"
                )));
                None
            }
        }
    });
    let active = m.active.as_deref().and_then(|attr| {
        let raw = first(entry, attr)?;
        match text(raw).and_then(|t| parse_active(t, attr, reading.active_format)) {
            Ok(a) => Some(a),
            Err(e) => {
                warnings.push(Warning::admin(format!(
                    "{who}: active `{attr}` {e}; active state left unchanged"
                )));
                None
            }
        }
    });
    let mut flag = |attr: Option<&str>, what: &str| {
        let attr = attr?;
        let raw = first(entry, attr)?;
        match text(raw).and_then(parse_bool) {
            Ok(b) => Some(b),
            Err(e) => {
                warnings.push(Warning::admin(format!("{who}: {what} `{attr}` {e}; left unchanged")));
                None
            }
        }
    };
    let tls_in = flag(m.tls_enforce_in.as_deref(), "tls_enforce_in");
    let tls_out = flag(m.tls_enforce_out.as_deref(), "tls_enforce_out");
    let password = match (&m.password, reading.want_password) {
        (Some(attr), true) => read_password(all(entry, attr), attr, who, warnings),
        _ => None,
    };
    let aliases = match &m.aliases {
        Some(attr) => read_aliases(all(entry, attr), attr, &mail, &m.mail_rewrite, warnings),
        None => Vec::new(),
    };
    let aliases_listed = m.aliases.as_deref().is_some_and(|attr| !all(entry, attr).is_empty());
    // Held for every user until the pass ends: no spare capacity (format! leaves some).
    let fit = |mut text: String| {
        text.shrink_to_fit();
        text
    };
    Ok(DirUser {
        uid: fit(uid),
        dn: entry.dn.clone(),
        mail: fit(mail),
        name: name.map(fit),
        password,
        password_elided: false,
        quota_mib,
        active,
        tls_in,
        tls_out,
        aliases,
        aliases_listed,
        access: reading.access.as_ref().and_then(|a| {
            let rules = a.rules.as_ref()?;
            Some(rules.flags_of(entry, &normalize_dn(&entry.dn), &a.members))
        }),
        template: reading.access.as_ref().and_then(|a| {
            let rules = a.templates.as_ref()?;
            rules.pick(entry, &normalize_dn(&entry.dn), &a.members)
        }),
    })
}

/// Alias addresses from `mailAlternateAddress`-style values (plain addresses) or
/// `proxyAddresses`-style values (`SMTP:` primary, `smtp:` secondary; other prefixes such
/// as `X500:` or `SIP:` are not mail and are ignored). The user's own address is left out.
pub fn read_aliases(
    values: &[Vec<u8>],
    attr: &str,
    mail: &str,
    rewrite: &MailRewrite,
    warnings: &mut Vec<Warning>,
) -> Vec<String> {
    let mut out = Vec::new();
    for raw in values {
        let Ok(value) = std::str::from_utf8(raw) else {
            warnings.push(Warning::admin(format!(
                "{mail}: alias `{attr}` has a value that is not UTF-8; ignored"
            )));
            continue;
        };
        let value = value.trim();
        let address = match value.split_once(':') {
            Some((prefix, rest)) if prefix.eq_ignore_ascii_case("smtp") => rest,
            // A prefix (X500:, SIP:, x400:, …) without an @ before it is not an address.
            Some((prefix, _)) if !prefix.contains('@') => continue,
            _ => value,
        };
        match normalize_mail(&rewrite.apply(address)) {
            Ok(a) if a == mail => {}
            Ok(a) => out.push(a),
            Err(e) => warnings.push(Warning::admin(format!(
                "{mail}: alias `{attr}` value {:?} {e}; ignored",
                shorten(address)
            ))),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A group entry as read: its identity, address and member DNs, before nesting is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawGroup {
    pub uid: String,
    pub dn: String,
    pub mail: Option<String>,
    pub members: Vec<String>,
    /// The server sent only part of the members (AD ranged retrieval): they must be found
    /// another way (the in-chain search) before the group can be used.
    pub members_incomplete: bool,
}

/// Read a group entry: `mail_attr` for its address, `member_attr` for member DNs.
pub fn read_group(
    entry: &RawEntry,
    uid_attr: Option<&str>,
    mail_attr: &str,
    member_attr: &str,
    warnings: &mut Vec<Warning>,
) -> RawGroup {
    let uid = read_uid(entry, uid_attr).unwrap_or_else(|_| entry.dn.clone());
    let mail = match first(entry, mail_attr).map(text) {
        None => None,
        Some(Ok(t)) => match normalize_mail(t) {
            Ok(m) => Some(m),
            Err(e) => {
                warnings.push(Warning::admin(format!(
                    "group {}: `{mail_attr}` {e}; no alias for it",
                    entry.dn
                )));
                None
            }
        },
        Some(Err(e)) => {
            warnings.push(Warning::admin(format!(
                "group {}: `{mail_attr}` {e}; no alias for it",
                entry.dn
            )));
            None
        }
    };
    let members = all(entry, member_attr)
        .iter()
        .filter_map(|m| std::str::from_utf8(m).ok())
        .map(normalize_dn)
        .collect();
    RawGroup {
        uid,
        dn: entry.dn.clone(),
        mail,
        members,
        members_incomplete: entry.ranged.iter().any(|r| r.eq_ignore_ascii_case(member_attr)),
    }
}

/// DNs compare case-insensitively and without spaces after commas.
pub fn normalize_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| rdn.trim().to_lowercase())
        .collect::<Vec<_>>()
        .join(",")
}

/// Resolve groups to member addresses: `alias_groups` are the groups that become aliases,
/// `all_groups` (by normalised DN) are every group that may be nested in them. Members are
/// matched to users by DN; nesting is followed when `nested`, and a cycle stops the walk.
pub fn resolve_groups(
    alias_groups: &[RawGroup],
    all_groups: &BTreeMap<String, RawGroup>,
    user_mail_by_dn: &BTreeMap<String, String>,
    nested: bool,
) -> Vec<crate::core::model::DirGroup> {
    let mut out = Vec::new();
    for group in alias_groups {
        let Some(mail) = &group.mail else { continue };
        let mut members = BTreeSet::new();
        let mut seen = BTreeSet::from([normalize_dn(&group.dn)]);
        let mut queue: Vec<&String> = group.members.iter().collect();
        while let Some(dn) = queue.pop() {
            if let Some(address) = user_mail_by_dn.get(dn) {
                members.insert(address.clone());
            } else if nested {
                match all_groups.get(dn) {
                    // A member group, followed once (membership may be cyclic).
                    Some(inner) if seen.insert(dn.clone()) => queue.extend(inner.members.iter()),
                    _ => {}
                }
            }
        }
        members.remove(mail);
        out.push(crate::core::model::DirGroup {
            uid: group.uid.clone(),
            dn: group.dn.clone(),
            mail: mail.clone(),
            members: members.into_iter().collect(),
        });
    }
    out.sort_by(|a, b| a.mail.cmp(&b.mail));
    out
}

/// The stable identity: the mapped attribute (objectGUID as GUID text), else the DN.
/// The uid a pass would give this entry (`None`: it has no usable one), read exactly as for
/// a user, so that an incremental pass's list of the directory's uids matches the rows.
pub fn entry_uid(entry: &RawEntry, mapping: &UserMapping) -> Option<String> {
    read_uid(entry, mapping.uid.as_deref()).ok()
}

fn read_uid(entry: &RawEntry, attr: Option<&str>) -> Result<String, String> {
    let Some(attr) = attr else {
        if entry.dn.is_empty() {
            return Err("entry has no DN".into());
        }
        return Ok(entry.dn.clone());
    };
    let raw = first(entry, attr)
        .filter(|v| !v.iter().all(u8::is_ascii_whitespace))
        .ok_or_else(|| format!("no `{attr}` attribute, or an empty one (the configured uid)"))?;
    if attr.eq_ignore_ascii_case("objectGUID") && raw.len() == 16 {
        return Ok(guid_text(raw));
    }
    match std::str::from_utf8(raw) {
        Ok(t) if !t.trim().is_empty() && !t.chars().any(char::is_control) => Ok(t.trim().to_owned()),
        _ => Ok(raw.iter().map(|b| format!("{b:02x}")).collect()),
    }
}

/// Active Directory's objectGUID bytes as the canonical GUID text (the first three groups
/// are little-endian), the form AD tools show.
pub fn guid_text(b: &[u8]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// Trim, lowercase and check an address the way mailcow's PHP e-mail check will.
pub fn normalize_mail(value: &str) -> Result<String, String> {
    let mail = value.trim().to_ascii_lowercase();
    if mail.is_empty() {
        return Err("is empty".into());
    }
    if !mail.is_ascii() {
        return Err("contains non-ASCII characters, which mailcow does not accept in addresses".into());
    }
    if mail.len() > 254 {
        return Err("is longer than 254 characters".into());
    }
    let (local, domain) = mail.rsplit_once('@').ok_or("has no @")?;
    if local.is_empty() || local.len() > 64 {
        return Err("has an empty or over-long local part".into());
    }
    let local_ok = local
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    if !local_ok {
        return Err("has characters mailcow does not accept in the local part".into());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if !domain_ok {
        return Err("has an invalid domain".into());
    }
    Ok(mail)
}

/// The display name: `name` if mapped, else "firstname lastname". Control characters are
/// dropped, and mailcow's own stripping of a leading `<` and trailing `>` is done here, so
/// the next pass compares equal values.
fn read_name(entry: &RawEntry, m: &UserMapping, who: &str, warnings: &mut Vec<Warning>) -> Option<String> {
    let mut part = |attr: Option<&str>| -> Option<String> {
        let raw = first(entry, attr?)?;
        match text(raw) {
            Ok(t) => Some(t.to_owned()),
            Err(e) => {
                warnings.push(Warning::note(format!(
                    "{who}: name part `{}` {e}; ignored",
                    attr.unwrap_or_default()
                )));
                None
            }
        }
    };
    let composed = match m.name.as_deref() {
        Some(attr) => part(Some(attr))?,
        None => {
            let parts: Vec<String> = [part(m.firstname.as_deref()), part(m.lastname.as_deref())]
                .into_iter()
                .flatten()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect();
            parts.join(" ")
        }
    };
    let cleaned: String = composed.chars().filter(|c| !c.is_control()).collect();
    let name = settle_name(&cleaned);
    if name.is_empty() {
        return None;
    }
    if name.chars().count() > MAX_NAME_CHARS {
        warnings.push(Warning::note(format!(
            "{who}: name is longer than {MAX_NAME_CHARS} characters; cut to fit"
        )));
        let cut: String = name.chars().take(MAX_NAME_CHARS).collect();
        return Some(settle_name(&cut).to_owned()).filter(|n| !n.is_empty());
    }
    Some(name.to_owned())
}

/// The name as mailcow will store it, so that the next pass compares equal values: mailcow
/// strips every leading `<` and trailing `>` (`ltrim(rtrim($name, '>'), '<')`); whitespace
/// is trimmed too, and the two repeated until nothing changes (`< <Bob> >` → `Bob`).
fn settle_name(name: &str) -> &str {
    let mut name = name;
    loop {
        let next = name.trim().trim_start_matches('<').trim_end_matches('>');
        if next == name {
            return name;
        }
        name = next;
    }
}

/// A quota value in `unit` as whole MiB (rounded up: mailcow counts in MiB).
pub fn parse_quota(value: &str, unit: QuotaUnit) -> Result<u64, String> {
    let v = value.trim();
    let n: u64 = v.parse().map_err(|_| {
        if v.starts_with('-') && v[1..].parse::<u64>().is_ok() {
            format!("value {v:?} is negative")
        } else {
            format!("value {:?} is not a whole number", shorten(v))
        }
    })?;
    let bytes = n
        .checked_mul(unit.bytes())
        .ok_or_else(|| format!("value {v} is absurdly large"))?;
    let mib = bytes.div_ceil(MIB);
    if mib > MAX_QUOTA_MIB {
        return Err(format!("value {v} is absurdly large (more than 1 PiB)"));
    }
    Ok(mib)
}

/// TRUE/FALSE, yes/no, on/off, 1/0, case-insensitive.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!(
            "value {:?} is not a boolean (TRUE/FALSE, yes/no, 1/0)",
            shorten(value)
        )),
    }
}

/// The LDAP active value as mailcow's 0/1/2.
pub fn parse_active(value: &str, attr: &str, format: ActiveFormat) -> Result<u8, String> {
    let v = value.trim();
    let ad = |v: &str| -> Result<u8, String> {
        let uac: i64 = v
            .parse()
            .map_err(|_| format!("value {:?} is not a userAccountControl number", shorten(v)))?;
        Ok(if uac & 0x2 != 0 { 0 } else { 1 })
    };
    let mailcow = |v: &str| match v {
        "0" => Ok(0),
        "1" => Ok(1),
        "2" => Ok(2),
        _ => Err(format!("value {:?} is not 0, 1 or 2", shorten(v))),
    };
    match format {
        ActiveFormat::Mailcow => mailcow(v),
        ActiveFormat::Bool => parse_bool(v).map(u8::from),
        ActiveFormat::Ad => ad(v),
        ActiveFormat::Auto if attr.eq_ignore_ascii_case("userAccountControl") => ad(v),
        ActiveFormat::Auto => mailcow(v)
            .or_else(|_| parse_bool(v).map(u8::from))
            .map_err(|_| format!("value {:?} is neither 0/1/2 nor a boolean", shorten(v))),
    }
}

/// The `{SCHEME}` of a password value, if it has one.
pub fn scheme_of(value: &str) -> Option<&str> {
    let rest = value.strip_prefix('{')?;
    let end = rest.find('}')?;
    Some(&rest[..end])
}

/// The longest scheme name that is shown without being one of [`ACCEPTED_SCHEMES`].
const MAX_SHOWN_SCHEME_CHARS: usize = 20;

/// The `{SCHEME}` of a password value in a form that is safe to print: one of
/// [`ACCEPTED_SCHEMES`] (spelled as there), or a name that looks like a scheme (an uppercase
/// letter, then uppercase letters, digits and dashes, at most 20 characters), and only with a
/// value after the `}`. Anything else may be the password itself (`{Summer2024}!`, `{SSHA}`
/// alone) and is never shown, not even in part.
pub fn shown_scheme(value: &str) -> Option<&str> {
    let scheme = scheme_of(value)?;
    if value.len() <= scheme.len() + 2 {
        return None;
    }
    if let Some(accepted) = ACCEPTED_SCHEMES.iter().find(|a| a.eq_ignore_ascii_case(scheme)) {
        return Some(accepted);
    }
    let looks_like_a_scheme = scheme.len() <= MAX_SHOWN_SCHEME_CHARS
        && scheme.starts_with(|c: char| c.is_ascii_uppercase())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
    looks_like_a_scheme.then_some(scheme)
}

/// What a warning says of a value with no scheme worth showing.
const WITHOUT_KNOWN_SCHEME: &str = "a value without a known {SCHEME} prefix";

/// The first value mailcow would store as it is; a warning (scheme only, never the value)
/// when there is none.
pub fn read_password(values: &[Vec<u8>], attr: &str, who: &str, warnings: &mut Vec<Warning>) -> Option<Secret> {
    if values.is_empty() {
        return None;
    }
    let mut schemes = Vec::new();
    for raw in values {
        let Ok(value) = std::str::from_utf8(raw) else {
            schemes.push("binary value".to_owned());
            continue;
        };
        let accepted = scheme_of(value).is_some_and(|s| ACCEPTED_SCHEMES.iter().any(|a| a.eq_ignore_ascii_case(s)));
        match shown_scheme(value) {
            Some(_) if accepted => return Some(Secret::new(value)),
            Some(s) => schemes.push(format!("{{{s}}}")),
            None => schemes.push(WITHOUT_KNOWN_SCHEME.to_owned()),
        }
    }
    schemes.dedup();
    warnings.push(Warning::admin(format!(
        "{who}: password `{attr}` has {}, which mailcow would hash again (breaking the login); password not synced",
        schemes.join(", ")
    )));
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> UserMapping {
        UserMapping {
            mail: "mail".into(),
            firstname: Some("givenName".into()),
            lastname: Some("sn".into()),
            password: Some("userPassword".into()),
            quota: Some("MailQuota".into()),
            active: Some("mailActive".into()),
            tls_enforce_in: None,
            tls_enforce_out: None,
            name: None,
            uid: Some("entryUUID".into()),
            aliases: None,
            mail_rewrite: MailRewrite::default(),
        }
    }

    fn reading() -> Reading {
        Reading {
            mapping: mapping(),
            quota_unit: QuotaUnit::MiB,
            active_format: ActiveFormat::Auto,
            want_password: true,
            access: None,
        }
    }

    fn entry(dn: &str, attrs: &[(&str, &[u8])]) -> RawEntry {
        let mut e = RawEntry {
            dn: dn.into(),
            ..Default::default()
        };
        for (k, v) in attrs {
            e.attrs.entry(k.to_ascii_lowercase()).or_default().push(v.to_vec());
        }
        e
    }

    fn build(entries: &[RawEntry]) -> Directory {
        let mut b = DirectoryBuilder::new(reading());
        for e in entries {
            b.add(e);
        }
        b.finish()
    }

    fn person(uid: &str, mail: &str, sn: &str) -> RawEntry {
        entry(
            &format!("uid={uid},ou=p"),
            &[
                ("entryUUID", uid.as_bytes()),
                ("mail", mail.as_bytes()),
                ("sn", sn.as_bytes()),
                ("userPassword", format!("{{SSHA}}hash-{uid}").as_bytes()),
            ],
        )
    }

    /// The state rows a pass would have recorded for these entries.
    fn rows_of(entries: &[RawEntry], fingerprinter: &Fingerprinter) -> Arc<ManagedRows> {
        let rows = build(entries)
            .to_users()
            .into_iter()
            .map(|u| crate::core::model::ManagedMailbox {
                password_fp: u.password.as_ref().map(|p| fingerprinter.of(p)),
                ..crate::core::model::new_row(&u, 0)
            });
        Arc::new(ManagedRows::from_rows(rows.collect::<Vec<_>>()))
    }

    /// Three users, and the rows a pass recorded for them.
    fn three_recorded(fingerprinter: &Fingerprinter) -> ([RawEntry; 3], Arc<ManagedRows>) {
        let before = [
            person("1", "a@example.org", "A"),
            person("2", "b@example.org", "B"),
            person("3", "c@example.org", "C"),
        ];
        let state = rows_of(&before, fingerprinter);
        (before, state)
    }

    fn build_against(entries: &[RawEntry], state: Arc<ManagedRows>, fingerprinter: &Fingerprinter) -> Directory {
        let mut b = DirectoryBuilder::against(reading(), state, Some(fingerprinter.clone()));
        for e in entries {
            b.add(e);
        }
        b.finish()
    }

    #[test]
    fn users_as_their_rows_record_them_are_held_as_rows_without_their_hash() {
        let fp = Fingerprinter::new(b"key");
        let (before, state) = three_recorded(&fp);
        // user 2 renamed, user 3 with a new hash, user 4 new.
        let mut now = vec![
            before[0].clone(),
            person("2", "b@example.org", "Bee"),
            person("4", "d@example.org", "D"),
        ];
        let mut rehashed = before[2].clone();
        rehashed
            .attrs
            .insert("userpassword".into(), vec![b"{SSHA}new".to_vec()]);
        now.push(rehashed);
        let d = build_against(&now, state, &fp);
        assert_eq!(
            (d.full.len(), d.held_as_rows()),
            (3, 1),
            "only user 1 is held as its row"
        );
        let users = d.to_users();
        let plain = build(&now).to_users();
        assert_eq!(users.len(), 4);
        assert!(users[0].password_elided && users[0].password.is_none());
        assert_eq!(
            DirUser {
                password: plain[0].password.clone(),
                password_elided: false,
                ..users[0].clone()
            },
            plain[0]
        );
        assert_eq!(users[1..], plain[1..], "the others are held whole, hashes included");
        assert!(d.has_uid("1") && d.has_mail("a@example.org") && !d.has_uid("9"));
        assert_eq!(d.user_by_mail("a@example.org").unwrap().uid, "1");
    }

    #[test]
    fn duplicates_of_users_held_as_rows_are_skipped_like_any_others() {
        let fp = Fingerprinter::new(b"key");
        let (before, state) = three_recorded(&fp);
        let now = [
            before[0].clone(),
            // A second entry with uid 1, after the first was held as its row.
            person("1", "x@example.org", "X"),
            // A new entry with the address of user 2 (held as its row).
            before[1].clone(),
            person("5", "b@example.org", "Five"),
            before[2].clone(),
        ];
        let d = build_against(&now, state.clone(), &fp);
        let plain = build(&now);
        assert_eq!(d.skipped, plain.skipped);
        assert_eq!(d.skipped.len(), 4, "{:?}", d.skipped);
        let users: Vec<String> = d.to_users().into_iter().map(|u| u.uid).collect();
        assert_eq!(users, ["3"]);
        assert_eq!(d.held_as_rows(), 1);
        assert!(
            d.has_uid("1") && d.has_mail("b@example.org"),
            "skipped entries still exist"
        );
    }

    #[test]
    fn full_user_reads_cleanly() {
        let d = build(&[entry(
            "uid=a,ou=p",
            &[
                ("entryUUID", b"u-1"),
                ("mail", b"  Alice@Example.ORG "),
                ("givenName", b"Alice"),
                ("sn", b"Liddell"),
                ("userPassword", b"{SSHA}abcdefgh"),
                ("MailQuota", b"2048"),
                ("mailActive", b"TRUE"),
            ],
        )]);
        assert_eq!(d.len(), 1, "{:?}", d.skipped);
        let u = &d.to_users()[0];
        assert_eq!(u.mail, "alice@example.org");
        assert_eq!(u.name.as_deref(), Some("Alice Liddell"));
        assert_eq!(u.quota_mib, Some(2048));
        assert_eq!(u.active, Some(1));
        assert_eq!(u.password.as_ref().map(|p| p.expose()), Some("{SSHA}abcdefgh"));
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn missing_or_invalid_mail_is_skipped_naming_the_dn() {
        let d = build(&[
            entry("uid=a", &[("entryUUID", b"1")]),
            entry("uid=b", &[("entryUUID", b"2"), ("mail", b"not-an-address")]),
            entry("uid=c", &[("entryUUID", b"3"), ("mail", b"j\xf6rg@example.org")]),
            entry("uid=d", &[("entryUUID", b"4"), ("mail", "jörg@example.org".as_bytes())]),
        ]);
        assert!(d.is_empty());
        assert_eq!(d.skipped.len(), 4);
        assert_eq!(d.skipped[0].dn, "uid=a");
        assert!(d.skipped[0].reason.contains("no `mail`"));
        assert!(d.skipped[2].reason.contains("not UTF-8"));
        assert!(d.skipped[3].reason.contains("non-ASCII"));
        assert!(d.has_uid("2"), "a skipped entry still exists");
    }

    #[test]
    fn mail_rewrite_applies_to_the_mail_and_the_alias_values_before_validation_and_duplicates() {
        let mut r = reading();
        r.mapping.aliases = Some("mailAlternateAddress".into());
        r.mapping.mail_rewrite = MailRewrite(BTreeMap::from([
            ("@corp.local".to_owned(), "@example.org".to_owned()),
            ("@old.example".to_owned(), "@example.net".to_owned()),
        ]));
        let mut b = DirectoryBuilder::new(r);
        for e in [
            entry(
                "uid=a",
                &[
                    ("entryUUID", b"1"),
                    ("mail", b" Anna@Corp.LOCAL "),
                    ("mailAlternateAddress", b"a.b@corp.local"),
                    ("mailAlternateAddress", b"anna@corp.local"),
                    ("mailAlternateAddress", b"anna@sub.corp.local"),
                ],
            ),
            // Not a suffix of the domain: only the whole `@domain` matches.
            entry("uid=b", &[("entryUUID", b"2"), ("mail", b"bob@sub.corp.local")]),
            // Two entries that meet at one address once rewritten: both skipped.
            entry("uid=c", &[("entryUUID", b"3"), ("mail", b"carl@old.example")]),
            entry("uid=d", &[("entryUUID", b"4"), ("mail", b"carl@example.net")]),
        ] {
            b.add(&e);
        }
        let d = b.finish();
        let users = d.to_users();
        let mails: Vec<&str> = users.iter().map(|u| u.mail.as_str()).collect();
        assert_eq!(mails, ["anna@example.org", "bob@sub.corp.local"]);
        // The alias equal to the rewritten mail is the user's own address and left out.
        assert_eq!(users[0].aliases, ["a.b@example.org", "anna@sub.corp.local"]);
        assert_eq!(d.skipped.len(), 2, "{:?}", d.skipped);
        assert!(
            d.skipped.iter().all(|s| s.reason.contains("carl@example.net")),
            "{:?}",
            d.skipped
        );
        assert!(d.has_mail("carl@example.net") && !d.has_mail("carl@old.example"));
    }

    #[test]
    fn mail_rewrite_keeps_what_it_does_not_match() {
        let rw = MailRewrite(BTreeMap::from([("@corp.local".to_owned(), "@example.org".to_owned())]));
        assert_eq!(rw.apply("a@example.com"), "a@example.com");
        assert_eq!(rw.apply(" a@corp.local "), "a@example.org");
        assert_eq!(rw.apply("a@corp.local.evil"), "a@corp.local.evil");
        assert_eq!(rw.apply("no-at-sign"), "no-at-sign");
    }

    #[test]
    fn duplicate_mail_skips_both() {
        let d = build(&[
            entry("uid=a", &[("entryUUID", b"1"), ("mail", b"x@example.org")]),
            entry("uid=b", &[("entryUUID", b"2"), ("mail", b"X@example.org")]),
            entry("uid=c", &[("entryUUID", b"3"), ("mail", b"y@example.org")]),
        ]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.to_users()[0].mail, "y@example.org");
        assert_eq!(d.skipped.len(), 2);
        assert!(d.skipped.iter().all(|s| s.reason.contains("used by 2 entries")));
        assert!(d.has_mail("x@example.org"));
        assert!(d.user_by_mail("y@example.org").is_some() && d.user_by_mail("x@example.org").is_none());
    }

    #[test]
    fn duplicate_uid_skips_both() {
        let d = build(&[
            entry("uid=a", &[("entryUUID", b"1"), ("mail", b"a@example.org")]),
            entry("uid=b", &[("entryUUID", b"1"), ("mail", b"b@example.org")]),
        ]);
        assert!(d.is_empty());
        assert!(d.skipped.iter().all(|s| s.reason.contains("shared by 2")));
    }

    #[test]
    fn hostile_quotas_warn_and_leave_the_field_alone() {
        for (value, expect) in [
            ("abc", "not a whole number"),
            ("-5", "negative"),
            ("99999999999999999999", "not a whole number"),
            ("9999999999999", "absurdly large"),
        ] {
            let d = build(&[entry(
                "uid=a",
                &[
                    ("entryUUID", b"1"),
                    ("mail", b"a@example.org"),
                    ("MailQuota", value.as_bytes()),
                ],
            )]);
            assert_eq!(d.to_users()[0].quota_mib, None, "{value}");
            assert!(d.warnings[0].text.contains(expect), "{value}: {:?}", d.warnings);
        }
        assert_eq!(parse_quota("1", QuotaUnit::Bytes), Ok(1), "rounded up to a whole MiB");
        assert_eq!(parse_quota("2", QuotaUnit::GiB), Ok(2048));
        assert_eq!(parse_quota("0", QuotaUnit::MiB), Ok(0));
    }

    #[test]
    fn password_schemes() {
        let d = build(&[
            entry(
                "uid=a",
                &[
                    ("entryUUID", b"1"),
                    ("mail", b"a@example.org"),
                    ("userPassword", b"{PBKDF2-SHA512}10000$abc"),
                ],
            ),
            entry(
                "uid=b",
                &[
                    ("entryUUID", b"2"),
                    ("mail", b"b@example.org"),
                    ("userPassword", b"secret-cleartext"),
                ],
            ),
            entry(
                "uid=c",
                &[
                    ("entryUUID", b"3"),
                    ("mail", b"c@example.org"),
                    ("userPassword", b"{crypt}$6$salt$hash"),
                ],
            ),
        ]);
        assert_eq!(d.to_users()[0].password, None);
        assert_eq!(d.to_users()[1].password, None);
        assert!(d.to_users()[2].password.is_some(), "scheme match is case-insensitive");
        let all = d
            .warnings
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains("{PBKDF2-SHA512}"));
        assert!(!all.contains("secret-cleartext"), "a warning must never show the value");
        assert!(!all.contains("abc"));
    }

    #[test]
    fn active_formats() {
        assert_eq!(parse_active("512", "userAccountControl", ActiveFormat::Auto), Ok(1));
        assert_eq!(parse_active("514", "userAccountControl", ActiveFormat::Auto), Ok(0));
        assert_eq!(parse_active("66050", "uac", ActiveFormat::Ad), Ok(0));
        assert_eq!(parse_active("FALSE", "x", ActiveFormat::Bool), Ok(0));
        assert_eq!(parse_active("yes", "x", ActiveFormat::Auto), Ok(1));
        assert_eq!(parse_active("2", "x", ActiveFormat::Mailcow), Ok(2));
        assert!(parse_active("2", "x", ActiveFormat::Bool).is_err());
        assert!(parse_active("maybe", "x", ActiveFormat::Auto).is_err());
    }

    #[test]
    fn guid_text_is_canonical() {
        let bytes = [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
        ];
        assert_eq!(guid_text(&bytes), "00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn names_are_cleaned() {
        let d = build(&[entry(
            "uid=a",
            &[
                ("entryUUID", b"1"),
                ("mail", b"a@example.org"),
                ("givenName", b"<Bob\x07"),
                ("sn", b"Smith>"),
            ],
        )]);
        assert_eq!(d.to_users()[0].name.as_deref(), Some("Bob Smith"));
        let long = "x".repeat(400);
        let d = build(&[entry(
            "uid=a",
            &[("entryUUID", b"1"), ("mail", b"a@example.org"), ("sn", long.as_bytes())],
        )]);
        assert_eq!(d.to_users()[0].name.as_ref().unwrap().len(), 255);
    }

    #[test]
    fn alias_forms() {
        let mut w = Vec::new();
        let values: Vec<Vec<u8>> = [
            "SMTP:main@example.org",
            "smtp:Second@Example.org",
            "X500:/o=Org/cn=x",
            "SIP:a@b.org",
            "plain@example.org",
            "smtp:bad@@x",
        ]
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
        let a = read_aliases(
            &values,
            "proxyAddresses",
            "main@example.org",
            &MailRewrite::default(),
            &mut w,
        );
        assert_eq!(a, vec!["plain@example.org", "second@example.org"]);
        assert_eq!(w.len(), 1, "{w:?}");
    }

    #[test]
    fn nested_groups_resolve_with_cycles() {
        let g = |dn: &str, mail: Option<&str>, members: &[&str]| RawGroup {
            uid: dn.into(),
            dn: dn.into(),
            mail: mail.map(Into::into),
            members: members.iter().map(|m| normalize_dn(m)).collect(),
            members_incomplete: false,
        };
        let outer = g(
            "cn=outer,ou=g",
            Some("team@example.org"),
            &["uid=a,ou=p", "cn=inner, ou=g"],
        );
        let inner = g(
            "cn=inner,ou=g",
            None,
            &["uid=b,ou=p", "cn=outer,ou=g", "uid=external,ou=x"],
        );
        let all: BTreeMap<String, RawGroup> = [outer.clone(), inner]
            .into_iter()
            .map(|g| (normalize_dn(&g.dn), g))
            .collect();
        let users: BTreeMap<String, String> = [("uid=a,ou=p", "a@example.org"), ("uid=b,ou=p", "b@example.org")]
            .iter()
            .map(|(d, m)| (d.to_string(), m.to_string()))
            .collect();
        let resolved = resolve_groups(std::slice::from_ref(&outer), &all, &users, true);
        assert_eq!(resolved[0].members, vec!["a@example.org", "b@example.org"]);
        let flat = resolve_groups(&[outer], &all, &users, false);
        assert_eq!(flat[0].members, vec!["a@example.org"]);
    }

    #[test]
    fn names_settle_as_mailcow_stores_them() {
        for (given, settled) in [
            ("<<Bob>>", "Bob"),
            ("<<bob", "bob"),
            ("Dave >>", "Dave"),
            ("< <Eve> >", "Eve"),
            ("<>", ""),
        ] {
            assert_eq!(settle_name(given), settled, "{given}");
            // mailcow's own ltrim(rtrim($name, '>'), '<') changes nothing more.
            assert_eq!(
                settle_name(given).trim_end_matches('>').trim_start_matches('<'),
                settled
            );
        }
    }

    #[test]
    fn a_password_that_is_only_braces_is_never_shown() {
        let mut w = Vec::new();
        assert_eq!(
            read_password(&[b"{my secret}".to_vec()], "userPassword", "a@example.org", &mut w),
            None
        );
        assert_eq!(
            read_password(&[b"{SSHA}".to_vec()], "userPassword", "a@example.org", &mut w),
            None
        );
        assert!(!w.iter().any(|l| l.text.contains("my secret")), "{w:?}");
        assert!(
            w.iter()
                .all(|l| l.needs_admin && l.text.contains("a value without a known {SCHEME} prefix")),
            "{w:?}"
        );
    }

    #[test]
    fn a_cleartext_password_in_braces_is_never_shown_as_its_scheme() {
        for cleartext in [
            "{Summer2024}!",
            "{summer}2024",
            "{ABCDEFGHIJKLMNOPQRSTU}x",
            "{1234}5",
            "{A B}c",
            "{\u{1b}[31m}x",
        ] {
            let mut w = Vec::new();
            assert_eq!(
                read_password(
                    &[cleartext.as_bytes().to_vec()],
                    "userPassword",
                    "a@example.org",
                    &mut w
                ),
                None
            );
            assert_eq!(shown_scheme(cleartext), None, "{cleartext}");
            let inner = scheme_of(cleartext).unwrap();
            assert!(!w[0].text.contains(inner), "{cleartext}: {w:?}");
            assert!(
                w[0].text.contains("has a value without a known {SCHEME} prefix,"),
                "{w:?}"
            );
        }
        // Scheme-like names are shown; accepted ones in their canonical spelling.
        assert_eq!(shown_scheme("{PBKDF2-SHA512}10000$abc"), Some("PBKDF2-SHA512"));
        assert_eq!(shown_scheme("{ssha}abc"), Some("SSHA"));
        assert_eq!(shown_scheme("{SSHA}"), None, "nothing after the scheme");
    }

    #[test]
    fn mail_rules() {
        assert_eq!(normalize_mail("U+tag@Example.org").unwrap(), "u+tag@example.org");
        assert!(normalize_mail("a@b").is_err());
        assert!(normalize_mail("a b@example.org").is_err());
        assert!(normalize_mail("a@@example.org").is_err());
        assert!(normalize_mail("a\n@example.org").is_err());
    }
}
