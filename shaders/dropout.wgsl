// Inverted dropout as Keras does it: keep each element with probability 1 - rate and scale kept
// elements by 1 / (1 - rate), so inference is the identity and skips this kernel.
// The keep decision is a pure function of (seed, element index): a counter-based hash, so the
// backward pass recomputes the same mask instead of storing it, and results do not depend on
// dispatch order or chunking. Dropout is linear in x, so backward is this same kernel on dy.

struct Params {
    len: u32,
    offset: u32,    // global element index of this chunk's first element
    seed_lo: u32,
    seed_hi: u32,
    rate: f32,
    scale: f32,     // 1 / (1 - rate)
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// PCG-style integer hash (one LCG step and an xorshift-multiply output permutation).
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// Uniform in [0, 1) with 24 bits, from (seed, index).
fn uniform01(index: u32) -> f32 {
    let h = pcg(index ^ pcg(p.seed_lo ^ pcg(p.seed_hi)));
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

@compute @workgroup_size(256)
fn apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= p.len) {
        return;
    }
    let keep = uniform01(p.offset + i) >= p.rate;
    dst[i] = select(0.0, src[i] * p.scale, keep);
}
