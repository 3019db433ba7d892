//! Real parts for the integration tests and benchmarks of mailcow-ldap-sync: launchers for a
//! throwaway OpenLDAP `slapd` and a throwaway Samba AD DC, and an HTTP emulator of mailcow's
//! API that follows `shared/mailcow/API.md`. Nothing here is mocked at the protocol level: the
//! tool under test talks real LDAP and real HTTP to loopback ports.

mod certs;
mod encoding;
pub mod mailcow;
mod process;
pub mod samba;
pub mod slapd;
pub mod tls;
