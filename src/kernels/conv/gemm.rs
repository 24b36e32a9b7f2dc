//! 2-D convolution (NCHW, groups 1, dilation 1) and both of its gradients as im2col + GEMM,
//! with the `gemm` crate (the one burn-flex uses) doing the multiplications on all threads.
//! Images are taken a chunk at a time, side by side in one matrix, so that the GEMMs stay
//! large even where a layer's output is only a few pixels (ResNet's last stages at 28×28 would
//! otherwise be one matrix-vector product per image):
//!
//! ```text
//!   cols = [cols(X[n0]) … cols(X[n1])]              K×(m·P), K = Cin·kh·kw, P = Ho·Wo
//!   forward:  Y  = W · cols + b                      W: Cout×K
//!   ∂W        += ∂Y · colsᵀ                           (summed over the chunks)
//!   ∂X        = col2im(Wᵀ · ∂Y)
//!   ∂b        = Σ ∂Y over images and pixels
//! ```

use rayon::prelude::*;

use super::{bias_grad, direct, own_forward, own_input_grad, ConvGeometry};

/// A row-major matrix view: element (i, j) at `data[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy)]
pub(super) struct Mat<'a> {
    data: &'a [f32],
    row_stride: isize,
    col_stride: isize,
}

impl<'a> Mat<'a> {
    pub(super) fn rows(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: cols as isize, col_stride: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub(super) fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: 1, col_stride: cols as isize }
    }
}

/// `dst (m×n, row-major) = [dst +] lhs (m×k) · rhs (k×n)`, on all threads.
pub(super) fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], lhs: Mat, rhs: Mat, accumulate: bool) {
    matmul_on(m, n, k, dst, lhs, rhs, accumulate, gemm::Parallelism::Rayon(0));
}

#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_on(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
    threads: gemm::Parallelism,
) {
    assert!(dst.len() >= m * n);
    // SAFETY: the views cover the index ranges gemm reads (checked by the callers' shapes:
    // every `Mat` is built over a slice of exactly the matrix it describes), and `dst` holds
    // m·n elements.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride,
            lhs.row_stride,
            rhs.data.as_ptr(),
            rhs.col_stride,
            rhs.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            threads,
        );
    }
}

/// The adjoint of im2col for one image (`cols`: K×P): adds each column entry back onto the
/// input pixel it came from.
pub(super) fn col2im(cols: &[f32], g: &ConvGeometry, x: &mut [f32]) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let [sh, sw] = g.stride;
    let [ph, pw] = g.padding;
    x.fill(0.0);
    for ci in 0..g.c_in {
        let plane = &mut x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &cols[((ci * g.kh + i) * g.kw + j) * ho * wo..][..ho * wo];
                for oh in 0..ho {
                    let ih = (oh * sh + i) as isize - ph as isize;
                    if ih < 0 || ih >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                    for (ow, &v) in row[oh * wo..(oh + 1) * wo].iter().enumerate() {
                        let iw = (ow * sw + j) as isize - pw as isize;
                        if iw >= 0 && iw < g.w as isize {
                            dst[iw as usize] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Most column-matrix elements held at once (8 MiB of f32): bounds the memory of a chunk.
/// Small under test, so that the tests' small layers are split into chunks too.
pub(super) const COLUMNS_BUDGET: usize = if cfg!(test) { 1 << 10 } else { 1 << 21 };

/// How many images go into one chunk.
pub(super) fn chunk_len(g: &ConvGeometry) -> usize {
    (COLUMNS_BUDGET / (g.k() * g.p()).max(1)).clamp(1, g.batch.max(1))
}

/// The columns of images `first..first + m` side by side: row r (a kernel tap), column
/// `(n − first)·P + p`. Rows are filled in parallel.
pub(super) fn im2col_chunk(x: &[f32], g: &ConvGeometry, first: usize, m: usize, cols: &mut [f32]) {
    let (p, taps) = (g.p(), g.kh * g.kw);
    cols.par_chunks_mut(m * p).enumerate().for_each(|(r, row)| {
        let (ci, tap) = (r / taps, r % taps);
        let single = ConvGeometry { c_in: 1, ..*g };
        for (local, out) in row.chunks_exact_mut(p).enumerate() {
            let n = first + local;
            let plane = &x[n * g.in_len() + ci * g.h * g.w..][..g.h * g.w];
            im2col_tap(plane, &single, tap / g.kw, tap % g.kw, out);
        }
    });
}

/// One kernel tap (i, j) of one input plane: out[oh·Wo + ow] = plane[oh·sh + i − ph][ow·sw + j − pw].
/// The output columns that read inside the plane are found once, so the rows are plain copies
/// (stride 1) or strided gathers, with zeros written only for the padding.
pub(super) fn im2col_tap(plane: &[f32], g: &ConvGeometry, i: usize, j: usize, out: &mut [f32]) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let [sh, sw] = g.stride;
    let [ph, pw] = g.padding;
    // ow reads inside the row when pw ≤ ow·sw + j < w + pw.
    let first = pw.saturating_sub(j).div_ceil(sw).min(wo);
    let end = (g.w + pw).saturating_sub(j).div_ceil(sw).clamp(first, wo);
    for oh in 0..ho {
        let out = &mut out[oh * wo..(oh + 1) * wo];
        let ih = (oh * sh + i) as isize - ph as isize;
        if ih < 0 || ih >= g.h as isize {
            out.fill(0.0);
            continue;
        }
        out[..first].fill(0.0);
        out[end..].fill(0.0);
        if first == end {
            continue;
        }
        let row = &plane[ih as usize * g.w..(ih as usize + 1) * g.w];
        let src = &row[first * sw + j - pw..];
        if sw == 1 {
            out[first..end].copy_from_slice(&src[..end - first]);
        } else {
            out[first..end].iter_mut().zip(src.iter().step_by(sw)).for_each(|(o, &v)| *o = v);
        }
    }
}

/// Adds the columns of a chunk back onto the images they came from (the adjoint of
/// [`im2col_chunk`]); `dx` holds the chunk's images and is overwritten. Parallel over images.
pub(super) fn col2im_chunk(dcols: &[f32], g: &ConvGeometry, m: usize, dx: &mut [f32]) {
    let p = g.p();
    dx.par_chunks_mut(g.in_len()).enumerate().for_each(|(local, dx_n)| {
        let mut image_cols = vec![0.0f32; g.k() * p];
        for (r, dst) in image_cols.chunks_exact_mut(p).enumerate() {
            dst.copy_from_slice(&dcols[r * m * p + local * p..][..p]);
        }
        col2im(&image_cols, g, dx_n);
    });
}

/// [`forward`] by im2col + GEMM.
pub fn gemm_forward(x: &[f32], weight: &[f32], bias: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let mut y = vec![0.0f32; g.batch * g.out_len()];
    let chunk = chunk_len(g);
    let mut cols = vec![0.0f32; k * chunk * p];
    let mut y_chunk = vec![0.0f32; g.c_out * chunk * p];
    for first in (0..g.batch).step_by(chunk) {
        let m = chunk.min(g.batch - first);
        im2col_chunk(x, g, first, m, &mut cols[..k * m * p]);
        matmul(g.c_out, m * p, k, &mut y_chunk, Mat::rows(weight, k), Mat::rows(&cols, m * p), false);
        // Y is Cout×(m·P); the output is N×Cout×P.
        y[first * g.out_len()..(first + m) * g.out_len()].par_chunks_mut(g.out_len()).enumerate().for_each(
            |(local, y_n)| {
                for (co, row) in y_n.chunks_exact_mut(p).enumerate() {
                    let src = &y_chunk[co * m * p + local * p..][..p];
                    row.iter_mut().zip(src).for_each(|(o, &v)| *o = v + bias[co]);
                }
            },
        );
    }
    y
}

/// `dw (Cout×K) [+]= dy (Cout×L) · colsᵀ (L×K)`. The inner dimension L (images × pixels) is the
/// long one, which gemm does not split across threads, so it is split here: each thread
/// multiplies its own range of L and the partial products are added.
pub(super) fn weight_grad(
    c_out: usize,
    k: usize,
    l: usize,
    dw: &mut [f32],
    dy: &[f32],
    cols: &[f32],
    accumulate: bool,
) {
    let threads = rayon::current_num_threads();
    if threads < 2 || l < 256 * threads {
        let (dy, cols) = (Mat::rows(dy, l), Mat::transposed(cols, l));
        return matmul(c_out, k, l, dw, dy, cols, accumulate);
    }
    let part = l.div_ceil(threads);
    let partials: Vec<Vec<f32>> = (0..threads)
        .into_par_iter()
        .map(|t| {
            let (start, len) = (t * part, part.min(l.saturating_sub(t * part)));
            let mut out = vec![0.0f32; c_out * k];
            if len > 0 {
                let dy = Mat { data: &dy[start..], row_stride: l as isize, col_stride: 1 };
                let cols = Mat { data: &cols[start..], row_stride: 1, col_stride: l as isize };
                matmul_on(c_out, k, len, &mut out, dy, cols, false, gemm::Parallelism::None);
            }
            out
        })
        .collect();
    if !accumulate {
        dw.fill(0.0);
    }
    for partial in &partials {
        dw.iter_mut().zip(partial).for_each(|(a, b)| *a += b);
    }
}

/// Whether ∂X is better computed by [`input_grad_by_convolution`] than by col2im: at stride 1,
/// when ∂Y has no more values per image than X (DenseNet's 3×3 convolutions make 32 channels
/// from up to 240; col2im writes and scatters K·P values per image, the convolution's columns
/// hold Cout·kh·kw·H·W), or when that convolution is small enough to run directly (LeNet's
/// second layer).
pub(super) fn input_grad_is_a_convolution(g: &ConvGeometry) -> bool {
    g.stride == [1, 1]
        && g.padding[0] < g.kh
        && g.padding[1] < g.kw
        && (g.c_out * g.h * g.w <= g.c_in * g.p() || direct::fits(&transposed(g)))
}

/// The geometry of ∂X as a convolution of ∂Y (stride 1, padding below the kernel size).
pub(super) fn transposed(g: &ConvGeometry) -> ConvGeometry {
    ConvGeometry {
        batch: g.batch,
        c_in: g.c_out,
        h: g.out_h(),
        w: g.out_w(),
        c_out: g.c_in,
        kh: g.kh,
        kw: g.kw,
        stride: [1, 1],
        padding: [g.kh - 1 - g.padding[0], g.kw - 1 - g.padding[1]],
    }
}

/// ∂X of a stride-1 convolution is itself a convolution: ∂Y, padded by k − 1 − p, convolved
/// with W's taps flipped and its input and output channels swapped.
pub(super) fn input_grad_by_convolution(weight: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let taps = g.kh * g.kw;
    let mut flipped = vec![0.0f32; weight.len()];
    for co in 0..g.c_out {
        for ci in 0..g.c_in {
            let src = &weight[(co * g.c_in + ci) * taps..][..taps];
            let dst = &mut flipped[(ci * g.c_out + co) * taps..][..taps];
            dst.iter_mut().zip(src.iter().rev()).for_each(|(d, &s)| *d = s);
        }
    }
    own_forward(dy, &flipped, &vec![0.0; g.c_in], &transposed(g))
}

/// All three gradients by deepcnn's im2col + GEMM kernels (what oneDNN is tested against).
pub fn gemm_backward(x: &[f32], weight: &[f32], dy: &[f32], g: &ConvGeometry) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (own_input_grad(weight, dy, g), weight_grad_by_im2col(x, dy, g), bias_grad(dy, g))
}

/// ∂Y of images `first..first + m` as one Cout×(m·P) matrix, the layout of the GEMMs.
pub(super) fn gather_output_grad(dy: &[f32], g: &ConvGeometry, first: usize, m: usize, dst: &mut [f32]) {
    let p = g.p();
    dst[..g.c_out * m * p].par_chunks_mut(m * p).enumerate().for_each(|(co, row)| {
        for (local, dst) in row.chunks_exact_mut(p).enumerate() {
            dst.copy_from_slice(&dy[(first + local) * g.out_len() + co * p..][..p]);
        }
    });
}

/// ∂W = Σ over chunks of ∂Y · colsᵀ.
pub(super) fn weight_grad_by_im2col(x: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let mut dw = vec![0.0f32; g.c_out * k];
    let chunk = chunk_len(g);
    let mut cols = vec![0.0f32; k * chunk * p];
    let mut dy_chunk = vec![0.0f32; g.c_out * chunk * p];
    for (index, first) in (0..g.batch).step_by(chunk).enumerate() {
        let m = chunk.min(g.batch - first);
        gather_output_grad(dy, g, first, m, &mut dy_chunk);
        im2col_chunk(x, g, first, m, &mut cols[..k * m * p]);
        weight_grad(g.c_out, k, m * p, &mut dw, &dy_chunk, &cols, index > 0);
    }
    dw
}

/// ∂X = col2im(Wᵀ · ∂Y), a chunk of images at a time.
pub(super) fn input_grad_by_col2im(weight: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let mut dx = vec![0.0f32; g.batch * g.in_len()];
    let chunk = chunk_len(g);
    let mut dcols = vec![0.0f32; k * chunk * p];
    let mut dy_chunk = vec![0.0f32; g.c_out * chunk * p];
    for first in (0..g.batch).step_by(chunk) {
        let m = chunk.min(g.batch - first);
        gather_output_grad(dy, g, first, m, &mut dy_chunk);
        matmul(k, m * p, g.c_out, &mut dcols, Mat::transposed(weight, k), Mat::rows(&dy_chunk, m * p), false);
        col2im_chunk(&dcols, g, m, &mut dx[first * g.in_len()..(first + m) * g.in_len()]);
    }
    dx
}
