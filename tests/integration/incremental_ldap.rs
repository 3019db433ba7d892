//! The LDAP edge of incremental passes (`edge::ldap_sync`) against a real slapd with the
//! syncprov overlay: what a refreshOnly sync search from a cookie reports after adds,
//! modifies, moves, deletes and an entry leaving the filter, with and without a session log,
//! and what slapd does with cookies it cannot use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use mailcow_ldap_sync::config::{EnvSecrets, LdapConfig};
use mailcow_ldap_sync::edge::ldap::LdapConnection;
use mailcow_ldap_sync::edge::ldap_sync::{CookieCheck, SyncEnd, SyncItem, SyncUuid};
use sync_test_support::slapd::{Slapd, SlapdOptions, TestUser};

const FILTER: &str = "(&(objectClass=inetOrgPerson)(mail=*))";

fn ldap_config(uri: &str, bind_dn: &str, bind_pw: &str, base: &str) -> LdapConfig {
    let text = serde_json::json!({
        "ldap": {
            "uri": uri, "bind_dn": bind_dn, "bind_pw": bind_pw,
            "user_search_base": base, "user_search_filter": FILTER, "page_size": 0,
            "user_mapping": { "mail": "mail" },
        },
        "mailcow_host": "https://127.0.0.1:1",
        "mailcow_api_key": "unused",
    })
    .to_string();
    mailcow_ldap_sync::config::parse(Path::new("/nonexistent/config.json"), &text, &EnvSecrets::default())
        .expect("a valid config")
        .ldap
}

fn start(sessionlog: Option<usize>, size_limit: usize) -> Slapd {
    let users = ["alice", "bob", "carol", "dave", "erin"]
        .iter()
        .map(|u| TestUser::new(u, "example.org"))
        .collect();
    Slapd::start(SlapdOptions {
        users,
        size_limit,
        tls: false,
        syncprov: true,
        sessionlog,
    })
    .expect("slapd with syncprov starts")
}

fn reader(s: &Slapd) -> LdapConnection {
    LdapConnection::connect(&ldap_config(&s.ldap_url(), s.reader_dn(), s.reader_pw(), s.base_dn())).expect("bind")
}

/// One refresh, collected (fine in a test of five entries; the edge itself streams).
struct Refresh {
    changed: BTreeMap<SyncUuid, String>,
    deleted: BTreeSet<SyncUuid>,
    present: BTreeSet<SyncUuid>,
    end: SyncEnd,
}

fn collect(conn: &mut LdapConnection, base: &str, cookie: Option<&[u8]>) -> Refresh {
    let mut r = Refresh {
        changed: BTreeMap::new(),
        deleted: BTreeSet::new(),
        present: BTreeSet::new(),
        end: SyncEnd::RefreshRequired {
            cookie: None,
            reason: String::new(),
        },
    };
    let (changed, deleted, present) = (&mut r.changed, &mut r.deleted, &mut r.present);
    r.end = conn
        .sync_refresh(base, FILTER, &["uid", "mail", "entryUUID"], cookie, |item| match item {
            SyncItem::Changed { uuid, entry, .. } => {
                // the uuid of the control is the entry's entryUUID attribute
                assert_eq!(entry.attrs["entryuuid"], [uuid.to_string().into_bytes()]);
                assert!(changed.insert(uuid, entry.dn).is_none(), "sent once");
            }
            SyncItem::Deleted(uuid) => assert!(deleted.insert(uuid)),
            SyncItem::Present(uuid) => assert!(present.insert(uuid)),
            SyncItem::NewCookie(_) => {}
        })
        .expect("refresh");
    r
}

impl Refresh {
    /// The previous copy after this refresh, by the rules of `SyncEnd`.
    fn apply(&self, previous: &BTreeSet<SyncUuid>) -> BTreeSet<SyncUuid> {
        let SyncEnd::Done { present_phase, .. } = self.end else {
            panic!("not done: {:?}", self.end);
        };
        let mut copy: BTreeSet<SyncUuid> = previous
            .iter()
            .filter(|u| !present_phase || self.present.contains(u) || self.changed.contains_key(u))
            .copied()
            .collect();
        copy.extend(self.changed.keys());
        copy.retain(|u| !self.deleted.contains(u));
        copy
    }

    fn cookie(&self) -> Option<Vec<u8>> {
        match &self.end {
            SyncEnd::Done { cookie, .. } => cookie.clone(),
            other => panic!("not done: {other:?}"),
        }
    }

    fn flags(&self) -> (bool, bool) {
        match self.end {
            SyncEnd::Done {
                refresh_deletes,
                present_phase,
                ..
            } => (refresh_deletes, present_phase),
            ref other => panic!("not done: {other:?}"),
        }
    }

    fn uuid_of(&self, uid: &str) -> SyncUuid {
        let prefix = format!("uid={uid},");
        *self
            .changed
            .iter()
            .find(|(_, dn)| dn.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{uid} not among {:?}", self.changed))
            .0
    }
}

/// Adds frank, modifies alice, moves bob (modrdn with a new superior), deletes carol and
/// takes dave's mail away (he leaves the filter); erin stays as she is.
fn change_everything(s: &Slapd) {
    s.add_users(&[TestUser::new("frank", "example.org")]).unwrap();
    s.modify_attr("alice", "mail", &["alice2@example.org"]).unwrap();
    s.move_user("bob", "other").unwrap();
    s.delete_user("carol").unwrap();
    s.modify_attr("dave", "mail", &[]).unwrap();
}

/// Everything one kind of slapd (with or without a session log) must get right; returns
/// the refresh after the changes for the caller's own checks.
fn initial_unchanged_and_changed(sessionlog: Option<usize>) -> (Refresh, BTreeMap<&'static str, SyncUuid>) {
    let s = start(sessionlog, 20);
    let mut conn = reader(&s);
    let base = s.base_dn().to_owned();

    // without a cookie: the whole content as adds, and a cookie
    let initial = collect(&mut conn, &base, None);
    assert_eq!(initial.changed.len(), 5);
    assert!(initial.deleted.is_empty() && initial.present.is_empty());
    assert_eq!(
        initial.flags(),
        (true, false),
        "slapd ends an initial refresh with refreshDeletes TRUE"
    );
    let uuids: BTreeMap<&str, SyncUuid> = ["alice", "bob", "carol", "dave", "erin"]
        .into_iter()
        .map(|u| (u, initial.uuid_of(u)))
        .collect();
    let copy: BTreeSet<SyncUuid> = uuids.values().copied().collect();

    // the cheap cookie is the same as the one of the full refresh
    let cookie = conn.current_cookie(&base).expect("current cookie");
    assert_eq!(Some(cookie.clone()), initial.cookie());
    assert_eq!(
        conn.directory_mark(&base).unwrap().check_cookie(&cookie),
        CookieCheck::Behind
    );

    // nothing changed: nothing sent, no new cookie, refreshDeletes TRUE
    let unchanged = collect(&mut conn, &base, Some(&cookie));
    assert!(unchanged.changed.is_empty() && unchanged.deleted.is_empty() && unchanged.present.is_empty());
    assert_eq!(unchanged.flags(), (true, false));
    assert_eq!(unchanged.cookie(), None, "the old cookie stays valid");
    assert_eq!(unchanged.apply(&copy), copy);

    change_everything(&s);
    let after = collect(&mut conn, &base, Some(&cookie));
    let frank = after.uuid_of("frank");
    assert_eq!(
        after.changed.values().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "uid=alice,ou=people,dc=example,dc=org",
            "uid=bob,ou=other,dc=example,dc=org",
            "uid=frank,ou=people,dc=example,dc=org",
        ])
    );
    assert_eq!(
        after.changed.get(&uuids["bob"]).map(String::as_str),
        Some("uid=bob,ou=other,dc=example,dc=org")
    );
    assert_eq!(
        after.apply(&copy),
        BTreeSet::from([uuids["alice"], uuids["bob"], uuids["erin"], frank]),
        "carol (deleted) and dave (left the filter) are gone, the rest is there"
    );
    let next = after.cookie().expect("a new cookie after changes");
    assert_ne!(next, cookie);
    let again = collect(&mut conn, &base, Some(&next));
    assert!(again.changed.is_empty() && again.deleted.is_empty() && again.present.is_empty());
    (after, uuids)
}

#[test]
fn without_a_session_log_deletions_show_as_absence_in_a_present_phase() {
    let (after, uuids) = initial_unchanged_and_changed(None);
    assert_eq!(after.flags(), (false, true), "refreshDeletes FALSE: a present phase");
    assert!(after.deleted.is_empty());
    // every entry still in the content is listed present, the changed ones too
    assert_eq!(after.present.len(), 4);
    assert!(!after.present.contains(&uuids["carol"]) && !after.present.contains(&uuids["dave"]));
}

#[test]
fn with_a_session_log_deletions_and_leaving_the_filter_are_listed() {
    let (after, uuids) = initial_unchanged_and_changed(Some(100));
    assert_eq!(after.flags(), (true, false), "refreshDeletes TRUE: a delete phase");
    assert!(after.present.is_empty());
    assert_eq!(after.deleted, BTreeSet::from([uuids["carol"], uuids["dave"]]));
}

/// Why README.md recommends `syncprov-sessionlog`: without one, a refresh after a mere
/// modification lists every entry as present (what a pass must then hold against its rows);
/// with one, the modified entry comes alone.
#[test]
fn a_session_log_spares_a_modification_the_present_phase() {
    for sessionlog in [None, Some(100)] {
        let s = start(sessionlog, 20);
        let mut conn = reader(&s);
        let base = s.base_dn().to_owned();
        let initial = collect(&mut conn, &base, None);
        let cookie = initial.cookie().expect("a cookie");
        s.modify_attr("alice", "sn", &["Changed"]).unwrap();
        let after = collect(&mut conn, &base, Some(&cookie));
        assert_eq!(after.changed.keys().collect::<Vec<_>>(), [&initial.uuid_of("alice")]);
        assert!(after.deleted.is_empty());
        match sessionlog {
            None => {
                assert!(after.flags().1, "a present phase");
                // slapd 2.5.13 lists the modified one too
                for other in ["bob", "carol", "dave", "erin"] {
                    assert!(after.present.contains(&initial.uuid_of(other)), "{other} listed");
                }
            }
            Some(_) => {
                assert_eq!(after.flags(), (true, false), "no present phase");
                assert!(after.present.is_empty());
            }
        }
    }
}

#[test]
fn cookies_slapd_cannot_use_are_detectable() {
    let s = start(Some(100), 20);
    let mut conn = reader(&s);
    let base = s.base_dn().to_owned();
    let initial = collect(&mut conn, &base, None);
    let copy: BTreeSet<SyncUuid> = initial.changed.keys().copied().collect();
    let cookie = String::from_utf8(conn.current_cookie(&base).unwrap()).unwrap();
    assert!(cookie.starts_with("rid=000,csn="), "{cookie}");
    change_everything(&s);
    let mark = conn.directory_mark(&base).unwrap();
    assert_eq!(mark.check_cookie(cookie.as_bytes()), CookieCheck::Behind);

    // a cookie newer than the server (a restored backup): refused with rc=53
    let future = "rid=000,csn=20991231000000.000000Z#000000#000#000000";
    assert_eq!(mark.check_cookie(future.as_bytes()), CookieCheck::Ahead);
    match conn.sync_refresh(&base, FILTER, &["1.1"], Some(future.as_bytes()), |_| {}) {
        Ok(SyncEnd::RefreshRequired { reason, .. }) => {
            assert!(
                reason.contains("rc=53") && reason.contains("newer than provider"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }

    // a cookie of another server id: slapd answers with a full present phase, so the
    // rules still give the right content; check_cookie tells it apart beforehand
    let foreign = cookie.replace("#000#", "#001#");
    assert_eq!(mark.check_cookie(foreign.as_bytes()), CookieCheck::ForeignServer);
    let from_foreign = collect(&mut conn, &base, Some(foreign.as_bytes()));
    assert_eq!(from_foreign.flags(), (false, true));
    assert_eq!(from_foreign.changed.len(), 4, "the whole content comes again");

    // a CSN slapd cannot parse counts as no cookie: everything as adds with refreshDeletes
    // TRUE, which would hide carol's and dave's removal; check_cookie says Malformed
    let garbage = "rid=000,csn=garbage";
    assert_eq!(mark.check_cookie(garbage.as_bytes()), CookieCheck::Malformed);
    let from_garbage = collect(&mut conn, &base, Some(garbage.as_bytes()));
    assert_eq!(from_garbage.flags(), (true, false));
    assert_eq!(
        from_garbage.apply(&copy).len(),
        6,
        "the deletions are lost: why Malformed matters"
    );

    // the rid is only echoed back
    let other_rid = cookie.replace("rid=000", "rid=123");
    let echoed = collect(&mut conn, &base, Some(other_rid.as_bytes()));
    assert!(
        String::from_utf8(echoed.cookie().unwrap())
            .unwrap()
            .starts_with("rid=123,")
    );
    assert_eq!(echoed.deleted.len(), 2);
}

#[test]
fn the_size_limit_stops_a_full_refresh_with_a_clear_error_but_not_presence() {
    let users: Vec<TestUser> = (0..30)
        .map(|i| TestUser::new(&format!("u{i:02}"), "example.org"))
        .collect();
    let s = Slapd::start(SlapdOptions {
        users,
        size_limit: 20,
        tls: false,
        syncprov: true,
        sessionlog: None,
    })
    .unwrap();
    let mut conn = reader(&s);
    let base = s.base_dn().to_owned();
    let cookie = conn.current_cookie(&base).unwrap();
    let mut seen = 0;
    let err = conn
        .sync_refresh(&base, FILTER, &["uid"], None, |_| seen += 1)
        .expect_err("30 entries over a limit of 20");
    let text = err.to_string();
    assert!(text.contains("size limit after 20 entries (rc=4)"), "{text}");
    assert!(text.contains("not paged") && text.contains("bind account"), "{text}");
    assert_eq!(seen, 20, "the entries before the limit still streamed");

    // presence messages (syncIdSet batches) do not count against the limit
    s.modify_attr("u01", "mail", &["changed@example.org"]).unwrap();
    let after = collect(&mut conn, &base, Some(&cookie));
    assert_eq!((after.changed.len(), after.present.len()), (1, 30));
}

#[test]
fn directory_mark_reads_the_base_uuid_and_a_moving_context_csn() {
    let s = start(None, 20);
    let mut conn = reader(&s);
    let base = s.base_dn().to_owned();
    let before = conn.directory_mark(&base).unwrap();
    let entry = conn
        .read_entry(&base, &["entryUUID"])
        .unwrap()
        .expect("the base exists");
    assert_eq!(entry.attrs["entryuuid"], [before.base_uuid.clone().into_bytes()]);
    assert_eq!(before.context_csns.len(), 1, "{before:?}");
    s.modify_attr("alice", "mail", &["a2@example.org"]).unwrap();
    let after = conn.directory_mark(&base).unwrap();
    assert_eq!(after.base_uuid, before.base_uuid);
    assert!(after.context_csns[0] > before.context_csns[0], "{before:?} {after:?}");
    assert!(
        conn.read_entry("ou=nowhere,dc=example,dc=org", &["1.1"])
            .unwrap()
            .is_none()
    );
    assert!(conn.directory_mark("ou=nowhere,dc=example,dc=org").is_err());
}

#[test]
fn a_server_without_syncprov_is_a_clear_error() {
    let s = Slapd::start(SlapdOptions {
        tls: false,
        ..SlapdOptions::default()
    })
    .unwrap();
    let mut conn = reader(&s);
    let err = conn
        .sync_refresh(s.base_dn(), FILTER, &["uid"], None, |_| {})
        .expect_err("no syncprov");
    assert!(
        err.to_string().contains("does not offer content synchronization"),
        "{err}"
    );
    let mark = conn.directory_mark(s.base_dn()).unwrap();
    assert!(mark.context_csns.is_empty(), "{mark:?}");
    assert_eq!(mark.check_cookie(b"rid=000,csn=x"), CookieCheck::Unknown);
}

/// `uSNChanged` of the user with this `sAMAccountName`, read as the admin.
fn usn_changed(conn: &mut LdapConnection, base: &str, sam: &str) -> u64 {
    let mut usn = None;
    conn.search(base, &format!("(sAMAccountName={sam})"), &["uSNChanged"], |e| {
        usn = e
            .attrs
            .get("usnchanged")
            .and_then(|v| std::str::from_utf8(&v[0]).ok()?.parse().ok());
    })
    .unwrap();
    usn.unwrap_or_else(|| panic!("{sam} has a uSNChanged"))
}

/// The `sAMAccountName`s of users changed at or after `usn` (today's paged search).
fn changed_since(conn: &mut LdapConnection, base: &str, usn: u64) -> BTreeSet<String> {
    let mut sams = BTreeSet::new();
    let filter = format!("(&(objectCategory=person)(objectClass=user)(mail=*)(uSNChanged>={usn}))");
    conn.search(base, &filter, &["sAMAccountName"], |e| {
        sams.insert(String::from_utf8(e.attrs["samaccountname"][0].clone()).unwrap());
    })
    .unwrap();
    sams
}

#[test]
fn samba_usn_changed_rises_on_modify_move_and_disable() {
    use sync_test_support::samba::{AdUser, SambaDc, SambaOptions, samba_tests_enabled};
    if !samba_tests_enabled() {
        return;
    }
    let users = ["alice", "bob", "carol", "dave"]
        .iter()
        .map(|u| AdUser::new(u, "example.test"))
        .collect();
    let dc = SambaDc::start(SambaOptions {
        users,
        ..SambaOptions::default()
    })
    .expect("Samba DC");
    let base = dc.base_dn().to_owned();
    let mut config = ldap_config(&dc.ldap_url(), dc.admin_bind(), dc.admin_pw(), &base);
    config.page_size = 100;
    let mut conn = LdapConnection::connect(&config).expect("bind to Samba");

    let mark = conn.usn_mark().expect("usn mark");
    eprintln!("Samba usn mark: {mark:?}");
    assert!(mark.ds_service_name.starts_with("CN=NTDS Settings,"), "{mark:?}");
    assert!(
        mark.invocation_id.is_some(),
        "the admin can read invocationId: {mark:?}"
    );
    for sam in ["alice", "bob", "carol", "dave"] {
        assert!(usn_changed(&mut conn, &base, sam) <= mark.highest_committed_usn);
    }
    let next = mark.highest_committed_usn + 1;
    assert!(changed_since(&mut conn, &base, next).is_empty());

    dc.modify_attr("alice", "givenName", &["Alicia"]).unwrap();
    dc.apply_ldif("dn: OU=Moved,DC=example,DC=test\nchangetype: add\nobjectClass: organizationalUnit\n\n")
        .unwrap();
    let bob = dc.user_dn("bob");
    dc.apply_ldif(&format!(
        "dn: {bob}\nchangetype: modrdn\nnewrdn: CN=bob\ndeleteoldrdn: 1\nnewsuperior: OU=Moved,DC=example,DC=test\n\n"
    ))
    .unwrap();
    assert_eq!(dc.user_dn("bob"), "CN=bob,OU=Moved,DC=example,DC=test");
    dc.set_disabled("carol", true).unwrap();
    assert_eq!(
        changed_since(&mut conn, &base, next),
        BTreeSet::from(["alice".to_owned(), "bob".to_owned(), "carol".to_owned()]),
        "modify, move and disable each raise uSNChanged; dave is untouched"
    );
    let after = conn.usn_mark().unwrap();
    eprintln!("Samba usn mark after: {after:?}");
    assert!(after.highest_committed_usn > mark.highest_committed_usn);
    assert!(usn_changed(&mut conn, &base, "carol") <= after.highest_committed_usn);
    assert_eq!(
        (after.ds_service_name.as_str(), after.invocation_id),
        (mark.ds_service_name.as_str(), mark.invocation_id)
    );

    // DirSync (1.2.840.113556.1.4.841), the other way to ask AD for changes: Samba grants it
    // to the test's Administrator (a real AD needs "Replicating Directory Changes")
    let mut raw = ldap3::LdapConn::new(&dc.ldap_url()).unwrap();
    raw.simple_bind(dc.admin_bind(), dc.admin_pw())
        .unwrap()
        .success()
        .unwrap();
    // SEQUENCE { flags 0, maxBytes 1 MiB, cookie "" }
    let value = vec![0x30, 0x0a, 0x02, 0x01, 0x00, 0x02, 0x03, 0x10, 0x00, 0x00, 0x04, 0x00];
    let control = ldap3::controls::RawControl {
        ctype: "1.2.840.113556.1.4.841".into(),
        crit: true,
        val: Some(value),
    };
    let result = raw
        .with_controls(control)
        .search(
            &base,
            ldap3::Scope::Subtree,
            "(objectClass=user)",
            vec!["sAMAccountName"],
        )
        .unwrap();
    let dirsync_back = result.1.ctrls.iter().any(|c| c.1.ctype == "1.2.840.113556.1.4.841");
    eprintln!(
        "DirSync as Administrator: rc={} text={:?} entries={} dirsync control back={dirsync_back}",
        result.1.rc,
        result.1.text,
        result.0.len()
    );
    assert_eq!(result.1.rc, 0, "{}", result.1.text);
    assert!(dirsync_back, "a DirSync response control with the next cookie");
}
