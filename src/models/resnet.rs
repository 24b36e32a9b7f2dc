//! ResNet-18 (book §5.11): residual blocks of two 3×3 convolutions with batch normalization,
//! a shortcut that is a 1×1 convolution where the shape changes, four stages of two blocks
//! (64, 128, 256, 512 channels), global average pooling and a linear classifier.

use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::head::Head;
use super::stem::Stem;
use super::torch_names::{layer_tensor, TorchName};
use super::{InputSizes, Network, NetworkShape, NetworkSpec};
use crate::interop::onnx::{OnnxGraph, Value};
use crate::kernels::layout::Layout;
use crate::nn::fused_batch_norm::{FusedBatchNorm, FusedBatchNormConfig};
use crate::nn::layers::{Conv2d, Conv2dConfig};
use crate::nn::stage::logits;
use crate::nn::Stage;

/// ResNet-18 (§5.11): trained at Fashion-MNIST's 28×28, printed at the book's 224×224.
pub const SPEC: NetworkSpec = NetworkSpec {
    name: "resnet18",
    inputs: InputSizes::AtLeast(ResNet18::min_input),
    train_size: 28,
    summary_size: 224,
    has_batch_norm: true,
    build: |device, shape| Network::ResNet18(ResNet18::new(shape, device)),
    torch_name,
};

/// The keys of the book's `nn.Sequential(b1, b2, …, b5, global_avg_pool, fc)`: the stem's
/// layers by index, the stages as `resnet_block1` to `resnet_block4`.
fn torch_name(module: &[&str], tensor: &'static str) -> Option<TorchName> {
    match module {
        ["stem", layer] => Stem::torch_name(layer, tensor),
        ["head", layer] => Head::torch_name(layer, tensor),
        ["stages", stage, "residuals", residual, layer] => Some(TorchName::same(format!(
            "resnet_block{}.{residual}.{layer}.{}",
            stage.parse::<usize>().ok()? + 1,
            layer_tensor(layer, tensor)
        ))),
        _ => None,
    }
}

/// `Residual(in, out, use_1x1conv, stride)`: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).
#[derive(Module, Debug)]
pub struct Residual {
    pub conv1: Conv2d,
    pub bn1: FusedBatchNorm,
    pub conv2: Conv2d,
    pub bn2: FusedBatchNorm,
    pub conv3: Option<Conv2d>,
}

impl Residual {
    pub fn new(in_channels: usize, out_channels: usize, use_1x1conv: bool, stride: usize, device: &Device) -> Self {
        let conv3x3 = |cin, s| {
            Conv2dConfig::new([cin, out_channels], [3, 3])
                .with_stride([s, s])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Self {
            conv1: conv3x3(in_channels, stride),
            bn1: FusedBatchNormConfig::new(out_channels).init(device),
            conv2: conv3x3(out_channels, 1),
            bn2: FusedBatchNormConfig::new(out_channels).init(device),
            conv3: use_1x1conv.then(|| {
                Conv2dConfig::new([in_channels, out_channels], [1, 1]).with_stride([stride, stride]).init(device)
            }),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.bn1.forward_relu(self.conv1.forward(x.clone()));
        let y = self.bn2.forward(self.conv2.forward(y));
        let x = match &self.conv3 {
            Some(conv3) => conv3.forward(x),
            None => x,
        };
        relu(y + x)
    }

    /// [`Residual::forward`] as an ONNX graph; `name` is the residual's module path.
    pub fn onnx(&self, g: &mut OnnxGraph, name: &str, x: Value) -> Value {
        let y = g.conv(&format!("{name}.conv1"), &self.conv1, &x);
        let y = g.fused_batch_norm(&format!("{name}.bn1"), &self.bn1, &y);
        let y = g.relu(&format!("{name}.relu1"), &y);
        let y = g.conv(&format!("{name}.conv2"), &self.conv2, &y);
        let y = g.fused_batch_norm(&format!("{name}.bn2"), &self.bn2, &y);
        let x = match &self.conv3 {
            Some(conv3) => g.conv(&format!("{name}.conv3"), conv3, &x),
            None => x,
        };
        let sum = g.add(&format!("{name}.add"), &y, &x);
        g.relu(&format!("{name}.relu2"), &sum)
    }
}

/// `resnet_block(in, out, num_residuals, first_block)`: the first block of every stage but
/// the first halves height and width and changes the channel count.
#[derive(Module, Debug)]
pub struct ResnetBlock {
    pub residuals: Vec<Residual>,
}

impl ResnetBlock {
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        num_residuals: usize,
        first_block: bool,
        device: &Device,
    ) -> Self {
        assert!(!first_block || in_channels == out_channels, "the first stage keeps its channel count");
        let residuals = (0..num_residuals)
            .map(|i| match i == 0 && !first_block {
                true => Residual::new(in_channels, out_channels, true, 2, device),
                false => Residual::new(out_channels, out_channels, false, 1, device),
            })
            .collect();
        Self { residuals }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.residuals.iter().fold(x, |x, residual| residual.forward(x))
    }
}

#[derive(Module, Debug)]
pub struct ResNet18 {
    pub stem: Stem,
    pub stages: Vec<ResnetBlock>,
    pub head: Head,
}

impl ResNet18 {
    pub fn new(shape: NetworkShape, device: &Device) -> Self {
        let stages = vec![
            ResnetBlock::new(64, 64, 2, true, device),
            ResnetBlock::new(64, 128, 2, false, device),
            ResnetBlock::new(128, 256, 2, false, device),
            ResnetBlock::new(256, 512, 2, false, device),
        ];
        Self { stem: Stem::new(shape.channels, device), stages, head: Head::new(512, shape.classes, device) }
    }

    /// The book's `b1` (the stem's four layers), `resnet_block1` to `resnet_block4`,
    /// `global_avg_pool` and `fc`.
    pub fn named_stages(&self) -> Vec<Stage<'_>> {
        let blocks = self.stages.iter().enumerate().map(|(i, block)| {
            Stage::layer(format!("resnet_block{}", i + 1), block, move |x: Tensor<4>| block.forward(x))
        });
        self.stem.stages(Layout::Nchw).into_iter().chain(blocks).chain(self.head.stages()).collect()
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        logits(&self.named_stages(), x)
    }

    /// [`ResNet18::forward`] in evaluation mode as an ONNX graph.
    pub fn onnx(&self, g: &mut OnnxGraph, x: Value) -> Value {
        let mut x = self.stem.onnx(g, x);
        for (i, stage) in self.stages.iter().enumerate() {
            for (j, residual) in stage.residuals.iter().enumerate() {
                x = residual.onnx(g, &format!("stages.{i}.residuals.{j}"), x);
            }
        }
        self.head.onnx(g, x)
    }

    /// Smallest input height/width the network can take.
    pub fn min_input() -> usize {
        // Each of the three downsampling stages maps s to ⌈s/2⌉ (3×3, stride 2, pad 1), so any
        // stem output of at least 1 pixel works.
        (1..).find(|&s| Stem::output_size(s).is_some_and(|o| o >= 1)).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residual_keeps_or_halves_the_shape_like_the_book() {
        let device = Device::flex();
        let x = Tensor::<4>::ones([4, 3, 6, 6], &device);
        assert_eq!(Residual::new(3, 3, false, 1, &device).forward(x.clone()).dims(), [4, 3, 6, 6]);
        assert_eq!(Residual::new(3, 6, true, 2, &device).forward(x).dims(), [4, 6, 3, 3]);
    }

    #[test]
    fn resnet18_takes_fashion_mnist_sized_input() {
        let device = Device::flex();
        let logits = ResNet18::new(NetworkShape::default(), &device).forward(Tensor::zeros([2, 1, 28, 28], &device));
        assert_eq!(logits.dims(), [2, 10]);
        // Colour images of 5 classes.
        let shape = NetworkShape { channels: 3, classes: 5 };
        let logits = ResNet18::new(shape, &device).forward(Tensor::zeros([2, 3, 28, 28], &device));
        assert_eq!(logits.dims(), [2, 5]);
    }
}
