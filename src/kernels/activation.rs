//! The logistic sigmoid over all cores, and its backward from the saved output
//! (σ' = σ·(1 − σ)), where burn-flex recomputes the exponential.

use rayon::prelude::*;

/// Elements per task: large enough that splitting costs nothing noticeable.
const GRAIN: usize = 1 << 14;

/// σ(x) = 1/(1 + e^(−x)), written so that e^x never overflows.
pub fn sigmoid(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(GRAIN).zip(x.par_chunks(GRAIN)).for_each(|(ys, xs)| {
        for (o, &v) in ys.iter_mut().zip(xs) {
            *o = if v >= 0.0 {
                1.0 / (1.0 + (-v).exp())
            } else {
                let e = v.exp();
                e / (1.0 + e)
            };
        }
    });
    y
}

/// ∂x = ∂y·σ·(1 − σ), from the forward's output σ.
pub fn sigmoid_backward(output: &[f32], grad: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0f32; output.len()];
    dx.par_chunks_mut(GRAIN).zip(output.par_chunks(GRAIN).zip(grad.par_chunks(GRAIN))).for_each(|(d, (ys, gs))| {
        for ((o, &y), &g) in d.iter_mut().zip(ys).zip(gs) {
            *o = g * y * (1.0 - y);
        }
    });
    dx
}
