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
    /// One class tree (`<class>/…`) with `test_fraction` of each class held out as the test set.
    ClassTree { skipped: usize, test_fraction: f64 },
}

impl Source {
    /// How the header line of a run says it, or `None` for the book's Fashion-MNIST.
    pub fn describe(&self, dir: &Path, data: &FashionMnist) -> Option<String> {
        let (kind, skipped, held_out) = match *self {
            Source::Idx => return None,
            Source::ImageFolders { skipped } => ("image folders", skipped, String::new()),
            Source::ClassTree { skipped, test_fraction } => {
                let share = crate::report::percent(test_fraction);
                let images = crate::report::plural(data.test.len(), "image", "images");
                ("class tree", skipped, format!("; {share} of each class held out as the test set: {images}"))
            }
        };
        let colour = if data.test.channels() == 1 { "grey" } else { "colour" };
        let skipped = match skipped {
            0 => String::new(),
            n => format!("; {} skipped", crate::report::plural(n, "unreadable file", "unreadable files")),
        };
        let classes = data.test.classes();
        let (n, names) = (classes.len(), classes.join(", "));
        Some(format!("{kind} {} ({n} classes: {names}; {colour}{skipped}{held_out})", dir.display()))
    }
}

/// Loads a data directory, whichever it holds: Fashion-MNIST's IDX files, image folders, or
/// one class tree with `test_split` of each class held out as the test set (images decoded at
/// `size`×`size`; unreadable files an error, or skipped with `skip_bad`). With `test_only`,
/// the training split is left empty (an image folder's classes are still read).
pub fn load(
    dir: &Path,
    size: usize,
    skip_bad: bool,
    test_only: bool,
    test_split: Option<f64>,
    progress: &dyn LoadProgress,
) -> Result<(FashionMnist, Source), DataError> {
    if image_folder::is_image_folder(dir) {
        let loaded = image_folder::load_image_folders(dir, size, skip_bad, test_only, progress)?;
        return Ok((loaded.data, Source::ImageFolders { skipped: loaded.skipped.len() }));
    }
    if image_folder::is_class_tree(dir) {
        let Some(test_fraction) = test_split else {
            return Err(DataError::Folder {
                path: dir.into(),
                reason: "is one class tree, with no train/ and test/ folders: hold a fraction of each class \
                         out as the test set with --val-split F (e.g. 0.1)"
                    .into(),
            });
        };
        let loaded = image_folder::load_class_tree(dir, size, skip_bad, test_only, test_fraction, progress)?;
        return Ok((loaded.data, Source::ClassTree { skipped: loaded.skipped.len(), test_fraction }));
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
