//! Data: the IDX file format, the Fashion-MNIST data set, and batching into tensors.

pub mod augment;
pub mod batcher;
pub mod fashion_mnist;
pub mod idx;
pub mod image_file;
pub mod synthetic;

pub use augment::Augment;
pub use batcher::{Batch, Batcher};
pub use fashion_mnist::{DataError, Dataset, FashionMnist, CLASS_NAMES, DEFAULT_DATA_DIR, NUM_CLASSES};
