//! Images from ordinary files (PNG, JPEG; any size and colour) turned into Fashion-MNIST-like
//! 28×28 greyscale pixels.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::DynamicImage;

#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", .path.display())]
pub struct ImageFileError {
    pub path: PathBuf,
    pub reason: String,
}

/// Reads `path` and returns its `size`×`size` pixels in `channels` planes (1: grey, 3: red,
/// green, blue; each row-major, 0 = black). Fashion-MNIST shows light garments on a black
/// background; `invert` turns a photo of a dark object on a white background into that form.
pub fn read_image(path: &Path, size: u32, channels: usize, invert: bool) -> Result<Vec<u8>, ImageFileError> {
    let error = |reason: String| ImageFileError { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    decode_image_as(&bytes, size, channels, invert).map_err(error)
}

/// The grey `size`×`size` pixels of a file's bytes; the error says what is wrong with them.
/// (`image` caps what a decoder may allocate, 512 MB by default: a header that claims an
/// enormous image is an error, not an allocation.)
pub fn decode_image(bytes: &[u8], size: u32, invert: bool) -> Result<Vec<u8>, String> {
    decode_image_as(bytes, size, 1, invert)
}

/// [`decode_image`] in `channels` planes.
pub fn decode_image_as(bytes: &[u8], size: u32, channels: usize, invert: bool) -> Result<Vec<u8>, String> {
    let mut pixels = planes(&decode(bytes)?, size, channels);
    if invert {
        pixels.iter_mut().for_each(|p| *p = 255 - *p);
    }
    Ok(pixels)
}

/// A PNG or JPEG file's image.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, String> {
    image::load_from_memory(bytes).map_err(|e| format!("not a readable PNG or JPEG image: {e}"))
}

/// `img` as `size`×`size` pixels in `channels` planes (1: its luma; 3: red, green, blue).
/// An image of another size is resized with Triangle (bilinear) averaging, like a typical
/// `Resize` before feeding such a network; one of the size is taken as it is.
pub fn planes(img: &DynamicImage, size: u32, channels: usize) -> Vec<u8> {
    let fits = img.width() == size && img.height() == size;
    if channels == 1 {
        let grey = img.to_luma8();
        return if fits {
            grey.into_raw()
        } else {
            image::imageops::resize(&grey, size, size, FilterType::Triangle).into_raw()
        };
    }
    let rgb = img.to_rgb8();
    let rgb = if fits { rgb } else { image::imageops::resize(&rgb, size, size, FilterType::Triangle) };
    let n = (size * size) as usize;
    let mut out = vec![0u8; 3 * n];
    for (i, pixel) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * n + i] = pixel.0[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_image_of_any_size_becomes_28_by_28_grey() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("red.png");
        image::RgbImage::from_pixel(50, 30, image::Rgb([255, 0, 0])).save(&path).unwrap();
        let px = read_image(&path, 28, 1, false).unwrap();
        assert_eq!(px.len(), 28 * 28);
        // The luma of pure red as `image` computes it (ITU-R BT.709): 0.2126·255 ≈ 54.
        assert!(px.iter().all(|&p| p == 54), "{:?}", &px[..4]);
        assert!(read_image(&path, 28, 1, true).unwrap().iter().all(|&p| p == 255 - 54));
        // In colour: three planes, red full, green and blue empty.
        let rgb = read_image(&path, 28, 3, false).unwrap();
        assert_eq!(rgb.len(), 3 * 28 * 28);
        assert!(rgb[..784].iter().all(|&p| p == 255) && rgb[784..].iter().all(|&p| p == 0));
    }

    #[test]
    fn non_images_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.png");
        std::fs::write(&path, b"not an image").unwrap();
        let e = read_image(&path, 28, 1, false).unwrap_err().to_string();
        assert!(e.contains("notes.png") && e.contains("not a readable PNG or JPEG"), "{e}");
        let e = read_image(&dir.path().join("missing.png"), 28, 1, false).unwrap_err().to_string();
        assert!(e.contains("missing.png"), "{e}");
    }
}
