// The uniform block of matmul.wgsl and matmul_sg.wgsl, one definition for both (prepended to
// each module by gpu::ShaderId::source); the host writes it as ops::dense::Params.

struct Params {
    rows: u32,
    inp: u32,
    out: u32,
    // Where the operands start: A at element a_base, C at c_base, B at row b_row of a B stacked
    // b_rows rows deep (packed B is packed whole). Zero, and b_rows = K, for a single product.
    a_base: u32,
    b_row: u32,
    b_rows: u32,
    c_base: u32,
    // MODE 0 only: this many products of one shape in one dispatch (Winograd's ALPHA^2), one
    // per workgroup z; product t reads A (ROWS,IN) at a_base + t*ROWS*IN, B's rows from
    // b_row + t*IN and writes C (ROWS,OUT) at c_base + t*ROWS*OUT. 1 for a single product.
    products: u32,
}
