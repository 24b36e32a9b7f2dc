//! [`FastOps`] on burn's Flex CPU backend: each operation reads its tensors as f32 slices (a
//! copy only for strided views), runs deepcnn's kernel, timed for profiles, and wraps the
//! result as a tensor. Convolutions take a channels-last input ([`layout`]) as it lies and
//! give its gradient in the same layout; the other kernels read such views transposed to NCHW.

use std::borrow::Cow;

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::prelude::*;

use super::batch_norm::{self, Activation, NcsShape};
use super::conv::{self, ConvGeometry};
use super::extension::{AdamUpdate, BatchNormTrainOutput, FastOps, LayerGrads};
use super::layout::{self, Layout};
use super::profile::{self, Pass};
use super::{activation, adam, ema, pool, Kernel};

/// `t`'s values in NCHW order: borrowed where they lie so, else a copy.
fn f32s(t: &FlexTensor) -> Cow<'_, [f32]> {
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
    match channels_last_storage(t) {
        Some(s) => (Cow::Borrowed(s), Layout::ChannelsLast),
        None => (f32s(t), Layout::Nchw),
    }
}

/// The N×H×W×C buffer behind `t` where `t` is an N×C×H×W view of all of it (what
/// `permute([0, 3, 1, 2])` makes of an N×H×W×C tensor), and not also contiguous (with one
/// channel, or 1×1 maps, the two layouts agree).
fn channels_last_storage(t: &FlexTensor) -> Option<&[f32]> {
    let l = t.layout();
    let d = l.shape();
    if d.num_dims() != 4 || t.is_contiguous() {
        return None;
    }
    let (c, h, w) = (d[1], d[2], d[3]);
    let strides = [(h * w * c) as isize, 1, (w * c) as isize, c as isize];
    let storage = t.storage::<f32>();
    (l.start_offset() == 0 && l.strides() == strides && storage.len() == d.num_elements()).then_some(storage)
}

/// An N×C×H×W tensor (`shape`) of values in `layout`.
fn flex_in(data: Vec<f32>, shape: &[usize], layout: Layout) -> FlexTensor {
    match layout {
        Layout::Nchw => flex(data, shape),
        Layout::ChannelsLast => flex(data, &[shape[0], shape[2], shape[3], shape[1]]).permute(&[0, 3, 1, 2]),
    }
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

impl FastOps for Flex {
    fn fused_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        activation: Activation,
    ) -> BatchNormTrainOutput<Self> {
        let shape = dims(&x);
        let ncs = NcsShape::from_dims(&shape);
        let (y, mean, var) = profile::timed(Kernel::BatchNorm, Pass::Forward, || {
            batch_norm::forward_train(&f32s(&x), ncs, &f32s(&gamma), &f32s(&beta), epsilon, activation)
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
        let (dx, dgamma, dbeta) = profile::timed(Kernel::BatchNorm, Pass::Backward, || {
            batch_norm::backward_train(
                &f32s(&x),
                ncs,
                &f32s(&gamma),
                &f32s(&beta),
                &f32s(&mean),
                &f32s(&variance),
                epsilon,
                relu,
                &f32s(&output_grad),
            )
        });
        LayerGrads { input: flex(dx, &shape), weight: flex(dgamma, &[ncs.c]), bias: flex(dbeta, &[ncs.c]) }
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
        let y = profile::timed(Kernel::BatchNorm, Pass::Evaluation, || {
            let (x, gamma, beta, mean, variance) = (f32s(&x), f32s(&gamma), f32s(&beta), f32s(&mean), f32s(&variance));
            batch_norm::normalize(&x, ncs, &gamma, &beta, &mean, &variance, epsilon, activation)
        });
        flex(y, &shape)
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
        let y = profile::timed(Kernel::MaxPool, Pass::Forward, || match window == pool::LENETS_WINDOW {
            true => pool::max_pool_2x2(&f32s(&x), planes, d[2], d[3]),
            false => pool::max_pool(&f32s(&x), planes, d[2], d[3], &window),
        });
        flex(y, &[d[0], d[1], ho, wo])
    }

    fn fast_max_pool2d_backward(
        x: FlexTensor,
        output: FlexTensor,
        output_grad: FlexTensor,
        window: pool::PoolWindow,
    ) -> FlexTensor {
        let d = dims(&x);
        let planes = d[0] * d[1];
        let dx = profile::timed(Kernel::MaxPool, Pass::Backward, || match window == pool::LENETS_WINDOW {
            true => pool::max_pool_2x2_backward(&f32s(&x), &f32s(&output), &f32s(&output_grad), planes, d[2], d[3]),
            false => {
                pool::max_pool_backward(&f32s(&x), &f32s(&output), &f32s(&output_grad), planes, d[2], d[3], &window)
            }
        });
        flex(dx, &d)
    }

    fn fast_avg_pool2d_2x2(x: FlexTensor) -> FlexTensor {
        let d = dims(&x);
        let y =
            profile::timed(Kernel::AvgPool, Pass::Forward, || pool::avg_pool_2x2(&f32s(&x), d[0] * d[1], d[2], d[3]));
        flex(y, &[d[0], d[1], d[2] / 2, d[3] / 2])
    }

    fn fast_avg_pool2d_2x2_backward(output_grad: FlexTensor, input_shape: [usize; 4]) -> FlexTensor {
        let [n, c, h, w] = input_shape;
        let dx = profile::timed(Kernel::AvgPool, Pass::Backward, || {
            pool::avg_pool_2x2_backward(&f32s(&output_grad), n * c, h, w)
        });
        flex(dx, &input_shape)
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
        let g = conv_geometry(&dims(&x), &dims(&weight), geometry);
        profile::count_conv_flops(g.flops());
        let (x, x_layout) = f32s_in_layout(&x);
        let y = profile::timed(Kernel::Conv, Pass::Forward, || {
            conv::forward(&x, &f32s(&weight), &f32s(&bias), &g, x_layout)
        });
        flex(y, &[g.batch, g.c_out, g.out_h(), g.out_w()])
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
        let (x, x_layout) = f32s_in_layout(&x);
        let (dx, dw, db) = profile::timed(Kernel::Conv, Pass::Backward, || {
            conv::backward(&x, &f32s(&weight), &f32s(&output_grad), &g, input_grad, x_layout)
        });
        let input = match dx {
            Some(dx) => flex_in(dx, &x_dims, x_layout),
            None => flex(Vec::new(), &[0]),
        };
        LayerGrads { input, weight: flex(dw, &w_dims), bias: flex(db, &[g.c_out]) }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::ops::FloatTensorOps;

    use super::*;

    /// Two channels-last tensors add in place, into the first one's N×H×W×C buffer (the
    /// vendored burn-flex's in-place walk in memory order, `vendor/README.md`): the sum keeps
    /// the layout, so autodiff's sums of channels-last gradients stay one dense pass. Without
    /// the patch the sum comes back as a new NCHW tensor.
    #[test]
    fn channels_last_tensors_add_in_place_and_keep_their_layout() {
        let shape = [2, 3, 4, 5];
        let len = shape.iter().product::<usize>();
        let a: Vec<f32> = (0..len).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..len).map(|i| 0.5 * i as f32 - 7.0).collect();
        let sum = Flex::float_add(
            flex_in(a.clone(), &shape, Layout::ChannelsLast),
            flex_in(b.clone(), &shape, Layout::ChannelsLast),
        );
        let storage = channels_last_storage(&sum).expect("the sum is no longer channels-last");
        let expected: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(storage, &expected[..]);
        // And in NCHW order, as every other operation reads it.
        let nchw = layout::to_nchw(&expected, shape[0], shape[1], shape[2] * shape[3]);
        assert_eq!(&f32s(&sum)[..], &nchw[..]);
    }
}
