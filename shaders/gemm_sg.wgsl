// Register-tiled GEMM for adapters whose subgroups all have one fixed width SG_W (8, 16, 32 or
// 64 lanes; lavapipe: 8 at 256 bits, 16 at 512):
//   C[M,N] = A[M,K] * B[K,N]
// No workgroup memory. On lavapipe every storage or workgroup load that differs per lane is a
// per-lane scalar loop, while arithmetic runs SG_W lanes wide, so a kernel is fast when each
// loaded value feeds many FMAs. Here the lanes load the subgroup's rows of A as vec4s, one row
// per lane and K step (SG_ROWS rows over SG_W lanes: 3-4 loads per lane at 8 lanes, 2 at 16, 1
// from 32 on) and share them through subgroupBroadcast (a register shuffle); every A value then
// meets 8 columns of B held in the lane's registers: a SG_ROWS x 8*SG_W tile per subgroup, all
// its rows x 8 columns per lane.
// On the 1024^3 matmul this ran 8x faster than gemm_core.wgsl's workgroup-memory tiles.
//
// subgroupBroadcast takes a constant lane, so the K step's broadcasts are written out once per
// way of spreading rows over lanes (sg_step8, sg_step16, sg_step32); SG_W picks one, and the
// branch folds away when the pipeline is built with the adapter's width.
//
// The op module in front of this one supplies
//   gemm_dims() -> vec3<u32>          (M, N, K)
//   gemm_slices() -> u32              K split into slices, one per workgroup z (as gemm_core)
//   gemm_products() -> u32            products of one shape in one dispatch, one per workgroup
//                                     z (as gemm_core); the op reads `gemm_product`, this
//                                     invocation's, to offset its operands
//   load_b4(k, n4) -> vec4<f32>       B[k, 4*n4 .. 4*n4+3]; k < K and 4*n4 < N. Where B arrives
//                                     packed by pack.wgsl, `packed_b_index` gives the vec4 index
//                                     and `packed_b4` reads it (gemm_sg_b_buffer.wgsl or
//                                     gemm_sg_b_texture.wgsl, appended after this file)
//   store_c4(m, n4, v, slice)         C[m, 4*n4 .. +3] = v; m < M and 4*n4 < N
// and, for the entry point it uses, one way of reading A:
//   gemm_sg (A along K):  a_row(m) -> ARow once per row, then load_a4(row, k) = A[m, k..k+3]
//                         for k % 4 == 0 (zero past K); rows are lanes, K advances by 4
//   gemm_sg_m (A along M): load_a4m(m, k) = A[m..m+3, k] for m % 4 == 0; K advances by 1
// N must be a multiple of 4 (whole vec4 columns). gemm_sg_m reads rows in fours: where M is not
// a multiple of 4, load_a4m must return zeros for the rows past it.

// Lanes per subgroup: the adapter's one subgroup width (the host runs this file only where the
// smallest and largest subgroup sizes agree).
override SG_W: u32 = 8u;
// Subgroups per workgroup, stacked along M (SG_ROWS rows each): 2 on lavapipe, or 1 where
// whole tiles of two would pad M more (a short M such as a Winograd product's, or one subgroup
// covering M); up to 4 of 8 rows on a GPU. The host's rule is in src/ops/gemm.rs.
override SG_PER_WG: u32 = 2u;
// vec4 columns per lane: 2 (8 * SG_W columns per workgroup), or 1 when N is at most 4 * SG_W,
// where the second column would only multiply zeros.
override SG_COLS4: u32 = 2u;
override SG_TILE_N4: u32 = SG_W * SG_COLS4; // vec4 columns per workgroup
// Rows per subgroup: 8 or 16 (a GPU, whose registers hold 64 accumulators per lane, not 256),
// 24 or 32. On a CPU adapter the host's cost model (src/ops/gemm.rs) picks 24 for
// convolutions, whose im2col rows each keep an index map live across the K loop, and where
// 32-row tiles would pad more (20 dense-head rows; VGG16 blocks 4-5 have 648 = 27 x 24).
override SG_ROWS: u32 = 32u;

// acc rows r (0..SG_ROWS; calls for rows past it fold away) x vec4 columns j (0..2) at
// acc[2r + j]; b holds B[k+i, n4+j] at b[2i + j].
fn sg_rank4(acc: ptr<function, array<vec4<f32>, 64>>, r: u32, s: vec4<f32>, b: ptr<function, array<vec4<f32>, 8>>) {
    if (r >= SG_ROWS) {
        return;
    }
    (*acc)[2u * r] = fma(vec4<f32>(s.w), (*b)[6], fma(vec4<f32>(s.z), (*b)[4],
        fma(vec4<f32>(s.y), (*b)[2], fma(vec4<f32>(s.x), (*b)[0], (*acc)[2u * r]))));
    if (SG_COLS4 == 2u) {
        (*acc)[2u * r + 1u] = fma(vec4<f32>(s.w), (*b)[7], fma(vec4<f32>(s.z), (*b)[5],
            fma(vec4<f32>(s.y), (*b)[3], fma(vec4<f32>(s.x), (*b)[1], (*acc)[2u * r + 1u]))));
    }
}

// Rows 4l..4l+3 (the four A values s at one k) times the lane's two B vec4s at that k.
fn sg_rank1x4(acc: ptr<function, array<vec4<f32>, 64>>, l: u32, s: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>) {
    if (4u * l >= SG_ROWS) {
        return;
    }
    let r = 8u * l;
    (*acc)[r] = fma(vec4<f32>(s.x), b0, (*acc)[r]);
    (*acc)[r + 2u] = fma(vec4<f32>(s.y), b0, (*acc)[r + 2u]);
    (*acc)[r + 4u] = fma(vec4<f32>(s.z), b0, (*acc)[r + 4u]);
    (*acc)[r + 6u] = fma(vec4<f32>(s.w), b0, (*acc)[r + 6u]);
    if (SG_COLS4 == 2u) {
        (*acc)[r + 1u] = fma(vec4<f32>(s.x), b1, (*acc)[r + 1u]);
        (*acc)[r + 3u] = fma(vec4<f32>(s.y), b1, (*acc)[r + 3u]);
        (*acc)[r + 5u] = fma(vec4<f32>(s.z), b1, (*acc)[r + 5u]);
        (*acc)[r + 7u] = fma(vec4<f32>(s.w), b1, (*acc)[r + 7u]);
    }
}

// Index of B[k, 4*n4..] in B packed as (ceil(N/T), K, T) by pack.wgsl, T = 4 * SG_TILE_N4.
fn packed_b_index(k: u32, n4: u32, kdim: u32) -> u32 {
    return ((n4 / SG_TILE_N4) * kdim + k) * SG_TILE_N4 + n4 % SG_TILE_N4;
}

// Which of gemm_products() this invocation computes (set by sg_tile before any operand is read).
var<private> gemm_product: u32;

struct SgTile {
    m0: u32,     // first row of this subgroup's SG_ROWS
    n4: u32,     // this lane's first vec4 column
    slice: u32,
}

// The K range [x, y) of this workgroup's slice of the sum, counted in `k_units` (steps of 4 for
// gemm_sg, of 1 for gemm_sg_m). Not a field of SgTile, and computed from the workgroup id
// alone: the K loops hold the subgroupBroadcasts, which WGSL allows only in subgroup-uniform
// control flow, and its uniformity analysis counts a struct built with the lane's id as
// non-uniform in every field (Tint rejects the module; naga does not check).
fn sg_k_range(wg: vec3<u32>, k_units: u32) -> vec2<u32> {
    let slices = gemm_slices();
    let per = (k_units + slices - 1u) / slices;
    let begin = (wg.z % slices) * per;
    return vec2<u32>(begin, min(k_units, begin + per));
}

// Which rows and columns this subgroup and lane own, and which slice of K.
fn sg_tile(wg: vec3<u32>, groups: vec3<u32>, sg: u32, lane: u32) -> SgTile {
    let slices = gemm_slices();
    var t: SgTile;
    t.slice = wg.z % slices;
    // z = (spill * products + product) * slices + slice: M tiles beyond 65535 spill into z
    // after the slices and products, as in gemm_core.
    let rest = wg.z / slices;
    gemm_product = rest % gemm_products();
    t.m0 = ((wg.y + (rest / gemm_products()) * groups.y) * SG_PER_WG + sg) * SG_ROWS;
    t.n4 = wg.x * SG_TILE_N4 + lane * SG_COLS4;
    return t;
}

fn sg_store_row(t: SgTile, n4s: u32, r: u32, v0: vec4<f32>, v1: vec4<f32>) {
    let m = t.m0 + r;
    if (r < SG_ROWS && m < gemm_dims().x) {
        if (t.n4 < n4s) {
            store_c4(m, t.n4, v0, t.slice);
        }
        if (SG_COLS4 == 2u && t.n4 + 1u < n4s) {
            store_c4(m, t.n4 + 1u, v1, t.slice);
        }
    }
}

// Every index into acc is a constant, here as in the K loop: one dynamic index would make the
// compiler keep all 64 accumulators in memory (on lavapipe: 4x slower and seconds to compile).
fn sg_store(acc: ptr<function, array<vec4<f32>, 64>>, t: SgTile, dims: vec3<u32>) {
    let n4s = dims.y / 4u;
    sg_store_row(t, n4s, 0u, (*acc)[0], (*acc)[1]);
    sg_store_row(t, n4s, 1u, (*acc)[2], (*acc)[3]);
    sg_store_row(t, n4s, 2u, (*acc)[4], (*acc)[5]);
    sg_store_row(t, n4s, 3u, (*acc)[6], (*acc)[7]);
    sg_store_row(t, n4s, 4u, (*acc)[8], (*acc)[9]);
    sg_store_row(t, n4s, 5u, (*acc)[10], (*acc)[11]);
    sg_store_row(t, n4s, 6u, (*acc)[12], (*acc)[13]);
    sg_store_row(t, n4s, 7u, (*acc)[14], (*acc)[15]);
    sg_store_row(t, n4s, 8u, (*acc)[16], (*acc)[17]);
    sg_store_row(t, n4s, 9u, (*acc)[18], (*acc)[19]);
    sg_store_row(t, n4s, 10u, (*acc)[20], (*acc)[21]);
    sg_store_row(t, n4s, 11u, (*acc)[22], (*acc)[23]);
    sg_store_row(t, n4s, 12u, (*acc)[24], (*acc)[25]);
    sg_store_row(t, n4s, 13u, (*acc)[26], (*acc)[27]);
    sg_store_row(t, n4s, 14u, (*acc)[28], (*acc)[29]);
    sg_store_row(t, n4s, 15u, (*acc)[30], (*acc)[31]);
    sg_store_row(t, n4s, 16u, (*acc)[32], (*acc)[33]);
    sg_store_row(t, n4s, 17u, (*acc)[34], (*acc)[35]);
    sg_store_row(t, n4s, 18u, (*acc)[36], (*acc)[37]);
    sg_store_row(t, n4s, 19u, (*acc)[38], (*acc)[39]);
    sg_store_row(t, n4s, 20u, (*acc)[40], (*acc)[41]);
    sg_store_row(t, n4s, 21u, (*acc)[42], (*acc)[43]);
    sg_store_row(t, n4s, 22u, (*acc)[44], (*acc)[45]);
    sg_store_row(t, n4s, 23u, (*acc)[46], (*acc)[47]);
    sg_store_row(t, n4s, 24u, (*acc)[48], (*acc)[49]);
    sg_store_row(t, n4s, 25u, (*acc)[50], (*acc)[51]);
    sg_store_row(t, n4s, 26u, (*acc)[52], (*acc)[53]);
    sg_store_row(t, n4s, 27u, (*acc)[54], (*acc)[55]);
    sg_store_row(t, n4s, 28u, (*acc)[56], (*acc)[57]);
    sg_store_row(t, n4s, 29u, (*acc)[58], (*acc)[59]);
    sg_store_row(t, n4s, 30u, (*acc)[60], (*acc)[61]);
    sg_store_row(t, n4s, 31u, (*acc)[62], (*acc)[63]);
}

fn sg_load_b(k: u32, n4: u32, dims: vec3<u32>) -> vec4<f32> {
    if (k < dims.z && n4 < dims.y / 4u) {
        return load_b4(k, n4);
    }
    return vec4<f32>(0.0);
}

// One K step (4 values of k) of the subgroup's SG_ROWS rows, row r of the tile being lane
// (r mod W)'s a_(r / W) for W lanes: sg_step8 for 8-lane subgroups, sg_step16 for 16, sg_step32
// for 32 and wider (rows past SG_ROWS fold away in sg_rank4).
fn sg_step8(acc: ptr<function, array<vec4<f32>, 64>>, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, b: ptr<function, array<vec4<f32>, 8>>) {
    sg_rank4(acc, 0u, subgroupBroadcast(a0, 0u), b);
    sg_rank4(acc, 1u, subgroupBroadcast(a0, 1u), b);
    sg_rank4(acc, 2u, subgroupBroadcast(a0, 2u), b);
    sg_rank4(acc, 3u, subgroupBroadcast(a0, 3u), b);
    sg_rank4(acc, 4u, subgroupBroadcast(a0, 4u), b);
    sg_rank4(acc, 5u, subgroupBroadcast(a0, 5u), b);
    sg_rank4(acc, 6u, subgroupBroadcast(a0, 6u), b);
    sg_rank4(acc, 7u, subgroupBroadcast(a0, 7u), b);
    sg_rank4(acc, 8u, subgroupBroadcast(a1, 0u), b);
    sg_rank4(acc, 9u, subgroupBroadcast(a1, 1u), b);
    sg_rank4(acc, 10u, subgroupBroadcast(a1, 2u), b);
    sg_rank4(acc, 11u, subgroupBroadcast(a1, 3u), b);
    sg_rank4(acc, 12u, subgroupBroadcast(a1, 4u), b);
    sg_rank4(acc, 13u, subgroupBroadcast(a1, 5u), b);
    sg_rank4(acc, 14u, subgroupBroadcast(a1, 6u), b);
    sg_rank4(acc, 15u, subgroupBroadcast(a1, 7u), b);
    sg_rank4(acc, 16u, subgroupBroadcast(a2, 0u), b);
    sg_rank4(acc, 17u, subgroupBroadcast(a2, 1u), b);
    sg_rank4(acc, 18u, subgroupBroadcast(a2, 2u), b);
    sg_rank4(acc, 19u, subgroupBroadcast(a2, 3u), b);
    sg_rank4(acc, 20u, subgroupBroadcast(a2, 4u), b);
    sg_rank4(acc, 21u, subgroupBroadcast(a2, 5u), b);
    sg_rank4(acc, 22u, subgroupBroadcast(a2, 6u), b);
    sg_rank4(acc, 23u, subgroupBroadcast(a2, 7u), b);
    sg_rank4(acc, 24u, subgroupBroadcast(a3, 0u), b);
    sg_rank4(acc, 25u, subgroupBroadcast(a3, 1u), b);
    sg_rank4(acc, 26u, subgroupBroadcast(a3, 2u), b);
    sg_rank4(acc, 27u, subgroupBroadcast(a3, 3u), b);
    sg_rank4(acc, 28u, subgroupBroadcast(a3, 4u), b);
    sg_rank4(acc, 29u, subgroupBroadcast(a3, 5u), b);
    sg_rank4(acc, 30u, subgroupBroadcast(a3, 6u), b);
    sg_rank4(acc, 31u, subgroupBroadcast(a3, 7u), b);
}

fn sg_step16(acc: ptr<function, array<vec4<f32>, 64>>, a0: vec4<f32>, a1: vec4<f32>, b: ptr<function, array<vec4<f32>, 8>>) {
    sg_rank4(acc, 0u, subgroupBroadcast(a0, 0u), b);
    sg_rank4(acc, 1u, subgroupBroadcast(a0, 1u), b);
    sg_rank4(acc, 2u, subgroupBroadcast(a0, 2u), b);
    sg_rank4(acc, 3u, subgroupBroadcast(a0, 3u), b);
    sg_rank4(acc, 4u, subgroupBroadcast(a0, 4u), b);
    sg_rank4(acc, 5u, subgroupBroadcast(a0, 5u), b);
    sg_rank4(acc, 6u, subgroupBroadcast(a0, 6u), b);
    sg_rank4(acc, 7u, subgroupBroadcast(a0, 7u), b);
    sg_rank4(acc, 8u, subgroupBroadcast(a0, 8u), b);
    sg_rank4(acc, 9u, subgroupBroadcast(a0, 9u), b);
    sg_rank4(acc, 10u, subgroupBroadcast(a0, 10u), b);
    sg_rank4(acc, 11u, subgroupBroadcast(a0, 11u), b);
    sg_rank4(acc, 12u, subgroupBroadcast(a0, 12u), b);
    sg_rank4(acc, 13u, subgroupBroadcast(a0, 13u), b);
    sg_rank4(acc, 14u, subgroupBroadcast(a0, 14u), b);
    sg_rank4(acc, 15u, subgroupBroadcast(a0, 15u), b);
    sg_rank4(acc, 16u, subgroupBroadcast(a1, 0u), b);
    sg_rank4(acc, 17u, subgroupBroadcast(a1, 1u), b);
    sg_rank4(acc, 18u, subgroupBroadcast(a1, 2u), b);
    sg_rank4(acc, 19u, subgroupBroadcast(a1, 3u), b);
    sg_rank4(acc, 20u, subgroupBroadcast(a1, 4u), b);
    sg_rank4(acc, 21u, subgroupBroadcast(a1, 5u), b);
    sg_rank4(acc, 22u, subgroupBroadcast(a1, 6u), b);
    sg_rank4(acc, 23u, subgroupBroadcast(a1, 7u), b);
    sg_rank4(acc, 24u, subgroupBroadcast(a1, 8u), b);
    sg_rank4(acc, 25u, subgroupBroadcast(a1, 9u), b);
    sg_rank4(acc, 26u, subgroupBroadcast(a1, 10u), b);
    sg_rank4(acc, 27u, subgroupBroadcast(a1, 11u), b);
    sg_rank4(acc, 28u, subgroupBroadcast(a1, 12u), b);
    sg_rank4(acc, 29u, subgroupBroadcast(a1, 13u), b);
    sg_rank4(acc, 30u, subgroupBroadcast(a1, 14u), b);
    sg_rank4(acc, 31u, subgroupBroadcast(a1, 15u), b);
}

fn sg_step32(acc: ptr<function, array<vec4<f32>, 64>>, a0: vec4<f32>, b: ptr<function, array<vec4<f32>, 8>>) {
    sg_rank4(acc, 0u, subgroupBroadcast(a0, 0u), b);
    sg_rank4(acc, 1u, subgroupBroadcast(a0, 1u), b);
    sg_rank4(acc, 2u, subgroupBroadcast(a0, 2u), b);
    sg_rank4(acc, 3u, subgroupBroadcast(a0, 3u), b);
    sg_rank4(acc, 4u, subgroupBroadcast(a0, 4u), b);
    sg_rank4(acc, 5u, subgroupBroadcast(a0, 5u), b);
    sg_rank4(acc, 6u, subgroupBroadcast(a0, 6u), b);
    sg_rank4(acc, 7u, subgroupBroadcast(a0, 7u), b);
    sg_rank4(acc, 8u, subgroupBroadcast(a0, 8u), b);
    sg_rank4(acc, 9u, subgroupBroadcast(a0, 9u), b);
    sg_rank4(acc, 10u, subgroupBroadcast(a0, 10u), b);
    sg_rank4(acc, 11u, subgroupBroadcast(a0, 11u), b);
    sg_rank4(acc, 12u, subgroupBroadcast(a0, 12u), b);
    sg_rank4(acc, 13u, subgroupBroadcast(a0, 13u), b);
    sg_rank4(acc, 14u, subgroupBroadcast(a0, 14u), b);
    sg_rank4(acc, 15u, subgroupBroadcast(a0, 15u), b);
    sg_rank4(acc, 16u, subgroupBroadcast(a0, 16u), b);
    sg_rank4(acc, 17u, subgroupBroadcast(a0, 17u), b);
    sg_rank4(acc, 18u, subgroupBroadcast(a0, 18u), b);
    sg_rank4(acc, 19u, subgroupBroadcast(a0, 19u), b);
    sg_rank4(acc, 20u, subgroupBroadcast(a0, 20u), b);
    sg_rank4(acc, 21u, subgroupBroadcast(a0, 21u), b);
    sg_rank4(acc, 22u, subgroupBroadcast(a0, 22u), b);
    sg_rank4(acc, 23u, subgroupBroadcast(a0, 23u), b);
    sg_rank4(acc, 24u, subgroupBroadcast(a0, 24u), b);
    sg_rank4(acc, 25u, subgroupBroadcast(a0, 25u), b);
    sg_rank4(acc, 26u, subgroupBroadcast(a0, 26u), b);
    sg_rank4(acc, 27u, subgroupBroadcast(a0, 27u), b);
    sg_rank4(acc, 28u, subgroupBroadcast(a0, 28u), b);
    sg_rank4(acc, 29u, subgroupBroadcast(a0, 29u), b);
    sg_rank4(acc, 30u, subgroupBroadcast(a0, 30u), b);
    sg_rank4(acc, 31u, subgroupBroadcast(a0, 31u), b);
}

@compute @workgroup_size(SG_W * SG_PER_WG, 1, 1)
fn gemm_sg(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let dims = gemm_dims();
    let t = sg_tile(wg, groups, sg, lane);
    let ks = sg_k_range(wg, (dims.z + 3u) / 4u);
    // Lane l loads those of rows m0 + l, m0 + W + l, m0 + 2W + l, m0 + 3W + l that lie below
    // SG_ROWS (a test of override constants alone, such as SG_W < SG_ROWS, folds away when the
    // pipeline is built); their index maps are worked out once here rather than per K step.
    let i0 = lane;
    let i1 = SG_W + lane;
    let i2 = 2u * SG_W + lane;
    let i3 = 3u * SG_W + lane;
    let ok0 = i0 < SG_ROWS && t.m0 + i0 < dims.x;
    let ok1 = SG_W < SG_ROWS && i1 < SG_ROWS && t.m0 + i1 < dims.x;
    let ok2 = 2u * SG_W < SG_ROWS && i2 < SG_ROWS && t.m0 + i2 < dims.x;
    let ok3 = 3u * SG_W < SG_ROWS && i3 < SG_ROWS && t.m0 + i3 < dims.x;
    let r0 = a_row(min(t.m0 + i0, dims.x - 1u));
    let r1 = a_row(min(t.m0 + i1, dims.x - 1u));
    let r2 = a_row(min(t.m0 + i2, dims.x - 1u));
    let r3 = a_row(min(t.m0 + i3, dims.x - 1u));
    var acc: array<vec4<f32>, 64>;
    var b: array<vec4<f32>, 8>;
    for (var k4 = ks.x; k4 < ks.y; k4++) {
        let k = k4 * 4u;
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        if (ok0) { a0 = load_a4(r0, k); }
        if (ok1) { a1 = load_a4(r1, k); }
        if (ok2) { a2 = load_a4(r2, k); }
        if (ok3) { a3 = load_a4(r3, k); }
        b[0] = sg_load_b(k, t.n4, dims);
        if (SG_COLS4 == 2u) { b[1] = sg_load_b(k, t.n4 + 1u, dims); }
        b[2] = sg_load_b(k + 1u, t.n4, dims);
        if (SG_COLS4 == 2u) { b[3] = sg_load_b(k + 1u, t.n4 + 1u, dims); }
        b[4] = sg_load_b(k + 2u, t.n4, dims);
        if (SG_COLS4 == 2u) { b[5] = sg_load_b(k + 2u, t.n4 + 1u, dims); }
        b[6] = sg_load_b(k + 3u, t.n4, dims);
        if (SG_COLS4 == 2u) { b[7] = sg_load_b(k + 3u, t.n4 + 1u, dims); }
        if (SG_W == 8u) {
            sg_step8(&acc, a0, a1, a2, a3, &b);
        } else if (SG_W == 16u) {
            sg_step16(&acc, a0, a1, &b);
        } else {
            sg_step32(&acc, a0, &b);
        }
    }
    sg_store(&acc, t, dims);
}

@compute @workgroup_size(SG_W * SG_PER_WG, 1, 1)
fn gemm_sg_m(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let dims = gemm_dims();
    let t = sg_tile(wg, groups, sg, lane);
    let ks = sg_k_range(wg, dims.z);
    // Lane l loads rows m0 + 4l .. m0 + 4l + 3 (load_a4m zero-fills those past M): lanes 0-7
    // cover 32 rows at any width, and the broadcasts below read only them.
    let ma = t.m0 + 4u * lane;
    let ok = 4u * lane < SG_ROWS && ma < dims.x;
    var acc: array<vec4<f32>, 64>;
    for (var k = ks.x; k < ks.y; k++) {
        var a = vec4<f32>(0.0);
        if (ok) { a = load_a4m(ma, k); }
        let b0 = sg_load_b(k, t.n4, dims);
        var b1 = vec4<f32>(0.0);
        if (SG_COLS4 == 2u) { b1 = sg_load_b(k, t.n4 + 1u, dims); }
        sg_rank1x4(&acc, 0u, subgroupBroadcast(a, 0u), b0, b1);
        sg_rank1x4(&acc, 1u, subgroupBroadcast(a, 1u), b0, b1);
        sg_rank1x4(&acc, 2u, subgroupBroadcast(a, 2u), b0, b1);
        sg_rank1x4(&acc, 3u, subgroupBroadcast(a, 3u), b0, b1);
        sg_rank1x4(&acc, 4u, subgroupBroadcast(a, 4u), b0, b1);
        sg_rank1x4(&acc, 5u, subgroupBroadcast(a, 5u), b0, b1);
        sg_rank1x4(&acc, 6u, subgroupBroadcast(a, 6u), b0, b1);
        sg_rank1x4(&acc, 7u, subgroupBroadcast(a, 7u), b0, b1);
    }
    sg_store(&acc, t, dims);
}
