//! The operation trait: what deepcnn's kernels compute, as a burn backend extension.
//! [`FastOps`] is implemented for burn's Flex CPU backend ([`super::flex`]: the kernels) and
//! for `Autodiff` over it ([`super::autodiff`]: the backward wiring); burn's `Dispatch`
//! backend forwards to them.

use burn::backend::{backend_extension, tensor::FloatTensor, Backend, ExtensionType};

use super::batch_norm::Activation;
use super::layout::Layout;
use super::{adam, pool};

/// The outputs of training-mode batch normalization.
#[derive(ExtensionType)]
pub struct BatchNormTrainOutput<B: Backend> {
    pub output: FloatTensor<B>,
    pub mean: FloatTensor<B>,
    pub variance: FloatTensor<B>,
}

/// Gradients of a layer with input, weight and bias (γ and β for batch normalization).
#[derive(ExtensionType)]
pub struct LayerGrads<B: Backend> {
    pub input: FloatTensor<B>,
    pub weight: FloatTensor<B>,
    pub bias: FloatTensor<B>,
}

/// A convolution's output, and what its backward needs of its input ([`FastOps::gemm_conv2d_keeping_input`]).
#[derive(ExtensionType)]
pub struct ConvForward<B: Backend> {
    pub output: FloatTensor<B>,
    pub kept_input: FloatTensor<B>,
}

/// The two parts of a batch split along the channels.
#[derive(ExtensionType)]
pub struct ChannelSplit<B: Backend> {
    pub first: FloatTensor<B>,
    pub second: FloatTensor<B>,
}

/// A parameter and its Adam moments after one update.
#[derive(ExtensionType)]
pub struct AdamUpdate<B: Backend> {
    pub param: FloatTensor<B>,
    pub moment_1: FloatTensor<B>,
    pub moment_2: FloatTensor<B>,
}

/// The fast operations. Shapes: `x` is N×C×…, per-channel tensors have C elements. An
/// N×C×H×W tensor may lie channels-last ([`Layout`]): the operations then work in that layout
/// and give their outputs and the gradients of their inputs in it (the layout is a matter of
/// speed only: either gives the same values).
#[backend_extension(Flex, Autodiff)]
pub trait FastOps: Backend {
    /// Batch normalization with the batch's own statistics (biased variance), followed by
    /// `activation`. With `bf16_output`, where the backend can (Flex, channels-last x), the
    /// output is written rounded to bf16: for a bf16 convolution, which reads exactly those
    /// values, and nothing else.
    fn fused_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        activation: Activation,
        bf16_output: bool,
    ) -> BatchNormTrainOutput<Self>;

    /// Gradients of [`FastOps::fused_batch_norm_train`] for x, γ and β, with its ReLU where
    /// `relu` (a sigmoid's gradient is applied to `output_grad` before).
    #[allow(clippy::too_many_arguments)]
    fn fused_batch_norm_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        output_grad: FloatTensor<Self>,
    ) -> LayerGrads<Self>;

    /// Batch normalization with given statistics (evaluation mode), followed by `activation`.
    fn fused_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        activation: Activation,
    ) -> FloatTensor<Self>;

    /// One Adam update of a parameter (no gradient is recorded); see [`adam`].
    fn fused_adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        scalars: adam::AdamScalars,
    ) -> AdamUpdate<Self>;

    /// One step of a moving average, `decay·average + (1 − decay)·current` (no gradient is
    /// recorded); see [`super::ema`].
    fn fused_ema_step(average: FloatTensor<Self>, current: FloatTensor<Self>, decay: f64) -> FloatTensor<Self>;

    /// Max pooling on N×C×H×W (no dilation, floor).
    fn fast_max_pool2d(x: FloatTensor<Self>, window: pool::PoolWindow) -> FloatTensor<Self>;

    /// 2×2 average pooling with stride 2, no padding, rounding down.
    fn fast_avg_pool2d_2x2(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Gradient of [`FastOps::fast_avg_pool2d_2x2`] for an input of `input_shape`, in the layout
    /// of `output_grad`.
    fn fast_avg_pool2d_2x2_backward(output_grad: FloatTensor<Self>, input_shape: [usize; 4]) -> FloatTensor<Self>;

    /// Gradient of [`FastOps::fast_max_pool2d`] from its input and output.
    fn fast_max_pool2d_backward(
        x: FloatTensor<Self>,
        output: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        window: pool::PoolWindow,
    ) -> FloatTensor<Self>;

    /// The logistic sigmoid.
    fn fast_sigmoid(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Gradient of [`FastOps::fast_sigmoid`] from its output.
    fn fast_sigmoid_backward(output: FloatTensor<Self>, output_grad: FloatTensor<Self>) -> FloatTensor<Self>;

    /// 2-D convolution with bias, dilation 1, one group; `geometry` is `[stride_h, stride_w,
    /// padding_h, padding_w]`.
    fn gemm_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: [usize; 4],
    ) -> FloatTensor<Self>;

    /// [`FastOps::gemm_conv2d`], and what its backward needs of x: x itself, or where the
    /// backend has one, a copy that costs less (Flex in bf16 with channels-last activations:
    /// the bf16 values the convolution read, half of x's memory and no second conversion).
    fn gemm_conv2d_keeping_input(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: [usize; 4],
    ) -> ConvForward<Self>;

    /// Gradients of [`FastOps::gemm_conv2d`] for x, the weight and the bias, from x or the
    /// copy of it that [`FastOps::gemm_conv2d_keeping_input`] kept. Without `input_grad` the
    /// input's gradient is not computed (an empty tensor stands in for it).
    fn gemm_conv2d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        geometry: [usize; 4],
        input_grad: bool,
    ) -> LayerGrads<Self>;

    /// The N×C×H×W tensor `x` with its values in `layout` (the same values: a copy only where
    /// it lies otherwise).
    fn fast_to_layout(x: FloatTensor<Self>, layout: Layout) -> FloatTensor<Self>;

    /// `a` and `b` (N×Ca×H×W and N×Cb×H×W) concatenated along the channels, in `a`'s layout.
    /// With `bf16_output`, where the backend can (Flex, channels-last `a`), the output is
    /// written rounded to bf16: for the batch normalizations and concatenations that read it,
    /// and nothing else (a bf16 `a` gives a bf16 output either way).
    fn fast_cat_channels(a: FloatTensor<Self>, b: FloatTensor<Self>, bf16_output: bool) -> FloatTensor<Self>;

    /// Gradients of [`FastOps::fast_cat_channels`] for its inputs of `channels` channels, in the
    /// layout of `grad`; a channels-last `grad`'s first part may be a view of its first
    /// channels (Flex: no copy, for autodiff's sum with the other gradient of the same tensor).
    fn fast_split_channels(grad: FloatTensor<Self>, channels: [usize; 2]) -> ChannelSplit<Self>;

    /// `x` in f32 (a bf16 activation, where an operation without a bf16 path reads it), its
    /// gradient passed back as it comes (f32, as every activation's gradient is).
    fn fast_to_f32(x: FloatTensor<Self>) -> FloatTensor<Self>;
}
