// Tint, Chrome's WGSL compiler (inside Dawn, from the npm package `webgpu`, pinned in
// package-lock.json), compiles every module that `cnn-wgpu shaders --out DIR` wrote, on Dawn's
// null backend: Tint's full validation, the uniformity analysis included, with no GPU. Then it
// creates every pipeline of the manifest written beside them.
// Usage: node check.mjs DIR. Exits 1 naming each rejected module (with every message mapped
// back to the shaders/ file and line a person edits) and each rejected pipeline.
import fs from 'node:fs';
import path from 'node:path';
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node check.mjs DIR (the folder `cnn-wgpu shaders --out DIR` wrote)');
  process.exit(2);
}
const index = JSON.parse(fs.readFileSync(path.join(dir, 'modules.json'), 'utf8'));
const gpu = create(['backend=null']);
const adapter = await gpu.requestAdapter();
if (!adapter) {
  console.error("tint: Dawn's null backend gave no adapter");
  process.exit(2);
}
// The only change to what the engine compiles: WGSL as the spec (and Tint) reads it needs
// `enable subgroups;` where subgroups are used, which naga 30 refuses, so it is added here.
const ENABLE = 'enable subgroups;\n';
const device = await adapter.requestDevice({ requiredFeatures: ['subgroups'] });

// "gemm_sg.wgsl:42" for line `line` of module `m` (as compiled, from 1).
function where(m, line) {
  let file = m.file;
  let at = line;
  m.assembled_from.forEach((f, i) => {
    if (line >= m.first_lines[i]) {
      file = `shaders/${f}`;
      at = line - m.first_lines[i] + 1;
    }
  });
  return `${file}:${at}`;
}

let rejected = 0;
for (const m of index.modules) {
  const text = fs.readFileSync(path.join(dir, m.file), 'utf8');
  const code = m.uses_subgroups ? ENABLE + text : text;
  const shift = m.uses_subgroups ? 1 : 0;
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code, label: m.name });
  const info = await module.getCompilationInfo();
  const scope = await device.popErrorScope();
  const errors = info.messages.filter((x) => x.type === 'error');
  if (errors.length === 0 && !scope) {
    console.log(`ok       ${m.name}`);
    continue;
  }
  rejected++;
  console.log(`REJECTED ${m.name}`);
  for (const x of info.messages) {
    console.log(`  ${x.type}: ${where(m, x.lineNum - shift)}:${x.linePos}: ${x.message}`);
  }
  if (scope && errors.length === 0) console.log(`  ${scope.message}`);
}
console.log(`tint: ${index.modules.length - rejected} of ${index.modules.length} modules compile, ${rejected} rejected`);
device.destroy();

// Every pipeline of the manifest (`manifest.json`, what each adapter class plans to build:
// module, entry point, override constants, bindings), created twice: under the limits its
// class was planned with, and under WebGPU's defaults. Dawn's null adapter offers only
// WebGPU's defaults, which every class's limits are at or above: a class limit above them is
// requested at the adapter's value, and said so, so a pipeline Dawn creates there fits the
// class's limits as well.
const manifestPath = path.join(dir, 'manifest.json');
if (!fs.existsSync(manifestPath)) {
  console.error(`tint: ${manifestPath} is missing (write it with \`cnn-wgpu shaders --out ${dir}\`)`);
  process.exit(1);
}
const manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8'));
const byName = new Map(index.modules.map((m) => [m.name, m]));
const BINDING = {
  uniform: { buffer: { type: 'uniform' } },
  read: { buffer: { type: 'read-only-storage' } },
  write: { buffer: { type: 'storage' } },
  texture: { texture: { sampleType: 'unfilterable-float', viewDimension: '2d' } },
};

// One device per (features, limits): its modules compiled once, each pipeline created once.
const devices = new Map();
async function deviceFor(features, limits) {
  const key = JSON.stringify([features, limits]);
  if (!devices.has(key)) {
    // An adapter opens one device, so each device gets an adapter of its own.
    const a = await gpu.requestAdapter();
    const d = await a.requestDevice({ requiredFeatures: features, requiredLimits: limits });
    devices.set(key, { device: d, modules: new Map(), created: new Map() });
  }
  return devices.get(key);
}

async function createPipeline(dev, p) {
  const key = JSON.stringify([p.module, p.entry, p.constants, p.bindings]);
  if (dev.created.has(key)) return dev.created.get(key);
  const m = byName.get(p.module);
  let failure = null;
  if (!m) {
    failure = `no module ${p.module} in modules.json`;
  } else {
    if (!dev.modules.has(m.name)) {
      const text = fs.readFileSync(path.join(dir, m.file), 'utf8');
      dev.device.pushErrorScope('validation');
      const mod = dev.device.createShaderModule({ code: m.uses_subgroups ? ENABLE + text : text, label: m.name });
      const scope = await dev.device.popErrorScope();
      dev.modules.set(m.name, { mod, error: scope && scope.message });
    }
    const { mod, error } = dev.modules.get(m.name);
    if (error) {
      failure = `module: ${error}`;
    } else {
      dev.device.pushErrorScope('validation');
      const entries = [];
      p.bindings.forEach((b, i) => {
        if (b !== 'unused') entries.push({ binding: i, visibility: GPUShaderStage.COMPUTE, ...BINDING[b] });
      });
      const bgl = dev.device.createBindGroupLayout({ entries, label: p.entry });
      const layout = dev.device.createPipelineLayout({ bindGroupLayouts: [bgl] });
      dev.device.createComputePipeline({
        layout,
        compute: { module: mod, entryPoint: p.entry, constants: p.constants },
        label: p.entry,
      });
      const scope = await dev.device.popErrorScope();
      if (scope) failure = scope.message;
    }
  }
  dev.created.set(key, failure);
  return failure;
}

let rejectedPipelines = 0;
let createdPipelines = 0;
for (const c of manifest.classes) {
  const features = c.subgroup_width ? ['subgroups'] : [];
  const lowered = [];
  const classLimits = {};
  for (const [k, v] of Object.entries(c.limits)) {
    const offered = adapter.limits[k];
    if (offered === undefined) continue;
    classLimits[k] = Math.min(v, offered);
    if (v > offered) lowered.push(`${k} ${v} -> ${offered}`);
  }
  for (const [which, limits] of [['class limits', classLimits], ["WebGPU's defaults", {}]]) {
    const dev = await deviceFor(features, limits);
    let bad = 0;
    for (const p of c.pipelines) {
      const failure = await createPipeline(dev, p);
      createdPipelines++;
      if (failure) {
        bad++;
        console.log(`REJECTED ${c.name} (${which}): ${p.module} ${p.entry} ${JSON.stringify(p.constants)}`);
        console.log(`  ${failure.split('\n').join('\n  ')}`);
      }
    }
    rejectedPipelines += bad;
    console.log(`${bad ? 'REJECTED' : 'ok      '} ${c.name}: ${c.pipelines.length - bad} of ${c.pipelines.length} pipelines created under ${which}`);
  }
  if (lowered.length) console.log(`         ${c.name}: Dawn's null adapter offers less than the class: ${lowered.join(', ')}`);
}
for (const d of devices.values()) d.device.destroy();
console.log(`tint: ${createdPipelines - rejectedPipelines} of ${createdPipelines} pipelines created (${manifest.classes.length} adapter classes, each under its limits and WebGPU's defaults), ${rejectedPipelines} rejected`);
process.exit(rejected || rejectedPipelines ? 1 : 0);
