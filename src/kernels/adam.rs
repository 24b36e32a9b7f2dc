//! One Adam update in a single pass over parameter, gradient and both moments, with burn's
//! (and PyTorch's) formula and operation order:
//!
//! ```text
//!   m₁ = β₁·m₁ + (1 − β₁)·g,   m₂ = β₂·m₂ + (1 − β₂)·g²
//!   p  = p − lr·(m₁·c)/(√m₂ + ε·√(1 − β₂ᵗ)),   c = √(1 − β₂ᵗ)/(1 − β₁ᵗ)
//! ```
//!
//! burn's Adam makes a dozen tensor passes (and allocations) for the same update.

use rayon::prelude::*;

use super::simd::vectorized;

/// The scalars of step t: `[lr, β₁, β₂, c, ε·√(1 − β₂ᵗ)]`.
pub type AdamScalars = [f32; 5];

/// The scalars of step `time` (1 for the first).
pub fn scalars(lr: f64, beta_1: f32, beta_2: f32, epsilon: f32, time: usize) -> AdamScalars {
    let t = time as i32;
    let bias_correction2_sqrt = (1.0 - beta_2.powi(t)).sqrt();
    let combined = bias_correction2_sqrt / (1.0 - beta_1.powi(t));
    [lr as f32, beta_1, beta_2, combined, epsilon * bias_correction2_sqrt]
}

const GRAIN: usize = 1 << 14;

/// Updates `param`, `m1` and `m2` in place with gradient `grad`.
pub fn step(param: &mut [f32], grad: &[f32], m1: &mut [f32], m2: &mut [f32], s: AdamScalars) {
    let [lr, b1, b2, combined, eps] = s;
    let (f1, f2) = (1.0 - b1, 1.0 - b2);
    param
        .par_chunks_mut(GRAIN)
        .zip(grad.par_chunks(GRAIN))
        .zip(m1.par_chunks_mut(GRAIN).zip(m2.par_chunks_mut(GRAIN)))
        .for_each(|((p, g), (m1, m2))| {
            vectorized(
                #[inline(always)]
                || {
                    for (((p, &g), m1), m2) in p.iter_mut().zip(g).zip(m1.iter_mut()).zip(m2.iter_mut()) {
                        *m1 = *m1 * b1 + g * f1;
                        *m2 = *m2 * b2 + g * g * f2;
                        *p -= (*m1 * combined) / (m2.sqrt() + eps) * lr;
                    }
                },
            )
        });
}
