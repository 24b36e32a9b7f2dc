//! Bad input as a user meets it, through the binary: every failure is one `error: ...` line and
//! exit code 1 (2 for flags that do not parse), never a panic (101), an abort (134), a
//! backtrace or a silently wrong answer; and what a killed run leaves behind is repaired.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;

use common::{deepcnn, ok, path, stderr, stdout, synthetic_dir};
use deepcnn::data::idx::{encode_images, encode_labels, gzip, IdxImages};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// Fails unless the command exited with `code` and one line on stderr: `error: ...` holding
/// `needle`. Returns that line.
#[track_caller]
fn fails_with_code(args: &[&str], code: i32, needle: &str) -> String {
    let out = deepcnn(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: exit {:?}, stderr: {err}", out.status);
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: expected {needle:?} in: {err}");
    err
}

#[track_caller]
fn fails_with(args: &[&str], needle: &str) -> String {
    fails_with_code(args, 1, needle)
}

/// A 1-epoch lenet-bn run on synthetic data (the data directory, and the run's directory).
fn lenet_run() -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
    let data = synthetic_dir(64, 24);
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("run");
    ok(&[
        "train",
        "--model",
        "lenet-bn",
        "--data-dir",
        path(data.path()),
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        path(&run),
        "--precise-bn",
        "1",
    ]);
    (data, runs, run)
}

/// Edits `run.json` of `run` in place.
fn edit_run_json(run: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let file = run.join("run.json");
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&file, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
}

#[test]
fn a_run_json_that_does_not_fit_its_network_is_refused_by_every_command() {
    let (data, runs, run) = lenet_run();
    let d = path(data.path());
    let png = runs.path().join("x.png");
    image::GrayImage::new(28, 28).save(&png).unwrap();
    let export = runs.path().join("w.safetensors");
    let commands: [&[&str]; 5] = [
        &["eval", "--checkpoint", path(&run), "--data-dir", d],
        &["eval", "--checkpoint", path(&run), "--data-dir", d, "--precise-bn", "1"],
        &["predict", "--checkpoint", path(&run), path(&png)],
        &["export", "--checkpoint", path(&run), "--out", path(&export)],
        &["train", "--resume", path(&run), "--epochs", "2", "--data-dir", d],
    ];
    edit_run_json(&run, |j| j["config"]["resize"] = 32.into());
    for args in commands {
        let line = fails_with(args, "run.json: settings that cannot be used: lenet-bn cannot take 32×32 images");
        // The fix is in run.json: no flag to point to (eval and predict have no --resize).
        assert!(!line.contains("--resize"), "{line}");
    }
    edit_run_json(&run, |j| {
        j["config"]["resize"] = serde_json::Value::Null;
        j["config"]["model"] = "lenet".into();
    });
    let line = fails_with(commands[0], "lenet has no batch normalization, so precise BN has nothing to recompute");
    assert!(!line.contains("--precise-bn"), "{line}");
    edit_run_json(&run, |j| j["config"]["model"] = "lenet-bn".into());
    // Metrics and counts no run writes.
    let fields = [
        ("epoch", serde_json::json!(7)),
        ("test_accuracy", 5.0.into()),
        ("seconds", (-4.0).into()),
        ("val_accuracy", 1.5.into()),
        ("ema_test_accuracy", (-0.5).into()),
    ];
    for (field, value) in fields {
        let before = std::fs::read(run.join("run.json")).unwrap();
        edit_run_json(&run, |j| j["history"][0][field] = value);
        fails_with(commands[0], "the metrics of epoch 1 are not a run's");
        std::fs::write(run.join("run.json"), before).unwrap();
    }
    edit_run_json(&run, |j| j["config"]["epochs"] = 0.into());
    fails_with(commands[0], "epochs must be at least 1");
    edit_run_json(&run, |j| j["config"]["epochs"] = 1.into());
    edit_run_json(&run, |j| {
        j["config"]["resize"] = serde_json::Value::Null;
        j["config"]["batch_size"] = 0.into();
    });
    for args in commands {
        fails_with(args, "run.json: settings that cannot be used: batch size must be at least 1");
    }
    edit_run_json(&run, |j| j["config"]["batch_size"] = 32.into());
    // The data's shape: a network is not built for images or classes no data has.
    for (field, value, message) in [
        ("channels", serde_json::json!(0), "images have 1 channel (grey) or 3 (colour), not 0"),
        ("channels", serde_json::json!(7), "images have 1 channel (grey) or 3 (colour), not 7"),
        ("class_names", serde_json::json!([]), "a network needs 1 to 256 classes, not 0"),
    ] {
        let before = std::fs::read(run.join("run.json")).unwrap();
        edit_run_json(&run, |j| j["config"][field] = value);
        fails_with(commands[0], message);
        std::fs::write(run.join("run.json"), before).unwrap();
    }
    edit_run_json(&run, |j| j["model_file"] = "../../etc/passwd".into());
    fails_with(commands[0], "which is not a file in the run directory");
}

#[test]
fn what_would_not_fit_in_memory_is_refused_before_it_is_allocated() {
    let data = synthetic_dir(8, 8);
    let d = path(data.path());
    // (A batch is never larger than the data: 8 images here.)
    let line = fails_with(
        &["train", "--model", "resnet18", "--resize", "10000", "--data-dir", d],
        "training resnet18 with batch 8 at 10000×10000 would need about",
    );
    assert!(line.contains(" of memory, and this machine has ") && line.contains("--batch-size or --resize"), "{line}");
    fails_with(&["bench", "--model", "resnet18", "--batch-size", "100000000"], "smaller --batch-size or --input");
    fails_with(&["bench", "--model", "densenet", "--input", "20000", "--batch-size", "1"], "would need about");
    // Sizes whose products would overflow are refused, not computed.
    fails_with(
        &["bench", "--model", "lenet", "--batch-size", "1152921504606846976", "--steps", "1"],
        "would need about",
    );
    fails_with(
        &["summary", "--model", "resnet18", "--input", "4294967296"],
        "needs at most 1048576×1048576 (see --input)",
    );
    fails_with_code(&["summary", "--model", "resnet18", "--input", "18446744073709551616"], 2, "is too large");
    // A batch is never larger than the data: this trains in one batch of 8.
    let text =
        ok(&["train", "--model", "lenet-bn", "--data-dir", d, "--epochs", "1", "--batch-size", "1000000000000000"]);
    assert!(text.contains("epoch 1, loss "), "{text}");
    // summary only prints shapes: any size the network takes costs nothing.
    let text = ok(&["summary", "--model", "densenet", "--input", "100000"]);
    assert!(text.lines().nth(1).unwrap().contains("[1, 64, 50000, 50000]"), "{text}");
    assert!(text.contains("total trainable parameters: 758226"), "{text}");
}

#[test]
fn an_allocation_that_fails_anyway_is_a_one_line_error() {
    // The estimate lets this through (it fits in the machine), but not in 3 GB of address space.
    let deepcnn = env!("CARGO_BIN_EXE_deepcnn");
    let out = Command::new("sh")
        .args(["-c", &format!("ulimit -v 3000000 && exec {deepcnn} bench --model resnet18 --batch-size 1024 --input 96 --steps 1 --warmup 0")])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: out of memory: an allocation of ") && err.lines().count() == 1, "{err}");
}

#[test]
fn checkpoint_files_that_are_no_files_or_far_too_large_are_not_read() {
    let (data, _runs, run) = lenet_run();
    let d = path(data.path());
    let model = run.join("model-epoch1.bpk");
    std::fs::remove_file(&model).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &model).unwrap();
    fails_with(&["eval", "--checkpoint", path(&run), "--data-dir", d], "model-epoch1.bpk: is not a regular file");
    std::fs::remove_file(&model).unwrap();
    std::fs::File::create(&model).unwrap().set_len(10 << 30).unwrap(); // sparse: no disk used
    fails_with(&["eval", "--checkpoint", path(&run), "--data-dir", d], "far more than any lenet-bn checkpoint");
    std::fs::remove_file(&model).unwrap();
    std::fs::create_dir(run.join("run.json.d")).unwrap();
    std::fs::rename(run.join("run.json"), run.join("saved.json")).unwrap();
    std::fs::rename(run.join("run.json.d"), run.join("run.json")).unwrap();
    fails_with(&["eval", "--checkpoint", path(&run), "--data-dir", d], "run.json: is not a regular file");
    fails_with(&["eval", "--checkpoint", path(&run.join("nowhere")), "--data-dir", d], "nowhere does not exist");
    fails_with(
        &["eval", "--checkpoint", path(&run.join("saved.json")), "--data-dir", d],
        "saved.json: is a file, not a run directory",
    );
}

#[test]
fn export_records_the_network_and_its_image_size_and_import_uses_them() {
    let data = synthetic_dir(32, 16);
    let d = path(data.path());
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("run");
    ok(&[
        "train",
        "--model",
        "resnet18",
        "--resize",
        "32",
        "--data-dir",
        d,
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--out",
        path(&run),
    ]);
    let weights = runs.path().join("w.safetensors");
    let said = ok(&["export", "--checkpoint", path(&run), "--out", path(&weights)]);
    assert!(said.contains("(resnet18 after 1 epoch, 32×32 images)"), "{said}");
    let imported = runs.path().join("imported");
    let said = ok(&["import", path(&weights), "--out", path(&imported)]);
    assert!(said.starts_with("imported resnet18 weights (32×32 images)"), "{said}");
    let eval = |dir: &Path| ok(&["eval", "--checkpoint", path(dir), "--data-dir", d, "--json"]);
    let (a, b): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&eval(&run)).unwrap(), serde_json::from_str(&eval(&imported)).unwrap());
    assert_eq!((&a["loss"], &a["confusion"]), (&b["loss"], &b["confusion"]));

    let x = runs.path().join("x");
    let x = path(&x);
    fails_with(
        &["import", "--model", "densenet", path(&weights), "--out", x],
        "holds a resnet18 network (its metadata says so), not a densenet",
    );
    fails_with(
        &["import", path(&weights), "--out", x, "--resize", "96"],
        "was trained at 32×32 (its metadata says so)",
    );
    // Metadata that contradicts itself is the file's fault, said as such.
    let odd = runs.path().join("odd.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut info = metadata.metadata().clone().unwrap();
    info.insert("deepcnn.image_size".into(), "2000000".into());
    rewrite_safetensors_with(&weights, &odd, |_| {}, Some(info));
    fails_with(
        &["import", path(&odd), "--out", x],
        "odd.safetensors: its metadata gives the image size as 2000000, which a resnet18 cannot take",
    );
    // A plain PyTorch file says nothing: --model is needed.
    let torch = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interop/lenet-bn.pt");
    fails_with(&["import", path(&torch), "--out", x], "does not record which network it holds; pass --model");
    // Importing over a run: import has no --resume to suggest.
    let line = fails_with(
        &["import", path(&weights), "--out", path(&imported)],
        "already holds a run (resnet18, 0 epochs done); pass --force",
    );
    assert!(!line.contains("--resume"), "{line}");
    assert!(!runs.path().join("x").exists(), "a failed import creates nothing");
}

/// A copy of the safetensors file at `from`, with `change` applied to its tensors.
fn rewrite_safetensors(
    from: &Path,
    to: &Path,
    change: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>),
) {
    let (_, metadata) = SafeTensors::read_metadata(&std::fs::read(from).unwrap()).unwrap();
    rewrite_safetensors_with(from, to, change, metadata.metadata().clone())
}

/// [`rewrite_safetensors`] with other metadata.
fn rewrite_safetensors_with(
    from: &Path,
    to: &Path,
    change: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>),
    metadata: Option<HashMap<String, String>>,
) {
    let bytes = std::fs::read(from).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec()))).collect();
    change(&mut tensors);
    let views: HashMap<String, TensorView> = tensors
        .iter()
        .map(|(k, (dtype, shape, data))| (k.clone(), TensorView::new(*dtype, shape.clone(), data).unwrap()))
        .collect();
    std::fs::write(to, safetensors::serialize(views, metadata).unwrap()).unwrap();
}

#[test]
fn weights_that_are_not_finite_floats_are_refused_by_name_and_half_floats_are_read() {
    let (data, runs, run) = lenet_run();
    let weights = runs.path().join("w.safetensors");
    ok(&["export", "--checkpoint", path(&run), "--out", path(&weights)]);
    let x = runs.path().join("x");
    let x = path(&x);
    for (bad, name) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf")] {
        let file = runs.path().join(format!("{name}.safetensors"));
        rewrite_safetensors(&weights, &file, |t| {
            t.get_mut("4.weight").unwrap().2[..4].copy_from_slice(&bad.to_le_bytes())
        });
        fails_with(
            &["import", path(&file), "--out", x],
            &format!("`4.weight` holds {name}: a network's weights must be finite"),
        );
    }
    let as_int = runs.path().join("int.safetensors");
    rewrite_safetensors(&weights, &as_int, |t| {
        let (dtype, _, data) = t.get_mut("0.bias").unwrap();
        *dtype = Dtype::I32;
        data.iter_mut().for_each(|b| *b = 0);
    });
    fails_with(&["import", path(&as_int), "--out", x], "`0.bias` holds i32 values; a weight must be floating-point");
    // f16 weights (what `net.half()` saves) are read as f32: the same network to f16 precision.
    let half = runs.path().join("half.safetensors");
    rewrite_safetensors(&weights, &half, |t| {
        for (dtype, _, data) in t.values_mut().filter(|(d, _, _)| *d == Dtype::F32) {
            *dtype = Dtype::F16;
            *data = data.chunks_exact(4).flat_map(|b| half_bits(f32::from_le_bytes(b.try_into().unwrap()))).collect();
        }
    });
    let imported = runs.path().join("from-half");
    ok(&["import", path(&half), "--out", path(&imported)]);
    let eval = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&ok(&["eval", "--checkpoint", path(dir), "--data-dir", path(data.path()), "--json"]))
            .unwrap()
    };
    let (a, b) = (eval(&run), eval(&imported));
    assert!((a["loss"].as_f64().unwrap() - b["loss"].as_f64().unwrap()).abs() < 1e-2, "{} {}", a["loss"], b["loss"]);
}

/// The f16 bits of `v` (round to nearest), little-endian.
fn half_bits(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// An IDX data directory of `size`×`size` images (gzip, Debian's names).
fn idx_dir_of_size(size: usize, n_train: usize, n_test: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let pixels = (0..n * size * size).map(|i| (i * 7 % 251) as u8).collect();
        let images = IdxImages { count: n, rows: size, cols: size, pixels };
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        std::fs::write(dir.path().join(format!("{prefix}-images-idx3-ubyte.gz")), gzip(&encode_images(&images)))
            .unwrap();
        std::fs::write(dir.path().join(format!("{prefix}-labels-idx1-ubyte.gz")), gzip(&encode_labels(&labels)))
            .unwrap();
    }
    dir
}

#[test]
fn images_of_another_size_are_resized_and_every_command_says_so() {
    let data = idx_dir_of_size(32, 32, 8);
    let d = path(data.path());
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("run");
    let text =
        ok(&["train", "--model", "lenet", "--data-dir", d, "--epochs", "1", "--batch-size", "16", "--out", path(&run)]);
    assert!(text.starts_with("training lenet on 32 images (32×32, resized to 28×28), testing on 8"), "{text}");
    let text = ok(&["eval", "--checkpoint", path(&run), "--data-dir", d]);
    assert!(text.lines().next().unwrap().ends_with("; test images 32×32, resized to 28×28"), "{text}");
    let idx = data.path().join("t10k-images-idx3-ubyte.gz");
    let text = ok(&["predict", "--checkpoint", path(&run), "--idx", path(&idx), "--index", "1"]);
    assert!(text.contains("t10k-images-idx3-ubyte.gz[1] (32×32, resized to 28×28): "), "{text}");
}

#[test]
fn extending_a_scheduled_run_says_what_it_does() {
    let data = synthetic_dir(64, 8);
    let d = path(data.path());
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("run");
    let text = ok(&[
        "train",
        "--model",
        "lenet",
        "--data-dir",
        d,
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--schedule",
        "cosine",
        "--out",
        path(&run),
    ]);
    assert!(text.lines().next().unwrap().contains("; cosine schedule over 1 epoch"), "{text}");
    let text = ok(&["train", "--resume", path(&run), "--epochs", "2", "--data-dir", d]);
    let header = text.lines().next().unwrap();
    assert!(
        header.contains("; cosine schedule over 2 epochs (epochs 1–1 followed it over 1: the rest follows it over 2, so this run does not end where an uninterrupted 2-epoch run would)"),
        "{header}"
    );
}

#[test]
fn a_killed_save_is_cleaned_up_and_its_derived_files_repaired() {
    let (data, _runs, run) = lenet_run();
    // What a kill leaves: a temporary of a process that is gone, a metrics table that is behind.
    let stale = run.join(".training.png.tmp-4194305");
    std::fs::write(&stale, b"half a png").unwrap();
    let live = run.join(format!(".training.svg.tmp-{}", std::process::id()));
    std::fs::write(&live, b"being written").unwrap();
    std::fs::remove_file(run.join("metrics.csv")).unwrap();
    std::fs::remove_file(run.join("training.png")).unwrap();
    // Even when nothing is left to train, opening the run repairs it.
    fails_with(&["train", "--resume", path(&run), "--data-dir", path(data.path())], "already trained 1 of 1 epoch;");
    assert!(!stale.exists(), "the stale temporary was left");
    assert!(live.exists(), "a running process's temporary was removed");
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(run.join("training.png").is_file());
}

#[test]
fn an_epoch_line_on_the_screen_means_the_epoch_is_saved() {
    let data = synthetic_dir(64, 8);
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_deepcnn"))
        .args([
            "train",
            "--model",
            "lenet",
            "--data-dir",
            path(data.path()),
            "--epochs",
            "50",
            "--batch-size",
            "16",
            "--out",
            path(&run),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    lines.next().unwrap().unwrap(); // the header
    let first = lines.next().unwrap().unwrap();
    child.kill().unwrap(); // SIGKILL, at once
    child.wait().unwrap();
    assert!(first.starts_with("epoch 1,"), "{first}");
    let (_, record) = deepcnn::checkpoint::RunDir::open(&run).expect("the run is readable after the kill");
    assert!(record.epochs_done >= 1, "epoch 1 was printed but run.json has {} epochs", record.epochs_done);
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(csv.lines().count() > record.epochs_done, "metrics.csv is behind run.json: {csv}");
}

#[test]
fn each_cause_is_said_once_and_hints_name_the_right_flag() {
    let (data, runs, run) = lenet_run();
    let d = path(data.path());
    // A missing checkpoint file: the OS's reason once, not twice.
    std::fs::rename(run.join("model-epoch1.bpk"), runs.path().join("moved.bpk")).unwrap();
    let line = fails_with(&["eval", "--checkpoint", path(&run), "--data-dir", d], "model-epoch1.bpk");
    assert_eq!(line.matches("No such file or directory").count(), 1, "{line}");
    std::fs::rename(runs.path().join("moved.bpk"), run.join("model-epoch1.bpk")).unwrap();
    // A corrupt gzip file: flate2's reason once.
    let broken = synthetic_dir(8, 8);
    let labels = broken.path().join("t10k-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&labels).unwrap();
    std::fs::write(&labels, &bytes[..bytes.len() / 2]).unwrap();
    let line = fails_with(&["train", "--model", "lenet-bn", "--data-dir", path(broken.path())], "corrupt gzip data: ");
    let cause = line.rsplit("corrupt gzip data: ").next().unwrap().trim();
    assert_eq!(line.matches(cause).count(), 1, "{line}");
    // Random bytes named .gz are not a gzip file.
    std::fs::write(&labels, b"these are not compressed").unwrap();
    fails_with(
        &["train", "--model", "lenet-bn", "--data-dir", path(broken.path())],
        "t10k-labels-idx1-ubyte.gz: not a gzip file",
    );
    // summary and bench set the size with --input, train with --resize.
    fails_with(&["summary", "--model", "densenet", "--input", "20"], "(see --input)");
    fails_with(&["bench", "--model", "densenet", "--input", "20"], "(see --input)");
    fails_with(&["train", "--model", "densenet", "--resize", "20", "--data-dir", d], "(see --resize)");
    // --data-dir naming a file.
    let file = data.path().join("train-images-idx3-ubyte.gz");
    fails_with(&["train", "--model", "lenet-bn", "--data-dir", path(&file)], "is a file, not a directory");
    // One epoch is one epoch.
    let text = ok(&["eval", "--checkpoint", path(&run), "--data-dir", d]);
    assert!(text.starts_with("lenet-bn after 1 epoch ("), "{text}");
    // Precise BN says how many batches it really used.
    let text = ok(&["eval", "--checkpoint", path(&run), "--data-dir", d, "--precise-bn", "100000"]);
    assert!(
        text.lines().next().unwrap().ends_with("statistics from 2 training batches (all there are; 100000 asked)"),
        "{text}"
    );
    // Export writes what its name says, or refuses.
    fails_with(
        &["export", "--checkpoint", path(&run), "--out", path(&runs.path().join("x.pt"))],
        "x.pt: export writes .safetensors (PyTorch's state_dict) or .onnx files",
    );
    assert!(!runs.path().join("x.pt").exists());
}

#[test]
fn flag_errors_are_one_line_with_exit_code_2() {
    fails_with_code(&["train", "--model", "lenet-bn", "--batch-size", "0"], 2, "--batch-size");
    fails_with_code(&["train"], 2, "--model");
    fails_with_code(&["train", "--model", "lenet-bn", "--no-such-flag"], 2, "--no-such-flag");
    fails_with_code(&["frobnicate"], 2, "frobnicate");
    assert!(deepcnn(&["--help"]).status.success());
}

#[test]
fn checks_that_need_the_data_come_before_the_first_line() {
    let tiny = idx_dir_of_size(3, 8, 4);
    let d = path(tiny.path());
    // Augmentation works on the images as stored: 3×3 here, whatever --resize says.
    let out = deepcnn(&[
        "train",
        "--model",
        "resnet18",
        "--data-dir",
        d,
        "--resize",
        "64",
        "--crop-padding",
        "2",
        "--epochs",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("crop padding 2 is too large for 3×3 images"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "a run was announced: {}", stdout(&out));
    let empty = idx_dir_of_size(28, 0, 4);
    let out = deepcnn(&["train", "--model", "lenet", "--data-dir", path(empty.path())]);
    assert!(
        stderr(&out).starts_with("error: the training set is empty") && stdout(&out).is_empty(),
        "{}",
        stderr(&out)
    );
    let no_test = idx_dir_of_size(28, 8, 0);
    fails_with(&["train", "--model", "lenet", "--data-dir", path(no_test.path())], "the test set is empty");
}

#[test]
fn empty_or_partial_data_are_never_scored_as_zero() {
    let (data, _runs, run) = lenet_run();
    let d = path(data.path());
    // Synthetic data has two classes: the other eight have no accuracy, rather than 0.
    let text = ok(&["eval", "--checkpoint", path(&run), "--data-dir", d]);
    assert!(text.lines().any(|l| l.trim() == "Ankle boot     n/a  (0 images)"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["eval", "--checkpoint", path(&run), "--data-dir", d, "--json"])).unwrap();
    assert!(json["per_class"][9]["accuracy"].is_null() && json["per_class"][0]["accuracy"].is_number(), "{json}");
    let no_test = idx_dir_of_size(28, 8, 0);
    fails_with(&["eval", "--checkpoint", path(&run), "--data-dir", path(no_test.path())], "the test set is empty");
    let no_train = idx_dir_of_size(28, 0, 8);
    fails_with(
        &["eval", "--checkpoint", path(&run), "--data-dir", path(no_train.path()), "--precise-bn", "3"],
        "precise BN needs training batches",
    );
    // Precise BN at evaluation draws from the images the run trained on (its --limit).
    edit_run_json(&run, |j| j["config"]["limit"] = 20.into());
    let text = ok(&["eval", "--checkpoint", path(&run), "--data-dir", d, "--precise-bn", "5"]);
    assert!(text.lines().next().unwrap().ends_with("from 1 training batch (all there are; 5 asked)"), "{text}");
}

#[test]
fn a_run_that_diverges_in_its_last_step_is_not_saved_as_trained() {
    let data = synthetic_dir(16, 8);
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("run");
    // One step: the loss before it is finite, the weights after it are not usable.
    let args = [
        "train",
        "--model",
        "lenet-bn",
        "--data-dir",
        path(data.path()),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--lr",
        "3e38",
        "--out",
        path(&run),
    ];
    let line = fails_with(&args, "stopping");
    assert!(line.contains("not finite") || line.contains("weights became"), "{line}");
    assert!(line.contains("no checkpoint was written to"), "{line}");
    assert!(!run.join("run.json").exists());
    fails_with(
        &["train", "--model", "lenet-bn", "--lr", "1e308"],
        "the learning rate 1e308 is not a number f32 can hold",
    );
}

#[test]
fn no_files_but_a_runs_own_are_replaced_without_force() {
    let (data, runs, run) = lenet_run();
    let d = path(data.path());
    let mine = runs.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("metrics.csv"), "MY DATA").unwrap();
    fails_with(
        &["train", "--model", "lenet", "--data-dir", d, "--epochs", "1", "--out", path(&mine)],
        "holds files but no deepcnn run",
    );
    let torch = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interop/lenet-bn.pt");
    fails_with(
        &["import", "--model", "lenet-bn", path(&torch), "--out", path(&mine)],
        "holds files but no deepcnn run",
    );
    assert_eq!(std::fs::read_to_string(mine.join("metrics.csv")).unwrap(), "MY DATA");
    // A chart of one's own naming is not replaced without --force either.
    let chart = runs.path().join("chart");
    std::fs::write(chart.with_extension("png"), "MY PICTURE").unwrap();
    fails_with(&["plot", path(&run), "--out", path(&chart)], "chart.png exists; pass --force");
    assert_eq!(std::fs::read_to_string(chart.with_extension("png")).unwrap(), "MY PICTURE");
    ok(&["plot", path(&run), "--out", path(&chart), "--force"]);
    // A first epoch killed before its run.json left the run's own files: a rerun may use them.
    let killed = runs.path().join("killed");
    std::fs::create_dir(&killed).unwrap();
    for file in ["model-epoch1.bpk", "optimizer-epoch1.bpk", "metrics.csv"] {
        std::fs::write(killed.join(file), "half written").unwrap();
    }
    ok(&["train", "--model", "lenet", "--data-dir", d, "--epochs", "1", "--out", path(&killed)]);
    // A replacement at the epoch the old run is at writes beside the old run's files, never over
    // the ones its run.json names (a kill before the commit would leave them mixed).
    let before: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(before["model_file"], "model-epoch1.bpk");
    ok(&["train", "--model", "lenet", "--data-dir", d, "--epochs", "1", "--out", path(&run), "--force"]);
    let after: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(
        (&after["model_file"], &after["optimizer_file"]),
        (&"model-epoch1.1.bpk".into(), &"optimizer-epoch1.1.bpk".into())
    );
    assert!(!run.join("model-epoch1.bpk").exists(), "the replaced run's checkpoint is removed after the commit");
    ok(&["eval", "--checkpoint", path(&run), "--data-dir", d]);
    // An import that replaces a trained run takes its metrics and chart with it.
    ok(&["import", "--model", "lenet-bn", path(&torch), "--out", path(&run), "--force"]);
    assert!(!run.join("metrics.csv").exists() && !run.join("training.png").exists());
}

#[test]
fn a_reader_that_goes_away_ends_training_quietly() {
    let data = synthetic_dir(64, 8);
    let mut child = Command::new(env!("CARGO_BIN_EXE_deepcnn"))
        .args(["train", "--model", "lenet", "--data-dir", path(data.path()), "--epochs", "50", "--batch-size", "16"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    lines.next().unwrap().unwrap();
    drop(lines); // `deepcnn train | head -1`
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{:?}: {}", out.status, stderr(&out));
}

#[test]
fn bf16_is_refused_where_it_cannot_run_fast() {
    fails_with(
        &["bench", "--model", "lenet-bn", "--precision", "bf16", "--device", "vulkan"],
        "--precision bf16 is for the CPU",
    );
    // oneDNN as on an AVX2-only CPU: no bf16 kernels, only its slow reference code or none.
    let out = Command::new(env!("CARGO_BIN_EXE_deepcnn"))
        .args(["bench", "--model", "lenet-bn", "--precision", "bf16", "--steps", "1"])
        .env("DNNL_MAX_CPU_ISA", "AVX2")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: this CPU has no bf16 convolution kernels in oneDNN")
            && err.contains("DNNL_MAX_CPU_ISA=AVX2"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // Where the CPU has them, a bf16 run says so in its first line.
    let data = synthetic_dir(32, 8);
    let out = deepcnn(&[
        "train",
        "--model",
        "lenet-bn",
        "--data-dir",
        path(data.path()),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--precision",
        "bf16",
    ]);
    if stderr(&out).contains("no bf16 convolution kernels") {
        eprintln!("skipped: this CPU has no bf16 convolution kernels");
        return;
    }
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).lines().next().unwrap().ends_with("; convolutions in bf16"), "{}", stdout(&out));
}

#[test]
fn no_command_says_a_command_is_needed() {
    fails_with_code(&[], 2, "a command is required: train, eval, predict");
}

#[test]
fn predict_reports_every_image_it_can_and_fails_for_the_rest() {
    let (_data, runs, run) = lenet_run();
    let good = runs.path().join("good.png");
    image::GrayImage::from_pixel(30, 30, image::Luma([200])).save(&good).unwrap();
    let bad = runs.path().join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let out = deepcnn(&["predict", "--checkpoint", path(&run), path(&good), path(&bad), path(&good)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().filter(|l| l.starts_with(&format!("{}: ", good.display()))).count(), 2, "{text}");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line for the one bad file: {err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains("bad.png: not a readable PNG or JPEG"), "{err}");
    // Two bad files, two lines, each naming its file; a single bad file, one line.
    let missing = runs.path().join("missing.png");
    let out = deepcnn(&["predict", "--checkpoint", path(&run), path(&bad), path(&good), path(&missing)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.lines().count() == 2 && err.contains("bad.png") && err.contains("missing.png"), "{err}");
    fails_with(&["predict", "--checkpoint", path(&run), path(&missing)], "missing.png");
}
