// Tiled GEMM core shared by the GEMM-shaped ops (conv2d.wgsl, matmul.wgsl):
//   C[M,N] = A[M,K] * B[K,N]
// The op module in front of this one supplies
//   gemm_dims() -> vec3<u32>       (M, N, K)
//   load_a(m, k) -> f32            only called with m < M, k < K
//   load_b(k, n) -> f32            only called with k < K, n < N
//   store_c(m, n, acc, slice)      only called with m < M, n < N; does the epilogue
//   gemm_slices() -> u32           K is split into this many slices (1: no split), one per
//                                  workgroup z; slice s sums k in its own range and store_c
//                                  writes a partial result the host then reduces
//   gemm_products() -> u32         products of one shape in one dispatch (Winograd's), one
//                                  per workgroup z; the op reads `gemm_product`, this
//                                  invocation's, to offset its operands
// so convolution is an implicit GEMM: im2col happens inside load_a, never in memory. Splitting K
// keeps many workgroups busy when M*N is small and K is long (a kernel gradient sums over every
// output position of the batch).
//
// A 16x16 workgroup computes a 64x64 tile of C; each invocation holds a 4x4 register tile (rows
// 4*lid.y.., columns 4*lid.x..). K advances in slices of 16 staged in workgroup memory as vec4s,
// so the inner loop is two vec4 loads per four vec4 FMAs: on lavapipe, where every workgroup
// memory access becomes a per-lane gather, this layout ran 1.7x faster than scalar staging.

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;

// Which of gemm_products() this invocation computes (set before any operand is read).
var<private> gemm_product: u32;

var<workgroup> tile_a: array<vec4<f32>, 256>; // [TILE_K][TILE_M / 4]
var<workgroup> tile_b: array<vec4<f32>, 256>; // [TILE_K][TILE_N / 4]

@compute @workgroup_size(16, 16, 1)
fn gemm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) flat: u32,
) {
    let dims = gemm_dims();
    let slices = gemm_slices();
    let slice = wg.z % slices;
    // K range of this slice, in whole TILE_K steps.
    let per_slice = ((dims.z + slices - 1u) / slices + TILE_K - 1u) / TILE_K * TILE_K;
    let k_begin = slice * per_slice;
    let k_end = min(dims.z, k_begin + per_slice);
    // z = (spill * products + product) * slices + slice: M tiles beyond 65535 spill into z
    // after the slices and products.
    let rest = wg.z / slices;
    gemm_product = rest % gemm_products();
    let m0 = (wg.y + (rest / gemm_products()) * groups.y) * TILE_M;
    let n0 = wg.x * TILE_N;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        // Each of the 256 invocations stages one vec4 of A (4 rows at one k) and one of B
        // (4 columns at one k). Consecutive invocations take consecutive k for A (channels,
        // contiguous in NHWC) and consecutive column groups for B (contiguous in HWIO).
        let ak = flat % TILE_K;
        let am = (flat / TILE_K) * 4u;
        var av = vec4<f32>(0.0);
        if (k0 + ak < k_end) {
            for (var r = 0u; r < 4u; r++) {
                if (m0 + am + r < dims.x) {
                    av[r] = load_a(m0 + am + r, k0 + ak);
                }
            }
        }
        tile_a[ak * (TILE_M / 4u) + am / 4u] = av;
        let bn = (flat % (TILE_N / 4u)) * 4u;
        let bk = flat / (TILE_N / 4u);
        var bv = vec4<f32>(0.0);
        if (k0 + bk < k_end) {
            for (var c = 0u; c < 4u; c++) {
                if (n0 + bn + c < dims.y) {
                    bv[c] = load_b(k0 + bk, n0 + bn + c);
                }
            }
        }
        tile_b[bk * (TILE_N / 4u) + bn / 4u] = bv;
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            // This invocation's rows are 4*lid.y..+3 and columns 4*lid.x..+3: one vec4 load each.
            let a = tile_a[kk * (TILE_M / 4u) + lid.y];
            let b = tile_b[kk * (TILE_N / 4u) + lid.x];
            acc[0] = fma(vec4<f32>(a.x), b, acc[0]);
            acc[1] = fma(vec4<f32>(a.y), b, acc[1]);
            acc[2] = fma(vec4<f32>(a.z), b, acc[2]);
            acc[3] = fma(vec4<f32>(a.w), b, acc[3]);
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + lid.y * 4u + i;
        if (m >= dims.x) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + lid.x * 4u + j;
            if (n < dims.y) {
                store_c(m, n, acc[i][j], slice);
            }
        }
    }
}
