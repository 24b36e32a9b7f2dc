//! Bad input as a user meets it, through the binary: every failure is one `error: ...` line and
//! exit code 1 (2 for flags that do not parse), never a panic (101), an abort (134), a
//! backtrace or a silently wrong answer; and what a killed run leaves behind is repaired.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use deepcnn::data::idx::{encode_images, encode_labels, gzip, IdxImages};
use deepcnn::data::synthetic;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn deepcnn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deepcnn")).args(args).output().expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = deepcnn(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

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

fn synthetic_dir(n_train: usize, n_test: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    synthetic::write_dir(dir.path(), n_train, n_test, 3).unwrap();
    dir
}

/// A 1-epoch lenet-bn run on synthetic data (the data directory, and the run's directory).
fn lenet_run() -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
    let data = synthetic_dir(64, 24);
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("run");
    ok(&["train", "--model", "lenet-bn", "--data-dir", path(data.path()), "--epochs", "1", "--batch-size", "32", "--out", path(&run), "--precise-bn", "1"]);
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
        fails_with(args, "run.json: settings that cannot be used: lenet-bn cannot take 32×32 images");
    }
    edit_run_json(&run, |j| {
        j["config"]["resize"] = serde_json::Value::Null;
        j["config"]["batch_size"] = 0.into();
    });
    for args in commands {
        fails_with(args, "run.json: settings that cannot be used: batch size must be at least 1");
    }
    edit_run_json(&run, |j| {
        j["config"]["batch_size"] = 32.into();
        j["model_file"] = "../../etc/passwd".into();
    });
    fails_with(commands[0], "which is not a file in the run directory");
}

#[test]
fn what_would_not_fit_in_memory_is_refused_before_it_is_allocated() {
    let data = synthetic_dir(8, 8);
    let d = path(data.path());
    let line = fails_with(&["train", "--model", "resnet18", "--resize", "10000", "--data-dir", d], "training resnet18 with batch 256 at 10000×10000 would need about");
    assert!(line.contains("TB of memory, and this machine has ") && line.contains("--batch-size or --resize"), "{line}");
    fails_with(&["bench", "--model", "resnet18", "--batch-size", "100000000"], "smaller --batch-size or --input");
    fails_with(&["bench", "--model", "densenet", "--input", "20000", "--batch-size", "1"], "would need about");
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
fn export_records_the_network_and_its_image_size_and_import_uses_them() {
    let data = synthetic_dir(32, 16);
    let d = path(data.path());
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("run");
    ok(&["train", "--model", "resnet18", "--resize", "32", "--data-dir", d, "--epochs", "1", "--batch-size", "16", "--out", path(&run)]);
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
    fails_with(&["import", "--model", "densenet", path(&weights), "--out", x], "holds a resnet18 network (its metadata says so), not a densenet");
    fails_with(&["import", path(&weights), "--out", x, "--resize", "96"], "was trained at 32×32 (its metadata says so)");
    // A plain PyTorch file says nothing: --model is needed.
    let torch = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interop/lenet-bn.pt");
    fails_with(&["import", path(&torch), "--out", x], "does not record which network it holds; pass --model");
    // Importing over a run: import has no --resume to suggest.
    let line = fails_with(&["import", path(&weights), "--out", path(&imported)], "already holds a run (resnet18, 0 epochs done); pass --force");
    assert!(!line.contains("--resume"), "{line}");
    assert!(!runs.path().join("x").exists(), "a failed import creates nothing");
}

/// A copy of the safetensors file at `from`, with `change` applied to its tensors.
fn rewrite_safetensors(from: &Path, to: &Path, change: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>)) {
    let bytes = std::fs::read(from).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec()))).collect();
    change(&mut tensors);
    let views: HashMap<String, TensorView> =
        tensors.iter().map(|(k, (dtype, shape, data))| (k.clone(), TensorView::new(*dtype, shape.clone(), data).unwrap())).collect();
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    std::fs::write(to, safetensors::serialize(views, metadata.metadata().clone()).unwrap()).unwrap();
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
        rewrite_safetensors(&weights, &file, |t| t.get_mut("4.weight").unwrap().2[..4].copy_from_slice(&bad.to_le_bytes()));
        fails_with(&["import", path(&file), "--out", x], &format!("`4.weight` holds {name}: a network's weights must be finite"));
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
        serde_json::from_str(&ok(&["eval", "--checkpoint", path(dir), "--data-dir", path(data.path()), "--json"])).unwrap()
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
        std::fs::write(dir.path().join(format!("{prefix}-images-idx3-ubyte.gz")), gzip(&encode_images(&images))).unwrap();
        std::fs::write(dir.path().join(format!("{prefix}-labels-idx1-ubyte.gz")), gzip(&encode_labels(&labels))).unwrap();
    }
    dir
}

#[test]
fn images_of_another_size_are_resized_and_every_command_says_so() {
    let data = idx_dir_of_size(32, 32, 8);
    let d = path(data.path());
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("run");
    let text = ok(&["train", "--model", "lenet", "--data-dir", d, "--epochs", "1", "--batch-size", "16", "--out", path(&run)]);
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
    let text = ok(&["train", "--model", "lenet", "--data-dir", d, "--epochs", "1", "--batch-size", "32", "--schedule", "cosine", "--out", path(&run)]);
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
        .args(["train", "--model", "lenet", "--data-dir", path(data.path()), "--epochs", "50", "--batch-size", "16", "--out", path(&run)])
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
    fails_with(&["train", "--model", "lenet-bn", "--data-dir", path(broken.path())], "t10k-labels-idx1-ubyte.gz: not a gzip file");
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
    assert!(text.lines().next().unwrap().ends_with("statistics from 2 training batches (all there are; 100000 asked)"), "{text}");
    // Export writes what its name says, or refuses.
    fails_with(&["export", "--checkpoint", path(&run), "--out", path(&runs.path().join("x.pt"))], "give --out a name ending in .safetensors");
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
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains("bad.png: not a readable PNG or JPEG"), "{err}");
    assert_eq!(lines[1], "error: 1 image of 3 could not be read", "{err}");
}
