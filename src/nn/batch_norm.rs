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
pub struct BatchNormConfig {
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
pub struct BatchNorm {
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

impl BatchNormConfig {
    pub fn init(&self, device: &Device) -> BatchNorm {
        let c = self.num_features;
        BatchNorm {
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

impl BatchNorm {
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
