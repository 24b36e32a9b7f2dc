//! [`FastOps`] on `Autodiff`: each operation runs the inner backend's forward and, where an
//! input is tracked, records one graph node whose backward is the inner backend's backward
//! operation ([`Node`]). Second derivatives are not supported.

use std::fmt;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::{tensor::FloatTensor, AutodiffBackend, Backend};

use super::batch_norm::Activation;
use super::extension::{AdamUpdate, BatchNormTrainOutput, ChannelSplit, ConvForward, FastOps, LayerGrads};
use super::layout::Layout;
use super::{adam, pool};

/// A backward pass: from the state the forward kept and the output's gradient, the gradients
/// of the N inputs (`wanted[i]`: whether input i is tracked; the others may be left empty).
type BackwardFn<B, S, const N: usize> = fn(S, FloatTensor<B>, [bool; N]) -> [FloatTensor<B>; N];

/// The graph node of one of deepcnn's operations.
struct Node<B: Backend, S, const N: usize>(BackwardFn<B, S, N>);

impl<B: Backend, S, const N: usize> fmt::Debug for Node<B, S, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "deepcnn kernel with {N} inputs")
    }
}

impl<B: Backend, S: Clone + Send + fmt::Debug + 'static, const N: usize> Backward<B, N> for Node<B, S, N> {
    type State = S;

    fn backward(self, ops: Ops<S, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let wanted = ops.parents.each_ref().map(Option::is_some);
        for (parent, input_grad) in ops.parents.into_iter().zip((self.0)(ops.state, grad, wanted)) {
            if let Some(parent) = parent {
                grads.register::<B>(parent.id, input_grad);
            }
        }
    }
}

/// `output` as an autodiff tensor computed from the inputs behind `inputs`, with `backward`
/// applied to `state` when the graph is walked back, if any input is tracked.
fn record<B: Backend, C: CheckpointStrategy, S: Clone + Send + fmt::Debug + 'static, const N: usize>(
    inputs: [NodeGuard; N],
    state: S,
    output: FloatTensor<B>,
    backward: BackwardFn<B, S, N>,
) -> FloatTensor<Autodiff<B, C>> {
    match Node(backward).prepare::<C>(inputs).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

fn layer_grads<B: Backend>(g: LayerGrads<B>) -> [FloatTensor<B>; 3] {
    [g.input, g.weight, g.bias]
}

/// What batch normalization's backward needs: x, γ, β, the batch's mean and variance, ε, the
/// activation after it, and for a sigmoid the output (σ' = σ·(1 − σ); a ReLU's mask is
/// recomputed from x instead).
#[derive(Debug, Clone)]
struct BatchNormState<B: Backend> {
    inputs: [FloatTensor<B>; 3],
    mean: FloatTensor<B>,
    variance: FloatTensor<B>,
    epsilon: f64,
    activation: Activation,
    sigmoid_output: Option<FloatTensor<B>>,
}

impl<B: Backend + FastOps, C: CheckpointStrategy> FastOps for Autodiff<B, C> {
    fn fused_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        activation: Activation,
        bf16_output: bool,
    ) -> BatchNormTrainOutput<Self> {
        let inputs = [x.node(), gamma.node(), beta.node()];
        let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
        let r = B::fused_batch_norm_train(x.clone(), gamma.clone(), beta.clone(), epsilon, activation, bf16_output);
        let state = BatchNormState::<B> {
            inputs: [x, gamma, beta],
            mean: r.mean.clone(),
            variance: r.variance.clone(),
            epsilon,
            activation,
            sigmoid_output: (activation == Activation::Sigmoid).then(|| r.output.clone()),
        };
        let output = record::<B, C, _, 3>(inputs, state, r.output, |s, grad, _| {
            let grad = match s.sigmoid_output {
                Some(output) => B::fast_sigmoid_backward(output, grad),
                None => grad,
            };
            let [x, gamma, beta] = s.inputs;
            let relu = s.activation == Activation::Relu;
            layer_grads(B::fused_batch_norm_train_backward(x, gamma, beta, s.mean, s.variance, s.epsilon, relu, grad))
        });
        BatchNormTrainOutput {
            output,
            mean: <Self as AutodiffBackend>::from_inner(r.mean),
            variance: <Self as AutodiffBackend>::from_inner(r.variance),
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
        activation: Activation,
    ) -> FloatTensor<Self> {
        // Evaluation mode on an autodiff device (rare: evaluation normally runs on `valid()`):
        // burn's differentiable composition, in f32 (x may be a bf16 concatenation).
        use burn::backend::ops::ActivationOps;
        let x = Self::fast_to_f32(x);
        let y = <Self as burn::backend::ops::ModuleOps<Self>>::batch_norm(x, gamma, beta, mean, variance, epsilon);
        match activation {
            Activation::Identity => y,
            Activation::Relu => <Self as ActivationOps<Self>>::relu(y),
            Activation::Sigmoid => <Self as ActivationOps<Self>>::sigmoid(y),
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

    fn fused_ema_step(average: FloatTensor<Self>, current: FloatTensor<Self>, decay: f64) -> FloatTensor<Self> {
        // As Adam's update: a constant for the graph.
        let average = B::fused_ema_step(average.into_primitive(), current.into_primitive(), decay);
        <Self as AutodiffBackend>::from_inner(average)
    }

    fn fast_max_pool2d(x: FloatTensor<Self>, window: pool::PoolWindow) -> FloatTensor<Self> {
        let inputs = [x.node()];
        let x = x.into_primitive();
        let output = B::fast_max_pool2d(x.clone(), window);
        record::<B, C, _, 1>(inputs, (x, output.clone(), window), output, |(x, output, window), grad, _| {
            [B::fast_max_pool2d_backward(x, output, grad, window)]
        })
    }

    fn fast_max_pool2d_backward(
        _x: FloatTensor<Self>,
        _output: FloatTensor<Self>,
        _output_grad: FloatTensor<Self>,
        _window: pool::PoolWindow,
    ) -> FloatTensor<Self> {
        unimplemented!("second derivatives of max pooling are not supported")
    }

    fn fast_avg_pool2d_2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let inputs = [x.node()];
        let x = x.into_primitive();
        let shape: [usize; 4] = burn::backend::TensorMetadata::shape(&x).dims();
        let output = B::fast_avg_pool2d_2x2(x);
        record::<B, C, _, 1>(inputs, shape, output, |shape, grad, _| [B::fast_avg_pool2d_2x2_backward(grad, shape)])
    }

    fn fast_avg_pool2d_2x2_backward(_output_grad: FloatTensor<Self>, _input_shape: [usize; 4]) -> FloatTensor<Self> {
        unimplemented!("second derivatives of average pooling are not supported")
    }

    fn fast_sigmoid(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let inputs = [x.node()];
        let output = B::fast_sigmoid(x.into_primitive());
        record::<B, C, _, 1>(inputs, output.clone(), output, |output, grad, _| [B::fast_sigmoid_backward(output, grad)])
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
        let inputs = [x.node(), weight.node(), bias.node()];
        let (x, weight, bias) = (x.into_primitive(), weight.into_primitive(), bias.into_primitive());
        // The backward keeps what it needs of x: x, or a cheaper copy (bf16) where there is one.
        let ConvForward { output, kept_input: x } = B::gemm_conv2d_keeping_input(x, weight.clone(), bias, geometry);
        record::<B, C, _, 3>(inputs, (x, weight, geometry), output, |(x, weight, geometry), grad, wanted| {
            // A network's first convolution takes data that needs no gradient: skip it.
            layer_grads(B::gemm_conv2d_backward(x, weight, grad, geometry, wanted[0]))
        })
    }

    fn gemm_conv2d_keeping_input(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: [usize; 4],
    ) -> ConvForward<Self> {
        // The graph keeps what the backward needs; the caller gets x back.
        ConvForward { output: Self::gemm_conv2d(x.clone(), weight, bias, geometry), kept_input: x }
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

    fn fast_to_layout(x: FloatTensor<Self>, layout: Layout) -> FloatTensor<Self> {
        let inputs = [x.node()];
        let output = B::fast_to_layout(x.into_primitive(), layout);
        // The same values either way: the gradient is the output's, in burn's layout.
        record::<B, C, _, 1>(inputs, (), output, |(), grad, _| [B::fast_to_layout(grad, Layout::Nchw)])
    }

    fn fast_cat_channels(a: FloatTensor<Self>, b: FloatTensor<Self>, bf16_output: bool) -> FloatTensor<Self> {
        let inputs = [a.node(), b.node()];
        let (a, b) = (a.into_primitive(), b.into_primitive());
        let channels = [burn::backend::TensorMetadata::shape(&a)[1], burn::backend::TensorMetadata::shape(&b)[1]];
        let output = B::fast_cat_channels(a, b, bf16_output);
        record::<B, C, _, 2>(inputs, channels, output, |channels, grad, _| {
            let split = B::fast_split_channels(grad, channels);
            [split.first, split.second]
        })
    }

    fn fast_split_channels(_grad: FloatTensor<Self>, _channels: [usize; 2]) -> ChannelSplit<Self> {
        unimplemented!("second derivatives of concatenation are not supported")
    }

    fn fast_to_f32(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // Not burn's cast, whose backward casts the gradient to bf16: the other gradients of
        // the same tensor are f32, and a sum of the two would mix types.
        let inputs = [x.node()];
        let output = B::fast_to_f32(x.into_primitive());
        record::<B, C, _, 1>(inputs, (), output, |(), grad, _| [grad])
    }
}
