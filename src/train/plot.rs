//! `curves.png`: training vs validation accuracy and loss per epoch, raw and smoothed with an
//! exponential moving average (factor 0.8, as the book smooths its curves).

use std::path::Path;

use plotters::prelude::*;

use super::{EpochRecord, TrainError};

/// The book's smoothing: s[0] = x[0], s[i] = 0.8 s[i-1] + 0.2 x[i].
pub fn smooth(points: &[f64], factor: f64) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::with_capacity(points.len());
    for &p in points {
        let s = out
            .last()
            .map_or(p, |&prev| prev * factor + p * (1.0 - factor));
        out.push(s);
    }
    out
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An embedded font, so the plot renders the same on a machine with no fonts installed.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Draws the two panels into a PNG at `path`.
pub fn curves(history: &[EpochRecord], path: &Path) -> Result<(), TrainError> {
    register_font();
    let (w, h) = (1200u32, 480u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let draw_err = |e: String| TrainError::Invalid(format!("drawing {}: {e}", path.display()));
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
        let panels = root.split_evenly((1, 2));
        let epochs: Vec<f64> = history.iter().map(|r| r.epoch as f64).collect();
        let series = [
            (
                "accuracy",
                history.iter().map(|r| r.accuracy).collect::<Vec<_>>(),
                history
                    .iter()
                    .filter_map(|r| r.val_accuracy)
                    .collect::<Vec<_>>(),
            ),
            (
                "loss",
                history.iter().map(|r| r.loss).collect(),
                history.iter().filter_map(|r| r.val_loss).collect(),
            ),
        ];
        for (area, (name, train, val)) in panels.iter().zip(series) {
            let all: Vec<f64> = train
                .iter()
                .chain(&val)
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            let (lo, hi) = all
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let (lo, hi) = if lo.is_finite() && hi > lo {
                (lo, hi)
            } else {
                (lo.min(0.0), lo.max(0.0) + 1.0)
            };
            let pad = (hi - lo) * 0.05;
            let x_max = epochs.last().copied().unwrap_or(1.0).max(2.0);
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("Training and validation {name}"),
                    ("sans-serif", 20),
                )
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(1.0..x_max, (lo - pad)..(hi + pad))
                .map_err(|e| draw_err(e.to_string()))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(name)
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(|e| draw_err(e.to_string()))?;
            let lines = [
                (format!("training {name}"), train.clone(), BLUE.mix(0.3), 1),
                (format!("validation {name}"), val.clone(), RED.mix(0.3), 1),
                (
                    format!("training {name} (smoothed)"),
                    smooth(&train, 0.8),
                    BLUE.mix(1.0),
                    2,
                ),
                (
                    format!("validation {name} (smoothed)"),
                    smooth(&val, 0.8),
                    RED.mix(1.0),
                    2,
                ),
            ];
            for (label, ys, color, width) in lines {
                if ys.is_empty() {
                    continue;
                }
                let style = color.stroke_width(width);
                chart
                    .draw_series(LineSeries::new(epochs.iter().copied().zip(ys), style))
                    .map_err(|e| draw_err(e.to_string()))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(|e| draw_err(e.to_string()))?;
        }
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).expect("buffer matches the size");
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| draw_err(e.to_string()))?;
    super::write_atomic(path, png.get_ref())
}

#[cfg(test)]
mod tests {
    use super::smooth;

    #[test]
    fn smoothing_is_the_books_moving_average() {
        let s = smooth(&[1.0, 0.0, 0.0, 1.0], 0.8);
        // 1; 0.8; 0.64; 0.512 + 0.2
        let want = [1.0, 0.8, 0.64, 0.712];
        for (a, b) in s.iter().zip(want) {
            assert!((a - b).abs() < 1e-12);
        }
        assert!(smooth(&[], 0.8).is_empty());
    }
}
