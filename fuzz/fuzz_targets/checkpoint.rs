//! A checkpoint file (burnpack bytes, as `model-epochN.bpk`) of arbitrary bytes: refused with
//! a reason, or a network of the run's kind, never a panic.
#![no_main]

use burn::prelude::*;
use deepcnn::checkpoint::load_network_bytes;
use deepcnn::models::ModelKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = load_network_bytes(ModelKind::LeNetBn, data.to_vec(), &Device::flex());
});
