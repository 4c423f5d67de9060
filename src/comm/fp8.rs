//! fp8 reductions accumulate in f32 and round once: the communicator widens the
//! inputs to f32, runs the collective on f32 (every hop and partial sum in f32), and
//! rounds the result to the format once (`element::fp8`: nearest even, saturating).
//! Headers still name the fp8 type, so ranks passing different fp8 formats (OCP e4m3
//! on one vendor, FNUZ e4m3 on another) get `Error::Mismatch`, never a converted
//! result. Collectives that only move data (all-gather, broadcast, all-to-all) move
//! the fp8 bytes as they are.

use super::Communicator;
use crate::config::Collective;
use crate::element::{fp8::Format, DataType};
use crate::error::Result;
use crate::reduce::ReduceOp;

/// Whether `coll` reduces (and so runs fp8 in f32).
pub(super) fn reduces(coll: Collective) -> bool {
    matches!(
        coll,
        Collective::AllReduce | Collective::Reduce | Collective::ReduceScatter
    )
}

/// The f32 bytes of fp8 `bytes`.
pub(super) fn widen(fmt: Format, bytes: &[u8]) -> Vec<u8> {
    let lut: [f32; 256] = std::array::from_fn(|b| fmt.decode(b as u8));
    let mut out = Vec::with_capacity(bytes.len() * 4);
    for b in bytes {
        out.extend_from_slice(&lut[usize::from(*b)].to_le_bytes());
    }
    out
}

/// `out[i]` = f32 `wide[4i..]` rounded to the format.
pub(super) fn narrow(fmt: Format, wide: &[u8], out: &mut [u8]) {
    for (o, w) in out.iter_mut().zip(wide.chunks_exact(4)) {
        *o = fmt.encode(f32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
}

impl Communicator {
    /// Runs a reducing collective of fp8 `dtype` in f32 (see the module doc). The
    /// arguments were validated as fp8 already.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn widened(
        &mut self,
        coll: Collective,
        dtype: DataType,
        fmt: Format,
        op: ReduceOp,
        root: usize,
        send: Option<&[u8]>,
        recv: &mut [u8],
    ) -> Result<()> {
        let wide_send = send.map(|s| widen(fmt, s));
        let mut wide_recv = widen(fmt, recv);
        self.header_dtype = Some(dtype);
        let r = self.raw(
            coll,
            DataType::F32,
            op,
            root,
            wide_send.as_deref(),
            &mut wide_recv,
        );
        self.header_dtype = None;
        r?;
        // Round only what the call wrote.
        let written = match coll {
            Collective::Reduce if self.rank != root => 0..0,
            Collective::ReduceScatter if send.is_none() => {
                let b = recv.len() / self.nranks;
                self.rank * b..(self.rank + 1) * b
            }
            _ => 0..recv.len(),
        };
        narrow(
            fmt,
            &wide_recv[written.start * 4..written.end * 4],
            &mut recv[written],
        );
        Ok(())
    }
}
