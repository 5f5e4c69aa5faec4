#![forbid(unsafe_code)]
//! Prints the ThumbnailJob CustomResourceDefinition as YAML, or with `--rbac` the permission
//! table as JSON. `--write` updates the committed copies in the Helm chart instead.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => print!("{}", thumbnail_crds::crd_yaml()),
        ["--rbac"] => print!("{}", thumbnail_crds::rbac_json()),
        ["--write"] => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            for (path, text) in [
                (thumbnail_crds::CRD_PATH, thumbnail_crds::crd_yaml()),
                (thumbnail_crds::RBAC_TABLE_PATH, thumbnail_crds::rbac_json()),
            ] {
                if let Err(e) = std::fs::write(root.join(path), text) {
                    eprintln!("crdgen: cannot write {path}: {e}");
                    return ExitCode::FAILURE;
                }
                eprintln!("crdgen: wrote {path}");
            }
        }
        _ => {
            eprintln!(
                "usage: crdgen [--rbac | --write]\n  (no argument)  print the CRD YAML\n  --rbac          \
                 print the RBAC table JSON\n  --write         update {} and {}",
                thumbnail_crds::CRD_PATH,
                thumbnail_crds::RBAC_TABLE_PATH
            );
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
