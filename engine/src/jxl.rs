//! JPEG XL through `jxl-oxide` (pure Rust), single-threaded, with its allocation tracker set to
//! the job's memory limit so that a file whose header understates what it needs still cannot
//! allocate past it. The image is rendered in sRGB (XYB and enumerated colour encodings are
//! converted by jxl-oxide itself, embedded ICC profiles through `moxcms`), with its orientation
//! applied, so the size the header gives is the displayed one.
use crate::container::Facts;
use crate::pipeline::Raster;
use crate::{EngineError, Limits};
use jxl_oxide::{AllocTracker, EnumColourEncoding, InitializeResult, JxlImage, PixelFormat, RenderingIntent};

fn corrupt(err: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt {
        format: "JPEG XL",
        message: err.to_string(),
    }
}

/// Size (oriented), transparency and frame count from the image header, which is all that is
/// parsed (no frame is read).
pub(crate) fn read_header(bytes: &[u8]) -> Result<Facts, EngineError> {
    let mut uninit = JxlImage::builder()
        .alloc_tracker(AllocTracker::with_limit(64 * 1024 * 1024))
        .build_uninit();
    uninit.feed_bytes(bytes).map_err(corrupt)?;
    let image = match uninit.try_init().map_err(corrupt)? {
        InitializeResult::Initialized(image) => image,
        InitializeResult::NeedMoreData(_) => return Err(corrupt("the file ends inside its header")),
    };
    let (width, height) = (image.width(), image.height());
    let metadata = &image.image_header().metadata;
    Ok(Facts {
        width,
        height,
        frames: 1,
        has_alpha: metadata.ec_info.iter().any(|ec| ec.is_alpha()),
        orientation: Some(1),
        bits_per_sample: u8::try_from(metadata.bit_depth.bits_per_sample()).unwrap_or(32),
        max_frame_pixels: u64::from(width) * u64::from(height),
        ..Facts::default()
    })
}

/// Bytes a render of a `w` x `h` image allocates at most: jxl-oxide keeps 32-bit float planes
/// (colour, alpha and the VarDCT working set) and we copy the 8-bit result.
pub(crate) fn memory(w: u64, h: u64) -> u64 {
    w * h * (4 * 4 * 3 + 4)
}

/// Render the first frame in sRGB, 8 bits per sample (grey, grey+alpha, RGB or RGBA).
pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<Raster, EngineError> {
    let tracker = AllocTracker::with_limit(usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX));
    let mut image = JxlImage::builder()
        .alloc_tracker(tracker)
        .read(bytes)
        .map_err(corrupt)?;
    image.set_cms(jxl_oxide::Moxcms);
    let cmyk = matches!(image.pixel_format(), PixelFormat::Cmyk | PixelFormat::Cmyka);
    if cmyk {
        return Err(corrupt("CMYK JPEG XL images are not supported"));
    }
    image.request_color_encoding(EnumColourEncoding::srgb(RenderingIntent::Relative));
    if image.num_loaded_keyframes() == 0 {
        return Err(corrupt("the file has no complete frame"));
    }
    let render = image.render_frame(0).map_err(corrupt)?;
    let mut stream = render.stream();
    let (width, height, channels) = (
        stream.width() as usize,
        stream.height() as usize,
        stream.channels() as usize,
    );
    if !(1..=4).contains(&channels) {
        return Err(corrupt(format!("{channels} channels")));
    }
    let mut data = vec![0u8; width * height * channels];
    let written = stream.write_to_buffer(&mut data);
    if written < data.len() {
        return Err(corrupt(
            "the decoder returned fewer pixels than the header promises",
        ));
    }
    Ok(Raster {
        width,
        height,
        channels,
        data,
    })
}
