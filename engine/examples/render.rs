//! Render one local file: `render IN OUT [--width N] [--height N] [--fit cover|contain|fill]
//! [--format jpeg|png|webp] [--quality Q] [--upscale]`. OUT `-` writes nothing (for timing).
use std::process::ExitCode;

fn main() -> ExitCode {
    let (options, rest) = match thumbnail_engine::cli::parse_options(std::env::args().skip(1)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("render: {e}");
            return ExitCode::from(2);
        }
    };
    let [input, output] = rest.as_slice() else {
        eprintln!(
            "usage: render IN OUT [--width N] [--height N] [--fit F] [--format F] [--quality Q] [--upscale]"
        );
        return ExitCode::from(2);
    };
    match thumbnail_engine::cli::render_file(input.as_ref(), &options) {
        Ok(t) => {
            if output != "-"
                && let Err(e) = std::fs::write(output, &t.bytes)
            {
                eprintln!("render: {output}: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("render: {} ({})", e, e.reason());
            ExitCode::FAILURE
        }
    }
}
