//! What the tests of the binary share: running it, reading its output, and small data.

use std::path::Path;
use std::process::{Command, Output};

use deepcnn::data::synthetic;

/// Runs the `deepcnn` binary with `args`.
pub fn deepcnn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deepcnn")).args(args).output().expect("the binary runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The standard output of a command that must succeed.
#[track_caller]
pub fn ok(args: &[&str]) -> String {
    let out = deepcnn(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// A data directory of two-class synthetic Fashion-MNIST files.
pub fn synthetic_dir(n_train: usize, n_test: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    synthetic::write_dir(dir.path(), n_train, n_test, 3).unwrap();
    dir
}

pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}
