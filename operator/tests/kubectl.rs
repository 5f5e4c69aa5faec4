//! The real `kubectl` against the real API server, as a cluster operator would use it: the
//! example manifests applied as they are (GitOps), printer columns, short name and category,
//! `wait`, `describe`, `explain`, `delete`, and the server's schema validation of ThumbnailJobs.
mod common;

use common::*;
use thumbnail_core::objects::ObjectStore;

fn examples() -> String {
    repo().join("deployment/examples").display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_applies_waits_describes_explains_and_deletes_the_examples() {
    // multi-output.yaml names the bucket `thumbnails`.
    let world = World::with_bucket(bucket("thumbnails").await).await;
    world
        .put("images/original/example.jpg", &fixture("photo.jpg"))
        .await;
    let _kubelet = world.kubelet();
    let operator = world.operator().await;
    let ns = world.ns.clone();
    let kubectl = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-n", &ns]);
        let (ok, out, err) = world.cluster.kubectl(&all, None);
        assert!(ok, "kubectl {args:?} failed: {out}{err}");
        out
    };

    let applied = kubectl(&["apply", "-f", &examples()]);
    for name in ["example-basic", "example-job-mode", "example-multi-output"] {
        assert!(
            applied.contains(&format!("thumbnailjob.thumbnailer.dev/{name} created")),
            "{applied}"
        );
    }
    let waited = kubectl(&[
        "wait",
        "--for=condition=Succeeded",
        "--timeout=120s",
        "tj/example-basic",
        "tj/example-multi-output",
        "tj/example-job-mode",
    ]);
    assert_eq!(waited.matches("condition met").count(), 3, "{waited}");

    // Printer columns, by short name and by category.
    let listed = kubectl(&["get", "tj"]);
    println!("$ kubectl get tj\n{listed}");
    let header: Vec<&str> = listed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "SOURCE", "OUTPUTS", "DURATION", "AGE"],
        "{listed}"
    );
    for line in listed.lines().skip(1) {
        assert!(
            line.contains("Succeeded") && line.contains("images/original/example.jpg"),
            "{line}"
        );
    }
    // A list-valued column shows its first value on a real server.
    let multi = listed
        .lines()
        .find(|l| l.starts_with("example-multi-output"))
        .unwrap();
    assert!(multi.contains("square-small"), "{multi}");
    let by_category = kubectl(&["get", "thumbnails"]);
    assert_eq!(by_category.lines().count(), 4, "{by_category}");
    let wide = kubectl(&["get", "tj", "-o", "wide"]);
    println!("$ kubectl get tj -o wide\n{wide}");
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "PHASE", "SOURCE", "OUTPUTS", "DURATION", "AGE", "EXECUTOR", "ATTEMPTS", "REASON"
        ],
        "{wide}"
    );
    let job_mode = wide.lines().find(|l| l.starts_with("example-job-mode")).unwrap();
    assert!(job_mode.split_whitespace().any(|c| c == "job"), "{job_mode}");
    let basic = wide.lines().find(|l| l.starts_with("example-basic")).unwrap();
    assert!(basic.split_whitespace().any(|c| c == "inline"), "{basic}");

    let described = kubectl(&["describe", "tj", "example-multi-output"]);
    for needle in [
        "Conditions:",
        "Succeeded",
        "Completed",
        "Started",
        "4 thumbnails written",
        "Events:",
    ] {
        assert!(described.contains(needle), "no {needle:?} in:\n{described}");
    }
    let explained = kubectl(&["explain", "thumbnailjob.spec"]);
    for field in [
        "source",
        "outputs",
        "execution",
        "backoffLimit",
        "activeDeadlineSeconds",
        "jobId",
    ] {
        assert!(explained.contains(field), "no {field} in:\n{explained}");
    }

    // The server validates ThumbnailJobs against the CRD's schema.
    let invalid = "apiVersion: thumbnailer.dev/v1alpha1\nkind: ThumbnailJob\nmetadata:\n  name: invalid\n\
                   spec:\n  source:\n    key: images/original/example.jpg\n  outputs:\n  - name: Bad_Name\n    \
                   width: 0\n    height: 5000\n";
    let (ok, out, err) = world
        .cluster
        .kubectl(&["apply", "-n", &ns, "-f", "-"], Some(invalid));
    assert!(!ok, "an invalid ThumbnailJob was accepted: {out}");
    for field in ["spec.outputs.name", "spec.outputs.width", "spec.outputs.height"] {
        assert!(err.contains(field), "no {field} in: {err}");
    }

    // Delete: the finalizer removes the thumbnails before the resources go.
    let tj = world.tj("example-basic").await.unwrap();
    let key = tj.status.unwrap().outputs[0].key.clone();
    assert!(world.objects.exists(&key).await.unwrap());
    let deleted = kubectl(&["delete", "-f", &examples(), "--wait=true", "--timeout=60s"]);
    assert_eq!(deleted.matches("deleted").count(), 3, "{deleted}");
    assert!(
        !world.objects.exists(&key).await.unwrap(),
        "the thumbnail went with it"
    );
    let left = kubectl(&["get", "tj", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
    operator.shutdown().await;
}
