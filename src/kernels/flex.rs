//! [`FastOps`] on burn's Flex CPU backend: each operation reads its tensors as f32 slices (a
//! copy only for strided views; batch normalization and concatenation also read bf16
//! channels-last batches as they are), runs deepcnn's kernel, timed for profiles, and wraps
//! the result as a tensor. Convolutions, batch normalization, pooling and concatenation work in
//! the layout of their input ([`layout`]): a channels-last input gives a channels-last output
//! and gradient, and any other tensor they read (an output's gradient, the second part of a
//! concatenation) is brought into that layout first. The sigmoid reads NCHW.

use std::borrow::Cow;

use burn::tensor::DType;
use half::bf16;

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::prelude::*;

use super::batch_norm::{self, Activation, NcsShape};
use super::conv::{self, ConvGeometry};
use super::element::Stored;
use super::extension::{AdamUpdate, BatchNormTrainOutput, ChannelSplit, ConvForward, FastOps, LayerGrads};
use super::layout::{self, Layout};
use super::pool::channels_last::NhwcShape;
use super::profile::{self, Pass};
use super::{activation, adam, concat, ema, pool, Kernel};

/// `t` in f32: a bf16 tensor (a bf16 concatenation or batch normalization output, where an
/// operation without a bf16 path reads it) widened; a channels-last one stays channels-last.
fn widened(t: &FlexTensor) -> FlexTensor {
    match channels_last_bf16(t) {
        Some(values) => flex_in(values.iter().map(|v| v.value()).collect(), &dims(t), Layout::ChannelsLast),
        None => {
            <Flex as burn::backend::ops::FloatTensorOps<Flex>>::float_cast(t.clone(), burn::tensor::FloatDType::F32)
        }
    }
}

/// `t`'s values in NCHW order: borrowed where they lie so, else a copy.
fn f32s(t: &FlexTensor) -> Cow<'_, [f32]> {
    if t.dtype() == DType::BF16 {
        return Cow::Owned(f32s(&widened(t)).into_owned());
    }
    if let Some(s) = t.as_slice::<f32>() {
        return Cow::Borrowed(s);
    }
    if let Some(s) = channels_last_storage(t) {
        let d = dims(t);
        return layout::to_nchw(s, d[0], d[1], d[2] * d[3]).into();
    }
    Cow::Owned(t.to_contiguous().storage::<f32>().to_vec())
}

/// `t`'s values and the layout they are in: a channels-last view as it lies, anything else in
/// NCHW order (see [`f32s`]).
fn f32s_in_layout(t: &FlexTensor) -> (Cow<'_, [f32]>, Layout) {
    let layout = layout_of(t);
    (f32s_as(t, layout), layout)
}

/// The N×H×W×C buffer behind `t` where `t` is an N×C×H×W view of all of it (what
/// `permute([0, 3, 1, 2])` makes of an N×H×W×C tensor). Told from NCHW by the strides alone,
/// also where the two orders agree (one channel, or 1×1 maps): a network's first layer makes
/// its input channels-last that way, for nothing.
fn channels_last_storage(t: &FlexTensor) -> Option<&[f32]> {
    (t.dtype() == DType::F32 && is_channels_last(t)).then(|| t.storage::<f32>())
}

/// [`channels_last_storage`] of a bf16 tensor.
fn channels_last_bf16(t: &FlexTensor) -> Option<&[bf16]> {
    (t.dtype() == DType::BF16 && is_channels_last(t)).then(|| t.storage::<bf16>())
}

/// Whether `t` is an N×C×H×W view of all of an N×H×W×C buffer, of any element type.
fn is_channels_last(t: &FlexTensor) -> bool {
    let l = t.layout();
    let d = l.shape();
    if d.num_dims() != 4 {
        return false;
    }
    let (c, h, w) = (d[1], d[2], d[3]);
    let strides = [(h * w * c) as isize, 1, (w * c) as isize, c as isize];
    let elements = t.bytes().len() / t.dtype().size();
    l.start_offset() == 0 && l.strides() == strides && elements == d.num_elements()
}

/// The layout of `t`'s values: channels-last where [`is_channels_last`] finds it so.
fn layout_of(t: &FlexTensor) -> Layout {
    match is_channels_last(t) {
        true => Layout::ChannelsLast,
        false => Layout::Nchw,
    }
}

/// `t`'s values (N×C×H×W) in `layout`: borrowed where they lie so, else a copy.
fn f32s_as(t: &FlexTensor, layout: Layout) -> Cow<'_, [f32]> {
    if t.dtype() == DType::BF16 {
        return Cow::Owned(f32s_as(&widened(t), layout).into_owned());
    }
    match layout {
        Layout::Nchw => f32s(t),
        Layout::ChannelsLast => match (channels_last_storage(t), t.as_slice::<f32>()) {
            (Some(s), _) => Cow::Borrowed(s),
            (None, Some(s)) => {
                let d = dims(t);
                layout::to_channels_last(s, d[0], d[1], d[2] * d[3]).into()
            }
            // Any other view: burn-flex's strided copy, in N×H×W×C order.
            (None, None) => Cow::Owned(t.clone().permute(&[0, 2, 3, 1]).to_contiguous().storage::<f32>().to_vec()),
        },
    }
}

/// An N×C×H×W tensor (`shape`) of values in `layout`.
fn flex_in(data: Vec<f32>, shape: &[usize], layout: Layout) -> FlexTensor {
    match layout {
        Layout::Nchw => flex(data, shape),
        Layout::ChannelsLast => flex(data, &[shape[0], shape[2], shape[3], shape[1]]).permute(&[0, 3, 1, 2]),
    }
}

/// An N×C×H×W bf16 tensor over the N×H×W×C buffer `values` (`shape` N×C×H×W), as
/// channels-last f32 tensors are.
fn bf16_channels_last(values: Vec<bf16>, shape: &[usize]) -> FlexTensor {
    let nhwc = vec![shape[0], shape[2], shape[3], shape[1]];
    FlexTensor::from_data(TensorData::new(values, nhwc)).permute(&[0, 3, 1, 2])
}

/// `t` as a contiguous f32 tensor that spans its whole buffer, so that its storage is exactly
/// its elements (a copy only where `t` is a strided or offset view).
fn whole_buffer(t: FlexTensor) -> FlexTensor {
    let spans_buffer = t.as_slice::<f32>().is_some_and(|s| s.len() == t.storage::<f32>().len());
    if spans_buffer {
        t
    } else {
        flex(f32s(&t).into_owned(), &dims(&t))
    }
}

fn flex(data: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape.to_vec()))
}

fn dims(t: &FlexTensor) -> Vec<usize> {
    burn::backend::TensorMetadata::shape(t).to_vec()
}

fn nhwc_shape(d: &[usize]) -> NhwcShape {
    NhwcShape { n: d[0], c: d[1], h: d[2], w: d[3] }
}

fn conv_geometry(x: &[usize], w: &[usize], geometry: [usize; 4]) -> ConvGeometry {
    let [sh, sw, ph, pw] = geometry;
    ConvGeometry {
        batch: x[0],
        c_in: x[1],
        h: x[2],
        w: x[3],
        c_out: w[0],
        kh: w[2],
        kw: w[3],
        stride: [sh, sw],
        padding: [ph, pw],
    }
}

/// A batch as batch normalization's kernels read it: a bf16 channels-last batch (a bf16
/// concatenation) as it is, with no f32 values; anything else in f32 and its layout, as
/// [`f32s_in_layout`] gives them.
fn batch_values(t: &FlexTensor) -> (Option<&[bf16]>, Cow<'_, [f32]>, Layout) {
    match channels_last_bf16(t) {
        Some(values) => (Some(values), Cow::Borrowed(&[]), Layout::ChannelsLast),
        None => {
            let (values, layout) = f32s_in_layout(t);
            (None, values, layout)
        }
    }
}

/// Training-mode batch normalization of a channels-last batch stored in `T`, written in bf16
/// where `bf16_output` (for a bf16 convolution), else in f32.
#[allow(clippy::too_many_arguments)]
fn batch_norm_train_channels_last<T: Stored>(
    x: &[T],
    shape: &[usize],
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f64,
    activation: Activation,
    bf16_output: bool,
) -> BatchNormTrainOutput<Flex> {
    let ncs = NcsShape::from_dims(shape);
    let (gamma, beta) = (f32s(gamma), f32s(beta));
    let (output, mean, var) = if bf16_output {
        let (y, mean, var) = profile::timed(Kernel::BatchNorm, Pass::Forward, || {
            batch_norm::channels_last::forward_train_to_bf16(x, ncs, &gamma, &beta, epsilon, activation)
        });
        (bf16_channels_last(y, shape), mean, var)
    } else {
        let (y, mean, var) = profile::timed(Kernel::BatchNorm, Pass::Forward, || {
            batch_norm::channels_last::forward_train(x, ncs, &gamma, &beta, epsilon, activation)
        });
        (flex_in(y, shape, Layout::ChannelsLast), mean, var)
    };
    BatchNormTrainOutput { output, mean: flex(mean, &[ncs.c]), variance: flex(var, &[ncs.c]) }
}

impl FastOps for Flex {
    fn fused_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        activation: Activation,
        bf16_output: bool,
    ) -> BatchNormTrainOutput<Self> {
        let shape = dims(&x);
        let (x16, x, layout) = batch_values(&x);
        if let Some(x) = x16 {
            return batch_norm_train_channels_last(x, &shape, &gamma, &beta, epsilon, activation, bf16_output);
        }
        if layout == Layout::ChannelsLast {
            return batch_norm_train_channels_last(&x, &shape, &gamma, &beta, epsilon, activation, bf16_output);
        }
        let ncs = NcsShape::from_dims(&shape);
        let (y, mean, var) = profile::timed(Kernel::BatchNorm, Pass::Forward, || {
            let (gamma, beta) = (f32s(&gamma), f32s(&beta));
            batch_norm::forward_train(&x, ncs, &gamma, &beta, epsilon, activation)
        });
        BatchNormTrainOutput { output: flex(y, &shape), mean: flex(mean, &[ncs.c]), variance: flex(var, &[ncs.c]) }
    }

    fn fused_batch_norm_train_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        variance: FlexTensor,
        epsilon: f64,
        relu: bool,
        output_grad: FlexTensor,
    ) -> LayerGrads<Self> {
        let shape = dims(&x);
        let ncs = NcsShape::from_dims(&shape);
        let (x16, x32, layout) = batch_values(&x);
        // A bf16 output's gradient may come back in bf16 (through burn's cast, where a
        // convolution could not read it as it is); `f32s_as` widens it.
        let (dx, dgamma, dbeta) = profile::timed(Kernel::BatchNorm, Pass::Backward, || {
            let (gamma, beta, mean, var) = (f32s(&gamma), f32s(&beta), f32s(&mean), f32s(&variance));
            let dy = f32s_as(&output_grad, layout);
            match (x16, layout) {
                (Some(x), _) => {
                    batch_norm::channels_last::backward_train(x, ncs, &gamma, &beta, &mean, &var, epsilon, relu, &dy)
                }
                (None, Layout::ChannelsLast) => {
                    batch_norm::channels_last::backward_train(&x32, ncs, &gamma, &beta, &mean, &var, epsilon, relu, &dy)
                }
                (None, Layout::Nchw) => {
                    batch_norm::backward_train(&x32, ncs, &gamma, &beta, &mean, &var, epsilon, relu, &dy)
                }
            }
        });
        LayerGrads { input: flex_in(dx, &shape, layout), weight: flex(dgamma, &[ncs.c]), bias: flex(dbeta, &[ncs.c]) }
    }

    fn fused_batch_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        variance: FlexTensor,
        epsilon: f64,
        activation: Activation,
    ) -> FlexTensor {
        let shape = dims(&x);
        let ncs = NcsShape::from_dims(&shape);
        let (x16, x32, layout) = batch_values(&x);
        let y = profile::timed(Kernel::BatchNorm, Pass::Evaluation, || {
            let (gamma, beta, mean, var) = (f32s(&gamma), f32s(&beta), f32s(&mean), f32s(&variance));
            let (g, b, m, v) = (&gamma[..], &beta[..], &mean[..], &var[..]);
            match (x16, layout) {
                (Some(x), _) => batch_norm::channels_last::normalize(x, ncs, g, b, m, v, epsilon, activation),
                (None, Layout::ChannelsLast) => {
                    batch_norm::channels_last::normalize(&x32, ncs, g, b, m, v, epsilon, activation)
                }
                (None, Layout::Nchw) => batch_norm::normalize(&x32, ncs, g, b, m, v, epsilon, activation),
            }
        });
        flex_in(y, &shape, layout)
    }

    fn fused_adam_step(
        param: FlexTensor,
        grad: FlexTensor,
        moment_1: FlexTensor,
        moment_2: FlexTensor,
        scalars: adam::AdamScalars,
    ) -> AdamUpdate<Self> {
        // In place where nothing else holds a tensor's buffer (the optimizer hands parameter and
        // moments over), else on a copy: ResNet-18's 11 M parameters would cost three 45 MB copies.
        let (mut param, mut moment_1, mut moment_2) =
            (whole_buffer(param), whole_buffer(moment_1), whole_buffer(moment_2));
        let grad = f32s(&grad);
        profile::timed(Kernel::Adam, Pass::Update, || {
            adam::step(param.storage_mut(), &grad, moment_1.storage_mut(), moment_2.storage_mut(), scalars)
        });
        AdamUpdate { param, moment_1, moment_2 }
    }

    fn fused_ema_step(average: FlexTensor, current: FlexTensor, decay: f64) -> FlexTensor {
        // In place where nothing else holds the average's buffer, as Adam's update.
        let mut average = whole_buffer(average);
        let current = f32s(&current);
        profile::timed(Kernel::Ema, Pass::Update, || ema::step(average.storage_mut(), &current, decay));
        average
    }

    fn fast_max_pool2d(x: FlexTensor, window: pool::PoolWindow) -> FlexTensor {
        let d = dims(&x);
        let (planes, [ho, wo]) = (d[0] * d[1], window.out_size(d[2], d[3]));
        let (x, layout) = f32s_in_layout(&x);
        let y = profile::timed(Kernel::MaxPool, Pass::Forward, || match layout {
            Layout::ChannelsLast => pool::channels_last::max_pool(&x, nhwc_shape(&d), &window),
            Layout::Nchw if window == pool::LENETS_WINDOW => pool::max_pool_2x2(&x, planes, d[2], d[3]),
            Layout::Nchw => pool::max_pool(&x, planes, d[2], d[3], &window),
        });
        flex_in(y, &[d[0], d[1], ho, wo], layout)
    }

    fn fast_max_pool2d_backward(
        x: FlexTensor,
        output: FlexTensor,
        output_grad: FlexTensor,
        window: pool::PoolWindow,
    ) -> FlexTensor {
        let d = dims(&x);
        let planes = d[0] * d[1];
        let (x, layout) = f32s_in_layout(&x);
        let dx = profile::timed(Kernel::MaxPool, Pass::Backward, || {
            let (y, dy) = (f32s_as(&output, layout), f32s_as(&output_grad, layout));
            match layout {
                Layout::ChannelsLast => pool::channels_last::max_pool_backward(&x, &y, &dy, nhwc_shape(&d), &window),
                Layout::Nchw if window == pool::LENETS_WINDOW => {
                    pool::max_pool_2x2_backward(&x, &y, &dy, planes, d[2], d[3])
                }
                Layout::Nchw => pool::max_pool_backward(&x, &y, &dy, planes, d[2], d[3], &window),
            }
        });
        flex_in(dx, &d, layout)
    }

    fn fast_avg_pool2d_2x2(x: FlexTensor) -> FlexTensor {
        let d = dims(&x);
        let (x, layout) = f32s_in_layout(&x);
        let y = profile::timed(Kernel::AvgPool, Pass::Forward, || match layout {
            Layout::ChannelsLast => pool::channels_last::avg_pool_2x2(&x, nhwc_shape(&d)),
            Layout::Nchw => pool::avg_pool_2x2(&x, d[0] * d[1], d[2], d[3]),
        });
        flex_in(y, &[d[0], d[1], d[2] / 2, d[3] / 2], layout)
    }

    fn fast_avg_pool2d_2x2_backward(output_grad: FlexTensor, input_shape: [usize; 4]) -> FlexTensor {
        let [n, c, h, w] = input_shape;
        let (dy, layout) = f32s_in_layout(&output_grad);
        let dx = profile::timed(Kernel::AvgPool, Pass::Backward, || match layout {
            Layout::ChannelsLast => pool::channels_last::avg_pool_2x2_backward(&dy, nhwc_shape(&input_shape)),
            Layout::Nchw => pool::avg_pool_2x2_backward(&dy, n * c, h, w),
        });
        flex_in(dx, &input_shape, layout)
    }

    fn fast_sigmoid(x: FlexTensor) -> FlexTensor {
        let shape = dims(&x);
        flex(profile::timed(Kernel::Sigmoid, Pass::Forward, || activation::sigmoid(&f32s(&x))), &shape)
    }

    fn fast_sigmoid_backward(output: FlexTensor, output_grad: FlexTensor) -> FlexTensor {
        let shape = dims(&output);
        let dx = profile::timed(Kernel::Sigmoid, Pass::Backward, || {
            activation::sigmoid_backward(&f32s(&output), &f32s(&output_grad))
        });
        flex(dx, &shape)
    }

    fn gemm_conv2d(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, geometry: [usize; 4]) -> FlexTensor {
        if x.dtype() == DType::BF16 {
            return Self::gemm_conv2d_keeping_input(x, weight, bias, geometry).output;
        }
        let g = conv_geometry(&dims(&x), &dims(&weight), geometry);
        profile::count_conv_flops(g.flops());
        let (x, layout) = f32s_in_layout(&x);
        let y =
            profile::timed(Kernel::Conv, Pass::Forward, || conv::forward(&x, &f32s(&weight), &f32s(&bias), &g, layout));
        flex_in(y, &[g.batch, g.c_out, g.out_h(), g.out_w()], layout)
    }

    fn gemm_conv2d_keeping_input(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        geometry: [usize; 4],
    ) -> ConvForward<Self> {
        let (x_dims, w_dims) = (dims(&x), dims(&weight));
        let g = conv_geometry(&x_dims, &w_dims, geometry);
        if x.dtype() == DType::BF16 {
            // Batch normalization's bf16 output: read as it is, and kept as it is.
            profile::count_conv_flops(g.flops());
            let y = profile::timed(Kernel::Conv, Pass::Forward, || {
                conv::forward_from_bf16(x.storage::<bf16>(), &f32s(&weight), &f32s(&bias), &g)
            });
            let output = flex_in(y, &[g.batch, g.c_out, g.out_h(), g.out_w()], Layout::ChannelsLast);
            return ConvForward { output, kept_input: x };
        }
        let kept = {
            let (values, layout) = f32s_in_layout(&x);
            profile::timed(Kernel::Conv, Pass::Forward, || {
                conv::forward_keeping_input(&values, &f32s(&weight), &f32s(&bias), &g, layout)
            })
        };
        let Some((y, kept)) = kept else {
            return ConvForward { output: Self::gemm_conv2d(x.clone(), weight, bias, geometry), kept_input: x };
        };
        profile::count_conv_flops(g.flops());
        let kept_input = bf16_channels_last(kept, &x_dims);
        ConvForward { output: flex_in(y, &[g.batch, g.c_out, g.out_h(), g.out_w()], Layout::ChannelsLast), kept_input }
    }

    fn gemm_conv2d_backward(
        x: FlexTensor,
        weight: FlexTensor,
        output_grad: FlexTensor,
        geometry: [usize; 4],
        input_grad: bool,
    ) -> LayerGrads<Self> {
        let (x_dims, w_dims) = (dims(&x), dims(&weight));
        let g = conv_geometry(&x_dims, &w_dims, geometry);
        // ∂W, and ∂X where wanted, each as many operations as the forward.
        profile::count_conv_flops(g.flops() * (1 + u64::from(input_grad)));
        let (dx, dw, db) = if x.dtype() == DType::BF16 {
            // The bf16 channels-last copy the forward kept (gemm_conv2d_keeping_input).
            let (kept, dy) = (x.storage::<bf16>(), f32s_as(&output_grad, Layout::ChannelsLast));
            let grads = profile::timed(Kernel::Conv, Pass::Backward, || {
                conv::backward_from_kept_input(kept, &f32s(&weight), &dy, &g, input_grad)
            });
            let (dx, dw, db) = grads;
            (dx.map(|dx| flex_in(dx, &x_dims, Layout::ChannelsLast)), dw, db)
        } else {
            let (x, layout) = f32s_in_layout(&x);
            let (dx, dw, db) = profile::timed(Kernel::Conv, Pass::Backward, || {
                conv::backward(&x, &f32s(&weight), &f32s_as(&output_grad, layout), &g, input_grad, layout)
            });
            (dx.map(|dx| flex_in(dx, &x_dims, layout)), dw, db)
        };
        let input = dx.unwrap_or_else(|| flex(Vec::new(), &[0]));
        LayerGrads { input, weight: flex(dw, &w_dims), bias: flex(db, &[g.c_out]) }
    }

    fn fast_to_layout(x: FlexTensor, layout: Layout) -> FlexTensor {
        if layout_of(&x) == layout {
            return x;
        }
        let shape = dims(&x);
        let values = profile::timed(Kernel::ChannelsLast, Pass::Forward, || f32s_as(&x, layout).into_owned());
        flex_in(values, &shape, layout)
    }

    fn fast_cat_channels(a: FlexTensor, b: FlexTensor, bf16_output: bool) -> FlexTensor {
        let (da, db) = (dims(&a), dims(&b));
        let a16 = channels_last_bf16(&a);
        if a16.is_some() || (bf16_output && layout_of(&a) == Layout::ChannelsLast) {
            let (n, channels, s, last) = (da[0], [da[1], db[1]], da[2] * da[3], Layout::ChannelsLast);
            let out = profile::timed(Kernel::Concat, Pass::Forward, || match (a16, channels_last_bf16(&b)) {
                (Some(a), Some(b)) => concat::cat_channels_to_bf16(a, b, n, channels, s, last),
                (Some(a), None) => concat::cat_channels_to_bf16(a, &f32s_as(&b, last), n, channels, s, last),
                (None, Some(b)) => concat::cat_channels_to_bf16(&f32s_as(&a, last), b, n, channels, s, last),
                (None, None) => {
                    concat::cat_channels_to_bf16(&f32s_as(&a, last), &f32s_as(&b, last), n, channels, s, last)
                }
            });
            return bf16_channels_last(out, &[da[0], da[1] + db[1], da[2], da[3]]);
        }
        let (a, layout) = f32s_in_layout(&a);
        let out = profile::timed(Kernel::Concat, Pass::Forward, || {
            let b = f32s_as(&b, layout);
            concat::cat_channels(&a, &b, da[0], [da[1], db[1]], da[2] * da[3], layout)
        });
        flex_in(out, &[da[0], da[1] + db[1], da[2], da[3]], layout)
    }

    fn fast_split_channels(grad: FlexTensor, [ca, cb]: [usize; 2]) -> ChannelSplit<Self> {
        let d = dims(&grad);
        if let Some(storage) = channels_last_storage(&grad) {
            // Channels-last, the first part's gradient stays a view of the first `ca` channels
            // of each row: autodiff adds it to the batch normalization's gradient of the same
            // tensor (the vendored burn-flex reads such a view row by row), so it is never
            // copied. The second part, which a convolution reads, is.
            let second = profile::timed(Kernel::Concat, Pass::Backward, || {
                concat::second_part(storage, d[0], [ca, cb], d[2] * d[3], Layout::ChannelsLast)
            });
            let second = flex_in(second, &[d[0], cb, d[2], d[3]], Layout::ChannelsLast);
            return ChannelSplit { first: grad.narrow(1, 0, ca), second };
        }
        let (grad, layout) = f32s_in_layout(&grad);
        let (a, b) = profile::timed(Kernel::Concat, Pass::Backward, || {
            concat::split_channels(&grad, d[0], [ca, cb], d[2] * d[3], layout)
        });
        ChannelSplit {
            first: flex_in(a, &[d[0], ca, d[2], d[3]], layout),
            second: flex_in(b, &[d[0], cb, d[2], d[3]], layout),
        }
    }

    fn fast_to_f32(x: FlexTensor) -> FlexTensor {
        match x.dtype() {
            DType::BF16 => widened(&x),
            _ => x,
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::ops::FloatTensorOps;

    use super::*;
    use crate::kernels::onednn;

    /// burn's four elementwise ops on Flex, each with its definition on f32 values.
    #[allow(clippy::type_complexity)]
    const ELEMENTWISE_OPS: [(&str, fn(FlexTensor, FlexTensor) -> FlexTensor, fn(f32, f32) -> f32); 4] = [
        ("add", Flex::float_add, |x, y| x + y),
        ("sub", Flex::float_sub, |x, y| x - y),
        ("mul", Flex::float_mul, |x, y| x * y),
        ("div", Flex::float_div, |x, y| x / y),
    ];

    /// Two channels-last tensors add in place, into a uniquely held one's N×H×W×C buffer (the
    /// vendored burn-flex's in-place op in memory order, `vendor/README.md`): the result keeps
    /// the layout, so autodiff's sums of channels-last gradients stay one dense pass. Without
    /// the patch the sum comes back as a new NCHW tensor. Each of the four ops, into either
    /// operand (the left one shared: the result goes into the right one's buffer).
    #[test]
    fn channels_last_tensors_add_in_place_and_keep_their_layout() {
        let shape = [2, 3, 4, 5];
        let len = shape.iter().product::<usize>();
        let a: Vec<f32> = (0..len).map(|i| i as f32 + 1.0).collect();
        let b: Vec<f32> = (0..len).map(|i| 0.5 * i as f32 - 7.25).collect();
        for (name, op, want) in ELEMENTWISE_OPS {
            for left_shared in [false, true] {
                let lhs = flex_in(a.clone(), &shape, Layout::ChannelsLast);
                let keep = left_shared.then(|| lhs.clone());
                let result = op(lhs, flex_in(b.clone(), &shape, Layout::ChannelsLast));
                let what = format!("{name}, left operand shared: {left_shared}");
                let storage = channels_last_storage(&result).unwrap_or_else(|| panic!("{what}: not channels-last"));
                let expected: Vec<f32> = a.iter().zip(&b).map(|(&x, &y)| want(x, y)).collect();
                assert_eq!(storage, &expected[..], "{what}");
                // And in NCHW order, as every other operation reads it.
                let nchw = layout::to_nchw(&expected, shape[0], shape[1], shape[2] * shape[3]);
                assert_eq!(&f32s(&result)[..], &nchw[..], "{what}");
                if let Some(kept) = keep {
                    assert_eq!(channels_last_storage(&kept), Some(&a[..]), "{what}: the shared operand changed");
                }
            }
        }
    }

    /// A dense channels-last operand and a view of a channel range of a wider channels-last
    /// buffer (rows that are part of longer ones, at a start offset): each op, with the view on
    /// either side, gives the values of the op on the two as NCHW vectors, in the dense
    /// operand's buffer and layout.
    #[test]
    fn a_view_of_channels_combines_with_a_dense_tensor_in_place() {
        let (n, wide, c, s) = (2, 11, 5, 42);
        let buffer: Vec<f32> = (0..n * wide * s).map(|i| i as f32 * 0.25 + 1.0).collect();
        let dense: Vec<f32> = (0..n * c * s).map(|i| 3.0 - i as f32 * 0.125).collect();
        let view = || flex_in(buffer.clone(), &[n, wide, 6, 7], Layout::ChannelsLast).narrow(1, 3, c);
        let plain_view: Vec<f32> = f32s(&view()).into_owned();
        assert_eq!(plain_view.len(), n * c * s);
        let last = || flex_in(layout::to_channels_last(&dense, n, c, s), &[n, c, 6, 7], Layout::ChannelsLast);
        for (name, op, want) in ELEMENTWISE_OPS {
            let view_left = op(view(), last());
            let expected: Vec<f32> = plain_view.iter().zip(&dense).map(|(&v, &d)| want(v, d)).collect();
            assert_eq!(layout_of(&view_left), Layout::ChannelsLast, "{name}, view on the left");
            assert_eq!(&f32s(&view_left)[..], &expected[..], "{name}, view on the left");
            let view_right = op(last(), view());
            let expected: Vec<f32> = dense.iter().zip(&plain_view).map(|(&d, &v)| want(d, v)).collect();
            assert_eq!(layout_of(&view_right), Layout::ChannelsLast, "{name}, view on the right");
            assert_eq!(&f32s(&view_right)[..], &expected[..], "{name}, view on the right");
        }
    }

    /// Each layer given a channels-last input gives a channels-last output and input gradient,
    /// with the values it gives for the same input in NCHW; the second part of a concatenation
    /// and an output gradient may come in either layout.
    #[test]
    fn layers_keep_a_channels_last_input_channels_last() {
        use crate::test_util::pattern;
        let shape = [2, 8, 6, 7];
        let len = shape.iter().product::<usize>();
        let nchw = pattern(len, 1);
        let last = || flex_in(layout::to_channels_last(&nchw, 2, 8, 42), &shape, Layout::ChannelsLast);
        let plain = || flex(nchw.clone(), &shape);
        assert_eq!(layout_of(&last()), Layout::ChannelsLast);
        assert_eq!(&f32s(&last())[..], &nchw[..]);
        let per_channel = |seed| flex(pattern(8, seed), &[8]);
        let check = |what: &str, got: FlexTensor, want: FlexTensor| {
            assert_eq!(layout_of(&got), Layout::ChannelsLast, "{what}: not channels-last");
            crate::test_util::assert_close(&f32s(&got), &f32s(&want), 1e-5, what);
        };
        let bn = |x| Flex::fused_batch_norm_train(x, per_channel(2), per_channel(3), 1e-5, Activation::Relu, false);
        check("batch norm", bn(last()).output, bn(plain()).output);
        let eval = |x| {
            Flex::fused_batch_norm(
                x,
                per_channel(2),
                per_channel(3),
                per_channel(4),
                flex(vec![0.5; 8], &[8]),
                1e-5,
                Activation::Relu,
            )
        };
        check("evaluation batch norm", eval(last()), eval(plain()));
        let dy = || flex(pattern(len, 5), &shape);
        let bn_grad = |x| {
            Flex::fused_batch_norm_train_backward(
                x,
                per_channel(2),
                per_channel(3),
                per_channel(4),
                flex(vec![0.5; 8], &[8]),
                1e-5,
                true,
                dy(),
            )
        };
        check("batch norm's gradient", bn_grad(last()).input, bn_grad(plain()).input);
        let window = pool::PoolWindow { kernel: [3, 3], stride: [2, 2], padding: [1, 1] };
        check("max pool", Flex::fast_max_pool2d(last(), window), Flex::fast_max_pool2d(plain(), window));
        let y = Flex::fast_max_pool2d(plain(), window);
        let pooled_grad = || flex(pattern(y.layout().shape().num_elements(), 6), &dims(&y));
        let max_grad = |x: FlexTensor| {
            let y = Flex::fast_max_pool2d(x.clone(), window);
            Flex::fast_max_pool2d_backward(x, y, pooled_grad(), window)
        };
        check("max pool's gradient", max_grad(last()), max_grad(plain()));
        check("avg pool", Flex::fast_avg_pool2d_2x2(last()), Flex::fast_avg_pool2d_2x2(plain()));
        let avg_grad = |g| Flex::fast_avg_pool2d_2x2_backward(g, shape);
        let g = Flex::fast_avg_pool2d_2x2(last());
        check("avg pool's gradient", avg_grad(g.clone()), avg_grad(Flex::fast_to_layout(g, Layout::Nchw)));
        let other = || flex(pattern(2 * 3 * 42, 7), &[2, 3, 6, 7]);
        check(
            "concatenation",
            Flex::fast_cat_channels(last(), other(), false),
            Flex::fast_cat_channels(plain(), other(), false),
        );
        let cat = Flex::fast_cat_channels(last(), other(), false);
        let split = Flex::fast_split_channels(cat.clone(), [8, 3]);
        // The first part is a view of the first 8 channels of the gradient's rows, no copy.
        assert_eq!(split.first.layout().strides(), &[42 * 11, 1, 7 * 11, 11], "first part: not a view");
        assert_eq!(&f32s(&split.first)[..], &nchw[..], "first part");
        check("second part", split.second, other());
        // Added to a channels-last gradient (autodiff's sum), it gives that gradient's layout.
        check("first part added", Flex::float_add(split.first, last()), Flex::float_add(plain(), plain()));
        if onednn::has_channels_last_kernels() {
            let (w, b) = (flex(pattern(4 * 8 * 9, 8), &[4, 8, 3, 3]), flex(pattern(4, 9), &[4]));
            let conv = |x| Flex::gemm_conv2d(x, w.clone(), b.clone(), [1, 1, 1, 1]);
            check("convolution", conv(last()), conv(plain()));
            let conv_grad = |x| {
                Flex::gemm_conv2d_backward(
                    x,
                    w.clone(),
                    flex(pattern(2 * 4 * 42, 10), &[2, 4, 6, 7]),
                    [1, 1, 1, 1],
                    true,
                )
            };
            check("convolution's gradient", conv_grad(last()).input, conv_grad(plain()).input);
        }
        assert_eq!(layout_of(&Flex::fast_to_layout(last(), Layout::Nchw)), Layout::Nchw);
    }
}
