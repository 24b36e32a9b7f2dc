//! Evaluation: loss, accuracy and the confusion matrix of a network on a data set, in
//! evaluation mode.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use serde::Serialize;

use super::metrics::Tally;
use crate::data::{Batcher, Dataset, CLASS_NAMES, NUM_CLASSES};
use crate::models::Network;

/// Loss and accuracy of `model` on all of `data`. `model` should be in evaluation mode
/// (`Module::valid()`), so batch normalization uses its moving averages.
pub fn evaluate(model: &Network, data: &Dataset, batcher: &Batcher, batch_size: usize) -> Tally {
    let report = evaluate_report(model, data, batcher, batch_size);
    Tally { examples: report.examples, correct: report.correct(), loss_sum: report.loss * report.examples as f64 }
}

/// Everything `deepcnn eval` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub examples: usize,
    /// Mean cross-entropy.
    pub loss: f64,
    pub accuracy: f64,
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassAccuracy {
    pub class: &'static str,
    pub examples: usize,
    pub accuracy: f64,
}

impl EvalReport {
    fn from_confusion(confusion: Vec<Vec<usize>>, loss_sum: f64) -> Self {
        let examples: usize = confusion.iter().flatten().sum();
        let correct: usize = (0..NUM_CLASSES).map(|c| confusion[c][c]).sum();
        let per_class = (0..NUM_CLASSES)
            .map(|c| {
                let n: usize = confusion[c].iter().sum();
                ClassAccuracy { class: CLASS_NAMES[c], examples: n, accuracy: confusion[c][c] as f64 / n.max(1) as f64 }
            })
            .collect();
        let denominator = examples.max(1) as f64;
        Self { examples, loss: loss_sum / denominator, accuracy: correct as f64 / denominator, per_class, confusion }
    }

    pub fn correct(&self) -> usize {
        (0..NUM_CLASSES).map(|c| self.confusion[c][c]).sum()
    }
}

/// Loss, accuracy, per-class accuracy and confusion matrix of `model` (in evaluation mode) on
/// all of `data`.
pub fn evaluate_report(model: &Network, data: &Dataset, batcher: &Batcher, batch_size: usize) -> EvalReport {
    let loss_fn = CrossEntropyLossConfig::new().init(&batcher.device);
    let order: Vec<usize> = (0..data.len()).collect();
    let mut confusion = vec![vec![0usize; NUM_CLASSES]; NUM_CLASSES];
    let mut loss_sum = 0.0;
    for batch in batcher.batches(data, &order, batch_size) {
        let logits = model.forward(batch.images);
        let n = batch.labels.dims()[0];
        let loss = loss_fn.forward(logits.clone(), batch.labels.clone());
        loss_sum += loss.into_scalar::<f64>() * n as f64;
        let predicted = int_values(logits.argmax(1).flatten(0, 1));
        for (truth, guess) in int_values(batch.labels).into_iter().zip(predicted) {
            confusion[truth as usize][guess as usize] += 1;
        }
    }
    EvalReport::from_confusion(confusion, loss_sum)
}

fn int_values(t: Tensor<1, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().try_to_vec::<i64>().expect("int tensor converted to i64")
}

/// How many rows of `logits` have their largest value at the label, as a one-element tensor
/// left on the device.
pub fn correct_count(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1, Int> {
    let predicted: Tensor<1, Int> = logits.argmax(1).squeeze_dim(1);
    predicted.equal(labels).int().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_adds_up_from_the_confusion_matrix() {
        let mut confusion = vec![vec![0; NUM_CLASSES]; NUM_CLASSES];
        confusion[0][0] = 3;
        confusion[0][6] = 1; // a T-shirt taken for a shirt
        confusion[9][9] = 4;
        let r = EvalReport::from_confusion(confusion, 2.0);
        assert_eq!(r.examples, 8);
        assert_eq!(r.correct(), 7);
        assert_eq!(r.accuracy, 7.0 / 8.0);
        assert_eq!(r.loss, 0.25);
        assert_eq!((r.per_class[0].class, r.per_class[0].examples, r.per_class[0].accuracy), ("T-shirt/top", 4, 0.75));
        assert_eq!(r.per_class[9].accuracy, 1.0);
        assert_eq!(r.per_class[1].examples, 0);
    }
}
