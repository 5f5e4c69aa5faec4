//! Resource type registration.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// A kind served by the test API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core (`/api/v1`) group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Job`.
    pub kind: String,
    /// Plural resource name used in URLs, e.g. `jobs`.
    pub plural: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether the kind has a `/status` subresource (writes to the main resource then ignore `.status`).
    pub status_subresource: bool,
}

impl ResourceType {
    /// Builds a resource type.
    pub fn new(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        status_subresource: bool,
    ) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced,
            status_subresource,
        }
    }

    /// A resource type for a Rust type implementing [`kube::Resource`] with static type information.
    pub fn of<K: kube::Resource<DynamicType = ()>>(namespaced: bool, status_subresource: bool) -> Self {
        Self::new(
            &K::group(&()),
            &K::version(&()),
            &K::kind(&()),
            &K::plural(&()),
            namespaced,
            status_subresource,
        )
    }

    /// The `ThumbnailJob` custom resource (`thumbnailer.dev/v1alpha1`, namespaced, with status).
    pub fn thumbnail_job() -> Self {
        Self::new(
            "thumbnailer.dev",
            "v1alpha1",
            "ThumbnailJob",
            "thumbnailjobs",
            true,
            true,
        )
    }

    /// The resource types (one per served version) declared by a CustomResourceDefinition.
    pub fn from_crd(crd: &CustomResourceDefinition) -> Vec<Self> {
        serde_json::to_value(crd)
            .map(|v| Self::from_crd_value(&v))
            .unwrap_or_default()
    }

    /// Like [`ResourceType::from_crd`], from the CRD's JSON.
    pub fn from_crd_value(crd: &Value) -> Vec<Self> {
        let spec = &crd["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        let kind = spec["names"]["kind"].as_str().unwrap_or_default();
        let plural = spec["names"]["plural"].as_str().unwrap_or_default();
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        if group.is_empty() || kind.is_empty() || plural.is_empty() {
            return Vec::new();
        }
        spec["versions"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .filter(|v| v["served"].as_bool().unwrap_or(true))
                    .filter_map(|v| {
                        let version = v["name"].as_str()?;
                        let status = v["subresources"]["status"].is_object();
                        Some(Self::new(group, version, kind, plural, namespaced, status))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key (objects are shared between versions of the same group and plural).
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(&self.group, &self.plural)
    }

    /// `plural.group` (or just `plural` for the core group), as used in error messages.
    pub fn qualified(&self) -> String {
        self.key().to_string()
    }

    /// The resource types registered by default.
    pub fn builtins() -> Vec<Self> {
        let t = Self::new;
        vec![
            t("", "v1", "Namespace", "namespaces", false, true),
            t("", "v1", "Pod", "pods", true, true),
            t("", "v1", "ConfigMap", "configmaps", true, false),
            t("", "v1", "Secret", "secrets", true, false),
            t("", "v1", "Service", "services", true, true),
            t("", "v1", "ServiceAccount", "serviceaccounts", true, false),
            t("", "v1", "Event", "events", true, false),
            t("batch", "v1", "Job", "jobs", true, true),
            t("batch", "v1", "CronJob", "cronjobs", true, true),
            t("apps", "v1", "Deployment", "deployments", true, true),
            t("coordination.k8s.io", "v1", "Lease", "leases", true, false),
            t("events.k8s.io", "v1", "Event", "events", true, false),
            t(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
                true,
            ),
            Self::thumbnail_job(),
        ]
    }
}

/// Identifies where objects of a resource are stored: API group and plural name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// API group; empty for core.
    pub group: String,
    /// Plural resource name.
    pub plural: String,
}

impl ResourceKey {
    /// Builds a key.
    pub fn new(group: &str, plural: &str) -> Self {
        Self {
            group: group.to_owned(),
            plural: plural.to_owned(),
        }
    }

    /// The key of a Rust type implementing [`kube::Resource`].
    pub fn of<K: kube::Resource<DynamicType = ()>>() -> Self {
        Self::new(&K::group(&()), &K::plural(&()))
    }
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.plural)
        } else {
            write!(f, "{}.{}", self.plural, self.group)
        }
    }
}
