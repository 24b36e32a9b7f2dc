//! The book's training curves (train loss, train accuracy and test accuracy against epoch), for
//! one run or several overlaid, as SVG and PNG: a title, loss and accuracy each on its own
//! labelled axes, and a legend beside the panels.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::train::EpochMetrics;

const SIZE: (u32, u32) = (960, 640);
/// The legend's column, right of the two panels, so that it covers no point.
const LEGEND_WIDTH: u32 = 230;

/// Runs to draw: the chart's title, and a label and the per-epoch metrics of each run.
pub struct Curves<'a> {
    pub title: String,
    pub runs: Vec<(String, &'a [EpochMetrics])>,
}

pub fn draw_svg(curves: &Curves) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, curves)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

pub fn draw_png(curves: &Curves) -> Result<Vec<u8>, String> {
    let (w, h) = SIZE;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        draw(&root, curves)?;
        root.present().map_err(|e| e.to_string())?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(png)
}

use image::ImageEncoder;

/// One metric of every epoch of a run, as points (epoch, value).
fn points(history: &[EpochMetrics], metric: fn(&EpochMetrics) -> f64) -> Vec<(f64, f64)> {
    history.iter().map(|m| (m.epoch as f64, metric(m))).collect()
}

/// Two panels on their own labelled axes, loss above and accuracy below (a loss of 2 and an
/// accuracy of 0.9 on one axis would flatten one of them), and the legend in a column of its
/// own. Every epoch is also marked, so that a run of one epoch shows its points.
fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, curves: &Curves) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let (panels, legend) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    let panels = panels.titled(&curves.title, ("sans-serif", 22)).map_err(err)?;
    let (upper, lower) = panels.split_vertically(panels.dim_in_pixel().1 / 2);
    let epochs = curves.runs.iter().flat_map(|(_, h)| h.iter().map(|m| m.epoch)).max().unwrap_or(1);
    // One epoch still gets an x range, with its point in the middle.
    let x_range = if epochs > 1 { 1.0..epochs as f64 } else { 0.5..1.5 };
    let all = |f: fn(&EpochMetrics) -> f64| curves.runs.iter().flat_map(move |(_, h)| h.iter().map(f));
    let top = all(|m| m.loss).fold(0.0f64, f64::max).clamp(0.1, 10.0) * 1.05;
    let low_acc = all(|m| m.train_accuracy).chain(all(|m| m.test_accuracy)).fold(1.0f64, f64::min);
    let acc_floor = (low_acc * 10.0).floor().clamp(0.0, 9.0) / 10.0;
    let x_labels = epochs.clamp(2, 12);
    let mut loss = panel(&upper, x_range.clone(), 0.0..top, "train loss", x_labels).map_err(err)?;
    let mut accuracy = panel(&lower, x_range, acc_floor..1.0, "accuracy", x_labels).map_err(err)?;
    for (i, (_, history)) in curves.runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        curve(&mut loss, points(history, |m| m.loss), color, Style::Solid).map_err(err)?;
        curve(&mut accuracy, points(history, |m| m.train_accuracy), color, Style::Dashed).map_err(err)?;
        curve(&mut accuracy, points(history, |m| m.test_accuracy), color, Style::Solid).map_err(err)?;
    }
    draw_legend(&legend, curves).map_err(err)
}

type Panel<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One panel: `y` against the epoch, both axes labelled, whole epochs on the x axis.
fn panel<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    y_desc: &str,
    x_labels: usize,
) -> Result<Panel<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart =
        ChartBuilder::on(area).margin(12).x_label_area_size(36).y_label_area_size(56).build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels(x_labels)
        .x_label_formatter(&|x| if x.fract() == 0.0 { format!("{x:.0}") } else { String::new() })
        .max_light_lines(2)
        .draw()?;
    Ok(chart)
}

/// Train accuracy dashed with hollow marks; loss and test accuracy solid with filled ones.
#[derive(Clone, Copy, PartialEq)]
enum Style {
    Solid,
    Dashed,
}

/// One run's metric as a line with every epoch marked (a line needs two points; a mark does not).
fn curve<DB: DrawingBackend>(
    chart: &mut Panel<'_, DB>,
    points: Vec<(f64, f64)>,
    color: RGBAColor,
    style: Style,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let line = color.stroke_width(2);
    match style {
        Style::Solid => chart.draw_series(LineSeries::new(points.clone(), line))?,
        Style::Dashed => chart.draw_series(DashedLineSeries::new(points.clone(), 8, 5, line))?,
    };
    let mark = if style == Style::Solid { color.filled() } else { line };
    chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, mark)))?;
    Ok(())
}

/// The legend column: which line is which (train accuracy dashed, test accuracy solid), then
/// one entry per run in its colour, in a font that shrinks so that any number of runs fits.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    curves: &Curves,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let height = area.dim_in_pixel().1 as i32;
    let runs = curves.runs.len().max(1) as i32;
    let keys = [("train accuracy", true), ("test accuracy", false)];
    let (first, key_row, gap) = (60, 24, 12);
    let runs_start = first + key_row * keys.len() as i32 + gap;
    let row = ((height - runs_start - 20) / runs).clamp(8, 26);
    let font = ("sans-serif", (row - 4).clamp(8, 16)).into_font();
    let mut y = first;
    for (name, dashed) in keys {
        let segments: &[(i32, i32)] = if dashed { &[(8, 18), (26, 36)] } else { &[(8, 40)] };
        for &(from, to) in segments {
            area.draw(&PathElement::new([(from, y), (to, y)], BLACK.stroke_width(2)))?;
        }
        area.draw(&Text::new(name, (48, y - 7), ("sans-serif", 14).into_font()))?;
        y += key_row;
    }
    y += gap;
    // A single unnamed run (a run's own chart) needs no entry: the title names it.
    for (i, (label, _)) in curves.runs.iter().enumerate().filter(|(_, (label, _))| !label.is_empty()) {
        let color = Palette99::pick(i).to_rgba();
        area.draw(&Rectangle::new([(8, y - 5), (40, y + 5)], color.filled()))?;
        area.draw(&Text::new(label.clone(), (48, y - row / 3), font.clone()))?;
        y += row;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> Vec<EpochMetrics> {
        (1..=3)
            .map(|e| EpochMetrics {
                epoch: e,
                loss: 1.0 / e as f64,
                train_accuracy: 0.5 + 0.1 * e as f64,
                test_accuracy: 0.45 + 0.1 * e as f64,
                ema_test_accuracy: None,
                val_accuracy: None,
                seconds: 1.0,
                examples_per_sec: 10.0,
            })
            .collect()
    }

    fn history_of(epochs: usize) -> Vec<EpochMetrics> {
        history()
            .into_iter()
            .cycle()
            .take(epochs)
            .enumerate()
            .map(|(i, m)| EpochMetrics { epoch: i + 1, ..m })
            .collect()
    }

    /// The numbers of attribute `name` in every `<tag …>` of `svg`.
    fn attribute(svg: &str, tag: &str, name: &str) -> Vec<f64> {
        svg.split(&format!("<{tag} "))
            .skip(1)
            .filter_map(|element| {
                let value = element
                    .split(&format!(" {name}=\""))
                    .nth(1)
                    .or_else(|| element.strip_prefix(&format!("{name}=\"")))?;
                value.split('"').next()?.parse().ok()
            })
            .collect()
    }

    #[test]
    fn the_chart_has_a_title_labelled_axes_and_each_runs_name() {
        let (a, b) = (history(), history());
        let curves = Curves { title: "two runs".into(), runs: vec![("lenet".into(), &a), ("lenet-bn".into(), &b)] };
        let svg = draw_svg(&curves).unwrap();
        assert!(svg.starts_with("<svg"));
        for label in [
            "two runs",
            "train loss",
            "accuracy",
            "epoch",
            "train accuracy",
            "test accuracy",
            ">\nlenet\n<",
            "lenet-bn",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
    }

    /// A run of one epoch shows its three points (a line needs two), marked on both panels.
    #[test]
    fn one_epoch_shows_its_points() {
        let h = history_of(1);
        let svg = draw_svg(&Curves { title: "one epoch".into(), runs: vec![(String::new(), &h)] }).unwrap();
        assert_eq!(attribute(&svg, "circle", "cx").len(), 3, "train loss, train and test accuracy");
    }

    /// Twelve runs: every name is drawn inside the image, in the legend's column, and no
    /// point lies under the legend.
    #[test]
    fn twelve_runs_fit_and_the_legend_covers_no_point() {
        let histories: Vec<Vec<EpochMetrics>> = (0..12).map(|_| history_of(5)).collect();
        let runs = histories.iter().enumerate().map(|(i, h)| (format!("run-{i:02}"), h.as_slice())).collect();
        let svg = draw_svg(&Curves { title: "12 runs".into(), runs }).unwrap();
        let legend_x = (SIZE.0 - LEGEND_WIDTH) as f64;
        let names: Vec<&str> = svg.split("<text ").skip(1).filter(|t| t.contains(">\nrun-")).collect();
        assert_eq!(names.len(), 12, "every run is named");
        for text in names {
            let (x, y) = (
                attribute(&format!("<text {text}"), "text", "x")[0],
                attribute(&format!("<text {text}"), "text", "y")[0],
            );
            assert!(x >= legend_x && x < SIZE.0 as f64 && y > 0.0 && y + 12.0 < SIZE.1 as f64, "a name at ({x}, {y})");
        }
        let points = attribute(&svg, "circle", "cx");
        assert_eq!(points.len(), 12 * 5 * 3);
        assert!(points.iter().all(|&x| x < legend_x), "a point under the legend");
    }

    #[test]
    fn png_decodes_to_the_chart_size() {
        let h = history();
        let png = draw_png(&Curves { title: "run".into(), runs: vec![("run".into(), &h)] }).unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), SIZE);
    }
}
