//! The module layering of `src/`, as ARCHITECTURE.md draws it: every
//! `crate::` and `super::` path in a source file is an edge from that file's
//! module to the module it names. The test fails on an import that runs up
//! the layers, on a cycle between top-level modules, and on a cycle between
//! the files of one module (a parent's own `mod`/`pub use` lines naming its
//! children are its table of contents, not an import, and are not counted).
//! Unit-test files (`tests.rs`, `#[cfg(test)] mod tests` blocks) may reach
//! anywhere and are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use the modules of lower layers (and the
/// crate root's helpers); nothing of its own layer or above. `rpc` is the
/// generated gRPC code, its conversions and the channel pool: the transport
/// that replication and the controller are built on, so it sits low; the
/// services themselves live next to what they serve. `security` (TLS
/// acceptors, principals) builds on `config` only, so that both listeners,
/// the Kafka one in `server` and the node-to-node one under `rpc`'s users,
/// can use it.
const LAYERS: &[&[&str]] = &[
    &["protocol", "config", "metrics", "telemetry"],
    &["log", "rpc", "security"],
    &["replication"],
    &["controller"],
    &["broker"],
    &["group"],
    &["server", "admin"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// `src/a/b.rs` → ["a", "b"]; `src/a/mod.rs` → ["a"]; `src/lib.rs` → [].
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments, string literals and `#[cfg(test)]` items.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut skip_depth: Option<usize> = None;
    let mut depth = 0usize;
    let mut pending_cfg_test = false;
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or("");
        let trimmed = line.trim();
        if trimmed.starts_with("#[cfg(test)]") {
            pending_cfg_test = true;
            continue;
        }
        let opens = line.matches('{').count();
        let closes = line.matches('}').count();
        if pending_cfg_test && skip_depth.is_none() && !trimmed.is_empty() {
            pending_cfg_test = false;
            if opens > closes {
                skip_depth = Some(depth);
            } else {
                // A one-line item (`mod tests;`, a `use`): skip just it.
                continue;
            }
        }
        depth = depth + opens - closes.min(depth + opens);
        if let Some(d) = skip_depth {
            if depth <= d {
                skip_depth = None;
            }
            continue;
        }
        // Drop string literals (messages mention paths).
        let mut in_str = false;
        let mut prev = ' ';
        for c in line.chars() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

fn idents_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::b, c}`: the first segment of each entry.
            let end = group.find('}').unwrap_or(group.len());
            for entry in group[..end].split(',') {
                let name: String = entry
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

struct Graph {
    /// Top-level module → modules it uses, with one file that does.
    modules: BTreeMap<String, BTreeMap<String, String>>,
    /// File module path → sibling or parent file module paths it uses.
    files: BTreeMap<String, BTreeSet<String>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let known: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(&src, f)).collect();
    let mut g = Graph {
        modules: BTreeMap::new(),
        files: BTreeMap::new(),
    };
    for file in &files {
        let path = module_path(&src, file);
        let name = file.file_name().unwrap().to_string_lossy();
        if path.first().is_some_and(|p| p == "bin") || name == "tests.rs" || path.is_empty() {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let top = path[0].clone();
        let is_mod_rs = name == "mod.rs";
        // `super` of `a/b.rs` (module a::b) and of `a/b/mod.rs` alike is a.
        let parent: Vec<String> = path[..path.len() - 1].to_vec();
        let here = path.join("::");
        let mut targets: Vec<Vec<String>> = Vec::new();
        for m in idents_after(&code, "crate::") {
            targets.push(vec![m]);
        }
        for m in idents_after(&code, "super::") {
            let mut t = parent.clone();
            t.push(m);
            targets.push(t);
        }
        for t in targets {
            let Some(first) = t.first() else { continue };
            if known.contains(&vec![first.clone()]) && *first != top {
                g.modules
                    .entry(top.clone())
                    .or_default()
                    .entry(first.clone())
                    .or_insert_with(|| file.display().to_string());
            }
            // The longest known file module the path names.
            let target = (1..=t.len())
                .rev()
                .map(|n| t[..n].to_vec())
                .find(|p| known.contains(p));
            let Some(target) = target else { continue };
            if target == path || target.first() != Some(&top) {
                continue;
            }
            // A parent naming its own children: its table of contents.
            if is_mod_rs && target.len() > path.len() && target[..path.len()] == path[..] {
                continue;
            }
            g.files
                .entry(here.clone())
                .or_default()
                .insert(target.join("::"));
        }
    }
    g
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn every_import_points_down_the_layers() {
    let g = graph();
    let mut wrong = Vec::new();
    for (from, tos) in &g.modules {
        let Some(lf) = layer(from) else {
            wrong.push(format!("{from} is in no layer of LAYERS"));
            continue;
        };
        for (to, file) in tos {
            match layer(to) {
                Some(lt) if lt < lf => {}
                _ => wrong.push(format!("{from} uses {to} ({file})")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_module_cycles() {
    let g = graph();
    let edges: BTreeMap<String, BTreeSet<String>> = g
        .modules
        .iter()
        .map(|(k, v)| (k.clone(), v.keys().cloned().collect()))
        .collect();
    assert_eq!(find_cycle(&edges), None);
}

#[test]
fn no_file_cycles_within_a_module() {
    let g = graph();
    assert_eq!(find_cycle(&g.files), None);
}

#[test]
fn the_checker_sees_cycles_and_upward_imports() {
    // The checker itself: a cycle is found, a chain is not.
    let edges = |pairs: &[(&str, &str)]| {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            m.entry(a.to_string()).or_default().insert(b.to_string());
        }
        m
    };
    assert!(find_cycle(&edges(&[("a", "b"), ("b", "c"), ("c", "a")])).is_some());
    assert_eq!(find_cycle(&edges(&[("a", "b"), ("b", "c")])), None);
    assert_eq!(
        idents_after("use crate::{log, replication::x};", "crate::"),
        ["log", "replication"]
    );
    assert_eq!(
        idents_after("my_crate::y; crate::rpc::pb", "crate::"),
        ["rpc"]
    );
    let code = code_of("use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\nuse crate::c; // crate::d\n");
    assert_eq!(idents_after(&code, "crate::"), ["a", "c"]);
    assert!(layer("server") > layer("broker"));
    assert!(layer("rpc") < layer("replication"));
}
