//! The IDX reader on arbitrary bytes (raw or gzip): it must return a value or an error, never
//! panic, overflow or allocate without bound.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

// The reader's source file itself: it needs only std, flate2 and thiserror.
#[path = "../../src/data/idx.rs"]
#[allow(dead_code)]
mod idx;

use idx::{decode_bytes, parse_images, parse_labels};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz-input");
    if let Ok(bytes) = decode_bytes(data.to_vec(), path) {
        if let Ok(images) = parse_images(&bytes, path) {
            assert_eq!(images.pixels.len(), images.count * images.rows * images.cols);
        }
        if let Ok(labels) = parse_labels(&bytes, path) {
            // Any byte is a valid IDX label; the class range is checked by `Dataset`.
            let count = u32::from_be_bytes(bytes[4..8].try_into().unwrap()) as usize;
            assert_eq!(labels.len(), count);
        }
    }
});
