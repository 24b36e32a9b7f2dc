//! LeNet (book §5.5) and LeNet with batch normalization (§5.10): batch normalization after
//! every convolution and linear layer except the last, before the sigmoid.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use super::torch_names::{builtin_bn, TorchLayout, TorchName};
use super::{InputSizes, Network, NetworkShape, NetworkSpec};
use crate::interop::onnx::{OnnxGraph, Value};
use crate::nn::layers::{sigmoid, Conv2d, Conv2dConfig, MaxPool2d, MaxPool2dConfig};
use crate::nn::norm::NormKind;
use crate::nn::batch_norm::{Rank, StatisticsAxes};
use crate::nn::stage::{logits, numbered, Activations, StageInput};
use crate::nn::{Norm, Stage};

/// LeNet takes 28×28 images: two 5×5 convolutions and two 2×2 poolings leave 16×4×4 = 256
/// features for the first linear layer.
pub const LENET_INPUT: usize = 28;

/// The book's three LeNets: with sigmoid and max-pooling (§5.5), with deepcnn's from-scratch
/// batch normalization (§5.10.3), and with the framework's built-in one (§5.10.4).
pub const PLAIN: NetworkSpec =
    spec("lenet", None, |d, shape| Network::LeNet(LeNet::new(None, shape, d)), |m, t| torch_name(false, m, t));
pub const BN_SCRATCH: NetworkSpec = spec(
    "lenet-bn-scratch",
    Some(NormKind::Scratch),
    |d, shape| Network::LeNet(LeNet::new(Some(NormKind::Scratch), shape, d)),
    |m, t| torch_name(true, m, t),
);
pub const BN: NetworkSpec = spec(
    "lenet-bn",
    Some(NormKind::Fused),
    |d, shape| Network::LeNet(LeNet::new(Some(NormKind::Fused), shape, d)),
    |m, t| torch_name(true, m, t),
);

const fn spec(
    name: &'static str,
    norm: Option<NormKind>,
    build: fn(&Device, NetworkShape) -> Network,
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
    /// `norm: None` is the plain LeNet of §5.5; `shape` sizes its first and last layers.
    pub fn new(norm: Option<NormKind>, shape: NetworkShape, device: &Device) -> Self {
        let norm_of = |features| norm.map(|kind| Norm::new(kind, features, device));
        Self {
            conv1: Conv2dConfig::new([shape.channels, 6], [5, 5]).init(device),
            norm1: norm_of(6),
            conv2: Conv2dConfig::new([6, 16], [5, 5]).init(device),
            norm2: norm_of(16),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            fc1: LinearConfig::new(16 * 4 * 4, 120).init(device),
            norm3: norm_of(120),
            fc2: LinearConfig::new(120, 84).init(device),
            norm4: norm_of(84),
            fc3: LinearConfig::new(84, shape.classes).init(device),
        }
    }

    /// The book's `nn.Sequential`, numbered as it is: twice conv → [BN] → sigmoid →
    /// max-pool 2×2, flatten, twice linear → [BN] → sigmoid, linear.
    pub fn named_stages(&self) -> Vec<Stage<'_>> {
        let mut stages = Vec::new();
        for (conv, norm) in [(&self.conv1, &self.norm1), (&self.conv2, &self.norm2)] {
            stages.push(Stage::layer("", conv, move |x: Tensor<4>| conv.forward(x)));
            stages.extend(sigmoid_after::<4>(norm));
            stages.push(Stage::stateless("", move |x: Tensor<4>| self.pool.forward(x)));
        }
        stages.push(Stage::stateless("", |x: Tensor<4>| -> Tensor<2> { x.flatten(1, 3) }));
        for (linear, norm) in [(&self.fc1, &self.norm3), (&self.fc2, &self.norm4)] {
            stages.push(Stage::layer("", linear, move |x: Tensor<2>| linear.forward(x)));
            stages.extend(sigmoid_after::<2>(norm));
        }
        stages.push(Stage::layer("", &self.fc3, move |x: Tensor<2>| self.fc3.forward(x)));
        numbered(stages)
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        logits(&self.named_stages(), x)
    }

    /// [`LeNet::forward`] in evaluation mode as an ONNX graph.
    pub fn onnx(&self, g: &mut OnnxGraph, x: Value) -> Value {
        let mut x = x;
        for (i, (conv, norm)) in [(&self.conv1, &self.norm1), (&self.conv2, &self.norm2)].into_iter().enumerate() {
            x = g.conv(&format!("conv{}", i + 1), conv, &x);
            x = sigmoid_after_onnx(g, &format!("norm{}", i + 1), norm, x);
            x = g.max_pool(&format!("pool{}", i + 1), &self.pool, &x);
        }
        x = g.flatten("flatten", &x);
        for (i, (linear, norm)) in [(&self.fc1, &self.norm3), (&self.fc2, &self.norm4)].into_iter().enumerate() {
            x = g.linear(&format!("fc{}", i + 1), linear, &x);
            x = sigmoid_after_onnx(g, &format!("norm{}", i + 3), norm, x);
        }
        g.linear("fc3", &self.fc3, &x)
    }
}

/// [BN] → sigmoid as ONNX nodes (`name` is the BN slot's module path).
fn sigmoid_after_onnx(g: &mut OnnxGraph, name: &str, norm: &Option<Norm>, x: Value) -> Value {
    let x = match norm {
        Some(norm) => g.norm(name, norm, &x),
        None => x,
    };
    g.sigmoid(&format!("{name}.sigmoid"), &x)
}

/// [BN] → sigmoid: with batch normalization, the sigmoid computed in its pass (the book's
/// separate sigmoid row passes its input on); without, the sigmoid on its own.
fn sigmoid_after<const D: usize>(norm: &Option<Norm>) -> Vec<Stage<'_>>
where
    Rank<D>: StatisticsAxes,
    Tensor<D>: StageInput + Into<Activations>,
{
    match norm {
        Some(norm) => vec![
            Stage::layer("", norm, move |x: Tensor<D>| norm.forward_sigmoid(x)),
            Stage::fused_into_previous(""),
        ],
        None => vec![Stage::stateless("", |x: Tensor<D>| sigmoid(x))],
    }
}
