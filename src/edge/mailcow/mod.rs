//! mailcow's HTTP API: the calls a pass makes ([`MailcowApi`]), the HTTP client that makes
//! them ([`http::HttpMailcow`]), and the parsing of mailcow's answers.

pub mod http;

pub use http::{
    Entry, HttpMailcow, ItemResult, match_items, parse_domain_list, parse_entries, parse_mailbox_list, parse_mailboxes,
};
