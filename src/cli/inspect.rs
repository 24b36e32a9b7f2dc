//! `deepcnn eval` and `deepcnn predict`: using a saved run.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure};
use burn::module::Module;
use clap::Args;

use super::progress::images_bar;
use super::{positive, DataArgs, DeviceArgs};
use crate::checkpoint::RunDir;
use crate::data::idx::read_images;
use crate::data::image_file::read_image;
use crate::data::{batcher::shuffled, Batcher};
use crate::memory::{self, MemoryError};
use crate::models::ModelKind;
use crate::predict::top_k;
use crate::report::{plural, write_eval_report};
use crate::train::{evaluate_report, precise_bn::precise_batch_norm, TrainError};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A run directory (from `train --out` or `import`).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Print JSON (keys: accuracy, loss, per_class, confusion, examples, mistakes: the 16 most
    /// confident wrong answers).
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 256, value_parser = positive, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// First recompute batch normalization's statistics from N training batches of the run's
    /// batch size ("precise BN", as `train --precise-bn`). The run directory is not changed.
    #[arg(long, value_name = "N", value_parser = positive, allow_negative_numbers = true)]
    pub precise_bn: Option<usize>,
    #[command(flatten)]
    pub weights: super::WeightsArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn eval(args: EvalArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let (run, record) = RunDir::open(&args.checkpoint)?;
    let model_kind = record.config.model;
    // Refused before any loading, as train refuses it before reading data.
    ensure!(
        args.precise_bn.is_none() || model_kind.has_batch_norm(),
        "{model_kind} has no batch normalization, so --precise-bn has nothing to recompute"
    );
    let size = record.config.image_size();
    let test = args.data.load(size, true, record.config.test_split)?.0.test;
    record.config.check_classes(&test)?;
    if test.is_empty() {
        bail!(TrainError::NoTestData);
    }
    check_inference_memory(model_kind, args.batch_size.min(test.len()), size, "use a smaller --batch-size")?;
    let train = match args.precise_bn {
        Some(_) => {
            // The training images the run trained on (its --limit), in batches of its size.
            let train = args.data.load(size, false, record.config.test_split)?.0.train;
            let n_train = record.config.train_len(train.len());
            if n_train == 0 {
                bail!("the training set is empty: precise BN needs training batches");
            }
            let batch = record.config.batch_size.min(n_train);
            // Precise BN runs the forward pass in training mode, which keeps every layer's output.
            memory::check(
                || format!("precise BN of {model_kind} with batch {batch} at {size}×{size}"),
                model_kind.training_memory(batch, size),
                "precise BN takes the run's batch size, from its run.json",
            )?;
            Some((train, n_train))
        }
        None => None,
    };
    let mut model = run.load_weights(&record, &device, args.weights.weights())?;
    let batcher = Batcher::new(Some(size), &device);
    let mut statistics = String::new();
    if let (Some(asked), Some((train, n_train))) = (args.precise_bn, &train) {
        let order = shuffled(*n_train, record.config.seed);
        // The run's batch size, as in training: batch statistics depend on it.
        let batches = asked.min(n_train.div_ceil(record.config.batch_size));
        let images = batcher.batches(train, &order, record.config.batch_size).take(batches).map(|batch| batch.images);
        model = precise_batch_norm(model, images).valid();
        statistics =
            format!("; batch normalization statistics from {}", plural(batches, "training batch", "training batches"));
        if batches < asked {
            statistics += &format!(" (all there are; {asked} asked)");
        }
    }
    // On a terminal (standard error), a bar: ResNet-18's 10,000 test images take seconds,
    // DenseNet's at 96×96 most of a minute.
    let bar = images_bar(test.len(), "testing");
    let report = evaluate_report(&model, &test, &batcher, args.batch_size, &mut |n| bar.inc(n as u64));
    bar.finish_and_clear();
    if !report.loss.is_finite() {
        bail!("the test loss is {}: the network's outputs are not finite numbers (the run diverged?)", report.loss);
    }
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        let [rows, cols] = test.image_size();
        let resized = if [rows, cols] != [size, size] {
            format!("; test images {rows}×{cols}, resized to {size}×{size}")
        } else {
            String::new()
        };
        writeln!(
            out,
            "{} after {} ({}){statistics}{resized}",
            record.config.model,
            plural(record.epochs_done, "epoch", "epochs"),
            args.checkpoint.display()
        )?;
        write_eval_report(&report, out)?;
    }
    Ok(())
}

/// Refuses an evaluation whose forward pass would need more memory than the machine has.
fn check_inference_memory(model: ModelKind, batch: usize, size: usize, hint: &'static str) -> Result<(), MemoryError> {
    memory::check(
        || format!("evaluating {model} with batch {batch} at {size}×{size}"),
        model.inference_memory(batch, size),
        hint,
    )
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A run directory (from `train --out` or `import`).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub weights: super::WeightsArgs,
    /// PNG or JPEG files (any size and colour; converted to the run's image size, in grey or
    /// colour as it was trained).
    #[arg(value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// An IDX image file (raw or .gz) to take an image from, with --index.
    #[arg(long, value_name = "FILE", requires = "index")]
    pub idx: Option<PathBuf>,
    /// Which image of --idx (0-based).
    #[arg(long, value_name = "I", requires = "idx")]
    pub index: Option<usize>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 3, value_parser = positive, allow_negative_numbers = true)]
    pub top_k: usize,
    /// Invert the image files (for dark objects on a light background; Fashion-MNIST is the
    /// other way round).
    #[arg(long)]
    pub invert: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn predict(args: PredictArgs, out: &mut impl Write) -> anyhow::Result<()> {
    if args.images.is_empty() && args.idx.is_none() {
        bail!("give image files, or --idx FILE --index I");
    }
    // The run first: without it nothing can be predicted, and its errors concern every image.
    let device = args.device.open()?;
    let (run, record) = RunDir::open(&args.checkpoint)?;
    let size = record.config.image_size();
    // Images are predicted one at a time.
    check_inference_memory(record.config.model, 1, size, "the run's image size is in its run.json")?;
    let model = run.load_weights(&record, &device, args.weights.weights())?;
    // Each image on its own: a file that cannot be read is reported, and the others still are.
    // The last failure is the command's error; those before it are printed as they happen.
    let mut failed: Option<anyhow::Error> = None;
    let mut fail = |e: anyhow::Error| {
        if let Some(earlier) = failed.replace(e) {
            eprintln!("error: {}", super::error_line(&earlier));
        }
    };
    let (channels, classes) = (record.config.channels, record.config.classes());
    let predict_one = |name: String, pixels: Vec<u8>, [rows, cols]: [usize; 2], out: &mut dyn Write| {
        let guesses = top_k(&model, &[pixels], [rows, cols], size, args.top_k, &classes, &device).remove(0);
        let list: Vec<String> = guesses.iter().map(|g| format!("{} {:.3}", g.class, g.probability)).collect();
        writeln!(out, "{name}: {}", list.join(", "))
    };
    for path in &args.images {
        match read_image(path, size as u32, channels, args.invert) {
            Ok(pixels) => predict_one(path.display().to_string(), pixels, [size, size], out)?,
            Err(e) => fail(e.into()),
        }
    }
    if let (Some(file), Some(i)) = (&args.idx, args.index) {
        match idx_image(file, i) {
            Ok((grey, [rows, cols])) => {
                // IDX images are grey: a colour network sees them in all three planes.
                let pixels = grey.repeat(channels);
                // Any size, resized to the network's input, as training resizes its data.
                let name = match [rows, cols] == [size, size] {
                    true => format!("{}[{i}]", file.display()),
                    false => format!("{}[{i}] ({rows}×{cols}, resized to {size}×{size})", file.display()),
                };
                predict_one(name, pixels, [rows, cols], out)?
            }
            Err(e) => fail(e),
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Image `i` of an IDX file, with its height and width.
fn idx_image(file: &Path, i: usize) -> anyhow::Result<(Vec<u8>, [usize; 2])> {
    let images = read_images(file)?;
    if i >= images.count {
        bail!(
            "{}: --index {i} is out of range (the file has {})",
            file.display(),
            plural(images.count, "image", "images")
        );
    }
    let n = images.rows * images.cols;
    Ok((images.pixels[i * n..(i + 1) * n].to_vec(), [images.rows, images.cols]))
}
