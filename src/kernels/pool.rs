//! Max pooling with a 2×2 window and stride 2 (LeNet's), over planes of H×W: the forward pass
//! over both cores, and a backward pass that finds each window's maximum again from the input
//! and the output instead of keeping an index tensor. burn-flex's pooling goes through its
//! general 3-D path with indices, and was a quarter of LeNet-BN's step.
//!
//! Semantics as PyTorch's: a NaN in a window is its maximum; the gradient goes to the first
//! element (in row-major order) holding the maximum; rows and columns past the last whole
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

/// The four values of window (oh, ow) of a plane.
#[inline(always)]
fn window(plane: &[f32], w: usize, oh: usize, ow: usize) -> [f32; 4] {
    let (top, bottom) = (&plane[2 * oh * w..], &plane[(2 * oh + 1) * w..]);
    [top[2 * ow], top[2 * ow + 1], bottom[2 * ow], bottom[2 * ow + 1]]
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
                    for oh in 0..ho {
                        for (ow, o) in out[oh * wo..(oh + 1) * wo].iter_mut().enumerate() {
                            let [a, b, c, d] = window(plane, w, oh, ow);
                            *o = max_nan(max_nan(max_nan(a, b), c), d);
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
                        for oh in 0..ho {
                            let (top, bottom) = dx[2 * oh * w..(2 * oh + 2) * w].split_at_mut(w);
                            for ow in 0..wo {
                                let (m, g) = (out[oh * wo + ow], grad[oh * wo + ow]);
                                let is_max = |v: f32| v == m || (v.is_nan() && m.is_nan());
                                let [a, b, c, _] = window(plane, w, oh, ow);
                                let (at_a, at_b, at_c) = (is_max(a), is_max(b), is_max(c));
                                let (to_b, to_c) = (!at_a && at_b, !at_a && !at_b && at_c);
                                let to_d = !(at_a || at_b || at_c);
                                top[2 * ow] = if at_a { g } else { 0.0 };
                                top[2 * ow + 1] = if to_b { g } else { 0.0 };
                                bottom[2 * ow] = if to_c { g } else { 0.0 };
                                bottom[2 * ow + 1] = if to_d { g } else { 0.0 };
                            }
                        }
                    }
                },
            )
        });
    dx
}
