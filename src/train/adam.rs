//! The book's Adam (PyTorch's defaults) with deepcnn's one-pass update kernel
//! ([`crate::kernels::adam`]), and burn's `Adam` wherever the kernel does not apply. The state
//! is burn's `AdamState`, so checkpoints written with either load into the other.

use burn::optim::{Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::prelude::*;

use crate::kernels;

/// Plain Adam (no weight decay, no AMSGrad) with β₁ = 0.9, β₂ = 0.999.
#[derive(Clone)]
pub struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    burn: Adam,
}

impl FusedAdam {
    pub fn new(epsilon: f32) -> Self {
        let (beta_1, beta_2) = (0.9, 0.999);
        let burn = AdamConfig::new().with_beta_1(beta_1).with_beta_2(beta_2).with_epsilon(epsilon).build();
        Self { beta_1, beta_2, epsilon, burn }
    }
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        if !kernels::adam_applies(&tensor) {
            return self.burn.step(lr, tensor, grad, state);
        }
        // Moved, not cloned: the kernel updates parameter and moments in place when it holds
        // the only references to them.
        let (time, m1, m2) = match state {
            Some(s) => (s.momentum.time + 1, s.momentum.moment_1, s.momentum.moment_2),
            None => (1, grad.zeros_like(), grad.zeros_like()),
        };
        let scalars = kernels::adam::scalars(lr, self.beta_1, self.beta_2, self.epsilon, time);
        let (param, m1, m2) = kernels::adam_step(tensor, grad, m1, m2, scalars);
        (param, Some(AdamState::new(AdaptiveMomentumState::new(time, m1, m2))))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        Adam::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use burn::tensor::Distribution;

    use super::*;

    /// Three steps of the fused update against burn's Adam on the same gradients: the
    /// parameters must be the same to the bit (the kernel follows burn's operation order).
    #[test]
    fn fused_adam_matches_burns_adam_to_the_bit() {
        // The optimizer sees the parameters without autodiff: there the kernel must apply.
        assert!(kernels::adam_applies(&Tensor::<1>::ones([3], &Device::flex())));

        let device = Device::flex().autodiff();
        let model: Linear = LinearConfig::new(7, 5).init(&device);
        let mut ours = burn::optim::ModuleOptimizer::from(FusedAdam::new(1e-8));
        let mut burns = AdamConfig::new().with_epsilon(1e-8).init();
        let (mut a, mut b) = (model.clone(), model);
        for step in 0..3 {
            let x = Tensor::<2>::random([4, 7], Distribution::Normal(0.0, 1.0), &device);
            let ga = GradientsParams::from_grads(a.forward(x.clone()).powf_scalar(2.0).sum().backward(), &a);
            let gb = GradientsParams::from_grads(b.forward(x).powf_scalar(2.0).sum().backward(), &b);
            a = ours.step(1e-2, a, ga);
            b = burns.step(1e-2, b, gb);
            let (wa, wb) = (a.weight.val().into_data(), b.weight.val().into_data());
            assert_eq!(wa, wb, "step {step}: weights");
            assert_eq!(
                a.bias.as_ref().unwrap().val().into_data(),
                b.bias.as_ref().unwrap().val().into_data(),
                "step {step}: bias"
            );
        }
    }

    /// The kernel updates in place only what nothing else holds: a copy of the network taken
    /// before a step (as a checkpoint being written holds one) keeps its weights.
    #[test]
    fn a_step_leaves_copies_of_the_network_as_they_were() {
        let device = Device::flex().autodiff();
        let model: Linear = LinearConfig::new(7, 5).init(&device);
        let mut optim = burn::optim::ModuleOptimizer::from(FusedAdam::new(1e-8));
        let mut copies = Vec::new();
        let mut model = model;
        for _ in 0..3 {
            copies.push((model.clone(), model.weight.val().into_data()));
            let x = Tensor::<2>::random([4, 7], Distribution::Normal(0.0, 1.0), &device);
            let grads = GradientsParams::from_grads(model.forward(x).powf_scalar(2.0).sum().backward(), &model);
            model = optim.step(1e-2, model, grads);
        }
        for (i, (copy, weights)) in copies.iter().enumerate() {
            assert_eq!(copy.weight.val().into_data(), *weights, "the copy taken before step {i} changed");
        }
        assert_ne!(model.weight.val().into_data(), copies[0].1, "the steps changed nothing");
    }
}
