//! Helpers for command-line front ends: parse `--width --height --fit --format --quality
//! --upscale` flags into [`ThumbnailOptions`] and render a file.
use crate::{EngineError, Limits, Thumbnail, ThumbnailOptions, render};

/// Parse command-line style flags (`--width 100`, `--fit=contain`, `--upscale`) into options,
/// starting from the defaults. Returns the remaining positional arguments.
pub fn parse_options<I, S>(args: I) -> Result<(ThumbnailOptions, Vec<String>), String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut o = ThumbnailOptions::default();
    let mut rest = Vec::new();
    let mut it = args.into_iter().map(Into::into);
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            rest.push(arg);
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (flag.to_owned(), None),
        };
        if name == "upscale" {
            o.upscale = true;
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("--{name} needs a value"))?,
        };
        let num = |v: &str| v.parse::<u32>().map_err(|e| format!("--{name}: {e}"));
        match name.as_str() {
            "width" => o.width = num(&value)?,
            "height" => o.height = num(&value)?,
            "quality" => o.quality = u8::try_from(num(&value)?).map_err(|e| format!("--quality: {e}"))?,
            "fit" => o.fit = value.parse()?,
            "format" => o.format = Some(value.parse()?),
            other => return Err(format!("unknown flag --{other}")),
        }
    }
    o.validate().map_err(|e| e.to_string())?;
    Ok((o, rest))
}

/// Read a local file and render it with the default limits.
pub fn render_file(path: &std::path::Path, options: &ThumbnailOptions) -> Result<Thumbnail, EngineError> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::Internal(format!("{}: {e}", path.display())))?;
    render(&bytes, options, &Limits::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fit, OutputFormat};

    #[test]
    fn parses_flags() {
        let (o, rest) = parse_options([
            "in.jpg",
            "--width",
            "400",
            "--fit=contain",
            "--format",
            "webp",
            "--upscale",
        ])
        .unwrap();
        assert_eq!(
            (o.width, o.height, o.fit, o.format, o.upscale),
            (400, 100, Fit::Contain, Some(OutputFormat::Webp), true)
        );
        assert_eq!(rest, vec!["in.jpg".to_owned()]);
        assert!(parse_options(["--quality", "0"]).is_err());
        assert!(parse_options(["--bogus", "1"]).is_err());
    }
}
