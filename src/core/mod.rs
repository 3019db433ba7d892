//! The pure core: what a pass decides, as plain data, with no I/O.
//!
//! Everything here takes values and returns values: the users read from LDAP entries
//! (`directory`), the plan of mailbox changes (`plan`), the plan of alias changes
//! (`aliases`), and the types they share (`model`, `policy`). Nothing here may import an
//! edge (LDAP, mailcow, SQLite, files, clocks): the test below keeps that rule true.

pub mod aliases;
pub mod directory;
pub mod model;
pub mod plan;
pub mod policy;
