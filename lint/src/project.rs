//! The Python files of one invocation analysed together.
//!
//! Each file is read and parsed once, in parallel, and summarised (its
//! top-level classes with their methods, its functions, its imports). The
//! imports are resolved within the linted tree (`from .trainer import
//! Trainer`, `from pkg.trainer import Trainer`, `import pkg.trainer as t`,
//! re-exports through `__init__.py`), by module path: a file
//! `a/pkg/trainer.py` is the module `a.pkg.trainer`, `pkg.trainer` and
//! `trainer`; when several files share a name, the one nearest the importer
//! is taken. Only classes and functions whose text has a gradient event
//! (`backward(`, `zero_grad`, `.step(`) are followed. Only files with a backward pass, the files that import them
//! (transitively) and the files those import are lowered; the others are
//! only checked for syntax, as when a file is linted alone.
//!
//! A file that imports a class or function of another file sees it when it
//! is lowered (instances, `self.x = Trainer(...)` attributes, calls of its
//! methods), and its loops inline the other file's functions, within the
//! same call depth limit as same-file calls. Events of another file keep
//! their spans, moved by [`FOREIGN_BASE`] times the file's number plus one,
//! so a finding whose step lies in another file is placed in that file (at
//! the step), never in the loop's file; its help names the loop, and it has
//! no automatic fix.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use ruff_python_ast::ModModule;
use ruff_python_parser::Parsed;

use crate::config::Config;
use crate::file::{is_notebook, lint_file_with, place_in_cell, read_source};
use crate::frontend::python::{self, Import, Imports, Summary};
use crate::ir::{map_nodes, Event, Function, Node, Program, Span, FOREIGN_BASE};
use crate::notebook::Notebook;
use crate::{check, Diagnostic, FileError, Language, LineIndex};

/// How many re-exports are followed to find where a name is defined.
const MAX_REEXPORTS: usize = 4;

/// A Python file read and parsed.
struct Loaded {
    name: String,
    source: String,
    notebook: Option<Notebook>,
    summary: Summary,
    /// The syntax tree, kept for files with a backward pass until they are
    /// lowered (then dropped there, in parallel).
    parsed: Mutex<Option<Parsed<ModModule>>>,
    backward: bool,
}

enum Stage {
    Done(Result<Vec<Diagnostic>, FileError>),
    Python(Box<Loaded>),
}

fn load(path: &Path, config: &Config, sources: &Sources) -> Stage {
    if Language::of(path) != Some(Language::Python) {
        return Stage::Done(lint_file_with(path, config));
    }
    let text = match sources
        .get(path)
        .map_or_else(|| read_source(path), |t| Ok(t.clone()))
    {
        Ok(t) => t,
        Err(e) => return Stage::Done(Err(e)),
    };
    let (source, notebook) = if is_notebook(path) {
        match Notebook::parse(&text) {
            Ok(n) => (n.source.clone(), Some(n)),
            // The single-file path reports the error.
            Err(_) => return Stage::Done(lint_file_with(path, config)),
        }
    } else {
        (text, None)
    };
    let Ok(parsed) = python::parse(&source) else {
        // A syntax error, placed by the single-file path.
        return Stage::Done(lint_file_with(path, config));
    };
    let summary = python::summarize(&source, parsed.syntax());
    let backward = python::calls_backward(&source);
    Stage::Python(Box::new(Loaded {
        name: path.display().to_string(),
        summary,
        parsed: Mutex::new(backward.then_some(parsed)),
        backward,
        source,
        notebook,
    }))
}

/// The module path of a file, as components (`a`, `pkg`, `trainer`);
/// `__init__` names its package.
fn components(path: &Path) -> Vec<String> {
    let mut parts: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str().map(str::to_string),
            _ => None,
        })
        .collect();
    if let Some(last) = parts.last_mut() {
        if let Some((stem, _)) = last.rsplit_once('.') {
            *last = stem.to_string();
        }
    }
    parts
}

/// Module paths -> the files that may be that module.
struct ModuleIndex {
    by_name: HashMap<String, Vec<usize>>,
    parts: Vec<Vec<String>>,
}

impl ModuleIndex {
    fn new(paths: &[&Path], importable: &[bool]) -> Self {
        let parts: Vec<Vec<String>> = paths.iter().map(|p| components(p)).collect();
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::default();
        for (i, p) in parts.iter().enumerate() {
            if !importable[i] {
                continue;
            }
            let mut module = p.clone();
            if module.last().is_some_and(|l| l == "__init__") {
                module.pop();
            }
            for start in 0..module.len() {
                by_name
                    .entry(module[start..].join("."))
                    .or_default()
                    .push(i);
            }
        }
        Self { by_name, parts }
    }

    /// The file `module` names from `importer` (`level` leading dots).
    fn resolve(&self, importer: usize, level: u32, module: &str) -> Option<usize> {
        let name = if level == 0 {
            module.to_string()
        } else {
            let own = &self.parts[importer];
            let drop = level as usize;
            if drop > own.len() {
                return None;
            }
            let mut package = own[..own.len() - drop].to_vec();
            package.extend(
                module
                    .split('.')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
            package.join(".")
        };
        let candidates = self.by_name.get(&name)?;
        let shared = |i: usize| {
            self.parts[i]
                .iter()
                .zip(&self.parts[importer])
                .take_while(|(a, b)| a == b)
                .count()
        };
        candidates
            .iter()
            .copied()
            .filter(|&i| i != importer)
            .max_by_key(|&i| (shared(i), std::cmp::Reverse(i)))
    }
}

/// What a name imported from a file is.
enum Target {
    Class(usize, String),
    Function(usize, String),
    Module(usize),
}

fn symbol(
    index: &ModuleIndex,
    summaries: &[Option<&Summary>],
    file: usize,
    name: &str,
    depth: usize,
) -> Option<Target> {
    let summary = summaries[file]?;
    if summary.classes.contains_key(name) {
        return Some(Target::Class(file, name.to_string()));
    }
    if summary.functions.contains(name) {
        return Some(Target::Function(file, name.to_string()));
    }
    if depth >= MAX_REEXPORTS {
        return None;
    }
    // Re-exported (`from .trainer import Trainer` in `__init__.py`).
    let import = summary.imports.get(*summary.bound.get(name)?)?;
    match import {
        Import::From {
            level,
            module,
            name: original,
            ..
        } => {
            let from = index.resolve(file, *level, module)?;
            symbol(index, summaries, from, original, depth + 1).or_else(|| {
                let sub = if module.is_empty() {
                    original.clone()
                } else {
                    format!("{module}.{original}")
                };
                index.resolve(file, *level, &sub).map(Target::Module)
            })
        }
        Import::Module { .. } => None,
    }
}

/// The names `file` imports from other files, and the files they are
/// defined in.
fn imports_of(
    index: &ModuleIndex,
    summaries: &[Option<&Summary>],
    file: usize,
    wanted: Option<&HashSet<&str>>,
) -> (Imports, HashSet<usize>) {
    let mut out = Imports::default();
    let mut files = HashSet::default();
    let Some(summary) = summaries[file] else {
        return (out, files);
    };
    // Only classes and functions with gradient events are followed.
    let relevant = |j: usize, name: &str| summaries[j].is_some_and(|s| s.relevant.contains(name));
    let mut bind = |out: &mut Imports, local: &str, target: Target| match target {
        Target::Class(j, class) if j != file && relevant(j, &class) => {
            let key = format!("{j}::{class}");
            if let Some(methods) = summaries[j].and_then(|s| s.classes.get(&class)) {
                out.methods.insert(key.clone(), methods.clone());
            }
            out.classes.insert(local.to_string(), key);
            files.insert(j);
        }
        Target::Function(j, function) if j != file && relevant(j, &function) => {
            out.functions
                .insert(local.to_string(), format!("{j}::{function}"));
            files.insert(j);
        }
        Target::Module(j) if j != file => {
            let Some(s) = summaries[j] else { return };
            if s.relevant.is_empty() {
                return;
            }
            for (class, methods) in s.classes.iter().filter(|(c, _)| s.relevant.contains(*c)) {
                let key = format!("{j}::{class}");
                out.methods.insert(key.clone(), methods.clone());
                out.classes.insert(format!("{local}.{class}"), key);
            }
            for function in s.functions.iter().filter(|f| s.relevant.contains(*f)) {
                out.functions
                    .insert(format!("{local}.{function}"), format!("{j}::{function}"));
            }
            files.insert(j);
        }
        _ => {}
    };
    for import in &summary.imports {
        match import {
            Import::From {
                level,
                module,
                name,
                local,
            } => {
                if name == "*" {
                    // Every class and function of the module worth following.
                    let Some(j) = index.resolve(file, *level, module) else {
                        continue;
                    };
                    let Some(s) = summaries[j] else { continue };
                    for class in s.classes.keys().filter(|c| s.relevant.contains(*c)) {
                        bind(&mut out, class, Target::Class(j, class.clone()));
                    }
                    for function in s.functions.iter().filter(|f| s.relevant.contains(*f)) {
                        bind(&mut out, function, Target::Function(j, function.clone()));
                    }
                    continue;
                }
                if wanted.is_some_and(|w| !w.contains(name.as_str())) {
                    continue;
                }
                let target = index
                    .resolve(file, *level, module)
                    .and_then(|j| symbol(index, summaries, j, name, 0))
                    .or_else(|| {
                        let sub = if module.is_empty() {
                            name.clone()
                        } else {
                            format!("{module}.{name}")
                        };
                        index.resolve(file, *level, &sub).map(Target::Module)
                    });
                if let Some(t) = target {
                    bind(&mut out, local, t);
                }
            }
            Import::Module { module, local } => {
                if let Some(j) = index.resolve(file, 0, module) {
                    bind(&mut out, local, Target::Module(j));
                }
            }
        }
    }
    (out, files)
}

/// `nodes` of file `file`, as seen from another file: spans moved, calls
/// of the file's own functions qualified.
fn foreign_nodes(nodes: &[Node], file: usize) -> Vec<Node> {
    let by = (file + 1) * FOREIGN_BASE;
    let event = |e: &Event, span: Span| match e {
        Event::Call(name) => {
            let name = if name.contains("::") || name.starts_with("*.") {
                name.clone()
            } else if name.contains('.') {
                // A method of the file's own class: `self` stays the
                // object it is called on from the other file.
                format!("{file}::{name}|self")
            } else {
                format!("{file}::{name}")
            };
            Node::Event(Event::Call(name), span.shifted(by))
        }
        e => Node::Event(e.clone(), span.shifted(by)),
    };
    map_nodes(nodes, &event, &|span| span.shifted(by), &String::clone)
}

/// Copies into `program` the methods its classes inherit from classes of
/// other files (`pool`): in the copy, a call on `self` of a method the class
/// overrides runs the override (a base class's loop calling
/// `self.train_one_step()`).
fn inherit(program: &mut Program, pool: &HashMap<String, Function>) {
    if program.inherited.is_empty() {
        return;
    }
    let own: HashSet<String> = program
        .functions
        .iter()
        .map(|f| f.name.clone())
        .chain(
            program
                .inherited
                .iter()
                .map(|h| format!("{}.{}", h.class, h.method)),
        )
        .collect();
    for h in std::mem::take(&mut program.inherited) {
        let Some(f) = pool.get(&format!("{}.{}", h.from, h.method)) else {
            continue;
        };
        let prefix = format!("{}.", h.from);
        let event = |e: &Event, span: Span| match e {
            Event::Call(name) => {
                let local = name
                    .strip_suffix("|self")
                    .and_then(|n| n.strip_prefix(&prefix))
                    .map(|m| format!("{}.{m}", h.class))
                    .filter(|n| own.contains(n));
                Node::Event(Event::Call(local.unwrap_or_else(|| name.clone())), span)
            }
            e => Node::Event(e.clone(), span),
        };
        program.functions.push(Function {
            name: format!("{}.{}", h.class, h.method),
            body: map_nodes(&f.body, &event, &|s| s, &String::clone),
            assigned: f.assigned.clone(),
        });
    }
}

/// Texts that replace files' contents on disk (`--fix` checking a fix in
/// one file against the files analysed together), by path as listed.
pub type Sources = std::collections::HashMap<PathBuf, String>;

/// Lints `files` with the rules `config` enables, the Python files together;
/// one result per file, in order.
pub fn lint_files(files: &[PathBuf], config: &Config) -> Vec<Result<Vec<Diagnostic>, FileError>> {
    lint_files_with(files, config, &Sources::new())
}

/// [`lint_files`], with the Python files of `sources` read from there
/// rather than from disk (their notebooks, syntax errors and other
/// languages are still read from disk).
pub fn lint_files_with(
    files: &[PathBuf],
    config: &Config,
    sources: &Sources,
) -> Vec<Result<Vec<Diagnostic>, FileError>> {
    let stages: Vec<Stage> = files.par_iter().map(|p| load(p, config, sources)).collect();
    let loaded: Vec<Option<&Loaded>> = stages
        .iter()
        .map(|s| match s {
            Stage::Python(l) => Some(l.as_ref()),
            Stage::Done(_) => None,
        })
        .collect();
    let (imports, edges) = resolve_imports(files, &loaded);
    let lower = files_to_lower(&loaded, &edges);
    let programs = lower_files(&loaded, &lower, &imports);
    let pool = Arc::new(reached_functions(&edges, &programs));
    let checked = check_files(&loaded, &programs, &edges, &pool, config);
    drop(programs);
    // Dropped in parallel, as when each file was linted alone.
    stages
        .into_par_iter()
        .zip(checked)
        .map(|(stage, found)| match stage {
            Stage::Done(r) => r,
            Stage::Python(_) => Ok(found.unwrap_or_default()),
        })
        .collect()
}

/// What each file imports from the others, and the files it takes something
/// from (edges), only where a backward pass is anywhere.
fn resolve_imports(
    files: &[PathBuf],
    loaded: &[Option<&Loaded>],
) -> (Vec<Imports>, Vec<HashSet<usize>>) {
    let summaries: Vec<Option<&Summary>> = loaded.iter().map(|l| l.map(|l| &l.summary)).collect();
    let n = files.len();
    let any_backward = loaded.iter().flatten().any(|l| l.backward);
    let any_import = loaded
        .iter()
        .flatten()
        .any(|l| !l.summary.imports.is_empty());
    let mut imports: Vec<Imports> = vec![Imports::default(); n];
    let mut edges: Vec<HashSet<usize>> = vec![HashSet::default(); n];
    if !(any_backward && any_import) {
        return (imports, edges);
    }
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let importable: Vec<bool> = (0..n)
        .map(|i| loaded[i].is_some_and(|l| l.notebook.is_none()))
        .collect();
    let index = ModuleIndex::new(&paths, &importable);
    // A file with no backward pass only imports, by name, a class or
    // function with gradient events (or a module): the others' names
    // are not resolved.
    let wanted: HashSet<&str> = summaries
        .iter()
        .flatten()
        .flat_map(|s| s.relevant.iter().map(String::as_str))
        .collect();
    let resolved: Vec<(Imports, HashSet<usize>)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let backward = loaded[i].is_some_and(|l| l.backward);
            imports_of(&index, &summaries, i, (!backward).then_some(&wanted))
        })
        .collect();
    for (i, (im, mut e)) in resolved.into_iter().enumerate() {
        // A file with no backward pass matters only where it calls what
        // it imports (`Trainer(`, `train_step(`): type hints and
        // arguments of an imported class are not followed.
        if let Some(l) = loaded[i].filter(|l| !l.backward) {
            let called: HashSet<usize> = im
                .classes
                .iter()
                .chain(im.functions.iter())
                .filter(|(local, _)| l.source.contains(&format!("{local}(")))
                .filter_map(|(_, key)| key.split_once("::")?.0.parse().ok())
                .collect();
            e.retain(|j| called.contains(j));
        }
        imports[i] = im;
        edges[i] = e;
    }
    (imports, edges)
}

/// Files to lower: those with a backward pass, those that import them
/// (transitively), and what all of these import (transitively).
fn files_to_lower(loaded: &[Option<&Loaded>], edges: &[HashSet<usize>]) -> Vec<bool> {
    let n = loaded.len();
    let mut lower: Vec<bool> = (0..n)
        .map(|i| loaded[i].is_some_and(|l| l.backward))
        .collect();
    let mut changed = true;
    while changed {
        changed = false;
        for i in 0..n {
            if !lower[i] && loaded[i].is_some() && edges[i].iter().any(|&j| lower[j]) {
                lower[i] = true;
                changed = true;
            }
        }
    }
    let mut stack: Vec<usize> = (0..n).filter(|&i| lower[i]).collect();
    while let Some(i) = stack.pop() {
        for &j in &edges[i] {
            if !lower[j] && loaded[j].is_some() {
                lower[j] = true;
                stack.push(j);
            }
        }
    }
    lower
}

/// The model of each file to lower, with its line index.
fn lower_files(
    loaded: &[Option<&Loaded>],
    lower: &[bool],
    imports: &[Imports],
) -> Vec<Option<(Program, LineIndex)>> {
    (0..loaded.len())
        .into_par_iter()
        .map(|i| {
            let l = loaded[i].filter(|_| lower[i])?;
            let kept = l.parsed.lock().ok().and_then(|mut p| p.take());
            let parsed = match kept {
                Some(p) => p,
                None => python::parse(&l.source).ok()?,
            };
            let program = python::lower_module(&l.source, parsed.syntax(), &imports[i]);
            drop(parsed);
            Some((program, LineIndex::new(&l.source)))
        })
        .collect()
}

/// The functions other files reach, qualified, spans moved.
fn reached_functions(
    edges: &[HashSet<usize>],
    programs: &[Option<(Program, LineIndex)>],
) -> HashMap<String, Function> {
    let imported_files: HashSet<usize> = edges.iter().flatten().copied().collect();
    let mut pool: HashMap<String, Function> = HashMap::default();
    for &j in &imported_files {
        let Some((program, _)) = &programs[j] else {
            continue;
        };
        for f in program.functions.iter().filter(|f| f.name != "<module>") {
            let body = foreign_nodes(&f.body, j);
            let name = format!("{j}::{}", f.name);
            pool.insert(
                name.clone(),
                Function {
                    name,
                    body,
                    assigned: f.assigned.clone(),
                },
            );
        }
    }
    pool
}

/// The findings of each loaded Python file (`None` for the others), with
/// the functions of other files it reaches (`pool`) and its notebook
/// findings placed in their cells.
fn check_files(
    loaded: &[Option<&Loaded>],
    programs: &[Option<(Program, LineIndex)>],
    edges: &[HashSet<usize>],
    pool: &Arc<HashMap<String, Function>>,
    config: &Config,
) -> Vec<Option<Vec<Diagnostic>>> {
    let enabled = |code: &str| config.enabled(code);
    let foreign = |j: usize| -> Option<(&str, &LineIndex)> {
        let l = loaded.get(j).copied().flatten()?;
        let (_, index) = programs.get(j)?.as_ref()?;
        // Notebooks are never imported: no span is placed in one.
        l.notebook.is_none().then_some((l.name.as_str(), index))
    };
    (0..loaded.len())
        .into_par_iter()
        .map(|i| {
            let l = loaded[i]?;
            let Some((program, index)) = &programs[i] else {
                return Some(Vec::new());
            };
            let found = if edges[i].is_empty() {
                check(&l.name, index, program, &enabled, &foreign)
            } else {
                let mut program = program.clone();
                inherit(&mut program, pool);
                program.imported = Some(pool.clone());
                check(&l.name, index, &program, &enabled, &foreign)
            };
            Some(match &l.notebook {
                Some(nb) => found
                    .into_iter()
                    .map(|d| {
                        if d.path == l.name {
                            place_in_cell(nb, d)
                        } else {
                            d
                        }
                    })
                    .collect(),
                None => found,
            })
        })
        .collect()
}
