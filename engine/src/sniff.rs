//! Format detection from the bytes alone: never from a file name or a Content-Type.
use crate::{EngineError, OutputFormat};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Input formats the service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Jpeg,
    Png,
    Webp,
    Gif,
    /// HEIF with HEVC (iPhone photos), or another HEIF that is not AVIF.
    Heic,
    Avif,
    /// JPEG XL, bare codestream or ISO BMFF container.
    Jxl,
    Tiff,
    Bmp,
    Ico,
    Svg,
}

impl ImageFormat {
    pub const ALL: [ImageFormat; 11] = [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::Webp,
        ImageFormat::Gif,
        ImageFormat::Heic,
        ImageFormat::Avif,
        ImageFormat::Jxl,
        ImageFormat::Tiff,
        ImageFormat::Bmp,
        ImageFormat::Ico,
        ImageFormat::Svg,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
            ImageFormat::Webp => "webp",
            ImageFormat::Gif => "gif",
            ImageFormat::Heic => "heic",
            ImageFormat::Avif => "avif",
            ImageFormat::Jxl => "jxl",
            ImageFormat::Tiff => "tiff",
            ImageFormat::Bmp => "bmp",
            ImageFormat::Ico => "ico",
            ImageFormat::Svg => "svg",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::Png => "PNG",
            ImageFormat::Webp => "WebP",
            ImageFormat::Gif => "GIF",
            ImageFormat::Heic => "HEIC",
            ImageFormat::Avif => "AVIF",
            ImageFormat::Jxl => "JPEG XL",
            ImageFormat::Tiff => "TIFF",
            ImageFormat::Bmp => "BMP",
            ImageFormat::Ico => "ICO",
            ImageFormat::Svg => "SVG",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Tiff => "tif",
            other => other.as_str(),
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
            ImageFormat::Webp => "image/webp",
            ImageFormat::Gif => "image/gif",
            ImageFormat::Heic => "image/heic",
            ImageFormat::Avif => "image/avif",
            ImageFormat::Jxl => "image/jxl",
            ImageFormat::Tiff => "image/tiff",
            ImageFormat::Bmp => "image/bmp",
            ImageFormat::Ico => "image/x-icon",
            ImageFormat::Svg => "image/svg+xml",
        }
    }
    /// The format a thumbnail of this input is written in when the caller does not choose:
    /// the same format where the engine writes it; PNG for GIF (lossless, keeps transparency)
    /// and for the formats that are mostly graphics, scans or icons (TIFF, BMP, ICO, SVG);
    /// JPEG for the photographic formats the engine does not write (HEIC, JPEG XL).
    pub fn default_output(self) -> OutputFormat {
        match self {
            ImageFormat::Jpeg | ImageFormat::Heic | ImageFormat::Jxl => OutputFormat::Jpeg,
            ImageFormat::Webp => OutputFormat::Webp,
            ImageFormat::Avif => OutputFormat::Avif,
            ImageFormat::Png
            | ImageFormat::Gif
            | ImageFormat::Tiff
            | ImageFormat::Bmp
            | ImageFormat::Ico
            | ImageFormat::Svg => OutputFormat::Png,
        }
    }
}

impl std::str::FromStr for ImageFormat {
    type Err = String;
    /// The lowercase name or a usual extension (`jpeg`/`jpg`, `tiff`/`tif`, `heic`/`heif`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let alias = match s.as_str() {
            "jpg" => "jpeg",
            "tif" => "tiff",
            "heif" => "heic",
            other => other,
        };
        ImageFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == alias)
            .ok_or_else(|| format!("'{s}' is not an input format"))
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the header says, read without decoding pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeInfo {
    pub format: ImageFormat,
    /// Stored width and height (before EXIF orientation).
    pub width: u32,
    pub height: u32,
    /// Number of frames where the header says (animated GIF/WebP, APNG), else 1.
    pub frames: u64,
    /// EXIF orientation (1–8; 1 when absent). Outputs are always rotated upright. (HEIF's
    /// irot/imir transforms are applied by its decoder: its size is the transformed one and
    /// this is 1.)
    #[serde(default = "upright")]
    pub orientation: u8,
    /// Whether the header says the image may have transparency (an alpha channel, a
    /// transparent palette entry or colour key; always for SVG).
    #[serde(default)]
    pub has_alpha: bool,
}

fn upright() -> u8 {
    1
}

impl ProbeInfo {
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Width and height as displayed, after the EXIF orientation is applied.
    pub fn display_size(&self) -> (u32, u32) {
        if self.orientation >= 5 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// Identify the format from the magic bytes. Anything else is refused with what it looks like.
pub fn sniff(bytes: &[u8]) -> Result<ImageFormat, EngineError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(ImageFormat::Jpeg);
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(ImageFormat::Png);
    }
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        return Ok(ImageFormat::Gif);
    }
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Ok(ImageFormat::Webp);
    }
    if let Some(format) = heif_brand(bytes) {
        return Ok(format);
    }
    if bytes.starts_with(&[0xFF, 0x0A]) || bytes.starts_with(b"\0\0\0\x0cJXL \r\n\x87\n") {
        return Ok(ImageFormat::Jxl);
    }
    if [b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"]
        .iter()
        .any(|m| bytes.starts_with(*m))
    {
        return Ok(ImageFormat::Tiff);
    }
    if is_bmp(bytes) {
        return Ok(ImageFormat::Bmp);
    }
    if is_ico(bytes) {
        return Ok(ImageFormat::Ico);
    }
    if is_svg(bytes) {
        return Ok(ImageFormat::Svg);
    }
    Err(EngineError::UnsupportedFormat {
        detected: describe_unknown(bytes),
    })
}

/// HEIF or AVIF from the `ftyp` box's brands: AVIF when the major brand is `avif`/`avis` or,
/// for a generic HEIF major brand (`mif1`, `msf1`), when `avif` is among the compatible ones.
fn heif_brand(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.get(4..8) != Some(b"ftyp") {
        return None;
    }
    let size = u32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let ftyp = bytes.get(8..size.clamp(16, 4096).min(bytes.len()))?;
    let major = ftyp.get(0..4)?;
    // Compatible brands follow the major brand and its minor version.
    let compatible: Vec<&[u8]> = ftyp.get(8..).unwrap_or(&[]).chunks_exact(4).collect();
    let heic = |b: &[u8]| {
        [b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"]
            .iter()
            .any(|h| &h[..] == b)
    };
    let avif = |b: &[u8]| b == b"avif" || b == b"avis";
    if avif(major) {
        return Some(ImageFormat::Avif);
    }
    if heic(major) {
        return Some(ImageFormat::Heic);
    }
    if compatible.iter().any(|b| avif(b)) {
        return Some(ImageFormat::Avif);
    }
    let generic = |b: &[u8]| b == b"mif1" || b == b"msf1";
    (generic(major) || compatible.iter().any(|b| heic(b) || generic(b))).then_some(ImageFormat::Heic)
}

/// `BM` and a known DIB header size: `BM` alone starts too many other files.
fn is_bmp(bytes: &[u8]) -> bool {
    bytes.starts_with(b"BM")
        && bytes
            .get(14..18)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .is_some_and(|dib| [12, 40, 52, 56, 64, 108, 124].contains(&dib))
}

/// An icon directory: reserved 0, type 1, at least one entry whose reserved byte is 0 and whose
/// data lies after the directory.
fn is_ico(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0, 0, 1, 0]) || bytes.len() < 22 {
        return false;
    }
    let count = u32::from(u16::from_le_bytes([bytes[4], bytes[5]]));
    let offset = u32::from_le_bytes([bytes[18], bytes[19], bytes[20], bytes[21]]);
    count > 0 && bytes[9] == 0 && offset >= 6 + 16 * count
}

/// An XML document whose root element is `svg` (also with a namespace prefix), after an
/// optional byte order mark, XML declaration, comments and doctype.
fn is_svg(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(8192)];
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    // The head may end inside a multi-byte character.
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or(""),
    };
    let mut rest = text.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("<?") {
            let Some(end) = after.find("?>") else { return false };
            rest = after[end + 2..].trim_start();
        } else if let Some(after) = rest.strip_prefix("<!--") {
            let Some(end) = after.find("-->") else {
                return false;
            };
            rest = after[end + 3..].trim_start();
        } else if let Some(after) = rest.strip_prefix("<!") {
            // A doctype, possibly with an internal subset in brackets.
            let end = match (after.find('['), after.find('>')) {
                (Some(open), Some(close)) if open < close => after.find("]>").map(|e| e + 2),
                (_, Some(close)) => Some(close + 1),
                _ => None,
            };
            let Some(end) = end else { return false };
            rest = after[end..].trim_start();
        } else {
            break;
        }
    }
    let Some(tag) = rest.strip_prefix('<') else {
        return false;
    };
    let name: String = tag
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '>' && *c != '/')
        .collect();
    name == "svg" || name.rsplit_once(':').is_some_and(|(_, local)| local == "svg")
}

/// A human-readable name for bytes that are not an accepted image, e.g. `image/tiff` or
/// `application/pdf`; `text/plain` for text; `empty file`; else `unknown (first bytes …)`.
fn describe_unknown(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "empty file".to_owned();
    }
    if let Some(kind) = infer::get(bytes) {
        return kind.mime_type().to_owned();
    }
    let head = &bytes[..bytes.len().min(512)];
    if std::str::from_utf8(head).is_ok() || head.iter().all(|b| b.is_ascii()) {
        return "text/plain".to_owned();
    }
    let hex: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("unknown (first bytes {})", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_accepted_formats_from_magic_bytes() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest").unwrap(), ImageFormat::Jpeg);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest").unwrap(), ImageFormat::Png);
        assert_eq!(sniff(b"GIF89a....").unwrap(), ImageFormat::Gif);
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ").unwrap(), ImageFormat::Webp);
        assert_eq!(sniff(b"II*\0\x08\0\0\0").unwrap(), ImageFormat::Tiff);
        assert_eq!(sniff(b"MM\0*\0\0\0\x08").unwrap(), ImageFormat::Tiff);
        assert_eq!(sniff(b"\xFF\x0A\xFA\x7F").unwrap(), ImageFormat::Jxl);
        assert_eq!(
            sniff(b"\0\0\0\x0cJXL \r\n\x87\n\0\0\0\x14ftypjxl ").unwrap(),
            ImageFormat::Jxl
        );
        let mut bmp = b"BM\0\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0".to_vec();
        assert_eq!(sniff(&bmp).unwrap(), ImageFormat::Bmp);
        bmp[14] = 0x99; // not a DIB header size
        assert!(sniff(&bmp).is_err());
        let ico = b"\0\0\x01\0\x01\0\x10\x10\0\0\x01\0\x20\0\x68\x04\0\0\x16\0\0\0";
        assert_eq!(sniff(ico).unwrap(), ImageFormat::Ico);
    }

    fn ftyp(major: &[u8; 4], compatible: &[&[u8; 4]]) -> Vec<u8> {
        let mut b = (16 + 4 * compatible.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(b"ftyp");
        b.extend_from_slice(major);
        b.extend_from_slice(&[0; 4]);
        for c in compatible {
            b.extend_from_slice(*c);
        }
        b
    }

    #[test]
    fn tells_heic_from_avif_by_brand() {
        assert_eq!(
            sniff(&ftyp(b"heic", &[b"mif1", b"heic"])).unwrap(),
            ImageFormat::Heic
        );
        assert_eq!(
            sniff(&ftyp(b"mif1", &[b"mif1", b"heic"])).unwrap(),
            ImageFormat::Heic
        );
        assert_eq!(
            sniff(&ftyp(b"avif", &[b"mif1", b"miaf"])).unwrap(),
            ImageFormat::Avif
        );
        assert_eq!(
            sniff(&ftyp(b"mif1", &[b"avif", b"miaf"])).unwrap(),
            ImageFormat::Avif
        );
        // An MP4 video is ISO BMFF too, but not an image.
        assert!(sniff(&ftyp(b"isom", &[b"isom", b"mp41"])).is_err());
    }

    #[test]
    fn finds_svg_roots_behind_prologues() {
        for doc in [
            "<svg xmlns='http://www.w3.org/2000/svg'/>",
            "\u{feff}<?xml version='1.0'?>\n<!-- made by hand -->\n<svg>",
            "<?xml version='1.0'?><!DOCTYPE svg PUBLIC '-//W3C//DTD SVG 1.1//EN' 'x.dtd'><svg/>",
            "<!DOCTYPE svg [ <!ENTITY a 'b'> ]><svg/>",
            "<svg:svg xmlns:svg='http://www.w3.org/2000/svg'/>",
        ] {
            assert_eq!(sniff(doc.as_bytes()).unwrap(), ImageFormat::Svg, "{doc}");
        }
        for doc in ["<html><svg/></html>", "<?xml version='1.0'?><svgx/>", "svg"] {
            assert!(sniff(doc.as_bytes()).is_err(), "{doc}");
        }
    }

    #[test]
    fn names_what_it_refuses() {
        let pdf = sniff(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n").unwrap_err();
        assert_eq!(
            pdf,
            EngineError::UnsupportedFormat {
                detected: "application/pdf".into()
            }
        );
        let psd = sniff(b"8BPS\0\x01\0\0\0\0\0\0\0\x03").unwrap_err();
        assert_eq!(
            psd,
            EngineError::UnsupportedFormat {
                detected: "image/vnd.adobe.photoshop".into()
            }
        );
        let text = sniff(b"hello, world").unwrap_err();
        assert_eq!(
            text,
            EngineError::UnsupportedFormat {
                detected: "text/plain".into()
            }
        );
        assert!(sniff(b"").unwrap_err().to_string().contains("empty file"));
    }
}
