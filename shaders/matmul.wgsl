// Dense layer / matmul with bias. x (ROWS, IN), kernel w (IN, OUT) as Keras stores it, y (ROWS, OUT).
// The three products run on gemm_core.wgsl; MODE picks the operand maps:
//   MODE 0 forward       y  = x w (+ bias when HAS_BIAS = 1, then ReLU when RELU = 1)
//   MODE 1 input grad    dx = dy w^T     (ROWS, IN):  dx[r,i] = sum_o dy[r,o] w[i,o]
//   MODE 2 kernel grad   dw = x^T dy     (IN, OUT):   dw[i,o] = sum_r x[r,i] dy[r,o]
//                        (+ dw's old value when ACCUM = 1)
// MODE 0 reads its operands at the offsets Params gives, Params.products products of one shape.
// Bindings: a = x (modes 0, 2) or dy (mode 1); b = w (modes 0, 1) or dy (mode 2); bias; c = output.

override MODE: u32 = 0u;
override HAS_BIAS: u32 = 1u;
override RELU: u32 = 0u;
override ACCUM: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src_a: array<f32>;
@group(0) @binding(2) var<storage, read> src_b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

fn gemm_dims() -> vec3<u32> {
    switch MODE {
        case 0u: { return vec3<u32>(p.rows, p.out, p.inp); }
        case 1u: { return vec3<u32>(p.rows, p.inp, p.out); }
        default: { return vec3<u32>(p.inp, p.out, p.rows); }
    }
}

fn load_a(m: u32, k: u32) -> f32 {
    switch MODE {
        case 0u: { return src_a[p.a_base + (gemm_product * p.rows + m) * p.inp + k]; }
        case 1u: { return src_a[m * p.out + k]; }
        default: { return src_a[k * p.inp + m]; }
    }
}

fn load_b(k: u32, n: u32) -> f32 {
    switch MODE {
        case 0u: { return src_b[(p.b_row + gemm_product * p.inp + k) * p.out + n]; }
        case 1u: { return src_b[n * p.out + k]; }
        default: { return src_b[k * p.out + n]; }
    }
}

fn gemm_slices() -> u32 {
    return 1u;
}

fn gemm_products() -> u32 {
    return max(p.products, 1u);
}

fn store_c(m: u32, n: u32, acc: f32, slice: u32) {
    switch MODE {
        case 0u: {
            var v = acc;
            if (HAS_BIAS == 1u) {
                v += bias[n];
            }
            if (RELU == 1u) {
                v = max(v, 0.0);
            }
            dst[p.c_base + (gemm_product * p.rows + m) * p.out + n] = v;
        }
        case 1u: { dst[m * p.inp + n] = acc; }
        default: {
            let i = m * p.out + n;
            if (ACCUM == 1u) {
                dst[i] = dst[i] + acc;
            } else {
                dst[i] = acc;
            }
        }
    }
}
