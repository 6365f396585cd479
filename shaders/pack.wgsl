// Packs the B operand of the subgroup GEMM (gemm_sg.wgsl) into column tiles:
//   packed (ceil(N/T), K, T) with packed[t, k, j] = B[k, Tt + j], zero where Tt + j >= N, for
//   T = TILE_N columns (64, or 32 where the GEMM runs one vec4 column per lane)
// so that the K x 64 slab one workgroup streams is contiguous (256 bytes per K step) instead of
// 256 bytes every N*4 bytes: on lavapipe the strided slab ran at half the speed (TLB and
// prefetch misses once it spans megabytes). One vec4 of the packed tensor per invocation.
// Where the GEMM reads B from a texture, the host copies this buffer into it, vec4 j to texel
// (j mod width, j / width).
//   TRANSPOSED 0: B[k, n] = src[src_base + k*N + n]                 (row-major K x N)
//   TRANSPOSED 1: B[k, n] = src[src_base + ((k / R)*N + n)*R + k % R]
//                 K = taps * R: per tap, an (N, R) block read as its transpose. A conv kernel
//                 (KH,KW,CIN,COUT) seen by the input gradient (R = COUT, N = CIN), or a dense
//                 kernel (IN,OUT) seen as (OUT,IN) (one tap, R = OUT, N = IN).

override TRANSPOSED: u32 = 0u;
override TILE_N: u32 = 64u;

struct Params {
    k: u32,
    n: u32,
    r: u32,
    src_base: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;
// src as vec4s, for pack_b4.
@group(0) @binding(3) var<storage, read> src4: array<vec4<f32>>;

fn element(k: u32, n: u32) -> f32 {
    if (n >= p.n) {
        return 0.0;
    }
    if (TRANSPOSED == 1u) {
        return src[p.src_base + ((k / p.r) * p.n + n) * p.r + k % p.r];
    }
    return src[p.src_base + k * p.n + n];
}

// The (k, n) of B that packed vec4 j starts at (n the first of its four columns); k = K where j
// lies past the packed tensor.
fn packed_at(j: u32) -> vec2<u32> {
    let tile4 = TILE_N / 4u;
    let tiles = (p.n + TILE_N - 1u) / TILE_N;
    if (j >= tiles * p.k * tile4) {
        return vec2<u32>(p.k, 0u);
    }
    let t = j / tile4;
    return vec2<u32>(t % p.k, (t / p.k) * TILE_N + (j % tile4) * 4u);
}

@compute @workgroup_size(64, 1, 1)
fn pack_b(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let j = gid.x + gid.y * groups.x * 64u;
    let at = packed_at(j);
    if (at.x >= p.k) {
        return;
    }
    let k = at.x;
    let n = at.y;
    dst[j] = vec4<f32>(element(k, n), element(k, n + 1u), element(k, n + 2u),
                       element(k, n + 3u));
}

// pack_b for TRANSPOSED 0 with N and src_base multiples of 4: each packed vec4 is one vec4 of
// the source (on lavapipe a load whose address differs per lane is a loop over the lanes, so
// this makes a quarter of them).
@compute @workgroup_size(64, 1, 1)
fn pack_b4(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let j = gid.x + gid.y * groups.x * 64u;
    let at = packed_at(j);
    if (at.x >= p.k) {
        return;
    }
    var v = vec4<f32>(0.0);
    if (at.y < p.n) {
        v = src4[(p.src_base + at.x * p.n + at.y) / 4u];
    }
    dst[j] = v;
}
