//! Copies into large buffers that are written once and not read again soon (a
//! collective's output): non-temporal stores write whole cache lines straight to
//! memory, skipping the read of each destination line that an ordinary store costs,
//! and leave the caches to the data that is read next.

/// Below this many bytes an ordinary copy is used (the destination may well be read
/// from cache right after).
const STREAM_MIN: usize = 256 << 10;

/// Copies `src` into `dst` (equal lengths) with non-temporal stores on x86-64 (SSE2,
/// part of the base instruction set) from [`STREAM_MIN`] bytes where they are on
/// (`cpu::streaming_pays`), ending with a store fence so the bytes are ordered before
/// any later store (a flag another process reads); elsewhere, and for short copies,
/// `copy_from_slice`.
pub(crate) fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_streaming needs equal lengths");
    #[cfg(target_arch = "x86_64")]
    if dst.len() >= STREAM_MIN && crate::cpu::streaming_pays() {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        let head = dst.as_ptr().align_offset(16).min(dst.len());
        dst[..head].copy_from_slice(&src[..head]);
        let lines = (dst.len() - head) / 64;
        // SAFETY: `lines` 64-byte lines from `head` lie inside both slices (equal
        // lengths, checked above); `d` is 16-aligned (align_offset), as stream stores
        // need; loads are unaligned; the slices do not overlap (`&mut` and `&`).
        unsafe {
            let mut s = src.as_ptr().add(head).cast::<__m128i>();
            let mut d = dst.as_mut_ptr().add(head).cast::<__m128i>();
            for _ in 0..lines {
                let (a, b, c, e) = (
                    _mm_loadu_si128(s),
                    _mm_loadu_si128(s.add(1)),
                    _mm_loadu_si128(s.add(2)),
                    _mm_loadu_si128(s.add(3)),
                );
                _mm_stream_si128(d, a);
                _mm_stream_si128(d.add(1), b);
                _mm_stream_si128(d.add(2), c);
                _mm_stream_si128(d.add(3), e);
                s = s.add(4);
                d = d.add(4);
            }
            _mm_sfence();
        }
        let done = head + lines * 64;
        dst[done..].copy_from_slice(&src[done..]);
        return;
    }
    dst.copy_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_byte_at_any_alignment_and_length() {
        let src: Vec<u8> = (0..(1usize << 20) + 200)
            .map(|i| (i * 7 + i / 253) as u8)
            .collect();
        for (off, len) in [
            (0, 0),
            (1, 5),
            (3, STREAM_MIN),
            (5, STREAM_MIN + 77),
            (16, 1 << 20),
            (7, (1 << 20) + 1),
        ] {
            let mut dst = vec![0u8; len + 32];
            copy_streaming(&mut dst[off..off + len], &src[off..off + len]);
            assert_eq!(
                &dst[off..off + len],
                &src[off..off + len],
                "offset {off} length {len}"
            );
            assert!(
                dst[..off].iter().all(|&b| b == 0),
                "wrote before the destination"
            );
            assert!(
                dst[off + len..].iter().all(|&b| b == 0),
                "wrote after the destination"
            );
        }
    }
}
