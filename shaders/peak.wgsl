// An FMA-bound kernel for measuring the adapter's arithmetic ceiling: eight independent vec4 FMA
// chains per invocation hide latency, and the result is stored so nothing is optimised away.
// UNROLL steps run per loop iteration (a constant trip count the compiler unrolls), so the loop's
// own counting and branching stop diluting the FMAs; the host tries several and keeps the best.
// FLOPs per invocation = ITERS * 8 chains * 4 lanes * 2 (ITERS a multiple of UNROLL).

override ITERS: u32 = 1024u;
override UNROLL: u32 = 1u;

struct Params {
    seed: f32,
    _p0: f32,
    _p1: f32,
    _p2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn fma_peak(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    let s = p.seed + f32(i) * 1e-9;
    let m = vec4<f32>(0.9999, 0.9998, 0.9997, 0.9996);
    let a = vec4<f32>(1e-4, 2e-4, 3e-4, 4e-4);
    var c0 = vec4<f32>(s);
    var c1 = c0 + 1.0;
    var c2 = c0 + 2.0;
    var c3 = c0 + 3.0;
    var c4 = c0 + 4.0;
    var c5 = c0 + 5.0;
    var c6 = c0 + 6.0;
    var c7 = c0 + 7.0;
    for (var k = 0u; k < ITERS; k += UNROLL) {
        for (var u = 0u; u < UNROLL; u++) {
            c0 = fma(c0, m, a);
            c1 = fma(c1, m, a);
            c2 = fma(c2, m, a);
            c3 = fma(c3, m, a);
            c4 = fma(c4, m, a);
            c5 = fma(c5, m, a);
            c6 = fma(c6, m, a);
            c7 = fma(c7, m, a);
        }
    }
    let t = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7;
    out[i] = t.x + t.y + t.z + t.w;
}
