//! Gradient-norm clipping as PyTorch's `clip_grad_norm_` does it: the norm of all gradients
//! together (not one per tensor, as burn's optimizer option has it), and every gradient scaled
//! by `min(1, max_norm / (norm + 1e-6))`. Computed on the device, so a step reads nothing back.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// Sums the squares of every gradient the model's parameters have.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let squares = g.powi_scalar(2).sum();
            self.sum = Some(match self.sum.take() {
                Some(s) => s + squares,
                None => squares,
            });
        }
    }
}

/// Multiplies every gradient by one factor.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: Tensor<1>,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            let factor = self.factor.clone().reshape([1; D]);
            self.grads.register::<D>(param.id, g * factor);
        }
    }
}

/// Scales `grads` (of `model`'s parameters) so that their joint L2 norm is at most `max_norm`;
/// returns the norm before clipping (one element, still on the device).
pub fn clip_grad_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> Option<Tensor<1>> {
    let mut norm = SquaredNorm { grads, sum: None };
    model.visit(&mut norm);
    let total = norm.sum?.sqrt();
    let factor = (total.clone().add_scalar(1e-6).recip() * max_norm).clamp_max(1.0);
    model.visit(&mut Scale { grads, factor });
    Some(total)
}

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};

    use super::*;
    use crate::test_util::values;

    fn grads_of(model: &Linear, device: &Device) -> GradientsParams {
        let x = Tensor::<2>::from_floats([[1.0, -2.0, 0.5], [0.3, 0.1, -1.5]], device);
        GradientsParams::from_grads(model.forward(x).powi_scalar(2).sum().backward(), model)
    }

    /// Against the definition: the gradients' joint norm, and each gradient scaled by
    /// max / (norm + 1e-6) when that is below 1, untouched (to the bit) when it is not.
    #[test]
    fn clips_the_joint_norm_as_pytorch_does() {
        let device = Device::flex().autodiff();
        let model: Linear = LinearConfig::new(3, 2).init(&device);
        let plain = grads_of(&model, &device);
        let (w, b) =
            (plain.get::<2>(model.weight.id).unwrap(), plain.get::<1>(model.bias.as_ref().unwrap().id).unwrap());
        let (w, b) = (values(w), values(b));
        let norm = w.iter().chain(&b).map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        assert!(norm > 1.0, "the test needs a norm above the limit, got {norm}");

        let mut clipped = grads_of(&model, &device);
        let reported = values(clip_grad_norm(&model, &mut clipped, 1.0).unwrap())[0] as f64;
        assert!((reported - norm).abs() < 1e-4 * norm, "norm {reported}, expected {norm}");
        let factor = 1.0 / (norm + 1e-6);
        let cw = values(clipped.get::<2>(model.weight.id).unwrap());
        for (c, g) in cw.iter().zip(&w) {
            assert!((*c as f64 - *g as f64 * factor).abs() < 1e-5, "{c} against {g}·{factor}");
        }
        let joint = cw
            .iter()
            .chain(&values(clipped.get::<1>(model.bias.as_ref().unwrap().id).unwrap()))
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((joint - 1.0).abs() < 1e-4, "the clipped norm is {joint}");

        // A limit above the norm changes nothing.
        let mut loose = grads_of(&model, &device);
        clip_grad_norm(&model, &mut loose, 2.0 * norm);
        assert_eq!(values(loose.get::<2>(model.weight.id).unwrap()), w);
    }
}
