//! Small synthetic data in Fashion-MNIST's format, for tests and quick checks without the real
//! data: two easily separated classes (label 0: bright upper half, label 1: bright lower
//! half) under uniform noise.

use std::path::Path;

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::idx::{encode_images, encode_labels, gzip, IdxImages};
use super::Dataset;

/// `n` 28×28 images alternating between the two classes.
pub fn two_class_images(n: usize, seed: u64) -> (IdxImages, Vec<u8>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (rows, cols) = (28, 28);
    let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
    let mut pixels = Vec::with_capacity(n * rows * cols);
    for &label in &labels {
        for r in 0..rows {
            let bright = (r < rows / 2) == (label == 0);
            for _ in 0..cols {
                let base: u8 = if bright { 150 } else { 0 };
                pixels.push(base + rng.random_range(0..100));
            }
        }
    }
    (IdxImages { count: n, rows, cols, pixels }, labels)
}

/// The same data as a [`Dataset`].
pub fn two_class_dataset(n: usize, seed: u64) -> Dataset {
    let (images, labels) = two_class_images(n, seed);
    Dataset::from_parts(images.rows, images.cols, images.pixels, labels).expect("synthetic data is well formed")
}

/// Writes a directory that [`super::FashionMnist::load`] accepts: gzip-compressed IDX files
/// named like Debian's, with `n_train` and `n_test` images.
pub fn write_dir(dir: &Path, n_train: usize, n_test: usize, seed: u64) -> std::io::Result<()> {
    for (prefix, n, seed) in [("train", n_train, seed), ("t10k", n_test, seed.wrapping_add(1))] {
        let (images, labels) = two_class_images(n, seed);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte.gz")), gzip(&encode_images(&images)))?;
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte.gz")), gzip(&encode_labels(&labels)))?;
    }
    Ok(())
}
