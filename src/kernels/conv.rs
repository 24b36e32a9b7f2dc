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

/// Everything about a convolution's shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl ConvGeometry {
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.padding[0] - self.kh) / self.stride[0] + 1
    }
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.padding[1] - self.kw) / self.stride[1] + 1
    }
    fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    fn p(&self) -> usize {
        self.out_h() * self.out_w()
    }
    fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    fn out_len(&self) -> usize {
        self.c_out * self.p()
    }
}

/// A row-major matrix view: element (i, j) at `data[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    row_stride: isize,
    col_stride: isize,
}

impl<'a> Mat<'a> {
    fn rows(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: cols as isize, col_stride: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: 1, col_stride: cols as isize }
    }
}

/// `dst (m×n, row-major) = [dst +] lhs (m×k) · rhs (k×n)`, on all threads.
fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], lhs: Mat, rhs: Mat, accumulate: bool) {
    matmul_on(m, n, k, dst, lhs, rhs, accumulate, gemm::Parallelism::Rayon(0));
}

#[allow(clippy::too_many_arguments)]
fn matmul_on(m: usize, n: usize, k: usize, dst: &mut [f32], lhs: Mat, rhs: Mat, accumulate: bool, threads: gemm::Parallelism) {
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
fn col2im(cols: &[f32], g: &ConvGeometry, x: &mut [f32]) {
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
const COLUMNS_BUDGET: usize = 1 << 21;

/// How many images go into one chunk.
fn chunk_len(g: &ConvGeometry) -> usize {
    (COLUMNS_BUDGET / (g.k() * g.p()).max(1)).clamp(1, g.batch.max(1))
}

/// The columns of images `first..first + m` side by side: row r (a kernel tap), column
/// `(n − first)·P + p`. Rows are filled in parallel.
fn im2col_chunk(x: &[f32], g: &ConvGeometry, first: usize, m: usize, cols: &mut [f32]) {
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
fn im2col_tap(plane: &[f32], g: &ConvGeometry, i: usize, j: usize, out: &mut [f32]) {
    let (ho, wo) = (g.out_h(), g.out_w());
    let [sh, sw] = g.stride;
    let [ph, pw] = g.padding;
    for oh in 0..ho {
        let out = &mut out[oh * wo..(oh + 1) * wo];
        let ih = (oh * sh + i) as isize - ph as isize;
        if ih < 0 || ih >= g.h as isize {
            out.fill(0.0);
            continue;
        }
        let src = &plane[ih as usize * g.w..(ih as usize + 1) * g.w];
        if sw == 1 && j >= pw && j - pw + wo <= g.w {
            out.copy_from_slice(&src[j - pw..j - pw + wo]);
            continue;
        }
        for (ow, o) in out.iter_mut().enumerate() {
            let iw = (ow * sw + j) as isize - pw as isize;
            *o = if iw >= 0 && iw < g.w as isize { src[iw as usize] } else { 0.0 };
        }
    }
}

/// Adds the columns of a chunk back onto the images they came from (the adjoint of
/// [`im2col_chunk`]); `dx` holds the chunk's images and is overwritten. Parallel over images.
fn col2im_chunk(dcols: &[f32], g: &ConvGeometry, m: usize, dx: &mut [f32]) {
    let p = g.p();
    dx.par_chunks_mut(g.in_len()).enumerate().for_each(|(local, dx_n)| {
        let mut image_cols = vec![0.0f32; g.k() * p];
        for (r, dst) in image_cols.chunks_exact_mut(p).enumerate() {
            dst.copy_from_slice(&dcols[r * m * p + local * p..][..p]);
        }
        col2im(&image_cols, g, dx_n);
    });
}

/// Y = conv(X, W) + b, X: N×Cin×H×W, W: Cout×Cin×kh×kw, b: Cout.
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: &ConvGeometry) -> Vec<f32> {
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
fn weight_grad(c_out: usize, k: usize, l: usize, dw: &mut [f32], dy: &[f32], cols: &[f32], accumulate: bool) {
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

/// The gradients of [`forward`] with respect to X (when `input_grad`: the first layer of a
/// network needs none), W and b, given ∂Y.
pub fn backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    input_grad: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let (k, p) = (g.k(), g.p());
    let mut dx = input_grad.then(|| vec![0.0f32; x.len()]);
    let mut dw = vec![0.0f32; g.c_out * k];
    let chunk = chunk_len(g);
    let mut cols = vec![0.0f32; k * chunk * p];
    let mut dy_chunk = vec![0.0f32; g.c_out * chunk * p];
    for (index, first) in (0..g.batch).step_by(chunk).enumerate() {
        let m = chunk.min(g.batch - first);
        // ∂Y of the chunk as Cout×(m·P).
        dy_chunk[..g.c_out * m * p].par_chunks_mut(m * p).enumerate().for_each(|(co, row)| {
            for (local, dst) in row.chunks_exact_mut(p).enumerate() {
                dst.copy_from_slice(&dy[(first + local) * g.out_len() + co * p..][..p]);
            }
        });
        let dy_m = Mat::rows(&dy_chunk, m * p);
        im2col_chunk(x, g, first, m, &mut cols[..k * m * p]);
        weight_grad(g.c_out, k, m * p, &mut dw, &dy_chunk, &cols, index > 0);
        if let Some(dx) = dx.as_mut() {
            // The columns are not needed any more: their buffer takes ∂cols = Wᵀ·∂Y.
            matmul(k, m * p, g.c_out, &mut cols, Mat::transposed(weight, k), dy_m, false);
            col2im_chunk(&cols, g, m, &mut dx[first * g.in_len()..(first + m) * g.in_len()]);
        }
    }
    let db = (0..g.c_out)
        .into_par_iter()
        .map(|co| dy.chunks(g.out_len()).map(|dy_n| dy_n[co * p..(co + 1) * p].iter().sum::<f32>() as f64).sum::<f64>() as f32)
        .collect();
    (dx, dw, db)
}
