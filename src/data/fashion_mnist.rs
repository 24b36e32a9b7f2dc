//! The Fashion-MNIST data set: four IDX files in one directory, loaded whole into memory
//! (60,000 + 10,000 images of 28×28 bytes, 55 MB).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::idx::{self, IdxError};

/// Where Debian's `dataset-fashion-mnist` package installs the files.
pub const DEFAULT_DATA_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The ten classes, in label order.
pub const CLASS_NAMES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

pub const NUM_CLASSES: usize = CLASS_NAMES.len();

/// Why the data set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "data directory {dir} does not exist; install the data with \
         `apt-get install -y dataset-fashion-mnist` or pass --data-dir DIR"
    )]
    MissingDefaultDir { dir: PathBuf },
    #[error("data directory {dir} does not exist (from --data-dir)")]
    MissingDir { dir: PathBuf },
    #[error("{dir} is a file, not a directory (--data-dir names the directory that holds the IDX files)")]
    NotADirectory { dir: PathBuf },
    #[error("{dir}: no {name} or {name}.gz in this directory")]
    MissingFile { dir: PathBuf, name: String },
    #[error(transparent)]
    Idx(#[from] IdxError),
    /// An image folder that cannot be used as it is.
    #[error("{}: {reason}", .path.display())]
    Folder { path: PathBuf, reason: String },
    #[error("{}: {reason}", .path.display())]
    BadImage { path: PathBuf, reason: String },
}

/// One split (train or test): images as bytes, N×channels×rows×cols, their labels, and the
/// names of the classes the labels index.
#[derive(Debug, Clone)]
pub struct Dataset {
    rows: usize,
    cols: usize,
    channels: usize,
    pixels: Vec<u8>,
    labels: Vec<u8>,
    classes: Arc<[String]>,
}

/// Fashion-MNIST's class names, shared by its splits.
pub fn fashion_mnist_classes() -> Arc<[String]> {
    CLASS_NAMES.iter().map(|n| n.to_string()).collect()
}

impl Dataset {
    /// Builds a split from images and labels, checking that they belong together.
    pub fn new(
        images: idx::IdxImages,
        images_path: &Path,
        labels: Vec<u8>,
        labels_path: &Path,
    ) -> Result<Self, IdxError> {
        if images.count != labels.len() {
            return Err(IdxError::CountMismatch {
                images_path: images_path.into(),
                images: images.count,
                labels_path: labels_path.into(),
                labels: labels.len(),
            });
        }
        if let Some((index, &label)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= NUM_CLASSES) {
            return Err(IdxError::BadLabel { path: labels_path.into(), index, label, classes: NUM_CLASSES });
        }
        Ok(Self {
            rows: images.rows,
            cols: images.cols,
            channels: 1,
            pixels: images.pixels,
            labels,
            classes: fashion_mnist_classes(),
        })
    }

    /// Images of `channels` planes of `size` (rows, cols) each, labelled into `classes`
    /// (image folders). The caller has checked that the pieces fit together.
    pub fn from_images(
        [channels, rows, cols]: [usize; 3],
        pixels: Vec<u8>,
        labels: Vec<u8>,
        classes: Arc<[String]>,
    ) -> Self {
        assert_eq!(pixels.len(), labels.len() * channels * rows * cols, "images and labels belong together");
        assert!(labels.iter().all(|&l| (l as usize) < classes.len()), "every label names a class");
        Self { rows, cols, channels, pixels, labels, classes }
    }

    /// An in-memory split (for tests and synthetic data); same checks as [`Dataset::new`].
    pub fn from_parts(rows: usize, cols: usize, pixels: Vec<u8>, labels: Vec<u8>) -> Result<Self, IdxError> {
        let images = idx::IdxImages { count: pixels.len() / (rows * cols).max(1), rows, cols, pixels };
        if images.count * rows * cols != images.pixels.len() || rows == 0 || cols == 0 {
            return Err(IdxError::BadDimensions { path: "<memory>".into(), rows, cols });
        }
        Self::new(images, Path::new("<memory images>"), labels, Path::new("<memory labels>"))
    }

    /// Reads a split from its two IDX files.
    pub fn read(images_path: &Path, labels_path: &Path) -> Result<Self, IdxError> {
        let images = idx::read_images(images_path)?;
        let labels = idx::read_labels(labels_path)?;
        Self::new(images, images_path, labels, labels_path)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image height and width.
    pub fn image_size(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// 1 for grey images, 3 for colour (RGB).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The class names, in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The bytes of image `i`: its channels one after another, each row-major.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.channels * self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }

    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }

    /// A copy of the examples in `range` (a validation split).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        let image = self.channels * self.rows * self.cols;
        Self {
            pixels: self.pixels[range.start * image..range.end * image].to_vec(),
            labels: self.labels[range].to_vec(),
            classes: self.classes.clone(),
            ..*self
        }
    }

    /// The first `n` examples (all of them if `n` is larger).
    pub fn truncated(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.pixels.truncate(n * self.channels * self.rows * self.cols);
        self
    }
}

/// Both splits of Fashion-MNIST.
#[derive(Debug, Clone)]
pub struct FashionMnist {
    pub train: Dataset,
    pub test: Dataset,
}

impl FashionMnist {
    /// Loads `train-*` and `t10k-*` from `dir`, each file raw or gzip-compressed.
    pub fn load(dir: &Path) -> Result<Self, DataError> {
        Ok(Self { train: load_split(dir, "train")?, test: load_split(dir, "t10k")? })
    }

    /// Loads only the 10,000 test images (`t10k-*`), for evaluation.
    pub fn load_test(dir: &Path) -> Result<Dataset, DataError> {
        load_split(dir, "t10k")
    }

    /// Loads only the 60,000 training images (`train-*`).
    pub fn load_train(dir: &Path) -> Result<Dataset, DataError> {
        load_split(dir, "train")
    }
}

fn load_split(dir: &Path, prefix: &str) -> Result<Dataset, DataError> {
    if dir.exists() && !dir.is_dir() {
        return Err(DataError::NotADirectory { dir: dir.into() });
    }
    if !dir.is_dir() {
        return Err(if dir == Path::new(DEFAULT_DATA_DIR) {
            DataError::MissingDefaultDir { dir: dir.into() }
        } else {
            DataError::MissingDir { dir: dir.into() }
        });
    }
    let images = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    Ok(Dataset::read(&images, &labels)?)
}

fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    [name.to_string(), format!("{name}.gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::MissingFile { dir: dir.into(), name: name.into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::{encode_images, encode_labels, gzip, IdxImages};

    fn write_split(dir: &Path, prefix: &str, n_images: usize, n_labels: usize, gz: bool) {
        let images = IdxImages { count: n_images, rows: 28, cols: 28, pixels: vec![7; n_images * 784] };
        let labels: Vec<u8> = (0..n_labels).map(|i| (i % 10) as u8).collect();
        let (img, lbl) = (encode_images(&images), encode_labels(&labels));
        let (img, lbl, ext) = if gz { (gzip(&img), gzip(&lbl), ".gz") } else { (img, lbl, "") };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), img).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), lbl).unwrap();
    }

    #[test]
    fn loads_raw_and_gzip_files() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 20, 20, true);
        write_split(dir.path(), "t10k", 5, 5, false);
        let data = FashionMnist::load(dir.path()).unwrap();
        assert_eq!((data.train.len(), data.test.len()), (20, 5));
        assert_eq!(data.train.image_size(), [28, 28]);
        assert_eq!(data.train.label(13), 3);
        assert_eq!(data.test.image(4), &[7u8; 784][..]);
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 20, 19, false);
        write_split(dir.path(), "t10k", 5, 5, false);
        let err = FashionMnist::load(dir.path()).unwrap_err();
        assert!(matches!(err, DataError::Idx(IdxError::CountMismatch { images: 20, labels: 19, .. })), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("train-images-idx3-ubyte") && msg.contains("train-labels-idx1-ubyte"), "{msg}");
    }

    #[test]
    fn missing_file_and_directory_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 2, 2, false);
        let err = FashionMnist::load(dir.path()).unwrap_err();
        assert!(matches!(&err, DataError::MissingFile { name, .. } if name == "t10k-images-idx3-ubyte"), "{err}");

        let err = FashionMnist::load(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, DataError::MissingDir { .. }), "{err}");
    }

    #[test]
    fn missing_default_directory_says_how_to_install() {
        if Path::new(DEFAULT_DATA_DIR).exists() {
            // The hint is only given for the default path; check the message itself instead.
            let err = DataError::MissingDefaultDir { dir: DEFAULT_DATA_DIR.into() };
            assert!(err.to_string().contains("apt-get install -y dataset-fashion-mnist"));
            return;
        }
        let err = FashionMnist::load(Path::new(DEFAULT_DATA_DIR)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("apt-get install -y dataset-fashion-mnist") && msg.contains("--data-dir"), "{msg}");
    }

    #[test]
    fn label_out_of_range_is_reported() {
        let err = Dataset::from_parts(1, 1, vec![0, 0], vec![3, 12]).unwrap_err();
        assert!(matches!(err, IdxError::BadLabel { index: 1, label: 12, .. }), "{err}");
    }

    #[test]
    fn truncated_keeps_the_first_examples() {
        let data = Dataset::from_parts(1, 2, vec![1, 2, 3, 4, 5, 6], vec![0, 1, 2]).unwrap().truncated(2);
        assert_eq!(data.len(), 2);
        assert_eq!(data.image(1), &[3, 4]);
    }
}
