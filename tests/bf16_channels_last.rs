//! bf16 mixed precision on channels-last activations (DenseNet's CPU path): the convolution's
//! backward reads the bf16 copy of its input that the forward kept, where the NCHW path
//! converts its input again; both give the same values and gradients. A test binary of its
//! own: the precision is the whole process's.

use burn::prelude::*;
use burn::tensor::ops::ConvOptions;
use burn::tensor::DType;
use burn::tensor::Distribution;
use deepcnn::device::{ComputeDevice, Precision};
use deepcnn::kernels::conv::{self, ConvGeometry};
use deepcnn::kernels::layout::Layout;
use deepcnn::kernels::{batch_norm_train, batch_norm_train_for_conv, channels_last, conv2d, onednn, Activation};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// The largest difference relative to the largest magnitude in `b`.
fn relative_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let (a, b) = (values(a), values(b));
    let scale = b.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

fn bf16_on() -> bool {
    if !onednn::has_bf16_kernels() {
        eprintln!("skipped: oneDNN has no bf16 convolution kernels on this CPU");
        return false;
    }
    Precision::Bf16.apply(ComputeDevice::Cpu).unwrap();
    true
}

/// BN-ReLU writing its output in bf16 for the convolution after it (DenseNet's conv blocks)
/// gives the bits of BN-ReLU in f32 and the convolution's own rounding: outputs, statistics
/// and every gradient.
#[test]
fn batch_norm_for_a_convolution_gives_the_same_bits() {
    if !bf16_on() {
        return;
    }
    let device = Device::flex().autodiff();
    let random = |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.5, 1.0), &device);
    let x = channels_last(random([2, 16, 9, 9])).require_grad();
    let w = random([8, 16, 3, 3]).require_grad();
    let vector = |n| Tensor::<1>::random([n], Distribution::Normal(0.5, 1.0), &device).require_grad();
    let (gamma, beta, bias) = (vector(16), vector(16), vector(8));
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let (y16, mean16, var16) =
        batch_norm_train_for_conv(x.clone(), gamma.clone(), beta.clone(), 1e-5, Activation::Relu);
    let (y32, mean32, var32) = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5, Activation::Relu);
    assert_eq!((y16.dtype(), y32.dtype()), (DType::BF16, DType::F32), "the output for the convolution is bf16");
    assert_eq!((values(mean16), values(var16)), (values(mean32), values(var32)));
    let z16 = conv2d(y16, w.clone(), Some(bias.clone()), options.clone());
    let z32 = conv2d(y32, w.clone(), Some(bias.clone()), options);
    assert_eq!(values(z16.clone()), values(z32.clone()), "outputs");
    let weights = Tensor::<4>::random(z32.dims(), Distribution::Normal(0.0, 1.0), &device);
    let (g16, g32) = ((z16 * weights.clone()).sum().backward(), (z32 * weights).sum().backward());
    assert_eq!(values(x.grad(&g16).unwrap()), values(x.grad(&g32).unwrap()), "∂x");
    assert_eq!(values(w.grad(&g16).unwrap()), values(w.grad(&g32).unwrap()), "∂W");
    for (name, t) in [("γ", &gamma), ("β", &beta), ("b", &bias)] {
        assert_eq!(values(t.grad(&g16).unwrap()), values(t.grad(&g32).unwrap()), "∂{name}");
    }
    // NCHW activations stay f32: only the channels-last kernels write bf16.
    let (y, _, _) =
        batch_norm_train_for_conv(random([2, 16, 9, 9]), gamma.clone(), beta.clone(), 1e-5, Activation::Relu);
    assert_eq!(y.dtype(), DType::F32);
}

#[test]
fn a_kept_bf16_input_gives_the_nchw_values_and_gradients() {
    if !bf16_on() {
        return;
    }
    let device = Device::flex().autodiff();
    let random = |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let x = random([2, 16, 9, 9]).require_grad();
    let (w1, w2) = (random([8, 16, 3, 3]).require_grad(), random([4, 8, 3, 3]).require_grad());
    let bias = Tensor::<1>::random([8], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let run = |x: Tensor<4>| {
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let y = conv2d(x, w1.clone(), Some(bias.clone()), options.clone());
        conv2d(y, w2.clone(), None, options)
    };
    let (last, plain) = (run(channels_last(x.clone())), run(x.clone()));
    // bf16 rounds the same inputs on both paths; only the f32 sums' order differs.
    assert!(relative_diff(last.clone(), plain.clone()) < 1e-5, "outputs differ");
    let weights = Tensor::<4>::random(plain.dims(), Distribution::Normal(0.0, 1.0), &device);
    let (g_last, g_plain) = ((last * weights.clone()).sum().backward(), (plain * weights).sum().backward());
    for (name, t) in [("x", &x), ("W1", &w1), ("W2", &w2)] {
        let d = relative_diff(t.grad(&g_last).unwrap(), t.grad(&g_plain).unwrap());
        assert!(d < 1e-4, "∂{name} differs by {d} relative to the largest");
    }
    let d = relative_diff(bias.grad(&g_last).unwrap(), bias.grad(&g_plain).unwrap());
    assert!(d < 1e-4, "∂b differs by {d}");

    // The channels-last path is the one that keeps the bf16 input; NCHW keeps x itself.
    let g = ConvGeometry { batch: 2, c_in: 16, h: 9, w: 9, c_out: 8, kh: 3, kw: 3, stride: [1, 1], padding: [1, 1] };
    let (x, w, b) = (vec![0.5; 2 * 16 * 81], vec![0.25; 8 * 16 * 9], vec![0.0; 8]);
    assert!(conv::forward_keeping_input(&x, &w, &b, &g, Layout::ChannelsLast).is_some());
    assert!(conv::forward_keeping_input(&x, &w, &b, &g, Layout::Nchw).is_none());
}

/// A dense block's concatenation in bf16 training is written in bf16 (what batch
/// normalization and the next concatenation read), its values the f32 concatenation's
/// rounded; batch normalization reads it as the f32 tensor of the same values: outputs,
/// statistics and gradients to the same bits, training and evaluation.
#[test]
fn a_bf16_concatenation_reads_as_its_values_in_f32() {
    use deepcnn::kernels::{batch_norm, cat_channels, cat_channels_for_batch_norm};
    if !bf16_on() {
        return;
    }
    let device = Device::flex().autodiff();
    let random = |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.5, 1.0), &device);
    let (a, b) =
        (channels_last(random([2, 12, 7, 7])).require_grad(), channels_last(random([2, 5, 7, 7])).require_grad());
    let cat16 = cat_channels_for_batch_norm(a.clone(), b.clone());
    let cat32 = cat_channels(a.clone(), b.clone());
    assert_eq!((cat16.dtype(), cat32.dtype()), (DType::BF16, DType::F32));
    let rounded: Vec<f32> = values(cat32).iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
    assert_eq!(values(cat16.clone()), rounded);
    // The next concatenation of a bf16 one stays bf16.
    assert_eq!(cat_channels(cat16.clone(), b.clone()).dtype(), DType::BF16);

    // The same values as an f32 leaf, channels-last as the concatenation is.
    let widened =
        channels_last(Tensor::<4>::from_data(TensorData::new(rounded, [2, 17, 7, 7]), &device)).require_grad();
    let vector = |n| Tensor::<1>::random([n], Distribution::Normal(0.5, 1.0), &device);
    let (gamma, beta) = (vector(17), vector(17));
    let weights = random([2, 17, 7, 7]);
    for (what, for_conv) in [("for a convolution", true), ("in f32", false)] {
        let bn = |x: Tensor<4>| match for_conv {
            true => batch_norm_train_for_conv(x, gamma.clone(), beta.clone(), 1e-5, Activation::Relu),
            false => batch_norm_train(x, gamma.clone(), beta.clone(), 1e-5, Activation::Relu),
        };
        // A new graph each time: burn walks a graph back once.
        let cat16 = cat_channels_for_batch_norm(a.clone(), b.clone());
        let ((y16, mean16, var16), (y32, mean32, var32)) = (bn(cat16), bn(widened.clone()));
        assert_eq!(y16.dtype(), y32.dtype(), "{what}");
        assert_eq!((values(mean16), values(var16)), (values(mean32), values(var32)), "{what}: statistics");
        assert_eq!(values(y16.clone()), values(y32.clone()), "{what}: output");
        let g16 = (y16.cast(DType::F32) * weights.clone()).sum().backward();
        let g32 = (y32.cast(DType::F32) * weights.clone()).sum().backward();
        let dx = values(widened.grad(&g32).unwrap());
        // The concatenation's gradient goes to its parts, channel by channel.
        let part = |t: &Tensor<4>, from: usize, to: usize| {
            let g = t.grad(&g16).unwrap();
            let reference = Tensor::<4>::from_data(TensorData::new(dx.clone(), [2, 17, 7, 7]), &Device::flex());
            (values(g), values(reference.narrow(1, from, to - from)))
        };
        let (da, want_a) = part(&a, 0, 12);
        assert_eq!(da, want_a, "{what}: ∂a");
        let (db, want_b) = part(&b, 12, 17);
        assert_eq!(db, want_b, "{what}: ∂b");
    }
    // Evaluation mode reads it the same way.
    let (mean, var) = (vector(17), vector(17).abs());
    let eval = |x: Tensor<4>| {
        let x = x.inner();
        let (g, b, m, v) = (gamma.clone().inner(), beta.clone().inner(), mean.clone().inner(), var.clone().inner());
        values(batch_norm(x, g, b, m, v, 1e-5, Activation::Relu))
    };
    assert_eq!(eval(cat16), eval(widened), "evaluation");
}

/// A network's first convolution (one input channel) runs its forward in bf16 and its
/// backward in f32, where oneDNN is faster for it: the f32 gradients to the bit, from the f32
/// input, which is what it keeps. A convolution of two channels keeps computing in bf16.
#[test]
fn a_first_convolution_keeps_its_input_and_has_f32_gradients() {
    if !bf16_on() {
        return;
    }
    let last = Layout::ChannelsLast;
    for c_in in [1, 2] {
        let g = ConvGeometry { batch: 4, c_in, h: 20, w: 20, c_out: 8, kh: 7, kw: 7, stride: [2, 2], padding: [3, 3] };
        let x: Vec<f32> = (0..4 * c_in * 400).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
        let w: Vec<f32> = (0..8 * c_in * 49).map(|i| ((i * 13) % 29) as f32 / 30.0 - 0.5).collect();
        let dy: Vec<f32> = (0..4 * 8 * 100).map(|i| ((i * 7) % 23) as f32 / 11.0 - 1.0).collect();
        let kept = conv::forward_keeping_input(&x, &w, &[0.0; 8], &g, last);
        let grads = conv::backward(&x, &w, &dy, &g, true, last);
        let in_f32 = onednn::backward_in(&x, &w, &dy, &g, true, false, last).unwrap();
        let in_bf16 = onednn::backward_in(&x, &w, &dy, &g, true, true, last).unwrap();
        assert!(in_f32 != in_bf16, "the example must tell bf16 from f32");
        if c_in == 1 {
            assert!(kept.is_none(), "one channel: x itself is kept");
            assert!(grads == in_f32, "one channel: the gradients are not f32's");
        } else {
            assert!(kept.is_some(), "two channels: the bf16 copy is kept");
            assert!(grads == in_bf16, "two channels: the gradients are not bf16's");
        }
    }
}

/// Evaluation-mode batch normalization on an autodiff device (burn's composition, in f32) on
/// a bf16 concatenation that another concatenation also reads: the tensor's two gradients are
/// both f32 and add up (burn's cast would have passed a bf16 one back), to the gradients of
/// the same graph on the f32 values.
#[test]
fn a_bf16_concatenation_read_in_evaluation_mode_has_f32_gradients() {
    use deepcnn::kernels::{batch_norm, cat_channels, cat_channels_for_batch_norm};
    if !bf16_on() {
        return;
    }
    let device = Device::flex().autodiff();
    let random = |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.5, 1.0), &device);
    let (a, b) =
        (channels_last(random([2, 12, 5, 5])).require_grad(), channels_last(random([2, 4, 5, 5])).require_grad());
    let vector = |n| Tensor::<1>::random([n], Distribution::Normal(0.5, 1.0), &device);
    let (gamma, beta, mean, var) = (vector(16), vector(16), vector(16), vector(16).abs());
    let weights = random([2, 16, 5, 5]);
    let loss = |x: Tensor<4>| {
        let y = batch_norm(x.clone(), gamma.clone(), beta.clone(), mean.clone(), var.clone(), 1e-5, Activation::Relu);
        let z = cat_channels(x, b.clone());
        (y * weights.clone()).sum() + z.cast(DType::F32).sum()
    };
    let cat16 = cat_channels_for_batch_norm(a.clone(), b.clone());
    assert_eq!(cat16.dtype(), DType::BF16);
    let widened = channels_last(Tensor::<4>::from_data(cat16.to_data().convert::<f32>(), &device)).require_grad();
    let (g16, g32) = (loss(cat16).backward(), loss(widened.clone()).backward());
    let da = a.grad(&g16).expect("∂a");
    assert_eq!(da.dtype(), DType::F32);
    let want = widened.grad(&g32).unwrap().narrow(1, 0, 12);
    assert!(relative_diff(da, want) < 1e-6, "∂a differs from the f32 graph's");
}
