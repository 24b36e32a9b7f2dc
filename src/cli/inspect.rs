//! `deepcnn eval` and `deepcnn predict`: using a saved run.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, ensure};
use burn::module::Module;
use clap::Args;

use super::{positive, DataArgs, DeviceArgs};
use crate::checkpoint::RunDir;
use crate::data::idx::read_images;
use crate::data::image_file::read_image;
use crate::data::{batcher::shuffled, Batcher, FashionMnist};
use crate::predict::top_k;
use crate::report::write_eval_report;
use crate::train::{evaluate_report, precise_bn::precise_batch_norm};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A run directory (from `train --out` or `import`).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Print JSON (keys: accuracy, loss, per_class, confusion, examples).
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 256, value_parser = positive, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// First recompute batch normalization's statistics from N training batches of the run's
    /// batch size ("precise BN", as `train --precise-bn`). The run directory is not changed.
    #[arg(long, value_name = "N", value_parser = positive, allow_negative_numbers = true)]
    pub precise_bn: Option<usize>,
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
    let mut model = run.load_network(&record, &device)?;
    let test = FashionMnist::load_test(&args.data.data_dir)?;
    let batcher = Batcher::new(Some(record.config.image_size()), &device);
    if let Some(batches) = args.precise_bn {
        let train = FashionMnist::load_train(&args.data.data_dir)?;
        let order = shuffled(train.len(), record.config.seed);
        // The run's batch size, as in training: batch statistics depend on it.
        let images = batcher.batches(&train, &order, record.config.batch_size).take(batches).map(|batch| batch.images);
        model = precise_batch_norm(model, images).valid();
    }
    let report = evaluate_report(&model, &test, &batcher, args.batch_size);
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        let statistics = match args.precise_bn {
            Some(n) => format!("; batch normalization statistics from {n} training batches"),
            None => String::new(),
        };
        writeln!(out, "{} after {} epochs ({}){statistics}", record.config.model, record.epochs_done, args.checkpoint.display())?;
        write_eval_report(&report, out)?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A run directory (from `train --out` or `import`).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// PNG or JPEG files (any size and colour; converted to 28×28 greyscale).
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
    let mut names = Vec::new();
    let mut pixels = Vec::new();
    for path in &args.images {
        pixels.push(read_image(path, 28, args.invert)?);
        names.push(path.display().to_string());
    }
    if let (Some(file), Some(i)) = (&args.idx, args.index) {
        let images = read_images(file)?;
        if i >= images.count {
            bail!("{}: --index {i} is out of range (the file has {} images)", file.display(), images.count);
        }
        if [images.rows, images.cols] != [28, 28] {
            bail!("{}: images are {}×{}, not Fashion-MNIST's 28×28", file.display(), images.rows, images.cols);
        }
        pixels.push(images.pixels[i * 784..(i + 1) * 784].to_vec());
        names.push(format!("{}[{i}]", file.display()));
    }
    let device = args.device.open()?;
    let (run, record) = RunDir::open(&args.checkpoint)?;
    let model = run.load_network(&record, &device)?;
    let guesses = top_k(&model, &pixels, record.config.image_size(), args.top_k, &device);
    for (name, guesses) in names.iter().zip(guesses) {
        let list: Vec<String> = guesses.iter().map(|g| format!("{} {:.3}", g.class, g.probability)).collect();
        writeln!(out, "{name}: {}", list.join(", "))?;
    }
    Ok(())
}
