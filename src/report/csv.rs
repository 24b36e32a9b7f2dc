//! `metrics.csv`: one row per epoch.

use crate::train::EpochMetrics;

pub const HEADER: &str = "epoch,loss,train_acc,test_acc,seconds,examples_per_sec";

pub fn metrics_csv(history: &[EpochMetrics]) -> String {
    let mut s = format!("{HEADER}\n");
    for m in history {
        s += &format!(
            "{},{:.6},{:.6},{:.6},{:.3},{:.1}\n",
            m.epoch, m.loss, m.train_accuracy, m.test_accuracy, m.seconds, m.examples_per_sec
        );
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
            seconds: 1.5,
            examples_per_sec: 100.0,
        };
        assert_eq!(
            metrics_csv(&[m]),
            "epoch,loss,train_acc,test_acc,seconds,examples_per_sec\n2,0.500000,0.800000,0.750000,1.500,100.0\n"
        );
    }
}
