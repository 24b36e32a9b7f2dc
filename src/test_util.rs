//! Helpers shared by the unit tests.

use burn::prelude::*;

/// The values of a tensor, row-major.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Asserts that two sequences agree element-wise to `tol` (absolute), naming the worst element.
#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let (i, diff) = got.iter().zip(want).map(|(g, w)| (g - w).abs()).enumerate().fold((0, 0.0f32), |best, (i, d)| {
        if d > best.1 || d.is_nan() {
            (i, d)
        } else {
            best
        }
    });
    assert!(
        diff <= tol,
        "{what}: element {i} differs by {diff:e} (got {}, want {}), tolerance {tol:e}",
        got[i],
        want[i]
    );
}

/// The largest absolute difference between two sequences of the same length.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// `len` values spread over [−1, 1), a fixed pattern per `seed` (no random generator needed).
pub fn pattern(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}
