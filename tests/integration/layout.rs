//! The shape of `src/`, held to what `src/lib.rs` says of it: no top-level module reaches
//! itself through the others (each `crate::` path names the module it imports), and the
//! module map in `lib.rs` names every module. Read from the source text, so that it runs
//! with `cargo test` and needs no other tool.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
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

/// The top-level module a file belongs to: its first folder under `src/`, or its name.
fn module_of(path: &Path) -> String {
    let relative = path.strip_prefix(src()).unwrap();
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// The first identifier of `text`.
fn ident(text: &str) -> &str {
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(text.len());
    &text[..end]
}

/// The top-level modules one file's code names through `crate::` (a `use crate::{a, b::c}`
/// group names each of its items), comments left out.
fn imports(text: &str) -> BTreeSet<String> {
    let code: String =
        text.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(ident(item.trim()).to_owned());
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.insert(ident(item.trim()).to_owned());
        } else {
            found.insert(ident(rest).to_owned());
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

/// Every top-level module and those it imports (`lib.rs`, `main.rs` and the test helpers
/// of `lib.rs` left out).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_of(&file);
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let imported: Vec<String> =
            imports(&text).into_iter().filter(|m| *m != module && m != "test_support").collect();
        graph.entry(module).or_default().extend(imported);
    }
    graph
}

/// The modules `from` reaches through its imports.
fn reach(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut next: Vec<&str> = graph.get(from).into_iter().flatten().map(String::as_str).collect();
    while let Some(module) = next.pop() {
        if seen.insert(module.to_owned()) {
            next.extend(graph.get(module).into_iter().flatten().map(String::as_str));
        }
    }
    seen
}

/// Issue 27: no top-level module of `src/` reaches itself through the others.
#[test]
fn no_module_reaches_itself_through_the_others() {
    let graph = graph();
    assert!(graph.len() > 10, "the modules were read: {:?}", graph.keys());
    let circles: Vec<String> = graph
        .keys()
        .filter(|m| reach(&graph, m).contains(*m))
        .map(|m| {
            let back: Vec<&String> = graph[m].iter().filter(|n| reach(&graph, n).contains(m)).collect();
            format!("{m} -> {back:?} -> ... -> {m}")
        })
        .collect();
    assert!(circles.is_empty(), "import circles:\n{}", circles.join("\n"));
}

/// The reader finds what it must: a group, a nested path, a path inside code, and skips
/// comments.
#[test]
fn imports_are_read_from_groups_paths_and_code() {
    let text =
        "use crate::{config::{A, B}, dns};\n// crate::http in a comment\nlet x = crate::probe::run();\n";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["config", "dns", "probe"]);
}

/// Issue 27: the map in `lib.rs` names every module, and every module it declares exists.
#[test]
fn lib_rs_names_every_module() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let doc: String = lib.lines().filter(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n");
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ").or_else(|| l.strip_prefix("mod ")))
        .filter_map(|l| l.strip_suffix(';'))
        .collect();
    let on_disk: BTreeSet<String> = graph().into_keys().collect();
    assert_eq!(declared.iter().map(|m| m.to_string()).collect::<BTreeSet<_>>(), on_disk);
    // Named in the diagram (its first word on a line, after any arrows) or in backquotes.
    let diagram = doc.split("```").nth(1).unwrap_or("");
    let in_diagram: BTreeSet<&str> = diagram
        .lines()
        .filter_map(|l| {
            l.trim_start_matches("//!").trim_start_matches([' ', '│', '├', '→']).split([' ', ',']).next()
        })
        .collect();
    let unnamed: Vec<&&str> =
        declared.iter().filter(|m| !in_diagram.contains(**m) && !doc.contains(&format!("`{m}`"))).collect();
    assert!(unnamed.is_empty(), "modules the map in lib.rs does not name: {unnamed:?}");
}

/// Issue 27: a folder's `mod.rs` says what the folder is and re-exports; the code lives in
/// files named for what they hold: 300 lines at most.
#[test]
fn index_files_stay_thin() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let heavy: Vec<String> = files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n == "mod.rs"))
        .map(|f| (f, std::fs::read_to_string(f).unwrap().lines().count()))
        .filter(|(_, lines)| *lines > 300)
        .map(|(f, lines)| format!("{}: {lines} lines", f.display()))
        .collect();
    assert!(heavy.is_empty(), "index files that hold code: {heavy:?}");
}
