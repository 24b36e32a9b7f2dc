//! An image for `predict` (PNG, JPEG) of arbitrary bytes: refused with a reason, or 28×28
//! grey pixels, without unbounded allocation.
#![no_main]

use deepcnn::data::image_file::decode_image;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pixels) = decode_image(data, 28, false) {
        assert_eq!(pixels.len(), 28 * 28);
    }
});
