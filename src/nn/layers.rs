//! burn's `Conv2d`, `MaxPool2d` and `AvgPool2d` layers and the sigmoid, computed by deepcnn's kernels
//! ([`crate::kernels`]) where those apply and by burn's own operations elsewhere (burn's
//! `BatchNorm` likewise: [`super::fused_batch_norm`]). Each is built by burn's own config
//! (the same initialisation, drawing the same random numbers) and has burn's fields, so a
//! network saves and loads exactly as it would with burn's types.

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};

use crate::kernels;

pub use crate::kernels::sigmoid;

/// burn's `Conv2dConfig`, building a [`Conv2d`].
#[derive(Debug, Clone)]
pub struct Conv2dConfig(burn::nn::conv::Conv2dConfig);

impl Conv2dConfig {
    pub fn new(channels: [usize; 2], kernel_size: [usize; 2]) -> Self {
        Self(burn::nn::conv::Conv2dConfig::new(channels, kernel_size))
    }

    pub fn with_stride(self, stride: [usize; 2]) -> Self {
        Self(self.0.with_stride(stride))
    }

    pub fn with_padding(self, padding: PaddingConfig2d) -> Self {
        Self(self.0.with_padding(padding))
    }

    pub fn init(&self, device: &Device) -> Conv2d {
        let c = self.0.init(device);
        Conv2d {
            weight: c.weight,
            bias: c.bias,
            stride: c.stride,
            kernel_size: c.kernel_size,
            dilation: c.dilation,
            groups: c.groups,
            padding: c.padding,
        }
    }
}

/// A 2-D convolution with burn's `Conv2d` fields.
#[derive(Module, Debug)]
pub struct Conv2d {
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub stride: [usize; 2],
    pub kernel_size: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    #[module(skip)]
    pub padding: PaddingConfig2d,
}

impl Conv2d {
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let pairs = padding_pairs(&self.padding, spatial(&input), self.kernel_size, self.stride);
        let options = ConvOptions::new_with_padding(self.stride, pairs, self.dilation, self.groups);
        kernels::conv2d(input, self.weight.val(), self.bias.as_ref().map(|b| b.val()), options)
    }
}

/// (before, after) padding of the height and of the width of an input of `sizes` (height,
/// width), as burn's `Conv2d` and pooling layers work it out (their own helper is private).
pub(crate) fn padding_pairs(
    padding: &PaddingConfig2d,
    sizes: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
) -> [(usize, usize); 2] {
    [0, 1].map(|d| match *padding {
        PaddingConfig2d::Valid => (0, 0),
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)][d],
        PaddingConfig2d::Same => {
            let needed = (sizes[d].div_ceil(stride[d]).max(1) - 1) * stride[d] + kernel[d];
            let total = needed.saturating_sub(sizes[d]);
            (total / 2, total - total / 2)
        }
    })
}

/// Height and width of N×C×H×W `input`.
fn spatial(input: &Tensor<4>) -> [usize; 2] {
    let [_, _, height, width] = input.dims();
    [height, width]
}

/// burn's `AvgPool2dConfig`, building an [`AvgPool2d`].
#[derive(Debug, Clone)]
pub struct AvgPool2dConfig(burn::nn::pool::AvgPool2dConfig);

impl AvgPool2dConfig {
    pub fn new(kernel_size: [usize; 2]) -> Self {
        Self(burn::nn::pool::AvgPool2dConfig::new(kernel_size))
    }

    pub fn with_strides(self, strides: [usize; 2]) -> Self {
        Self(self.0.with_strides(strides))
    }

    pub fn init(&self) -> AvgPool2d {
        let p = self.0.init();
        AvgPool2d {
            stride: p.stride,
            kernel_size: p.kernel_size,
            padding: p.padding,
            count_include_pad: p.count_include_pad,
            ceil_mode: p.ceil_mode,
        }
    }
}

/// 2-D average pooling with burn's `AvgPool2d` fields.
#[derive(Module, Debug)]
pub struct AvgPool2d {
    pub stride: [usize; 2],
    pub kernel_size: [usize; 2],
    #[module(skip)]
    pub padding: PaddingConfig2d,
    pub count_include_pad: bool,
    pub ceil_mode: bool,
}

impl AvgPool2d {
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let pairs = padding_pairs(&self.padding, spatial(&input), self.kernel_size, self.stride);
        let options = AvgPoolOptions::new(self.kernel_size)
            .with_stride(self.stride)
            .with_padding_pairs(pairs)
            .with_count_include_pad(self.count_include_pad)
            .with_ceil_mode(self.ceil_mode);
        kernels::avg_pool2d(input, options)
    }
}

/// burn's `MaxPool2dConfig`, building a [`MaxPool2d`].
#[derive(Debug, Clone)]
pub struct MaxPool2dConfig(burn::nn::pool::MaxPool2dConfig);

impl MaxPool2dConfig {
    pub fn new(kernel_size: [usize; 2]) -> Self {
        Self(burn::nn::pool::MaxPool2dConfig::new(kernel_size))
    }

    pub fn with_strides(self, strides: [usize; 2]) -> Self {
        Self(self.0.with_strides(strides))
    }

    pub fn with_padding(self, padding: PaddingConfig2d) -> Self {
        Self(self.0.with_padding(padding))
    }

    pub fn init(&self) -> MaxPool2d {
        let p = self.0.init();
        MaxPool2d {
            stride: p.stride,
            kernel_size: p.kernel_size,
            padding: p.padding,
            dilation: p.dilation,
            ceil_mode: p.ceil_mode,
        }
    }
}

/// 2-D max pooling with burn's `MaxPool2d` fields.
#[derive(Module, Debug)]
pub struct MaxPool2d {
    pub stride: [usize; 2],
    pub kernel_size: [usize; 2],
    #[module(skip)]
    pub padding: PaddingConfig2d,
    pub dilation: [usize; 2],
    pub ceil_mode: bool,
}

impl MaxPool2d {
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let pairs = padding_pairs(&self.padding, spatial(&input), self.kernel_size, self.stride);
        let options = MaxPoolOptions::new(self.kernel_size)
            .with_stride(self.stride)
            .with_padding_pairs(pairs)
            .with_dilation(self.dilation)
            .with_ceil_mode(self.ceil_mode);
        kernels::max_pool2d(input, options)
    }
}
