//! Layers written for deepcnn: batch normalization from scratch, burn's convolution and batch
//! normalization on deepcnn's kernels ([`layers`]), and the small pieces the networks share.

pub mod batch_norm;
pub mod layers;
pub mod norm;
pub mod stage;

pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use norm::Norm;
pub use stage::{LayerRow, Stage};
