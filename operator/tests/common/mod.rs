//! Shared by the operator's integration tests: admission as the apiserver would do it.
#![allow(dead_code)]

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
