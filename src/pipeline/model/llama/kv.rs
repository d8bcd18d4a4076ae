//! The KV cache: per layer, `[position][kv_head * head_dim]` as f16 bits (as llama.cpp keeps it), written
//! in place, in anonymous mappings preallocated for the whole context: pages become resident only as
//! positions are written, so peak RSS follows the context used, not the 8,192 positions declared.

use super::quant::to_f16;

pub(super) struct KvCache {
    k: Vec<KvMap>,
    v: Vec<KvMap>,
    /// Values per position (KV heads × head dimension).
    row: usize,
}

impl KvCache {
    pub(super) fn new(layers: usize, context: usize, row: usize) -> Result<Self, String> {
        let len = context.checked_mul(row).ok_or_else(|| {
            format!("a KV cache of {context} positions × {row} values does not fit in memory")
        })?;
        let maps =
            || -> Result<Vec<KvMap>, String> { (0..layers).map(|_| KvMap::new(len)).collect() };
        Ok(Self {
            k: maps()?,
            v: maps()?,
            row,
        })
    }

    /// Stores the K and V rows of positions `pos..` (as many as `k` holds) of `layer`.
    #[inline(always)]
    pub(super) fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let span = pos * self.row..pos * self.row + k.len();
        to_f16(k, &mut self.k[layer][span.clone()]);
        to_f16(v, &mut self.v[layer][span]);
    }

    /// Copies the K and V rows of positions `..n` of every layer from `other` (a cache of the same shape).
    pub(super) fn copy_prefix_from(&mut self, other: &KvCache, n: usize) {
        let len = n * self.row;
        for (dst, src) in self.k.iter_mut().zip(&other.k) {
            dst[..len].copy_from_slice(&src[..len]);
        }
        for (dst, src) in self.v.iter_mut().zip(&other.v) {
            dst[..len].copy_from_slice(&src[..len]);
        }
    }

    /// The K and V rows of `layer` for positions `..end`.
    pub(super) fn rows(&self, layer: usize, end: usize) -> (&[u16], &[u16]) {
        let n = end * self.row;
        (&self.k[layer][..n], &self.v[layer][..n])
    }
}

/// A zero-filled `u16` array in an anonymous memory mapping.
struct KvMap(memmap2::MmapMut);

impl KvMap {
    fn new(len: usize) -> Result<Self, String> {
        let bytes = len
            .checked_mul(2)
            .ok_or("the KV cache does not fit in memory")?;
        memmap2::MmapMut::map_anon(bytes)
            .map(Self)
            .map_err(|e| format!("cannot map the KV cache ({bytes} bytes per layer): {e}"))
    }
}

impl std::ops::Deref for KvMap {
    type Target = [u16];
    fn deref(&self) -> &[u16] {
        // SAFETY: the mapping is page-aligned (so aligned for u16), zero-filled (a valid u16 everywhere),
        // `len / 2` u16 long, and lives as long as the borrow of `self`.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr() as *const u16, self.0.len() / 2) }
    }
}

impl std::ops::DerefMut for KvMap {
    fn deref_mut(&mut self) -> &mut [u16] {
        // SAFETY: as in `deref`, and the mapping is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut u16, self.0.len() / 2) }
    }
}
