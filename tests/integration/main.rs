//! Integration tests: the built binary against a real slapd and the mailcow emulator.
//! One test binary (one link, one process per `cargo test` run), one module per area.

mod access;
mod active_directory;
mod admins;
mod aliases;
mod cli;
mod domains;
mod faults;
mod fuzz_corpus;
mod hostile;
mod idp;
mod incremental;
mod incremental_ldap;
mod lifecycle;
mod safety;
mod send_as;
mod sources;
mod sync;
mod templates;
mod util;
