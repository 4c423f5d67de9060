//! Test-only input generator for the wire decoders: from a valid message, many
//! mutated ones (random bytes, flipped bits, truncations, extensions, length-like
//! fields set to huge values), deterministic so a failure reproduces. A decoder
//! passes when it never panics and never allocates by an unchecked length (a huge
//! length field would abort the test with an allocation failure).

/// Calls `f` with `n` inputs derived from `valid` (and `valid` itself first).
pub(crate) fn mutations(valid: &[u8], n: usize, mut f: impl FnMut(&[u8])) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ valid.len() as u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    f(valid);
    for i in 0..n {
        let mut b = valid.to_vec();
        match i % 5 {
            0 => {
                let len = (next() % (2 * valid.len() as u64 + 8)) as usize;
                b = (0..len).map(|_| next() as u8).collect();
            }
            1 => {
                for _ in 0..1 + next() % 4 {
                    if !b.is_empty() {
                        let at = (next() as usize) % b.len();
                        b[at] ^= 1 << (next() % 8);
                    }
                }
            }
            2 => b.truncate((next() as usize) % (valid.len() + 1)),
            3 => b.extend((0..next() % 64).map(|_| next() as u8)),
            _ => {
                // A 4-byte field somewhere set to a huge or boundary value.
                if b.len() >= 4 {
                    let at = (next() as usize) % (b.len() - 3);
                    let v = [u32::MAX, u32::MAX / 2, 0, 1 << 31, 4097][(next() % 5) as usize];
                    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        f(&b);
    }
}
