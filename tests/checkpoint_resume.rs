//! Run directories: a run stopped after epoch k and resumed ends exactly where an
//! uninterrupted run does; the same seed gives the same metrics; saved runs are never
//! silently overwritten; broken or foreign checkpoints are refused with a clear error.

use burn::prelude::*;
use deepcnn::checkpoint::{load_network_bytes, network_bytes, CheckpointError, RunDir, RUN_FILE};
use deepcnn::data::{synthetic::two_class_dataset, FashionMnist};
use deepcnn::models::ModelKind;
use deepcnn::train::{train, Augment, EpochMetrics, Observer, ObserverError, Schedule, TrainConfig, TrainState};

/// burn-flex's random generator is process-wide, and these tests compare seeded runs, so they
/// take turns rather than draw from it at the same time on several threads.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn data() -> FashionMnist {
    FashionMnist { train: two_class_dataset(160, 1), test: two_class_dataset(48, 2) }
}

/// Saves the run after every epoch, like `deepcnn train --out`.
struct Saver<'a>(&'a RunDir, &'a TrainConfig);

impl Observer for Saver<'_> {
    fn epoch_done(&mut self, _: &EpochMetrics, state: &TrainState) -> Result<(), ObserverError> {
        self.0.save(self.1, state, &[])?;
        Ok(())
    }
}

/// Everything but the wall-clock numbers.
fn outcome(history: &[EpochMetrics]) -> Vec<(usize, f64, f64, f64, Option<f64>)> {
    history.iter().map(|m| (m.epoch, m.loss, m.train_accuracy, m.test_accuracy, m.ema_test_accuracy)).collect()
}

fn config(model: ModelKind, epochs: usize) -> TrainConfig {
    // Augmentation and a schedule on, so that resuming must also restore their random stream
    // and their position in the schedule.
    TrainConfig {
        epochs,
        batch_size: 32,
        augment: Augment::crop_flip(2, true),
        schedule: Schedule::OneCycle,
        lr: 0.01,
        ..TrainConfig::new(model)
    }
}

#[test]
fn a_resumed_run_ends_exactly_like_an_uninterrupted_one() {
    let _serial = serial();
    let (d, data) = (Device::flex(), data());
    // With precise BN too: its statistics are then what the checkpoints hold. ResNet-18's
    // convolutions run on oneDNN, whose weight gradients must be deterministic for this.
    // And with a moving average of the weights, which the checkpoints then hold too.
    // And with a validation split, whose best epoch's network the checkpoints keep.
    let cases = [
        (ModelKind::LeNetBn, 0, None, 0),
        (ModelKind::LeNetBnScratch, 0, None, 0),
        (ModelKind::LeNetBn, 2, Some(0.9), 0),
        (ModelKind::ResNet18, 0, None, 0),
        (ModelKind::LeNetBn, 0, Some(0.5), 16),
    ];
    for (model, precise_bn, ema, val_split) in cases {
        let full = TrainConfig { precise_bn, ema, val_split, ..config(model, 4) };
        let straight = train(
            &full,
            &data,
            &d,
            TrainState::fresh(&full, &d),
            &mut Saver(&RunDir::create(tempfile::tempdir().unwrap().path(), false, true).unwrap(), &full),
        )
        .unwrap();

        // The same run, stopped after epoch 2 (as if killed during epoch 3) ...
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path(), false, true).unwrap();
        let first = train(&full, &data, &d, TrainState::fresh(&full, &d), &mut StopAfter(2, Saver(&run, &full)));
        assert!(first.is_err(), "the run was stopped");
        // ... and resumed from its directory.
        let (run, record) = RunDir::open(dir.path()).unwrap();
        assert_eq!((record.epochs_done, record.next_epoch), (2, 3));
        let state = run.load_state(&record, &d).unwrap();
        let resumed = train(&record.config, &data, &d, state, &mut Saver(&run, &record.config)).unwrap();

        assert_eq!(outcome(&resumed.history), outcome(&straight.history), "{model}, precise BN {precise_bn}");
        let (_, record) = RunDir::open(dir.path()).unwrap();
        assert_eq!(record.epochs_done, 4);
        // Only the last epoch's checkpoint files are kept.
        let mut files: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        files.sort();
        let best = TrainConfig::best_epoch(&straight.history).map(|e| format!("best-epoch{e}.bpk"));
        assert_eq!(best.is_some(), val_split > 0);
        assert_eq!(record.best_file, best);
        let mut expected: Vec<String> = best.into_iter().collect();
        expected.extend(ema.map(|_| "ema-epoch4.bpk".to_string()));
        expected.extend(["model-epoch4.bpk", "optimizer-epoch4.bpk", "run.json"].map(String::from));
        expected.sort();
        assert_eq!(files, expected);
        assert_eq!(straight.history.iter().all(|m| m.ema_test_accuracy.is_some()), ema.is_some());
    }
}

/// Stops the run (with an error) once `epoch` is saved, like a kill right after it.
struct StopAfter<O>(usize, O);

impl<O: Observer> Observer for StopAfter<O> {
    fn epoch_done(&mut self, m: &EpochMetrics, state: &TrainState) -> Result<(), ObserverError> {
        self.1.epoch_done(m, state)?;
        match m.epoch < self.0 {
            true => Ok(()),
            false => Err(format!("stopped after epoch {}", m.epoch).into()),
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_metrics() {
    let _serial = serial();
    let (d, data) = (Device::flex(), data());
    let c = config(ModelKind::LeNetBnScratch, 2);
    let run = || train(&c, &data, &d, TrainState::fresh(&c, &d), &mut deepcnn::train::OnEpoch(|_| ())).unwrap().history;
    assert_eq!(outcome(&run()), outcome(&run()));
    let other = TrainConfig { seed: 1, ..c.clone() };
    let changed =
        train(&other, &data, &d, TrainState::fresh(&other, &d), &mut deepcnn::train::OnEpoch(|_| ())).unwrap();
    assert_ne!(outcome(&changed.history), outcome(&run()), "the seed matters");
}

#[test]
fn saved_networks_keep_their_moving_statistics() {
    let _serial = serial();
    let (d, data) = (Device::flex(), data());
    let c = TrainConfig { epochs: 1, batch_size: 32, ..TrainConfig::new(ModelKind::LeNetBnScratch) };
    let trained = train(&c, &data, &d, TrainState::fresh(&c, &d), &mut deepcnn::train::OnEpoch(|_| ())).unwrap();
    let loaded = load_network_bytes(c.model, network_bytes(&trained.model), &d).unwrap();
    let x = Tensor::<4>::random([4, 1, 28, 28], burn::tensor::Distribution::Default, &d);
    // Evaluation mode reads the moving averages: equal outputs mean they were saved.
    let (a, b) = (trained.model.valid().forward(x.clone()), loaded.forward(x));
    a.into_data().assert_eq(&b.into_data(), true);
    // A fresh network (moving mean 0, variance 1) gives different outputs.
    let fresh = TrainState::fresh(&c, &d).model.valid();
    let x = Tensor::<4>::random([4, 1, 28, 28], burn::tensor::Distribution::Default, &d);
    assert_ne!(fresh.forward(x.clone()).into_data(), trained.model.valid().forward(x).into_data());
}

#[test]
fn a_run_is_never_silently_replaced() {
    let _serial = serial();
    let (d, data) = (Device::flex(), data());
    let dir = tempfile::tempdir().unwrap();
    let c = TrainConfig { epochs: 1, batch_size: 64, ..TrainConfig::new(ModelKind::LeNet) };
    let run = RunDir::create(dir.path(), false, true).unwrap();
    train(&c, &data, &d, TrainState::fresh(&c, &d), &mut Saver(&run, &c)).unwrap();
    let before = std::fs::read(dir.path().join(RUN_FILE)).unwrap();
    let err = RunDir::create(dir.path(), false, true).unwrap_err();
    assert!(matches!(err, CheckpointError::RunExists { epochs: 1, .. }), "{err}");
    assert!(err.to_string().contains("--resume") && err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read(dir.path().join(RUN_FILE)).unwrap(), before, "nothing was touched");
    assert!(RunDir::create(dir.path(), true, true).is_ok());
}

#[test]
fn broken_and_foreign_checkpoints_are_refused() {
    let _serial = serial();
    let (d, data) = (Device::flex(), data());
    let dir = tempfile::tempdir().unwrap();
    let c = TrainConfig { epochs: 1, batch_size: 64, ..TrainConfig::new(ModelKind::LeNetBn) };
    let run = RunDir::create(dir.path(), false, true).unwrap();
    train(&c, &data, &d, TrainState::fresh(&c, &d), &mut Saver(&run, &c)).unwrap();

    // No run at all.
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(RunDir::open(empty.path()), Err(CheckpointError::NoRun { .. })));

    // Another model's weights.
    let model_file = dir.path().join("model-epoch1.bpk");
    let bytes = std::fs::read(&model_file).unwrap();
    let err = load_network_bytes(ModelKind::LeNetBnScratch, bytes.clone(), &d).unwrap_err();
    assert!(err.contains("does not hold a lenet-bn-scratch network"), "{err}");
    let err = load_network_bytes(ModelKind::ResNet18, bytes.clone(), &d).unwrap_err();
    assert!(err.contains("resnet18"), "{err}");

    // A truncated model file: the error names the file.
    std::fs::write(&model_file, &bytes[..bytes.len() / 2]).unwrap();
    let (run, record) = RunDir::open(dir.path()).unwrap();
    let err = run.load_network(&record, &d).unwrap_err().to_string();
    assert!(err.contains("model-epoch1.bpk"), "{err}");

    // A damaged run.json.
    let json = std::fs::read_to_string(dir.path().join(RUN_FILE)).unwrap();
    std::fs::write(dir.path().join(RUN_FILE), &json[..json.len() / 2]).unwrap();
    let err = RunDir::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("run.json"), "{err}");
}
