//! What the caller asks for (size, fit, gravity, format, quality, animation) and what the engine
//! may spend (limits).
use crate::{ImageFormat, ProbeInfo};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How the image is fitted into the requested box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Scale to fill the box and centre-crop the overflow (the original service's behaviour).
    #[default]
    Cover,
    /// Scale to fit inside the box, keeping the aspect ratio; output may be smaller on one side.
    Contain,
    /// Stretch to exactly the box, ignoring the aspect ratio.
    Fill,
}

impl Fit {
    pub fn as_str(self) -> &'static str {
        match self {
            Fit::Cover => "cover",
            Fit::Contain => "contain",
            Fit::Fill => "fill",
        }
    }
}

impl fmt::Display for Fit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Fit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cover" => Ok(Fit::Cover),
            "contain" => Ok(Fit::Contain),
            "fill" => Ok(Fit::Fill),
            other => Err(format!("'{other}' is not one of cover, contain, fill")),
        }
    }
}

/// Formats the engine writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Jpeg,
    Png,
    Webp,
    /// AV1 still image (rav1e through `ravif`), 8-bit 4:4:4, alpha kept.
    Avif,
    /// GIF (256 colours per frame): the output of animated thumbnails of GIFs.
    Gif,
}

impl OutputFormat {
    pub const ALL: [OutputFormat; 5] = [
        OutputFormat::Jpeg,
        OutputFormat::Png,
        OutputFormat::Webp,
        OutputFormat::Avif,
        OutputFormat::Gif,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
            OutputFormat::Avif => "avif",
            OutputFormat::Gif => "gif",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
            OutputFormat::Avif => "avif",
            OutputFormat::Gif => "gif",
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Webp => "image/webp",
            OutputFormat::Avif => "image/avif",
            OutputFormat::Gif => "image/gif",
        }
    }
    /// Whether the engine writes animations in this format (`animated=true`).
    pub fn can_animate(self) -> bool {
        matches!(self, OutputFormat::Gif | OutputFormat::Webp)
    }
    /// Whether the format keeps transparency.
    pub fn has_alpha(self) -> bool {
        !matches!(self, OutputFormat::Jpeg)
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Ok(OutputFormat::Jpeg),
            "png" => Ok(OutputFormat::Png),
            "webp" => Ok(OutputFormat::Webp),
            "avif" => Ok(OutputFormat::Avif),
            "gif" => Ok(OutputFormat::Gif),
            other => Err(format!("'{other}' is not one of jpeg, png, webp, avif, gif")),
        }
    }
}

/// Which part of the image `cover` keeps when it crops: a side or corner (in the displayed
/// orientation, after EXIF rotation), the centre, or `smart`: the most interesting part, found
/// by an attention measure on the decoded image (edges, skin tones, saturated colour), the way
/// libvips' `attention` crop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gravity {
    #[default]
    Centre,
    North,
    South,
    East,
    West,
    Northeast,
    Northwest,
    Southeast,
    Southwest,
    Smart,
}

impl Gravity {
    pub const ALL: [Gravity; 10] = [
        Gravity::Centre,
        Gravity::North,
        Gravity::South,
        Gravity::East,
        Gravity::West,
        Gravity::Northeast,
        Gravity::Northwest,
        Gravity::Southeast,
        Gravity::Southwest,
        Gravity::Smart,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Gravity::Centre => "centre",
            Gravity::North => "north",
            Gravity::South => "south",
            Gravity::East => "east",
            Gravity::West => "west",
            Gravity::Northeast => "northeast",
            Gravity::Northwest => "northwest",
            Gravity::Southeast => "southeast",
            Gravity::Southwest => "southwest",
            Gravity::Smart => "smart",
        }
    }

    /// Where the kept window sits along each displayed axis (x, y): `None` for `smart`.
    pub(crate) fn anchors(self) -> Option<(Anchor, Anchor)> {
        use Anchor::{End, Middle, Start};
        Some(match self {
            Gravity::Centre => (Middle, Middle),
            Gravity::North => (Middle, Start),
            Gravity::South => (Middle, End),
            Gravity::East => (End, Middle),
            Gravity::West => (Start, Middle),
            Gravity::Northeast => (End, Start),
            Gravity::Northwest => (Start, Start),
            Gravity::Southeast => (End, End),
            Gravity::Southwest => (Start, End),
            Gravity::Smart => return None,
        })
    }
}

/// Where a cropped window sits along one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    Start,
    Middle,
    End,
}

impl fmt::Display for Gravity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Gravity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.to_ascii_lowercase().replace(['-', '_'], "");
        let wanted = if wanted == "center" {
            "centre".to_owned()
        } else {
            wanted
        };
        Gravity::ALL
            .into_iter()
            .find(|g| g.as_str() == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = Gravity::ALL.iter().map(|g| g.as_str()).collect();
                format!("'{s}' is not one of {}", names.join(", "))
            })
    }
}

/// What a request's `format` says: nothing (the input's format), `auto` (the best format the
/// client accepts, see [`negotiate_format`]), or one format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FormatChoice {
    #[default]
    Input,
    Auto,
    Exact(OutputFormat),
}

impl FromStr for FormatChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(FormatChoice::Auto);
        }
        s.parse::<OutputFormat>()
            .map(FormatChoice::Exact)
            .map_err(|_| format!("'{s}' is not one of jpeg, png, webp, avif, gif, auto"))
    }
}

/// `format=auto`, the way imgproxy picks: AVIF when the client's `Accept` header lists
/// `image/avif`, else WebP when it lists `image/webp`, else JPEG (PNG when the input has
/// transparency). Wildcards (`image/*`, `*/*`) do not count, because every client sends them;
/// a media type with `q=0` is refused. An animated thumbnail (`animated=true` of an animated
/// input) is never AVIF (the engine writes still AVIF only): WebP if accepted, else GIF.
pub fn negotiate_format(accept: Option<&str>, probe: &ProbeInfo, options: &ThumbnailOptions) -> OutputFormat {
    let accepts = |wanted: &str| {
        accept.unwrap_or("").split(',').any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .or_else(|| p.strip_prefix("Q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case(wanted) && !refused
        })
    };
    let animation = options.animated && probe.frames > 1;
    if accepts("image/avif") && !animation {
        OutputFormat::Avif
    } else if accepts("image/webp") {
        OutputFormat::Webp
    } else if animation {
        OutputFormat::Gif
    } else if probe.has_alpha {
        OutputFormat::Png
    } else {
        OutputFormat::Jpeg
    }
}

/// The largest side a thumbnail may have.
pub const MAX_DIMENSION: u32 = 4096;

/// What the caller wants. `Default` is the original service's thumbnail: 100x100 cover
/// (centre), q80, in the input's format, a still image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ThumbnailOptions {
    pub width: u32,
    pub height: u32,
    pub fit: Fit,
    /// `None`: the input's format where it can be written, see [`ThumbnailOptions::output_format`].
    pub format: Option<OutputFormat>,
    pub quality: u8,
    /// Allow the output to be larger than the input. Off by default: a 16x16 icon stays 16x16.
    /// (SVG is drawn at the requested size whatever this says: vectors do not lose detail.)
    #[serde(default)]
    pub upscale: bool,
    /// What `cover` keeps when it crops; ignored by `contain` and `fill`, which never crop.
    #[serde(default)]
    pub gravity: Gravity,
    /// Keep the animation of an animated GIF or WebP (in a GIF or WebP output). Off: the first
    /// frame, as a still image.
    #[serde(default)]
    pub animated: bool,
}

impl Default for ThumbnailOptions {
    fn default() -> Self {
        ThumbnailOptions {
            width: 100,
            height: 100,
            fit: Fit::Cover,
            format: None,
            quality: 80,
            upscale: false,
            gravity: Gravity::Centre,
            animated: false,
        }
    }
}

/// A request option that is out of range; `field` names it for the API's `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct OptionError {
    pub field: &'static str,
    pub message: String,
}

impl ThumbnailOptions {
    pub fn validate(&self) -> Result<(), OptionError> {
        for (field, value) in [("width", self.width), ("height", self.height)] {
            if value == 0 || value > MAX_DIMENSION {
                return Err(OptionError {
                    field,
                    message: format!("must be between 1 and {MAX_DIMENSION}, got {value}"),
                });
            }
        }
        if !(1..=100).contains(&self.quality) {
            return Err(OptionError {
                field: "quality",
                message: format!("must be between 1 and 100, got {}", self.quality),
            });
        }
        if let Some(format) = self.format.filter(|f| self.animated && !f.can_animate()) {
            return Err(OptionError {
                field: "animated",
                message: format!("animations are written as gif or webp, not {format}"),
            });
        }
        Ok(())
    }

    /// The format the thumbnail of a `source` image is written in: the requested one, else
    /// the input's format where the engine writes it (JPEG, PNG, WebP, AVIF; GIF when
    /// `animated`), else PNG for formats that usually carry transparency or are lossless
    /// graphics (GIF, TIFF, BMP, ICO, SVG) and JPEG for the photographic ones (HEIC, JPEG XL).
    /// It depends on the source's format only, so the output's key is known before decoding.
    pub fn output_format(&self, source: ImageFormat) -> OutputFormat {
        if let Some(format) = self.format {
            return format;
        }
        match source {
            ImageFormat::Gif if self.animated => OutputFormat::Gif,
            _ => source.default_output(),
        }
    }

    /// Set one option from its text form (a form field, query parameter or flag), naming the
    /// field in the error. `format` is not set here: see [`FormatChoice`]. Returns false for a
    /// name that is not an option.
    pub fn set(&mut self, field: &str, value: &str) -> Result<bool, OptionError> {
        let value = value.trim();
        let bad = |field: &'static str, message: String| OptionError { field, message };
        match field {
            "width" | "height" => {
                let n = value.parse::<u32>().map_err(|_| {
                    bad(
                        if field == "width" { "width" } else { "height" },
                        format!("must be an integer, got '{value}'"),
                    )
                })?;
                if field == "width" {
                    self.width = n;
                } else {
                    self.height = n;
                }
            }
            "quality" => {
                let q = value
                    .parse::<i64>()
                    .map_err(|_| bad("quality", format!("must be an integer, got '{value}'")))?;
                self.quality = u8::try_from(q)
                    .ok()
                    .filter(|q| (1..=100).contains(q))
                    .ok_or_else(|| bad("quality", format!("must be between 1 and 100, got {q}")))?;
            }
            "fit" => self.fit = value.parse().map_err(|e| bad("fit", e))?,
            "gravity" => self.gravity = value.parse().map_err(|e| bad("gravity", e))?,
            "upscale" => self.upscale = parse_bool(value).map_err(|e| bad("upscale", e))?,
            "animated" => self.animated = parse_bool(value).map_err(|e| bad("animated", e))?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Resolve a request's [`FormatChoice`] for a probed input; `accept` is the request's
    /// `Accept` header (only `auto` reads it).
    pub fn choose_format(&mut self, choice: FormatChoice, accept: Option<&str>, probe: &ProbeInfo) {
        self.format = match choice {
            FormatChoice::Input => None,
            FormatChoice::Exact(format) => Some(format),
            FormatChoice::Auto => Some(negotiate_format(accept, probe, self)),
        };
    }
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`), any case.
fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("must be true or false, got '{value}'")),
    }
}

/// What one job may spend. Checked from the header, before decoding allocates anything large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_input_bytes: u64,
    pub max_pixels: u64,
    pub max_frames: u64,
    /// Upper bound on the memory one decode may allocate for pixel buffers.
    pub max_memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 25 * 1024 * 1024,
            max_pixels: 100_000_000,
            max_frames: 1000,
            max_memory_bytes: 1024 * 1024 * 1024,
        }
    }
}
