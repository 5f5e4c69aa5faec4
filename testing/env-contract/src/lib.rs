//! The environment variables each command of `thumbnail-api` and `thumbnail-operator` reads,
//! from their clap definitions (the binaries' own parsers, not a list kept by hand).
//!
//! A command reads the variables of its own arguments and of every command above it: clap takes
//! the parent's `env` values too (`thumbnail-api migrate` parses `LOG_LEVEL` and the serve
//! settings even though it only needs `DATABASE_URL`). Hidden settings are included: they are
//! read all the same.
#![forbid(unsafe_code)]

use clap::CommandFactory;
use std::collections::BTreeMap;

/// Where the generated document is committed, relative to the workspace root.
pub const COMMITTED_PATH: &str = "helm-charts/tests/binary-env.json";

/// `"thumbnail-api migrate"` → the variables that command reads (sorted, unique).
pub fn env_by_command() -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for command in [
        thumbnail_api::cli::Cli::command(),
        thumbnail_operator::cli::Cli::command(),
    ] {
        walk(&command, command.get_name().to_owned(), &[], &mut out);
    }
    out
}

fn walk(
    command: &clap::Command,
    path: String,
    inherited: &[String],
    out: &mut BTreeMap<String, Vec<String>>,
) {
    let mut names: Vec<String> = inherited.to_vec();
    names.extend(
        command
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned()),
    );
    names.sort();
    names.dedup();
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        walk(sub, format!("{path} {}", sub.get_name()), &names, out);
    }
    out.insert(path, names);
}

/// The committed document: pretty JSON with a trailing newline.
pub fn document() -> String {
    let doc = serde_json::json!({
        "about": "Environment variables each command reads, generated from the binaries' clap \
                  definitions by testing/env-contract; regenerate with \
                  `UPDATE_GENERATED=1 cargo test -p env-contract`.",
        "commands": env_by_command(),
    });
    let mut text = serde_json::to_string_pretty(&doc).expect("JSON");
    text.push('\n');
    text
}
