//! Training: the book's loop (Adam, cross-entropy, one line of metrics per epoch) and
//! evaluation in evaluation mode.

pub mod config;
pub mod evaluate;
pub mod metrics;

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;

pub use config::{ConfigError, TrainConfig};
pub use evaluate::{count_correct, evaluate};
pub use metrics::{EpochMetrics, Tally};

use crate::data::{batcher::shuffled, Batch, Batcher, FashionMnist};
use crate::models::Network;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the training set is empty")]
    NoData,
    #[error("loss became {loss} at epoch {epoch}, step {step}; stopping")]
    NonFiniteLoss { epoch: usize, step: usize, loss: f64 },
}

/// A trained network and its per-epoch history.
pub struct Trained {
    pub model: Network,
    pub history: Vec<EpochMetrics>,
}

/// Trains a fresh network on `data.train` (the first `config.limit` examples) and evaluates it
/// on all of `data.test` after every epoch; `on_epoch` sees each epoch's metrics as they come.
/// `device` is a plain device: gradients are recorded on its autodiff wrapper.
pub fn train(
    config: &TrainConfig,
    data: &FashionMnist,
    device: &Device,
    mut on_epoch: impl FnMut(&EpochMetrics),
) -> Result<Trained, TrainError> {
    config.validate()?;
    let n_train = config.train_len(data.train.len());
    if n_train == 0 {
        return Err(TrainError::NoData);
    }
    let train_device = device.clone().autodiff();
    train_device.seed(config.seed);
    let size = Some(config.image_size());
    let train_batcher = Batcher::new(size, &train_device);
    let test_batcher = Batcher::new(size, device);

    let mut model = Network::new(config.model, &train_device);
    let mut optim = optimizer();
    let mut history = Vec::with_capacity(config.epochs);

    for epoch in 1..=config.epochs {
        let start = Instant::now();
        let order = shuffled(n_train, epoch_seed(config.seed, epoch));
        let mut tally = Tally::default();
        for (step, batch) in train_batcher.batches(&data.train, &order, config.batch_size).enumerate() {
            let n = batch.labels.dims()[0];
            let (next, out) = train_step(model, &mut optim, batch, config.lr);
            if !out.loss.is_finite() {
                return Err(TrainError::NonFiniteLoss { epoch, step: step + 1, loss: out.loss });
            }
            tally.add(n, out.correct, out.loss);
            model = next;
        }
        let train_seconds = start.elapsed().as_secs_f64();
        let test = evaluate(&model.valid(), &data.test, &test_batcher, config.batch_size);
        let metrics = EpochMetrics {
            epoch,
            loss: tally.mean_loss(),
            train_accuracy: tally.accuracy(),
            test_accuracy: test.accuracy(),
            seconds: start.elapsed().as_secs_f64(),
            examples_per_sec: n_train as f64 / train_seconds,
        };
        on_epoch(&metrics);
        history.push(metrics);
    }
    Ok(Trained { model, history })
}

/// The book's optimizer: Adam with PyTorch's defaults (burn's own default epsilon is 1e-5).
pub fn optimizer() -> ModuleOptimizer {
    AdamConfig::new().with_epsilon(1e-8).init()
}

/// What one training step reports.
pub struct StepOutput {
    /// Mean cross-entropy of the batch, before the update.
    pub loss: f64,
    /// Correct predictions in the batch, before the update.
    pub correct: usize,
}

/// One step of the book's training: forward (training mode), cross-entropy, backward, Adam.
pub fn train_step(model: Network, optim: &mut ModuleOptimizer, batch: Batch, lr: f64) -> (Network, StepOutput) {
    let logits = model.forward(batch.images);
    let loss = CrossEntropyLossConfig::new().init(&logits.device()).forward(logits.clone(), batch.labels.clone());
    let out = StepOutput { loss: loss.clone().into_scalar::<f64>(), correct: count_correct(logits.detach(), batch.labels) };
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(lr, model, grads), out)
}

/// The shuffle seed of one epoch: a fixed function of the run's seed and the epoch number, so
/// any epoch's order can be reproduced on its own.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
