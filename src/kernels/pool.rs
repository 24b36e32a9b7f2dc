//! Max pooling over planes of H×W. burn-flex's pooling goes through its general 3-D path with
//! an index tensor; it was a quarter of LeNet-BN's step and 8% of DenseNet's (the stem's 3×3).
//! LeNet's 2×2 window with stride 2 has a forward pass over both cores and a branchless
//! backward that finds each window's maximum again from the input and the output; any other
//! window ([`PoolWindow`]) a plain pass per plane, forward and backward, that also finds the
//! maximum again instead of storing its index.
//!
//! Semantics as PyTorch's: a NaN in a window is its maximum; the gradient goes to the first
//! element (in row-major order) holding the maximum (for 2×2 also the first NaN; for other
//! windows, as burn and PyTorch have it there, the last); rows and columns past the last whole
//! window are dropped (floor) and get zero gradient.

use super::simd::avx2;
use rayon::prelude::*;

/// Planes per task.
const PLANES_PER_TASK: usize = 16;

/// The larger of two values, NaN winning (`f32::max` would drop it).
#[inline(always)]
fn max_nan(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

/// The two input rows of output row `oh`, each cut to the 2·wo values the windows cover.
#[inline(always)]
fn rows(plane: &[f32], w: usize, wo: usize, oh: usize) -> (&[f32], &[f32]) {
    (&plane[2 * oh * w..][..2 * wo], &plane[(2 * oh + 1) * w..][..2 * wo])
}

/// `planes` planes of h×w in, planes of (h/2)×(w/2) out.
pub fn max_pool_2x2(x: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    let mut y = vec![0.0f32; planes * ho * wo];
    if ho * wo == 0 {
        return y;
    }
    y.par_chunks_mut(PLANES_PER_TASK * ho * wo).zip(x.par_chunks(PLANES_PER_TASK * h * w)).for_each(|(ys, xs)| {
        avx2(
            #[inline(always)]
            || {
                for (out, plane) in ys.chunks_exact_mut(ho * wo).zip(xs.chunks_exact(h * w)) {
                    for (oh, out) in out.chunks_exact_mut(wo).enumerate() {
                        let (top, bottom) = rows(plane, w, wo, oh);
                        // Zipped pairs, no indexing: the loop becomes SIMD code.
                        for ((o, t), b) in out.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                            *o = max_nan(max_nan(max_nan(t[0], t[1]), b[0]), b[1]);
                        }
                    }
                }
            },
        )
    });
    y
}

/// ∂x from the input, the output and ∂y: each window's ∂y goes to its first element equal to
/// the window's output (or, for a NaN output, its first NaN). Every element of a window is
/// written, the gradient or zero, so the rows are written in order and without branches.
pub fn max_pool_2x2_backward(x: &[f32], y: &[f32], dy: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    let mut dx = vec![0.0f32; planes * h * w];
    if ho * wo == 0 {
        return dx;
    }
    let per_task = (PLANES_PER_TASK * h * w, PLANES_PER_TASK * ho * wo);
    dx.par_chunks_mut(per_task.0)
        .zip(x.par_chunks(per_task.0))
        .zip(y.par_chunks(per_task.1).zip(dy.par_chunks(per_task.1)))
        .for_each(|((dxs, xs), (ys, dys))| {
            avx2(
                #[inline(always)]
                || {
                    let planes = dxs.chunks_exact_mut(h * w).zip(xs.chunks_exact(h * w));
                    for ((dx, plane), (out, grad)) in
                        planes.zip(ys.chunks_exact(ho * wo).zip(dys.chunks_exact(ho * wo)))
                    {
                        for (oh, (out, grad)) in out.chunks_exact(wo).zip(grad.chunks_exact(wo)).enumerate() {
                            let (x_top, x_bottom) = rows(plane, w, wo, oh);
                            let (top, bottom) = dx[2 * oh * w..(2 * oh + 2) * w].split_at_mut(w);
                            let dx_rows = top[..2 * wo].chunks_exact_mut(2).zip(bottom[..2 * wo].chunks_exact_mut(2));
                            let x_rows = x_top.chunks_exact(2).zip(x_bottom.chunks_exact(2));
                            // Zipped pairs, no indexing: the loop becomes SIMD code.
                            for (((top, bottom), (a, c)), (&m, &g)) in dx_rows.zip(x_rows).zip(out.iter().zip(grad)) {
                                // `&` and `|`, not `&&` and `||`: no branches on the data.
                                let is_max = |v: f32| (v == m) | (v.is_nan() & m.is_nan());
                                let (at_a, at_b, at_c) = (is_max(a[0]), is_max(a[1]), is_max(c[0]));
                                let (to_b, to_c) = (!at_a & at_b, !at_a & !at_b & at_c);
                                let to_d = !(at_a | at_b | at_c);
                                top[0] = if at_a { g } else { 0.0 };
                                top[1] = if to_b { g } else { 0.0 };
                                bottom[0] = if to_c { g } else { 0.0 };
                                bottom[1] = if to_d { g } else { 0.0 };
                            }
                        }
                    }
                },
            )
        });
    dx
}

/// Any other max pooling: a kh×kw window moved by a stride over a plane padded with −∞ (as
/// ResNet's and DenseNet's stem take it: 3×3, stride 2, padding 1). Rows and columns past the
/// last whole window are dropped (floor), as with 2×2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolWindow {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

/// LeNet's window, which has kernels of its own.
pub const LENETS_WINDOW: PoolWindow = PoolWindow { kernel: [2, 2], stride: [2, 2], padding: [0, 0] };

impl PoolWindow {
    /// The output's height and width for an h×w plane (the window must fit the padded plane).
    pub fn out_size(&self, h: usize, w: usize) -> [usize; 2] {
        let out = |size: usize, d: usize| (size + 2 * self.padding[d] - self.kernel[d]) / self.stride[d] + 1;
        [out(h, 0), out(w, 1)]
    }

    /// The window's first input row (or column) and the range of kernel offsets that fall
    /// inside the plane, for output position `o` along `d`.
    #[inline(always)]
    fn taps(&self, o: usize, d: usize, size: usize) -> (usize, std::ops::Range<usize>) {
        let start = o * self.stride[d];
        let first = self.padding[d].saturating_sub(start);
        let last = (size + self.padding[d] - start).min(self.kernel[d]);
        (start + first - self.padding[d], first..last.max(first))
    }

    /// The index in an h×w plane of window (oh, ow)'s maximum, as burn and PyTorch choose
    /// it: the first largest value in row-major order, or the last NaN. `None` for a window
    /// with no element inside the plane. Without branches on the values (they are random:
    /// a branch would be mispredicted half the time).
    #[inline(always)]
    fn argmax(&self, plane: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Option<usize> {
        let ((row0, rows), (col0, cols)) = (self.taps(oh, 0, h), self.taps(ow, 1, w));
        if rows.is_empty() || cols.is_empty() {
            return None;
        }
        let first = row0 * w + col0;
        let (mut best, mut max) = (first, plane[first]);
        for r in 0..rows.len() {
            let base = (row0 + r) * w + col0;
            for (i, &v) in plane[base..base + cols.len()].iter().enumerate() {
                let better = (v > max) | v.is_nan();
                max = if better { v } else { max };
                best = if better { base + i } else { best };
            }
        }
        Some(best)
    }

    /// The maximum of window (oh, ow) (NaN if it holds one), −∞ for a window with no element
    /// inside the plane.
    #[inline(always)]
    fn max(&self, plane: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> f32 {
        let ((row0, rows), (col0, cols)) = (self.taps(oh, 0, h), self.taps(ow, 1, w));
        let mut max = f32::NEG_INFINITY;
        for r in 0..rows.len() {
            let base = (row0 + r) * w + col0;
            for &v in &plane[base..base + cols.len()] {
                max = max_nan(max, v);
            }
        }
        max
    }
}

/// Max pooling with `window` over `planes` planes of h×w.
pub fn max_pool(x: &[f32], planes: usize, h: usize, w: usize, window: &PoolWindow) -> Vec<f32> {
    let [ho, wo] = window.out_size(h, w);
    let mut y = vec![0.0f32; planes * ho * wo];
    if ho * wo == 0 || h * w == 0 {
        return y;
    }
    y.par_chunks_mut(ho * wo).zip(x.par_chunks(h * w)).for_each(|(out, plane)| {
        for oh in 0..ho {
            for ow in 0..wo {
                out[oh * wo + ow] = window.max(plane, h, w, oh, ow);
            }
        }
    });
    y
}

/// ∂x of [`max_pool`] from its input, its output and ∂y: each window's gradient goes to its
/// maximum, summed where windows overlap. The maximum is found again as the first element
/// equal to the window's output: comparisons with a known value are independent of one
/// another, where a running maximum makes each wait for the one before (twice as slow on
/// DenseNet's stem). A NaN window takes the full search.
pub fn max_pool_backward(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    window: &PoolWindow,
) -> Vec<f32> {
    let [ho, wo] = window.out_size(h, w);
    let mut dx = vec![0.0f32; planes * h * w];
    if ho * wo == 0 || h * w == 0 {
        return dx;
    }
    let planes = dx.par_chunks_mut(h * w).zip(x.par_chunks(h * w));
    planes.zip(y.par_chunks(ho * wo).zip(dy.par_chunks(ho * wo))).for_each(|((dx, plane), (out, grad))| {
        for oh in 0..ho {
            let (row0, rows) = window.taps(oh, 0, h);
            for ow in 0..wo {
                let (col0, cols) = window.taps(ow, 1, w);
                let m = out[oh * wo + ow];
                let at = match m.is_nan() {
                    true => window.argmax(plane, h, w, oh, ow),
                    false => {
                        // Backwards, so that the last match kept is the first in row-major order.
                        let mut at = usize::MAX;
                        for r in (0..rows.len()).rev() {
                            let base = (row0 + r) * w + col0;
                            for (i, &v) in plane[base..base + cols.len()].iter().enumerate().rev() {
                                at = if v == m { base + i } else { at };
                            }
                        }
                        (at != usize::MAX).then_some(at)
                    }
                };
                if let Some(i) = at {
                    dx[i] += grad[oh * wo + ow];
                }
            }
        }
    });
    dx
}
