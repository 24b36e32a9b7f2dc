//! Progress bars where a user waits (an epoch's training, its test pass, `eval`): counted in
//! images, with a rate that reads "142 images/s" and no estimate before there is a rate. They
//! draw on standard error, and only where it is a terminal.

use std::borrow::Cow;
use std::fmt::Write;

use indicatif::{HumanDuration, ProgressBar, ProgressState, ProgressStyle};

/// A bar over `images` images, headed by `prefix`.
pub fn images_bar(images: usize, prefix: impl Into<Cow<'static, str>>) -> ProgressBar {
    ProgressBar::new(images as u64).with_prefix(prefix).with_style(images_style())
}

fn images_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} images, {rate}, {eta} {msg}")
        .expect("a valid template")
        .with_key("rate", |state: &ProgressState, w: &mut dyn Write| {
            _ = w.write_str(&rate(state.pos(), state.per_sec()))
        })
        .with_key("eta", |state: &ProgressState, w: &mut dyn Write| {
            _ = w.write_str(&eta(state.pos(), state.eta()));
        })
        .progress_chars("=> ")
}

/// The rate as a person reads it: whole images a second (a tenth below 10), or a dash before
/// the first image is counted.
fn rate(done: u64, per_sec: f64) -> String {
    match per_sec {
        _ if done == 0 || !per_sec.is_finite() => "– images/s".to_string(),
        ..10.0 => format!("{per_sec:.1} images/s"),
        _ => format!("{per_sec:.0} images/s"),
    }
}

/// The estimate of the time left, or "ETA …" while nothing is counted yet (indicatif would
/// say 0s).
fn eta(done: u64, left: std::time::Duration) -> String {
    match done {
        0 => "ETA …".to_string(),
        _ => format!("ETA {:#}", HumanDuration(left)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_read_as_whole_images_a_second() {
        assert_eq!(rate(300, 141.5908), "142 images/s");
        assert_eq!(rate(3, 2.345), "2.3 images/s");
        assert_eq!(rate(0, 0.0), "– images/s");
        assert_eq!(rate(5, f64::INFINITY), "– images/s");
    }

    #[test]
    fn no_estimate_before_the_first_image() {
        assert_eq!(eta(0, Duration::ZERO), "ETA …");
        assert_eq!(eta(10, Duration::from_secs(90)), "ETA 2m");
    }
}
