//! `thumbnail-api`: see `thumbnail_api::cli`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    thumbnail_api::cli::main()
}
