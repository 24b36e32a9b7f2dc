//! `deepcnn export --out model.onnx` against a real client: onnxruntime (`bench/check_onnx.py`,
//! which also runs `onnx.checker`) gets deepcnn's evaluation-mode logits and `deepcnn eval`'s
//! accuracy, for every network. Where onnxruntime is not installed the test says so and skips;
//! with DEEPCNN_REQUIRE_ONNXRUNTIME=1 (CI, once it has installed it) that is a failure instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::*;
use common::{ok, path, synthetic_dir};
use deepcnn::checkpoint::{RunDir, Weights};
use deepcnn::data::{Batcher, FashionMnist};
use deepcnn::models::ModelKind;

/// The Python that has onnxruntime and onnx: $DEEPCNN_PYTHON, bench/.venv's, or python3.
fn python_with_onnxruntime() -> Option<PathBuf> {
    let venv = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/.venv/bin/python"));
    let candidates = std::env::var_os("DEEPCNN_PYTHON").map(PathBuf::from).into_iter().chain([venv, "python3".into()]);
    for python in candidates {
        let imports = Command::new(&python).args(["-c", "import onnxruntime, onnx, numpy"]).output();
        if imports.is_ok_and(|o| o.status.success()) {
            return Some(python);
        }
    }
    let required = std::env::var("DEEPCNN_REQUIRE_ONNXRUNTIME").is_ok_and(|v| v == "1");
    assert!(!required, "DEEPCNN_REQUIRE_ONNXRUNTIME=1 but no Python with onnxruntime and onnx was found");
    eprintln!("skipped: no Python with onnxruntime and onnx (pip install onnxruntime onnx, or set DEEPCNN_PYTHON)");
    None
}

fn f32_file(path: &Path, values: &[f32]) {
    std::fs::write(path, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()).unwrap();
}

fn read_f32s(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// The `K` of eval's "test acc 0.xxxx (K of N images)".
fn eval_correct(run: &Path, data: &Path) -> usize {
    let out = ok(&["eval", "--checkpoint", path(run), "--data-dir", path(data)]);
    let line = out.lines().find(|l| l.starts_with("test loss")).unwrap_or_else(|| panic!("{out}"));
    let inside = line.split('(').nth(1).unwrap();
    inside.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn onnxruntime_gives_deepcnns_logits_and_accuracy_for_every_network() {
    let Some(python) = python_with_onnxruntime() else { return };
    let data = synthetic_dir(96, 40);
    let checker = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/check_onnx.py");
    for kind in ModelKind::ALL {
        let work = tempfile::tempdir().unwrap();
        let run = work.path().join("run");
        // A little training, so that the moving statistics are not BN's initial 0 and 1.
        let limit = if kind == ModelKind::DenseNet { "32" } else { "96" };
        let train = ["train", "--model", kind.name(), "--data-dir", path(data.path()), "--epochs", "1"];
        ok(&[&train[..], &["--limit", limit, "--batch-size", "32", "--out", path(&run)]].concat());
        let onnx = work.path().join("model.onnx");
        ok(&["export", "--checkpoint", path(&run), "--out", path(&onnx)]);

        // The test images exactly as deepcnn feeds them (DenseNet's resized to 96×96), and
        // deepcnn's own evaluation-mode logits for them.
        let (dir, record) = RunDir::open(&run).unwrap();
        let device = Device::flex();
        let model = dir.load_weights(&record, &device, Weights::Last).unwrap();
        let test = FashionMnist::load_test(data.path()).unwrap();
        let indices: Vec<usize> = (0..test.len()).collect();
        let batch = Batcher::new(Some(record.config.image_size()), &device).batch(&test, &indices);
        let images = batch.images.clone().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let want = model.forward(batch.images).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let (inputs, labels, logits) =
            (work.path().join("x.f32"), work.path().join("y.u8"), work.path().join("logits.f32"));
        f32_file(&inputs, &images);
        std::fs::write(&labels, indices.iter().map(|&i| test.label(i)).collect::<Vec<u8>>()).unwrap();

        let out = Command::new(&python)
            .args([checker, path(&onnx), "--inputs", path(&inputs), "--labels", path(&labels)])
            .args(["--logits-out", path(&logits)])
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{kind}: {printed}{}", String::from_utf8_lossy(&out.stderr));
        assert!(printed.contains("onnx.checker passed"), "{kind}: {printed}");

        let got = read_f32s(&logits);
        assert_eq!(got.len(), want.len(), "{kind}: onnxruntime gave {} logits, deepcnn {}", got.len(), want.len());
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-4, "{kind}: onnxruntime's logits differ from deepcnn's by {worst:e}");
        let classes = got.len() / test.len();
        let argmax = |row: &[f32]| (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        let correct =
            got.chunks(classes).zip(&indices).filter(|(row, &i)| argmax(row) == test.label(i) as usize).count();
        assert_eq!(correct, eval_correct(&run, data.path()), "{kind}: onnxruntime's accuracy is not deepcnn eval's");
        let accuracy = format!("test accuracy {:.4}", correct as f64 / test.len() as f64);
        assert!(printed.contains(&accuracy), "{kind}: {printed}");
    }
}
