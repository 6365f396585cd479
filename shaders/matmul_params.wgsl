// The uniform block of matmul.wgsl and matmul_sg.wgsl, one definition for both (prepended to
// each module by gpu::ShaderId::source); the host writes it as ops::dense::Params.

struct Params {
    rows: u32,
    inp: u32,
    out: u32,
    // Where this product's operands start, for batched products sharing one binding (Winograd's
    // ALPHA^2 products): A at element a_base, C at c_base, B at row b_row of a B stacked
    // b_rows rows deep (packed B is packed whole). Zero, and b_rows = K, for a single product.
    a_base: u32,
    b_row: u32,
    b_rows: u32,
    c_base: u32,
    _p0: u32,
}
