//! Where the service is and which key to use: flags, then the environment, then the config file.
use crate::ClientError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_URL: &str = "http://127.0.0.1:8000";
pub const URL_ENV: &str = "THUMBNAIL_URL";
pub const API_KEY_ENV: &str = "THUMBNAIL_API_KEY";

/// The config file: `url = "…"` and `api_key = "…"`, both optional.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub url: Option<String>,
    pub api_key: Option<String>,
}

/// The settings in effect.
#[derive(Debug, PartialEq, Eq)]
pub struct Settings {
    pub url: String,
    pub api_key: Option<String>,
}

/// `thumbnail/config.toml` in the user's config directory (`$XDG_CONFIG_HOME`, else
/// `~/.config`, on Linux).
pub fn default_config_path() -> Option<PathBuf> {
    use etcetera::BaseStrategy;
    etcetera::choose_base_strategy()
        .ok()
        .map(|dirs| dirs.config_dir().join("thumbnail").join("config.toml"))
}

/// Read the config file: a missing default file is no file; a missing named one is an error.
pub fn read_file(path: &Path, named: bool) -> Result<FileSettings, ClientError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => Ok(FileSettings::default()),
        Err(e) => Err(ClientError::Config(format!("{}: {e}", path.display()))),
    }
}

/// Which value wins: the flag, then the environment, then the file. Pure.
pub fn resolve(flag: PartialSettings, env: PartialSettings, file: FileSettings) -> Settings {
    let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    Settings {
        url: non_empty(flag.url)
            .or(non_empty(env.url))
            .or(non_empty(file.url))
            .unwrap_or_else(|| DEFAULT_URL.to_owned()),
        api_key: non_empty(flag.api_key)
            .or(non_empty(env.api_key))
            .or(non_empty(file.api_key)),
    }
}

/// One source's optional values (flags or environment).
#[derive(Debug, Default)]
pub struct PartialSettings {
    pub url: Option<String>,
    pub api_key: Option<String>,
}

/// The settings from the flags, the process's environment and the config file.
pub fn load(
    url: Option<String>,
    api_key: Option<String>,
    config: Option<&Path>,
) -> Result<Settings, ClientError> {
    let file = match config {
        Some(path) => read_file(path, true)?,
        None => match default_config_path() {
            Some(path) => read_file(&path, false)?,
            None => FileSettings::default(),
        },
    };
    let env = PartialSettings {
        url: std::env::var(URL_ENV).ok(),
        api_key: std::env::var(API_KEY_ENV).ok(),
    };
    Ok(resolve(PartialSettings { url, api_key }, env, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(url: &str, key: &str) -> PartialSettings {
        PartialSettings {
            url: Some(url.into()),
            api_key: Some(key.into()),
        }
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file() {
        let file = || FileSettings {
            url: Some("http://file".into()),
            api_key: Some("k-file".into()),
        };
        let all = resolve(some("http://flag", "k-flag"), some("http://env", "k-env"), file());
        assert_eq!(
            (all.url.as_str(), all.api_key.as_deref()),
            ("http://flag", Some("k-flag"))
        );
        let env = resolve(PartialSettings::default(), some("http://env", "k-env"), file());
        assert_eq!(
            (env.url.as_str(), env.api_key.as_deref()),
            ("http://env", Some("k-env"))
        );
        let from_file = resolve(PartialSettings::default(), some(" ", ""), file());
        assert_eq!(
            (from_file.url.as_str(), from_file.api_key.as_deref()),
            ("http://file", Some("k-file"))
        );
        let none = resolve(
            PartialSettings::default(),
            PartialSettings::default(),
            FileSettings::default(),
        );
        assert_eq!((none.url.as_str(), none.api_key), (DEFAULT_URL, None));
    }

    #[test]
    fn the_config_file_is_toml_and_strict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "url = \"http://svc:8000\"\napi_key = \"thn_x\"\n").unwrap();
        let file = read_file(&path, true).unwrap();
        assert_eq!(file.url.as_deref(), Some("http://svc:8000"));
        std::fs::write(&path, "uri = \"typo\"\n").unwrap();
        let err = read_file(&path, true).unwrap_err().to_string();
        assert!(err.contains("uri"), "{err}");
        assert!(read_file(&dir.path().join("missing.toml"), true).is_err());
        assert_eq!(
            read_file(&dir.path().join("missing.toml"), false).unwrap(),
            FileSettings::default()
        );
    }
}
