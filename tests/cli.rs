//! The `deepcnn` binary as a user meets it: bad flags and bad data give one clear line on
//! stderr and a non-zero exit, never a panic; good input trains and prints the book's lines.

mod common;

use std::path::Path;
use std::process::Command;

use common::{deepcnn, ok, path, stderr, stdout, synthetic_dir};

/// Fails unless the command failed cleanly with `needle` in its error output.
#[track_caller]
fn assert_fails_with(args: &[&str], needle: &str) {
    let out = deepcnn(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(err.contains(needle), "{args:?}: expected {needle:?} in: {err}");
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
    assert_fails_with(&["train", "--model", "lenet-bn", "--data-dir", d, "--precise-bn", "-1"], "--precise-bn");
    assert_fails_with(
        &["train", "--model", "lenet", "--data-dir", d, "--precise-bn", "3"],
        "lenet has no batch normalization",
    );
    assert_fails_with(&["train", "--model", "resnet50", "--data-dir", d], "unknown model 'resnet50'");
    assert_fails_with(&["train", "--data-dir", d], "--model");
    assert_fails_with(
        &["train", "--model", "densenet", "--resize", "28", "--data-dir", d],
        "densenet cannot take 28×28",
    );
    assert_fails_with(&["train", "--model", "lenet", "--resize", "96", "--data-dir", d], "exactly 28×28");
    assert_fails_with(&["summary", "--model", "densenet", "--input", "20"], "at least 29×29");
    assert_fails_with(&["train", "--model", "lenet-bn", "--data-dir", d, "--device", "tpu"], "--device");
    if !cfg!(feature = "vulkan") {
        for command in [&["train", "--model", "lenet-bn", "--data-dir", d][..], &["bench", "--model", "lenet-bn"]] {
            assert_fails_with(&[command, &["--device", "vulkan"]].concat(), "built without Vulkan support");
        }
    }
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
    assert_fails_with(
        &["train", "--model", "lenet-bn", "--data-dir", path(dir.path())],
        "t10k-labels-idx1-ubyte.gz: corrupt gzip",
    );
}

#[test]
fn trains_and_prints_one_line_per_epoch() {
    let dir = synthetic_dir(300, 40);
    let out = deepcnn(&[
        "train",
        "--model",
        "lenet-bn-scratch",
        "--data-dir",
        path(dir.path()),
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--limit",
        "96",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("training lenet-bn-scratch on 96 images (28×28), testing on 40"), "{text}");
    // The default asks for 10 batches; an epoch of 96 images in batches of 32 has 3.
    assert!(lines[0].ends_with("seed 0; precise BN from 3 batches"), "precise BN is the default: {text}");
    assert_eq!(lines.len(), 3, "{text}");
    for (i, line) in lines[1..].iter().enumerate() {
        let prefix = format!("epoch {}, loss ", i + 1);
        assert!(line.starts_with(&prefix) && line.contains(", train acc ") && line.contains(", test acc "), "{line}");
        assert!(line.ends_with(" examples/sec"), "{line}");
    }
    // The header names precise BN when it is on, and only then.
    let header = |model: &str, precise_bn: &[&str]| {
        let train = [
            "train",
            "--model",
            model,
            "--data-dir",
            path(dir.path()),
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--limit",
            "64",
        ];
        ok(&[&train[..], precise_bn].concat()).lines().next().unwrap().to_string()
    };
    let precise = header("lenet-bn", &["--precise-bn", "2"]);
    assert!(precise.ends_with("seed 0; precise BN from 2 batches"), "{precise}");
    let book = header("lenet-bn", &["--precise-bn", "0"]);
    assert!(book.ends_with("seed 0"), "{book}");
    let plain = header("lenet", &[]);
    assert!(plain.ends_with("seed 0"), "lenet has nothing for precise BN: {plain}");
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

/// A run directory of `epochs` epochs of lenet-bn on synthetic data, and the data.
fn trained_run(epochs: &str) -> (tempfile::TempDir, tempfile::TempDir) {
    let data = synthetic_dir(96, 40);
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("run");
    ok(&[
        "train",
        "--model",
        "lenet-bn",
        "--data-dir",
        path(data.path()),
        "--epochs",
        epochs,
        "--batch-size",
        "32",
        "--out",
        path(&run),
    ]);
    (data, runs)
}

#[test]
fn a_run_directory_holds_checkpoint_metrics_and_charts_and_resumes() {
    let (data, runs) = trained_run("2");
    let run = runs.path().join("run");
    for file in ["run.json", "model-epoch2.bpk", "optimizer-epoch2.bpk", "metrics.csv", "training.svg", "training.png"]
    {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    let text = ok(&["train", "--resume", path(&run), "--epochs", "3", "--data-dir", path(data.path())]);
    assert!(text.lines().next().unwrap().ends_with("; resuming after epoch 2"), "{text}");
    assert_eq!(text.lines().skip(1).map(|l| &l[..8]).collect::<Vec<_>>(), ["epoch 3,"], "{text}");
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.starts_with("epoch,loss,train_acc,test_acc,seconds,examples_per_sec\n1,"), "{csv}");

    // Resuming is done with the run's own settings; only the total number of epochs changes.
    assert_fails_with(&["train", "--resume", path(&run), "--lr", "0.1"], "--lr");
    assert_fails_with(
        &["train", "--resume", path(&run), "--epochs", "3", "--data-dir", path(data.path())],
        "already trained 3 of 3 epochs",
    );
}

#[test]
fn runs_are_never_overwritten_by_accident() {
    let (data, runs) = trained_run("1");
    let run = runs.path().join("run");
    let before = std::fs::read(run.join("run.json")).unwrap();
    let d = path(data.path());
    assert_fails_with(
        &["train", "--model", "lenet", "--data-dir", d, "--out", path(&run)],
        "already holds a run (lenet-bn, 1 epoch done)",
    );
    // A replacement that fails (its loss overflows in epoch 1) leaves the old run as it was,
    // and says so (the epoch it keeps is the old run's, not one of the failed run).
    assert_fails_with(
        &[
            "train",
            "--model",
            "lenet-bn",
            "--data-dir",
            d,
            "--out",
            path(&run),
            "--force",
            "--lr",
            "1e38",
            "--batch-size",
            "16",
        ],
        "still holds the run that was there before, unchanged",
    );
    assert_eq!(std::fs::read(run.join("run.json")).unwrap(), before);
    assert!(run.join("model-epoch1.bpk").is_file());
    // Exports refuse to replace a file too.
    let file = runs.path().join("weights.safetensors");
    std::fs::write(&file, b"precious").unwrap();
    assert_fails_with(&["export", "--checkpoint", path(&run), "--out", path(&file)], "exists; pass --force");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    assert_fails_with(&["train", "--resume", path(runs.path())], "holds no deepcnn run");
    assert_fails_with(&["eval", "--checkpoint", path(data.path())], "holds no deepcnn run");
}

#[test]
fn eval_reports_per_class_accuracy_and_confusion_as_text_and_json() {
    let (data, runs) = trained_run("1");
    let run = runs.path().join("run");
    let text = ok(&["eval", "--checkpoint", path(&run), "--data-dir", path(data.path())]);
    assert!(text.contains("test loss ") && text.contains("of 40 images)"), "{text}");
    assert!(
        text.contains("per-class accuracy:") && text.contains("T-shirt/top") && text.contains("Ankle boot"),
        "{text}"
    );
    assert!(text.contains("confusion matrix"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["eval", "--checkpoint", path(&run), "--data-dir", path(data.path()), "--json"]))
            .unwrap();
    let confusion = json["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), 10);
    let total: u64 = confusion.iter().flat_map(|r| r.as_array().unwrap()).map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 40);
    assert!(json["accuracy"].as_f64().unwrap() <= 1.0 && json["loss"].as_f64().unwrap() > 0.0);
    assert_eq!(json["per_class"][9]["class"], "Ankle boot");

    // Precise BN at evaluation: other statistics, so another loss; the run itself is left alone.
    let model_file = run.join("model-epoch1.bpk");
    let before = std::fs::read(&model_file).unwrap();
    let precise = ok(&["eval", "--checkpoint", path(&run), "--data-dir", path(data.path()), "--precise-bn", "2"]);
    assert!(
        precise.lines().next().unwrap().ends_with("; batch normalization statistics from 2 training batches"),
        "{precise}"
    );
    let loss_line = |report: &str| report.lines().nth(1).unwrap().to_string();
    assert!(loss_line(&precise).starts_with("test loss "), "{precise}");
    assert_ne!(loss_line(&precise), loss_line(&text));
    assert_eq!(std::fs::read(&model_file).unwrap(), before);
    assert_fails_with(
        &["eval", "--checkpoint", path(&run), "--data-dir", path(data.path()), "--precise-bn", "0"],
        "--precise-bn",
    );
    let plain = runs.path().join("plain");
    ok(&[
        "train",
        "--model",
        "lenet",
        "--data-dir",
        path(data.path()),
        "--epochs",
        "1",
        "--limit",
        "32",
        "--out",
        path(&plain),
    ]);
    let refused = ["eval", "--checkpoint", path(&plain), "--data-dir", path(data.path()), "--precise-bn", "2"];
    assert_fails_with(&refused, "lenet has no batch normalization");

    // A reader that goes away (`deepcnn eval --json | head`) is not an error, in either format.
    for format in [&[][..], &["--json"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_deepcnn"))
            .args(["eval", "--checkpoint", path(&run), "--data-dir", path(data.path())])
            .args(format)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{format:?}: {}", stderr(&out));
    }
}

/// Two epochs of LeNet-BN on `data` with `extra` flags, saved as run `name` in `runs`: the
/// header, the first epoch's loss and accuracies (not its times), and run.json.
fn first_epoch(data: &Path, runs: &Path, name: &str, extra: &[&str]) -> (String, String, String) {
    let run = &runs.join(name);
    let base = ["train", "--model", "lenet-bn", "--data-dir", path(data), "--epochs", "2", "--batch-size", "32"];
    let text = ok(&[&base[..], extra, &["--out", path(run)]].concat());
    let record = std::fs::read_to_string(run.join("run.json")).unwrap();
    // "epoch 1, loss 0.6931, train acc …": the loss and accuracies, not the times.
    let epoch1 = text.lines().find(|l| l.starts_with("epoch 1,")).unwrap();
    let epoch1 = epoch1.split(", ").skip(1).take(3).collect::<Vec<_>>().join(", ");
    (text.lines().next().unwrap().to_string(), epoch1, record)
}

/// The recipe flags reach the training loop: a warm-up or label smoothing changes the first
/// epoch's loss, and each is recorded in run.json and named in the header.
#[test]
fn warmup_and_label_smoothing_change_the_training() {
    let data = synthetic_dir(96, 16);
    let runs = tempfile::tempdir().unwrap();
    let (_, plain, _) = first_epoch(data.path(), runs.path(), "plain", &[]);
    let (header, warm, record) = first_epoch(data.path(), runs.path(), "warm", &["--warmup-epochs", "1"]);
    assert!(header.contains("warm-up over 1 epoch") && record.contains("\"warmup_epochs\": 1"), "{header}");
    assert_ne!(plain, warm);
    let (header, smooth, record) = first_epoch(data.path(), runs.path(), "smooth", &["--label-smoothing", "0.2"]);
    assert!(header.contains("label smoothing 0.2") && record.contains("\"label_smoothing\": 0.2"), "{header}");
    assert_ne!(plain, smooth);
    assert_fails_with(
        &["train", "--model", "lenet-bn", "--epochs", "2", "--warmup-epochs", "3"],
        "longer than the run",
    );
}

/// SGD with Nesterov momentum, gradient-norm clipping, mixup with CutMix and random erasing
/// each change the first epoch and are named in the header and run.json; an SGD run resumes
/// with its momentum; momentum without SGD is refused.
#[test]
fn sgd_clipping_and_erasing_change_the_training() {
    let data = synthetic_dir(96, 16);
    let runs = tempfile::tempdir().unwrap();
    let (_, plain, _) = first_epoch(data.path(), runs.path(), "plain", &[]);
    let (header, sgd, record) =
        first_epoch(data.path(), runs.path(), "sgd", &["--optimizer", "sgd", "--nesterov", "--lr", "0.05"]);
    assert!(header.contains("; SGD, momentum 0.9 (Nesterov)"), "{header}");
    assert!(record.contains("\"optimizer\": \"sgd\"") && record.contains("\"nesterov\": true"), "{record}");
    assert_ne!(plain, sgd);
    let (header, clipped, record) = first_epoch(data.path(), runs.path(), "clipped", &["--clip-grad", "0.01"]);
    assert!(header.contains("gradient norm clipped at 0.01") && record.contains("\"clip_grad\": 0.01"), "{header}");
    assert_ne!(plain, clipped);
    let (header, mixed, record) = first_epoch(data.path(), runs.path(), "mixed", &["--mixup", "0.4", "--cutmix", "1"]);
    assert!(header.contains("; mixup α 0.4; CutMix α 1") && record.contains("\"cutmix\": 1.0"), "{header}");
    assert_ne!(plain, mixed);
    let (header, erased, record) = first_epoch(data.path(), runs.path(), "erased", &["--random-erasing", "0.5"]);
    assert!(header.contains("random erasing with p 0.5") && record.contains("\"erasing\": 0.5"), "{header}");
    assert_ne!(plain, erased);
    let (header, cropped, _) = first_epoch(data.path(), runs.path(), "cropped", &["--crop-padding", "2", "--flip"]);
    assert!(header.contains("; random crop, padded by 2 pixels; random horizontal flip"), "{header}");
    assert_ne!(plain, cropped);
    let resumed = ok(&["train", "--resume", path(&runs.path().join("sgd")), "--epochs", "3"]);
    assert!(resumed.lines().any(|l| l.starts_with("epoch 3,")), "{resumed}");
    assert_fails_with(&["train", "--model", "lenet-bn", "--momentum", "0.5"], "pass --optimizer sgd");
}

/// `--ema`: the epoch lines, metrics.csv and run.json carry the average's test accuracy, the
/// run keeps its weights beside the trained ones, and `eval --ema` of the run finds the last
/// epoch's accuracy again (and refuses a run without an average); the average differs from
/// the trained weights.
#[test]
fn a_moving_average_of_the_weights_is_tested_saved_and_evaluated() {
    let data = synthetic_dir(96, 40);
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("ema");
    let base = ["train", "--model", "lenet-bn", "--data-dir", path(data.path()), "--epochs", "2", "--batch-size", "16"];
    let text = ok(&[&base[..], &["--ema", "0.9", "--lr", "0.01", "--out", path(&run)]].concat());
    assert!(text.lines().next().unwrap().contains("; EMA of the weights, decay 0.9"), "{text}");
    let last = text.lines().rfind(|l| l.starts_with("epoch ")).unwrap();
    let ema_acc = last.split(", ").find_map(|p| p.strip_prefix("EMA test acc ")).unwrap();
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(csv.lines().next().unwrap().ends_with(",ema_test_acc"), "{csv}");
    assert!(run.join("ema-epoch2.bpk").exists());
    let eval = |extra: &[&str]| {
        let args =
            [&["eval", "--checkpoint", path(&run), "--data-dir", path(data.path()), "--json"][..], extra].concat();
        let json: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        (json["accuracy"].as_f64().unwrap(), json["loss"].as_f64().unwrap())
    };
    let (averaged, averaged_loss) = eval(&["--ema"]);
    assert_eq!(format!("{averaged:.3}"), ema_acc, "{last}");
    assert_ne!(eval(&[]).1, averaged_loss, "the average is the trained weights");
    let plain = runs.path().join("plain");
    ok(&[&base[..], &["--out", path(&plain)]].concat());
    assert_fails_with(&["eval", "--checkpoint", path(&plain), "--ema"], "keeps no moving average");
    assert_fails_with(&["train", "--model", "lenet-bn", "--ema", "1"], "EMA decay");
}

/// `--val-split`: trained on the rest, validated after every epoch; `--early-stop` ends the
/// run once an epoch brings no better validation accuracy; the best epoch's network is kept
/// and `eval --best` finds its test accuracy again.
#[test]
fn a_validation_split_selects_the_best_epoch_and_stops_early() {
    let data = synthetic_dir(96, 40);
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("val");
    let base = ["train", "--model", "lenet-bn", "--data-dir", path(data.path()), "--batch-size", "16"];
    let text =
        ok(&[&base[..], &["--epochs", "8", "--val-split", "32", "--early-stop", "1", "--out", path(&run)]].concat());
    let header = text.lines().next().unwrap();
    assert!(header.starts_with("training lenet-bn on 64 images"), "{header}");
    assert!(header.contains("validating on the last 32 training images, stopping after 1 epoch"), "{header}");
    let epochs: Vec<&str> = text.lines().filter(|l| l.starts_with("epoch ")).collect();
    assert!(epochs.iter().all(|l| l.contains(", val acc ")), "{text}");
    let last = text.lines().last().unwrap();
    let best: usize = last
        .strip_prefix("stopped early; best epoch by validation accuracy: ")
        .unwrap_or_else(|| panic!("{text}"))
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(epochs.len() < 8 && best == epochs.len() - 1, "{text}");
    assert!(run.join(format!("best-epoch{best}.bpk")).exists());
    let test_acc = epochs[best - 1].split(", ").find_map(|p| p.strip_prefix("test acc ")).unwrap();
    let eval = ok(&["eval", "--checkpoint", path(&run), "--data-dir", path(data.path()), "--best", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&eval).unwrap();
    assert_eq!(format!("{:.3}", json["accuracy"].as_f64().unwrap()), test_acc);
    assert_fails_with(&["eval", "--checkpoint", path(&run), "--best", "--ema"], "cannot be used with");
    let plain = runs.path().join("plain");
    ok(&[&base[..], &["--epochs", "1", "--out", path(&plain)]].concat());
    assert_fails_with(&["eval", "--checkpoint", path(&plain), "--best"], "keeps no best epoch");
    assert_fails_with(&[&base[..], &["--val-split", "96"]].concat(), "leaves none of the 96 training examples");
    assert_fails_with(&["train", "--model", "lenet-bn", "--early-stop", "2"], "pass --val-split");
}

/// A reader that goes away (`deepcnn train | head -1`) stops the run quietly: the epoch line
/// that cannot be printed is the observer's error, which must reach `main` as the closed
/// pipe it is.
#[test]
fn training_into_a_closed_pipe_stops_quietly() {
    let data = synthetic_dir(64, 16);
    let runs = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_deepcnn"))
        .args(["train", "--model", "lenet", "--data-dir", path(data.path()), "--epochs", "3", "--batch-size", "32"])
        .args(["--out", path(&runs.path().join("run"))])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The header is printed before training starts; the reader leaves after it.
    let mut header = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut header).unwrap();
    assert!(header.starts_with("training lenet"), "{header}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{:?}: {}", out.status, stderr(&out));
}

#[test]
fn predict_reads_images_and_idx_files_and_refuses_the_rest() {
    let (data, runs) = trained_run("1");
    let run = runs.path().join("run");
    let png = runs.path().join("shirt.png");
    image::RgbImage::from_pixel(64, 48, image::Rgb([200, 30, 30])).save(&png).unwrap();
    let idx = data.path().join("t10k-images-idx3-ubyte.gz");
    let text =
        ok(&["predict", "--checkpoint", path(&run), path(&png), "--idx", path(&idx), "--index", "3", "--top-k", "2"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(&format!("{}: ", png.display())) && lines[1].contains("t10k-images-idx3-ubyte.gz[3]: "),
        "{text}"
    );
    assert_eq!(lines[0].matches(", ").count(), 1, "two classes: {text}");
    let not_image = runs.path().join("notes.txt");
    std::fs::write(&not_image, "hello").unwrap();
    assert_fails_with(
        &["predict", "--checkpoint", path(&run), path(&not_image)],
        "notes.txt: not a readable PNG or JPEG",
    );
    assert_fails_with(
        &["predict", "--checkpoint", path(&run), "--idx", path(&idx), "--index", "40"],
        "out of range (the file has 40 images)",
    );
    assert_fails_with(&["predict", "--checkpoint", path(&run)], "give image files");
}

#[test]
fn plot_overlays_runs_and_import_export_round_trip() {
    let (data, runs) = trained_run("1");
    let run = runs.path().join("run");
    let chart = runs.path().join("both");
    ok(&["plot", path(&run), path(&run), "--out", path(&chart)]);
    let svg = std::fs::read_to_string(chart.with_extension("svg")).unwrap();
    assert!(
        svg.contains("run and run") && svg.contains("test accuracy") && svg.matches(">\nrun\n<").count() == 2,
        "{svg}"
    );
    assert!(image::open(chart.with_extension("png")).is_ok());
    assert_fails_with(&["plot", path(&run), path(&run)], "--out");

    let weights = runs.path().join("w.safetensors");
    ok(&["export", "--checkpoint", path(&run), "--out", path(&weights)]);
    let imported = runs.path().join("imported");
    ok(&["import", "--model", "lenet-bn", path(&weights), "--out", path(&imported)]);
    let d = path(data.path());
    let eval = |dir: &Path| ok(&["eval", "--checkpoint", path(dir), "--data-dir", d, "--json"]);
    let (a, b): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&eval(&run)).unwrap(), serde_json::from_str(&eval(&imported)).unwrap());
    assert_eq!(a["confusion"], b["confusion"]);
    assert_fails_with(
        &["import", "--model", "lenet-bn-scratch", path(&weights), "--out", path(&runs.path().join("x"))],
        "holds a lenet-bn network (its metadata says so), not a lenet-bn-scratch",
    );
    assert!(!runs.path().join("x").exists(), "a failed import creates nothing");
    assert_fails_with(
        &["import", "--model", "lenet-bn", path(&weights), "--out", path(&imported)],
        "already holds a run",
    );
}

/// `bench --peak` times oneDNN's matrix product: some GFLOP/s in fp32, and bf16 only where
/// oneDNN has bf16 kernels (then faster than a tenth of fp32: not its reference code).
#[test]
fn bench_peak_times_the_machines_matrix_product() {
    let v: serde_json::Value = serde_json::from_str(ok(&["bench", "--peak", "--json"]).trim()).expect("JSON");
    let fp32 = v["fp32_gflops"].as_f64().expect("fp32 GFLOP/s");
    assert!(fp32 > 1.0, "{v}");
    if let Some(bf16) = v["bf16_gflops"].as_f64() {
        assert!(bf16 > fp32 / 10.0, "{v}");
    }
}

#[test]
fn bench_times_the_training_step_and_profiles_it() {
    let out =
        deepcnn(&["bench", "--model", "lenet-bn", "--batch-size", "8", "--steps", "2", "--warmup", "1", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json = stdout(&out);
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object");
    assert_eq!(v["step_seconds"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["warmup_seconds"].as_array().map(Vec::len), Some(1));
    // Warm-up steps are reported as they end, on stderr, which keeps stdout one JSON object.
    assert!(stderr(&out).starts_with("warm-up step 1 of 1: "), "{}", stderr(&out));
    assert!(v["images_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{json}");
    // LeNet-BN's convolutions per 28×28 image: conv1 (1→6, 5×5, 24×24 out) forward and ∂W,
    // conv2 (6→16, 5×5, 8×8 out) forward, ∂X and ∂W; 2 operations per tap.
    let expected = (2.0 * 6.0 * 576.0 * 25.0 * 2.0 + 2.0 * 16.0 * 64.0 * 150.0 * 3.0) / 1e9;
    let counted = v["conv_gflop_per_image"].as_f64().unwrap_or(0.0);
    assert!((counted - expected).abs() < 1e-9, "{counted} GFLOP per image, expected {expected}");

    let text = ok(&["bench", "--model", "lenet-bn", "--batch-size", "8", "--steps", "2", "--profile"]);
    for line in [
        "images/s",
        "profile:",
        "conv2d forward",
        "conv2d backward",
        "batch norm forward",
        "batch norm backward",
        // LeNet-BN's sigmoid is computed in batch normalization's forward pass.
        "sigmoid backward",
        "max pool backward",
        "optimizer (Adam)",
    ] {
        assert!(text.contains(line), "no '{line}' in:\n{text}");
    }
    // With every kernel switched off, none of them is timed.
    let plain = ok(&[
        "bench",
        "--model",
        "lenet-bn",
        "--batch-size",
        "8",
        "--steps",
        "2",
        "--profile",
        "--burn-ops",
        "conv,batch-norm,sigmoid,max-pool",
    ]);
    assert!(
        !plain.contains("conv2d forward") && !plain.contains("max pool forward") && plain.contains("burn's own"),
        "{plain}"
    );

    assert_fails_with(&["bench", "--model", "lenet-bn", "--burn-ops", "matmul"], "matmul");
    assert_fails_with(&["bench", "--peak", "--model", "lenet-bn"], "cannot be used with");
    assert_fails_with(&["bench", "--model", "densenet", "--input", "28"], "densenet cannot take 28×28");
}
