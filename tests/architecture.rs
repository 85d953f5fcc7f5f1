//! The import rules of the crate's layout, checked over `src/` so that a dependency running
//! the wrong way fails the tests (README, "Architecture"):
//!
//! - leaf modules (`jose`, `uri`, `secret`, `body`, `diagnostics`, `metrics`, `principal`)
//!   import no other module of the crate;
//! - `config` is data: it imports only the leaves it validates with;
//! - `answer` (every HTTP answer the gateway makes) knows config and bodies, nothing that
//!   decides;
//! - `auth` never imports the listener (`server`, `tls::server`), the pipeline, the proxy or
//!   the router; key fetching uses `tls::client`;
//! - `proxy` never imports `auth`: it forwards a `Principal`, it does not read tokens;
//! - there are no import cycles between top-level modules.
//!
//! Imports are read from the source text (`crate::name` paths, including grouped
//! `crate::{a, b::c}` lists); `//` comments are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules and the crate modules each may import (`None`: no limit but the
/// forbidden list and acyclicity).
const ALLOWED: &[(&str, &[&str])] = &[
    ("jose", &[]),
    ("uri", &[]),
    ("secret", &[]),
    ("body", &[]),
    ("diagnostics", &[]),
    ("metrics", &[]),
    ("write_batch", &[]),
    ("principal", &["secret"]),
    ("config", &["jose", "uri", "secret"]),
    ("answer", &["body", "config"]),
    ("tls", &["config", "jose"]),
    ("router", &["config", "uri"]),
];

/// Paths a module must never import, whatever else it may.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("auth", &["server", "tls::server", "pipeline", "proxy", "router", "lifecycle", "admin", "demo"]),
    ("proxy", &["auth", "pipeline", "server", "router", "lifecycle", "admin", "demo"]),
    ("pipeline", &["server", "lifecycle", "admin", "demo"]),
    ("server", &["lifecycle", "admin", "demo"]),
    ("login", &["server", "pipeline", "proxy", "router", "lifecycle", "admin", "demo"]),
];

#[test]
fn imports_follow_the_layering() {
    let imports = crate_imports();
    let mut violations = Vec::new();
    for (module, paths) in &imports {
        if let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| m == module) {
            for path in paths {
                let top = top_of(path);
                if top != module && !allowed.contains(&top) {
                    violations.push(format!("{module} imports crate::{path} (may import only {allowed:?})"));
                }
            }
        }
        if let Some((_, forbidden)) = FORBIDDEN.iter().find(|(m, _)| m == module) {
            for path in paths {
                if forbidden.iter().any(|f| path == f || path.starts_with(&format!("{f}::"))) {
                    violations.push(format!("{module} imports crate::{path}, which it must not"));
                }
            }
        }
    }
    assert!(violations.is_empty(), "import rules broken:\n{}", violations.join("\n"));
}

#[test]
fn top_level_modules_have_no_import_cycles() {
    let imports = crate_imports();
    let graph: BTreeMap<&str, BTreeSet<&str>> = imports
        .iter()
        .map(|(m, paths)| (m.as_str(), paths.iter().map(|p| top_of(p)).filter(|t| t != m).collect()))
        .collect();
    // Depth-first search with colours: a grey node reached again closes a cycle.
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        match state.get(node) {
            Some(1) => {
                let start = stack.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(node);
                return Some(cycle);
            }
            Some(2) => return None,
            _ => {}
        }
        state.insert(node, 1);
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(node, 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        let mut stack = Vec::new();
        if let Some(cycle) = visit(node, &graph, &mut state, &mut stack) {
            panic!("import cycle between top-level modules: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_reader_finds_grouped_and_nested_imports() {
    let text = "use crate::{admin, auth::token::X, config};\n// use crate::server;\nlet x = crate::jose::sha256(b);\n";
    let mut found = BTreeSet::new();
    collect(text, &mut found);
    let found: Vec<_> = found.into_iter().collect();
    assert_eq!(found, ["admin", "auth::token::X", "config", "jose::sha256"]);
    let mut nested = BTreeSet::new();
    collect("use crate::{a::{b, c}, d};", &mut nested);
    assert_eq!(nested.into_iter().collect::<Vec<_>>(), ["a::b", "a::c", "d"]);
}

/// Each top-level module (a file `src/x.rs` or a folder `src/x/`) and the `crate::` paths
/// its files use.
fn crate_imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).unwrap_or(&file);
        let mut parts = relative.iter().map(|p| p.to_string_lossy().into_owned());
        let first = parts.next().unwrap_or_default();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        collect(&text, out.entry(module).or_default());
    }
    assert!(out.len() > 10, "found only {:?} under {}", out.keys(), src.display());
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Adds the paths after every `crate::` in `text` to `found`, skipping `//` comments. The
/// lines are joined first, so a `use crate::a::{…}` group spread over lines is read whole.
fn collect(text: &str, found: &mut BTreeSet<String>) {
    let joined: Vec<&str> = text.lines().map(|line| line.split("//").next().unwrap_or_default()).collect();
    let joined = joined.join(" ");
    {
        let mut rest = joined.as_str();
        while let Some(at) = rest.find("crate::") {
            // `other_crate::` is not ours.
            let preceded_by_ident = rest[..at].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_');
            rest = &rest[at + "crate::".len()..];
            if preceded_by_ident {
                continue;
            }
            let (paths, consumed) = path_list(rest);
            found.extend(paths);
            rest = &rest[consumed.min(rest.len())..];
        }
    }
}

/// The paths at the start of `text`: `a::b::c`, or a `{…}` group of them (nested groups
/// expanded); returns them and how many bytes were read.
fn path_list(text: &str) -> (Vec<String>, usize) {
    if let Some(inner) = text.strip_prefix('{') {
        let mut depth = 1;
        let mut end = inner.len();
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let body = &inner[..end];
        let mut out = Vec::new();
        for item in split_top_level(body) {
            let item = item.trim();
            if item.is_empty() || item == "self" {
                continue;
            }
            let (paths, _) = path_list(item);
            out.extend(paths);
        }
        return (out, end + 2);
    }
    let mut segments = Vec::new();
    let mut rest = text;
    let mut consumed = 0;
    loop {
        let len = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        segments.push(&rest[..len]);
        consumed += len;
        rest = &rest[len..];
        match rest.strip_prefix("::") {
            Some(next) if next.starts_with('{') => {
                let (inner, used) = path_list(next);
                let prefix = segments.join("::");
                let paths = inner.into_iter().map(|p| format!("{prefix}::{p}")).collect();
                return (paths, consumed + 2 + used);
            }
            Some(next) => {
                consumed += 2;
                rest = next;
            }
            None => break,
        }
    }
    if segments.is_empty() { (Vec::new(), consumed) } else { (vec![segments.join("::")], consumed) }
}

/// Splits a group's body at commas that are not inside a nested group.
fn split_top_level(body: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&body[start..]);
    items
}

fn top_of(path: &str) -> &str {
    path.split("::").next().unwrap_or(path)
}
