//! The module layering `src/lib.rs` states, checked on the source text: each lower layer imports
//! only the modules beneath it, and the pure layers (`domain`, `forecast`, `plan`) import no
//! server, async-runtime or dataframe crate. A new `use` that points upwards fails here, in CI,
//! instead of slowly turning the module graph into a knot.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// A layer: the top-level module under `src/`, the crate modules it may import, and the external
/// crates it must not name.
struct Layer {
    /// The directory (or file stem) under `src/`.
    module: &'static str,
    /// Crate modules it may name besides itself.
    may_import: &'static [&'static str],
    /// External crates it must not name.
    forbidden_crates: &'static [&'static str],
}

/// What the server, the runtime and the dataframe engine are: kept out of the pure layers, so that
/// forecasting and planning stay plain functions on slices.
const SERVER_AND_RUNTIME: &[&str] = &[
    "tonic",
    "tonic_health",
    "tonic_reflection",
    "prost",
    "axum",
    "tower",
    "tokio",
    "tokio_util",
    "tokio_stream",
    "polars",
];

const LAYERS: &[Layer] = &[
    Layer {
        module: "domain",
        may_import: &[],
        forbidden_crates: SERVER_AND_RUNTIME,
    },
    Layer {
        module: "atomic_file",
        may_import: &[],
        forbidden_crates: SERVER_AND_RUNTIME,
    },
    Layer {
        module: "forecast",
        may_import: &["domain"],
        forbidden_crates: SERVER_AND_RUNTIME,
    },
    Layer {
        module: "plan",
        may_import: &["domain"],
        forbidden_crates: SERVER_AND_RUNTIME,
    },
    Layer {
        module: "events",
        may_import: &["domain"],
        forbidden_crates: &["tonic", "prost", "axum", "polars"],
    },
    Layer {
        module: "ingest",
        may_import: &["domain"],
        forbidden_crates: &["tonic", "prost", "axum"],
    },
    Layer {
        module: "store",
        may_import: &["domain", "atomic_file"],
        forbidden_crates: &["tonic", "prost", "axum"],
    },
    Layer {
        module: "registry",
        may_import: &["domain", "forecast", "atomic_file"],
        forbidden_crates: &["tonic", "prost", "axum", "polars"],
    },
    Layer {
        module: "simulate",
        may_import: &["domain", "forecast", "plan", "events"],
        forbidden_crates: &["tonic", "prost", "axum", "polars"],
    },
    Layer {
        module: "fleet",
        may_import: &["domain"],
        forbidden_crates: &["axum", "polars"],
    },
    Layer {
        module: "app",
        may_import: &[
            "domain",
            "fleet",
            "forecast",
            "plan",
            "events",
            "ingest",
            "store",
            "registry",
            "simulate",
            "atomic_file",
        ],
        forbidden_crates: &["tonic", "prost", "axum"],
    },
];

/// Every `.rs` file of a module: `src/<module>.rs` and everything under `src/<module>/`.
fn module_files(src: &Path, module: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let single = src.join(format!("{module}.rs"));
    if single.is_file() {
        files.push(single);
    }
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The source without comments (line comments, doc comments and block comments), so prose that
/// mentions a module does not count as an import.
fn without_comments(text: &str) -> String {
    let mut code = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |end| &after[end..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
        } else {
            let next = rest.chars().next().expect("rest is not empty");
            code.push(next);
            rest = &rest[next.len_utf8()..];
        }
    }
    code
}

/// The crate modules a piece of code names: `crate::x` and each top-level item of
/// `crate::{x::.., y}`.
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (index, _) in code.match_indices("crate::") {
        let preceded_by_ident = code[..index]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if preceded_by_ident {
            continue;
        }
        let after = &code[index + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            let mut at_item_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        at_item_start = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 && at_item_start {
                    if c.is_alphanumeric() || c == '_' {
                        item.push(c);
                        continue;
                    }
                    if !item.is_empty() {
                        names.insert(std::mem::take(&mut item));
                        at_item_start = false;
                    }
                }
            }
            if !item.is_empty() {
                names.insert(item);
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// Whether `code` names external crate `name` as a path root (`name::`) or in a `use name`.
fn names_crate(code: &str, name: &str) -> bool {
    let pattern = format!("{name}::");
    code.match_indices(&pattern).any(|(index, _)| {
        !code[..index]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
    }) || code.contains(&format!("use {name};"))
}

#[test]
fn lower_layers_import_nothing_above_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for layer in LAYERS {
        let files = module_files(&src, layer.module);
        assert!(
            !files.is_empty(),
            "no source found for layer {}",
            layer.module
        );
        for file in files {
            let code = without_comments(&fs::read_to_string(&file).expect("a readable source"));
            let shown = file
                .strip_prefix(&src)
                .unwrap_or(&file)
                .display()
                .to_string();
            for module in crate_modules(&code) {
                if module != layer.module
                    && module != "self"
                    && !layer.may_import.contains(&module.as_str())
                {
                    violations.push(format!("src/{shown} imports crate::{module}"));
                }
            }
            for name in layer.forbidden_crates {
                if names_crate(&code, name) {
                    violations.push(format!("src/{shown} names the `{name}` crate"));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layering in src/lib.rs:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_plain_imports_but_not_comments() {
    let code = without_comments(
        "use crate::{domain::Step, plan::{Plan, Workload}};\n\
         // use crate::service::Nothing;\n\
         /* crate::app */ let x = crate::events::load();\n\
         use tonic::Status;\n\
         let y = mycrate::thing();\n",
    );
    let names: Vec<String> = crate_modules(&code).into_iter().collect();
    assert_eq!(names, ["domain", "events", "plan"]);
    assert!(names_crate(&code, "tonic"));
    assert!(!names_crate(&code, "polars"));
    assert!(!names_crate("let a = my_tokio::x;", "tokio"));
}
