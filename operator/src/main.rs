//! `thumbnail-operator`: see `thumbnail_operator::cli`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    thumbnail_operator::cli::main()
}
