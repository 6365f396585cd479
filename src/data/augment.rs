//! Augmentation with Keras `ImageDataGenerator` semantics: a random rotation, shift, shear and
//! zoom composed into one affine map around the image centre, applied in a single bilinear
//! resampling pass (as Keras' `apply_affine_transform` with `order=1`), then a random
//! horizontal flip. Each image's transform comes from its own RNG seeded by (seed, epoch, index),
//! so a run is reproducible whatever the number of worker threads.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{mix, DataError};

/// How samples that fall outside the image are filled (Keras `fill_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FillMode {
    /// aaaaaaaa|abcd|dddddddd
    #[default]
    Nearest,
    /// 00000000|abcd|00000000 (cval 0)
    Constant,
    /// abcddcba|abcd|dcbaabcd
    Reflect,
    /// abcdabcd|abcd|abcdabcd
    Wrap,
}

impl std::str::FromStr for FillMode {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "nearest" => Ok(Self::Nearest),
            "constant" => Ok(Self::Constant),
            "reflect" => Ok(Self::Reflect),
            "wrap" => Ok(Self::Wrap),
            _ => Err(DataError::Invalid(format!(
                "fill mode {s:?}: expected nearest, constant, reflect or wrap"
            ))),
        }
    }
}

/// Augmentation ranges, as the arguments of Keras' `ImageDataGenerator`.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Degrees; the angle is uniform in [-r, r].
    pub rotation_range: f32,
    /// Fraction of the width; the shift is uniform in [-f, f] * width pixels.
    pub width_shift_range: f32,
    /// Fraction of the height.
    pub height_shift_range: f32,
    /// Shear angle in degrees, uniform in [-s, s].
    pub shear_range: f32,
    /// Zoom factors, each axis independently uniform in [1 - z, 1 + z] (> 1 zooms out, as Keras).
    pub zoom_range: f32,
    pub horizontal_flip: bool,
    pub fill_mode: FillMode,
}

impl Augment {
    /// The book's settings (Deep Learning with Python 5.2): rotation 40, shifts 0.2, shear 0.2,
    /// zoom 0.2, horizontal flip, nearest fill.
    pub fn book() -> Self {
        Self {
            rotation_range: 40.0,
            width_shift_range: 0.2,
            height_shift_range: 0.2,
            shear_range: 0.2,
            zoom_range: 0.2,
            horizontal_flip: true,
            fill_mode: FillMode::Nearest,
        }
    }

    pub fn validate(&self) -> Result<(), DataError> {
        let fields = [
            ("rotation_range", self.rotation_range),
            ("width_shift_range", self.width_shift_range),
            ("height_shift_range", self.height_shift_range),
            ("shear_range", self.shear_range),
            ("zoom_range", self.zoom_range),
        ];
        for (name, v) in fields {
            if !v.is_finite() || v < 0.0 {
                return Err(DataError::Invalid(format!(
                    "{name} = {v} must be a finite number >= 0"
                )));
            }
        }
        if self.zoom_range >= 1.0 {
            return Err(DataError::Invalid(format!(
                "zoom_range = {} must be below 1",
                self.zoom_range
            )));
        }
        Ok(())
    }

    /// The transform for sample `index` of `epoch` under `seed`.
    pub fn transform_for(
        &self,
        seed: u64,
        epoch: u64,
        index: u64,
        h: usize,
        w: usize,
    ) -> Transform {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(mix(seed, epoch), index));
        self.random_transform(&mut rng, h, w)
    }

    /// Draws one transform, in the order Keras' `get_random_transform` draws its parameters.
    pub fn random_transform(&self, rng: &mut impl Rng, h: usize, w: usize) -> Transform {
        let mut sym = |r: f32| {
            if r > 0.0 {
                rng.random_range(-r..=r)
            } else {
                0.0
            }
        };
        let theta = sym(self.rotation_range);
        let shift_y = sym(self.height_shift_range) * h as f32;
        let shift_x = sym(self.width_shift_range) * w as f32;
        let shear = sym(self.shear_range);
        let (zx, zy) = if self.zoom_range > 0.0 {
            let z = self.zoom_range;
            (
                rng.random_range(1.0 - z..=1.0 + z),
                rng.random_range(1.0 - z..=1.0 + z),
            )
        } else {
            (1.0, 1.0)
        };
        let flip = self.horizontal_flip && rng.random::<f32>() < 0.5;
        Transform {
            theta_deg: theta,
            shift_x,
            shift_y,
            shear_deg: shear,
            zoom_x: zx,
            zoom_y: zy,
            flip,
        }
    }
}

/// One image's transform.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transform {
    pub theta_deg: f32,
    pub shift_x: f32,
    pub shift_y: f32,
    pub shear_deg: f32,
    pub zoom_x: f32,
    pub zoom_y: f32,
    pub flip: bool,
}

impl Transform {
    pub fn identity() -> Self {
        Self {
            theta_deg: 0.0,
            shift_x: 0.0,
            shift_y: 0.0,
            shear_deg: 0.0,
            zoom_x: 1.0,
            zoom_y: 1.0,
            flip: false,
        }
    }

    /// The 2x3 map from output (x, y) pixel coordinates to input coordinates: Keras'
    /// rotation @ shift @ shear @ zoom, conjugated by a move of the origin to the image centre.
    pub fn matrix(&self, h: usize, w: usize) -> [[f64; 3]; 2] {
        let t = f64::from(self.theta_deg).to_radians();
        let s = f64::from(self.shear_deg).to_radians();
        let rot = [
            [t.cos(), -t.sin(), 0.0],
            [t.sin(), t.cos(), 0.0],
            [0.0, 0.0, 1.0],
        ];
        let shift = [
            [1.0, 0.0, f64::from(self.shift_x)],
            [0.0, 1.0, f64::from(self.shift_y)],
            [0.0, 0.0, 1.0],
        ];
        let shear = [[1.0, -s.sin(), 0.0], [0.0, s.cos(), 0.0], [0.0, 0.0, 1.0]];
        let zoom = [
            [f64::from(self.zoom_x), 0.0, 0.0],
            [0.0, f64::from(self.zoom_y), 0.0],
            [0.0, 0.0, 1.0],
        ];
        let m = mul(mul(mul(rot, shift), shear), zoom);
        let (cx, cy) = (w as f64 / 2.0 - 0.5, h as f64 / 2.0 - 0.5);
        let to = [[1.0, 0.0, cx], [0.0, 1.0, cy], [0.0, 0.0, 1.0]];
        let from = [[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]];
        let full = mul(mul(to, m), from);
        [full[0], full[1]]
    }

    /// Resamples `src` (H,W,C) f32 into `dst` (H,W,C): bilinear, `fill` outside the image, then
    /// the horizontal flip.
    pub fn apply(
        &self,
        src: &[f32],
        h: usize,
        w: usize,
        c: usize,
        fill: FillMode,
        dst: &mut [f32],
    ) {
        assert_eq!(src.len(), h * w * c);
        assert_eq!(dst.len(), h * w * c);
        let m = self.matrix(h, w);
        for y in 0..h {
            for x in 0..w {
                let ox = if self.flip { w - 1 - x } else { x };
                let (fx, fy) = (x as f64, y as f64);
                let sx = m[0][0] * fx + m[0][1] * fy + m[0][2];
                let sy = m[1][0] * fx + m[1][1] * fy + m[1][2];
                let x0 = sx.floor();
                let y0 = sy.floor();
                let (ax, ay) = ((sx - x0) as f32, (sy - y0) as f32);
                let taps = [
                    (x0 as i64, y0 as i64, (1.0 - ax) * (1.0 - ay)),
                    (x0 as i64 + 1, y0 as i64, ax * (1.0 - ay)),
                    (x0 as i64, y0 as i64 + 1, (1.0 - ax) * ay),
                    (x0 as i64 + 1, y0 as i64 + 1, ax * ay),
                ];
                let out = &mut dst[(y * w + ox) * c..(y * w + ox + 1) * c];
                out.fill(0.0);
                for (tx, ty, wt) in taps {
                    if wt == 0.0 {
                        continue;
                    }
                    let (Some(ix), Some(iy)) = (fill_index(tx, w, fill), fill_index(ty, h, fill))
                    else {
                        continue; // constant fill: cval 0 contributes nothing
                    };
                    let p = &src[(iy * w + ix) * c..(iy * w + ix + 1) * c];
                    for k in 0..c {
                        out[k] += wt * p[k];
                    }
                }
            }
        }
    }
}

fn mul(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    r
}

/// Maps a possibly out-of-range pixel index into the image under `fill`; None means "cval".
fn fill_index(i: i64, n: usize, fill: FillMode) -> Option<usize> {
    let n = n as i64;
    if (0..n).contains(&i) {
        return Some(i as usize);
    }
    match fill {
        FillMode::Constant => None,
        FillMode::Nearest => Some(i.clamp(0, n - 1) as usize),
        FillMode::Wrap => Some(i.rem_euclid(n) as usize),
        FillMode::Reflect => {
            let p = i.rem_euclid(2 * n);
            Some(if p < n { p } else { 2 * n - 1 - p } as usize)
        }
    }
}

/// A 3x3 grid of `img` (H,W,3 u8) augmented nine times with seeds derived from `seed`, 4-pixel
/// white gutters: the book's augmentation figure.
pub fn preview_grid(img: &super::Image, aug: &Augment, seed: u64) -> image::RgbImage {
    let (h, w, c) = (img.h, img.w, img.c);
    let gap = 4;
    let mut grid = image::RgbImage::from_pixel(
        (3 * w + 4 * gap) as u32,
        (3 * h + 4 * gap) as u32,
        image::Rgb([255, 255, 255]),
    );
    let src = img.to_f32();
    let mut out = vec![0.0f32; h * w * c];
    for k in 0..9 {
        aug.transform_for(seed, 0, k, h, w)
            .apply(&src, h, w, c, aug.fill_mode, &mut out);
        let (gx, gy) = (
            gap + (k as usize % 3) * (w + gap),
            gap + (k as usize / 3) * (h + gap),
        );
        for y in 0..h {
            for x in 0..w {
                let p = &out[(y * w + x) * c..(y * w + x + 1) * c];
                let px = if c == 3 {
                    [p[0], p[1], p[2]]
                } else {
                    [p[0]; 3]
                };
                grid.put_pixel(
                    (gx + x) as u32,
                    (gy + y) as u32,
                    image::Rgb(px.map(|v| v.round().clamp(0.0, 255.0) as u8)),
                );
            }
        }
    }
    grid
}
