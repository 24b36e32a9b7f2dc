//! deepcnn's own CPU kernels for the hot paths of training, as a burn backend extension.
//!
//! [`FastOps`] is the extension: fused batch normalization, convolution (direct or
//! im2col+GEMM), 2×2 max pooling and the sigmoid, each with a hand-written backward, and Adam's
//! update. It is implemented for burn's `Flex` CPU backend (the kernels in [`batch_norm`],
//! [`conv`], [`pool`], [`activation`] and [`adam`]) and for `Autodiff<Flex>` (the backward
//! passes). The
//! tensor-level functions below are what layers call: on a Flex device (with or without
//! autodiff) they take the extension, anywhere else they fall back to burn's own operations,
//! so a network computes the same function on every backend.

pub mod activation;
pub mod adam;
pub mod batch_norm;
pub mod conv;
pub mod onednn;
pub mod pool;
pub mod profile;
pub(crate) mod simd;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::flex::FlexTensor;
use burn::backend::{
    backend_extension, tensor::FloatTensor, AutodiffBackend, Backend, Dispatch, DispatchDevice, ExtensionType, Flex,
};
use std::sync::atomic::{AtomicBool, Ordering};

use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::DType;

use batch_norm::NcsShape;
use conv::ConvGeometry;

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

/// A parameter and its Adam moments after one update.
#[derive(ExtensionType)]
pub struct AdamUpdate<B: Backend> {
    pub param: FloatTensor<B>,
    pub moment_1: FloatTensor<B>,
    pub moment_2: FloatTensor<B>,
}

/// The fast operations. Shapes: `x` is N×C×…, per-channel tensors have C elements.
#[backend_extension(Flex, Autodiff)]
pub trait FastOps: Backend {
    /// Batch normalization with the batch's own statistics (biased variance), followed by a
    /// ReLU where `relu`.
    fn fused_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> BatchNormTrainOutput<Self>;

    /// Gradients of [`FastOps::fused_batch_norm_train`] for x, γ and β.
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

    /// Batch normalization with given statistics (evaluation mode), with a ReLU where `relu`.
    fn fused_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// One Adam update of a parameter (no gradient is recorded); see [`adam`].
    fn fused_adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        scalars: adam::AdamScalars,
    ) -> AdamUpdate<Self>;

    /// Max pooling on N×C×H×W (no dilation, floor).
    fn fast_max_pool2d(x: FloatTensor<Self>, window: pool::PoolWindow) -> FloatTensor<Self>;

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

    /// Gradients of [`FastOps::gemm_conv2d`] for x, the weight and the bias. Without
    /// `input_grad` the input's gradient is not computed (an empty tensor stands in for it).
    fn gemm_conv2d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        geometry: [usize; 4],
        input_grad: bool,
    ) -> LayerGrads<Self>;
}

// ---- Flex: the kernels on contiguous f32 storage. ----

fn f32s(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().storage::<f32>().to_vec()),
    }
}

/// `t` as a contiguous f32 tensor that spans its whole buffer, so that its storage is exactly
/// its elements (a copy only where `t` is a strided or offset view).
fn whole_buffer(t: FlexTensor) -> FlexTensor {
    let spans_buffer = t.as_slice::<f32>().is_some_and(|s| s.len() == t.storage::<f32>().len());
    if spans_buffer {
        t
    } else {
        flex(f32s(&t).into_owned(), &dims(&t))
    }
}

fn flex(data: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape.to_vec()))
}

fn dims(t: &FlexTensor) -> Vec<usize> {
    burn::backend::TensorMetadata::shape(t).to_vec()
}

fn conv_geometry(x: &[usize], w: &[usize], geometry: [usize; 4]) -> ConvGeometry {
    let [sh, sw, ph, pw] = geometry;
    ConvGeometry {
        batch: x[0],
        c_in: x[1],
        h: x[2],
        w: x[3],
        c_out: w[0],
        kh: w[2],
        kw: w[3],
        stride: [sh, sw],
        padding: [ph, pw],
    }
}

/// The kernels' names in profiles.
pub const CONV_FORWARD: &str = "conv2d forward";
pub const CONV_BACKWARD: &str = "conv2d backward";
pub const BN_FORWARD: &str = "batch norm forward";
pub const BN_BACKWARD: &str = "batch norm backward";
pub const BN_EVAL: &str = "batch norm forward (evaluation)";
pub const MAX_POOL_FORWARD: &str = "max pool forward";
/// Name of the max-pooling backward kernel in the profile.
pub const MAX_POOL_BACKWARD: &str = "max pool backward";
/// Name of the sigmoid forward kernel in the profile.
pub const SIGMOID_FORWARD: &str = "sigmoid forward";
pub const ADAM: &str = "adam update";
pub const SIGMOID_BACKWARD: &str = "sigmoid backward";

impl FastOps for Flex {
    fn fused_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        relu: bool,
    ) -> BatchNormTrainOutput<Self> {
        let shape = dims(&x);
        let ncs = NcsShape::from_dims(&shape);
        let (y, mean, var) = profile::timed(BN_FORWARD, || {
            batch_norm::forward_train(&f32s(&x), ncs, &f32s(&gamma), &f32s(&beta), epsilon, relu)
        });
        BatchNormTrainOutput { output: flex(y, &shape), mean: flex(mean, &[ncs.c]), variance: flex(var, &[ncs.c]) }
    }

    fn fused_batch_norm_train_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        variance: FlexTensor,
        epsilon: f64,
        relu: bool,
        output_grad: FlexTensor,
    ) -> LayerGrads<Self> {
        let shape = dims(&x);
        let ncs = NcsShape::from_dims(&shape);
        let (dx, dgamma, dbeta) = profile::timed(BN_BACKWARD, || {
            batch_norm::backward_train(
                &f32s(&x),
                ncs,
                &f32s(&gamma),
                &f32s(&beta),
                &f32s(&mean),
                &f32s(&variance),
                epsilon,
                relu,
                &f32s(&output_grad),
            )
        });
        LayerGrads { input: flex(dx, &shape), weight: flex(dgamma, &[ncs.c]), bias: flex(dbeta, &[ncs.c]) }
    }

    fn fused_batch_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        variance: FlexTensor,
        epsilon: f64,
        relu: bool,
    ) -> FlexTensor {
        let shape = dims(&x);
        let ncs = NcsShape::from_dims(&shape);
        let y = profile::timed(BN_EVAL, || {
            let (x, gamma, beta, mean, variance) = (f32s(&x), f32s(&gamma), f32s(&beta), f32s(&mean), f32s(&variance));
            batch_norm::normalize(&x, ncs, &gamma, &beta, &mean, &variance, epsilon, relu)
        });
        flex(y, &shape)
    }

    fn fused_adam_step(
        param: FlexTensor,
        grad: FlexTensor,
        moment_1: FlexTensor,
        moment_2: FlexTensor,
        scalars: adam::AdamScalars,
    ) -> AdamUpdate<Self> {
        // In place where nothing else holds a tensor's buffer (the optimizer hands parameter and
        // moments over), else on a copy: ResNet-18's 11 M parameters would cost three 45 MB copies.
        let (mut param, mut moment_1, mut moment_2) =
            (whole_buffer(param), whole_buffer(moment_1), whole_buffer(moment_2));
        let grad = f32s(&grad);
        profile::timed(ADAM, || {
            adam::step(param.storage_mut(), &grad, moment_1.storage_mut(), moment_2.storage_mut(), scalars)
        });
        AdamUpdate { param, moment_1, moment_2 }
    }

    fn fast_max_pool2d(x: FlexTensor, window: pool::PoolWindow) -> FlexTensor {
        let d = dims(&x);
        let (planes, [ho, wo]) = (d[0] * d[1], window.out_size(d[2], d[3]));
        let y = profile::timed(MAX_POOL_FORWARD, || match window == pool::LENETS_WINDOW {
            true => pool::max_pool_2x2(&f32s(&x), planes, d[2], d[3]),
            false => pool::max_pool(&f32s(&x), planes, d[2], d[3], &window),
        });
        flex(y, &[d[0], d[1], ho, wo])
    }

    fn fast_max_pool2d_backward(
        x: FlexTensor,
        output: FlexTensor,
        output_grad: FlexTensor,
        window: pool::PoolWindow,
    ) -> FlexTensor {
        let d = dims(&x);
        let planes = d[0] * d[1];
        let dx = profile::timed(MAX_POOL_BACKWARD, || match window == pool::LENETS_WINDOW {
            true => pool::max_pool_2x2_backward(&f32s(&x), &f32s(&output), &f32s(&output_grad), planes, d[2], d[3]),
            false => pool::max_pool_backward(&f32s(&x), &f32s(&output_grad), planes, d[2], d[3], &window),
        });
        flex(dx, &d)
    }

    fn fast_sigmoid(x: FlexTensor) -> FlexTensor {
        let shape = dims(&x);
        flex(profile::timed(SIGMOID_FORWARD, || activation::sigmoid(&f32s(&x))), &shape)
    }

    fn fast_sigmoid_backward(output: FlexTensor, output_grad: FlexTensor) -> FlexTensor {
        let shape = dims(&output);
        let dx = profile::timed(SIGMOID_BACKWARD, || activation::sigmoid_backward(&f32s(&output), &f32s(&output_grad)));
        flex(dx, &shape)
    }

    fn gemm_conv2d(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, geometry: [usize; 4]) -> FlexTensor {
        let g = conv_geometry(&dims(&x), &dims(&weight), geometry);
        let y = profile::timed(CONV_FORWARD, || conv::forward(&f32s(&x), &f32s(&weight), &f32s(&bias), &g));
        flex(y, &[g.batch, g.c_out, g.out_h(), g.out_w()])
    }

    fn gemm_conv2d_backward(
        x: FlexTensor,
        weight: FlexTensor,
        output_grad: FlexTensor,
        geometry: [usize; 4],
        input_grad: bool,
    ) -> LayerGrads<Self> {
        let (x_dims, w_dims) = (dims(&x), dims(&weight));
        let g = conv_geometry(&x_dims, &w_dims, geometry);
        let (dx, dw, db) = profile::timed(CONV_BACKWARD, || {
            conv::backward(&f32s(&x), &f32s(&weight), &f32s(&output_grad), &g, input_grad)
        });
        let input = match dx {
            Some(dx) => flex(dx, &x_dims),
            None => flex(Vec::new(), &[0]),
        };
        LayerGrads { input, weight: flex(dw, &w_dims), bias: flex(db, &[g.c_out]) }
    }
}

// ---- Autodiff: one graph node per operation, with the backward passes above. ----

impl<B: Backend + FastOps, C: CheckpointStrategy> FastOps for Autodiff<B, C> {
    fn fused_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> BatchNormTrainOutput<Self> {
        #[derive(Debug)]
        struct BatchNormBackward;

        impl<B: Backend + FastOps> Backward<B, 3> for BatchNormBackward {
            /// x, γ, β, the batch's mean and variance, ε, and whether a ReLU follows.
            type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64, bool);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let grad = grads.consume::<B>(&ops.node);
                let (x, gamma, beta, mean, variance, epsilon, relu) = ops.state;
                let g = B::fused_batch_norm_train_backward(x, gamma, beta, mean, variance, epsilon, relu, grad);
                register::<B>(grads, ops.parents.map(|p| p.map(|n| n.id)), g);
            }
        }

        let nodes = [x.node(), gamma.node(), beta.node()];
        let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
        let result = B::fused_batch_norm_train(x.clone(), gamma.clone(), beta.clone(), epsilon, relu);
        let output = match BatchNormBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (mean, variance) = (result.mean.clone(), result.variance.clone());
                prep.finish((x, gamma, beta, mean, variance, epsilon, relu), result.output)
            }
            OpsKind::UnTracked(prep) => prep.finish(result.output),
        };
        BatchNormTrainOutput {
            output,
            mean: <Self as AutodiffBackend>::from_inner(result.mean),
            variance: <Self as AutodiffBackend>::from_inner(result.variance),
        }
    }

    fn fused_batch_norm_train_backward(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _beta: FloatTensor<Self>,
        _mean: FloatTensor<Self>,
        _variance: FloatTensor<Self>,
        _epsilon: f64,
        _relu: bool,
        _output_grad: FloatTensor<Self>,
    ) -> LayerGrads<Self> {
        unimplemented!("second derivatives of batch normalization are not supported")
    }

    fn fused_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self> {
        // Evaluation mode on an autodiff device (rare: evaluation normally runs on `valid()`):
        // burn's differentiable composition.
        let y = <Self as burn::backend::ops::ModuleOps<Self>>::batch_norm(x, gamma, beta, mean, variance, epsilon);
        match relu {
            true => <Self as burn::backend::ops::ActivationOps<Self>>::relu(y),
            false => y,
        }
    }

    fn fused_adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        scalars: adam::AdamScalars,
    ) -> AdamUpdate<Self> {
        // Optimizers work on the tensors without autodiff; should one come here, its update
        // is a constant for the graph.
        let u = B::fused_adam_step(
            param.into_primitive(),
            grad.into_primitive(),
            moment_1.into_primitive(),
            moment_2.into_primitive(),
            scalars,
        );
        AdamUpdate {
            param: <Self as AutodiffBackend>::from_inner(u.param),
            moment_1: <Self as AutodiffBackend>::from_inner(u.moment_1),
            moment_2: <Self as AutodiffBackend>::from_inner(u.moment_2),
        }
    }

    fn fast_max_pool2d(x: FloatTensor<Self>, window: pool::PoolWindow) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct MaxPoolBackward;

        impl<B: Backend + FastOps> Backward<B, 1> for MaxPoolBackward {
            type State = (FloatTensor<B>, FloatTensor<B>, pool::PoolWindow);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let grad = grads.consume::<B>(&ops.node);
                if let [Some(node)] = ops.parents {
                    let (x, output, window) = ops.state;
                    grads.register::<B>(node.id, B::fast_max_pool2d_backward(x, output, grad, window));
                }
            }
        }

        let nodes = [x.node()];
        let x = x.into_primitive();
        let output = B::fast_max_pool2d(x.clone(), window);
        match MaxPoolBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, output.clone(), window), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn fast_max_pool2d_backward(
        _x: FloatTensor<Self>,
        _output: FloatTensor<Self>,
        _output_grad: FloatTensor<Self>,
        _window: pool::PoolWindow,
    ) -> FloatTensor<Self> {
        unimplemented!("second derivatives of max pooling are not supported")
    }

    fn fast_sigmoid(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SigmoidBackward;

        impl<B: Backend + FastOps> Backward<B, 1> for SigmoidBackward {
            type State = FloatTensor<B>;

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let grad = grads.consume::<B>(&ops.node);
                if let [Some(node)] = ops.parents {
                    grads.register::<B>(node.id, B::fast_sigmoid_backward(ops.state, grad));
                }
            }
        }

        let nodes = [x.node()];
        let output = B::fast_sigmoid(x.into_primitive());
        match SigmoidBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(output.clone(), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn fast_sigmoid_backward(_output: FloatTensor<Self>, _output_grad: FloatTensor<Self>) -> FloatTensor<Self> {
        unimplemented!("second derivatives of the sigmoid are not supported")
    }

    fn gemm_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: [usize; 4],
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ConvBackward;

        impl<B: Backend + FastOps> Backward<B, 3> for ConvBackward {
            type State = (FloatTensor<B>, FloatTensor<B>, [usize; 4]);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let grad = grads.consume::<B>(&ops.node);
                let (x, weight, geometry) = ops.state;
                let input_grad = ops.parents[0].is_some();
                let g = B::gemm_conv2d_backward(x, weight, grad, geometry, input_grad);
                register::<B>(grads, ops.parents.map(|p| p.map(|n| n.id)), g);
            }
        }

        let nodes = [x.node(), weight.node(), bias.node()];
        let (x, weight, bias) = (x.into_primitive(), weight.into_primitive(), bias.into_primitive());
        let output = B::gemm_conv2d(x.clone(), weight.clone(), bias, geometry);
        match ConvBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, weight, geometry), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn gemm_conv2d_backward(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _output_grad: FloatTensor<Self>,
        _geometry: [usize; 4],
        _input_grad: bool,
    ) -> LayerGrads<Self> {
        unimplemented!("second derivatives of convolution are not supported")
    }
}

/// Hands each parent that wants one its gradient.
fn register<B: Backend>(grads: &mut Gradients, parents: [Option<NodeId>; 3], g: LayerGrads<B>) {
    let [input, weight, bias] = parents;
    for (id, grad) in [(input, g.input), (weight, g.weight), (bias, g.bias)] {
        if let Some(id) = id {
            grads.register::<B>(id, grad);
        }
    }
}

// ---- What layers call. ----

/// The groups of kernels, which can be switched off one by one to time burn's own operations in
/// their place (`deepcnn bench --burn-ops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    Conv,
    BatchNorm,
    Sigmoid,
    Adam,
    MaxPool,
    /// oneDNN's convolutions: off, deepcnn's own im2col + GEMM ones take their place.
    Onednn,
}

// One per variant (`Kernel::Onednn`'s own switch lives in `onednn`).
static DISABLED: [AtomicBool; 6] = [const { AtomicBool::new(false) }; 6];

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
    !DISABLED[kernel as usize].load(Ordering::Relaxed)
        && matches!(x.device().without_autodiff().as_dispatch(), DispatchDevice::Flex(_))
        && x.dtype() == DType::F32
}

/// Training-mode batch normalization, with a ReLU after it where `relu`: the output, and the
/// batch's per-channel mean and biased variance (what the running statistics are updated with).
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    relu: bool,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    if !fast_path(Kernel::BatchNorm, &x) {
        let r = burn::tensor::module::batch_norm_train(x, gamma, beta, epsilon);
        let output = if relu { burn::tensor::activation::relu(r.output) } else { r.output };
        return (output, r.mean, r.variance);
    }
    let r = <Dispatch as FastOps>::fused_batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
        relu,
    );
    (Tensor::from_dispatch(r.output), Tensor::from_dispatch(r.mean), Tensor::from_dispatch(r.variance))
}

/// Evaluation-mode batch normalization with the given per-channel statistics, with a ReLU
/// after it where `relu`.
pub fn batch_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    variance: Tensor<1>,
    epsilon: f64,
    relu: bool,
) -> Tensor<D> {
    if !fast_path(Kernel::BatchNorm, &x) {
        let y = burn::tensor::module::batch_norm(x, gamma, beta, mean, variance, epsilon);
        return if relu { burn::tensor::activation::relu(y) } else { y };
    }
    Tensor::from_dispatch(<Dispatch as FastOps>::fused_batch_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        mean.into_dispatch(),
        variance.into_dispatch(),
        epsilon,
        relu,
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
    match bias {
        Some(bias) if plain && fast_path(Kernel::Conv, &x) => {
            let [ph, pw] = options.padding_begin();
            let geometry = [options.stride[0], options.stride[1], ph, pw];
            Tensor::from_dispatch(<Dispatch as FastOps>::gemm_conv2d(
                x.into_dispatch(),
                weight.into_dispatch(),
                bias.into_dispatch(),
                geometry,
            ))
        }
        bias => burn::tensor::module::conv2d(x, weight, bias, options),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::random(shape, Distribution::Normal(0.3, 1.5), device)
    }

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let (a, b) = (a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
        assert_eq!(a.len(), b.len());
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn the_fast_path_is_taken_on_flex_with_and_without_autodiff() {
        let x = Tensor::<4>::zeros([1, 1, 2, 2], &Device::flex());
        assert!(fast_path(Kernel::Conv, &x));
        let x = Tensor::<4>::zeros([1, 1, 2, 2], &Device::flex().autodiff());
        assert!(fast_path(Kernel::Conv, &x));
    }

    /// Conv shapes of the book's networks in miniature: LeNet's 5×5 valid convs, the stem's
    /// 7×7 stride 2 pad 3, 3×3 pad 1 with and without stride, the 1×1 shortcut with stride 2,
    /// DenseNet's 3×3 conv making fewer channels than it takes (∂X as a transposed convolution),
    /// and its 1×1 transition conv.
    const CONVS: [(usize, usize, usize, usize, usize, usize, usize); 8] = [
        // (c_in, c_out, size, kernel, stride, padding, batch)
        (1, 6, 12, 5, 1, 0, 3),
        (6, 16, 8, 5, 1, 0, 2),
        (1, 8, 15, 7, 2, 3, 2),
        (5, 7, 9, 3, 1, 1, 3),
        (5, 7, 9, 3, 2, 1, 2),
        (5, 7, 9, 1, 2, 0, 2),
        (12, 4, 6, 3, 1, 1, 2),
        (9, 4, 6, 1, 1, 0, 3),
    ];

    #[test]
    fn conv2d_matches_burns_conv2d_in_value_and_gradients() {
        let device = Device::flex().autodiff();
        for (c_in, c_out, size, k, s, p, n) in CONVS {
            let x = random([n, c_in, size, size], &device).require_grad();
            let w = random([c_out, c_in, k, k], &device).require_grad();
            let b = random([c_out], &device).require_grad();
            let options = ConvOptions::new([s, s], [p, p], [1, 1], 1);
            let ours = conv2d(x.clone(), w.clone(), Some(b.clone()), options.clone());
            let theirs = burn::tensor::module::conv2d(x.clone(), w.clone(), Some(b.clone()), options);
            assert_eq!(ours.dims(), theirs.dims());
            let what = format!("conv {c_in}→{c_out} {k}×{k} s{s} p{p} on {n}×{size}²");
            assert!(max_diff(ours.clone(), theirs.clone()) < 1e-4, "{what}: outputs differ");
            // A weighted sum, so that every output position gets its own upstream gradient.
            let weights = random(ours.dims(), &device);
            let g_ours = (ours * weights.clone()).sum().backward();
            let g_theirs = (theirs * weights).sum().backward();
            for (name, t) in [("x", &x), ("weight", &w)] {
                let d = max_diff(t.grad(&g_ours).unwrap(), t.grad(&g_theirs).unwrap());
                assert!(d < 1e-3, "{what}: ∂{name} differs by {d}");
            }
            assert!(max_diff(b.grad(&g_ours).unwrap(), b.grad(&g_theirs).unwrap()) < 1e-3, "{what}: ∂bias");
        }
    }

    /// Max pooling against burn's: LeNet's 2×2 and the stem's 3×3 stride 2 padding 1, and
    /// windows that overlap, are not square or have padding; even and odd sizes (the last rows
    /// and columns dropped), random values, and ties (a constant input), where both send each
    /// window's gradient to its first element. Values are exact; gradients exact for 2×2 and
    /// within rounding elsewhere (overlapping windows sum in another order).
    #[test]
    fn max_pool_matches_burns_max_pool_in_value_and_gradient() {
        let device = Device::flex().autodiff();
        let windows =
            [([2, 2], [2, 2], [0, 0]), ([3, 3], [2, 2], [1, 1]), ([3, 3], [1, 1], [1, 1]), ([2, 3], [1, 2], [1, 0])];
        for (kernel, stride, [ph, pw]) in windows {
            let options = MaxPoolOptions::new(kernel).with_stride(stride).with_padding([ph, pw]);
            for (shape, constant) in [([2, 3, 8, 8], false), ([1, 2, 7, 9], false), ([1, 2, 4, 6], true)] {
                let what = format!("{kernel:?} stride {stride:?} padding {:?} on {shape:?}", [ph, pw]);
                let x = if constant { Tensor::ones(shape, &device) } else { random(shape, &device) }.require_grad();
                let ours = max_pool2d(x.clone(), options.clone());
                let theirs = burn::tensor::module::max_pool2d(x.clone(), options.clone());
                assert_eq!(ours.dims(), theirs.dims(), "{what}");
                assert_eq!(max_diff(ours.clone(), theirs.clone()), 0.0, "{what}: values");
                let weights = random(ours.dims(), &device);
                let g_ours = (ours * weights.clone()).sum().backward();
                let g_theirs = (theirs * weights).sum().backward();
                let d = max_diff(x.grad(&g_ours).unwrap(), x.grad(&g_theirs).unwrap());
                let tolerance = if kernel == [2, 2] { 0.0 } else { 1e-5 };
                assert!(d <= tolerance, "{what}: gradients differ by {d}");
            }
        }
    }

    /// A NaN in a window is the window's maximum (as in PyTorch), and takes its gradient.
    #[test]
    fn max_pool_propagates_nan() {
        let x = [1.0, f32::NAN, 3.0, 2.0];
        let y = pool::max_pool_2x2(&x, 1, 2, 2);
        assert!(y[0].is_nan());
        let dx = pool::max_pool_2x2_backward(&x, &y, &[5.0], 1, 2, 2);
        assert_eq!(dx, [0.0, 5.0, 0.0, 0.0]);
    }

    #[test]
    fn sigmoid_matches_burns_sigmoid_in_value_and_gradient() {
        let device = Device::flex().autodiff();
        // Large magnitudes too: both branches of the stable formula, and saturation.
        let x = (random([5, 3, 7, 9], &device) * 8.0).require_grad();
        let (ours, theirs) = (sigmoid(x.clone()), burn::tensor::activation::sigmoid(x.clone()));
        assert!(max_diff(ours.clone(), theirs.clone()) < 1e-6, "values");
        let weights = random(ours.dims(), &device);
        let (g1, g2) = ((ours * weights.clone()).sum().backward(), (theirs * weights).sum().backward());
        assert!(max_diff(x.grad(&g1).unwrap(), x.grad(&g2).unwrap()) < 1e-6, "gradients");
    }

    /// A network's first convolution takes data that needs no gradient: the input gradient is
    /// skipped, the others must be unchanged.
    #[test]
    fn conv2d_on_untracked_input_still_gives_weight_gradients() {
        let device = Device::flex().autodiff();
        let x = random([3, 1, 12, 12], &device);
        let w = random([6, 1, 5, 5], &device).require_grad();
        let b = random([6], &device).require_grad();
        let options = ConvOptions::new([1, 1], [2, 2], [1, 1], 1);
        let ours = conv2d(x.clone(), w.clone(), Some(b.clone()), options.clone());
        let theirs = burn::tensor::module::conv2d(x, w.clone(), Some(b.clone()), options);
        let weights = random(ours.dims(), &device);
        let (g1, g2) = ((ours * weights.clone()).sum().backward(), (theirs * weights).sum().backward());
        assert!(max_diff(w.grad(&g1).unwrap(), w.grad(&g2).unwrap()) < 1e-3);
        assert!(max_diff(b.grad(&g1).unwrap(), b.grad(&g2).unwrap()) < 1e-3);
    }

    #[test]
    fn batch_norm_train_matches_burns_batch_norm_train() {
        let device = Device::flex().autodiff();
        for shape in [vec![7, 3], vec![3, 4, 5, 5]] {
            let (x, c) = match shape.len() {
                2 => (random([shape[0], shape[1], 1, 1], &device), shape[1]),
                _ => (random([shape[0], shape[1], shape[2], shape[3]], &device), shape[1]),
            };
            let x = x.require_grad();
            let gamma = random([c], &device).require_grad();
            let beta = random([c], &device).require_grad();
            let (y, mean, var) = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5, false);
            let r = burn::tensor::module::batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
            assert!(max_diff(y.clone(), r.output.clone()) < 1e-5, "{shape:?}: output");
            assert!(max_diff(mean, r.mean) < 1e-6, "{shape:?}: mean");
            assert!(max_diff(var, r.variance) < 1e-5, "{shape:?}: variance");
            let weights = random(y.dims(), &device);
            let (g1, g2) = ((y * weights.clone()).sum().backward(), (r.output * weights).sum().backward());
            for (name, t) in [("gamma", &gamma), ("beta", &beta)] {
                assert!(max_diff(t.grad(&g1).unwrap(), t.grad(&g2).unwrap()) < 1e-4, "{shape:?}: ∂{name}");
            }
            assert!(max_diff(x.grad(&g1).unwrap(), x.grad(&g2).unwrap()) < 1e-4, "{shape:?}: ∂x");
        }
    }

    #[test]
    fn batch_norm_statistics_stay_exact_for_large_offsets() {
        // Values far from zero: a one-pass E[x²] − E[x]² in f32 would lose the variance here.
        let device = Device::flex();
        let x = Tensor::<4>::random([64, 2, 8, 8], Distribution::Normal(1000.0, 0.01), &device);
        let gamma = Tensor::<1>::ones([2], &device);
        let beta = Tensor::<1>::zeros([2], &device);
        let (_, _, var) = batch_norm_train(x, gamma, beta, 1e-5, false);
        for v in var.into_data().try_to_vec::<f32>().unwrap() {
            assert!((v - 1e-4).abs() < 1e-5, "variance {v}, expected about 1e-4");
        }
    }
}
