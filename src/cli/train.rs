//! `deepcnn train`: a new run, or `--resume` of a saved one.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use indicatif::ProgressBar;

use super::progress::images_bar;
use super::{non_negative_number, positive, positive_number, DataArgs, DeviceArgs};
use crate::checkpoint::{RunDir, DERIVED_FILES, RUN_FILE};
use crate::data::{Augment, Dataset, FashionMnist, Source};
use crate::device::Precision;
use crate::memory::{self, MemoryError};
use crate::models::ModelKind;
use crate::nn::LayerRow;
use crate::report::{draw_png, draw_svg, html_report, metrics_csv, plural, Curves, RunReport};
use crate::train::{
    self, ConfigError, EpochMetrics, EvalReport, Observer, ObserverError, OptimizerKind, Schedule, TrainConfig,
    TrainError, TrainState,
};

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[arg(long, help = super::model_names(), required_unless_present = "resume", conflicts_with = "resume")]
    pub model: Option<ModelKind>,
    /// Total number of epochs [default: 5]. With --resume: the new total.
    #[arg(long, value_parser = positive, allow_negative_numbers = true)]
    pub epochs: Option<usize>,
    /// [default: 256]
    #[arg(long, value_parser = positive, allow_negative_numbers = true, conflicts_with = "resume")]
    pub batch_size: Option<usize>,
    /// Learning rate (the peak rate under --schedule) [default: 0.001].
    #[arg(long, value_parser = positive_number, allow_negative_numbers = true, conflicts_with = "resume")]
    pub lr: Option<f64>,
    /// Resize images to S×S (bilinear). Default: the network's training size (28; 96 for densenet, the book's).
    #[arg(long, value_name = "S", value_parser = positive, allow_negative_numbers = true, conflicts_with = "resume")]
    pub resize: Option<usize>,
    /// Seed for weight initialisation, shuffling and augmentation [default: 0].
    #[arg(long, conflicts_with = "resume")]
    pub seed: Option<u64>,
    /// Train on the first N training examples only (the test set stays whole).
    #[arg(long, value_name = "N", value_parser = positive, allow_negative_numbers = true, conflicts_with = "resume")]
    pub limit: Option<usize>,
    /// Augment: random crop after zero-padding each side by P pixels (e.g. 2).
    #[arg(long, value_name = "P", conflicts_with = "resume")]
    pub crop_padding: Option<usize>,
    /// Augment: random horizontal flip.
    #[arg(long, conflicts_with = "resume")]
    pub flip: bool,
    /// Mixup with α = A (e.g. 0.2): each batch blended with itself reversed, targets too
    /// (timm's Mixup).
    #[arg(long, value_name = "A", value_parser = non_negative_number, allow_negative_numbers = true, conflicts_with = "resume")]
    pub mixup: Option<f64>,
    /// CutMix with α = A (e.g. 1.0): a box of each image from the reversed batch; with --mixup
    /// each batch takes one of the two.
    #[arg(long, value_name = "A", value_parser = non_negative_number, allow_negative_numbers = true, conflicts_with = "resume")]
    pub cutmix: Option<f64>,
    /// Augment: with probability P, black out a random rectangle of 2–33% of the image
    /// (torchvision's RandomErasing), after crop and flip.
    #[arg(long, value_name = "P", value_parser = non_negative_number, allow_negative_numbers = true, conflicts_with = "resume")]
    pub random_erasing: Option<f64>,
    /// Learning-rate schedule [default: constant].
    #[arg(long, value_enum, conflicts_with = "resume")]
    pub schedule: Option<Schedule>,
    /// Warm the learning rate up linearly over the first N epochs, with any schedule
    /// [default: 0].
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub warmup_epochs: Option<usize>,
    /// Label smoothing of the training loss, α in [0, 1): targets (1 − α)·one-hot + α/classes
    /// (e.g. 0.1) [default: 0].
    #[arg(long, value_name = "A", value_parser = non_negative_number, allow_negative_numbers = true, conflicts_with = "resume")]
    pub label_smoothing: Option<f64>,
    /// Weight decay: decoupled for Adam (which makes it AdamW), added to the gradient for SGD
    /// (as PyTorch's) [default: 0].
    #[arg(long, value_parser = non_negative_number, allow_negative_numbers = true, conflicts_with = "resume")]
    pub weight_decay: Option<f64>,
    /// The optimizer [default: adam].
    #[arg(long, value_enum, conflicts_with = "resume")]
    pub optimizer: Option<OptimizerKind>,
    /// SGD's momentum, in [0, 1) [default: 0.9 with --optimizer sgd].
    #[arg(long, value_name = "M", value_parser = non_negative_number, allow_negative_numbers = true, conflicts_with = "resume")]
    pub momentum: Option<f64>,
    /// Nesterov momentum (SGD).
    #[arg(long, conflicts_with = "resume")]
    pub nesterov: bool,
    /// Keep an exponential moving average of the weights with decay D (e.g. 0.999, timm's
    /// ModelEmaV2), tested after every epoch beside the weights and saved with them.
    #[arg(long, value_name = "D", value_parser = positive_number, allow_negative_numbers = true, conflicts_with = "resume")]
    pub ema: Option<f64>,
    /// Hold the last N (or the fraction F, e.g. 0.1) of the training examples out of
    /// training, test on them after every epoch, and keep the checkpoint of the best epoch by
    /// their accuracy (best-epochE.bpk; `eval --best`). The test set stays for the final number
    /// only. On one class tree (DIR/<class>/*, no test folder) F of each class is the test set.
    #[arg(long, value_name = "N|F", value_parser = val_split_arg, conflicts_with = "resume")]
    pub val_split: Option<ValSplit>,
    /// Stop after K epochs without a better validation accuracy (needs --val-split).
    #[arg(long, value_name = "K", conflicts_with = "resume")]
    pub early_stop: Option<usize>,
    /// Clip the gradients' joint L2 norm to N each step (PyTorch's clip_grad_norm_).
    #[arg(long, value_name = "N", value_parser = positive_number, allow_negative_numbers = true, conflicts_with = "resume")]
    pub clip_grad: Option<f64>,
    /// Before each evaluation, replace batch normalization's moving averages with the average
    /// statistics of N training batches, taken with the epoch's final weights ("precise BN").
    /// 0 evaluates with the book's moving averages. [default: 10; 0 for lenet]
    #[arg(long, value_name = "N", allow_negative_numbers = true, conflicts_with = "resume")]
    pub precise_bn: Option<usize>,
    /// Save the run here after every epoch: checkpoint, run.json, metrics.csv, training chart.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Replace a run already in --out.
    #[arg(long, requires = "out")]
    pub force: bool,
    /// Continue the run saved in DIR (its own settings; --epochs sets the new total).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// No progress bar (it is also off when stdout is not a terminal).
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// `--val-split`'s value: a count of training examples, or a fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValSplit {
    Count(usize),
    Fraction(f64),
}

fn val_split_arg(s: &str) -> Result<ValSplit, String> {
    let wrong = || format!("'{s}' is neither a count of examples (5000) nor a fraction between 0 and 1 (0.1)");
    match s.contains(['.', 'e', 'E']) {
        true => s.parse::<f64>().ok().filter(|f| *f > 0.0 && *f < 1.0).map(ValSplit::Fraction).ok_or_else(wrong),
        false => positive(s).map(ValSplit::Count).map_err(|_| wrong()),
    }
}

impl ValSplit {
    /// A fraction: the test share of a class tree, if the data is one.
    fn fraction(self) -> Option<f64> {
        match self {
            ValSplit::Fraction(f) => Some(f),
            ValSplit::Count(_) => None,
        }
    }

    /// The split of a new run, now that its data is known: on one class tree the fraction of
    /// each class held out as the test set; otherwise the count of (limited) training examples
    /// held out for validation, a fraction of them rounded (at least one).
    fn apply(self, config: TrainConfig, source: &Source, available: usize) -> TrainConfig {
        match (source, self) {
            (Source::ClassTree { test_fraction, .. }, _) => TrainConfig { test_split: Some(*test_fraction), ..config },
            (_, ValSplit::Count(n)) => TrainConfig { val_split: n, ..config },
            (_, ValSplit::Fraction(f)) => {
                let n = ((config.usable_len(available) as f64 * f).round() as usize).max(1);
                TrainConfig { val_split: n, ..config }
            }
        }
    }
}

impl TrainArgs {
    fn config(&self, model: ModelKind) -> TrainConfig {
        let book = TrainConfig::new(model);
        let optimizer = self.optimizer.unwrap_or(book.optimizer);
        TrainConfig {
            model,
            epochs: self.epochs.unwrap_or(book.epochs),
            batch_size: self.batch_size.unwrap_or(book.batch_size),
            lr: self.lr.unwrap_or(book.lr),
            resize: self.resize,
            seed: self.seed.unwrap_or(book.seed),
            limit: self.limit,
            augment: Augment {
                crop_padding: self.crop_padding.unwrap_or(0),
                flip: self.flip,
                erasing: self.random_erasing.unwrap_or(0.0),
            },
            schedule: self.schedule.unwrap_or(book.schedule),
            weight_decay: self.weight_decay.unwrap_or(book.weight_decay),
            label_smoothing: self.label_smoothing.unwrap_or(book.label_smoothing),
            warmup_epochs: self.warmup_epochs.unwrap_or(book.warmup_epochs),
            precise_bn: self.precise_bn.unwrap_or(book.precise_bn),
            optimizer,
            momentum: self.momentum.unwrap_or(if optimizer == OptimizerKind::Sgd { 0.9 } else { book.momentum }),
            nesterov: self.nesterov,
            clip_grad: self.clip_grad,
            ema: self.ema,
            // Set from the data once it is loaded (`ValSplit::apply`).
            val_split: 0,
            early_stop: self.early_stop,
            mixup: self.mixup.unwrap_or(0.0),
            cutmix: self.cutmix.unwrap_or(0.0),
            // Set from the data once it is loaded (`TrainConfig::for_data`).
            ..book
        }
    }
}

pub fn run(args: TrainArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let (run_dir, config, saved, scheduled_total) = match &args.resume {
        Some(dir) => {
            let (run_dir, record) = RunDir::open_to_continue(dir)?;
            // What a kill between two writes may have left out of step with run.json is
            // rewritten from it.
            if !record.history.is_empty() {
                // (The report needs a test pass; the next epoch's rewrites it.)
                for (name, bytes) in derived_files(&record.config, &record.history, None) {
                    run_dir.write(name, &bytes)?;
                }
            }
            let mut config = record.config.clone();
            config.epochs = args.epochs.unwrap_or(config.epochs);
            if config.epochs <= record.epochs_done {
                bail!(
                    "{} has already trained {} of {}; pass --epochs with a larger total to train more",
                    dir.display(),
                    record.epochs_done,
                    plural(config.epochs, "epoch", "epochs")
                );
            }
            let scheduled_total = record.config.epochs;
            (Some(run_dir), config, Some(record), scheduled_total)
        }
        None => {
            let config = args.config(args.model.expect("clap requires --model without --resume"));
            // Check the flags before touching files or spending time on loading data.
            if args.early_stop.is_some() && args.val_split.is_none() {
                bail!(ConfigError::EarlyStopWithoutValidation);
            }
            config.validate().map_err(|e| match e {
                ConfigError::NoBatchNorm(_) => anyhow::anyhow!("{e} (pass --precise-bn 0)"),
                e => e.into(),
            })?;
            let run_dir = args.out.as_deref().map(|dir| RunDir::create(dir, args.force, true)).transpose()?;
            let total = config.epochs;
            (run_dir, config, None, total)
        }
    };
    let resumed = args.resume.is_some();
    // What was in the run directory before: what a failure leaves there is said against it.
    let had_run = run_dir.as_ref().is_some_and(|run| run.path().join(RUN_FILE).exists());
    // One class tree's test set is the fraction of it held out: the run's, once it has one.
    let test_split = match resumed {
        true => config.test_split,
        false => args.val_split.and_then(ValSplit::fraction),
    };
    let (data, source) = args.data.load(config.image_size(), false, test_split)?;
    // A new run's network is built for the data's images and classes; a resumed one must
    // meet the data it was built for.
    let config = match resumed {
        true => {
            config.check_classes(&data.train)?;
            config
        }
        false => {
            let config = config.for_data(&data.train);
            match args.val_split {
                Some(split) => split.apply(config, &source, data.train.len()),
                None => config,
            }
        }
    };
    // The checks that need the data, before the first line promises a run.
    config.check_val_split(data.train.len())?;
    let n_train = config.train_len(data.train.len());
    config.check_data(data.train.image_size())?;
    if n_train == 0 {
        bail!(TrainError::NoData);
    }
    if data.test.is_empty() {
        bail!(TrainError::NoTestData);
    }
    check_training_memory(&config, n_train, resumed)?;
    let state = match (&run_dir, saved) {
        (Some(run), Some(record)) => run.load_state(&record, &device)?,
        _ => TrainState::fresh(&config, &device),
    };
    let done = state.epochs_done();
    let mut first_line = header(&config, &data, n_train, done, scheduled_total);
    if let Some(described) = source.describe(&args.data.data_dir, &data) {
        first_line += &format!("; {described}");
    }
    if args.device.precision == Precision::Bf16 {
        first_line += "; convolutions in bf16";
    }
    writeln!(out, "{first_line}")?;
    let show_progress = !args.quiet && std::io::stdout().is_terminal();
    let report = run_dir.as_ref().map(|run| ReportParts {
        name: run.path().file_name().map_or(config.model.to_string(), |n| n.to_string_lossy().into_owned()),
        test: &data.test,
        layers: config.model.layers(config.shape(), config.image_size()),
        machine: crate::machine::describe(),
        last_test: None,
    });
    let mut observer = CliObserver {
        out,
        run_dir: run_dir.as_ref(),
        config: &config,
        bar: None,
        show_progress,
        last_saved: None,
        report,
    };
    let result = train::train(&config, &data, &device, state, &mut observer);
    let last_saved = observer.last_saved;
    match result {
        Ok(state) => {
            if let Some(best) = TrainConfig::best_epoch(&state.history) {
                let stopped = state.history.len() < config.epochs;
                let how = if stopped { "stopped early; " } else { "" };
                let val = state.history[best - 1].val_accuracy.unwrap_or_default();
                let test = state.history[best - 1].test_accuracy;
                writeln!(out, "{how}best epoch by validation accuracy: {best} (val acc {val:.3}, test acc {test:.3})")?;
            }
            Ok(())
        }
        // The observer's own error (a closed stdout, a full disk) as it is, so that a reader who
        // went away (`deepcnn train | head`) is recognised as such.
        Err(TrainError::Observer(e)) => Err(match e.downcast::<std::io::Error>() {
            Ok(io) => anyhow::Error::new(*io),
            Err(other) => anyhow::Error::from_boxed(other),
        }),
        Err(
            e @ (TrainError::NonFiniteLoss { .. }
            | TrainError::NonFiniteWeights { .. }
            | TrainError::NonFiniteTestLoss { .. }),
        ) => match &run_dir {
            Some(run) => {
                let dir = run.path().display();
                let kept = match (last_saved, resumed, had_run) {
                    (Some(epoch), _, _) => format!("{dir} keeps the checkpoint of epoch {epoch}"),
                    (None, true, _) => format!("{dir} keeps the checkpoint of epoch {done}, where this resume started"),
                    (None, false, true) => format!("{dir} still holds the run that was there before, unchanged"),
                    (None, false, false) => format!("no checkpoint was written to {dir}"),
                };
                Err(anyhow::Error::new(e).context(kept))
            }
            None => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// The line that opens a run: what is trained on what, with which settings; where the data's
/// images are resized, from what to what; and what extending a scheduled run means.
/// The optimizer, where it is not the book's plain Adam: "; AdamW, weight decay 0.05",
/// "; SGD, momentum 0.9 (Nesterov), weight decay 0.0005".
fn optimizer_words(config: &TrainConfig) -> String {
    let decay = (config.weight_decay > 0.0).then(|| format!(", weight decay {}", compact(config.weight_decay)));
    match config.optimizer {
        OptimizerKind::Adam => decay.map(|d| format!("; AdamW{d}")).unwrap_or_default(),
        OptimizerKind::Sgd => {
            let momentum = match (config.momentum > 0.0, config.nesterov) {
                (false, _) => String::new(),
                (true, nesterov) => {
                    format!(", momentum {}{}", compact(config.momentum), if nesterov { " (Nesterov)" } else { "" })
                }
            };
            format!("; SGD{momentum}{}", decay.unwrap_or_default())
        }
    }
}

fn header(config: &TrainConfig, data: &FashionMnist, n_train: usize, done: usize, scheduled_total: usize) -> String {
    let size = config.image_size();
    let [rows, cols] = data.train.image_size();
    let images = if [rows, cols] == [size, size] {
        format!("{size}×{size}")
    } else {
        format!("{rows}×{cols}, resized to {size}×{size}")
    };
    let mut line = format!(
        "training {} on {n_train} images ({images}), testing on {}; batch {}, lr {}, {}, seed {}",
        config.model,
        data.test.len(),
        config.batch_size,
        compact(config.lr),
        plural(config.epochs, "epoch", "epochs"),
        config.seed,
    );
    if config.schedule != Schedule::Constant {
        line += &format!("; {} schedule over {}", config.schedule.name(), plural(config.epochs, "epoch", "epochs"));
        if done > 0 && scheduled_total != config.epochs {
            line += &format!(
                " (epochs 1–{done} followed it over {scheduled_total}: the rest follows it over {}, so this run does \
                 not end where an uninterrupted {}-epoch run would)",
                config.epochs, config.epochs
            );
        }
    }
    if config.warmup_epochs > 0 {
        line += &format!("; warm-up over {}", plural(config.warmup_epochs, "epoch", "epochs"));
    }
    for (name, alpha) in [("mixup", config.mixup), ("CutMix", config.cutmix)] {
        if alpha > 0.0 {
            line += &format!("; {name} α {}", compact(alpha));
        }
    }
    if config.augment.crop_padding > 0 {
        line += &format!("; random crop, padded by {}", plural(config.augment.crop_padding, "pixel", "pixels"));
    }
    if config.augment.flip {
        line += "; random horizontal flip";
    }
    if config.augment.erasing > 0.0 {
        line += &format!("; random erasing with p {}", compact(config.augment.erasing));
    }
    line += &optimizer_words(config);
    if let Some(decay) = config.ema {
        line += &format!("; EMA of the weights, decay {}", compact(decay));
    }
    if config.val_split > 0 {
        line += &format!("; validating on the last {} training images", config.val_split);
        if let Some(patience) = config.early_stop {
            line += &format!(", stopping after {} without a better one", plural(patience, "epoch", "epochs"));
        }
    }
    if let Some(max) = config.clip_grad {
        line += &format!("; gradient norm clipped at {}", compact(max));
    }
    if config.label_smoothing > 0.0 {
        line += &format!("; label smoothing {}", compact(config.label_smoothing));
    }
    if config.precise_bn > 0 {
        // A batch is drawn at most once: an epoch shorter than the request gives what it has.
        let batches = config.precise_bn.min(n_train.div_ceil(config.batch_size));
        line += &format!("; precise BN from {}", plural(batches, "batch", "batches"));
    }
    if done > 0 {
        line += &format!("; resuming after epoch {done}");
    }
    line
}

/// A number as people write it: 0.001 as `0.001`, 3e38 as `3e38` (not 39 digits).
fn compact(x: f64) -> String {
    if x != 0.0 && !(1e-4..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

/// Refuses a run whose training step would need more memory than the machine has. A batch
/// is never larger than the `n_train` images trained on.
fn check_training_memory(config: &TrainConfig, n_train: usize, resumed: bool) -> Result<(), MemoryError> {
    let size = config.image_size();
    let batch = config.batch_size.min(n_train);
    memory::check(
        || format!("training {} with batch {batch} at {size}×{size}", config.model),
        config.model.training_memory(batch, size),
        if resumed {
            "the run's batch size and image size are in its run.json"
        } else {
            "use a smaller --batch-size or --resize"
        },
    )
}

/// The files derived from a run's history: the metrics table, the HTML report of the last
/// epoch's test pass, and, where it can be drawn, the chart (a failure to draw it, fonts say,
/// is reported but does not stop training).
fn derived_files(
    config: &TrainConfig,
    history: &[EpochMetrics],
    report: Option<&ReportParts>,
) -> Vec<(&'static str, Vec<u8>)> {
    let [metrics, svg, png, html] = DERIVED_FILES;
    let mut files = vec![(metrics, metrics_csv(history).into_bytes())];
    if let Some(parts @ ReportParts { last_test: Some(evaluation), .. }) = report {
        let run = RunReport {
            name: parts.name.clone(),
            config,
            history,
            machine: Some(&parts.machine),
            evaluation,
            test_images: parts.test,
            evaluated: format!("the weights after epoch {}", history.len()),
            layers: &parts.layers,
        };
        files.push((html, html_report(&[run]).into_bytes()));
    }
    let title =
        format!("{}: batch {}, lr {}, seed {}", config.model, config.batch_size, compact(config.lr), config.seed);
    let curves = Curves { title, runs: vec![(String::new(), history)] };
    for (file, bytes) in [(svg, draw_svg(&curves).map(String::into_bytes)), (png, draw_png(&curves))] {
        match bytes {
            Ok(bytes) => files.push((file, bytes)),
            Err(e) => eprintln!("warning: could not draw {file}: {e}"),
        }
    }
    files
}

/// What the run's report.html is made of besides the run's history.
struct ReportParts<'a> {
    name: String,
    test: &'a Dataset,
    layers: Vec<LayerRow>,
    machine: String,
    /// The latest epoch's test pass.
    last_test: Option<EvalReport>,
}

/// Prints progress and epoch lines, and saves the run after every epoch.
struct CliObserver<'a, W: Write> {
    out: &'a mut W,
    run_dir: Option<&'a RunDir>,
    config: &'a TrainConfig,
    bar: Option<ProgressBar>,
    show_progress: bool,
    /// The last epoch this run saved.
    last_saved: Option<usize>,
    /// With a run directory: the parts of its report.
    report: Option<ReportParts<'a>>,
}

impl<W: Write> Observer for CliObserver<'_, W> {
    fn epoch_started(&mut self, epoch: usize, _steps: usize, examples: usize) {
        if self.show_progress {
            self.bar = Some(images_bar(examples, format!("epoch {epoch}")));
        }
    }

    fn step_done(&mut self, examples: usize, loss: f64) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("loss {loss:.4}"));
            bar.inc(examples as u64);
        }
    }

    fn evaluating(&mut self, examples: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            self.bar = Some(images_bar(examples, "testing"));
        }
    }

    fn test_step_done(&mut self, examples: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(examples as u64);
        }
    }

    fn tested(&mut self, evaluation: &EvalReport) {
        if let Some(report) = &mut self.report {
            report.last_test = Some(evaluation.clone());
        }
    }

    fn epoch_done(&mut self, metrics: &EpochMetrics, state: &TrainState) -> Result<(), ObserverError> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        // Saved first: a printed epoch line means the epoch is on disk.
        if let Some(run) = self.run_dir {
            run.save(self.config, state, &derived_files(self.config, &state.history, self.report.as_ref()))?;
            self.last_saved = Some(metrics.epoch);
        }
        writeln!(self.out, "{metrics}")?;
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn val_split_is_a_count_or_a_fraction_and_a_fraction_rounds_to_a_count() {
        assert_eq!(val_split_arg("5000"), Ok(ValSplit::Count(5000)));
        assert_eq!(val_split_arg("0.1"), Ok(ValSplit::Fraction(0.1)));
        assert_eq!(val_split_arg("1e-1"), Ok(ValSplit::Fraction(0.1)));
        for bad in ["0", "1.0", "1.5", "-0.1", "0.0", "ten", "nan"] {
            assert!(val_split_arg(bad).is_err(), "{bad} was taken");
        }
        let config = TrainConfig { limit: Some(1000), ..TrainConfig::new(ModelKind::LeNetBn) };
        let idx = Source::Idx;
        // A fraction of the (limited) training examples, at least one.
        assert_eq!(ValSplit::Fraction(0.1).apply(config.clone(), &idx, 60_000).val_split, 100);
        assert_eq!(ValSplit::Fraction(0.1).apply(config.clone(), &idx, 4).val_split, 1);
        assert_eq!(ValSplit::Count(30).apply(config.clone(), &idx, 60_000).val_split, 30);
        // One class tree's fraction is its test set; nothing more is held out of training.
        let tree = Source::ClassTree { skipped: 0, test_fraction: 0.2 };
        let on_tree = ValSplit::Fraction(0.2).apply(config, &tree, 60_000);
        assert_eq!((on_tree.val_split, on_tree.test_split), (0, Some(0.2)));
    }
}
