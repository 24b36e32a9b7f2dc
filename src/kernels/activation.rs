//! The logistic sigmoid over all cores, and its backward from the saved output
//! (σ' = σ·(1 − σ)), where burn-flex recomputes the exponential. The exponential is Cephes'
//! `expf` polynomial, written without branches or library calls so that the compiler turns the
//! loop into SIMD code (the C library's `expf` is one call per element).

use super::simd::vectorized;
use rayon::prelude::*;

/// Elements per task: large enough that splitting costs nothing noticeable.
const GRAIN: usize = 1 << 14;

/// e^x for x ≤ 0 (to within 2 ulp; inputs under −87.3 give e^−87.3 ≈ 1.24e−38): Cephes'
/// range reduction x = n·ln 2 + r, |r| ≤ ln 2 / 2, and its degree-6 polynomial for e^r.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, so that n·ln 2 is subtracted without rounding error.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer without a `floor` call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.3);
    let rounded = x * LOG2E + ROUND;
    let n = rounded - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let e_r = p * r * r + r + 1.0;
    // 2ⁿ from its exponent bits (−126 ≤ n ≤ 0 here, a normal number). `rounded` is 1.5·2²³ + n,
    // whose low bits are n itself: shifting n + 127 into the exponent field needs no float to
    // integer conversion, which would not vectorise (`as i32` saturates and maps NaN to 0).
    e_r * f32::from_bits(rounded.to_bits().wrapping_add(127) << 23)
}

/// σ(v) = 1/(1 + e^(−v)), from e^(−|v|) so that the exponential never overflows; branch-free
/// so that loops over it become SIMD code (batch normalization's fused pass calls it too).
#[inline(always)]
pub fn logistic(v: f32) -> f32 {
    let e = exp_nonpositive(-v.abs());
    let s = 1.0 / (1.0 + e);
    // σ(v) for v ≥ 0, σ(−|v|) = 1 − σ(|v|) = e·σ(|v|) for v < 0; NaN stays NaN.
    if v >= 0.0 {
        s
    } else if v < 0.0 {
        e * s
    } else {
        v
    }
}

/// The sigmoid of every element, over all cores.
pub fn sigmoid(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(GRAIN).zip(x.par_chunks(GRAIN)).for_each(|(ys, xs)| {
        vectorized(
            #[inline(always)]
            || {
                for (o, &v) in ys.iter_mut().zip(xs) {
                    *o = logistic(v);
                }
            },
        )
    });
    y
}

/// ∂x = ∂y·σ·(1 − σ), from the forward's output σ.
pub fn sigmoid_backward(output: &[f32], grad: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0f32; output.len()];
    dx.par_chunks_mut(GRAIN).zip(output.par_chunks(GRAIN).zip(grad.par_chunks(GRAIN))).for_each(|(d, (ys, gs))| {
        vectorized(
            #[inline(always)]
            || {
                for ((o, &y), &g) in d.iter_mut().zip(ys).zip(gs) {
                    *o = g * y * (1.0 - y);
                }
            },
        )
    });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exponential_is_accurate_over_its_whole_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (ours, exact) = (exp_nonpositive(x) as f64, (x as f64).exp());
            worst = worst.max(((ours - exact) / exact).abs());
            x += 0.001_37;
        }
        assert!(worst < 3.0e-7, "relative error {worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) > 0.0 && exp_nonpositive(-1000.0) < 1.3e-38);
    }

    #[test]
    fn the_sigmoid_is_accurate_and_saturates() {
        let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.025).collect();
        for (&x, &y) in xs.iter().zip(&sigmoid(&xs)) {
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!((y as f64 - exact).abs() <= 1e-7 + 3e-7 * exact, "σ({x}) = {y}, exact {exact}");
        }
        let ends = sigmoid(&[f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
        assert_eq!(ends[0], 1.0);
        assert!((0.0..1.3e-38).contains(&ends[1]), "{}", ends[1]);
        assert!(ends[2].is_nan(), "a NaN must stay NaN (the training loop stops on it)");
    }
}
