// Winograd minimal filtering F(TILE x TILE, 3x3) for 3x3 stride-1 convolutions (Lavin & Gray,
// "Fast Algorithms for Convolutional Neural Networks", 2015). With ALPHA = TILE + 2, an output
// tile Y (TILE,TILE) of one output channel is
//   Y = A^T [ sum over input channels c of (G g_c G^T) .* (B^T d_c B) ] A
// where d_c is the (ALPHA,ALPHA) input patch and g_c the 3x3 kernel slice. The sum over c for
// each of the ALPHA^2 positions t is a GEMM, M_t (P,K) = V_t (P,C) U_t (C,K), P being the
// tiles, which the engine's GEMM runs (matmul modules, all t in one dispatch); this file holds the
// three transforms around it:
//   kernel_transform  w (3,3,C,K) HWIO  ->  U (ALPHA^2, C, K)
//                     with FLIP = 1: w read as the input gradient's kernel, rotated 180
//                     degrees with its channels swapped, U (ALPHA^2, K_w, C_w)
//   input_transform   x (N,H,W,C) NHWC  ->  V (ALPHA^2, P, C), P = N * TILES_H * TILES_W,
//                     zero outside the input (padding, and past the last whole tile)
//   output_transform  M (ALPHA^2, P, K) ->  y (N,OH,OW,K), plus bias (HAS_BIAS) then ReLU
//                     (RELU), only the positions inside OH x OW written
// TILE is 2 (F(2x2,3x3): 16 products per 4 outputs instead of 36), 4 (F(4x4,3x3): 36 per 16
// instead of 144) or 6 (F(6x6,3x3): 64 per 36 instead of 324; interpolation points 0, +-1,
// +-2, +-1/2 and infinity, the choice with the least rounding error for this size). The 1-D transforms are written out term by term: a multiplication by a
// matrix's zero is not free in IEEE arithmetic, so a generic matrix loop would do them all.
// Every invocation handles one channel of one tile (four in the vec4 forms at the end, where
// the channel count allows); consecutive invocations take consecutive channels, so their loads
// and stores are contiguous in NHWC.

struct Params {
    n: u32,        // images in this chunk
    h: u32,        // input height and width
    w: u32,
    c: u32,        // input channels (rows of U)
    k: u32,        // output channels (columns of U)
    oh: u32,       // output height and width
    ow: u32,
    pad_top: u32,  // zero rows above / columns left of the input
    pad_left: u32,
    tiles_h: u32,  // ceil(OH / TILE), ceil(OW / TILE)
    tiles_w: u32,
    src_base: u32, // first element of the chunk in src / dst (storage windows start aligned)
    dst_base: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

override TILE: u32 = 2u;
override FLIP: u32 = 0u;
override HAS_BIAS: u32 = 1u;
override RELU: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn alpha() -> u32 {
    return TILE + 2u;
}

// x + y * groups.x * 64, as ops::grid_1d spills a long grid into y.
fn flat_id(id: vec3<u32>, groups: vec3<u32>) -> u32 {
    return id.x + id.y * groups.x * 64u;
}

// (image, tile row, tile column) of tile number `tile` of the chunk.
fn tile_at(tile: u32) -> vec3<u32> {
    return vec3<u32>(tile / (p.tiles_w * p.tiles_h), (tile / p.tiles_w) % p.tiles_h, tile % p.tiles_w);
}

// B^T d for one column d of an input patch (ALPHA values).
fn input_1d(d: array<f32, 8>) -> array<f32, 8> {
    var r: array<f32, 8>;
    if (TILE == 2u) {
        r[0] = d[0] - d[2];
        r[1] = d[1] + d[2];
        r[2] = d[2] - d[1];
        r[3] = d[1] - d[3];
    } else if (TILE == 4u) {
        r[0] = 4.0 * d[0] - 5.0 * d[2] + d[4];
        r[1] = d[3] + d[4] - 4.0 * (d[1] + d[2]);
        r[2] = 4.0 * (d[1] - d[2]) + d[4] - d[3];
        r[3] = 2.0 * (d[3] - d[1]) + d[4] - d[2];
        r[4] = 2.0 * (d[1] - d[3]) + d[4] - d[2];
        r[5] = 4.0 * d[1] - 5.0 * d[3] + d[5];
    } else {
        r[0] = d[0] - d[6] + 5.25 * (d[4] - d[2]);
        r[7] = d[7] - d[1] + 5.25 * (d[3] - d[5]);
        let t1 = d[2] + d[6] - 4.25 * d[4];
        let t2 = d[1] + d[5] - 4.25 * d[3];
        r[1] = t1 + t2;
        r[2] = t1 - t2;
        let t3 = d[6] + 0.25 * d[2] - 1.25 * d[4];
        let t4 = 0.5 * d[1] - 2.5 * d[3] + 2.0 * d[5];
        r[3] = t3 + t4;
        r[4] = t3 - t4;
        let t5 = d[6] + 4.0 * d[2] - 5.0 * d[4];
        let t6 = 2.0 * d[1] - 2.5 * d[3] + 0.5 * d[5];
        r[5] = t5 + t6;
        r[6] = t5 - t6;
    }
    return r;
}

// G g for one column g of a 3x3 kernel: ALPHA values.
fn kernel_1d(g0: f32, g1: f32, g2: f32) -> array<f32, 8> {
    var r: array<f32, 8>;
    if (TILE == 2u) {
        r[0] = g0;
        r[1] = 0.5 * (g0 + g1 + g2);
        r[2] = 0.5 * (g0 - g1 + g2);
        r[3] = g2;
    } else if (TILE == 4u) {
        r[0] = 0.25 * g0;
        r[1] = -(g0 + g1 + g2) / 6.0;
        r[2] = -(g0 - g1 + g2) / 6.0;
        r[3] = g0 / 24.0 + g1 / 12.0 + g2 / 6.0;
        r[4] = g0 / 24.0 - g1 / 12.0 + g2 / 6.0;
        r[5] = g2;
    } else {
        r[0] = g0;
        r[1] = -2.0 * (g0 + g1 + g2) / 9.0;
        r[2] = -2.0 * (g0 - g1 + g2) / 9.0;
        r[3] = g0 / 90.0 + g1 / 45.0 + 2.0 * g2 / 45.0;
        r[4] = g0 / 90.0 - g1 / 45.0 + 2.0 * g2 / 45.0;
        r[5] = 32.0 * g0 / 45.0 + 16.0 * g1 / 45.0 + 8.0 * g2 / 45.0;
        r[6] = 32.0 * g0 / 45.0 - 16.0 * g1 / 45.0 + 8.0 * g2 / 45.0;
        r[7] = g2;
    }
    return r;
}

// A^T m for one column m of a transformed product (ALPHA values): TILE values.
fn output_1d(m: array<f32, 8>) -> array<f32, 6> {
    var r: array<f32, 6>;
    if (TILE == 2u) {
        r[0] = m[0] + m[1] + m[2];
        r[1] = m[1] - m[2] - m[3];
    } else if (TILE == 4u) {
        let s12 = m[1] + m[2];
        let d12 = m[1] - m[2];
        let s34 = m[3] + m[4];
        let d34 = m[3] - m[4];
        r[0] = m[0] + s12 + s34;
        r[1] = d12 + 2.0 * d34;
        r[2] = s12 + 4.0 * s34;
        r[3] = d12 + 8.0 * d34 + m[5];
    } else {
        let s12 = m[1] + m[2];
        let d12 = m[1] - m[2];
        let s34 = m[3] + m[4];
        let d34 = m[3] - m[4];
        let s56 = m[5] + m[6];
        let d56 = m[5] - m[6];
        r[0] = m[0] + s12 + s34 + s56;
        r[1] = d12 + 2.0 * d34 + 0.5 * d56;
        r[2] = s12 + 4.0 * s34 + 0.25 * s56;
        r[3] = d12 + 8.0 * d34 + 0.125 * d56;
        r[4] = s12 + 16.0 * s34 + 0.0625 * s56;
        r[5] = d12 + 32.0 * d34 + 0.03125 * d56 + m[7];
    }
    return r;
}

// U[t, row, col] for every row < C and col < K of U, from the 3x3 kernel slice it transforms:
// w[a, b, row, col], or with FLIP w[2 - a, 2 - b, col, row].
@compute @workgroup_size(64, 1, 1)
fn kernel_transform(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(id, groups);
    if (i >= p.c * p.k) {
        return;
    }
    let row = i / p.k;
    let col = i % p.k;
    var g: array<f32, 9>;
    for (var a = 0u; a < 3u; a++) {
        for (var b = 0u; b < 3u; b++) {
            if (FLIP == 1u) {
                g[a * 3u + b] = src[((2u - a) * 3u + 2u - b) * p.c * p.k + col * p.c + row];
            } else {
                g[a * 3u + b] = src[(a * 3u + b) * p.c * p.k + row * p.k + col];
            }
        }
    }
    // G g G^T: G applied down each of the 3 columns, then along each of the ALPHA rows.
    var gc: array<array<f32, 8>, 3>;
    for (var b = 0u; b < 3u; b++) {
        gc[b] = kernel_1d(g[b], g[3u + b], g[6u + b]);
    }
    let al = alpha();
    for (var r = 0u; r < al; r++) {
        let u = kernel_1d(gc[0][r], gc[1][r], gc[2][r]);
        for (var s = 0u; s < al; s++) {
            dst[(r * al + s) * p.c * p.k + i] = u[s];
        }
    }
}

// V[t, tile, ch] for every tile of the chunk and channel ch < C.
@compute @workgroup_size(64, 1, 1)
fn input_transform(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(id, groups);
    let tiles = p.n * p.tiles_h * p.tiles_w;
    if (i >= tiles * p.c) {
        return;
    }
    let ch = i % p.c;
    let at = tile_at(i / p.c);
    let img = at.x;
    let ty = at.y;
    let tx = at.z;
    // Top-left input position of the patch, as signed values: padding lies above and left.
    let y0 = i32(ty * TILE) - i32(p.pad_top);
    let x0 = i32(tx * TILE) - i32(p.pad_left);
    let al = alpha();
    // B^T d B: B^T down each column of the patch, then along each row.
    var cols: array<array<f32, 8>, 8>;
    for (var s = 0u; s < al; s++) {
        let x = x0 + i32(s);
        var d: array<f32, 8>;
        for (var r = 0u; r < al; r++) {
            let y = y0 + i32(r);
            if (y >= 0 && y < i32(p.h) && x >= 0 && x < i32(p.w)) {
                d[r] = src[p.src_base + ((img * p.h + u32(y)) * p.w + u32(x)) * p.c + ch];
            }
        }
        cols[s] = input_1d(d);
    }
    for (var r = 0u; r < al; r++) {
        var row: array<f32, 8>;
        for (var s = 0u; s < al; s++) {
            row[s] = cols[s][r];
        }
        let v = input_1d(row);
        for (var s = 0u; s < al; s++) {
            dst[(r * al + s) * tiles * p.c + i] = v[s];
        }
    }
}

// y[img, oy, ox, ch] for the TILE x TILE outputs of one tile and channel ch < K.
@compute @workgroup_size(64, 1, 1)
fn output_transform(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(id, groups);
    let tiles = p.n * p.tiles_h * p.tiles_w;
    if (i >= tiles * p.k) {
        return;
    }
    let ch = i % p.k;
    let at = tile_at(i / p.k);
    let img = at.x;
    let ty = at.y;
    let tx = at.z;
    let al = alpha();
    // A^T m A: A^T down each column, then along each of the TILE rows.
    var cols: array<array<f32, 6>, 8>;
    for (var s = 0u; s < al; s++) {
        var m: array<f32, 8>;
        for (var r = 0u; r < al; r++) {
            m[r] = src[(r * al + s) * tiles * p.k + i];
        }
        cols[s] = output_1d(m);
    }
    var b = 0.0;
    if (HAS_BIAS == 1u) {
        b = bias[ch];
    }
    for (var r = 0u; r < TILE; r++) {
        let oy = ty * TILE + r;
        var row: array<f32, 8>;
        for (var s = 0u; s < al; s++) {
            row[s] = cols[s][r];
        }
        let out = output_1d(row);
        for (var s = 0u; s < TILE; s++) {
            let ox = tx * TILE + s;
            if (oy < p.oh && ox < p.ow) {
                var v = out[s] + b;
                if (RELU == 1u) {
                    v = max(v, 0.0);
                }
                dst[p.dst_base + ((img * p.oh + oy) * p.ow + ox) * p.k + ch] = v;
            }
        }
    }
}

// The vec4 forms of the input and output transforms, for C (input_transform4) or K
// (output_transform4) a multiple of 4: each invocation handles four consecutive channels of one
// tile, so every load and store moves a vec4 (on lavapipe each is a per-lane loop, whatever its
// width: four channels per invocation make a quarter of them). The ALPHA values of a column
// or row travel in a struct, its fields named, so that every access is a constant one and
// the compiler keeps them in registers (a private array indexed in a loop stays in memory on
// lavapipe, BENCHMARKS.md, "Winograd").
@group(0) @binding(4) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bias4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dst4: array<vec4<f32>>;

// ALPHA values (those past ALPHA unused), or TILE of them after A^T.
struct Col {
    v0: vec4<f32>,
    v1: vec4<f32>,
    v2: vec4<f32>,
    v3: vec4<f32>,
    v4: vec4<f32>,
    v5: vec4<f32>,
    v6: vec4<f32>,
    v7: vec4<f32>,
}

// input_1d on four channels.
fn input_1d4(d: Col) -> Col {
    var r: Col;
    if (TILE == 2u) {
        r.v0 = d.v0 - d.v2;
        r.v1 = d.v1 + d.v2;
        r.v2 = d.v2 - d.v1;
        r.v3 = d.v1 - d.v3;
    } else if (TILE == 4u) {
        r.v0 = 4.0 * d.v0 - 5.0 * d.v2 + d.v4;
        r.v1 = d.v3 + d.v4 - 4.0 * (d.v1 + d.v2);
        r.v2 = 4.0 * (d.v1 - d.v2) + d.v4 - d.v3;
        r.v3 = 2.0 * (d.v3 - d.v1) + d.v4 - d.v2;
        r.v4 = 2.0 * (d.v1 - d.v3) + d.v4 - d.v2;
        r.v5 = 4.0 * d.v1 - 5.0 * d.v3 + d.v5;
    } else {
        r.v0 = d.v0 - d.v6 + 5.25 * (d.v4 - d.v2);
        r.v7 = d.v7 - d.v1 + 5.25 * (d.v3 - d.v5);
        let t1 = d.v2 + d.v6 - 4.25 * d.v4;
        let t2 = d.v1 + d.v5 - 4.25 * d.v3;
        r.v1 = t1 + t2;
        r.v2 = t1 - t2;
        let t3 = d.v6 + 0.25 * d.v2 - 1.25 * d.v4;
        let t4 = 0.5 * d.v1 - 2.5 * d.v3 + 2.0 * d.v5;
        r.v3 = t3 + t4;
        r.v4 = t3 - t4;
        let t5 = d.v6 + 4.0 * d.v2 - 5.0 * d.v4;
        let t6 = 2.0 * d.v1 - 2.5 * d.v3 + 0.5 * d.v5;
        r.v5 = t5 + t6;
        r.v6 = t5 - t6;
    }
    return r;
}

// output_1d on four channels: TILE values in v0..
fn output_1d4(m: Col) -> Col {
    var r: Col;
    if (TILE == 2u) {
        r.v0 = m.v0 + m.v1 + m.v2;
        r.v1 = m.v1 - m.v2 - m.v3;
    } else if (TILE == 4u) {
        let s12 = m.v1 + m.v2;
        let d12 = m.v1 - m.v2;
        let s34 = m.v3 + m.v4;
        let d34 = m.v3 - m.v4;
        r.v0 = m.v0 + s12 + s34;
        r.v1 = d12 + 2.0 * d34;
        r.v2 = s12 + 4.0 * s34;
        r.v3 = d12 + 8.0 * d34 + m.v5;
    } else {
        let s12 = m.v1 + m.v2;
        let d12 = m.v1 - m.v2;
        let s34 = m.v3 + m.v4;
        let d34 = m.v3 - m.v4;
        let s56 = m.v5 + m.v6;
        let d56 = m.v5 - m.v6;
        r.v0 = m.v0 + s12 + s34 + s56;
        r.v1 = d12 + 2.0 * d34 + 0.5 * d56;
        r.v2 = s12 + 4.0 * s34 + 0.25 * s56;
        r.v3 = d12 + 8.0 * d34 + 0.125 * d56;
        r.v4 = s12 + 16.0 * s34 + 0.0625 * s56;
        r.v5 = d12 + 32.0 * d34 + 0.03125 * d56 + m.v7;
    }
    return r;
}

// x[img, y0 + r, x, 4*ch4 ..], zero outside the input and for r past ALPHA.
fn patch4(img: u32, y0: i32, x: i32, ch4: u32, r: u32) -> vec4<f32> {
    let y = y0 + i32(r);
    if (r >= alpha() || y < 0 || y >= i32(p.h) || x < 0 || x >= i32(p.w)) {
        return vec4<f32>(0.0);
    }
    return src4[(p.src_base + ((img * p.h + u32(y)) * p.w + u32(x)) * p.c) / 4u + ch4];
}

// B^T down the patch's column at x.
fn input_col4(img: u32, y0: i32, x: i32, ch4: u32) -> Col {
    return input_1d4(Col(patch4(img, y0, x, ch4, 0u), patch4(img, y0, x, ch4, 1u),
        patch4(img, y0, x, ch4, 2u), patch4(img, y0, x, ch4, 3u), patch4(img, y0, x, ch4, 4u),
        patch4(img, y0, x, ch4, 5u), patch4(img, y0, x, ch4, 6u), patch4(img, y0, x, ch4, 7u)));
}

// Row r of a transformed tile (ALPHA values), stored at positions r * ALPHA + s of V or U,
// which lie `stride` vec4s apart.
fn store_row4(r: u32, v: Col, at: u32, stride: u32) {
    let al = alpha();
    dst4[(r * al) * stride + at] = v.v0;
    dst4[(r * al + 1u) * stride + at] = v.v1;
    dst4[(r * al + 2u) * stride + at] = v.v2;
    dst4[(r * al + 3u) * stride + at] = v.v3;
    if (TILE >= 4u) {
        dst4[(r * al + 4u) * stride + at] = v.v4;
        dst4[(r * al + 5u) * stride + at] = v.v5;
    }
    if (TILE == 6u) {
        dst4[(r * al + 6u) * stride + at] = v.v6;
        dst4[(r * al + 7u) * stride + at] = v.v7;
    }
}

// Row r of B^T d B: B^T along the row whose values are `row`.
fn input_row4(r: u32, row: Col, at: u32, stride: u32) {
    store_row4(r, input_1d4(row), at, stride);
}

// input_transform, four channels per invocation.
@compute @workgroup_size(64, 1, 1)
fn input_transform4(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(id, groups);
    let c4 = p.c / 4u;
    let tiles = p.n * p.tiles_h * p.tiles_w;
    if (i >= tiles * c4) {
        return;
    }
    let ch4 = i % c4;
    let at = tile_at(i / c4);
    let y0 = i32(at.y * TILE) - i32(p.pad_top);
    let x0 = i32(at.z * TILE) - i32(p.pad_left);
    let c0 = input_col4(at.x, y0, x0, ch4);
    let c1 = input_col4(at.x, y0, x0 + 1, ch4);
    let c2 = input_col4(at.x, y0, x0 + 2, ch4);
    let c3 = input_col4(at.x, y0, x0 + 3, ch4);
    var c4c: Col;
    var c5c: Col;
    var c6c: Col;
    var c7c: Col;
    if (TILE >= 4u) {
        c4c = input_col4(at.x, y0, x0 + 4, ch4);
        c5c = input_col4(at.x, y0, x0 + 5, ch4);
    }
    if (TILE == 6u) {
        c6c = input_col4(at.x, y0, x0 + 6, ch4);
        c7c = input_col4(at.x, y0, x0 + 7, ch4);
    }
    // V (ALPHA^2, P, C) in vec4s: position t's rows are tiles * c4 apart.
    let stride = tiles * c4;
    input_row4(0u, Col(c0.v0, c1.v0, c2.v0, c3.v0, c4c.v0, c5c.v0, c6c.v0, c7c.v0), i, stride);
    input_row4(1u, Col(c0.v1, c1.v1, c2.v1, c3.v1, c4c.v1, c5c.v1, c6c.v1, c7c.v1), i, stride);
    input_row4(2u, Col(c0.v2, c1.v2, c2.v2, c3.v2, c4c.v2, c5c.v2, c6c.v2, c7c.v2), i, stride);
    input_row4(3u, Col(c0.v3, c1.v3, c2.v3, c3.v3, c4c.v3, c5c.v3, c6c.v3, c7c.v3), i, stride);
    if (TILE >= 4u) {
        input_row4(4u, Col(c0.v4, c1.v4, c2.v4, c3.v4, c4c.v4, c5c.v4, c6c.v4, c7c.v4), i, stride);
        input_row4(5u, Col(c0.v5, c1.v5, c2.v5, c3.v5, c4c.v5, c5c.v5, c6c.v5, c7c.v5), i, stride);
    }
    if (TILE == 6u) {
        input_row4(6u, Col(c0.v6, c1.v6, c2.v6, c3.v6, c4c.v6, c5c.v6, c6c.v6, c7c.v6), i, stride);
        input_row4(7u, Col(c0.v7, c1.v7, c2.v7, c3.v7, c4c.v7, c5c.v7, c6c.v7, c7c.v7), i, stride);
    }
}

// M[r * ALPHA + s] for r < ALPHA, then A^T down that column s.
fn output_col4(s: u32, at: u32, stride: u32) -> Col {
    let al = alpha();
    var m: Col;
    m.v0 = src4[s * stride + at];
    m.v1 = src4[(al + s) * stride + at];
    m.v2 = src4[(2u * al + s) * stride + at];
    m.v3 = src4[(3u * al + s) * stride + at];
    if (TILE >= 4u) {
        m.v4 = src4[(4u * al + s) * stride + at];
        m.v5 = src4[(5u * al + s) * stride + at];
    }
    if (TILE == 6u) {
        m.v6 = src4[(6u * al + s) * stride + at];
        m.v7 = src4[(7u * al + s) * stride + at];
    }
    return output_1d4(m);
}

fn epilogue4(v: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    if (RELU == 1u) {
        return max(v + b, vec4<f32>(0.0));
    }
    return v + b;
}

// Output row oy of the tile: A^T along `row`, plus bias, ReLU; the TILE columns from ox0 that
// lie inside the output are stored.
fn output_row4(row: Col, img: u32, oy: u32, ox0: u32, ch4: u32, b: vec4<f32>) {
    if (oy >= p.oh) {
        return;
    }
    let o = output_1d4(row);
    let k4 = p.k / 4u;
    let at = (p.dst_base + ((img * p.oh + oy) * p.ow + ox0) * p.k) / 4u + ch4;
    if (ox0 < p.ow) {
        dst4[at] = epilogue4(o.v0, b);
    }
    if (ox0 + 1u < p.ow) {
        dst4[at + k4] = epilogue4(o.v1, b);
    }
    if (TILE >= 4u && ox0 + 2u < p.ow) {
        dst4[at + 2u * k4] = epilogue4(o.v2, b);
    }
    if (TILE >= 4u && ox0 + 3u < p.ow) {
        dst4[at + 3u * k4] = epilogue4(o.v3, b);
    }
    if (TILE == 6u && ox0 + 4u < p.ow) {
        dst4[at + 4u * k4] = epilogue4(o.v4, b);
    }
    if (TILE == 6u && ox0 + 5u < p.ow) {
        dst4[at + 5u * k4] = epilogue4(o.v5, b);
    }
}

// output_transform, four channels per invocation.
@compute @workgroup_size(64, 1, 1)
fn output_transform4(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_id(id, groups);
    let k4 = p.k / 4u;
    let tiles = p.n * p.tiles_h * p.tiles_w;
    if (i >= tiles * k4) {
        return;
    }
    let ch4 = i % k4;
    let at = tile_at(i / k4);
    // M (ALPHA^2, P, K) in vec4s: position t's rows are tiles * k4 apart.
    let stride = tiles * k4;
    let c0 = output_col4(0u, i, stride);
    let c1 = output_col4(1u, i, stride);
    let c2 = output_col4(2u, i, stride);
    let c3 = output_col4(3u, i, stride);
    var c4c: Col;
    var c5c: Col;
    var c6c: Col;
    var c7c: Col;
    if (TILE >= 4u) {
        c4c = output_col4(4u, i, stride);
        c5c = output_col4(5u, i, stride);
    }
    if (TILE == 6u) {
        c6c = output_col4(6u, i, stride);
        c7c = output_col4(7u, i, stride);
    }
    var b = vec4<f32>(0.0);
    if (HAS_BIAS == 1u) {
        b = bias4[ch4];
    }
    let oy = at.y * TILE;
    let ox = at.z * TILE;
    output_row4(Col(c0.v0, c1.v0, c2.v0, c3.v0, c4c.v0, c5c.v0, c6c.v0, c7c.v0), at.x, oy, ox, ch4, b);
    output_row4(Col(c0.v1, c1.v1, c2.v1, c3.v1, c4c.v1, c5c.v1, c6c.v1, c7c.v1), at.x, oy + 1u, ox, ch4, b);
    if (TILE >= 4u) {
        output_row4(Col(c0.v2, c1.v2, c2.v2, c3.v2, c4c.v2, c5c.v2, c6c.v2, c7c.v2), at.x, oy + 2u, ox, ch4, b);
        output_row4(Col(c0.v3, c1.v3, c2.v3, c3.v3, c4c.v3, c5c.v3, c6c.v3, c7c.v3), at.x, oy + 3u, ox, ch4, b);
    }
    if (TILE == 6u) {
        output_row4(Col(c0.v4, c1.v4, c2.v4, c3.v4, c4c.v4, c5c.v4, c6c.v4, c7c.v4), at.x, oy + 4u, ox, ch4, b);
        output_row4(Col(c0.v5, c1.v5, c2.v5, c3.v5, c4c.v5, c5c.v5, c6c.v5, c7c.v5), at.x, oy + 5u, ox, ch4, b);
    }
}

// kernel_1d on four kernel slices.
fn kernel_1d4(g0: vec4<f32>, g1: vec4<f32>, g2: vec4<f32>) -> Col {
    var r: Col;
    if (TILE == 2u) {
        r.v0 = g0;
        r.v1 = 0.5 * (g0 + g1 + g2);
        r.v2 = 0.5 * (g0 - g1 + g2);
        r.v3 = g2;
    } else if (TILE == 4u) {
        r.v0 = 0.25 * g0;
        r.v1 = -(g0 + g1 + g2) / 6.0;
        r.v2 = -(g0 - g1 + g2) / 6.0;
        r.v3 = g0 / 24.0 + g1 / 12.0 + g2 / 6.0;
        r.v4 = g0 / 24.0 - g1 / 12.0 + g2 / 6.0;
        r.v5 = g2;
    } else {
        r.v0 = g0;
        r.v1 = -2.0 * (g0 + g1 + g2) / 9.0;
        r.v2 = -2.0 * (g0 - g1 + g2) / 9.0;
        r.v3 = g0 / 90.0 + g1 / 45.0 + 2.0 * g2 / 45.0;
        r.v4 = g0 / 90.0 - g1 / 45.0 + 2.0 * g2 / 45.0;
        r.v5 = 32.0 * g0 / 45.0 + 16.0 * g1 / 45.0 + 8.0 * g2 / 45.0;
        r.v6 = 32.0 * g0 / 45.0 - 16.0 * g1 / 45.0 + 8.0 * g2 / 45.0;
        r.v7 = g2;
    }
    return r;
}

// The kernel taps (a, b) of U's four elements 4*i4 .. 4*i4+3 (one row of U, four columns):
// contiguous in w as kernel_transform reads it; with FLIP, four values C_w apart.
fn kernel_tap4(a: u32, b: u32, i4: u32) -> vec4<f32> {
    let ck = p.c * p.k;
    if (FLIP == 0u) {
        return src4[(a * 3u + b) * (ck / 4u) + i4];
    }
    let row = (4u * i4) / p.k;
    let col = (4u * i4) % p.k;
    let e = ((2u - a) * 3u + 2u - b) * ck + col * p.c + row;
    return vec4<f32>(src[e], src[e + p.c], src[e + 2u * p.c], src[e + 3u * p.c]);
}

// Row r of G g G^T from the column transforms' row r values, stored to U[r * ALPHA + s].
fn kernel_row4(r: u32, g0: vec4<f32>, g1: vec4<f32>, g2: vec4<f32>, i4: u32, stride: u32) {
    store_row4(r, kernel_1d4(g0, g1, g2), i4, stride);
}

// kernel_transform, four columns of U per invocation (K, U's columns, a multiple of 4). w is
// bound twice: as vec4s (src4) for the forward's contiguous reads and as values (src) for the
// input gradient's transposed ones.
@compute @workgroup_size(64, 1, 1)
fn kernel_transform4(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i4 = flat_id(id, groups);
    let stride = p.c * p.k / 4u;
    if (i4 >= stride) {
        return;
    }
    // G down each of the kernel's 3 columns b, then along each of the ALPHA rows.
    let c0 = kernel_1d4(kernel_tap4(0u, 0u, i4), kernel_tap4(1u, 0u, i4), kernel_tap4(2u, 0u, i4));
    let c1 = kernel_1d4(kernel_tap4(0u, 1u, i4), kernel_tap4(1u, 1u, i4), kernel_tap4(2u, 1u, i4));
    let c2 = kernel_1d4(kernel_tap4(0u, 2u, i4), kernel_tap4(1u, 2u, i4), kernel_tap4(2u, 2u, i4));
    kernel_row4(0u, c0.v0, c1.v0, c2.v0, i4, stride);
    kernel_row4(1u, c0.v1, c1.v1, c2.v1, i4, stride);
    kernel_row4(2u, c0.v2, c1.v2, c2.v2, i4, stride);
    kernel_row4(3u, c0.v3, c1.v3, c2.v3, i4, stride);
    if (TILE >= 4u) {
        kernel_row4(4u, c0.v4, c1.v4, c2.v4, i4, stride);
        kernel_row4(5u, c0.v5, c1.v5, c2.v5, i4, stride);
    }
    if (TILE == 6u) {
        kernel_row4(6u, c0.v6, c1.v6, c2.v6, i4, stride);
        kernel_row4(7u, c0.v7, c1.v7, c2.v7, i4, stride);
    }
}
