//! Tests of the Samba AD launcher against real Samba domain controllers.
//!
//! The sync's Active Directory tests trust the launcher to build a domain that behaves like AD:
//! LDAPS and StartTLS verify against the DC's own CA, more than 1000 users come back through
//! paging, `objectGUID` is binary, disabled accounts carry `ACCOUNTDISABLE`, `proxyAddresses`
//! keep their prefixes, nested groups resolve with the in-chain rule, and subtree searches from
//! the domain root return referrals. Each test checks one of those outcomes with ldap3 and
//! rustls (ring), the stack the product uses, so a broken launcher or a changed Samba fails
//! here first. The facts these tests pin are the gotchas the sync code must handle.
//!
//! Without Samba installed every test fails with a hint, unless `SKIP_SAMBA_TESTS=1` is set.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConn, LdapConnSettings, Scope, SearchEntry};
use sync_test_support::samba::{
    AdGroup, AdUser, SambaDc, SambaOptions, UAC_DISABLED, generate_ad_users, guid_to_string, samba_tests_enabled,
};
use sync_test_support::tls::ldap_settings_with_ca;

const DOMAIN: &str = "example.org";
/// A password that meets AD's default complexity rules and contains no test user's name.
const USER_PW: &str = "Zz9-correct-horse";

fn start(opts: SambaOptions) -> SambaDc {
    SambaDc::start(opts).unwrap_or_else(|e| panic!("Samba DC starts: {e}"))
}

fn users(sams: &[&str]) -> Vec<AdUser> {
    sams.iter().map(|s| AdUser::new(s, DOMAIN)).collect()
}

fn connect(url: &str) -> LdapConn {
    let settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(5));
    LdapConn::with_settings(settings, url).unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

fn bind(conn: &mut LdapConn, dn: &str, pw: &str) {
    conn.simple_bind(dn, pw)
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("bind as {dn}: {e}"));
}

fn admin(dc: &SambaDc) -> LdapConn {
    let mut conn = connect(&dc.ldap_url());
    bind(&mut conn, dc.admin_bind(), dc.admin_pw());
    conn
}

/// Entries under `base` matching `filter`, unpaged (ldap3's search() moves referrals to the
/// result; the filter is a second guard, since SearchEntry::construct panics on one).
fn search(conn: &mut LdapConn, base: &str, filter: &str, attrs: Vec<&str>) -> Vec<SearchEntry> {
    let (entries, _) = conn
        .search(base, Scope::Subtree, filter, attrs)
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("search {filter} under {base}: {e}"));
    entries
        .into_iter()
        .filter(|e| !e.is_ref())
        .map(SearchEntry::construct)
        .collect()
}

/// Every entry of a paged search (EntriesOnly + PagedResults), and the final result code.
fn paged(conn: &mut LdapConn, base: &str, filter: &str, attrs: Vec<&str>, page: i32) -> (Vec<SearchEntry>, u32) {
    let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(page))];
    let mut stream = conn
        .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs)
        .expect("paged search starts");
    let mut out = Vec::new();
    while let Some(entry) = stream.next().expect("next entry") {
        assert!(!entry.is_ref(), "EntriesOnly passes no referral");
        out.push(SearchEntry::construct(entry));
    }
    (out, stream.result().rc)
}

fn attr<'a>(e: &'a SearchEntry, name: &str) -> Vec<&'a str> {
    e.attrs
        .get(name)
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

/// The sAMAccountNames of `entries`, sorted.
fn sams(entries: &[SearchEntry]) -> Vec<String> {
    let mut v: Vec<String> = entries.iter().map(|e| attr(e, "sAMAccountName").concat()).collect();
    v.sort();
    v
}

fn uac(conn: &mut LdapConn, dc: &SambaDc, sam: &str) -> u32 {
    let e = &search(
        conn,
        dc.base_dn(),
        &format!("(sAMAccountName={sam})"),
        vec!["userAccountControl"],
    )[0];
    attr(e, "userAccountControl").concat().parse().expect("numeric UAC")
}

#[test]
fn starts_and_admin_binds_over_plain_ldap() {
    if !samba_tests_enabled() {
        return;
    }
    let dc = start(SambaOptions {
        users: users(&["alice", "bob"]),
        tls: false,
        ..SambaOptions::default()
    });
    let ip = dc.ip();
    assert!(ip.is_loopback() && ip.octets()[3] >= 2, "own loopback address: {ip}");
    assert!(Path::new(&format!("/proc/{}", dc.pid())).exists(), "samba runs");

    // Both bind names of the administrator work on plain ldap://.
    for name in [dc.admin_bind(), dc.admin_dn()] {
        let mut conn = connect(&dc.ldap_url());
        bind(&mut conn, name, dc.admin_pw());
        let found = search(&mut conn, dc.users_dn(), "(sAMAccountName=alice)", vec!["mail"]);
        assert_eq!(attr(&found[0], "mail"), ["alice@example.org"], "as {name}");
        assert_eq!(found[0].dn, dc.user_dn("alice"));
    }
    let mut wrong = connect(&dc.ldap_url());
    let res = wrong.simple_bind(dc.admin_bind(), "wrong").expect("bind answered");
    assert_eq!(res.rc, 49, "a wrong password is invalidCredentials");
    assert_eq!(dc.admin_dn(), "CN=Administrator,CN=Users,DC=example,DC=test");
    assert_eq!(dc.base_dn(), "DC=example,DC=test");
    assert_eq!(dc.users_dn(), "CN=Users,DC=example,DC=test");
    println!("started {dc:?}: {:?}", dc.timings());
}

#[test]
fn ldaps_and_starttls_verify_against_the_instance_ca() {
    if !samba_tests_enabled() {
        return;
    }
    let dc = start(SambaOptions {
        users: users(&["alice"]),
        ..SambaOptions::default()
    });
    // A second DC at the same time: its own address, its own CA (the "wrong CA" below).
    let other = start(SambaOptions::default());
    assert_ne!(dc.ip(), other.ip(), "parallel DCs get different addresses");

    let ldaps = ldap_settings_with_ca(dc.ca_file());
    let starttls = ldap_settings_with_ca(dc.ca_file()).set_starttls(true);
    for (what, settings, url) in [("ldaps", ldaps, dc.ldaps_url()), ("StartTLS", starttls, dc.ldap_url())] {
        let mut conn = LdapConn::with_settings(settings, &url).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            conn.get_peer_certificate().expect("peer cert").is_some(),
            "{what}: the connection is TLS"
        );
        bind(&mut conn, dc.admin_bind(), dc.admin_pw());
        let seen = search(&mut conn, dc.users_dn(), "(sAMAccountName=alice)", vec!["mail"]);
        assert_eq!(attr(&seen[0], "mail"), ["alice@example.org"], "via {what}");
    }

    // Another DC's CA, and the system store, must not be trusted, on either path.
    for starttls in [false, true] {
        let url = if starttls { dc.ldap_url() } else { dc.ldaps_url() };
        let wrong = ldap_settings_with_ca(other.ca_file()).set_starttls(starttls);
        let system = LdapConnSettings::new()
            .set_conn_timeout(Duration::from_secs(5))
            .set_starttls(starttls);
        for (what, settings) in [("other CA", wrong), ("system store", system)] {
            let err = LdapConn::with_settings(settings, &url)
                .err()
                .unwrap_or_else(|| panic!("{what} ({url}): handshake must fail"));
            let msg = err.to_string();
            assert!(
                msg.contains("certificate") || msg.contains("UnknownIssuer"),
                "{what} ({url}): expected a certificate error, got: {msg}"
            );
        }
    }
}

#[test]
fn paged_search_returns_all_of_1200_users_and_a_big_nested_group() {
    if !samba_tests_enabled() {
        return;
    }
    let all = generate_ad_users(1200, DOMAIN);
    // A big distribution group: every user, plus a nested group that holds a built-in account
    // (looked up in the database, since it is not one of the options' users).
    let everyone = AdGroup {
        name: "everyone".into(),
        mail: Some("everyone@example.org".into()),
        members: all
            .iter()
            .map(|u| u.sam.clone())
            .chain(["admins".to_string()])
            .collect(),
    };
    let admins = AdGroup {
        name: "admins".into(),
        mail: None,
        members: vec!["Administrator".into()],
    };
    let t = Instant::now();
    let dc = start(SambaOptions {
        users: all,
        groups: vec![everyone, admins],
        tls: false,
    });
    println!(
        "start with 1200 users: {:?} (load {:?}, ready {:?})",
        t.elapsed(),
        dc.timings().load,
        dc.timings().ready
    );
    let filter = "(&(objectCategory=person)(objectClass=user)(mail=*))";
    let mut conn = admin(&dc);
    for page in [1000, 300] {
        let t = Instant::now();
        let (entries, rc) = paged(&mut conn, dc.users_dn(), filter, vec!["sAMAccountName", "mail"], page);
        assert_eq!(rc, 0, "paged search result (page {page})");
        let mut names = sams(&entries);
        names.dedup();
        assert_eq!(names.len(), 1200, "page size {page}: every user once");
        assert_eq!(names[0], "user00001");
        assert_eq!(names[1199], "user01200");
        println!("paged search, page {page}: 1200 entries in {:?}", t.elapsed());
    }
    // The in-chain rule over the big group, paged: all 1200 plus the nested Administrator.
    let chain = format!(
        "(&(objectClass=user)(memberOf:1.2.840.113556.1.4.1941:={}))",
        dc.user_dn("everyone")
    );
    let (entries, rc) = paged(&mut conn, dc.base_dn(), &chain, vec!["sAMAccountName"], 500);
    assert_eq!(rc, 0);
    let names = sams(&entries);
    assert_eq!(names.len(), 1201, "in-chain members of the big group");
    assert!(names.contains(&"Administrator".to_string()), "nested member found");

    // Not asserted: Samba ignores AD's MaxPageSize (1000) and returns everything unpaged, so a
    // test of "paging is required" needs slapd's size limit instead.
    let res = conn
        .search(dc.users_dn(), Scope::Subtree, filter, vec!["1.1"])
        .expect("unpaged");
    println!(
        "unpaged search: rc {} with {} entries (AD would stop at 1000)",
        res.1.rc,
        res.0.len()
    );
}

#[test]
fn object_guid_is_binary_and_object_guid_agrees() {
    if !samba_tests_enabled() {
        return;
    }
    let dc = start(SambaOptions {
        users: users(&["alice", "bob"]),
        tls: false,
        ..SambaOptions::default()
    });
    let mut conn = admin(&dc);
    let alice = &search(&mut conn, dc.users_dn(), "(sAMAccountName=alice)", vec!["objectGUID"])[0];
    // ldap3 files a value under bin_attrs unless it happens to be valid UTF-8 (rare, possible).
    let raw: Vec<u8> = alice
        .bin_attrs
        .get("objectGUID")
        .map(|v| v[0].clone())
        .or_else(|| alice.attrs.get("objectGUID").map(|v| v[0].clone().into_bytes()))
        .expect("objectGUID returned");
    assert_eq!(raw.len(), 16, "objectGUID is 16 raw bytes");

    let text = dc.object_guid("alice").expect("object_guid");
    assert_eq!(Some(text.clone()), guid_to_string(&raw));
    assert_eq!(text.len(), 36);
    assert_ne!(text, dc.object_guid("bob").expect("bob's guid"), "GUIDs are unique");

    // Independent check 1: Samba's own ldbsearch prints the same text.
    let out = Command::new("ldbsearch")
        .arg("-H")
        .arg(dc.dir().join("private/sam.ldb"))
        .args(["-b", dc.users_dn(), "(sAMAccountName=alice)", "objectGUID"])
        .output()
        .expect("ldbsearch runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l == format!("objectGUID: {text}")),
        "ldbsearch shows objectGUID: {text}; got:\n{stdout}"
    );
    // Independent check 2: AD resolves the text form as a <GUID=…> DN.
    let by_guid = search(
        &mut conn,
        &format!("<GUID={text}>"),
        "(objectClass=*)",
        vec!["sAMAccountName"],
    );
    assert_eq!(sams(&by_guid), ["alice"]);

    // The GUID survives changes.
    dc.modify_attr("alice", "mail", &["alice.new@example.org"])
        .expect("modify");
    dc.set_disabled("alice", true).expect("disable");
    assert_eq!(dc.object_guid("alice").expect("guid after modify"), text);
}

#[test]
fn disabled_user_has_bit_0x2() {
    if !samba_tests_enabled() {
        return;
    }
    let mut off = AdUser::new("dora", DOMAIN);
    off.disabled = true;
    let mut all = users(&["alice", "bob"]);
    all.push(off);
    let dc = start(SambaOptions {
        users: all,
        tls: false,
        ..SambaOptions::default()
    });
    let mut conn = admin(&dc);
    assert_eq!(uac(&mut conn, &dc, "dora"), 514);
    assert_eq!(uac(&mut conn, &dc, "alice") & UAC_DISABLED, 0);
    let disabled_filter = "(&(objectClass=user)(mail=*)(userAccountControl:1.2.840.113556.1.4.803:=2))";
    assert_eq!(
        sams(&search(
            &mut conn,
            dc.users_dn(),
            disabled_filter,
            vec!["sAMAccountName"]
        )),
        ["dora"]
    );

    dc.set_disabled("alice", true).expect("disable alice");
    dc.set_disabled("dora", false).expect("enable dora");
    assert_eq!(uac(&mut conn, &dc, "alice"), 514);
    assert_eq!(uac(&mut conn, &dc, "dora"), 512);
    assert_eq!(
        sams(&search(
            &mut conn,
            dc.users_dn(),
            disabled_filter,
            vec!["sAMAccountName"]
        )),
        ["alice"]
    );
    dc.set_disabled("alice", true).expect("disabling twice keeps 514");
    assert_eq!(uac(&mut conn, &dc, "alice"), 514);
}

#[test]
fn proxy_addresses_are_multi_valued_with_prefixes() {
    if !samba_tests_enabled() {
        return;
    }
    let mut alice = AdUser::new("alice", DOMAIN);
    alice.proxy_addresses = vec![
        "SMTP:alice@example.org".into(),
        "smtp:a.smith@example.org".into(),
        "smtp:alice@old.example.org".into(),
        "X500:/o=ExchangeLabs/ou=Exchange/cn=Recipients/cn=alice".into(),
        "SIP:alice@example.org".into(),
    ];
    let dc = start(SambaOptions {
        users: vec![alice.clone(), AdUser::new("bob", DOMAIN)],
        tls: false,
        ..SambaOptions::default()
    });
    let mut conn = admin(&dc);
    let get = |conn: &mut LdapConn, sam: &str| {
        let e = &search(
            conn,
            dc.users_dn(),
            &format!("(sAMAccountName={sam})"),
            vec!["proxyAddresses"],
        )[0];
        let mut v: Vec<String> = attr(e, "proxyAddresses").iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    let mut want = alice.proxy_addresses.clone();
    want.sort();
    assert_eq!(get(&mut conn, "alice"), want, "every value, prefixes and case kept");
    assert_eq!(get(&mut conn, "bob"), ["SMTP:bob@example.org"], "AdUser::new's primary");
    // An equality filter on proxyAddresses matches a whole value, prefix included, and AD
    // compares it case-insensitively ("smtp:" finds "SMTP:").
    let found = search(
        &mut conn,
        dc.users_dn(),
        "(proxyAddresses=smtp:alice@example.org)",
        vec!["sAMAccountName"],
    );
    assert_eq!(sams(&found), ["alice"]);

    dc.modify_attr(
        "alice",
        "proxyAddresses",
        &["SMTP:alice@example.org", "smtp:new@example.org"],
    )
    .expect("replace");
    assert_eq!(
        get(&mut conn, "alice"),
        ["SMTP:alice@example.org", "smtp:new@example.org"]
    );
    dc.modify_attr("alice", "proxyAddresses", &[]).expect("remove");
    assert!(get(&mut conn, "alice").is_empty());
}

#[test]
fn nested_group_members_found_with_in_chain_rule() {
    if !samba_tests_enabled() {
        return;
    }
    // outer (has mail) ⊃ { inner, bob }, inner ⊃ { alice }; carol is in no group.
    // Listed outer first: the launcher creates groups before filling them.
    let outer = AdGroup {
        name: "outer".into(),
        mail: Some("outer@example.org".into()),
        members: vec!["inner".into(), "bob".into()],
    };
    let inner = AdGroup {
        name: "inner".into(),
        mail: None,
        members: vec!["alice".into()],
    };
    let dc = start(SambaOptions {
        users: users(&["alice", "bob", "carol", "dave"]),
        groups: vec![outer, inner],
        tls: false,
    });
    let mut conn = admin(&dc);
    let outer_dn = dc.user_dn("outer");
    assert_eq!(outer_dn, "CN=outer,CN=Users,DC=example,DC=test");
    let g = &search(
        &mut conn,
        dc.users_dn(),
        "(sAMAccountName=outer)",
        vec!["mail", "member"],
    )[0];
    assert_eq!(attr(g, "mail"), ["outer@example.org"]);
    assert_eq!(
        attr(g, "member").len(),
        2,
        "direct members only: {:?}",
        attr(g, "member")
    );

    let chain = |conn: &mut LdapConn| {
        let filter = format!("(&(objectClass=user)(memberOf:1.2.840.113556.1.4.1941:={outer_dn}))");
        sams(&search(conn, dc.base_dn(), &filter, vec!["sAMAccountName"]))
    };
    let direct = search(
        &mut conn,
        dc.base_dn(),
        &format!("(memberOf={outer_dn})"),
        vec!["sAMAccountName"],
    );
    assert_eq!(sams(&direct), ["bob", "inner"], "plain memberOf: direct members only");
    assert_eq!(
        chain(&mut conn),
        ["alice", "bob"],
        "in-chain: users of nested groups too"
    );

    dc.add_to_group("inner", "dave").expect("add to inner");
    dc.remove_from_group("outer", "bob").expect("remove from outer");
    assert_eq!(chain(&mut conn), ["alice", "dave"]);
    dc.delete_user("alice").expect("delete alice");
    assert_eq!(chain(&mut conn), ["dave"], "a deleted user leaves its groups");
    dc.remove_from_group("outer", "inner").expect("unnest");
    assert!(chain(&mut conn).is_empty());
}

#[test]
fn subtree_search_from_root_yields_referrals_that_entries_only_drops() {
    if !samba_tests_enabled() {
        return;
    }
    let dc = start(SambaOptions {
        users: users(&["alice", "bob"]),
        tls: false,
        ..SambaOptions::default()
    });
    let mut conn = admin(&dc);
    let filter = "(&(objectClass=user)(mail=*))";
    // Without adapters, the stream hands out the search result references as entries.
    let mut stream = conn
        .streaming_search(dc.base_dn(), Scope::Subtree, filter, vec!["sAMAccountName"])
        .expect("search starts");
    let (mut refs, mut entries) = (Vec::new(), 0);
    while let Some(e) = stream.next().expect("next") {
        if e.is_ref() {
            refs.extend(ldap3::parse_refs(e.0));
        } else {
            entries += 1;
        }
    }
    assert_eq!(stream.result().rc, 0);
    assert!(
        !refs.is_empty(),
        "a subtree search from the domain root returns referrals"
    );
    assert!(
        refs.iter().all(|r| r.starts_with("ldap://example.test/")),
        "to other partitions of the domain: {refs:?}"
    );
    println!("referrals from the domain root: {refs:?}");
    assert_eq!(entries, 2, "plus the two entries");

    // EntriesOnly (also inside ldap3's plain search()) drops them from the entries and
    // collects them in the result's refs.
    let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(500))];
    let mut stream = conn
        .streaming_search_with(adapters, dc.base_dn(), Scope::Subtree, filter, vec!["sAMAccountName"])
        .expect("paged search starts");
    let mut found = Vec::new();
    while let Some(e) = stream.next().expect("next") {
        assert!(!e.is_ref(), "EntriesOnly passes no referral");
        found.push(SearchEntry::construct(e));
    }
    let res = stream.result();
    assert_eq!(res.rc, 0);
    assert_eq!(sams(&found), ["alice", "bob"], "EntriesOnly drops the referrals");
    println!("EntriesOnly + PagedResults result refs: {:?}", res.refs);
    let plain = conn
        .search(dc.base_dn(), Scope::Subtree, filter, vec!["sAMAccountName"])
        .expect("plain search");
    assert!(plain.0.iter().all(|e| !e.is_ref()), "search() applies EntriesOnly");
    assert!(!plain.1.refs.is_empty(), "search() reports the referrals in the result");
}

#[test]
fn users_with_a_password_can_bind() {
    if !samba_tests_enabled() {
        return;
    }
    let mut alice = AdUser::new("alice", DOMAIN);
    alice.password = Some(USER_PW.into());
    let mut eve = AdUser::new("eve", DOMAIN);
    eve.password = Some(USER_PW.into());
    eve.disabled = true;
    let dc = start(SambaOptions {
        users: vec![alice, eve, AdUser::new("bob", DOMAIN)],
        tls: false,
        ..SambaOptions::default()
    });
    for name in ["alice@example.test".to_string(), dc.user_dn("alice")] {
        let mut conn = connect(&dc.ldap_url());
        bind(&mut conn, &name, USER_PW);
    }
    let rc = |name: &str, pw: &str| {
        let mut conn = connect(&dc.ldap_url());
        conn.simple_bind(name, pw).expect("bind answered").rc
    };
    assert_eq!(rc("alice@example.test", "Wrong-pw-123"), 49);
    assert_eq!(rc("eve@example.test", USER_PW), 49, "a disabled account cannot bind");
    assert_eq!(rc("bob@example.test", USER_PW), 49, "no password set, no bind");
    dc.set_password("bob", "Bb7-another-secret").expect("set password");
    assert_eq!(rc("bob@example.test", "Bb7-another-secret"), 0);
    let err = dc.set_password("bob", "short").expect_err("complexity is enforced");
    assert!(err.to_string().contains("Constraint violation"), "{err}");
}

#[test]
fn mutations_change_the_directory() {
    if !samba_tests_enabled() {
        return;
    }
    let mut staff = AdUser::new("sam", DOMAIN);
    staff.ou = Some("Staff".into());
    staff.given_name = "Jürgen".into();
    staff.display_name = Some(" leading space".into());
    let dc = start(SambaOptions {
        users: vec![staff, AdUser::new("alice", DOMAIN), AdUser::new("bob", DOMAIN)],
        tls: false,
        ..SambaOptions::default()
    });
    assert_eq!(dc.user_dn("sam"), "CN=sam,OU=Staff,DC=example,DC=test");
    assert_eq!(dc.user_dn("sam"), dc.ou_dn("Staff").replacen("OU=", "CN=sam,OU=", 1));
    let mut conn = admin(&dc);
    let s = &search(
        &mut conn,
        &dc.ou_dn("Staff"),
        "(sAMAccountName=sam)",
        vec!["givenName", "displayName"],
    )[0];
    assert_eq!(attr(s, "givenName"), ["Jürgen"]);
    assert_eq!(attr(s, "displayName"), [" leading space"]);

    dc.modify_attr("alice", "mail", &["alice@new.example.org"])
        .expect("modify");
    dc.modify_attr("alice", "displayName", &[]).expect("remove");
    dc.modify_attr("alice", "title", &[])
        .expect("removing an absent attribute is fine");
    let a = &search(
        &mut conn,
        dc.users_dn(),
        "(sAMAccountName=alice)",
        vec!["mail", "displayName"],
    )[0];
    assert_eq!(attr(a, "mail"), ["alice@new.example.org"]);
    assert!(attr(a, "displayName").is_empty());

    dc.delete_user("bob").expect("delete");
    assert!(search(&mut conn, dc.base_dn(), "(sAMAccountName=bob)", vec!["1.1"]).is_empty());
    assert!(dc.delete_user("bob").is_err(), "deleting a missing user is an error");

    let mut carl = AdUser::new("carl", DOMAIN);
    carl.ou = Some("Contractors".into());
    let mut ann = AdUser::new("ann", DOMAIN);
    ann.ou = Some("Staff".into());
    dc.add_users(&[carl, ann]).expect("add users, one OU new, one existing");
    assert_eq!(dc.user_dn("carl"), "CN=carl,OU=Contractors,DC=example,DC=test");
    assert_eq!(dc.user_dn("ann"), "CN=ann,OU=Staff,DC=example,DC=test");
    let mut team = AdGroup::new("team");
    team.members = vec!["carl".into(), "Administrator".into()];
    dc.add_groups(&[team]).expect("add a group of existing objects");
    let t = &search(&mut conn, dc.users_dn(), "(sAMAccountName=team)", vec!["member"])[0];
    assert_eq!(attr(t, "member").len(), 2);

    dc.apply_ldif(&format!(
        "dn: {}\nchangetype: modify\nreplace: sn\nsn: Renamed\n-\n\n",
        dc.user_dn("carl")
    ))
    .expect("apply_ldif modify");
    let c = &search(&mut conn, dc.base_dn(), "(sAMAccountName=carl)", vec!["sn"])[0];
    assert_eq!(attr(c, "sn"), ["Renamed"]);
    let mut ghost = AdGroup::new("ghosts");
    ghost.members = vec!["nobody".into()];
    let err = dc.add_groups(&[ghost]).expect_err("an unknown member is an error");
    assert!(err.to_string().contains("nobody"), "{err}");
    let err = dc
        .add_users(&users(&["alice"]))
        .expect_err("adding an existing user fails");
    assert!(err.to_string().contains("Already exists"), "{err}");
}

#[test]
fn attribute_names_come_back_in_schema_spelling() {
    if !samba_tests_enabled() {
        return;
    }
    // A gotcha for the sync: Samba answers with the schema's spelling, not the request's.
    let dc = start(SambaOptions {
        users: users(&["alice"]),
        tls: false,
        ..SambaOptions::default()
    });
    let mut conn = admin(&dc);
    let e = &search(
        &mut conn,
        dc.users_dn(),
        "(samaccountname=alice)",
        vec!["MAIL", "proxyaddresses", "USERACCOUNTCONTROL", "objectguid"],
    )[0];
    let mut keys: Vec<&str> = e.attrs.keys().chain(e.bin_attrs.keys()).map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["mail", "objectGUID", "proxyAddresses", "userAccountControl"]);
}

#[test]
fn start_time_is_measured_and_stop_cleans_up() {
    if !samba_tests_enabled() {
        return;
    }
    // Printed, not asserted: run with --nocapture to see it.
    let t = Instant::now();
    let mut dc = start(SambaOptions::default());
    let first = t.elapsed();
    println!("first start in this test: {first:?}, {:?}", dc.timings());
    let (pid, dir, url) = (dc.pid(), dc.dir().to_path_buf(), dc.ldap_url());
    assert!(dir.join("private/sam.ldb").is_file());

    dc.modify_attr("Administrator", "description", &["kept across restarts"])
        .expect("modify");
    let t = Instant::now();
    dc.stop();
    let stop = t.elapsed();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "samba exited and was reaped"
    );
    let settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(2));
    assert!(LdapConn::with_settings(settings, &url).is_err(), "the DC is down");

    let t = Instant::now();
    dc.restart().expect("restart");
    let restart = t.elapsed();
    assert_ne!(dc.pid(), pid);
    let mut conn = admin(&dc);
    let a = &search(
        &mut conn,
        dc.users_dn(),
        "(sAMAccountName=Administrator)",
        vec!["description"],
    )[0];
    assert_eq!(attr(a, "description"), ["kept across restarts"]);
    let pid = dc.pid();
    let t = Instant::now();
    drop(dc);
    let dropped = t.elapsed();
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "drop stops samba");
    assert!(!dir.exists(), "drop removes {}", dir.display());

    let t = Instant::now();
    let plain = start(SambaOptions {
        tls: false,
        ..SambaOptions::default()
    });
    let no_tls = t.elapsed();
    drop(plain);
    println!("samba: stop {stop:?}, restart {restart:?}, drop {dropped:?}, start without TLS {no_tls:?}");
}
