//! The host-shader contract, checked by machine with no GPU: every shader module is read with
//! naga and compared with what the host assumes of it (`gpu::contract::ENTRY_POINTS`, and the
//! `Params` blocks the ops write):
//! - each entry point exists, has the workgroup size the host's grid assumes (or is sized by
//!   override constants where the host says so), and each binding the host binds is declared
//!   there with the same kind (uniform, read-only storage, read-write storage, texture), while
//!   a binding the host leaves out is never used and nothing the entry point uses is left out;
//! - every compute entry point of every module is one the host dispatches;
//! - each host `Params` type has the WGSL uniform struct's field names, offsets and size, in
//!   every module that reads it.

use std::collections::BTreeSet;

use cnn_wgpu::gpu::contract::{ParamsLayout, Workgroup, ENTRY_POINTS};
use cnn_wgpu::gpu::{Access, ShaderId};
use naga::{AddressSpace, StorageAccess, TypeInner};

struct Parsed {
    module: naga::Module,
    info: naga::valid::ModuleInfo,
}

fn parse(id: ShaderId) -> Parsed {
    let src = id.source();
    let module = naga::front::wgsl::parse_str(&src)
        .unwrap_or_else(|e| panic!("{id:?}: {}", e.emit_to_string(&src)));
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{id:?}: {}", e.emit_to_string(&src)));
    Parsed { module, info }
}

/// The kind of binding a global is declared as, in the host's terms.
fn declared(module: &naga::Module, var: &naga::GlobalVariable) -> Option<Access> {
    match var.space {
        AddressSpace::Uniform => Some(Access::Uniform),
        AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => {
            Some(Access::Write)
        }
        AddressSpace::Storage { .. } => Some(Access::Read),
        AddressSpace::Handle => match module.types[var.ty].inner {
            TypeInner::Image { .. } => Some(Access::Texture),
            _ => None,
        },
        _ => None,
    }
}

/// What is wrong with binding `bindings` to entry point `entry` of `p`, if anything.
fn binding_problems(p: &Parsed, entry: &str, bindings: &[Access]) -> Vec<String> {
    let (index, _) = p
        .module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, e)| e.name == entry)
        .expect("checked by the caller");
    let uses = p.info.get_entry_point(index);
    let mut problems = Vec::new();
    let globals: Vec<(u32, u32, &naga::GlobalVariable, bool)> = p
        .module
        .global_variables
        .iter()
        .filter_map(|(h, var)| {
            let b = var.binding.as_ref()?;
            Some((b.group, b.binding, var, !uses[h].is_empty()))
        })
        .collect();
    for &(group, binding, var, used) in &globals {
        let name = var.name.as_deref().unwrap_or("?");
        if group != 0 {
            problems.push(format!(
                "{name} is in group {group}; the host binds group 0 only"
            ));
        } else if used
            && bindings
                .get(binding as usize)
                .is_none_or(|a| *a == Access::Unused)
        {
            problems.push(format!(
                "uses {name} at binding {binding}, which the host does not bind"
            ));
        }
    }
    for (i, &want) in bindings.iter().enumerate() {
        if want == Access::Unused {
            continue;
        }
        let here: Vec<_> = globals
            .iter()
            .filter(|(g, b, _, _)| *g == 0 && *b == i as u32)
            .collect();
        // Several globals may share a binding (the vec4 views of the same buffer): those the
        // entry point uses must all match; where it uses none, one of the right kind will do.
        let kind = |v: &naga::GlobalVariable| declared(&p.module, v);
        let used: Vec<_> = here.iter().filter(|g| g.3).collect();
        let wrong = if here.is_empty() {
            Some("nothing".to_string())
        } else if (!used.is_empty() && used.iter().any(|g| kind(g.2) != Some(want)))
            || (used.is_empty() && here.iter().all(|g| kind(g.2) != Some(want)))
        {
            Some(
                here.iter()
                    .map(|g| format!("{} as {:?}", g.2.name.as_deref().unwrap_or("?"), kind(g.2)))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        } else {
            None
        };
        if let Some(found) = wrong {
            problems.push(format!(
                "the host binds {want:?} at binding {i}, the shader declares {found} there"
            ));
        }
    }
    problems
}

#[test]
fn entry_points_bind_and_size_as_the_host_assumes() {
    let mut problems = Vec::new();
    for id in ShaderId::ALL {
        let p = parse(id);
        let listed: BTreeSet<&str> = ENTRY_POINTS
            .iter()
            .filter(|e| e.shader == id)
            .map(|e| e.entry)
            .collect();
        for ep in &p.module.entry_points {
            if ep.stage == naga::ShaderStage::Compute && !listed.contains(ep.name.as_str()) {
                problems.push(format!(
                    "{id:?}::{}: a compute entry point gpu::contract::ENTRY_POINTS does not list",
                    ep.name
                ));
            }
        }
        for e in ENTRY_POINTS.iter().filter(|e| e.shader == id) {
            let Some(ep) = p.module.entry_points.iter().find(|ep| ep.name == e.entry) else {
                problems.push(format!("{id:?}::{}: no such entry point", e.entry));
                continue;
            };
            match e.workgroup {
                Workgroup::Fixed(size) => {
                    if ep.workgroup_size_overrides.is_some() || ep.workgroup_size != size {
                        problems.push(format!(
                            "{id:?}::{}: the host assumes workgroups of {size:?}, the shader has {:?}{}",
                            e.entry,
                            ep.workgroup_size,
                            if ep.workgroup_size_overrides.is_some() {
                                " sized by override constants"
                            } else {
                                ""
                            }
                        ));
                    }
                }
                Workgroup::Overridden => {
                    if ep.workgroup_size_overrides.is_none() {
                        problems.push(format!(
                            "{id:?}::{}: the host sizes it by override constants, the shader has a fixed {:?}",
                            e.entry, ep.workgroup_size
                        ));
                    }
                }
            }
            for bindings in e.bindings {
                for problem in binding_problems(&p, e.entry, bindings) {
                    problems.push(format!("{id:?}::{} bound {bindings:?}: {problem}", e.entry));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A WGSL struct: its name, (field name, offset) in order, and its size in bytes.
type WgslStruct = (String, Vec<(String, usize)>, usize);

/// The uniform struct at binding 0 of `p`.
fn uniform_struct(p: &Parsed) -> Option<WgslStruct> {
    let (_, var) = p.module.global_variables.iter().find(|(_, v)| {
        v.space == AddressSpace::Uniform
            && v.binding
                .as_ref()
                .is_some_and(|b| b.group == 0 && b.binding == 0)
    })?;
    let ty = &p.module.types[var.ty];
    let TypeInner::Struct { members, span } = &ty.inner else {
        return None;
    };
    Some((
        ty.name.clone().unwrap_or_default(),
        members
            .iter()
            .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
            .collect(),
        *span as usize,
    ))
}

fn layout_problems(layout: &ParamsLayout) -> Vec<String> {
    let mut problems = Vec::new();
    let host: Vec<(String, usize)> = layout
        .fields
        .iter()
        .map(|(n, o)| (n.to_string(), *o))
        .collect();
    for &id in layout.shaders {
        let Some((name, fields, size)) = uniform_struct(&parse(id)) else {
            problems.push(format!(
                "{}: {id:?} has no uniform struct at binding 0",
                layout.rust_type
            ));
            continue;
        };
        if fields != host || size != layout.size {
            problems.push(format!(
                "{} ({} bytes) {host:?} differs from {id:?}'s WGSL struct {name} ({size} bytes) {fields:?}",
                layout.rust_type, layout.size
            ));
        }
    }
    problems
}

#[test]
fn params_blocks_match_the_wgsl_structs() {
    let layouts: Vec<ParamsLayout> = cnn_wgpu::ops::params_layouts()
        .into_iter()
        .chain(cnn_wgpu::bench::params_layouts())
        .collect();
    let problems: Vec<String> = layouts.iter().flat_map(layout_problems).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Every module with a uniform block has a host type that writes it.
    let covered: BTreeSet<ShaderId> = layouts
        .iter()
        .flat_map(|l| l.shaders.iter().copied())
        .collect();
    for id in ShaderId::ALL {
        if uniform_struct(&parse(id)).is_some() {
            assert!(
                covered.contains(&id),
                "{id:?} reads a uniform struct that no host Params type is registered for"
            );
        }
    }
}

/// The check itself catches drift: a host layout with one field more (or one offset off) than
/// the WGSL is reported, naming the type and the module.
#[test]
fn a_field_on_one_side_only_is_reported() {
    let real = cnn_wgpu::ops::params_layouts()
        .into_iter()
        .find(|l| l.rust_type == "ops::pool::Params")
        .expect("pool's params are registered");
    assert!(layout_problems(&real).is_empty());
    let mut fields = real.fields.to_vec();
    fields.push(("extra", real.size));
    let grown = ParamsLayout {
        rust_type: real.rust_type,
        shaders: real.shaders,
        fields: Box::leak(fields.into_boxed_slice()),
        size: real.size + 4,
    };
    let problems = layout_problems(&grown);
    assert!(
        problems.len() == 1
            && problems[0].contains("ops::pool::Params")
            && problems[0].contains("Pool"),
        "{problems:?}"
    );
}

/// Every entry point binds no more storage buffers, and a fixed workgroup holds no more
/// invocations, than WebGPU's default limits allow (8 per stage, 256), so that each pipeline can
/// be created on any WebGPU device; where an adapter opens, the device opened with
/// `webgpu_limits` reports those limits, and every entry point's count is within them. (wgpu
/// reserves Metal's extra buffer slots itself and reports the reduced limit.)
#[test]
fn every_entry_point_fits_webgpu_default_limits() {
    let defaults = wgpu::Limits::default();
    let storage = |bindings: &[Access]| {
        bindings
            .iter()
            .filter(|a| matches!(a, Access::Read | Access::Write))
            .count() as u32
    };
    let mut over = Vec::new();
    for e in ENTRY_POINTS {
        for bindings in e.bindings {
            if storage(bindings) > defaults.max_storage_buffers_per_shader_stage {
                over.push(format!(
                    "{:?}::{} binds {} storage buffers",
                    e.shader,
                    e.entry,
                    storage(bindings)
                ));
            }
        }
        if let Workgroup::Fixed([x, y, z]) = e.workgroup {
            if x * y * z > defaults.max_compute_invocations_per_workgroup {
                over.push(format!(
                    "{:?}::{} has {} invocations",
                    e.shader,
                    e.entry,
                    x * y * z
                ));
            }
        }
    }
    assert!(
        over.is_empty(),
        "past WebGPU's default limits:\n{}",
        over.join("\n")
    );
    let mut request = cnn_wgpu::AdapterRequest::from_env().unwrap();
    request.options.webgpu_limits = true;
    let Ok(gpu) = cnn_wgpu::gpu::select::open(&request) else {
        eprintln!("skipped the device's reported limit: no adapter");
        return;
    };
    let reported = gpu.limits().max_storage_buffers_per_shader_stage;
    assert!(reported <= 8, "{reported}");
    let most = ENTRY_POINTS
        .iter()
        .flat_map(|e| e.bindings.iter().map(|b| storage(b)))
        .max()
        .unwrap();
    assert!(
        most <= reported,
        "an entry point binds {most}, the device allows {reported}"
    );
}
