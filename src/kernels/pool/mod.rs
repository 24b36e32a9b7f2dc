//! Max pooling over planes of H×W. burn-flex's pooling goes through its general 3-D path with
//! an index tensor; it was a quarter of LeNet-BN's step and 8% of DenseNet's (the stem's 3×3).
//! LeNet's 2×2 window with stride 2 has a forward pass over both cores and a branchless
//! backward, eight windows at a time in AVX2 registers, that finds each window's maximum again
//! from the input and the output; any other window ([`PoolWindow`]) a separable forward (down
//! the rows, then along them) and a backward per window that also finds the maximum again
//! instead of storing its index.
//!
//! Semantics as PyTorch's: a NaN in a window is its maximum; the gradient goes to the first
//! element (in row-major order) holding the maximum (for 2×2 also the first NaN; for other
//! windows, as burn and PyTorch have it there, the last); rows and columns past the last whole
//! window are dropped (floor) and get zero gradient.
//!
//! [`channels_last`] pools channels-last (N×H×W×C) batches with the same semantics.

use super::simd::vectorized;
use rayon::prelude::*;

pub mod channels_last;

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

/// `planes` planes of h×w in, planes of (h/2)×(w/2) out: each output `f` of its window's
/// top-left, top-right, bottom-left and bottom-right values.
#[inline(always)]
fn pool_2x2(x: &[f32], planes: usize, h: usize, w: usize, f: impl Fn(f32, f32, f32, f32) -> f32 + Sync) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    let mut y = vec![0.0f32; planes * ho * wo];
    if ho * wo == 0 {
        return y;
    }
    y.par_chunks_mut(PLANES_PER_TASK * ho * wo).zip(x.par_chunks(PLANES_PER_TASK * h * w)).for_each(|(ys, xs)| {
        vectorized(
            #[inline(always)]
            || {
                for (out, plane) in ys.chunks_exact_mut(ho * wo).zip(xs.chunks_exact(h * w)) {
                    for (oh, out) in out.chunks_exact_mut(wo).enumerate() {
                        let (top, bottom) = rows(plane, w, wo, oh);
                        // Zipped pairs, no indexing: the loop becomes SIMD code.
                        for ((o, t), b) in out.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                            *o = f(t[0], t[1], b[0], b[1]);
                        }
                    }
                }
            },
        )
    });
    y
}

/// LeNet's 2×2 max pooling, stride 2.
pub fn max_pool_2x2(x: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    pool_2x2(x, planes, h, w, |a, b, c, d| max_nan(max_nan(max_nan(a, b), c), d))
}

/// ∂x from the input, the output and ∂y: each window's ∂y goes to its first element equal to
/// the window's output (or, for a NaN output, its first NaN). Every element of a window is
/// written, the gradient or zero, so the rows are written in order and without branches.
pub fn max_pool_2x2_backward(x: &[f32], y: &[f32], dy: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    if ho * wo == 0 {
        return vec![0.0; planes * h * w];
    }
    let mut dx = Vec::with_capacity(planes * h * w);
    let per_task = (PLANES_PER_TASK * h * w, PLANES_PER_TASK * ho * wo);
    let vector = super::simd::available();
    dx.spare_capacity_mut()[..planes * h * w]
        .par_chunks_mut(per_task.0)
        .zip(x.par_chunks(per_task.0))
        .zip(y.par_chunks(per_task.1).zip(dy.par_chunks(per_task.1)))
        .for_each(|((dxs, xs), (ys, dys))| {
            let planes = dxs.chunks_exact_mut(h * w).zip(xs.chunks_exact(h * w));
            for ((dx, plane), (out, grad)) in planes.zip(ys.chunks_exact(ho * wo).zip(dys.chunks_exact(ho * wo))) {
                for (oh, (out, grad)) in out.chunks_exact(wo).zip(grad.chunks_exact(wo)).enumerate() {
                    let x_rows = rows(plane, w, wo, oh);
                    let (top, bottom) = dx[2 * oh * w..(2 * oh + 2) * w].split_at_mut(w);
                    // An odd width's last column is in no window.
                    top[2 * wo..].iter_mut().chain(&mut bottom[2 * wo..]).for_each(|v| _ = v.write(0.0));
                    let dx_rows = (&mut top[..2 * wo], &mut bottom[..2 * wo]);
                    match vector {
                        // SAFETY: the CPU has AVX2 (`simd::available`).
                        true => unsafe { window_grads_avx2(x_rows, out, grad, dx_rows.0, dx_rows.1) },
                        false => window_grads(x_rows, out, grad, dx_rows.0, dx_rows.1),
                    }
                }
                // As is an odd height's last row.
                dx[2 * ho * w..].iter_mut().for_each(|v| _ = v.write(0.0));
            }
        });
    // SAFETY: every element was written above: each plane's windows, and the rows and
    // columns past them. Not zeroing ∂x first saves a pass.
    unsafe { dx.set_len(planes * h * w) };
    dx
}

type Uninit = std::mem::MaybeUninit<f32>;

/// One output row's windows of [`max_pool_2x2_backward`]: `x` the two input rows (2·wo
/// values each), `out` and `grad` the row's outputs and their gradients, `top` and `bottom`
/// the two rows of ∂x they write.
fn window_grads(x: (&[f32], &[f32]), out: &[f32], grad: &[f32], top: &mut [Uninit], bottom: &mut [Uninit]) {
    let dx_rows = top.chunks_exact_mut(2).zip(bottom.chunks_exact_mut(2));
    for (((top, bottom), (a, c)), (&m, &g)) in
        dx_rows.zip(x.0.chunks_exact(2).zip(x.1.chunks_exact(2))).zip(out.iter().zip(grad))
    {
        // `&` and `|`, not `&&` and `||`: no branches on the data.
        let is_max = |v: f32| (v == m) | (v.is_nan() & m.is_nan());
        let (at_a, at_b, at_c) = (is_max(a[0]), is_max(a[1]), is_max(c[0]));
        let (to_b, to_c) = (!at_a & at_b, !at_a & !at_b & at_c);
        let to_d = !(at_a | at_b | at_c);
        top[0].write(if at_a { g } else { 0.0 });
        top[1].write(if to_b { g } else { 0.0 });
        bottom[0].write(if to_c { g } else { 0.0 });
        bottom[1].write(if to_d { g } else { 0.0 });
    }
}

/// [`window_grads`] for the row's windows eight at a time, in AVX2 registers, the last fewer
/// than eight with masked loads and stores (LeNet's second pooling has rows of five windows).
/// The compiler does not vectorize the pairwise loop above: it was 4–6× the forward pass's
/// time.
///
/// Eight windows span 16 input values, two registers. `_mm256_shuffle_ps` takes their even
/// and odd elements (each window's left and right value) in the window order 0 1 4 5 2 3 6 7;
/// the outputs and gradients are put in the same order with one 64-bit permute, and
/// `_mm256_unpack{lo,hi}_ps` undo the order when the results are interleaved again.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn window_grads_avx2(x: (&[f32], &[f32]), out: &[f32], grad: &[f32], top: &mut [Uninit], bottom: &mut [Uninit]) {
    use std::arch::x86_64::*;
    let windows = out.len();
    assert!(x.0.len() >= 2 * windows && x.1.len() >= 2 * windows && grad.len() >= windows);
    assert!(top.len() >= 2 * windows && bottom.len() >= 2 * windows);
    // Lane i of a register of window values (or of the 8 + i-th value for `half = 8`) holds
    // one of the first `count` values.
    let first = |count: usize, half: i32| {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(count as i32 - half), lanes)
    };
    let (top, bottom) = (top.as_mut_ptr().cast::<f32>(), bottom.as_mut_ptr().cast::<f32>());
    for k in (0..windows).step_by(8) {
        let left = windows - k;
        // `wrapping_add`: a masked tail's second register may start past the row's end.
        let (ptr, two) = (|s: &[f32], at: usize| s.as_ptr().wrapping_add(at), 2 * left.min(8));
        let (m, g, t0, t1, b0, b1);
        if left >= 8 {
            (m, g) = (_mm256_loadu_ps(ptr(out, k)), _mm256_loadu_ps(ptr(grad, k)));
            (t0, t1) = (_mm256_loadu_ps(ptr(x.0, 2 * k)), _mm256_loadu_ps(ptr(x.0, 2 * k + 8)));
            (b0, b1) = (_mm256_loadu_ps(ptr(x.1, 2 * k)), _mm256_loadu_ps(ptr(x.1, 2 * k + 8)));
        } else {
            // Masked-off lanes read nothing (and as zeros); their results are not stored.
            let (one, lo, hi) = (first(left, 0), first(two, 0), first(two, 8));
            (m, g) = (_mm256_maskload_ps(ptr(out, k), one), _mm256_maskload_ps(ptr(grad, k), one));
            (t0, t1) = (_mm256_maskload_ps(ptr(x.0, 2 * k), lo), _mm256_maskload_ps(ptr(x.0, 2 * k + 8), hi));
            (b0, b1) = (_mm256_maskload_ps(ptr(x.1, 2 * k), lo), _mm256_maskload_ps(ptr(x.1, 2 * k + 8), hi));
        }
        let scrambled = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
        let is_nan = |v: __m256| _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v);
        let (m, g) = (scrambled(m), scrambled(g));
        let (a, b) = (_mm256_shuffle_ps::<0b10_00_10_00>(t0, t1), _mm256_shuffle_ps::<0b11_01_11_01>(t0, t1));
        let c = _mm256_shuffle_ps::<0b10_00_10_00>(b0, b1);
        let m_nan = is_nan(m);
        let is_max = |v: __m256| _mm256_or_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(v, m), _mm256_and_ps(is_nan(v), m_nan));
        let (at_a, at_b, at_c) = (is_max(a), is_max(b), is_max(c));
        let to_b = _mm256_andnot_ps(at_a, at_b);
        let a_or_b = _mm256_or_ps(at_a, at_b);
        let to_c = _mm256_andnot_ps(a_or_b, at_c);
        let to_d = _mm256_andnot_ps(_mm256_or_ps(a_or_b, at_c), _mm256_castsi256_ps(_mm256_set1_epi32(-1)));
        let (ga, gb, gc, gd) =
            (_mm256_and_ps(at_a, g), _mm256_and_ps(to_b, g), _mm256_and_ps(to_c, g), _mm256_and_ps(to_d, g));
        let rows = [
            (top.wrapping_add(2 * k), _mm256_unpacklo_ps(ga, gb), _mm256_unpackhi_ps(ga, gb)),
            (bottom.wrapping_add(2 * k), _mm256_unpacklo_ps(gc, gd), _mm256_unpackhi_ps(gc, gd)),
        ];
        for (dst, lo, hi) in rows {
            if left >= 8 {
                _mm256_storeu_ps(dst, lo);
                _mm256_storeu_ps(dst.add(8), hi);
            } else {
                _mm256_maskstore_ps(dst, first(two, 0), lo);
                _mm256_maskstore_ps(dst.wrapping_add(8), first(two, 8), hi);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn window_grads_avx2(x: (&[f32], &[f32]), out: &[f32], grad: &[f32], top: &mut [Uninit], bottom: &mut [Uninit]) {
    window_grads(x, out, grad, top, bottom)
}

/// 2×2 average pooling with stride 2 (DenseNet's transitions): `planes` planes of h×w in,
/// planes of (h/2)×(w/2) out, an odd last row or column dropped. burn-flex takes it through its
/// general 3-D path, 4% of DenseNet's step with its backward.
pub fn avg_pool_2x2(x: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    pool_2x2(x, planes, h, w, |a, b, c, d| (a + b + c + d) * 0.25)
}

/// ∂x of [`avg_pool_2x2`] from ∂y: a quarter of each window's gradient to each of its four
/// elements, zero to a dropped row or column.
pub fn avg_pool_2x2_backward(dy: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    let mut dx = vec![0.0f32; planes * h * w];
    if ho * wo == 0 {
        return dx;
    }
    dx.par_chunks_mut(PLANES_PER_TASK * h * w).zip(dy.par_chunks(PLANES_PER_TASK * ho * wo)).for_each(|(dxs, gs)| {
        vectorized(
            #[inline(always)]
            || {
                for (plane, grad) in dxs.chunks_exact_mut(h * w).zip(gs.chunks_exact(ho * wo)) {
                    for (oh, grad) in grad.chunks_exact(wo).enumerate() {
                        let (top, bottom) = plane[2 * oh * w..(2 * oh + 2) * w].split_at_mut(w);
                        let pairs = top[..2 * wo].chunks_exact_mut(2).zip(bottom[..2 * wo].chunks_exact_mut(2));
                        for ((t, b), &g) in pairs.zip(grad) {
                            let q = g * 0.25;
                            t.fill(q);
                            b.fill(q);
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
}

/// Max pooling with `window` over `planes` planes of h×w. Max is separable: each output row
/// first takes the maximum down the window's rows for every column (a contiguous loop that
/// becomes SIMD code) into a row padded with −∞, where every window is whole, then across
/// each window's columns of that row; on DenseNet's stem 2.8× faster than taking each
/// window's nine values in turn.
pub fn max_pool(x: &[f32], planes: usize, h: usize, w: usize, window: &PoolWindow) -> Vec<f32> {
    let [ho, wo] = window.out_size(h, w);
    let mut y = vec![0.0f32; planes * ho * wo];
    if ho * wo == 0 || h * w == 0 {
        return y;
    }
    let ([kw, sw], pad) = ([window.kernel[1], window.stride[1]], window.padding[1]);
    y.par_chunks_mut(ho * wo).zip(x.par_chunks(h * w)).for_each_init(
        || vec![f32::NEG_INFINITY; w + 2 * pad],
        |padded, (out, plane)| {
            vectorized(
                #[inline(always)]
                || {
                    for (oh, out) in out.chunks_exact_mut(wo).enumerate() {
                        let (row0, rows) = window.taps(oh, 0, h);
                        let down = &mut padded[pad..pad + w];
                        down.fill(f32::NEG_INFINITY);
                        for row in plane.chunks_exact(w).skip(row0).take(rows.len()) {
                            down.iter_mut().zip(row).for_each(|(m, &v)| *m = max_nan(*m, v));
                        }
                        for (ow, o) in out.iter_mut().enumerate() {
                            let taps = &padded[ow * sw..ow * sw + kw];
                            *o = match taps {
                                &[a, b, c] => max_nan(max_nan(a, b), c),
                                _ => taps.iter().fold(f32::NEG_INFINITY, |m, &v| max_nan(m, v)),
                            };
                        }
                    }
                },
            )
        },
    );
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
    let three_by_three = window.kernel == [3, 3];
    let planes = dx.par_chunks_mut(h * w).zip(x.par_chunks(h * w));
    planes.zip(y.par_chunks(ho * wo).zip(dy.par_chunks(ho * wo))).for_each(|((dx, plane), (out, grad))| {
        for oh in 0..ho {
            let (row0, rows) = window.taps(oh, 0, h);
            for ow in 0..wo {
                let (col0, cols) = window.taps(ow, 1, w);
                let m = out[oh * wo + ow];
                let at = if m.is_nan() {
                    window.argmax(plane, h, w, oh, ow)
                } else if three_by_three && rows.len() == 3 && cols.len() == 3 {
                    // The stems' window inside the plane: a loop of known length, unrolled.
                    first_equal::<3>(plane, w, row0 * w + col0, [3, 3], m)
                } else {
                    first_equal::<0>(plane, w, row0 * w + col0, [rows.len(), cols.len()], m)
                };
                if let Some(i) = at {
                    dx[i] += grad[oh * wo + ow];
                }
            }
        }
    });
    dx
}

/// The index in `plane` (rows of `w`) of the first element equal to `m`, in row-major order,
/// of the rows×cols block that starts at `base`; `None` if there is none. With `K` > 0 the
/// block is K×K and the loops have a known length.
#[inline(always)]
fn first_equal<const K: usize>(
    plane: &[f32],
    w: usize,
    base: usize,
    [rows, cols]: [usize; 2],
    m: f32,
) -> Option<usize> {
    let (rows, cols) = if K > 0 { (K, K) } else { (rows, cols) };
    let mut at = usize::MAX;
    // Backwards, so that the last match kept is the first in row-major order.
    for r in (0..rows).rev() {
        let start = base + r * w;
        for (i, &v) in plane[start..start + cols].iter().enumerate().rev() {
            at = if v == m { start + i } else { at };
        }
    }
    (at != usize::MAX).then_some(at)
}
