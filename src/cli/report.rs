//! `deepcnn report`: a run (or several) as one self-contained HTML page.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use super::progress::images_bar;
use super::runs::refuse_to_overwrite;
use super::{DataArgs, DeviceArgs};
use crate::checkpoint::{write_atomic, RunDir, Weights, REPORT_FILE};
use crate::data::Batcher;
use crate::report::{html_report, RunReport};
use crate::train::{evaluate_report, TrainConfig, TrainError};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run directories; several have their curves overlaid and a section each.
    #[arg(value_name = "DIR", required = true)]
    pub runs: Vec<PathBuf>,
    /// The page to write. Default with one run: its own report.html.
    #[arg(long, value_name = "FILE.html")]
    pub out: Option<PathBuf>,
    /// Replace FILE.html if it exists.
    #[arg(long, requires = "out")]
    pub force: bool,
    #[arg(long, default_value_t = 256, value_parser = super::positive, allow_negative_numbers = true)]
    pub batch_size: usize,
    #[command(flatten)]
    pub weights: super::WeightsArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn report(args: ReportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let page = match (&args.out, args.runs.as_slice()) {
        (Some(page), _) if page.extension().is_none_or(|e| e != "html") => {
            bail!("{}: the report is an HTML page; give --out a name ending in .html", page.display())
        }
        (Some(page), _) => page.clone(),
        (None, [one]) => one.join(REPORT_FILE),
        (None, _) => bail!("several runs make one page: say where with --out FILE.html"),
    };
    if args.out.is_some() {
        refuse_to_overwrite(&page, args.force)?;
    }
    let device = args.device.open()?;
    let weights = args.weights.weights();
    let mut runs = Vec::new();
    // Each run at its own image size (and class tree split): the test set is loaded once per them.
    let mut test: Option<((usize, Option<f64>), crate::data::Dataset)> = None;
    for dir in &args.runs {
        let (run, record) = RunDir::open(dir)?;
        let size = record.config.image_size();
        let key = (size, record.config.test_split);
        if test.as_ref().is_none_or(|(k, _)| *k != key) {
            test = Some((key, args.data.load(size, true, record.config.test_split)?.0.test));
        }
        let test = &test.as_ref().expect("loaded above").1;
        if test.is_empty() {
            bail!(TrainError::NoTestData);
        }
        record.config.check_classes(test).with_context(|| format!("{}", dir.display()))?;
        let model = run.load_weights(&record, &device, weights)?;
        let bar = images_bar(test.len(), format!("testing {}", dir.display()));
        let batcher = Batcher::new(Some(size), &device);
        let evaluation = evaluate_report(&model, test, &batcher, args.batch_size, &mut |n| bar.inc(n as u64));
        bar.finish_and_clear();
        let name = dir.file_name().map_or(record.config.model.to_string(), |n| n.to_string_lossy().into_owned());
        let evaluated = evaluated(weights, &record.config, &record.history, record.epochs_done);
        runs.push((name, record, evaluation, evaluated, test.clone()));
    }
    let layers: Vec<_> =
        runs.iter().map(|(_, r, ..)| r.config.model.layers(r.config.shape(), r.config.image_size())).collect();
    let reports: Vec<RunReport> = runs
        .iter()
        .zip(&layers)
        .map(|((name, record, evaluation, evaluated, test), layers)| RunReport {
            name: name.clone(),
            config: &record.config,
            history: &record.history,
            machine: record.machine.as_deref(),
            evaluation,
            test_images: test,
            evaluated: evaluated.clone(),
            layers,
        })
        .collect();
    write_atomic(&page, html_report(&reports).as_bytes()).with_context(|| format!("writing {}", page.display()))?;
    writeln!(out, "wrote {}", page.display())?;
    Ok(())
}

/// Which network a report evaluated, in words.
pub fn evaluated(
    weights: Weights,
    config: &TrainConfig,
    history: &[crate::train::EpochMetrics],
    epochs: usize,
) -> String {
    match weights {
        Weights::Last => format!("the weights after epoch {epochs}"),
        Weights::Ema => {
            format!("the moving average of the weights (--ema {}) after epoch {epochs}", config.ema.unwrap_or(0.0))
        }
        Weights::Best => match TrainConfig::best_epoch(history) {
            Some(best) => format!("the weights of epoch {best}, the best by validation accuracy"),
            None => "the best epoch's weights".into(),
        },
    }
}
