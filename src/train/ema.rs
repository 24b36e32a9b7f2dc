//! An exponential moving average of the weights (`--ema D`), as timm's `ModelEmaV2` keeps it:
//! after every optimizer step each parameter and batch-norm statistic of the average becomes
//! `D·average + (1 − D)·current`, starting from the initial network. It is a network of its own,
//! evaluated after every epoch (with precise BN recomputing its statistics, where the run has
//! it) and saved beside the trained weights.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use crate::kernels;
use crate::models::Network;

/// The current network's values in visiting order, flattened and detached from the graph.
#[derive(Default)]
struct Values(Vec<Tensor<1>>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().without_autodiff().reshape([-1]));
    }
}

/// Blends each value of the average with the current network's value at the same place (both
/// networks have one structure, so they visit their values in one order).
struct Blend {
    current: std::vec::IntoIter<Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let current = self.current.next().expect("the average and the network have one structure");
        let decay = self.decay;
        // Computed without autodiff's bookkeeping, as the optimizer's updates are; moved, so
        // that the kernel can update the average's buffer in place.
        param.map(|average| {
            super::outside_autodiff(average, |average| {
                let current = current.reshape(average.shape());
                kernels::ema_step(average, current, decay)
            })
        })
    }
}

/// The average's start: a copy of `model` (on its autodiff device) that shares nothing with it.
/// A clone would share the batch-norm statistics (burn's `RunningState` is one shared value),
/// so that blending the average would also write the network's.
pub fn copy_of(model: &Network) -> Network {
    model.valid().train()
}

/// `average` one step further: `decay·average + (1 − decay)·model`, value by value.
pub fn update(average: Network, model: &Network, decay: f64) -> Network {
    let mut values = Values::default();
    model.visit(&mut values);
    let count = values.0.len();
    let mut blend = Blend { current: values.0.into_iter(), decay };
    let average = average.map(&mut blend);
    assert_eq!(blend.current.len(), 0, "the average has fewer values than the network's {count}");
    average
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelKind;
    use crate::test_util::values;

    /// Each value of the average is D·average + (1 − D)·current, batch-norm statistics
    /// included, and the network itself is left as it was.
    #[test]
    fn blends_every_value_of_the_network() {
        let device = Device::flex().autodiff();
        let start = Network::seeded(ModelKind::LeNetBn, 1, &device);
        let now = Network::seeded(ModelKind::LeNetBn, 2, &device);
        let collect = |n: &Network| {
            let mut v = Values::default();
            n.visit(&mut v);
            v.0.into_iter().map(values).collect::<Vec<_>>()
        };
        let (a, b) = (collect(&start), collect(&now));
        // Weights, biases, γ, β and both moving statistics of every BN layer.
        assert!(a.len() > 10, "{} values", a.len());
        let averaged = collect(&update(start, &now, 0.9));
        for ((avg, a), b) in averaged.iter().zip(&a).zip(&b) {
            for ((&m, &x), &y) in avg.iter().zip(a).zip(b) {
                assert!((m - (0.9 * x + 0.1 * y)).abs() < 1e-6, "{m} against 0.9·{x} + 0.1·{y}");
            }
        }
        assert_eq!(collect(&now), b);
    }

    /// The start is a copy: blending it leaves the network's values, its batch-norm
    /// statistics among them, as they were.
    #[test]
    fn the_average_shares_nothing_with_the_network() {
        let device = Device::flex().autodiff();
        let model = Network::seeded(ModelKind::LeNetBn, 1, &device);
        let other = Network::seeded(ModelKind::LeNetBn, 2, &device);
        let before = network_values(&model);
        let average = update(copy_of(&model), &other, 0.5);
        assert_eq!(network_values(&model), before);
        assert_ne!(network_values(&average), before);
    }

    fn network_values(n: &Network) -> Vec<Vec<f32>> {
        let mut v = Values::default();
        n.visit(&mut v);
        v.0.into_iter().map(values).collect()
    }
}
