//! mailcow-ldap-sync: copy the users of an LDAP directory into mailcow, one pass per run.
//!
//! The map of the crate:
//! - [`core`]: the pure core. Users from entries, the plan of mailbox and alias changes,
//!   and the data they share. No I/O; the edges and the commands call it.
//! - [`edge`]: LDAP ([`edge::ldap`]), mailcow ([`edge::mailcow`], behind a trait) and the
//!   state database ([`edge::state_db`]). They move bytes and decide nothing.
//! - `commands`: `init`, `check`, `status` and the sync pass, one file each. The pass reads
//!   as its sequence: lock → state → snapshot → plan → guard → dry-run or apply → settle →
//!   outcome → commit → report.
//! - [`config`] (config.json → a validated `Config`), `cli` (the flags), [`error`] (one
//!   error enum with the exit codes), and the presentation: `report`, `metrics`, `output`.

pub mod config;
pub mod core;
pub mod edge;
pub mod error;

mod apply;
mod cli;
mod commands;
mod ldap_read;
mod metrics;
mod output;
mod report;

pub use commands::main_with_args;
