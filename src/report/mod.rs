//! What a run leaves for people to read: `metrics.csv`, the training-curve chart, and the
//! evaluation report's text form.

pub mod csv;
pub mod eval_text;
pub mod plot;

pub use csv::metrics_csv;
pub use eval_text::write_eval_report;
pub use plot::{draw_png, draw_svg, Curves};
