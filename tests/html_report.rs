//! The HTML report as a person sees it: training leaves report.html in the run directory,
//! `deepcnn report` writes one for several runs, and headless Chromium renders it to a
//! screenshot that is not blank, with the confusion matrix and the gallery in its DOM. Where
//! Chromium is absent the rendering test says so and skips; with DEEPCNN_REQUIRE_CHROMIUM=1
//! (CI, once it has installed it) that is a failure instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{deepcnn, ok, path, stderr, synthetic_dir};

fn chromium() -> Option<PathBuf> {
    let names = std::env::var_os("DEEPCNN_CHROMIUM").map(PathBuf::from).into_iter();
    for name in names.chain(["chromium", "chromium-browser", "google-chrome"].map(PathBuf::from)) {
        if Command::new(&name).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Some(name);
        }
    }
    let required = std::env::var("DEEPCNN_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
    assert!(!required, "DEEPCNN_REQUIRE_CHROMIUM=1 but no chromium was found");
    eprintln!("skipped: no chromium to render the report (apt-get install chromium, or set DEEPCNN_CHROMIUM)");
    None
}

/// Runs headless Chromium on `page` with `args`, giving up after two minutes; its stdout.
fn render(browser: &Path, page: &Path, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    // Into a file, not a pipe: a DOM larger than the pipe would stall the browser while this
    // waits for it to exit.
    let stdout = profile.path().join("stdout");
    let mut child = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("chromium did not finish rendering {} in two minutes", page.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.wait().unwrap().success(), "chromium failed on {}", page.display());
    std::fs::read_to_string(stdout).unwrap()
}

fn train(model: &str, data: &Path, run: &Path, epochs: &str) {
    let args = ["train", "--model", model, "--data-dir", path(data), "--epochs", epochs, "--limit", "64"];
    ok(&[&args[..], &["--batch-size", "16", "--out", path(run)]].concat());
}

#[test]
fn training_writes_a_report_and_chromium_renders_every_part() {
    let data = synthetic_dir(64, 40);
    let runs = tempfile::tempdir().unwrap();
    let (one, two) = (runs.path().join("one"), runs.path().join("two"));
    train("lenet-bn", data.path(), &one, "2");
    // Plain LeNet learns slowly: after one epoch it still gets many images wrong, which the
    // gallery shows.
    train("lenet", data.path(), &two, "1");
    // Training's own report, refreshed after every epoch.
    let own = std::fs::read_to_string(one.join("report.html")).unwrap();
    assert!(own.contains("the weights after epoch 2") && own.contains("id=\"confusion-matrix\""), "{own}");
    let page = runs.path().join("both.html");
    let printed = ok(&["report", path(&one), path(&two), "--out", path(&page), "--data-dir", path(data.path())]);
    assert_eq!(printed.trim(), format!("wrote {}", page.display()));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<h2 class=\"run\">one</h2>") && html.contains("<h2 class=\"run\">two</h2>"));

    let Some(browser) = chromium() else { return };
    let dom = render(&browser, &page, &["--dump-dom"]);
    // Both runs' 10×10 matrices and galleries, in the DOM the browser built.
    assert_eq!(dom.matches("id=\"confusion-matrix\"").count(), 2, "{dom}");
    assert_eq!(dom.matches("data-count=").count(), 2 * 100);
    let mistakes = |run: &Path| {
        let json = ok(&["eval", "--checkpoint", path(run), "--data-dir", path(data.path()), "--json"]);
        let report: serde_json::Value = serde_json::from_str(&json).unwrap();
        report["mistakes"].as_array().unwrap().len()
    };
    assert_eq!(dom.matches("id=\"gallery\"").count(), 2);
    let wrong = mistakes(&one) + mistakes(&two);
    assert!(wrong > 0, "networks this briefly trained get some test images wrong");
    assert_eq!(dom.matches("<figure").count(), wrong);
    assert!(dom.contains("<svg"), "the chart is missing");

    let shot = runs.path().join("shot.png");
    render(&browser, &page, &[&format!("--screenshot={}", shot.display()), "--window-size=1200,2400"]);
    let image = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(image.dimensions(), (1200, 2400));
    // Not blank: a good share of the pixels is not the white background, in many colours.
    let inked = image.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(inked * 50 > image.pixels().len(), "only {inked} pixels are not white");
    let colours: std::collections::HashSet<[u8; 3]> = image.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 100, "only {} colours", colours.len());
}

#[test]
fn report_refuses_what_it_cannot_write() {
    let data = synthetic_dir(32, 8);
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("run");
    train("lenet-bn", data.path(), &run, "1");
    let d = path(data.path());
    let fails = |args: &[&str], message: &str| {
        let out = deepcnn(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    };
    fails(&["report", path(&run), path(&run), "--data-dir", d], "several runs make one page: say where with --out");
    fails(&["report", path(&run), "--out", path(&runs.path().join("r.pdf")), "--data-dir", d], "ending in .html");
    let page = runs.path().join("mine.html");
    std::fs::write(&page, "mine").unwrap();
    fails(&["report", path(&run), "--out", path(&page), "--data-dir", d], "exists; pass --force");
    assert_eq!(std::fs::read_to_string(&page).unwrap(), "mine");
    ok(&["report", path(&run), "--out", path(&page), "--force", "--data-dir", d]);
    assert!(std::fs::read_to_string(&page).unwrap().starts_with("<!DOCTYPE html>"));
    // Without --out, one run's report is its own report.html.
    std::fs::remove_file(run.join("report.html")).unwrap();
    ok(&["report", path(&run), "--data-dir", d]);
    assert!(run.join("report.html").exists());
}
