//! deepcnn: the *Dive into Deep Learning* chapter on batch normalization and modern CNNs
//! (LeNet with batch normalization, ResNet-18, DenseNet) trained on Fashion-MNIST, in Rust on
//! burn.
//!
//! - [`device`]: the CPU, or a GPU through Vulkan (`--features vulkan`).
//! - [`data`]: IDX files, the Fashion-MNIST data set, batching.
//! - [`nn`]: batch normalization written from scratch, and small shared layers.
//! - [`kernels`]: deepcnn's fast CPU kernels (fused batch normalization, GEMM convolution).
//! - [`interop`]: weights to and from PyTorch.
//! - [`models`]: the networks, built from named blocks that follow the book.
//! - [`predict`]: class probabilities for single images.
//! - [`report`]: metrics.csv, training-curve charts, evaluation reports.
//! - [`train`]: the training loop, metrics and evaluation.
//! - [`bench`]: timing the training step.
//! - [`checkpoint`]: run directories: checkpoints, resume.
//! - [`machine`]: the machine in one line, for run files and reports.
//! - [`memory`]: memory estimates checked before allocating, and a clean out-of-memory error.
//! - [`cli`]: the `deepcnn` command line.

pub mod bench;
pub mod checkpoint;
#[cfg(feature = "cli")]
pub mod cli;
pub mod data;
pub mod device;
pub mod interop;
pub mod kernels;
pub mod machine;
pub mod memory;
pub mod models;
pub mod nn;
pub mod predict;
pub mod report;
pub mod train;

#[cfg(test)]
mod test_util;
