//! The newer formats through the HTTP API, end to end: each new input accepted and rendered to
//! its default output, `format=avif` and `format=auto` (from the upload's `Accept` header), and
//! animated thumbnails kept animated or refused over the frame cap.
mod common;

use common::{detail, spawn_app, spawn_app_with};
use image::AnimationDecoder;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

/// A fixture of the engine's tests (made by the tools people make these files with).
fn engine_fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../engine/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn form(bytes: Vec<u8>, file_name: &str, fields: &[(&str, &str)]) -> Form {
    fields.iter().fold(
        Form::new().part("image", Part::bytes(bytes).file_name(file_name.to_owned())),
        |form, (name, value)| form.text(name.to_string(), value.to_string()),
    )
}

/// Upload, wait for SUCCESS, and return the job and its thumbnail's bytes.
async fn thumbnail_of(app: &common::TestApp, form: Form, accept: Option<&str>) -> (Value, Vec<u8>) {
    let mut request = app.client.post(app.url("/api/v1/thumbnails/")).multipart(form);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let id = app.accepted(request.send().await.unwrap()).await;
    let job = app.wait_finished(&id, DEADLINE).await;
    assert_eq!(job["status"], "SUCCESS", "{job}");
    let url = app.thumbnail_url(&id).await;
    let response = app
        .client
        .get(url.replace("localhost", "127.0.0.1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    (job, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn every_new_input_format_becomes_a_thumbnail_in_its_default_output() {
    let app = spawn_app().await;
    // (fixture, detected format, default output's content type and image format, size)
    let cases = [
        ("phone.heic", "heic", "image/jpeg", image::ImageFormat::Jpeg),
        ("quad_10bit.heic", "heic", "image/jpeg", image::ImageFormat::Jpeg),
        ("quad_8bit.avif", "avif", "image/avif", image::ImageFormat::Avif),
        ("quad.jxl", "jxl", "image/jpeg", image::ImageFormat::Jpeg),
        ("quad_tiled.tif", "tiff", "image/png", image::ImageFormat::Png),
        ("quad_cmyk.tif", "tiff", "image/png", image::ImageFormat::Png),
        ("quad.bmp", "bmp", "image/png", image::ImageFormat::Png),
        ("quad.ico", "ico", "image/png", image::ImageFormat::Png),
        ("shapes.svg", "svg", "image/png", image::ImageFormat::Png),
    ];
    for (name, detected, content_type, expected) in cases {
        let fields = [("width", "64"), ("height", "64"), ("fit", "contain")];
        let (job, bytes) = thumbnail_of(&app, form(engine_fixture(name), name, &fields), None).await;
        assert_eq!(job["source"]["format"], detected, "{name}: {job}");
        let output = &job["outputs"][0];
        assert_eq!(output["content_type"], content_type, "{name}: {job}");
        assert_eq!(output["bytes"], bytes.len() as u64, "{name}");
        assert!(
            output["thumbhash"].is_string(),
            "{name}: placeholders for every format: {job}"
        );
        // AVIF is not decoded here (the image crate reads no AVIF): its signature is checked.
        if expected == image::ImageFormat::Avif {
            assert_eq!(&bytes[4..12], b"ftypavif", "{name}");
        } else {
            let decoded = image::load_from_memory_with_format(&bytes, expected)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                (decoded.width(), decoded.height()),
                (
                    output["width"].as_u64().unwrap() as u32,
                    output["height"].as_u64().unwrap() as u32
                )
            );
            // Small fixtures are not enlarged; the phone photo and the SVG (drawn at the box's
            // size) fill the box.
            let long = decoded.width().max(decoded.height());
            assert!(long <= 64, "{name}: contain in 64x64, got {long}");
            if name == "phone.heic" || name == "shapes.svg" {
                assert_eq!(long, 64, "{name}");
            }
        }
    }
    // The phone HEIC is portrait once its irot transform is applied (4032x3024 sensor).
    let (job, _) = thumbnail_of(&app, form(engine_fixture("phone.heic"), "p.heic", &[]), None).await;
    assert_eq!(
        (job["source"]["width"].as_u64(), job["source"]["height"].as_u64()),
        (Some(3024), Some(4032)),
        "{job}"
    );
}

#[tokio::test]
async fn avif_output_and_format_auto_follow_the_accept_header() {
    let app = spawn_app().await;
    let photo = || common::fixture("photo.jpg");
    let (job, bytes) = thumbnail_of(&app, form(photo(), "p.jpg", &[("format", "avif")]), None).await;
    assert_eq!(job["outputs"][0]["content_type"], "image/avif", "{job}");
    assert_eq!(&bytes[4..12], b"ftypavif");
    assert!(job["result"]["key"].as_str().unwrap().ends_with(".avif"), "{job}");
    let cases = [
        (Some("image/avif,image/webp,*/*;q=0.8"), photo(), "image/avif"),
        (Some("image/webp,*/*"), photo(), "image/webp"),
        // AVIF refused by q=0: the next best.
        (Some("image/avif;q=0, image/webp"), photo(), "image/webp"),
        (Some("*/*"), photo(), "image/jpeg"),
        (None, photo(), "image/jpeg"),
        // With alpha and no modern format accepted: PNG keeps the transparency.
        (None, engine_fixture("rgba.png"), "image/png"),
    ];
    for (accept, bytes, expected) in cases {
        let (job, _) = thumbnail_of(&app, form(bytes, "x", &[("format", "auto")]), accept).await;
        assert_eq!(
            job["outputs"][0]["content_type"], expected,
            "Accept {accept:?}: {job}"
        );
        // The stored request says what auto chose.
        assert_eq!(
            job["requested"][0]["format"].as_str(),
            Some(expected.trim_start_matches("image/")),
            "{job}"
        );
    }
}

fn gif_frames(bytes: &[u8]) -> Vec<image::Frame> {
    image::codecs::gif::GifDecoder::new(std::io::Cursor::new(bytes))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap()
}

#[tokio::test]
async fn animated_thumbnails_keep_every_frame_and_the_default_stays_still() {
    let app = spawn_app().await;
    let source = engine_fixture("anim.gif");
    let source_frames = gif_frames(&source);
    assert!(source_frames.len() > 1, "the fixture is animated");
    let fields = [
        ("width", "32"),
        ("height", "32"),
        ("fit", "contain"),
        ("animated", "true"),
        ("format", "gif"),
    ];
    let (job, bytes) = thumbnail_of(&app, form(source.clone(), "a.gif", &fields), None).await;
    assert_eq!(job["outputs"][0]["content_type"], "image/gif", "{job}");
    let frames = gif_frames(&bytes);
    assert_eq!(frames.len(), source_frames.len(), "every frame kept");
    for (ours, theirs) in frames.iter().zip(&source_frames) {
        assert_eq!(ours.delay(), theirs.delay(), "timing kept");
        let (w, h) = ours.buffer().dimensions();
        assert!(w.max(h) == 32, "each frame resized: {w}x{h}");
    }
    // Animated WebP in, animated WebP out.
    let fields = [
        ("width", "32"),
        ("height", "32"),
        ("animated", "true"),
        ("format", "webp"),
    ];
    let (job, bytes) = thumbnail_of(&app, form(engine_fixture("anim.webp"), "a.webp", &fields), None).await;
    assert_eq!(job["outputs"][0]["content_type"], "image/webp", "{job}");
    let decoder = image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
    assert!(decoder.has_animation(), "still animated");
    assert!(decoder.into_frames().collect_frames().unwrap().len() > 1);
    // Without animated=true: one still frame, as before.
    let (_, bytes) = thumbnail_of(&app, form(source, "a.gif", &[("format", "gif")]), None).await;
    assert_eq!(gif_frames(&bytes).len(), 1, "a still first frame by default");
}

#[tokio::test]
async fn an_animation_over_the_frame_cap_is_refused_with_the_reason() {
    let source = engine_fixture("anim.gif");
    let frames = gif_frames(&source).len() as u64;
    let app = spawn_app_with(|config| config.limits.max_image_frames = frames - 1).await;
    let response = app
        .client
        .post(app.url("/api/v1/thumbnails/"))
        .multipart(form(source, "a.gif", &[("animated", "true"), ("format", "gif")]))
        .send()
        .await
        .unwrap();
    let (status, detail) = detail(response).await;
    assert_eq!(status, 422, "{detail}");
    assert!(detail.contains("frames"), "{detail}");
    assert!(
        app.stored_objects().is_empty(),
        "nothing stored: {:?}",
        app.stored_objects()
    );
}
