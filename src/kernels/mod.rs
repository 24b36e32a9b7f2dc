//! deepcnn's own CPU kernels for the hot paths of training, as a burn backend extension.
//!
//! The extension, [`FastOps`] ([`extension`]): batch normalization (with the ReLU after it
//! fused in), convolution, max pooling and the sigmoid, each with a hand-written backward, and
//! Adam's update. Its implementations: [`flex`] on burn's Flex CPU backend, calling the kernels
//! ([`batch_norm`], [`conv`] with [`onednn`], [`pool`], [`activation`], [`adam`]); [`autodiff`]
//! wiring their backward passes into burn's autodiff graph. The tensor-level functions below
//! are what layers call: on a Flex device (with or without autodiff) they take the extension,
//! anywhere else they fall back to burn's own operations, so a network computes the same
//! function on every backend.

pub mod activation;
pub mod adam;
mod autodiff;
pub mod batch_norm;
pub mod concat;
pub mod conv;
pub mod element;
pub mod ema;
pub mod extension;
mod flex;
pub mod layout;
pub mod onednn;
pub mod pool;
pub mod profile;
pub(crate) mod simd;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::{Dispatch, DispatchDevice};
use burn::prelude::*;
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use burn::tensor::DType;

pub use batch_norm::Activation;
pub use extension::FastOps;

/// deepcnn's kernels, by what they compute: the names of their switches (`deepcnn bench
/// --burn-ops` turns them off one by one to time burn's own operations in their place) and of
/// their entries in profiles ([`profile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Kernel {
    Conv,
    BatchNorm,
    Sigmoid,
    Adam,
    MaxPool,
    AvgPool,
    /// The moving average of the weights' update (`--ema`).
    Ema,
    /// oneDNN's convolutions: off, deepcnn's own im2col + GEMM ones take their place.
    Onednn,
    /// Activations kept channels-last from layer to layer where a network asks for it
    /// (DenseNet): off, they stay NCHW.
    ChannelsLast,
    /// deepcnn's concatenation along the channels, in either layout: off, burn's.
    Concat,
}

impl Kernel {
    /// As profiles print it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Conv => "conv2d",
            Kernel::BatchNorm => "batch norm",
            Kernel::Sigmoid => "sigmoid",
            Kernel::Adam => "adam",
            Kernel::MaxPool => "max pool",
            Kernel::AvgPool => "avg pool",
            Kernel::Ema => "ema",
            Kernel::Onednn => "oneDNN",
            Kernel::ChannelsLast => "to channels-last",
            Kernel::Concat => "concat",
        }
    }
}

// One per variant (`Kernel::Onednn`'s own switch lives in `onednn`).
static DISABLED: [AtomicBool; 10] = [const { AtomicBool::new(false) }; 10];

/// Uses burn's own operations instead of `kernel` (or deepcnn's kernel again) from now on, in
/// the whole process.
pub fn set_kernel_enabled(kernel: Kernel, enabled: bool) {
    match kernel {
        Kernel::Onednn => onednn::set_enabled(enabled),
        _ => DISABLED[kernel as usize].store(!enabled, Ordering::Relaxed),
    }
}

/// Whether `kernel` applies to `x`: it is switched on, and `x` is f32 on burn's Flex backend,
/// with or without autodiff.
fn fast_path<const D: usize>(kernel: Kernel, x: &Tensor<D>) -> bool {
    fast_path_in(kernel, x, DType::F32)
}

/// [`fast_path`] for `x` in `dtype`.
fn fast_path_in<const D: usize>(kernel: Kernel, x: &Tensor<D>, dtype: DType) -> bool {
    !DISABLED[kernel as usize].load(Ordering::Relaxed)
        && matches!(x.device().without_autodiff().as_dispatch(), DispatchDevice::Flex(_))
        && x.dtype() == dtype
}

/// `activation` applied on its own, where batch normalization could not fuse it.
fn activate<const D: usize>(y: Tensor<D>, activation: Activation) -> Tensor<D> {
    match activation {
        Activation::Identity => y,
        Activation::Relu => burn::tensor::activation::relu(y),
        Activation::Sigmoid => sigmoid(y),
    }
}

/// Training-mode batch normalization, followed by `activation`: the output, and the batch's
/// per-channel mean and biased variance (what the running statistics are updated with).
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    activation: Activation,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    batch_norm_train_as(x, gamma, beta, epsilon, activation, false)
}

/// [`batch_norm_train`] whose output only a convolution ([`conv2d`]) reads: in bf16 with
/// channels-last activations on oneDNN (DenseNet's BN-ReLU-conv) it is written in bf16, the
/// values the convolution would round it to, at half the memory traffic and with no
/// conversion in the convolution. The same numbers either way.
pub fn batch_norm_train_for_conv<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    activation: Activation,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    batch_norm_train_as(x, gamma, beta, epsilon, activation, bf16_convolutions())
}

/// Whether convolutions run in bf16 on oneDNN (`--precision bf16`, the kernels on).
fn bf16_convolutions() -> bool {
    onednn::is_bf16() && onednn::is_enabled() && !DISABLED[Kernel::Conv as usize].load(Ordering::Relaxed)
}

/// Whether a concatenation that only batch normalizations and concatenations read
/// ([`cat_channels_for_batch_norm`]) is written in bf16: with bf16 convolutions, where both
/// of its readers are deepcnn's kernels.
fn bf16_activations() -> bool {
    let on = |k: Kernel| !DISABLED[k as usize].load(Ordering::Relaxed);
    bf16_convolutions() && on(Kernel::BatchNorm) && on(Kernel::Concat)
}

/// `x` in f32, for burn's operations (a bf16 concatenation's output, where a kernel that
/// reads bf16 does not apply). bf16 activations exist on Flex only, so the extension's
/// conversion applies: its gradient stays f32, as the tensor's other gradients are.
fn in_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match x.dtype() {
        DType::BF16 => Tensor::from_dispatch(<Dispatch as FastOps>::fast_to_f32(x.into_dispatch())),
        _ => x,
    }
}

/// Whether batch normalization's kernel applies to `x`: f32, or bf16 (a bf16 concatenation).
fn batch_norm_applies<const D: usize>(x: &Tensor<D>) -> bool {
    fast_path(Kernel::BatchNorm, x) || fast_path_in(Kernel::BatchNorm, x, DType::BF16)
}

fn batch_norm_train_as<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    activation: Activation,
    bf16_output: bool,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    if !batch_norm_applies(&x) {
        let r = burn::tensor::module::batch_norm_train(in_f32(x), gamma, beta, epsilon);
        return (activate(r.output, activation), r.mean, r.variance);
    }
    let r = <Dispatch as FastOps>::fused_batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
        activation,
        bf16_output,
    );
    (Tensor::from_dispatch(r.output), Tensor::from_dispatch(r.mean), Tensor::from_dispatch(r.variance))
}

/// Evaluation-mode batch normalization with the given per-channel statistics, followed by
/// `activation`.
pub fn batch_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    variance: Tensor<1>,
    epsilon: f64,
    activation: Activation,
) -> Tensor<D> {
    if !batch_norm_applies(&x) {
        return activate(burn::tensor::module::batch_norm(in_f32(x), gamma, beta, mean, variance, epsilon), activation);
    }
    Tensor::from_dispatch(<Dispatch as FastOps>::fused_batch_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        mean.into_dispatch(),
        variance.into_dispatch(),
        epsilon,
        activation,
    ))
}

/// Whether [`adam_step`] applies to `param` (where not, take burn's Adam).
pub fn adam_applies<const D: usize>(param: &Tensor<D>) -> bool {
    fast_path(Kernel::Adam, param)
}

/// One Adam update: `param`, `moment_1` and `moment_2` after step `scalars`. Only where
/// [`adam_applies`]. Parameter and moments are updated in place when the caller held the only
/// references to them.
pub fn adam_step<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moment_1: Tensor<D>,
    moment_2: Tensor<D>,
    scalars: adam::AdamScalars,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    assert!(adam_applies(&param), "adam_step called where the kernel does not apply");
    let u = <Dispatch as FastOps>::fused_adam_step(
        param.into_dispatch(),
        grad.into_dispatch(),
        moment_1.into_dispatch(),
        moment_2.into_dispatch(),
        scalars,
    );
    (Tensor::from_dispatch(u.param), Tensor::from_dispatch(u.moment_1), Tensor::from_dispatch(u.moment_2))
}

/// One step of a moving average: `decay·average + (1 − decay)·current`, in place where the
/// caller held the only reference to `average`.
pub fn ema_step<const D: usize>(average: Tensor<D>, current: Tensor<D>, decay: f64) -> Tensor<D> {
    if !fast_path(Kernel::Ema, &average) {
        return average.mul_scalar(decay) + current.mul_scalar(1.0 - decay);
    }
    Tensor::from_dispatch(<Dispatch as FastOps>::fused_ema_step(
        average.into_dispatch(),
        current.into_dispatch(),
        decay,
    ))
}

/// 2-D max pooling. The kernels take windows without dilation, with symmetric padding of at
/// most half the window (as PyTorch allows), rounding down; anything else goes to burn's
/// `max_pool2d`, which reports what is wrong with it.
pub fn max_pool2d(x: Tensor<4>, options: MaxPoolOptions<2>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let [(top, bottom), (left, right)] = options.padding;
    let window = pool::PoolWindow { kernel: options.kernel_size, stride: options.stride, padding: [top, left] };
    let fits = (0..2).all(|d| {
        let (k, p, size) = (window.kernel[d], window.padding[d], [h, w][d]);
        k > 0 && window.stride[d] > 0 && p <= k / 2 && size + 2 * p >= k
    });
    let plain = top == bottom && left == right && options.dilation == [1, 1] && !options.ceil_mode;
    if !(plain && fits && fast_path(Kernel::MaxPool, &x)) {
        return burn::tensor::module::max_pool2d(x, options);
    }
    Tensor::from_dispatch(<Dispatch as FastOps>::fast_max_pool2d(x.into_dispatch(), window))
}

/// 2-D average pooling. The kernel takes DenseNet's 2×2 window with stride 2 (no padding,
/// rounding down); anything else goes to burn's `avg_pool2d`.
pub fn avg_pool2d(x: Tensor<4>, options: AvgPoolOptions<2>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let two_by_two = options.kernel_size == [2, 2] && options.stride == [2, 2] && h >= 2 && w >= 2;
    let plain = options.padding == [(0, 0), (0, 0)] && !options.ceil_mode;
    if !(two_by_two && plain && fast_path(Kernel::AvgPool, &x)) {
        return burn::tensor::module::avg_pool2d(x, options);
    }
    Tensor::from_dispatch(<Dispatch as FastOps>::fast_avg_pool2d_2x2(x.into_dispatch()))
}

/// `x` with its values channels-last (an N×C×H×W view of an N×H×W×C buffer, [`layout`]), from
/// which deepcnn's kernels keep the layout from layer to layer: oneDNN's convolutions then
/// read and write their activations without a reorder. Where that is not so (another
/// backend, the kernels or oneDNN switched off, or oneDNN without fast channels-last kernels
/// here), `x` as it is. The values are the same either way.
pub fn channels_last(x: Tensor<4>) -> Tensor<4> {
    let fits = onednn::is_enabled() && !DISABLED[Kernel::Conv as usize].load(Ordering::Relaxed);
    if !(fast_path(Kernel::ChannelsLast, &x) && fits && onednn::has_channels_last_kernels()) {
        return x;
    }
    Tensor::from_dispatch(<Dispatch as FastOps>::fast_to_layout(x.into_dispatch(), layout::Layout::ChannelsLast))
}

/// `a` and `b` concatenated along the channels (`Tensor::cat` on dimension 1), in `a`'s layout
/// (in bf16 where `a` is a bf16 concatenation, [`cat_channels_for_batch_norm`]).
pub fn cat_channels(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    cat_channels_as(a, b, false)
}

/// [`cat_channels`] whose output only batch normalizations and further concatenations read
/// (DenseNet's dense blocks): with bf16 convolutions and channels-last activations it is
/// written in bf16, as PyTorch's autocast keeps these activations, at half the memory traffic
/// for every layer that reads it. In f32 otherwise.
pub fn cat_channels_for_batch_norm(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    cat_channels_as(a, b, bf16_activations())
}

fn cat_channels_as(a: Tensor<4>, b: Tensor<4>, bf16_output: bool) -> Tensor<4> {
    let ([n, _, h, w], [nb, _, hb, wb]) = (a.dims(), b.dims());
    let applies = |x: &Tensor<4>| fast_path(Kernel::Concat, x) || fast_path_in(Kernel::Concat, x, DType::BF16);
    if !(applies(&a) && applies(&b) && [n, h, w] == [nb, hb, wb]) {
        return Tensor::cat(vec![in_f32(a), in_f32(b)], 1);
    }
    let cat = <Dispatch as FastOps>::fast_cat_channels(a.into_dispatch(), b.into_dispatch(), bf16_output);
    Tensor::from_dispatch(cat)
}

/// The logistic sigmoid.
pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !fast_path(Kernel::Sigmoid, &x) {
        return burn::tensor::activation::sigmoid(x);
    }
    Tensor::from_dispatch(<Dispatch as FastOps>::fast_sigmoid(x.into_dispatch()))
}

/// 2-D convolution. The GEMM kernel takes the common case (a bias, one group, no dilation,
/// symmetric padding); anything else goes to burn's `conv2d`.
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>, options: ConvOptions<2>) -> Tensor<4> {
    let plain = options.groups == 1 && options.dilation == [1, 1] && !options.is_asymmetric();
    // Shapes the kernel cannot take go to burn, which reports what is wrong with them.
    let [_, c_in, h, w] = x.dims();
    let [_, w_in, kh, kw] = weight.dims();
    let [ph, pw] = options.padding_begin();
    let fits = c_in == w_in && h + 2 * ph >= kh && w + 2 * pw >= kw && options.stride.iter().all(|&s| s > 0);
    let plain = plain && fits;
    // A bf16 input is batch normalization's output for this convolution
    // ([`batch_norm_train_for_conv`]): the kernel reads it as it is; burn gets it in f32.
    let bf16_input = x.dtype() == DType::BF16;
    let ours = fast_path(Kernel::Conv, &x) || fast_path_in(Kernel::Conv, &x, DType::BF16);
    match bias {
        Some(bias) if plain && ours => {
            let [ph, pw] = options.padding_begin();
            let geometry = [options.stride[0], options.stride[1], ph, pw];
            Tensor::from_dispatch(<Dispatch as FastOps>::gemm_conv2d(
                x.into_dispatch(),
                weight.into_dispatch(),
                bias.into_dispatch(),
                geometry,
            ))
        }
        bias if bf16_input => burn::tensor::module::conv2d(x.cast(DType::F32), weight, bias, options),
        bias => burn::tensor::module::conv2d(x, weight, bias, options),
    }
}

#[cfg(test)]
mod tests;
