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
