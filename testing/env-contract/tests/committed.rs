//! helm-charts/tests/binary-env.json must be what the binaries' clap definitions say.
use std::path::Path;

#[test]
fn committed_env_names_are_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(env_contract::COMMITTED_PATH);
    let generated = env_contract::document();
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is not what the binaries read: regenerate with `UPDATE_GENERATED=1 cargo test -p env-contract` \
         and commit the result",
        env_contract::COMMITTED_PATH
    );
}

#[test]
fn every_command_is_listed_with_what_it_needs() {
    let commands = env_contract::env_by_command();
    let keys: Vec<&str> = commands.keys().map(String::as_str).collect();
    for command in [
        "thumbnail-api",
        "thumbnail-api migrate",
        "thumbnail-api render",
        "thumbnail-api serve",
        "thumbnail-operator",
        "thumbnail-operator render",
        "thumbnail-operator run",
    ] {
        assert!(keys.contains(&command), "{command} missing from {keys:?}");
    }
    // The names the original service's Helm values use.
    for name in [
        "DATABASE_URL",
        "S3_BUCKET_NAME",
        "S3_KEY_PREFIX",
        "AWS_ACCESS_KEY_ID",
        "PORT",
    ] {
        assert!(commands["thumbnail-api"].iter().any(|n| n == name), "{name}");
        assert!(commands["thumbnail-operator"].iter().any(|n| n == name), "{name}");
    }
    assert!(
        commands["thumbnail-api migrate"]
            .iter()
            .any(|n| n == "DATABASE_URL")
    );
    assert!(
        commands["thumbnail-operator"]
            .iter()
            .any(|n| n == "WATCH_NAMESPACE")
    );
    assert!(!commands["thumbnail-api"].iter().any(|n| n == "WATCH_NAMESPACE"));
}
