//! The layer rule of `src/lib.rs`, checked: every module of the crate sits
//! in one layer of the table at the top of `src/lib.rs`, and imports
//! (`crate::` paths, in `use` lines or inline) only from layers below its
//! own. Also: no Python bytecode is tracked by git.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Module name -> layer, from the `| N | [`a`], [`b`] | ... |` rows of the
/// crate documentation.
fn layers(lib_rs: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for line in lib_rs.lines() {
        let Some(row) = line.strip_prefix("//! | ") else {
            continue;
        };
        let mut cells = row.split(" | ");
        let Some(Ok(layer)) = cells.next().map(str::parse::<u32>) else {
            continue;
        };
        let modules = cells.next().unwrap_or_default();
        for name in modules.split(", ") {
            let name = name.trim().trim_start_matches("[`").trim_end_matches("`]");
            out.insert(name.to_owned(), layer);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The crate-level module a file belongs to (`src/mcp/server.rs` -> `mcp`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// Every top-level module named by a `crate::` path in the code (comments
/// are not imports), with the line it appears on.
fn imports(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a::X, b};`
                let end = group.find('}').unwrap_or(group.len());
                group[..end].split(',').collect()
            } else {
                vec![rest]
            };
            for name in names {
                let name: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push((name, n + 1));
                }
            }
        }
    }
    out
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let table = layers(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    assert!(
        table.len() > 5,
        "no layer table found in src/lib.rs: {table:?}"
    );
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&mine) = table.get(&module) else {
            wrong.push(format!(
                "{}: module `{module}` has no layer in src/lib.rs",
                file.display()
            ));
            continue;
        };
        for (name, line) in imports(&std::fs::read_to_string(file).unwrap()) {
            if name == module {
                continue;
            }
            match table.get(&name) {
                Some(&theirs) if theirs < mine => {}
                Some(&theirs) => wrong.push(format!(
                    "{}:{line}: `{module}` (layer {mine}) imports `{name}` (layer {theirs})",
                    file.display()
                )),
                None => wrong.push(format!(
                    "{}:{line}: `crate::{name}` is not a module of the layer table",
                    file.display()
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "layer rule broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_what_it_must() {
    let t = layers("//! | 2 | [`a`], [`b`] | x |\n//! | 1 | [`c`] | y |\n");
    assert_eq!(t["a"], 2);
    assert_eq!(t["c"], 1);
    let found = imports("use crate::{c::X, a};\nlet y = crate::b::f(); // crate::zzz\n");
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["c", "a", "b"]);
}

#[test]
fn no_python_bytecode_is_tracked() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root.join(".git").exists() {
        return; // not a checkout (a packaged crate): nothing is tracked
    }
    let out = std::process::Command::new("git")
        .args(["ls-files"])
        .current_dir(root)
        .output()
        .expect("git ls-files");
    assert!(out.status.success());
    let tracked = String::from_utf8_lossy(&out.stdout);
    let bad: Vec<&str> = tracked
        .lines()
        .filter(|f| f.contains("__pycache__/") || f.ends_with(".pyc"))
        .collect();
    assert!(bad.is_empty(), "Python bytecode is tracked: {bad:?}");
}
