//! How a device picks and runs its kernels: the switches users and tests set. They arrive as one
//! [`DeviceOptions`] value with the adapter request (`select::open`), filled at the edge from
//! the command line or [`DeviceOptions::from_env`]; nothing below the edge reads the
//! environment. Tests flip some of them on an open device (both kernel families against the
//! same CPU reference), so the device keeps them as atomics.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::{pool, tune::TuneMode, Gpu, PooledTexture};

/// The switches a device is opened with.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceOptions {
    /// Run the GEMM-shaped ops on the subgroup kernels where the adapter supports them
    /// (`CNN_WGPU_NO_SUBGROUPS=1` turns this off).
    pub subgroups: bool,
    /// Run vec4 GEMM products on the GPU-class tiled kernels (gemm_tiled.wgsl) where the
    /// planner would (`CNN_WGPU_NO_TILED=1` turns this off); see [`Gpu::tiled_kernels`].
    pub tiled: bool,
    /// The tiled kernels' configuration every product must use instead of the planner's or the
    /// tuned choice (`CNN_WGPU_TILED`: one of [`TiledConfig::ALL`] by name).
    pub tiled_config: Option<TiledConfig>,
    /// Let the subgroup kernels read packed operands from textures (`CNN_WGPU_NO_TEXTURES=1`
    /// turns this off); see [`Gpu::texture_operands`].
    pub textures: bool,
    /// How the tuning cache is used (`CNN_WGPU_TUNE`, `--tune`); see [`super::tune`].
    pub tune: TuneMode,
    /// The tuning cache file instead of the per-adapter default (`CNN_WGPU_TUNE_CACHE`).
    pub tune_cache: Option<PathBuf>,
    /// Lowers the per-binding byte limit below the adapter's (tests reach the splitting paths
    /// with it on any adapter).
    pub binding_limit: Option<u64>,
    /// Fill every uninitialised tensor with NaN; see [`Gpu::set_poison_uninit`].
    pub poison_uninit: bool,
    /// Request WebGPU's default limits instead of the adapter's (`--webgpu-limits`,
    /// `CNN_WGPU_WEBGPU_LIMITS=1`): 16 KiB of workgroup memory, 256 invocations per workgroup,
    /// 128 MiB per storage binding, 8 storage buffers per stage, 4 bind groups. What a browser
    /// gives a page that asks for nothing more; the planner then picks only what fits.
    pub webgpu_limits: bool,
    /// Give every tensor a NaN-filled tail inside its binding (`CNN_WGPU_NAN_TAIL=1`; `selftest`
    /// always does); see [`Gpu::nan_tail`].
    pub nan_tail: bool,
    /// Rows per subgroup every subgroup GEMM must use (8, 16, 24 or 32) instead of the default
    /// choice; see [`Gpu::force_subgroup_tile_rows`].
    pub subgroup_tile_rows: Option<u32>,
    /// Slices every kernel gradient's sum is split into instead of the default or tuned choice;
    /// see [`Gpu::force_kernel_gradient_slices`].
    pub kernel_gradient_slices: Option<u32>,
    /// How 3x3 stride-1 convolutions run (`CNN_WGPU_CONV_ALGO`, `--conv-algo`); see
    /// [`ConvAlgo`].
    pub conv_algo: ConvAlgo,
    /// Plan GEMM products as on a GPU even on a CPU adapter (`CNN_WGPU_PLAN_AS_GPU=1`): the
    /// tiled kernels first, the subgroup GEMM as `--tune`'s alternative, with a GPU's 8-row
    /// tiles; see [`Gpu::plans_as_gpu`].
    pub plan_as_gpu: bool,
    /// Plan as an adapter of this class instead of the opened one, and run nothing: the
    /// device records the pipelines it is asked for (`gpu::manifest`, `cnn-wgpu shaders`).
    pub simulate: Option<super::AdapterClass>,
}

/// The NaN tail's length (see [`Gpu::nan_tail`]): 1024 floats, past any vec4, row or tile a
/// kernel could read beyond a tensor's end.
const NAN_TAIL_BYTES: u64 = 4096;

/// The algorithm of 3x3 stride-1 convolutions (forward and input gradient; other convolutions
/// and every kernel gradient are always direct).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ConvAlgo {
    /// The measured choice per shape where `--tune` measured one, else the default rule
    /// (`ops::conv`).
    #[default]
    Auto,
    /// The implicit-GEMM convolution.
    Direct,
    /// Winograd F(2x2,3x3): 2.25x fewer multiplications.
    #[value(name = "f2x2")]
    F2x2,
    /// Winograd F(4x4,3x3): 4x fewer multiplications, a looser rounding error.
    #[value(name = "f4x4")]
    F4x4,
    /// Winograd F(6x6,3x3): 5.1x fewer multiplications, looser again.
    #[value(name = "f6x6")]
    F6x6,
}

impl ConvAlgo {
    /// The Winograd algorithms, smallest tile first.
    pub const WINOGRAD: [Self; 3] = [Self::F2x2, Self::F4x4, Self::F6x6];

    /// The output tile side m of Winograd F(m x m, 3x3); None for auto and direct.
    pub fn winograd_side(self) -> Option<usize> {
        match self {
            Self::F2x2 => Some(2),
            Self::F4x4 => Some(4),
            Self::F6x6 => Some(6),
            Self::Auto | Self::Direct => None,
        }
    }

    /// Its name as `CNN_WGPU_CONV_ALGO` and `--conv-algo` take it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Direct => "direct",
            Self::F2x2 => "f2x2",
            Self::F4x4 => "f4x4",
            Self::F6x6 => "f6x6",
        }
    }

    fn from_code(code: u32) -> Self {
        match code {
            1 => Self::Direct,
            2 => Self::F2x2,
            4 => Self::F4x4,
            6 => Self::F6x6,
            _ => Self::Auto,
        }
    }

    fn code(self) -> u32 {
        match self {
            Self::Auto => 0,
            Self::Direct => 1,
            Self::F2x2 => 2,
            Self::F4x4 => 4,
            Self::F6x6 => 6,
        }
    }
}

impl Default for DeviceOptions {
    fn default() -> Self {
        Self {
            subgroups: true,
            tiled: true,
            tiled_config: None,
            textures: true,
            tune: TuneMode::Cached,
            tune_cache: None,
            binding_limit: None,
            poison_uninit: false,
            nan_tail: false,
            webgpu_limits: false,
            subgroup_tile_rows: None,
            kernel_gradient_slices: None,
            conv_algo: ConvAlgo::Auto,
            plan_as_gpu: false,
            simulate: None,
        }
    }
}

impl DeviceOptions {
    /// The options the environment asks for: `CNN_WGPU_NO_SUBGROUPS`, `CNN_WGPU_NO_TILED`,
    /// `CNN_WGPU_TILED` (a tiled configuration by name), `CNN_WGPU_NO_TEXTURES`
    /// (set and not empty or `0`: off), `CNN_WGPU_TUNE` (`0`/`off`, `1`/`measure`, else cached),
    /// `CNN_WGPU_TUNE_CACHE`, `CNN_WGPU_SUBGROUP_ROWS` (8, 16, 24 or 32: the subgroup GEMM's
    /// rows per subgroup, for comparisons), `CNN_WGPU_CONV_ALGO` (auto, direct, f2x2,
    /// f4x4 or f6x6) and `CNN_WGPU_PLAN_AS_GPU` (set and not empty or `0`: on); a value outside these
    /// is an error naming the variable.
    pub fn from_env() -> Result<Self, super::GpuError> {
        let conv_algo = match std::env::var("CNN_WGPU_CONV_ALGO") {
            Ok(v) if !v.is_empty() => <ConvAlgo as clap::ValueEnum>::from_str(v.trim(), true)
                .map_err(|_| super::GpuError::BadSetting {
                    name: "CNN_WGPU_CONV_ALGO",
                    value: v,
                    expected: "auto, direct, f2x2, f4x4 or f6x6",
                })?,
            _ => ConvAlgo::Auto,
        };
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0");
        let subgroup_tile_rows = match std::env::var("CNN_WGPU_SUBGROUP_ROWS") {
            Ok(v) if !v.is_empty() => match v.trim().parse::<u32>() {
                Ok(rows @ (8 | 16 | 24 | 32)) => Some(rows),
                _ => {
                    return Err(super::GpuError::BadSetting {
                        name: "CNN_WGPU_SUBGROUP_ROWS",
                        value: v,
                        expected: "8, 16, 24 or 32 rows per subgroup",
                    })
                }
            },
            _ => None,
        };
        let tiled_config = match std::env::var("CNN_WGPU_TILED") {
            Ok(v) if !v.is_empty() => Some(TiledConfig::named(v.trim()).ok_or(
                super::GpuError::BadSetting {
                    name: "CNN_WGPU_TILED",
                    value: v,
                    expected: TiledConfig::NAMES,
                },
            )?),
            _ => None,
        };
        Ok(Self {
            subgroups: !set("CNN_WGPU_NO_SUBGROUPS"),
            tiled: !set("CNN_WGPU_NO_TILED"),
            tiled_config,
            textures: !set("CNN_WGPU_NO_TEXTURES"),
            plan_as_gpu: set("CNN_WGPU_PLAN_AS_GPU"),
            nan_tail: set("CNN_WGPU_NAN_TAIL"),
            webgpu_limits: set("CNN_WGPU_WEBGPU_LIMITS"),
            tune: match std::env::var("CNN_WGPU_TUNE").as_deref() {
                Ok("0") | Ok("off") => TuneMode::Off,
                Ok("1") | Ok("measure") => TuneMode::Measure,
                _ => TuneMode::Cached,
            },
            tune_cache: std::env::var_os("CNN_WGPU_TUNE_CACHE")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            subgroup_tile_rows,
            conv_algo,
            ..Self::default()
        })
    }
}

/// One configuration of the tiled kernels (gemm_tiled.wgsl): a workgroup of `wx` x `wy`
/// invocations, each holding `tm` rows x `4 * tn4` columns of C in registers, so that the
/// workgroup's tile is (wy * tm) x (4 * wx * tn4); K advances `bk` at a time through two
/// workgroup-memory stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TiledConfig {
    pub name: &'static str,
    pub wx: u32,
    pub wy: u32,
    pub tm: u32,
    pub tn4: u32,
    pub bk: u32,
}

impl TiledConfig {
    /// The configurations the planner and the tuner choose among, largest tile first: each
    /// stays within wgpu's default limits (256 invocations, 16 KiB of workgroup memory) and
    /// loads at most two vec4s of A and of B per invocation and K step, as the shader assumes.
    pub const ALL: [TiledConfig; 4] = [
        TiledConfig::new("128x128", 16, 16, 8, 2, 8),
        TiledConfig::new("128x64", 16, 16, 8, 1, 8),
        TiledConfig::new("64x64", 8, 8, 8, 2, 8),
        TiledConfig::new("64x64-k16", 16, 16, 4, 1, 16),
    ];
    pub const NAMES: &'static str = "128x128, 128x64, 64x64 or 64x64-k16";

    const fn new(name: &'static str, wx: u32, wy: u32, tm: u32, tn4: u32, bk: u32) -> Self {
        Self {
            name,
            wx,
            wy,
            tm,
            tn4,
            bk,
        }
    }

    /// The configuration called `name` in [`TiledConfig::ALL`].
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name == name)
    }

    fn index(self) -> u32 {
        Self::ALL
            .iter()
            .position(|c| *c == self)
            .expect("a configuration of TiledConfig::ALL") as u32
    }

    /// Rows of C per workgroup.
    pub fn rows(self) -> usize {
        (self.wy * self.tm) as usize
    }

    /// Columns of C per workgroup (and per packed tile of B).
    pub fn cols(self) -> usize {
        (4 * self.wx * self.tn4) as usize
    }

    pub fn invocations(self) -> u32 {
        self.wx * self.wy
    }

    /// Bytes of workgroup memory: two stages of A (bk, rows) and of B (bk, cols).
    pub fn workgroup_bytes(self) -> u32 {
        2 * self.bk * (self.rows() + self.cols()) as u32 * 4
    }

    /// Whether the device's limits allow it.
    pub fn fits(self, limits: &wgpu::Limits) -> bool {
        self.invocations() <= limits.max_compute_invocations_per_workgroup
            && self.wx <= limits.max_compute_workgroup_size_x
            && self.wy <= limits.max_compute_workgroup_size_y
            && self.workgroup_bytes() <= limits.max_compute_workgroup_storage_size
    }

    pub fn constants(self) -> [(&'static str, f64); 5] {
        [
            ("TL_WX", f64::from(self.wx)),
            ("TL_WY", f64::from(self.wy)),
            ("TL_TM", f64::from(self.tm)),
            ("TL_TN4", f64::from(self.tn4)),
            ("TL_BK", f64::from(self.bk)),
        ]
    }
}

/// Operand textures are this many texels wide where the adapter allows: wide enough that a
/// VGG16 kernel (4608 x 512 floats) needs 144 rows, and a power of two so that the shader
/// finds a texel with a mask and a shift.
const OPERAND_TEXTURE_WIDTH: u32 = 4096;

/// [`OPERAND_TEXTURE_WIDTH`], or the widest power of two the adapter's 2-D textures allow.
fn default_texture_width(limits: &wgpu::Limits) -> u32 {
    let widest = 1 << (31 - limits.max_texture_dimension_2d.max(1).leading_zeros());
    OPERAND_TEXTURE_WIDTH.min(widest)
}

/// The switches of an open device.
pub(crate) struct Switches {
    /// Whether the GEMM-shaped ops use the subgroup kernels (gemm_sg.wgsl).
    subgroups: AtomicBool,
    /// The adapter's fixed subgroup width where the subgroup kernels can run there (0: they
    /// cannot); cleared when the width fails its check (`gpu::subgroups`).
    subgroup_width: AtomicU32,
    /// Rows per subgroup the subgroup GEMM must use (8-32), or 0 to let each product choose.
    subgroup_rows: AtomicU32,
    /// Whether vec4 products may run on the tiled kernels (gemm_tiled.wgsl).
    tiled: AtomicBool,
    /// The forced tiled configuration as its index in [`TiledConfig::ALL`] plus one (0: none).
    tiled_config: AtomicU32,
    /// Whether the subgroup GEMM reads packed B operands from textures.
    textures: AtomicBool,
    /// Operand texture width in texels (a power of two).
    texture_width: AtomicU32,
    /// Slices every kernel gradient's sum must be split into (0: the default or tuned choice).
    kgrad_slices: AtomicU32,
    /// Whether uninitialised tensors are filled with NaN.
    poison: AtomicBool,
    /// Whether tensors get a NaN tail inside their bindings.
    nan_tail: bool,
    /// [`ConvAlgo`] as its code.
    conv_algo: AtomicU32,
    /// Whether GEMMs are planned as on a GPU on any adapter.
    plan_as_gpu: AtomicBool,
    /// A buffer of NaN bytes the poison fills copy from, made on first use.
    nan_source: std::sync::OnceLock<wgpu::Buffer>,
}

impl Switches {
    pub(crate) fn new(
        options: &DeviceOptions,
        subgroup_width: Option<u32>,
        limits: &wgpu::Limits,
    ) -> Self {
        Self {
            subgroups: AtomicBool::new(subgroup_width.is_some() && options.subgroups),
            subgroup_width: AtomicU32::new(subgroup_width.unwrap_or(0)),
            subgroup_rows: AtomicU32::new(0),
            tiled: AtomicBool::new(options.tiled),
            tiled_config: AtomicU32::new(options.tiled_config.map_or(0, |c| c.index() + 1)),
            textures: AtomicBool::new(options.textures),
            texture_width: AtomicU32::new(default_texture_width(limits)),
            kgrad_slices: AtomicU32::new(0),
            poison: AtomicBool::new(options.poison_uninit),
            nan_tail: options.nan_tail,
            conv_algo: AtomicU32::new(options.conv_algo.code()),
            plan_as_gpu: AtomicBool::new(options.plan_as_gpu),
            nan_source: std::sync::OnceLock::new(),
        }
    }
}

impl Gpu {
    /// True when convolutions with channel counts that are multiples of 4 run on the subgroup
    /// kernels. On by default where supported; [`DeviceOptions::subgroups`] turns it off.
    pub fn subgroup_kernels(&self) -> bool {
        self.switches.subgroups.load(Ordering::Relaxed)
    }

    /// The subgroup width the subgroup kernels run at, while they are on
    /// ([`Gpu::subgroup_kernels`]).
    pub fn subgroup_width(&self) -> Option<u32> {
        self.supported_subgroup_width()
            .filter(|_| self.subgroup_kernels())
    }

    /// The subgroup width the subgroup kernels can run at on this device, whether or not they
    /// are switched on.
    pub fn supported_subgroup_width(&self) -> Option<u32> {
        match self.switches.subgroup_width.load(Ordering::Relaxed) {
            0 => None,
            w => Some(w),
        }
    }

    /// Takes the subgroup kernels away for good: the adapter's subgroups are not what it says.
    pub(crate) fn withdraw_subgroup_kernels(&self) {
        self.switches.subgroup_width.store(0, Ordering::Relaxed);
        self.switches.subgroups.store(false, Ordering::Relaxed);
    }

    /// Turns the subgroup kernels off (or back on, where the adapter supports them): tests run
    /// both kernel families against the same CPU references.
    pub fn set_subgroup_kernels(&self, on: bool) {
        self.switches.subgroups.store(
            on && self.supported_subgroup_width().is_some(),
            Ordering::Relaxed,
        );
    }

    /// Makes every product on the subgroup GEMM use `rows` (8, 16, 24 or 32) rows per subgroup
    /// instead of the height the planner picks (None restores that): tests check the CPU
    /// adapter's two tile heights and a GPU's against the CPU references on every kernel.
    pub fn force_subgroup_tile_rows(&self, rows: Option<u32>) {
        assert!(
            matches!(rows, None | Some(8) | Some(16) | Some(24) | Some(32)),
            "the subgroup GEMM has 8-, 16-, 24- and 32-row tiles, not {rows:?}"
        );
        self.switches
            .subgroup_rows
            .store(rows.unwrap_or(0), Ordering::Relaxed);
    }

    /// The tile height [`Gpu::force_subgroup_tile_rows`] set, if any.
    pub fn forced_subgroup_tile_rows(&self) -> Option<u32> {
        match self.switches.subgroup_rows.load(Ordering::Relaxed) {
            0 => None,
            r => Some(r),
        }
    }

    /// True when vec4 GEMM products may run on the GPU-class tiled kernels (gemm_tiled.wgsl):
    /// the planner (`ops::gemm`) gives them every such product on a GPU, and on any adapter
    /// where the subgroup GEMM does not run. On by default; [`DeviceOptions::tiled`] turns it
    /// off, and those products then run on the subgroup GEMM or the 64x64 workgroup-memory one.
    pub fn tiled_kernels(&self) -> bool {
        self.switches.tiled.load(Ordering::Relaxed)
    }

    /// True when GEMM products are planned as on a GPU: on every adapter that is not a CPU
    /// ([`super::prefers_subgroup_gemm`]), and where [`DeviceOptions::plan_as_gpu`] or
    /// [`Gpu::set_plan_as_gpu`] asks for it, so that a GPU's planning and tuning paths run on
    /// lavapipe too.
    pub fn plans_as_gpu(&self) -> bool {
        !super::prefers_subgroup_gemm(self.info.device_type)
            || self.switches.plan_as_gpu.load(Ordering::Relaxed)
    }

    /// Plans GEMMs as on a GPU (or back as the adapter's type says); see [`Gpu::plans_as_gpu`].
    pub fn set_plan_as_gpu(&self, on: bool) {
        self.switches.plan_as_gpu.store(on, Ordering::Relaxed);
    }

    /// Turns the tiled kernels off (or back on): tests run every family against the same CPU
    /// references.
    pub fn set_tiled_kernels(&self, on: bool) {
        self.switches.tiled.store(on, Ordering::Relaxed);
    }

    /// Makes every product on the tiled kernels use `config` (None restores the planner's or
    /// the tuned choice): tests check each configuration, benches compare them.
    pub fn force_tiled_config(&self, config: Option<TiledConfig>) {
        self.switches
            .tiled_config
            .store(config.map_or(0, |c| c.index() + 1), Ordering::Relaxed);
    }

    /// The configuration [`Gpu::force_tiled_config`] set, if any.
    pub fn forced_tiled_config(&self) -> Option<TiledConfig> {
        match self.switches.tiled_config.load(Ordering::Relaxed) {
            0 => None,
            i => TiledConfig::ALL.get(i as usize - 1).copied(),
        }
    }

    /// True when the subgroup GEMM reads its packed B operand from an rgba32float texture
    /// rather than a storage buffer: on lavapipe a texel fetch moves a lane's vec4 in one load,
    /// where a storage load differing per lane is a branchy per-lane loop (the measured gain is
    /// in BENCHMARKS.md, "Operand textures"). On by default; [`DeviceOptions::textures`] turns
    /// it off. Only the subgroup kernels read textures.
    pub fn texture_operands(&self) -> bool {
        self.switches.textures.load(Ordering::Relaxed)
    }

    /// Turns texture operands off (or back on): tests run both ways of reading B.
    pub fn set_texture_operands(&self, on: bool) {
        self.switches.textures.store(on, Ordering::Relaxed);
    }

    /// Makes operand textures `width` texels wide (a power of two, at least 16) instead of 4096
    /// (None restores that), so small test products wrap over many texture rows.
    pub fn force_texture_width(&self, width: Option<u32>) {
        let width = width.unwrap_or_else(|| default_texture_width(&self.limits));
        // Rows are filled by buffer copies, whose rows must be whole multiples of 256 bytes.
        let narrowest = wgpu::COPY_BYTES_PER_ROW_ALIGNMENT / pool::TEXEL_BYTES as u32;
        assert!(
            width.is_power_of_two()
                && (narrowest..=self.limits.max_texture_dimension_2d).contains(&width),
            "operand textures are a power of two from {narrowest} texels wide up to the adapter's limit, not {width}"
        );
        self.switches.texture_width.store(width, Ordering::Relaxed);
    }

    /// log2 of the operand texture width when `texels` rgba32float texels fit one texture
    /// (texel t at (t mod width, t / width)) and texture operands are on; None otherwise, and
    /// the caller keeps B in a buffer.
    pub(crate) fn operand_texture_shift(&self, texels: usize) -> Option<u32> {
        if !self.texture_operands() {
            return None;
        }
        let width = self.switches.texture_width.load(Ordering::Relaxed);
        let height = pool::texture_height(width, texels as u64);
        (height <= u64::from(self.limits.max_texture_dimension_2d)).then(|| width.trailing_zeros())
    }

    /// A pooled operand texture of `texels` texels, `1 << shift` wide.
    pub(crate) fn operand_texture(&self, shift: u32, texels: usize) -> PooledTexture {
        self.pool.alloc_texture(1 << shift, texels as u64)
    }

    /// Makes every kernel gradient split its sum over N*OH*OW into `slices` (at most what the
    /// sum's length allows, one slice per 256 terms) instead of the default or tuned choice;
    /// None restores that. The default depends on the core count, so tests force both one
    /// slice and many to reach every path on any machine.
    pub fn force_kernel_gradient_slices(&self, slices: Option<u32>) {
        assert!(
            slices != Some(0),
            "a kernel gradient has at least one slice"
        );
        self.switches
            .kgrad_slices
            .store(slices.unwrap_or(0), Ordering::Relaxed);
    }

    /// The forced kernel-gradient slice count, if any; see
    /// [`Gpu::force_kernel_gradient_slices`].
    pub fn forced_kernel_gradient_slices(&self) -> Option<u32> {
        match self.switches.kgrad_slices.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s),
        }
    }

    /// How 3x3 stride-1 convolutions run ([`DeviceOptions::conv_algo`]).
    pub fn conv_algo(&self) -> ConvAlgo {
        ConvAlgo::from_code(self.switches.conv_algo.load(Ordering::Relaxed))
    }

    /// Makes every 3x3 stride-1 convolution run `algo`: tests run each algorithm against the
    /// same CPU references, benches compare them in one sitting.
    pub fn set_conv_algo(&self, algo: ConvAlgo) {
        self.switches
            .conv_algo
            .store(algo.code(), Ordering::Relaxed);
    }

    /// Runs `f` with every 3x3 stride-1 convolution on `algo`, then puts back the algorithm
    /// that was set before (also where `f` returns an error).
    pub fn with_conv_algo<T>(&self, algo: ConvAlgo, f: impl FnOnce() -> T) -> T {
        let previous = self.conv_algo();
        self.set_conv_algo(algo);
        let out = f();
        self.set_conv_algo(previous);
        out
    }

    /// Fills every tensor from [`crate::Tensor::uninit`] with NaN before handing it out (off by
    /// default). The pool recycles buffers, so a kernel that fails to write part of its output
    /// would otherwise leave the previous, often identical, result there and pass a repeated
    /// test; with poison on, every unwritten element reads NaN. The test suite opens every
    /// device with it on.
    pub fn set_poison_uninit(&self, on: bool) {
        self.switches.poison.store(on, Ordering::Relaxed);
    }

    pub fn poisons_uninit(&self) -> bool {
        self.switches.poison.load(Ordering::Relaxed)
    }

    /// Bytes of NaN every tensor carries past its end, inside the range it is bound with (0:
    /// off, the default). Vulkan with robust buffer access (lavapipe) returns 0 for a read past
    /// a binding, while Metal and DX12 clamp the index and return a real value there, so a
    /// kernel that reads past a tensor's logical end passes on lavapipe and fails on them. With
    /// the tail such a read sees NaN, which shows in the result. The test suite opens every
    /// device with it on.
    pub fn nan_tail(&self) -> u64 {
        if self.switches.nan_tail {
            NAN_TAIL_BYTES
        } else {
            0
        }
    }

    /// Records copies of NaN bytes (0xFF: a quiet NaN in every f32) over `size` bytes of
    /// `buffer`, ordered with the other recorded work.
    pub(crate) fn record_poison(&self, buffer: &wgpu::Buffer, size: u64) {
        self.record_poison_at(buffer, 0, size);
    }

    /// [`Self::record_poison`] over bytes `[offset, offset + size)` (multiples of 4).
    pub(crate) fn record_poison_at(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) {
        const CHUNK: u64 = 1 << 20;
        let source = self.switches.nan_source.get_or_init(|| {
            let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("NaN poison source"),
                size: CHUNK,
                usage: wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: true,
            });
            b.get_mapped_range_mut(..)
                .expect("freshly mapped poison buffer")
                .copy_from_slice(&vec![0xFF; CHUNK as usize]);
            b.unmap();
            b
        });
        self.record(|enc| {
            let mut at = 0;
            while at < size {
                let n = CHUNK.min(size - at);
                enc.copy_buffer_to_buffer(source, 0, buffer, offset + at, n);
                at += n;
            }
        });
    }
}
