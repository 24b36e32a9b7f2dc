//! The IDX file format of (Fashion-)MNIST: a big-endian header (magic number, then one `u32`
//! per dimension) followed by the raw `u8` values. Files may be gzip-compressed, as Debian ships them.
//!
//! Every malformed input is reported as an [`IdxError`] naming the file and the problem; the
//! parser never panics and never reads past the end of its input.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Magic number of an IDX file of unsigned bytes with three dimensions (images: N×rows×cols).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels: N).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Why an IDX file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    // The causes are part of the message, not `source()`s: printed once either way.
    #[error("{path}: cannot read: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("{path}: corrupt gzip data: {cause}")]
    Gzip { path: PathBuf, cause: std::io::Error },
    #[error("{path}: not a gzip file (the name ends in .gz, but the data has no gzip header)")]
    NotGzip { path: PathBuf },
    #[error("{path}: file is empty")]
    Empty { path: PathBuf },
    #[error("{path}: header is {found} bytes long, an IDX header here needs {needed}")]
    ShortHeader { path: PathBuf, found: usize, needed: usize },
    #[error("{path}: wrong magic number 0x{found:08x}, expected 0x{expected:08x} ({what})")]
    BadMagic { path: PathBuf, found: u32, expected: u32, what: &'static str },
    #[error("{path}: truncated: header promises {expected} bytes of data, file has {found}")]
    Truncated { path: PathBuf, expected: usize, found: usize },
    #[error("{path}: {found} bytes of data, but the header describes only {expected}")]
    TrailingData { path: PathBuf, expected: usize, found: usize },
    #[error("{path}: image dimensions {rows}×{cols} are not usable (each must be at least 1)")]
    BadDimensions { path: PathBuf, rows: usize, cols: usize },
    #[error("{path}: label {label} at index {index} is outside 0..{classes}")]
    BadLabel { path: PathBuf, index: usize, label: u8, classes: usize },
    #[error("image/label count mismatch: {images_path} has {images} images but {labels_path} has {labels} labels")]
    CountMismatch { images_path: PathBuf, images: usize, labels_path: PathBuf, labels: usize },
}

/// Images of one IDX file: `count` greyscale images of `rows`×`cols` bytes, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Reads a whole file, transparently gunzipping it when it starts with the gzip magic bytes.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, IdxError> {
    let raw = std::fs::read(path).map_err(|cause| IdxError::Io { path: path.into(), cause })?;
    decode_bytes(raw, path)
}

/// The largest decompressed file accepted (Fashion-MNIST's biggest is 47 MB): a cap, so a
/// corrupt or hostile gzip stream cannot exhaust memory.
pub const MAX_DECOMPRESSED: u64 = 1 << 30;

/// `raw` itself, or its gunzipped content when it starts with the gzip magic bytes; `path`
/// only names the file in errors.
pub fn decode_bytes(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>, IdxError> {
    if !raw.starts_with(&GZIP_MAGIC) {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz")) {
            return Err(IdxError::NotGzip { path: path.into() });
        }
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|cause| IdxError::Gzip { path: path.into(), cause })?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        let cause = std::io::Error::other(format!("decompresses to more than {MAX_DECOMPRESSED} bytes"));
        return Err(IdxError::Gzip { path: path.into(), cause });
    }
    Ok(out)
}

/// Reads an images file (`*-images-idx3-ubyte[.gz]`).
pub fn read_images(path: &Path) -> Result<IdxImages, IdxError> {
    parse_images(&read_bytes(path)?, path)
}

/// Reads a labels file (`*-labels-idx1-ubyte[.gz]`).
pub fn read_labels(path: &Path) -> Result<Vec<u8>, IdxError> {
    parse_labels(&read_bytes(path)?, path)
}

/// Parses the bytes of an images file; `path` only names the file in errors.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<IdxImages, IdxError> {
    let (dims, data) = parse(bytes, path, IMAGES_MAGIC, "images: unsigned bytes, 3 dimensions")?;
    let [count, rows, cols] = [dims[0], dims[1], dims[2]];
    if rows == 0 || cols == 0 {
        return Err(IdxError::BadDimensions { path: path.into(), rows, cols });
    }
    Ok(IdxImages { count, rows, cols, pixels: data.to_vec() })
}

/// Parses the bytes of a labels file; `path` only names the file in errors.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>, IdxError> {
    let (_, data) = parse(bytes, path, LABELS_MAGIC, "labels: unsigned bytes, 1 dimension")?;
    Ok(data.to_vec())
}

/// Checks the header against `magic` and the data length against the dimensions.
fn parse<'a>(bytes: &'a [u8], path: &Path, magic: u32, what: &'static str) -> Result<(Vec<usize>, &'a [u8]), IdxError> {
    if bytes.is_empty() {
        return Err(IdxError::Empty { path: path.into() });
    }
    let rank = (magic & 0xff) as usize;
    let header_len = 4 + 4 * rank;
    if bytes.len() < 4 {
        return Err(IdxError::ShortHeader { path: path.into(), found: bytes.len(), needed: header_len });
    }
    let found = be_u32(&bytes[0..4]);
    if found != magic {
        return Err(IdxError::BadMagic { path: path.into(), found, expected: magic, what });
    }
    if bytes.len() < header_len {
        return Err(IdxError::ShortHeader { path: path.into(), found: bytes.len(), needed: header_len });
    }
    let dims: Vec<usize> = (0..rank).map(|i| be_u32(&bytes[4 + 4 * i..8 + 4 * i]) as usize).collect();
    // Checked product: a hostile header must not overflow into a small, "valid" length.
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).unwrap_or(usize::MAX);
    let data = &bytes[header_len..];
    if data.len() < expected {
        return Err(IdxError::Truncated { path: path.into(), expected, found: data.len() });
    }
    if data.len() > expected {
        return Err(IdxError::TrailingData { path: path.into(), expected, found: data.len() });
    }
    Ok((dims, data))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Encodes images as an IDX file (used by tests and tools that build small data sets).
pub fn encode_images(images: &IdxImages) -> Vec<u8> {
    let mut out = header(IMAGES_MAGIC, &[images.count, images.rows, images.cols]);
    out.extend_from_slice(&images.pixels);
    out
}

/// Encodes labels as an IDX file.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = header(LABELS_MAGIC, &[labels.len()]);
    out.extend_from_slice(labels);
    out
}

fn header(magic: u32, dims: &[usize]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out
}

/// Gzip-compresses bytes (to write `.gz` IDX files like Debian's).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IdxImages {
        IdxImages { count: 3, rows: 2, cols: 4, pixels: (0..24).map(|v| v * 10).collect() }
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn round_trip_raw_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let images = sample();
        let labels = vec![0u8, 9, 4];
        for (suffix, pack) in [("", false), (".gz", true)] {
            let enc = |b: Vec<u8>| if pack { gzip(&b) } else { b };
            let ip = write(dir.path(), &format!("img{suffix}"), &enc(encode_images(&images)));
            let lp = write(dir.path(), &format!("lbl{suffix}"), &enc(encode_labels(&labels)));
            assert_eq!(read_images(&ip).unwrap(), images, "images, gzip={pack}");
            assert_eq!(read_labels(&lp).unwrap(), labels, "labels, gzip={pack}");
        }
    }

    #[test]
    fn wrong_magic_is_reported() {
        let p = Path::new("x");
        // A labels file given where images are expected.
        let err = parse_images(&encode_labels(&[1, 2]), p).unwrap_err();
        assert!(matches!(err, IdxError::BadMagic { found: LABELS_MAGIC, expected: IMAGES_MAGIC, .. }), "{err}");
    }

    #[test]
    fn truncated_data_is_reported() {
        let mut bytes = encode_images(&sample());
        bytes.truncate(bytes.len() - 5);
        let err = parse_images(&bytes, Path::new("x")).unwrap_err();
        assert!(matches!(err, IdxError::Truncated { expected: 24, found: 19, .. }), "{err}");
        // Cut inside the header.
        let err = parse_images(&bytes[..9], Path::new("x")).unwrap_err();
        assert!(matches!(err, IdxError::ShortHeader { found: 9, needed: 16, .. }), "{err}");
    }

    #[test]
    fn trailing_data_is_reported() {
        let mut bytes = encode_labels(&[1, 2, 3]);
        bytes.push(7);
        let err = parse_labels(&bytes, Path::new("x")).unwrap_err();
        assert!(matches!(err, IdxError::TrailingData { expected: 3, found: 4, .. }), "{err}");
    }

    #[test]
    fn empty_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "empty", &[]);
        let err = read_labels(&p).unwrap_err();
        assert!(matches!(err, IdxError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn corrupt_gzip_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = gzip(&encode_labels(&[1, 2, 3]));
        let n = bytes.len();
        bytes.truncate(n - 10);
        let p = write(dir.path(), "cut.gz", &bytes);
        let err = read_labels(&p).unwrap_err();
        assert!(matches!(err, IdxError::Gzip { .. }), "{err}");
    }

    #[test]
    fn huge_dimensions_do_not_overflow() {
        let mut bytes = header(IMAGES_MAGIC, &[u32::MAX as usize, u32::MAX as usize, u32::MAX as usize]);
        bytes.extend_from_slice(&[0; 8]);
        let err = parse_images(&bytes, Path::new("x")).unwrap_err();
        assert!(matches!(err, IdxError::Truncated { .. }), "{err}");
    }

    #[test]
    fn zero_sized_images_are_rejected() {
        let bytes = header(IMAGES_MAGIC, &[4, 0, 28]);
        let err = parse_images(&bytes, Path::new("x")).unwrap_err();
        assert!(matches!(err, IdxError::BadDimensions { rows: 0, cols: 28, .. }), "{err}");
    }

    #[test]
    fn errors_name_the_file() {
        let err = parse_labels(&[0, 0, 8, 3], Path::new("/data/t10k-labels-idx1-ubyte")).unwrap_err();
        assert!(err.to_string().starts_with("/data/t10k-labels-idx1-ubyte: wrong magic"), "{err}");
    }
}
