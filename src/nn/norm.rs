//! A batch-normalization slot that holds either implementation, so one network definition
//! serves both of the book's LeNet variants.

use burn::prelude::*;

use super::batch_norm::{BatchNorm, BatchNormConfig, Rank, StatisticsAxes};

/// Which batch normalization to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// deepcnn's [`BatchNorm`], written from tensor operations.
    Scratch,
    /// burn's `nn::BatchNorm` (its parameters and semantics, on deepcnn's fused kernel).
    Builtin,
}

#[derive(Module, Debug)]
pub enum Norm {
    Scratch(BatchNorm),
    Builtin(super::layers::BatchNorm),
}

impl Norm {
    pub fn new(kind: NormKind, features: usize, device: &Device) -> Self {
        match kind {
            NormKind::Scratch => Norm::Scratch(BatchNormConfig::new(features).init(device)),
            NormKind::Builtin => Norm::Builtin(super::layers::BatchNormConfig::new(features).init(device)),
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
}
