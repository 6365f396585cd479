//! Keras' epoch-end callbacks as small state machines: which metric to watch, early stopping,
//! and reducing the learning rate on a plateau.

use serde::{Deserialize, Serialize};

/// The metric a callback watches, and which way is better.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Monitor {
    pub metric: String,
}

impl Default for Monitor {
    fn default() -> Self {
        Self {
            metric: "val_loss".into(),
        }
    }
}

impl Monitor {
    pub fn new(metric: &str) -> Result<Self, String> {
        match metric {
            "loss" | "accuracy" | "val_loss" | "val_accuracy" => Ok(Self {
                metric: metric.into(),
            }),
            other => Err(format!(
                "cannot monitor {other:?}: expected loss, accuracy, val_loss or val_accuracy"
            )),
        }
    }

    /// Accuracy improves upward, loss downward (Keras' mode "auto").
    pub fn higher_is_better(&self) -> bool {
        self.metric.ends_with("accuracy")
    }

    /// True when `value` beats `best` by more than `min_delta`.
    pub fn improved(&self, value: f64, best: Option<f64>, min_delta: f64) -> bool {
        match best {
            None => value.is_finite(),
            Some(b) if self.higher_is_better() => value > b + min_delta,
            Some(b) => value < b - min_delta,
        }
    }
}

/// Stop after `patience` epochs without improvement (Keras `EarlyStopping`, min_delta 0).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EarlyStopping {
    pub patience: usize,
    /// Put back the weights of the best epoch when stopping (or at the end).
    pub restore_best: bool,
    #[serde(default)]
    best: Option<f64>,
    #[serde(default)]
    wait: usize,
}

impl EarlyStopping {
    pub fn new(patience: usize, restore_best: bool) -> Self {
        Self {
            patience,
            restore_best,
            best: None,
            wait: 0,
        }
    }

    /// Feeds one epoch's value; true means stop now.
    pub fn update(&mut self, monitor: &Monitor, value: f64) -> bool {
        if monitor.improved(value, self.best, 0.0) {
            self.best = Some(value);
            self.wait = 0;
            false
        } else {
            self.wait += 1;
            self.wait >= self.patience
        }
    }
}

/// Multiply the learning rate by `factor` after `patience` epochs without an improvement of more
/// than 1e-4, never below `min_lr` (Keras `ReduceLROnPlateau`, cooldown 0).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReduceLrOnPlateau {
    pub factor: f32,
    pub patience: usize,
    pub min_lr: f32,
    #[serde(default)]
    best: Option<f64>,
    #[serde(default)]
    wait: usize,
}

impl ReduceLrOnPlateau {
    pub fn new(factor: f32, patience: usize, min_lr: f32) -> Self {
        Self {
            factor,
            patience,
            min_lr,
            best: None,
            wait: 0,
        }
    }

    /// Feeds one epoch's value; returns the new learning rate when it changes.
    pub fn update(&mut self, monitor: &Monitor, value: f64, lr: f32) -> Option<f32> {
        if monitor.improved(value, self.best, 1e-4) {
            self.best = Some(value);
            self.wait = 0;
            return None;
        }
        self.wait += 1;
        if self.wait >= self.patience && lr > self.min_lr {
            self.wait = 0;
            return Some((lr * self.factor).max(self.min_lr));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_stopping_counts_epochs_without_improvement() {
        let m = Monitor::default();
        let mut es = EarlyStopping::new(2, true);
        // val_loss: better, better, worse, worse -> stop on the 2nd epoch without improvement.
        let stops: Vec<bool> = [1.0, 0.8, 0.9, 0.85]
            .iter()
            .map(|&v| es.update(&m, v))
            .collect();
        assert_eq!(stops, [false, false, false, true]);
        let acc = Monitor::new("val_accuracy").unwrap();
        let mut es = EarlyStopping::new(1, false);
        assert!(!es.update(&acc, 0.5) && !es.update(&acc, 0.6) && es.update(&acc, 0.6));
        assert!(Monitor::new("f1").is_err());
    }

    #[test]
    fn reduce_lr_on_plateau_steps_down_to_the_floor() {
        let m = Monitor::default();
        let mut r = ReduceLrOnPlateau::new(0.2, 2, 1e-4);
        let mut lr = 1e-2f32;
        let mut seen = Vec::new();
        for v in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0] {
            if let Some(new) = r.update(&m, v, lr) {
                lr = new;
                seen.push(lr);
            }
        }
        // Epoch 1 sets the best; epochs 2-3 plateau -> 2e-3; 4-5 -> 4e-4; 6-7 -> floor 1e-4.
        assert_eq!(seen.len(), 3);
        assert!((seen[0] - 2e-3).abs() < 1e-9 && (seen[1] - 4e-4).abs() < 1e-9 && seen[2] == 1e-4);
        // An improvement smaller than 1e-4 is no improvement.
        let mut r = ReduceLrOnPlateau::new(0.5, 1, 0.0);
        assert_eq!(r.update(&m, 1.0, 1.0), None);
        assert_eq!(r.update(&m, 0.99995, 1.0), Some(0.5));
    }
}
