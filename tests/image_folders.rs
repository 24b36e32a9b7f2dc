//! Training on image folders (`DIR/train/<class>/*.png`, `DIR/test/<class>/*`): the same images
//! as PNG folders train to the same numbers, step for step, as from IDX files; the run keeps the
//! folders' class names for eval, predict and export; colour images give a 3-channel network.

#[allow(dead_code)]
mod common;

use std::path::Path;

use common::{deepcnn, ok, path, stderr};
use deepcnn::data::synthetic::two_class_images;

/// Ten classes of 28×28 images (the synthetic two-class images, labelled i mod 10), sorted by
/// label: the order an image folder lists them in.
fn ten_class_split(n: usize, seed: u64) -> (Vec<Vec<u8>>, Vec<u8>) {
    let (images, _) = two_class_images(n, seed);
    let mut examples: Vec<(u8, Vec<u8>)> =
        images.pixels.chunks_exact(28 * 28).enumerate().map(|(i, px)| ((i % 10) as u8, px.to_vec())).collect();
    examples.sort_by_key(|(label, _)| *label);
    examples.into_iter().map(|(l, px)| (px, l)).unzip()
}

fn idx(dir: &Path, prefix: &str, images: &[Vec<u8>], labels: &[u8]) {
    let mut bytes = [0x0803u32, images.len() as u32, 28, 28].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<_>>();
    bytes.extend(images.iter().flatten());
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), bytes).unwrap();
    let mut bytes = [0x0801u32, labels.len() as u32].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<_>>();
    bytes.extend(labels);
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), bytes).unwrap();
}

/// Class folder names that sort in label order.
fn class_name(label: u8) -> String {
    format!("class{label}")
}

fn pngs(dir: &Path, split: &str, images: &[Vec<u8>], labels: &[u8]) {
    for (i, (pixels, &label)) in images.iter().zip(labels).enumerate() {
        let folder = dir.join(split).join(class_name(label));
        std::fs::create_dir_all(&folder).unwrap();
        image::GrayImage::from_raw(28, 28, pixels.clone()).unwrap().save(folder.join(format!("{i:05}.png"))).unwrap();
    }
}

fn metrics_without_time(run: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    csv.lines().map(|l| l.split(',').take(4).collect::<Vec<_>>().join(",")).collect()
}

#[test]
fn png_folders_train_step_for_step_like_the_same_images_in_idx_files() {
    let (train, train_labels) = ten_class_split(120, 1);
    let (test, test_labels) = ten_class_split(40, 2);
    let idx_dir = tempfile::tempdir().unwrap();
    idx(idx_dir.path(), "train", &train, &train_labels);
    idx(idx_dir.path(), "t10k", &test, &test_labels);
    let folders = tempfile::tempdir().unwrap();
    pngs(folders.path(), "train", &train, &train_labels);
    pngs(folders.path(), "test", &test, &test_labels);

    let runs = tempfile::tempdir().unwrap();
    let run = |data: &Path, name: &str| {
        let out = runs.path().join(name);
        let args =
            ["train", "--model", "lenet-bn", "--epochs", "2", "--batch-size", "16", "--flip", "--crop-padding", "2"];
        let printed = ok(&[&args[..], &["--data-dir", path(data), "--out", path(&out)]].concat());
        (out, printed)
    };
    let (from_idx, _) = run(idx_dir.path(), "idx");
    let (from_pngs, header) = run(folders.path(), "pngs");
    let first = header.lines().next().unwrap();
    assert!(first.contains("image folders") && first.contains("10 classes: class0, class1"), "{first}");
    assert!(first.contains("; grey"), "{first}");
    assert_eq!(metrics_without_time(&from_pngs), metrics_without_time(&from_idx));

    // The run keeps the folders' names: eval and predict say them, the ONNX file holds them.
    let eval = ok(&["eval", "--checkpoint", path(&from_pngs), "--data-dir", path(folders.path())]);
    assert!(eval.contains("class7") && !eval.contains("Sneaker"), "{eval}");
    let picture = folders.path().join("test").join("class3").join("00012.png");
    let predicted = ok(&["predict", "--checkpoint", path(&from_pngs), path(&picture)]);
    assert!(predicted.contains(": class"), "{predicted}");
    let onnx = runs.path().join("pngs.onnx");
    ok(&["export", "--checkpoint", path(&from_pngs), "--out", path(&onnx)]);
    let bytes = std::fs::read(&onnx).unwrap();
    let names: Vec<String> = (0..10).map(class_name).collect();
    let json = serde_json::to_string(&names).unwrap();
    assert!(bytes.windows(json.len()).any(|w| w == json.as_bytes()), "the class names are not in the ONNX metadata");

    // The run was built for these classes: Fashion-MNIST's IDX files are other data.
    let out = deepcnn(&["eval", "--checkpoint", path(&from_pngs), "--data-dir", path(idx_dir.path())]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the run's network takes grey images of 10 classes (class0, class1, class2, class3, …)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn colour_images_of_any_size_train_a_three_channel_network() {
    let dir = tempfile::tempdir().unwrap();
    for (split, n) in [("train", 12), ("test", 4)] {
        for i in 0..n {
            let class = ["red", "blue"][i % 2];
            let folder = dir.path().join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            let colour = if class == "red" { [200, 20, 20] } else { [20, 20, 200] };
            // Any size: 40×30 and 20×20 images, resized to LeNet's 28×28.
            let (w, h) = if i % 3 == 0 { (40, 30) } else { (20, 20) };
            image::RgbImage::from_pixel(w, h, image::Rgb(colour)).save(folder.join(format!("{i}.jpg"))).unwrap();
        }
    }
    std::fs::write(dir.path().join("train/red/broken.png"), b"not an image").unwrap();
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("colour");
    let train = ["train", "--model", "lenet-bn", "--epochs", "1", "--batch-size", "4", "--data-dir", path(dir.path())];
    // An unreadable file stops the run, naming it…
    let out = deepcnn(&[&train[..], &["--out", path(&run)]].concat());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("broken.png") && stderr(&out).contains("--skip-bad"), "{}", stderr(&out));
    // …or is left out and counted.
    let printed = ok(&[&train[..], &["--out", path(&run), "--skip-bad", "--force"]].concat());
    let first = printed.lines().next().unwrap();
    assert!(first.contains("(2 classes: blue, red; colour; 1 unreadable file skipped)"), "{first}");
    assert!(first.contains("training lenet-bn on 12 images"), "{first}");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["config"]["channels"], 3);
    assert_eq!(record["config"]["class_names"], serde_json::json!(["blue", "red"]));
    let eval = ok(&["eval", "--checkpoint", path(&run), "--data-dir", path(dir.path()), "--skip-bad"]);
    assert!(eval.contains(" of 4 images)"), "{eval}");
    let summary = ok(&["eval", "--checkpoint", path(&run), "--data-dir", path(dir.path()), "--json", "--skip-bad"]);
    let report: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(report["per_class"][1]["class"], "red");
}

#[test]
fn one_class_tree_trains_with_a_held_out_share_of_each_class_as_its_test_set() {
    let (images, labels) = ten_class_split(120, 3);
    let dir = tempfile::tempdir().unwrap();
    for (i, (pixels, &label)) in images.iter().zip(&labels).enumerate() {
        let folder = dir.path().join(class_name(label));
        std::fs::create_dir_all(&folder).unwrap();
        image::GrayImage::from_raw(28, 28, pixels.clone()).unwrap().save(folder.join(format!("{i:05}.png"))).unwrap();
    }
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("tree");
    let train = ["train", "--model", "lenet-bn", "--epochs", "2", "--batch-size", "16", "--data-dir", path(dir.path())];
    // Without a test folder the run needs a held-out part, and says how to ask for it.
    for split in [&[][..], &["--val-split", "30"]] {
        let out = deepcnn(&[&train[..], split].concat());
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("is one class tree") && stderr(&out).contains("--val-split F"),
            "{}",
            stderr(&out)
        );
    }
    // Early stopping must not watch what is the test set here.
    let out = deepcnn(&[&train[..], &["--val-split", "0.25", "--early-stop", "2"]].concat());
    assert!(!out.status.success() && stderr(&out).contains("early stopping must not watch"), "{}", stderr(&out));

    let printed = ok(&[&train[..], &["--val-split", "0.25", "--out", path(&run)]].concat());
    let first = printed.lines().next().unwrap();
    // 3 of each class's 12 images.
    assert!(first.contains("training lenet-bn on 90 images"), "{first}");
    assert!(
        first.contains("class tree") && first.contains("25% of each class held out as the test set: 30 images"),
        "{first}"
    );
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(
        (record["config"]["test_split"].as_f64(), record["config"]["val_split"].as_u64()),
        (Some(0.25), Some(0))
    );

    // eval finds the same 30 images from run.json, and scores what the last epoch's test did.
    let summary = ok(&["eval", "--checkpoint", path(&run), "--data-dir", path(dir.path()), "--json"]);
    let report: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(report["examples"], 30);
    let last = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let test_acc: f64 = last.lines().last().unwrap().split(',').nth(3).unwrap().parse().unwrap();
    assert!((report["accuracy"].as_f64().unwrap() - test_acc).abs() < 1e-4, "{summary} vs {test_acc}");
    // Resumed, the run trains on the same 90.
    let resumed = ok(&["train", "--resume", path(&run), "--epochs", "3", "--data-dir", path(dir.path())]);
    assert!(resumed.lines().next().unwrap().contains("on 90 images"), "{resumed}");
}
