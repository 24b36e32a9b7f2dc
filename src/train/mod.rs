//! Training: the book's loop (Adam, cross-entropy, one line of metrics per epoch) and
//! evaluation in evaluation mode. A run can start fresh or continue from a saved
//! [`TrainState`]; an [`Observer`] sees its progress (and saves checkpoints, draws progress
//! bars) without the loop knowing about files or terminals.

pub mod adam;
pub mod clip;
pub mod config;
pub mod ema;
pub mod evaluate;
pub mod metrics;
pub mod mix;
pub mod precise_bn;
mod read_back;

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

pub use config::{Augment, ConfigError, OptimizerKind, Schedule, TrainConfig};
pub use evaluate::{correct_count, evaluate, evaluate_report, EvalReport};
pub use metrics::{EpochMetrics, Tally};

use read_back::{Unread, READ_BACK_EVERY};

use crate::data::{batcher::shuffled, Batch, Batcher, Dataset, FashionMnist};
use crate::models::Network;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the training set is empty")]
    NoData,
    #[error("the test set is empty: there is nothing to evaluate on")]
    NoTestData,
    #[error("the network's weights became {value} in epoch {epoch} (the learning rate is too high?); stopping")]
    NonFiniteWeights { epoch: usize, value: f32 },
    #[error("the test loss became {loss} after epoch {epoch}: the network's outputs are not finite numbers (the learning rate is too high?); stopping")]
    NonFiniteTestLoss { epoch: usize, loss: f64 },
    #[error("loss became {loss} at epoch {epoch}, step {step}; stopping")]
    NonFiniteLoss { epoch: usize, step: usize, loss: f64 },
    /// The observer's own error (saving a checkpoint, say), shown as it is.
    #[error(transparent)]
    Observer(ObserverError),
}

/// An observer's own failure (saving a checkpoint, printing a line): any error, kept as it is
/// so that the caller can still tell what it was (a closed stdout, a full disk).
pub type ObserverError = Box<dyn std::error::Error + Send + Sync>;

/// Everything a run needs to continue: the network (on an autodiff device), the optimizer's
/// state, and the metrics of the epochs done so far. The random state is not stored here
/// because every epoch's randomness (shuffle, augmentation) is derived from the seed and the
/// epoch number alone.
pub struct TrainState {
    pub model: Network,
    pub optim: ModuleOptimizer,
    /// The moving average of the weights, in runs that keep one ([`ema`]); on the autodiff
    /// device as the network, so that precise BN can recompute its statistics.
    pub ema: Option<Network>,
    pub history: Vec<EpochMetrics>,
}

impl TrainState {
    /// A fresh network initialised from `config.seed` on `device`'s autodiff wrapper.
    pub fn fresh(config: &TrainConfig, device: &Device) -> Self {
        let model = Network::seeded_for(config.model, config.shape(), config.seed, &device.clone().autodiff());
        let ema = config.ema.map(|_| ema::copy_of(&model));
        Self { model, optim: optimizer_for(config), ema, history: Vec::new() }
    }

    pub fn epochs_done(&self) -> usize {
        self.history.len()
    }
}

/// Sees a run as it goes. All methods have do-nothing defaults.
pub trait Observer {
    /// An epoch of `steps` steps over `examples` examples begins.
    fn epoch_started(&mut self, _epoch: usize, _steps: usize, _examples: usize) {}
    /// A step over `examples` examples is done.
    fn step_done(&mut self, _examples: usize, _loss: f64) {}
    /// Training of the epoch is done; the test set's `examples` examples are being evaluated.
    fn evaluating(&mut self, _examples: usize) {}
    /// A batch of the test pass, of `examples` examples, is done.
    fn test_step_done(&mut self, _examples: usize) {}
    /// The trained network's evaluation on the test set this epoch (before `epoch_done`).
    fn tested(&mut self, _report: &EvalReport) {}
    /// The epoch is complete and `state` includes it. An error stops the run.
    fn epoch_done(&mut self, _metrics: &EpochMetrics, _state: &TrainState) -> Result<(), ObserverError> {
        Ok(())
    }
}

/// An observer that only watches the epochs' metrics.
pub struct OnEpoch<F: FnMut(&EpochMetrics)>(pub F);

impl<F: FnMut(&EpochMetrics)> Observer for OnEpoch<F> {
    fn epoch_done(&mut self, metrics: &EpochMetrics, _state: &TrainState) -> Result<(), ObserverError> {
        (self.0)(metrics);
        Ok(())
    }
}

/// Trains `state` on `data.train` (the first `config.limit` examples) from the epoch after its
/// last one up to `config.epochs`, evaluating on all of `data.test` after every epoch.
/// `device` is a plain device: the evaluation copy of the network lives there.
pub fn train(
    config: &TrainConfig,
    data: &FashionMnist,
    device: &Device,
    mut state: TrainState,
    observer: &mut impl Observer,
) -> Result<TrainState, TrainError> {
    config.validate()?;
    config.check_data(data.train.image_size())?;
    config.check_classes(&data.train)?;
    config.check_val_split(data.train.len())?;
    let n_train = config.train_len(data.train.len());
    if n_train == 0 {
        return Err(TrainError::NoData);
    }
    let val_range = config.val_range(data.train.len());
    let validation = (!val_range.is_empty()).then(|| data.train.slice(val_range));
    if data.test.is_empty() {
        return Err(TrainError::NoTestData);
    }
    let size = Some(config.image_size());
    let train_batcher = Batcher::new(size, &device.clone().autodiff());
    let test_batcher = Batcher::new(size, device);
    let steps_per_epoch = n_train.div_ceil(config.batch_size);
    let total_steps = steps_per_epoch * config.epochs;

    for epoch in state.epochs_done() + 1..=config.epochs {
        if config.stops_early(&state.history) {
            break;
        }
        let start = Instant::now();
        let seed = epoch_seed(config.seed, epoch);
        let order = shuffled(n_train, seed);
        observer.epoch_started(epoch, steps_per_epoch, n_train);
        let mut tally = Tally::default();
        let mut unread = Vec::with_capacity(READ_BACK_EVERY);
        let mut steps_done = 0;
        let batches = train_batcher.augmented_batches(&data.train, &order, config.batch_size, config.augment, !seed);
        // Mixup's and CutMix's draws: a stream of the epoch's own.
        let mut mix_rng = StdRng::seed_from_u64(seed.rotate_left(17) ^ 0x6D69_7875_7063_7574);
        let size = config.image_size();
        for (step, batch) in batches.enumerate() {
            let lr = config.lr_at((epoch - 1) * steps_per_epoch + step, total_steps, steps_per_epoch);
            let mix = mix::draw(config.mixup, config.cutmix, [size, size], &mut mix_rng);
            let options = StepOptions { mix, ..StepOptions::of(config) };
            let (next, out) = train_step(state.model, &mut state.optim, batch, lr, options);
            state.model = next;
            if let (Some(decay), Some(average)) = (config.ema, state.ema.take()) {
                state.ema = Some(ema::update(average, &state.model, decay));
            }
            unread.push(out);
            steps_done = step + 1;
            if unread.len() == READ_BACK_EVERY {
                tally_steps(&mut unread, epoch, steps_done, &mut tally, observer)?;
            }
        }
        tally_steps(&mut unread, epoch, steps_done, &mut tally, observer)?;
        // The loss is checked before each update; the epoch's last update is checked here.
        if let Some(value) = state.model.first_non_finite() {
            return Err(TrainError::NonFiniteWeights { epoch, value });
        }
        if config.precise_bn > 0 {
            let batches = || train_batcher.batches(&data.train, &order, config.batch_size).take(config.precise_bn);
            state.model = precise_bn::precise_batch_norm(state.model, batches().map(|batch| batch.images));
            // The average's statistics from the same batches, through its own weights.
            state.ema = state.ema.map(|average| precise_bn::precise_batch_norm(average, batches().map(|b| b.images)));
        }
        let train_seconds = start.elapsed().as_secs_f64();
        let tested_networks = 1 + usize::from(state.ema.is_some());
        let val_len = validation.as_ref().map_or(0, |v| v.len());
        observer.evaluating(tested_networks * data.test.len() + val_len);
        let mut tested = |examples| observer.test_step_done(examples);
        let mut test = |model: &Network, split: &Dataset| {
            let report = evaluate_report(&model.valid(), split, &test_batcher, config.batch_size, &mut tested);
            match report.loss.is_finite() {
                true => Ok(report),
                false => Err(TrainError::NonFiniteTestLoss { epoch, loss: report.loss }),
            }
        };
        let val_accuracy = validation.as_ref().map(|v| test(&state.model, v).map(|r| r.accuracy)).transpose()?;
        let test_report = test(&state.model, &data.test)?;
        let ema_test_accuracy =
            state.ema.as_ref().map(|average| test(average, &data.test).map(|r| r.accuracy)).transpose()?;
        observer.tested(&test_report);
        let test_accuracy_now = test_report.accuracy;
        let metrics = EpochMetrics {
            epoch,
            loss: tally.mean_loss(),
            train_accuracy: tally.accuracy(),
            test_accuracy: test_accuracy_now,
            ema_test_accuracy,
            val_accuracy,
            seconds: start.elapsed().as_secs_f64(),
            examples_per_sec: n_train as f64 / train_seconds,
        };
        state.history.push(metrics.clone());
        observer.epoch_done(&metrics, &state).map_err(TrainError::Observer)?;
    }
    Ok(state)
}

/// Reads the unread steps' results, which end with step `last_step` of `epoch`, into `tally`
/// and tells `observer`; a non-finite loss stops training, naming its step.
fn tally_steps(
    unread: &mut Vec<StepOutput>,
    epoch: usize,
    last_step: usize,
    tally: &mut Tally,
    observer: &mut impl Observer,
) -> Result<(), TrainError> {
    let first_step = last_step + 1 - unread.len();
    for (i, (n, loss, correct)) in StepOutput::read_all(std::mem::take(unread)).into_iter().enumerate() {
        if !loss.is_finite() {
            return Err(TrainError::NonFiniteLoss { epoch, step: first_step + i, loss });
        }
        tally.add(n, correct, loss);
        observer.step_done(n, loss);
    }
    Ok(())
}

/// The book's optimizer: Adam with PyTorch's defaults (burn's own default epsilon is 1e-5), on
/// deepcnn's one-pass update kernel.
pub fn optimizer() -> ModuleOptimizer {
    ModuleOptimizer::from(adam::FusedAdam::new(1e-8))
}

/// The run's optimizer: the book's Adam, or AdamW (PyTorch's defaults) when the run asks for
/// weight decay; or SGD with the run's momentum, Nesterov and weight decay (burn's `Sgd`,
/// which computes PyTorch's update with dampening 0).
pub fn optimizer_for(config: &TrainConfig) -> ModuleOptimizer {
    match config.optimizer {
        OptimizerKind::Adam if config.weight_decay > 0.0 => {
            AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(config.weight_decay as f32).init()
        }
        OptimizerKind::Adam => optimizer(),
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum((config.momentum > 0.0).then(|| {
                MomentumConfig::new().with_momentum(config.momentum).with_dampening(0.0).with_nesterov(config.nesterov)
            }))
            .with_weight_decay((config.weight_decay > 0.0).then(|| WeightDecayConfig::new(config.weight_decay as f32)))
            .init(),
    }
}

/// What one training step reports, still on the device (see [`StepOutput::read`]).
pub struct StepOutput {
    /// Examples in the batch.
    pub examples: usize,
    /// Mean cross-entropy of the batch, before the update (one element).
    pub loss: Tensor<1>,
    /// Correct predictions in the batch, before the update (one element).
    pub correct: Tensor<1, Int>,
}

impl StepOutput {
    /// The mean loss and the number of correct predictions (waits for the step to finish).
    pub fn read(self) -> (f64, usize) {
        let [(_, loss, correct)] = Self::read_all(vec![self]).try_into().expect("one step in, one out");
        (loss, correct)
    }

    /// Examples, mean loss and correct predictions of each step, with one read from the device.
    pub fn read_all(steps: Vec<StepOutput>) -> Vec<(usize, f64, usize)> {
        let examples: Vec<usize> = steps.iter().map(|s| s.examples).collect();
        let mut unread: Unread = steps.into_iter().map(|s| (s.loss, s.correct)).collect();
        let values = read_back::read_back(&mut unread);
        examples.into_iter().zip(values).map(|(n, (loss, correct))| (n, loss[0], correct[0] as usize)).collect()
    }
}

/// What a training step does beyond the book's: label smoothing of its loss, mixing of its
/// batch, clipping of its gradients' norm (the default: none of them).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepOptions {
    pub label_smoothing: f64,
    pub clip_grad: Option<f64>,
    pub mix: Option<mix::Mix>,
}

impl StepOptions {
    /// The run's (a batch's mix is drawn per step).
    pub fn of(config: &TrainConfig) -> Self {
        Self { label_smoothing: config.label_smoothing, clip_grad: config.clip_grad, mix: None }
    }
}

/// One step of the book's training: forward (training mode), cross-entropy (with the label
/// smoothing of `options`), backward, the gradients' norm clipped where `options` ask, the
/// optimizer. Nothing is read back to the host, so on a GPU the step is only queued.
pub fn train_step(
    model: Network,
    optim: &mut ModuleOptimizer,
    batch: Batch,
    lr: f64,
    options: StepOptions,
) -> (Network, StepOutput) {
    let examples = batch.labels.dims()[0];
    let images = match options.mix {
        Some(m) => mix::mix_images(batch.images, m),
        None => batch.images,
    };
    let logits = model.forward(images);
    let loss = match options.mix {
        Some(m) => {
            let targets =
                mix::mixed_targets(batch.labels.clone(), logits.dims()[1], m.lambda(), options.label_smoothing);
            mix::soft_cross_entropy(logits.clone(), targets)
        }
        None => training_loss(logits.clone(), batch.labels.clone(), options.label_smoothing),
    };
    let out = StepOutput {
        examples,
        loss: loss.clone().detach().reshape([1]),
        correct: correct_count(logits.detach(), batch.labels),
    };
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    if let Some(max_norm) = options.clip_grad {
        clip::clip_grad_norm(&model, &mut grads, max_norm);
    }
    (optim.step(lr, model, grads), out)
}

/// The mean cross-entropy of `logits` against `labels`, the targets smoothed by
/// `label_smoothing` where it is above 0.
pub fn training_loss(logits: Tensor<2>, labels: Tensor<1, Int>, label_smoothing: f64) -> Tensor<1> {
    let smoothing = (label_smoothing > 0.0).then_some(label_smoothing as f32);
    CrossEntropyLossConfig::new().with_smoothing(smoothing).init(&logits.device()).forward(logits, labels)
}

/// `f` applied to `t`'s values without autodiff's bookkeeping (updates of a network's stored
/// values, which are no part of any graph), the result on `t`'s side again.
pub(crate) fn outside_autodiff<const D: usize>(t: Tensor<D>, f: impl FnOnce(Tensor<D>) -> Tensor<D>) -> Tensor<D> {
    let autodiff = t.is_autodiff();
    let new = f(t.without_autodiff()).without_autodiff();
    if autodiff {
        new.autodiff()
    } else {
        new
    }
}

/// The random seed of one epoch (its shuffle, and its augmentation via the complement): a
/// fixed function of the run's seed and the epoch number, so any epoch can be reproduced on
/// its own, which is what makes resuming exact.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::values;

    /// Smoothed cross-entropy against its definition, −Σ_c q_c·log softmax(z)_c with
    /// q = (1 − α)·one-hot + α/C, and α = 0 against plain cross-entropy.
    #[test]
    fn label_smoothing_smooths_the_targets() {
        let device = Device::flex();
        let rows: [[f32; 4]; 2] = [[2.0, -1.0, 0.5, 0.0], [-0.5, 0.25, 3.0, 1.0]];
        let labels = [2usize, 0];
        let logits = Tensor::<2>::from_data(TensorData::new(rows.concat(), [2, 4]), &device);
        let label_tensor =
            Tensor::<1, Int>::from_data(TensorData::new(labels.map(|l| l as i64).to_vec(), [2]), &device);
        for alpha in [0.0, 0.1, 0.3] {
            let expected: f64 = rows
                .iter()
                .zip(labels)
                .map(|(z, label)| {
                    let log_sum = z.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
                    (0..4)
                        .map(|c| {
                            let q = (1.0 - alpha) * f64::from(u8::from(c == label)) + alpha / 4.0;
                            -q * (z[c] as f64 - log_sum)
                        })
                        .sum::<f64>()
                })
                .sum::<f64>()
                / 2.0;
            let got = values(training_loss(logits.clone(), label_tensor.clone(), alpha))[0] as f64;
            assert!((got - expected).abs() < 1e-5, "α = {alpha}: {got} against {expected}");
        }
    }

    /// The SGD a run builds computes PyTorch's update: with momentum m, Nesterov and weight
    /// decay λ, g' = g + λ·p, v = m·v + g' (v = g' on the first step), p −= lr·(g' + m·v).
    #[test]
    fn sgd_makes_pytorchs_nesterov_update_with_weight_decay() {
        use burn::nn::{Linear, LinearConfig};
        let device = Device::flex().autodiff();
        let config = TrainConfig {
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.01,
            ..TrainConfig::new(crate::models::ModelKind::LeNet)
        };
        let mut optim = optimizer_for(&config);
        let mut model: Linear = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<2>::from_floats([[1.0, -2.0, 0.5], [0.3, 0.1, -1.5]], &device);
        let (lr, (m, wd)) = (0.1, (0.9f64, 0.01f64));
        let mut velocity: Option<Vec<f64>> = None;
        for step in 0..3 {
            let grads = GradientsParams::from_grads(model.forward(x.clone()).powi_scalar(2).sum().backward(), &model);
            let p: Vec<f64> = values(model.weight.val()).iter().map(|&v| v as f64).collect();
            let g: Vec<f64> = values(grads.get::<2>(model.weight.id).unwrap()).iter().map(|&v| v as f64).collect();
            let g: Vec<f64> = g.iter().zip(&p).map(|(g, p)| g + wd * p).collect();
            let v: Vec<f64> = match &velocity {
                Some(v) => v.iter().zip(&g).map(|(v, g)| m * v + g).collect(),
                None => g.clone(),
            };
            let expected: Vec<f64> = p.iter().zip(&g).zip(&v).map(|((p, g), v)| p - lr * (g + m * v)).collect();
            model = optim.step(lr, model, grads);
            let got = values(model.weight.val());
            for (a, b) in got.iter().zip(&expected) {
                assert!((*a as f64 - b).abs() < 1e-5, "step {step}: {a} against {b}");
            }
            velocity = Some(v);
        }
    }
}
