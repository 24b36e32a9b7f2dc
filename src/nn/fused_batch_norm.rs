//! burn's `BatchNorm` layer computed by deepcnn's fused kernel ([`crate::kernels::batch_norm`])
//! where it applies and by burn's own operations elsewhere: built by burn's own config (the same
//! initialisation) with burn's fields, so a network saves and loads exactly as it would with
//! burn's type. The book's "concise" BN (§5.10.4), next to the from-scratch one
//! ([`super::batch_norm`]).

use burn::module::{Flag, Param, RunningState};
use burn::prelude::*;

use crate::kernels::{self, Activation};

/// Training-mode batch normalization as the kernels compute it ([`kernels::batch_norm_train`]).
type BatchNormTrain<const D: usize> =
    fn(Tensor<D>, Tensor<1>, Tensor<1>, f64, Activation) -> (Tensor<D>, Tensor<1>, Tensor<1>);

/// burn's `BatchNormConfig` (ε = 1e-5, momentum 0.1 in burn's and PyTorch's convention, which
/// is the book's 0.9 written the other way), building a [`FusedBatchNorm`].
#[derive(Debug, Clone)]
pub struct FusedBatchNormConfig(burn::nn::BatchNormConfig);

impl FusedBatchNormConfig {
    pub fn new(num_features: usize) -> Self {
        Self(burn::nn::BatchNormConfig::new(num_features))
    }

    pub fn init(&self, device: &Device) -> FusedBatchNorm {
        let b = self.0.init(device);
        FusedBatchNorm {
            gamma: b.gamma,
            beta: b.beta,
            training: b.training,
            running_mean: b.running_mean,
            running_var: b.running_var,
            momentum: b.momentum,
            epsilon: b.epsilon,
        }
    }
}

/// Batch normalization with burn's `BatchNorm` fields and behaviour: batch statistics and a
/// running-statistics update when training (on an autodiff device, training flag on), the
/// running statistics otherwise.
#[derive(Module, Debug)]
pub struct FusedBatchNorm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    pub training: Param<Flag>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    pub momentum: f64,
    pub epsilon: f64,
}

impl FusedBatchNorm {
    /// The fields that hold the moving statistics, which precise BN re-estimates.
    pub const MOVING_STATISTICS: [&'static str; 2] = ["running_mean", "running_var"];

    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        self.forward_with(input, Activation::Identity)
    }

    /// `relu(self.forward(input))` in one pass over the data, forward and backward.
    pub fn forward_relu<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        self.forward_with(input, Activation::Relu)
    }

    /// `sigmoid(self.forward(input))`, the forward in one pass over the data.
    pub fn forward_sigmoid<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        self.forward_with(input, Activation::Sigmoid)
    }

    /// [`Self::forward_relu`] whose output only a convolution reads: in training with bf16
    /// convolutions it may be written in bf16 ([`kernels::batch_norm_train_for_conv`]), the
    /// same values the convolution reads either way.
    pub fn forward_relu_for_conv<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        self.forward_as(input, Activation::Relu, kernels::batch_norm_train_for_conv)
    }

    fn forward_with<const D: usize>(&self, input: Tensor<D>, activation: Activation) -> Tensor<D> {
        self.forward_as(input, activation, kernels::batch_norm_train)
    }

    fn forward_as<const D: usize>(
        &self,
        input: Tensor<D>,
        activation: Activation,
        train: BatchNormTrain<D>,
    ) -> Tensor<D> {
        let device = input.device();
        if !(device.is_autodiff() && self.training.is_enabled()) {
            let mean = self.running_mean.value().to_device(&device);
            let var = self.running_var.value().to_device(&device);
            return kernels::batch_norm(input, self.gamma.val(), self.beta.val(), mean, var, self.epsilon, activation);
        }
        let (output, mean, variance) = train(input, self.gamma.val(), self.beta.val(), self.epsilon, activation);
        let update = |state: &RunningState<Tensor<1>>, batch: Tensor<1>| {
            let running = state.value_sync().to_device(&device);
            let next = running.mul_scalar(1.0 - self.momentum).add(batch.detach().mul_scalar(self.momentum));
            state.update(next.detach());
        };
        update(&self.running_mean, mean);
        update(&self.running_var, variance);
        output
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;
    use crate::nn::batch_norm::{Rank, StatisticsAxes};

    use crate::test_util::values;

    /// The shared check, on the owned vectors these tests make.
    #[track_caller]
    fn assert_close(a: Vec<f32>, b: Vec<f32>, tol: f32, what: &str) {
        crate::test_util::assert_close(&a, &b, tol, what);
    }

    /// The fused layer against the book's from-scratch one (the readable reference), through
    /// three training steps (output, ∂x, ∂γ, ∂β, moving statistics) and then evaluation mode.
    fn matches_scratch<const D: usize>(shape: [usize; D])
    where
        Rank<D>: StatisticsAxes,
    {
        let device = Device::flex().autodiff();
        let c = shape[1];
        let fused = FusedBatchNormConfig::new(c).init(&device);
        let scratch = crate::nn::ScratchBatchNormConfig::new(c).init(&device);
        for step in 0..3 {
            let x = Tensor::<D>::random(shape, Distribution::Normal(step as f64, 2.0), &device).require_grad();
            let weights = Tensor::<D>::random(shape, Distribution::Default, &device);
            let (y_fused, y_scratch) = (fused.forward(x.clone()), scratch.forward(x.clone()));
            let what = format!("{shape:?} step {step}");
            assert_close(values(y_fused.clone()), values(y_scratch.clone()), 1e-5, &format!("{what}: output"));
            let g_fused = (y_fused * weights.clone()).sum().backward();
            let g_scratch = (y_scratch * weights).sum().backward();
            let grad = |t: &Tensor<D>, g| values(t.grad(g).unwrap());
            assert_close(grad(&x, &g_fused), grad(&x, &g_scratch), 1e-5, &format!("{what}: ∂x"));
            for (name, a, b) in [("γ", &fused.gamma, &scratch.gamma), ("β", &fused.beta, &scratch.beta)] {
                let (ga, gb) = (values(a.val().grad(&g_fused).unwrap()), values(b.val().grad(&g_scratch).unwrap()));
                assert_close(ga, gb, 1e-4, &format!("{what}: ∂{name}"));
            }
        }
        // The book's moving_var is updated with the same biased batch variance as burn's.
        let stat = |s: &RunningState<Tensor<1>>| values(s.value_sync());
        assert_close(stat(&fused.running_mean), stat(&scratch.moving_mean), 1e-6, "moving mean");
        assert_close(stat(&fused.running_var), stat(&scratch.moving_var), 1e-6, "moving variance");

        let (fused, scratch) = (fused.valid(), scratch.valid());
        let x = Tensor::<D>::random(shape, Distribution::Normal(1.0, 2.0), &Device::flex());
        assert_close(values(fused.forward(x.clone())), values(scratch.forward(x)), 1e-5, "evaluation mode");
    }

    #[test]
    fn fused_batch_norm_matches_the_from_scratch_layer_2d() {
        matches_scratch([16, 5]);
    }

    #[test]
    fn fused_batch_norm_matches_the_from_scratch_layer_4d() {
        matches_scratch([4, 3, 5, 6]);
    }

    /// The fused activations against the same layer followed by burn's ReLU or sigmoid:
    /// output, ∂x, ∂γ and ∂β in training mode, and the output in evaluation mode.
    #[test]
    fn fused_activations_match_the_activation_after_forward() {
        use burn::tensor::activation::{relu, sigmoid};
        type Fused = fn(&FusedBatchNorm, Tensor<4>) -> Tensor<4>;
        type After = fn(Tensor<4>) -> Tensor<4>;
        let cases: [(&str, Fused, After); 2] =
            [("relu", |bn, x| bn.forward_relu(x), relu), ("sigmoid", |bn, x| bn.forward_sigmoid(x), sigmoid)];
        for (what, fused_forward, after) in cases {
            let device = Device::flex().autodiff();
            let (fused, plain) =
                (FusedBatchNormConfig::new(3).init(&device), FusedBatchNormConfig::new(3).init(&device));
            let shape = [4, 3, 5, 6];
            let x = Tensor::<4>::random(shape, Distribution::Normal(0.5, 2.0), &device).require_grad();
            let weights = Tensor::<4>::random(shape, Distribution::Default, &device);
            let (a, b) = (fused_forward(&fused, x.clone()), after(plain.forward(x.clone())));
            if what == "relu" {
                let zeros = values(a.clone()).iter().filter(|&&v| v == 0.0).count();
                assert!(zeros > 100 && zeros < 260, "{zeros} of 360 outputs cut by the ReLU");
            }
            assert_close(values(a.clone()), values(b.clone()), 1e-6, &format!("{what}: output"));
            let (ga, gb) = ((a * weights.clone()).sum().backward(), (b * weights).sum().backward());
            assert_close(values(x.grad(&ga).unwrap()), values(x.grad(&gb).unwrap()), 1e-5, &format!("{what}: ∂x"));
            for (name, p, q) in [("γ", &fused.gamma, &plain.gamma), ("β", &fused.beta, &plain.beta)] {
                let (gp, gq) = (values(p.val().grad(&ga).unwrap()), values(q.val().grad(&gb).unwrap()));
                assert_close(gp, gq, 1e-5, &format!("{what}: ∂{name}"));
            }
            let x = Tensor::<4>::random(shape, Distribution::Normal(0.5, 2.0), &Device::flex());
            let (a, b) = (fused_forward(&fused.valid(), x.clone()), after(plain.valid().forward(x)));
            assert_close(values(a), values(b), 1e-6, &format!("{what}: evaluation mode"));
        }
    }

    /// And against burn's own `BatchNorm`, whose parameters and records the layer shares.
    #[test]
    fn fused_batch_norm_matches_burns_batch_norm() {
        let device = Device::flex().autodiff();
        let ours = FusedBatchNormConfig::new(6).init(&device);
        let burns = burn::nn::BatchNormConfig::new(6).init(&device);
        for step in 0..2 {
            let x = Tensor::<4>::random([8, 6, 4, 4], Distribution::Normal(0.5, 3.0), &device).require_grad();
            let (a, b) = (ours.forward(x.clone()), burns.forward(x.clone()));
            assert_close(values(a.clone()), values(b.clone()), 1e-5, &format!("step {step}: output"));
            let (ga, gb) = (a.powf_scalar(2.0).sum().backward(), b.powf_scalar(2.0).sum().backward());
            assert_close(values(x.grad(&ga).unwrap()), values(x.grad(&gb).unwrap()), 1e-4, "∂x");
        }
        let stat = |s: &RunningState<Tensor<1>>| values(s.value_sync());
        assert_close(stat(&ours.running_var), stat(&burns.running_var), 1e-6, "running variance");
        let x = Tensor::<4>::random([8, 6, 4, 4], Distribution::Default, &Device::flex());
        assert_close(
            values(ours.valid().forward(x.clone())),
            values(burns.valid().forward(x)),
            1e-5,
            "evaluation mode",
        );
    }
}
