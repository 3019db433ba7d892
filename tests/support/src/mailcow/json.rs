//! Ordered JSON output for the emulator.
//!
//! mailcow's responses have a fixed key order (API.md lists the `reduced` keys "in this
//! order"), and `serde_json::Value` would sort keys unless the workspace-wide
//! `preserve_order` feature were switched on (which would change the main crate's
//! behaviour too). Writing straight into a buffer also keeps `get/mailbox/all` over
//! 100k mailboxes fast: no intermediate tree per mailbox.

use serde_json::Value;

/// A streaming JSON writer. `pretty` mimics PHP's `JSON_PRETTY_PRINT` (4 spaces,
/// `"key": value`, `[]`/`{}` for empty containers); otherwise output is compact like
/// PHP's default `json_encode`.
pub(crate) struct Out {
    pub(crate) s: String,
    pretty: bool,
    /// One entry per open container: whether it already holds an element.
    stack: Vec<bool>,
    after_key: bool,
}

impl Out {
    pub(crate) fn new(pretty: bool) -> Out {
        Out {
            s: String::new(),
            pretty,
            stack: Vec::new(),
            after_key: false,
        }
    }

    pub(crate) fn with_capacity(pretty: bool, cap: usize) -> Out {
        let mut o = Out::new(pretty);
        o.s.reserve(cap);
        o
    }

    fn newline_indent(&mut self) {
        self.s.push('\n');
        for _ in 0..self.stack.len() {
            self.s.push_str("    ");
        }
    }

    /// Separator before a new element of the current container.
    fn element(&mut self) {
        if self.after_key {
            self.after_key = false;
            return;
        }
        if let Some(top) = self.stack.last_mut() {
            let had = *top;
            *top = true;
            if had {
                self.s.push(',');
            }
            if self.pretty {
                self.newline_indent();
            }
        }
    }

    pub(crate) fn begin_obj(&mut self) {
        self.element();
        self.s.push('{');
        self.stack.push(false);
    }

    pub(crate) fn end_obj(&mut self) {
        let had = self.stack.pop().unwrap_or(false);
        if had && self.pretty {
            self.newline_indent();
        }
        self.s.push('}');
    }

    pub(crate) fn begin_arr(&mut self) {
        self.element();
        self.s.push('[');
        self.stack.push(false);
    }

    pub(crate) fn end_arr(&mut self) {
        let had = self.stack.pop().unwrap_or(false);
        if had && self.pretty {
            self.newline_indent();
        }
        self.s.push(']');
    }

    pub(crate) fn key(&mut self, k: &str) {
        self.element();
        write_escaped(&mut self.s, k);
        self.s.push_str(if self.pretty { ": " } else { ":" });
        self.after_key = true;
    }

    pub(crate) fn str(&mut self, v: &str) {
        self.element();
        write_escaped(&mut self.s, v);
    }

    pub(crate) fn int(&mut self, v: i64) {
        self.element();
        self.s.push_str(&v.to_string());
    }

    pub(crate) fn null(&mut self) {
        self.element();
        self.s.push_str("null");
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.element();
        self.s.push_str(if v { "true" } else { "false" });
    }

    pub(crate) fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(s) => self.str(s),
            None => self.null(),
        }
    }

    // Shorthands for `key` + value.
    pub(crate) fn kv_str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.str(v);
    }
    pub(crate) fn kv_int(&mut self, k: &str, v: i64) {
        self.key(k);
        self.int(v);
    }

    /// Any serde value (used to echo request data in `log` entries and messages).
    pub(crate) fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.null(),
            Value::Bool(b) => self.bool(*b),
            Value::Number(n) => {
                self.element();
                self.s.push_str(&n.to_string());
            }
            Value::String(s) => self.str(s),
            Value::Array(a) => {
                self.begin_arr();
                for x in a {
                    self.value(x);
                }
                self.end_arr();
            }
            Value::Object(m) => {
                self.begin_obj();
                for (k, x) in m {
                    self.key(k);
                    self.value(x);
                }
                self.end_obj();
            }
        }
    }

    pub(crate) fn finish(self) -> String {
        self.s
    }
}

pub(crate) fn write_escaped(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_matches_php_layout() {
        let mut o = Out::new(true);
        o.begin_obj();
        o.kv_int("a", 1);
        o.key("b");
        o.begin_arr();
        o.end_arr();
        o.key("c");
        o.begin_obj();
        o.kv_str("d", "x");
        o.end_obj();
        o.end_obj();
        assert_eq!(
            o.finish(),
            "{\n    \"a\": 1,\n    \"b\": [],\n    \"c\": {\n        \"d\": \"x\"\n    }\n}"
        );
    }

    #[test]
    fn compact_has_no_spaces() {
        let mut o = Out::new(false);
        o.begin_arr();
        o.begin_obj();
        o.kv_str("type", "success");
        o.end_obj();
        o.int(2);
        o.end_arr();
        assert_eq!(o.finish(), "[{\"type\":\"success\"},2]");
    }
}
