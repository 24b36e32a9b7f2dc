//! The batch normalization of [`super`] on channels-last batches (N×H×W×C in memory: a row of
//! C values per pixel), the layout oneDNN's convolutions read and write without a reorder.
//! Every loop runs along a row, over the channels, which makes it SIMD code with one
//! accumulator per channel. Rows are split into fixed blocks: each block sums in f32, the
//! blocks' sums are added in f64 in block order, so the bits do not depend on the threads.

use std::mem::MaybeUninit;

use half::bf16;
use rayon::prelude::*;

use super::{inv_std, relu, relu_grad, scale_and_shift, Activation, NcsShape};
use crate::kernels::activation::logistic;
pub use crate::kernels::element::{round_to_bf16, Stored};
use crate::kernels::simd::vectorized;

/// Rows per block: a block's f32 sums stay short (the NCHW kernels' runs are as long), and a
/// batch of DenseNet's has hundreds of blocks to share between threads.
const ROWS_PER_BLOCK: usize = 128;

/// Per-channel sums of K quantities over all rows: `add(row, acc)` adds one row's terms into
/// the K accumulators of C channels.
fn channel_sums<const K: usize>(
    rows: usize,
    c: usize,
    add: impl Fn(usize, &mut [Vec<f32>; K]) + Sync,
) -> [Vec<f64>; K] {
    let blocks: Vec<[Vec<f32>; K]> = (0..rows.div_ceil(ROWS_PER_BLOCK))
        .into_par_iter()
        .map(|b| {
            let mut acc = std::array::from_fn(|_| vec![0.0f32; c]);
            vectorized(
                #[inline(always)]
                || {
                    for r in b * ROWS_PER_BLOCK..rows.min((b + 1) * ROWS_PER_BLOCK) {
                        add(r, &mut acc);
                    }
                },
            );
            acc
        })
        .collect();
    let mut total = std::array::from_fn(|_| vec![0.0f64; c]);
    for block in &blocks {
        for (t, b) in total.iter_mut().zip(block) {
            t.iter_mut().zip(b).for_each(|(t, &v)| *t += v as f64);
        }
    }
    total
}

/// A new batch of `rows` rows of C values, each written by `fill(row, out)`.
fn fill_rows<T: Send>(rows: usize, c: usize, fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    let len = rows * c;
    let mut out = Vec::with_capacity(len);
    if len > 0 {
        out.spare_capacity_mut()[..len].par_chunks_mut(ROWS_PER_BLOCK * c).enumerate().for_each(|(b, block)| {
            vectorized(
                #[inline(always)]
                || {
                    for (i, row) in block.chunks_exact_mut(c).enumerate() {
                        fill(b * ROWS_PER_BLOCK + i, row);
                    }
                },
            )
        });
    }
    // SAFETY: the blocks cover all `len` elements in whole rows, and `fill` writes each row.
    unsafe { out.set_len(len) };
    out
}

/// Row `r` of a batch of rows of `c` values.
#[inline(always)]
fn row<T>(x: &[T], r: usize, c: usize) -> &[T] {
    &x[r * c..][..c]
}

/// The batch's per-channel mean and biased variance (as [`super::statistics`]), in one pass
/// over the batch: each block of rows, while it is in cache, gives its sum and its squares
/// about its own mean, and the blocks combine in f64 by Chan's formula
/// (M₂ = Σ M₂ᵦ + nᵦ·(meanᵦ − mean)²).
pub fn statistics<T: Stored>(x: &[T], shape: NcsShape) -> (Vec<f32>, Vec<f32>) {
    let (rows, c, m) = (shape.n * shape.s, shape.c, shape.per_channel());
    let blocks: Vec<(usize, Vec<f32>, Vec<f32>)> = (0..rows.div_ceil(ROWS_PER_BLOCK))
        .into_par_iter()
        .map(|b| {
            let block = b * ROWS_PER_BLOCK..rows.min((b + 1) * ROWS_PER_BLOCK);
            let count = block.len();
            let (mut sum, mut squares) = (vec![0.0f32; c], vec![0.0f32; c]);
            vectorized(
                #[inline(always)]
                || {
                    let (sum, squares) = (&mut sum[..c], &mut squares[..c]);
                    for r in block.clone() {
                        let xs = row(x, r, c);
                        for j in 0..c {
                            sum[j] += xs[j].value();
                        }
                    }
                    let mean: Vec<f32> = sum.iter().map(|&s| s / count as f32).collect();
                    let mean = &mean[..c];
                    for r in block {
                        let xs = row(x, r, c);
                        for j in 0..c {
                            let d = xs[j].value() - mean[j];
                            squares[j] += d * d;
                        }
                    }
                },
            );
            (count, sum, squares)
        })
        .collect();
    let mut sum = vec![0.0f64; c];
    for (_, block_sum, _) in &blocks {
        sum.iter_mut().zip(block_sum).for_each(|(t, &v)| *t += v as f64);
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / m) as f32).collect();
    let mut squares = vec![0.0f64; c];
    for (count, block_sum, block_squares) in &blocks {
        let n = *count as f64;
        let terms = squares.iter_mut().zip(block_sum.iter().zip(block_squares)).zip(&sum);
        terms.for_each(|((t, (&s, &q)), &total)| {
            let apart = (s / *count as f32) as f64 - total / m;
            *t += q as f64 + n * apart * apart;
        });
    }
    (mean, squares.iter().map(|s| (s / m) as f32).collect())
}

/// `y = γ·(x − mean)/√(var + ε) + β` with the given statistics, then `activation` (as
/// [`super::normalize`]).
#[allow(clippy::too_many_arguments)]
pub fn normalize<T: Stored>(
    x: &[T],
    shape: NcsShape,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
    activation: Activation,
) -> Vec<f32> {
    normalize_as(x, shape, gamma, beta, mean, var, eps, activation, |v| v)
}

/// [`normalize`] with each output written as `store(y)`: f32 as it is, or rounded to bf16.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn normalize_as<T: Stored, U: Send>(
    x: &[T],
    shape: NcsShape,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
    activation: Activation,
    store: impl Fn(f32) -> U + Sync,
) -> Vec<U> {
    let (scale, shift) = scale_and_shift(gamma, beta, mean, var, eps);
    let c = shape.c;
    fill_rows(
        shape.n * shape.s,
        c,
        #[inline(always)]
        |r, out| {
            let terms = out.iter_mut().zip(row(x, r, c)).zip(scale.iter().zip(&shift));
            match activation {
                Activation::Identity => terms.for_each(|((o, &v), (&a, &b))| _ = o.write(store(v.value() * a + b))),
                Activation::Relu => terms.for_each(|((o, &v), (&a, &b))| _ = o.write(store(relu(v.value() * a + b)))),
                Activation::Sigmoid => {
                    terms.for_each(|((o, &v), (&a, &b))| _ = o.write(store(logistic(v.value() * a + b))))
                }
            }
        },
    )
}

/// [`forward_train`] with the output rounded to bf16 as it is written: the values a bf16
/// convolution reads, at half the memory traffic, and no conversion of its own.
pub fn forward_train_to_bf16<T: Stored>(
    x: &[T],
    shape: NcsShape,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    activation: Activation,
) -> (Vec<bf16>, Vec<f32>, Vec<f32>) {
    let (mean, var) = statistics(x, shape);
    let y = normalize_as(x, shape, gamma, beta, &mean, &var, eps, activation, round_to_bf16);
    (y, mean, var)
}

/// Training-mode forward, then `activation`: the output and the batch's mean and biased
/// variance (as [`super::forward_train`]).
pub fn forward_train<T: Stored>(
    x: &[T],
    shape: NcsShape,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    activation: Activation,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mean, var) = statistics(x, shape);
    let y = normalize(x, shape, gamma, beta, &mean, &var, eps, activation);
    (y, mean, var)
}

/// Gradients of the training-mode forward, with its ReLU where `relu`: (dx, dγ, dβ), as
/// [`super::backward_train`]. Along a row ∂β and Σ dy·(x − μ) come in one pass.
#[allow(clippy::too_many_arguments)]
pub fn backward_train<T: Stored>(
    x: &[T],
    shape: NcsShape,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
    relu: bool,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (rows, c, m) = (shape.n * shape.s, shape.c, shape.per_channel());
    let inv: Vec<f32> = var.iter().map(|&v| inv_std(v, eps)).collect();
    let (scale, shift) = scale_and_shift(gamma, beta, mean, var, eps);
    // The gradient reaching the normalization: dy, masked by the ReLU where there is one (the
    // loops are written twice so that the hot ones carry no test of `relu`).
    let [dbeta64, sums] = channel_sums(
        rows,
        c,
        #[inline(always)]
        |r, [db, s]| {
            // Indexed loops over slices of one length: bounds checks vanish and the loop
            // vectorizes (a zip of this many iterators was left as scalar SSE code).
            let (xs, gs, db, s) = (row(x, r, c), row(dy, r, c), &mut db[..c], &mut s[..c]);
            let (scale, shift, mean) = (&scale[..c], &shift[..c], &mean[..c]);
            match relu {
                true => {
                    for j in 0..c {
                        let v = xs[j].value();
                        let g = relu_grad(v * scale[j] + shift[j], gs[j]);
                        db[j] += g;
                        s[j] += g * (v - mean[j]);
                    }
                }
                false => {
                    for j in 0..c {
                        db[j] += gs[j];
                        s[j] += gs[j] * (xs[j].value() - mean[j]);
                    }
                }
            }
        },
    );
    let dgamma: Vec<f32> = sums.iter().zip(&inv).map(|(s, &i)| (s * i as f64) as f32).collect();
    let dbeta: Vec<f32> = dbeta64.iter().map(|&s| s as f32).collect();
    // dx = k·(dy − a − (x − mean)·b) per channel, as in the NCHW kernel.
    let a: Vec<f32> = dbeta64.iter().map(|&s| (s / m) as f32).collect();
    let b: Vec<f32> = (0..c).map(|ch| ((sums[ch] / m) * (inv[ch] as f64 * inv[ch] as f64)) as f32).collect();
    let dx = fill_rows(
        rows,
        c,
        #[inline(always)]
        |r, out| {
            let (xs, gs, out) = (row(x, r, c), row(dy, r, c), &mut out[..c]);
            let (k, shift, a, b, mean) = (&scale[..c], &shift[..c], &a[..c], &b[..c], &mean[..c]);
            match relu {
                true => {
                    for j in 0..c {
                        let v = xs[j].value();
                        let g = relu_grad(v * k[j] + shift[j], gs[j]);
                        out[j].write(k[j] * (g - a[j] - (v - mean[j]) * b[j]));
                    }
                }
                false => {
                    for j in 0..c {
                        out[j].write(k[j] * (gs[j] - a[j] - (xs[j].value() - mean[j]) * b[j]));
                    }
                }
            }
        },
    );
    (dx, dgamma, dbeta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::layout::{to_channels_last, to_nchw};
    use crate::test_util::{assert_close, pattern};

    /// Shapes with one channel, fewer channels than a SIMD register, DenseNet's many, and
    /// batches that end inside a block of rows.
    const SHAPES: [NcsShape; 4] = [
        NcsShape { n: 3, c: 1, s: 50 },
        NcsShape { n: 2, c: 5, s: 81 },
        NcsShape { n: 4, c: 64, s: 49 },
        NcsShape { n: 2, c: 24, s: 144 },
    ];

    /// Every function gives the NCHW kernel's values on the same batch, channels-last, to
    /// float rounding (the sums run in another order), with each activation.
    #[test]
    fn agrees_with_the_nchw_kernels() {
        for shape in SHAPES {
            let (n, c, s) = (shape.n, shape.c, shape.s);
            let x: Vec<f32> = pattern(n * c * s, 1).iter().map(|v| 2.0 * v + 0.5).collect();
            let dy = pattern(n * c * s, 2);
            let (gamma, beta) = (pattern(c, 3), pattern(c, 4));
            let (x_last, dy_last) = (to_channels_last(&x, n, c, s), to_channels_last(&dy, n, c, s));
            let what = |part: &str| format!("{shape:?}: {part}");
            for activation in [Activation::Identity, Activation::Relu, Activation::Sigmoid] {
                let (y, mean, var) = forward_train(&x_last, shape, &gamma, &beta, 1e-5, activation);
                let (want_y, want_mean, want_var) =
                    super::super::forward_train(&x, shape, &gamma, &beta, 1e-5, activation);
                assert_close(&to_nchw(&y, n, c, s), &want_y, 1e-5, &what("y"));
                assert_close(&mean, &want_mean, 1e-6, &what("mean"));
                assert_close(&var, &want_var, 1e-6, &what("variance"));
                let var: Vec<f32> = gamma.iter().map(|v| v.abs()).collect();
                let y = normalize(&x_last, shape, &gamma, &beta, &beta, &var, 1e-5, activation);
                let want = super::super::normalize(&x, shape, &gamma, &beta, &beta, &var, 1e-5, activation);
                assert_eq!(to_nchw(&y, n, c, s), want, "{}", what("evaluation"));
            }
            for relu in [false, true] {
                let (mean, var) = statistics(&x_last, shape);
                let (dx, dgamma, dbeta) =
                    backward_train(&x_last, shape, &gamma, &beta, &mean, &var, 1e-5, relu, &dy_last);
                let (want_dx, want_dgamma, want_dbeta) =
                    super::super::backward_train(&x, shape, &gamma, &beta, &mean, &var, 1e-5, relu, &dy);
                assert_close(&to_nchw(&dx, n, c, s), &want_dx, 1e-5, &what("dx"));
                assert_close(&dgamma, &want_dgamma, 1e-4, &what("dγ"));
                assert_close(&dbeta, &want_dbeta, 1e-4, &what("dβ"));
                // The same batch gives the same bits again.
                let again = backward_train(&x_last, shape, &gamma, &beta, &mean, &var, 1e-5, relu, &dy_last);
                assert!(again == (dx, dgamma, dbeta), "{}", what("not reproducible"));
            }
        }
    }

    /// The bf16 output is the f32 output rounded as `half` rounds, NaN and ties included.
    #[test]
    fn the_bf16_output_is_the_f32_output_rounded() {
        for shape in SHAPES {
            let (n, c, s) = (shape.n, shape.c, shape.s);
            let x: Vec<f32> = pattern(n * c * s, 1).iter().map(|v| 2.0 * v + 0.5).collect();
            let (gamma, beta) = (pattern(c, 3), pattern(c, 4));
            for activation in [Activation::Identity, Activation::Relu, Activation::Sigmoid] {
                let (y, mean, var) = forward_train(&x, shape, &gamma, &beta, 1e-5, activation);
                let (y16, mean16, var16) = forward_train_to_bf16(&x, shape, &gamma, &beta, 1e-5, activation);
                assert_eq!((mean16, var16), (mean, var));
                let want: Vec<bf16> = y.iter().map(|&v| bf16::from_f32(v)).collect();
                assert_eq!(y16, want, "{shape:?} {activation:?}");
            }
        }
        // Ties go to even, overflow to infinity, NaN stays NaN.
        let tie_down = f32::from_bits(0x3F80_8000);
        let tie_up = f32::from_bits(0x3F81_8000);
        for v in [tie_down, tie_up, f32::MAX, -f32::MAX, 1e-40, -0.0, f32::INFINITY] {
            assert_eq!(round_to_bf16(v).to_bits(), bf16::from_f32(v).to_bits(), "{v:e}");
        }
        assert!(round_to_bf16(f32::NAN).is_nan());
    }

    /// A bf16 batch gives exactly what its values widened to f32 give, in every function.
    #[test]
    fn a_bf16_batch_reads_as_its_f32_values() {
        for shape in SHAPES {
            let len = shape.n * shape.c * shape.s;
            let x16: Vec<bf16> = pattern(len, 1).iter().map(|v| bf16::from_f32(2.0 * v + 0.5)).collect();
            let x: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
            assert!(x16.iter().zip(&x).all(|(&h, &f)| h.value() == f));
            let (dy, gamma, beta) = (pattern(len, 2), pattern(shape.c, 3), pattern(shape.c, 4));
            for activation in [Activation::Identity, Activation::Relu, Activation::Sigmoid] {
                let what = format!("{shape:?} {activation:?}");
                assert!(
                    forward_train(&x16, shape, &gamma, &beta, 1e-5, activation)
                        == forward_train(&x, shape, &gamma, &beta, 1e-5, activation),
                    "{what}: forward"
                );
                assert!(
                    forward_train_to_bf16(&x16, shape, &gamma, &beta, 1e-5, activation)
                        == forward_train_to_bf16(&x, shape, &gamma, &beta, 1e-5, activation),
                    "{what}: forward to bf16"
                );
                let var: Vec<f32> = gamma.iter().map(|v| v.abs()).collect();
                assert!(
                    normalize(&x16, shape, &gamma, &beta, &beta, &var, 1e-5, activation)
                        == normalize(&x, shape, &gamma, &beta, &beta, &var, 1e-5, activation),
                    "{what}: evaluation"
                );
            }
            let (mean, var) = statistics(&x16, shape);
            for relu in [false, true] {
                assert!(
                    backward_train(&x16, shape, &gamma, &beta, &mean, &var, 1e-5, relu, &dy)
                        == backward_train(&x, shape, &gamma, &beta, &mean, &var, 1e-5, relu, &dy),
                    "{shape:?}: backward, relu {relu}"
                );
            }
        }
    }

    #[test]
    fn an_empty_batch_has_an_empty_output() {
        let shape = NcsShape { n: 0, c: 4, s: 9 };
        let (y, mean, _) = forward_train::<f32>(&[], shape, &[1.0; 4], &[0.0; 4], 1e-5, Activation::Relu);
        assert!(y.is_empty() && mean.len() == 4);
    }
}
