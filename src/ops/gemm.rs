//! The GEMM planner: every GEMM-shaped product (conv2d's three, dense's three, Winograd's
//! batched ones) is planned here from its own numbers — M, K, N, how A is read, whether B is a
//! layer's kernel or a per-call operand — and the adapter's facts (device type, subgroup width,
//! limits) into a kernel family, a tile, where B is read from (packed or not, buffer or
//! texture), the packed B, the override constants, the entry point and the grid. An op says
//! what its product is and binds its operands; it decides nothing about kernels.

use super::pack::{derive_kept, pack_b, pack_derived, pack_kernel, BSource, Layout, PackedB};
use super::Result;
use crate::gpu::{BufferRange, Gpu, Kernel, ShaderId, TiledConfig};
use crate::tensor::Tensor;

/// The shader modules of one GEMM-shaped op: its 64x64 workgroup-memory module (on gemm_core.wgsl),
/// its subgroup modules (on gemm_sg.wgsl) reading B from a buffer or from a texture, and its
/// tiled module (on gemm_tiled.wgsl).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmShaders {
    pub core: ShaderId,
    pub sg_buffer: ShaderId,
    pub sg_texture: ShaderId,
    pub tiled: ShaderId,
}

/// A product C (M,N) = A (M,K) B (K,N) as the planner needs to know it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Product {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a: ARead,
    /// Every operand moves as whole vec4s (the channel counts allow it): the subgroup and the
    /// tiled kernels need that.
    pub vec4: bool,
    /// B is read transposed (the input gradients' kernel), so it is always packed.
    pub b_transposed: bool,
    /// Products of this shape run one after another on one plan, each with its own B (K,N):
    /// B is `batch` of them stacked along K (Winograd's ALPHA^2 products), packed as one.
    pub batch: usize,
}

/// The kernel family a product runs on, with what that family needs to know.
#[derive(Clone, Copy, Debug)]
enum Family {
    /// gemm_sg.wgsl: its tile and where it reads B.
    Subgroup(SgTiles, BSource),
    /// gemm_tiled.wgsl: its configuration, and whether B is packed (a buffer) or read as it is.
    Tiled(TiledConfig, BSource),
    /// gemm_core.wgsl, value by value.
    Core,
}

/// How one product runs. The family follows from the adapter's facts and the product's:
/// - products whose operands do not all move as vec4s: the workgroup-memory kernel
///   (gemm_core.wgsl), value by value;
/// - on a CPU adapter with one fixed subgroup width the subgroup GEMM takes (lavapipe), the
///   subgroup GEMM: there every workgroup-memory access is a per-lane loop, and it ran
///   8-20x faster than either workgroup-memory family (BENCHMARKS.md);
/// - everywhere else (every GPU, and adapters whose subgroups vary in width or are missing),
///   the tiled kernels (gemm_tiled.wgsl), built the way GPU GEMMs are; with those switched off
///   ([`Gpu::tiled_kernels`]), the subgroup GEMM where the width allows, else gemm_core.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmPlan {
    shaders: GemmShaders,
    a: ARead,
    /// B's (K,N).
    b_dims: (usize, usize),
    family: Family,
}

/// The workgroup-memory kernel's tile: 16x16 invocations of 4x4 outputs (gemm_core.wgsl).
const CORE_TILE: (usize, usize) = (64, 64);

impl GemmPlan {
    /// The plan for `product` on `shaders`' families. The subgroup kernel reads B packed
    /// (pack.wgsl) where B is read transposed, and otherwise where more than one row tile reads
    /// B, so that packing pays; the tiled kernels only where B is read transposed (they read a
    /// row-major B in whole vec4s as it is). On the tiled kernels, a choice `--tune` measured
    /// for this product ([`GemmPlan::tune`]) wins over the default configuration.
    pub fn new(gpu: &Gpu, shaders: GemmShaders, product: &Product) -> Self {
        let plan = Self::untuned(gpu, shaders, product);
        match plan.tuning(gpu, product) {
            Some((key, candidates, default)) => {
                // The cached choice, or the default: nothing is measured here.
                let choice = gpu
                    .tuned::<super::OpError>(&key, &candidates, default, false, |_| Ok(()))
                    .unwrap_or(default);
                plan.with_choice(gpu, product, choice)
            }
            None => plan,
        }
    }

    /// The plan [`GemmPlan::new`] starts from, before a choice `--tune` measured: the one to
    /// label other tuning keys with, since it does not change when that choice is made.
    pub fn untuned(gpu: &Gpu, shaders: GemmShaders, product: &Product) -> Self {
        let subgroup_first = !gpu.plans_as_gpu();
        let subgroup = || subgroup_family(gpu, product);
        let tiled = || {
            gpu.tiled_kernels()
                .then(|| tiled_config(gpu, product))
                .flatten()
                .map(|config| Family::Tiled(config, tiled_b_source(product)))
        };
        let family = if !product.vec4 {
            Family::Core
        } else if subgroup_first {
            subgroup().or_else(tiled).unwrap_or(Family::Core)
        } else {
            tiled().or_else(subgroup).unwrap_or(Family::Core)
        };
        Self {
            shaders,
            a: product.a,
            b_dims: (product.batch * product.k, product.n),
            family,
        }
    }

    /// What `--tune` may choose among for this plan: on the tiled kernels with no forced
    /// configuration, each configuration the device's limits allow (as its index in
    /// [`TiledConfig::ALL`]) and, where the adapter has one, the subgroup GEMM
    /// ([`SUBGROUP_CHOICE`]); as (key, candidates, default). None elsewhere.
    fn tuning(&self, gpu: &Gpu, product: &Product) -> Option<(String, Vec<u32>, u32)> {
        let Family::Tiled(config, _) = self.family else {
            return None;
        };
        if gpu.forced_tiled_config().is_some() {
            return None;
        }
        let mut candidates: Vec<u32> = (0..TiledConfig::ALL.len() as u32)
            .filter(|&i| TiledConfig::ALL[i as usize].fits(gpu.limits()))
            .collect();
        if subgroup_family(gpu, product).is_some() {
            candidates.push(SUBGROUP_CHOICE);
        }
        let default = TiledConfig::ALL
            .iter()
            .position(|c| *c == config)
            .map_or(0, |i| i as u32);
        let key = format!(
            "gemm {:?}: M {} K {} N {} x{} A {:?}{}: tiled configuration",
            self.shaders.tiled,
            product.m,
            product.k,
            product.n,
            product.batch,
            product.a,
            if product.b_transposed {
                ", B transposed"
            } else {
                ""
            }
        );
        Some((key, candidates, default))
    }

    /// This plan with the family `--tune` chose: a tiled configuration by index, or the
    /// subgroup GEMM.
    fn with_choice(&self, gpu: &Gpu, product: &Product, choice: u32) -> Self {
        let family = if choice == SUBGROUP_CHOICE {
            subgroup_family(gpu, product)
        } else {
            TiledConfig::ALL
                .get(choice as usize)
                .filter(|c| c.fits(gpu.limits()))
                .map(|c| Family::Tiled(*c, tiled_b_source(product)))
        };
        Self {
            family: family.unwrap_or(self.family),
            ..*self
        }
    }

    /// Under `--tune` (`TuneMode::Measure`), on the tiled kernels: times `run` with each
    /// configuration the device allows (and the subgroup GEMM where there is one) on this
    /// product, where `measurable` says `run` may repeat, and keeps the fastest in the tuning
    /// cache; returns the plan to run. Elsewhere the plan as it is (which already holds a
    /// cached choice).
    pub fn tune(
        self,
        gpu: &Gpu,
        product: &Product,
        measurable: bool,
        mut run: impl FnMut(&GemmPlan) -> Result<()>,
    ) -> Result<Self> {
        let Some((key, candidates, default)) = self.tuning(gpu, product) else {
            return Ok(self);
        };
        let choice = gpu.tuned(&key, &candidates, default, measurable, |c| {
            run(&self.with_choice(gpu, product, c))
        })?;
        Ok(self.with_choice(gpu, product, choice))
    }

    /// Packs the layer's kernel `w` as B read by `layout`, or takes the packed texture `w`
    /// keeps (`pack::pack_kernel`), and notes where B is then read from. None where B is read
    /// as it is.
    pub fn pack_kernel(
        &mut self,
        gpu: &Gpu,
        w: &Tensor,
        layout: Layout,
    ) -> Result<Option<PackedB>> {
        match self.family {
            Family::Subgroup(tiles, source) => {
                let (source, packed) =
                    pack_kernel(gpu, w, self.b_dims, layout, tiles.cols(), source)?;
                self.family = Family::Subgroup(tiles, source);
                Ok(packed)
            }
            Family::Tiled(config, source) => {
                pack_b(gpu, w.all(), 0, self.b_dims, layout, config.cols(), source)
            }
            Family::Core => Ok(None),
        }
    }

    /// Like [`GemmPlan::pack_kernel`] for a B that `derive` makes from the layer's kernel `w`
    /// (Winograd's transformed kernel; `tag` names the derivation): the packed texture (the
    /// subgroup GEMM) or the derived tensor itself (the kernels that read B from a buffer) is
    /// kept with `w` while `w` is unchanged, so a frozen layer transforms its kernel once on
    /// every family. Returns the packed B, or None where B is read as it is, and the derived
    /// tensor where the kernel binds it as the plain B.
    pub fn pack_derived_kernel(
        &mut self,
        gpu: &Gpu,
        w: &Tensor,
        tag: u64,
        derive: &dyn Fn() -> Result<Tensor>,
    ) -> Result<(Option<PackedB>, Option<Tensor>)> {
        match self.family {
            Family::Subgroup(tiles, source) => {
                let (source, packed, derived) =
                    pack_derived(gpu, w, tag, self.b_dims, tiles.cols(), source, derive)?;
                self.family = Family::Subgroup(tiles, source);
                Ok((packed, derived))
            }
            // These read B from a buffer: the derived B itself is kept.
            Family::Tiled(config, source) => {
                let b = derive_kept(gpu, w, tag, self.b_dims, derive)?;
                let packed = pack_b(
                    gpu,
                    b.all(),
                    0,
                    self.b_dims,
                    Layout::RowMajor,
                    config.cols(),
                    source,
                )?;
                Ok((packed, Some(b)))
            }
            Family::Core => Ok((None, Some(derive_kept(gpu, w, tag, self.b_dims, derive)?))),
        }
    }

    /// Packs a per-call B operand (the window `b` at element `base`, read by `layout`), which
    /// changes every call and so is never kept. None where B is read as it is.
    pub fn pack_operand(
        &self,
        gpu: &Gpu,
        b: BufferRange<'_>,
        base: u32,
        layout: Layout,
    ) -> Result<Option<PackedB>> {
        match self.family {
            Family::Subgroup(tiles, source) => {
                pack_b(gpu, b, base, self.b_dims, layout, tiles.cols(), source)
            }
            Family::Tiled(config, source) => {
                pack_b(gpu, b, base, self.b_dims, layout, config.cols(), source)
            }
            Family::Core => Ok(None),
        }
    }

    /// The kernel, with the plan's override constants added to the op's `consts`.
    pub fn kernel<'a>(&self, consts: &'a mut Vec<(&'static str, f64)>) -> Kernel<'a> {
        match self.family {
            Family::Subgroup(tiles, source) => {
                consts.extend(source.constants());
                consts.extend(tiles.constants());
                let entry = if self.a == ARead::AlongM {
                    "gemm_sg_m"
                } else {
                    "gemm_sg"
                };
                let shader = source.shader(self.shaders.sg_buffer, self.shaders.sg_texture);
                Kernel::new(shader, entry, consts)
            }
            Family::Tiled(config, source) => {
                consts.extend(source.constants());
                consts.extend(config.constants());
                let entry = if self.a == ARead::AlongM {
                    "gemm_tiled_m"
                } else {
                    "gemm_tiled"
                };
                Kernel::new(self.shaders.tiled, entry, consts)
            }
            Family::Core => Kernel::new(self.shaders.core, "gemm", consts),
        }
    }

    /// (rows, columns) of C per workgroup.
    pub fn tile(&self) -> (usize, usize) {
        match self.family {
            Family::Subgroup(tiles, _) => (tiles.rows(), tiles.cols()),
            Family::Tiled(config, _) => (config.rows(), config.cols()),
            Family::Core => CORE_TILE,
        }
    }

    /// The workgroup grid for an (M,N) output (a batch chunk's M may be below the planned one).
    pub fn grid(&self, gpu: &Gpu, m: usize, n: usize) -> [u32; 3] {
        grid(gpu, m, n, self.tile())
    }

    /// The kernel family as tuning keys name it: the subgroup GEMM with its tile, `tiled`
    /// (its configuration is a tuned choice of its own, so keys leave it out) or
    /// `workgroup-memory`.
    pub fn family(&self) -> String {
        match self.family {
            Family::Subgroup(tiles, _) => {
                format!("subgroup-{} {}x{}", tiles.width, tiles.rows(), tiles.cols())
            }
            Family::Tiled(..) => "tiled".to_string(),
            Family::Core => "workgroup-memory".to_string(),
        }
    }

    /// The family with its configuration, as `bench` reports it: the subgroup GEMM with its
    /// tile, the tiled kernels with their configuration's name, or the 64x64 workgroup-memory
    /// GEMM.
    pub fn describe(&self) -> String {
        match self.family {
            Family::Tiled(config, _) => format!("tiled {}", config.name),
            Family::Core => "workgroup-memory 64x64".to_string(),
            Family::Subgroup(..) => self.family(),
        }
    }
}

/// The tuning cache's code for "the subgroup GEMM" among the tiled configurations' indices.
const SUBGROUP_CHOICE: u32 = 100;

/// The subgroup GEMM's family for `product`, where the adapter runs it.
fn subgroup_family(gpu: &Gpu, product: &Product) -> Option<Family> {
    let b_dims = (product.batch * product.k, product.n);
    gpu.subgroup_width().filter(|_| product.vec4).map(|width| {
        let tiles = SgTiles::choose(gpu, width, product.m, product.n, product.a);
        // Packing a row-major B only pays; it is skipped where the packed copy, its columns
        // padded to whole tiles (a 64-channel output gradient doubles at 32 lanes), would pass
        // one binding. A transposed B (a layer's kernel) is always packed.
        let fits = super::pack::packed_bytes(b_dims, tiles.cols()) <= gpu.binding_limit();
        let pack = product.b_transposed || (product.m > tiles.rows() && fits);
        Family::Subgroup(tiles, BSource::choose(gpu, pack, b_dims, tiles.cols()))
    })
}

/// Where the tiled kernels read B: packed (into `config.cols()`-column tiles in a buffer) only
/// where B is read transposed; a row-major B is read in whole vec4s as it is.
fn tiled_b_source(product: &Product) -> BSource {
    if product.b_transposed {
        BSource::Packed
    } else {
        BSource::Plain
    }
}

/// The tiled configuration of `product`: the forced one ([`Gpu::force_tiled_config`]) where
/// the device allows it, else [`default_tiled_config`]; None where no configuration fits the
/// device's limits.
fn tiled_config(gpu: &Gpu, product: &Product) -> Option<TiledConfig> {
    let limits = gpu.limits();
    if let Some(forced) = gpu.forced_tiled_config().filter(|c| c.fits(limits)) {
        return Some(forced);
    }
    let fitting: Vec<TiledConfig> = TiledConfig::ALL
        .into_iter()
        .filter(|c| c.fits(limits))
        .collect();
    default_tiled_config(
        &fitting,
        product.m,
        product.n,
        product.batch,
        gpu.parallelism_hint(),
    )
}

/// Of `configs` (largest tile first), the one that computes the fewest padded outputs of an
/// (M,N) product run `batch` times, counting a grid of fewer workgroups than the adapter runs
/// at once (`parallel`) as if it filled them; ties go to the larger tile, whose loads feed more
/// arithmetic. A 64-channel layer (N = 64) thus takes a 64-column tile, not half a 128-column
/// one, and a small product smaller tiles that keep the adapter busy.
fn default_tiled_config(
    configs: &[TiledConfig],
    m: usize,
    n: usize,
    batch: usize,
    parallel: usize,
) -> Option<TiledConfig> {
    let cost = |c: &TiledConfig| {
        let (tm, tn) = (m.max(1).div_ceil(c.rows()), n.max(1).div_ceil(c.cols()));
        let groups = tm * tn * batch.max(1);
        let work = groups * c.rows() * c.cols();
        work * parallel.div_ceil(groups).max(1)
    };
    let mut best: Option<(usize, TiledConfig)> = None;
    for c in configs {
        let w = cost(c);
        if best.is_none_or(|(b, _)| w < b) {
            best = Some((w, *c));
        }
    }
    best.map(|(_, c)| c)
}

/// One workgroup's tile of C on the subgroup GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SgTiles {
    /// Lanes per subgroup (the adapter's fixed width).
    width: u32,
    /// Subgroups per workgroup, stacked along M.
    per_wg: u32,
    /// Rows per subgroup: 24 or 32 on a CPU adapter, 8 on a GPU.
    rows: u32,
    /// vec4 columns per lane: 4 * width * cols4 columns per workgroup.
    cols4: u32,
}

/// How a product on the subgroup GEMM reads A, which decides the tile height.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ARead {
    /// Through an im2col index map, K along the rows (conv forward and input gradient; gemm_sg).
    Gathered,
    /// A plain row-major matrix, K along the rows (dense forward and input gradient; gemm_sg).
    Plain,
    /// Four rows at one k (the weight gradients; gemm_sg_m).
    AlongM,
}

impl SgTiles {
    /// The tile for an (M,N) product whose A is read as `a` says.
    ///
    /// On a GPU, rows per subgroup are [`GPU_TILE_ROWS`]. On a CPU adapter they are 24 or 32,
    /// whichever costs less once M is padded to whole tiles, weighted by how fast each ran on
    /// lavapipe at 8 lanes (the timings are in BENCHMARKS.md, "Tile height" and "Operand
    /// textures"; at 16 lanes the two heights measured the same): gathered rows (conv forward
    /// and input gradient) and plain rows with B in a texture run faster per row in 24-row
    /// tiles, since each row's index map stays live across the K loop and four of them crowd
    /// the registers; the weight gradients (gemm_sg_m) run faster in 32-row tiles.
    ///
    /// A height forced by [`Gpu::force_subgroup_tile_rows`] wins.
    pub fn choose(gpu: &Gpu, width: u32, m: usize, n: usize, a: ARead) -> Self {
        let cols4 = vec4_columns_per_lane(width, n);
        // Where B would not fit a texture and stays in a buffer, this picks as if it did: it
        // only happens past 64M texels.
        let short = match a {
            ARead::Gathered => true,
            ARead::Plain => gpu.texture_operands(),
            ARead::AlongM => false,
        };
        let rows = gpu.forced_subgroup_tile_rows().unwrap_or_else(|| {
            if !gpu.plans_as_gpu() {
                tile_rows(m, short)
            } else {
                GPU_TILE_ROWS
            }
        });
        let per_wg = subgroups_per_workgroup(m, rows);
        Self {
            width,
            per_wg,
            rows,
            cols4,
        }
    }

    /// Rows of C per workgroup.
    pub fn rows(&self) -> usize {
        (self.rows * self.per_wg) as usize
    }

    /// Columns of C per workgroup (and per packed tile of B).
    pub fn cols(&self) -> usize {
        (4 * self.width * self.cols4) as usize
    }

    pub fn constants(&self) -> [(&'static str, f64); 4] {
        [
            ("SG_W", f64::from(self.width)),
            ("SG_PER_WG", f64::from(self.per_wg)),
            ("SG_ROWS", f64::from(self.rows)),
            ("SG_COLS4", f64::from(self.cols4)),
        ]
    }
}

/// Rows per subgroup on a GPU: a lane then holds 8 rows x 8 columns, 64 accumulators, which with
/// its B values and indices fits a GPU's registers (at most 255 per invocation on NVIDIA, 256
/// VGPRs on AMD). The 24 or 32 rows a CPU adapter takes (192-256 accumulators) would spill
/// there. Not yet measured on a GPU, where the tiled kernels are the default and `--tune` (or
/// `cargo xtask gpu-report`) times this kernel against them.
const GPU_TILE_ROWS: u32 = 8;

/// Subgroups per workgroup, stacked along M: as many as M needs, up to a workgroup of 32 rows
/// (at least 2 subgroups), which share B through the cache (on lavapipe the subgroups of a
/// workgroup run one after the other on one thread); but the most whose whole workgroup tiles
/// pad M at most 5% more than the fewest rows any count computes. A short M is where it tells:
/// a Winograd product of VGG16 block5 at batch 8 has 72 rows, 96 in tiles of 2 x 24 but 72 in
/// tiles of 24, and ran 20% faster so (BENCHMARKS.md, "Winograd"); on lavapipe one subgroup
/// per workgroup ran as fast per row as two. One where a subgroup covers M, as in a dense head.
fn subgroups_per_workgroup(m: usize, rows: u32) -> u32 {
    let rows = rows as usize;
    let most = (32 / rows).max(2).min(m.div_ceil(rows).max(1));
    let padded = |per_wg: usize| m.max(1).div_ceil(rows * per_wg) * rows * per_wg;
    let least = (1..=most).map(padded).min().unwrap_or(rows);
    (1..=most)
        .rev()
        .find(|&per_wg| padded(per_wg) * 20 <= least * 21)
        .unwrap_or(1) as u32
}

/// vec4 columns per lane for an N-column product on `width`-lane subgroups: 2, or 1 where N
/// fits 4 * width columns and the second would only multiply zeros.
fn vec4_columns_per_lane(width: u32, n: usize) -> u32 {
    if n <= 4 * width as usize {
        1
    } else {
        2
    }
}

/// Rows per subgroup, 24 or 32, for an M-row product (see [`SgTiles::choose`]); `short` where
/// the 24-row tile runs faster per row.
fn tile_rows(m: usize, short: bool) -> u32 {
    // Relative time per computed row of each height.
    let (cost24, cost32) = if short { (1.0, 1.2) } else { (1.14, 1.0) };
    let padded = |rows: usize| (m.max(1).div_ceil(rows) * rows) as f64;
    if padded(24) * cost24 < padded(32) * cost32 {
        24
    } else {
        32
    }
}

/// Workgroups for an (M,N) product in tiles of `tile_m` rows by `tile_n` columns; M tiles beyond
/// the per-dimension limit spill into z, where the shaders look for them.
pub(crate) fn grid(gpu: &Gpu, m: usize, n: usize, (tile_m, tile_n): (usize, usize)) -> [u32; 3] {
    let tiles_m = m.div_ceil(tile_m).max(1) as u64;
    let max = u64::from(gpu.limits().max_compute_workgroups_per_dimension);
    let y = tiles_m.min(max);
    [
        n.div_ceil(tile_n).max(1) as u32,
        y as u32,
        tiles_m.div_ceil(y) as u32,
    ]
}

#[cfg(test)]
mod tests {
    use super::{
        default_tiled_config, subgroups_per_workgroup, tile_rows, vec4_columns_per_lane, SgTiles,
    };
    use crate::gpu::TiledConfig;

    #[test]
    fn tiled_configuration_weighs_padding_and_idle_workgroups() {
        let all = TiledConfig::ALL;
        let pick = |m, n, batch, parallel| {
            default_tiled_config(&all, m, n, batch, parallel)
                .unwrap()
                .name
        };
        // A 1024^3 matmul fills 64 workgroups of 128x128: the largest tile.
        assert_eq!(pick(1024, 1024, 1, 64), "128x128");
        // VGG16 block1 (64 channels): 128-column tiles would compute half padding; 128x64
        // and 64x64 pad the same, and the larger tile wins.
        assert_eq!(pick(2 * 150 * 150, 64, 1, 64), "128x64");
        // VGG16 block5 at batch 8 (1568 x 512): 52 tiles of 128x128 leave a GPU idle, 200 of
        // 64x64 keep it busy.
        assert_eq!(pick(1568, 512, 1, 64), "64x64");
        // On a 2-core CPU adapter every tile keeps it busy: the least padding decides (1568
        // rows pad 2% in 64-row tiles, 6% in 128-row ones), and where none pads, the largest.
        assert_eq!(pick(1568, 512, 1, 2), "64x64");
        assert_eq!(pick(1536, 512, 1, 2), "128x128");
        // A dense head (20 rows, 8 columns): one workgroup whatever the tile, so the smallest.
        assert_eq!(pick(20, 8, 1, 64), "64x64");
        // Winograd's 36 products count as workgroups: 36 x 2 x 4 = 288 of 128x128 at block5.
        assert_eq!(pick(200, 512, 36, 64), "128x128");
        // Only what the limits allow is chosen from; nothing where nothing fits.
        assert_eq!(
            default_tiled_config(&all[3..], 1024, 1024, 1, 64)
                .unwrap()
                .name,
            "64x64-k16"
        );
        assert_eq!(default_tiled_config(&[], 1024, 1024, 1, 64), None);
    }

    #[test]
    fn tile_height_weighs_padding_against_speed() {
        // VGG16 block4/5 forward: 648 rows fill 27 tiles of 24; 32-row tiles would pad to 672
        // and run slower per row anyway.
        assert_eq!(tile_rows(648, true), 24);
        // Gathered rows (or plain ones with B in a texture) prefer 24 even where 32 divides M
        // (4096 = 128 * 32).
        assert_eq!(tile_rows(4096, true), 24);
        assert_eq!(tile_rows(1024, true), 24);
        // Otherwise 32 where it pads no more: 1024 = 32 * 32 against 43 * 24 = 1032.
        assert_eq!(tile_rows(1024, false), 32);
        // A 20-row dense head: 24 rows compute 4 padding rows, 32 would compute 12, which
        // outweighs what the taller tile saves per row (24 * 1.14 = 27.4 < 32).
        assert_eq!(tile_rows(20, false), 24);
        // Weight gradient of a 3x3x512 kernel: 4608 rows = 144 * 32 = 192 * 24; 32 wins.
        assert_eq!(tile_rows(4608, false), 32);
    }

    #[test]
    fn tile_width_follows_the_subgroup_width() {
        // 8 lanes: 32-column tiles up to N = 32, then 64.
        assert_eq!(vec4_columns_per_lane(8, 32), 1);
        assert_eq!(vec4_columns_per_lane(8, 36), 2);
        // 16 lanes (lavapipe at 512 bits): VGG16 block1 (64 channels) in one 64-column tile,
        // wider layers in 128-column ones.
        assert_eq!(vec4_columns_per_lane(16, 64), 1);
        assert_eq!(vec4_columns_per_lane(16, 128), 2);
        // 32 and 64 lanes.
        assert_eq!(vec4_columns_per_lane(32, 128), 1);
        assert_eq!(vec4_columns_per_lane(64, 512), 2);
        // A workgroup stacks subgroups up to 32 rows, at least 2, never more than M needs.
        assert_eq!(subgroups_per_workgroup(20, 24), 1);
        assert_eq!(subgroups_per_workgroup(648, 24), 2);
        assert_eq!(subgroups_per_workgroup(4608, 32), 2);
        assert_eq!(subgroups_per_workgroup(4608, 8), 4);
        assert_eq!(subgroups_per_workgroup(20, 8), 3);
        assert_eq!(subgroups_per_workgroup(1, 8), 1);
        // Fewer subgroups where whole workgroup tiles would pad M by 5% more: Winograd's
        // products at VGG16 block5 (72 rows: 3 x 24, not 2 x 48) and block4 (162 rows: 7 x 24
        // = 168, not 4 x 48 = 192), but not the direct convolution's 648 = 14 x 48 - 24
        // (3.7% more).
        assert_eq!(subgroups_per_workgroup(72, 24), 1);
        assert_eq!(subgroups_per_workgroup(162, 24), 1);
        assert_eq!(subgroups_per_workgroup(96, 24), 2);
        assert_eq!(subgroups_per_workgroup(72, 8), 3);
        assert_eq!(subgroups_per_workgroup(40, 8), 1);
        let t = SgTiles {
            width: 16,
            per_wg: 2,
            rows: 24,
            cols4: 2,
        };
        assert_eq!((t.rows(), t.cols()), (48, 128));
        assert_eq!(
            t.constants(),
            [
                ("SG_W", 16.0),
                ("SG_PER_WG", 2.0),
                ("SG_ROWS", 24.0),
                ("SG_COLS4", 2.0)
            ]
        );
    }
}
