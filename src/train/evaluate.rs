//! Evaluation: loss and accuracy of a network on a data set, in evaluation mode.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;

use super::metrics::Tally;
use crate::data::{Batcher, Dataset};
use crate::models::Network;

/// Loss and accuracy of `model` on all of `data`. `model` should be in evaluation mode
/// (`Module::valid()`), so batch normalization uses its moving averages.
pub fn evaluate(model: &Network, data: &Dataset, batcher: &Batcher, batch_size: usize) -> Tally {
    let loss_fn = CrossEntropyLossConfig::new().init(&batcher.device);
    let order: Vec<usize> = (0..data.len()).collect();
    let mut tally = Tally::default();
    for batch in batcher.batches(data, &order, batch_size) {
        let logits = model.forward(batch.images);
        let loss = loss_fn.forward(logits.clone(), batch.labels.clone());
        let n = batch.labels.dims()[0];
        tally.add(n, count_correct(logits, batch.labels), loss.into_scalar::<f64>());
    }
    tally
}

/// How many rows of `logits` have their largest value at the label.
pub fn count_correct(logits: Tensor<2>, labels: Tensor<1, Int>) -> usize {
    let predicted: Tensor<1, Int> = logits.argmax(1).squeeze_dim(1);
    predicted.equal(labels).int().sum().into_scalar::<i64>() as usize
}
