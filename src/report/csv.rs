//! `metrics.csv`: one row per epoch.

use crate::train::EpochMetrics;

pub const HEADER: &str = "epoch,loss,train_acc,test_acc,seconds,examples_per_sec";

/// The table of a run's epochs; runs with an EMA of the weights have its test accuracy as a
/// last column.
pub fn metrics_csv(history: &[EpochMetrics]) -> String {
    let ema = history.iter().any(|m| m.ema_test_accuracy.is_some());
    let mut s = format!("{HEADER}{}\n", if ema { ",ema_test_acc" } else { "" });
    for m in history {
        s += &format!(
            "{},{:.6},{:.6},{:.6},{:.3},{:.1}",
            m.epoch, m.loss, m.train_accuracy, m.test_accuracy, m.seconds, m.examples_per_sec
        );
        if ema {
            s += &m.ema_test_accuracy.map_or(",".to_string(), |a| format!(",{a:.6}"));
        }
        s += "\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_epoch() {
        let m = EpochMetrics {
            epoch: 2,
            loss: 0.5,
            train_accuracy: 0.8,
            test_accuracy: 0.75,
            ema_test_accuracy: None,
            seconds: 1.5,
            examples_per_sec: 100.0,
        };
        assert_eq!(
            metrics_csv(std::slice::from_ref(&m)),
            "epoch,loss,train_acc,test_acc,seconds,examples_per_sec\n2,0.500000,0.800000,0.750000,1.500,100.0\n"
        );
        let with_ema = EpochMetrics { ema_test_accuracy: Some(0.7), ..m };
        assert_eq!(
            metrics_csv(&[with_ema]),
            "epoch,loss,train_acc,test_acc,seconds,examples_per_sec,ema_test_acc\n2,0.500000,0.800000,0.750000,1.500,100.0,0.700000\n"
        );
    }
}
