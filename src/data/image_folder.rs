//! Image folders in torchvision's `ImageFolder` layout: `DIR/train/<class>/*.png|jpg` and
//! `DIR/test/<class>/*`, or one class tree `DIR/<class>/*` with a fraction of each class held
//! out as the test set. Classes are the (train) folder's subfolders in name order (a label is
//! its class's index there), files are taken in name order, images of any size are resized to
//! the run's size, and the data is grey unless some image has colour (then every image is RGB).
//! Files are decoded on all cores.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use image::imageops::FilterType;
use image::DynamicImage;
use rayon::prelude::*;

use super::image_file::{decode, planes};
use super::{DataError, Dataset, FashionMnist};

/// The file names taken as images (case ignored), as torchvision's loaders take them.
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];
/// Labels are bytes.
pub const MAX_CLASSES: usize = 256;

/// Whether `dir` is in the image-folder layout (has `train/` and `test/` folders).
pub fn is_image_folder(dir: &Path) -> bool {
    dir.join("train").is_dir() && dir.join("test").is_dir()
}

/// Whether `dir` is one class tree (`DIR/<class>/*.png`): no `train/` and `test/` folders,
/// and some subfolder holding an image.
pub fn is_class_tree(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    !is_image_folder(dir)
        && entries.flatten().any(|entry| {
            is_class_folder(&entry.path())
                && std::fs::read_dir(entry.path())
                    .is_ok_and(|files| files.flatten().any(|file| is_image_file(&file.path())))
        })
}

/// A subfolder that is a class: hidden ones are not.
fn is_class_folder(path: &Path) -> bool {
    path.is_dir() && !path.file_name().is_some_and(|name| name.to_string_lossy().starts_with('.'))
}

fn is_image_file(path: &Path) -> bool {
    let extension = path.extension().map(|e| e.to_string_lossy().to_lowercase());
    path.is_file() && extension.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// What loading is told.
pub trait LoadProgress: Sync {
    /// `files` image files are about to be decoded.
    fn started(&self, _files: usize) {}
    /// One more is decoded.
    fn decoded(&self) {}
}

impl LoadProgress for () {}

/// Image folders loaded: both splits, and the files `skip_bad` left out.
#[derive(Debug)]
pub struct LoadedFolders {
    pub data: FashionMnist,
    pub skipped: Vec<PathBuf>,
}

/// Loads `dir/train` (unless `test_only`: its classes are still read, for the labels) and
/// `dir/test` at `size`×`size`. An unreadable image is an error naming it, or with `skip_bad`
/// left out and listed.
pub fn load_image_folders(
    dir: &Path,
    size: usize,
    skip_bad: bool,
    test_only: bool,
    progress: &dyn LoadProgress,
) -> Result<LoadedFolders, DataError> {
    let train_dir = dir.join("train");
    let classes = class_folders(&train_dir)?;
    check_class_count(&train_dir, &classes)?;
    let mut train_files = files_of(&train_dir, &classes)?;
    if test_only {
        train_files.clear();
    }
    let test_dir = dir.join("test");
    let test_classes = class_folders(&test_dir)?;
    if let Some(missing) = test_classes.iter().find(|c| !classes.contains(c)) {
        return Err(DataError::Folder {
            path: test_dir.join(missing),
            reason: format!("is a test class that {} does not have", train_dir.display()),
        });
    }
    // Test labels are the train folder's indices of their classes.
    let test_files: Vec<(PathBuf, u8)> = files_of(&test_dir, &test_classes)?
        .into_iter()
        .map(|(path, label)| {
            let name = &test_classes[label as usize];
            (path, classes.iter().position(|c| c == name).expect("checked above") as u8)
        })
        .collect();
    decode_splits(classes, &train_files, &test_files, size, skip_bad, progress)
}

/// Loads the class tree `dir/<class>/*` at `size`×`size`, holding `test_fraction` of each
/// class out as the test set (at least one image of a class with two or more, and never all
/// of them). Which ones is decided by a hash of each file's name, so the split is the same on
/// every machine and at every load, whatever order the files were written in. With
/// `test_only` only the held-out images are decoded.
pub fn load_class_tree(
    dir: &Path,
    size: usize,
    skip_bad: bool,
    test_only: bool,
    test_fraction: f64,
    progress: &dyn LoadProgress,
) -> Result<LoadedFolders, DataError> {
    let classes = class_folders(dir)?;
    check_class_count(dir, &classes)?;
    let (mut train_files, mut test_files) = (Vec::new(), Vec::new());
    let mut files = files_of(dir, &classes)?.into_iter().peekable();
    while let Some(&(_, label)) = files.peek() {
        let mut class: Vec<(PathBuf, u8)> = std::iter::from_fn(|| files.next_if(|(_, l)| *l == label)).collect();
        let held_out = held_out_count(class.len(), test_fraction);
        class.sort_by_cached_key(|(path, _)| (name_hash(path), path.clone()));
        let mut test: Vec<_> = class.drain(..held_out).collect();
        // Each side in name order again, as the folders list them.
        test.sort();
        class.sort();
        test_files.extend(test);
        train_files.extend(class);
    }
    if test_only {
        train_files.clear();
    }
    decode_splits(classes, &train_files, &test_files, size, skip_bad, progress)
}

/// How many of a class's `n` images a test fraction holds out: the nearest count, at least one
/// and at most all but one (a class of one image is all training).
pub fn held_out_count(n: usize, fraction: f64) -> usize {
    match n {
        0 | 1 => 0,
        n => ((n as f64 * fraction).round() as usize).clamp(1, n - 1),
    }
}

/// A hash of a file's name (not its folder's path: the split is the same wherever the tree is).
fn name_hash(path: &Path) -> u32 {
    crc32fast::hash(path.file_name().unwrap_or_default().as_encoded_bytes())
}

fn check_class_count(dir: &Path, classes: &[String]) -> Result<(), DataError> {
    if classes.len() > MAX_CLASSES {
        return Err(DataError::Folder {
            path: dir.into(),
            reason: format!("has {} class folders; deepcnn takes at most {MAX_CLASSES}", classes.len()),
        });
    }
    Ok(())
}

/// Decodes both splits' files (labels: indices into `classes`) into data sets.
fn decode_splits(
    classes: Vec<String>,
    train_files: &[(PathBuf, u8)],
    test_files: &[(PathBuf, u8)],
    size: usize,
    skip_bad: bool,
    progress: &dyn LoadProgress,
) -> Result<LoadedFolders, DataError> {
    progress.started(train_files.len() + test_files.len());
    let train = decode_all(train_files, size, skip_bad, progress)?;
    let test = decode_all(test_files, size, skip_bad, progress)?;
    // Grey unless some image has colour: then all of them are RGB.
    let colour = train.images.iter().chain(&test.images).any(|(img, _)| img.color().has_color());
    let channels = if colour { 3 } else { 1 };
    let classes: Arc<[String]> = classes.into();
    let dataset = |decoded: Decoded| {
        let pixels = decoded.images.iter().flat_map(|(img, _)| planes(img, size as u32, channels)).collect();
        let labels = decoded.images.iter().map(|&(_, label)| label).collect();
        Dataset::from_images([channels, size, size], pixels, labels, classes.clone())
    };
    let skipped = train.skipped.iter().chain(&test.skipped).cloned().collect();
    Ok(LoadedFolders { data: FashionMnist { train: dataset(train), test: dataset(test) }, skipped })
}

/// The subfolders of `dir` (its classes), in name order; hidden ones are not classes.
fn class_folders(dir: &Path) -> Result<Vec<String>, DataError> {
    let error = |reason: String| DataError::Folder { path: dir.into(), reason };
    let mut classes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| error(e.to_string()))? {
        let entry = entry.map_err(|e| error(e.to_string()))?;
        if is_class_folder(&entry.path()) {
            classes.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    classes.sort();
    if classes.is_empty() {
        return Err(error(
            "holds no class folders (the layouts are DIR/train/<class>/*.png with DIR/test/<class>/*, or DIR/<class>/*.png)".into(),
        ));
    }
    Ok(classes)
}

/// Every image file of every class folder, with its label (the class's index), classes in
/// order and files in name order within each.
fn files_of(dir: &Path, classes: &[String]) -> Result<Vec<(PathBuf, u8)>, DataError> {
    let mut all = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let folder = dir.join(class);
        let error = |reason: String| DataError::Folder { path: folder.clone(), reason };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
            .map_err(|e| error(e.to_string()))?
            .map(|entry| entry.map(|e| e.path()).map_err(|e| error(e.to_string())))
            .collect::<Result<_, _>>()?;
        files.retain(|path| is_image_file(path));
        if files.is_empty() {
            return Err(error("is an empty class: it holds no PNG or JPEG images".into()));
        }
        files.sort();
        all.extend(files.into_iter().map(|path| (path, label as u8)));
    }
    Ok(all)
}

/// Decoded images at the run's size with their labels, in the files' order.
struct Decoded {
    images: Vec<(DynamicImage, u8)>,
    skipped: Vec<PathBuf>,
}

fn decode_all(
    files: &[(PathBuf, u8)],
    size: usize,
    skip_bad: bool,
    progress: &dyn LoadProgress,
) -> Result<Decoded, DataError> {
    let failures = AtomicUsize::new(0);
    let results: Vec<Result<DynamicImage, String>> = files
        .par_iter()
        .map(|(path, _)| {
            // After one failure (without --skip-bad) the rest is not worth decoding.
            if !skip_bad && failures.load(Ordering::Relaxed) > 0 {
                return Err(String::new());
            }
            let image = std::fs::read(path).map_err(|e| e.to_string()).and_then(|bytes| decode(&bytes));
            let image = image.map(|img| match img.width() as usize == size && img.height() as usize == size {
                true => img,
                false => img.resize_exact(size as u32, size as u32, FilterType::Triangle),
            });
            if image.is_err() {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            progress.decoded();
            image
        })
        .collect();
    let mut decoded = Decoded { images: Vec::with_capacity(files.len()), skipped: Vec::new() };
    for ((path, label), result) in files.iter().zip(results) {
        match result {
            Ok(image) => decoded.images.push((image, *label)),
            Err(reason) if !skip_bad && !reason.is_empty() => {
                let reason = format!("{reason} (pass --skip-bad to leave unreadable files out)");
                return Err(DataError::BadImage { path: path.clone(), reason });
            }
            Err(_) if skip_bad => decoded.skipped.push(path.clone()),
            Err(_) => {}
        }
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, pixels: &[u8], colour: bool) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if colour {
            image::RgbImage::from_fn(4, 4, |x, y| image::Rgb([pixels[(y * 4 + x) as usize], 0, 9])).save(path).unwrap();
        } else {
            image::GrayImage::from_raw(4, 4, pixels.to_vec()).unwrap().save(path).unwrap();
        }
    }

    fn folders(colour_one: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (split, class, name, value) in [
            ("train", "cat", "b.png", 10),
            ("train", "cat", "a.png", 20),
            ("train", "dog", "x.jpg", 30),
            ("train", "ant", "1.png", 40),
            ("test", "dog", "t.png", 50),
            ("test", "ant", "u.png", 60),
        ] {
            let colour = colour_one && name == "t.png";
            let path = d.join(split).join(class).join(name);
            if name.ends_with(".jpg") {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                image::GrayImage::from_pixel(4, 4, image::Luma([value])).save(&path).unwrap();
            } else {
                png(&path, &[value; 16], colour);
            }
        }
        std::fs::write(d.join("train/cat/notes.txt"), "not an image, not a class file").unwrap();
        dir
    }

    #[test]
    fn classes_and_files_come_in_name_order_with_train_labels() {
        let dir = folders(false);
        let loaded = load_image_folders(dir.path(), 4, false, false, &()).unwrap();
        let (train, test) = (&loaded.data.train, &loaded.data.test);
        assert_eq!(train.classes(), ["ant", "cat", "dog"]);
        assert_eq!(test.classes(), train.classes());
        assert_eq!(train.channels(), 1);
        assert_eq!(
            (0..4).map(|i| (train.label(i), train.image(i)[0])).collect::<Vec<_>>(),
            [(0, 40), (1, 20), (1, 10), (2, 30)]
        );
        // The test folder lists dog and ant; their labels are train's indices.
        assert_eq!((0..2).map(|i| (test.label(i), test.image(i)[0])).collect::<Vec<_>>(), [(0, 60), (2, 50)]);
        assert!(loaded.skipped.is_empty());
    }

    #[test]
    fn one_colour_image_makes_all_of_them_rgb_and_sizes_are_resized() {
        let dir = folders(true);
        let loaded = load_image_folders(dir.path(), 8, false, false, &()).unwrap();
        let test = &loaded.data.test;
        assert_eq!((test.channels(), test.image_size()), (3, [8, 8]));
        // The colour image (dog's t.png): red 50, green 0, blue 9, in three planes.
        let dog = test.image(1);
        assert_eq!((dog[0], dog[64], dog[128]), (50, 0, 9));
        // A grey one has the same value in all three.
        let ant = test.image(0);
        assert_eq!((ant[0], ant[64], ant[128]), (60, 60, 60));
    }

    #[test]
    fn bad_layouts_and_files_are_errors_naming_them() {
        let dir = folders(false);
        std::fs::write(dir.path().join("train/cat/broken.png"), b"not a png").unwrap();
        let e = load_image_folders(dir.path(), 4, false, false, &()).unwrap_err().to_string();
        assert!(e.contains("train/cat/broken.png") && e.contains("--skip-bad"), "{e}");
        let loaded = load_image_folders(dir.path(), 4, true, false, &()).unwrap();
        assert_eq!(loaded.skipped, [dir.path().join("train/cat/broken.png")]);
        assert_eq!(loaded.data.train.len(), 4);

        std::fs::create_dir_all(dir.path().join("train/empty")).unwrap();
        let e = load_image_folders(dir.path(), 4, true, false, &()).unwrap_err().to_string();
        assert!(e.contains("train/empty") && e.contains("empty class"), "{e}");
        std::fs::remove_dir(dir.path().join("train/empty")).unwrap();

        png(&dir.path().join("test/bird/b.png"), &[0; 16], false);
        let e = load_image_folders(dir.path(), 4, true, false, &()).unwrap_err().to_string();
        assert!(e.contains("test/bird") && e.contains("a test class that"), "{e}");
    }

    /// A tree of `counts[c]` images for class c, each image's value its own number (so the
    /// images can be told apart after loading).
    fn tree(counts: &[usize]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut value = 0u8;
        for (class, &n) in ["ant", "bee", "cat"].iter().zip(counts) {
            for i in 0..n {
                png(&dir.path().join(class).join(format!("{i:02}.png")), &[value; 16], false);
                value += 1;
            }
        }
        dir
    }

    fn values(data: &Dataset) -> Vec<(u8, u8)> {
        (0..data.len()).map(|i| (data.label(i), data.image(i)[0])).collect()
    }

    #[test]
    fn a_class_tree_holds_the_same_share_of_each_class_out_as_its_test_set() {
        let dir = tree(&[10, 4, 1]);
        assert!(is_class_tree(dir.path()) && !is_image_folder(dir.path()));
        let loaded = load_class_tree(dir.path(), 4, false, false, 0.25, &()).unwrap();
        let (train, test) = (values(&loaded.data.train), values(&loaded.data.test));
        assert_eq!(loaded.data.test.classes(), ["ant", "bee", "cat"]);
        // 2.5 of ten rounds to 3, one of four, and a class of one image is all training.
        let count = |split: &[(u8, u8)], class| split.iter().filter(|(l, _)| *l == class).count();
        assert_eq!([0, 1, 2].map(|c| count(&test, c)), [3, 1, 0]);
        assert_eq!([0, 1, 2].map(|c| count(&train, c)), [7, 3, 1]);
        // Every image on exactly one side, with its own label; each side in name order.
        let mut all: Vec<_> = train.iter().chain(&test).copied().collect();
        all.sort();
        let label = |v: u8| match v {
            0..10 => 0,
            10..14 => 1,
            _ => 2,
        };
        assert_eq!(all, (0..15).map(|v| (label(v), v)).collect::<Vec<_>>());
        assert!(train.windows(2).all(|w| w[0] < w[1]) && test.windows(2).all(|w| w[0] < w[1]));
        // The same split every time, and from the test set alone.
        let again = load_class_tree(dir.path(), 4, false, true, 0.25, &()).unwrap();
        assert_eq!((values(&again.data.test), again.data.train.len()), (test.clone(), 0));
        // Not name order: the hash picks from all over the class.
        let ant_test: Vec<u8> = test.iter().filter(|(l, _)| *l == 0).map(|(_, v)| *v).collect();
        assert_ne!(ant_test, [0, 1, 2]);
        assert_ne!(ant_test, [7, 8, 9]);
        // The held-out share grows with the fraction.
        let half = load_class_tree(dir.path(), 4, false, false, 0.5, &()).unwrap();
        assert_eq!(half.data.test.len(), 5 + 2);
    }

    #[test]
    fn held_out_counts_round_and_leave_every_class_something_to_train_on() {
        assert_eq!([0, 1, 2, 3, 10, 100].map(|n| held_out_count(n, 0.1)), [0, 0, 1, 1, 1, 10]);
        assert_eq!([2, 3, 10].map(|n| held_out_count(n, 0.9)), [1, 2, 9]);
    }
}
