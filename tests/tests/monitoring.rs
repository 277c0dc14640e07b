//! The chart's alerts name only metrics that exist: every `postern_*` name in the
//! PrometheusRule's expressions is exported by a running gateway (its real /metrics) or by the
//! operator's registry. An alert on a misspelt metric would never fire.

use std::collections::BTreeSet;
use std::process::Command;

use postern_tests::gateway::{GatewayConfig, GatewayProcess, http_get};

/// The metric names an OpenMetrics text exposes, with the suffixes their samples carry.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
        names.insert(name.to_string());
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

#[test]
fn every_alert_names_a_metric_that_exists() {
    let script = r#"
import json, sys, helm_python
out = helm_python.Chart.load(sys.argv[1]).render({"monitoring": {"prometheusRule": {"enabled": True}}}, name="mail", namespace="mail", is_install=True)
print(json.dumps(out))
"#;
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/postern");
    let out = Command::new("python3").args(["-c", script, chart]).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let templates: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rule: serde_json::Value =
        serde_yaml::from_str(templates["postern/templates/prometheusrule.yaml"].as_str().unwrap()).unwrap();
    let exprs: Vec<String> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 6, "{exprs:?}");

    let gw = GatewayProcess::start(&GatewayConfig::typed(|_| {}));
    let (status, gateway_metrics) = http_get(gw.admin_addr(), "/metrics");
    assert_eq!(status, 200);
    let mut names = exported(&gateway_metrics);
    assert!(names.contains("postern_store_up"), "{names:?}");
    assert!(gateway_metrics.contains("postern_store_up 1"), "the store answers");
    let mut registry = prometheus_client::registry::Registry::default();
    postern_operator::controller::Metrics::default().register(&mut registry);
    let mut operator_metrics = String::new();
    prometheus_client::encoding::text::encode(&mut operator_metrics, &registry).unwrap();
    names.extend(exported(&operator_metrics));

    for expr in &exprs {
        let used = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("postern_"));
        for name in used {
            assert!(names.contains(name), "{name} (in {expr:?}) is exported by nobody");
        }
    }
}
