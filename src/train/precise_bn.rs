//! Precise batch normalization: each layer's moving mean and variance replaced by the average of
//! its batch statistics, computed with the final weights over a few training batches.
//!
//! Why: with the book's momentum 0.9 the moving averages follow only the last ~10 training
//! batches, taken while the weights were still moving, and evaluation mode inherits that noise.
//! On the book's LeNet-BN recipe, 8 seeds ended between 0.791 and 0.873 test accuracy in
//! deepcnn, and PyTorch swings alike; with precise statistics from 10 batches all 8 ended between
//! 0.875 and 0.884 (bench/RESULTS.md). On by default (10 batches, `TrainConfig::new`);
//! `--precise-bn 0` gives the book's evaluation with the moving averages.
//! (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021; PyTorch's `swa_utils.update_bn` and
//! detectron2's `PreciseBN` do the same.)

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use crate::models::Network;
use crate::nn::{FusedBatchNorm, ScratchBatchNorm};

/// `model` with every batch normalization's moving statistics set to the mean of the batch
/// statistics of `batches`. The weights do not change. The batch variances are averaged as they
/// are (biased, like the moving variance's updates). The model comes back in training mode on
/// its device's autodiff wrapper, whatever mode it came in (`valid()` it to evaluate).
pub fn precise_batch_norm(model: Network, batches: impl IntoIterator<Item = Tensor<4>>) -> Network {
    // Batch normalization takes its training path only in training mode on an autodiff device;
    // in evaluation mode its statistics would not move, and nothing could be measured. `train()`
    // also folds in any update still pending from an earlier forward pass (burn's `RunningState`
    // applies them lazily), which would otherwise land over the values written below; after
    // that, every pass here is read back through `valid()`, which folds its update in.
    let model = model.train();
    let mut batches = batches.into_iter().map(Tensor::autodiff);
    let Some(first) = batches.next() else {
        return model;
    };
    // A training-mode forward pass moves each statistic to `momentum·moving + (1 − momentum)·batch`.
    // Started from 0 it leaves `(1 − momentum)·batch`; started from 1, `momentum` more. So the
    // first batch, run twice, measures each layer's momentum (averaged over the layer's features,
    // which share it, to average the rounding out), and nothing here assumes what it is.
    let (model, from_one) = statistics_after(model, 1.0, first.clone());
    let (mut model, mut sums) = statistics_after(model, 0.0, first);
    let rates: HashMap<String, Tensor<1>> = from_one
        .into_iter()
        .map(|(path, one)| {
            let momentum = (one - sums[&path].clone()).mean();
            (path, momentum.neg().add_scalar(1.0))
        })
        .collect();
    let mut count = 1usize;
    for images in batches {
        let (next, statistics) = statistics_after(model, 0.0, images);
        model = next;
        for (path, statistic) in statistics {
            let sum = sums.remove(&path).expect("every pass visits the same layers");
            sums.insert(path, sum + statistic);
        }
        count += 1;
    }
    let averages: HashMap<String, Tensor<1>> = sums
        .into_iter()
        .map(|(path, sum)| (path.clone(), sum.div(rates[&path].clone()).div_scalar(count as f64)))
        .collect();
    set_statistics(model, |path, _| averages[path].clone())
}

/// Runs `images` through `model` in training mode with every moving statistic first set to
/// `start`, and returns the statistics it leaves, by module path.
fn statistics_after(model: Network, start: f32, images: Tensor<4>) -> (Network, HashMap<String, Tensor<1>>) {
    let model = set_statistics(model, |_, current| current.zeros_like().add_scalar(start));
    let _ = model.forward(images);
    // `valid()` folds the pass's pending update into the statistics (burn's `RunningState`
    // applies updates lazily); reading them from the evaluation copy also drops autodiff.
    let mut reader = StatisticsReader::default();
    model.valid().visit(&mut reader);
    (model, reader.found)
}

/// `model` (with no update pending) with each moving statistic replaced by
/// `value(path, current)`.
fn set_statistics(model: Network, value: impl FnMut(&str, Tensor<1>) -> Tensor<1>) -> Network {
    model.map(&mut StatisticsWriter { place: Place::default(), value })
}

/// Whether a tensor met as field `field` of a module of type `container` (burn's visitors
/// name it `Struct:Type`) is a batch normalization's moving statistic: each layer type says
/// which of its fields are. Any network's layers are found this way, whatever it calls them.
fn is_moving_statistic(container: &str, field: &str) -> bool {
    let fields: &[&str] = match container.strip_prefix("Struct:") {
        Some("ScratchBatchNorm") => &ScratchBatchNorm::MOVING_STATISTICS,
        Some("FusedBatchNorm") => &FusedBatchNorm::MOVING_STATISTICS,
        _ => &[],
    };
    fields.contains(&field)
}

/// A visitor's place in the network: the path of field names, and the type of the module that
/// holds the last one.
#[derive(Default)]
struct Place {
    path: Vec<String>,
    containers: Vec<String>,
}

impl Place {
    fn enter(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit(&mut self) {
        self.path.pop();
        self.containers.pop();
    }

    fn at_moving_statistic(&self) -> bool {
        match (self.containers.last(), self.path.last()) {
            (Some(container), Some(field)) => is_moving_statistic(container, field),
            _ => false,
        }
    }
}

#[derive(Default)]
struct StatisticsReader {
    place: Place,
    found: HashMap<String, Tensor<1>>,
}

impl ModuleVisitor for StatisticsReader {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.place.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.place.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.place.at_moving_statistic() {
            self.found.insert(self.place.path.join("."), param.val().without_autodiff().reshape([-1]));
        }
    }
}

struct StatisticsWriter<F> {
    place: Place,
    value: F,
}

impl<F: FnMut(&str, Tensor<1>) -> Tensor<1>> ModuleMapper for StatisticsWriter<F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.place.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.place.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !self.place.at_moving_statistic() {
            return param;
        }
        let path = self.place.path.join(".");
        param.map(|current| {
            let shape = current.shape();
            super::outside_autodiff(current, |current| (self.value)(&path, current.reshape([-1])).reshape(shape))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelKind;
    use crate::nn::batch_norm::ScratchBatchNormConfig;
    use crate::nn::Norm;
    use crate::test_util::{assert_close, values};
    use burn::tensor::Distribution;

    /// The first batch normalization of a LeNet-BN: its statistics become the average of the
    /// per-channel batch mean and biased variance of conv1's output, computed here directly.
    #[test]
    fn moving_statistics_become_the_average_batch_statistics() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let batches: Vec<Tensor<4>> =
            (0..3).map(|_| Tensor::random([8, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &device)).collect();
        // The third network's first layer has another momentum, which the function measures.
        let other_momentum = || {
            let mut model = Network::seeded(ModelKind::LeNetBnScratch, 1, &device);
            if let Network::LeNet(lenet) = &mut model {
                lenet.norm1 = Some(Norm::Scratch(ScratchBatchNormConfig::new(6).with_momentum(0.5).init(&device)));
            }
            ("momentum 0.5", model)
        };
        let networks = [
            ("lenet-bn", Network::seeded(ModelKind::LeNetBn, 1, &device)),
            ("lenet-bn-scratch", Network::seeded(ModelKind::LeNetBnScratch, 1, &device)),
            other_momentum(),
        ];
        for (kind, model) in networks {
            let Network::LeNet(lenet) = &model else { unreachable!() };
            let (mut mean, mut var) = (vec![0.0f32; 6], vec![0.0f32; 6]);
            for x in &batches {
                let y = lenet.conv1.forward(x.clone()).without_autodiff();
                let m = y.clone().mean_dim(0).mean_dim(2).mean_dim(3);
                let v = (y - m.clone()).powi_scalar(2).mean_dim(0).mean_dim(2).mean_dim(3);
                for (sum, value) in mean.iter_mut().zip(values(m.reshape([6]))) {
                    *sum += value / 3.0;
                }
                for (sum, value) in var.iter_mut().zip(values(v.reshape([6]))) {
                    *sum += value / 3.0;
                }
            }
            // As after a training step: the forward pass leaves an update of the moving
            // statistics pending in burn's `RunningState`, which must not leak into the result.
            let _ = model.forward(batches[0].clone());
            let model = precise_batch_norm(model, batches.clone());
            let Network::LeNet(lenet) = model.valid() else { unreachable!() };
            let (got_mean, got_var) = match lenet.norm1.expect("LeNet-BN has norm1") {
                Norm::Scratch(bn) => (bn.moving_mean.value(), bn.moving_var.value()),
                Norm::Builtin(bn) => (bn.running_mean.value(), bn.running_var.value()),
            };
            assert_close(&values(got_mean), &mean, 1e-5, &format!("{kind}: mean"));
            assert_close(&values(got_var), &var, 1e-5, &format!("{kind}: variance"));
        }
    }

    /// An evaluation-mode network (as `deepcnn eval` loads one) gets the same statistics as the
    /// training-mode one it came from.
    #[test]
    fn an_evaluation_mode_network_gets_the_same_statistics() {
        let device = Device::flex().autodiff();
        device.seed(7);
        let inner = device.clone().without_autodiff();
        let batches: Vec<Tensor<4>> =
            (0..2).map(|_| Tensor::random([8, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &inner)).collect();
        let statistics = |model: Network| {
            let mut reader = StatisticsReader::default();
            precise_batch_norm(model, batches.clone()).valid().visit(&mut reader);
            let mut found: Vec<(String, Vec<f32>)> = reader.found.into_iter().map(|(p, t)| (p, values(t))).collect();
            found.sort_by(|a, b| a.0.cmp(&b.0));
            found
        };
        let model = Network::seeded(ModelKind::LeNetBn, 2, &device);
        let from_evaluation_mode = statistics(model.valid());
        let from_training_mode = statistics(model);
        assert_eq!(from_evaluation_mode.len(), 8);
        for ((path, got), (_, want)) in from_evaluation_mode.iter().zip(&from_training_mode) {
            assert!(got.iter().all(|v| v.is_finite()), "{path}: {got:?}");
            assert_close(got, want, 1e-6, path);
        }
    }

    /// Every batch normalization of the deep networks is found and set: ResNet-18 has 17
    /// (the stem's and two per residual block), DenseNet 21 (the stem's, one per convolution
    /// block and transition, and the last), each with a mean and a variance.
    #[test]
    fn every_layer_of_the_deep_networks_is_set() {
        let device = Device::flex().autodiff();
        device.seed(6);
        for (kind, layers) in [(ModelKind::ResNet18, 17), (ModelKind::DenseNet, 21)] {
            let x = Tensor::random([2, 1, 32, 32], Distribution::Uniform(0.0, 1.0), &device);
            let model = precise_batch_norm(Network::seeded(kind, 1, &device), [x]);
            let mut reader = StatisticsReader::default();
            model.valid().visit(&mut reader);
            assert_eq!(reader.found.len(), 2 * layers, "{kind}: {:?}", reader.found.keys());
            // None is left at its initial value (mean 0 or variance 1 everywhere).
            for (path, statistic) in reader.found {
                let v = values(statistic);
                assert!(v.iter().any(|&x| x != 0.0 && x != 1.0), "{kind}: {path} was not set: {v:?}");
            }
        }
    }
}
