//! LeNet (book §5.5) and LeNet with batch normalization (§5.10): batch normalization after
//! every convolution and linear layer except the last, before the sigmoid.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use super::torch_names::{builtin_bn, TorchLayout, TorchName};
use super::{InputSizes, Network, NetworkSpec};
use crate::nn::batch_norm::{Rank, StatisticsAxes};
use crate::nn::layers::{sigmoid, Conv2d, Conv2dConfig, MaxPool2d, MaxPool2dConfig};
use crate::nn::norm::NormKind;
use crate::nn::{Norm, Trace};

/// LeNet takes 28×28 images: two 5×5 convolutions and two 2×2 poolings leave 16×4×4 = 256
/// features for the first linear layer.
pub const LENET_INPUT: usize = 28;

/// The book's three LeNets: with sigmoid and max-pooling (§5.5), with deepcnn's from-scratch
/// batch normalization (§5.10.3), and with the framework's built-in one (§5.10.4).
pub const PLAIN: NetworkSpec =
    spec("lenet", None, |d| Network::LeNet(LeNet::new(None, d)), |m, t| torch_name(false, m, t));
pub const BN_SCRATCH: NetworkSpec = spec(
    "lenet-bn-scratch",
    Some(NormKind::Scratch),
    |d| Network::LeNet(LeNet::new(Some(NormKind::Scratch), d)),
    |m, t| torch_name(true, m, t),
);
pub const BN: NetworkSpec = spec(
    "lenet-bn",
    Some(NormKind::Builtin),
    |d| Network::LeNet(LeNet::new(Some(NormKind::Builtin), d)),
    |m, t| torch_name(true, m, t),
);

const fn spec(
    name: &'static str,
    norm: Option<NormKind>,
    build: fn(&Device) -> Network,
    torch_name: fn(&[&str], &'static str) -> Option<TorchName>,
) -> NetworkSpec {
    NetworkSpec {
        name,
        inputs: InputSizes::Exactly(LENET_INPUT),
        train_size: LENET_INPUT,
        summary_size: LENET_INPUT,
        has_batch_norm: norm.is_some(),
        build,
        torch_name,
    }
}

/// The keys of the book's `nn.Sequential`: each layer's index in it, which the sigmoids,
/// poolings and flatten between them (and the BN layers, where there are) take up too.
fn torch_name(bn: bool, module: &[&str], tensor: &'static str) -> Option<TorchName> {
    let index = |layer: &str| -> Option<usize> {
        Some(match (layer, bn) {
            ("conv1", _) => 0,
            ("norm1", true) => 1,
            ("conv2", true) => 4,
            ("conv2", false) => 3,
            ("norm2", true) => 5,
            ("fc1", true) => 9,
            ("fc1", false) => 7,
            ("norm3", true) => 10,
            ("fc2", true) => 12,
            ("fc2", false) => 9,
            ("norm4", true) => 13,
            ("fc3", true) => 15,
            ("fc3", false) => 11,
            _ => return None,
        })
    };
    Some(match module {
        [layer] if layer.starts_with("fc") => TorchName::linear(format!("{}.{tensor}", index(layer)?), tensor),
        [layer] => TorchName::same(format!("{}.{tensor}", index(layer)?)),
        [layer, "Builtin"] => TorchName::same(format!("{}.{}", index(layer)?, builtin_bn(tensor))),
        [layer, "Scratch"] => {
            // After a convolution the book's BN keeps 1×C×1×1 tensors, after a linear layer 1×C.
            let rank = if matches!(*layer, "norm1" | "norm2") { 4 } else { 2 };
            TorchName { key: format!("{}.{tensor}", index(layer)?), layout: TorchLayout::Channels { rank } }
        }
        _ => return None,
    })
}

#[derive(Module, Debug)]
pub struct LeNet {
    pub conv1: Conv2d,
    pub norm1: Option<Norm>,
    pub conv2: Conv2d,
    pub norm2: Option<Norm>,
    pub pool: MaxPool2d,
    pub fc1: Linear,
    pub norm3: Option<Norm>,
    pub fc2: Linear,
    pub norm4: Option<Norm>,
    pub fc3: Linear,
}

impl LeNet {
    /// `norm: None` is the plain LeNet of §5.5.
    pub fn new(norm: Option<NormKind>, device: &Device) -> Self {
        let norm_of = |features| norm.map(|kind| Norm::new(kind, features, device));
        Self {
            conv1: Conv2dConfig::new([1, 6], [5, 5]).init(device),
            norm1: norm_of(6),
            conv2: Conv2dConfig::new([6, 16], [5, 5]).init(device),
            norm2: norm_of(16),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            fc1: LinearConfig::new(16 * 4 * 4, 120).init(device),
            norm3: norm_of(120),
            fc2: LinearConfig::new(120, 84).init(device),
            norm4: norm_of(84),
            fc3: LinearConfig::new(84, 10).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<4>, t: &mut Trace) -> Tensor<2> {
        let x = self.conv_stage(x, &self.conv1, &self.norm1, t);
        let x = self.conv_stage(x, &self.conv2, &self.norm2, t);
        let x: Tensor<2> = x.flatten(1, 3);
        t.stateless(&x);
        let x = dense_stage(x, &self.fc1, &self.norm3, t);
        let x = dense_stage(x, &self.fc2, &self.norm4, t);
        let x = self.fc3.forward(x);
        t.layer(&x, &self.fc3);
        x
    }

    /// conv → [BN] → sigmoid → max-pool 2×2.
    fn conv_stage(&self, x: Tensor<4>, conv: &Conv2d, norm: &Option<Norm>, t: &mut Trace) -> Tensor<4> {
        let x = conv.forward(x);
        t.layer(&x, conv);
        let x = maybe_norm(x, norm, t);
        let x = sigmoid(x);
        t.stateless(&x);
        let x = self.pool.forward(x);
        t.stateless(&x);
        x
    }
}

/// linear → [BN] → sigmoid.
fn dense_stage(x: Tensor<2>, linear: &Linear, norm: &Option<Norm>, t: &mut Trace) -> Tensor<2> {
    let x = linear.forward(x);
    t.layer(&x, linear);
    let x = maybe_norm(x, norm, t);
    let x = sigmoid(x);
    t.stateless(&x);
    x
}

/// Batch normalization where the variant has it; the plain LeNet passes `x` through.
fn maybe_norm<const D: usize>(x: Tensor<D>, norm: &Option<Norm>, t: &mut Trace) -> Tensor<D>
where
    Rank<D>: StatisticsAxes,
{
    let Some(norm) = norm else { return x };
    let x = norm.forward(x);
    t.layer(&x, norm);
    x
}
