//! Data flows one way through the library: no two top-level modules of `src/` may
//! import each other, directly or round a longer loop. This reads every `src/**/*.rs`
//! (not `src/bin/`), collects the `crate::<module>` paths each top-level module uses
//! (also through `crate::{...}` groups and the re-exports of `lib.rs`), and fails
//! on any cycle, naming it. Unit tests (`#[cfg(test)] mod ... { }` and `tests.rs`
//! files) may reach across layers, so they are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Cycles allowed for now, as (module, module it imports back). Each must still
/// exist, so the list shrinks when the cycle goes. Empty: none is allowed.
const KNOWN: &[(&str, &str)] = &[];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without `//` comments (doc links are not imports) and without inline
/// `#[cfg(test)] mod name { ... }` blocks.
fn code(text: &str) -> String {
    let text = text
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "#[cfg(test)]".len()..];
        let item = after.trim_start();
        let block = item
            .strip_prefix("mod ")
            .map(|m| m.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_'))
            .and_then(|m| m.trim_start().strip_prefix('{'));
        let Some(body) = block else {
            rest = after;
            continue;
        };
        let mut depth = 1;
        let end = body.char_indices().find_map(|(j, c)| {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            (depth == 0).then_some(j + 1)
        });
        rest = &body[end.unwrap_or(body.len())..];
    }
    out.push_str(rest);
    out
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of everything `text` names under `crate::`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // part of a longer name, such as `my_crate::`
        }
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first segment of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        out.push(ident(&group[j..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(rest).to_string());
        }
    }
    out
}

/// `lib.rs`'s `pub use module::...::{Names}`: re-exported name -> its module.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in code(lib).lines() {
        let Some(path) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim_end_matches(';');
        let module = ident(path).to_string();
        let names = match path.find('{') {
            Some(b) => path[b + 1..].trim_end_matches('}').to_string(),
            None => path.rsplit("::").next().unwrap_or("").to_string(),
        };
        for n in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            map.insert(n.to_string(), module.clone());
        }
    }
    map
}

/// Which top-level modules each top-level module imports (itself excluded).
fn module_graph(src: &Path) -> Graph {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let names = reexports(&lib);
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut modules = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(src).expect("under src");
        let top = rel.components().next().expect("a path").as_os_str();
        let top = top.to_string_lossy();
        if top != "lib.rs" && top != "bin" {
            modules.insert(top.trim_end_matches(".rs").to_string());
        }
    }
    let mut g: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in &files {
        let rel = f.strip_prefix(src).expect("under src");
        let top = rel.components().next().expect("a path").as_os_str();
        let top = top.to_string_lossy().trim_end_matches(".rs").to_string();
        if !modules.contains(&top) || f.file_stem().is_some_and(|s| s == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("a source file");
        for seg in crate_paths(&code(&text)) {
            let target = if modules.contains(&seg) {
                Some(seg)
            } else {
                names.get(&seg).cloned()
            };
            if let Some(t) = target.filter(|t| *t != top) {
                g.get_mut(&top).expect("a module").insert(t);
            }
        }
    }
    g
}

/// A cycle of `g` as `a -> b -> ... -> a`, if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    // 0 = unvisited, 1 = on the current path, 2 = done.
    fn visit(
        g: &Graph,
        m: &str,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for next in g.get(m).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let from = path.iter().position(|p| p == next).expect("on the path");
                    let mut cycle = path[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(g, next, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if state.get(m).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(g, m, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g = module_graph(&src);
    // The graph must be real: these edges are the spine of the library.
    for (a, b) in [
        ("comm", "exec"),
        ("exec", "algo"),
        ("plan", "topo"),
        ("bootstrap", "transport"),
    ] {
        assert!(
            g[a].contains(b),
            "{a} no longer imports {b}: the reader of this test is broken ({g:?})"
        );
    }
    for (a, b) in KNOWN {
        assert!(
            g.get_mut(*a).is_some_and(|s| s.remove(*b)),
            "the known cycle edge {a} -> {b} is gone: remove it from KNOWN"
        );
    }
    if let Some(cycle) = find_cycle(&g) {
        panic!(
            "import cycle between top-level modules: {} (data flows one way: \
             call -> plan -> execute -> transport/device)",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_reader_sees_groups_reexports_and_cycles() {
    let text = code(
        "use crate::{alpha, beta::x, gamma::{y, z}};\n\
         // crate::commented\n\
         let v = crate::delta::f(); use crate::Thing;\n\
         #[cfg(test)]\nmod tests {\n fn f() { crate::hidden::g(); }\n}\n\
         #[cfg(test)] use crate::testonly;",
    );
    assert_eq!(
        crate_paths(&text),
        ["alpha", "beta", "gamma", "delta", "Thing", "testonly"]
    );
    let names = reexports("pub use comm::{A, B};\npub use topo::Topology;\nmod x;");
    assert_eq!(names["A"], "comm");
    assert_eq!(names["B"], "comm");
    assert_eq!(names["Topology"], "topo");
    let g = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(find_cycle(&g(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    assert_eq!(
        find_cycle(&g(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
