//! Hyper-parameters of a training run, with the book's defaults.

use crate::models::{InputSizeError, ModelKind};

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub model: ModelKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Images are resized to `resize`×`resize`; `None` means the model's default size.
    pub resize: Option<usize>,
    pub seed: u64,
    /// Train on the first `limit` training examples only.
    pub limit: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be at least 1, got {value}")]
    NotPositive { name: &'static str, value: usize },
    #[error("learning rate must be a positive finite number, got {0}")]
    BadLearningRate(f64),
    #[error(transparent)]
    InputSize(#[from] InputSizeError),
}

impl TrainConfig {
    /// The book's recipe: Adam with lr 0.001, batch 256, 5 epochs.
    pub fn new(model: ModelKind) -> Self {
        Self { model, epochs: 5, batch_size: 256, lr: 0.001, resize: None, seed: 0, limit: None }
    }

    /// Height and width of the images the network is trained on.
    pub fn image_size(&self) -> usize {
        self.resize.unwrap_or(self.model.default_train_size())
    }

    /// How many of `available` training examples a run uses (`limit` caps it).
    pub fn train_len(&self, available: usize) -> usize {
        self.limit.map_or(available, |l| l.min(available))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [("epochs", self.epochs), ("batch size", self.batch_size), ("limit", self.limit.unwrap_or(1))] {
            if value == 0 {
                return Err(ConfigError::NotPositive { name, value });
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(ConfigError::BadLearningRate(self.lr));
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
            TrainConfig { resize: Some(32), ..ok.clone() },
            TrainConfig { model: ModelKind::DenseNet, resize: Some(28), ..ok.clone() },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?} was accepted");
        }
    }

    #[test]
    fn densenet_defaults_to_the_books_96() {
        let c = TrainConfig::new(ModelKind::DenseNet);
        assert_eq!(c.image_size(), 96);
        assert!(c.validate().is_ok());
        assert_eq!(TrainConfig::new(ModelKind::ResNet18).image_size(), 28);
    }
}
