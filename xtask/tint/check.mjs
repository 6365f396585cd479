// Tint, Chrome's WGSL compiler (inside Dawn, from the npm package `webgpu`, pinned in
// package-lock.json), compiles every module that `cnn-wgpu shaders --out DIR` wrote, on Dawn's
// null backend: Tint's full validation, the uniformity analysis included, with no GPU.
// Usage: node check.mjs DIR. Exits 1 naming each rejected module, with every message mapped
// back to the shaders/ file and line a person edits.
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
process.exit(rejected ? 1 : 0);
