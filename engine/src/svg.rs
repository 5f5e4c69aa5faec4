//! SVG, drawn by `resvg` (pure Rust) straight at the thumbnail's size: no scripts (resvg runs
//! none), no text (no fonts are loaded: the engine reads no files), no file or network access.
//!
//! An SVG is a program more than a picture, so before it is drawn the document is checked
//! against what could make drawing it expensive, and refused when over a limit:
//! - a declared size over the pixel limit (as for any image);
//! - more than [`MAX_ELEMENTS`] elements, nesting deeper than [`MAX_DEPTH`];
//! - `<use>` references that would instantiate more than [`MAX_INSTANCES`] elements (the "use
//!   bomb": ten levels of ten references each are ten billion), or that refer to themselves;
//! - a DTD with an internal subset (entity expansion, "billion laughs");
//! - references to anything outside the file (`<image href="https://…">`, `<use
//!   href="other.svg#x">`, `@import`): only `#fragments` and `data:` images are drawn;
//! - embedded (`data:`) images over the pixel limit together, or that are SVGs themselves;
//! - filters whose cost at the output size is unbounded (`feMorphology` radius,
//!   `feConvolveMatrix` order, `feTurbulence` octaves), and more isolated layers than the memory
//!   limit allows.
use crate::container::Facts;
use crate::pipeline::Raster;
use crate::{EngineError, ImageFormat, Limits};
use resvg::tiny_skia;
use resvg::usvg::{self, roxmltree};
use std::sync::{Arc, Mutex};

/// Elements in the document.
pub const MAX_ELEMENTS: u64 = 200_000;
/// Nesting depth of elements.
pub const MAX_DEPTH: usize = 256;
/// Elements once every `<use>` is expanded (librsvg's limit is of the same order).
pub const MAX_INSTANCES: u64 = 500_000;
/// Pixel operations the costly filter primitives may do at the output size.
const MAX_FILTER_WORK: f64 = 4e9;

fn refused(message: impl Into<String>) -> EngineError {
    EngineError::Refused {
        format: ImageFormat::Svg.name(),
        message: message.into(),
    }
}

fn corrupt(err: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt {
        format: ImageFormat::Svg.name(),
        message: err.to_string(),
    }
}

fn text(bytes: &[u8]) -> Result<&str, EngineError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| corrupt(format!("not UTF-8 text: {e}")))
}

/// Parse the XML, refusing internal DTD subsets (the only place entities are declared).
fn parse(text: &str) -> Result<roxmltree::Document<'_>, EngineError> {
    if let Some(start) = text.find("<!DOCTYPE") {
        let doctype = &text[start..];
        let end = doctype.find('>').unwrap_or(doctype.len());
        if doctype[..end].contains('[') {
            return Err(refused("a DTD with entity declarations is not allowed"));
        }
    }
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        // Elements, text and comments: a bound on the parser's memory before our own count.
        nodes_limit: u32::try_from(MAX_ELEMENTS * 4).unwrap_or(u32::MAX),
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::NodesLimitReached => refused(format!("more than {MAX_ELEMENTS} elements")),
        other => corrupt(other),
    })
}

/// The fragment an internal reference (`#id`) names; `Err` for anything that would be loaded
/// from elsewhere.
fn reference<'a>(value: &'a str, element: &str) -> Result<Option<&'a str>, EngineError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if let Some(id) = value.strip_prefix('#') {
        return Ok(Some(id));
    }
    if value.len() >= 5 && value[..5].eq_ignore_ascii_case("data:") && element != "use" {
        return Ok(None);
    }
    let shown: String = value.chars().take(80).collect();
    Err(refused(format!(
        "<{element}> refers to '{shown}' outside the file; only #fragments and data: images are drawn"
    )))
}

/// `url(…)` targets in a presentation attribute or style must be fragments too.
fn check_urls(value: &str, element: &str) -> Result<(), EngineError> {
    let mut rest = value;
    while let Some(at) = rest.find("url(") {
        let after = &rest[at + 4..];
        let end = after.find(')').unwrap_or(after.len());
        let target = after[..end].trim().trim_matches(|c| c == '"' || c == '\'');
        reference(target, element)?;
        rest = &after[end..];
    }
    if value.contains("@import") {
        return Err(refused(format!("<{element}> imports a style sheet")));
    }
    Ok(())
}

/// Element count, depth, external references and `<use>` expansion.
fn check(doc: &roxmltree::Document<'_>) -> Result<(), EngineError> {
    const XLINK: &str = "http://www.w3.org/1999/xlink";
    let mut elements = 0u64;
    let mut ids = std::collections::HashMap::new();
    // Depth of each node, indexed by node id (document order: a parent comes before its children).
    let mut depth = vec![0usize; doc.descendants().count()];
    for node in doc.descendants() {
        let id = node.id().get_usize();
        if let Some(parent) = node.parent() {
            depth[id] = depth[parent.id().get_usize()] + 1;
        }
        if !node.is_element() {
            continue;
        }
        elements += 1;
        if elements > MAX_ELEMENTS {
            return Err(refused(format!("more than {MAX_ELEMENTS} elements")));
        }
        if depth[id] > MAX_DEPTH {
            return Err(refused(format!("elements nested more than {MAX_DEPTH} deep")));
        }
        let name = node.tag_name().name();
        if let Some(v) = node.attribute("id") {
            ids.insert(v, node.id());
        }
        for attr in node.attributes() {
            let local = attr.name();
            let is_href = local == "href" && matches!(attr.namespace(), None | Some(XLINK));
            if is_href && name != "a" {
                reference(attr.value(), name)?;
            } else if attr.value().contains("url(") || attr.value().contains("@import") {
                check_urls(attr.value(), name)?;
            }
        }
        if name == "style" {
            let css: String = node.descendants().filter_map(|n| n.text()).collect();
            check_urls(&css, name)?;
        }
    }
    // Instances: each element counts once, plus (for <use>) everything its target instantiates.
    // A post-order walk over children and <use> targets with an explicit stack (so that deep
    // chains cannot overflow ours), each node's count memoised; reaching a node that is still
    // being counted means a reference cycle.
    let n = depth.len();
    let mut instances: Vec<Option<u64>> = vec![None; n];
    let mut visiting = vec![false; n];
    let edges = |node| use_edges(doc, &ids, node);
    let root = doc.root();
    visiting[root.id().get_usize()] = true;
    let mut stack = vec![(root, edges(root), 0usize)];
    while let Some((node, next_edges, next)) = stack.last_mut() {
        if let Some(&child) = next_edges.get(*next) {
            *next += 1;
            let j = child.id().get_usize();
            if instances[j].is_some() {
                continue;
            }
            if visiting[j] {
                return Err(refused(
                    "a <use> element refers to itself or to an element that contains it",
                ));
            }
            visiting[j] = true;
            let child_edges = edges(child);
            stack.push((child, child_edges, 0));
            continue;
        }
        let total = next_edges
            .iter()
            .map(|c| instances[c.id().get_usize()].unwrap_or(0))
            .fold(u64::from(node.is_element()), u64::saturating_add);
        if total > MAX_INSTANCES {
            return Err(refused(format!(
                "<use> references instantiate more than {MAX_INSTANCES} elements"
            )));
        }
        let i = node.id().get_usize();
        instances[i] = Some(total);
        visiting[i] = false;
        stack.pop();
    }
    Ok(())
}

/// What a node instantiates: its children and, for `<use>`, its target.
fn use_edges<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
    ids: &std::collections::HashMap<&str, roxmltree::NodeId>,
    node: roxmltree::Node<'a, 'i>,
) -> Vec<roxmltree::Node<'a, 'i>> {
    const XLINK: &str = "http://www.w3.org/1999/xlink";
    let target = (node.tag_name().name() == "use")
        .then(|| node.attribute((XLINK, "href")).or_else(|| node.attribute("href")))
        .flatten()
        .and_then(|href| ids.get(href.trim().strip_prefix('#')?).copied())
        .and_then(|id| doc.get_node(id));
    node.children().chain(target).collect()
}

/// A length in user units (px): a number with an optional absolute unit; `None` for percentages
/// and anything unparsable, which fall back to the viewBox as in usvg.
fn length(value: Option<&str>) -> Option<f64> {
    let v = value?.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "px" => 1.0,
        "pt" => 4.0 / 3.0,
        "pc" => 16.0,
        "mm" => 96.0 / 25.4,
        "cm" => 96.0 / 2.54,
        "in" => 96.0,
        "em" => 12.0,
        "ex" => 6.0,
        _ => return None,
    };
    Some(n * scale)
}

/// The declared size, as usvg computes it: width/height, else the viewBox, else 100x100.
fn declared_size(doc: &roxmltree::Document<'_>) -> Result<(f64, f64), EngineError> {
    let root = doc.root_element();
    let view_box: Option<Vec<f64>> = root.attribute("viewBox").map(|v| {
        v.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect()
    });
    let vb = view_box.filter(|v| v.len() == 4).map(|v| (v[2], v[3]));
    let w = length(root.attribute("width"));
    let h = length(root.attribute("height"));
    let (w, h) = match (w, h, vb) {
        (Some(w), Some(h), _) => (w, h),
        (Some(w), None, Some((vw, vh))) if vw > 0.0 => (w, w * vh / vw),
        (None, Some(h), Some((vw, vh))) if vh > 0.0 => (h * vw / vh, h),
        (None, None, Some(size)) => size,
        (w, h, _) => (w.unwrap_or(100.0), h.unwrap_or(100.0)),
    };
    if !(w.is_finite() && h.is_finite() && w > 0.0 && h > 0.0) {
        return Err(corrupt(
            "the width, height or viewBox is zero, negative or invalid",
        ));
    }
    Ok((w, h))
}

/// Parse and check the document; its declared size in whole pixels (rounded up).
pub(crate) fn read_header(bytes: &[u8]) -> Result<Facts, EngineError> {
    let doc = parse(text(bytes)?)?;
    check(&doc)?;
    let (w, h) = declared_size(&doc)?;
    let clamp = |v: f64| v.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
    let (width, height) = (clamp(w), clamp(h));
    Ok(Facts {
        width,
        height,
        frames: 1,
        has_alpha: true,
        orientation: Some(1),
        max_frame_pixels: u64::from(width) * u64::from(height),
        ..Facts::default()
    })
}

/// Bytes drawing at `out_w` x `out_h` allocates besides the document: the canvas, our copy,
/// and a few layers (checked again against the real layer depth once the tree is built).
pub(crate) fn memory(bytes: usize, out_w: u64, out_h: u64) -> u64 {
    // usvg's tree and roxmltree's nodes are a small multiple of the text.
    bytes as u64 * 16 + out_w * out_h * 4 * 6
}

/// Embedded (`data:`) images: sniffed and probed like uploads (JPEG, PNG, GIF and WebP only;
/// no nested SVG), their pixels counted against the job's limit, since resvg decodes each.
fn image_resolver(
    limits: Limits,
    budget: Arc<Mutex<(u64, Option<EngineError>)>>,
) -> usvg::ImageHrefResolver<'static> {
    usvg::ImageHrefResolver {
        resolve_data: Box::new(move |_mime, data: Arc<Vec<u8>>, _opts| {
            let refuse = |err: EngineError| {
                let mut state = budget.lock().unwrap_or_else(|e| e.into_inner());
                state.1.get_or_insert(err);
            };
            let info = match crate::probe(&data, &limits) {
                Ok(info) => info,
                // Over a limit: the whole SVG is refused. Broken: not drawn, as browsers do.
                Err(e) if e.reason() != "CorruptImage" && e.reason() != "UnsupportedFormat" => {
                    refuse(refused(format!("an embedded image is refused: {e}")));
                    return None;
                }
                Err(_) => return None,
            };
            let kind = match info.format {
                ImageFormat::Jpeg => usvg::ImageKind::JPEG(data),
                ImageFormat::Png => usvg::ImageKind::PNG(data),
                ImageFormat::Gif => usvg::ImageKind::GIF(data),
                ImageFormat::Webp => usvg::ImageKind::WEBP(data),
                _ => return None,
            };
            let total = {
                let mut state = budget.lock().unwrap_or_else(|e| e.into_inner());
                state.0 = state.0.saturating_add(info.pixels());
                state.0
            };
            if total > limits.max_pixels || total.saturating_mul(8) > limits.max_memory_bytes {
                refuse(refused(format!(
                    "embedded images of more than {} pixels together",
                    limits.max_pixels.min(limits.max_memory_bytes / 8)
                )));
                return None;
            }
            Some(kind)
        }),
        resolve_string: Box::new(|_, _| None),
    }
}

/// Deepest nesting of isolated groups (each is a layer the size of its bounding box, at most
/// the canvas, alive while its children draw), and the costly filter primitives' work per
/// output pixel.
fn layers_and_filter_work(group: &usvg::Group, scale: f64) -> (usize, f64) {
    use usvg::filter::Kind;
    let mut work = 0.0;
    for filter in group.filters() {
        for primitive in filter.primitives() {
            work += match primitive.kind() {
                Kind::Morphology(m) => {
                    let rx = f64::from(m.radius_x().get()) * scale;
                    let ry = f64::from(m.radius_y().get()) * scale;
                    (2.0 * rx + 1.0) * (2.0 * ry + 1.0)
                }
                Kind::ConvolveMatrix(c) => f64::from(c.matrix().columns()) * f64::from(c.matrix().rows()),
                Kind::Turbulence(t) => f64::from(t.num_octaves()) * 4.0,
                _ => 4.0,
            };
        }
    }
    let mut deepest = 0;
    let mut visit = |node: &usvg::Node| {
        let (d, w) = match node {
            usvg::Node::Group(g) => layers_and_filter_work(g, scale),
            _ => (0, 0.0),
        };
        deepest = deepest.max(d);
        work += w;
    };
    for child in group.children() {
        visit(child);
    }
    (deepest + usize::from(group.should_isolate()), work)
}

/// Draw the SVG so that the source rectangle `crop` (in declared-size pixels: x, y, w, h) fills
/// an `out_w` x `out_h` canvas. Returns straight (not premultiplied) RGBA.
pub(crate) fn render(
    bytes: &[u8],
    declared: (u32, u32),
    crop: (f64, f64, f64, f64),
    out: (u32, u32),
    limits: &Limits,
) -> Result<Raster, EngineError> {
    let doc = parse(text(bytes)?)?;
    check(&doc)?;
    let budget = Arc::new(Mutex::new((0u64, None)));
    let options = usvg::Options {
        resources_dir: None,
        image_href_resolver: image_resolver(*limits, budget.clone()),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_xmltree(&doc, &options).map_err(corrupt)?;
    if let Some(err) = budget.lock().unwrap_or_else(|e| e.into_inner()).1.take() {
        return Err(err);
    }
    let (out_w, out_h) = out;
    let size = tree.size();
    // Tree units to declared pixels (the declared size was rounded up), then onto the canvas.
    let (ux, uy) = (
        f64::from(declared.0) / f64::from(size.width()),
        f64::from(declared.1) / f64::from(size.height()),
    );
    let (sx, sy) = (f64::from(out_w) / crop.2, f64::from(out_h) / crop.3);
    let scale = (ux * sx).max(uy * sy);
    let (layers, work) = layers_and_filter_work(tree.root(), scale);
    let canvas = u64::from(out_w) * u64::from(out_h);
    if work * canvas as f64 > MAX_FILTER_WORK {
        return Err(refused(format!(
            "its filters would take about {:.0e} pixel operations at {out_w}x{out_h}, the limit is {MAX_FILTER_WORK:.0e}",
            work * canvas as f64
        )));
    }
    let needed = canvas * 4 * (layers as u64 * 2 + 3);
    if needed > limits.max_memory_bytes {
        return Err(EngineError::MemoryLimit {
            needed,
            max: limits.max_memory_bytes,
        });
    }
    let mut pixmap = tiny_skia::Pixmap::new(out_w, out_h)
        .ok_or_else(|| EngineError::Internal(format!("{out_w}x{out_h} canvas")))?;
    let transform = tiny_skia::Transform::from_row(
        (ux * sx) as f32,
        0.0,
        0.0,
        (uy * sy) as f32,
        (-crop.0 * sx) as f32,
        (-crop.1 * sy) as f32,
    );
    resvg::render(&tree, transform, &mut pixmap.as_mut());
    Ok(Raster {
        width: out_w as usize,
        height: out_h as usize,
        channels: 4,
        data: pixmap.take_demultiplied(),
    })
}
