//! The pooling of [`super`] on channels-last batches (N×H×W×C in memory): a window's taps are
//! rows of C values, so every loop runs over the channels as SIMD code. The semantics are the
//! NCHW kernels', bit for bit: NaN is a window's maximum, the gradient goes to the first
//! element holding the maximum in row-major order (of NaNs the first for LeNet's 2×2 window,
//! the last for others), rows and columns past the last whole window are dropped.

use rayon::prelude::*;

use super::{max_nan, PoolWindow, LENETS_WINDOW};
use crate::kernels::simd::vectorized;

/// A batch's sizes: n samples of h×w pixels of c channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NhwcShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

/// 2×2 average pooling with stride 2, as [`super::avg_pool_2x2`].
pub fn avg_pool_2x2(x: &[f32], shape: NhwcShape) -> Vec<f32> {
    let NhwcShape { n, c, h, w } = shape;
    let (ho, wo) = (h / 2, w / 2);
    let mut y = vec![0.0f32; n * ho * wo * c];
    if ho * wo * c == 0 {
        return y;
    }
    // One task per output row: its two input rows.
    y.par_chunks_mut(wo * c).enumerate().for_each(|(r, out)| {
        let (sample, oh) = (r / ho, r % ho);
        let top = &x[((sample * h + 2 * oh) * w) * c..][..w * c];
        let bottom = &x[((sample * h + 2 * oh + 1) * w) * c..][..w * c];
        vectorized(
            #[inline(always)]
            || {
                for (ow, o) in out.chunks_exact_mut(c).enumerate() {
                    let (tl, tr) = (&top[2 * ow * c..][..c], &top[(2 * ow + 1) * c..][..c]);
                    let (bl, br) = (&bottom[2 * ow * c..][..c], &bottom[(2 * ow + 1) * c..][..c]);
                    let taps = tl.iter().zip(tr).zip(bl.iter().zip(br));
                    o.iter_mut().zip(taps).for_each(|(o, ((&a, &b), (&c, &d)))| *o = (a + b + c + d) * 0.25);
                }
            },
        )
    });
    y
}

/// ∂x of [`avg_pool_2x2`] from ∂y, as [`super::avg_pool_2x2_backward`].
pub fn avg_pool_2x2_backward(dy: &[f32], shape: NhwcShape) -> Vec<f32> {
    let NhwcShape { n, c, h, w } = shape;
    let (ho, wo) = (h / 2, w / 2);
    let mut dx = vec![0.0f32; n * h * w * c];
    if ho * wo * c == 0 {
        return dx;
    }
    // One task per pair of input rows (an odd last row stays zero).
    dx.par_chunks_mut(h * w * c).enumerate().for_each(|(sample, dx)| {
        vectorized(
            #[inline(always)]
            || {
                for oh in 0..ho {
                    let grad = &dy[((sample * ho + oh) * wo) * c..][..wo * c];
                    let (top, bottom) = dx[2 * oh * w * c..(2 * oh + 2) * w * c].split_at_mut(w * c);
                    for (ow, g) in grad.chunks_exact(c).enumerate() {
                        for row in [&mut top[2 * ow * c..][..2 * c], &mut bottom[2 * ow * c..][..2 * c]] {
                            let (left, right) = row.split_at_mut(c);
                            left.iter_mut().zip(right).zip(g).for_each(|((l, r), &g)| {
                                *l = g * 0.25;
                                *r = g * 0.25;
                            });
                        }
                    }
                }
            },
        )
    });
    dx
}

/// The pixels (indices in a sample's h×w) of window (oh, ow) that lie inside the plane, in
/// row-major order.
fn window_pixels(window: &PoolWindow, h: usize, w: usize, oh: usize, ow: usize) -> impl Iterator<Item = usize> {
    let ((row0, rows), (col0, cols)) = (window.taps(oh, 0, h), window.taps(ow, 1, w));
    let cols = cols.len();
    (row0..row0 + rows.len()).flat_map(move |r| (col0..col0 + cols).map(move |c| r * w + c))
}

/// Max pooling with `window`, as [`super::max_pool`] and [`super::max_pool_2x2`].
pub fn max_pool(x: &[f32], shape: NhwcShape, window: &PoolWindow) -> Vec<f32> {
    let NhwcShape { n, c, h, w } = shape;
    let [ho, wo] = window.out_size(h, w);
    let mut y = vec![f32::NEG_INFINITY; n * ho * wo * c];
    if ho * wo * c == 0 || h * w == 0 {
        return y;
    }
    y.par_chunks_mut(wo * c).enumerate().for_each(|(r, out)| {
        let (sample, oh) = (r / ho, r % ho);
        let plane = &x[sample * h * w * c..][..h * w * c];
        vectorized(
            #[inline(always)]
            || {
                for (ow, o) in out.chunks_exact_mut(c).enumerate() {
                    for p in window_pixels(window, h, w, oh, ow) {
                        o.iter_mut().zip(&plane[p * c..][..c]).for_each(|(m, &v)| *m = max_nan(*m, v));
                    }
                }
            },
        )
    });
    y
}

/// ∂x of [`max_pool`] from its input, its output and ∂y, as [`super::max_pool_backward`]:
/// each window's gradient to the first of its elements equal to the maximum, found along the
/// channels at once (what is still to be given, per channel, goes to the first match and then
/// is zero), summed where windows overlap. A window whose maximum is NaN in some channel gives
/// that channel's gradient to its NaN, found one channel at a time.
pub fn max_pool_backward(x: &[f32], y: &[f32], dy: &[f32], shape: NhwcShape, window: &PoolWindow) -> Vec<f32> {
    let NhwcShape { n, c, h, w } = shape;
    let [ho, wo] = window.out_size(h, w);
    let mut dx = vec![0.0f32; n * h * w * c];
    if ho * wo * c == 0 || h * w == 0 {
        return dx;
    }
    let first_nan = *window == LENETS_WINDOW;
    let len = h * w * c;
    dx.par_chunks_mut(len).zip(x.par_chunks(len)).enumerate().for_each_init(
        || Vec::with_capacity(window.kernel[0] * window.kernel[1]),
        |taps, (sample, (dx, plane))| {
            vectorized(
                #[inline(always)]
                || {
                    for oh in 0..ho {
                        for ow in 0..wo {
                            taps.clear();
                            taps.extend(window_pixels(window, h, w, oh, ow).map(|p| p * c));
                            let at = ((sample * ho + oh) * wo + ow) * c;
                            let (m, g) = (&y[at..][..c], &dy[at..][..c]);
                            let mut has_nan = false;
                            for ch in (0..c).step_by(LANES) {
                                has_nan |= window_backward(dx, plane, taps, &m[ch..], &g[ch..], ch);
                            }
                            if has_nan {
                                for ch in (0..c).filter(|&ch| m[ch].is_nan()) {
                                    let mut nans = taps.iter().filter(|&&p| plane[p + ch].is_nan());
                                    let p = if first_nan { nans.next() } else { nans.next_back() };
                                    if let Some(&p) = p {
                                        dx[p + ch] += g[ch];
                                    }
                                }
                            }
                        }
                    }
                },
            )
        },
    );
    dx
}

/// Channels a step of [`window_backward`] handles at once: a register's worth.
const LANES: usize = 8;

/// One window's gradient for channels `ch..ch + LANES` (fewer at the end of a row) given their
/// maxima `m` and gradients `g`: to the first tap (offsets of pixel rows in `taps`) equal to
/// the maximum, the gradient still to be given held in registers across the taps. Whether
/// some maximum is NaN (which no tap equals).
#[inline(always)]
fn window_backward(dx: &mut [f32], plane: &[f32], taps: &[usize], m: &[f32], g: &[f32], ch: usize) -> bool {
    if m.len() < LANES {
        let mut left = g.to_vec();
        for &p in taps {
            let (d, v) = (&mut dx[p + ch..][..m.len()], &plane[p + ch..][..m.len()]);
            for i in 0..m.len() {
                let hit = v[i] == m[i];
                d[i] += if hit { left[i] } else { 0.0 };
                left[i] = if hit { 0.0 } else { left[i] };
            }
        }
        return m.iter().any(|v| v.is_nan());
    }
    let m: [f32; LANES] = m[..LANES].try_into().unwrap();
    let mut left: [f32; LANES] = g[..LANES].try_into().unwrap();
    for &p in taps {
        let d: &mut [f32; LANES] = (&mut dx[p + ch..][..LANES]).try_into().unwrap();
        let v: &[f32; LANES] = plane[p + ch..][..LANES].try_into().unwrap();
        for i in 0..LANES {
            let hit = v[i] == m[i];
            d[i] += if hit { left[i] } else { 0.0 };
            left[i] = if hit { 0.0 } else { left[i] };
        }
    }
    m.iter().fold(false, |any, v| any | v.is_nan())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::layout::{to_channels_last, to_nchw};
    use crate::test_util::pattern;

    /// Bitwise equality, NaN equal to NaN.
    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
    }

    /// A batch with ties (values on a coarse grid) and a few NaNs.
    fn batch(len: usize, seed: u32) -> Vec<f32> {
        let mut x: Vec<f32> = pattern(len, seed).iter().map(|v| (v * 4.0).round()).collect();
        for i in (5..len).step_by(97) {
            x[i] = f32::NAN;
        }
        x
    }

    /// Every window the networks use and some they don't, with odd sizes, give the NCHW
    /// kernels' values and gradients on the same batch, bit for bit.
    #[test]
    fn agrees_with_the_nchw_kernels_bit_for_bit() {
        let windows = [
            LENETS_WINDOW,
            PoolWindow { kernel: [3, 3], stride: [2, 2], padding: [1, 1] },
            PoolWindow { kernel: [3, 3], stride: [1, 1], padding: [1, 1] },
            PoolWindow { kernel: [2, 3], stride: [1, 2], padding: [1, 0] },
        ];
        for shape in [NhwcShape { n: 2, c: 5, h: 9, w: 8 }, NhwcShape { n: 3, c: 16, h: 6, w: 7 }] {
            let NhwcShape { n, c, h, w } = shape;
            let s = h * w;
            let x = batch(n * c * s, 1);
            let x_last = to_channels_last(&x, n, c, s);
            for window in &windows {
                let [ho, wo] = window.out_size(h, w);
                let what = format!("{shape:?} {window:?}");
                let want_y = match *window == LENETS_WINDOW {
                    true => super::super::max_pool_2x2(&x, n * c, h, w),
                    false => super::super::max_pool(&x, n * c, h, w, window),
                };
                let y = max_pool(&x_last, shape, window);
                assert!(same_bits(&to_nchw(&y, n, c, ho * wo), &want_y), "{what}: max pool");
                let dy = pattern(want_y.len(), 2);
                let want_dx = match *window == LENETS_WINDOW {
                    true => super::super::max_pool_2x2_backward(&x, &want_y, &dy, n * c, h, w),
                    false => super::super::max_pool_backward(&x, &want_y, &dy, n * c, h, w, window),
                };
                let dx = max_pool_backward(&x_last, &y, &to_channels_last(&dy, n, c, ho * wo), shape, window);
                assert!(same_bits(&to_nchw(&dx, n, c, s), &want_dx), "{what}: max pool's gradient");
            }
            let y = avg_pool_2x2(&x_last, shape);
            let want = super::super::avg_pool_2x2(&x, n * c, h, w);
            assert!(same_bits(&to_nchw(&y, n, c, (h / 2) * (w / 2)), &want), "{shape:?}: avg pool");
            let dy = pattern(want.len(), 3);
            let dx = avg_pool_2x2_backward(&to_channels_last(&dy, n, c, (h / 2) * (w / 2)), shape);
            let want = super::super::avg_pool_2x2_backward(&dy, n * c, h, w);
            assert!(same_bits(&to_nchw(&dx, n, c, s), &want), "{shape:?}: avg pool's gradient");
        }
    }
}
