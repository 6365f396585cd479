//! `cargo xtask`: the project's chores, mirroring CI locally.
//!
//!   cargo xtask ci         fmt check, clippy -D warnings, naga validation, the whole test suite
//!   cargo xtask validate   naga validation of every shader (no GPU needed)
//!   cargo xtask bench      the bench suite on the shared workloads, JSON lines with the FMA peak

use std::process::{Command, ExitCode};

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--release",
        "--",
        "-D",
        "warnings",
    ])?;
    validate()?;
    cargo(&["test", "--workspace", "--release"])
}

fn validate() -> Result<(), String> {
    cargo(&["test", "--release", "--test", "shaders_validate"])
}

fn bench(extra: &[String]) -> Result<(), String> {
    let mut args = vec!["run", "--release", "--", "bench", "--peak"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("validate") => validate(),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <ci|validate|bench [bench options]>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
