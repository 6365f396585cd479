//! The command line: adapter listing and choice, and the bench's JSON lines, run as a user would.

mod common;

use std::process::Command;

/// The tiny workloads file the bench tests run.
const SMOKE_WORKLOADS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/smoke_workloads.json");

/// The binary, run from a folder outside the repository (every path the tests give is
/// absolute), as an installed binary is.
fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cnn-wgpu"));
    c.current_dir(std::env::temp_dir());
    c
}

/// Runs `c`, failing the test with its stderr unless it succeeds.
fn run_ok(c: &mut Command) -> std::process::Output {
    let out = c.output().expect("run cnn-wgpu");
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn has_adapter() -> bool {
    let out = cli()
        .args(["devices", "--json"])
        .output()
        .expect("run cnn-wgpu");
    if out.status.success() {
        return true;
    }
    if std::env::var_os("CNN_WGPU_REQUIRE_GPU").is_some() {
        panic!(
            "CNN_WGPU_REQUIRE_GPU is set but `devices` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("skipped: no GPU adapter");
    false
}

/// Writes `per_class` flat 16x16 PNGs into `root/split/class/` for each split and class; the
/// colour differs by class and image, so the classes are learnable.
fn class_folders(root: &std::path::Path, splits: &[&str], classes: &[&str], per_class: u8) {
    for split in splits {
        for (k, class) in classes.iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let level = if k % 2 == 0 { 30 } else { 220 };
                image::RgbImage::from_pixel(16, 16, image::Rgb([level, i * 50, 9]))
                    .save(dir.join(format!("{i}.png")))
                    .unwrap();
            }
        }
    }
}

#[test]
fn devices_lists_adapters_with_limits() {
    if !has_adapter() {
        return;
    }
    let out = cli().args(["devices", "--json"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let first: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("one adapter line")).unwrap();
    for key in [
        "name",
        "backend",
        "device_type",
        "driver",
        "max_storage_buffer_binding_size",
        "max_buffer_size",
        "subgroup_sizes",
        "subgroup_gemm_width",
        "operand_textures",
        "max_texture_dimension_2d",
    ] {
        assert!(
            first.get(key).is_some(),
            "devices --json lacks {key}: {first}"
        );
    }
    assert!(first["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
    // The subgroup GEMM's width is the adapter's one fixed subgroup size, where it has one.
    if let Some(w) = first["subgroup_gemm_width"].as_u64() {
        assert_eq!(
            first["subgroup_sizes"],
            serde_json::json!([w, w]),
            "{first}"
        );
        assert!([8, 16, 32, 64].contains(&w), "{first}");
    }
}

#[test]
fn unknown_adapter_is_an_error_listing_the_available_ones() {
    if !has_adapter() {
        return;
    }
    let out = cli()
        .args(["bench", "--adapter", "no-such-gpu-xyz", "--workloads"])
        .arg(SMOKE_WORKLOADS)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-gpu-xyz") && err.contains("available"),
        "{err}"
    );
}

#[test]
fn unknown_backend_is_rejected() {
    let out = cli()
        .args(["devices", "--backend", "glide"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("glide") && err.contains("vulkan"), "{err}");
}

#[test]
fn bench_prints_one_json_line_per_workload() {
    if !has_adapter() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for class in ["a", "b"] {
        std::fs::create_dir_all(tmp.path().join(class)).unwrap();
        for i in 0..3 {
            image::RgbImage::from_pixel(20, 20, image::Rgb([i * 50, 9, 9]))
                .save(tmp.path().join(format!("{class}/{i}.png")))
                .unwrap();
        }
    }
    let out = run_ok(
        cli()
            .args([
                "bench",
                "--json",
                "--runs",
                "1",
                "--pipeline-images",
                "6",
                "--threads",
                "2",
                "--pipeline-data",
            ])
            .arg(tmp.path())
            .arg("--workloads")
            .arg(SMOKE_WORKLOADS),
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l["workload"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "conv2d_forward/tiny",
            "conv2d_backward/tiny_bwd",
            "matmul/tiny_mm",
            "pipeline/decode_resize_augment_150"
        ]
    );
    for l in &lines[..3] {
        assert!(
            l["ms"].as_f64().unwrap() > 0.0 && l["gflops"].as_f64().unwrap() > 0.0,
            "{l}"
        );
        assert!(l["engine"].as_str().unwrap().starts_with("cnn-wgpu"));
        assert!(!l["adapter"].as_str().unwrap().is_empty());
        assert!(l["gpu_bytes"].as_u64().unwrap() > 0);
    }
    // The GEMM kernels each workload ran: channel counts off the 4-multiples (6 output
    // channels, an RGB input's gradient, a 7x5 matmul) take the workgroup-memory kernel value
    // by value; the kernel gradient's 4 output channels take the adapter's vec4 family.
    assert_eq!(lines[0]["gemm"], "workgroup-memory 64x64", "{}", lines[0]);
    assert_eq!(lines[2]["gemm"], "workgroup-memory 64x64", "{}", lines[2]);
    let backward = lines[1]["gemm"].as_str().unwrap();
    let dw = backward
        .strip_prefix("dx workgroup-memory 64x64, dw ")
        .unwrap_or_else(|| panic!("{backward}"));
    assert!(
        dw.starts_with("subgroup-") || dw.starts_with("tiled "),
        "{backward}"
    );
    let p = &lines[3];
    assert_eq!(
        (p["images"].as_u64(), p["threads"].as_u64()),
        (Some(6), Some(2)),
        "{p}"
    );
    assert!(p["images_per_s"].as_f64().unwrap() > 0.0);
}

/// `bench --against direct` times each convolution workload in pairs with the direct
/// convolution and reports it beside the workload's own algorithm.
#[test]
fn bench_against_reports_the_baseline_beside_each_convolution() {
    if !has_adapter() {
        return;
    }
    let out = run_ok(
        cli()
            .args([
                "bench",
                "--json",
                "--runs",
                "1",
                "--conv-algo",
                "f4x4",
                "--against",
                "direct",
                "--only",
                "conv2d_forward",
                "--workloads",
            ])
            .arg(SMOKE_WORKLOADS),
    );
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(line["workload"], "conv2d_forward/tiny", "{line}");
    assert_eq!(line["algorithm"], "f4x4", "{line}");
    assert_eq!(line["baseline"], "direct", "{line}");
    assert!(line["baseline_ms"].as_f64().unwrap() > 0.0, "{line}");
    assert!(line["speedup"].as_f64().unwrap() > 0.0, "{line}");
}

/// `--against` and `--peak-paired` each pair a run with something else: asking for both is
/// refused before any adapter is opened.
#[test]
fn bench_refuses_two_kinds_of_pairing() {
    let out = cli()
        .args(["bench", "--against", "direct", "--peak-paired"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--against") && err.contains("--peak-paired"),
        "{err}"
    );
}

#[test]
fn bench_with_a_missing_workloads_file_names_it() {
    let out = cli()
        .args(["bench", "--workloads", "/nonexistent/workloads.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/workloads.json"), "{err}");
}

#[test]
fn prepare_and_augment_preview_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let flat = tmp.path().join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    for i in 0..4 {
        for (class, v) in [("cat", 40u8), ("dog", 220u8)] {
            image::RgbImage::from_fn(30, 24, |x, y| {
                image::Rgb([v, (x * 8) as u8, (y * 10) as u8])
            })
            .save(flat.join(format!("{class}.{i}.jpg")))
            .unwrap();
        }
    }
    let out = tmp.path().join("split");
    let run = run_ok(
        cli()
            .args(["prepare", "--from"])
            .arg(&flat)
            .arg("--to")
            .arg(&out)
            .args(["--train", "2", "--validation", "1", "--test", "1"]),
    );
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        text.contains("train") && text.contains("cats") && text.contains("8 copied"),
        "{text}"
    );

    let grid = tmp.path().join("grid.png");
    run_ok(
        cli()
            .args(["augment-preview", "--data"])
            .arg(out.join("train"))
            .arg("--out")
            .arg(&grid)
            .args(["--seed", "3", "--image-size", "40"]),
    );
    let img = image::open(&grid).unwrap();
    // 3 cells of 40 plus 4 gutters of 4.
    assert_eq!((img.width(), img.height()), (136, 136));

    let run = cli()
        .args(["prepare", "--from"])
        .arg(tmp.path().join("missing"))
        .arg("--to")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("missing"));
}

#[test]
fn check_data_counts_and_reports_unreadable_files() {
    let tmp = tempfile::tempdir().unwrap();
    for class in ["cats", "dogs"] {
        std::fs::create_dir_all(tmp.path().join(class)).unwrap();
        for i in 0..3 {
            image::RgbImage::from_pixel(12, 10, image::Rgb([9, 9, 9]))
                .save(tmp.path().join(format!("{class}/{i}.png")))
                .unwrap();
        }
    }
    std::fs::write(
        tmp.path().join("dogs/broken.jpg"),
        b"\xff\xd8\xff truncated",
    )
    .unwrap();
    // A real JPEG cut at 60%, as an interrupted copy leaves it: decoders would fill the rest
    // with gray.
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&image::RgbImage::from_fn(40, 40, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 6) as u8, 90])
        }))
        .unwrap();
    std::fs::write(tmp.path().join("cats/cut.jpg"), &jpeg[..jpeg.len() * 3 / 5]).unwrap();
    // A symlink loop named like an image is left out with a warning naming it.
    #[cfg(unix)]
    std::os::unix::fs::symlink("loop.jpg", tmp.path().join("dogs/loop.jpg")).unwrap();
    let unreadable = if cfg!(unix) { 3 } else { 2 };
    let run = run_ok(
        cli()
            .args(["check-data", "--image-size", "8", "--data"])
            .arg(tmp.path()),
    );
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        text.contains("6 images decoded")
            && text.contains(&format!("{unreadable} skipped"))
            && text.contains("broken.jpg")
            && text.contains("cut.jpg"),
        "{text}"
    );
    #[cfg(unix)]
    {
        assert!(text.contains("loop.jpg"), "{text}");
        let run = cli()
            .args(["check-data", "--strict", "--data"])
            .arg(tmp.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && err.contains("loop.jpg"), "{err}");
        std::fs::remove_file(tmp.path().join("dogs/loop.jpg")).unwrap();
    }
    // The warning names the file once.
    assert_eq!(
        String::from_utf8_lossy(&run.stderr)
            .matches("broken.jpg")
            .count(),
        1
    );

    let run = cli()
        .args(["check-data", "--strict", "--data"])
        .arg(tmp.path())
        .output()
        .unwrap();
    // --strict stops at the first unreadable file (cats/ comes first), then at the next.
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("cut.jpg") && err.contains("truncated"),
        "{err}"
    );
    std::fs::remove_file(tmp.path().join("cats/cut.jpg")).unwrap();
    let run = cli()
        .args(["check-data", "--strict", "--data"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("broken.jpg"));
}

/// SIGTERM (a killed job, a closed session) saves and explains like Ctrl-C, and the run resumes.
#[cfg(unix)]
#[test]
fn sigterm_saves_the_run_like_ctrl_c() {
    use std::io::{BufRead, BufReader};
    if !has_adapter() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    class_folders(tmp.path(), &["train", "validation"], &["cats", "dogs"], 4);
    let out = tmp.path().join("run");
    let train = || {
        let mut c = cli();
        c.args(["train", "--model", "small-convnet", "--image-size", "48"])
            .args(["--epochs", "100000", "--batch", "4", "--data"])
            .arg(tmp.path())
            .arg("--out")
            .arg(&out);
        c
    };
    let mut child = train()
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Training has begun once the model is announced; the handler is installed right after.
    let mut before = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("trainable weight tensors") {
            break;
        }
        before.push(line);
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = before
        .into_iter()
        .chain(lines.map(Result::unwrap))
        .collect();
    let status = child.wait().unwrap();
    let err = rest.join("\n");
    assert!(
        !status.success() && err.contains("interrupted in epoch") && err.contains("--resume"),
        "{status:?}: {err}"
    );
    assert!(out.join("last.safetensors").is_file());
    let run = train()
        .args(["--resume", "--stop-after-steps", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success() && err.contains("resuming in epoch"),
        "{err}"
    );
}

/// A huge --image-size is a clear error and a normal exit, not an aborted process.
#[test]
fn absurd_image_sizes_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    class_folders(tmp.path(), &["train", "validation"], &["cats", "dogs"], 1);
    let out = tmp.path().join("run");
    let mut train = cli();
    train
        .args(["train", "--model", "small-convnet", "--out"])
        .arg(&out)
        .arg("--data")
        .arg(tmp.path());
    let mut check = cli();
    check
        .args(["check-data", "--data"])
        .arg(tmp.path().join("train"));
    for (command, mut c) in [("train", train), ("check-data", check)] {
        let run = c.args(["--image-size", "100000"]).output().unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{command:?}: {err}");
        assert!(err.contains("100000x100000"), "{command:?}: {err}");
    }
    if !has_adapter() {
        return;
    }
    let run = cli()
        .args([
            "train",
            "--model",
            "small-convnet",
            "--image-size",
            "4000",
            "--data",
        ])
        .arg(tmp.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.code() == Some(1)
            && err.contains("dense.kernel")
            && err.contains("max_buffer_size"),
        "{err}"
    );
}

/// A workloads file asking for an empty tensor, or for one no buffer of the adapter holds, is a
/// clear error naming the file or the workload, not a panic in wgpu or an abort while the host
/// fills terabytes of input.
#[test]
fn bench_refuses_empty_and_oversized_workloads_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, json: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, json).unwrap();
        path
    };
    // `bench` on this workloads file: its exit code and stderr.
    let bench = |file: &std::path::Path| {
        let run = cli()
            .arg("bench")
            .arg("--workloads")
            .arg(file)
            .output()
            .unwrap();
        (
            run.status.code(),
            String::from_utf8_lossy(&run.stderr).into_owned(),
        )
    };
    let empty = write(
        "empty.json",
        r#"{"conv2d_forward": [{"name": "none", "n": 2, "h": 5, "w": 5, "cin": 4, "cout": 0}]}"#,
    );
    // Refused when the file is read, before any adapter is opened.
    let (code, err) = bench(&empty);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("empty.json") && err.contains("conv2d_forward/none has cout 0"),
        "{err}"
    );
    if !has_adapter() {
        return;
    }
    // The conv input alone would be 2 x 10^6 x 10^6 x 64 floats; the matmul's inputs fit but
    // its (10^8, 10^8) output does not.
    for (json, workload) in [
        (
            r#"{"conv2d_forward": [{"name": "huge", "n": 2, "h": 1000000, "w": 1000000, "cin": 64, "cout": 64}]}"#,
            "conv2d_forward/huge",
        ),
        (
            r#"{"matmul": [{"name": "wide", "m": 100000000, "n": 100000000, "k": 4}]}"#,
            "matmul/wide",
        ),
    ] {
        let (code, err) = bench(&write("big.json", json));
        assert_eq!(code, Some(1), "{workload}: {err}");
        assert!(
            err.contains(&format!("workload {workload}:")) && err.contains("max_buffer_size"),
            "{err}"
        );
        // The cause is in the message itself, so it is not printed twice.
        assert!(!err.contains("caused by"), "{err}");
    }
}

/// A validation split outside [0, 1) is refused when parsed, whatever the data: it used to be
/// checked only for a CSV file and silently ignored beside class folders.
#[test]
fn train_refuses_a_validation_split_that_is_not_a_fraction() {
    for bad in ["1.5", "1", "-0.1", "nan"] {
        let run = cli()
            .args(["train", "--model", "small-convnet", "--data", "unused"])
            .arg(format!("--validation-split={bad}"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("fraction in [0, 1)"), "{bad}: {err}");
    }
}

/// `train --help` names every model of the zoo, as `--model` takes them.
#[test]
fn train_help_lists_the_zoo() {
    let out = run_ok(cli().args(["train", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout);
    for name in cnn_wgpu::model::zoo::NAMES {
        assert!(
            help.contains(name),
            "train --help does not name {name}:\n{help}"
        );
    }
}

/// Labels are class indices in sorted order, so splits whose class folders differ would train
/// with an impossible label shape (an extra class) or swapped labels (a renamed one): refused
/// before anything is written, naming the split and the difference.
#[test]
fn train_refuses_splits_whose_class_folders_differ() {
    let tmp = tempfile::tempdir().unwrap();
    class_folders(tmp.path(), &["train"], &["cats", "dogs"], 2);
    class_folders(tmp.path(), &["validation"], &["birds", "cats", "dogs"], 2);
    class_folders(tmp.path(), &["test"], &["cats", "zebra"], 2);
    let out = tmp.path().join("run");
    let train = || {
        cli()
            .args([
                "train",
                "--model",
                "small-convnet",
                "--image-size",
                "32",
                "--data",
            ])
            .arg(tmp.path())
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let run = train();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("validation") && err.contains("extra birds"),
        "{err}"
    );
    std::fs::remove_dir_all(tmp.path().join("validation/birds")).unwrap();
    let run = train();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success()
            && err.contains("test")
            && err.contains("missing dogs")
            && err.contains("extra zebra"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
}

#[test]
fn summary_prints_keras_totals() {
    let run = run_ok(cli().args([
        "summary",
        "--model",
        "vgg16-classifier",
        "--trainable-from",
        "flatten",
    ]));
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        text.contains("Total params: 16,812,353") && text.contains("Trainable params: 2,097,665"),
        "{text}"
    );
    let run = cli()
        .args(["summary", "--model", "mnist-convnet"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&run.stdout).contains("Total params: 93,322"));
    let run = cli().args(["summary", "--model", "nope"]).output().unwrap();
    assert!(
        !run.status.success() && String::from_utf8_lossy(&run.stderr).contains("small-convnet")
    );
    // VGG16's five 2x2 pools need a side of 32 at the least.
    let run = cli()
        .args(["summary", "--model", "vgg16-base", "--image-size", "20"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.code() == Some(1) && err.contains("32x32 is the least it takes"),
        "{err}"
    );
}

#[test]
fn train_writes_a_run_folder_and_evaluates_on_test() {
    if !has_adapter() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for split in ["train", "validation", "test"] {
        for (class, v) in [("cats", 30u8), ("dogs", 220u8)] {
            let dir = tmp.path().join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..4 {
                image::RgbImage::from_fn(50, 50, |x, _| {
                    image::Rgb([v, (x * 5) as u8, (i * 40) as u8])
                })
                .save(dir.join(format!("{i}.png")))
                .unwrap();
            }
        }
    }
    std::fs::write(tmp.path().join("train/cats/broken.jpg"), b"").unwrap();
    // `train` of the small convnet on this folder into `out`, with `extra` flags.
    let train = |out: &std::path::Path, extra: &[&str]| {
        let mut c = cli();
        c.args([
            "train",
            "--model",
            "small-convnet",
            "--image-size",
            "48",
            "--epochs",
            "2",
            "--batch",
            "4",
            "--seed",
            "5",
            "--data",
        ])
        .arg(tmp.path())
        .arg("--out")
        .arg(out)
        .args(extra);
        c
    };
    let out = tmp.path().join("run");
    run_ok(&mut train(&out, &["--augment"]));
    for f in [
        "config.json",
        "history.json",
        "history.csv",
        "last.safetensors",
        "best.safetensors",
        "metrics.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert!(
        metrics["test_accuracy"].as_f64().is_some() && metrics["skipped_files"] == 1,
        "{metrics}"
    );
    let history = std::fs::read_to_string(out.join("history.csv")).unwrap();
    assert_eq!(history.lines().count(), 3, "{history}");

    // Training again into the same folder without --resume would throw the run away: refused,
    // with every file left as it was, until --overwrite says so.
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let run = train(&out, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success()
            && err.contains("already holds a run")
            && err.contains("--resume")
            && err.contains("--overwrite"),
        "{err}"
    );
    for (p, bytes) in &before {
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "{} changed", p.display());
    }
    let run = train(&out, &["--resume", "--overwrite"]).output().unwrap();
    assert!(!run.status.success());
    run_ok(&mut train(&out, &["--overwrite"]));
    let history = std::fs::read_to_string(out.join("history.csv")).unwrap();
    assert_eq!(
        history.lines().count(),
        3,
        "a fresh run, not appended: {history}"
    );

    // Time-boxed and resumed: stopped after one step (as Ctrl-C would), then continued.
    let resumable = tmp.path().join("resumable");
    let args = |extra: &[&str]| train(&resumable, extra).output().unwrap();
    // --resume with nothing to resume says so.
    let run = args(&["--resume"]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("nothing to resume"),
        "{err}"
    );
    // --stop-after-steps did what was asked: exit 0, and both messages number alike.
    let run = args(&["--stop-after-steps", "1"]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(
        err.contains("stopped as --stop-after-steps asked in epoch 1 after step 1")
            && err.contains("--resume"),
        "{err}"
    );
    // A resumed run keeps its settings: a different one is refused by name, and config.json
    // keeps what actually ran.
    let config = std::fs::read(resumable.join("config.json")).unwrap();
    let run = args(&["--resume", "--lr", "0.5"]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("optimizer: the run has"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(resumable.join("config.json")).unwrap(),
        config
    );
    let run = args(&["--resume"]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(err.contains("resuming in epoch 1 after step 1"), "{err}");
    assert_eq!(
        std::fs::read_to_string(resumable.join("history.csv"))
            .unwrap()
            .lines()
            .count(),
        3
    );

    let run = cli()
        .args([
            "train",
            "--model",
            "small-convnet",
            "--monitor",
            "f1",
            "--data",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains("f1"));

    // Learning rates that would train uphill or fail at step 2 are refused up front, naming
    // the value; so is a factor that would not reduce the rate.
    for (flag, value) in [
        ("--lr", "-1"),
        ("--lr", "nan"),
        ("--lr", "inf"),
        ("--min-lr", "-0.5"),
        ("--reduce-lr-factor", "1.5"),
    ] {
        let run = cli()
            .args(["train", "--model", "small-convnet", "--out"])
            .arg(tmp.path().join("never"))
            .arg(format!("{flag}={value}"))
            .arg("--data")
            .arg(tmp.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && err.contains(flag) && err.contains(value),
            "{flag} {value}: {err}"
        );
        assert!(
            !tmp.path().join("never").exists(),
            "nothing written for {flag} {value}"
        );
    }
}

/// `predict` takes folders (walked with their sub-folders, in natural order) and runs them a
/// batch at a time: each image gets what it gets predicted alone, one file per call. An image
/// that cannot be decoded costs only itself: the others are printed, then the command fails
/// naming it. A missing path or a folder without images is refused before anything runs.
#[test]
fn predict_takes_folders_in_batches_and_an_unreadable_image_costs_only_itself() {
    if !has_adapter() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    class_folders(
        tmp.path(),
        &["train", "validation", "test"],
        &["cats", "dogs"],
        3,
    );
    let run = tmp.path().join("run");
    run_ok(
        cli()
            .args(["train", "--model", "small-convnet", "--image-size", "48"])
            .args(["--batch", "4", "--stop-after-steps", "1", "--data"])
            .arg(tmp.path())
            .arg("--out")
            .arg(&run),
    );
    let ck = run.join("last.safetensors");
    let predict = |extra: &[&str], inputs: &[std::path::PathBuf]| {
        cli()
            .args(["predict", "--json", "--checkpoint"])
            .arg(&ck)
            .args(extra)
            .args(inputs)
            .output()
            .unwrap()
    };
    let rows = |out: &std::process::Output| -> Vec<(String, f64)> {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["file"].as_str().unwrap().to_string(),
                    r["probabilities"]["dogs"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let test = tmp.path().join("test");
    let files: Vec<std::path::PathBuf> = ["cats", "dogs"]
        .iter()
        .flat_map(|c| (0..3).map(move |i| format!("{c}/{i}.png")))
        .map(|f| test.join(f))
        .collect();
    // Each image alone, one call each.
    let alone: Vec<(String, f64)> = files
        .iter()
        .flat_map(|f| {
            let out = predict(&[], std::slice::from_ref(f));
            assert!(out.status.success());
            rows(&out)
        })
        .collect();
    // The folder in batches of 4 (the last one short).
    let out = predict(&["--batch", "4"], std::slice::from_ref(&test));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batched = rows(&out);
    let names = |r: &[(String, f64)]| r.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&batched),
        names(&alone),
        "the folder's images, in order"
    );
    for ((f, a), (_, b)) in alone.iter().zip(&batched) {
        // A batch may run other GEMM tiles than one image does: the sums differ by rounding.
        assert!((a - b).abs() <= 1e-5, "{f}: {a} alone, {b} in a batch");
    }

    std::fs::write(test.join("dogs/1b.jpg"), b"not an image").unwrap();
    let out = predict(&["--batch", "2"], std::slice::from_ref(&test));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("1 of 7 images") && err.contains("1b.jpg"),
        "{err}"
    );
    assert_eq!(
        names(&rows(&out)),
        names(&alone),
        "the others are all printed"
    );

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("inner")).unwrap();
    for (input, named) in [
        (empty.clone(), "empty"),
        (test.join("no-such.png"), "no-such.png"),
    ] {
        let out = predict(&[], &[files[0].clone(), input]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && out.stdout.is_empty() && err.contains(named),
            "{named}: {err}"
        );
    }
}

/// A synthetic telemetry CSV where a local pattern decides the class: class 1 rows hide a
/// (+3, -3, +3) motif at a random position in noise, class 0 rows hide (+3, +3, +3) — the same
/// energy, so only the shape tells them apart. conv1d-net must reach 95% validation accuracy.
#[test]
fn conv1d_net_learns_a_local_pattern_from_csv() {
    if !has_adapter() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("telemetry.csv");
    let mut state = 12345u64;
    let mut rnd = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) as f32
    };
    let (len, rows_n) = (48, 480);
    let mut text = String::new();
    for r in 0..rows_n {
        let class = r % 2;
        let mut v: Vec<f32> = (0..len).map(|_| rnd() - 0.5).collect();
        let at = (rnd() * (len - 3) as f32) as usize;
        let motif = if class == 1 {
            [3.0, -3.0, 3.0]
        } else {
            [3.0, 3.0, 3.0]
        };
        v[at..at + 3].copy_from_slice(&motif);
        let cells: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
        text += &format!("{},{class}\n", cells.join(","));
    }
    std::fs::write(&path, text).unwrap();
    let out = tmp.path().join("run");
    run_ok(
        cli()
            .args([
                "train",
                "--model",
                "conv1d-net",
                "--csv-label",
                "last",
                "--validation-split",
                "0.25",
                "--epochs",
                "12",
                "--batch",
                "32",
                "--lr",
                "1e-3",
                "--seed",
                "1",
                "--data",
            ])
            .arg(&path)
            .arg("--out")
            .arg(&out),
    );
    let history: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("history.json")).unwrap()).unwrap();
    let best = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["val_accuracy"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(best >= 0.95, "best validation accuracy {best}: {history}");

    // evaluate reads the CSV as train did: by default its last quarter, which gives what the
    // loop measured at the last epoch with the same weights.
    let ck = out.join("last.safetensors");
    let said = run_ok(
        cli()
            .args(["evaluate", "--checkpoint"])
            .arg(&ck)
            .arg("--data")
            .arg(&path),
    );
    let said = String::from_utf8_lossy(&said.stdout);
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("evaluation.json")).unwrap())
            .unwrap();
    let last = history.as_array().unwrap().last().unwrap();
    let (loss, want) = (
        e["loss"].as_f64().unwrap(),
        last["val_loss"].as_f64().unwrap(),
    );
    assert!(
        said.contains("(validation split)")
            && e["samples"] == 120
            && (loss - want).abs() <= 1e-5 * want.abs() + 1e-7
            && (e["accuracy"].as_f64().unwrap() - last["val_accuracy"].as_f64().unwrap()).abs()
                < 1e-6,
        "{said}{e} against the last epoch {last}"
    );
    // predict names each row; its classes agree with the labels as often as evaluate says.
    let p = run_ok(
        cli()
            .args(["predict", "--json", "--checkpoint"])
            .arg(&ck)
            .arg(&path),
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&p.stdout).unwrap();
    assert_eq!(rows.len(), rows_n);
    assert_eq!(
        rows[7]["file"].as_str().unwrap(),
        format!("{} row 8", path.display())
    );
    let right = rows
        .iter()
        .enumerate()
        .skip(rows_n - 120)
        .filter(|(r, row)| row["class"].as_str().unwrap() == (r % 2).to_string())
        .count();
    let acc = e["accuracy"].as_f64().unwrap();
    assert!(
        (right as f64 / 120.0 - acc).abs() < 1e-6,
        "predict gets {right} of 120 right, evaluate says {acc}"
    );

    std::fs::write(&path, "1,2,0\n1,oops,1\n").unwrap();
    let run = cli()
        .args(["train", "--model", "conv1d-net", "--data"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("line 2") && err.contains("column 2"),
        "{err}"
    );
}

#[test]
fn features_writes_a_layers_activations() {
    let Some(shared) = common::shared(&[
        "weights/vgg16_notop.safetensors",
        "data/cats_and_dogs_small/train/cats/cat.0.jpg",
    ]) else {
        return;
    };
    if !has_adapter() {
        return;
    }
    let weights = shared.join("weights/vgg16_notop.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let img = shared.join("data/cats_and_dogs_small/train/cats/cat.0.jpg");
    // `features` of `layer` at 64x64 for `images` into `out`, with `extra` flags.
    let features =
        |layer: &str, images: &[&std::path::Path], out: &std::path::Path, extra: &[&str]| {
            let mut c = cli();
            c.args([
                "features",
                "--layer",
                layer,
                "--image-size",
                "64",
                "--weights",
            ])
            .arg(&weights)
            .args(extra)
            .arg("--images")
            .args(images)
            .arg("--out")
            .arg(out);
            c
        };
    // The tensor's shape and values, and the files its metadata lists.
    let written = |path: &std::path::Path| {
        let bytes = std::fs::read(path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("block2_pool").unwrap();
        let v: Vec<f32> = bytemuck::pod_collect_to_vec(t.data());
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let files = meta.metadata().as_ref().unwrap()["files"].clone();
        (t.shape().to_vec(), v, files)
    };
    let out = tmp.path().join("f.safetensors");
    run_ok(&mut features("block2_pool", &[&img, &img], &out, &[]));
    let (shape, v, _) = written(&out);
    assert_eq!(shape, [2, 16, 16, 128]);
    assert_eq!(
        v[..v.len() / 2],
        v[v.len() / 2..],
        "the same image twice gives the same features"
    );
    assert!(
        v.iter().all(|x| *x >= 0.0) && v.iter().any(|x| *x > 0.0),
        "post-ReLU pooled activations"
    );
    // A folder's images (sub-folders included, in order) in batches: the same features as
    // the files named one by one in one batch, each image's own.
    let folder = tmp.path().join("images");
    for sub in ["a", "b"] {
        std::fs::create_dir_all(folder.join(sub)).unwrap();
        std::fs::copy(&img, folder.join(sub).join("cat.0.jpg")).unwrap();
    }
    let out2 = tmp.path().join("g.safetensors");
    run_ok(&mut features(
        "block2_pool",
        &[&folder],
        &out2,
        &["--batch", "1"],
    ));
    let (shape, v2, files) = written(&out2);
    assert_eq!(shape, [2, 16, 16, 128]);
    let worst = v
        .iter()
        .zip(&v2)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let top = v.iter().fold(0.0, |m: f32, x| m.max(x.abs()));
    // Batch 1 may run other GEMM tiles, or another convolution algorithm (the cost model
    // weighs the batch), than batch 2: the sums differ by rounding only, a few 1e-6 of the
    // largest value after four layers (BENCHMARKS.md, "Rounding"), far below another image's.
    assert!(worst <= 1e-4 * top, "{worst} of {top}");
    assert!(
        files.contains("a/cat.0.jpg") && files.contains("b/cat.0.jpg"),
        "{files}"
    );
    // Features cover every image: an undecodable one is an error naming it, and nothing is
    // written.
    std::fs::write(folder.join("b/cat.1.jpg"), b"").unwrap();
    let out3 = tmp.path().join("h.safetensors");
    let run = features("block2_pool", &[&folder], &out3, &[])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("cat.1.jpg") && !out3.exists(),
        "{err}"
    );
    let run = features("block9_pool", &[&img], &out, &[])
        .output()
        .unwrap();
    assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains("block9_pool"));
}

#[test]
fn selftest_checks_every_family_and_op_and_says_so() {
    if !has_adapter() {
        return;
    }
    let run = run_ok(cli().arg("selftest"));
    let out = String::from_utf8_lossy(&run.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("selftest on "), "{out}");
    let verdicts = &lines[1..lines.len() - 1];
    assert!(
        verdicts.iter().all(|l| l.starts_with("ok ")),
        "every check passes on this adapter: {out}"
    );
    // Every op, forward and backward, on every family.
    let families: std::collections::BTreeSet<&str> =
        verdicts.iter().map(|l| l[5..33].trim_end()).collect();
    assert!(families.contains("workgroup-memory"), "{families:?}");
    for op in [
        "conv2d forward",
        "conv2d backward dx",
        "conv2d backward dw",
        "conv2d backward db",
        "conv2d forward f2x2",
        "conv2d backward dx f2x2",
        "conv2d forward f4x4",
        "conv2d backward dx f4x4",
        "conv2d forward f6x6",
        "conv2d backward dx f6x6",
        "dense forward",
        "dense backward dx",
        "dense backward dw",
        "dense backward db",
        "max_pool2d forward",
        "max_pool2d backward",
        "avg_pool2d forward",
        "avg_pool2d backward",
        "relu forward",
        "relu backward",
        "sigmoid forward",
        "sigmoid backward",
        "softmax forward",
        "softmax backward",
    ] {
        for f in &families {
            assert!(
                verdicts
                    .iter()
                    .any(|l| l[5..].starts_with(f) && l.contains(op)),
                "{op} on {f}: {out}"
            );
        }
    }
    let last = lines[lines.len() - 1];
    assert!(
        last.starts_with(&format!(
            "{} checks on {} kernel families",
            verdicts.len(),
            families.len()
        )) && last.ends_with("all passed"),
        "{last}"
    );

    let run = run_ok(cli().args(["selftest", "--json"]));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), verdicts.len());
    assert!(rows.iter().all(|r| r["passed"] == true
        && r["worst"].as_f64().unwrap() <= 1.0
        && r["family"].is_string()));
}

/// lavapipe built for 1024-bit vectors reports 32-lane subgroups but runs 16 lanes together:
/// the subgroup GEMM, which names its lanes, would compute wrong results there. The probe run
/// when a device opens must catch it, so every check of `selftest` still passes (the CPU
/// references are the oracle), on the workgroup-memory kernels with a warning that says why,
/// or on a subgroup family where a later Mesa runs the 32 lanes it reports.
#[test]
fn subgroups_narrower_than_reported_are_caught_before_a_kernel_runs_on_them() {
    if !has_adapter() {
        return;
    }
    let lavapipe_1024 = || {
        let mut c = cli();
        c.env("LP_NATIVE_VECTOR_WIDTH", "1024")
            .env("CNN_WGPU_ADAPTER", "llvmpipe");
        c
    };
    let Ok(found) = lavapipe_1024().args(["devices", "--json"]).output() else {
        return;
    };
    if !found.status.success() {
        eprintln!("skipped: lavapipe is not this machine's adapter");
        return;
    }
    let run = run_ok(lavapipe_1024().arg("selftest"));
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    let last = out.lines().last().unwrap_or_default();
    assert!(last.ends_with("all passed"), "{out}\n{err}");
    let subgroup_family_ran = out.lines().any(|l| l[5..].starts_with("subgroup-"));
    if err.contains("reports 32-lane subgroups, but") {
        assert!(
            err.contains("lanes of invocation") && err.contains("workgroup-memory kernels"),
            "the warning says what the probe saw and what runs instead: {err}"
        );
        assert!(!subgroup_family_ran, "{out}");
        // The tiled and the workgroup-memory kernels.
        assert!(last.contains("on 2 kernel families"), "{last}");
    } else {
        // No mismatch found: the subgroup family runs wherever the adapter offers one.
        let offered = String::from_utf8_lossy(&found.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|a| a["subgroup_gemm_width"].is_u64());
        assert_eq!(subgroup_family_ran, offered, "{out}\n{err}");
    }
}

/// A tile height the subgroup GEMM does not have is refused before anything runs, naming the
/// variable and what it takes, rather than ignored (a comparison would silently time the
/// default).
#[test]
fn a_bad_subgroup_rows_setting_is_an_error_naming_it() {
    for bad in ["12", "rows", "-8"] {
        refused_naming("CNN_WGPU_SUBGROUP_ROWS", bad, "8, 16, 24 or 32");
    }
}

/// `devices` with the environment variable `var` set to `bad` fails before anything runs, and
/// its error names the variable, the value and what it takes (`takes`).
fn refused_naming(var: &str, bad: &str, takes: &str) {
    let out = cli().env(var, bad).arg("devices").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{var}={bad}: {err}");
    assert!(
        err.contains(&format!("{var}=\"{bad}\"")) && err.contains(takes),
        "{err}"
    );
}

/// A tiled configuration that does not exist is refused before anything runs, naming the
/// variable and the configurations there are.
#[test]
fn a_bad_tiled_configuration_is_an_error_naming_it() {
    for bad in ["256x256", "128X128", "64"] {
        refused_naming("CNN_WGPU_TILED", bad, "128x128, 128x64, 64x64 or 64x64-k16");
    }
}

/// `devices` says which family GEMM products take by default and which tiled configurations
/// the limits allow, and follows the switches that take families away.
#[test]
fn devices_reports_the_gemm_family_each_switch_leaves() {
    if !has_adapter() {
        return;
    }
    let family = |env: &[(&str, &str)]| {
        let mut c = cli();
        for (k, v) in env {
            c.env(k, v);
        }
        let out = run_ok(c.args(["devices", "--json"]));
        let first = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .unwrap();
        (
            first["gemm_family"].as_str().unwrap().to_string(),
            first["tiled_configs"].as_array().unwrap().len(),
            first["device_type"].as_str().unwrap().to_string(),
            first["subgroup_gemm_width"].as_u64(),
        )
    };
    let (default, configs, device_type, width) = family(&[]);
    // wgpu's default limits hold every configuration, and adapters give at least those.
    assert_eq!(configs, 4);
    match (device_type.as_str(), width) {
        ("Cpu", Some(w)) => assert_eq!(default, format!("subgroup-{w}")),
        _ => assert_eq!(default, "tiled"),
    }
    let (no_subgroups, ..) = family(&[("CNN_WGPU_NO_SUBGROUPS", "1")]);
    assert_eq!(no_subgroups, "tiled");
    // Planned as on a GPU: the tiled kernels first on any adapter.
    let (as_gpu, ..) = family(&[("CNN_WGPU_PLAN_AS_GPU", "1")]);
    assert_eq!(as_gpu, "tiled");
    let (as_gpu_without_tiled, ..) =
        family(&[("CNN_WGPU_PLAN_AS_GPU", "1"), ("CNN_WGPU_NO_TILED", "1")]);
    assert_eq!(
        as_gpu_without_tiled,
        width.map_or("workgroup-memory".to_string(), |w| format!("subgroup-{w}"))
    );
    let (neither, configs, ..) =
        family(&[("CNN_WGPU_NO_SUBGROUPS", "1"), ("CNN_WGPU_NO_TILED", "1")]);
    assert_eq!((neither.as_str(), configs), ("workgroup-memory", 0));
}

#[test]
fn a_bad_convolution_algorithm_is_an_error_naming_it() {
    for bad in ["f3x3", "winograd", "2"] {
        refused_naming(
            "CNN_WGPU_CONV_ALGO",
            bad,
            "auto, direct, f2x2, f4x4 or f6x6",
        );
        let out = cli()
            .args(["--conv-algo", bad, "devices"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--conv-algo {bad}: {err}");
        assert!(
            err.contains(&format!("'{bad}'")) && err.contains("auto, direct, f2x2, f4x4, f6x6"),
            "{err}"
        );
    }
}
