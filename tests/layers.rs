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

/// Top-level modules named by `crate::` paths in `src`, with their line numbers.
fn crate_paths(src: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let text: String = src
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
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
