//! Hyper-parameters of a training run, with the book's defaults. Everything beyond the book
//! (augmentation, schedules, weight decay) is off by default, except precise batch
//! normalization statistics before each evaluation (`precise_bn`, below).

use serde::{Deserialize, Serialize};

use super::metrics::EpochMetrics;
pub use crate::data::augment::Augment;
use crate::data::image_folder::MAX_CLASSES;
use crate::data::{Dataset, CLASS_NAMES};
use crate::models::{InputSizeError, ModelKind, NetworkShape};

/// How many training batches precise BN averages by default: on 8 LeNet-BN networks, 10, 40 and
/// 235 batches gave the same test accuracy to ±0.0005.
pub const DEFAULT_PRECISE_BN_BATCHES: usize = 10;

/// The most epochs a run may have.
pub const MAX_EPOCHS: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ModelKind,
    /// Total number of epochs (a resumed run continues up to this number).
    pub epochs: usize,
    pub batch_size: usize,
    /// Base learning rate (the peak one under a schedule).
    pub lr: f64,
    /// Images are resized to `resize`×`resize`; `None` means the model's default size.
    pub resize: Option<usize>,
    pub seed: u64,
    /// Train on the first `limit` training examples only.
    pub limit: Option<usize>,
    #[serde(default)]
    pub augment: Augment,
    #[serde(default)]
    pub schedule: Schedule,
    /// Decoupled weight decay (AdamW); 0 keeps the book's plain Adam.
    #[serde(default)]
    pub weight_decay: f64,
    /// Before each evaluation, set batch normalization's moving averages to the average
    /// statistics of this many training batches (precise BN, `precise_bn.rs`); 0 keeps the
    /// book's moving averages. Runs saved without the field (before it existed) read as 0, so
    /// they resume as they started.
    #[serde(default)]
    pub precise_bn: usize,
    /// Label smoothing of the training loss (PyTorch's `label_smoothing`): the targets are
    /// (1 − α)·one-hot + α/classes. 0 (the book's, and what runs saved before it read as) is
    /// plain cross-entropy. The test loss is always plain cross-entropy.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Linear warm-up of the learning rate over the first `warmup_epochs` epochs, for any
    /// schedule: step s of W warm-up steps takes the schedule's rate × (s + 1)/W. 0 (the
    /// book's, and what runs saved before it read as) is none.
    #[serde(default)]
    pub warmup_epochs: usize,
    /// Adam (the book's; AdamW with weight decay) or SGD. Runs saved before the field read as
    /// Adam.
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// SGD's momentum (PyTorch's, without dampening); 0 is plain SGD. Adam has none of its own.
    #[serde(default)]
    pub momentum: f64,
    /// Nesterov momentum for SGD.
    #[serde(default)]
    pub nesterov: bool,
    /// Scale the gradients so that their joint L2 norm is at most this (PyTorch's
    /// `clip_grad_norm_`); `None` (and runs saved before the field) clips nothing.
    #[serde(default)]
    pub clip_grad: Option<f64>,
    /// Keep an exponential moving average of the weights with this decay (timm's
    /// `ModelEmaV2`, e.g. 0.999), evaluated after every epoch and saved beside the weights;
    /// `None` (and runs saved before the field) keeps none.
    #[serde(default)]
    pub ema: Option<f64>,
    /// Hold the last `val_split` of the run's training examples out of training (as Keras's
    /// `validation_split` takes the last part) and test on them after every epoch: the run
    /// keeps the checkpoint of the best epoch by their accuracy, and early stopping looks at
    /// it. 0 (and runs saved before the field) holds nothing out.
    #[serde(default)]
    pub val_split: usize,
    /// Trained on one class tree (`DIR/<class>/*`, no test folder): this fraction of each
    /// class is held out as the test set ([`crate::data::image_folder::load_class_tree`]),
    /// the same images whenever the run's data is loaded again. `None` for data with a test set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_split: Option<f64>,
    /// Stop when `early_stop` epochs in a row brought no better validation accuracy.
    #[serde(default)]
    pub early_stop: Option<usize>,
    /// Mixup's α (timm's `mixup_alpha`): each batch blended with itself reversed by
    /// λ ~ Beta(α, α) ([`super::mix`]); 0 (and runs saved before the field) is off.
    #[serde(default)]
    pub mixup: f64,
    /// CutMix's α (timm's `cutmix_alpha`); 0 is off. With mixup too, each batch takes one.
    #[serde(default)]
    pub cutmix: f64,
    /// The images' channels (1 grey, 3 colour), from the data trained on; runs saved before
    /// the field (all on Fashion-MNIST) read as its 1.
    #[serde(default = "one_channel")]
    pub channels: usize,
    /// The classes' names in label order, from the data trained on (an image folder's class
    /// folders); `None` is Fashion-MNIST's ten, and what runs saved before the field read as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
}

fn one_channel() -> usize {
    1
}

/// The optimizer a run trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// The book's Adam (PyTorch's defaults); AdamW where there is weight decay.
    #[default]
    Adam,
    /// Stochastic gradient descent, with momentum and Nesterov as asked; weight decay added to
    /// the gradient, as PyTorch's SGD has it.
    Sgd,
}

/// How the learning rate moves over the run's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// The book's: the same rate throughout.
    #[default]
    Constant,
    /// Cosine decay from the base rate to 0 over all steps.
    Cosine,
    /// PyTorch's `OneCycleLR` defaults: warm up from lr/25 to lr over the first 30% of
    /// steps, then cosine down to lr/25/10⁴.
    OneCycle,
}

impl Schedule {
    /// Its name on the command line and in `run.json`.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Cosine => "cosine",
            Schedule::OneCycle => "one-cycle",
        }
    }

    /// The learning rate for step `step` (0-based) of `total` steps.
    pub fn lr(self, base: f64, step: usize, total: usize) -> f64 {
        let cos = |from: f64, to: f64, t: f64| to + (from - to) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0;
        let total = total.max(1) as f64;
        let step = step as f64;
        match self {
            Schedule::Constant => base,
            Schedule::Cosine => cos(base, 0.0, step / total),
            Schedule::OneCycle => {
                let (initial, last) = (base / 25.0, base / 25.0 / 1e4);
                let warm = (0.3 * total - 1.0).max(1.0);
                if step <= warm {
                    cos(initial, base, step / warm)
                } else {
                    cos(base, last, ((step - warm) / (total - 1.0 - warm).max(1.0)).min(1.0))
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the run's network takes {run}; the data has {data}")]
    OtherData { run: String, data: String },
    #[error("images have 1 channel (grey) or 3 (colour), not {0}")]
    BadChannels(usize),
    #[error("a network needs 1 to {MAX_CLASSES} classes, not {0}")]
    BadClassCount(usize),
    #[error("{name} must be at least 1, got {value}")]
    NotPositive { name: &'static str, value: usize },
    #[error("{0} epochs is more than any run needs (at most {MAX_EPOCHS})")]
    TooManyEpochs(usize),
    #[error("learning rate must be a positive finite number, got {0}")]
    BadLearningRate(f64),
    #[error("weight decay must be a finite number ≥ 0, got {0}")]
    BadWeightDecay(f64),
    #[error("label smoothing must be at least 0 and below 1, got {0}")]
    BadLabelSmoothing(f64),
    #[error("{name}'s α must be a finite number ≥ 0, got {value}")]
    BadMixAlpha { name: &'static str, value: f64 },
    #[error("early stopping watches the validation split: pass --val-split too")]
    EarlyStopWithoutValidation,
    #[error(
        "on one class tree --val-split holds out the test set, which early stopping must not watch: \
         lay the images out as DIR/train/<class> and DIR/test/<class> to have both"
    )]
    EarlyStopOnClassTree,
    #[error("a held-out fraction must be above 0 and below 1 (e.g. 0.1), got {0}")]
    BadTestSplit(f64),
    #[error("a validation split of {val} leaves none of the {available} training examples to train on")]
    ValSplitTooLarge { val: usize, available: usize },
    #[error("the EMA decay must be above 0 and below 1 (e.g. 0.999), got {0}")]
    BadEma(f64),
    #[error("the random-erasing probability must be between 0 and 1, got {0}")]
    BadErasing(f64),
    #[error("momentum must be at least 0 and below 1, got {0}")]
    BadMomentum(f64),
    #[error("momentum and Nesterov are SGD's settings (Adam has its own moments): pass --optimizer sgd")]
    MomentumWithoutSgd,
    #[error("Nesterov momentum needs a momentum above 0")]
    NesterovWithoutMomentum,
    #[error("the gradient-norm limit must be a positive finite number, got {0}")]
    BadClipGrad(f64),
    #[error("a warm-up of {warmup} epochs is longer than the run's {epochs}")]
    WarmupTooLong { warmup: usize, epochs: usize },
    #[error("{0} has no batch normalization, so precise BN has nothing to recompute")]
    NoBatchNorm(ModelKind),
    #[error(
        "crop padding {padding} is too large for {rows}×{cols} images (it must be less than half the smaller side)"
    )]
    BadCropPadding { padding: usize, rows: usize, cols: usize },
    #[error("the learning rate {0:e} is not a number f32 can hold (it must be at least 1.2e-38 and at most 3.4e38)")]
    LearningRateOutOfRange(f64),
    #[error(transparent)]
    InputSize(#[from] InputSizeError),
}

impl TrainConfig {
    /// The book's recipe: Adam with lr 0.001, batch 256, 5 epochs. One departure: networks with
    /// batch normalization are evaluated with precise statistics from 10 training batches
    /// (why: `precise_bn.rs`).
    pub fn new(model: ModelKind) -> Self {
        Self {
            model,
            epochs: 5,
            batch_size: 256,
            lr: 0.001,
            resize: None,
            seed: 0,
            limit: None,
            augment: Augment::default(),
            schedule: Schedule::Constant,
            weight_decay: 0.0,
            precise_bn: if model.has_batch_norm() { DEFAULT_PRECISE_BN_BATCHES } else { 0 },
            label_smoothing: 0.0,
            warmup_epochs: 0,
            optimizer: OptimizerKind::Adam,
            momentum: 0.0,
            nesterov: false,
            clip_grad: None,
            ema: None,
            val_split: 0,
            test_split: None,
            early_stop: None,
            mixup: 0.0,
            cutmix: 0.0,
            channels: 1,
            class_names: None,
        }
    }

    /// Checks the settings that depend on the data: the crop padding against the size of its
    /// images (augmentation works on the images as stored, before any resize).
    pub fn check_data(&self, [rows, cols]: [usize; 2]) -> Result<(), ConfigError> {
        // A padding of half the side or more can crop out nothing but padding.
        let padding = self.augment.crop_padding;
        if padding > 0 && padding >= rows.min(cols).div_ceil(2) {
            return Err(ConfigError::BadCropPadding { padding, rows, cols });
        }
        Ok(())
    }

    /// What the network's first and last layers are sized for.
    pub fn shape(&self) -> NetworkShape {
        NetworkShape { channels: self.channels, classes: self.classes().len() }
    }

    /// The class names, in label order.
    pub fn classes(&self) -> Vec<String> {
        match &self.class_names {
            Some(names) => names.clone(),
            None => CLASS_NAMES.iter().map(|n| n.to_string()).collect(),
        }
    }

    /// The run's settings for `data`'s images and classes: Fashion-MNIST's are the default
    /// (`class_names` stays `None`, as in runs saved before image folders).
    pub fn for_data(mut self, data: &Dataset) -> Self {
        self.channels = data.channels();
        let fashion_mnist = data.classes().iter().map(String::as_str).eq(CLASS_NAMES);
        self.class_names = (!fashion_mnist).then(|| data.classes().to_vec());
        self
    }

    /// Refuses data whose images or classes are not the ones the run's network was built for
    /// (a resumed run, or an evaluation, pointed at other data).
    pub fn check_classes(&self, data: &Dataset) -> Result<(), ConfigError> {
        let classes = self.classes();
        if data.channels() != self.channels || data.classes() != classes.as_slice() {
            let describe = |channels: usize, classes: &[String]| {
                let colour = if channels == 1 { "grey" } else { "colour" };
                let mut names = classes.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
                if classes.len() > 4 {
                    names += ", …";
                }
                format!("{colour} images of {} classes ({names})", classes.len())
            };
            return Err(ConfigError::OtherData {
                run: describe(self.channels, &classes),
                data: describe(data.channels(), data.classes()),
            });
        }
        Ok(())
    }

    /// Height and width of the images the network is trained on.
    pub fn image_size(&self) -> usize {
        self.resize.unwrap_or(self.model.default_train_size())
    }

    /// The learning rate of step `step` (0-based, counted over the whole run) of `total`, with
    /// `steps_per_epoch` steps an epoch: the schedule's, ramped up over the warm-up epochs.
    pub fn lr_at(&self, step: usize, total: usize, steps_per_epoch: usize) -> f64 {
        let rate = self.schedule.lr(self.lr, step, total);
        let warmup_steps = self.warmup_epochs * steps_per_epoch;
        match step < warmup_steps {
            true => rate * (step + 1) as f64 / warmup_steps as f64,
            false => rate,
        }
    }

    /// How many of `available` training examples a run trains on: the first `limit` of them,
    /// less the validation split held out at their end.
    pub fn train_len(&self, available: usize) -> usize {
        self.usable_len(available).saturating_sub(self.val_split)
    }

    /// The first `limit` of `available` training examples: those trained on and validated on.
    pub fn usable_len(&self, available: usize) -> usize {
        self.limit.map_or(available, |l| l.min(available))
    }

    /// The examples held out for validation (after the ones trained on).
    pub fn val_range(&self, available: usize) -> std::ops::Range<usize> {
        self.train_len(available)..self.usable_len(available)
    }

    /// Checks the validation split against the `available` training examples, and that early
    /// stopping has one to watch.
    pub fn check_val_split(&self, available: usize) -> Result<(), ConfigError> {
        if self.early_stop.is_some() && self.val_split == 0 {
            return Err(match self.test_split {
                Some(_) => ConfigError::EarlyStopOnClassTree,
                None => ConfigError::EarlyStopWithoutValidation,
            });
        }
        let usable = self.usable_len(available);
        if self.val_split > 0 && self.val_split >= usable {
            return Err(ConfigError::ValSplitTooLarge { val: self.val_split, available: usable });
        }
        Ok(())
    }

    /// The epoch (1-based) of the best validation accuracy in `history` (the first of equals).
    pub fn best_epoch(history: &[EpochMetrics]) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for m in history {
            if let Some(acc) = m.val_accuracy {
                if best.is_none_or(|(_, b)| acc > b) {
                    best = Some((m.epoch, acc));
                }
            }
        }
        best.map(|(epoch, _)| epoch)
    }

    /// Whether early stopping ends the run after `history`: `early_stop` epochs since the best.
    pub fn stops_early(&self, history: &[EpochMetrics]) -> bool {
        match (self.early_stop, Self::best_epoch(history)) {
            (Some(patience), Some(best)) => history.len() - best >= patience,
            _ => false,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in
            [("epochs", self.epochs), ("batch size", self.batch_size), ("limit", self.limit.unwrap_or(1))]
        {
            if value == 0 {
                return Err(ConfigError::NotPositive { name, value });
            }
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(ConfigError::BadChannels(self.channels));
        }
        if let Some(names) = &self.class_names {
            if names.is_empty() || names.len() > MAX_CLASSES {
                return Err(ConfigError::BadClassCount(names.len()));
            }
        }
        // Step counts (epochs × steps an epoch) must not overflow; no run is this long.
        if self.epochs > MAX_EPOCHS {
            return Err(ConfigError::TooManyEpochs(self.epochs));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(ConfigError::BadLearningRate(self.lr));
        }
        // The optimizer computes in f32: a rate that rounds to 0 or infinity there is no rate.
        if !(self.lr as f32).is_normal() {
            return Err(ConfigError::LearningRateOutOfRange(self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(ConfigError::BadWeightDecay(self.weight_decay));
        }
        if self.warmup_epochs > self.epochs {
            return Err(ConfigError::WarmupTooLong { warmup: self.warmup_epochs, epochs: self.epochs });
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(ConfigError::BadLabelSmoothing(self.label_smoothing));
        }
        if !(0.0..=1.0).contains(&self.augment.erasing) {
            return Err(ConfigError::BadErasing(self.augment.erasing));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(ConfigError::BadMomentum(self.momentum));
        }
        if self.optimizer != OptimizerKind::Sgd && (self.momentum > 0.0 || self.nesterov) {
            return Err(ConfigError::MomentumWithoutSgd);
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(ConfigError::NesterovWithoutMomentum);
        }
        for (name, value) in [("mixup", self.mixup), ("CutMix", self.cutmix)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::BadMixAlpha { name, value });
            }
        }
        if self.early_stop == Some(0) {
            return Err(ConfigError::NotPositive { name: "early stop", value: 0 });
        }
        if let Some(fraction) = self.test_split.filter(|f| !(*f > 0.0 && *f < 1.0)) {
            return Err(ConfigError::BadTestSplit(fraction));
        }
        if let Some(decay) = self.ema.filter(|d| !(*d > 0.0 && *d < 1.0)) {
            return Err(ConfigError::BadEma(decay));
        }
        if let Some(max) = self.clip_grad.filter(|m| !(m.is_finite() && *m > 0.0)) {
            return Err(ConfigError::BadClipGrad(max));
        }
        if self.precise_bn > 0 && !self.model.has_batch_norm() {
            return Err(ConfigError::NoBatchNorm(self.model));
        }
        self.model.check_input(self.image_size())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_nonsense_values() {
        let ok = TrainConfig::new(ModelKind::LeNetBn);
        assert!(ok.validate().is_ok());
        let bad = [
            TrainConfig { epochs: 0, ..ok.clone() },
            TrainConfig { batch_size: 0, ..ok.clone() },
            TrainConfig { limit: Some(0), ..ok.clone() },
            TrainConfig { lr: -0.1, ..ok.clone() },
            TrainConfig { lr: f64::NAN, ..ok.clone() },
            TrainConfig { weight_decay: -1.0, ..ok.clone() },
            TrainConfig { lr: 1e-320, ..ok.clone() },
            TrainConfig { epochs: MAX_EPOCHS + 1, ..ok.clone() },
            TrainConfig { lr: 1e308, ..ok.clone() },
            TrainConfig { resize: Some(32), ..ok.clone() },
            TrainConfig { model: ModelKind::DenseNet, resize: Some(28), ..ok.clone() },
            TrainConfig { model: ModelKind::LeNet, precise_bn: 10, ..ok.clone() },
            TrainConfig { label_smoothing: -0.1, ..ok.clone() },
            TrainConfig { label_smoothing: 1.0, ..ok.clone() },
            TrainConfig { label_smoothing: f64::NAN, ..ok.clone() },
            TrainConfig { warmup_epochs: 6, ..ok.clone() },
            TrainConfig { momentum: 0.9, ..ok.clone() },
            TrainConfig { nesterov: true, ..ok.clone() },
            TrainConfig { optimizer: OptimizerKind::Sgd, nesterov: true, ..ok.clone() },
            TrainConfig { optimizer: OptimizerKind::Sgd, momentum: 1.0, ..ok.clone() },
            TrainConfig { optimizer: OptimizerKind::Sgd, momentum: -0.5, ..ok.clone() },
            TrainConfig { clip_grad: Some(0.0), ..ok.clone() },
            TrainConfig { ema: Some(1.0), ..ok.clone() },
            TrainConfig { test_split: Some(1.0), ..ok.clone() },
            TrainConfig { test_split: Some(f64::NAN), ..ok.clone() },
            TrainConfig { mixup: -0.2, ..ok.clone() },
            TrainConfig { cutmix: f64::INFINITY, ..ok.clone() },
            TrainConfig { early_stop: Some(0), val_split: 10, ..ok.clone() },
            TrainConfig { ema: Some(0.0), ..ok.clone() },
            TrainConfig { ema: Some(f64::NAN), ..ok.clone() },
            TrainConfig { augment: Augment { erasing: 1.5, ..Augment::default() }, ..ok.clone() },
            TrainConfig { augment: Augment { erasing: f64::NAN, ..Augment::default() }, ..ok.clone() },
            TrainConfig { clip_grad: Some(f64::INFINITY), ..ok.clone() },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?} was accepted");
        }
    }

    #[test]
    fn crop_padding_is_checked_against_the_datas_own_images() {
        let c = TrainConfig { augment: Augment::crop_flip(14, false), ..TrainConfig::new(ModelKind::ResNet18) };
        assert!(c.validate().is_ok());
        let e = c.check_data([28, 28]).unwrap_err().to_string();
        assert!(e.starts_with("crop padding 14 is too large for 28×28 images"), "{e}");
        assert!(c.check_data([64, 29]).is_ok());
        assert!(c.check_data([29, 28]).is_err());
        let small = TrainConfig { augment: Augment::crop_flip(3, false), ..c };
        assert!(small.check_data([1, 1]).is_err() && small.check_data([7, 7]).is_ok());
        // A padding too large to double is refused, not wrapped around.
        let huge = TrainConfig { augment: Augment::crop_flip(usize::MAX / 2 + 1, false), ..small };
        assert!(huge.check_data([28, 28]).is_err());
    }

    #[test]
    fn precise_bn_is_on_by_default_wherever_there_is_batch_normalization() {
        for model in ModelKind::ALL {
            let c = TrainConfig::new(model);
            assert_eq!(c.precise_bn, if model == ModelKind::LeNet { 0 } else { 10 }, "{model}");
            assert!(c.validate().is_ok(), "{model}");
        }
        // A run saved before the field existed resumes with the book's moving averages.
        let mut json = serde_json::to_value(TrainConfig::new(ModelKind::LeNetBn)).unwrap();
        json.as_object_mut().unwrap().remove("precise_bn");
        assert_eq!(serde_json::from_value::<TrainConfig>(json).unwrap().precise_bn, 0);
    }

    /// Warm-up ramps any schedule's rate linearly over its steps, then leaves it alone; runs
    /// saved before it existed read as none.
    #[test]
    fn warmup_ramps_the_schedules_rate() {
        for schedule in [Schedule::Constant, Schedule::Cosine, Schedule::OneCycle] {
            let c = TrainConfig { schedule, warmup_epochs: 2, epochs: 5, ..TrainConfig::new(ModelKind::LeNetBn) };
            assert!(c.validate().is_ok());
            let (per_epoch, total) = (10, 50);
            for step in 0..total {
                let plain = schedule.lr(c.lr, step, total);
                let expected = if step < 20 { plain * (step + 1) as f64 / 20.0 } else { plain };
                assert!((c.lr_at(step, total, per_epoch) - expected).abs() < 1e-15, "{schedule:?} step {step}");
            }
            assert!(c.lr_at(0, total, per_epoch) < c.lr_at(10, total, per_epoch));
        }
        let none = TrainConfig::new(ModelKind::LeNetBn);
        assert_eq!(none.lr_at(0, 50, 10), none.lr);
        let mut json = serde_json::to_value(none).unwrap();
        json.as_object_mut().unwrap().remove("warmup_epochs");
        assert_eq!(serde_json::from_value::<TrainConfig>(json).unwrap().warmup_epochs, 0);
    }

    /// SGD with Nesterov momentum is a valid recipe; runs saved before the optimizer fields
    /// existed resume with the book's Adam and no clipping.
    #[test]
    fn sgd_is_the_other_optimizer_and_old_runs_stay_adam() {
        let sgd = TrainConfig {
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            nesterov: true,
            clip_grad: Some(5.0),
            ..TrainConfig::new(ModelKind::ResNet18)
        };
        assert!(sgd.validate().is_ok());
        let json = serde_json::to_value(&sgd).unwrap();
        assert_eq!(json["optimizer"], "sgd");
        assert_eq!(serde_json::from_value::<TrainConfig>(json).unwrap(), sgd);
        let mut old = serde_json::to_value(TrainConfig::new(ModelKind::LeNetBn)).unwrap();
        let fields =
            ["optimizer", "momentum", "nesterov", "clip_grad", "ema", "val_split", "early_stop", "mixup", "cutmix"];
        for field in fields {
            old.as_object_mut().unwrap().remove(field);
        }
        let old: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!((old.optimizer, old.momentum, old.nesterov, old.clip_grad), (OptimizerKind::Adam, 0.0, false, None));
        assert_eq!((old.ema, old.val_split, old.early_stop, old.mixup, old.cutmix), (None, 0, None, 0.0, 0.0));
    }

    /// The split holds out the end of the (limited) training examples; the best epoch is the
    /// first of the highest validation accuracy, and early stopping counts epochs since it.
    #[test]
    fn the_validation_split_and_early_stopping() {
        let c = TrainConfig {
            val_split: 100,
            limit: Some(1000),
            early_stop: Some(2),
            ..TrainConfig::new(ModelKind::LeNetBn)
        };
        assert!(c.validate().is_ok());
        assert_eq!((c.train_len(60_000), c.val_range(60_000)), (900, 900..1000));
        assert_eq!((c.train_len(500), c.val_range(500)), (400, 400..500));
        assert!(c.check_val_split(1000).is_ok() && c.check_val_split(100).is_err());
        // Early stopping needs a validation split to watch, and one class tree's held-out part
        // is its test set.
        let unwatched = TrainConfig { val_split: 0, ..c.clone() };
        assert!(matches!(unwatched.check_val_split(1000), Err(ConfigError::EarlyStopWithoutValidation)));
        let tree = TrainConfig { test_split: Some(0.1), ..unwatched };
        assert!(matches!(tree.check_val_split(1000), Err(ConfigError::EarlyStopOnClassTree)));
        let epoch = |epoch, val| EpochMetrics {
            epoch,
            loss: 1.0,
            train_accuracy: 0.5,
            test_accuracy: 0.5,
            ema_test_accuracy: None,
            val_accuracy: Some(val),
            seconds: 1.0,
            examples_per_sec: 1.0,
        };
        let history = [epoch(1, 0.5), epoch(2, 0.7), epoch(3, 0.7), epoch(4, 0.6)];
        assert_eq!(TrainConfig::best_epoch(&history), Some(2));
        assert!(!c.stops_early(&history[..3]) && c.stops_early(&history));
        assert_eq!(TrainConfig::best_epoch(&[]), None);
    }

    /// Runs saved before label smoothing existed train on as they did: plain cross-entropy.
    #[test]
    fn runs_saved_without_label_smoothing_read_as_none() {
        let mut json = serde_json::to_value(TrainConfig::new(ModelKind::LeNetBn)).unwrap();
        json.as_object_mut().unwrap().remove("label_smoothing");
        assert_eq!(serde_json::from_value::<TrainConfig>(json).unwrap().label_smoothing, 0.0);
    }

    #[test]
    fn densenet_defaults_to_the_books_96() {
        let c = TrainConfig::new(ModelKind::DenseNet);
        assert_eq!(c.image_size(), 96);
        assert!(c.validate().is_ok());
        assert_eq!(TrainConfig::new(ModelKind::ResNet18).image_size(), 28);
    }

    #[test]
    fn round_trips_through_json() {
        let mut c = TrainConfig::new(ModelKind::ResNet18);
        c.augment = Augment::crop_flip(4, true);
        c.schedule = Schedule::OneCycle;
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"resnet18\"") && json.contains("\"one-cycle\""), "{json}");
        assert_eq!(serde_json::from_str::<TrainConfig>(&json).unwrap(), c);
        // The names the header prints are the ones run.json and the command line use.
        for schedule in [Schedule::Constant, Schedule::Cosine, Schedule::OneCycle] {
            assert_eq!(serde_json::to_value(schedule).unwrap(), schedule.name());
        }
    }

    #[test]
    fn schedules_start_peak_and_end_where_pytorch_does() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12 * b.abs().max(1.0);
        assert_eq!(Schedule::Constant.lr(0.1, 57, 100), 0.1);
        // Cosine: full rate at step 0, half at the middle, approaching 0.
        assert!(close(Schedule::Cosine.lr(0.1, 0, 100), 0.1));
        assert!(close(Schedule::Cosine.lr(0.1, 50, 100), 0.05));
        assert!(Schedule::Cosine.lr(0.1, 99, 100) < 1e-3);
        // One-cycle (PyTorch OneCycleLR, total_steps=100): lr/25 at 0, lr at step 29, lr/25e4 at 99.
        assert!(close(Schedule::OneCycle.lr(0.1, 0, 100), 0.004));
        assert!(close(Schedule::OneCycle.lr(0.1, 29, 100), 0.1));
        assert!(close(Schedule::OneCycle.lr(0.1, 99, 100), 0.1 / 25.0 / 1e4));
        let rates: Vec<f64> = (0..100).map(|s| Schedule::OneCycle.lr(0.1, s, 100)).collect();
        assert!(rates[..30].windows(2).all(|w| w[0] <= w[1]) && rates[29..].windows(2).all(|w| w[0] >= w[1]));
    }
}
