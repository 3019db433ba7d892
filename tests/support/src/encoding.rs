//! Base64 and LDIF lines, written out by hand, for the slapd and Samba launchers.
//!
//! Both launchers write LDIF (slapd's `slapadd`/`ldapmodify`, Samba's `ldbmodify`/`ldapadd`),
//! and hostile test values (leading spaces, non-ASCII, CR/LF) must reach the server as written
//! instead of breaking the file. slapd's `{SSHA}` values are Base64 too. These few lines avoid a
//! dependency; the tests pin them to RFC 4648's vectors.

/// Standard Base64 with padding (RFC 4648 §4). LDIF, `{SSHA}` and `unicodePwd` use it.
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Appends one `name: value` LDIF line. The value is Base64-encoded (`name:: …`) unless it is
/// a SAFE-STRING under RFC 2849. That covers non-ASCII, a leading space, `:` or `<`, a trailing
/// space, and CR/LF.
pub(crate) fn push_attr(out: &mut String, name: &str, value: &str) {
    let bytes = value.as_bytes();
    let safe_init = bytes.first().is_none_or(|&b| !matches!(b, b' ' | b':' | b'<'));
    let safe_rest = bytes.iter().all(|&b| b.is_ascii() && !matches!(b, 0 | b'\n' | b'\r'));
    let safe_end = !value.ends_with(' ');
    if safe_init && safe_rest && safe_end {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push('\n');
    } else {
        push_base64(out, name, bytes);
    }
}

/// Appends one `name:: <base64>` LDIF line: for binary values such as AD's `unicodePwd`.
pub(crate) fn push_base64(out: &mut String, name: &str, bytes: &[u8]) {
    out.push_str(name);
    out.push_str(":: ");
    out.push_str(&base64(bytes));
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_known_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "input {input:?}");
        }
    }

    #[test]
    fn ldif_encodes_unsafe_values() {
        let mut s = String::new();
        push_attr(&mut s, "a", "plain value");
        push_attr(&mut s, "b", " leading");
        push_attr(&mut s, "c", "Jürgen");
        push_attr(&mut s, "d", "trailing ");
        push_attr(&mut s, "e", ":colon");
        assert_eq!(
            s,
            "a: plain value\nb:: IGxlYWRpbmc=\nc:: SsO8cmdlbg==\nd:: dHJhaWxpbmcg\ne:: OmNvbG9u\n"
        );
    }
}
