//! The subcommands, one module per family; `main.rs` holds the top-level parser and dispatch.

pub mod bench;
pub mod data;
pub mod inspect;
pub mod train;
pub mod transfer;

/// First Ctrl-C (or SIGTERM, SIGHUP: a closed terminal, a killed job): finish the current step,
/// save, explain how to resume. A second one exits at once.
pub fn install_interrupt(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step (Ctrl-C again to quit at once)");
    });
}

/// Ok(None) where `--stop-after-steps` ended the run as asked (its message is printed): that is
/// a success, exit 0. Any other result passes through.
pub fn unless_stopped<T>(
    r: Result<T, cnn_wgpu::train::TrainError>,
) -> Result<Option<T>, cnn_wgpu::train::TrainError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(
            e @ cnn_wgpu::train::TrainError::Interrupted {
                requested: true, ..
            },
        ) => {
            eprintln!("{e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `--lr` / `--min-lr`: a finite number >= 0, refused before anything runs (a negative rate
/// trains uphill without a word, NaN or inf fail only at the second step).
pub fn learning_rate(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{s}: a learning rate is a finite number >= 0"))
    }
}

/// `--validation-split`: a fraction in [0, 1), refused when parsed whatever the data is.
pub fn validation_fraction(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s}: the validation split is a fraction in [0, 1)"))
    }
}

/// `--reduce-lr-factor`: strictly between 0 and 1, or the learning rate would not go down.
pub fn reduce_factor(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!(
            "{s}: the factor must be between 0 and 1 (exclusive)"
        ))
    }
}
