//! The edges: the LDAP connection, the mailcow API and the state database. They move
//! bytes and make no decisions; what to do with what they read is the core's.

pub mod ldap;
pub mod ldap_dirsync;
pub mod ldap_sync;
pub mod mailcow;
pub mod random;
pub mod state_db;
pub mod tls;
