//! The module stack written in `src/lib.rs` ("# Layers") is the one the code has: every
//! `crate::X` path in a module points to its own module or to a lower layer, so the
//! import graph has no cycle. Fails with each offending file, line and path.

use std::collections::HashMap;
use std::path::Path;

/// Layer of each top-level module, from the `text` block under "# Layers" in lib.rs:
/// lines "N  module module ...".
fn documented_layers() -> HashMap<String, u32> {
    let lib = std::fs::read_to_string("src/lib.rs").expect("src/lib.rs");
    let mut layers = HashMap::new();
    let mut in_block = false;
    let mut seen_heading = false;
    for line in lib.lines() {
        let line = line.trim_start_matches("//!").trim();
        if line == "# Layers" {
            seen_heading = true;
        } else if seen_heading && line.starts_with("```") {
            if in_block {
                break;
            }
            in_block = true;
        } else if in_block {
            let mut words = line.split_whitespace();
            let Some(n) = words.next().and_then(|w| w.parse::<u32>().ok()) else {
                continue;
            };
            for m in words {
                assert!(
                    layers.insert(m.to_string(), n).is_none(),
                    "{m} listed twice"
                );
            }
        }
    }
    assert!(!layers.is_empty(), "no '# Layers' text block in src/lib.rs");
    layers
}

/// `src` with every `//` comment cut off its line (doc comments too), lines kept.
fn without_comments(src: &str) -> String {
    src.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level modules named by `crate::` paths in `src`, with their line numbers.
fn crate_paths(src: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let text = without_comments(src);
    let bytes = text.as_bytes();
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    let mut at = 0;
    while let Some(i) = text[at..].find("crate::") {
        let start = at + i + "crate::".len();
        at = start;
        // `fanout::crate::` cannot occur; skip identifiers like `my_crate::`.
        if start > 7 && (bytes[start - 8].is_ascii_alphanumeric() || bytes[start - 8] == b'_') {
            continue;
        }
        if bytes.get(start) == Some(&b'{') {
            // crate::{a::b, c, d::{e, f}}: the first identifier of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (j, &b) in bytes[start..].iter().enumerate() {
                match b {
                    b'{' => {
                        depth += 1;
                        if depth == 1 {
                            item_start = true;
                        }
                    }
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b',' if depth == 1 => item_start = true,
                    b if depth == 1 && item_start && (b.is_ascii_alphabetic() || b == b'_') => {
                        let rest = &text[start + j..];
                        let end = rest
                            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .unwrap_or(rest.len());
                        out.push((line_of(start), rest[..end].to_string()));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let rest = &text[start..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push((line_of(start), rest[..end].to_string()));
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn imports_only_point_down_the_documented_stack() {
    let layers = documented_layers();
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let rel = file.strip_prefix("src").unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let own = *layers
            .get(&module)
            .unwrap_or_else(|| panic!("module `{module}` is missing from src/lib.rs's layers"));
        let src = std::fs::read_to_string(&file).unwrap();
        for (line, target) in crate_paths(&src) {
            if target == module {
                continue;
            }
            match layers.get(&target) {
                Some(&l) if l < own => {}
                Some(&l) => wrong.push(format!(
                    "{}:{line}: `{module}` (layer {own}) uses `crate::{target}` (layer {l})",
                    file.display()
                )),
                None => wrong.push(format!(
                    "{}:{line}: `crate::{target}` is not in src/lib.rs's layers",
                    file.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_path_scanner_sees_grouped_and_inline_paths() {
    let src = "use crate::a::B;\nuse crate::{c::D, e, f::{g, h}};\nfn x() { crate::i::j(); } // crate::k\nuse my_crate::z;";
    let found: Vec<String> = crate_paths(src).into_iter().map(|(_, m)| m).collect();
    assert_eq!(found, ["a", "c", "e", "f", "i"]);
}

/// Module path of a file under `src` (`src/a/b.rs` and `src/a/b/mod.rs` → `[a, b]`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut segs: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = segs.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        segs.push(stem.to_string());
    }
    segs
}

/// Every path that starts with `prefix` (`crate::`, `super::`, `self::` or a child
/// module's `name::`) in `text`, as its segments; groups (`a::{b, c::d}`) expand into one
/// path each. Only identifiers: `super::super::x` gives `["super", "x"]` after the prefix.
fn paths_after(text: &str, prefix: &str) -> Vec<(usize, Vec<String>)> {
    fn ident(s: &str) -> usize {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    }
    // Parses `seg::seg::{...}` at the start of `s`, pushing each full path.
    fn parse(s: &str, base: &[String], out: &mut Vec<Vec<String>>) {
        let s = s.trim_start();
        if let Some(inner) = s.strip_prefix('{') {
            let mut depth = 0;
            let mut item = 0;
            for (j, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        parse(&inner[item..j], base, out);
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        parse(&inner[item..j], base, out);
                        item = j + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let n = ident(s);
        if n == 0 {
            if !base.is_empty() {
                out.push(base.to_vec());
            }
            return;
        }
        let mut path = base.to_vec();
        path.push(s[..n].to_string());
        match s[n..].strip_prefix("::") {
            Some(rest) => parse(rest, &path, out),
            None => out.push(path),
        }
    }
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = text[at..].find(prefix) {
        let start = at + i;
        at = start + prefix.len();
        let before = start.checked_sub(1).map(|k| bytes[k]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            continue;
        }
        let line = text[..start].matches('\n').count() + 1;
        let mut found = Vec::new();
        parse(&text[at..], &[], &mut found);
        out.extend(found.into_iter().map(|p| (line, p)));
    }
    out
}

/// Files that a file's paths name (`use`, inline paths), resolved to the file of the
/// longest module prefix. A child naming one of its ancestors' `mod.rs` (the usual
/// layout: the parent declares and re-exports its children, they use its types) is
/// not an edge, nor is a file naming itself.
fn file_edges(files: &[std::path::PathBuf]) -> HashMap<Vec<String>, Vec<(Vec<String>, String)>> {
    let by_module: HashMap<Vec<String>, &std::path::PathBuf> = files
        .iter()
        .map(|f| (module_of(f.strip_prefix("src").unwrap()), f))
        .collect();
    let mut edges = HashMap::new();
    for file in files {
        let me = module_of(file.strip_prefix("src").unwrap());
        let raw = std::fs::read_to_string(file).unwrap();
        let text = without_comments(&raw);
        let children: Vec<String> = text
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let l = l.strip_prefix("pub ").unwrap_or(l);
                let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
                l.strip_prefix("mod ")?
                    .strip_suffix(';')
                    .map(str::to_string)
            })
            .collect();
        let mut found: Vec<(usize, Vec<String>)> = Vec::new();
        found.extend(paths_after(&text, "crate::"));
        for (line, p) in paths_after(&text, "super::") {
            let mut base = me[..me.len().saturating_sub(1)].to_vec();
            let mut rest = p.as_slice();
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            found.push((line, base));
        }
        for (line, p) in paths_after(&text, "self::") {
            found.push((line, me.iter().chain(&p).cloned().collect()));
        }
        for child in &children {
            for (line, p) in paths_after(&text, &format!("{child}::")) {
                let full = me.iter().chain(std::iter::once(child)).chain(&p);
                found.push((line, full.cloned().collect()));
            }
        }
        let mut out: Vec<(Vec<String>, String)> = Vec::new();
        for (line, path) in found {
            let Some(target) = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|m| by_module.contains_key(m))
            else {
                continue;
            };
            let ancestor = target.len() < me.len() && me.starts_with(&target);
            if target == me || ancestor || out.iter().any(|(t, _)| *t == target) {
                continue;
            }
            out.push((target, format!("{}:{line}", file.display())));
        }
        edges.insert(me, out);
    }
    edges
}

#[test]
fn no_two_files_import_each_other_in_a_circle() {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    files.retain(|f| !f.ends_with("main.rs"));
    let edges = file_edges(&files);
    // Depth-first search; a grey node met again closes a circle.
    fn visit(
        m: &Vec<String>,
        edges: &HashMap<Vec<String>, Vec<(Vec<String>, String)>>,
        colour: &mut HashMap<Vec<String>, u8>,
        stack: &mut Vec<(Vec<String>, String)>,
        circles: &mut Vec<String>,
    ) {
        colour.insert(m.clone(), 1);
        for (t, at) in edges.get(m).map(Vec::as_slice).unwrap_or(&[]) {
            match colour.get(t).copied().unwrap_or(0) {
                0 => {
                    stack.push((t.clone(), at.clone()));
                    visit(t, edges, colour, stack, circles);
                    stack.pop();
                }
                1 => {
                    let from = stack.iter().position(|(s, _)| s == t).unwrap_or(0);
                    let mut chain: Vec<String> =
                        stack[from + 1..].iter().map(|(_, at)| at.clone()).collect();
                    chain.push(at.clone());
                    circles.push(format!("{} (through {})", t.join("::"), chain.join(" → ")));
                }
                _ => {}
            }
        }
        colour.insert(m.clone(), 2);
    }
    let mut colour = HashMap::new();
    let mut circles = Vec::new();
    let mut roots: Vec<&Vec<String>> = edges.keys().collect();
    roots.sort();
    for m in roots {
        if !colour.contains_key(m) {
            let mut stack = vec![(m.clone(), String::new())];
            visit(m, &edges, &mut colour, &mut stack, &mut circles);
        }
    }
    assert!(
        circles.is_empty(),
        "files that import each other in a circle (each path names the line that uses the next file):\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_file_path_scanner_expands_groups_and_resolves_super() {
    let found: Vec<Vec<String>> = paths_after("use super::{a::B, c, d::{e, f::G}};", "super::")
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let want: Vec<Vec<String>> = [&["a", "B"][..], &["c"], &["d", "e"], &["d", "f", "G"]]
        .iter()
        .map(|p| p.iter().map(|s| s.to_string()).collect())
        .collect();
    assert_eq!(found, want);
    assert_eq!(module_of(Path::new("a/b/mod.rs")), ["a", "b"]);
    assert_eq!(module_of(Path::new("a/b.rs")), ["a", "b"]);
}
