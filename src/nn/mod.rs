//! Layers written for deepcnn: batch normalization from scratch, burn's convolution and batch
//! normalization on deepcnn's kernels ([`layers`]), and the small pieces the networks share.

pub mod batch_norm;
pub mod fused_batch_norm;
pub mod layers;
pub mod norm;
pub mod stage;

pub use batch_norm::{ScratchBatchNorm, ScratchBatchNormConfig};
pub use fused_batch_norm::{FusedBatchNorm, FusedBatchNormConfig};
pub use norm::Norm;
pub use stage::{LayerRow, Stage};
