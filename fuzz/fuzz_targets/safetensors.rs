//! Weights to import, as a `.safetensors` file of arbitrary bytes: refused with a reason, or
//! read; what imports as a network holds only finite numbers.
#![no_main]

use std::path::Path;

use burn::prelude::*;
use burn::store::ModuleSnapshot;
use deepcnn::interop::pytorch::{import_tensors, TorchFile};
use deepcnn::models::ModelKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = TorchFile::from_safetensors(data) else { return };
    if let Ok(net) = import_tensors(ModelKind::LeNetBn, file, Path::new("fuzz.safetensors"), &Device::flex()) {
        for t in net.collect(None, None, false) {
            let bytes = t.to_bytes().unwrap();
            assert!(bytes.chunks_exact(4).all(|b| f32::from_le_bytes(b.try_into().unwrap()).is_finite()));
        }
    }
});
