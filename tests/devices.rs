//! The same training on different backends gives the same numbers, to float rounding.
//!
//! - burn's ndarray backend (`--features second-backend`) runs burn's own operations, the
//!   fallbacks that every non-CPU device takes instead of deepcnn's kernels, and the network
//!   moves to it from the CPU, where its weights are drawn: the path of `--device vulkan`,
//!   tested without a GPU. Without the feature these tests say so and pass.
//! - Vulkan itself, where this build has the `vulkan` feature and Vulkan finds a device;
//!   elsewhere the test says why it skipped and passes. Without a GPU, `tests/lavapipe/run.sh`
//!   runs it on Mesa's lavapipe (a CPU Vulkan driver), with a fix to CubeCL that lavapipe needs.

use std::io::Write;

use burn::module::Module;
use burn::optim::SgdConfig;
use burn::prelude::*;
use deepcnn::bench::RandomBatch;
use deepcnn::device::{describe_gpu, ComputeDevice};
use deepcnn::models::{ModelKind, Network};
use deepcnn::train::{optimizer, train_step, StepOptions};

/// Written past the test harness's capture of `eprintln!`, so it shows.
fn say_skipped(reason: &str) {
    let _ = writeln!(std::io::stderr(), "skipped: {reason}");
}

/// burn's ndarray backend: deprecated in burn 0.22 in favour of flex, but still the one other
/// pure-Rust backend that builds here, and all these tests need is a second backend.
#[allow(deprecated)]
fn second_backend() -> Option<Device> {
    #[cfg(feature = "second-backend")]
    return Some(Device::ndarray());
    #[cfg(not(feature = "second-backend"))]
    {
        say_skipped("the second-backend tests need `cargo test --features second-backend`");
        None
    }
}

/// Which optimizer the steps take.
#[derive(Clone, Copy)]
enum Optim {
    /// The book's Adam (deepcnn's one-pass kernel on the CPU, burn's Adam elsewhere).
    Adam,
    /// Plain SGD: Adam's first step moves every weight by about ±lr whatever the size of its
    /// gradient, so a gradient that is zero up to rounding turns into an lr-sized difference.
    /// In a deep network there are such gradients, and SGD keeps them small.
    Sgd,
}

/// Losses of `steps` training steps of a seeded `kind` network on the same batch, and the
/// evaluation-mode logits after them.
fn train_on(kind: ModelKind, device: &Device, batch: &RandomBatch, steps: usize, optim: Optim) -> (Vec<f64>, Vec<f32>) {
    let device = device.clone().autodiff();
    // The same seed gives the same weights on every device (they are drawn on the CPU).
    let mut model = Network::seeded(kind, 0, &device);
    let (mut optim, lr) = match optim {
        Optim::Adam => (optimizer(), 1e-3),
        Optim::Sgd => (SgdConfig::new().init(), 0.01),
    };
    let mut losses = Vec::new();
    for _ in 0..steps {
        let (next, out) = train_step(model, &mut optim, batch.to_device(&device), lr, StepOptions::default());
        losses.push(out.read().0);
        model = next;
    }
    let plain = device.clone().without_autodiff();
    let logits = model.valid().forward(batch.to_device(&plain).images);
    (losses, logits.into_data().convert::<f32>().try_to_vec::<f32>().unwrap())
}

/// `steps` training steps of a seeded `kind` network on a random batch give the same losses, and
/// then the same evaluation-mode logits, on the CPU and on `other`.
fn assert_same_training(kind: ModelKind, optim: Optim, steps: usize, other: &Device, batch_size: usize, size: usize) {
    let batch = RandomBatch::new(batch_size, size, 0);
    let (cpu_losses, cpu_logits) = train_on(kind, &Device::flex(), &batch, steps, optim);
    let (other_losses, other_logits) = train_on(kind, other, &batch, steps, optim);
    for (step, (c, o)) in cpu_losses.iter().zip(&other_losses).enumerate() {
        assert!(
            (c - o).abs() <= 1e-4 * c.abs().max(1.0),
            "{kind} step {}: loss {c} on the CPU, {o} on {other:?}",
            step + 1
        );
    }
    assert!(cpu_losses[steps - 1] < cpu_losses[0], "{kind}: the steps trained: {cpu_losses:?}");
    let worst = cpu_logits.iter().zip(&other_logits).map(|(c, o)| (c - o).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-3, "{kind}: evaluation-mode logits differ by up to {worst}");
    let _ = writeln!(std::io::stderr(), "{kind}: losses {cpu_losses:?} on the CPU, {other_losses:?} on {other:?}; evaluation-mode logits within {worst:e}");
}

#[test]
fn networks_train_the_same_with_burns_own_operations_on_another_backend() {
    let Some(other) = second_backend() else { return };
    assert_same_training(ModelKind::LeNetBn, Optim::Adam, 3, &other, 32, 28);
    assert_same_training(ModelKind::LeNetBnScratch, Optim::Adam, 3, &other, 32, 28);
    // Two steps: a batch of 8 random images is memorised fast (loss 2.4, 1.8, then 0.6), and
    // from the third step on, rounding differences grow about twentyfold a step.
    assert_same_training(ModelKind::ResNet18, Optim::Sgd, 2, &other, 8, 16);
}

#[test]
fn a_seeded_lenet_bn_trains_the_same_on_cpu_and_vulkan() {
    let vulkan = match ComputeDevice::Vulkan.open() {
        Ok(device) => device,
        Err(e) => {
            say_skipped(&format!("vulkan: {e}"));
            return;
        }
    };
    let gpu = describe_gpu(&vulkan).expect("a Vulkan device describes itself");
    assert!(gpu.contains("f32") && gpu.contains("cooperative matrices"), "{gpu}");
    println!("vulkan: {gpu}");
    assert_same_training(ModelKind::LeNetBn, Optim::Adam, 3, &vulkan, 32, 28);
    assert_same_training(ModelKind::ResNet18, Optim::Sgd, 2, &vulkan, 8, 16);
}

#[test]
fn the_training_loop_gives_the_same_epochs_on_another_backend() {
    let Some(other) = second_backend() else { return };
    use deepcnn::data::{synthetic::two_class_dataset, FashionMnist};
    use deepcnn::train::{train, OnEpoch, TrainConfig, TrainState};

    let data = FashionMnist { train: two_class_dataset(96, 1), test: two_class_dataset(40, 2) };
    // 96 images in batches of 32: 3 steps an epoch, then the test set in evaluation mode, with
    // the moving averages and with precise BN's statistics.
    for precise_bn in [0, 2] {
        let config =
            TrainConfig { epochs: 2, batch_size: 32, precise_bn, ..TrainConfig::new(ModelKind::LeNetBnScratch) };
        let run = |device: &Device| {
            let state = TrainState::fresh(&config, device);
            train(&config, &data, device, state, &mut OnEpoch(|_| {})).unwrap().history
        };
        let (on_cpu, on_other) = (run(&Device::flex()), run(&other));
        for (c, o) in on_cpu.iter().zip(&on_other) {
            let epoch = format!("epoch {}, precise BN {precise_bn}", c.epoch);
            assert!((c.loss - o.loss).abs() <= 1e-5, "{epoch}: loss {} on the CPU, {} on ndarray", c.loss, o.loss);
            assert_eq!((c.train_accuracy, c.test_accuracy), (o.train_accuracy, o.test_accuracy), "{epoch}");
        }
    }
}
