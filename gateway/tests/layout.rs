//! The module layout of DESIGN.md, checked: each module of the gateway imports only modules
//! listed before it (shared services below features, no module importing its caller, no
//! import cycle between modules).

use std::path::{Path, PathBuf};

/// Lowest first, as in DESIGN.md's layout.
const ORDER: &[&str] = &[
    "util",
    "tls",
    "config",
    "address",
    "auth",
    "store",
    "generated",
    "metrics",
    "dns",
    "outbound",
    "signing",
    "policy",
    "routing",
    "accounts",
    "spam",
    "context",
    "quarantine",
    "delivery",
    "smtp",
    "admin",
    "server",
    "fuzzing",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_import_only_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs");
        let Some(rank) = ORDER.iter().position(|m| *m == module) else {
            assert!(["lib", "main"].contains(&module), "{module} is not in the layout (DESIGN.md)");
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let dep: String =
                text[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if let Some(dep_rank) = ORDER.iter().position(|m| *m == dep)
                && dep_rank > rank
            {
                upward.push(format!("{} imports {dep}", rel.display()));
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(upward.is_empty(), "imports against the layout:\n{}", upward.join("\n"));
}
