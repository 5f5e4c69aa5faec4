//! The schema's rules repeated in Rust, for callers that want to refuse a spec before sending it
//! (the API) or that must not trust that the API server enforced them (the operator, on objects
//! stored before a CRD upgrade).

use std::collections::HashSet;

use crate::types::{ImageFormat, MAX_BACKOFF_LIMIT, MAX_DIMENSION, MAX_OUTPUTS, ThumbnailJobSpec};

/// One broken rule of a [`ThumbnailJobSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// JSON path of the offending field, e.g. `spec.outputs[1].width`.
    pub field: String,
    /// What is wrong, for humans.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_bucket_name(s: &str) -> bool {
    let b = s.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl ThumbnailJobSpec {
    /// Checks every rule of the CRD schema that concerns one object (transition rules, which
    /// compare with the previous version, are left to the API server). Returns all broken rules.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        if let Some(bucket) = &self.source.bucket
            && !is_bucket_name(bucket)
        {
            errors.push(err(
                "spec.source.bucket",
                "must be 3-63 characters of lowercase letters, digits, '.' and '-', starting and ending \
                 with a letter or digit",
            ));
        }
        if self.source.key.is_empty() || self.source.key.len() > 1024 {
            errors.push(err("spec.source.key", "must be 1-1024 bytes long"));
        }
        if self.outputs.is_empty() || self.outputs.len() > MAX_OUTPUTS {
            errors.push(err("spec.outputs", format!("must have 1-{MAX_OUTPUTS} entries")));
        }
        let mut names = HashSet::new();
        for (i, output) in self.outputs.iter().enumerate() {
            let at = |f: &str| format!("spec.outputs[{i}].{f}");
            if !is_dns_label(&output.name) {
                errors.push(err(
                    at("name"),
                    "must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit",
                ));
            }
            if !names.insert(output.name.as_str()) {
                errors.push(err(
                    at("name"),
                    format!("duplicate output name {:?}", output.name),
                ));
            }
            for (field, value) in [("width", output.width), ("height", output.height)] {
                if !(1..=MAX_DIMENSION).contains(&value) {
                    errors.push(err(at(field), format!("must be between 1 and {MAX_DIMENSION}")));
                }
            }
            if !(1..=100).contains(&output.quality) {
                errors.push(err(at("quality"), "must be between 1 and 100"));
            }
            if output.animated
                && output
                    .format
                    .is_some_and(|f| !matches!(f, ImageFormat::Gif | ImageFormat::Webp))
            {
                errors.push(err(
                    at("format"),
                    "animated thumbnails are written as gif or webp",
                ));
            }
        }
        if let Some(ttl) = self.ttl_seconds_after_finished
            && ttl < 0
        {
            errors.push(err("spec.ttlSecondsAfterFinished", "must be 0 or more"));
        }
        if !(0..=MAX_BACKOFF_LIMIT).contains(&self.backoff_limit) {
            errors.push(err(
                "spec.backoffLimit",
                format!("must be between 0 and {MAX_BACKOFF_LIMIT}"),
            ));
        }
        if let Some(deadline) = self.active_deadline_seconds
            && deadline < 1
        {
            errors.push(err("spec.activeDeadlineSeconds", "must be 1 or more"));
        }
        if let Some(owner) = &self.owner
            && owner.len() > 253
        {
            errors.push(err("spec.owner", "must be at most 253 bytes long"));
        }
        if let Some(id) = &self.job_id
            && !is_uuid(id)
        {
            errors.push(err("spec.jobId", "must be a UUID"));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Gravity, OutputSpec};

    #[test]
    fn default_spec_is_valid() {
        assert_eq!(
            ThumbnailJobSpec::for_key("images/original/a.jpg").validate(),
            Ok(())
        );
    }

    #[test]
    fn every_broken_rule_is_reported() {
        let mut spec = ThumbnailJobSpec::for_key("");
        spec.source.bucket = Some("Bad_Bucket".into());
        spec.outputs.push(OutputSpec {
            width: 0,
            height: 5000,
            quality: 0,
            ..OutputSpec::default()
        });
        spec.outputs.push(OutputSpec {
            name: "-x".into(),
            ..OutputSpec::default()
        });
        spec.outputs.push(OutputSpec {
            name: "still-only".into(),
            animated: true,
            format: Some(ImageFormat::Jpeg),
            ..OutputSpec::default()
        });
        spec.outputs.push(OutputSpec {
            name: "animated".into(),
            animated: true,
            format: Some(ImageFormat::Gif),
            gravity: Gravity::Smart,
            ..OutputSpec::default()
        });
        spec.backoff_limit = 11;
        spec.ttl_seconds_after_finished = Some(-1);
        spec.active_deadline_seconds = Some(0);
        spec.job_id = Some("not-a-uuid".into());
        let fields: Vec<String> = spec
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.source.bucket",
                "spec.source.key",
                "spec.outputs[1].name",
                "spec.outputs[1].width",
                "spec.outputs[1].height",
                "spec.outputs[1].quality",
                "spec.outputs[2].name",
                "spec.outputs[3].format",
                "spec.ttlSecondsAfterFinished",
                "spec.backoffLimit",
                "spec.activeDeadlineSeconds",
                "spec.jobId",
            ]
        );
    }

    #[test]
    fn limits_are_inclusive() {
        let mut spec = ThumbnailJobSpec::for_key("k");
        spec.outputs = (0..MAX_OUTPUTS)
            .map(|i| OutputSpec {
                name: format!("o{i}"),
                width: MAX_DIMENSION,
                height: 1,
                quality: 100,
                ..OutputSpec::default()
            })
            .collect();
        spec.backoff_limit = MAX_BACKOFF_LIMIT;
        spec.job_id = Some("0190F3C2-7A1B-7C3D-8E4F-5A6B7C8D9E0F".into());
        spec.source.bucket = Some("my.bucket-1".into());
        assert_eq!(spec.validate(), Ok(()));
        spec.outputs.push(OutputSpec::default());
        assert_eq!(spec.validate().unwrap_err()[0].field, "spec.outputs");
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("a"));
        assert!(is_dns_label("small-2x"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label("A"));
        assert!(!is_dns_label("a-"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
