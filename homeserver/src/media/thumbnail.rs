//! Thumbnails with the `image` crate: which offered size answers a request,
//! and rendering one from an upload.
//!
//! Decoding untrusted images is the dangerous part: a few kilobytes of PNG
//! can claim gigapixels. Every decode runs under [`Limits`] (edge lengths
//! and allocation), on the blocking pool so it never stalls the async
//! workers, and only for the four formats clients send as pictures.

use std::io::Cursor;

use bytes::Bytes;
use image::{
    DynamicImage, ImageDecoder as _, ImageError, ImageFormat, ImageReader, Limits, codecs::jpeg::JpegEncoder,
    metadata::Orientation,
};

use crate::config::{ThumbnailMethod, ThumbnailSize};

/// The content types thumbnails are made of.
const INPUT_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];
/// The formats decoded, whatever the upload claimed to be.
const INPUT_FORMATS: [ImageFormat; 4] = [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Gif, ImageFormat::WebP];
/// Longest edge decoded: a 64-megapixel photo still fits.
const MAX_SOURCE_EDGE: u32 = 12_000;
/// Most memory one decode may take (the decoded pixels count).
const MAX_DECODE_BYTES: u64 = 400 * 1024 * 1024;
/// JPEG thumbnails: small files, no visible blocking at preview sizes.
const JPEG_QUALITY: u8 = 80;

/// A rendered thumbnail.
#[derive(Debug)]
pub struct Thumbnail {
    pub bytes: Bytes,
    pub content_type: &'static str,
}

/// Why no thumbnail could be made.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// The image is larger than the server decodes (413 `M_TOO_LARGE`).
    #[error("the image is too large to thumbnail")]
    TooLarge,
    /// Not an image of a supported format, or a broken one.
    #[error("cannot thumbnail this content: {0}")]
    Unsupported(String),
    /// Encoding failed or the blocking task died: our fault, not the upload's.
    #[error("thumbnailing failed: {0}")]
    Internal(String),
}

/// Whether uploads of this content type are thumbnailed at all.
pub fn is_thumbnailable(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|content_type| INPUT_TYPES.contains(&super::essence(content_type).as_str()))
}

/// The offered size that answers a request for `width`×`height`: the
/// smallest of the requested method that is at least as large, so the
/// client never has to scale up (the spec's "MUST NOT return a smaller
/// thumbnail than requested"). `None` when every offered size is smaller;
/// the caller then serves the original, which is no smaller either.
pub fn choose(offered: &[ThumbnailSize], width: u32, height: u32, method: ThumbnailMethod) -> Option<ThumbnailSize> {
    let same_method = offered.iter().filter(|size| size.method == method);
    // A config that offers only the other method still answers.
    let candidates: Vec<&ThumbnailSize> =
        if same_method.clone().next().is_some() { same_method.collect() } else { offered.iter().collect() };
    candidates
        .into_iter()
        .filter(|size| size.width >= width && size.height >= height)
        .min_by_key(|size| u64::from(size.width) * u64::from(size.height))
        .copied()
}

/// Renders the thumbnail of `source` for `size` on the blocking pool.
pub async fn generate(source: Bytes, size: ThumbnailSize) -> Result<Thumbnail, ThumbnailError> {
    tokio::task::spawn_blocking(move || render(&source, size))
        .await
        .map_err(|err| ThumbnailError::Internal(err.to_string()))?
}

/// Decodes, fits and encodes. JPEG stays JPEG (photos); everything else
/// becomes PNG, which keeps transparency.
fn render(source: &[u8], size: ThumbnailSize) -> Result<Thumbnail, ThumbnailError> {
    let (image, format) = decode(source)?;
    let is_jpeg = format == ImageFormat::Jpeg;
    let fitted = fit(&image, size);

    let mut out = Vec::new();
    let encoded = if is_jpeg {
        JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY).encode_image(&fitted.to_rgb8())
    } else {
        fitted.write_to(Cursor::new(&mut out), ImageFormat::Png)
    };
    encoded.map_err(|err| ThumbnailError::Internal(err.to_string()))?;
    let content_type = if is_jpeg { "image/jpeg" } else { "image/png" };
    Ok(Thumbnail { bytes: out.into(), content_type })
}

/// The image, upright (EXIF orientation applied, as phones expect), and
/// the format it was in.
fn decode(source: &[u8]) -> Result<(DynamicImage, ImageFormat), ThumbnailError> {
    let mut reader = ImageReader::new(Cursor::new(source))
        .with_guessed_format()
        .map_err(|err| ThumbnailError::Unsupported(err.to_string()))?;
    let format = reader
        .format()
        .filter(|format| INPUT_FORMATS.contains(format))
        .ok_or_else(|| ThumbnailError::Unsupported("not a PNG, JPEG, GIF or WebP image".to_owned()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SOURCE_EDGE);
    limits.max_image_height = Some(MAX_SOURCE_EDGE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);

    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    // Decoders may ignore `max_alloc`; the size of the pixels they are
    // about to allocate is known before they do.
    if decoder.total_bytes() > MAX_DECODE_BYTES {
        return Err(ThumbnailError::TooLarge);
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    image.apply_orientation(orientation);
    Ok((image, format))
}

fn decode_error(err: ImageError) -> ThumbnailError {
    match err {
        ImageError::Limits(_) => ThumbnailError::TooLarge,
        other => ThumbnailError::Unsupported(other.to_string()),
    }
}

/// The image fitted to the box. Never scales up (the spec's "SHOULD NOT
/// upscale"): an image smaller than the box is kept as it is (scale), or
/// cut to the box's aspect ratio at its own resolution (crop).
fn fit(image: &DynamicImage, size: ThumbnailSize) -> DynamicImage {
    let (width, height) = (image.width(), image.height());
    match size.method {
        ThumbnailMethod::Scale => {
            let (target_width, target_height) = scaled(width, height, size.width, size.height);
            if (target_width, target_height) == (width, height) {
                image.clone()
            } else {
                image.thumbnail_exact(target_width, target_height)
            }
        }
        ThumbnailMethod::Crop => {
            let (box_width, box_height) = scaled(size.width, size.height, width, height);
            let (x, y, crop_width, crop_height) = crop_region(width, height, box_width, box_height);
            image.crop_imm(x, y, crop_width, crop_height).thumbnail_exact(box_width, box_height)
        }
    }
}

/// `width`×`height` shrunk (never grown) to fit in the box, keeping the
/// aspect ratio; at least one pixel each way.
fn scaled(width: u32, height: u32, box_width: u32, box_height: u32) -> (u32, u32) {
    let ratio = (f64::from(box_width) / f64::from(width)).min(f64::from(box_height) / f64::from(height)).min(1.0);
    let shrink = |edge: u32| ((f64::from(edge) * ratio).round() as u32).clamp(1, edge.max(1));
    (shrink(width), shrink(height))
}

/// The centred part of a `width`×`height` image with the aspect ratio of
/// the box: `(x, y, width, height)`.
fn crop_region(width: u32, height: u32, box_width: u32, box_height: u32) -> (u32, u32, u32, u32) {
    // Compare width/height with box_width/box_height without rounding.
    let wide = u64::from(width) * u64::from(box_height) > u64::from(height) * u64::from(box_width);
    let (crop_width, crop_height) = if wide {
        let crop_width = (u64::from(height) * u64::from(box_width) / u64::from(box_height)).max(1);
        (u32::try_from(crop_width).unwrap_or(width).min(width), height)
    } else {
        let crop_height = (u64::from(width) * u64::from(box_height) / u64::from(box_width)).max(1);
        (width, u32::try_from(crop_height).unwrap_or(height).min(height))
    };
    ((width - crop_width) / 2, (height - crop_height) / 2, crop_width, crop_height)
}

#[cfg(test)]
mod tests {
    use image::{ImageBuffer, Rgb, Rgba};

    use super::*;

    const fn size(width: u32, height: u32, method: ThumbnailMethod) -> ThumbnailSize {
        ThumbnailSize { width, height, method }
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = ImageBuffer::from_fn(width, height, |x, y| Rgba([(x % 256) as u8, (y % 256) as u8, 0, 255]));
        let mut out = Vec::new();
        DynamicImage::ImageRgba8(image).write_to(Cursor::new(&mut out), ImageFormat::Png).unwrap();
        out
    }

    fn dimensions(thumbnail: &Thumbnail) -> (u32, u32) {
        let image = image::load_from_memory(&thumbnail.bytes).unwrap();
        (image.width(), image.height())
    }

    #[test]
    fn the_smallest_offered_size_that_covers_the_request_is_chosen() {
        use ThumbnailMethod::{Crop, Scale};
        let offered = [size(32, 32, Crop), size(96, 96, Crop), size(320, 240, Scale), size(640, 480, Scale)];
        assert_eq!(choose(&offered, 50, 50, Crop), Some(size(96, 96, Crop)));
        assert_eq!(choose(&offered, 32, 32, Crop), Some(size(32, 32, Crop)));
        assert_eq!(choose(&offered, 300, 300, Scale), Some(size(640, 480, Scale)));
        assert_eq!(choose(&offered, 1000, 10, Scale), None);
        assert_eq!(choose(&[size(96, 96, Crop)], 90, 90, Scale), Some(size(96, 96, Crop)));
    }

    #[test]
    fn scale_keeps_the_aspect_ratio_and_never_grows() {
        assert_eq!(scaled(1000, 500, 320, 240), (320, 160));
        assert_eq!(scaled(500, 1000, 320, 240), (120, 240));
        assert_eq!(scaled(100, 50, 320, 240), (100, 50));
        assert_eq!(scaled(10_000, 1, 320, 240), (320, 1));
    }

    #[test]
    fn crop_takes_the_centre_with_the_box_aspect_ratio() {
        assert_eq!(crop_region(1000, 500, 96, 96), (250, 0, 500, 500));
        assert_eq!(crop_region(500, 1000, 320, 240), (0, 312, 500, 375));
        assert_eq!(crop_region(96, 96, 96, 96), (0, 0, 96, 96));
    }

    #[test]
    fn thumbnails_fit_the_box() {
        let source = png(1000, 500);
        let scaled = render(&source, size(320, 240, ThumbnailMethod::Scale)).unwrap();
        assert_eq!((scaled.content_type, dimensions(&scaled)), ("image/png", (320, 160)));
        let cropped = render(&source, size(96, 96, ThumbnailMethod::Crop)).unwrap();
        assert_eq!(dimensions(&cropped), (96, 96));
        // Smaller than the box: cut to its shape, not blown up.
        let small = render(&png(60, 40), size(96, 96, ThumbnailMethod::Crop)).unwrap();
        assert_eq!(dimensions(&small), (40, 40));
    }

    #[test]
    fn jpeg_stays_jpeg() {
        let image = ImageBuffer::from_fn(200, 100, |x, _| Rgb([(x % 256) as u8, 0, 0]));
        let mut source = Vec::new();
        DynamicImage::ImageRgb8(image).write_to(Cursor::new(&mut source), ImageFormat::Jpeg).unwrap();
        let thumbnail = render(&source, size(96, 96, ThumbnailMethod::Crop)).unwrap();
        assert_eq!((thumbnail.content_type, dimensions(&thumbnail)), ("image/jpeg", (96, 96)));
    }

    #[test]
    fn oversized_and_broken_images_are_refused() {
        // A few hundred bytes of PNG that decode to more pixels than allowed.
        let bomb = png(MAX_SOURCE_EDGE + 1, 1);
        assert!(matches!(render(&bomb, size(96, 96, ThumbnailMethod::Crop)), Err(ThumbnailError::TooLarge)));
        assert!(matches!(render(b"not an image", size(96, 96, ThumbnailMethod::Crop)), Err(ThumbnailError::Unsupported(_))));
        let truncated = &png(100, 100)[..60];
        assert!(matches!(render(truncated, size(96, 96, ThumbnailMethod::Crop)), Err(ThumbnailError::Unsupported(_))));
    }

    #[test]
    fn only_picture_types_are_thumbnailed() {
        assert!(is_thumbnailable(Some("image/png")));
        assert!(is_thumbnailable(Some("Image/JPEG; charset=binary")));
        assert!(!is_thumbnailable(Some("image/svg+xml")));
        assert!(!is_thumbnailable(Some("application/pdf")));
        assert!(!is_thumbnailable(None));
    }
}
