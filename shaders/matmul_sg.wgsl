// Dense layer / matmul on the subgroup GEMM (gemm_sg.wgsl), for IN and OUT multiples of 4 so
// that every operand moves as whole vec4s. B (w, w^T or dy) is bound packed by pack.wgsl when
// PACKED_B = 1 (always for MODE 1; the host skips packing when one row tile reads B once). Same products and layouts as matmul.wgsl: x (ROWS,IN),
// kernel w (IN,OUT), y (ROWS,OUT):
//   MODE 0 forward      y  = x w (+ bias when HAS_BIAS = 1, then ReLU when RELU = 1); gemm_sg,
//                       operands at the offsets Params gives, Params.products of them
//   MODE 1 input grad   dx = dy w^T; gemm_sg
//   MODE 2 kernel grad  dw = x^T dy (+ dw's old value when ACCUM = 1); gemm_sg_m, reading x
//                       along IN (contiguous) at one row k

override MODE: u32 = 0u;
override HAS_BIAS: u32 = 1u;
override RELU: u32 = 0u;
override ACCUM: u32 = 0u;
override PACKED_B: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src_a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> src_b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;

fn gemm_dims() -> vec3<u32> {
    switch MODE {
        case 0u: { return vec3<u32>(p.rows, p.out, p.inp); }
        case 1u: { return vec3<u32>(p.rows, p.inp, p.out); }
        default: { return vec3<u32>(p.inp, p.out, p.rows); }
    }
}

fn gemm_slices() -> u32 {
    return 1u;
}

fn gemm_products() -> u32 {
    return max(p.products, 1u);
}

// The vec4 index where row m of A starts.
struct ARow {
    base: u32,
}

fn a_row(m: u32) -> ARow {
    if (MODE == 0u) {
        return ARow((p.a_base + (gemm_product * p.rows + m) * p.inp) / 4u);
    }
    return ARow(m * (p.out / 4u));
}

fn load_a4(r: ARow, k: u32) -> vec4<f32> {
    return src_a[r.base + k / 4u];
}

// MODE 2: A[m..m+3, k] = x[k, m..m+3].
fn load_a4m(m: u32, k: u32) -> vec4<f32> {
    return src_a[k * (p.inp / 4u) + m / 4u];
}

// B's first row for this product (MODE 0; the other modes have one product).
fn b_row0() -> u32 {
    return p.b_row + gemm_product * p.inp;
}

fn load_b4(k: u32, n4: u32) -> vec4<f32> {
    if (PACKED_B == 1u) {
        // From src_b or from an operand texture, as the appended gemm_sg_b_*.wgsl says.
        return packed_b4(packed_b_index(b_row0() + k, n4, p.b_rows));
    }
    return src_b[(b_row0() + k) * (p.out / 4u) + n4];
}

fn store_c4(m: u32, n4: u32, v: vec4<f32>, slice: u32) {
    switch MODE {
        case 0u: {
            var y = v;
            if (HAS_BIAS == 1u) {
                y += bias[n4];
            }
            if (RELU == 1u) {
                y = max(y, vec4<f32>(0.0));
            }
            dst[(p.c_base + (gemm_product * p.rows + m) * p.out) / 4u + n4] = y;
        }
        case 1u: { dst[m * (p.inp / 4u) + n4] = v; }
        default: {
            let i = m * (p.out / 4u) + n4;
            if (ACCUM == 1u) {
                dst[i] = dst[i] + v;
            } else {
                dst[i] = v;
            }
        }
    }
}
