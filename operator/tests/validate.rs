//! No API server runs here, so the objects a cluster would receive are checked offline by
//! independent tools: every object the operator applies for `examples/k8s/`
//! (`postern-operator render --objects`, the controller's own code path) and the chart with its
//! sample Gateway, against the Kubernetes OpenAPI schemas of a current release (PyPI's
//! `kubernetes-validate`, strict: unknown fields are errors) and against checkov's Kubernetes
//! checks (Pod Security "restricted" settings, privileges, probes, resources, network policy).
//! Both tools are installed by scripts/install-test-deps.sh.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

/// checkov's checks these objects fail on purpose:
/// - CKV_K8S_11 (CPU limits): a CPU limit throttles an SMTP server mid-transaction; the pods ask
///   for CPU (requests) and scale out with the autoscaler instead. Memory limits are set.
/// - CKV_K8S_43 (image by digest): the image is whatever the Gateway (or chart value) names;
///   the examples use a release tag to stay readable, and a digest works the same.
/// - CKV_K8S_15 (imagePullPolicy Always): release tags are immutable; pulling on every start
///   would make a registry outage stop mail pods from restarting.
const SKIPPED: &str = "CKV_K8S_11,CKV_K8S_43,CKV_K8S_15";

fn operator_objects(dir: &Path) -> PathBuf {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/k8s");
    let out = Command::new(env!("CARGO_BIN_EXE_postern-operator"))
        .args(["render", "--objects", "-f", examples])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = dir.join("operator-objects.yaml");
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// The chart with everything on, once cluster-wide and once namespaced.
fn chart_objects(dir: &Path) -> PathBuf {
    let mut docs = Vec::new();
    for watch in [serde_json::json!([]), serde_json::json!(["mail", "tenants"])] {
        let rendered = common::helm(serde_json::json!({
            "sampleGateway": {"enabled": true},
            "monitoring": {"prometheusRule": {"enabled": true}, "serviceMonitor": {"enabled": true},
                           "grafanaDashboard": {"enabled": true}},
            "watchNamespaces": watch,
        }));
        assert_eq!(rendered["lint"]["messages"], serde_json::json!([]), "strict lint: {}", rendered["lint"]);
        docs.extend(common::objects(&rendered).iter().map(|o| serde_yaml::to_string(o).unwrap()));
    }
    let path = dir.join("chart-objects.yaml");
    std::fs::write(&path, docs.join("---\n")).unwrap();
    path
}

fn kinds(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .map(|v: serde_json::Value| v["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out =
        cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/install-test-deps.sh installs it)"));
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn the_operators_objects_and_the_chart_pass_the_kubernetes_schemas_and_checkov() {
    let dir = tempfile::tempdir().unwrap();
    let operator = operator_objects(dir.path());
    let chart = chart_objects(dir.path());
    let operator_kinds = kinds(&operator);
    for kind in [
        "StatefulSet",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceAccount",
        "ClusterRoleBinding",
    ] {
        assert!(operator_kinds.iter().any(|k| k == kind), "{kind} in {operator_kinds:?}");
    }
    let reviewer =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/k8s/quarantine-reviewer.yaml"));
    for file in [&operator, &chart, &reviewer] {
        // Strict: a field Kubernetes does not know is an error (kinds it has no schema for,
        // the Postern kinds and ServiceMonitor, are checked elsewhere: crds.rs and helm.rs).
        let (ok, out) = run(Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict"])
            .arg("--quiet")
            .arg(file));
        assert!(ok, "{}: {out}", file.display());
        assert!(!out.contains("ERROR") && !out.contains("failed"), "{}: {out}", file.display());
        let (ok, out) = run(Command::new("python3")
            .args(["-m", "checkov.main"])
            .args(["--framework", "kubernetes", "--skip-download", "--compact", "--quiet"])
            .args(["--skip-check", SKIPPED])
            .arg("-f")
            .arg(file));
        assert!(ok, "{}: {out}", file.display());
    }
}
