//! Images in and out: PNG and JPEG files to `[1, h, w, 3]` tensors in
//! [-1, 1] and back. Errors name the file; outputs are written atomically.

use crate::atomic::write_atomic;
use crate::bail;
use crate::error::{Error, Result};
use crate::metrics::to_u8;
use crate::tensor::Tensor;
use image::codecs::jpeg::JpegEncoder;
use image::{ImageFormat, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The smallest side an image may have: one JPEG block of 4:2:0 chroma,
/// four low-resolution pixels of 4x super-resolution.
pub const MIN_SIDE: u32 = 16;

/// Decodes an image file to 8-bit RGB.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let bytes =
        std::fs::read(path).map_err(|e| Error(format!("{}: cannot read: {e}", path.display())))?;
    let img = image::load_from_memory(&bytes).map_err(|e| {
        Error(format!(
            "{}: not a readable PNG or JPEG image ({e})",
            path.display()
        ))
    })?;
    if img.width() < MIN_SIDE || img.height() < MIN_SIDE {
        bail!(
            "{}: a {}x{} image is too small (at least {MIN_SIDE}x{MIN_SIDE})",
            path.display(),
            img.width(),
            img.height()
        );
    }
    Ok(img.to_rgb8())
}

/// An 8-bit level to [-1, 1].
pub fn unit_from_u8(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

/// 8-bit RGB to a `[1, h, w, 3]` tensor in [-1, 1].
pub fn rgb_to_tensor(img: &RgbImage) -> Tensor {
    let (w, h) = img.dimensions();
    let data = img.as_raw().iter().copied().map(unit_from_u8).collect();
    Tensor::from_vec(&[1, h as usize, w as usize, 3], data)
}

pub fn load_image(path: &Path) -> Result<Tensor> {
    Ok(rgb_to_tensor(&read_rgb(path)?))
}

/// The output format a path's extension asks for.
pub fn output_format(path: &Path) -> Result<ImageFormat> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => Ok(ImageFormat::Png),
        Some("jpg" | "jpeg") => Ok(ImageFormat::Jpeg),
        _ => bail!("{}: output must end in .png, .jpg or .jpeg", path.display()),
    }
}

/// Writes image `index` of an NHWC batch in [-1, 1] (clamped and rounded to
/// 8 bits), as PNG or JPEG by the extension, atomically.
pub fn save_image(path: &Path, batch: &Tensor, index: usize) -> Result<()> {
    let format = output_format(path)?;
    let (_, h, w, c) = batch.nhwc();
    assert_eq!(c, 3, "images are RGB");
    let image_len = h * w * c;
    let pixels = to_u8(&batch.data()[index * image_len..][..image_len]);
    let img = RgbImage::from_raw(w as u32, h as u32, pixels).expect("buffer matches the size");
    let mut bytes = Cursor::new(Vec::new());
    let encoded = match format {
        // Restored images are the product: the encoder's default quality
        // (75) would add back the artefacts the model removed.
        ImageFormat::Jpeg => JpegEncoder::new_with_quality(&mut bytes, 95).encode_image(&img),
        _ => img.write_to(&mut bytes, format),
    };
    encoded.map_err(|e| Error(format!("{}: cannot encode: {e}", path.display())))?;
    write_atomic(path, bytes.get_ref())
}
