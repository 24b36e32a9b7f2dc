//! The kernels through the tensor-level functions, against burn's own operations.

use super::*;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::Distribution;

use crate::test_util::values;

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.3, 1.5), device)
}

fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    crate::test_util::max_diff(&values(a), &values(b))
}

/// The largest difference relative to the largest magnitude in `b` (or to 1, if smaller).
fn relative_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let scale = values(b.clone()).iter().fold(1.0f32, |m, v| m.max(v.abs()));
    max_diff(a, b) / scale
}

#[test]
fn the_fast_path_is_taken_on_flex_with_and_without_autodiff() {
    let x = Tensor::<4>::zeros([1, 1, 2, 2], &Device::flex());
    assert!(fast_path(Kernel::Conv, &x));
    let x = Tensor::<4>::zeros([1, 1, 2, 2], &Device::flex().autodiff());
    assert!(fast_path(Kernel::Conv, &x));
}

/// Conv shapes of the book's networks in miniature: LeNet's 5×5 valid convs, the stem's
/// 7×7 stride 2 pad 3, 3×3 pad 1 with and without stride, the 1×1 shortcut with stride 2,
/// DenseNet's 3×3 conv making fewer channels than it takes (∂X as a transposed convolution),
/// its 1×1 transition conv, and 3×3 convs of 1×1 images.
const CONVS: [(usize, usize, usize, usize, usize, usize, usize); 10] = [
    // (c_in, c_out, size, kernel, stride, padding, batch)
    (1, 6, 12, 5, 1, 0, 3),
    (6, 16, 8, 5, 1, 0, 2),
    (1, 8, 15, 7, 2, 3, 2),
    (5, 7, 9, 3, 1, 1, 3),
    (5, 7, 9, 3, 2, 1, 2),
    (5, 7, 9, 1, 2, 0, 2),
    (12, 4, 6, 3, 1, 1, 2),
    (9, 4, 6, 1, 1, 0, 3),
    // 1×1 images, where one tap meets the image (ResNet-18's last stage at 28×28).
    (5, 7, 1, 3, 1, 1, 3),
    (4, 6, 1, 3, 2, 1, 2),
];

#[test]
fn conv2d_matches_burns_conv2d_in_value_and_gradients() {
    let device = Device::flex().autodiff();
    for (c_in, c_out, size, k, s, p, n) in CONVS {
        let x = random([n, c_in, size, size], &device).require_grad();
        let w = random([c_out, c_in, k, k], &device).require_grad();
        let b = random([c_out], &device).require_grad();
        let options = ConvOptions::new([s, s], [p, p], [1, 1], 1);
        let ours = conv2d(x.clone(), w.clone(), Some(b.clone()), options.clone());
        let theirs = burn::tensor::module::conv2d(x.clone(), w.clone(), Some(b.clone()), options);
        assert_eq!(ours.dims(), theirs.dims());
        let what = format!("conv {c_in}→{c_out} {k}×{k} s{s} p{p} on {n}×{size}²");
        assert!(max_diff(ours.clone(), theirs.clone()) < 1e-4, "{what}: outputs differ");
        // A weighted sum, so that every output position gets its own upstream gradient.
        let weights = random(ours.dims(), &device);
        let g_ours = (ours * weights.clone()).sum().backward();
        let g_theirs = (theirs * weights).sum().backward();
        for (name, t) in [("x", &x), ("weight", &w)] {
            let d = max_diff(t.grad(&g_ours).unwrap(), t.grad(&g_theirs).unwrap());
            assert!(d < 1e-3, "{what}: ∂{name} differs by {d}");
        }
        assert!(max_diff(b.grad(&g_ours).unwrap(), b.grad(&g_theirs).unwrap()) < 1e-3, "{what}: ∂bias");
    }
}

/// A channels-last input (an N×C×H×W view of an N×H×W×C tensor, which oneDNN reads without a
/// reorder) gives the values and gradients of the same input in NCHW, on every kind of layer.
#[test]
fn conv2d_takes_channels_last_inputs_as_they_lie() {
    let device = Device::flex().autodiff();
    for (c_in, c_out, size, k, s, p, n) in CONVS {
        let x_nhwc = random([n, size, size, c_in], &device).require_grad();
        let x_nchw = x_nhwc.clone().detach().permute([0, 3, 1, 2]).into_data();
        let x_nchw = Tensor::<4>::from_data(x_nchw, &device).require_grad();
        let (w, b) = (random([c_out, c_in, k, k], &device).require_grad(), random([c_out], &device));
        let options = ConvOptions::new([s, s], [p, p], [1, 1], 1);
        let last = conv2d(x_nhwc.clone().permute([0, 3, 1, 2]), w.clone(), Some(b.clone()), options.clone());
        let plain = conv2d(x_nchw.clone(), w.clone(), Some(b), options);
        let what = format!("conv {c_in}→{c_out} {k}×{k} s{s} p{p} on {n}×{size}²");
        assert!(max_diff(last.clone(), plain.clone()) < 1e-4, "{what}: outputs differ");
        let weights = random(plain.dims(), &device);
        let g_last = (last * weights.clone()).sum().backward();
        let g_plain = (plain * weights).sum().backward();
        let dx_last = x_nhwc.grad(&g_last).unwrap().permute([0, 3, 1, 2]);
        assert!(max_diff(dx_last, x_nchw.grad(&g_plain).unwrap()) < 1e-3, "{what}: ∂X differs");
        assert!(max_diff(w.grad(&g_last).unwrap(), w.grad(&g_plain).unwrap()) < 1e-3, "{what}: ∂W differs");
    }
}

/// Max pooling against burn's: LeNet's 2×2 and the stem's 3×3 stride 2 padding 1, and
/// windows that overlap, are not square or have padding; even and odd sizes (the last rows
/// and columns dropped), random values, and ties (a constant input), where both send each
/// window's gradient to its first element. Values are exact; gradients exact for 2×2 and
/// within rounding elsewhere (overlapping windows sum in another order).
#[test]
fn max_pool_matches_burns_max_pool_in_value_and_gradient() {
    let device = Device::flex().autodiff();
    let windows =
        [([2, 2], [2, 2], [0, 0]), ([3, 3], [2, 2], [1, 1]), ([3, 3], [1, 1], [1, 1]), ([2, 3], [1, 2], [1, 0])];
    for (kernel, stride, [ph, pw]) in windows {
        let options = MaxPoolOptions::new(kernel).with_stride(stride).with_padding([ph, pw]);
        // Rows of 17, 16, 15 and 5 windows: 2×2's vector path (8 windows at a time) and its
        // masked tails (LeNet's second pooling has rows of 5).
        let shapes = [
            ([2, 3, 8, 8], false),
            ([1, 2, 7, 9], false),
            ([1, 2, 4, 6], true),
            ([2, 3, 6, 35], false),
            ([2, 3, 10, 10], false),
            ([1, 2, 4, 30], false),
        ];
        for (shape, constant) in shapes.into_iter().chain([([1, 2, 4, 32], true)]) {
            let what = format!("{kernel:?} stride {stride:?} padding {:?} on {shape:?}", [ph, pw]);
            let x = if constant { Tensor::ones(shape, &device) } else { random(shape, &device) }.require_grad();
            let ours = max_pool2d(x.clone(), options.clone());
            let theirs = burn::tensor::module::max_pool2d(x.clone(), options.clone());
            assert_eq!(ours.dims(), theirs.dims(), "{what}");
            assert_eq!(max_diff(ours.clone(), theirs.clone()), 0.0, "{what}: values");
            let weights = random(ours.dims(), &device);
            let g_ours = (ours * weights.clone()).sum().backward();
            let g_theirs = (theirs * weights).sum().backward();
            let d = max_diff(x.grad(&g_ours).unwrap(), x.grad(&g_theirs).unwrap());
            let tolerance = if kernel == [2, 2] { 0.0 } else { 1e-5 };
            assert!(d <= tolerance, "{what}: gradients differ by {d}");
        }
    }
}

/// 2×2 average pooling against burn's, in value and gradient: even and odd sizes (the last
/// row and column dropped), and windows burn must take (3×3, padding, stride 1).
#[test]
fn avg_pool_matches_burns_avg_pool_in_value_and_gradient() {
    let device = Device::flex().autodiff();
    for (kernel, stride, padding) in [([2, 2], [2, 2], [0, 0]), ([3, 3], [1, 1], [1, 1]), ([2, 2], [1, 1], [0, 0])] {
        let options = AvgPoolOptions::new(kernel).with_stride(stride).with_padding(padding);
        for shape in [[2, 3, 8, 8], [1, 2, 7, 9], [2, 2, 3, 35]] {
            let what = format!("{kernel:?} stride {stride:?} padding {padding:?} on {shape:?}");
            let x = random(shape, &device).require_grad();
            let ours = avg_pool2d(x.clone(), options.clone());
            let theirs = burn::tensor::module::avg_pool2d(x.clone(), options.clone());
            assert_eq!(ours.dims(), theirs.dims(), "{what}");
            assert!(max_diff(ours.clone(), theirs.clone()) < 1e-6, "{what}: values");
            let weights = random(ours.dims(), &device);
            let g_ours = (ours * weights.clone()).sum().backward();
            let g_theirs = (theirs * weights).sum().backward();
            let d = max_diff(x.grad(&g_ours).unwrap(), x.grad(&g_theirs).unwrap());
            assert!(d < 1e-6, "{what}: gradients differ by {d}");
        }
    }
}

/// A NaN in a window is the window's maximum (as in PyTorch), and takes its gradient.
#[test]
fn max_pool_propagates_nan() {
    let x = [1.0, f32::NAN, 3.0, 2.0];
    let y = pool::max_pool_2x2(&x, 1, 2, 2);
    assert!(y[0].is_nan());
    let dx = pool::max_pool_2x2_backward(&x, &y, &[5.0], 1, 2, 2);
    assert_eq!(dx, [0.0, 5.0, 0.0, 0.0]);
    // 2×2 rows of 17 windows (the vector path and its tail), a NaN at each of a window's
    // four places and two in one window: the gradient goes to the first NaN.
    let (h, w) = (2, 34);
    let mut x: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
    for (window, places) in [(0, &[0][..]), (3, &[1]), (9, &[2]), (12, &[3]), (16, &[3]), (5, &[3, 1])] {
        for &place in places {
            x[(place / 2) * w + 2 * window + place % 2] = f32::NAN;
        }
    }
    let y = pool::max_pool_2x2(&x, 1, h, w);
    let dy: Vec<f32> = (1..=17).map(|g| g as f32).collect();
    let dx = pool::max_pool_2x2_backward(&x, &y, &dy, 1, h, w);
    for window in 0..17 {
        let places = [0, 1, w, w + 1].map(|o| 2 * window + o);
        let first_nan = places.iter().position(|&i| x[i].is_nan());
        // Without a NaN the maximum of 0..68 laid out this way is the bottom right.
        let expected = first_nan.unwrap_or(3);
        assert_eq!(y[window].is_nan(), first_nan.is_some(), "window {window}");
        for (place, &i) in places.iter().enumerate() {
            let want = if place == expected { dy[window] } else { 0.0 };
            assert_eq!(dx[i], want, "window {window}, place {place}");
        }
    }
}

#[test]
fn sigmoid_matches_burns_sigmoid_in_value_and_gradient() {
    let device = Device::flex().autodiff();
    // Large magnitudes too: both branches of the stable formula, and saturation.
    let x = (random([5, 3, 7, 9], &device) * 8.0).require_grad();
    let (ours, theirs) = (sigmoid(x.clone()), burn::tensor::activation::sigmoid(x.clone()));
    assert!(max_diff(ours.clone(), theirs.clone()) < 1e-6, "values");
    let weights = random(ours.dims(), &device);
    let (g1, g2) = ((ours * weights.clone()).sum().backward(), (theirs * weights).sum().backward());
    assert!(max_diff(x.grad(&g1).unwrap(), x.grad(&g2).unwrap()) < 1e-6, "gradients");
}

/// A network's first convolution takes data that needs no gradient: the input gradient is
/// skipped, the others must be unchanged.
#[test]
fn conv2d_on_untracked_input_still_gives_weight_gradients() {
    let device = Device::flex().autodiff();
    let x = random([3, 1, 12, 12], &device);
    let w = random([6, 1, 5, 5], &device).require_grad();
    let b = random([6], &device).require_grad();
    let options = ConvOptions::new([1, 1], [2, 2], [1, 1], 1);
    let ours = conv2d(x.clone(), w.clone(), Some(b.clone()), options.clone());
    let theirs = burn::tensor::module::conv2d(x, w.clone(), Some(b.clone()), options);
    let weights = random(ours.dims(), &device);
    let (g1, g2) = ((ours * weights.clone()).sum().backward(), (theirs * weights).sum().backward());
    assert!(max_diff(w.grad(&g1).unwrap(), w.grad(&g2).unwrap()) < 1e-3);
    assert!(max_diff(b.grad(&g1).unwrap(), b.grad(&g2).unwrap()) < 1e-3);
}

#[test]
fn batch_norm_train_matches_burns_batch_norm_train() {
    let device = Device::flex().autodiff();
    // Dense features (the second, over more than one block of rows) take the channels-last
    // kernels; conv features the NCHW ones.
    for shape in [vec![7, 3], vec![300, 84], vec![3, 4, 5, 5]] {
        let (x, c) = match shape.len() {
            2 => (random([shape[0], shape[1], 1, 1], &device), shape[1]),
            _ => (random([shape[0], shape[1], shape[2], shape[3]], &device), shape[1]),
        };
        let x = x.require_grad();
        let gamma = random([c], &device).require_grad();
        let beta = random([c], &device).require_grad();
        let (y, mean, var) = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5, Activation::Identity);
        let r = burn::tensor::module::batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
        assert!(max_diff(y.clone(), r.output.clone()) < 1e-5, "{shape:?}: output");
        assert!(max_diff(mean, r.mean) < 1e-6, "{shape:?}: mean");
        assert!(max_diff(var, r.variance) < 1e-5, "{shape:?}: variance");
        let weights = random(y.dims(), &device);
        let (g1, g2) = ((y * weights.clone()).sum().backward(), (r.output * weights).sum().backward());
        for (name, t) in [("gamma", &gamma), ("beta", &beta)] {
            assert!(max_diff(t.grad(&g1).unwrap(), t.grad(&g2).unwrap()) < 1e-4, "{shape:?}: ∂{name}");
        }
        assert!(max_diff(x.grad(&g1).unwrap(), x.grad(&g2).unwrap()) < 1e-4, "{shape:?}: ∂x");
    }
}

#[test]
fn batch_norm_statistics_stay_exact_for_large_offsets() {
    // Values far from zero: a one-pass E[x²] − E[x]² in f32 would lose the variance here.
    let device = Device::flex();
    for shape in [[64, 2, 8, 8], [4096, 2, 1, 1]] {
        let x = Tensor::<4>::random(shape, Distribution::Normal(1000.0, 0.01), &device);
        let gamma = Tensor::<1>::ones([2], &device);
        let beta = Tensor::<1>::zeros([2], &device);
        let (_, _, var) = batch_norm_train(x, gamma, beta, 1e-5, Activation::Identity);
        for v in var.into_data().try_to_vec::<f32>().unwrap() {
            assert!((v - 1e-4).abs() < 1e-5, "{shape:?}: variance {v}, expected about 1e-4");
        }
    }
}

/// Windows holding NaNs (two in one window) through the general kernels: NaN outputs, and the
/// gradient where burn sends it (the last NaN of the window).
#[test]
fn general_max_pool_sends_a_nan_windows_gradient_where_burn_does() {
    let device = Device::flex().autodiff();
    // 6×6, and 6×20, whose rows have a block of eight windows inside the plane (the stem's
    // vector path) with a NaN among them.
    for (w, nans) in [(6, [7, 14]), (20, [27, 49])] {
        let mut values = (0..6 * w).map(|i| ((i * 7) % 11) as f32).collect::<Vec<_>>();
        for i in nans {
            values[i] = f32::NAN;
        }
        let x = Tensor::<4>::from_data(TensorData::new(values, [1, 1, 6, w]), &device).require_grad();
        let options = MaxPoolOptions::new([3, 3]).with_stride([2, 2]).with_padding([1, 1]);
        let ours = max_pool2d(x.clone(), options.clone());
        let theirs = burn::tensor::module::max_pool2d(x.clone(), options);
        let bits =
            |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert!(ours.clone().into_data().try_to_vec::<f32>().unwrap().iter().any(|v| v.is_nan()));
        assert_eq!(bits(ours.clone()), bits(theirs.clone()), "{w}: values");
        let weights = random(ours.dims(), &device);
        let (g1, g2) = ((ours * weights.clone()).sum().backward(), (theirs * weights).sum().backward());
        assert_eq!(x.grad(&g1).unwrap().to_data(), x.grad(&g2).unwrap().to_data(), "{w}: gradients");
    }
}

/// DenseNet's layers on the activations `channels_last` makes (where oneDNN has channels-last
/// kernels, else it keeps NCHW) give the values and gradients of the same layers on NCHW
/// ones: the stem's convolution of a one-channel image, batch normalization with its ReLU,
/// max pooling, a 3×3 convolution, the concatenation, evaluation-mode batch normalization
/// and average pooling, in f32 (and in bf16 the same way, as the process runs f32 here).
#[test]
fn channels_last_activations_give_the_nchw_values_and_gradients() {
    let device = Device::flex().autodiff();
    let x = random([2, 1, 15, 15], &device).require_grad();
    let params: Vec<Tensor<4>> = [[6, 1, 3, 3], [4, 6, 3, 3]].map(|s| random(s, &device).require_grad()).into();
    let (gamma, beta) = (random([6], &device).require_grad(), random([6], &device).require_grad());
    let (mean, var) = (random([10], &device), random([10], &device).abs());
    let biases = (random([6], &device), random([4], &device));
    let run = |x: Tensor<4>| {
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let y = conv2d(x, params[0].clone(), Some(biases.0.clone()), options.clone());
        let (y, _, _) = batch_norm_train(y, gamma.clone(), beta.clone(), 1e-5, Activation::Relu);
        let y = max_pool2d(y, MaxPoolOptions::new([3, 3]).with_stride([2, 2]).with_padding([1, 1]));
        let z = conv2d(y.clone(), params[1].clone(), Some(biases.1.clone()), options);
        let y = cat_channels(y, z);
        let ones = Tensor::ones([10], &device);
        let y = batch_norm(y, ones.clone(), ones.mul_scalar(0.1), mean.clone(), var.clone(), 1e-5, Activation::Relu);
        avg_pool2d(y, AvgPoolOptions::new([2, 2]).with_stride([2, 2]))
    };
    let (last, plain) = (run(channels_last(x.clone())), run(x.clone()));
    assert_eq!(last.dims(), [2, 10, 4, 4]);
    // The two layouts sum the convolutions' taps in different orders: f32 rounding, relative
    // to the values' size (eval-mode BN with a small random variance makes them large).
    let d = relative_diff(last.clone(), plain.clone());
    assert!(d < 1e-6, "outputs differ by {d} relative to the largest");
    let weights = random(plain.dims(), &device);
    let (g_last, g_plain) = ((last * weights.clone()).sum().backward(), (plain * weights).sum().backward());
    let grads = [("x", &x), ("conv 1", &params[0]), ("conv 2", &params[1])];
    for (name, t) in grads {
        let d = relative_diff(t.grad(&g_last).unwrap(), t.grad(&g_plain).unwrap());
        assert!(d < 1e-5, "∂{name} differs by {d} relative to the largest");
    }
    for (name, t) in [("γ", &gamma), ("β", &beta)] {
        let d = relative_diff(t.grad(&g_last).unwrap(), t.grad(&g_plain).unwrap());
        assert!(d < 1e-5, "∂{name} differs by {d} relative to the largest");
    }
}

/// Concatenation along the channels against burn's `cat`, in value and gradient.
#[test]
fn cat_channels_matches_burns_cat() {
    let device = Device::flex().autodiff();
    let (a, b) = (random([2, 3, 4, 5], &device).require_grad(), random([2, 6, 4, 5], &device).require_grad());
    let ours = cat_channels(a.clone(), b.clone());
    let theirs = Tensor::cat(vec![a.clone(), b.clone()], 1);
    assert_eq!(max_diff(ours.clone(), theirs.clone()), 0.0);
    let weights = random(ours.dims(), &device);
    let (g_ours, g_theirs) = ((ours * weights.clone()).sum().backward(), (theirs * weights).sum().backward());
    assert_eq!(max_diff(a.grad(&g_ours).unwrap(), a.grad(&g_theirs).unwrap()), 0.0);
    assert_eq!(max_diff(b.grad(&g_ours).unwrap(), b.grad(&g_theirs).unwrap()), 0.0);
}
