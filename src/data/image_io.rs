//! Decoding, resizing and preprocessing of single images.

use std::path::Path;

use super::DataError;

/// An 8-bit image, (H,W,C) row-major with C = 3 (RGB) or 1 (gray).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<u8>,
}

impl Image {
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The pixels as f32 in [0, 255], (H,W,C).
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| f32::from(v)).collect()
    }
}

/// File extensions read as images, as Keras' `image_dataset_from_directory`.
pub const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "gif"];

/// The most pixels an image is decoded to: 8192x8192, 768 MiB as f32 RGB. Larger target sizes
/// are refused before anything is decoded, where they would otherwise abort the process on a
/// failed allocation.
pub const MAX_PIXELS: usize = 8192 * 8192;

/// Refuses a target size of zero or of more than [`MAX_PIXELS`], naming it.
pub fn check_size(size: (usize, usize), channels: usize) -> Result<(), DataError> {
    let (h, w) = size;
    if h == 0 || w == 0 {
        return Err(DataError::Invalid(format!(
            "image size {h}x{w}: both sides must be positive"
        )));
    }
    match h.checked_mul(w) {
        Some(px) if px <= MAX_PIXELS => Ok(()),
        _ => Err(DataError::Invalid(format!(
            "image size {h}x{w}: one image would take {:.0} MiB as f32 input; the largest this tool decodes is 8192x8192",
            h as f64 * w as f64 * channels as f64 * 4.0 / (1024.0 * 1024.0)
        ))),
    }
}

pub fn is_image_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Decodes `path` (format sniffed from the bytes, so a PNG named .jpg still loads) and converts
/// it to RGB (`channels` 3) or gray (1): gray, RGBA, CMYK and 16-bit inputs all become 8-bit
/// RGB, alpha dropped. Then resizes to (h, w) with Pillow's antialiased bilinear filter
/// ([`super::resample`]), aspect ratio not kept, as Keras' `load_img(..., interpolation='bilinear')`.
pub fn load(path: &Path, size: (usize, usize), channels: usize) -> Result<Image, DataError> {
    let bytes = std::fs::read(path).map_err(super::io_err(path))?;
    decode(path, &bytes, size, channels)
}

pub fn decode(
    path: &Path,
    bytes: &[u8],
    size: (usize, usize),
    channels: usize,
) -> Result<Image, DataError> {
    let err = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    check_size(size, channels)?;
    if bytes.is_empty() {
        return Err(err("the file is empty".into()));
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(err("not a recognised image format".into()));
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        // Decoders fill the missing scans with gray and report nothing; Pillow (so Keras)
        // refuses such a file, and training on it would teach the model gray squares.
        return Err(err(
            "image file is truncated: no end-of-image marker after its last scan".into(),
        ));
    }
    let img = match reader.format() {
        // jpeg-decoder's integer IDCT and fancy upsampling are closer to libjpeg-turbo (what
        // PIL, and so Keras, decodes with): mean 0.09 levels off instead of 0.18 on the shared
        // images. CMYK and other layouts go through the image crate.
        Some(image::ImageFormat::Jpeg) => match decode_jpeg(bytes) {
            Some(img) => img,
            None => reader.decode().map_err(|e| err(e.to_string()))?,
        },
        _ => reader.decode().map_err(|e| err(e.to_string()))?,
    };
    let (h, w) = size;
    let (src, c) = match channels {
        1 => (img.to_luma8().into_raw(), 1),
        3 => (img.to_rgb8().into_raw(), 3),
        c => {
            return Err(DataError::Invalid(format!(
                "{c} channels: images load as 1 (gray) or 3 (RGB)"
            )))
        }
    };
    let data = super::resample::resize(&src, img.height() as usize, img.width() as usize, c, h, w);
    Ok(Image {
        h,
        w,
        c: channels,
        data,
    })
}

/// True when the JPEG's last scan is followed by an end-of-image marker (FF D9). Inside a scan's
/// entropy-coded data every FF byte is followed by 00 or a restart marker, so neither FF DA
/// (start of scan) nor FF D9 appears there: a file cut anywhere after its first scan began has
/// no FF D9 after its last FF DA. Bytes after the marker (padding some writers add) are fine.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        Some(at) => bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]),
        // No scan at all: the decoder reports what is missing.
        None => true,
    }
}

/// Decodes an 8-bit RGB or gray JPEG with jpeg-decoder; None for anything else (or an error,
/// which the image crate then reports in its own words).
fn decode_jpeg(bytes: &[u8]) -> Option<image::DynamicImage> {
    let mut d = jpeg_decoder::Decoder::new(bytes);
    let px = d.decode().ok()?;
    let info = d.info()?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => {
            image::RgbImage::from_raw(w, h, px).map(image::DynamicImage::ImageRgb8)
        }
        jpeg_decoder::PixelFormat::L8 => {
            image::GrayImage::from_raw(w, h, px).map(image::DynamicImage::ImageLuma8)
        }
        _ => None,
    }
}

/// How pixel values in [0, 255] become network inputs; follows the model / weights.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preprocessing {
    /// x / 255 (Keras `Rescaling(1/255)`): the from-scratch models.
    Rescale,
    /// Keras VGG16 `preprocess_input`: RGB -> BGR, subtract [103.939, 116.779, 123.68], no
    /// scaling. What the Keras ImageNet weights expect.
    Caffe,
    /// torchvision: x / 255, subtract [0.485, 0.456, 0.406], divide by [0.229, 0.224, 0.225] (RGB).
    Torch,
    /// The raw values.
    None,
}

const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];
const TORCH_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const TORCH_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl Preprocessing {
    /// Applies the mode in place to (H,W,C) f32 pixels in [0, 255].
    pub fn apply(self, px: &mut [f32], channels: usize) {
        match self {
            Preprocessing::None => {}
            Preprocessing::Rescale => px.iter_mut().for_each(|v| *v /= 255.0),
            Preprocessing::Caffe => {
                assert_eq!(channels, 3, "caffe preprocessing needs RGB input");
                for p in px.chunks_exact_mut(3) {
                    let (r, g, b) = (p[0], p[1], p[2]);
                    p[0] = b - CAFFE_MEAN_BGR[0];
                    p[1] = g - CAFFE_MEAN_BGR[1];
                    p[2] = r - CAFFE_MEAN_BGR[2];
                }
            }
            Preprocessing::Torch => {
                assert_eq!(channels, 3, "torch preprocessing needs RGB input");
                for p in px.chunks_exact_mut(3) {
                    for c in 0..3 {
                        p[c] = (p[c] / 255.0 - TORCH_MEAN[c]) / TORCH_STD[c];
                    }
                }
            }
        }
    }
}

impl std::str::FromStr for Preprocessing {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "rescale" => Ok(Self::Rescale),
            "caffe" => Ok(Self::Caffe),
            "torch" => Ok(Self::Torch),
            "none" => Ok(Self::None),
            _ => Err(DataError::Invalid(format!(
                "preprocessing {s:?}: expected rescale, caffe, torch or none"
            ))),
        }
    }
}
