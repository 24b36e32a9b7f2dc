//! A batch-normalization slot that holds either implementation, so one network definition
//! serves both of the book's LeNet variants.

use burn::prelude::*;

use super::batch_norm::{Rank, ScratchBatchNorm, ScratchBatchNormConfig, StatisticsAxes};
use super::fused_batch_norm::{FusedBatchNorm, FusedBatchNormConfig};

/// Which batch normalization to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// deepcnn's [`ScratchBatchNorm`], written from tensor operations.
    Scratch,
    /// The framework's layer: burn's `nn::BatchNorm` (its parameters and semantics) on
    /// deepcnn's fused kernel, [`FusedBatchNorm`].
    Fused,
}

#[derive(Module, Debug)]
pub enum Norm {
    Scratch(ScratchBatchNorm),
    /// [`NormKind::Fused`]. Named `Builtin` in checkpoints and exports (the book's "built-in"
    /// BN), so the variant keeps that name.
    Builtin(FusedBatchNorm),
}

impl Norm {
    pub fn new(kind: NormKind, features: usize, device: &Device) -> Self {
        match kind {
            NormKind::Scratch => Norm::Scratch(ScratchBatchNormConfig::new(features).init(device)),
            NormKind::Fused => Norm::Builtin(FusedBatchNormConfig::new(features).init(device)),
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>
    where
        Rank<D>: StatisticsAxes,
    {
        match self {
            Norm::Scratch(bn) => bn.forward(x),
            Norm::Builtin(bn) => bn.forward(x),
        }
    }

    /// `sigmoid(self.forward(x))`: in one pass with the fused layer, as written with the
    /// from-scratch one.
    pub fn forward_sigmoid<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>
    where
        Rank<D>: StatisticsAxes,
    {
        match self {
            Norm::Scratch(bn) => crate::kernels::sigmoid(bn.forward(x)),
            Norm::Builtin(bn) => bn.forward_sigmoid(x),
        }
    }
}
