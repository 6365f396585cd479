//! The subcommands, one module per family; `main.rs` holds the top-level parser and dispatch.

pub mod bench;
pub mod data;
pub mod inspect;
pub mod train;
pub mod transfer;

/// First Ctrl-C: finish the current step, save, explain how to resume. A second one exits at once.
pub fn install_interrupt(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step (Ctrl-C again to quit at once)");
    });
}
