//! The CRD and RBAC table committed in the Helm chart must be what the Rust code generates.

use std::path::Path;

const HOW: &str = "regenerate with `cargo run -p thumbnail-crds --features crdgen --bin crdgen -- --write` \
                   (or `UPDATE_GENERATED=1 cargo test -p thumbnail-crds`) and commit the result";

fn check(rel: &str, generated: String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{rel} is not what the Rust types generate: {HOW}"
    );
}

#[test]
fn committed_crd_is_up_to_date() {
    check(thumbnail_crds::CRD_PATH, thumbnail_crds::crd_yaml());
}

#[test]
fn committed_rbac_table_is_up_to_date() {
    check(thumbnail_crds::RBAC_TABLE_PATH, thumbnail_crds::rbac_json());
}
