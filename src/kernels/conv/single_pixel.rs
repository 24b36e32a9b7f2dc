//! A convolution of 1×1 images into 1×1 outputs (ResNet-18's last stage at 28×28 input: 3×3
//! convolutions with padding 1 on 512 channels of one pixel). Only one tap of the kernel meets
//! the image, so the convolution is a matrix product with that tap's Cout×Cin weights; oneDNN
//! computes all kh·kw taps (nine times the work) and reorders the whole weight tensor on each
//! pass. In bf16 the inputs are rounded to bf16 first and the products summed in f32, as
//! oneDNN's bf16 convolutions do.

use super::gemm::{matmul, Mat};
use super::ConvGeometry;

/// Whether `g` is such a convolution.
pub fn fits(g: &ConvGeometry) -> bool {
    g.h == 1 && g.w == 1 && g.out_h() == 1 && g.out_w() == 1 && g.kh * g.kw > 1
}

/// The one tap that meets the image: input pixel 0 is kernel offset (pad_h, pad_w).
fn tap(g: &ConvGeometry) -> usize {
    g.padding[0] * g.kw + g.padding[1]
}

/// That tap's weights, Cout×Cin row-major, rounded to bf16 where `bf16`.
fn tap_weights(weight: &[f32], g: &ConvGeometry, bf16: bool) -> Vec<f32> {
    let (taps, t) = (g.kh * g.kw, tap(g));
    weight.iter().skip(t).step_by(taps).map(|&v| rounded(v, bf16)).collect()
}

fn rounded(v: f32, bf16: bool) -> f32 {
    if bf16 {
        half::bf16::from_f32(v).to_f32()
    } else {
        v
    }
}

fn rounded_all(values: &[f32], bf16: bool) -> std::borrow::Cow<'_, [f32]> {
    match bf16 {
        true => values.iter().map(|&v| rounded(v, true)).collect::<Vec<_>>().into(),
        false => values.into(),
    }
}

/// Y (N×Cout) = X (N×Cin) · Wᵀ + b.
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: &ConvGeometry, bf16: bool) -> Vec<f32> {
    let (n, c_in, c_out) = (g.batch, g.c_in, g.c_out);
    let w = tap_weights(weight, g, bf16);
    let mut y = vec![0.0f32; n * c_out];
    matmul(n, c_out, c_in, &mut y, Mat::rows(&rounded_all(x, bf16), c_in), Mat::transposed(&w, c_in), false);
    for row in y.chunks_exact_mut(c_out) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
    y
}

/// ∂X (N×Cin) = ∂Y (N×Cout) · W.
pub fn input_grad(weight: &[f32], dy: &[f32], g: &ConvGeometry, bf16: bool) -> Vec<f32> {
    let (n, c_in, c_out) = (g.batch, g.c_in, g.c_out);
    let w = tap_weights(weight, g, bf16);
    let mut dx = vec![0.0f32; n * c_in];
    matmul(n, c_in, c_out, &mut dx, Mat::rows(&rounded_all(dy, bf16), c_out), Mat::rows(&w, c_in), false);
    dx
}

/// ∂W: ∂Yᵀ · X at the tap, zero elsewhere.
pub fn weight_grad(x: &[f32], dy: &[f32], g: &ConvGeometry, bf16: bool) -> Vec<f32> {
    let (n, c_in, c_out) = (g.batch, g.c_in, g.c_out);
    let mut at_tap = vec![0.0f32; c_out * c_in];
    let (x, dy) = (rounded_all(x, bf16), rounded_all(dy, bf16));
    matmul(c_out, c_in, n, &mut at_tap, Mat::transposed(&dy, c_out), Mat::rows(&x, c_in), false);
    let (taps, t) = (g.kh * g.kw, tap(g));
    let mut dw = vec![0.0f32; c_out * c_in * taps];
    for (i, v) in at_tap.into_iter().enumerate() {
        dw[i * taps + t] = v;
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::layout::Layout;
    use crate::kernels::onednn;
    use crate::test_util::{max_diff, pattern as values};

    /// Each pass against oneDNN computing every tap, in f32 and (where the CPU has bf16
    /// kernels) in bf16, where both round the inputs to bf16 and sum in f32: equal but for the
    /// order of the sums.
    #[test]
    fn every_pass_matches_onednn_in_f32_and_bf16() {
        let has_bf16 = onednn::has_bf16_kernels();
        for g in [
            ConvGeometry { batch: 5, c_in: 24, h: 1, w: 1, c_out: 16, kh: 3, kw: 3, stride: [1, 1], padding: [1, 1] },
            ConvGeometry { batch: 3, c_in: 8, h: 1, w: 1, c_out: 12, kh: 3, kw: 3, stride: [2, 2], padding: [1, 1] },
        ] {
            assert!(fits(&g));
            let x = values(g.batch * g.c_in, 1);
            let w = values(g.c_out * g.c_in * 9, 2);
            let b = values(g.c_out, 3);
            let dy = values(g.batch * g.c_out, 4);
            for bf16 in [false, true].into_iter().filter(|&b| !b || has_bf16) {
                let what = format!("{g:?} bf16 {bf16}");
                let y = onednn::forward_in(&x, &w, &b, &g, bf16, Layout::Nchw).unwrap();
                assert!(max_diff(&forward(&x, &w, &b, &g, bf16), &y) < 1e-5, "{what}: Y");
                let dx = onednn::backward_data_in(&w, &dy, &g, bf16, Layout::Nchw).unwrap();
                assert!(max_diff(&input_grad(&w, &dy, &g, bf16), &dx) < 1e-5, "{what}: ∂X");
                let (dw, _) = onednn::backward_weights_in(&x, &dy, &g, bf16, Layout::Nchw).unwrap();
                let d = max_diff(&weight_grad(&x, &dy, &g, bf16), &dw);
                assert!(d < 1e-5, "{what}: ∂W differs by {d}");
            }
        }
    }
}
