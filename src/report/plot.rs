//! The book's training-curve chart (train loss, train acc and test acc against epoch), for one
//! run or several overlaid, as SVG and PNG.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::train::EpochMetrics;

const SIZE: (u32, u32) = (720, 480);

/// Runs to draw: a label and the per-epoch metrics of each.
pub struct Curves<'a> {
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

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, curves: &Curves) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let epochs = curves.runs.iter().flat_map(|(_, h)| h.iter().map(|m| m.epoch)).max().unwrap_or(1).max(2);
    let top = curves.runs.iter().flat_map(|(_, h)| h.iter().map(|m| m.loss)).fold(1.0f64, f64::max).min(10.0);
    let mut chart = ChartBuilder::on(root)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(1.0..epochs as f64, 0.0..top * 1.05)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(epochs.min(12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(err)?;
    let several = curves.runs.len() > 1;
    for (i, (label, history)) in curves.runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let name = |metric: &str| if several { format!("{label}: {metric}") } else { metric.to_string() };
        let points =
            |f: fn(&EpochMetrics) -> f64| history.iter().map(move |m| (m.epoch as f64, f(m))).collect::<Vec<_>>();
        // The book's styles: loss solid, train acc dashed, test acc dotted-dashed.
        chart
            .draw_series(LineSeries::new(points(|m| m.loss), color.stroke_width(2)))
            .map_err(err)?
            .label(name("train loss"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(points(|m| m.train_accuracy), 8, 5, color.stroke_width(2)))
            .map_err(err)?
            .label(name("train acc"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 8, y)], color.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(points(|m| m.test_accuracy), 3, 3, color.stroke_width(2)))
            .map_err(err)?
            .label(name("test acc"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 3, y)], color.stroke_width(2)));
        chart
            .draw_series(points(|m| m.test_accuracy).into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)?;
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
                seconds: 1.0,
                examples_per_sec: 10.0,
            })
            .collect()
    }

    #[test]
    fn svg_has_the_books_three_curves_for_each_run() {
        let (a, b) = (history(), history());
        let svg = draw_svg(&Curves { runs: vec![("lenet".into(), &a), ("lenet-bn".into(), &b)] }).unwrap();
        assert!(svg.starts_with("<svg"));
        for label in ["lenet: train loss", "lenet-bn: test acc", "epoch"] {
            assert!(svg.contains(label), "{label} missing");
        }
    }

    #[test]
    fn png_decodes_to_the_chart_size() {
        let h = history();
        let png = draw_png(&Curves { runs: vec![("run".into(), &h)] }).unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), SIZE);
    }
}
