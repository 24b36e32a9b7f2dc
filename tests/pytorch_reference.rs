//! deepcnn against PyTorch, step for step: the book's LeNet with from-scratch batch
//! normalization starts from PyTorch's initial weights, takes one training step on PyTorch's
//! batch, and must land where PyTorch did (fixture made by `bench/make_pytorch_fixture.py`).

use burn::module::{Param, RunningState};
use burn::nn::Linear;
use burn::prelude::*;
use deepcnn::data::Batch;
use deepcnn::models::{LeNet, ModelKind, Network};
use deepcnn::nn::layers::Conv2d;
use deepcnn::nn::Norm;
use deepcnn::train::{optimizer, train_step, StepOptions};
use safetensors::SafeTensors;

const LR: f64 = 0.001;

/// Tolerance for tensors Adam has just updated. Adam's first step moves each value by
/// lr·g/(|g| + ε) ≈ ±lr, which turns rounding-level differences in gradients (the two
/// frameworks sum in different orders) into differences of a fraction of a percent of lr.
/// A real difference in semantics (a wrong gradient, a different update rule) shows up at the
/// scale of lr itself, 100 times this. See [`assert_adam_step`] for the exception.
const ADAM_STEP_TOL: f32 = LR as f32 / 100.0;

/// Checks an Adam-updated tensor against PyTorch's. Where PyTorch's own step shows a gradient
/// within 100·ε of zero (ε = 1e-8) (|step| < 0.99·lr, since |step| = lr·|g|/(|g| + ε)), the step is
/// ε-sensitive: d step/dg = lr·ε/(|g| + ε)², so an absolute rounding difference η in g moves
/// it by up to lr·η/(4ε), and gradients that are sums with heavy cancellation (weights feeding
/// a batch normalization) carry η of 1e-9 and more. Those few values must move the same way
/// as PyTorch's, by at most lr; all others must match to [`ADAM_STEP_TOL`]. And they must be few
/// (under 2%), so a systematic error cannot hide among them.
#[track_caller]
fn assert_adam_step(got: &[f32], want: &[f32], init: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let lr = LR as f32;
    let mut sensitive = 0;
    for ((&g, &w), &i) in got.iter().zip(want).zip(init) {
        let (ours, theirs) = (g - i, w - i);
        if theirs.abs() < 0.99 * lr {
            sensitive += 1;
            assert!(ours * theirs >= 0.0 && ours.abs() <= lr * 1.001, "{what}: step {ours:e}, PyTorch {theirs:e}");
        } else {
            assert!((g - w).abs() <= ADAM_STEP_TOL, "{what}: differs from PyTorch by {:e}", (g - w).abs());
        }
    }
    assert!(sensitive * 50 < got.len(), "{what}: {sensitive} of {} steps are ε-sensitive", got.len());
}

struct Fixture(Vec<u8>);

impl Fixture {
    fn load() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lenet_bn_scratch_step.safetensors");
        Fixture(std::fs::read(path).unwrap())
    }

    /// A float tensor's values (row-major) and its shape.
    fn get(&self, key: &str) -> (Vec<f32>, Vec<usize>) {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let view = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        (values, view.shape().to_vec())
    }

    fn values(&self, key: &str) -> Vec<f32> {
        self.get(key).0
    }

    fn tensor<const D: usize>(&self, key: &str, device: &Device) -> Tensor<D> {
        let (values, shape) = self.get(key);
        let shape: [usize; D] = shape.try_into().unwrap_or_else(|s| panic!("{key}: rank of {s:?}"));
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    /// A per-channel BN tensor (PyTorch: 1×C or 1×C×1×1) as C values.
    fn channels(&self, key: &str, device: &Device) -> Tensor<1> {
        let values = self.values(key);
        let n = values.len();
        Tensor::from_data(TensorData::new(values, [n]), device)
    }
}

fn set_conv(f: &Fixture, key: &str, conv: &mut Conv2d, d: &Device) {
    conv.weight = Param::from_tensor(f.tensor(&format!("init.{key}.weight"), d));
    conv.bias = Some(Param::from_tensor(f.tensor(&format!("init.{key}.bias"), d)));
}

fn set_linear(f: &Fixture, key: &str, linear: &mut Linear, d: &Device) {
    // PyTorch stores out×in, burn in×out.
    linear.weight = Param::from_tensor(f.tensor::<2>(&format!("init.{key}.weight"), d).transpose());
    linear.bias = Some(Param::from_tensor(f.tensor(&format!("init.{key}.bias"), d)));
}

fn set_norm(f: &Fixture, key: &str, norm: &mut Option<Norm>, d: &Device) {
    let Some(Norm::Scratch(bn)) = norm else { panic!("lenet-bn-scratch has scratch BN at {key}") };
    bn.gamma = Param::from_tensor(f.channels(&format!("init.{key}.gamma"), d));
    bn.beta = Param::from_tensor(f.channels(&format!("init.{key}.beta"), d));
    bn.moving_mean = RunningState::new(f.channels(&format!("init.{key}.moving_mean"), d));
    bn.moving_var = RunningState::new(f.channels(&format!("init.{key}.moving_var"), d));
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
    assert!(worst <= tol, "{what}: differs from PyTorch by {worst:e} (tolerance {tol:e})");
}

#[test]
fn one_training_step_lands_where_pytorch_does() {
    let f = Fixture::load();
    let d = Device::flex().autodiff();
    let Network::LeNet(mut net) = Network::new(ModelKind::LeNetBnScratch, &d) else { unreachable!() };
    set_conv(&f, "0", &mut net.conv1, &d);
    set_norm(&f, "1", &mut net.norm1, &d);
    set_conv(&f, "4", &mut net.conv2, &d);
    set_norm(&f, "5", &mut net.norm2, &d);
    set_linear(&f, "9", &mut net.fc1, &d);
    set_norm(&f, "10", &mut net.norm3, &d);
    set_linear(&f, "12", &mut net.fc2, &d);
    set_norm(&f, "13", &mut net.norm4, &d);
    set_linear(&f, "15", &mut net.fc3, &d);

    let st = SafeTensors::deserialize(&f.0).unwrap();
    let labels: Vec<i64> = st
        .tensor("batch.labels")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let batch = Batch {
        images: f.tensor("batch.images", &d),
        labels: Tensor::from_data(TensorData::new(labels.clone(), [labels.len()]), &d),
    };

    let (model, out) = train_step(Network::LeNet(net), &mut optimizer(), batch, LR, StepOptions::default());
    let (loss, _) = out.read();
    assert!(
        (loss as f32 - f.values("step1.loss")[0]).abs() < 1e-5,
        "loss {loss} vs PyTorch {:?}",
        f.values("step1.loss")
    );

    // valid() folds in the moving averages' update (burn applies it lazily).
    let Network::LeNet(net): Network = model.valid() else { unreachable!() };
    let net: LeNet = net;
    let weight = |t: Tensor<4>| values(t);
    let linear_weight = |t: Tensor<2>| values(t.transpose());
    let step = |got: Vec<f32>, key: &str| {
        assert_adam_step(&got, &f.values(&format!("step1.{key}")), &f.values(&format!("init.{key}")), key)
    };
    step(weight(net.conv1.weight.val()), "0.weight");
    step(weight(net.conv2.weight.val()), "4.weight");
    step(linear_weight(net.fc1.weight.val()), "9.weight");
    step(linear_weight(net.fc2.weight.val()), "12.weight");
    step(linear_weight(net.fc3.weight.val()), "15.weight");
    step(values(net.fc3.bias.unwrap().val()), "15.bias");

    // The biases feeding a batch normalization have a gradient that is exactly 0 in exact
    // arithmetic (BN subtracts the batch mean); in floats it is rounding noise of either sign,
    // which Adam's first step scales to at most ±lr in both frameworks. So these can differ by
    // up to 2·lr, and neither may move by more than lr.
    for (bias, key) in [(net.conv1.bias, "0"), (net.conv2.bias, "4"), (net.fc1.bias, "9"), (net.fc2.bias, "12")] {
        let (ours, init) = (values(bias.unwrap().val()), f.values(&format!("init.{key}.bias")));
        assert_close(&ours, &f.values(&format!("step1.{key}.bias")), 2.0 * LR as f32 + 1e-6, &format!("{key}.bias"));
        assert_close(&ours, &init, LR as f32 + 1e-6, &format!("{key}.bias step size"));
    }

    for (norm, key) in [(net.norm1, "1"), (net.norm2, "5"), (net.norm3, "10"), (net.norm4, "13")] {
        let Some(Norm::Scratch(bn)) = norm else { unreachable!() };
        assert_close(
            &values(bn.gamma.val()),
            &f.values(&format!("step1.{key}.gamma")),
            ADAM_STEP_TOL,
            &format!("{key}.gamma"),
        );
        assert_close(
            &values(bn.beta.val()),
            &f.values(&format!("step1.{key}.beta")),
            ADAM_STEP_TOL,
            &format!("{key}.beta"),
        );
        // Moving statistics involve no Adam step: they must agree to float rounding.
        assert_close(
            &values(bn.moving_mean.value()),
            &f.values(&format!("step1.{key}.moving_mean")),
            1e-6,
            &format!("{key}.moving_mean"),
        );
        assert_close(
            &values(bn.moving_var.value()),
            &f.values(&format!("step1.{key}.moving_var")),
            1e-6,
            &format!("{key}.moving_var"),
        );
    }
}
