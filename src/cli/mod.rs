//! The `deepcnn` command line: flags are parsed and checked here, the work is done by the
//! library. One file per group of commands.

mod bench;
mod inspect;
mod progress;
mod report;
mod runs;
mod train;

use std::io::Write;
use std::path::PathBuf;

use burn::prelude::*;
use clap::{Args, Parser, Subcommand};

use crate::data::{FashionMnist, Source, DEFAULT_DATA_DIR};
use crate::device::{ComputeDevice, Precision};
use crate::models::{ModelKind, NetworkShape};
use crate::nn::LayerRow;

pub use bench::BenchArgs;
pub use inspect::{EvalArgs, PredictArgs};
pub use report::ReportArgs;
pub use runs::{ExportArgs, ImportArgs, PlotArgs};
pub use train::TrainArgs;

#[derive(Debug, Parser)]
#[command(name = "deepcnn", version, about = "Batch normalization, ResNet-18 and DenseNet on Fashion-MNIST")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a network (or resume a run) and print one line of metrics per epoch.
    Train(Box<TrainArgs>),
    /// Test loss, accuracy, per-class accuracy and confusion matrix of a saved run.
    Eval(EvalArgs),
    /// The most likely classes of images (PNG/JPEG files, or an image of an IDX file).
    Predict(PredictArgs),
    /// Draw the training curves of one run, or overlay several.
    Plot(PlotArgs),
    /// Write a run (or several) as one HTML page: curves, settings, confusion matrix, per-class
    /// accuracy, the most confident mistakes, the layers.
    Report(ReportArgs),
    /// Turn a PyTorch state_dict of the book's network into a deepcnn run directory.
    Import(ImportArgs),
    /// Write a run's weights for PyTorch (the book's module names) or as an ONNX model.
    Export(ExportArgs),
    /// Print each top-level layer's output shape and parameter count, as the book does.
    Summary(SummaryArgs),
    /// Time the training step on random data (images/s), e.g. to compare with PyTorch.
    Bench(BenchArgs),
}

/// Which of a run's networks a command uses: the last epoch's, unless one of these.
#[derive(Debug, Args)]
pub struct WeightsArgs {
    /// The run's moving average of the weights (a run trained with --ema).
    #[arg(long, conflicts_with = "best")]
    pub ema: bool,
    /// The network of the run's best epoch by validation accuracy (a run trained with --val-split).
    #[arg(long)]
    pub best: bool,
}

impl WeightsArgs {
    pub fn weights(&self) -> crate::checkpoint::Weights {
        use crate::checkpoint::Weights;
        match (self.ema, self.best) {
            (true, _) => Weights::Ema,
            (_, true) => Weights::Best,
            _ => Weights::Last,
        }
    }
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    #[arg(long, help = model_names())]
    pub model: ModelKind,
    /// Input height and width. Default: the size the book prints the network at (28 for LeNet, 224 for resnet18, 96 for densenet).
    #[arg(long, value_name = "S", value_parser = positive, allow_negative_numbers = true)]
    pub input: Option<usize>,
}

/// `--device` and `--precision`, shared by the commands that compute.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Where to compute: the CPU, or a GPU through Vulkan (in a build with `--features vulkan`).
    #[arg(long, value_enum, default_value_t = ComputeDevice::Cpu)]
    pub device: ComputeDevice,
    /// fp32, or bf16: convolutions in bf16 with f32 accumulation (weights, optimizer, batch
    /// normalization and checkpoints stay f32), on a CPU with AVX512_BF16 or AMX.
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
}

impl DeviceArgs {
    pub fn open(&self) -> anyhow::Result<Device> {
        self.precision.apply(self.device)?;
        Ok(self.device.open()?)
    }
}

/// `--data-dir` and `--skip-bad`, shared by the commands that read data.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Directory with the Fashion-MNIST IDX files (raw or .gz), or image folders:
    /// DIR/train/<class>/*.png|jpg and DIR/test/<class>/* (classes from the folder names), or
    /// one class tree DIR/<class>/* (train with --val-split F to hold out a test set).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Leave unreadable image files out (counted in the header line) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
}

impl DataArgs {
    /// The data directory's splits at `size`×`size` (image folders are decoded at that size,
    /// with a bar counting the files on a terminal; one class tree's test set is `test_split`
    /// of each class); with `test_only` the training split is left empty.
    pub fn load(
        &self,
        size: usize,
        test_only: bool,
        test_split: Option<f64>,
    ) -> anyhow::Result<(FashionMnist, Source)> {
        let bar = progress::images_bar(0, "loading");
        let loaded = crate::data::load(&self.data_dir, size, self.skip_bad, test_only, test_split, &bar);
        bar.finish_and_clear();
        Ok(loaded?)
    }
}

impl crate::data::LoadProgress for indicatif::ProgressBar {
    fn started(&self, files: usize) {
        self.set_length(files as u64);
    }

    fn decoded(&self) {
        self.inc(1);
    }
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
            Err(format!("{s} is too large (at most {})", usize::MAX))
        }
        Err(_) => Err(format!("'{s}' is not a positive whole number")),
    }
}

fn positive_number(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

fn non_negative_number(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a number ≥ 0")),
    }
}

/// The error and each of its causes, once: a cause whose text the message already holds is
/// not repeated. One line, whatever the causes' own line breaks.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Runs a parsed command, writing its report to `out`.
pub fn run(cli: Cli, out: &mut impl Write) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train::run(*args, out),
        Command::Eval(args) => inspect::eval(args, out),
        Command::Predict(args) => inspect::predict(args, out),
        Command::Plot(args) => runs::plot(args, out),
        Command::Report(args) => report::report(args, out),
        Command::Import(args) => runs::import(args, out),
        Command::Export(args) => runs::export(args, out),
        Command::Summary(args) => summary(args, out),
        Command::Bench(args) => bench::run(args, out),
    }
}

fn summary(args: SummaryArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let size = args.input.unwrap_or(args.model.default_summary_size());
    args.model.check_input(size).map_err(|e| e.for_flag(Some("--input")))?;
    let rows = args.model.layers(NetworkShape::default(), size);
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

/// `--model`'s help: the registry's names, so that a new network is listed without an edit here.
fn model_names() -> String {
    let names: Vec<&str> = ModelKind::ALL.iter().map(|k| k.name()).collect();
    format!("The network: {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::error_line;

    #[test]
    fn causes_are_said_once_on_one_line() {
        assert_eq!(error_line(&anyhow::anyhow!("no such file").context("reading x")), "reading x: no such file");
        // A message that already holds its cause does not repeat it.
        assert_eq!(error_line(&anyhow::anyhow!("no such file").context("x: no such file")), "x: no such file");
        assert_eq!(error_line(&anyhow::anyhow!("two\nlines").context("outer")), "outer: two lines");
    }
}
