//! The same training on the CPU and on a Vulkan device gives the same numbers, to float
//! rounding. It runs where this build has the `vulkan` feature and Vulkan finds a device (a GPU,
//! or Mesa's lavapipe on the CPU: Debian's `mesa-vulkan-drivers`); elsewhere it says why it
//! skipped and passes.

use std::io::Write;

use burn::module::Module;
use burn::prelude::*;
use deepcnn::bench::RandomBatch;
use deepcnn::device::ComputeDevice;
use deepcnn::models::ModelKind;
use deepcnn::train::{optimizer, seeded_network, train_step};

/// Written past the test harness's capture of `println!`, so the reason shows without
/// `--nocapture`.
fn say_skipped(reason: &str) {
    let _ = writeln!(std::io::stderr(), "vulkan test skipped: {reason}");
}

fn vulkan_or_skip() -> Option<Device> {
    match ComputeDevice::Vulkan.open() {
        Ok(device) => Some(device),
        Err(e) => {
            say_skipped(&e.to_string());
            None
        }
    }
}

/// Losses of `steps` training steps of a seeded `kind` network on the same batch, and the
/// evaluation-mode logits after them.
fn train_on(kind: ModelKind, device: &Device, batch: &RandomBatch, steps: usize) -> (Vec<f64>, Vec<f32>) {
    let device = device.clone().autodiff();
    // The same seed gives the same weights on every device (they are drawn on the CPU).
    let mut model = seeded_network(kind, 0, &device);
    let mut optim = optimizer();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let (next, out) = train_step(model, &mut optim, batch.to_device(&device), 1e-3);
        losses.push(out.read().0);
        model = next;
    }
    let plain = device.clone().without_autodiff();
    let logits = model.valid().forward(batch.to_device(&plain).images);
    (losses, logits.into_data().convert::<f32>().try_to_vec::<f32>().unwrap())
}

#[test]
fn a_seeded_lenet_bn_trains_the_same_on_cpu_and_vulkan() {
    let Some(vulkan) = vulkan_or_skip() else { return };
    let batch = RandomBatch::new(32, 28, 0);
    let (cpu_losses, cpu_logits) = train_on(ModelKind::LeNetBn, &Device::flex(), &batch, 3);
    let (gpu_losses, gpu_logits) = train_on(ModelKind::LeNetBn, &vulkan, &batch, 3);
    for (step, (c, g)) in cpu_losses.iter().zip(&gpu_losses).enumerate() {
        assert!((c - g).abs() <= 1e-4 * c.abs().max(1.0), "step {}: loss {c} on the CPU, {g} on Vulkan", step + 1);
    }
    assert!(cpu_losses[2] < cpu_losses[0], "the steps trained: {cpu_losses:?}");
    let worst = cpu_logits.iter().zip(&gpu_logits).map(|(c, g)| (c - g).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-3, "evaluation-mode logits differ by up to {worst}");
}
