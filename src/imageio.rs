//! Images in and out: PNG and JPEG files to `[1, h, w, 3]` tensors in
//! [-1, 1] and back. Errors name the file; outputs are written atomically.
//!
//! The networks see RGB; what else a file holds travels beside the pixels
//! (`Layout`) and is written back: greyscale stays greyscale (the three
//! restored channels averaged), 16-bit stays 16-bit (read and written at
//! full precision), an alpha channel is carried through unchanged. EXIF
//! orientation is applied on reading, as viewers show the picture.

use crate::atomic::write_file;
use crate::bail;
use crate::error::{Error, Result};
use crate::metrics::to_u8;
use crate::tensor::Tensor;
use image::codecs::jpeg::JpegEncoder;
use image::metadata::Orientation;
use image::{
    DynamicImage, GrayImage, ImageBuffer, ImageDecoder, ImageError, ImageFormat, ImageReader,
    Limits, RgbImage,
};
use std::io::Cursor;
use std::path::Path;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

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

/// The most pixels an input may have (a 100-megapixel photograph; its f32
/// tensor alone is 1.2 GB). Checked against the header, before decoding.
pub const MAX_PIXELS: u64 = 100_000_000;

/// A JPEG header states any size whatever data follows, and the decoder
/// fills what is missing: a 1.6 KB file claiming 8000x8000 would decode
/// 64 megapixels of nothing. Every 8x8 block of every component costs at
/// least one bit (its DC code), so a real JPEG holds at most 512 pixels
/// per byte; four times that is allowed.
const JPEG_MAX_PIXELS_PER_BYTE: u64 = 2048;

/// Whether a JPEG's markers run from SOI to EOI. The decoder fills a file
/// cut short with grey instead of failing, so truncation is found here:
/// segments are skipped by their lengths, a scan's entropy-coded data up
/// to the next marker (0xFF followed by anything but a stuffed 0x00, a
/// restart marker or a fill 0xFF).
fn jpeg_complete(b: &[u8]) -> bool {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut i = 2;
    while i + 1 < b.len() {
        if b[i] != 0xFF {
            return false;
        }
        let marker = b[i + 1];
        match marker {
            0xD9 => return true,
            0xFF => {
                i += 1;
                continue;
            }
            0x01 | 0xD0..=0xD7 => {
                i += 2;
                continue;
            }
            _ => {}
        }
        let Some(len) = b.get(i + 2..i + 4) else {
            return false;
        };
        i += 2 + u16::from_be_bytes([len[0], len[1]]) as usize;
        if marker == 0xDA {
            let at_marker =
                |i: usize| b[i] == 0xFF && !matches!(b[i + 1], 0x00 | 0xD0..=0xD7 | 0xFF);
            while i + 1 < b.len() && !at_marker(i) {
                i += 1;
            }
        }
    }
    false
}

/// Whether a PNG's chunks run from the signature to IEND (the decoder
/// stops once it has the pixels, so a file cut after them would pass).
fn png_complete(b: &[u8]) -> bool {
    let mut i = 8;
    while let Some(head) = b.get(i..i + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if &head[4..] == b"IEND" {
            return i + 12 <= b.len();
        }
        i = i.saturating_add(12 + len);
    }
    false
}

/// A JPEG's pixels (8-bit grey or RGB), refused at the first error in its
/// scan data: missing data, a bad Huffman code, a marker out of place.
fn decode_jpeg_strictly(bytes: &[u8], w: u32, h: u32) -> std::result::Result<DynamicImage, String> {
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    d.decode_headers().map_err(|e| e.to_string())?;
    let grey = matches!(
        d.input_colorspace(),
        Some(ColorSpace::Luma | ColorSpace::LumaA)
    );
    let out = if grey {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    d.set_options(d.options().jpeg_set_out_colorspace(out));
    let px = d.decode().map_err(|e| e.to_string())?;
    let img = match grey {
        true => GrayImage::from_raw(w, h, px).map(DynamicImage::ImageLuma8),
        false => RgbImage::from_raw(w, h, px).map(DynamicImage::ImageRgb8),
    };
    img.ok_or_else(|| "decoded size differs from the header's".to_string())
}

/// Decodes a PNG or JPEG file, upright: its EXIF orientation (returned
/// when there was one to apply) is applied. The header is checked before
/// any pixel is decoded (size, the file's completeness), so a hostile or
/// broken file costs no more than reading it.
pub fn decode(path: &Path) -> Result<(DynamicImage, Option<Orientation>)> {
    let p = path.display();
    let bytes = std::fs::read(path).map_err(|e| Error(format!("{p}: cannot read: {e}")))?;
    let unreadable = |e: ImageError| match e {
        ImageError::Limits(_) => Error(format!(
            "{p}: too large to decode within the memory limit ({e})"
        )),
        e => Error(format!("{p}: not a readable PNG or JPEG image ({e})")),
    };
    let format = match image::guess_format(&bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        _ => bail!("{p}: not a readable PNG or JPEG image (neither signature)"),
    };
    let mut decoder = ImageReader::with_format(Cursor::new(&bytes), format)
        .into_decoder()
        .map_err(unreadable)?;
    let (w, h) = decoder.dimensions();
    if w < MIN_SIDE || h < MIN_SIDE {
        bail!("{p}: a {w}x{h} image is too small (at least {MIN_SIDE}x{MIN_SIDE})");
    }
    let pixels = w as u64 * h as u64;
    if pixels > MAX_PIXELS {
        bail!(
            "{p}: its header says {w}x{h}, more than the {} megapixels an input may have",
            MAX_PIXELS / 1_000_000
        );
    }
    let complete = match format {
        ImageFormat::Jpeg => {
            let most = bytes.len() as u64 * JPEG_MAX_PIXELS_PER_BYTE;
            if pixels > most {
                bail!(
                    "{p}: its header says {w}x{h}, but {} bytes of JPEG cannot hold that many pixels (truncated or corrupt)",
                    bytes.len()
                );
            }
            jpeg_complete(&bytes)
        }
        _ => png_complete(&bytes),
    };
    if !complete {
        bail!("{p}: truncated or corrupt: the file ends before its end-of-image marker");
    }
    // Room for the largest input in the widest layout (16-bit RGBA).
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    decoder.set_limits(limits).map_err(unreadable)?;
    // An unreadable EXIF block is no reason to refuse the pixels.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = match format {
        ImageFormat::Jpeg => decode_jpeg_strictly(&bytes, w, h)
            .map_err(|e| Error(format!("{p}: corrupt JPEG data ({e})")))?,
        _ => DynamicImage::from_decoder(decoder).map_err(unreadable)?,
    };
    if orientation == Orientation::NoTransforms {
        return Ok((img, None));
    }
    img.apply_orientation(orientation);
    Ok((img, Some(orientation)))
}

/// Decodes an image file to 8-bit RGB, upright.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    Ok(decode(path)?.0.to_rgb8())
}

/// How an input was stored beyond its RGB pixels; an output is written
/// the same way. The default is 8-bit RGB.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layout {
    /// One channel: restored as RGB, written back as grey.
    pub grey: bool,
    /// 16 bits per channel.
    pub sixteen: bool,
    /// The alpha channel, 16-bit (8-bit values times 257), row-major.
    pub alpha: Option<Vec<u16>>,
}

impl Layout {
    /// Refuses an output format that cannot hold this layout, before any
    /// work: a JPEG has no alpha channel.
    pub fn check_output(&self, input: &Path, output: &Path) -> Result<()> {
        if self.alpha.is_some() && output_format(output)? == ImageFormat::Jpeg {
            bail!(
                "{}: has an alpha channel, which a JPEG ({}) cannot hold: write PNG (--format png)",
                input.display(),
                output.display()
            );
        }
        Ok(())
    }
}

/// A decoded input: its RGB pixels `[1, h, w, 3]` in [-1, 1], its layout,
/// and what was done to read it (for the log).
pub struct Picture {
    pub pixels: Tensor,
    pub layout: Layout,
    pub notes: Vec<String>,
}

/// Reads an image as the networks see it, with what is needed to write a
/// result back the same way.
pub fn load_picture(path: &Path) -> Result<Picture> {
    let (img, orientation) = decode(path)?;
    let color = img.color();
    let layout = Layout {
        grey: !color.has_color(),
        sixteen: color.bytes_per_pixel() / color.channel_count() > 1,
        alpha: color
            .has_alpha()
            .then(|| img.to_luma_alpha16().pixels().map(|p| p.0[1]).collect()),
    };
    let mut notes = Vec::new();
    if let Some(o) = orientation {
        notes.push(format!("EXIF orientation {o:?} applied"));
    }
    if layout.grey {
        notes.push("greyscale: restored as RGB, written back as grey".to_string());
    }
    if layout.sixteen {
        notes.push("16-bit: read at full precision, written back as 16-bit PNG".to_string());
    }
    if layout.alpha.is_some() {
        notes.push("alpha channel carried through unchanged".to_string());
    }
    let pixels = if layout.sixteen {
        let rgb = img.to_rgb16();
        let (w, h) = rgb.dimensions();
        let data = rgb
            .as_raw()
            .iter()
            .map(|&v| v as f32 / 32767.5 - 1.0)
            .collect();
        Tensor::from_vec(&[1, h as usize, w as usize, 3], data)
    } else {
        rgb_to_tensor(&img.to_rgb8())
    };
    Ok(Picture {
        pixels,
        layout,
        notes,
    })
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

/// An image's RGB pixels `[1, h, w, 3]` in [-1, 1].
pub fn load_image(path: &Path) -> Result<Tensor> {
    Ok(load_picture(path)?.pixels)
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
/// 8 bits), as PNG or JPEG by the extension, atomically, replacing `path`.
pub fn save_image(path: &Path, batch: &Tensor, index: usize) -> Result<()> {
    save_output(path, batch, index, &Layout::default(), true)
}

/// Writes image `index` of an NHWC batch in [-1, 1] in `layout` (clamped
/// and rounded to 8 or 16 bits; JPEG is 8-bit), as PNG or JPEG by the
/// extension, atomically, replacing an existing `path` only if `replace`
/// (a command's output without `--force` must not replace anything).
pub fn save_output(
    path: &Path,
    batch: &Tensor,
    index: usize,
    layout: &Layout,
    replace: bool,
) -> Result<()> {
    let format = output_format(path)?;
    let (_, h, w, c) = batch.nhwc();
    assert_eq!(c, 3, "images are RGB");
    let (w, h) = (w as u32, h as u32);
    let rgb = &batch.data()[index * (h * w) as usize * 3..][..(h * w) as usize * 3];
    // Grey: the network's three channels averaged into one.
    let values: Vec<f32> = match layout.grey {
        true => rgb
            .chunks_exact(3)
            .map(|p| (p[0] + p[1] + p[2]) / 3.0)
            .collect(),
        false => rgb.to_vec(),
    };
    let sixteen = layout.sixteen && format == ImageFormat::Png;
    let img = match (sixteen, &layout.alpha) {
        (false, None) => {
            let px = to_u8(&values);
            match layout.grey {
                true => GrayImage::from_raw(w, h, px).map(DynamicImage::ImageLuma8),
                false => RgbImage::from_raw(w, h, px).map(DynamicImage::ImageRgb8),
            }
        }
        (true, None) => {
            let px = to_u16(&values);
            match layout.grey {
                true => ImageBuffer::from_raw(w, h, px).map(DynamicImage::ImageLuma16),
                false => ImageBuffer::from_raw(w, h, px).map(DynamicImage::ImageRgb16),
            }
        }
        (_, Some(alpha)) => {
            let px = with_alpha(to_u16(&values), alpha, 1 + 2 * usize::from(!layout.grey));
            let img = match layout.grey {
                true => ImageBuffer::from_raw(w, h, px).map(DynamicImage::ImageLumaA16),
                false => ImageBuffer::from_raw(w, h, px).map(DynamicImage::ImageRgba16),
            };
            match sixteen {
                true => img,
                false if layout.grey => img.map(|i| DynamicImage::ImageLumaA8(i.to_luma_alpha8())),
                false => img.map(|i| DynamicImage::ImageRgba8(i.to_rgba8())),
            }
        }
    };
    let img = img.expect("buffer matches the size");
    let mut bytes = Cursor::new(Vec::new());
    let encoded = match format {
        // Restored images are the product: the encoder's default quality
        // (75) would add back the artefacts the model removed.
        ImageFormat::Jpeg => JpegEncoder::new_with_quality(&mut bytes, 95).encode_image(&img),
        _ => img.write_to(&mut bytes, format),
    };
    encoded.map_err(|e| Error(format!("{}: cannot encode: {e}", path.display())))?;
    write_file(path, bytes.get_ref(), replace)
}

/// [-1, 1] to 16-bit levels.
fn to_u16(x: &[f32]) -> Vec<u16> {
    x.iter()
        .map(|&v| ((v + 1.0) * 32767.5).clamp(0.0, 65535.0).round() as u16)
        .collect()
}

/// Interleaves `alpha` after every `channels` colour values.
fn with_alpha(colour: Vec<u16>, alpha: &[u16], channels: usize) -> Vec<u16> {
    colour
        .chunks_exact(channels)
        .zip(alpha)
        .flat_map(|(c, &a)| c.iter().copied().chain([a]))
        .collect()
}
