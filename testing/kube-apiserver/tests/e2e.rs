//! The server's behaviour, exercised through the real `kube` client and runtime.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, PropagationPolicy, WatchEvent,
    WatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KEvent, EventType as KEventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, CustomResource, CustomResourceExt, Resource, ResourceExt};
use kube_test_apiserver::{ResourceKey, ResourceType, TestApiServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "test.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    pub size: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// A kind registered only by POSTing its CRD.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(group = "other.dev", version = "v1", kind = "Gadget")]
pub struct GadgetSpec {
    pub n: i32,
}

const TIMEOUT: Duration = Duration::from_secs(15);

async fn server() -> TestApiServer {
    TestApiServer::builder()
        .crd(&Widget::crd())
        .bookmark_interval(Duration::from_millis(50))
        .start()
        .await
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Next item of a stream, failing the test after the deadline.
async fn next<S: futures::Stream + Unpin>(s: &mut S) -> S::Item {
    tokio::time::timeout(TIMEOUT, s.next())
        .await
        .expect("stream item in time")
        .expect("stream not ended")
}

/// Next non-BOOKMARK watch event.
async fn next_change<K, S>(s: &mut S) -> WatchEvent<K>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    loop {
        match next(s).await.unwrap() {
            WatchEvent::Bookmark(_) => continue,
            e => return e,
        }
    }
}

fn widget(name: &str, size: i32) -> Widget {
    let mut w = Widget::new(name, WidgetSpec { size, color: None });
    w.metadata.namespace = Some("default".into());
    w
}

fn api_code(e: &kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn rv_num(o: &impl Resource) -> u64 {
    o.resource_version()
        .expect("resourceVersion")
        .parse()
        .expect("numeric resourceVersion")
}

#[tokio::test]
async fn crud_roundtrip() {
    let server = server().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");

    let created = api.create(&PostParams::default(), &widget("a", 1)).await.unwrap();
    assert!(created.uid().is_some());
    assert!(created.meta().creation_timestamp.is_some());
    assert_eq!(created.meta().generation, Some(1));
    assert_eq!(created.spec.size, 1);

    let got = api.get("a").await.unwrap();
    assert_eq!(got.uid(), created.uid());
    assert_eq!(got.resource_version(), created.resource_version());

    let err = api
        .create(&PostParams::default(), &widget("a", 2))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (409, "AlreadyExists".into()));

    let mut gen_named = widget("", 3);
    gen_named.metadata.name = None;
    gen_named.metadata.generate_name = Some("gen-".into());
    let g = api.create(&PostParams::default(), &gen_named).await.unwrap();
    assert!(
        g.name_any().starts_with("gen-") && g.name_any().len() == "gen-".len() + 5,
        "{}",
        g.name_any()
    );

    let mut upd = got.clone();
    upd.spec.size = 10;
    let replaced = api.replace("a", &PostParams::default(), &upd).await.unwrap();
    assert_eq!(replaced.spec.size, 10);
    assert!(rv_num(&replaced) > rv_num(&created));
    assert_eq!(replaced.meta().generation, Some(2));

    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 2);
    assert_eq!(
        list.metadata.resource_version,
        Some(server.store().resource_version().to_string())
    );

    let meta = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(meta.items.len(), 2);
    assert!(meta.items.iter().any(|m| m.name_any() == "a"));

    api.delete("a", &DeleteParams::default()).await.unwrap();
    let err = api.get("a").await.unwrap_err();
    assert_eq!(api_code(&err), (404, "NotFound".into()));
    assert!(api.get_opt("a").await.unwrap().is_none());

    // Cluster-scoped and all-namespaces access.
    let all: Api<Widget> = Api::all(server.client());
    assert_eq!(all.list(&ListParams::default()).await.unwrap().items.len(), 1);
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(server.client());
    assert!(ns.get("default").await.is_ok());
    server.shutdown().await;
}

#[tokio::test]
async fn merge_json_strategic_and_apply_patches() {
    let server = server().await;
    let client = server.client();
    let api: Api<Widget> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &widget("p", 1)).await.unwrap();

    let merged = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"color": "red"}, "metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.spec.color.as_deref(), Some("red"));
    assert_eq!(merged.labels().get("x").map(String::as_str), Some("1"));
    assert_eq!(merged.spec.size, 1);

    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/size", "value": 7},
        {"op": "remove", "path": "/spec/color"}
    ]))
    .unwrap();
    let patched = api
        .patch("p", &PatchParams::default(), &Patch::Json::<()>(jp))
        .await
        .unwrap();
    assert_eq!(patched.spec.size, 7);
    assert_eq!(patched.spec.color, None);

    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/size", "value": 99}])).unwrap();
    let err = api
        .patch("p", &PatchParams::default(), &Patch::Json::<()>(failing))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 422);

    // Strategic merge: lists with merge keys are merged by key.
    let cms: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "pod"},
        "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &pod).await.unwrap();
    let pod = cms
        .patch(
            "pod",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"containers": [{"name": "b", "image": "z"}]}})),
        )
        .await
        .unwrap();
    let images: Vec<_> = pod
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.image.unwrap())
        .collect();
    assert_eq!(images, vec!["x", "z"]);

    // Server-side apply creates when missing, then updates; omitted fields it owned are removed.
    let pp = PatchParams::apply("mgr");
    let applied = api
        .patch(
            "q",
            &pp,
            &Patch::Apply(json!({"apiVersion": "test.dev/v1", "kind": "Widget", "metadata": {"name": "q", "labels": {"a": "1"}},
                "spec": {"size": 3, "color": "blue"}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.spec.color.as_deref(), Some("blue"));
    assert!(
        applied
            .meta()
            .managed_fields
            .as_ref()
            .is_some_and(|m| m[0].manager.as_deref() == Some("mgr"))
    );
    let reapplied = api
        .patch(
            "q",
            &pp,
            &Patch::Apply(
                json!({"apiVersion": "test.dev/v1", "kind": "Widget", "metadata": {"name": "q"},
                "spec": {"size": 4}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(reapplied.spec.size, 4);
    assert_eq!(
        reapplied.spec.color, None,
        "field dropped from the applied config is removed"
    );
    assert!(reapplied.labels().is_empty());

    // Re-applying the same configuration is a no-op (no new resourceVersion).
    let again = api
        .patch(
            "q",
            &pp,
            &Patch::Apply(
                json!({"apiVersion": "test.dev/v1", "kind": "Widget", "metadata": {"name": "q"},
                "spec": {"size": 4}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(again.resource_version(), reapplied.resource_version());

    // Apply without a field manager is rejected.
    let req = http::Request::patch("/apis/test.dev/v1/namespaces/default/widgets/q")
        .header("content-type", "application/apply-patch+yaml")
        .body(br#"{"spec":{"size":1}}"#.to_vec())
        .unwrap();
    let err = client.request::<Widget>(req).await.unwrap_err();
    assert_eq!(api_code(&err).0, 400);
    server.shutdown().await;
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict() {
    let server = server().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    let v1 = api.create(&PostParams::default(), &widget("s", 1)).await.unwrap();
    let mut first = v1.clone();
    first.spec.size = 2;
    api.replace("s", &PostParams::default(), &first).await.unwrap();

    let mut stale = v1.clone();
    stale.spec.size = 3;
    let err = api
        .replace("s", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (409, "Conflict".into()));

    let err = api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"resourceVersion": v1.resource_version()}, "spec": {"size": 4}}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (409, "Conflict".into()));
    assert_eq!(api.get("s").await.unwrap().spec.size, 2);

    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: v1.resource_version(),
            uid: None,
        }),
        ..Default::default()
    };
    let err = api.delete("s", &dp).await.unwrap_err();
    assert_eq!(api_code(&err).0, 409);
    server.shutdown().await;
}

#[tokio::test]
async fn apply_conflicts_unless_forced() {
    let server = server().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    let cfg = |size: i32| {
        Patch::Apply(
            json!({"apiVersion": "test.dev/v1", "kind": "Widget", "metadata": {"name": "c"}, "spec": {"size": size}}),
        )
    };
    api.patch("c", &PatchParams::apply("alice"), &cfg(1))
        .await
        .unwrap();

    // Same value: shared ownership, no conflict.
    api.patch("c", &PatchParams::apply("bob"), &cfg(1)).await.unwrap();

    let err = api
        .patch("c", &PatchParams::apply("carol"), &cfg(2))
        .await
        .unwrap_err();
    let (code, reason) = api_code(&err);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    if let kube::Error::Api(s) = &err {
        assert!(
            s.message.contains("alice") && s.message.contains(".spec.size"),
            "{}",
            s.message
        );
    }
    assert_eq!(api.get("c").await.unwrap().spec.size, 1);

    let forced = api
        .patch("c", &PatchParams::apply("carol").force(), &cfg(2))
        .await
        .unwrap();
    assert_eq!(forced.spec.size, 2);
    let managers: Vec<String> = forced
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(
        managers,
        vec!["carol".to_string()],
        "alice and bob lost .spec.size"
    );

    // A manager that lost ownership and now re-applies a different value conflicts with carol.
    let err = api
        .patch("c", &PatchParams::apply("alice"), &cfg(5))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 409);
    server.shutdown().await;
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let server = server().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    let mut w = widget("st", 1);
    w.status = Some(WidgetStatus {
        phase: Some("Ignored".into()),
        observed_generation: None,
    });
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.status, None, "status is dropped on create");

    let st = api
        .patch_status(
            "st",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}, "spec": {"size": 99}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.as_ref().unwrap().phase.as_deref(), Some("Ready"));
    assert_eq!(st.spec.size, 1, "status writes ignore spec");
    assert_eq!(
        st.meta().generation,
        Some(1),
        "status writes do not bump generation"
    );

    let main = api
        .patch(
            "st",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Hacked"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main.status.as_ref().unwrap().phase.as_deref(),
        Some("Ready"),
        "main writes ignore status"
    );
    assert_eq!(
        main.resource_version(),
        st.resource_version(),
        "an ignored change is a no-op"
    );

    let labelled = api
        .patch(
            "st",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"l": "v"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.meta().generation,
        Some(1),
        "metadata changes do not bump generation"
    );
    assert!(rv_num(&labelled) > rv_num(&st));

    let spec = api
        .patch(
            "st",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(spec.meta().generation, Some(2));

    let mut replaced = spec.clone();
    replaced.status = None;
    replaced.spec.size = 3;
    let replaced = api
        .replace("st", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(replaced.status.as_ref().unwrap().phase.as_deref(), Some("Ready"));
    assert_eq!(replaced.meta().generation, Some(3));

    let mut rs = replaced.clone();
    rs.status = Some(WidgetStatus {
        phase: Some("Done".into()),
        observed_generation: Some(3),
    });
    rs.spec.size = 50;
    let rs = api
        .replace_status("st", &PostParams::default(), &rs)
        .await
        .unwrap();
    assert_eq!(rs.status.unwrap().phase.as_deref(), Some("Done"));
    assert_eq!(rs.spec.size, 3);

    // Status apply by one manager and spec apply by another don't interfere.
    let sa = api
        .patch_status(
            "st",
            &PatchParams::apply("status-mgr"),
            &Patch::Apply(
                json!({"apiVersion": "test.dev/v1", "kind": "Widget", "status": {"phase": "Applied"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(sa.status.as_ref().unwrap().phase.as_deref(), Some("Applied"));
    assert_eq!(sa.meta().generation, Some(3));

    // Jobs have a status subresource too; the harness sets status directly, like a kubelet.
    let jobs: Api<Job> = Api::namespaced(server.client(), "default");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    server
        .store()
        .patch_status_as::<Job>("default", "j", json!({"succeeded": 1}))
        .unwrap();
    assert_eq!(jobs.get("j").await.unwrap().status.unwrap().succeeded, Some(1));
    server.shutdown().await;
}

#[tokio::test]
async fn watch_from_resource_version_replays_later_events() {
    let server = server().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    let a = api.create(&PostParams::default(), &widget("a", 1)).await.unwrap();
    let from = a.resource_version().unwrap();
    api.create(&PostParams::default(), &widget("b", 1)).await.unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 2}})),
    )
    .await
    .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();

    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &from)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &widget("z", 1)).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let ev = next_change(&mut stream).await;
        let (t, o) = match ev {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            other => panic!("unexpected {other:?}"),
        };
        seen.push(format!("{t} {}", o.name_any()));
        if o.name_any() == "z" {
            break;
        }
    }
    assert_eq!(seen, vec!["ADDED b", "MODIFIED a", "DELETED b", "ADDED z"]);

    // Without a resourceVersion, a watch starts with synthetic ADDED events for current objects.
    let mut fresh = api
        .watch(&WatchParams::default().timeout(10), "0")
        .await
        .unwrap()
        .boxed();
    let mut names = Vec::new();
    for _ in 0..2 {
        match next_change(&mut fresh).await {
            WatchEvent::Added(o) => names.push(o.name_any()),
            other => panic!("unexpected {other:?}"),
        }
    }
    names.sort();
    assert_eq!(names, vec!["a", "z"]);
    server.shutdown().await;
}

#[tokio::test]
async fn compaction_gives_410_and_watcher_relists() {
    let server = server().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    let a = api.create(&PostParams::default(), &widget("a", 1)).await.unwrap();
    let old_rv = a.resource_version().unwrap();

    let page = api.list(&ListParams::default().limit(1)).await.unwrap();
    api.create(&PostParams::default(), &widget("b", 1)).await.unwrap();
    let page = {
        // need two items for a continue token
        let _ = page;
        api.list(&ListParams::default().limit(1)).await.unwrap()
    };
    let token = page.metadata.continue_.clone().expect("continue token");

    // A running kube_runtime watcher.
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut inits = 0;
    loop {
        match next(&mut events).await.unwrap() {
            watcher::Event::Init => inits += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(inits, 1);

    server.compact();

    // Watch from an old resourceVersion: a 410 ERROR event.
    let mut stream = api.watch(&WatchParams::default(), &old_rv).await.unwrap().boxed();
    match next_change(&mut stream).await {
        WatchEvent::Error(s) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
    // List with an exact old resourceVersion, or an old continue token: HTTP 410.
    let err = api
        .list(
            &ListParams::default()
                .at(&old_rv)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 410);
    let err = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 410);

    // The watcher sees the 410, relists, and carries on with new events.
    api.create(&PostParams::default(), &widget("c", 1)).await.unwrap();
    let mut saw_gone = false;
    let mut relisted = Vec::new();
    loop {
        match next(&mut events).await {
            Err(watcher::Error::WatchError(s)) if s.code == 410 => saw_gone = true,
            Err(e) => panic!("unexpected watcher error {e:?}"),
            Ok(watcher::Event::InitApply(o)) => relisted.push(o.name_any()),
            Ok(watcher::Event::InitDone) => break,
            Ok(_) => {}
        }
    }
    assert!(saw_gone, "watcher got the 410");
    relisted.sort();
    assert_eq!(relisted, vec!["a", "b", "c"]);
    api.create(&PostParams::default(), &widget("d", 1)).await.unwrap();
    loop {
        if let Ok(watcher::Event::Apply(o)) = next(&mut events).await
            && o.name_any() == "d"
        {
            break;
        }
    }
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.verb == "list" && r.resource == "widgets")
        .count();
    assert!(lists >= 3, "the watcher relisted ({lists} lists)");
    server.shutdown().await;
}

#[tokio::test]
async fn bookmarks_only_when_requested() {
    let server = server().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    let a = api.create(&PostParams::default(), &widget("a", 1)).await.unwrap();
    let rv = a.resource_version().unwrap();
    let mut plain = api
        .watch(&WatchParams::default().timeout(20).disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();
    let mut marked = api
        .watch(&WatchParams::default().timeout(20), &rv)
        .await
        .unwrap()
        .boxed();
    let mut bookmarks = 0;
    while bookmarks < 2 {
        match next(&mut marked).await.unwrap() {
            WatchEvent::Bookmark(b) => {
                assert_eq!(b.metadata.resource_version, rv);
                bookmarks += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    api.create(&PostParams::default(), &widget("sentinel", 1))
        .await
        .unwrap();
    match next(&mut plain).await.unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "sentinel"),
        other => panic!("no bookmarks were requested, got {other:?}"),
    }

    // Streaming lists: initial events end with an annotated bookmark.
    let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut names = Vec::new();
    loop {
        match next(&mut events).await.unwrap() {
            watcher::Event::InitApply(o) => names.push(o.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    names.sort();
    assert_eq!(names, vec!["a", "sentinel"]);
    let watch_req = server
        .requests()
        .into_iter()
        .find(|r| r.query.contains("sendInitialEvents=true"));
    assert!(watch_req.is_some_and(|r| r.verb == "watch"));
    server.shutdown().await;
}

#[tokio::test]
async fn finalizers_and_deletion_timestamp() {
    let server = server().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    let mut w = widget("f", 1);
    w.metadata.finalizers = Some(vec!["test.dev/hold".into()]);
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    let mut stream = api
        .watch(
            &WatchParams::default().timeout(10),
            &created.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();

    api.delete("f", &DeleteParams::default()).await.unwrap();
    let deleting = api.get("f").await.unwrap();
    assert!(deleting.meta().deletion_timestamp.is_some());
    assert_eq!(deleting.meta().deletion_grace_period_seconds, Some(0));
    assert_eq!(
        deleting.meta().generation,
        Some(2),
        "setting deletionTimestamp bumps generation"
    );
    match next_change(&mut stream).await {
        WatchEvent::Modified(o) => assert!(o.meta().deletion_timestamp.is_some()),
        other => panic!("unexpected {other:?}"),
    }

    // Deleting again changes nothing; new finalizers are forbidden.
    let again = api
        .delete("f", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(again.resource_version(), deleting.resource_version());
    let err = api
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["test.dev/hold", "x/y"]}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 422);

    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    match next_change(&mut stream).await {
        WatchEvent::Deleted(o) => assert_eq!(o.name_any(), "f"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(api.get_opt("f").await.unwrap().is_none());

    // Without finalizers, deletion is immediate.
    api.create(&PostParams::default(), &widget("g", 1)).await.unwrap();
    api.delete("g", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("g").await.unwrap().is_none());
    server.shutdown().await;
}

fn owned_cm(name: &str, owner: &Widget, finalizer: bool) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: Some(vec![owner.controller_owner_ref(&()).unwrap()]),
            finalizers: finalizer.then(|| vec!["test.dev/keep".into()]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".into(), "v".into())])),
        ..Default::default()
    }
}

#[tokio::test]
async fn owner_reference_garbage_collection() {
    let server = server().await;
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let owner = widgets
        .create(&PostParams::default(), &widget("owner", 1))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &owned_cm("dep1", &owner, false))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &owned_cm("dep2", &owner, true))
        .await
        .unwrap();
    let mut unrelated = owned_cm("other", &owner, false);
    unrelated.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "test.dev/v1".into(),
        kind: "Widget".into(),
        name: "owner".into(),
        uid: "not-the-owner".into(),
        ..Default::default()
    }]);
    cms.create(&PostParams::default(), &unrelated).await.unwrap();

    widgets
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually("dep1 collected", || async {
        cms.get_opt("dep1").await.unwrap().is_none().then_some(())
    })
    .await;
    let dep2 = cms.get("dep2").await.unwrap();
    assert!(
        dep2.metadata.deletion_timestamp.is_some(),
        "dependent with a finalizer is being deleted"
    );
    assert!(cms.get_opt("other").await.unwrap().is_some());

    // Orphan propagation keeps dependents and strips the ownerReference.
    let owner2 = widgets
        .create(&PostParams::default(), &widget("owner2", 1))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &owned_cm("kept", &owner2, false))
        .await
        .unwrap();
    widgets
        .delete(
            "owner2",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Orphan),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let kept = cms.get("kept").await.unwrap();
    assert!(kept.metadata.owner_references.unwrap_or_default().is_empty());

    // Foreground: the owner waits (deletionTimestamp + foregroundDeletion) until its dependents are gone.
    let owner3 = widgets
        .create(&PostParams::default(), &widget("owner3", 1))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &owned_cm("blocker", &owner3, true))
        .await
        .unwrap();
    widgets
        .delete("owner3", &DeleteParams::foreground())
        .await
        .unwrap();
    let waiting = widgets.get("owner3").await.unwrap();
    assert!(waiting.meta().deletion_timestamp.is_some());
    assert!(waiting.finalizers().iter().any(|f| f == "foregroundDeletion"));
    assert!(
        cms.get("blocker")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    cms.patch(
        "blocker",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("owner3 removed after its dependent", || async {
        widgets.get_opt("owner3").await.unwrap().is_none().then_some(())
    })
    .await;

    // Deleting a namespace deletes its contents.
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(server.client());
    let tmp: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "tmp"}})).unwrap();
    nss.create(&PostParams::default(), &tmp).await.unwrap();
    let in_tmp: Api<Widget> = Api::namespaced(server.client(), "tmp");
    let mut w = widget("inside", 1);
    w.metadata.namespace = Some("tmp".into());
    in_tmp.create(&PostParams::default(), &w).await.unwrap();
    nss.delete("tmp", &DeleteParams::default()).await.unwrap();
    eventually("namespace contents deleted", || async {
        in_tmp.get_opt("inside").await.unwrap().is_none().then_some(())
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn label_and_field_selectors() {
    let server = server().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "db"})),
        ("c", json!({})),
    ] {
        let mut w = widget(name, 1);
        w.metadata.labels = serde_json::from_value(labels).unwrap();
        api.create(&PostParams::default(), &w).await.unwrap();
    }
    let names = |sel: &'static str| {
        let api = api.clone();
        async move {
            let mut n: Vec<String> = api
                .list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .iter()
                .map(|w| w.name_any())
                .collect();
            n.sort();
            n
        }
    };
    assert_eq!(names("app=web").await, vec!["a"]);
    assert_eq!(names("app==db").await, vec!["b"]);
    assert_eq!(names("app!=web").await, vec!["b", "c"]);
    assert_eq!(names("app in (web,db)").await, vec!["a", "b"]);
    assert_eq!(names("app notin (web)").await, vec!["b", "c"]);
    assert_eq!(names("tier").await, vec!["a"]);
    assert_eq!(names("!app").await, vec!["c"]);
    assert_eq!(names("app,!tier").await, vec!["b"]);
    let err = api
        .list(&ListParams::default().labels("app in web"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 400);

    let by_name = api
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let all: Api<Widget> = Api::all(server.client());
    let by_ns = all
        .list(&ListParams::default().fields("metadata.namespace=default"))
        .await
        .unwrap();
    assert_eq!(by_ns.items.len(), 3);
    assert!(
        all.list(&ListParams::default().fields("metadata.namespace=nope"))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // A selective watch sees objects entering (ADDED) and leaving (DELETED) the selection.
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("app=web").timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    api.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 5}})),
    )
    .await
    .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "gone"}}})),
    )
    .await
    .unwrap();
    match next_change(&mut stream).await {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "c"),
        other => panic!("unexpected {other:?}"),
    }
    match next_change(&mut stream).await {
        WatchEvent::Deleted(o) => assert_eq!(o.name_any(), "a"),
        other => panic!("unexpected {other:?}"),
    }

    // delete_collection honours the selector.
    api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(names("").await, vec!["a", "b"]);
    server.shutdown().await;
}

#[tokio::test]
async fn list_pagination() {
    let server = server().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    for i in 0..7 {
        api.create(&PostParams::default(), &widget(&format!("w{i}"), i))
            .await
            .unwrap();
    }
    let other: Api<Widget> = Api::namespaced(server.client(), "other");
    let mut w = widget("x", 0);
    w.metadata.namespace = Some("other".into());
    other.create(&PostParams::default(), &w).await.unwrap();

    let first = api.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    let snapshot_rv = first.metadata.resource_version.clone();
    let mut names: Vec<String> = first.items.iter().map(|w| w.name_any()).collect();
    let mut token = first.metadata.continue_.clone();
    let mut pages = 1;
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = api
            .list(&ListParams::default().limit(3).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(page.metadata.resource_version, snapshot_rv);
        names.extend(page.items.iter().map(|w| w.name_any()));
        token = page.metadata.continue_.clone();
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(names, (0..7).map(|i| format!("w{i}")).collect::<Vec<_>>());

    let all: Api<Widget> = Api::all(server.client());
    let everything: Vec<Widget> = watcher(all, watcher::Config::default().page_size(2))
        .default_backoff()
        .applied_objects()
        .take(8)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(everything.len(), 8);
    server.shutdown().await;
}

#[derive(Debug)]
struct Ctx {
    api: Api<Widget>,
    cleaned: Mutex<Vec<String>>,
}

async fn reconcile_status(obj: Arc<Widget>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let generation = obj.meta().generation;
    if obj.status.as_ref().and_then(|s| s.observed_generation) != generation {
        ctx.api
            .patch_status(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"observed_generation": generation, "phase": "Reconciled"}})),
            )
            .await?;
    }
    Ok(Action::await_change())
}

fn observed(api: &Api<Widget>, name: &str, generation: i64) -> impl Future<Output = Option<()>> {
    let api = api.clone();
    let name = name.to_owned();
    async move {
        let w = api.get_opt(&name).await.ok()??;
        (w.status?.observed_generation == Some(generation)).then_some(())
    }
}

#[tokio::test]
async fn controller_reconciles_existing_and_new_objects() {
    let server = server().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &widget("before", 1))
        .await
        .unwrap();

    let ctx = Arc::new(Ctx {
        api: api.clone(),
        cleaned: Mutex::new(Vec::new()),
    });
    let all: Api<Widget> = Api::all(server.client());
    let controller = tokio::spawn(
        Controller::new(all, watcher::Config::default())
            .run(
                reconcile_status,
                |_, _, _| Action::requeue(Duration::from_millis(100)),
                ctx,
            )
            .for_each(|_| async {}),
    );

    eventually("pre-existing object reconciled", || observed(&api, "before", 1)).await;
    api.create(&PostParams::default(), &widget("after", 1))
        .await
        .unwrap();
    eventually("new object reconciled", || observed(&api, "after", 1)).await;
    api.patch(
        "after",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 9}})),
    )
    .await
    .unwrap();
    eventually("spec change reconciled", || observed(&api, "after", 2)).await;

    // A transient failure is retried by the controller (error_policy requeue).
    server.fail_next("patch", "widgets/status", 500);
    api.patch(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 2}})),
    )
    .await
    .unwrap();
    eventually("reconciled after an injected failure", || {
        observed(&api, "before", 2)
    })
    .await;
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.resource == "widgets/status" && r.status == 500)
    );
    controller.abort();
    server.shutdown().await;
}

const FINALIZER: &str = "test.dev/cleanup";

async fn reconcile_with_finalizer(
    obj: Arc<Widget>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::runtime::finalizer::Error<kube::Error>> {
    let api = ctx.api.clone();
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(w) => {
                api.patch_status(
                    &w.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Ready"}})),
                )
                .await?;
                Ok(Action::await_change())
            }
            FinalizerEvent::Cleanup(w) => {
                ctx.cleaned.lock().unwrap().push(w.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await
}

#[tokio::test]
async fn finalizer_helper_end_to_end() {
    let server = server().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    let ctx = Arc::new(Ctx {
        api: api.clone(),
        cleaned: Mutex::new(Vec::new()),
    });
    let controller = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(
                reconcile_with_finalizer,
                |_, _, _| Action::requeue(Duration::from_millis(100)),
                ctx.clone(),
            )
            .for_each(|_| async {}),
    );
    let mut w = widget("fin", 1);
    w.metadata.finalizers = Some(vec!["someone.else/keep".into()]);
    api.create(&PostParams::default(), &w).await.unwrap();
    api.create(&PostParams::default(), &widget("plain", 1))
        .await
        .unwrap();
    for name in ["fin", "plain"] {
        eventually("finalizer added and applied", || {
            let api = api.clone();
            async move {
                let w = api.get(name).await.ok()?;
                (w.finalizers().iter().any(|f| f == FINALIZER) && w.status?.phase.as_deref() == Some("Ready"))
                    .then_some(())
            }
        })
        .await;
    }
    assert_eq!(
        api.get("fin").await.unwrap().finalizers(),
        &["someone.else/keep".to_string(), FINALIZER.to_string()]
    );

    api.delete("plain", &DeleteParams::default()).await.unwrap();
    eventually("plain cleaned up and gone", || {
        let api = api.clone();
        async move { api.get_opt("plain").await.unwrap().is_none().then_some(()) }
    })
    .await;
    api.delete("fin", &DeleteParams::default()).await.unwrap();
    eventually("our finalizer removed, the other kept", || {
        let api = api.clone();
        async move {
            let w = api.get("fin").await.ok()?;
            (w.finalizers() == ["someone.else/keep".to_string()]).then_some(())
        }
    })
    .await;
    let mut cleaned = ctx.cleaned.lock().unwrap().clone();
    cleaned.sort();
    cleaned.dedup();
    assert_eq!(cleaned, vec!["fin", "plain"]);
    controller.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn recorder_events_are_stored() {
    let server = server().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    let w = api
        .create(&PostParams::default(), &widget("ev", 1))
        .await
        .unwrap();
    let recorder = Recorder::new(
        server.client(),
        Reporter {
            controller: "test-ctrl".into(),
            instance: None,
        },
    );
    let ev = KEvent {
        type_: KEventType::Normal,
        reason: "Tested".into(),
        note: Some("hello".into()),
        action: "Test".into(),
        secondary: None,
    };
    recorder.publish(&ev, &w.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &w.object_ref(&())).await.unwrap();
    let events = server
        .store()
        .list(&ResourceKey::new("events.k8s.io", "events"), Some("default"));
    assert_eq!(
        events.len(),
        1,
        "the repeat is recorded as a series on the same event"
    );
    let e = &events[0];
    assert_eq!(e["reason"], "Tested");
    assert_eq!(e["note"], "hello");
    assert_eq!(e["regarding"]["name"], "ev");
    assert_eq!(e["reportingController"], "test-ctrl");
    assert_eq!(e["series"]["count"], 2);

    // Core v1 events work too.
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(server.client(), "default");
    let ce: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "core-ev"}, "involvedObject": {"kind": "Widget", "name": "ev"}, "reason": "X"
    }))
    .unwrap();
    core.create(&PostParams::default(), &ce).await.unwrap();
    let by_obj = core
        .list(&ListParams::default().fields("involvedObject.name=ev"))
        .await
        .unwrap();
    assert_eq!(by_obj.items.len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn leases_support_optimistic_locking() {
    let server = server().await;
    let leases: Api<Lease> = Api::namespaced(server.client(), "default");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    let l1 = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut take = l1.clone();
    take.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let l2 = leases
        .replace("leader", &PostParams::default(), &take)
        .await
        .unwrap();
    assert_eq!(l2.spec.unwrap().holder_identity.as_deref(), Some("b"));
    let mut late = l1.clone();
    late.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let err = leases
        .replace("leader", &PostParams::default(), &late)
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 409);
    server.shutdown().await;
}

#[tokio::test]
async fn discovery_and_crd_registration() {
    let server = TestApiServer::builder()
        .without_builtins()
        .resource(ResourceType::of::<Widget>(true, true))
        .start()
        .await;
    let client: Client = server.client();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.groups().any(|g| g.name() == "test.dev"));
    assert!(!discovery.groups().any(|g| g.name() == "other.dev"));

    // No CRD kinds without builtins: register Gadget by POSTing its CRD.
    let server = TestApiServer::start().await;
    let client = server.client();
    let gadgets: Api<Gadget> = Api::all(client.clone());
    assert_eq!(
        api_code(&gadgets.list(&ListParams::default()).await.unwrap_err()).0,
        404
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Gadget::crd()).await.unwrap();
    let established = kube::runtime::wait::await_condition(
        crds.clone(),
        "gadgets.other.dev",
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(TIMEOUT, established).await.unwrap().unwrap();
    let g = gadgets
        .create(&PostParams::default(), &Gadget::new("g1", GadgetSpec { n: 1 }))
        .await
        .unwrap();
    assert_eq!(g.spec.n, 1);
    assert!(g.namespace().is_none(), "cluster-scoped");
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&kube::api::GroupVersionKind::gvk("other.dev", "v1", "Gadget"))
        .unwrap();
    assert_eq!(ar.plural, "gadgets");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    // The built-in ThumbnailJob kind is served.
    assert!(discovery.groups().any(|g| g.name() == "thumbnailer.dev"));
    server.shutdown().await;
}

#[tokio::test]
async fn fault_injection_and_request_log() {
    let server = server().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    server.clear_requests();
    server.fail_next("create", "widgets", 500);
    let err = api
        .create(&PostParams::default(), &widget("x", 1))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (500, "InternalError".into()));
    api.create(&PostParams::default(), &widget("x", 1)).await.unwrap();
    server.fail_times("get", "*", 409, 2);
    assert_eq!(api_code(&api.get("x").await.unwrap_err()).0, 409);
    assert_eq!(api_code(&api.get("x").await.unwrap_err()).0, 409);
    assert!(api.get("x").await.is_ok());
    let log: Vec<(String, u16)> = server
        .requests()
        .into_iter()
        .map(|r| (r.verb, r.status))
        .collect();
    assert_eq!(
        log,
        vec![
            ("create".to_string(), 500),
            ("create".to_string(), 201),
            ("get".to_string(), 409),
            ("get".to_string(), 409),
            ("get".to_string(), 200)
        ]
    );
    let r = &server.requests()[0];
    assert_eq!(r.path, "/apis/test.dev/v1/namespaces/default/widgets");
    assert_eq!(r.namespace.as_deref(), Some("default"));

    // Direct store writes are visible to clients and produce watch events.
    let store = server.store();
    let rv = store.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    store.create_as(&widget("direct", 4)).unwrap();
    match next_change(&mut stream).await {
        WatchEvent::Added(o) => assert_eq!(o.spec.size, 4),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(store.get_as::<Widget>("default", "direct").unwrap().spec.size, 4);
    assert_eq!(store.list_as::<Widget>(None).len(), 2);
    let _: Value = store.get(&ResourceKey::of::<Widget>(), "default", "x").unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn dry_run_and_history_limit() {
    let server = TestApiServer::builder()
        .crd(&Widget::crd())
        .history_limit(2)
        .start()
        .await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    let dry = api
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &widget("dry", 1),
        )
        .await
        .unwrap();
    assert_eq!(dry.name_any(), "dry");
    assert!(
        api.get_opt("dry").await.unwrap().is_none(),
        "dry run does not persist"
    );

    let a = api.create(&PostParams::default(), &widget("a", 1)).await.unwrap();
    for size in 2..5 {
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": size}})),
        )
        .await
        .unwrap();
    }
    // Only the last two events are retained: watching from `a`'s creation is too old...
    let mut old = api
        .watch(&WatchParams::default(), &a.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    match next_change(&mut old).await {
        WatchEvent::Error(s) => assert_eq!(s.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    // ...while watching from the second-to-last event replays the last one.
    let rv = server.store().resource_version() - 1;
    let mut recent = api
        .watch(&WatchParams::default(), &rv.to_string())
        .await
        .unwrap()
        .boxed();
    match next_change(&mut recent).await {
        WatchEvent::Modified(w) => assert_eq!(w.spec.size, 4),
        other => panic!("unexpected {other:?}"),
    }
    server.shutdown().await;
}
