//! How ResNet and DenseNet end: global average pooling, flatten, a linear layer to the classes.

use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use super::torch_names::TorchName;
use crate::interop::onnx::{OnnxGraph, Value};
use crate::nn::Stage;

#[derive(Module, Debug)]
pub struct Head {
    pub global_avg_pool: AdaptiveAvgPool2d,
    pub fc: Linear,
}

impl Head {
    /// The head from `channels` feature maps to `classes` logits.
    pub fn new(channels: usize, classes: usize, device: &Device) -> Self {
        Self {
            global_avg_pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(channels, classes).init(device),
        }
    }

    /// The book's `global_avg_pool` and `fc` (flatten, then the linear layer).
    pub fn stages(&self) -> [Stage<'_>; 2] {
        [
            Stage::stateless("global_avg_pool", move |x: Tensor<4>| self.global_avg_pool.forward(x)),
            Stage::layer("fc", &self.fc, move |x: Tensor<4>| self.fc.forward(x.flatten::<2>(1, 3))),
        ]
    }

    /// The stages as an ONNX graph.
    pub fn onnx(&self, g: &mut OnnxGraph, x: Value) -> Value {
        let x = g.global_avg_pool("head.global_avg_pool", &x);
        let x = g.flatten("head.flatten", &x);
        g.linear("head.fc", &self.fc, &x)
    }

    /// The PyTorch name of the head's tensor `tensor` of layer `module`: the book's head is
    /// `nn.Sequential(nn.Flatten(), nn.Linear(...))` under `fc`.
    pub fn torch_name(module: &str, tensor: &str) -> Option<TorchName> {
        (module == "fc").then(|| TorchName::linear(format!("fc.1.{tensor}"), tensor))
    }
}
