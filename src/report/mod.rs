//! What a run leaves for people to read: `metrics.csv`, the training-curve chart, the
//! evaluation report's text form, and the HTML report of a run.

pub mod csv;
pub mod eval_text;
pub mod html;
pub mod plot;

pub use csv::metrics_csv;
pub use eval_text::write_eval_report;
pub use html::{html_report, RunReport};
pub use plot::{draw_png, draw_svg, Curves};

/// `n` and the noun, singular for one: "1 epoch", "3 epochs" (`noun` and `nouns`: English
/// plurals are not all regular).
pub fn plural(n: usize, noun: &str, nouns: &str) -> String {
    format!("{n} {}", if n == 1 { noun } else { nouns })
}

/// A fraction as a percentage, without digits it does not have: "10%", "12.5%".
pub fn percent(fraction: f64) -> String {
    let digits = format!("{:.4}", fraction * 100.0);
    format!("{}%", digits.trim_end_matches('0').trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentages_keep_only_their_digits() {
        assert_eq!(super::percent(0.1), "10%");
        assert_eq!(super::percent(0.125), "12.5%");
        assert_eq!(super::percent(0.07), "7%");
    }

    #[test]
    fn one_is_singular() {
        assert_eq!(super::plural(1, "epoch", "epochs"), "1 epoch");
        assert_eq!(super::plural(0, "epoch", "epochs"), "0 epochs");
        assert_eq!(super::plural(5, "batch", "batches"), "5 batches");
    }
}
