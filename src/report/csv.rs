//! `metrics.csv`: one row per epoch.

use crate::train::EpochMetrics;

pub const HEADER: &str = "epoch,loss,train_acc,test_acc,seconds,examples_per_sec";

/// One of the accuracies an epoch may have.
type Accuracy = fn(&EpochMetrics) -> Option<f64>;

/// The table of a run's epochs; runs with a validation split or an EMA of the weights have
/// their accuracies as last columns.
pub fn metrics_csv(history: &[EpochMetrics]) -> String {
    let optional: [(&str, Accuracy); 2] = [("val_acc", |m| m.val_accuracy), ("ema_test_acc", |m| m.ema_test_accuracy)];
    let present: Vec<_> = optional.iter().filter(|(_, get)| history.iter().any(|m| get(m).is_some())).collect();
    let mut s = HEADER.to_string();
    present.iter().for_each(|(name, _)| s += &format!(",{name}"));
    s += "\n";
    for m in history {
        s += &format!(
            "{},{:.6},{:.6},{:.6},{:.3},{:.1}",
            m.epoch, m.loss, m.train_accuracy, m.test_accuracy, m.seconds, m.examples_per_sec
        );
        for (_, get) in &present {
            s += &get(m).map_or(",".to_string(), |a| format!(",{a:.6}"));
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
            val_accuracy: None,
            seconds: 1.5,
            examples_per_sec: 100.0,
        };
        assert_eq!(
            metrics_csv(std::slice::from_ref(&m)),
            "epoch,loss,train_acc,test_acc,seconds,examples_per_sec\n2,0.500000,0.800000,0.750000,1.500,100.0\n"
        );
        let with_ema = EpochMetrics { ema_test_accuracy: Some(0.7), ..m.clone() };
        assert_eq!(
            metrics_csv(&[with_ema]),
            "epoch,loss,train_acc,test_acc,seconds,examples_per_sec,ema_test_acc\n2,0.500000,0.800000,0.750000,1.500,100.0,0.700000\n"
        );
        let both = EpochMetrics { ema_test_accuracy: Some(0.7), val_accuracy: Some(0.9), ..m };
        assert!(metrics_csv(&[both])
            .ends_with(",val_acc,ema_test_acc\n2,0.500000,0.800000,0.750000,1.500,100.0,0.900000,0.700000\n"));
    }
}
