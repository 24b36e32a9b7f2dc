//! A run as one self-contained HTML page (`report.html`, `deepcnn report`): the training
//! curves, the hyper-parameters and the machine, the confusion matrix as a heatmap, per-class
//! accuracy, the test images the network got most confidently wrong, and the per-layer summary.
//! Everything is inline (the chart as SVG, the images as PNG data URLs, the style in the page),
//! so the file opens offline in any browser and can be mailed or archived alone.

use std::fmt::Write;

use base64::Engine;
use image::ImageEncoder;

use super::plot::{draw_svg, Curves};
use crate::data::Dataset;
use crate::nn::LayerRow;
use crate::train::{EpochMetrics, EvalReport, TrainConfig};

/// One run of a report.
pub struct RunReport<'a> {
    /// What the page calls the run (its directory).
    pub name: String,
    pub config: &'a TrainConfig,
    pub history: &'a [EpochMetrics],
    /// Where the run last trained ([`crate::machine::describe`]), where known.
    pub machine: Option<&'a str>,
    /// The network's evaluation on the test set, and the test set it indexes.
    pub evaluation: &'a EvalReport,
    pub test_images: &'a Dataset,
    /// What the evaluation tested: "the weights after epoch 5", say.
    pub evaluated: String,
    /// The network's layers at its image size.
    pub layers: &'a [LayerRow],
}

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:.5em 0}td,th{padding:3px 8px;text-align:right;border:1px solid #e3e3e3}\
th{background:#f5f5f5}td.name,th.name{text-align:left}\
#confusion-matrix td{width:3.2em;text-align:center}#confusion-matrix td.diagonal{outline:2px solid #222}\
.bar{background:#2166ac;height:.9em;display:inline-block;vertical-align:middle}\
#gallery{display:flex;flex-wrap:wrap;gap:12px}#gallery figure{margin:0;text-align:center;font-size:.8em;width:112px}\
#gallery img{width:112px;height:112px;image-rendering:pixelated;border:1px solid #ccc}\
.wrong{color:#b2182b}.chart svg{max-width:100%;height:auto}";

/// The page for `runs` (at least one): the curves of all of them overlaid, then each run's
/// details.
pub fn html_report(runs: &[RunReport]) -> String {
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let mut page = String::new();
    let title = format!("deepcnn report: {}", names.join(", "));
    let _ = writeln!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>",
        escape(&title),
        escape(&title)
    );
    page.push_str("<h2>Training curves</h2>\n");
    let chart_title = match runs {
        [run] => format!("{}: {}", run.config.model, settings(run.config)),
        _ => names.join(" and "),
    };
    let curves = Curves { title: chart_title, runs: runs.iter().map(|r| (r.name.clone(), r.history)).collect() };
    match draw_svg(&curves) {
        Ok(svg) => {
            let _ = writeln!(page, "<div class=\"chart\" id=\"curves\">{svg}</div>");
        }
        Err(e) => {
            let _ = writeln!(page, "<p>The chart could not be drawn: {}</p>", escape(&e));
        }
    }
    for run in runs {
        run_section(&mut page, run, runs.len() > 1);
    }
    page.push_str("</body></html>\n");
    page
}

/// The run's model settings in a few words, as the chart's title gives them.
fn settings(config: &TrainConfig) -> String {
    format!("batch {}, lr {}, seed {}", config.batch_size, config.lr, config.seed)
}

fn run_section(page: &mut String, run: &RunReport, several: bool) {
    if several {
        let _ = writeln!(page, "<h2 class=\"run\">{}</h2>", escape(&run.name));
    }
    let e = run.evaluation;
    let _ = writeln!(
        page,
        "<p>{}: test accuracy <b>{:.4}</b> ({} of {} images), test loss {:.4}; {}.</p>",
        escape(run.config.model.name()),
        e.accuracy,
        e.correct(),
        e.examples,
        e.loss,
        escape(&run.evaluated)
    );
    epochs_table(page, run.history);
    hyper_parameters(page, run);
    let classes = e.classes();
    confusion_matrix(page, e, &classes);
    per_class(page, e, &classes);
    gallery(page, run);
    layers(page, run.layers);
}

fn epochs_table(page: &mut String, history: &[EpochMetrics]) {
    page.push_str("<h3>Epochs</h3>\n<table class=\"epochs\"><tr><th>epoch</th><th>train loss</th><th>train acc</th><th>test acc</th><th>val acc</th><th>EMA test acc</th><th>seconds</th><th>examples/s</th></tr>\n");
    let optional = |v: Option<f64>| v.map_or(String::from("–"), |v| format!("{v:.4}"));
    for m in history {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.0}</td></tr>",
            m.epoch,
            m.loss,
            m.train_accuracy,
            m.test_accuracy,
            optional(m.val_accuracy),
            optional(m.ema_test_accuracy),
            m.seconds,
            m.examples_per_sec
        );
    }
    page.push_str("</table>\n");
}

fn hyper_parameters(page: &mut String, run: &RunReport) {
    page.push_str("<h3>Hyper-parameters and machine</h3>\n<table id=\"hyper-parameters\">\n");
    let mut rows = Vec::new();
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(run.config) {
        for (key, value) in fields {
            let value = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => "–".into(),
                other => other.to_string(),
            };
            rows.push((key, value));
        }
    }
    rows.push(("machine".into(), run.machine.unwrap_or("not recorded").into()));
    rows.push(("deepcnn".into(), env!("CARGO_PKG_VERSION").into()));
    for (key, value) in rows {
        let _ = writeln!(
            page,
            "<tr><th class=\"name\">{}</th><td class=\"name\">{}</td></tr>",
            escape(&key),
            escape(&value)
        );
    }
    page.push_str("</table>\n");
}

/// Rows are the true classes, columns the predictions; each cell is shaded by its share of the
/// row, so a row's errors stand out however many images the class has.
fn confusion_matrix(page: &mut String, e: &EvalReport, classes: &[&str]) {
    page.push_str("<h3>Confusion matrix</h3>\n<p>Rows: the true class; columns: the predicted one.</p>\n<table id=\"confusion-matrix\"><tr><th class=\"name\">true \\ predicted</th>");
    for name in classes {
        let _ = write!(page, "<th>{}</th>", escape(name));
    }
    page.push_str("</tr>\n");
    for (t, row) in e.confusion.iter().enumerate() {
        let total: usize = row.iter().sum();
        let _ = write!(page, "<tr><th class=\"name\">{}</th>", escape(classes[t]));
        for (p, &count) in row.iter().enumerate() {
            let share = if total > 0 { count as f64 / total as f64 } else { 0.0 };
            let text = if share > 0.5 { "#fff" } else { "#222" };
            let class = if t == p { " class=\"diagonal\"" } else { "" };
            let _ = write!(
                page,
                "<td{class} data-count=\"{count}\" style=\"background:rgba(33,102,172,{share:.3});color:{text}\">{count}</td>"
            );
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
}

fn per_class(page: &mut String, e: &EvalReport, classes: &[&str]) {
    page.push_str("<h3>Per-class accuracy</h3>\n<table id=\"per-class\"><tr><th class=\"name\">class</th><th>images</th><th>accuracy</th><th class=\"name\"></th></tr>\n");
    for (c, class) in e.per_class.iter().enumerate() {
        let (accuracy, bar) = match class.accuracy {
            Some(a) => (format!("{a:.3}"), format!("<span class=\"bar\" style=\"width:{:.0}px\"></span>", a * 200.0)),
            None => ("–".into(), String::new()),
        };
        let _ = writeln!(
            page,
            "<tr><td class=\"name\">{}</td><td>{}</td><td>{accuracy}</td><td class=\"name\">{bar}</td></tr>",
            escape(classes[c]),
            class.examples
        );
    }
    page.push_str("</table>\n");
}

/// The test images the network got wrong with the highest confidence, with their true and
/// predicted classes.
fn gallery(page: &mut String, run: &RunReport) {
    let mistakes = &run.evaluation.mistakes;
    let classes = run.evaluation.classes();
    let _ = writeln!(
        page,
        "<h3>Most confident mistakes</h3>\n<p>The {} test images the network got wrong with the highest probability.</p>\n<div id=\"gallery\">",
        mistakes.len()
    );
    if mistakes.is_empty() {
        page.push_str("<p>No test image was classified wrongly.</p>\n");
    }
    let [h, w] = run.test_images.image_size();
    for m in mistakes {
        let mut png = Vec::new();
        let (pixels, colour) = interleaved(run.test_images.image(m.index), run.test_images.channels());
        let encoded = image::codecs::png::PngEncoder::new(&mut png).write_image(&pixels, w as u32, h as u32, colour);
        let src = match encoded {
            Ok(()) => format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&png)),
            Err(_) => String::new(),
        };
        let _ = writeln!(
            page,
            "<figure data-index=\"{}\"><img src=\"{src}\" alt=\"test image {}\"><figcaption>#{}<br>true: {}<br><span class=\"wrong\">predicted: {} ({:.0}%)</span></figcaption></figure>",
            m.index,
            m.index,
            m.index,
            escape(classes[m.label]),
            escape(classes[m.predicted]),
            m.confidence * 100.0
        );
    }
    page.push_str("</div>\n");
}

fn layers(page: &mut String, rows: &[LayerRow]) {
    page.push_str("<h3>Layers</h3>\n<table id=\"layers\"><tr><th class=\"name\">layer</th><th class=\"name\">output shape</th><th>parameters</th></tr>\n");
    for row in rows {
        let shape: Vec<String> = row.shape.iter().map(|d| d.to_string()).collect();
        let _ = writeln!(
            page,
            "<tr><td class=\"name\">{}</td><td class=\"name\">{}</td><td>{}</td></tr>",
            escape(&row.name),
            shape.join("×"),
            row.params
        );
    }
    let total: usize = rows.iter().map(|r| r.params).sum();
    let _ = writeln!(page, "<tr><th class=\"name\">total</th><td></td><th>{total}</th></tr>\n</table>");
}

/// An image's pixels as PNG takes them: grey as it is, colour planes interleaved (RGBRGB…).
fn interleaved(planes: &[u8], channels: usize) -> (Vec<u8>, image::ExtendedColorType) {
    if channels == 1 {
        return (planes.to_vec(), image::ExtendedColorType::L8);
    }
    let n = planes.len() / channels;
    let pixels = (0..n).flat_map(|i| (0..channels).map(move |c| planes[c * n + i])).collect();
    (pixels, image::ExtendedColorType::Rgb8)
}

/// `text` safe inside HTML elements and quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::two_class_dataset;
    use crate::data::{Batcher, CLASS_NAMES, NUM_CLASSES};
    use crate::models::{ModelKind, Network};
    use crate::train::evaluate_report;
    use burn::prelude::*;

    fn metrics(epoch: usize) -> EpochMetrics {
        EpochMetrics {
            epoch,
            loss: 1.0 / epoch as f64,
            train_accuracy: 0.5,
            test_accuracy: 0.6,
            ema_test_accuracy: None,
            val_accuracy: Some(0.55),
            seconds: 1.0,
            examples_per_sec: 100.0,
        }
    }

    fn page_of(name: &str) -> (String, EvalReport) {
        let device = Device::flex();
        let test = two_class_dataset(30, 2);
        let model = Network::seeded(ModelKind::LeNetBn, 4, &device);
        let evaluation = evaluate_report(&model, &test, &Batcher::new(None, &device), 16, &mut |_| {});
        let config = TrainConfig::new(ModelKind::LeNetBn);
        let history = [metrics(1), metrics(2)];
        let layers = ModelKind::LeNetBn.layers(crate::models::NetworkShape::default(), 28);
        let run = RunReport {
            name: name.into(),
            config: &config,
            history: &history,
            machine: Some("a test machine"),
            evaluation: &evaluation,
            test_images: &test,
            evaluated: "the weights after epoch 2".into(),
            layers: &layers,
        };
        (html_report(&[run]), evaluation)
    }

    #[test]
    fn the_page_has_every_part_inline() {
        let (page, evaluation) = page_of("run-1");
        for part in [
            "id=\"curves\"",
            "<svg",
            "id=\"hyper-parameters\"",
            "id=\"confusion-matrix\"",
            "id=\"per-class\"",
            "id=\"gallery\"",
            "id=\"layers\"",
        ] {
            assert!(page.contains(part), "no {part}");
        }
        assert_eq!(page.matches("data-count=").count(), NUM_CLASSES * NUM_CLASSES);
        assert!(!evaluation.mistakes.is_empty(), "an untrained network gets some wrong");
        assert_eq!(page.matches("<figure").count(), evaluation.mistakes.len());
        assert_eq!(page.matches("src=\"data:image/png;base64,").count(), evaluation.mistakes.len());
        let first = &evaluation.mistakes[0];
        let caption = format!(
            "true: {}<br><span class=\"wrong\">predicted: {}",
            CLASS_NAMES[first.label], CLASS_NAMES[first.predicted]
        );
        assert!(page.contains(&caption), "no caption {caption}");
        assert!(page.contains("a test machine") && page.contains(">lenet-bn<"));
        // Self-contained: nothing is fetched from anywhere.
        // (The SVG's namespace is a URL that is never fetched.)
        for external in ["src=\"http", "href=\"http", "url(http", "@import"] {
            assert!(!page.contains(external), "an external resource: {external}");
        }
        assert!(!page.contains("<link") && !page.contains("<script"));
        // The layers' total is the network's trainable parameter count.
        assert!(page.contains(&format!("<th>{}</th>", 44_426 + 452)));
    }

    #[test]
    fn names_are_escaped() {
        let (page, _) = page_of("<b>&\"run\"");
        assert!(page.contains("&lt;b&gt;&amp;&quot;run&quot;"));
        assert!(!page.contains("<b>&\"run\""));
        assert_eq!(escape("a<'b'>"), "a&lt;&#39;b&#39;&gt;");
    }

    #[test]
    fn the_gallery_images_are_the_test_images() {
        let (page, evaluation) = page_of("run");
        let test = two_class_dataset(30, 2);
        let first = page.split("src=\"data:image/png;base64,").nth(1).unwrap();
        let encoded = &first[..first.find('"').unwrap()];
        let png = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
        let image = image::load_from_memory(&png).unwrap().to_luma8();
        assert_eq!(image.dimensions(), (28, 28));
        assert_eq!(image.as_raw().as_slice(), test.image(evaluation.mistakes[0].index));
    }
}
