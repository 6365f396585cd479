//! `cargo xtask`: the project's chores, mirroring CI locally.
//!
//!   cargo xtask ci         fmt check, clippy -D warnings, naga validation, the whole test suite
//!   cargo xtask validate   naga validation of every shader (no GPU needed)
//!   cargo xtask bench      the bench suite on the shared workloads, JSON lines with the FMA peak
//!   cargo xtask fetch-weights --url URL --sha256 HEX [--out weights/vgg16_notop.safetensors]
//!                          download weights with a progress bar; saved only if the checksum matches

mod fetch;

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

fn fetch_weights(args: &[String]) -> Result<(), String> {
    let mut url = None;
    let mut sha = None;
    let mut out = "weights/vgg16_notop.safetensors".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--url" => url = Some(value()?),
            "--sha256" => sha = Some(value()?),
            "--out" => out = value()?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    let (Some(url), Some(sha)) = (url, sha) else {
        return Err("fetch-weights needs --url and --sha256 (weights/README.md lists the sources and their checksums)".into());
    };
    fetch::fetch(&url, &sha, std::path::Path::new(&out))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("validate") => validate(),
        Some("bench") => bench(&args[1..]),
        Some("fetch-weights") => fetch_weights(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <ci | validate | bench [bench options] | fetch-weights --url URL --sha256 HEX [--out PATH]>");
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
