//! Every shader module parses and validates with naga: no GPU needed.

use cnn_wgpu::gpu::ShaderId;

fn validate(id: ShaderId) -> Result<(), String> {
    let src = id.source();
    let module = naga::front::wgsl::parse_str(&src).map_err(|e| e.emit_to_string(&src))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string(&src))?;
    Ok(())
}

#[test]
fn every_shader_module_validates() {
    let mut failures = Vec::new();
    for id in ShaderId::ALL {
        if let Err(e) = validate(id) {
            failures.push(format!("{id:?} ({:?}):\n{e}", id.files()));
        }
    }
    assert!(
        failures.is_empty(),
        "naga rejected:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_file_in_shaders_belongs_to_a_module() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let used: std::collections::BTreeSet<&str> = ShaderId::ALL
        .iter()
        .flat_map(|id| id.files().iter().copied())
        .collect();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("shaders/ exists") {
        let name = entry
            .expect("dir entry")
            .file_name()
            .into_string()
            .expect("utf-8 name");
        if name.ends_with(".wgsl") {
            files.push(name);
        }
    }
    assert!(!files.is_empty(), "no .wgsl files in {}", dir.display());
    for f in &files {
        assert!(
            used.contains(f.as_str()),
            "shaders/{f} is not part of any ShaderId, so it is never validated or used"
        );
    }
    for u in &used {
        assert!(
            files.iter().any(|f| f == u),
            "ShaderId names shaders/{u}, which does not exist"
        );
    }
}

/// `cnn-wgpu shaders --out DIR` (what the Tint check and anyone else reads) writes each module
/// exactly as the engine compiles it; modules.json says which use subgroups (read here from
/// the text: any subgroup built-in or function) and where each `shaders/` file starts, which
/// is checked against the file on disk.
#[test]
fn the_modules_are_written_out_as_compiled() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cnn-wgpu"))
        .arg("shaders")
        .arg("--out")
        .arg(tmp.path())
        // The manifest needs an adapter to simulate the classes on: tests/manifest.rs.
        .arg("--no-manifest")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("modules.json")).unwrap())
            .unwrap();
    let modules = index["modules"].as_array().unwrap();
    assert_eq!(modules.len(), ShaderId::ALL.len());
    let shaders = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for (id, m) in ShaderId::ALL.iter().zip(modules) {
        let text = std::fs::read_to_string(tmp.path().join(m["file"].as_str().unwrap())).unwrap();
        assert_eq!(text, id.source(), "{id:?}");
        let subgroups = [
            "subgroup_invocation_id",
            "subgroup_id",
            "subgroup_size",
            "subgroupBroadcast",
        ]
        .iter()
        .any(|w| text.contains(w));
        assert_eq!(m["uses_subgroups"], subgroups, "{id:?}");
        let lines: Vec<&str> = text.lines().collect();
        for (file, first) in m["assembled_from"]
            .as_array()
            .unwrap()
            .iter()
            .zip(m["first_lines"].as_array().unwrap())
        {
            let on_disk = std::fs::read_to_string(shaders.join(file.as_str().unwrap())).unwrap();
            let first = first.as_u64().unwrap() as usize;
            let n = on_disk.lines().count();
            assert_eq!(
                lines[first - 1..first - 1 + n],
                on_disk.lines().collect::<Vec<_>>()[..],
                "{id:?}: {file} from line {first}"
            );
        }
    }
}
