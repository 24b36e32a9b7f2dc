//! PyTorch state_dicts of the book's networks (made by `bench/make_interop_fixture.py`) load
//! into deepcnn and give PyTorch's evaluation-mode logits; deepcnn's export loads back.

use std::path::PathBuf;

use burn::prelude::*;
use deepcnn::interop::{export_safetensors, import_state_dict};
use deepcnn::models::ModelKind;
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/interop")).join(name)
}

fn expected(key: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(fixture("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(key).unwrap();
    (view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(), view.shape().to_vec())
}

fn logits_of(kind: ModelKind, file: &str) -> Vec<f32> {
    let d = Device::flex();
    let net = import_state_dict(kind, &fixture(file), &d).unwrap_or_else(|e| panic!("{e}"));
    let (images, shape) = expected("images");
    let x = Tensor::<4>::from_data(TensorData::new(images, [shape[0], shape[1], shape[2], shape[3]]), &d);
    net.forward(x).into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

#[track_caller]
fn assert_logits_match(kind: ModelKind, file: &str) {
    let got = logits_of(kind, file);
    let (want, _) = expected(&format!("logits.{kind}"));
    assert_eq!(got.len(), want.len());
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-4, "{kind}: logits differ from PyTorch's by {worst:e}");
}

#[test]
fn pytorch_pt_files_give_pytorchs_logits() {
    assert_logits_match(ModelKind::LeNetBnScratch, "lenet-bn-scratch.pt");
    assert_logits_match(ModelKind::LeNetBn, "lenet-bn.pt");
}

#[test]
fn pytorch_safetensors_files_give_pytorchs_logits() {
    assert_logits_match(ModelKind::LeNet, "lenet.safetensors");
}

#[test]
fn the_wrong_model_or_a_broken_file_is_a_clear_error() {
    let d = Device::flex();
    let e = import_state_dict(ModelKind::LeNetBn, &fixture("lenet-bn-scratch.pt"), &d).unwrap_err().to_string();
    assert!(e.contains("lenet-bn-scratch.pt") && e.contains("not a lenet-bn state_dict"), "{e}");
    let e = import_state_dict(ModelKind::ResNet18, &fixture("lenet.safetensors"), &d).unwrap_err().to_string();
    assert!(e.contains("`0.weight` has shape [6, 1, 5, 5], a resnet18 needs [64, 1, 7, 7]"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("cut.pt");
    let bytes = std::fs::read(fixture("lenet-bn.pt")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let e = import_state_dict(ModelKind::LeNetBn, &truncated, &d).unwrap_err().to_string();
    assert!(e.contains("cut.pt"), "{e}");
}

#[test]
fn export_writes_pytorchs_keys_shapes_and_values() {
    let d = Device::flex();
    let net = import_state_dict(ModelKind::LeNetBnScratch, &fixture("lenet-bn-scratch.pt"), &d).unwrap();
    let bytes = export_safetensors(ModelKind::LeNetBnScratch, &net, 28);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    // The book's from-scratch BN after a conv keeps 1×C×1×1 tensors; Linear keeps out×in.
    assert_eq!(st.tensor("1.moving_var").unwrap().shape(), [1, 6, 1, 1]);
    assert_eq!(st.tensor("10.gamma").unwrap().shape(), [1, 120]);
    assert_eq!(st.tensor("9.weight").unwrap().shape(), [120, 256]);
    // Round trip through the exported file gives the same logits.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let again = import_state_dict(ModelKind::LeNetBnScratch, &path, &d).unwrap();
    let x = Tensor::<4>::random([2, 1, 28, 28], burn::tensor::Distribution::Default, &d);
    net.forward(x.clone()).into_data().assert_eq(&again.forward(x).into_data(), true);

    let builtin = import_state_dict(ModelKind::LeNetBn, &fixture("lenet-bn.pt"), &d).unwrap();
    let st_bytes = export_safetensors(ModelKind::LeNetBn, &builtin, 28);
    let st = SafeTensors::deserialize(&st_bytes).unwrap();
    assert_eq!(st.tensor("1.num_batches_tracked").unwrap().shape(), [] as [usize; 0]);
    assert_eq!(st.tensor("13.running_mean").unwrap().shape(), [84]);
}
