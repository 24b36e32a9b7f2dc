//! Data: the IDX file format, the Fashion-MNIST data set, image folders, and batching into
//! tensors.

pub mod augment;
pub mod batcher;
pub mod fashion_mnist;
pub mod idx;
pub mod image_file;
pub mod image_folder;
pub mod synthetic;

pub use augment::Augment;
pub use batcher::{Batch, Batcher};
pub use fashion_mnist::{DataError, Dataset, FashionMnist, CLASS_NAMES, DEFAULT_DATA_DIR, NUM_CLASSES};
pub use image_folder::LoadProgress;

use std::path::Path;

/// What a data directory held.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Fashion-MNIST's IDX files.
    Idx,
    /// Image folders (`train/<class>/…`, `test/<class>/…`); `skipped` unreadable files left out.
    ImageFolders { skipped: usize },
}

impl Source {
    /// How the header line of a run says it, or `None` for the book's Fashion-MNIST.
    pub fn describe(&self, dir: &Path, data: &Dataset) -> Option<String> {
        match self {
            Source::Idx => None,
            Source::ImageFolders { skipped } => {
                let colour = if data.channels() == 1 { "grey" } else { "colour" };
                let skipped = match skipped {
                    0 => String::new(),
                    n => format!("; {} skipped", crate::report::plural(*n, "unreadable file", "unreadable files")),
                };
                let (n, names) = (data.classes().len(), data.classes().join(", "));
                Some(format!("image folders {} ({n} classes: {names}; {colour}{skipped})", dir.display()))
            }
        }
    }
}

/// Loads a data directory, whichever it holds: Fashion-MNIST's IDX files, or image folders
/// decoded at `size`×`size` (unreadable files an error, or skipped with `skip_bad`). With
/// `test_only`, the training split is left empty (an image folder's classes are still read).
pub fn load(
    dir: &Path,
    size: usize,
    skip_bad: bool,
    test_only: bool,
    progress: &dyn LoadProgress,
) -> Result<(FashionMnist, Source), DataError> {
    if image_folder::is_image_folder(dir) {
        let loaded = image_folder::load_image_folders(dir, size, skip_bad, test_only, progress)?;
        return Ok((loaded.data, Source::ImageFolders { skipped: loaded.skipped.len() }));
    }
    let data = match test_only {
        true => {
            let test = FashionMnist::load_test(dir)?;
            FashionMnist { train: test.slice(0..0), test }
        }
        false => FashionMnist::load(dir)?,
    };
    Ok((data, Source::Idx))
}
