//! The architecture's one hard rule: no import circles. Every `src/` file (except the binary)
//! is a node; `A → B` when A names anything of module B (`use`, a path in code or in a macro's
//! tokens, resolved through `crate::`, `super::`, `self::` and child-module names). The graph
//! must have no cycle: a module never imports one that imports it back — siblings included, and
//! a parent `mod.rs` counts as a module like any other (shared items live in their own file, not
//! in a `mod.rs` that also re-exports its children).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// `src/a/b.rs` → `a::b`; `src/a/mod.rs` → `a`; `src/lib.rs` → `` (the crate root).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn join(base: &[String], rest: &[String]) -> Vec<String> {
    base.iter().chain(rest).cloned().collect()
}

/// Collects the module paths a file refers to, as absolute segment lists.
struct Refs<'a> {
    /// The file's module, then any inline modules (`mod tests`) being visited.
    here: Vec<String>,
    /// The depth of `here` that is the file itself.
    file_depth: usize,
    modules: &'a BTreeSet<String>,
    out: Vec<Vec<String>>,
}

impl Refs<'_> {
    fn resolve(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else {
            return;
        };
        let mut base: Vec<String> = self.here.clone();
        let mut rest = segments;
        match first.as_str() {
            "crate" => {
                base.clear();
                rest = &segments[1..];
            }
            "self" => rest = &segments[1..],
            "super" => {
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            _ => {
                // A child module of the current file (uniform paths: `use resnet::X`).
                let candidate = join(&self.here[..self.file_depth], &segments[..1]).join("::");
                if !self.modules.contains(&candidate) {
                    return;
                }
                base.truncate(self.file_depth);
            }
        }
        self.out.push(join(&base, rest));
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                if n.ident != "self" {
                    full.push(n.ident.to_string());
                }
                self.resolve(&full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                if r.ident != "self" {
                    full.push(r.ident.to_string());
                }
                self.resolve(&full);
            }
            syn::UseTree::Glob(_) => {
                let full = prefix.clone();
                self.resolve(&full);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// `crate :: a :: b` sequences inside macro tokens (format! arguments, `text_setting!`).
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            if let TokenTree::Group(g) = &trees[i] {
                self.tokens(g.stream());
            }
            if let TokenTree::Ident(id) = &trees[i]
                && (id == "crate" || id == "super")
            {
                let mut segments = vec![id.to_string()];
                let mut j = i + 1;
                while j + 2 < trees.len() + 1 {
                    let colons = matches!((&trees.get(j), &trees.get(j + 1)),
                        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':');
                    match (colons, trees.get(j + 2)) {
                        (true, Some(TokenTree::Ident(next))) => {
                            segments.push(next.to_string());
                            j += 3;
                        }
                        _ => break,
                    }
                }
                // A lone `super` is a visibility (`pub(super)`), not a path.
                if segments.len() > 1 {
                    self.resolve(&segments);
                }
                i = j;
                continue;
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Refs<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 {
            self.resolve(&segments);
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_some() {
            self.here.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.here.pop();
        }
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

/// The module graph of `src/`: file module → the file modules it refers to.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let here: Vec<String> = if module.is_empty() {
            Vec::new()
        } else {
            module.split("::").map(str::to_string).collect()
        };
        let mut refs = Refs {
            file_depth: here.len(),
            here,
            modules: &modules,
            out: Vec::new(),
        };
        refs.visit_file(&ast);
        let mut targets = BTreeSet::new();
        for path in refs.out {
            // The longest prefix of the path that is a module file.
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| modules.contains(m));
            if std::env::var("GRAFT_MODULES_DEBUG").is_ok_and(|m| m == module) {
                eprintln!("  {path:?} → {target:?}");
            }
            if let Some(t) = target
                && t != module
            {
                targets.insert(t);
            }
        }
        if std::env::var("GRAFT_MODULES_DEBUG").is_ok_and(|m| m == module) {
            eprintln!("{module} → {targets:?}");
        }
        graph.insert(module, targets);
    }
    graph
}

/// One cycle of `graph`, if it has any (depth-first search with colours).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn dfs(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = dfs(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node).copied().unwrap_or(0) == 0
            && let Some(c) = dfs(node, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

/// Every cycle reported at once would be long; one at a time names the edge to cut.
fn show(name: &str) -> String {
    if name.is_empty() {
        "crate (lib.rs)".into()
    } else {
        name.into()
    }
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut graph = graph();
    assert!(graph.len() > 40, "found only {} modules", graph.len());
    let mut circles = Vec::new();
    // Report every circle: cut one edge of each found, look again.
    while let Some(cycle) = find_cycle(&graph) {
        let names: Vec<String> = cycle.iter().map(|n| show(n)).collect();
        circles.push(names.join(" → "));
        let (a, b) = (&cycle[cycle.len() - 2], &cycle[cycle.len() - 1]);
        graph.get_mut(a).unwrap().remove(b);
    }
    assert!(
        circles.is_empty(),
        "{} import circle(s):\n  {}",
        circles.len(),
        circles.join("\n  ")
    );
}

#[test]
fn the_layers_import_downwards() {
    // Top-level modules in layer order: each may use only those before it.
    const LAYERS: &[&str] = &[
        "error",
        "files",
        "tensor",
        "choice",
        "progress",
        "allocator",
        "kernels",
        "weights",
        "model",
        "data",
        "metrics",
        "loss",
        "optim",
        "linear_model",
        "transferability",
        "config",
        "render",
        "explain",
        "train",
        "task",
        "run",
        "report",
        "predict",
        "fuzz",
    ];
    let graph = graph();
    let top = |m: &str| m.split("::").next().unwrap_or("").to_string();
    let mut wrong = Vec::new();
    for (from, targets) in &graph {
        let Some(i) = LAYERS.iter().position(|l| *l == top(from)) else {
            continue;
        };
        for to in targets {
            if let Some(j) = LAYERS.iter().position(|l| *l == top(to))
                && j > i
            {
                wrong.push(format!("{from} → {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "upward imports:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn the_checker_sees_a_circle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    g.get_mut("c").unwrap().clear();
    assert!(find_cycle(&g).is_none());
}
