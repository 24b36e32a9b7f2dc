//! 2-D convolution (NCHW, groups 1, dilation 1) and both of its gradients: which kernel
//! computes which convolution ([`on_onednn`]): oneDNN's ([`super::onednn`]), a matrix product
//! for 1×1 images ([`single_pixel`]), LeNet's few-channel layers in AVX2 registers
//! ([`direct`]) where oneDNN has no AVX-512, and deepcnn's own im2col + GEMM ([`gemm`]) as
//! the fallback and the A/B.

use std::borrow::Cow;

use half::bf16;
use rayon::prelude::*;

mod direct;
mod gemm;
mod single_pixel;

pub use gemm::{gemm_backward, gemm_forward};
use gemm::{input_grad_by_col2im, input_grad_by_convolution, input_grad_is_a_convolution, weight_grad_by_im2col};

use super::layout::{self, Layout};
use super::onednn;

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
    /// Floating-point operations of the forward pass (a multiply and an add per tap, padded
    /// taps included, as GFLOP figures of convolutions count them); each backward pass has as
    /// many.
    pub fn flops(&self) -> u64 {
        2 * (self.batch * self.out_len() * self.k()) as u64
    }
}

/// Whether oneDNN computes `g` (else deepcnn's own kernels): every convolution in bf16 (the
/// direct kernel computes in f32), and in f32 all but LeNet's few-channel layers, which the
/// direct kernel takes where the CPU has no AVX-512. Measured on a 2-core Xeon (LeNet-BN's
/// step, images/s, median of 5): with AVX-512 oneDNN 19,200 against direct 16,200; as an
/// AVX2-only CPU (`DNNL_MAX_CPU_ISA=AVX2`) direct 16,700 against oneDNN 14,900.
fn on_onednn(g: &ConvGeometry) -> bool {
    onednn::is_enabled() && (onednn::is_bf16() || !direct::fits(g) || onednn::has_avx512())
}

/// Whether the backward of `g` from an f32 X runs in bf16, in bf16 training: all but a
/// convolution of one input channel (a network's first), whose bf16 weight gradient oneDNN
/// computes 2–5× slower than its f32 one (measured on the Xeon with AMX, batch 32: DenseNet's
/// 7×7 stem at 96×96, 4.9 ms against 2.4; at 32×32, 1.2 against 0.25). Its forward stays
/// bf16. (An X given in bf16, batch normalization's output, is read in bf16 either way.)
fn bf16_backward(g: &ConvGeometry) -> bool {
    onednn::is_bf16() && g.c_in > 1
}

/// Y = conv(X, W) + b, X: N×Cin×H×W, W: Cout×Cin×kh×kw, b: Cout, Y: N×Cout×H'×W', X and Y
/// in `layout`, by oneDNN or deepcnn's own kernels ([`on_onednn`]). oneDNN reads and writes
/// channels-last activations as they are; the other kernels compute in NCHW, so channels-last
/// ones are transposed for them.
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: &ConvGeometry, layout: Layout) -> Vec<f32> {
    // An empty batch (how `summary` finds shapes) has no columns to allocate.
    if g.batch == 0 {
        return Vec::new();
    }
    if !single_pixel::fits(g) && on_onednn(g) {
        let onednn_layout = onednn_layout(layout);
        let x = convert(x, g.batch, g.c_in, g.h * g.w, layout, onednn_layout);
        match onednn::forward_in(&x, weight, bias, g, onednn::is_bf16(), onednn_layout) {
            Ok(y) => return convert(&y, g.batch, g.c_out, g.p(), onednn_layout, layout).into_owned(),
            Err(e) => warn_fallback(&e),
        }
    }
    let x = convert(x, g.batch, g.c_in, g.h * g.w, layout, Layout::Nchw);
    let y = match single_pixel::fits(g) {
        true => single_pixel::forward(&x, weight, bias, g, onednn::is_bf16()),
        false => own_forward(&x, weight, bias, g),
    };
    convert(&y, g.batch, g.c_out, g.p(), Layout::Nchw, layout).into_owned()
}

/// [`forward`], and the bf16 copy of X the convolution read where oneDNN computes it in bf16
/// with channels-last activations: all [`backward_from_kept_input`] needs of X, at half of
/// X's memory and without converting X to bf16 a second time. `None` where the backward needs
/// X itself (then [`forward`] computes Y).
pub fn forward_keeping_input(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    g: &ConvGeometry,
    layout: Layout,
) -> Option<(Vec<f32>, Vec<bf16>)> {
    let bf16_channels_last = bf16_backward(g) && onednn_layout(layout) == Layout::ChannelsLast;
    if g.batch == 0 || layout != Layout::ChannelsLast || !bf16_channels_last || single_pixel::fits(g) || !on_onednn(g) {
        return None;
    }
    onednn::forward_keeping_input(x, weight, bias, g).map_err(|e| warn_fallback(&e)).ok()
}

/// [`forward`] with channels-last activations from X already in bf16 (what batch
/// normalization writes for a bf16 convolution): oneDNN reads it as it is.
pub fn forward_from_bf16(x: &[bf16], weight: &[f32], bias: &[f32], g: &ConvGeometry) -> Vec<f32> {
    if g.batch > 0
        && !single_pixel::fits(g)
        && on_onednn(g)
        && onednn_layout(Layout::ChannelsLast) == Layout::ChannelsLast
    {
        match onednn::forward_from_bf16(x, weight, bias, g) {
            Ok(y) => return y,
            Err(e) => warn_fallback(&e),
        }
    }
    let x: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    forward(&x, weight, bias, g, Layout::ChannelsLast)
}

/// [`backward`] with channels-last activations from the copy of X that
/// [`forward_keeping_input`] kept.
#[allow(clippy::type_complexity)]
pub fn backward_from_kept_input(
    x: &[bf16],
    weight: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    input_grad: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    match onednn::backward_from_kept_input(x, weight, dy, g, input_grad) {
        Ok(grads) => grads,
        Err(e) => {
            warn_fallback(&e);
            // The bf16 values are what a bf16 backward reads of X anyway.
            let x: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
            backward(&x, weight, dy, g, input_grad, Layout::ChannelsLast)
        }
    }
}

/// An N×C×S batch from layout `from` to layout `to`: borrowed where the two agree.
fn convert(v: &[f32], n: usize, c: usize, s: usize, from: Layout, to: Layout) -> Cow<'_, [f32]> {
    match (from, to) {
        (Layout::ChannelsLast, Layout::Nchw) => layout::to_nchw(v, n, c, s).into(),
        (Layout::Nchw, Layout::ChannelsLast) => layout::to_channels_last(v, n, c, s).into(),
        _ => v.into(),
    }
}

/// The layout oneDNN computes activations given in `layout` in: as they are, unless they are
/// channels-last and oneDNN has only slow kernels for that here (then NCHW).
fn onednn_layout(layout: Layout) -> Layout {
    match layout == Layout::ChannelsLast && !onednn::has_channels_last_kernels() {
        true => Layout::Nchw,
        false => layout,
    }
}

/// Where oneDNN fails (it should not: every geometry the networks use is tested), deepcnn's
/// own kernels compute the same function; the first failure is reported.
fn warn_fallback(e: &onednn::OneDnnError) {
    // Out of memory is no fault of oneDNN's: the fallback meets it too, and reports it.
    if e.is_out_of_memory() {
        return;
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| eprintln!("warning: {e}; using deepcnn's own convolution instead"));
}

/// [`forward`] by deepcnn's own kernels: direct where it fits, else im2col + GEMM.
fn own_forward(x: &[f32], weight: &[f32], bias: &[f32], g: &ConvGeometry) -> Vec<f32> {
    if direct::fits(g) {
        direct::forward(x, weight, bias, g)
    } else {
        gemm_forward(x, weight, bias, g)
    }
}

/// The gradients of [`forward`] with respect to X (when `input_grad`: the first layer of a
/// network needs none), W and b, given ∂Y; X, ∂Y and ∂X in `layout`.
pub fn backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    input_grad: bool,
    layout: Layout,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    if g.batch == 0 {
        return (input_grad.then(Vec::new), vec![0.0; weight.len()], vec![0.0; g.c_out]);
    }
    let (s, p) = (g.h * g.w, g.p());
    let into_layout = |dx: Vec<f32>, from: Layout| convert(&dx, g.batch, g.c_in, s, from, layout).into_owned();
    if !single_pixel::fits(g) && on_onednn(g) {
        let onednn_layout = onednn_layout(layout);
        let x = convert(x, g.batch, g.c_in, s, layout, onednn_layout);
        let dy = convert(dy, g.batch, g.c_out, p, layout, onednn_layout);
        match onednn::backward_in(&x, weight, &dy, g, input_grad, bf16_backward(g), onednn_layout) {
            Ok((dx, dw, db)) => return (dx.map(|dx| into_layout(dx, onednn_layout)), dw, db),
            Err(e) => warn_fallback(&e),
        }
    }
    let x = convert(x, g.batch, g.c_in, s, layout, Layout::Nchw);
    let dy = convert(dy, g.batch, g.c_out, p, layout, Layout::Nchw);
    let (dx, dw, db) = if single_pixel::fits(g) {
        let bf16 = bf16_backward(g);
        let dx = input_grad.then(|| single_pixel::input_grad(weight, &dy, g, bf16));
        (dx, single_pixel::weight_grad(&x, &dy, g, bf16), bias_grad(&dy, g))
    } else {
        own_backward(&x, weight, &dy, g, input_grad)
    };
    (dx.map(|dx| into_layout(dx, Layout::Nchw)), dw, db)
}

/// [`backward`] by deepcnn's own kernels.
fn own_backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    input_grad: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let dx = input_grad.then(|| own_input_grad(weight, dy, g));
    let dw = if direct::fits(g) { direct::weight_grad(x, dy, g) } else { weight_grad_by_im2col(x, dy, g) };
    (dx, dw, bias_grad(dy, g))
}

fn own_input_grad(weight: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
    if input_grad_is_a_convolution(g) {
        input_grad_by_convolution(weight, dy, g)
    } else {
        input_grad_by_col2im(weight, dy, g)
    }
}

/// ∂b: ∂Y summed over images and pixels.
fn bias_grad(dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let p = g.p();
    (0..g.c_out)
        .into_par_iter()
        .map(|co| {
            dy.chunks(g.out_len()).map(|dy_n| dy_n[co * p..(co + 1) * p].iter().sum::<f32>() as f64).sum::<f64>() as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{max_diff, pattern};

    /// Calls `term(x, w, y)` with the flat indices of every product X[x]·W[w] that the
    /// definition of the convolution adds into Y[y]: the one loop the references below share.
    fn for_each_term(g: &ConvGeometry, mut term: impl FnMut(usize, usize, usize)) {
        let (ho, wo) = (g.out_h(), g.out_w());
        for n in 0..g.batch {
            for co in 0..g.c_out {
                for oh in 0..ho {
                    for ow in 0..wo {
                        let y = ((n * g.c_out + co) * ho + oh) * wo + ow;
                        for ci in 0..g.c_in {
                            for i in 0..g.kh {
                                for j in 0..g.kw {
                                    let ih = (oh * g.stride[0] + i) as isize - g.padding[0] as isize;
                                    let iw = (ow * g.stride[1] + j) as isize - g.padding[1] as isize;
                                    if (0..g.h as isize).contains(&ih) && (0..g.w as isize).contains(&iw) {
                                        let x = ((n * g.c_in + ci) * g.h + ih as usize) * g.w + iw as usize;
                                        term(x, ((co * g.c_in + ci) * g.kh + i) * g.kw + j, y);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Y by the definition (no bias).
    fn naive_forward(x: &[f32], weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let mut y = vec![0.0f32; g.batch * g.out_len()];
        for_each_term(g, |xi, wi, yi| y[yi] += weight[wi] * x[xi]);
        y
    }

    /// ∂X by the definition: every output gradient sent back through every tap.
    fn naive_input_grad(weight: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let mut dx = vec![0.0f32; g.batch * g.in_len()];
        for_each_term(g, |xi, wi, yi| dx[xi] += weight[wi] * dy[yi]);
        dx
    }

    /// ∂W by the definition.
    fn naive_weight_grad(x: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let mut dw = vec![0.0f32; g.c_out * g.k()];
        for_each_term(g, |xi, wi, yi| dw[wi] += x[xi] * dy[yi]);
        dw
    }

    /// The forward pass, ∂W and ∂b (each by im2col and directly), and both ways of computing ∂X
    /// (col2im, and the transposed convolution) against the definition, with and without ∂X, with non-square kernels,
    /// strides 1 to 3 and paddings from 0 to k − 1 (im2col's edge cases: taps that read only
    /// padding, rows partly outside). The column budget is small under test, so the layers are
    /// split into chunks as the large ones are.
    #[test]
    fn every_path_matches_the_definition() {
        let geometries = [
            // (c_in, c_out, h, w, kh, kw, stride, padding)
            (12, 4, 7, 6, 3, 3, [1, 1], [1, 1]),
            (12, 4, 7, 6, 3, 5, [1, 1], [0, 4]),
            (3, 8, 7, 6, 3, 3, [1, 1], [1, 1]),
            (9, 4, 5, 5, 1, 1, [1, 1], [0, 0]),
            (6, 2, 8, 9, 5, 2, [1, 1], [2, 1]),
            (6, 2, 8, 9, 3, 3, [2, 1], [1, 1]),
            (2, 3, 4, 5, 5, 7, [3, 2], [4, 6]),
            (2, 3, 9, 9, 7, 7, [2, 2], [3, 3]),
            // Direct: a partial block of output channels, and rows of 13 = 8 + 5 pixels; 8 taps,
            // not a multiple of the taps ∂W takes together.
            (2, 6, 12, 13, 5, 3, [1, 1], [2, 1]),
            (2, 5, 9, 11, 2, 2, [1, 1], [1, 0]),
        ];
        let (mut by_convolution, mut direct) = (0, 0);
        for (c_in, c_out, h, w, kh, kw, stride, padding) in geometries {
            let g = ConvGeometry { batch: 3, c_in, h, w, c_out, kh, kw, stride, padding };
            by_convolution += input_grad_is_a_convolution(&g) as usize;
            direct += direct::fits(&g) as usize;
            let x = pattern(g.batch * g.in_len(), 1);
            let weight = pattern(c_out * g.k(), 2);
            let dy = pattern(g.batch * g.out_len(), 3);
            let y = forward(&x, &weight, &vec![0.0; c_out], &g, Layout::Nchw);
            let diff = max_diff(&y, &naive_forward(&x, &weight, &g));
            assert!(diff < 1e-5, "{g:?}: Y differs by {diff}");
            for input_grad in [true, false] {
                let (dx, dw, db) = backward(&x, &weight, &dy, &g, input_grad, Layout::Nchw);
                assert_eq!(dx.is_some(), input_grad);
                if let Some(dx) = dx {
                    let diff = max_diff(&dx, &naive_input_grad(&weight, &dy, &g));
                    assert!(diff < 1e-5, "{g:?}: ∂X differs by {diff}");
                }
                let diff = max_diff(&dw, &naive_weight_grad(&x, &dy, &g));
                assert!(diff < 1e-4, "{g:?}: ∂W differs by {diff}");
                if direct::fits(&g) {
                    // The portable code, which machines without AVX2 run.
                    let y = direct::forward_with(&x, &weight, &vec![0.0; c_out], &g, false);
                    assert!(max_diff(&y, &naive_forward(&x, &weight, &g)) < 1e-5, "{g:?}: portable Y");
                    let dw = direct::weight_grad_with(&x, &dy, &g, false);
                    assert!(max_diff(&dw, &naive_weight_grad(&x, &dy, &g)) < 1e-4, "{g:?}: portable ∂W");
                }
                let expected: Vec<f32> =
                    (0..c_out).map(|o| dy.chunks(g.out_len()).flat_map(|d| &d[o * g.p()..][..g.p()]).sum()).collect();
                assert!(max_diff(&db, &expected) < 1e-4, "{g:?}: ∂b");
            }
        }
        assert!((1..geometries.len()).contains(&by_convolution), "both ∂X paths must be exercised");
        assert!((1..geometries.len()).contains(&direct), "direct and im2col paths must be exercised");
    }
}
