//! Evaluation: loss, accuracy and the confusion matrix of a network on a data set, in
//! evaluation mode.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use serde::Serialize;

use super::metrics::Tally;
use super::read_back::{read_back, Unread, READ_BACK_EVERY};
use crate::data::{Batcher, Dataset, CLASS_NAMES, NUM_CLASSES};
use crate::models::Network;

/// Loss and accuracy of `model` on all of `data`. `model` should be in evaluation mode
/// (`Module::valid()`), so batch normalization uses its moving averages.
/// `progress` is told how many examples each batch held, once it is computed.
pub fn evaluate(
    model: &Network,
    data: &Dataset,
    batcher: &Batcher,
    batch_size: usize,
    progress: &mut dyn FnMut(usize),
) -> Tally {
    let report = evaluate_report(model, data, batcher, batch_size, progress);
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
    /// `None` (JSON `null`) for a class with no examples: there is nothing to be right about.
    pub accuracy: Option<f64>,
}

impl EvalReport {
    fn from_confusion(confusion: Vec<Vec<usize>>, loss_sum: f64) -> Self {
        let examples: usize = confusion.iter().flatten().sum();
        let correct: usize = (0..NUM_CLASSES).map(|c| confusion[c][c]).sum();
        let per_class = (0..NUM_CLASSES)
            .map(|c| {
                let n: usize = confusion[c].iter().sum();
                let accuracy = (n > 0).then(|| confusion[c][c] as f64 / n as f64);
                ClassAccuracy { class: CLASS_NAMES[c], examples: n, accuracy }
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
/// all of `data`; `progress` is told how many examples each batch held, once it is computed.
pub fn evaluate_report(
    model: &Network,
    data: &Dataset,
    batcher: &Batcher,
    batch_size: usize,
    progress: &mut dyn FnMut(usize),
) -> EvalReport {
    let loss_fn = CrossEntropyLossConfig::new().init(&batcher.device);
    let order: Vec<usize> = (0..data.len()).collect();
    let mut counts = Counts { confusion: vec![vec![0usize; NUM_CLASSES]; NUM_CLASSES], loss_sum: 0.0, next_example: 0 };
    // Each batch's mean loss and predicted classes, still on the device.
    let mut unread: Unread = Vec::new();
    for batch in batcher.batches(data, &order, batch_size) {
        let logits = model.forward(batch.images);
        let loss = loss_fn.forward(logits.clone(), batch.labels);
        let predicted: Tensor<1, Int> = logits.argmax(1).flatten(0, 1);
        progress(predicted.dims()[0]);
        unread.push((loss.reshape([1]), predicted));
        if unread.len() == READ_BACK_EVERY {
            counts.read_back(&mut unread, data);
        }
    }
    counts.read_back(&mut unread, data);
    EvalReport::from_confusion(counts.confusion, counts.loss_sum)
}

/// What evaluation has read back so far; examples come in the data set's order.
struct Counts {
    confusion: Vec<Vec<usize>>,
    loss_sum: f64,
    next_example: usize,
}

impl Counts {
    /// Reads the unread batches back with one wait for the device, as the training loop does
    /// (a read per batch would stall a GPU after every batch).
    fn read_back(&mut self, unread: &mut Unread, data: &Dataset) {
        for (loss, predicted) in read_back(unread) {
            self.loss_sum += loss * predicted.len() as f64;
            for guess in predicted {
                self.confusion[data.label(self.next_example) as usize][guess as usize] += 1;
                self.next_example += 1;
            }
        }
    }
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
    fn batches_read_back_in_groups_give_the_report_of_one_pass() {
        use crate::data::synthetic::two_class_dataset;
        use crate::models::ModelKind;
        // 37 examples in batches of 2: a full group of READ_BACK_EVERY batches, then 3 more,
        // the last with one example.
        let data = two_class_dataset(37, 3);
        let device = Device::flex();
        let model = Network::new(ModelKind::LeNetBn, &device);
        let batcher = Batcher::new(None, &device);
        let batched = evaluate_report(&model, &data, &batcher, 2, &mut |_| {});
        let whole = evaluate_report(&model, &data, &batcher, 37, &mut |_| {});
        assert_eq!(batched.examples, 37);
        let per_label: Vec<usize> = batched.confusion.iter().map(|row| row.iter().sum()).collect();
        assert_eq!(&per_label[..2], &[19, 18], "labels alternate 0, 1, 0, …");
        assert_eq!(batched.confusion, whole.confusion);
        assert!((batched.loss - whole.loss).abs() < 1e-5, "{} against {}", batched.loss, whole.loss);
    }

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
        assert_eq!(
            (r.per_class[0].class, r.per_class[0].examples, r.per_class[0].accuracy),
            ("T-shirt/top", 4, Some(0.75))
        );
        assert_eq!(r.per_class[9].accuracy, Some(1.0));
        // A class without examples has no accuracy, rather than a false 0.
        assert_eq!((r.per_class[1].examples, r.per_class[1].accuracy), (0, None));
    }
}
