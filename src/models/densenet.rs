//! DenseNet (book §5.12): dense blocks whose convolutions each see the concatenation of all
//! earlier outputs, and transition layers that halve channels, height and width between them.

use burn::nn::PaddingConfig2d;
use burn::prelude::*;

use super::head::Head;
use super::stem::{Stem, STEM_CHANNELS};
use super::torch_names::{builtin_bn, layer_tensor, TorchName};
use super::{InputSizes, Network, NetworkShape, NetworkSpec};
use crate::interop::onnx::{OnnxGraph, Value};
use crate::kernels;
use crate::kernels::layout::Layout;
use crate::nn::fused_batch_norm::{FusedBatchNorm, FusedBatchNormConfig};
use crate::nn::layers::{AvgPool2d, AvgPool2dConfig, Conv2d, Conv2dConfig};
use crate::nn::stage::logits;
use crate::nn::Stage;

/// DenseNet (§5.12): it cannot take 28×28, so it is trained and printed at the book's 96×96.
pub const SPEC: NetworkSpec = NetworkSpec {
    name: "densenet",
    inputs: InputSizes::AtLeast(DenseNet::min_input),
    train_size: 96,
    summary_size: 96,
    has_batch_norm: true,
    build: |device, shape| Network::DenseNet(DenseNet::new(shape, device)),
    torch_name,
};

/// The keys of the book's `nn.Sequential`: the stem by index, `DenseBlosk_{i}` (the book's
/// spelling) and `transition_block_{i}` whose BN is at index 0 and convolution at 2 (the
/// ReLU is 1), then `BN`.
fn torch_name(module: &[&str], tensor: &'static str) -> Option<TorchName> {
    let position = |layer: &str| if layer == "bn" { 0 } else { 2 };
    let key = match module {
        ["stem", layer] => return Stem::torch_name(layer, tensor),
        ["head", layer] => return Head::torch_name(layer, tensor),
        ["dense_blocks", i, "net", j, layer] => {
            format!("DenseBlosk_{i}.net.{j}.{}.{}", position(layer), layer_tensor(layer, tensor))
        }
        ["transitions", i, layer] => {
            format!("transition_block_{i}.{}.{}", position(layer), layer_tensor(layer, tensor))
        }
        ["bn"] => format!("BN.{}", builtin_bn(tensor)),
        _ => return None,
    };
    Some(TorchName::same(key))
}

/// The book's configuration: 4 dense blocks of 4 convolutions, growth rate 32.
pub const CONVS_PER_BLOCK: [usize; 4] = [4, 4, 4, 4];
pub const GROWTH_RATE: usize = 32;

/// `conv_block(in, out)`: BN → ReLU → conv 3×3 pad 1.
#[derive(Module, Debug)]
pub struct ConvBlock {
    pub bn: FusedBatchNorm,
    pub conv: Conv2d,
}

pub fn conv_block(in_channels: usize, out_channels: usize, device: &Device) -> ConvBlock {
    ConvBlock {
        bn: FusedBatchNormConfig::new(in_channels).init(device),
        conv: Conv2dConfig::new([in_channels, out_channels], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device),
    }
}

impl ConvBlock {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(self.bn.forward_relu_for_conv(x))
    }
}

/// `DenseBlock(num_convs, in, out)`: each conv block's output is concatenated onto its input
/// along the channels, so the block adds `num_convs × out` channels.
#[derive(Module, Debug)]
pub struct DenseBlock {
    pub net: Vec<ConvBlock>,
}

impl DenseBlock {
    pub fn new(num_convs: usize, in_channels: usize, out_channels: usize, device: &Device) -> Self {
        let net = (0..num_convs).map(|i| conv_block(in_channels + i * out_channels, out_channels, device)).collect();
        Self { net }
    }

    pub fn out_channels(in_channels: usize, num_convs: usize, out_channels: usize) -> usize {
        in_channels + num_convs * out_channels
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.net.iter().fold(x, |x, blk| {
            let y = blk.forward(x.clone());
            kernels::cat_channels_for_batch_norm(x, y)
        })
    }
}

/// `transition_block(in, out)`: BN → ReLU → conv 1×1 → avg-pool 2×2 stride 2.
#[derive(Module, Debug)]
pub struct TransitionBlock {
    pub bn: FusedBatchNorm,
    pub conv: Conv2d,
    pub pool: AvgPool2d,
}

pub fn transition_block(in_channels: usize, out_channels: usize, device: &Device) -> TransitionBlock {
    TransitionBlock {
        bn: FusedBatchNormConfig::new(in_channels).init(device),
        conv: Conv2dConfig::new([in_channels, out_channels], [1, 1]).init(device),
        pool: AvgPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
    }
}

impl TransitionBlock {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pool.forward(self.conv.forward(self.bn.forward_relu_for_conv(x)))
    }
}

#[derive(Module, Debug)]
pub struct DenseNet {
    pub stem: Stem,
    pub dense_blocks: Vec<DenseBlock>,
    pub transitions: Vec<TransitionBlock>,
    pub bn: FusedBatchNorm,
    pub head: Head,
}

impl DenseNet {
    pub fn new(shape: NetworkShape, device: &Device) -> Self {
        let mut channels = STEM_CHANNELS;
        let (mut dense_blocks, mut transitions) = (Vec::new(), Vec::new());
        for (i, &num_convs) in CONVS_PER_BLOCK.iter().enumerate() {
            dense_blocks.push(DenseBlock::new(num_convs, channels, GROWTH_RATE, device));
            channels = DenseBlock::out_channels(channels, num_convs, GROWTH_RATE);
            // A transition layer halving the channels between dense blocks.
            if i != CONVS_PER_BLOCK.len() - 1 {
                transitions.push(transition_block(channels, channels / 2, device));
                channels /= 2;
            }
        }
        Self {
            stem: Stem::new(shape.channels, device),
            dense_blocks,
            transitions,
            bn: FusedBatchNormConfig::new(channels).init(device),
            head: Head::new(channels, shape.classes, device),
        }
    }

    /// The book's `b1` (the stem's four layers), then each `DenseBlock_{i}` and
    /// `transition_block_{i}`, `BN`, `relu` (computed in one pass with the BN),
    /// `global_avg_pool` and `fc`. The activations are channels-last from the stem to the head
    /// where the CPU kernels run: DenseNet's many convolutions then need no reorder.
    pub fn named_stages(&self) -> Vec<Stage<'_>> {
        let mut stages = Vec::from(self.stem.stages(Layout::ChannelsLast));
        for (i, block) in self.dense_blocks.iter().enumerate() {
            stages.push(Stage::layer(format!("DenseBlock_{i}"), block, move |x: Tensor<4>| block.forward(x)));
            if let Some(transition) = self.transitions.get(i) {
                let run = move |x: Tensor<4>| transition.forward(x);
                stages.push(Stage::layer(format!("transition_block_{i}"), transition, run));
            }
        }
        stages.push(Stage::layer("BN", &self.bn, move |x: Tensor<4>| self.bn.forward_relu(x)));
        stages.push(Stage::fused_into_previous("relu"));
        stages.extend(self.head.stages());
        stages
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        logits(&self.named_stages(), x)
    }

    /// [`DenseNet::forward`] in evaluation mode as an ONNX graph.
    pub fn onnx(&self, g: &mut OnnxGraph, x: Value) -> Value {
        let mut x = self.stem.onnx(g, x);
        for (i, block) in self.dense_blocks.iter().enumerate() {
            for (j, blk) in block.net.iter().enumerate() {
                let name = format!("dense_blocks.{i}.net.{j}");
                let y = g.fused_batch_norm(&format!("{name}.bn"), &blk.bn, &x);
                let y = g.relu(&format!("{name}.relu"), &y);
                let y = g.conv(&format!("{name}.conv"), &blk.conv, &y);
                x = g.concat_channels(&format!("{name}.cat"), &[&x, &y]);
            }
            if let Some(transition) = self.transitions.get(i) {
                let name = format!("transitions.{i}");
                let y = g.fused_batch_norm(&format!("{name}.bn"), &transition.bn, &x);
                let y = g.relu(&format!("{name}.relu"), &y);
                let y = g.conv(&format!("{name}.conv"), &transition.conv, &y);
                x = g.avg_pool(&format!("{name}.pool"), &transition.pool, &y);
            }
        }
        let x = g.fused_batch_norm("bn", &self.bn, &x);
        let x = g.relu("relu", &x);
        self.head.onnx(g, x)
    }

    /// Smallest input height/width the network can take: each of the three transitions
    /// halves the stem's output (rounding down), which must not reach 0.
    pub fn min_input() -> usize {
        let fits = |s| Stem::output_size(s).is_some_and(|o| o >> (CONVS_PER_BLOCK.len() - 1) >= 1);
        (1..).find(|&s| fits(s)).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_block_concatenates_like_the_book() {
        let device = Device::flex();
        let x = Tensor::<4>::ones([4, 3, 8, 8], &device);
        let y = DenseBlock::new(2, 3, 10, &device).forward(x);
        assert_eq!(y.dims(), [4, 23, 8, 8]);
        assert_eq!(transition_block(23, 10, &device).forward(y).dims(), [4, 10, 4, 4]);
    }

    #[test]
    fn three_convs_of_eight_channels_on_three_give_27() {
        // The chapter's exercise: 3 + 3 × 8.
        let device = Device::flex();
        assert_eq!(DenseBlock::out_channels(3, 3, 8), 27);
        let y = DenseBlock::new(3, 3, 8, &device).forward(Tensor::ones([1, 3, 4, 4], &device));
        assert_eq!(y.dims()[1], 27);
    }

    #[test]
    fn smallest_input_runs_and_one_less_cannot() {
        let device = Device::flex();
        let min = DenseNet::min_input();
        assert_eq!(min, 29, "28×28 Fashion-MNIST needs resizing for DenseNet");
        let logits = DenseNet::new(NetworkShape::default(), &device).forward(Tensor::zeros([1, 1, min, min], &device));
        assert_eq!(logits.dims(), [1, 10]);
    }
}
