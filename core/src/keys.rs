//! Object key layout, compatible with the original service:
//! originals at `{prefix}images/original/{job_id}.{ext}`, thumbnails at
//! `{prefix}images/thumbnail/{job_id}.{ext}` (extra named outputs at `{job_id}-{name}.{ext}`).
use crate::model::DEFAULT_OUTPUT;
use uuid::Uuid;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

impl KeyLayout {
    /// `prefix` is `S3_KEY_PREFIX`; a trailing `/` is added when missing.
    pub fn new(prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        KeyLayout { prefix }
    }

    pub fn original(&self, job_id: Uuid, extension: &str) -> String {
        format!("{}images/original/{job_id}.{extension}", self.prefix)
    }

    pub fn thumbnail(&self, job_id: Uuid, output_name: &str, extension: &str) -> String {
        if output_name == DEFAULT_OUTPUT {
            format!("{}images/thumbnail/{job_id}.{extension}", self.prefix)
        } else {
            format!(
                "{}images/thumbnail/{job_id}-{output_name}.{extension}",
                self.prefix
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_original_layout() {
        let id = Uuid::nil();
        assert_eq!(
            KeyLayout::new("").original(id, "jpg"),
            format!("images/original/{id}.jpg")
        );
        assert_eq!(
            KeyLayout::new("tenant/").thumbnail(id, "default", "png"),
            format!("tenant/images/thumbnail/{id}.png")
        );
        assert_eq!(
            KeyLayout::new("/a/b").thumbnail(id, "large", "webp"),
            format!("a/b/images/thumbnail/{id}-large.webp")
        );
    }
}
