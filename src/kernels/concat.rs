//! Concatenation of two batches along the channels (DenseNet's dense blocks) in either layout,
//! and its backward, the split. Either way each output row (a sample in NCHW, a pixel
//! channels-last) is a row of the first input followed by a row of the second, so one
//! interleaving serves both and a channels-last batch stays channels-last. In bf16 training
//! the output may be bf16 ([`cat_channels_to_bf16`]): batch normalization and the next
//! concatenation are all that read it, at half the memory traffic.

use std::mem::MaybeUninit;

use half::bf16;
use rayon::prelude::*;

use super::element::Stored;
use super::layout::Layout;
use super::simd::vectorized;

/// Rows per task.
const ROWS_PER_TASK: usize = 64;

/// The rows and their lengths, in floats, of a batch of `n` samples of `c` channels of `s`
/// pixels in `layout`.
fn rows(n: usize, c: usize, s: usize, layout: Layout) -> (usize, usize) {
    match layout {
        Layout::Nchw => (n, c * s),
        Layout::ChannelsLast => (n * s, c),
    }
}

fn copy(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
    assert_eq!(src.len(), dst.len());
    // SAFETY: same lengths (asserted), and a fresh output cannot overlap an input.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<f32>(), src.len()) }
}

/// `a` (n×ca×s) and `b` (n×cb×s), both in `layout`, concatenated into n×(ca + cb)×s in
/// `layout`.
pub fn cat_channels(a: &[f32], b: &[f32], n: usize, [ca, cb]: [usize; 2], s: usize, layout: Layout) -> Vec<f32> {
    let ((rows, la), (_, lb)) = (self::rows(n, ca, s, layout), self::rows(n, cb, s, layout));
    assert!(a.len() == rows * la && b.len() == rows * lb, "cat_channels: inputs of the wrong lengths");
    let len = rows * (la + lb);
    let mut out = Vec::with_capacity(len);
    if len > 0 {
        out.spare_capacity_mut()[..len].par_chunks_mut(ROWS_PER_TASK * (la + lb)).enumerate().for_each(|(t, block)| {
            for (i, row) in block.chunks_exact_mut(la + lb).enumerate() {
                let r = t * ROWS_PER_TASK + i;
                let (first, second) = row.split_at_mut(la);
                copy(&a[r * la..][..la], first);
                copy(&b[r * lb..][..lb], second);
            }
        });
    }
    // SAFETY: every row of the output was written whole above.
    unsafe { out.set_len(len) };
    out
}

/// [`cat_channels`] with every value rounded to bf16 as it is written (a bf16 input's as it
/// is): the inputs may be f32 or bf16.
pub fn cat_channels_to_bf16<A: Stored, B: Stored>(
    a: &[A],
    b: &[B],
    n: usize,
    [ca, cb]: [usize; 2],
    s: usize,
    layout: Layout,
) -> Vec<bf16> {
    let ((rows, la), (_, lb)) = (self::rows(n, ca, s, layout), self::rows(n, cb, s, layout));
    assert!(a.len() == rows * la && b.len() == rows * lb, "cat_channels_to_bf16: inputs of the wrong lengths");
    let len = rows * (la + lb);
    let mut out = Vec::with_capacity(len);
    if len > 0 {
        out.spare_capacity_mut()[..len].par_chunks_mut(ROWS_PER_TASK * (la + lb)).enumerate().for_each(|(t, block)| {
            vectorized(
                #[inline(always)]
                || {
                    for (i, row) in block.chunks_exact_mut(la + lb).enumerate() {
                        let r = t * ROWS_PER_TASK + i;
                        let (first, second) = row.split_at_mut(la);
                        for (o, v) in first.iter_mut().zip(&a[r * la..][..la]) {
                            o.write(v.to_bf16());
                        }
                        for (o, v) in second.iter_mut().zip(&b[r * lb..][..lb]) {
                            o.write(v.to_bf16());
                        }
                    }
                },
            )
        });
    }
    // SAFETY: every row of the output was written whole above.
    unsafe { out.set_len(len) };
    out
}

/// The gradients of [`cat_channels`]'s two inputs from its output's, each in `layout`.
pub fn split_channels(grad: &[f32], n: usize, [ca, cb]: [usize; 2], s: usize, layout: Layout) -> (Vec<f32>, Vec<f32>) {
    let ((rows, la), (_, lb)) = (self::rows(n, ca, s, layout), self::rows(n, cb, s, layout));
    assert_eq!(grad.len(), rows * (la + lb), "split_channels: a gradient of the wrong length");
    if la == 0 || lb == 0 {
        return if la == 0 { (Vec::new(), grad.to_vec()) } else { (grad.to_vec(), Vec::new()) };
    }
    let (mut a, mut b) = (Vec::with_capacity(rows * la), Vec::with_capacity(rows * lb));
    if rows * (la + lb) > 0 {
        let (a_out, b_out) = (&mut a.spare_capacity_mut()[..rows * la], &mut b.spare_capacity_mut()[..rows * lb]);
        let tasks = a_out.par_chunks_mut(ROWS_PER_TASK * la).zip(b_out.par_chunks_mut(ROWS_PER_TASK * lb));
        let tasks = tasks.zip(grad.par_chunks(ROWS_PER_TASK * (la + lb)));
        tasks.for_each(|((a, b), g)| {
            for (r, row) in g.chunks_exact(la + lb).enumerate() {
                copy(&row[..la], &mut a[r * la..][..la]);
                copy(&row[la..], &mut b[r * lb..][..lb]);
            }
        });
    }
    // SAFETY: every row of both was written whole above.
    unsafe {
        a.set_len(rows * la);
        b.set_len(rows * lb);
    }
    (a, b)
}

/// The second part of [`split_channels`] alone: the gradient of `b`.
pub fn second_part(grad: &[f32], n: usize, [ca, cb]: [usize; 2], s: usize, layout: Layout) -> Vec<f32> {
    let ((rows, la), (_, lb)) = (self::rows(n, ca, s, layout), self::rows(n, cb, s, layout));
    assert_eq!(grad.len(), rows * (la + lb), "second_part: a gradient of the wrong length");
    let mut b = Vec::with_capacity(rows * lb);
    if rows * lb > 0 {
        let tasks = b.spare_capacity_mut()[..rows * lb].par_chunks_mut(ROWS_PER_TASK * lb);
        tasks.zip(grad.par_chunks(ROWS_PER_TASK * (la + lb))).for_each(|(b, g)| {
            for (r, row) in g.chunks_exact(la + lb).enumerate() {
                copy(&row[la..], &mut b[r * lb..][..lb]);
            }
        });
    }
    // SAFETY: every row was written whole above.
    unsafe { b.set_len(rows * lb) };
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::layout::{to_channels_last, to_nchw};
    use crate::test_util::pattern;

    /// NCHW by the definition; channels-last the same channels, transposed; and back by the
    /// split. Batches of more rows than a task, and of one channel.
    #[test]
    fn concatenates_in_either_layout_and_splits_back() {
        for (n, ca, cb, s) in [(2, 3, 5, 7), (3, 64, 32, 81), (2, 1, 1, 130)] {
            let (a, b) = (pattern(n * ca * s, 1), pattern(n * cb * s, 2));
            let cat = cat_channels(&a, &b, n, [ca, cb], s, Layout::Nchw);
            let by_definition: Vec<f32> = (0..n)
                .flat_map(|i| a[i * ca * s..][..ca * s].iter().chain(&b[i * cb * s..][..cb * s]))
                .copied()
                .collect();
            assert_eq!(cat, by_definition);
            let last = |x: &[f32], c| to_channels_last(x, n, c, s);
            let cat_last = cat_channels(&last(&a, ca), &last(&b, cb), n, [ca, cb], s, Layout::ChannelsLast);
            assert_eq!(to_nchw(&cat_last, n, ca + cb, s), cat);
            assert_eq!(split_channels(&cat, n, [ca, cb], s, Layout::Nchw), (a.clone(), b.clone()));
            assert_eq!(split_channels(&cat_last, n, [ca, cb], s, Layout::ChannelsLast), (last(&a, ca), last(&b, cb)));
            assert_eq!(second_part(&cat_last, n, [ca, cb], s, Layout::ChannelsLast), last(&b, cb));
            assert_eq!(second_part(&cat, n, [ca, cb], s, Layout::Nchw), b);
            // In bf16: the f32 concatenation rounded, from f32 or bf16 parts alike.
            let rounded = |x: &[f32]| -> Vec<bf16> { x.iter().map(|&v| bf16::from_f32(v)).collect() };
            let want = rounded(&cat_last);
            let (a_last, b_last) = (last(&a, ca), last(&b, cb));
            let to_bf16 = |x, y| cat_channels_to_bf16(x, y, n, [ca, cb], s, Layout::ChannelsLast);
            assert_eq!(to_bf16(&a_last, &b_last), want);
            let from_bf16 = cat_channels_to_bf16(&rounded(&a_last), &b_last, n, [ca, cb], s, Layout::ChannelsLast);
            assert_eq!(from_bf16, want);
            assert_eq!(cat_channels_to_bf16(&a, &rounded(&b), n, [ca, cb], s, Layout::Nchw), rounded(&cat));
        }
    }
}
