//! The chart's alerts and dashboard name only metrics that exist: every `postern_*` name in the
//! PrometheusRule's expressions and in the Grafana dashboard's queries is exported by a running
//! gateway (its real /metrics) or by the operator's registry. An alert on a misspelt metric
//! would never fire; a panel would stay empty.

use std::collections::BTreeSet;
use std::process::Command;

use postern_tests::client::{Client, message};
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
values = {"monitoring": {"prometheusRule": {"enabled": True}, "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}, "grafanaDashboard": {"enabled": True}}}
out = helm_python.Chart.load(sys.argv[1]).render(values, name="mail", namespace="mail", is_install=True)
print(json.dumps(out))
"#;
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/postern");
    let out = Command::new("python3").args(["-c", script, chart]).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let templates: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rule: serde_json::Value =
        serde_yaml::from_str(templates["postern/templates/prometheusrule.yaml"].as_str().unwrap()).unwrap();
    let mut exprs: Vec<String> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 6, "{exprs:?}");
    let alerts = exprs.len();

    // The dashboard: a ConfigMap for Grafana's sidecar, valid JSON, one query per target.
    let monitoring: Vec<serde_json::Value> = templates["postern/templates/monitoring.yaml"]
        .as_str()
        .unwrap()
        .split("\n---\n")
        .map(|doc| serde_yaml::from_str(doc).unwrap())
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect();
    let kinds: Vec<&str> = monitoring.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Service", "ServiceMonitor", "ConfigMap"]);
    assert_eq!(monitoring[1]["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitoring[1]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"], "metrics");
    assert_eq!(monitoring[0]["metadata"]["labels"]["app.kubernetes.io/component"], "metrics");
    let dashboard_cm = &monitoring[2];
    assert_eq!(dashboard_cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: serde_json::Value =
        serde_json::from_str(dashboard_cm["data"]["postern.json"].as_str().unwrap()).expect("dashboard JSON");
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() > alerts + 10, "{exprs:?}");

    // A gateway that has seen a little of everything a dashboard shows: a message queued (for
    // a host that is down), a recipient refused, a connection refused (an untrusted PROXY
    // peer), an admin request for another Host. (Families with no sample are not exported.)
    let gw = GatewayProcess::start(
        &GatewayConfig::new(
            "domains:\n  - name: served.test\n    primary: {hosts: [\"127.0.0.1:9\"], tls: {mode: none}}\n",
        )
        .with_listeners(
            "  - {name: smtp, address: \"127.0.0.1:0\"}\n  - {name: lb, address: \"127.0.0.1:0\", proxyProtocol: true, trustedProxies: [10.0.0.0/8]}\n",
        ),
    );
    let mut c = Client::connect(gw.smtp());
    c.cmd("EHLO client.test");
    let queued = c.send_message(
        "a@sender.test",
        &["u@served.test"],
        &message("a@sender.test", "u@served.test", "s", "x"),
    );
    assert_eq!(queued.code, 250);
    c.cmd("MAIL FROM:<a@sender.test>");
    assert_eq!(c.cmd("RCPT TO:<u@elsewhere.test>").code / 100, 5, "relaying denied");
    let mut untrusted = std::net::TcpStream::connect(gw.listeners["lb"]).unwrap();
    untrusted.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    assert_eq!(std::io::Read::read(&mut untrusted, &mut [0u8; 16]).unwrap_or(0), 0);
    let mut admin = std::net::TcpStream::connect(gw.admin_addr()).unwrap();
    std::io::Write::write_all(
        &mut admin,
        b"GET /api/v1/queue HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut admin, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
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
