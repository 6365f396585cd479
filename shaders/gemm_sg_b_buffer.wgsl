// How the subgroup GEMM (gemm_sg.wgsl) reads a packed B: from the op module's storage binding
// src_b. Appended for ShaderId::Conv2dSg and MatmulSg; gemm_sg_b_texture.wgsl is its twin for B
// in an operand texture.

// vec4 t of B packed by pack.wgsl (t from packed_b_index).
fn packed_b4(t: u32) -> vec4<f32> {
    return src_b[t];
}
