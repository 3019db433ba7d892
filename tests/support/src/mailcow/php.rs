//! PHP and MariaDB semantics that mailcow's behaviour depends on.
//!
//! mailcow converts request values with `intval`/`strval`, tests them with `empty()`,
//! validates addresses with `FILTER_VALIDATE_EMAIL`, parses the nginx-rewritten query
//! string with PHP's parser and compares strings with a case-insensitive collation.
//! The emulator reproduces these so that junk input fails (or silently succeeds)
//! exactly where the real server does.

use serde_json::Value;

/// PHP `intval` on a decoded JSON value ("12abc" → 12, "abc" → 0, true → 1).
pub(crate) fn intval(v: &Value) -> i64 {
    match v {
        Value::Null => 0,
        Value::Bool(b) => i64::from(*b),
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f.trunc() as i64)).unwrap_or(0),
        Value::String(s) => intval_str(s),
        Value::Array(a) => i64::from(!a.is_empty()),
        Value::Object(m) => i64::from(!m.is_empty()),
    }
}

/// PHP `intval` on a string: leading whitespace, optional sign, digits.
pub(crate) fn intval_str(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut n: i64 = 0;
    for b in rest.bytes() {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg { -n } else { n }
}

/// PHP `empty()`: null, false, 0, "", "0", empty array.
pub(crate) fn empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => !b,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => s.is_empty() || s == "0",
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(m)) => m.is_empty(),
    }
}

/// PHP `strval` (arrays become "Array", which is what PHP would print too).
pub(crate) fn strval(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(true) => "1".into(),
        Value::Bool(false) => String::new(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(_) | Value::Object(_) => "Array".into(),
    }
}

/// PHP `trim` default character set.
pub(crate) fn trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\n', '\r', '\0', '\x0b'])
}

/// ASCII-only approximation of PHP's `FILTER_VALIDATE_EMAIL` (dot-atom local part,
/// dotted LDH domain whose TLD starts with a letter; no quoted locals or literals).
pub(crate) fn valid_email(s: &str) -> bool {
    let Some(at) = s.rfind('@') else {
        return false;
    };
    let (local, domain) = (&s[..at], &s[at + 1..]);
    if local.is_empty() || local.len() > 64 || s.len() > 320 {
        return false;
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return false;
    }
    let local_ok = local
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-.".contains(&b));
    local_ok && valid_email_domain(domain)
}

fn valid_email_domain(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 || d.len() > 253 {
        return false;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let tld = labels[labels.len() - 1];
    labels.iter().all(|l| label_ok(l)) && tld.as_bytes().first().is_some_and(|b| b.is_ascii_alphabetic())
}

/// mailcow's `is_valid_domain_name` (used to skip junk entries of `all/{d1,d2}`).
pub(crate) fn valid_domain_name(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b >= 0x80)
        })
}

/// `is_valid_domain_name()` (functions.inc.php) as `add/domain` calls it: labels of letters,
/// digits and inner hyphens (`/^([a-z\d](-*[a-z\d])*)(\.([a-z\d](-*[a-z\d])*))*$/i`), at
/// most 253 characters, labels of 1 to 63. A single label passes (the PHP asks for no dot).
/// Non-ASCII bytes stand for what `idn_to_ascii` would make of them.
pub(crate) fn php_valid_domain_name(d: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_alphanumeric() || b >= 0x80;
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && l.len() <= 63
                && alnum(b[0])
                && alnum(b[b.len() - 1])
                && b.iter().all(|&c| alnum(c) || c == b'-')
        })
}

/// MariaDB compares a string with an integer column by taking the string's numeric
/// prefix (`"16x@second.org"` = 16). This is the alias id/address collision bug of
/// API.md 4.7. Returns None when the value can never equal an id.
pub(crate) fn mysql_numeric_prefix(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let t = s.trim_start();
            let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
            if digits.is_empty() {
                Some(0)
            } else {
                digits.parse().ok()
            }
        }
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// Case-insensitive equality as under `utf8mb4_general_ci` (ASCII folding suffices).
pub(crate) fn eq_ci(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// mailcow splits address/goto lists on space, comma, semicolon and newline.
pub(crate) fn split_list(s: &str) -> Vec<String> {
    s.split([' ', ',', ';', '\n'])
        .map(|p| trim(p).to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Percent-decoding as nginx does on the URI (`+` is kept).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = if b[i] == b'%' && i + 2 < b.len() {
            hex(b[i + 1]).zip(hex(b[i + 2]))
        } else {
            None
        };
        if let Some((h, l)) = escaped {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// PHP's query-string parser: `&`-separated pairs, `+` is a space, `%xx` decoded;
/// as in PHP, a repeated key keeps its last value.
pub(crate) fn parse_query(qs: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in qs.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(&k.replace('+', " "));
        let v = percent_decode(&v.replace('+', " "));
        if let Some(slot) = out.iter_mut().find(|(ek, _)| *ek == k) {
            slot.1 = v;
        } else {
            out.push((k, v));
        }
    }
    out
}

/// Unix seconds → `YYYY-MM-DD HH:MM:SS` (UTC; mailcow prints server-local time
/// without a zone, and nothing a client should compare).
pub(crate) fn datetime(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm.
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn intval_like_php() {
        assert_eq!(intval(&json!("-5")), -5);
        assert_eq!(intval(&json!("abc")), 0);
        assert_eq!(intval(&json!("12abc")), 12);
        assert_eq!(intval(&json!(true)), 1);
        assert_eq!(intval(&json!(2.9)), 2);
    }

    #[test]
    fn emails() {
        assert!(valid_email("a+b@example.org"));
        assert!(!valid_email("bad local@example.org"));
        assert!(!valid_email("e2@not a domain"));
        assert!(!valid_email("x@localhost"));
        assert!(!valid_email("@"));
        assert!(!valid_email("u@ex.123"));
    }

    #[test]
    fn dates() {
        assert_eq!(datetime(0), "1970-01-01 00:00:00");
        assert_eq!(datetime(1_700_000_000), "2023-11-14 22:13:20");
    }

    #[test]
    fn query_double_decoding() {
        // nginx decoded %2B to '+', PHP then turns '+' into a space.
        let q = parse_query(&format!("query={}", percent_decode("get/mailbox/u%2Btag@x.org")));
        assert_eq!(q[0].1, "get/mailbox/u tag@x.org");
        let q = parse_query(&format!("query={}", percent_decode("get/mailbox/u%252Btag@x.org")));
        assert_eq!(q[0].1, "get/mailbox/u+tag@x.org");
    }
}
