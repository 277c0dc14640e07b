//! Shared by the operator's integration tests: admission as the apiserver would do it.
#![allow(dead_code)]

use std::process::Command;

use serde_json::Value;

pub fn schema_of(kind: &str) -> Value {
    let crd = postern_operator::crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap())
        .unwrap()
}

/// What the apiserver would say about `object`: defaults applied, then the OpenAPI schema, then
/// the CEL rules. `Ok` or every message.
pub fn admit(object: &Value) -> Result<(), Vec<String>> {
    let kind = object["kind"].as_str().unwrap();
    let schema = schema_of(kind);
    let object = kube::core::cel::apply_defaults(&schema, object);
    let validator = jsonschema::validator_for(&schema).expect("the CRD schema compiles");
    let mut errors: Vec<String> =
        validator.iter_errors(&object).map(|e| format!("{}: {e}", e.instance_path())).collect();
    if errors.is_empty()
        && let Err(cel) = kube::core::cel::Validator::new().validate(&schema, &object, None)
    {
        errors.extend(cel.into_vec().into_iter().map(|e| format!("{}: {}", e.field_path, e.message)));
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/postern");

/// `{"templates": {path: yaml}, "lint": {...}}` for these values.
pub fn helm(values: Value) -> Value {
    helm_release(values, "mail")
}

/// `helm` with release name `release` (namespace "mail").
pub fn helm_release(values: Value, release: &str) -> Value {
    let script = r#"
import json, sys, helm_python
chart, values, release = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
out = helm_python.Chart.load(chart).render(values, name=release, namespace="mail", is_install=True)
print(json.dumps({"templates": out, "lint": helm_python.lint(chart, values, strict=True, namespace="mail")}))
"#;
    let out = Command::new("python3")
        .args(["-c", script, CHART, &values.to_string(), release])
        .output()
        .expect("python3");
    assert!(out.status.success(), "helm-python-sdk: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn objects(rendered: &Value) -> Vec<Value> {
    rendered["templates"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.ends_with(".yaml"))
        .flat_map(|(_, text)| {
            serde_yaml::Deserializer::from_str(text.as_str().unwrap())
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .filter(|v: &Value| !v.is_null())
                .collect::<Vec<_>>()
        })
        .collect()
}
