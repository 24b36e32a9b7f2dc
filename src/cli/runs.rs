//! `deepcnn plot`, `import` and `export`: working with run directories as files.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::prelude::*;
use clap::{Args, ValueEnum};

use super::positive;
use crate::checkpoint::{write_atomic, RunDir};
use crate::interop::{export_safetensors, import_state_dict};
use crate::models::ModelKind;
use crate::report::{draw_png, draw_svg, Curves};
use crate::train::TrainConfig;

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run directories; several are overlaid in one chart.
    #[arg(value_name = "DIR", required = true)]
    pub runs: Vec<PathBuf>,
    /// Write OUT.svg and OUT.png. Default with one run: its own training.svg/.png.
    #[arg(long, value_name = "OUT")]
    pub out: Option<PathBuf>,
}

pub fn plot(args: PlotArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut records = Vec::new();
    for dir in &args.runs {
        let (_, record) = RunDir::open(dir)?;
        if record.history.is_empty() {
            bail!("{}: the run has no finished epoch to plot", dir.display());
        }
        let label = dir.file_name().map_or(record.config.model.to_string(), |n| n.to_string_lossy().into_owned());
        records.push((label, record));
    }
    let base = match (&args.out, args.runs.as_slice()) {
        (Some(out), _) => out.with_extension(""),
        (None, [one]) => one.join("training"),
        (None, _) => bail!("several runs are overlaid into one chart: say where with --out OUT"),
    };
    let curves = Curves { runs: records.iter().map(|(label, r)| (label.clone(), r.history.as_slice())).collect() };
    let svg = draw_svg(&curves).map_err(anyhow::Error::msg).context("drawing the chart")?;
    let png = draw_png(&curves).map_err(anyhow::Error::msg).context("drawing the chart")?;
    for (ext, bytes) in [("svg", svg.into_bytes()), ("png", png)] {
        let path = base.with_extension(ext);
        write_atomic(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "wrote {}", path.display())?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Which of the book's networks the state_dict belongs to.
    #[arg(long)]
    pub model: ModelKind,
    /// A state_dict saved by PyTorch: `torch.save(net.state_dict(), FILE.pt)` or a .safetensors file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The run directory to create.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The image size the network was trained at [default: the model's].
    #[arg(long, value_name = "S", value_parser = positive, allow_negative_numbers = true)]
    pub resize: Option<usize>,
    /// Replace a run already in --out.
    #[arg(long)]
    pub force: bool,
}

pub fn import(args: ImportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let config = TrainConfig { resize: args.resize, ..TrainConfig::new(args.model) };
    config.validate()?;
    let model = import_state_dict(args.model, &args.file, &Device::flex())?;
    let run = RunDir::create(&args.out, args.force)?;
    run.save_imported(&config, &model)?;
    writeln!(out, "imported {} weights from {} into {}", args.model, args.file.display(), args.out.display())?;
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// The book's PyTorch state_dict keys; load with `safetensors.torch.load_file`.
    Safetensors,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run directory.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    #[arg(long, value_enum, default_value = "safetensors")]
    pub format: ExportFormat,
    /// The file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn export(args: ExportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let (run, record) = RunDir::open(&args.checkpoint)?;
    let model = run.load_network(&record, &Device::flex())?;
    refuse_to_overwrite(&args.out, args.force)?;
    let ExportFormat::Safetensors = args.format;
    let bytes = export_safetensors(record.config.model, &model);
    write_atomic(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
    writeln!(out, "wrote {} ({} after {} epochs)", args.out.display(), record.config.model, record.epochs_done)?;
    Ok(())
}

fn refuse_to_overwrite(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!("{} exists; pass --force to replace it", path.display());
    }
    Ok(())
}
