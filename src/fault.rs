//! A test seam for fault injection. The fault-injection tests must kill a training process at
//! exact moments (in the middle of writing a checkpoint, after a given step), which no timer from
//! outside can hit reliably. Armed once at the process edge (`main` reads `CNN_WGPU_PAUSE_AT`),
//! the process stops at the named point, says so on stderr and waits there to be killed. When
//! nothing is armed, each point costs one atomic load.
//!
//! Points: `step` (after each training step of this process) and `write:<file name>` (half-way
//! through an atomic write of that file, the first half synced to its temporary). The spec is
//! `<point>#<n>`: the n-th time this process reaches the point, counting from 1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

static ARMED: OnceLock<(String, usize)> = OnceLock::new();
static REACHED: AtomicUsize = AtomicUsize::new(0);

/// Arms the pause point `spec` (`<point>#<n>`, n >= 1) for the rest of the process.
pub fn arm(spec: &str) -> Result<(), String> {
    let bad = || {
        format!("pause point {spec:?}: expected <point>#<n> with n >= 1, e.g. step#5 or write:last.safetensors#2")
    };
    let (point, n) = spec.rsplit_once('#').ok_or_else(bad)?;
    let n: usize = n.parse().map_err(|_| bad())?;
    if point.is_empty() || n == 0 {
        return Err(bad());
    }
    ARMED
        .set((point.to_string(), n))
        .map_err(|_| "a pause point is already armed".to_string())
}

/// Whether any pause point is armed (callers that must prepare a point cheaply ask first).
pub fn armed() -> bool {
    ARMED.get().is_some()
}

/// Marks that `point` was reached; at the armed occurrence the process never returns from here.
pub fn reached(point: &str) {
    let Some((armed, n)) = ARMED.get() else {
        return;
    };
    if armed != point {
        return;
    }
    let count = REACHED.fetch_add(1, Ordering::SeqCst) + 1;
    if count == *n {
        eprintln!("paused at {point}#{n}, waiting to be killed");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
