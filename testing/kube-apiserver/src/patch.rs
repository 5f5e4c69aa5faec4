//! Patch formats and the simplified server-side-apply field tracking.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// A field path, e.g. `["spec", "replicas"]`.
pub(crate) type FieldPath = Vec<String>;
/// A set of owned field paths.
pub(crate) type FieldSet = BTreeSet<FieldPath>;

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

/// RFC 6902 JSON patch. A `test` of `null` against a missing path succeeds (as on a real server).
pub(crate) fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops: Vec<json_patch::PatchOperation> =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    let mut work = doc.clone();
    for op in &ops {
        if let json_patch::PatchOperation::Test(t) = op
            && t.value.is_null()
            && work.pointer(t.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(&mut work, std::slice::from_ref(op)).map_err(|e| e.to_string())?;
    }
    *doc = work;
    Ok(())
}

fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let candidates: &[&'static str] = match field {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets" => {
            &["name"]
        }
        "ports" => &["containerPort", "port"],
        "volumeMounts" => &["mountPath"],
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        _ => return None,
    };
    candidates
        .iter()
        .copied()
        .find(|k| items.iter().all(|i| i.get(*k).is_some()))
}

/// Strategic merge patch: a merge patch, except that lists with a well-known merge key (containers,
/// env, ports, volumes, volumeMounts, conditions, ownerReferences) are merged by key, `finalizers`
/// are unioned, and `$patch: delete` removes list elements or map entries.
pub(crate) fn strategic_merge_patch(doc: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = p.clone();
        p.remove("$patch");
        *doc = Value::Object(p);
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Value::Object(d) = doc else { return };
    for (k, pv) in p {
        if k.starts_with('$') {
            continue;
        }
        match pv {
            Value::Null => {
                d.remove(k);
            }
            Value::Object(po) if po.get("$patch").and_then(Value::as_str) == Some("delete") => {
                d.remove(k);
            }
            Value::Array(items) => {
                let merged = match d.get(k) {
                    Some(Value::Array(existing)) => merge_list(k, existing, items),
                    _ => items
                        .iter()
                        .filter(|i| !is_delete_directive(i))
                        .cloned()
                        .collect(),
                };
                d.insert(k.clone(), Value::Array(merged));
            }
            Value::Object(_) => strategic_merge_patch(d.entry(k.clone()).or_insert(Value::Null), pv),
            other => {
                d.insert(k.clone(), other.clone());
            }
        }
    }
}

fn is_delete_directive(v: &Value) -> bool {
    v.get("$patch").and_then(Value::as_str) == Some("delete")
}

fn merge_list(field: &str, existing: &[Value], items: &[Value]) -> Vec<Value> {
    if field == "finalizers" {
        let mut out = existing.to_vec();
        for i in items {
            if !out.contains(i) {
                out.push(i.clone());
            }
        }
        return out;
    }
    let Some(key) = merge_key(field, items) else {
        return items.to_vec();
    };
    let mut out = existing.to_vec();
    for item in items {
        let pos = out.iter().position(|e| e.get(key) == item.get(key));
        match (pos, is_delete_directive(item)) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge_patch(&mut out[i], item),
            (None, false) => out.push(item.clone()),
        }
    }
    out
}

const IDENTITY_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// Removes `null`s (they mean "not set" in an applied configuration).
pub(crate) fn strip_nulls(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, x| !x.is_null());
        for x in m.values_mut() {
            strip_nulls(x);
        }
    }
}

/// The leaf fields set by an applied configuration (maps are recursed into; lists are atomic).
pub(crate) fn applied_fields(cfg: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    if let Value::Object(m) = cfg {
        for (k, v) in m {
            if k == "apiVersion" || k == "kind" {
                continue;
            }
            if k == "metadata" {
                if let Value::Object(meta) = v {
                    for (mk, mv) in meta {
                        if !IDENTITY_META.contains(&mk.as_str()) {
                            collect(mv, vec!["metadata".into(), mk.clone()], &mut out);
                        }
                    }
                }
                continue;
            }
            collect(v, vec![k.clone()], &mut out);
        }
    }
    out
}

fn collect(v: &Value, path: FieldPath, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let mut p = path.clone();
                p.push(k.clone());
                collect(x, p, out);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

/// Value at a path.
pub(crate) fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, seg| cur.get(seg))
}

/// Removes the value at a path, if present.
pub(crate) fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        match cur.get_mut(seg) {
            Some(x) => cur = x,
            None => return,
        }
    }
    if let Value::Object(m) = cur {
        m.remove(last);
    }
}

/// Deep-merges an applied configuration into an object (maps merge, everything else replaces).
pub(crate) fn deep_merge(doc: &mut Value, cfg: &Value) {
    match (doc, cfg) {
        (Value::Object(d), Value::Object(c)) => {
            for (k, v) in c {
                match d.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => deep_merge(existing, v),
                    _ => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (d, c) => *d = c.clone(),
    }
}

/// Whether two paths overlap (one is a prefix of the other).
pub(crate) fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// Encodes a field set in the `FieldsV1` trie format (`{"f:spec":{"f:replicas":{}}}`).
pub(crate) fn encode_fields(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            let entry = cur
                .entry(format!("f:{seg}"))
                .or_insert_with(|| Value::Object(Map::new()));
            cur = match entry {
                Value::Object(m) => m,
                _ => unreachable!("field trie nodes are objects"),
            };
        }
    }
    Value::Object(root)
}

/// Decodes a `FieldsV1` trie into a field set (entries other than `f:` are ignored).
pub(crate) fn decode_fields(v: &Value) -> FieldSet {
    fn walk(v: &Value, path: FieldPath, out: &mut FieldSet) {
        let children: Vec<(&String, &Value)> = v
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
            .unwrap_or_default();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path);
            }
            return;
        }
        for (k, x) in children {
            let mut p = path.clone();
            p.push(k[2..].to_owned());
            walk(x, p, out);
        }
    }
    let mut out = FieldSet::new();
    walk(v, Vec::new(), &mut out);
    out
}

/// Renders a field path like `.spec.replicas`.
pub(crate) fn display_path(p: &[String]) -> String {
    p.iter().map(|s| format!(".{s}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_roundtrip() {
        let cfg = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a", "labels": {"x": "1"}},
            "spec": {"a": 1, "b": {"c": [1, 2]}, "e": {}}});
        let set = applied_fields(&cfg);
        let want: FieldSet = [
            vec!["metadata", "labels", "x"],
            vec!["spec", "a"],
            vec!["spec", "b", "c"],
            vec!["spec", "e"],
        ]
        .into_iter()
        .map(|p| p.into_iter().map(String::from).collect())
        .collect();
        assert_eq!(set, want);
        assert_eq!(decode_fields(&encode_fields(&set)), set);
    }

    #[test]
    fn json_patch_null_test_on_missing_path() {
        let mut doc = json!({"metadata": {}});
        let p = json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                       {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]);
        json_patch(&mut doc, &p).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["f"]));
        let p = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "g"}]);
        assert!(json_patch(&mut doc, &p).is_err());
    }

    #[test]
    fn strategic_merges_by_key() {
        let mut doc = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
            "metadata": {"finalizers": ["f1"]}});
        let p = json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "a", "$patch": "delete"}]},
            "metadata": {"finalizers": ["f2"]}});
        strategic_merge_patch(&mut doc, &p);
        assert_eq!(doc["spec"]["containers"], json!([{"name": "b", "image": "z"}]));
        assert_eq!(doc["metadata"]["finalizers"], json!(["f1", "f2"]));
    }
}
