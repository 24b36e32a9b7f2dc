//! The input stem ResNet and DenseNet share: conv 64@7×7 stride 2 pad 3, BN, ReLU,
//! max-pool 3×3 stride 2 pad 1 (a quarter of the input's height and width).

use burn::nn::PaddingConfig2d;
use burn::prelude::*;

use super::torch_names::{builtin_bn, TorchName};
use crate::interop::onnx::{OnnxGraph, Value};
use crate::kernels;
use crate::kernels::layout::Layout;
use crate::nn::fused_batch_norm::{FusedBatchNorm, FusedBatchNormConfig};
use crate::nn::layers::{Conv2d, Conv2dConfig, MaxPool2d, MaxPool2dConfig};
use crate::nn::Stage;

pub const STEM_CHANNELS: usize = 64;

#[derive(Module, Debug)]
pub struct Stem {
    pub conv: Conv2d,
    pub bn: FusedBatchNorm,
    pub pool: MaxPool2d,
}

impl Stem {
    /// The stem for images of `channels` channels.
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([channels, STEM_CHANNELS], [7, 7])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
                .init(device),
            bn: FusedBatchNormConfig::new(STEM_CHANNELS).init(device),
            pool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
        }
    }

    /// The book's layers 0 to 3: conv, BN, ReLU (computed in one pass with the BN), max-pool.
    /// With `Layout::ChannelsLast` the convolution takes its input channels-last, and the
    /// layers after it keep that layout ([`kernels::channels_last`]).
    pub fn stages(&self, layout: Layout) -> [Stage<'_>; 4] {
        let input = move |x| match layout {
            Layout::Nchw => x,
            Layout::ChannelsLast => kernels::channels_last(x),
        };
        [
            Stage::layer("0", &self.conv, move |x: Tensor<4>| self.conv.forward(input(x))),
            Stage::layer("1", &self.bn, move |x: Tensor<4>| self.bn.forward_relu(x)),
            Stage::fused_into_previous("2"),
            Stage::stateless("3", move |x: Tensor<4>| self.pool.forward(x)),
        ]
    }

    /// The stages as an ONNX graph.
    pub fn onnx(&self, g: &mut OnnxGraph, x: Value) -> Value {
        let x = g.conv("stem.conv", &self.conv, &x);
        let x = g.fused_batch_norm("stem.bn", &self.bn, &x);
        let x = g.relu("stem.relu", &x);
        g.max_pool("stem.pool", &self.pool, &x)
    }

    /// The PyTorch name of the stem's tensor `tensor` of layer `module`: the book's
    /// `nn.Sequential` numbers the convolution 0 and its BN 1.
    pub fn torch_name(module: &str, tensor: &str) -> Option<TorchName> {
        match module {
            "conv" => Some(TorchName::same(format!("0.{tensor}"))),
            "bn" => Some(TorchName::same(format!("1.{}", builtin_bn(tensor)))),
            _ => None,
        }
    }

    /// Output height (= width) for an input of `size`: `None` where the input is too small.
    pub fn output_size(size: usize) -> Option<usize> {
        let conv = conv_out(size, 7, 2, 3)?;
        conv_out(conv, 3, 2, 1)
    }
}

/// Output size of a convolution or pooling window, `None` if the window does not fit.
pub fn conv_out(size: usize, kernel: usize, stride: usize, pad: usize) -> Option<usize> {
    let padded = size + 2 * pad;
    (size > 0 && padded >= kernel).then(|| (padded - kernel) / stride + 1)
}
