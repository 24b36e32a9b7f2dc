//! `deepcnn plot`, `import` and `export`: working with run directories as files.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::prelude::*;
use clap::Args;

use super::positive;
use crate::checkpoint::{write_atomic, RunDir};
use crate::interop::pytorch::{import_tensors, TorchFile};
use crate::interop::{export_onnx, export_safetensors};
use crate::models::ModelKind;
use crate::report::{draw_png, draw_svg, plural, Curves};
use crate::train::{ConfigError, TrainConfig};

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run directories; several are overlaid in one chart.
    #[arg(value_name = "DIR", required = true)]
    pub runs: Vec<PathBuf>,
    /// Write OUT.svg and OUT.png. Default with one run: its own training.svg/.png.
    #[arg(long, value_name = "OUT")]
    pub out: Option<PathBuf>,
    /// Replace OUT.svg and OUT.png if they exist.
    #[arg(long, requires = "out")]
    pub force: bool,
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
    let labels: Vec<&str> = records.iter().map(|(label, _)| label.as_str()).collect();
    let title = match records.as_slice() {
        [(label, record)] => format!("{label} ({})", record.config.model),
        _ if records.len() <= 3 => labels.join(" and "),
        _ => format!("{} runs", records.len()),
    };
    let curves =
        Curves { title, runs: records.iter().map(|(label, r)| (label.clone(), r.history.as_slice())).collect() };
    // A chart of one's own choosing is not replaced without --force (a run's own is derived).
    if args.out.is_some() {
        for ext in ["svg", "png"] {
            refuse_to_overwrite(&base.with_extension(ext), args.force)?;
        }
    }
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
    /// Which of the book's networks the state_dict belongs to [default: the one a deepcnn
    /// export records].
    #[arg(long)]
    pub model: Option<ModelKind>,
    /// A state_dict saved by PyTorch: `torch.save(net.state_dict(), FILE.pt)` or a .safetensors file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The run directory to create.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The image size the network was trained at [default: the one a deepcnn export records,
    /// else the model's].
    #[arg(long, value_name = "S", value_parser = positive, allow_negative_numbers = true)]
    pub resize: Option<usize>,
    /// Replace a run already in --out.
    #[arg(long)]
    pub force: bool,
}

pub fn import(args: ImportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let file = TorchFile::read(&args.file)?;
    let recorded_model = file.model.as_deref().map(str::parse::<ModelKind>).transpose();
    let recorded_model =
        recorded_model.map_err(|e| anyhow::anyhow!("{}: its metadata names {e}", args.file.display()))?;
    let model = match (args.model, recorded_model) {
        (Some(asked), Some(recorded)) if asked != recorded => {
            bail!("{} holds a {recorded} network (its metadata says so), not a {asked}", args.file.display())
        }
        (Some(kind), _) | (None, Some(kind)) => kind,
        (None, None) => bail!("{} does not record which network it holds; pass --model NAME", args.file.display()),
    };
    let recorded_size = match &file.image_size {
        Some(text) => Some(text.parse::<usize>().ok().filter(|&s| s > 0).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: its metadata gives the image size as {text:?}, not a positive number",
                args.file.display()
            )
        })?),
        None => None,
    };
    let resize = match (args.resize, recorded_size) {
        (Some(asked), Some(recorded)) if asked != recorded => bail!(
            "{} was trained at {recorded}×{recorded} (its metadata says so); --resize {asked} would evaluate it at another size",
            args.file.display()
        ),
        (asked, recorded) => asked.or(recorded),
    };
    let config = TrainConfig { resize, ..TrainConfig::new(model) };
    config.validate().map_err(|e| match (&e, args.resize, recorded_size) {
        (ConfigError::InputSize(_), None, Some(size)) => anyhow::anyhow!(
            "{}: its metadata gives the image size as {size}, which a {model} cannot take",
            args.file.display()
        ),
        _ => e.into(),
    })?;
    let network = import_tensors(model, file, &args.file, &Device::flex())?;
    let run = RunDir::create(&args.out, args.force, false)?;
    run.save_imported(&config, &network)?;
    let size = config.image_size();
    writeln!(
        out,
        "imported {model} weights ({size}×{size} images) from {} into {}",
        args.file.display(),
        args.out.display()
    )?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run directory.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub weights: super::WeightsArgs,
    /// The file to write; its extension says the format (.safetensors: the book's PyTorch
    /// state_dict keys, for `safetensors.torch.load_file`; .onnx: the network in evaluation
    /// mode with a dynamic batch dimension and the class names as metadata, for onnxruntime).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn export(args: ExportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let format = match args.out.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => ExportFormat::Safetensors,
        Some("onnx") => ExportFormat::Onnx,
        _ => bail!(
            "{}: export writes .safetensors (PyTorch's state_dict) or .onnx files; give --out a name ending in one of them",
            args.out.display()
        ),
    };
    let (run, record) = RunDir::open(&args.checkpoint)?;
    let model = run.load_weights(&record, &Device::flex(), args.weights.weights())?;
    refuse_to_overwrite(&args.out, args.force)?;
    let (kind, size) = (record.config.model, record.config.image_size());
    let bytes = match format {
        ExportFormat::Safetensors => export_safetensors(kind, &model, size),
        ExportFormat::Onnx => {
            let classes = record.config.classes();
            let names: Vec<&str> = classes.iter().map(String::as_str).collect();
            export_onnx(kind, &model, record.config.channels, size, &names)
        }
    };
    write_atomic(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
    writeln!(
        out,
        "wrote {} ({} after {}, {s}×{s} images)",
        args.out.display(),
        record.config.model,
        plural(record.epochs_done, "epoch", "epochs"),
        s = record.config.image_size()
    )?;
    Ok(())
}

/// What `export` writes, by the extension of `--out`.
enum ExportFormat {
    Safetensors,
    Onnx,
}

pub(super) fn refuse_to_overwrite(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!("{} exists; pass --force to replace it", path.display());
    }
    Ok(())
}
