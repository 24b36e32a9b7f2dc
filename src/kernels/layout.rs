//! The two layouts a batch of activations has in memory: NCHW, burn's own, and channels-last
//! (NHWC), which oneDNN's convolutions read without a reorder. A channels-last tensor is still
//! an N×C×H×W burn tensor, a permuted view of an N×H×W×C buffer, so every other operation
//! reads it correctly; deepcnn's kernels read and write it directly where that saves a pass.
//!
//! The transposition between the two runs in 8×8 tiles held in AVX registers.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// How a batch of N×C×H×W activations lies in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Planes of H×W per channel per sample (burn's contiguous layout).
    Nchw,
    /// C values per pixel (N×H×W×C in memory).
    ChannelsLast,
}

/// Tiles of the transposition: 8 floats fill an AVX register.
const TILE: usize = 8;

/// `dst[j][i] = f(i, src[i][j])` for a `rows`×`cols` matrix `src` (row-major), into the
/// `cols`×`rows` matrix `dst`.
fn transpose_into(
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [MaybeUninit<f32>],
    f: &(impl Fn(usize, f32) -> f32 + Sync),
) {
    debug_assert!(src.len() == rows * cols && dst.len() == rows * cols);
    super::simd::vectorized(
        #[inline(always)]
        || {
            let (full_rows, full_cols) = (rows - rows % TILE, cols - cols % TILE);
            let mut tile = [[0.0f32; TILE]; TILE];
            // Tiles down the columns of src, each written to TILE consecutive rows of dst.
            for c0 in (0..full_cols).step_by(TILE) {
                for r0 in (0..full_rows).step_by(TILE) {
                    for (i, t) in tile.iter_mut().enumerate() {
                        let row = &src[(r0 + i) * cols + c0..][..TILE];
                        for (o, &v) in t.iter_mut().zip(row) {
                            *o = f(r0 + i, v);
                        }
                    }
                    store_transposed(&tile, &mut dst[c0 * rows + r0..], rows);
                }
            }
            // The edges: the last rows % TILE rows and cols % TILE columns, one value at a time.
            for i in 0..rows {
                let from = if i < full_rows { full_cols } else { 0 };
                for j in from..cols {
                    dst[j * rows + i].write(f(i, src[i * cols + j]));
                }
            }
        },
    )
}

/// Writes `tile` transposed: its column `j` to `dst[j * stride..][..TILE]`.
#[inline(always)]
fn store_transposed(tile: &[[f32; TILE]; TILE], dst: &mut [MaybeUninit<f32>], stride: usize) {
    #[cfg(target_arch = "x86_64")]
    if super::simd::available() {
        assert!(dst.len() >= 7 * stride + TILE);
        // SAFETY: the CPU has AVX2 (checked), and the eight stores stay inside dst (asserted).
        unsafe { store_transposed_avx2(tile, dst.as_mut_ptr().cast(), stride) };
        return;
    }
    for (i, row) in tile.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            dst[j * stride + i].write(v);
        }
    }
}

/// The classic 8×8 transposition in AVX registers: unpack pairs, shuffle quads, swap halves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn store_transposed_avx2(tile: &[[f32; TILE]; TILE], dst: *mut f32, stride: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(tile[i].as_ptr()));
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let out = [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ];
    for (j, v) in out.into_iter().enumerate() {
        _mm256_storeu_ps(dst.add(j * stride), v);
    }
}

/// Each of `n` samples transposed from `rows`×`cols` to `cols`×`rows` with `f(row, value)`
/// applied, in parallel over samples.
fn transpose_samples(x: &[f32], n: usize, rows: usize, cols: usize, f: impl Fn(usize, f32) -> f32 + Sync) -> Vec<f32> {
    let len = rows * cols;
    assert_eq!(x.len(), n * len, "a batch of {n} samples of {rows}×{cols}");
    let mut out = Vec::with_capacity(x.len());
    if len > 0 {
        out.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(len)
            .zip(x.par_chunks(len))
            .for_each(|(o, s)| transpose_into(s, rows, cols, o, &f));
    }
    // SAFETY: every sample's chunk was written whole by `transpose_into`.
    unsafe { out.set_len(x.len()) };
    out
}

/// An N×C×S batch from NCHW to channels-last.
pub fn to_channels_last(x: &[f32], n: usize, c: usize, s: usize) -> Vec<f32> {
    transpose_samples(x, n, c, s, |_, v| v)
}

/// An N×C×S batch from channels-last to NCHW.
pub fn to_nchw(x: &[f32], n: usize, c: usize, s: usize) -> Vec<f32> {
    transpose_samples(x, n, s, c, |_, v| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::pattern;

    fn nhwc_by_definition(x: &[f32], n: usize, c: usize, s: usize) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        for i in 0..n {
            for ch in 0..c {
                for p in 0..s {
                    out[(i * s + p) * c + ch] = x[(i * c + ch) * s + p];
                }
            }
        }
        out
    }

    /// Whole tiles, edges of every width, and shapes smaller than a tile, both ways.
    #[test]
    fn transposes_as_the_definition_and_back() {
        for (n, c, s) in [(2, 16, 24), (3, 5, 7), (1, 64, 576), (2, 13, 36), (2, 8, 9), (1, 1, 5), (4, 24, 1)] {
            let x = pattern(n * c * s, 1);
            let nhwc = to_channels_last(&x, n, c, s);
            assert_eq!(nhwc, nhwc_by_definition(&x, n, c, s), "{n}×{c}×{s}");
            assert_eq!(to_nchw(&nhwc, n, c, s), x, "{n}×{c}×{s} back");
        }
    }

    #[test]
    fn an_empty_batch_is_empty() {
        assert!(to_channels_last(&[], 0, 4, 9).is_empty());
        assert!(to_nchw(&[], 3, 0, 9).is_empty());
    }
}
