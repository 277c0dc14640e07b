//! The chart, rendered and linted by the real Helm v4 engine (PyPI's helm-python-sdk, which
//! scripts/install-test-deps.sh installs); the rendered objects are checked, and the sample
//! Gateway and MailDomain must pass the CRDs' admission.

use serde_json::Value;

mod common;

use common::{CHART, helm, objects};

fn find<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn default_values_install_the_operator_with_least_privilege() {
    let r = helm(serde_json::json!({}));
    assert_eq!(r["lint"]["errors"], serde_json::json!([]), "{}", r["lint"]);
    assert_eq!(r["lint"]["messages"], serde_json::json!([]), "strict lint: {}", r["lint"]);
    let objs = objects(&r);
    let dep = find(&objs, "Deployment");
    assert_eq!(dep.len(), 1);
    let pod = &dep[0]["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "mail-postern");
    assert_eq!(pod["containers"][0]["image"], "ghcr.io/postern/postern:0.1.0");
    let env = pod["containers"][0]["env"].as_array().unwrap();
    let gateway_image =
        env.iter().find(|e| e["name"] == "POSTERN_GATEWAY_IMAGE").expect("gateways follow the operator");
    assert_eq!(gateway_image["value"], "ghcr.io/postern/postern:0.1.0");
    assert_eq!(pod["containers"][0]["args"], serde_json::json!(["run", "--admin", "0.0.0.0:8080"]));
    assert_eq!(pod["containers"][0]["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(find(&objs, "ServiceAccount").len(), 1);
    let role = find(&objs, "ClusterRole")[0];
    assert_eq!(role["metadata"]["name"], "mail-postern", "the operator's own role");
    let rules = role["rules"].as_array().unwrap();
    // Secrets are mounted by pods, never read by the operator: it may only create them (the
    // DKIM keys it generates for Direct SendingAccounts).
    for r in rules.iter().filter(|r| r["resources"].as_array().unwrap().iter().any(|x| x == "secrets")) {
        assert_eq!(r["verbs"], serde_json::json!(["create"]), "{r}");
    }
    let has = |r: &Value, verb: &str| r["verbs"].as_array().unwrap().iter().any(|v| v == verb);
    assert!(rules.iter().all(|r| !has(r, "*")));
    // Delete only for the workload children a Gateway may stop asking for; never claims (they
    // hold accepted mail), ConfigMaps, Services or the Postern kinds.
    let deletable: Vec<&str> = rules
        .iter()
        .filter(|r| has(r, "delete"))
        .flat_map(|r| r["resources"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()))
        .collect();
    assert_eq!(
        deletable,
        [
            "clusterrolebindings",
            "deployments",
            "statefulsets",
            "horizontalpodautoscalers",
            "poddisruptionbudgets",
            "networkpolicies",
            "ingresses",
            "servicemonitors",
            "certificates",
            "dnsendpoints"
        ]
    );
    // The only role the operator may bind: the gateways' token and access reviews.
    let binds: Vec<&Value> = rules.iter().filter(|r| has(r, "bind")).collect();
    assert_eq!(binds.len(), 1);
    assert_eq!(binds[0]["resourceNames"], serde_json::json!(["system:auth-delegator"]));
    assert_eq!(find(&objs, "ClusterRoleBinding")[0]["subjects"][0]["namespace"], "mail");
    // The reviewers' role grants exactly what the gateways' admin API checks, and the
    // example binds it by its name.
    let reviewer = find(&objs, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "mail-postern-quarantine-reviewer")
        .expect("the quarantine reviewer role");
    let granted: Vec<(String, Vec<String>)> = reviewer["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["apiGroups"], serde_json::json!([postern_api::admin::RBAC_GROUP]));
            let strings = |v: &Value| {
                v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect::<Vec<_>>()
            };
            (strings(&r["resources"]).join(","), strings(&r["verbs"]))
        })
        .collect();
    let documented: Vec<(String, Vec<String>)> = postern_api::admin::RBAC_RULES
        .iter()
        .map(|(r, verbs)| (r.to_string(), verbs.iter().map(|v| v.to_string()).collect()))
        .collect();
    assert_eq!(granted, documented);
    let plugin = find(&objs, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "mail-postern-kubectl-plugin")
        .expect("the kubectl plugin's role");
    assert_eq!(plugin["rules"][0]["resources"], serde_json::json!(["services/proxy"]));
    assert_eq!(plugin["rules"][0]["verbs"], serde_json::json!(["get", "create", "delete"]));
    assert_eq!(reviewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"], "true");
    assert!(
        reviewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"].is_null(),
        "held mail is not view"
    );
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/k8s/quarantine-reviewer.yaml"
    ))
    .unwrap();
    assert!(
        example.contains("name: postern-quarantine-reviewer"),
        "the release named postern installs that name"
    );
    assert!(find(&objs, "Gateway").is_empty(), "no sample unless asked");
    assert!(
        r["templates"]["postern/templates/NOTES.txt"].as_str().unwrap().contains("kubectl apply -n mail")
    );
}

#[test]
fn the_sample_gateway_is_admitted_by_the_crds() {
    for values in [
        serde_json::json!({"sampleGateway": {"enabled": true}}),
        serde_json::json!({
            "sampleGateway": {"enabled": true, "replicas": 2, "autoscaling": {"minReplicas": 2, "maxReplicas": 4}},
            "redis": {"url": "redis://redis.mail.svc:6379", "passwordSecret": {"name": "redis-pw", "key": "password"}},
        }),
    ] {
        let r = helm(values.clone());
        assert_eq!(r["lint"]["messages"], serde_json::json!([]), "{}", r["lint"]);
        let objs = objects(&r);
        let gw = find(&objs, "Gateway");
        let md = find(&objs, "MailDomain");
        assert_eq!((gw.len(), md.len()), (1, 1), "{values}");
        for o in [gw[0], md[0]] {
            common::admit(o).unwrap_or_else(|e| panic!("{values}: {} refused: {e:?}", o["kind"]));
        }
        assert_eq!(md[0]["metadata"]["labels"]["app.kubernetes.io/part-of"], "postern");
        assert!(md[0]["metadata"]["labels"].get("app.kubernetes.io/name").is_none(), "not the operator's");
        let redis = values["redis"]["url"].is_string();
        assert_eq!(gw[0]["spec"]["store"]["type"], if redis { "Redis" } else { "Embedded" });
    }
}

#[test]
fn the_chart_installs_and_upgrades_the_generated_crds_and_keeps_them() {
    // As templates (Helm upgrades those; it never touches files under crds/ again).
    assert!(!std::path::Path::new(&format!("{CHART}/crds")).exists(), "crds/ would be installed twice");
    let crds = |values: serde_json::Value| -> Vec<Value> {
        let r = helm(values);
        assert_eq!(r["lint"]["messages"], serde_json::json!([]), "{}", r["lint"]);
        find(&objects(&r), "CustomResourceDefinition").into_iter().cloned().collect()
    };
    let installed = crds(serde_json::json!({}));
    let mut names: Vec<String> =
        installed.iter().map(|c| c["metadata"]["name"].as_str().unwrap().into()).collect();
    let mut generated: Vec<String> =
        postern_operator::crd::all().into_iter().map(|c| c.metadata.name.unwrap()).collect();
    names.sort();
    generated.sort();
    assert_eq!(names, generated);
    for crd in &installed {
        assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep", "uninstall keeps them");
        assert_eq!(crd["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm");
    }
    // The same schema as the generated CRD (the template only adds labels and annotations).
    let gateway = installed.iter().find(|c| c["metadata"]["name"] == "gateways.mail.postern.dev").unwrap();
    let generated = postern_operator::crd::all()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some("gateways.mail.postern.dev"))
        .unwrap();
    // (Helm reads numbers as floats: 0.0 and 0 are the same number to the API server.)
    fn numbers_as_floats(v: &Value) -> Value {
        match v {
            Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
            Value::Array(a) => Value::Array(a.iter().map(numbers_as_floats).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), numbers_as_floats(v))).collect())
            }
            other => other.clone(),
        }
    }
    // Helm reads YAML as Go does (YAML 1.1): this also proves a plain `Off` did not become false.
    assert_eq!(
        numbers_as_floats(&gateway["spec"]),
        numbers_as_floats(&serde_json::to_value(&generated.spec).unwrap())
    );

    let unkept = crds(serde_json::json!({"crds": {"keep": false}}));
    assert!(unkept.iter().all(|c| c["metadata"]["annotations"]["helm.sh/resource-policy"].is_null()));
    assert!(crds(serde_json::json!({"crds": {"enabled": false}})).is_empty());
}

#[test]
fn a_release_named_postern_with_its_sample_gateway_does_not_collide_with_itself() {
    let r = common::helm_release(serde_json::json!({"sampleGateway": {"enabled": true}}), "postern");
    let objs = objects(&r);
    let gateway = find(&objs, "Gateway")[0];
    assert_eq!(gateway["metadata"]["name"], "postern");
    assert!(gateway["spec"].get("image").is_none(), "the gateway image follows the operator's");
    // The Gateway's own workload, Services and NetworkPolicy are named after it: the chart's
    // objects of those kinds must not be.
    for kind in ["Deployment", "StatefulSet", "Service", "NetworkPolicy"] {
        for o in find(&objs, kind) {
            assert_ne!(o["metadata"]["name"], "postern", "{kind} collides with the sample Gateway's");
        }
    }
    assert_eq!(find(&objs, "Deployment")[0]["metadata"]["name"], "postern-operator");
}

#[test]
fn a_mistyped_value_is_refused_by_the_values_schema_naming_it() {
    let script = r#"
import json, sys, helm_python
print(json.dumps(helm_python.lint(sys.argv[1], json.loads(sys.argv[2]), strict=True, namespace="mail")))
"#;
    for (values, expected) in [
        (serde_json::json!({"operator": {"replicaz": 2}}), "additional properties 'replicaz' not allowed"),
        (serde_json::json!({"redis": {"url": "http://redis:6379"}}), "at '/redis/url'"),
        (serde_json::json!({"sampleGateway": {"port": "smtp"}}), "at '/sampleGateway/port'"),
    ] {
        let out = std::process::Command::new("python3")
            .args(["-c", script, CHART, &values.to_string()])
            .output()
            .expect("python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lint: Value = serde_json::from_slice(&out.stdout).unwrap();
        let errors = lint["errors"].to_string();
        assert!(errors.contains(expected), "{values}: {errors}");
    }
}

/// A namespaced install: the operator watches only the listed namespaces, with a Role in each;
/// only the review bindings and the CRD lookups stay in its ClusterRole.
#[test]
fn a_namespaced_install_gets_roles_only_where_it_works() {
    let r = helm(serde_json::json!({"watchNamespaces": ["mail", "tenants"]}));
    assert_eq!(r["lint"]["messages"], serde_json::json!([]), "{}", r["lint"]);
    let objs = objects(&r);
    let cluster_role =
        find(&objs, "ClusterRole").into_iter().find(|c| c["metadata"]["name"] == "mail-postern").unwrap();
    let resources: Vec<&str> = cluster_role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()))
        .collect();
    assert_eq!(resources, ["clusterrolebindings", "clusterroles", "customresourcedefinitions"]);
    let roles: Vec<(&str, &str)> = find(&objs, "Role")
        .iter()
        .map(|r| (r["metadata"]["namespace"].as_str().unwrap(), r["metadata"]["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [("mail", "mail-postern"), ("tenants", "mail-postern"), ("mail", "mail-postern-leader")]
    );
    let tenants = find(&objs, "Role").into_iter().find(|r| r["metadata"]["namespace"] == "tenants").unwrap();
    assert!(tenants["rules"].as_array().unwrap().iter().any(|r| r["resources"][0] == "gateways"));
    let bindings = find(&objs, "RoleBinding");
    assert_eq!(bindings.len(), 3);
    assert!(
        bindings
            .iter()
            .all(|b| b["subjects"][0]["namespace"] == "mail" && b["subjects"][0]["name"] == "mail-postern")
    );
    let dep = find(&objs, "Deployment")[0];
    let env = dep["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    let watch = env.iter().find(|e| e["name"] == "POSTERN_WATCH_NAMESPACES").expect("the operator is told");
    assert_eq!(watch["value"], "mail,tenants");
}
