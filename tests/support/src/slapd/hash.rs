//! SHA-1 and `{SSHA}` hashes, written out by hand (the Base64 is in `crate::encoding`).
//!
//! Test users need real `{SSHA}` values. slapd checks them on bind, and the sync copies them to
//! mailcow. `slappasswd` always picks a random salt and costs a process per value, which is too
//! slow for 20,000 generated users. These ~100 lines avoid that and add no dependency.
//! The tests check the result against `openssl dgst -sha1` and against a real bind.

use crate::encoding::base64;

/// SHA-1 of `data` (FIPS 180-4). This is for building test fixtures only: SHA-1 is broken for
/// collision resistance, but `{SSHA}` is defined on it.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hv, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hv = hv.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, v) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// A real `{SSHA}` userPassword value: `{SSHA}` + base64(SHA-1(password ‖ salt) ‖ salt), the
/// format slapd checks on bind. slappasswd uses a 4-byte salt, and 8 bytes is common.
/// Any length works.
pub fn ssha(password: &str, salt: &[u8]) -> String {
    let mut input = password.as_bytes().to_vec();
    input.extend_from_slice(salt);
    let mut raw = sha1(&input).to_vec();
    raw.extend_from_slice(salt);
    format!("{{SSHA}}{}", base64(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha1_known_vectors() {
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(hex(&sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            hex(&sha1(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(
            hex(&sha1(&[b'a'; 1_000_000])),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
    }

    #[test]
    fn ssha_layout() {
        let v = ssha("secret", b"salt1234");
        assert!(v.starts_with("{SSHA}"));
        // 20 digest bytes + 8 salt bytes = 28 bytes = 40 base64 characters
        assert_eq!(v.len(), 6 + 40);
    }
}
