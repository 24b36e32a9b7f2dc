//! What one epoch of training reports.

use std::fmt;

/// One epoch's numbers, printed like the book's `train_ch5`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    /// Mean training cross-entropy over the epoch's examples.
    pub loss: f64,
    pub train_accuracy: f64,
    /// On the whole test split, in evaluation mode (BN moving averages).
    pub test_accuracy: f64,
    /// The same for the moving average of the weights, in runs that keep one (`--ema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_test_accuracy: Option<f64>,
    /// On the validation split held out of the training set, in runs that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    /// Wall time of the epoch, training and test evaluation together (as the book times it).
    pub seconds: f64,
    /// Training throughput: training examples / training time (evaluation excluded).
    pub examples_per_sec: f64,
}

impl fmt::Display for EpochMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}, loss {:.4}, train acc {:.3}", self.epoch, self.loss, self.train_accuracy)?;
        if let Some(val) = self.val_accuracy {
            write!(f, ", val acc {val:.3}")?;
        }
        write!(f, ", test acc {:.3}", self.test_accuracy)?;
        if let Some(ema) = self.ema_test_accuracy {
            write!(f, ", EMA test acc {ema:.3}")?;
        }
        write!(f, ", {:.1} s, {:.0} examples/sec", self.seconds, self.examples_per_sec)
    }
}

/// Running sums over the batches of an epoch or an evaluation pass.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub examples: usize,
    pub correct: usize,
    pub loss_sum: f64,
}

impl Tally {
    /// Adds a batch of `examples` whose mean loss was `mean_loss`.
    pub fn add(&mut self, examples: usize, correct: usize, mean_loss: f64) {
        self.examples += examples;
        self.correct += correct;
        self.loss_sum += mean_loss * examples as f64;
    }

    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.examples.max(1) as f64
    }

    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.examples.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_the_book() {
        let m = EpochMetrics {
            epoch: 3,
            loss: 0.31214,
            train_accuracy: 0.8871,
            test_accuracy: 0.8719,
            ema_test_accuracy: None,
            val_accuracy: None,
            seconds: 14.24,
            examples_per_sec: 4231.4,
        };
        assert_eq!(m.to_string(), "epoch 3, loss 0.3121, train acc 0.887, test acc 0.872, 14.2 s, 4231 examples/sec");
        let ema = EpochMetrics { ema_test_accuracy: Some(0.88049), val_accuracy: Some(0.9), ..m };
        assert_eq!(
            ema.to_string(),
            "epoch 3, loss 0.3121, train acc 0.887, val acc 0.900, test acc 0.872, EMA test acc 0.880, 14.2 s, 4231 examples/sec"
        );
    }

    #[test]
    fn tally_weights_batches_by_size() {
        let mut t = Tally::default();
        t.add(3, 3, 1.0);
        t.add(1, 0, 5.0);
        assert_eq!(t.mean_loss(), 2.0);
        assert_eq!(t.accuracy(), 0.75);
    }
}
