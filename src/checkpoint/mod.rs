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

use crate::models::{ModelKind, Network};
use crate::train::{optimizer_for, EpochMetrics, TrainConfig, TrainState};

pub const RUN_FILE: &str = "run.json";
const FORMAT: u32 = 1;

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
    /// The random state: every epoch's shuffle and augmentation derive from `config.seed` and
    /// the epoch number, so the next epoch is all a resumed run needs.
    pub next_epoch: usize,
    pub history: Vec<EpochMetrics>,
}

impl RunRecord {
    /// The record of a run at the end of `history`'s last epoch.
    fn new(config: &TrainConfig, model_file: String, optimizer_file: Option<String>, history: Vec<EpochMetrics>) -> Self {
        RunRecord {
            format: FORMAT,
            deepcnn_version: env!("CARGO_PKG_VERSION").to_string(),
            config: config.clone(),
            epochs_done: history.len(),
            model_file,
            optimizer_file,
            next_epoch: history.len() + 1,
            history,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{} holds no deepcnn run (no {RUN_FILE})", .dir.display())]
    NoRun { dir: PathBuf },
    #[error(
        "{} already holds a run ({model}, {epochs} epochs done); pass --resume to continue it or --force to replace it",
        .dir.display()
    )]
    RunExists { dir: PathBuf, model: ModelKind, epochs: usize },
    #[error("{}: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl CheckpointError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| CheckpointError::Io { path: path.to_path_buf(), source }
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
    /// `force` (its files are then replaced when the new run's first epoch is saved).
    pub fn create(path: &Path, force: bool) -> Result<Self, CheckpointError> {
        if !force && path.join(RUN_FILE).exists() {
            let (_, record) = RunDir::open(path)?;
            return Err(CheckpointError::RunExists {
                dir: path.to_path_buf(),
                model: record.config.model,
                epochs: record.epochs_done,
            });
        }
        fs::create_dir_all(path).map_err(CheckpointError::io(path))?;
        Ok(RunDir { path: path.to_path_buf() })
    }

    /// Opens an existing run and reads its `run.json`.
    pub fn open(path: &Path) -> Result<(Self, RunRecord), CheckpointError> {
        let file = path.join(RUN_FILE);
        if !file.is_file() {
            return Err(CheckpointError::NoRun { dir: path.to_path_buf() });
        }
        let text = fs::read(&file).map_err(CheckpointError::io(&file))?;
        let record: RunRecord = serde_json::from_slice(&text).map_err(|e| CheckpointError::corrupt(&file, e))?;
        if record.format != FORMAT {
            return Err(CheckpointError::corrupt(&file, format!("format {} (this deepcnn reads {FORMAT})", record.format)));
        }
        if record.history.len() != record.epochs_done || record.next_epoch != record.epochs_done + 1 {
            return Err(CheckpointError::corrupt(&file, "epoch count and history disagree"));
        }
        Ok((RunDir { path: path.to_path_buf() }, record))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Saves `state` (trained with `config`) as this run's latest checkpoint.
    pub fn save(&self, config: &TrainConfig, state: &TrainState) -> Result<RunRecord, CheckpointError> {
        let epoch = state.epochs_done();
        let model_file = format!("model-epoch{epoch}.bpk");
        let optimizer_file = format!("optimizer-epoch{epoch}.bpk");
        self.write(&model_file, &network_bytes(&state.model))?;
        let optim_bytes =
            state.optim.into_bytes().map_err(|e| CheckpointError::corrupt(&self.path.join(&optimizer_file), e))?;
        self.write(&optimizer_file, &optim_bytes)?;
        self.commit(RunRecord::new(config, model_file, Some(optimizer_file), state.history.clone()))
    }

    /// Saves a network that was not trained here (imported weights) as epoch 0 of a run.
    pub fn save_imported(&self, config: &TrainConfig, model: &Network) -> Result<RunRecord, CheckpointError> {
        let model_file = "model-epoch0.bpk".to_string();
        self.write(&model_file, &network_bytes(model))?;
        self.commit(RunRecord::new(config, model_file, None, Vec::new()))
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
        let keep = [Some(&record.model_file), record.optimizer_file.as_ref()];
        for entry in fs::read_dir(&self.path).map_err(CheckpointError::io(&self.path))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = (name.starts_with("model-epoch") || name.starts_with("optimizer-epoch")) && name.ends_with(".bpk");
            if ours && !keep.contains(&Some(&name)) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(record)
    }

    /// The run's network, in evaluation mode (on `device`).
    pub fn load_network(&self, record: &RunRecord, device: &Device) -> Result<Network, CheckpointError> {
        let path = self.path.join(&record.model_file);
        let bytes = fs::read(&path).map_err(CheckpointError::io(&path))?;
        load_network_bytes(record.config.model, bytes, device).map_err(|reason| CheckpointError::corrupt(&path, reason))
    }

    /// Everything needed to continue training: network (on `device`'s autodiff wrapper),
    /// optimizer state and history.
    pub fn load_state(&self, record: &RunRecord, device: &Device) -> Result<TrainState, CheckpointError> {
        let model = self.load_network(record, &device.clone().autodiff())?;
        let mut optim = optimizer_for(&record.config);
        if let Some(file) = &record.optimizer_file {
            let path = self.path.join(file);
            let bytes = fs::read(&path).map_err(CheckpointError::io(&path))?;
            optim = optim.from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| CheckpointError::corrupt(&path, e))?;
        }
        Ok(TrainState { model, optim, history: record.history.clone() })
    }
}

/// A network as burnpack bytes. Saved through `valid()`, which folds in the BN moving
/// statistics' last update (burn applies it lazily) and keeps parameter ids.
pub fn network_bytes(model: &Network) -> Vec<u8> {
    let mut store = BurnpackStore::from_bytes(None);
    model.valid().save_into(&mut store).expect("writing to memory cannot fail");
    store.get_bytes().expect("bytes after writing").to_vec()
}

/// A `kind` network on `device` from burnpack bytes; the error says what does not fit.
pub fn load_network_bytes(kind: ModelKind, bytes: Vec<u8>, device: &Device) -> Result<Network, String> {
    let mut model = Network::new(kind, device);
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
