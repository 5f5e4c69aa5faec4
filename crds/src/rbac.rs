//! The one table of Kubernetes permissions each component needs.
//!
//! The Helm chart's Roles and ClusterRoles are built from this table (`crdgen --rbac`, committed as
//! `helm-charts/files/rbac-table.json`, which `templates/rbac.yaml` reads; the chart test checks the
//! result), and the binaries can check it at start-up with `SelfSubjectAccessReview`s built from
//! [`Permission::checks`].

use serde::Serialize;

/// A process of the system, each with its own ServiceAccount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    /// `thumbnail-operator`: reconciles ThumbnailJobs.
    Operator,
    /// `thumbnail-api`: creates ThumbnailJobs for uploads.
    Api,
    /// Render Jobs (`thumbnail-operator render`): no Kubernetes access at all; their
    /// ServiceAccount has `automountServiceAccountToken: false`.
    Render,
}

impl Component {
    /// Every component.
    pub const ALL: [Component; 3] = [Component::Operator, Component::Api, Component::Render];

    /// The name used in the chart (`<release>-thumbnail-<name>` ServiceAccounts) and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Component::Operator => "operator",
            Component::Api => "api",
            Component::Render => "render",
        }
    }
}

/// Where a permission applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// The namespaces holding the ThumbnailJobs the component works on: for the operator every
    /// namespace (ClusterRole) unless `WATCH_NAMESPACE` is set (Role there); for the API its
    /// `KUBE_NAMESPACE` (Role).
    Workload,
    /// Only the component's own namespace (`POD_NAMESPACE`), e.g. the leader-election Lease.
    OwnNamespace,
}

/// One RBAC rule: some verbs on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    /// API group, `""` for the core group.
    pub api_group: &'static str,
    /// Resource, with `/subresource` where it applies (`thumbnailjobs/status`).
    pub resource: &'static str,
    /// Verbs, as in RBAC rules.
    pub verbs: &'static [&'static str],
    /// Where the rule applies.
    pub scope: Scope,
}

/// One access check: what a `SelfSubjectAccessReview`'s `resourceAttributes` carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessCheck {
    /// API group.
    pub group: &'static str,
    /// Resource without the subresource.
    pub resource: &'static str,
    /// Subresource, `""` when none.
    pub subresource: &'static str,
    /// One verb.
    pub verb: &'static str,
}

impl Permission {
    /// One access check per verb.
    pub fn checks(&self) -> impl Iterator<Item = AccessCheck> + '_ {
        let (resource, subresource) = self.resource.split_once('/').unwrap_or((self.resource, ""));
        self.verbs.iter().map(move |verb| AccessCheck {
            group: self.api_group,
            resource,
            subresource,
            verb,
        })
    }
}

const GROUP: &str = crate::GROUP;

const OPERATOR: &[Permission] = &[
    Permission {
        api_group: GROUP,
        resource: "thumbnailjobs",
        // delete: finished ThumbnailJobs past `ttlSecondsAfterFinished`.
        verbs: &["get", "list", "watch", "patch", "delete"],
        scope: Scope::Workload,
    },
    Permission {
        api_group: GROUP,
        resource: "thumbnailjobs/status",
        verbs: &["patch"],
        scope: Scope::Workload,
    },
    Permission {
        api_group: GROUP,
        resource: "thumbnailjobs/finalizers",
        verbs: &["update"],
        scope: Scope::Workload,
    },
    Permission {
        api_group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: Scope::Workload,
    },
    // Render Jobs run in the operator's own namespace, where their ServiceAccount and the S3
    // credentials Secret are, whichever namespace the ThumbnailJob is in.
    Permission {
        api_group: "batch",
        resource: "jobs",
        verbs: &["get", "list", "watch", "create", "delete"],
        scope: Scope::OwnNamespace,
    },
    // Why a render Job does not start: its pods' waiting reasons (a missing Secret) ...
    Permission {
        api_group: "",
        resource: "pods",
        verbs: &["list"],
        scope: Scope::OwnNamespace,
    },
    // ... and the Job controller's events (FailedCreate: a missing ServiceAccount, a quota).
    Permission {
        api_group: "",
        resource: "events",
        verbs: &["list"],
        scope: Scope::OwnNamespace,
    },
    Permission {
        api_group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update", "patch"],
        scope: Scope::OwnNamespace,
    },
];

const API: &[Permission] = &[
    Permission {
        api_group: GROUP,
        resource: "thumbnailjobs",
        verbs: &["create", "get", "list", "delete"],
        scope: Scope::Workload,
    },
    // The completion webhook's delivery on the job's status (`status.webhook`, its own field
    // manager).
    Permission {
        api_group: GROUP,
        resource: "thumbnailjobs/status",
        verbs: &["patch"],
        scope: Scope::Workload,
    },
];

/// The permissions `component` needs, and nothing more.
pub fn permissions(component: Component) -> &'static [Permission] {
    match component {
        Component::Operator => OPERATOR,
        Component::Api => API,
        Component::Render => &[],
    }
}

/// Which of `checks` the process's own credentials lack, asked of the API server with one
/// `SelfSubjectAccessReview` each (so that a missing RBAC rule is reported at start-up, by name,
/// instead of as a stream of 403s later). `namespace`: where the permissions are needed, `None`
/// for all namespaces. Each missing one is described as `verb resource[/sub].group in namespace`.
pub async fn missing_permissions(
    client: &kube::Client,
    checks: impl IntoIterator<Item = AccessCheck>,
    namespace: Option<&str>,
) -> Result<Vec<String>, kube::Error> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let reviews: kube::Api<SelfSubjectAccessReview> = kube::Api::all(client.clone());
    let mut missing = Vec::new();
    for check in checks {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(check.group.to_owned()),
                    resource: Some(check.resource.to_owned()),
                    subresource: (!check.subresource.is_empty()).then(|| check.subresource.to_owned()),
                    verb: Some(check.verb.to_owned()),
                    namespace: namespace.map(str::to_owned),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answer = reviews.create(&kube::api::PostParams::default(), &review).await?;
        if !answer.status.is_some_and(|s| s.allowed) {
            missing.push(check.describe(namespace));
        }
    }
    Ok(missing)
}

/// [`missing_permissions`] for every rule of `component`'s table: `workload` is where its
/// ThumbnailJobs live (`None`: all namespaces), `own` its own namespace (`None`: skip the rules
/// scoped there, e.g. the Lease without leader election).
pub async fn missing_for(
    client: &kube::Client,
    component: Component,
    workload: Option<&str>,
    own: Option<&str>,
) -> Result<Vec<String>, kube::Error> {
    let mut missing = Vec::new();
    for permission in permissions(component) {
        let namespace = match permission.scope {
            Scope::Workload => workload,
            Scope::OwnNamespace => match own {
                Some(ns) => Some(ns),
                None => continue,
            },
        };
        missing.extend(missing_permissions(client, permission.checks(), namespace).await?);
    }
    Ok(missing)
}

impl AccessCheck {
    /// `verb resource[/sub].group in namespace` (core group: no suffix).
    pub fn describe(&self, namespace: Option<&str>) -> String {
        let mut what = self.resource.to_owned();
        if !self.subresource.is_empty() {
            what = format!("{what}/{}", self.subresource);
        }
        if !self.group.is_empty() {
            what = format!("{what}.{}", self.group);
        }
        let place = namespace.map_or_else(|| "all namespaces".to_owned(), |ns| format!("namespace {ns}"));
        format!("{} {what} in {place}", self.verb)
    }
}

/// The whole table as JSON: `{"operator": [...], "api": [...], "render": []}`, each rule as
/// `{"apiGroup", "resource", "verbs", "scope"}` (what `crdgen --rbac` prints).
pub fn table_json() -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = Component::ALL
        .iter()
        .map(|c| {
            let rules = serde_json::to_value(permissions(*c)).expect("permissions serialize");
            (c.name().to_owned(), rules)
        })
        .collect();
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_needs_nothing() {
        assert!(permissions(Component::Render).is_empty());
    }

    #[test]
    fn checks_split_subresources() {
        let status = permissions(Component::Operator)
            .iter()
            .find(|p| p.resource == "thumbnailjobs/status")
            .unwrap();
        let checks: Vec<AccessCheck> = status.checks().collect();
        assert_eq!(
            checks,
            [AccessCheck {
                group: "thumbnailer.dev",
                resource: "thumbnailjobs",
                subresource: "status",
                verb: "patch"
            }]
        );
        assert_eq!(permissions(Component::Api)[0].checks().count(), 4);
    }

    #[test]
    fn json_shape() {
        let v = table_json();
        assert_eq!(v["render"], serde_json::json!([]));
        assert_eq!(v["api"][0]["apiGroup"], "thumbnailer.dev");
        assert_eq!(v["api"][0]["scope"], "workload");
        let lease = v["operator"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "leases")
            .unwrap();
        assert_eq!(lease["scope"], "ownNamespace");
        assert_eq!(
            lease["verbs"],
            serde_json::json!(["get", "create", "update", "patch"])
        );
    }

    #[test]
    fn no_wildcards_and_no_duplicate_rules() {
        for c in Component::ALL {
            let mut seen = std::collections::HashSet::new();
            for p in permissions(c) {
                assert!(
                    seen.insert((p.api_group, p.resource)),
                    "{c:?} lists {} twice",
                    p.resource
                );
                assert!(!p.verbs.contains(&"*") && p.resource != "*");
            }
        }
    }
}
