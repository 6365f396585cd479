// Tiled GEMM for GPUs, built the way fast GPU GEMMs are:
//   C[M,N] = A[M,K] * B[K,N]
// A workgroup of TL_WX x TL_WY invocations computes a TL_BM x 4*TL_BN4 tile of C (128x128,
// 128x64 or 64x64); each invocation holds TL_TM x 4*TL_TN4 outputs (8x8, 8x4 or 4x4) in
// registers. K advances TL_BK at a time through two workgroup-memory stages: while the
// invocations multiply out one stage, the global loads of the next are already in flight into
// registers, which are stored into the other stage afterwards (one barrier per K step). Every
// global load is a vec4 along the contiguous axis (channels of an NHWC row of A, columns of B),
// and the rows of A an invocation loads are fixed for the whole K loop, so their im2col index
// maps (a_row) are worked out once before it.
//
// Workgroup-memory layout, chosen so that no two lanes of a warp touch the same bank at once:
//   tl_a[stage][k][m/4]   A transposed, vec4s of four rows. The gathered loads (A along K)
//                         are spread with consecutive lanes on consecutive rows, so their
//                         transposing scalar stores land in consecutive words.
//   tl_b[stage][k][n/4]   B as it is, consecutive lanes on consecutive vec4s.
// An invocation (tx, ty) owns the rows {4ty..4ty+3} and, with 8 rows, {BM/2 + 4ty..}, and the
// vec4 columns {tx} and, with 2, {tx + TL_WX}: in the inner loop the lanes of a warp read
// consecutive vec4s of tl_b, and one or two vec4s of tl_a that they all share (a broadcast).
//
// The op module in front of this one is the one gemm_sg.wgsl takes (conv2d_sg.wgsl,
// matmul_sg.wgsl): gemm_dims, gemm_slices, gemm_products, a_row/load_a4 (entry gemm_tiled) or
// load_a4m (entry gemm_tiled_m), load_b4, store_c4, with the same contracts; a B packed by
// pack.wgsl comes in tiles of 4 * TL_BN4 columns (packed_b_index below), read through the
// appended gemm_sg_b_buffer.wgsl. Nothing here uses subgroups, so it runs on every adapter.

// Invocations along N and along M.
override TL_WX: u32 = 16u;
override TL_WY: u32 = 16u;
// Rows (4 or 8) and vec4 columns (1 or 2) per invocation.
override TL_TM: u32 = 8u;
override TL_TN4: u32 = 2u;
// K per stage, a multiple of 4.
override TL_BK: u32 = 8u;
override TL_BM: u32 = TL_WY * TL_TM;
override TL_BM4: u32 = TL_BM / 4u;
override TL_BN4: u32 = TL_WX * TL_TN4;
override TL_THREADS: u32 = TL_WX * TL_WY;
// vec4s one stage of A and of B holds, and how many of each an invocation loads per K step
// (at most 2: the host only builds configurations that keep it so).
override TL_A_VEC4S: u32 = TL_BK * TL_BM4;
override TL_B_VEC4S: u32 = TL_BK * TL_BN4;
override TL_A_LOADS: u32 = (TL_A_VEC4S + TL_THREADS - 1u) / TL_THREADS;
override TL_B_LOADS: u32 = (TL_B_VEC4S + TL_THREADS - 1u) / TL_THREADS;

var<workgroup> tl_a: array<vec4<f32>, 2u * TL_A_VEC4S>;
var<workgroup> tl_b: array<vec4<f32>, 2u * TL_B_VEC4S>;

// Which of gemm_products() this invocation computes (set before any operand is read).
var<private> gemm_product: u32;

// Index of B[k, 4*n4..] in B packed as (ceil(N/T), K, T) by pack.wgsl, T = 4 * TL_BN4.
fn packed_b_index(k: u32, n4: u32, kdim: u32) -> u32 {
    return ((n4 / TL_BN4) * kdim + k) * TL_BN4 + n4 % TL_BN4;
}

struct TlTile {
    m0: u32,      // first row of the workgroup's tile
    n40: u32,     // first vec4 column
    k_begin: u32,
    k_end: u32,
    slice: u32,
}

fn tl_tile(wg: vec3<u32>, groups: vec3<u32>, dims: vec3<u32>) -> TlTile {
    let slices = gemm_slices();
    var t: TlTile;
    t.slice = wg.z % slices;
    // K range of this slice, in whole stages.
    let steps = (dims.z + TL_BK - 1u) / TL_BK;
    let per = (steps + slices - 1u) / slices * TL_BK;
    t.k_begin = t.slice * per;
    t.k_end = min(dims.z, t.k_begin + per);
    // z = (spill * products + product) * slices + slice: M tiles beyond 65535 spill into z
    // after the slices and products, as in gemm_core.
    let rest = wg.z / slices;
    gemm_product = rest % gemm_products();
    t.m0 = (wg.y + (rest / gemm_products()) * groups.y) * TL_BM;
    t.n40 = wg.x * TL_BN4;
    return t;
}

// The vec4 load e (of TL_A_VEC4S) of A's stage at k0: along K, (row e % BM, k0 + 4 (e / BM));
// along M, (rows 4 (e % BM4).., k0 + e / BM4). Zero outside M and the slice's K range.
fn tl_load_a(along_m: bool, t: TlTile, dims: vec3<u32>, row: ARow, e: u32, k0: u32) -> vec4<f32> {
    if (e >= TL_A_VEC4S) {
        return vec4<f32>(0.0);
    }
    if (along_m) {
        let m = t.m0 + 4u * (e % TL_BM4);
        let k = k0 + e / TL_BM4;
        if (m < dims.x && k < t.k_end) {
            return load_a4m(m, k);
        }
        return vec4<f32>(0.0);
    }
    let k = k0 + 4u * (e / TL_BM);
    if (t.m0 + e % TL_BM < dims.x && k < t.k_end) {
        return load_a4(row, k);
    }
    return vec4<f32>(0.0);
}

fn tl_store_a(along_m: bool, stage: u32, e: u32, v: vec4<f32>) {
    if (e >= TL_A_VEC4S) {
        return;
    }
    let base = stage * TL_A_VEC4S;
    if (along_m) {
        tl_a[base + e] = v;
        return;
    }
    // Row m at k..k+3 goes to tl_a[k + c][m / 4], component m % 4.
    let m = e % TL_BM;
    let at = base + 4u * (e / TL_BM) * TL_BM4 + m / 4u;
    let c = m % 4u;
    tl_a[at][c] = v.x;
    tl_a[at + TL_BM4][c] = v.y;
    tl_a[at + 2u * TL_BM4][c] = v.z;
    tl_a[at + 3u * TL_BM4][c] = v.w;
}

// The vec4 load e (of TL_B_VEC4S) of B's stage at k0: (k0 + e / BN4, vec4 column e % BN4).
fn tl_load_b(t: TlTile, dims: vec3<u32>, e: u32, k0: u32) -> vec4<f32> {
    let k = k0 + e / TL_BN4;
    let n4 = t.n40 + e % TL_BN4;
    if (e < TL_B_VEC4S && k < t.k_end && n4 < dims.y / 4u) {
        return load_b4(k, n4);
    }
    return vec4<f32>(0.0);
}

fn tl_store_b(stage: u32, e: u32, v: vec4<f32>) {
    if (e < TL_B_VEC4S) {
        tl_b[stage * TL_B_VEC4S + e] = v;
    }
}

// acc[2r + j] += a[r - r0] * b_j for the four rows r0..r0+3 whose A values are `a`; every index
// is a constant once inlined (r0 is 0 or 4 at each call).
fn tl_rank1(acc: ptr<function, array<vec4<f32>, 16>>, r0: u32, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>) {
    (*acc)[2u * r0] = fma(vec4<f32>(a.x), b0, (*acc)[2u * r0]);
    (*acc)[2u * r0 + 2u] = fma(vec4<f32>(a.y), b0, (*acc)[2u * r0 + 2u]);
    (*acc)[2u * r0 + 4u] = fma(vec4<f32>(a.z), b0, (*acc)[2u * r0 + 4u]);
    (*acc)[2u * r0 + 6u] = fma(vec4<f32>(a.w), b0, (*acc)[2u * r0 + 6u]);
    if (TL_TN4 == 2u) {
        (*acc)[2u * r0 + 1u] = fma(vec4<f32>(a.x), b1, (*acc)[2u * r0 + 1u]);
        (*acc)[2u * r0 + 3u] = fma(vec4<f32>(a.y), b1, (*acc)[2u * r0 + 3u]);
        (*acc)[2u * r0 + 5u] = fma(vec4<f32>(a.z), b1, (*acc)[2u * r0 + 5u]);
        (*acc)[2u * r0 + 7u] = fma(vec4<f32>(a.w), b1, (*acc)[2u * r0 + 7u]);
    }
}

fn tl_store_row(t: TlTile, dims: vec3<u32>, m: u32, n4: u32, v0: vec4<f32>, v1: vec4<f32>) {
    if (m >= dims.x) {
        return;
    }
    let n4s = dims.y / 4u;
    if (n4 < n4s) {
        store_c4(m, n4, v0, t.slice);
    }
    if (TL_TN4 == 2u && n4 + TL_WX < n4s) {
        store_c4(m, n4 + TL_WX, v1, t.slice);
    }
}

fn tl_gemm(along_m: bool, wg: vec3<u32>, groups: vec3<u32>, lid: vec3<u32>, flat: u32) {
    let dims = gemm_dims();
    let t = tl_tile(wg, groups, dims);
    // This invocation's loads: e0 and e1 of each stage. Along K, their rows are the same at
    // every K step, so their index maps are decoded here, once.
    let e0 = flat;
    let e1 = flat + TL_THREADS;
    var row0: ARow;
    var row1: ARow;
    if (!along_m) {
        row0 = a_row(min(t.m0 + e0 % TL_BM, dims.x - 1u));
        if (TL_A_LOADS == 2u) {
            row1 = a_row(min(t.m0 + e1 % TL_BM, dims.x - 1u));
        }
    }
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    // Stage 0 holds the first K step.
    tl_store_a(along_m, 0u, e0, tl_load_a(along_m, t, dims, row0, e0, t.k_begin));
    tl_store_b(0u, e0, tl_load_b(t, dims, e0, t.k_begin));
    if (TL_A_LOADS == 2u) {
        tl_store_a(along_m, 0u, e1, tl_load_a(along_m, t, dims, row1, e1, t.k_begin));
    }
    if (TL_B_LOADS == 2u) {
        tl_store_b(0u, e1, tl_load_b(t, dims, e1, t.k_begin));
    }
    workgroupBarrier();
    var stage = 0u;
    for (var k0 = t.k_begin; k0 < t.k_end; k0 += TL_BK) {
        // The next step's operands, loaded before this step's arithmetic so that the loads
        // are in flight while it runs.
        let next = k0 + TL_BK;
        let more = next < t.k_end;
        var na0 = vec4<f32>(0.0);
        var na1 = vec4<f32>(0.0);
        var nb0 = vec4<f32>(0.0);
        var nb1 = vec4<f32>(0.0);
        if (more) {
            na0 = tl_load_a(along_m, t, dims, row0, e0, next);
            nb0 = tl_load_b(t, dims, e0, next);
            if (TL_A_LOADS == 2u) {
                na1 = tl_load_a(along_m, t, dims, row1, e1, next);
            }
            if (TL_B_LOADS == 2u) {
                nb1 = tl_load_b(t, dims, e1, next);
            }
        }
        let a_base = stage * TL_A_VEC4S + lid.y;
        let b_base = stage * TL_B_VEC4S + lid.x;
        for (var kk = 0u; kk < TL_BK; kk++) {
            let a0 = tl_a[a_base + kk * TL_BM4];
            let b0 = tl_b[b_base + kk * TL_BN4];
            var b1 = vec4<f32>(0.0);
            if (TL_TN4 == 2u) {
                b1 = tl_b[b_base + kk * TL_BN4 + TL_WX];
            }
            tl_rank1(&acc, 0u, a0, b0, b1);
            if (TL_TM == 8u) {
                tl_rank1(&acc, 4u, tl_a[a_base + kk * TL_BM4 + TL_WY], b0, b1);
            }
        }
        if (more) {
            tl_store_a(along_m, 1u - stage, e0, na0);
            tl_store_b(1u - stage, e0, nb0);
            if (TL_A_LOADS == 2u) {
                tl_store_a(along_m, 1u - stage, e1, na1);
            }
            if (TL_B_LOADS == 2u) {
                tl_store_b(1u - stage, e1, nb1);
            }
        }
        // One barrier per step: it separates this step's reads of `stage` from the next
        // step's writes to it, and this step's writes of the other stage from its reads.
        workgroupBarrier();
        stage = 1u - stage;
    }
    let m_lo = t.m0 + 4u * lid.y;
    let m_hi = m_lo + TL_BM / 2u;
    let n4 = t.n40 + lid.x;
    tl_store_row(t, dims, m_lo, n4, acc[0], acc[1]);
    tl_store_row(t, dims, m_lo + 1u, n4, acc[2], acc[3]);
    tl_store_row(t, dims, m_lo + 2u, n4, acc[4], acc[5]);
    tl_store_row(t, dims, m_lo + 3u, n4, acc[6], acc[7]);
    if (TL_TM == 8u) {
        tl_store_row(t, dims, m_hi, n4, acc[8], acc[9]);
        tl_store_row(t, dims, m_hi + 1u, n4, acc[10], acc[11]);
        tl_store_row(t, dims, m_hi + 2u, n4, acc[12], acc[13]);
        tl_store_row(t, dims, m_hi + 3u, n4, acc[14], acc[15]);
    }
}

@compute @workgroup_size(TL_WX, TL_WY, 1)
fn gemm_tiled(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) flat: u32,
) {
    tl_gemm(false, wg, groups, lid, flat);
}

@compute @workgroup_size(TL_WX, TL_WY, 1)
fn gemm_tiled_m(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) flat: u32,
) {
    tl_gemm(true, wg, groups, lid, flat);
}
