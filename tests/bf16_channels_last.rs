//! bf16 mixed precision on channels-last activations (DenseNet's CPU path): the convolution's
//! backward reads the bf16 copy of its input that the forward kept, where the NCHW path
//! converts its input again; both give the same values and gradients. A test binary of its
//! own: the precision is the whole process's.

use burn::prelude::*;
use burn::tensor::ops::ConvOptions;
use burn::tensor::Distribution;
use deepcnn::device::{ComputeDevice, Precision};
use deepcnn::kernels::conv::{self, ConvGeometry};
use deepcnn::kernels::layout::Layout;
use deepcnn::kernels::{channels_last, conv2d, onednn};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// The largest difference relative to the largest magnitude in `b`.
fn relative_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let (a, b) = (values(a), values(b));
    let scale = b.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

#[test]
fn a_kept_bf16_input_gives_the_nchw_values_and_gradients() {
    if !onednn::has_bf16_kernels() {
        eprintln!("skipped: oneDNN has no bf16 convolution kernels on this CPU");
        return;
    }
    Precision::Bf16.apply(ComputeDevice::Cpu).unwrap();
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
