//! Images from ordinary files (PNG, JPEG; any size and colour) turned into Fashion-MNIST-like
//! 28×28 greyscale pixels.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", .path.display())]
pub struct ImageFileError {
    pub path: PathBuf,
    pub reason: String,
}

/// Reads `path` and returns its `size`×`size` greyscale pixels (row-major, 0 = black).
/// Fashion-MNIST shows light garments on a black background; `invert` turns a photo of a dark
/// object on a white background into that form.
pub fn read_image(path: &Path, size: u32, invert: bool) -> Result<Vec<u8>, ImageFileError> {
    let error = |reason: String| ImageFileError { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    decode_image(&bytes, size, invert).map_err(error)
}

/// [`read_image`] of a file's bytes; the error says what is wrong with them. (`image` caps
/// what a decoder may allocate, 512 MB by default: a header that claims an enormous image is
/// an error, not an allocation.)
pub fn decode_image(bytes: &[u8], size: u32, invert: bool) -> Result<Vec<u8>, String> {
    let img = image::load_from_memory(bytes).map_err(|e| format!("not a readable PNG or JPEG image: {e}"))?;
    // Triangle (bilinear) averaging, like a typical `Resize` before feeding such a network.
    let grey = image::imageops::resize(&img.to_luma8(), size, size, FilterType::Triangle);
    let mut pixels = grey.into_raw();
    if invert {
        pixels.iter_mut().for_each(|p| *p = 255 - *p);
    }
    Ok(pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_image_of_any_size_becomes_28_by_28_grey() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("red.png");
        image::RgbImage::from_pixel(50, 30, image::Rgb([255, 0, 0])).save(&path).unwrap();
        let px = read_image(&path, 28, false).unwrap();
        assert_eq!(px.len(), 28 * 28);
        // The luma of pure red as `image` computes it (ITU-R BT.709): 0.2126·255 ≈ 54.
        assert!(px.iter().all(|&p| p == 54), "{:?}", &px[..4]);
        assert!(read_image(&path, 28, true).unwrap().iter().all(|&p| p == 255 - 54));
    }

    #[test]
    fn non_images_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.png");
        std::fs::write(&path, b"not an image").unwrap();
        let e = read_image(&path, 28, false).unwrap_err().to_string();
        assert!(e.contains("notes.png") && e.contains("not a readable PNG or JPEG"), "{e}");
        let e = read_image(&dir.path().join("missing.png"), 28, false).unwrap_err().to_string();
        assert!(e.contains("missing.png"), "{e}");
    }
}
