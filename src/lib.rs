//! deepcnn: the *Dive into Deep Learning* chapter on batch normalization and modern CNNs
//! (LeNet with batch normalization, ResNet-18, DenseNet) trained on Fashion-MNIST, in Rust on
//! burn.
//!
//! - [`data`]: IDX files, the Fashion-MNIST data set, batching.
//! - [`nn`]: batch normalization written from scratch, and small shared layers.
//! - [`models`]: the networks, built from named blocks that follow the book.
//! - [`train`]: the training loop, metrics and evaluation.
//! - [`cli`]: the `deepcnn` command line.

pub mod cli;
pub mod data;
pub mod models;
pub mod nn;
pub mod train;

#[cfg(test)]
mod test_util;
