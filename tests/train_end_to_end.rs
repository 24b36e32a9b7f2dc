//! Short end-to-end training runs on a synthetic two-class data set: the loss must fall and
//! the test accuracy (evaluation mode, BN moving averages) must end far above chance (0.5).

use burn::prelude::*;
use deepcnn::data::{synthetic::two_class_dataset, FashionMnist};
use deepcnn::models::ModelKind;
use deepcnn::train::{train, OnEpoch, TrainConfig, TrainState};

fn run(config: TrainConfig, n_train: usize, n_test: usize) -> Vec<deepcnn::train::EpochMetrics> {
    let data = FashionMnist { train: two_class_dataset(n_train, 1), test: two_class_dataset(n_test, 2) };
    let mut printed = Vec::new();
    let d = Device::flex();
    let trained =
        train(&config, &data, &d, TrainState::fresh(&config, &d), &mut OnEpoch(|m| printed.push(m.clone()))).unwrap();
    assert_eq!(printed, trained.history, "every epoch is reported as it ends");
    trained.history
}

fn assert_learned(history: &[deepcnn::train::EpochMetrics]) {
    let (first, last) = (&history[0], history.last().unwrap());
    assert!(last.loss < first.loss * 0.7, "loss did not fall: {history:#?}");
    assert!(last.test_accuracy >= 0.9, "test accuracy near chance: {history:#?}");
    assert!(last.examples_per_sec > 0.0 && last.seconds > 0.0);
}

#[test]
fn lenet_with_scratch_batch_norm_learns() {
    let config = TrainConfig { epochs: 3, batch_size: 32, ..TrainConfig::new(ModelKind::LeNetBnScratch) };
    let history = run(config, 512, 200);
    assert_eq!(history.len(), 3);
    assert_learned(&history);
}

#[test]
fn resnet18_learns_at_a_small_input_size() {
    let config = TrainConfig { epochs: 3, batch_size: 32, resize: Some(16), ..TrainConfig::new(ModelKind::ResNet18) };
    assert_learned(&run(config, 384, 100));
}

#[test]
fn a_non_finite_loss_stops_training_and_names_the_step() {
    // Adam moves every weight by about lr in its first step. With lr 1e38 the first
    // convolution's outputs (sums of 26 terms of that size) overflow f32 in the second forward
    // pass, and batch normalization turns the infinite mean into NaN. (A smaller lr is not
    // enough: BN makes the network blind to the scale of its weights.)
    let config = TrainConfig { epochs: 2, batch_size: 16, lr: 1e38, ..TrainConfig::new(ModelKind::LeNetBn) };
    let data = FashionMnist { train: two_class_dataset(64, 1), test: two_class_dataset(16, 2) };
    let mut epochs_reported = 0;
    let d = Device::flex();
    let err = match train(&config, &data, &d, TrainState::fresh(&config, &d), &mut OnEpoch(|_| epochs_reported += 1)) {
        Ok(_) => panic!("training with lr 1e38 finished"),
        Err(e) => e,
    };
    assert!(matches!(err, deepcnn::train::TrainError::NonFiniteLoss { epoch: 1, step: 2, .. }), "{err}");
    assert!(err.to_string().starts_with("loss became "), "{err}");
    assert_eq!(epochs_reported, 0);
}
