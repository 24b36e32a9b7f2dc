//! The `deepcnn` binary as a user meets it: bad flags and bad data give one clear line on
//! stderr and a non-zero exit, never a panic; good input trains and prints the book's lines.

use std::path::Path;
use std::process::{Command, Output};

use deepcnn::data::synthetic;

fn deepcnn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deepcnn")).args(args).output().expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails unless the command failed cleanly with `needle` in its error output.
#[track_caller]
fn assert_fails_with(args: &[&str], needle: &str) {
    let out = deepcnn(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(err.contains(needle), "{args:?}: expected {needle:?} in: {err}");
}

fn synthetic_dir(n_train: usize, n_test: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    synthetic::write_dir(dir.path(), n_train, n_test, 3).unwrap();
    dir
}

fn path(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

#[test]
fn nonsense_flag_values_are_refused() {
    let dir = synthetic_dir(8, 8);
    let d = path(dir.path());
    assert_fails_with(&["train", "--model", "lenet-bn", "--data-dir", d, "--batch-size", "0"], "--batch-size");
    assert_fails_with(&["train", "--model", "lenet-bn", "--data-dir", d, "--batch-size", "-3"], "--batch-size");
    assert_fails_with(&["train", "--model", "lenet-bn", "--data-dir", d, "--epochs", "0"], "at least 1");
    assert_fails_with(&["train", "--model", "lenet-bn", "--data-dir", d, "--lr", "-0.1"], "not a positive number");
    assert_fails_with(&["train", "--model", "lenet-bn", "--data-dir", d, "--lr", "nan"], "not a positive number");
    assert_fails_with(&["train", "--model", "resnet50", "--data-dir", d], "unknown model 'resnet50'");
    assert_fails_with(&["train", "--data-dir", d], "--model");
    assert_fails_with(&["train", "--model", "densenet", "--resize", "28", "--data-dir", d], "densenet cannot take 28×28");
    assert_fails_with(&["train", "--model", "lenet", "--resize", "96", "--data-dir", d], "exactly 28×28");
    assert_fails_with(&["summary", "--model", "densenet", "--input", "20"], "at least 29×29");
}

#[test]
fn missing_data_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    assert_fails_with(&["train", "--model", "lenet-bn", "--data-dir", path(&missing)], "does not exist");
    // An existing directory without the files names the file it looked for.
    assert_fails_with(&["train", "--model", "lenet-bn", "--data-dir", path(dir.path())], "train-images-idx3-ubyte");
}

#[test]
fn corrupt_data_is_reported_with_the_file_name() {
    let dir = synthetic_dir(8, 8);
    let labels = dir.path().join("t10k-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&labels).unwrap();
    std::fs::write(&labels, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails_with(&["train", "--model", "lenet-bn", "--data-dir", path(dir.path())], "t10k-labels-idx1-ubyte.gz: corrupt gzip");
}

#[test]
fn trains_and_prints_one_line_per_epoch() {
    let dir = synthetic_dir(300, 40);
    let out = deepcnn(&[
        "train", "--model", "lenet-bn-scratch", "--data-dir", path(dir.path()), "--epochs", "2", "--batch-size", "32",
        "--limit", "96",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("training lenet-bn-scratch on 96 images (28×28), testing on 40"), "{text}");
    assert_eq!(lines.len(), 3, "{text}");
    for (i, line) in lines[1..].iter().enumerate() {
        let prefix = format!("epoch {}, loss ", i + 1);
        assert!(line.starts_with(&prefix) && line.contains(", train acc ") && line.contains(", test acc "), "{line}");
        assert!(line.ends_with(" examples/sec"), "{line}");
    }
}

#[test]
fn summary_prints_the_books_shapes() {
    let out = deepcnn(&["summary", "--model", "resnet18"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let row = text.lines().find(|l| l.starts_with("resnet_block4")).expect("a resnet_block4 row");
    assert!(row.contains("[1, 512, 7, 7]"), "{row}");
    assert!(text.contains("total trainable parameters: 11178378"), "{text}");
}
