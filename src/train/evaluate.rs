//! Evaluation: loss, accuracy and the confusion matrix of a network on a data set, in
//! evaluation mode.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::Serialize;

use super::metrics::Tally;
use super::read_back::{read_back, Unread, READ_BACK_EVERY};
use crate::data::{Batcher, Dataset};
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
    /// The [`MISTAKES_KEPT`] wrong answers given with the highest probability, most confident
    /// first.
    pub mistakes: Vec<Mistake>,
}

/// How many of the most confident mistakes a report keeps (the HTML report's gallery).
pub const MISTAKES_KEPT: usize = 16;

/// An example the network got wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mistake {
    /// Its index in the data set.
    pub index: usize,
    pub label: usize,
    pub predicted: usize,
    /// The probability (softmax) the network gave its prediction.
    pub confidence: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassAccuracy {
    pub class: String,
    pub examples: usize,
    /// `None` (JSON `null`) for a class with no examples: there is nothing to be right about.
    pub accuracy: Option<f64>,
}

impl EvalReport {
    /// The report of `confusion` (over `classes`, in label order).
    fn from_confusion(confusion: Vec<Vec<usize>>, loss_sum: f64, mistakes: Vec<Mistake>, classes: &[String]) -> Self {
        let examples: usize = confusion.iter().flatten().sum();
        let correct: usize = (0..classes.len()).map(|c| confusion[c][c]).sum();
        let per_class = classes
            .iter()
            .enumerate()
            .map(|(c, class)| {
                let n: usize = confusion[c].iter().sum();
                let accuracy = (n > 0).then(|| confusion[c][c] as f64 / n as f64);
                ClassAccuracy { class: class.clone(), examples: n, accuracy }
            })
            .collect();
        let denominator = examples.max(1) as f64;
        let (loss, accuracy) = (loss_sum / denominator, correct as f64 / denominator);
        Self { examples, loss, accuracy, per_class, confusion, mistakes }
    }

    pub fn correct(&self) -> usize {
        (0..self.confusion.len()).map(|c| self.confusion[c][c]).sum()
    }

    /// The class names, in label order.
    pub fn classes(&self) -> Vec<&str> {
        self.per_class.iter().map(|c| c.class.as_str()).collect()
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
    let mut counts = Counts {
        confusion: vec![vec![0usize; data.classes().len()]; data.classes().len()],
        loss_sum: 0.0,
        next_example: 0,
        mistakes: Vec::new(),
    };
    // Each batch's mean loss followed by its confidences, and its predicted classes, still on
    // the device.
    let mut unread: Unread = Vec::new();
    for batch in batcher.batches(data, &order, batch_size) {
        let logits = model.forward(batch.images);
        let loss = loss_fn.forward(logits.clone(), batch.labels);
        let confidence: Tensor<1> = softmax(logits.clone(), 1).max_dim(1).flatten(0, 1);
        let predicted: Tensor<1, Int> = logits.argmax(1).flatten(0, 1);
        progress(predicted.dims()[0]);
        unread.push((Tensor::cat(vec![loss.reshape([1]), confidence], 0), predicted));
        if unread.len() == READ_BACK_EVERY {
            counts.read_back(&mut unread, data);
        }
    }
    counts.read_back(&mut unread, data);
    EvalReport::from_confusion(counts.confusion, counts.loss_sum, counts.mistakes, data.classes())
}

/// What evaluation has read back so far; examples come in the data set's order.
struct Counts {
    confusion: Vec<Vec<usize>>,
    loss_sum: f64,
    next_example: usize,
    /// The most confident mistakes so far, most confident first (at most [`MISTAKES_KEPT`]).
    mistakes: Vec<Mistake>,
}

impl Counts {
    /// Reads the unread batches back with one wait for the device, as the training loop does
    /// (a read per batch would stall a GPU after every batch).
    fn read_back(&mut self, unread: &mut Unread, data: &Dataset) {
        for (floats, predicted) in read_back(unread) {
            let (loss, confidences) = floats.split_first().expect("a loss, then the confidences");
            self.loss_sum += loss * predicted.len() as f64;
            for (guess, &confidence) in predicted.into_iter().zip(confidences) {
                let (index, label, guess) = (self.next_example, data.label(self.next_example) as usize, guess as usize);
                self.confusion[label][guess] += 1;
                if guess != label {
                    self.keep_if_confident(Mistake { index, label, predicted: guess, confidence });
                }
                self.next_example += 1;
            }
        }
    }

    /// Keeps `mistake` if it is among the [`MISTAKES_KEPT`] most confident so far (the earlier
    /// example first among equals, so that the choice does not depend on batching).
    fn keep_if_confident(&mut self, mistake: Mistake) {
        let at = self.mistakes.partition_point(|m| m.confidence >= mistake.confidence);
        if at < MISTAKES_KEPT {
            self.mistakes.insert(at, mistake);
            self.mistakes.truncate(MISTAKES_KEPT);
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
    use crate::data::{CLASS_NAMES, NUM_CLASSES};

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
        let key = |r: &EvalReport| r.mistakes.iter().map(|m| (m.index, m.label, m.predicted)).collect::<Vec<_>>();
        assert_eq!(key(&batched), key(&whole));
        assert!((batched.loss - whole.loss).abs() < 1e-5, "{} against {}", batched.loss, whole.loss);
    }

    #[test]
    fn the_most_confident_mistakes_are_kept_most_confident_first() {
        let mut counts = Counts { confusion: Vec::new(), loss_sum: 0.0, next_example: 0, mistakes: Vec::new() };
        // 20 mistakes; confidences repeat with period 7, so there are ties.
        let confidence = |i: usize| 0.3 + (i % 7) as f64 / 10.0;
        for index in 0..20 {
            counts.keep_if_confident(Mistake { index, label: 0, predicted: 1, confidence: confidence(index) });
        }
        let mut want: Vec<usize> = (0..20).collect();
        want.sort_by(|&a, &b| confidence(b).total_cmp(&confidence(a)).then(a.cmp(&b)));
        want.truncate(MISTAKES_KEPT);
        assert_eq!(counts.mistakes.iter().map(|m| m.index).collect::<Vec<_>>(), want);
        assert_eq!(&want[..3], &[6, 13, 5], "0.9 twice (the earlier first), then 0.8");
    }

    #[test]
    fn mistakes_are_wrong_answers_with_their_softmax_probability() {
        use crate::data::synthetic::two_class_dataset;
        use crate::models::ModelKind;
        let data = two_class_dataset(40, 5);
        let device = Device::flex();
        let model = Network::seeded(ModelKind::LeNetBn, 3, &device);
        let report = evaluate_report(&model, &data, &Batcher::new(None, &device), 16, &mut |_| {});
        let wrong = report.examples - report.correct();
        assert_eq!(report.mistakes.len(), wrong.min(MISTAKES_KEPT));
        assert!(!report.mistakes.is_empty(), "an untrained network gets some wrong");
        let batch = Batcher::new(None, &device).batch(&data, &(0..data.len()).collect::<Vec<_>>());
        let probabilities = softmax(model.forward(batch.images), 1).into_data().try_to_vec::<f32>().unwrap();
        for m in &report.mistakes {
            let row = &probabilities[m.index * NUM_CLASSES..][..NUM_CLASSES];
            let top = (0..NUM_CLASSES).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            assert_eq!((m.label, m.predicted), (data.label(m.index) as usize, top));
            assert_ne!(m.label, m.predicted);
            assert!((m.confidence - row[top] as f64).abs() < 1e-6, "{m:?} against {}", row[top]);
        }
    }

    #[test]
    fn report_adds_up_from_the_confusion_matrix() {
        let mut confusion = vec![vec![0; NUM_CLASSES]; NUM_CLASSES];
        confusion[0][0] = 3;
        confusion[0][6] = 1; // a T-shirt taken for a shirt
        confusion[9][9] = 4;
        let classes: Vec<String> = CLASS_NAMES.iter().map(|c| c.to_string()).collect();
        let r = EvalReport::from_confusion(confusion, 2.0, Vec::new(), &classes);
        assert_eq!(r.examples, 8);
        assert_eq!(r.correct(), 7);
        assert_eq!(r.accuracy, 7.0 / 8.0);
        assert_eq!(r.loss, 0.25);
        assert_eq!(
            (r.per_class[0].class.as_str(), r.per_class[0].examples, r.per_class[0].accuracy),
            ("T-shirt/top", 4, Some(0.75))
        );
        assert_eq!(r.per_class[9].accuracy, Some(1.0));
        // A class without examples has no accuracy, rather than a false 0.
        assert_eq!((r.per_class[1].examples, r.per_class[1].accuracy), (0, None));
    }
}
