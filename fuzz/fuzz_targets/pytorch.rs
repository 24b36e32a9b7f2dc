//! Weights to import, as a PyTorch `.pt` file of arbitrary bytes (a zip of pickles, or a
//! legacy pickle): refused with a reason, or read, never a panic.
#![no_main]

use std::path::Path;

use burn::prelude::*;
use deepcnn::interop::pytorch::{import_tensors, TorchFile};
use deepcnn::models::ModelKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.pt");
    std::fs::write(&path, data).unwrap();
    if let Ok(file) = TorchFile::read(&path) {
        let _ = import_tensors(ModelKind::LeNetBn, file, Path::new("fuzz.pt"), &Device::flex());
    }
});
