//! Real parts for the integration tests and benchmarks of mailcow-ldap-sync: a launcher
//! for a throwaway OpenLDAP `slapd`, and an HTTP emulator of mailcow's API that follows
//! `shared/mailcow/API.md`. Nothing here is mocked at the protocol level: the tool under
//! test talks real LDAP and real HTTP to loopback ports.

mod certs;
pub mod mailcow;
pub mod samba;
pub mod slapd;
