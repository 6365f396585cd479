//! Sequences from CSV: each row is a feature vector followed by a 0/1 label (the telemetry
//! example's format), read as (L, 1) sequences for a 1-D convnet.

use std::path::Path;

use super::dataset::{Dataset, LabelKind};
use super::image_io::Image;
use super::DataError;

/// Rows of a CSV file as sequences with binary labels. Values are kept as f32 (not 8-bit).
pub struct CsvDataset {
    pub rows: Vec<Vec<f32>>,
    pub labels: Vec<usize>,
    pub name: String,
    class_names: Vec<String>,
}

impl CsvDataset {
    /// Reads `path`: every row `v1,...,vL,label` with the same L; a header row (first field not
    /// a number) is skipped. Errors name the line and column of the first bad field.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for (line, mut values) in read_rows(path)? {
            if values.len() < 2 {
                return Err(DataError::Csv {
                    path: path.to_path_buf(),
                    line,
                    reason: format!(
                        "{} field(s); a row needs at least one value and a label",
                        values.len()
                    ),
                });
            }
            let label = values.pop().expect("at least two fields");
            if label != 0.0 && label != 1.0 {
                return Err(DataError::Csv {
                    path: path.to_path_buf(),
                    line,
                    reason: format!("column {}: label {label} must be 0 or 1", values.len() + 1),
                });
            }
            labels.push(label as usize);
            rows.push(values);
        }
        Ok(Self::new(path, rows, labels))
    }

    /// Reads `path` for prediction by a model that takes sequences of `len` values: rows of
    /// `len` values, or of `len` values and a label (training's format; the label is left
    /// out). Every class is 0.
    pub fn read_unlabelled(path: &Path, len: usize) -> Result<Self, DataError> {
        let mut rows = Vec::new();
        for (line, mut values) in read_rows(path)? {
            if values.len() == len + 1 {
                values.pop();
            } else if values.len() != len {
                return Err(DataError::Csv {
                    path: path.to_path_buf(),
                    line,
                    reason: format!(
                        "{} fields; the model takes sequences of {len} values (a row holds {len}, or {} with the label last)",
                        values.len(),
                        len + 1
                    ),
                });
            }
            rows.push(values);
        }
        let n = rows.len();
        Ok(Self::new(path, rows, vec![0; n]))
    }

    fn new(path: &Path, rows: Vec<Vec<f32>>, labels: Vec<usize>) -> Self {
        Self {
            rows,
            labels,
            name: path.display().to_string(),
            class_names: vec!["0".into(), "1".into()],
        }
    }

    /// Splits off the last `fraction` of the rows for validation (Keras' `validation_split`).
    pub fn split(mut self, fraction: f32) -> Result<(CsvDataset, CsvDataset), DataError> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(DataError::Invalid(format!(
                "validation split {fraction} must be in [0, 1)"
            )));
        }
        let cut = self.rows.len() - (self.rows.len() as f32 * fraction).round() as usize;
        let val = CsvDataset {
            rows: self.rows.split_off(cut),
            labels: self.labels.split_off(cut),
            name: format!("{} (validation)", self.name),
            class_names: self.class_names.clone(),
        };
        Ok((self, val))
    }

    pub fn sequence_len(&self) -> usize {
        self.rows[0].len()
    }
}

impl Dataset for CsvDataset {
    fn len(&self) -> usize {
        self.rows.len()
    }
    fn sample_shape(&self) -> (usize, usize, usize) {
        // (1, L, 1): the loader's (H,W,C) with H = 1; the model reads it as (L, 1).
        (1, self.sequence_len(), 1)
    }
    fn label_kind(&self) -> LabelKind {
        LabelKind::Binary
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn class_of(&self, i: usize) -> usize {
        self.labels[i]
    }
    fn load(&self, _i: usize) -> Result<Image, DataError> {
        Err(DataError::Invalid(
            "CSV rows are real-valued; read them with `values`".into(),
        ))
    }
    fn values(&self, i: usize) -> Option<Vec<f32>> {
        Some(self.rows[i].clone())
    }
    fn describe(&self, i: usize) -> String {
        format!("{} row {}", self.name, i + 1)
    }
}

/// The numeric rows of `path` with their line numbers: every row has as many fields as the
/// first, each a finite number; a header row (first field not a number) is skipped; no data
/// rows is an error. Errors name the line and column of the first bad field.
fn read_rows(path: &Path) -> Result<Vec<(usize, Vec<f32>)>, DataError> {
    let text = std::fs::read_to_string(path).map_err(super::io_err(path))?;
    let bad = |line: usize, reason: String| DataError::Csv {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut rows: Vec<(usize, Vec<f32>)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.split(',').map(str::trim).collect();
        if rows.is_empty() && fields[0].parse::<f32>().is_err() {
            continue; // header
        }
        if let Some((_, first)) = rows.first() {
            if first.len() != fields.len() {
                return Err(bad(
                    line,
                    format!(
                        "{} fields, the rows before have {}",
                        fields.len(),
                        first.len()
                    ),
                ));
            }
        }
        let mut values = Vec::with_capacity(fields.len());
        for (c, f) in fields.iter().enumerate() {
            let v: f32 = f
                .parse()
                .map_err(|_| bad(line, format!("column {}: {f:?} is not a number", c + 1)))?;
            if !v.is_finite() {
                return Err(bad(line, format!("column {}: {f:?} is not finite", c + 1)));
            }
            values.push(v);
        }
        rows.push((line, values));
    }
    if rows.is_empty() {
        return Err(DataError::Invalid(format!(
            "{} has no data rows",
            path.display()
        )));
    }
    Ok(rows)
}
