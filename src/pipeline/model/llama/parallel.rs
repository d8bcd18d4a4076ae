//! Work shared out over candle's persistent barrier pool (`--threads` workers, spin-waiting between
//! sections), and the one place where workers write into shared output: a matrix cut into disjoint blocks,
//! each handed to exactly one worker as a [`Block`], through which alone it can be written.

use std::marker::PhantomData;
use std::ops::Range;

/// Threads that run a parallel section (the pool's workers and the caller).
pub(super) fn threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

/// A row-major matrix (`cols` values per row) cut into blocks of `block_rows` × `block_cols` values
/// (smaller at the right and bottom edges), numbered row of blocks by row of blocks.
pub(super) struct Blocks<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    block_rows: usize,
    block_cols: usize,
    _data: PhantomData<&'a mut [f32]>,
}

// SAFETY: `Blocks` holds the matrix's unique borrow, and `for_each_block` hands each block (a disjoint part
// of it) to one call only, so no two threads ever reach the same element.
unsafe impl Sync for Blocks<'_> {}

impl<'a> Blocks<'a> {
    pub(super) fn new(
        data: &'a mut [f32],
        cols: usize,
        block_rows: usize,
        block_cols: usize,
    ) -> Self {
        assert!(
            cols > 0 && block_rows > 0 && block_cols > 0 && data.len().is_multiple_of(cols),
            "Blocks: {} values in rows of {cols}, blocks of {block_rows}x{block_cols}",
            data.len()
        );
        Self {
            ptr: data.as_mut_ptr(),
            rows: data.len() / cols,
            cols,
            block_rows,
            block_cols,
            _data: PhantomData,
        }
    }

    fn per_row(&self) -> usize {
        self.cols.div_ceil(self.block_cols)
    }

    pub(super) fn count(&self) -> usize {
        self.rows.div_ceil(self.block_rows) * self.per_row()
    }

    /// Block `i`.
    ///
    /// # Safety
    /// No other `Block` of the same index is alive at the same time (blocks of different indices never
    /// overlap).
    unsafe fn block(&self, i: usize) -> Block<'_> {
        assert!(i < self.count());
        let (br, bc) = (i / self.per_row(), i % self.per_row());
        let r0 = br * self.block_rows;
        let c0 = bc * self.block_cols;
        Block {
            ptr: self.ptr,
            stride: self.cols,
            rows: r0..self.rows.min(r0 + self.block_rows),
            cols: c0..self.cols.min(c0 + self.block_cols),
            _data: PhantomData,
        }
    }
}

/// One block of a [`Blocks`] matrix, owned by one worker while it lives (not `Send`: it stays on the
/// thread it was handed to).
pub(super) struct Block<'b> {
    ptr: *mut f32,
    stride: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    _data: PhantomData<&'b mut [f32]>,
}

impl Block<'_> {
    /// The matrix rows this block covers.
    pub(super) fn rows(&self) -> Range<usize> {
        self.rows.clone()
    }

    /// The matrix columns this block covers.
    pub(super) fn cols(&self) -> Range<usize> {
        self.cols.clone()
    }

    /// Writes `tile[i][k]` to the block's row `r + i`, column `c + k`, for `i < t` and `k < cn`: one
    /// kernel tile of products (the tile's bounds checked once, not per row).
    pub(super) fn write_tile<const T: usize, const K: usize>(
        &mut self,
        r: usize,
        c: usize,
        t: usize,
        cn: usize,
        tile: &[[f32; K]; T],
    ) {
        assert!(
            t <= T && cn <= K && r + t <= self.rows.len() && c + cn <= self.cols.len(),
            "a tile of {t}x{cn} at ({r}, {c}) outside a block of {:?} x {:?}",
            self.rows,
            self.cols
        );
        for (i, row) in tile[..t].iter().enumerate() {
            let at = (self.rows.start + r + i) * self.stride + self.cols.start + c;
            // SAFETY: row r + i and columns c..c + cn lie inside this block (asserted above), which
            // lies inside the borrowed matrix and belongs to this block alone.
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), self.ptr.add(at), cn) };
        }
    }

    /// The block's part of its `j`-th row (matrix row `rows().start + j`, columns `cols()`).
    pub(super) fn row(&mut self, j: usize) -> &mut [f32] {
        assert!(j < self.rows.len(), "row {j} of a block of {:?}", self.rows);
        let at = (self.rows.start + j) * self.stride + self.cols.start;
        // SAFETY: rows and columns are clipped to the matrix, so the range lies inside the borrowed data;
        // it belongs to this block alone (blocks are disjoint, each alive once), and the returned borrow
        // holds the block mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), self.cols.len()) }
    }
}

/// Calls `f(set, block)` once for every block of every matrix in `sets`, in one parallel section over the
/// pool (items numbered across the sets, so one section serves several matrices).
pub(super) fn for_each_block(sets: &mut [Blocks<'_>], f: impl Fn(usize, Block<'_>) + Sync) {
    let mut starts = Vec::with_capacity(sets.len());
    let mut total = 0;
    for s in sets.iter() {
        starts.push(total);
        total += s.count();
    }
    let sets: &[Blocks<'_>] = sets;
    candle_core::utils::barrier_pool().execute_chunked(total, |items: Range<usize>| {
        for item in items {
            let j = starts.partition_point(|&s| s <= item) - 1;
            // SAFETY: execute_chunked hands out every item of 0..total exactly once (disjoint ranges
            // from a shared cursor, or the whole range on the calling thread), so block (j, item -
            // starts[j]) is alive in this call only.
            let block = unsafe { sets[j].block(item - starts[j]) };
            f(j, block);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_is_reached_once() {
        let mut a = vec![0f32; 7 * 10];
        let mut b = vec![0f32; 5 * 3];
        let mut sets = [Blocks::new(&mut a, 10, 3, 4), Blocks::new(&mut b, 3, 1, 3)];
        assert_eq!(sets[0].count(), 3 * 3);
        assert_eq!(sets[1].count(), 5);
        for_each_block(&mut sets, |j, mut block| {
            for r in 0..block.rows().len() {
                for v in block.row(r) {
                    *v += 1.0 + j as f32;
                }
            }
        });
        assert!(a.iter().all(|&v| v == 1.0));
        assert!(b.iter().all(|&v| v == 2.0));
    }
}
