//! Tests of the slapd launcher against real slapd processes.
//!
//! The integration tests of the sync trust the launcher to build a directory that behaves a
//! certain way: paging is needed, TLS verifies against the instance's own CA, the password ACL
//! holds, and mutations show up. These tests prove each of those properties. Each one checks
//! an outcome that a broken launcher would change. They talk to slapd with ldap3 and rustls
//! (ring), the same stack the product uses.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConn, LdapConnSettings, Scope, SearchEntry};
use sync_test_support::slapd::{Slapd, SlapdOptions, TestUser, generate_users, ssha};
use sync_test_support::tls::ldap_settings_with_ca;

const DOMAIN: &str = "example.org";

fn start(opts: SlapdOptions) -> Slapd {
    Slapd::start(opts).expect("slapd starts")
}

fn users(uids: &[&str]) -> Vec<TestUser> {
    uids.iter().map(|u| TestUser::new(u, DOMAIN)).collect()
}

fn connect(url: &str) -> LdapConn {
    let settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(5));
    LdapConn::with_settings(settings, url).expect("connect")
}

fn bind(conn: &mut LdapConn, dn: &str, pw: &str) {
    conn.simple_bind(dn, pw)
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("bind as {dn}: {e}"));
}

/// Every entry under `base` matching `filter`, searched with the given connection (unpaged).
fn search(conn: &mut LdapConn, base: &str, filter: &str, attrs: Vec<&str>) -> Vec<SearchEntry> {
    let (entries, _) = conn
        .search(base, Scope::Subtree, filter, attrs)
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("search {filter} under {base}: {e}"));
    entries.into_iter().map(SearchEntry::construct).collect()
}

/// The one entry with `uid=<uid>` as seen by the admin (no ACLs, no limits), with all user and
/// operational attributes.
fn admin_get(s: &Slapd, uid: &str) -> Option<SearchEntry> {
    let mut conn = connect(&s.ldap_url());
    bind(&mut conn, s.admin_dn(), s.admin_pw());
    let mut found = search(&mut conn, s.base_dn(), &format!("(uid={uid})"), vec!["*", "+"]);
    assert!(found.len() <= 1, "uid {uid} is unique");
    found.pop()
}

fn attr<'a>(e: &'a SearchEntry, name: &str) -> Vec<&'a str> {
    e.attrs
        .get(name)
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn reader_can_read_passwords_and_anonymous_cannot() {
    let s = start(SlapdOptions {
        users: users(&["alice", "bob"]),
        ..SlapdOptions::default()
    });
    let stored = TestUser::new("alice", DOMAIN).password.expect("default password");

    let mut anon = connect(&s.ldap_url());
    let seen = search(&mut anon, &s.people_dn(), "(uid=alice)", vec!["*"]);
    assert_eq!(seen.len(), 1, "anonymous sees the entry");
    assert_eq!(attr(&seen[0], "mail"), ["alice@example.org"]);
    assert!(
        !seen[0].attrs.contains_key("userPassword") && seen[0].bin_attrs.is_empty(),
        "anonymous must not see userPassword: {:?}",
        seen[0]
    );
    // Not even by asking for it, nor by filtering on it.
    let by_filter = search(&mut anon, &s.people_dn(), "(userPassword=*)", vec!["uid"]);
    assert!(by_filter.is_empty(), "anonymous filter on userPassword");

    let mut reader = connect(&s.ldap_url());
    bind(&mut reader, s.reader_dn(), s.reader_pw());
    let seen = search(&mut reader, &s.people_dn(), "(uid=alice)", vec!["userPassword"]);
    assert_eq!(attr(&seen[0], "userPassword"), [stored.as_str()]);

    // Another user may bind but sees no one else's password.
    let mut bob = connect(&s.ldap_url());
    bind(&mut bob, &s.user_dn("bob"), &TestUser::default_password("bob"));
    let seen = search(&mut bob, &s.people_dn(), "(uid=alice)", vec!["userPassword"]);
    assert!(!seen[0].attrs.contains_key("userPassword"));

    // The reader's password is checked (a wrong one is refused with invalidCredentials).
    let mut wrong = connect(&s.ldap_url());
    let res = wrong.simple_bind(s.reader_dn(), "wrong").expect("bind answered");
    assert_eq!(res.rc, 49);
}

#[test]
fn generated_ssha_passwords_bind() {
    // Proves ssha() is a real {SSHA}: slapd verifies it.
    let mut custom = TestUser::new("carol", DOMAIN);
    custom.password = Some(ssha("Correct horse", &[0, 1, 2, 255]));
    let mut all = generate_users(2, DOMAIN);
    all.push(custom);
    let s = start(SlapdOptions {
        users: all,
        ..SlapdOptions::default()
    });
    let mut conn = connect(&s.ldap_url());
    bind(&mut conn, &s.user_dn("carol"), "Correct horse");
    bind(
        &mut conn,
        &s.user_dn("user00002"),
        &TestUser::default_password("user00002"),
    );
    let res = conn
        .simple_bind(&s.user_dn("carol"), "correct horse")
        .expect("bind answered");
    assert_eq!(res.rc, 49, "a wrong password must fail");
}

#[test]
fn size_limit_forces_paging() {
    let s = start(SlapdOptions {
        users: generate_users(50, DOMAIN),
        size_limit: 20,
        ..SlapdOptions::default()
    });
    let filter = "(objectClass=inetOrgPerson)";
    let mut conn = connect(&s.ldap_url());
    bind(&mut conn, s.reader_dn(), s.reader_pw());

    let res = conn
        .search(&s.people_dn(), Scope::Subtree, filter, vec!["uid"])
        .expect("search answered");
    assert_eq!(res.1.rc, 4, "unpaged search must end in sizeLimitExceeded");
    assert_eq!(res.0.len(), 20, "and return exactly the limit");

    for page_size in [10, 500] {
        let adapters: Vec<Box<dyn Adapter<_, _>>> =
            vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(page_size))];
        let mut stream = conn
            .streaming_search_with(adapters, &s.people_dn(), Scope::Subtree, filter, vec!["uid"])
            .expect("paged search starts");
        let mut uids = Vec::new();
        while let Some(entry) = stream.next().expect("next entry") {
            uids.push(attr(&SearchEntry::construct(entry), "uid").concat());
        }
        let res = stream.result();
        assert_eq!(res.rc, 0, "paged search result (page {page_size}): {res}");
        uids.sort();
        uids.dedup();
        assert_eq!(uids.len(), 50, "paged search (page {page_size}) sees all");
    }

    // The rootdn is not limited; this is why limits are tested as the reader.
    let mut admin = connect(&s.ldap_url());
    bind(&mut admin, s.admin_dn(), s.admin_pw());
    assert_eq!(search(&mut admin, &s.people_dn(), filter, vec!["uid"]).len(), 50);
}

#[test]
fn ldaps_verifies_against_the_instance_ca() {
    let s = start(SlapdOptions {
        users: users(&["alice"]),
        ..SlapdOptions::default()
    });
    let other = start(SlapdOptions::default());
    let port = s.ldaps_url().rsplit(':').next().unwrap_or_default().to_string();

    for url in [s.ldaps_url(), format!("ldaps://localhost:{port}")] {
        let settings = ldap_settings_with_ca(s.ca_file());
        let mut conn = LdapConn::with_settings(settings, &url).expect("TLS handshake");
        bind(&mut conn, s.reader_dn(), s.reader_pw());
        let seen = search(&mut conn, &s.people_dn(), "(uid=alice)", vec!["mail"]);
        assert_eq!(attr(&seen[0], "mail"), ["alice@example.org"], "via {url}");
    }

    // Another instance's CA, and the system store, must not be trusted.
    let wrong = ldap_settings_with_ca(other.ca_file());
    let system = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(5));
    for (what, settings) in [("other CA", wrong), ("system store", system)] {
        let err = LdapConn::with_settings(settings, &s.ldaps_url())
            .err()
            .unwrap_or_else(|| panic!("{what}: handshake must fail"));
        let msg = err.to_string();
        assert!(
            msg.contains("certificate") || msg.contains("UnknownIssuer"),
            "{what}: expected a certificate error, got: {msg}"
        );
    }
}

#[test]
fn starttls_on_plain_port() {
    let s = start(SlapdOptions {
        users: users(&["alice"]),
        ..SlapdOptions::default()
    });
    let settings = ldap_settings_with_ca(s.ca_file()).set_starttls(true);
    let mut conn = LdapConn::with_settings(settings, &s.ldap_url()).expect("StartTLS");
    bind(&mut conn, s.reader_dn(), s.reader_pw());
    let seen = search(&mut conn, &s.people_dn(), "(uid=alice)", vec!["uid"]);
    assert_eq!(seen.len(), 1);
    assert!(
        conn.get_peer_certificate().expect("peer cert").is_some(),
        "the connection is TLS"
    );

    let other = start(SlapdOptions {
        tls: true,
        ..SlapdOptions::default()
    });
    let wrong = ldap_settings_with_ca(other.ca_file()).set_starttls(true);
    assert!(
        LdapConn::with_settings(wrong, &s.ldap_url()).is_err(),
        "StartTLS with a foreign CA must fail"
    );
}

#[test]
fn mutations_change_the_directory() {
    let s = start(SlapdOptions {
        users: users(&["alice", "bob", "carol"]),
        ..SlapdOptions::default()
    });

    s.modify_attr("alice", "MailQuota", &["2048"]).expect("modify");
    s.modify_attr("alice", "mailAlternateAddress", &["a1@example.org", "a2@example.org"])
        .expect("modify multi");
    let alice = admin_get(&s, "alice").expect("alice");
    assert_eq!(attr(&alice, "MailQuota"), ["2048"]);
    let mut aliases = attr(&alice, "mailAlternateAddress");
    aliases.sort();
    assert_eq!(aliases, ["a1@example.org", "a2@example.org"]);

    s.modify_attr("alice", "MailQuota", &[]).expect("remove attr");
    s.modify_attr("alice", "mailActive", &[])
        .expect("removing an absent attr is fine");
    let alice = admin_get(&s, "alice").expect("alice");
    assert!(attr(&alice, "MailQuota").is_empty(), "MailQuota removed");

    s.delete_user("bob").expect("delete");
    assert!(admin_get(&s, "bob").is_none(), "bob is gone");
    assert!(s.delete_user("bob").is_err(), "deleting a missing user is an error");

    let before = admin_get(&s, "carol").expect("carol");
    assert_eq!(before.dn, format!("uid=carol,{}", s.people_dn()));
    s.move_user("carol", "staff").expect("move to a new OU");
    let after = admin_get(&s, "carol").expect("carol after move");
    assert_eq!(after.dn, format!("uid=carol,ou=staff,{}", s.base_dn()));
    assert_eq!(s.user_dn("carol"), after.dn);
    assert_eq!(attr(&after, "entryUUID"), attr(&before, "entryUUID"));
    assert_eq!(attr(&after, "entryUUID").len(), 1, "entryUUID exists");
    assert_eq!(attr(&after, "mail"), attr(&before, "mail"));
    s.move_user("carol", "people").expect("move back to an existing OU");
    assert_eq!(s.user_dn("carol"), before.dn);

    let mut dave = TestUser::new("dave", DOMAIN);
    dave.ou = Some("contractors".into());
    s.add_users(&[dave]).expect("add into a new OU");
    assert_eq!(s.user_dn("dave"), format!("uid=dave,ou=contractors,{}", s.base_dn()));

    s.apply_ldif(&format!(
        "dn: {}\nchangetype: modify\nreplace: sn\nsn: Renamed\n-\n\n",
        s.user_dn("dave")
    ))
    .expect("apply_ldif modify");
    assert_eq!(attr(&admin_get(&s, "dave").expect("dave"), "sn"), ["Renamed"]);
    let err = s
        .add_users(&users(&["alice"]))
        .expect_err("adding an existing entry fails");
    assert!(err.to_string().contains("Already exists"), "{err}");
}

#[test]
fn hostile_values_are_storable() {
    let mut odd = TestUser::new("odd", DOMAIN);
    odd.quota_mib = Some("abc".into());
    odd.given_name = "Jürgen".into();
    odd.display_name = Some(" leading space".into());
    odd.active = Some("maybe".into());
    odd.tls_in = Some("1".into());
    odd.tls_out = Some("FALSE".into());
    let s = start(SlapdOptions {
        users: vec![odd, TestUser::new("neg", DOMAIN)],
        ..SlapdOptions::default()
    });
    s.modify_attr("neg", "MailQuota", &["-5"]).expect("store -5");

    let mut reader = connect(&s.ldap_url());
    bind(&mut reader, s.reader_dn(), s.reader_pw());
    let attrs = vec!["MailQuota", "givenName", "displayName", "mailActive"];
    let odd = &search(&mut reader, &s.people_dn(), "(uid=odd)", attrs.clone())[0];
    assert_eq!(attr(odd, "MailQuota"), ["abc"]);
    assert_eq!(attr(odd, "givenName"), ["Jürgen"]);
    assert_eq!(attr(odd, "displayName"), [" leading space"]);
    assert_eq!(attr(odd, "mailActive"), ["maybe"]);
    let neg = &search(&mut reader, &s.people_dn(), "(uid=neg)", attrs)[0];
    assert_eq!(attr(neg, "MailQuota"), ["-5"]);
}

#[test]
fn attribute_names_come_back_in_schema_spelling() {
    // A gotcha for the sync: slapd answers with the schema's spelling, not the request's.
    let s = start(SlapdOptions {
        users: users(&["alice"]),
        tls: false,
        ..SlapdOptions::default()
    });
    let mut reader = connect(&s.ldap_url());
    bind(&mut reader, s.reader_dn(), s.reader_pw());
    let e = &search(
        &mut reader,
        &s.people_dn(),
        "(uid=alice)",
        vec!["mailquota", "GIVENNAME"],
    )[0];
    let mut keys: Vec<&str> = e.attrs.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["MailQuota", "givenName"]);
}

#[test]
fn parallel_instances_get_their_own_ports() {
    let handles: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let s = start(SlapdOptions {
                    users: generate_users(i + 1, DOMAIN),
                    ..SlapdOptions::default()
                });
                // Each instance holds exactly its own users.
                let mut reader = connect(&s.ldap_url());
                bind(&mut reader, s.reader_dn(), s.reader_pw());
                let n = search(&mut reader, &s.people_dn(), "(uid=*)", vec!["uid"]).len();
                assert_eq!(n, i + 1, "instance {i}");
                s
            })
        })
        .collect();
    let instances: Vec<Slapd> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
    let mut urls: Vec<String> = instances.iter().flat_map(|s| [s.ldap_url(), s.ldaps_url()]).collect();
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), 12, "12 distinct ports");
    let dirs: Vec<_> = instances.iter().map(|s| s.dir().to_path_buf()).collect();
    drop(instances);
    for d in dirs {
        assert!(!d.exists(), "{} removed on drop", d.display());
    }
}

#[test]
fn stop_and_restart() {
    let mut s = start(SlapdOptions {
        users: users(&["alice"]),
        ..SlapdOptions::default()
    });
    s.modify_attr("alice", "MailQuota", &["77"]).expect("modify");
    let pid = s.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    s.stop();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "slapd is reaped, not a zombie"
    );
    let settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(2));
    assert!(
        LdapConn::with_settings(settings, &s.ldap_url()).is_err(),
        "server is down"
    );
    assert!(s.modify_attr("alice", "MailQuota", &["1"]).is_err());

    s.restart().expect("restart");
    assert_ne!(s.pid(), pid);
    let alice = admin_get(&s, "alice").expect("data survives a kill");
    assert_eq!(attr(&alice, "MailQuota"), ["77"]);
}

#[test]
fn restart_on_a_taken_port_fails_with_slapds_log() {
    let mut s = start(SlapdOptions {
        tls: false,
        ..SlapdOptions::default()
    });
    s.stop();
    let port: u16 = s
        .ldap_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in URL");
    let _squatter = TcpListener::bind(("127.0.0.1", port)).expect("port is free after stop");
    let err = s.restart().expect_err("port is taken");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("Address already in use"), "{err}");
}

#[test]
fn start_time_is_measured() {
    // Printed, not asserted: run with --nocapture to see it.
    let t = Instant::now();
    let first = start(SlapdOptions::default());
    let cold = t.elapsed();
    drop(first);
    let mut warm = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let s = start(SlapdOptions::default());
        warm.push(t.elapsed());
        drop(s);
    }
    let t = Instant::now();
    let plain = start(SlapdOptions {
        tls: false,
        ..SlapdOptions::default()
    });
    let no_tls = t.elapsed();
    drop(plain);
    let many = generate_users(2000, DOMAIN);
    let t = Instant::now();
    let big = start(SlapdOptions {
        users: many,
        ..SlapdOptions::default()
    });
    let with_2000 = t.elapsed();
    drop(big);
    println!(
        "slapd start: first {cold:?}; then with TLS {warm:?}; without TLS {no_tls:?}; \
         TLS + 2000 users {with_2000:?}"
    );
}

/// A refreshOnly sync search (RFC 4533) as the reader, with the Sync Request control marked
/// critical: the result code, the number of entries and whether a Sync Done control came.
fn sync_search(s: &Slapd, cookie: Option<Vec<u8>>) -> (u32, usize, Option<Vec<u8>>) {
    use ldap3::controls::{MakeCritical, RawControl, RefreshMode, SyncRequest};
    let mut conn = connect(&s.ldap_url());
    bind(&mut conn, s.reader_dn(), s.reader_pw());
    let control: RawControl = SyncRequest {
        mode: RefreshMode::RefreshOnly,
        cookie,
        reload_hint: false,
    }
    .critical()
    .into();
    let mut stream = conn
        .with_controls(control)
        .streaming_search(s.base_dn(), Scope::Subtree, "(uid=*)", vec!["1.1"])
        .expect("search starts");
    let mut entries = 0;
    while let Some(entry) = stream.next().expect("next") {
        if !entry.is_intermediate() {
            entries += 1;
        }
    }
    let result = stream.result();
    let done = result
        .ctrls
        .iter()
        .find(|c| c.1.ctype == "1.3.6.1.4.1.4203.1.9.1.3")
        .map(|c| c.1.val.clone().unwrap_or_default());
    (result.rc, entries, done)
}

#[test]
fn syncprov_option_serves_content_synchronization() {
    let plain = start(SlapdOptions {
        users: users(&["alice"]),
        ..SlapdOptions::default()
    });
    let conf = std::fs::read_to_string(plain.dir().join("slapd.conf")).unwrap();
    assert!(!conf.contains("syncprov"), "off by default");
    assert_eq!(
        sync_search(&plain, None).0,
        12,
        "unavailableCriticalExtension without syncprov"
    );

    let s = start(SlapdOptions {
        users: users(&["alice", "bob"]),
        syncprov: true,
        sessionlog: Some(50),
        ..SlapdOptions::default()
    });
    let conf = std::fs::read_to_string(s.dir().join("slapd.conf")).unwrap();
    for line in [
        "moduleload syncprov",
        "overlay syncprov",
        "syncprov-sessionlog 50",
        "index entryCSN eq",
    ] {
        assert!(conf.contains(line), "{line} missing from\n{conf}");
    }
    let (rc, entries, done) = sync_search(&s, None);
    assert_eq!((rc, entries), (0, 2));
    let done = done.expect("a Sync Done control");
    assert!(
        String::from_utf8_lossy(&done).contains("rid=000,csn="),
        "the Sync Done control carries a cookie: {done:?}"
    );
}
