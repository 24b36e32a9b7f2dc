//! `deepcnn bench`: images per second of the training step, on random data.

use std::io::Write;

use anyhow::Context;
use clap::Args;

use super::{positive, DeviceArgs};
use crate::bench::{bench_training_step, profile_training_step, BenchConfig, StepProfile};
use crate::device::describe_gpu;
use crate::kernels::{onednn, set_kernel_enabled, Kernel};
use crate::memory;
use crate::models::ModelKind;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, help = super::model_names(), required_unless_present = "peak")]
    pub model: Option<ModelKind>,
    #[arg(long, default_value_t = 256, value_parser = positive, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Input height and width. Default: the network's training size (28; 96 for densenet).
    #[arg(long, value_name = "S", value_parser = positive, allow_negative_numbers = true)]
    pub input: Option<usize>,
    /// Timed steps.
    #[arg(long, default_value_t = 20, value_parser = positive, allow_negative_numbers = true)]
    pub steps: usize,
    /// Untimed steps before them.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Print one JSON object (every step time) instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Use burn's own operations instead of deepcnn's kernels for these (comma-separated:
    /// conv, batch-norm, sigmoid, adam, max-pool, avg-pool), to measure what each kernel brings.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KERNELS")]
    pub burn_ops: Vec<Kernel>,
    /// Also break the step down: forward, backward and optimizer, and within them the time in
    /// deepcnn's kernels (convolution, batch normalization, sigmoid, max pooling, Adam) and in all
    /// other operations.
    #[arg(long)]
    pub profile: bool,
    /// Time oneDNN's matrix product (2048³ on all threads, fp32 and bf16) instead of a network:
    /// the machine's peak GFLOP/s, which the convolutions' GFLOP/s can be read against.
    #[arg(long, conflicts_with_all = ["model", "profile", "burn_ops"])]
    pub peak: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: BenchArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let Some(model) = args.model else { return peak(args.json, out) };
    let size = args.input.unwrap_or(model.default_train_size());
    model.check_input(size).map_err(|e| e.for_flag(Some("--input")))?;
    memory::check(
        || format!("training {model} with batch {} at {size}×{size}", args.batch_size),
        model.training_memory(args.batch_size, size),
        "use a smaller --batch-size or --input",
    )?;
    let config = BenchConfig { model, batch_size: args.batch_size, size, steps: args.steps, warmup: args.warmup };
    for &kernel in &args.burn_ops {
        set_kernel_enabled(kernel, false);
    }
    let device = args.device.open()?;
    let gpu = describe_gpu(&device);
    if let Some(gpu) = &gpu {
        eprintln!("GPU: {gpu}");
    }
    // Warm-up steps on stderr as they end: on a GPU the first ones compile and autotune
    // kernels for a minute or more, and this shows that the run is alive.
    let warmup = config.warmup;
    let report = bench_training_step(&config, &device, |i, seconds| {
        if i < warmup {
            eprintln!("warm-up step {} of {warmup}: {:.2} s", i + 1, seconds);
        }
    });
    if args.json {
        let mut value = serde_json::to_value(&report).context("serialising the report")?;
        value["median_seconds"] = report.median_seconds().into();
        value["images_per_sec"] = report.images_per_sec().into();
        value["burn_ops"] = format!("{:?}", args.burn_ops).into();
        value["device"] = args.device.device.to_string().into();
        if let Some(gpu) = gpu {
            value["gpu"] = gpu.into();
        }
        value["threads"] = std::thread::available_parallelism().map_or(1, |n| n.get()).into();
        value["conv_gflops"] = report.conv_gflops().into();
        writeln!(out, "{value}")?;
        return Ok(());
    }
    let (min, max) = report.step_seconds.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    writeln!(
        out,
        "{} on {}: training step (forward, cross-entropy, backward, Adam), batch {}, {size}×{size}, {} steps after {} warm-up{}",
        model,
        args.device.device,
        args.batch_size,
        args.steps,
        args.warmup,
        match args.burn_ops.is_empty() {
            true => String::new(),
            false => format!(", burn's own {:?}", args.burn_ops),
        }
    )?;
    writeln!(
        out,
        "median step {:.1} ms (min {:.1}, max {:.1}), {:.0} images/s",
        report.median_seconds() * 1e3,
        min * 1e3,
        max * 1e3,
        report.images_per_sec()
    )?;
    if let (Some(per_image), Some(rate)) = (report.conv_gflop_per_image, report.conv_gflops()) {
        writeln!(
            out,
            "convolutions: {per_image:.4} GFLOP per image (forward, ∂X, ∂W), {rate:.0} GFLOP/s over the step"
        )?;
    }
    if args.profile {
        write_profile(&profile_training_step(&config, &device), out)?;
    }
    Ok(())
}

/// `bench --peak`: oneDNN's GEMM in fp32 and, where the CPU has bf16 instructions, bf16.
fn peak(json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    const N: usize = 2048;
    let fp32 = onednn::gemm_gflops(N, false, 5)?;
    // Where oneDNN has no bf16 kernels its reference code would run: not a peak.
    let bf16 = onednn::has_bf16_kernels().then(|| onednn::gemm_gflops(N, true, 5)).transpose()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if json {
        let value = serde_json::json!({ "gemm_size": N, "threads": threads, "fp32_gflops": fp32, "bf16_gflops": bf16 });
        writeln!(out, "{value}")?;
        return Ok(());
    }
    writeln!(out, "oneDNN matrix product {N}³ on {threads} threads: fp32 {fp32:.0} GFLOP/s")?;
    match bf16 {
        Some(bf16) => writeln!(out, "bf16 inputs, f32 output: {bf16:.0} GFLOP/s")?,
        None => writeln!(out, "bf16: oneDNN has no bf16 kernels on this CPU")?,
    }
    Ok(())
}

fn write_profile(profile: &StepProfile, out: &mut impl Write) -> std::io::Result<()> {
    let total: f64 = profile.phases.iter().map(|(_, t)| t).sum();
    let line = |out: &mut dyn Write, indent: &str, name: &str, t: f64| {
        writeln!(out, "{indent}{name:<w$} {:>9.2} ms {:>5.1}%", t * 1e3, 100.0 * t / total, w = 34 - indent.len())
    };
    writeln!(out, "\nprofile: mean per step over {} steps (each phase timed separately)", profile.steps)?;
    for (phase, t) in &profile.phases {
        line(out, "", phase, *t)?;
        let mut inside = 0.0;
        for (kernel, kernel_phase, kt) in &profile.kernels {
            if kernel_phase == phase {
                line(out, "  ", kernel, *kt)?;
                inside += kt;
            }
        }
        if inside > 0.0 {
            line(out, "  ", "other operations", t - inside)?;
        }
    }
    line(out, "", "step", total)
}
