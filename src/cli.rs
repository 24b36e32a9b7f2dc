//! The `deepcnn` command line: flags are parsed and checked here, the work is done by the
//! library.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use burn::prelude::*;
use clap::{Args, Parser, Subcommand};

use crate::data::{FashionMnist, DEFAULT_DATA_DIR};
use crate::models::{ModelKind, Network};
use crate::nn::LayerRow;
use crate::train::{self, TrainConfig};

#[derive(Debug, Parser)]
#[command(name = "deepcnn", version, about = "Batch normalization, ResNet-18 and DenseNet on Fashion-MNIST")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a network on Fashion-MNIST and print one line of metrics per epoch.
    Train(TrainArgs),
    /// Print each top-level layer's output shape and parameter count, as the book does.
    Summary(SummaryArgs),
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// lenet, lenet-bn-scratch, lenet-bn, resnet18 or densenet.
    #[arg(long)]
    pub model: ModelKind,
    #[arg(long, default_value_t = 5, value_parser = positive, allow_negative_numbers = true)]
    pub epochs: usize,
    #[arg(long, default_value_t = 256, value_parser = positive, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 0.001, value_parser = learning_rate, allow_negative_numbers = true)]
    pub lr: f64,
    /// Resize images to S×S (bilinear). Default: 28, or 96 for densenet (the book's size).
    #[arg(long, value_name = "S", value_parser = positive, allow_negative_numbers = true)]
    pub resize: Option<usize>,
    /// Seed for weight initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on the first N training examples only (the test set stays whole).
    #[arg(long, value_name = "N", value_parser = positive, allow_negative_numbers = true)]
    pub limit: Option<usize>,
    /// Directory with the Fashion-MNIST IDX files (raw or .gz).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    #[arg(long)]
    pub model: ModelKind,
    /// Input height and width. Default: the book's (28 for LeNet, 224 for resnet18, 96 for densenet).
    #[arg(long, value_name = "S", value_parser = positive, allow_negative_numbers = true)]
    pub input: Option<usize>,
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("'{s}' is not a positive whole number")),
    }
}

fn learning_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

/// Runs a parsed command, writing its report to `out`.
pub fn run(cli: Cli, out: &mut impl Write) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => run_train(args, out),
        Command::Summary(args) => run_summary(args, out),
    }
}

fn run_train(args: TrainArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let config = TrainConfig {
        model: args.model,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        resize: args.resize,
        seed: args.seed,
        limit: args.limit,
    };
    // Check the flags before spending time on loading data.
    config.validate()?;
    let data = FashionMnist::load(&args.data_dir)?;
    let n_train = config.train_len(data.train.len());
    let size = config.image_size();
    writeln!(
        out,
        "training {} on {n_train} images ({size}×{size}), testing on {}; batch {}, lr {}, {} epochs, seed {}",
        config.model,
        data.test.len(),
        config.batch_size,
        config.lr,
        config.epochs,
        config.seed
    )?;
    let mut write_error = None;
    train::train(&config, &data, &Device::flex(), |metrics| {
        if let Err(e) = writeln!(out, "{metrics}").and_then(|_| out.flush()) {
            write_error.get_or_insert(e);
        }
    })?;
    write_error.map_or(Ok(()), |e| Err(e).context("writing the report"))
}

fn run_summary(args: SummaryArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let size = args.input.unwrap_or(args.model.default_summary_size());
    args.model.check_input(size)?;
    let rows = Network::new(args.model, &Device::flex().autodiff()).summary(size);
    write_summary(&rows, out)?;
    Ok(())
}

fn write_summary(rows: &[LayerRow], out: &mut impl Write) -> std::io::Result<()> {
    let total: usize = rows.iter().map(|r| r.params).sum();
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(5);
    writeln!(out, "{:width$}  {:<22} {:>10}", "layer", "output shape", "params")?;
    for row in rows {
        let shape: Vec<String> = row.shape.iter().map(usize::to_string).collect();
        writeln!(out, "{:width$}  {:<22} {:>10}", row.name, format!("[{}]", shape.join(", ")), row.params)?;
    }
    writeln!(out, "total trainable parameters: {total}")
}
