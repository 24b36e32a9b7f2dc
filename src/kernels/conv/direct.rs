//! Direct convolution for layers with few input values per output pixel (LeNet's: 1→6 and
//! 6→16 channels, 5×5). There the im2col GEMM is tiny in K and in Cout (6 output channels
//! fill 6 of the 16 rows of gemm's register tile) and mostly moves memory; here each output
//! row is accumulated in registers, 8 pixels × [`BLOCK`] channels at a time, from a zero-padded
//! copy of the image, and ∂W is the matching dot products.
//!
//! Each image is padded once into a buffer whose rows are wide enough that 8-wide loads never
//! leave the row (the lanes past the output's right edge read zeros and are not stored), so
//! the inner loops have fixed-size arrays the compiler turns into SIMD registers.

use super::ConvGeometry;
use crate::kernels::simd;
use rayon::prelude::*;

/// Output channels computed together: each input load feeds this many multiply-adds.
const BLOCK: usize = 4;
/// Pixels per accumulator (one AVX register of f32).
const LANES: usize = 8;
/// Images whose ∂W one task sums: the partial sums are then added in order, so ∂W does not
/// depend on how the work was shared between threads.
const IMAGES_PER_PARTIAL: usize = 16;

/// Whether to convolve directly: stride 1, at most 400 input values per output (K = Cin·kh·kw)
/// and at most 16 output channels. LeNet's convolutions and the ∂X of its second one (16→6
/// channels, 5×5); not the 3×3 and 1×1 layers of ResNet and DenseNet, whose 32–512 output
/// channels make a real GEMM.
pub fn fits(g: &ConvGeometry) -> bool {
    g.stride == [1, 1] && g.k() <= 400 && g.c_out <= 16
}

/// The padded image buffer's shape: Hp rows of `row` values per channel, where
/// `row ≥ ⌈Wo / 8⌉·8 + kw − 1` so that every 8-wide load stays inside its row; and, worked out
/// once per layer rather than per image, where the forward pass's taps read in it and the
/// output's 8-pixel row pieces (oh, ow).
struct Padded {
    hp: usize,
    row: usize,
    offsets: Vec<usize>,
    pieces: Vec<(usize, usize)>,
}

impl Padded {
    fn of(g: &ConvGeometry) -> Self {
        let wo_lanes = whole_registers(g.out_w());
        let (hp, row) = (g.h + 2 * g.padding[0], (g.w + 2 * g.padding[1]).max(wo_lanes + g.kw - 1));
        let offsets = forward_taps(g).iter().map(|&(ci, i, j)| (ci * hp + i) * row + j).collect();
        let (ho, wo) = (g.out_h(), g.out_w());
        let pieces = (0..ho).flat_map(|oh| (0..wo).step_by(LANES).map(move |ow| (oh, ow))).collect();
        Self { hp, row, offsets, pieces }
    }
    fn len(&self, g: &ConvGeometry) -> usize {
        g.c_in * self.hp * self.row
    }
    /// One image (Cin×H×W) into `dst`, zeros around it.
    fn fill(&self, x_n: &[f32], g: &ConvGeometry, dst: &mut [f32]) {
        let [ph, pw] = g.padding;
        dst.fill(0.0);
        for ci in 0..g.c_in {
            for r in 0..g.h {
                let src = &x_n[(ci * g.h + r) * g.w..][..g.w];
                dst[(ci * self.hp + r + ph) * self.row + pw..][..g.w].copy_from_slice(src);
            }
        }
    }
}

/// The forward pass's taps (ci, i, j), kernel row first: the taps of the kernel rows that read
/// only padding, which [`forward_image_avx2`] skips, are then one range (∂X of LeNet's second
/// layer is a convolution padded by 4 on an 8×8 input, where that is a third of the taps).
fn forward_taps(g: &ConvGeometry) -> Vec<(usize, usize, usize)> {
    (0..g.kh).flat_map(|i| (0..g.c_in).flat_map(move |ci| (0..g.kw).map(move |j| (ci, i, j)))).collect()
}

/// The weights in blocks of [`BLOCK`] output channels, in the order of [`forward_taps`]:
/// `[block][tap][c]`, zero for the channels past Cout, so a block's weights for one tap are one
/// contiguous load.
fn blocked_weights(weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let taps = forward_taps(g);
    let k = taps.len();
    let blocks = g.c_out.div_ceil(BLOCK);
    let mut out = vec![0.0f32; blocks * k * BLOCK];
    for co in 0..g.c_out {
        for (t, &(ci, i, j)) in taps.iter().enumerate() {
            out[((co / BLOCK) * k + t) * BLOCK + co % BLOCK] = weight[((co * g.c_in + ci) * g.kh + i) * g.kw + j];
        }
    }
    out
}

/// `n` rounded up to whole registers of [`LANES`].
fn whole_registers(n: usize) -> usize {
    n.div_ceil(LANES) * LANES
}

fn load(src: &[f32]) -> [f32; LANES] {
    src[..LANES].try_into().expect("LANES values")
}

/// Y = conv(X, W) + b for a layer that [`fits`], parallel over images.
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: &ConvGeometry) -> Vec<f32> {
    forward_with(x, weight, bias, g, true)
}

/// [`forward`], with AVX2 where the CPU has it and `allow_avx2` allows it (the tests run both).
pub(super) fn forward_with(x: &[f32], weight: &[f32], bias: &[f32], g: &ConvGeometry, allow_avx2: bool) -> Vec<f32> {
    let padded = Padded::of(g);
    let blocks = blocked_weights(weight, g);
    let mut y = vec![0.0f32; g.batch * g.out_len()];
    y.par_chunks_mut(g.out_len()).zip(x.par_chunks(g.in_len())).for_each_init(
        || vec![0.0f32; padded.len(g)],
        |xp, (y_n, x_n)| {
            padded.fill(x_n, g, xp);
            #[cfg(target_arch = "x86_64")]
            if allow_avx2 && simd::available() {
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { forward_image_avx2(xp, &blocks, bias, y_n, g, &padded) };
            }
            forward_image(xp, &blocks, bias, y_n, g, &padded);
        },
    );
    y
}

/// Output vectors (8 pixels of a row each) computed together by [`forward_image_avx2`]: with
/// [`BLOCK`] channels that is 12 accumulators, and each tap's weights are loaded once for all.
const GROUP: usize = 3;

/// [`forward_image`] with AVX2 registers written out (the compiler's own vectorisation of the
/// portable loops shuffles lanes between channels). The output's 8-pixel row pieces are taken
/// [`GROUP`] at a time; every tap is then [`GROUP`] loads, [`BLOCK`] broadcasts and
/// [`GROUP`]·[`BLOCK`] multiply-adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_image_avx2(xp: &[f32], blocks: &[f32], bias: &[f32], y_n: &mut [f32], g: &ConvGeometry, padded: &Padded) {
    use std::arch::x86_64::*;
    let (ho, wo) = (g.out_h(), g.out_w());
    // Where each tap of `forward_taps` reads, relative to the piece's window: (ci·Hp + i)·row + j.
    let offsets = &padded.offsets;
    let k = offsets.len();
    let reach = offsets.iter().max().copied().unwrap_or(0) + LANES;
    let per_row = g.c_in * g.kw;
    for (block, w_block) in blocks.chunks_exact(k * BLOCK).enumerate() {
        let channels = BLOCK.min(g.c_out - block * BLOCK);
        for group in padded.pieces.chunks(GROUP) {
            // Where each piece's window starts; a short last group repeats its first piece.
            let starts: [usize; GROUP] = std::array::from_fn(|t| {
                let (oh, ow) = group[if t < group.len() { t } else { 0 }];
                oh * padded.row + ow
            });
            assert!(starts.iter().all(|&s| s + reach <= xp.len()), "window inside the padded image");
            // Kernel rows i that read a real input row for some piece of the group:
            // ph ≤ oh + i < ph + H. The others read zeros and are skipped.
            let (first_row, last_row) = (group[0].0, group[group.len() - 1].0);
            let rows = g.padding[0].saturating_sub(last_row)..(g.padding[0] + g.h).saturating_sub(first_row).min(g.kh);
            let taps = rows.start * per_row..rows.end.max(rows.start) * per_row;
            let mut acc = [[_mm256_setzero_ps(); BLOCK]; GROUP];
            for (&offset, w) in
                offsets[taps.clone()].iter().zip(w_block[taps.start * BLOCK..taps.end * BLOCK].chunks_exact(BLOCK))
            {
                // SAFETY: start + offset + LANES ≤ start + reach ≤ xp.len() (asserted above).
                let v: [__m256; GROUP] =
                    std::array::from_fn(|t| unsafe { _mm256_loadu_ps(xp.as_ptr().add(starts[t] + offset)) });
                for (c, &w) in w.iter().enumerate() {
                    let w = _mm256_set1_ps(w);
                    for t in 0..GROUP {
                        acc[t][c] = _mm256_fmadd_ps(w, v[t], acc[t][c]);
                    }
                }
            }
            for (&(oh, ow), acc) in group.iter().zip(&acc) {
                let lanes = LANES.min(wo - ow);
                for (c, acc) in acc.iter().enumerate().take(channels) {
                    let co = block * BLOCK + c;
                    let mut values = [0.0f32; LANES];
                    // SAFETY: `values` holds LANES f32.
                    unsafe { _mm256_storeu_ps(values.as_mut_ptr(), *acc) };
                    let dst = &mut y_n[(co * ho + oh) * wo + ow..][..lanes];
                    dst.iter_mut().zip(values).for_each(|(d, a)| *d = a + bias[co]);
                }
            }
        }
    }
}

/// One padded image's output, [`BLOCK`] channels × 8 pixels of a row at a time, taps in the
/// order of [`forward_taps`].
fn forward_image(xp: &[f32], blocks: &[f32], bias: &[f32], y_n: &mut [f32], g: &ConvGeometry, padded: &Padded) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let k = g.k();
    for (block, w_block) in blocks.chunks_exact(k * BLOCK).enumerate() {
        let channels = BLOCK.min(g.c_out - block * BLOCK);
        for oh in 0..ho {
            for ow in (0..wo).step_by(LANES) {
                let mut acc = [[0.0f32; LANES]; BLOCK];
                let mut tap = 0;
                for i in 0..g.kh {
                    for ci in 0..g.c_in {
                        let row = &xp[(ci * padded.hp + oh + i) * padded.row + ow..];
                        for j in 0..g.kw {
                            let v = load(&row[j..]);
                            let w = &w_block[tap * BLOCK..][..BLOCK];
                            for c in 0..BLOCK {
                                for l in 0..LANES {
                                    acc[c][l] += w[c] * v[l];
                                }
                            }
                            tap += 1;
                        }
                    }
                }
                let lanes = LANES.min(wo - ow);
                for (c, acc) in acc.iter().enumerate().take(channels) {
                    let co = block * BLOCK + c;
                    let dst = &mut y_n[(co * ho + oh) * wo + ow..][..lanes];
                    dst.iter_mut().zip(acc).for_each(|(d, &a)| *d = a + bias[co]);
                }
            }
        }
    }
}

/// ∂W of a layer that [`fits`]: ∂W[co][ci][i][j] = Σ ∂Y[n][co][oh][ow] · X[n][ci][oh+i−ph][ow+j−pw],
/// each task summing [`IMAGES_PER_PARTIAL`] images into its own ∂W, the partial sums added at the end. The
/// partial sums keep one value per lane (`[block][tap][c][lane]`), added across lanes only at
/// the end: a horizontal sum per image cost more than the products for LeNet's 8×8 outputs.
pub fn weight_grad(x: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
    weight_grad_with(x, dy, g, true)
}

/// [`weight_grad`], with AVX2 where the CPU has it and `allow_avx2` allows it.
pub(super) fn weight_grad_with(x: &[f32], dy: &[f32], g: &ConvGeometry, allow_avx2: bool) -> Vec<f32> {
    let padded = Padded::of(g);
    let k = g.k();
    let blocks = g.c_out.div_ceil(BLOCK);
    let wo_lanes = whole_registers(g.out_w());
    let len = blocks * k * BLOCK * LANES;
    let partials: Vec<Vec<f32>> = x
        .par_chunks(IMAGES_PER_PARTIAL * g.in_len())
        .zip(dy.par_chunks(IMAGES_PER_PARTIAL * g.out_len()))
        .map(|(xs, dys)| {
            let (mut xp, mut dyp, mut dw) =
                (vec![0.0f32; padded.len(g)], vec![0.0f32; BLOCK * g.out_h() * wo_lanes], vec![0.0f32; len]);
            for (x_n, dy_n) in xs.chunks_exact(g.in_len()).zip(dys.chunks_exact(g.out_len())) {
                padded.fill(x_n, g, &mut xp);
                #[cfg(target_arch = "x86_64")]
                if allow_avx2 && simd::available() {
                    // SAFETY: the CPU has the features the function is compiled for.
                    unsafe { weight_grad_image_avx2(&xp, dy_n, &mut dyp, &mut dw, g, &padded) };
                    continue;
                }
                weight_grad_image(&xp, dy_n, &mut dyp, &mut dw, g, &padded);
            }
            dw
        })
        .collect();
    // Added in a fixed order: the same numbers whatever the threads did (resumed runs must
    // repeat uninterrupted ones to the bit).
    let mut partial = vec![0.0f32; len];
    for p in &partials {
        partial.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    let mut dw = vec![0.0f32; g.c_out * k];
    for co in 0..g.c_out {
        for tap in 0..k {
            dw[co * k + tap] =
                partial[(((co / BLOCK) * k + tap) * BLOCK + co % BLOCK) * LANES..][..LANES].iter().sum::<f32>();
        }
    }
    dw
}

/// [`weight_grad_image`] with AVX2 registers written out.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn weight_grad_image_avx2(
    xp: &[f32],
    dy_n: &[f32],
    dyp: &mut [f32],
    dw: &mut [f32],
    g: &ConvGeometry,
    padded: &Padded,
) {
    use std::arch::x86_64::*;
    let (ho, wo) = (g.out_h(), g.out_w());
    let k = g.k();
    let wo_lanes = whole_registers(wo);
    for block in 0..g.c_out.div_ceil(BLOCK) {
        gather_block(dy_n, dyp, g, block);
        let dyp = &dyp[..BLOCK * ho * wo_lanes];
        let mut tap = 0;
        for ci in 0..g.c_in {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let sums = &mut dw[(block * k + tap) * BLOCK * LANES..][..BLOCK * LANES];
                    // SAFETY: `sums` holds BLOCK·LANES values.
                    let mut acc: [__m256; BLOCK] =
                        std::array::from_fn(|c| unsafe { _mm256_loadu_ps(sums.as_ptr().add(c * LANES)) });
                    for oh in 0..ho {
                        let start = (ci * padded.hp + oh + i) * padded.row + j;
                        let row = &xp[start..start + wo_lanes];
                        for ow in (0..wo).step_by(LANES) {
                            // SAFETY: `row` holds wo_lanes ≥ ow + LANES values, `dyp` holds
                            // BLOCK·Ho rows of wo_lanes (both checked by their slicing).
                            unsafe {
                                let v = _mm256_loadu_ps(row.as_ptr().add(ow));
                                for (c, acc) in acc.iter_mut().enumerate() {
                                    let d = _mm256_loadu_ps(dyp.as_ptr().add((c * ho + oh) * wo_lanes + ow));
                                    *acc = _mm256_fmadd_ps(d, v, *acc);
                                }
                            }
                        }
                    }
                    for (c, acc) in acc.iter().enumerate() {
                        // SAFETY: `sums` holds BLOCK·LANES values.
                        unsafe { _mm256_storeu_ps(sums.as_mut_ptr().add(c * LANES), *acc) };
                    }
                    tap += 1;
                }
            }
        }
    }
}

/// A block's ∂Y into `dyp`, rows padded with zeros to whole registers: the lanes past the
/// output's edge then add nothing.
fn gather_block(dy_n: &[f32], dyp: &mut [f32], g: &ConvGeometry, block: usize) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let wo_lanes = whole_registers(wo);
    dyp.fill(0.0);
    for c in 0..BLOCK.min(g.c_out - block * BLOCK) {
        for oh in 0..ho {
            let src = &dy_n[((block * BLOCK + c) * ho + oh) * wo..][..wo];
            dyp[(c * ho + oh) * wo_lanes..][..wo].copy_from_slice(src);
        }
    }
}

/// Adds one image's ∂W, in the blocked layout of [`blocked_weights`] with a value per lane, to
/// `dw`.
fn weight_grad_image(xp: &[f32], dy_n: &[f32], dyp: &mut [f32], dw: &mut [f32], g: &ConvGeometry, padded: &Padded) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let k = g.k();
    let wo_lanes = whole_registers(wo);
    for block in 0..g.c_out.div_ceil(BLOCK) {
        gather_block(dy_n, dyp, g, block);
        let mut tap = 0;
        for ci in 0..g.c_in {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let sums = &mut dw[(block * k + tap) * BLOCK * LANES..][..BLOCK * LANES];
                    let mut acc: [[f32; LANES]; BLOCK] = std::array::from_fn(|c| load(&sums[c * LANES..]));
                    for oh in 0..ho {
                        let row = &xp[(ci * padded.hp + oh + i) * padded.row + j..];
                        for ow in (0..wo).step_by(LANES) {
                            let v = load(&row[ow..]);
                            for (c, acc) in acc.iter_mut().enumerate() {
                                let d = load(&dyp[(c * ho + oh) * wo_lanes + ow..]);
                                for l in 0..LANES {
                                    acc[l] += d[l] * v[l];
                                }
                            }
                        }
                    }
                    sums.copy_from_slice(acc.as_flattened());
                    tap += 1;
                }
            }
        }
    }
}
