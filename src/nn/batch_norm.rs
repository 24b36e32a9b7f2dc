//! Batch normalization written from scratch out of tensor operations, as in *Dive into Deep
//! Learning* (§5.10): per feature over the batch for dense layers (N×C), per channel over
//! N×H×W for convolutional layers (N×C×H×W).
//!
//! ```text
//! training:   μ = mean(x),  σ² = mean((x − μ)²)            (biased, over the batch)
//!             x̂ = (x − μ) / √(σ² + ε)
//!             moving_mean ← momentum·moving_mean + (1 − momentum)·μ
//!             moving_var  ← momentum·moving_var  + (1 − momentum)·σ²
//! evaluation: x̂ = (x − moving_mean) / √(moving_var + ε)      (nothing is updated)
//! output:     y = γ ⊙ x̂ + β
//! ```
//!
//! Only ranks 2 and 4 are accepted, and that is checked by the compiler:
//!
//! ```compile_fail
//! use burn::prelude::*;
//! let device = Device::flex();
//! let bn = deepcnn::nn::BatchNormConfig::new(3).init(&device);
//! let x = Tensor::<3>::zeros([2, 3, 5], &device);
//! bn.forward(x); // error: `Rank<3>: StatisticsAxes` is not satisfied
//! ```

use burn::module::{Flag, Param, RunningState};
use burn::prelude::*;

/// Builds a [`BatchNorm`].
#[derive(Config, Debug)]
pub struct ScratchBatchNormConfig {
    /// Features (dense input) or channels (convolutional input).
    pub num_features: usize,
    /// Added to the variance so the division is defined.
    #[config(default = 1e-5)]
    pub eps: f64,
    /// The weight of the *old* moving statistics (the book's convention; PyTorch's and burn's
    /// `momentum` is `1 − this`).
    #[config(default = 0.9)]
    pub momentum: f64,
}

/// Batch normalization layer; see the module documentation for the formulas.
#[derive(Module, Debug)]
pub struct ScratchBatchNorm {
    /// Scale γ, one per feature, initialised to 1. Stored as a vector of C values and viewed as
    /// 1×C or 1×C×1×1 for broadcasting, so one layer type serves both ranks.
    pub gamma: Param<Tensor<1>>,
    /// Shift β, one per feature, initialised to 0.
    pub beta: Param<Tensor<1>>,
    /// Moving mean, initialised to 0: saved with the model, never trained.
    pub moving_mean: RunningState<Tensor<1>>,
    /// Moving variance, initialised to 1: saved with the model, never trained. (Some
    /// transcriptions of the book initialise it to 0; that is a bug: a model evaluated before
    /// enough training steps would divide by √ε and blow its activations up by ~300×.)
    pub moving_var: RunningState<Tensor<1>>,
    /// Whether training behaviour is enabled; `Module::valid()` switches it off, exactly as for
    /// burn's built-in `BatchNorm`.
    pub training: Param<Flag>,
    pub eps: f64,
    pub momentum: f64,
}

/// The input ranks batch normalization is defined for, and the axes their statistics reduce.
pub struct Rank<const D: usize>;

/// Implemented for [`Rank<2>`] (dense layers) and [`Rank<4>`] (convolutional layers) only.
pub trait StatisticsAxes {
    /// Axes averaged over: everything except the feature/channel axis 1.
    const AXES: &'static [usize];
}

impl StatisticsAxes for Rank<2> {
    const AXES: &'static [usize] = &[0];
}

impl StatisticsAxes for Rank<4> {
    const AXES: &'static [usize] = &[0, 2, 3];
}

impl ScratchBatchNormConfig {
    pub fn init(&self, device: &Device) -> ScratchBatchNorm {
        let c = self.num_features;
        ScratchBatchNorm {
            gamma: Param::from_tensor(Tensor::ones([c], device)),
            beta: Param::from_tensor(Tensor::zeros([c], device)),
            moving_mean: RunningState::new(Tensor::zeros([c], device)),
            moving_var: RunningState::new(Tensor::ones([c], device)),
            training: Param::from_bool(true),
            eps: self.eps,
            momentum: self.momentum,
        }
    }
}

impl ScratchBatchNorm {
    /// The fields that hold the moving statistics, which precise BN re-estimates.
    pub const MOVING_STATISTICS: [&'static str; 2] = ["moving_mean", "moving_var"];

    /// Normalises `x` (N×C or N×C×H×W). Training behaviour (batch statistics, moving averages
    /// updated) is used when gradients are being recorded and the layer is in training mode;
    /// otherwise the moving averages are used and nothing changes.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>
    where
        Rank<D>: StatisticsAxes,
    {
        let channels = self.gamma.dims()[0];
        assert_eq!(x.dims()[1], channels, "BatchNorm over {channels} features got input of shape {:?}", x.dims());
        if x.device().is_autodiff() && self.training.is_enabled() {
            self.forward_train(x)
        } else {
            self.forward_eval(x)
        }
    }

    fn forward_train<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>
    where
        Rank<D>: StatisticsAxes,
    {
        let axes = <Rank<D> as StatisticsAxes>::AXES;
        // Keeping the reduced axes (size 1) makes mean and var broadcast against x.
        let mean = x.clone().mean_dims(axes);
        let centred = x - mean.clone();
        let var = centred.clone().square().mean_dims(axes);
        let x_hat = centred / (var.clone() + self.eps).sqrt();

        let c = self.gamma.dims()[0];
        self.moving_mean.update(self.moving(self.moving_mean.value_sync(), mean.detach().reshape([c])));
        self.moving_var.update(self.moving(self.moving_var.value_sync(), var.detach().reshape([c])));

        self.scale_and_shift(x_hat)
    }

    fn forward_eval<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        let mean = broadcastable::<D>(self.moving_mean.value().to_device(&device));
        let var = broadcastable::<D>(self.moving_var.value().to_device(&device));
        let x_hat = (x - mean) / (var + self.eps).sqrt();
        self.scale_and_shift(x_hat)
    }

    /// `momentum·moving + (1 − momentum)·batch`, kept out of the autodiff graph.
    fn moving(&self, moving: Tensor<1>, batch: Tensor<1>) -> Tensor<1> {
        let moving = moving.to_device(&batch.device());
        (moving * self.momentum + batch * (1.0 - self.momentum)).detach()
    }

    fn scale_and_shift<const D: usize>(&self, x_hat: Tensor<D>) -> Tensor<D> {
        broadcastable::<D>(self.gamma.val()) * x_hat + broadcastable::<D>(self.beta.val())
    }
}

/// Views a per-feature vector of C values as 1×C (rank 2) or 1×C×1×1 (rank 4).
fn broadcastable<const D: usize>(v: Tensor<1>) -> Tensor<D> {
    let mut shape = [1usize; D];
    shape[1] = v.dims()[0];
    v.reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close, values};
    use burn::tensor::Distribution;

    const EPS: f32 = 1e-5;

    fn training_device() -> Device {
        Device::flex().autodiff()
    }

    fn bn_with(gamma: [f32; 2], beta: [f32; 2], device: &Device) -> ScratchBatchNorm {
        let mut bn = ScratchBatchNormConfig::new(2).init(device);
        bn.gamma = Param::from_tensor(Tensor::from_floats(gamma, device));
        bn.beta = Param::from_tensor(Tensor::from_floats(beta, device));
        bn
    }

    #[test]
    fn dense_input_by_hand() {
        let device = training_device();
        let bn = bn_with([2.0, 3.0], [1.0, -1.0], &device);
        // Two examples, two features: means [2, 4], biased variances [1, 4].
        let x = Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 6.0]], &device);
        let (s0, s1) = ((1.0 + EPS).sqrt(), (4.0 + EPS).sqrt());
        let want = [1.0 - 2.0 / s0, -1.0 - 3.0 * 2.0 / s1, 1.0 + 2.0 / s0, -1.0 + 3.0 * 2.0 / s1];
        assert_close(&values(bn.forward(x.clone())), &want, 1e-6, "training output");

        // moving = 0.9·moving + 0.1·batch, from mean 0 and variance 1.
        assert_close(&values(bn.moving_mean.value_sync()), &[0.2, 0.4], 1e-7, "moving mean");
        assert_close(&values(bn.moving_var.value_sync()), &[1.0, 1.3], 1e-7, "moving var");

        // Evaluation normalises with the moving averages.
        let eval = bn.valid();
        let (m0, m1) = ((1.0 + EPS).sqrt(), (1.3 + EPS).sqrt());
        let want = [
            2.0 * (1.0 - 0.2) / m0 + 1.0,
            3.0 * (2.0 - 0.4) / m1 - 1.0,
            2.0 * (3.0 - 0.2) / m0 + 1.0,
            3.0 * (6.0 - 0.4) / m1 - 1.0,
        ];
        assert_close(&values(eval.forward(x.inner())), &want, 1e-6, "evaluation output");
    }

    #[test]
    fn conv_input_by_hand() {
        let device = training_device();
        let bn = bn_with([1.0, 0.5], [0.0, 2.0], &device);
        // N=2, C=2, H=1, W=2. Channel 0 holds 1, 3, 5, 7 (mean 4, variance 5); channel 1 holds
        // 0, 0, 4, 4 (mean 2, variance 4): statistics pool over N, H and W together.
        let x = Tensor::<4>::from_floats([[[[1.0, 3.0]], [[0.0, 0.0]]], [[[5.0, 7.0]], [[4.0, 4.0]]]], &device);
        let (s0, s1) = ((5.0 + EPS).sqrt(), (4.0 + EPS).sqrt());
        let c0 = |v: f32| (v - 4.0) / s0;
        let c1 = |v: f32| 0.5 * (v - 2.0) / s1 + 2.0;
        let want = [c0(1.0), c0(3.0), c1(0.0), c1(0.0), c0(5.0), c0(7.0), c1(4.0), c1(4.0)];
        assert_close(&values(bn.forward(x.clone())), &want, 1e-6, "training output");
        assert_close(&values(bn.moving_mean.value_sync()), &[0.4, 0.2], 1e-7, "moving mean");
        assert_close(&values(bn.moving_var.value_sync()), &[1.4, 1.3], 1e-6, "moving var");

        let eval = bn.valid();
        let (m0, m1) = ((1.4 + EPS).sqrt(), (1.3 + EPS).sqrt());
        let e0 = |v: f32| (v - 0.4) / m0;
        let e1 = |v: f32| 0.5 * (v - 0.2) / m1 + 2.0;
        let want = [e0(1.0), e0(3.0), e1(0.0), e1(0.0), e0(5.0), e0(7.0), e1(4.0), e1(4.0)];
        assert_close(&values(eval.forward(x.inner())), &want, 1e-6, "evaluation output");
    }

    #[test]
    fn evaluation_uses_and_keeps_the_moving_averages() {
        let device = training_device();
        let bn = ScratchBatchNormConfig::new(3).init(&device);
        let x = Tensor::<4>::random([4, 3, 5, 5], Distribution::Normal(3.0, 2.0), &device);
        for _ in 0..3 {
            bn.forward(x.clone());
        }
        let (mean, var) = (values(bn.moving_mean.value_sync()), values(bn.moving_var.value_sync()));

        let eval = bn.valid();
        let x = x.inner();
        let y_eval = values(eval.forward(x.clone()));
        // Nothing changes in evaluation mode.
        assert_eq!(values(eval.moving_mean.value_sync()), mean);
        assert_eq!(values(eval.moving_var.value_sync()), var);
        // The output is the formula with the moving averages...
        let xs = values(x.clone());
        let want: Vec<f32> =
            xs.iter().enumerate().map(|(i, v)| (v - mean[(i / 25) % 3]) / (var[(i / 25) % 3] + EPS).sqrt()).collect();
        assert_close(&y_eval, &want, 1e-5, "evaluation output");
        // ...which is not what training mode gives on the same batch.
        let y_train = values(bn.forward(x.autodiff()));
        let largest_gap = y_eval.iter().zip(&y_train).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(largest_gap > 0.1, "evaluation output equals training output (gap {largest_gap})");
        // And training mode did move the averages.
        assert_ne!(values(bn.moving_mean.value_sync()), mean);
    }

    #[test]
    fn moving_averages_are_saved_but_not_trained() {
        let device = training_device();
        let bn = ScratchBatchNormConfig::new(4).init(&device);
        let x = Tensor::<2>::random([8, 4], Distribution::Default, &device);
        let grads = bn.forward(x).mul_scalar(3.0).sum().backward();
        assert!(bn.gamma.val().grad(&grads).is_some());
        assert!(bn.moving_mean.value().grad(&grads).is_none());
        // Saved with the module: a record round trip restores them. burn's `RunningState` folds
        // a forward pass's update in lazily and `into_record` does not, so a model is saved
        // through `valid()`, which does.
        let restored = ScratchBatchNormConfig::new(4).init(&device).load_record(bn.valid().into_record());
        assert_eq!(values(restored.moving_mean.value_sync()), values(bn.moving_mean.value_sync()));
        assert_eq!(values(restored.moving_var.value_sync()), values(bn.moving_var.value_sync()));
    }

    /// The input gradient against the closed form of batch normalization's backward pass,
    /// dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy · x̂)), computed here by hand in f64.
    #[test]
    fn input_gradient_matches_the_closed_form() {
        let device = training_device();
        device.seed(3);
        let (n, c) = (6, 2);
        let mut bn = ScratchBatchNormConfig::new(c).init(&device);
        bn.gamma = Param::from_tensor(Tensor::from_floats([1.5, 0.5], &device));
        let x = Tensor::<2>::random([n, c], Distribution::Normal(2.0, 3.0), &device).require_grad();
        let dy = Tensor::<2>::random([n, c], Distribution::Normal(0.0, 1.0), &device);
        let grads = (bn.forward(x.clone()) * dy.clone()).sum().backward();
        let got = values(x.grad(&grads).unwrap());

        let (xs, dys) = (values(x.inner()), values(dy));
        let mut want = vec![0.0f32; n * c];
        for (j, gamma) in [1.5f64, 0.5].into_iter().enumerate() {
            let col = |v: &[f32]| (0..n).map(|i| v[i * c + j] as f64).collect::<Vec<_>>();
            let (xc, dyc) = (col(&xs), col(&dys));
            let mean = xc.iter().sum::<f64>() / n as f64;
            let var = xc.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
            let sigma = (var + 1e-5).sqrt();
            let x_hat: Vec<f64> = xc.iter().map(|v| (v - mean) / sigma).collect();
            let mean_dy = dyc.iter().sum::<f64>() / n as f64;
            let mean_dy_xhat = dyc.iter().zip(&x_hat).map(|(d, h)| d * h).sum::<f64>() / n as f64;
            for i in 0..n {
                want[i * c + j] = (gamma / sigma * (dyc[i] - mean_dy - x_hat[i] * mean_dy_xhat)) as f32;
            }
        }
        assert_close(&got, &want, 1e-5, "dx");
    }

    /// Our layer and burn's `nn::BatchNorm` side by side on the same random input: outputs,
    /// gradients for x, γ and β, and the moving statistics after several steps.
    ///
    /// Conventions: the book's `momentum` 0.9 weighs the *old* value; burn's (and PyTorch's)
    /// `momentum` 0.1 weighs the *new* one. That is the same update, so the default configs are
    /// compared as they are. burn, like the book, feeds the *biased* batch variance into the
    /// running variance, so those agree exactly; PyTorch uses the unbiased one instead, which is
    /// checked separately in `running_variance_convention_of_pytorch`.
    fn compare_with_builtin<const D: usize>(shape: [usize; D])
    where
        Rank<D>: StatisticsAxes,
    {
        let device = training_device();
        device.seed(7);
        let c = shape[1];
        let ours = ScratchBatchNormConfig::new(c).init(&device);
        let builtin = burn::nn::BatchNormConfig::new(c).init(&device);
        for step in 0..5 {
            let x = Tensor::<D>::random(shape, Distribution::Normal(1.5, 2.0), &device).require_grad();
            // A random weighting, so that the input gradient is not trivially zero.
            let w = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &device);

            let y_ours = ours.forward(x.clone());
            let y_builtin = builtin.forward(x.clone());
            assert_close(&values(y_ours.clone()), &values(y_builtin.clone()), 1e-5, &format!("output, step {step}"));

            let g_ours = (y_ours * w.clone()).sum().backward();
            let g_builtin = (y_builtin * w).sum().backward();
            let grad = |t: Tensor<D>, g| values(t.grad(g).unwrap());
            let grad1 = |t: Tensor<1>, g| values(t.grad(g).unwrap());
            assert_close(&grad(x.clone(), &g_ours), &grad(x.clone(), &g_builtin), 1e-5, "dx");
            assert_close(&grad1(ours.gamma.val(), &g_ours), &grad1(builtin.gamma.val(), &g_builtin), 1e-4, "dγ");
            assert_close(&grad1(ours.beta.val(), &g_ours), &grad1(builtin.beta.val(), &g_builtin), 1e-4, "dβ");
        }
        let pairs =
            [(&ours.moving_mean, &builtin.running_mean, "mean"), (&ours.moving_var, &builtin.running_var, "var")];
        for (a, b, what) in pairs {
            assert_close(
                &values(a.value_sync()),
                &values(b.value_sync()),
                1e-6,
                &format!("moving {what} after 5 steps"),
            );
        }
    }

    #[test]
    fn agrees_with_builtin_on_dense_input() {
        compare_with_builtin([16, 5]);
    }

    #[test]
    fn agrees_with_builtin_on_conv_input() {
        compare_with_builtin([8, 3, 5, 5]);
    }

    /// PyTorch's `BatchNorm2d` updates `running_var` with the unbiased batch variance
    /// (divided by n − 1, n = N·H·W); the book's layer uses the biased one. After one step from
    /// the initial variance of 1 the two differ by exactly 0.1·σ²·(n/(n−1) − 1).
    #[test]
    fn running_variance_convention_of_pytorch() {
        let device = training_device();
        let x = Tensor::<4>::random([2, 1, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        let bn = ScratchBatchNormConfig::new(1).init(&device);
        bn.forward(x.clone());
        let xs = values(x);
        let n = xs.len() as f32;
        let mean = xs.iter().sum::<f32>() / n;
        let sum_sq: f32 = xs.iter().map(|v| (v - mean).powi(2)).sum();
        let (biased, unbiased) = (sum_sq / n, sum_sq / (n - 1.0));
        let ours = values(bn.moving_var.value_sync())[0];
        assert!((ours - (0.9 + 0.1 * biased)).abs() < 1e-6, "ours {ours}, book formula {}", 0.9 + 0.1 * biased);
        let pytorch = 0.9 + 0.1 * unbiased;
        assert!((pytorch - ours - 0.1 * biased * (n / (n - 1.0) - 1.0)).abs() < 1e-6);
    }
}
