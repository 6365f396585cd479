// Tiled GEMM core shared by the GEMM-shaped ops (conv2d.wgsl, matmul.wgsl):
//   C[M,N] = A[M,K] * B[K,N]
// The op module in front of this one supplies
//   gemm_dims() -> vec3<u32>       (M, N, K)
//   load_a(m, k) -> f32            only called with m < M, k < K
//   load_b(k, n) -> f32            only called with k < K, n < N
//   store_c(m, n, acc)             only called with m < M, n < N; does the epilogue
// so convolution is an implicit GEMM: im2col happens inside load_a, never in memory.
//
// A 16x16 workgroup computes a 64x64 tile of C; each invocation holds a 4x4 register tile whose
// rows and columns are 16 apart, so neighbouring invocations touch neighbouring columns of C and
// B (coalesced NHWC/HWIO reads and writes). K advances in slices of 16 staged in workgroup memory.

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [TILE_K][TILE_M]
var<workgroup> tile_b: array<f32, 1024>; // [TILE_K][TILE_N]

@compute @workgroup_size(16, 16, 1)
fn gemm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) flat: u32,
) {
    let dims = gemm_dims();
    // M tiles beyond 65535 spill into z.
    let m0 = (wg.y + wg.z * groups.y) * TILE_M;
    let n0 = wg.x * TILE_N;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var k0 = 0u; k0 < dims.z; k0 += TILE_K) {
        // Each of the 256 invocations stages 4 values of A and 4 of B; consecutive invocations
        // take consecutive k for A (channels, contiguous in NHWC) and consecutive n for B.
        for (var r = 0u; r < 4u; r++) {
            let e = flat + r * 256u;
            let ak = e % TILE_K;
            let am = e / TILE_K;
            var av = 0.0;
            if (m0 + am < dims.x && k0 + ak < dims.z) {
                av = load_a(m0 + am, k0 + ak);
            }
            tile_a[ak * TILE_M + am] = av;
            let bn = e % TILE_N;
            let bk = e / TILE_N;
            var bv = 0.0;
            if (k0 + bk < dims.z && n0 + bn < dims.y) {
                bv = load_b(k0 + bk, n0 + bn);
            }
            tile_b[bk * TILE_N + bn] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let a = vec4<f32>(
                tile_a[kk * TILE_M + lid.y],
                tile_a[kk * TILE_M + lid.y + 16u],
                tile_a[kk * TILE_M + lid.y + 32u],
                tile_a[kk * TILE_M + lid.y + 48u],
            );
            let b = vec4<f32>(
                tile_b[kk * TILE_N + lid.x],
                tile_b[kk * TILE_N + lid.x + 16u],
                tile_b[kk * TILE_N + lid.x + 32u],
                tile_b[kk * TILE_N + lid.x + 48u],
            );
            acc[0] = fma(vec4<f32>(a.x), b, acc[0]);
            acc[1] = fma(vec4<f32>(a.y), b, acc[1]);
            acc[2] = fma(vec4<f32>(a.z), b, acc[2]);
            acc[3] = fma(vec4<f32>(a.w), b, acc[3]);
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + lid.y + i * 16u;
        if (m >= dims.x) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + lid.x + j * 16u;
            if (n < dims.y) {
                store_c(m, n, acc[i][j]);
            }
        }
    }
}
