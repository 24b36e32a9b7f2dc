//! Run directories: after every epoch a run writes its network (parameters and BN moving
//! statistics) and optimizer state as burnpack files (burn's own record format, which keeps
//! the parameter ids the optimizer state is keyed by), plus `run.json`, which describes the
//! run and names the files of its last complete epoch.
//!
//! Every file is replaced atomically and `run.json` is written last, so it is the commit
//! point: a run killed at any moment leaves `run.json` naming a complete, readable epoch.

pub mod atomic;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

pub use atomic::write_atomic;

use crate::memory::Bytes as ByteCount;
use crate::models::{ModelKind, Network, NetworkShape};
use crate::report::plural;
use crate::train::{optimizer_for, ConfigError, EpochMetrics, TrainConfig, TrainState};

pub const RUN_FILE: &str = "run.json";
/// A run.json holds one line of metrics per epoch: 64 MB is hundreds of thousands of epochs.
const MAX_RUN_FILE: u64 = 64 << 20;
/// Files a run directory holds besides run.json and the checkpoints: derived from the run's
/// history by the command line (the metrics table, the chart, the HTML report).
pub const DERIVED_FILES: [&str; 4] = ["metrics.csv", "training.svg", "training.png", REPORT_FILE];
/// The run's HTML report, refreshed after every epoch.
pub const REPORT_FILE: &str = "report.html";
const FORMAT: u32 = 1;

/// Which of a run's networks to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// After the last epoch.
    Last,
    /// The moving average of the weights (`--ema`).
    Ema,
    /// After the epoch of the best validation accuracy (`--val-split`).
    Best,
}

/// What `run.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Version of this layout.
    pub format: u32,
    pub deepcnn_version: String,
    /// The model and every hyper-parameter of the run.
    pub config: TrainConfig,
    pub epochs_done: usize,
    /// The network after `epochs_done` epochs, relative to the run directory.
    pub model_file: String,
    /// Adam's state after `epochs_done` epochs; `None` for imported weights.
    pub optimizer_file: Option<String>,
    /// The moving average of the weights (`--ema`) after `epochs_done` epochs, in runs that
    /// keep one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_file: Option<String>,
    /// The network after the epoch of the best validation accuracy (`--val-split`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_file: Option<String>,
    /// The random state: every epoch's shuffle and augmentation derive from `config.seed` and
    /// the epoch number, so the next epoch is all a resumed run needs.
    pub next_epoch: usize,
    pub history: Vec<EpochMetrics>,
    /// The machine the run last trained on ([`crate::machine::describe`]); `None` in runs
    /// saved before deepcnn recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
}

impl RunRecord {
    /// The record of a run at the end of `history`'s last epoch.
    fn new(
        config: &TrainConfig,
        model_file: String,
        [optimizer_file, ema_file, best_file]: [Option<String>; 3],
        history: Vec<EpochMetrics>,
    ) -> Self {
        RunRecord {
            format: FORMAT,
            deepcnn_version: env!("CARGO_PKG_VERSION").to_string(),
            config: config.clone(),
            epochs_done: history.len(),
            model_file,
            optimizer_file,
            ema_file,
            best_file,
            next_epoch: history.len() + 1,
            history,
            machine: Some(crate::machine::describe()),
        }
    }
}

impl RunRecord {
    /// The checkpoint files the record names.
    pub fn files(&self) -> impl Iterator<Item = &String> {
        [Some(&self.model_file), self.optimizer_file.as_ref(), self.ema_file.as_ref(), self.best_file.as_ref()]
            .into_iter()
            .flatten()
    }

    /// Reads the text of a `run.json`, checked to describe a run this deepcnn can load: its
    /// layout version, its epoch count, settings its network can use, and checkpoint files
    /// inside the run directory. The error says what is wrong.
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let record: RunRecord = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        if record.format != FORMAT {
            return Err(format!("format {} (this deepcnn reads {FORMAT})", record.format));
        }
        if record.history.len() != record.epochs_done || record.next_epoch != record.epochs_done + 1 {
            return Err("epoch count and history disagree".into());
        }
        for (i, m) in record.history.iter().enumerate() {
            let optional = m.ema_test_accuracy.iter().chain(&m.val_accuracy);
            let accuracies =
                [m.train_accuracy, m.test_accuracy].iter().chain(optional).all(|a| (0.0..=1.0).contains(a));
            let finite = [m.loss, m.seconds, m.examples_per_sec].iter().all(|v| v.is_finite() && *v >= 0.0);
            if m.epoch != i + 1 || !accuracies || !finite {
                return Err(format!("the metrics of epoch {} are not a run's (epoch {}, accuracies outside 0–1, or negative or non-finite numbers)", i + 1, m.epoch));
            }
        }
        record.config.validate().map_err(|e| {
            // The fix is in this file, not in a flag.
            let e = match e {
                ConfigError::InputSize(e) => ConfigError::InputSize(e.for_flag(None)),
                e => e,
            };
            format!("settings that cannot be used: {e}")
        })?;
        if record.epochs_done > record.config.epochs {
            return Err(format!(
                "{} done of a run of {}",
                record.epochs_done,
                plural(record.config.epochs, "epoch", "epochs")
            ));
        }
        for name in record.files() {
            if !is_plain_file_name(name) {
                return Err(format!("names {name:?}, which is not a file in the run directory"));
            }
        }
        Ok(record)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{} holds no deepcnn run (no {RUN_FILE})", .dir.display())]
    NoRun { dir: PathBuf },
    #[error(
        "{} already holds a run ({model}, {} done); pass {}--force to replace it",
        .dir.display(), plural(*.epochs, "epoch", "epochs"), if *.resumable { "--resume to continue it or " } else { "" }
    )]
    RunExists { dir: PathBuf, model: ModelKind, epochs: usize, resumable: bool },
    #[error(
        "{} holds files but no deepcnn run (no {RUN_FILE}); give another directory, or pass --force to write the run \
         there (files of the run's names are replaced)",
        .dir.display()
    )]
    NotARunDir { dir: PathBuf },
    #[error("{} keeps no moving average of the weights (it was not trained with --ema)", .dir.display())]
    NoEma { dir: PathBuf },
    #[error("{} keeps no best epoch (it was not trained with --val-split)", .dir.display())]
    NoBest { dir: PathBuf },
    #[error("{} does not exist", .dir.display())]
    NoDir { dir: PathBuf },
    #[error("{}: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    // The cause is part of the message, not a `source()`: printed once.
    #[error("{}: {cause}", .path.display())]
    Io { path: PathBuf, cause: io::Error },
}

impl CheckpointError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |cause| CheckpointError::Io { path: path.to_path_buf(), cause }
    }

    fn corrupt(path: &Path, reason: impl ToString) -> Self {
        CheckpointError::Corrupt { path: path.to_path_buf(), reason: reason.to_string() }
    }
}

/// A run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Prepares `path` for a new run. Refuses a directory that already holds a run unless
    /// `force` (its files are then replaced when the new run's first epoch is saved); the
    /// refusal suggests `--resume` where the command has it (`resumable`).
    pub fn create(path: &Path, force: bool, resumable: bool) -> Result<Self, CheckpointError> {
        if path.exists() && !path.is_dir() {
            return Err(CheckpointError::corrupt(path, "is a file, not a run directory"));
        }
        if !force && path.join(RUN_FILE).exists() {
            let (_, record) = RunDir::open(path)?;
            return Err(CheckpointError::RunExists {
                dir: path.to_path_buf(),
                model: record.config.model,
                epochs: record.epochs_done,
                resumable,
            });
        }
        // Files of the run's names would be replaced: a directory of other things is not ours.
        if !force && holds_other_files(path) {
            return Err(CheckpointError::NotARunDir { dir: path.to_path_buf() });
        }
        fs::create_dir_all(path).map_err(CheckpointError::io(path))?;
        let run = RunDir { path: path.to_path_buf() };
        run.remove_stale_temporaries();
        Ok(run)
    }

    /// Opens an existing run and reads its `run.json`, checked to describe a run this deepcnn
    /// can load: every command that uses a saved run comes through here.
    pub fn open(path: &Path) -> Result<(Self, RunRecord), CheckpointError> {
        if !path.exists() {
            return Err(CheckpointError::NoDir { dir: path.to_path_buf() });
        }
        if !path.is_dir() {
            return Err(CheckpointError::corrupt(path, "is a file, not a run directory"));
        }
        let file = path.join(RUN_FILE);
        if !file.exists() {
            return Err(CheckpointError::NoRun { dir: path.to_path_buf() });
        }
        if !file.is_file() {
            return Err(CheckpointError::corrupt(&file, "is not a regular file"));
        }
        if fs::metadata(&file).map_err(CheckpointError::io(&file))?.len() > MAX_RUN_FILE {
            return Err(CheckpointError::corrupt(
                &file,
                format!("is larger than any run.json ({})", ByteCount(MAX_RUN_FILE)),
            ));
        }
        let text = fs::read(&file).map_err(CheckpointError::io(&file))?;
        let record = RunRecord::parse(&text).map_err(|reason| CheckpointError::corrupt(&file, reason))?;
        Ok((RunDir { path: path.to_path_buf() }, record))
    }

    /// Opens an existing run to train it further: as [`open`](Self::open), and removes what an
    /// interrupted save left behind (temporary files of processes that no longer run).
    pub fn open_to_continue(path: &Path) -> Result<(Self, RunRecord), CheckpointError> {
        let (run, record) = RunDir::open(path)?;
        run.remove_stale_temporaries();
        Ok((run, record))
    }

    /// Removes the temporary files of interrupted writes ([`write_atomic`]'s `.NAME.tmp-PID`),
    /// except those of a process still running (it may be writing this run right now).
    fn remove_stale_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.path) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = atomic::temporary_owner(&name.to_string_lossy()) else { continue };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Saves `state` (trained with `config`) as this run's latest checkpoint, with `derived`
    /// files (name, bytes: the metrics table, the charts) written before `run.json`, so that
    /// nothing `run.json` describes can be missing or behind it after a kill.
    pub fn save(
        &self,
        config: &TrainConfig,
        state: &TrainState,
        derived: &[(&str, Vec<u8>)],
    ) -> Result<RunRecord, CheckpointError> {
        let epoch = state.epochs_done();
        let model_file = self.unused_name("model", epoch);
        let optimizer_file = self.unused_name("optimizer", epoch);
        self.write(&model_file, &network_bytes(&state.model))?;
        let optim_bytes =
            state.optim.into_bytes().map_err(|e| CheckpointError::corrupt(&self.path.join(&optimizer_file), e))?;
        self.write(&optimizer_file, &optim_bytes)?;
        let ema_file = match &state.ema {
            Some(average) => {
                let name = self.unused_name("ema", epoch);
                self.write(&name, &network_bytes(average))?;
                Some(name)
            }
            None => None,
        };
        // The best epoch's network: written when this epoch is it, else the one saved then.
        let best_file = match TrainConfig::best_epoch(&state.history) {
            Some(best) if best == epoch => {
                let name = self.unused_name("best", epoch);
                self.write(&name, &network_bytes(&state.model))?;
                Some(name)
            }
            Some(_) => self.committed().and_then(|r| r.best_file),
            None => None,
        };
        for (name, bytes) in derived {
            self.write(name, bytes)?;
        }
        let files = [Some(optimizer_file), ema_file, best_file];
        self.commit(RunRecord::new(config, model_file, files, state.history.clone()))
    }

    /// Saves a network that was not trained here (imported weights) as epoch 0 of a run.
    pub fn save_imported(&self, config: &TrainConfig, model: &Network) -> Result<RunRecord, CheckpointError> {
        let model_file = self.unused_name("model", 0);
        self.write(&model_file, &network_bytes(model))?;
        // A replaced run's metrics and chart describe epochs this run does not have.
        for file in DERIVED_FILES {
            let _ = fs::remove_file(self.path.join(file));
        }
        self.commit(RunRecord::new(config, model_file, [None, None, None], Vec::new()))
    }

    /// `STEM-epochN.bpk`, unless the run.json on disk names that file (a run that `--force`
    /// is replacing, at the same epoch): then `STEM-epochN.1.bpk`, so that a replacement killed
    /// before its commit never leaves the old run.json naming the new run's weights.
    fn unused_name(&self, stem: &str, epoch: usize) -> String {
        let committed = self.committed();
        let taken = |name: &String| committed.as_ref().is_some_and(|r| r.files().any(|f| f == name));
        let plain = format!("{stem}-epoch{epoch}.bpk");
        if taken(&plain) {
            format!("{stem}-epoch{epoch}.1.bpk")
        } else {
            plain
        }
    }

    /// The run.json on disk, where there is a readable one.
    fn committed(&self) -> Option<RunRecord> {
        fs::read(self.path.join(RUN_FILE)).ok().and_then(|json| serde_json::from_slice::<RunRecord>(&json).ok())
    }

    /// Writes `file` (a name inside the run directory) atomically.
    pub fn write(&self, file: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
        let path = self.path.join(file);
        write_atomic(&path, bytes).map_err(CheckpointError::io(&path))
    }

    /// Writes `run.json`, then removes the checkpoint files it no longer names.
    fn commit(&self, record: RunRecord) -> Result<RunRecord, CheckpointError> {
        let json = serde_json::to_vec_pretty(&record).expect("a run record serializes");
        self.write(RUN_FILE, &json)?;
        let keep: Vec<&String> = record.files().collect();
        for entry in fs::read_dir(&self.path).map_err(CheckpointError::io(&self.path))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours =
                ["model-epoch", "optimizer-epoch", "ema-epoch", "best-epoch"].iter().any(|stem| name.starts_with(stem))
                    && name.ends_with(".bpk");
            if ours && !keep.contains(&&name) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(record)
    }

    /// The run's network, in evaluation mode (on `device`).
    pub fn load_network(&self, record: &RunRecord, device: &Device) -> Result<Network, CheckpointError> {
        self.load_network_file(record, &record.model_file, device)
    }

    /// The run's `weights`, in evaluation mode (on `device`); an error for weights the run does
    /// not keep.
    pub fn load_weights(
        &self,
        record: &RunRecord,
        device: &Device,
        weights: Weights,
    ) -> Result<Network, CheckpointError> {
        match weights {
            Weights::Last => self.load_network(record, device),
            Weights::Ema => {
                self.load_ema(record, device)?.ok_or_else(|| CheckpointError::NoEma { dir: self.path.clone() })
            }
            Weights::Best => match &record.best_file {
                Some(file) => self.load_network_file(record, file, device),
                None => Err(CheckpointError::NoBest { dir: self.path.clone() }),
            },
        }
    }

    /// The moving average of the run's weights (`--ema`), in evaluation mode (on `device`);
    /// `None` for a run that keeps none.
    pub fn load_ema(&self, record: &RunRecord, device: &Device) -> Result<Option<Network>, CheckpointError> {
        match (&record.ema_file, record.config.ema) {
            (Some(file), _) => self.load_network_file(record, file, device).map(Some),
            (None, Some(_)) if record.epochs_done > 0 => Err(CheckpointError::corrupt(
                &self.path.join(RUN_FILE),
                "keeps a moving average of the weights (ema) but names no file for it",
            )),
            (None, _) => Ok(None),
        }
    }

    fn load_network_file(&self, record: &RunRecord, file: &str, device: &Device) -> Result<Network, CheckpointError> {
        let path = self.path.join(file);
        let kind = record.config.model;
        let bytes = read_checkpoint_file(&path, kind)?;
        let model = load_network_bytes_for(kind, record.config.shape(), bytes, device)
            .map_err(|reason| CheckpointError::corrupt(&path, reason))?;
        if let Some(value) = model.first_non_finite() {
            return Err(CheckpointError::corrupt(&path, format!("holds a weight of {value}: the network diverged")));
        }
        Ok(model)
    }

    /// Everything needed to continue training: network (on `device`'s autodiff wrapper),
    /// optimizer state and history.
    pub fn load_state(&self, record: &RunRecord, device: &Device) -> Result<TrainState, CheckpointError> {
        let model = self.load_network(record, &device.clone().autodiff())?;
        let mut optim = optimizer_for(&record.config);
        if let Some(file) = &record.optimizer_file {
            let path = self.path.join(file);
            let bytes = read_checkpoint_file(&path, record.config.model)?;
            optim = optim.from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| CheckpointError::corrupt(&path, e))?;
        }
        let ema = match record.config.ema {
            Some(_) => Some(match self.load_ema(record, &device.clone().autodiff())? {
                Some(average) => average,
                // A run saved before its first epoch: the average starts where the weights do.
                None => crate::train::ema::copy_of(&model),
            }),
            None => None,
        };
        Ok(TrainState { model, optim, ema, history: record.history.clone() })
    }
}

/// Whether `dir` holds anything but the temporaries of interrupted writes.
fn holds_other_files(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else { return false };
    let names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let is_checkpoint =
        |n: &str| (n.starts_with("model-epoch") || n.starts_with("optimizer-epoch")) && n.ends_with(".bpk");
    // A first epoch killed before its run.json leaves its checkpoint (and maybe the derived
    // files): the run's own, not other files. Derived names alone could be anybody's.
    let has_checkpoint = names.iter().any(|n| is_checkpoint(n));
    names.iter().any(|n| {
        let ours = atomic::temporary_owner(n).is_some()
            || is_checkpoint(n)
            || (has_checkpoint && DERIVED_FILES.contains(&n.as_str()));
        !ours
    })
}

/// The bytes of a checkpoint file of a `kind` network, refused unread where it is not a
/// regular file (a device or a pipe would be read without end) or is far larger than any
/// checkpoint of that network (Adam's state, the larger file, holds three values a weight).
fn read_checkpoint_file(path: &Path, kind: ModelKind) -> Result<Vec<u8>, CheckpointError> {
    let meta = fs::metadata(path).map_err(CheckpointError::io(path))?;
    if !meta.is_file() {
        return Err(CheckpointError::corrupt(path, "is not a regular file"));
    }
    let limit = kind.parameter_bytes() * 4 + (16 << 20);
    if meta.len() > limit {
        return Err(CheckpointError::corrupt(
            path,
            format!("is {}, far more than any {kind} checkpoint (at most {})", ByteCount(meta.len()), ByteCount(limit)),
        ));
    }
    fs::read(path).map_err(CheckpointError::io(path))
}

/// Whether `name` is a file name alone (no directory, no `..`): what `run.json` may name.
fn is_plain_file_name(name: &str) -> bool {
    let path = Path::new(name);
    !name.is_empty() && path.file_name().is_some_and(|n| n == path.as_os_str()) && name != ".."
}

/// A network as burnpack bytes. Saved through `valid()`, which folds in the BN moving
/// statistics' last update (burn applies it lazily) and keeps parameter ids.
pub fn network_bytes(model: &Network) -> Vec<u8> {
    let mut store = BurnpackStore::from_bytes(None);
    model.valid().save_into(&mut store).expect("writing to memory cannot fail");
    store.get_bytes().expect("bytes after writing").to_vec()
}

/// A `kind` network (for Fashion-MNIST) on `device` from burnpack bytes; the error says what
/// does not fit.
pub fn load_network_bytes(kind: ModelKind, bytes: Vec<u8>, device: &Device) -> Result<Network, String> {
    load_network_bytes_for(kind, NetworkShape::default(), bytes, device)
}

/// [`load_network_bytes`] of a network for images and classes of `shape`.
pub fn load_network_bytes_for(
    kind: ModelKind,
    shape: NetworkShape,
    bytes: Vec<u8>,
    device: &Device,
) -> Result<Network, String> {
    let mut model = kind.build_for(shape, device);
    // Mismatches are checked below, to name them briefly.
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes))).allow_partial(true).validate(false);
    let result = model.load_from(&mut store).map_err(|e| format!("not a readable deepcnn checkpoint: {e}"))?;
    let mismatches: Vec<String> = (result.missing.iter().map(|(path, _)| format!("no {path}")))
        .chain(result.unused.iter().map(|path| format!("unexpected {path}")))
        .chain(result.errors.iter().map(|e| e.to_string()))
        .collect();
    if let Some(first) = mismatches.first() {
        let more = if mismatches.len() > 1 { format!(" and {} more", mismatches.len() - 1) } else { String::new() };
        return Err(format!("does not hold a {kind} network ({first}{more})"));
    }
    Ok(model)
}
