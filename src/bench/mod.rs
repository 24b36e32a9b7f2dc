//! Timing the training step: the full step of the training loop (forward in training mode,
//! cross-entropy, backward, Adam) on random data, so that deepcnn can be compared with PyTorch
//! running the book's code on the same machine (`bench/compare-pytorch`).

use std::time::Instant;

use burn::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::data::Batch;
use crate::models::{ModelKind, Network};
use crate::train::{optimizer, train_step, StepOptions};

/// What to time.
#[derive(Debug, Clone, Copy)]
pub struct BenchConfig {
    pub model: ModelKind,
    pub batch_size: usize,
    /// Input height and width.
    pub size: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first (allocator and cache warm-up, lazy initialisation).
    pub warmup: usize,
}

/// Wall-clock seconds of each timed step, and of the warm-up steps before them (on a GPU the
/// first steps compile and autotune kernels).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub model: ModelKind,
    pub batch_size: usize,
    pub size: usize,
    pub step_seconds: Vec<f64>,
    pub warmup_seconds: Vec<f64>,
    /// GFLOP of the convolutions per image and step (forward, ∂X and ∂W), as counted by
    /// deepcnn's convolution kernels; `None` where they did not run (burn's own convolutions,
    /// a GPU).
    pub conv_gflop_per_image: Option<f64>,
}

impl BenchReport {
    pub fn median_seconds(&self) -> f64 {
        let mut sorted = self.step_seconds.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return f64::NAN;
        }
        if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        }
    }

    /// Images per second at the median step time.
    pub fn images_per_sec(&self) -> f64 {
        self.batch_size as f64 / self.median_seconds()
    }

    /// The convolutions' GFLOP/s at the median step time (the whole step's time: what the
    /// network as a whole makes of the machine).
    pub fn conv_gflops(&self) -> Option<f64> {
        self.conv_gflop_per_image.map(|g| g * self.images_per_sec())
    }
}

/// Random images in [0, 1] and random labels, drawn once: every step trains on the same batch,
/// uploaded from host memory each step as the training loop does.
pub struct RandomBatch {
    images: Vec<f32>,
    labels: Vec<i64>,
    shape: [usize; 4],
}

impl RandomBatch {
    pub fn new(batch_size: usize, size: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let shape = [batch_size, 1, size, size];
        let images = (0..shape.iter().product()).map(|_| rng.random::<f32>()).collect();
        let labels = (0..batch_size).map(|_| rng.random_range(0..10)).collect();
        Self { images, labels, shape }
    }

    pub fn to_device(&self, device: &Device) -> Batch {
        Batch {
            images: Tensor::from_data(TensorData::new(self.images.clone(), self.shape), device),
            labels: Tensor::from_data(TensorData::new(self.labels.clone(), [self.shape[0]]), device),
        }
    }
}

/// Times `config.steps` training steps of a fresh `config.model` on `device` (a plain device;
/// the network lives on its autodiff wrapper). `on_step(i, seconds)` hears of every step as it
/// ends, warm-up steps included (i counts from 0).
pub fn bench_training_step(config: &BenchConfig, device: &Device, mut on_step: impl FnMut(usize, f64)) -> BenchReport {
    let device = device.clone().autodiff();
    let mut model = Network::seeded(config.model, 0, &device);
    let mut optim = optimizer();
    let data = RandomBatch::new(config.batch_size, config.size, 0);
    let mut step_seconds = Vec::with_capacity(config.steps);
    let mut warmup_seconds = Vec::with_capacity(config.warmup);
    let mut flops_before_timed_steps = crate::kernels::profile::conv_flops();
    for i in 0..config.warmup + config.steps {
        if i == config.warmup {
            flops_before_timed_steps = crate::kernels::profile::conv_flops();
        }
        let start = Instant::now();
        // Read the loss and the correct count back every step, as PyTorch's side does
        // (`bench/torch_step.py`); that also waits for the step to finish.
        let (next, out) = train_step(model, &mut optim, data.to_device(&device), 1e-3, StepOptions::default());
        let _ = out.read();
        model = next;
        let _ = device.sync();
        let seconds = start.elapsed().as_secs_f64();
        on_step(i, seconds);
        match i >= config.warmup {
            true => step_seconds.push(seconds),
            false => warmup_seconds.push(seconds),
        }
    }
    let images = (config.steps * config.batch_size) as f64;
    let flops = crate::kernels::profile::conv_flops() - flops_before_timed_steps;
    BenchReport {
        model: config.model,
        batch_size: config.batch_size,
        size: config.size,
        step_seconds,
        warmup_seconds,
        conv_gflop_per_image: (flops > 0).then(|| flops as f64 / images / 1e9),
    }
}

/// Where a training step's time goes, averaged over the timed steps.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepProfile {
    pub steps: usize,
    /// Seconds per step in each phase: forward (with the loss), backward, optimizer.
    pub phases: Vec<(String, f64)>,
    /// Seconds per step in each of deepcnn's kernels, with its phase.
    pub kernels: Vec<(String, String, f64)>,
}

/// Runs the steps of [`bench_training_step`] with each phase timed on its own, and the time
/// inside deepcnn's kernels (convolution, batch normalization) collected. burn-flex runs each
/// operation when it is called, so a phase's wall-clock time is the time of its operations.
pub fn profile_training_step(config: &BenchConfig, device: &Device) -> StepProfile {
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::GradientsParams;

    use crate::kernels::profile::{self, Pass};
    use crate::kernels::Kernel;

    let device = device.clone().autodiff();
    let mut model = Network::seeded(config.model, 0, &device);
    let mut optim = optimizer();
    let data = RandomBatch::new(config.batch_size, config.size, 0);
    let mut phases = [("forward (with loss)", 0.0), ("backward", 0.0), ("optimizer (Adam)", 0.0)];
    let mut kernel_times: std::collections::BTreeMap<(Kernel, Pass), f64> = Default::default();
    for i in 0..config.warmup + config.steps {
        let timed = i >= config.warmup;
        profile::set_enabled(timed);
        let batch = data.to_device(&device);
        let start = Instant::now();
        let logits = model.forward(batch.images);
        let loss = CrossEntropyLossConfig::new().init(&device).forward(logits, batch.labels);
        let _ = loss.clone().into_scalar::<f64>();
        let forward = start.elapsed().as_secs_f64();
        let grads = loss.backward();
        // A GPU backend only queues the work: wait for it, so each phase is timed on its own.
        let _ = device.sync();
        let backward = start.elapsed().as_secs_f64();
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(1e-3, model, grads);
        let _ = device.sync();
        let total = start.elapsed().as_secs_f64();
        profile::set_enabled(false);
        if timed {
            for (slot, t) in phases.iter_mut().zip([forward, backward - forward, total - backward]) {
                slot.1 += t;
            }
            for (kernel_pass, (time, _)) in profile::take() {
                *kernel_times.entry(kernel_pass).or_default() += time.as_secs_f64();
            }
        }
        let _ = profile::take();
    }
    let steps = config.steps.max(1) as f64;
    let phase_of = |pass| match pass {
        Pass::Backward => "backward",
        Pass::Update => "optimizer (Adam)",
        Pass::Forward | Pass::Evaluation => "forward (with loss)",
    };
    StepProfile {
        steps: config.steps,
        phases: phases.iter().map(|(n, t)| (n.to_string(), t / steps)).collect(),
        kernels: kernel_times
            .into_iter()
            .map(|((kernel, pass), t)| (profile::label(kernel, pass), phase_of(pass).to_string(), t / steps))
            .collect(),
    }
}
