//! Layout rules for the whole workspace, checked on the source tree itself
//! (no network, no privileges):
//!
//! * no Rust source file is longer than [`MAX_LINES`] lines;
//! * inside a crate's `src/`, sibling modules do not import each other in a
//!   cycle (at the top level and inside every directory module);
//! * the sans-IO crates do not depend on transport or runtime crates.
//!
//! The tree is read from `CARGO_MANIFEST_DIR/..`, the workspace root.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The longest a `.rs` file may be.
const MAX_LINES: usize = 900;

/// The transport, runtime and dataplane crates that a sans-IO crate must not
/// have among its `[dependencies]` (dev-dependencies are fine). A name also
/// covers its family: `quinn` covers `quinn-foo`, `crossbeam` covers
/// `crossbeam-channel`.
const NOT_SANS_IO: &[&str] = &[
    "quinn",
    "quinn-proto",
    "quinn-udp",
    "dataplane",
    "crossbeam",
    "tokio",
];

/// Crate directories (relative to the workspace root) that must stay
/// sans-IO, with the dependencies each may not have. A directory that does
/// not exist yet is skipped.
const DEPENDENCY_RULES: &[(&str, &[&str])] =
    &[("moqt", NOT_SANS_IO), ("relay-engine", NOT_SANS_IO)];

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize()
        .unwrap_or_else(|e| panic!("workspace root {}: {e}", root.display()))
}

/// Whether the walk skips this directory: hidden ones and build output.
fn skipped_dir(name: &str) -> bool {
    name.starts_with('.') || name == "target"
}

/// Every `.rs` file under `root`, as paths relative to it with `/`
/// separators, sorted.
fn rust_files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                if !skipped_dir(&name) {
                    walk(root, &path, out);
                }
            } else if kind.is_file() && name.ends_with(".rs") {
                let rel = path.strip_prefix(root).unwrap();
                let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
                out.push(parts.join("/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn read(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---------------------------------------------------------------------
// File length
// ---------------------------------------------------------------------

#[test]
fn no_source_file_is_too_long() {
    let root = workspace_root();
    let files = rust_files(&root);
    // The walk must see the workspace, or the check below proves nothing.
    assert!(
        files.iter().any(|f| f == "moqt/src/lib.rs") && files.len() > 50,
        "the walk of {} found only {} .rs files",
        root.display(),
        files.len()
    );
    let mut too_long = Vec::new();
    for f in &files {
        let lines = read(&root, f).lines().count();
        if lines > MAX_LINES {
            too_long.push(format!("  {f}: {lines} lines"));
        }
    }
    assert!(
        too_long.is_empty(),
        "{} file(s) longer than {MAX_LINES} lines; split them along their seams:\n{}",
        too_long.len(),
        too_long.join("\n")
    );
}

// ---------------------------------------------------------------------
// Module cycles
// ---------------------------------------------------------------------

/// `src` with comments and the contents of string and character literals
/// blanked out, so that only code is searched for paths.
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(k).copied().unwrap_or('\0');
        if c[i] == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r'
            && (i == 0 || !ident(c[i - 1]) || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
            && matches!(at(i + 1), '"' | '#')
        {
            // A raw string r"..." / br#"..."# (or the raw identifier r#x).
            let mut j = i + 1;
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            if at(j) != '"' {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|h| at(j + 1 + h) == '#') {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && (at(i + 1) == '\\' || at(i + 2) == '\'') {
            // A character literal; a lifetime ('a) is kept as code.
            i += if at(i + 1) == '\\' { 3 } else { 2 };
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Sep,
    Open,
    Close,
    Comma,
    Other,
}

fn tokens(code: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphanumeric() || ch == '_' || ch == '$' {
            let start = i;
            i += 1;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((Tok::Sep, line));
            i += 2;
        } else {
            let t = match ch {
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                _ => Tok::Other,
            };
            out.push((t, line));
            i += 1;
        }
    }
    out
}

/// The paths in `toks[i..]` that follow a `::` (a single path, or a
/// `{...}` group of them, nested), each as its segments; `i` moves past
/// them. Only the leading identifiers of each path are kept.
fn path_tail(toks: &[(Tok, usize)], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    match toks.get(*i).map(|t| &t.0) {
        Some(Tok::Open) => {
            *i += 1;
            loop {
                match toks.get(*i).map(|t| &t.0) {
                    None => return,
                    Some(Tok::Close) => {
                        *i += 1;
                        return;
                    }
                    Some(Tok::Comma) => *i += 1,
                    Some(Tok::Ident(_)) | Some(Tok::Open) => path_tail(toks, i, prefix, out),
                    Some(_) => *i += 1,
                }
            }
        }
        Some(Tok::Ident(name)) => {
            let mut path = prefix.to_vec();
            path.push(name.clone());
            *i += 1;
            if toks.get(*i).map(|t| &t.0) == Some(&Tok::Sep) {
                *i += 1;
                path_tail(toks, i, &path, out);
            } else {
                out.push(path);
                // `x as y`: y is a local name, not a path.
                if toks.get(*i).map(|t| &t.0) == Some(&Tok::Ident("as".into())) {
                    *i += 2;
                }
            }
        }
        _ => out.push(prefix.to_vec()),
    }
}

/// The module paths, absolute within the crate, that the code of a file in
/// module `file_module` names through `crate::`, `super::` or `self::`,
/// each with the module it is named from (the file's, or an inline `mod x
/// { .. }` in it) and its line.
fn references(src: &str, file_module: &[String]) -> Vec<(Vec<String>, Vec<String>, usize)> {
    let toks = tokens(&code_only(src));
    let mut out = Vec::new();
    let mut here = file_module.to_vec();
    // Brace depth, and the depth at which each open inline module ends.
    let mut depth = 0usize;
    let mut inline_ends = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let after_sep = i > 0 && toks[i - 1].0 == Tok::Sep;
        match &toks[i].0 {
            Tok::Open => depth += 1,
            Tok::Close => {
                if inline_ends.last() == Some(&depth) {
                    inline_ends.pop();
                    here.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        let (Tok::Ident(first), line) = &toks[i] else {
            i += 1;
            continue;
        };
        let line = *line;
        if first == "mod" {
            if let (Some((Tok::Ident(name), _)), Some((Tok::Open, _))) =
                (toks.get(i + 1), toks.get(i + 2))
            {
                here.push(name.clone());
                inline_ends.push(depth + 1);
                i += 2;
                continue;
            }
        }
        if after_sep || !matches!(first.as_str(), "crate" | "$crate" | "super" | "self") {
            i += 1;
            continue;
        }
        // The module the path starts from.
        let mut base: Vec<String> = match first.as_str() {
            "super" => here[..here.len().saturating_sub(1)].to_vec(),
            "self" => here.to_vec(),
            _ => Vec::new(),
        };
        i += 1;
        if toks.get(i).map(|t| &t.0) != Some(&Tok::Sep) {
            continue;
        }
        i += 1;
        // super::super::...
        while toks.get(i).map(|t| &t.0) == Some(&Tok::Ident("super".into())) {
            base.pop();
            i += 1;
            if toks.get(i).map(|t| &t.0) == Some(&Tok::Sep) {
                i += 1;
            }
        }
        let mut paths = Vec::new();
        path_tail(&toks, &mut i, &base, &mut paths);
        out.extend(paths.into_iter().map(|p| (here.clone(), p, line)));
    }
    out
}

/// The module path of a file under `src/` (`lib.rs` and `main.rs` are the
/// root, `a/mod.rs` and `a.rs` are `a`); `None` for the separate crate
/// roots under `src/bin/`.
fn module_path(rel_to_src: &str) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel_to_src.split('/').map(str::to_owned).collect();
    if parts.first().map(String::as_str) == Some("bin") {
        return None;
    }
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if !(parts.is_empty() && matches!(stem, "lib" | "main")) && stem != "mod" {
        parts.push(stem.to_owned());
    }
    Some(parts)
}

/// The edges between sibling modules: from -> to -> the first place (file:line)
/// that makes it.
type Edges = BTreeMap<String, BTreeMap<String, String>>;

/// A cycle between sibling modules: where (`<crate>/src[/<module path>]`),
/// its modules sorted, and one path around it with a witness per step.
#[derive(Debug)]
struct Cycle {
    place: String,
    members: Vec<String>,
    path: String,
}

impl Cycle {
    fn key(&self) -> String {
        format!("{}: {{{}}}", self.place, self.members.join(", "))
    }
}

/// The sibling-module cycles of one crate whose `src/` files are given as
/// (path relative to `src/`, contents). `label` names the crate's `src/`
/// in reports.
fn cycles_in(label: &str, files: &[(String, String)]) -> Vec<Cycle> {
    let modules: Vec<(Vec<String>, &String, &String)> = files
        .iter()
        .filter_map(|(rel, src)| module_path(rel).map(|m| (m, rel, src)))
        .collect();
    // The child modules of every module that has any.
    let mut children: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    for (m, _, _) in &modules {
        for k in 0..m.len() {
            children
                .entry(m[..k].to_vec())
                .or_default()
                .insert(m[k].clone());
        }
    }
    // Edges per parent module: a file in parent::z naming parent::w.
    let mut graphs: BTreeMap<Vec<String>, Edges> = BTreeMap::new();
    for (module, rel, src) in &modules {
        for (here, target, line) in references(src, module) {
            let common = here.iter().zip(&target).take_while(|(a, b)| a == b).count();
            let (Some(z), Some(w)) = (here.get(common), target.get(common)) else {
                continue;
            };
            let parent = &here[..common];
            if !children.get(parent).is_some_and(|c| c.contains(w)) {
                continue;
            }
            graphs
                .entry(parent.to_vec())
                .or_default()
                .entry(z.clone())
                .or_default()
                .entry(w.clone())
                .or_insert_with(|| format!("{label}/{rel}:{line}"));
        }
    }
    let mut found = Vec::new();
    for (parent, edges) in &graphs {
        let place = if parent.is_empty() {
            label.to_owned()
        } else {
            format!("{label}/{}", parent.join("/"))
        };
        for members in strongly_connected(edges) {
            let path = cycle_path(edges, &members);
            found.push(Cycle {
                place: place.clone(),
                members,
                path,
            });
        }
    }
    found
}

/// The strongly connected components of more than one node, each sorted.
fn strongly_connected(edges: &Edges) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges
        .iter()
        .flat_map(|(a, to)| std::iter::once(a).chain(to.keys()))
        .collect();
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for next in edges.get(&n).into_iter().flat_map(|t| t.keys()) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in &nodes {
        if done.contains(*n) || !reachable[n].contains(*n) {
            continue;
        }
        let comp: Vec<String> = nodes
            .iter()
            .filter(|m| reachable[n].contains(**m) && reachable[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        done.extend(comp.iter().cloned());
        out.push(comp);
    }
    out
}

/// A shortest way from the first member of a component back to itself,
/// as `a -> b (file:line) -> a (file:line)`.
fn cycle_path(edges: &Edges, members: &[String]) -> String {
    let start = &members[0];
    // Breadth-first inside the component, remembering the way back.
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    let mut closing = None;
    while let Some(n) = queue.pop_front() {
        for next in edges.get(&n).into_iter().flat_map(|t| t.keys()) {
            if !members.contains(next) {
                continue;
            }
            if next == start {
                closing = Some(n.clone());
                break;
            }
            if !prev.contains_key(next) {
                prev.insert(next.clone(), n.clone());
                queue.push_back(next.clone());
            }
        }
        if closing.is_some() {
            break;
        }
    }
    let mut way = vec![start.clone()];
    let mut n = closing.expect("a component member reaches itself");
    while &n != start {
        way.push(n.clone());
        n = prev[&n].clone();
    }
    way[1..].reverse();
    way.push(start.clone());
    let mut text = way[0].clone();
    for pair in way.windows(2) {
        text.push_str(&format!(" -> {} ({})", pair[1], edges[&pair[0]][&pair[1]]));
    }
    text
}

/// Every crate of the tree: a directory with a `Cargo.toml` and a `src/`,
/// as its path relative to the root.
fn crates(root: &Path) -> Vec<String> {
    let mut out = BTreeSet::new();
    for f in rust_files(root) {
        if let Some((dir, _)) = f.split_once("/src/") {
            if root.join(dir).join("Cargo.toml").is_file() {
                out.insert(dir.to_owned());
            }
        }
    }
    out.into_iter().collect()
}

#[test]
fn no_cycle_between_sibling_modules() {
    let root = workspace_root();
    let crates = crates(&root);
    assert!(
        crates.iter().any(|c| c == "moqt") && crates.iter().any(|c| c == "relay"),
        "crates found: {crates:?}"
    );
    let all = rust_files(&root);
    let mut found = Vec::new();
    for krate in &crates {
        let src = format!("{krate}/src/");
        let files: Vec<(String, String)> = all
            .iter()
            .filter_map(|f| {
                f.strip_prefix(src.as_str())
                    .map(|rel| (rel.to_owned(), read(&root, f)))
            })
            .collect();
        found.extend(cycles_in(src.trim_end_matches('/'), &files));
    }
    for c in &found {
        eprintln!("cycle {}: {}", c.key(), c.path);
    }
    let new: Vec<String> = found
        .iter()
        .map(|c| format!("  {}\n    {}", c.key(), c.path))
        .collect();
    assert!(
        new.is_empty(),
        "{} import cycle(s) between sibling modules; move the shared part \
         into one module that both use:\n{}",
        new.len(),
        new.join("\n")
    );
}

/// The cycle finder on a made-up crate: it must see a cycle through
/// `crate::`, `super::` and grouped imports, and nothing in the acyclic part
/// (nor in comments, strings, or through an inline test module).
#[test]
fn cycle_finder_finds_a_planted_cycle() {
    let file = |rel: &str, src: &str| (rel.to_owned(), src.to_owned());
    let files = [
        file("lib.rs", "mod a; mod b; mod c; mod d; mod e;"),
        file("a.rs", "use crate::{b::X, d};"),
        file("b.rs", "fn f() { crate::c::g(); }"),
        file(
            "c.rs",
            "// crate::d is only mentioned\nuse crate::a as _; use crate::e::E;\n\
             const S: &str = \"crate::d\"; const C: char = '\\'';",
        ),
        // Its test module's `super` is `e`, not the crate root.
        file(
            "e.rs",
            "pub struct E;\n#[cfg(test)]\nmod tests {\n    use super::c;\n}",
        ),
        file("d/mod.rs", "mod p; mod q;"),
        file("d/p.rs", "use super::q::Y;"),
        file("d/q.rs", "use crate::d::{p::{self, Z}};"),
    ];
    let found = cycles_in("x/src", &files);
    let keys: Vec<String> = found.iter().map(Cycle::key).collect();
    assert_eq!(keys, ["x/src: {a, b, c}", "x/src/d: {p, q}"], "{found:#?}");
    assert_eq!(
        found[0].path,
        "a -> b (x/src/a.rs:1) -> c (x/src/b.rs:1) -> a (x/src/c.rs:2)"
    );
}

// ---------------------------------------------------------------------
// Dependencies
// ---------------------------------------------------------------------

/// The names of the crates in one dependency table: the key, or the
/// `package` a renamed dependency stands for.
fn dependency_names(table: &toml::Table) -> Vec<String> {
    table
        .iter()
        .map(|(key, spec)| {
            spec.get("package")
                .and_then(toml::Value::as_str)
                .unwrap_or(key)
                .to_owned()
        })
        .collect()
}

#[test]
fn sans_io_crates_have_no_transport_dependencies() {
    let root = workspace_root();
    let mut checked = Vec::new();
    let mut bad = Vec::new();
    for (dir, forbidden) in DEPENDENCY_RULES {
        let manifest = root.join(dir).join("Cargo.toml");
        if !root.join(dir).is_dir() {
            eprintln!("{dir}/ does not exist (yet): skipped");
            continue;
        }
        let text =
            fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        let doc: toml::Table = text
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        // [dependencies] and [target.'cfg(...)'.dependencies].
        let mut tables = vec![("dependencies".to_owned(), doc.get("dependencies"))];
        if let Some(targets) = doc.get("target").and_then(toml::Value::as_table) {
            for (cfg, t) in targets {
                tables.push((format!("target.{cfg}.dependencies"), t.get("dependencies")));
            }
        }
        for (name, table) in tables {
            let Some(table) = table.and_then(toml::Value::as_table) else {
                continue;
            };
            for dep in dependency_names(table) {
                let hit = forbidden
                    .iter()
                    .any(|f| dep == *f || dep.starts_with(&format!("{f}-")));
                if hit {
                    bad.push(format!("  {dir}/Cargo.toml [{name}]: {dep}"));
                }
            }
        }
        checked.push(*dir);
    }
    assert!(checked.contains(&"moqt"), "moqt/Cargo.toml was not checked");
    assert!(
        bad.is_empty(),
        "sans-IO crates depend on transport or runtime crates \
         (only dev-dependencies may):\n{}",
        bad.join("\n")
    );
}
