//! The Python files of one invocation analysed together.
//!
//! Each file is read, in parallel, and its bytes scanned for gradient
//! events; a file is parsed only when the analysis needs it,
//! and summarised then (its top-level classes with their methods, its
//! functions, its imports). Most files of a tree have no gradient event
//! and are never parsed: parsing is most of the cost of a tree. The files
//! parsed are those with a gradient event (`backward(`, `zero_grad`,
//! `.step(`, the attribute `.grad`), those whose import statements may bind a class or function
//! of these and call it (`prefilter::ImportText`), and those the
//! imports of all these lead to, until no more is needed. A file never
//! parsed has no finding, and a syntax error in it is not reported. A Rust
//! file is parsed only when it names `backward`
//! (`prefilter::rust_needs_parse`).
//!
//! The imports are resolved within the linted tree (`from .trainer import
//! Trainer`, `from pkg.trainer import Trainer`, `import pkg.trainer as t`,
//! re-exports through `__init__.py`), by module path: a file
//! `a/pkg/trainer.py` is the module `a.pkg.trainer`, `pkg.trainer` and
//! `trainer`; when several files share a name, the one nearest the importer
//! (among those that parse) is taken, and only a file on the importer's
//! import path (`ModuleIndex::on_path`) is a candidate. Only classes and
//! functions whose text has a gradient event (`backward(`, `zero_grad`,
//! `.step(`), and base classes whose loop calls a method left to
//! subclasses, are followed. Only
//! files with a backward pass, the files that import them (transitively)
//! and the files those import are lowered.
//!
//! A file that imports a class or function of another file sees it when it
//! is lowered (instances, `self.x = Trainer(...)` attributes, calls of its
//! methods), and its loops inline the other file's functions, within the
//! same call depth limit as same-file calls. Events of another file keep
//! their spans, moved by [`FOREIGN_BASE`] times the file's number plus one,
//! so a finding whose step lies in another file is placed in that file (at
//! the step), never in the loop's file; its help names the loop, and it has
//! no automatic fix.

mod prefilter;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::borrow::Cow;
use std::cell::RefCell;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;
use ruff_python_ast::ModModule;
use ruff_python_parser::Parsed;

use crate::assumptions::Confidence;
use crate::config::Config;
use crate::file::{is_notebook, lint_file_with, not_utf8, place_in_cell, read_bytes, read_source};
use crate::frontend::python::{self, Import, Imports, Summary};
use crate::ir::{map_nodes, Event, Function, HandedIn, Node, Program, Span, FOREIGN_BASE};
use crate::notebook::Notebook;
use crate::{check, lint_source_with, Diagnostic, FileError, Language, LineIndex};
use prefilter::{ClassText, EventFinder, ImportText};

/// How many re-exports are followed to find where a name is defined.
const MAX_REEXPORTS: usize = 4;

/// A Python file read, and parsed once something needs it.
struct Loaded {
    path: PathBuf,
    name: String,
    notebook: bool,
    /// Whether the text calls a backward pass.
    backward: bool,
    /// Whether the text has a gradient event (`backward(`, `zero_grad`,
    /// `.step(`): only then may its classes and functions be followed.
    mentioned: bool,
    /// For a file with no gradient event (the others are parsed anyway):
    /// its import statements as the text reads, those that may name a
    /// module of the tree.
    import_texts: Vec<ImportText>,
    /// For a file with no gradient event: the classes its text may define
    /// at the top level.
    classes: Vec<ClassText>,
    /// The text: kept from the first reading for a file with a gradient
    /// event; for the others, dropped then (most are never needed, and the
    /// memory of one file's text is reused for the next) and read again
    /// when needed (`None`: it can no longer be read).
    source: OnceLock<Option<Source>>,
    /// The parse, once made (`None` in it: a syntax error).
    parse: OnceLock<Option<Parse>>,
    /// What its `Accelerator(...)` constructions say of accelerate's
    /// window ([`python::accelerator_accumulates`]).
    accelerator: Option<bool>,
    /// Whether a class of it may build an optimizer over its own
    /// submodules (`self.opt = Adam(self.net.parameters())`): a file with
    /// no gradient event imported for that is parsed.
    builds_optimizers: bool,
}

/// The Python text of a file, and its notebook if it is one.
struct Source {
    text: String,
    notebook: Option<Notebook>,
}

impl Source {
    /// The Python text of `text`, the contents of `path`.
    fn new(path: &Path, text: Cow<'_, str>) -> Result<Source, FileError> {
        if !is_notebook(path) {
            return Ok(Source {
                text: text.into_owned(),
                notebook: None,
            });
        }
        let notebook =
            Notebook::parse(&text).map_err(|message| crate::file::error(path, message))?;
        Ok(Source {
            text: notebook.source.clone(),
            notebook: Some(notebook),
        })
    }
}

/// A Python file parsed.
struct Parse {
    summary: Summary,
    /// The syntax tree of a file with a backward pass (or one that may call
    /// what one has), kept until the file is lowered (then dropped there,
    /// in parallel).
    parsed: Mutex<Option<Parsed<ModModule>>>,
}

impl Loaded {
    /// The file's text, read again if it was dropped.
    fn source(&self) -> Option<&Source> {
        self.source
            .get_or_init(|| {
                let text = read_source(&self.path).ok()?;
                Source::new(&self.path, Cow::Owned(text)).ok()
            })
            .as_ref()
    }

    /// The file parsed and summarised, on first use (`None`: a syntax
    /// error, or a file that can no longer be read).
    fn parse(&self) -> Option<&Parse> {
        self.parse_keeping(self.backward)
    }

    /// [`Loaded::parse`], keeping the syntax tree where it is parsed now
    /// and `keep` (a file that will likely be lowered). The others are only
    /// summarised: their trees are dropped at once, and their memory
    /// reused.
    fn parse_keeping(&self, keep: bool) -> Option<&Parse> {
        self.parse
            .get_or_init(|| {
                let text = &self.source()?.text;
                let parsed = python::parse(text).ok()?;
                let summary = python::summarize(text, parsed.syntax());
                Some(Parse {
                    summary,
                    parsed: Mutex::new(keep.then_some(parsed)),
                })
            })
            .as_ref()
    }

    /// Whether the file was parsed (without parsing it).
    fn is_parsed(&self) -> bool {
        self.parse.get().is_some()
    }

    /// Whether the file was parsed without a syntax error (without parsing
    /// it).
    fn parsed_ok(&self) -> bool {
        self.parse.get().is_some_and(Option::is_some)
    }
}

enum Stage {
    Done(Result<Vec<Diagnostic>, FileError>),
    Python(Box<Loaded>),
}

/// What the first reading of a Python file keeps: its events, and for a file
/// with none its import statements and classes, for the others its text.
type Scanned = (
    prefilter::Events,
    Vec<ImportText>,
    Vec<ClassText>,
    Option<Source>,
    Option<bool>,
    bool,
);

/// Reads file `file` (`path`): `modules` are the modules of the tree, to
/// keep only the import statements that may name one.
fn load(
    file: usize,
    path: &Path,
    config: &Config,
    events: &EventFinder,
    modules: &ModuleIndex,
    sources: &Sources,
) -> Stage {
    match Language::of(path) {
        Some(Language::Python) => {}
        Some(Language::Rust) => return Stage::Done(lint_rust(path, config)),
        None => return Stage::Done(lint_file_with(path, config)),
    }
    thread_local! {
        // Most files' text is dropped once scanned: one buffer a thread
        // holds them in turn.
        static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let given = sources.get(path).filter(|_| !is_notebook(path));
    let scanned = BUFFER.with_borrow_mut(|buffer| -> Result<Scanned, FileError> {
        let text = match given {
            Some(text) => text.as_str(),
            None => {
                read_bytes(path, buffer)?;
                std::str::from_utf8(buffer).map_err(|e| not_utf8(path, e))?
            }
        };
        let notebook = if is_notebook(path) {
            Some(Source::new(path, Cow::Borrowed(text))?)
        } else {
            None
        };
        let text = notebook.as_ref().map_or(text, |s| s.text.as_str());
        let found = events.find(text);
        let accelerator = python::accelerator_accumulates(text);
        let builds_optimizers = text.contains("self.")
            && text.contains(".parameters()")
            && ["optim", "Adam", "SGD"].iter().any(|o| text.contains(o));
        // A file with a backward pass seeds the analysis; one with only
        // other gradient events (a reset, a step) is parsed like the
        // others, when its imports may reach a backward pass or an
        // analysed file imports it. Both keep their text.
        let (imports, classes) = if found.backward {
            (Vec::new(), Vec::new())
        } else {
            let imports = prefilter::import_texts(text)
                .into_iter()
                .filter(|t| modules.may_name(file, t))
                .collect();
            (imports, prefilter::top_level_classes(text))
        };
        if found.backward || found.mentioned {
            let source = match notebook {
                Some(s) => s,
                None => Source::new(path, Cow::Borrowed(text))?,
            };
            return Ok((
                found,
                imports,
                classes,
                Some(source),
                accelerator,
                builds_optimizers,
            ));
        }
        // A text given in place of the file's is kept: the file on disk
        // is not what is linted.
        let source = given
            .map(|t| Source::new(path, Cow::Borrowed(t)))
            .transpose()?;
        Ok((
            found,
            imports,
            classes,
            source,
            accelerator,
            builds_optimizers,
        ))
    });
    let (found, import_texts, classes, source, accelerator, builds_optimizers) = match scanned {
        Ok(s) => s,
        // The single-file path reports a notebook's error.
        Err(_) if is_notebook(path) => return Stage::Done(lint_file_with(path, config)),
        Err(e) => return Stage::Done(Err(e)),
    };
    let kept = OnceLock::new();
    if let Some(source) = source {
        let _ = kept.set(Some(source));
    }
    Stage::Python(Box::new(Loaded {
        path: path.to_path_buf(),
        name: path.display().to_string(),
        notebook: is_notebook(path),
        backward: found.backward,
        mentioned: found.mentioned,
        import_texts,
        classes,
        source: kept,
        parse: OnceLock::new(),
        accelerator,
        builds_optimizers,
    }))
}

/// A Rust file, as [`lint_file_with`] lints it, parsed only when it can
/// have a finding.
fn lint_rust(path: &Path, config: &Config) -> Result<Vec<Diagnostic>, FileError> {
    let source = read_source(path)?;
    if !prefilter::rust_needs_parse(&source) {
        return Ok(Vec::new());
    }
    let name = path.display().to_string();
    lint_source_with(&name, &source, Language::Rust, &|code| config.enabled(code))
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

    /// The files `module` may name from `importer` (`level` leading dots),
    /// in no order.
    fn candidates(&self, importer: usize, level: u32, module: &str) -> Vec<usize> {
        let name = if level == 0 {
            module.to_string()
        } else {
            let own = &self.parts[importer];
            let drop = level as usize;
            if drop > own.len() {
                return Vec::new();
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
        let depth = name.split('.').count();
        self.by_name.get(&name).map_or_else(Vec::new, |c| {
            c.iter()
                .copied()
                .filter(|&i| i != importer && (level > 0 || self.on_path(importer, i, depth)))
                .collect()
        })
    }

    /// Whether file `i`, as a module `depth` names long, may be on the
    /// import path of `importer`: the folder it is a top-level module of
    /// (its root), or the folder above that (a `src/` layout, a
    /// `sys.path.append` of a sibling folder), holds the importer, or the
    /// importer's folder holds the root. A file deeper in another project
    /// of the same tree (`other/d2l/torch.py` as `torch`) is not.
    fn on_path(&self, importer: usize, i: usize, depth: usize) -> bool {
        let own = &self.parts[i];
        let package = usize::from(own.last().is_some_and(|l| l == "__init__"));
        let Some(root) = own.len().checked_sub(depth + package) else {
            return false;
        };
        let folder = &self.parts[importer][..self.parts[importer].len().saturating_sub(1)];
        let holds = |n: usize| n <= folder.len() && own[..n] == folder[..n];
        // Or the root lies within the importer's folder (`sys.path.insert(0,
        // "python/src")`, a vendored `third_party/`).
        let within = root >= folder.len() && own[..folder.len()] == *folder;
        holds(root) || root > 0 && holds(root - 1) || within
    }

    /// Whether the import statement `text` of `importer` may name a module
    /// of the tree: one its names come from, or one of them is. The others
    /// (`import torch`, `from os import path`) bind nothing of the tree.
    fn may_name(&self, importer: usize, text: &ImportText) -> bool {
        let some = |level: u32, module: &str| !self.candidates(importer, level, module).is_empty();
        match &text.from {
            Some((level, module)) => {
                some(*level, module)
                    || text.names.iter().any(|(name, _)| {
                        let sub = if module.is_empty() {
                            name.clone()
                        } else {
                            format!("{module}.{name}")
                        };
                        some(*level, &sub)
                    })
            }
            None => text.names.iter().any(|(name, _)| some(0, name)),
        }
    }

    /// The file `module` names from `importer` (`level` leading dots): the
    /// nearest of the files it may name that `parses` (a file with a syntax
    /// error is no module).
    fn resolve(
        &self,
        importer: usize,
        level: u32,
        module: &str,
        parses: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut candidates = self.candidates(importer, level, module);
        let shared = |i: usize| {
            self.parts[i]
                .iter()
                .zip(&self.parts[importer])
                .take_while(|(a, b)| a == b)
                .count()
        };
        // Nearest first: only what it takes to find one that parses is
        // parsed.
        candidates.sort_unstable_by_key(|&i| std::cmp::Reverse((shared(i), std::cmp::Reverse(i))));
        candidates.into_iter().find(|&i| parses(i))
    }
}

/// The files of an invocation as imports see them: their module paths, and
/// their summaries, each made when first asked for.
struct Tree<'a> {
    loaded: &'a [Option<&'a Loaded>],
    index: ModuleIndex,
}

impl<'a> Tree<'a> {
    /// The summary of a Python file that parses (parsing it now if need
    /// be).
    fn summary(&self, file: usize) -> Option<&'a Summary> {
        let l = self.loaded.get(file).copied().flatten()?;
        l.parse().map(|p| &p.summary)
    }

    /// [`ModuleIndex::resolve`], among the files that parse.
    fn resolve(&self, importer: usize, level: u32, module: &str) -> Option<usize> {
        self.index
            .resolve(importer, level, module, &|i| self.summary(i).is_some())
    }

    /// Whether `from <module> import <name>` in `file` surely binds nothing
    /// worth following, whichever of the files `module` may be it is (the
    /// same where no module `<module>.<name>` would be taken instead):
    /// none of them has `name` worth following ([`Tree::worthless`]).
    fn binds_nothing_from(&self, file: usize, level: u32, module: &str, name: &str) -> bool {
        self.index
            .candidates(file, level, module)
            .into_iter()
            .all(|c| self.worthless(c, name))
    }

    /// Whether `name` in file `c` surely is nothing worth following, known
    /// without parsing `c`: a file parsed has it as a class or function with
    /// no gradient event, or not at all; a file not parsed yet has no
    /// gradient event, and neither imports `name` from a module of the tree
    /// (a re-export) nor may define a class `name` whose loop calls a
    /// method left to subclasses. A file that is no module (unreadable, a
    /// syntax error) never is one.
    fn worthless(&self, c: usize, name: &str) -> bool {
        let Some(l) = self.loaded[c] else {
            return true;
        };
        match l.parse.get() {
            Some(None) => true,
            Some(Some(p)) => {
                let s = &p.summary;
                !s.relevant.contains(name)
                    && (s.classes.contains_key(name)
                        || s.functions.contains(name)
                        || !s.bound.contains_key(name))
            }
            None => {
                let imports = |t: &ImportText| t.names.iter().any(|(_, local)| local == name);
                !l.backward
                    && !l.mentioned
                    && !l.import_texts.iter().any(imports)
                    // A class whose loop may call a method left to
                    // subclasses, or one that builds its optimizers (read
                    // for them).
                    && !l
                        .classes
                        .iter()
                        .any(|c| c.name == name && (c.may_follow || l.builds_optimizers))
            }
        }
    }

    /// Whether the files `module` may be from `file` surely have no class
    /// or function worth following: each is a file parsed with none, or one
    /// not parsed yet with no gradient event and no class whose loop may
    /// call a method left to subclasses, or no module.
    fn module_has_nothing(&self, file: usize, level: u32, module: &str) -> bool {
        self.index
            .candidates(file, level, module)
            .into_iter()
            .all(|c| {
                let Some(l) = self.loaded[c] else {
                    return true;
                };
                match l.parse.get() {
                    Some(p) => p.as_ref().is_none_or(|p| p.summary.relevant.is_empty()),
                    None => !l.backward && !l.mentioned && l.classes.iter().all(|c| !c.may_follow),
                }
            })
    }

    /// Whether `file`, with no gradient event, may import and call a class
    /// or function with gradient events (`wanted`: their names), by its
    /// import statements' text: by name from a module of the tree (`from
    /// .trainer import Trainer`, then `Trainer(`), or with a module or `*`
    /// of the tree that has some (`texts`: the statements that may name a
    /// module of the tree). Every file a module may be counts; none is
    /// parsed here.
    fn may_import(&self, file: usize, texts: &[ImportText], wanted: &HashSet<&str>) -> bool {
        let Some(l) = self.loaded[file] else {
            return false;
        };
        let index = &self.index;
        let in_tree = |level: u32, module: &str| !index.candidates(file, level, module).is_empty();
        // The linker follows what such a file calls (`local(`), or what a
        // module imported by name calls through (`local.Trainer(`): the
        // text, read again, only for names worth following.
        let calls = |prefix: &str, name: &str, dot: bool| {
            l.source().is_none_or(|s| {
                let text = s.text.as_bytes();
                let call = format!("{prefix}{name}");
                memchr::memmem::find_iter(text, call.as_bytes()).any(|at| {
                    let next = text.get(at + call.len());
                    next == Some(&b'(') || dot && next == Some(&b'.')
                })
            })
        };
        // A module of the tree parsed with classes or functions worth
        // following that the file calls through it (`prefix`: `t.` for
        // `import pkg.trainer as t`, nothing for `*`). A file not parsed
        // yet has no backward pass (those are parsed first): if it has
        // classes worth following, it is parsed for a reason of its own,
        // and then read in a later round.
        let calls_into = |level: u32, module: &str, prefix: &str| {
            index.candidates(file, level, module).into_iter().any(|j| {
                self.loaded[j]
                    .and_then(|l| l.parse.get()?.as_ref())
                    .is_some_and(|p| p.summary.relevant.iter().any(|r| calls(prefix, r, false)))
            })
        };
        texts.iter().any(|t| match &t.from {
            Some((level, module)) => {
                (t.star && calls_into(*level, module, ""))
                    || t.names.iter().any(|(name, local)| {
                        // The cheap tests first: most names are not wanted.
                        if !wanted.contains(name.as_str()) || !calls("", local, true) {
                            return false;
                        }
                        let sub = if module.is_empty() {
                            name.clone()
                        } else {
                            format!("{module}.{name}")
                        };
                        // A module imported by name (`from d2l import
                        // torch`) counts where the file calls something
                        // worth following through it.
                        calls_into(*level, &sub, &format!("{local}."))
                            || in_tree(*level, module)
                                && !self.binds_nothing_from(file, *level, module, name)
                    })
            }
            // `import pkg.trainer as t`, then `t.Trainer(`.
            None => t
                .names
                .iter()
                .any(|(name, local)| calls_into(0, name, &format!("{local}."))),
        })
    }
}

/// What a name imported from a file is.
enum Target {
    Class(usize, String),
    Function(usize, String),
    Module(usize),
}

/// What `name` is in `file`: a class or function defined there, or one it
/// re-exports. `fallback`: whether a lookup this one is part of would,
/// finding nothing, take a module instead (`from pkg import trainer`).
fn symbol(tree: &Tree, file: usize, name: &str, depth: usize, fallback: bool) -> Option<Target> {
    let summary = tree.summary(file)?;
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
            let sub = if module.is_empty() {
                original.clone()
            } else {
                format!("{module}.{original}")
            };
            let own_fallback = !tree.index.candidates(file, *level, &sub).is_empty();
            // Nothing worth following, whatever the file: with no module to
            // take instead, finding nothing is the same.
            if !fallback && !own_fallback && tree.binds_nothing_from(file, *level, module, original)
            {
                return None;
            }
            let from = tree.resolve(file, *level, module)?;
            symbol(tree, from, original, depth + 1, fallback || own_fallback)
                .or_else(|| tree.resolve(file, *level, &sub).map(Target::Module))
        }
        Import::Module { .. } => None,
    }
}

/// The names `file` imports from other files, and the files they are
/// defined in.
fn imports_of(
    tree: &Tree,
    file: usize,
    wanted: Option<&HashSet<&str>>,
) -> (Imports, HashSet<usize>) {
    let mut out = Imports::default();
    let mut files = HashSet::default();
    let Some(summary) = tree.summary(file) else {
        return (out, files);
    };
    // Only classes and functions with gradient events are followed.
    let relevant =
        |j: usize, name: &str| tree.summary(j).is_some_and(|s| s.relevant.contains(name));
    let mut bind = |out: &mut Imports, local: &str, target: Target| match target {
        // The optimizers a class builds over its submodules, followed or
        // not (a model class with no gradient event is not followed).
        Target::Class(j, class) if j != file => {
            if let Some(built) = tree.summary(j).and_then(|s| s.optimizer_models.get(&class)) {
                out.optimizer_models
                    .insert(local.to_string(), built.clone());
            }
            if !relevant(j, &class) {
                return;
            }
            let key = format!("{j}::{class}");
            if let Some(methods) = tree.summary(j).and_then(|s| s.classes.get(&class)) {
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
            let Some(s) = tree.summary(j) else { return };
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
                    if tree.module_has_nothing(file, *level, module) {
                        continue;
                    }
                    let Some(j) = tree.resolve(file, *level, module) else {
                        continue;
                    };
                    let Some(s) = tree.summary(j) else { continue };
                    for class in s.classes.keys().filter(|c| s.relevant.contains(*c)) {
                        bind(&mut out, class, Target::Class(j, class.clone()));
                    }
                    for function in s.functions.iter().filter(|f| s.relevant.contains(*f)) {
                        bind(&mut out, function, Target::Function(j, function.clone()));
                    }
                    continue;
                }
                let sub = if module.is_empty() {
                    name.clone()
                } else {
                    format!("{module}.{name}")
                };
                let subs = tree.index.candidates(file, *level, &sub);
                let has_sub = !subs.is_empty();
                // A module imported by name from its package (`from
                // approaches import update_model`) whose text has a
                // gradient event: parsed now to be followed.
                let module_with_events = || {
                    subs.iter().any(|&j| {
                        tree.loaded
                            .get(j)
                            .copied()
                            .flatten()
                            .is_some_and(|l| l.mentioned)
                    })
                };
                if wanted.is_some_and(|w| !w.contains(name.as_str())) && !module_with_events() {
                    continue;
                }
                if !has_sub && tree.binds_nothing_from(file, *level, module, name) {
                    continue;
                }
                let target = tree
                    .resolve(file, *level, module)
                    .and_then(|j| symbol(tree, j, name, 0, has_sub))
                    .or_else(|| tree.resolve(file, *level, &sub).map(Target::Module));
                if let Some(t) = target {
                    bind(&mut out, local, t);
                }
            }
            Import::Module { module, local } => {
                if tree.module_has_nothing(file, 0, module) {
                    continue;
                }
                if let Some(j) = tree.resolve(file, 0, module) {
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
            params: f.params.clone(),
            keywords: f.keywords.clone(),
        });
    }
}

/// The Python files among `stages` (the others are done already).
fn python_files(stages: &[Stage]) -> Vec<Option<&Loaded>> {
    stages
        .iter()
        .map(|s| match s {
            Stage::Python(l) => Some(l.as_ref()),
            Stage::Done(_) => None,
        })
        .collect()
}

/// Texts that replace files' contents on disk (`--fix` checking a fix in
/// one file against the files analysed together), by path as listed.
pub type Sources = std::collections::HashMap<PathBuf, String>;

/// Reads every file of `files` (a Rust file or another file is linted
/// alone there), with the modules the Python files may be. A file that
/// cannot be read or parsed is among them, but never resolved to.
fn load_all(files: &[PathBuf], config: &Config, sources: &Sources) -> (Vec<Stage>, ModuleIndex) {
    let events = EventFinder::new();
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let python: Vec<bool> = files
        .iter()
        .map(|p| Language::of(p) == Some(Language::Python) && !is_notebook(p))
        .collect();
    let modules = ModuleIndex::new(&paths, &python);
    let stages = files
        .par_iter()
        .enumerate()
        .map(|(i, p)| load(i, p, config, &events, &modules, sources))
        .collect();
    (stages, modules)
}

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
    let (stages, modules) = load_all(files, config, sources);
    let loaded = python_files(&stages);
    let (imports, edges) = resolve_imports(&loaded, modules);
    let lower = files_to_lower(&loaded, &edges);
    let mut programs = lower_files(&loaded, &lower, &imports);
    relower_handed(&loaded, &mut programs, &imports);
    accelerate_windows(&loaded, &mut programs);
    mark_called_from_loops(&mut programs);
    let pool = Arc::new(reached_functions(&edges, &programs));
    let checked = check_files(&loaded, &programs, &edges, &pool, config);
    drop(loaded);
    let mut stages = stages;
    let results = stages
        .par_iter_mut()
        .zip(checked)
        .zip(files)
        .map(|((stage, found), path)| match stage {
            Stage::Done(r) => std::mem::replace(r, Ok(Vec::new())),
            // A syntax error, placed by the single-file path.
            Stage::Python(l) if l.is_parsed() && !l.parsed_ok() => lint_file_with(path, config),
            Stage::Python(_) => Ok(found.unwrap_or_default()),
        })
        .collect();
    // What the analysis built is freed on a thread of its own: the
    // findings do not wait for it.
    std::thread::spawn(move || drop((stages, programs, pool, imports, edges)));
    results
}

/// What each file imports from the others, and the files it takes something
/// from (edges), only where a backward pass is anywhere. The files are
/// parsed here, as few as the imports need: those with gradient events,
/// those that may import and call their classes and functions, and the
/// files the imports of all these lead to.
fn resolve_imports(
    loaded: &[Option<&Loaded>],
    modules: ModuleIndex,
) -> (Vec<Imports>, Vec<HashSet<usize>>) {
    let n = loaded.len();
    let mut imports: Vec<Imports> = vec![Imports::default(); n];
    let mut edges: Vec<HashSet<usize>> = vec![HashSet::default(); n];
    // With no backward pass anywhere nothing is lowered: nothing to parse.
    if !loaded.iter().flatten().any(|l| l.backward) {
        return (imports, edges);
    }
    let tree = Tree {
        loaded,
        index: modules,
    };
    // The files with gradient events: their classes and functions are the
    // ones followed from other files.
    // The largest first: one left to the end keeps a core busy while the
    // others wait.
    let mut seeds: Vec<&Loaded> = loaded
        .iter()
        .flatten()
        .copied()
        .filter(|l| l.backward)
        .collect();
    seeds.sort_by_cached_key(|l| {
        let size = l
            .source
            .get()
            .and_then(Option::as_ref)
            .map_or(0, |s| s.text.len());
        std::cmp::Reverse(size)
    });
    seeds.par_iter().with_max_len(1).for_each(|l| {
        l.parse();
    });
    // Each round parses the files that may import and call what is wanted,
    // then resolves the imports of every file parsed, parsing the files
    // they lead to (a base class, a re-export in `__init__.py`). A file
    // parsed may add to what is wanted: the last round parses nothing.
    let parsed = || loaded.iter().flatten().filter(|l| l.is_parsed()).count();
    let mut resolved: Vec<Option<(Imports, HashSet<usize>)>> = vec![None; n];
    let mut wanted_before = None;
    loop {
        let before = parsed();
        // A file with no backward pass only imports, by name, a class or
        // function with gradient events (or a module): the others' names
        // are not resolved.
        // And the modules that hold them, imported by name from their
        // package (`from src import engine`, then `engine.step(`).
        let wanted: HashSet<&str> = loaded
            .iter()
            .flatten()
            .filter_map(|l| Some((l, l.parse.get()?.as_ref()?)))
            .flat_map(|(l, p)| {
                let module = (!p.summary.relevant.is_empty())
                    .then(|| module_name(&l.path))
                    .flatten();
                p.summary.relevant.iter().map(String::as_str).chain(module)
            })
            .collect();
        (0..n).into_par_iter().for_each(|i| {
            if let Some(l) = loaded[i].filter(|l| !l.is_parsed()) {
                if tree.may_import(i, &l.import_texts, &wanted) {
                    // It likely calls what it imports: lowered.
                    l.parse_keeping(true);
                }
            }
        });
        // What a file imports depends on its files alone, resolved once
        // they are parsed, and, for a file with no backward pass, on what
        // is wanted (which only grows).
        let wanted_changed = wanted_before != Some(wanted.len());
        wanted_before = Some(wanted.len());
        let fresh: Vec<Option<(Imports, HashSet<usize>)>> = (0..n)
            .into_par_iter()
            .map(|i| {
                let l = loaded[i].filter(|l| l.is_parsed())?;
                (resolved[i].is_none() || !l.backward && wanted_changed)
                    .then(|| imports_of(&tree, i, (!l.backward).then_some(&wanted)))
            })
            .collect();
        for (i, f) in fresh.into_iter().enumerate() {
            if f.is_some() {
                resolved[i] = f;
            }
        }
        if parsed() == before {
            break;
        }
    }
    for (i, (im, mut e)) in resolved
        .into_iter()
        .map(Option::unwrap_or_default)
        .enumerate()
    {
        // A file with no backward pass matters only where it calls what
        // it imports (`Trainer(`, `train_step(`): type hints and
        // arguments of an imported class are not followed.
        if let Some(l) = loaded[i].filter(|l| !l.backward) {
            let called: HashSet<usize> = im
                .classes
                .iter()
                .chain(im.functions.iter())
                .filter(|(local, _)| {
                    l.source()
                        .is_some_and(|s| s.text.contains(&format!("{local}(")))
                })
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
    let ok = |i: usize| loaded[i].is_some_and(Loaded::parsed_ok);
    let mut lower: Vec<bool> = (0..n)
        .map(|i| loaded[i].is_some_and(|l| l.backward && l.parsed_ok()))
        .collect();
    let mut changed = true;
    while changed {
        changed = false;
        for i in 0..n {
            if !lower[i] && ok(i) && edges[i].iter().any(|&j| lower[j]) {
                lower[i] = true;
                changed = true;
            }
        }
    }
    let mut stack: Vec<usize> = (0..n).filter(|&i| lower[i]).collect();
    while let Some(i) = stack.pop() {
        for &j in &edges[i] {
            if !lower[j] && ok(j) {
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
            let kept = l.parse()?.parsed.lock().ok().and_then(|mut p| p.take());
            let text = &l.source()?.text;
            let parsed = match kept {
                Some(p) => p,
                None => python::parse(text).ok()?,
            };
            let program = python::lower_module(text, parsed.syntax(), &imports[i]);
            drop(parsed);
            Some((program, LineIndex::new(text)))
        })
        .collect()
}

/// Lowers again the files whose functions other files' calls hand
/// optimizers built over models they hand too ([`Program::handed_out`]):
/// their parameters are then known as those optimizers, as when the call
/// is in the same file.
fn relower_handed(
    loaded: &[Option<&Loaded>],
    programs: &mut [Option<(Program, LineIndex)>],
    imports: &[Imports],
) {
    let mut handed: HashMap<usize, HandedIn> = HashMap::default();
    for (program, _) in programs.iter().flatten() {
        for call in &program.handed_out {
            let Some((file, function)) = call.callee.split_once("::") else {
                continue;
            };
            let Ok(file) = file.parse::<usize>() else {
                continue;
            };
            handed
                .entry(file)
                .or_default()
                .entry(function.to_string())
                .or_default()
                .push(call.clone());
        }
    }
    let mut handed: Vec<(usize, HandedIn)> = handed
        .into_iter()
        .filter(|(j, _)| programs.get(*j).is_some_and(Option::is_some))
        .collect();
    handed.sort_by_key(|(j, _)| *j);
    let again: Vec<(usize, Program)> = handed
        .par_iter()
        .filter_map(|(j, handed_in)| {
            let text = &loaded[*j]?.source()?.text;
            let parsed = python::parse(text).ok()?;
            let program =
                python::lower_module_handed(text, parsed.syntax(), &imports[*j], handed_in);
            Some((*j, program))
        })
        .collect();
    for (j, program) in again {
        if let Some((p, _)) = programs[j].as_mut() {
            *p = program;
        }
    }
}

/// Records in each file's program which of its functions other files'
/// loops call ([`Program::called_from_loops`]). A loop that is a function
/// read as run once per batch only by its name is no evidence.
fn mark_called_from_loops(programs: &mut [Option<(Program, LineIndex)>]) {
    let mut called: Vec<(usize, String)> = Vec::new();
    for (program, _) in programs.iter().flatten() {
        let guessed: Vec<Span> = program.per_batch_by_name.iter().map(|(s, _)| *s).collect();
        let mut calls = Vec::new();
        for f in &program.functions {
            crate::ir::calls_in_loops(&f.body, &guessed, &mut calls);
        }
        // Another file's: `file::name`.
        called.extend(calls.into_iter().filter_map(|c| {
            let (file, name) = c.split_once("::")?;
            Some((file.parse().ok()?, name.to_string()))
        }));
    }
    called.sort();
    called.dedup();
    for (file, name) in called {
        if let Some(Some((program, _))) = programs.get_mut(file) {
            program.called_from_loops.push(name);
        }
    }
}

/// The functions other files reach, qualified, spans moved.
fn reached_functions(
    edges: &[HashSet<usize>],
    programs: &[Option<(Program, LineIndex)>],
) -> HashMap<String, Function> {
    let imported_files: HashSet<usize> = edges.iter().flatten().copied().collect();
    let imported_files: Vec<usize> = imported_files.into_iter().collect();
    imported_files
        .par_iter()
        .filter_map(|&j| Some((j, &programs[j].as_ref()?.0)))
        .flat_map_iter(|(j, program)| {
            program
                .functions
                .iter()
                .filter(|f| f.name != "<module>")
                .map(move |f| {
                    let name = format!("{j}::{}", f.name);
                    let function = Function {
                        name: name.clone(),
                        body: foreign_nodes(&f.body, j),
                        assigned: f.assigned.clone(),
                        params: f.params.clone(),
                        keywords: f.keywords.clone(),
                    };
                    (name, function)
                })
        })
        .collect()
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
    // Findings only a turned reading shows are `low`: not looked for when
    // not shown.
    let low = config.confidence.unwrap_or(Confidence::High) <= Confidence::Low;
    let foreign = |j: usize| -> Option<(&str, &LineIndex)> {
        let l = loaded.get(j).copied().flatten()?;
        let (_, index) = programs.get(j)?.as_ref()?;
        // Notebooks are never imported: no span is placed in one.
        (!l.notebook).then_some((l.name.as_str(), index))
    };
    (0..loaded.len())
        .into_par_iter()
        .map(|i| {
            let l = loaded[i]?;
            let Some((program, index)) = &programs[i] else {
                return Some(Vec::new());
            };
            let found = if edges[i].is_empty() {
                check(&l.name, index, program, &enabled, &foreign, low)
            } else {
                let mut program = program.clone();
                inherit(&mut program, pool);
                program.imported = Some(pool.clone());
                check(&l.name, index, &program, &enabled, &foreign, low)
            };
            Some(match l.source().and_then(|s| s.notebook.as_ref()) {
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

/// Whether each file's accelerate window is unset: its own `Accelerator`
/// is built with no window, or, where it builds none, the nearest files
/// that do (those sharing the longest folder path with it: its repository
/// in a tree of several) each build one without. Every program learns it
/// of its own file and of the others (for blocks inlined from them).
fn accelerate_windows(loaded: &[Option<&Loaded>], programs: &mut [Option<(Program, LineIndex)>]) {
    let built: Vec<(&Path, bool)> = loaded
        .iter()
        .flatten()
        .filter_map(|l| Some((l.path.parent()?, l.accelerator?)))
        .collect();
    if built.is_empty() {
        return;
    }
    let shared = |a: &Path, b: &Path| {
        a.components()
            .zip(b.components())
            .take_while(|(x, y)| x == y)
            .count()
    };
    // Only files with such blocks matter to the others.
    let blocks = |i: usize| {
        loaded[i]
            .and_then(|l| l.source.get()?.as_ref())
            .is_some_and(|s| s.text.contains(".accumulate("))
    };
    // Asked of the files lowered and those with blocks only.
    let unset: Vec<bool> = loaded
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let Some(l) = l else { return false };
            if programs[i].is_none() && !blocks(i) {
                return false;
            }
            match (l.accelerator, l.path.parent()) {
                (Some(windowed), _) => !windowed,
                (None, Some(folder)) => {
                    let nearest = built
                        .iter()
                        .map(|(b, _)| shared(folder, b))
                        .max()
                        .unwrap_or(0);
                    built
                        .iter()
                        .filter(|(b, _)| shared(folder, b) == nearest)
                        .all(|(_, windowed)| !windowed)
                }
                (None, None) => false,
            }
        })
        .collect();
    let files: Vec<usize> = (0..unset.len())
        .filter(|&i| unset[i] && blocks(i))
        .collect();
    for (i, program) in programs.iter_mut().enumerate() {
        if let Some((program, _)) = program {
            program.accelerate_window_unset = unset[i];
            program.accelerate_unset_files = files.clone();
        }
    }
}

/// The name a file is imported by as a module: its stem (`engine` for
/// `src/engine.py`), its folder's name for a package's `__init__.py`.
fn module_name(path: &Path) -> Option<&str> {
    let stem = path.file_stem()?.to_str()?;
    if stem == "__init__" {
        return path.parent()?.file_name()?.to_str();
    }
    Some(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files under a fresh folder.
    fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            paths.push(path);
        }
        paths.sort();
        (dir, paths)
    }

    /// The files the imports parse, by name relative to `dir`.
    fn parsed(dir: &Path, files: &[PathBuf]) -> Vec<String> {
        let (stages, modules) = load_all(files, &Config::default(), &Sources::new());
        let loaded = python_files(&stages);
        resolve_imports(&loaded, modules);
        loaded
            .iter()
            .flatten()
            .filter(|l| l.is_parsed())
            .map(|l| l.path.strip_prefix(dir).unwrap().display().to_string())
            .collect()
    }

    /// `(file, line, code)` of each finding of the files linted together.
    fn findings(dir: &Path, files: &[PathBuf]) -> Vec<(String, usize, &'static str)> {
        lint_files(files, &Config::default())
            .into_iter()
            .flat_map(|r| r.unwrap())
            .map(|d| {
                let file = Path::new(&d.path).strip_prefix(dir).unwrap();
                (file.display().to_string(), d.line, d.code)
            })
            .collect()
    }

    const TRAINER: &str = "class Trainer:\n    def __init__(self, model, optimizer):\n        self.model = model\n        self.optimizer = optimizer\n\n    def run_batch(self, batch):\n        self.model(batch).backward()\n        self.optimizer.step()\n";

    #[test]
    fn a_file_that_only_imports_a_trainer_gets_its_findings_through_the_trainers_file() {
        for train in [
            "from trainer import Trainer\n\ndef main(model, opt, loader):\n    t = Trainer(model, opt)\n    for batch in loader:\n        t.run_batch(batch)\n",
            "from trainer import Trainer as T\n\ndef main(model, opt, loader):\n    t = T(model, opt)\n    for batch in loader:\n        t.run_batch(batch)\n",
            "import trainer\n\ndef main(model, opt, loader):\n    t = trainer.Trainer(model, opt)\n    for batch in loader:\n        t.run_batch(batch)\n",
        ] {
            let (dir, files) = tree(&[
                ("train.py", train),
                ("trainer.py", TRAINER),
                ("utils.py", "def mean(xs):\n    return sum(xs) / len(xs)\n"),
            ]);
            // train.py has no gradient event of its own.
            assert_eq!(EventFinder::new().find(train), Default::default());
            assert_eq!(parsed(dir.path(), &files), ["train.py", "trainer.py"]);
            assert_eq!(
                findings(dir.path(), &files),
                [("trainer.py".to_string(), 8, "GL001")],
                "{train}"
            );
        }
    }

    /// An agent whose `learn` runs both passes (the actor's loss goes
    /// through the critic, whose reset comes only after its step), called
    /// from a training loop in another file on a parameter annotated with
    /// its class.
    const AGENT: &str = "class Agent:
    def __init__(self, actor, critic):
        self.actor = actor
        self.critic = critic
        self.actor_optim = torch.optim.Adam(self.actor.parameters())
        self.critic_optim = torch.optim.Adam(self.critic.parameters())

    def learn(self, obs, target):
        critic_loss = (self.critic(obs) - target).pow(2).mean()
        critic_loss.backward()
        self.critic_optim.step()
        self.critic_optim.zero_grad()
        actor_loss = -self.critic(self.actor(obs)).mean()
        actor_loss.backward()
        self.actor_optim.step()
        self.actor_optim.zero_grad()
";

    #[test]
    fn a_method_a_loop_of_another_file_calls_runs_once_per_iteration_by_evidence() {
        use crate::assumptions::Confidence;
        let at = |files: &[PathBuf], lowest: Confidence| -> Vec<(usize, Confidence)> {
            let config = Config {
                confidence: Some(lowest),
                ..Config::default()
            };
            lint_files(files, &config)
                .into_iter()
                .flat_map(|r| r.unwrap())
                .filter(|d| config.shows(d))
                .map(|d| (d.line, d.confidence))
                .collect()
        };
        let looped = "from agent import Agent\n\ndef train(agent: Agent, loader):\n    for obs, target in loader:\n        agent.learn(obs, target)\n\ndef main(actor, critic, loader):\n    train(Agent(actor, critic), loader)\n";
        let (_dir, files) = tree(&[("agent.py", AGENT), ("train.py", looped)]);
        assert_eq!(at(&files, Confidence::High), [(11, Confidence::High)]);
        // Without the caller's loop, only the method's name says it runs
        // once per batch: a guess.
        let once = "from agent import Agent\n\ndef main(actor, critic, obs, target):\n    agent: Agent = Agent(actor, critic)\n    agent.learn(obs, target)\n";
        let (_dir, files) = tree(&[("agent.py", AGENT), ("train.py", once)]);
        assert_eq!(at(&files, Confidence::High), []);
        assert_eq!(at(&files, Confidence::Low), [(11, Confidence::Medium)]);
    }

    /// An optimizer whose class, another file's, derives from torch's
    /// `Optimizer` and updates its parameters itself: its `step` is a step
    /// (here windowed, with the reset every batch: GL004), not code to
    /// follow; a wrapper that steps inner optimizers is still followed.
    #[test]
    fn an_optimizer_class_of_another_file_steps_like_torchs() {
        let optim = "from torch.optim import Optimizer\n\nclass ScaledAdam(Optimizer):\n    def step(self, closure=None):\n        for group in self.param_groups:\n            for p in group[\"params\"]:\n                if p.grad is not None:\n                    p.data.add_(-group[\"lr\"] * p.grad)\n";
        let train = "from optim import ScaledAdam\n\ndef train(model, loader, k):\n    optimizer = ScaledAdam(model.parameters(), dict(lr=0.1))\n    for i, (x, y) in enumerate(loader):\n        model(x, y).backward()\n        if (i + 1) % k == 0:\n            optimizer.step()\n        model.zero_grad()\n";
        let (_dir, files) = tree(&[("optim.py", optim), ("train.py", train)]);
        let found: Vec<(String, usize)> = lint_files(&files, &Config::default())
            .into_iter()
            .flat_map(|r| r.unwrap())
            .map(|d| (d.code.to_string(), d.line))
            .collect();
        assert_eq!(found, [("GL004".to_string(), 9)]);
    }

    /// A GAN epoch in a file of its own, handed its optimizers by the
    /// script that builds them: the discriminator's optimizer is reset only
    /// after its own step, and the generator's loss goes through it.
    const GAN_EPOCH: &str = "def train_one_epoch(gen, disc, loader, opt_g, opt_d):
    for real in loader:
        fake = gen(real)
        g_loss = -disc(fake).mean()
        g_loss.backward()
        opt_g.step()
        opt_g.zero_grad()
        d_loss = disc(fake.detach()).mean() - disc(real).mean()
        d_loss.backward()
        opt_d.step()
        opt_d.zero_grad()
";

    #[test]
    fn optimizers_handed_to_another_files_function_are_known_there() {
        let script = |build: &str| {
            format!(
                "import torch\nfrom gan import train_one_epoch\n\ndef main(netG, netD, loader):\n{build}    for epoch in range(10):\n        train_one_epoch(netG, netD, loader, optimizerG, optimizerD)\n"
            )
        };
        let built = "    optimizerG = torch.optim.Adam(netG.parameters())\n    optimizerD = torch.optim.Adam(netD.parameters())\n";
        let (dir, files) = tree(&[("train.py", &script(built)), ("gan.py", GAN_EPOCH)]);
        assert_eq!(
            findings(dir.path(), &files),
            [("gan.py".to_string(), 10, "GL009")]
        );
        // Optimizers whose models are not known, or a discriminator the
        // caller may freeze: nothing is handed.
        let unknown = "    optimizerG = make(netG)\n    optimizerD = make(netD)\n";
        let frozen = format!("{built}    netD.requires_grad_(False)\n");
        for build in [unknown, frozen.as_str()] {
            let (dir, files) = tree(&[("train.py", &script(build)), ("gan.py", GAN_EPOCH)]);
            assert_eq!(findings(dir.path(), &files), [], "{build}");
        }
    }

    #[test]
    fn optimizers_a_model_class_of_another_file_builds_are_known_on_its_instances() {
        let model = |d_over: &str| {
            format!(
                "import torch\n\nclass Net(torch.nn.Module):\n    def __init__(self, g, d):\n        super().__init__()\n        self.generator = g\n        self.discriminator = d\n        self.opt_g = torch.optim.Adam(self.generator.parameters())\n        self.opt_d = torch.optim.Adam(self.{d_over}.parameters())\n"
            )
        };
        let train = "from model import Net\n\nnet = Net(G(), D())\nfor real in loader:\n    fake = net.generator(real)\n    d_loss = net.discriminator(fake.detach()).mean()\n    d_loss.backward()\n    net.opt_d.step()\n    net.opt_d.zero_grad()\n    g_loss = -net.discriminator(fake).mean()\n    g_loss.backward()\n    net.opt_g.step()\n    net.opt_g.zero_grad()\n";
        // The generator's pass goes through the discriminator after its
        // reset: the discriminator's next step applies it.
        let (dir, files) = tree(&[("model.py", &model("discriminator")), ("train.py", train)]);
        assert_eq!(
            findings(dir.path(), &files),
            [("train.py".to_string(), 8, "GL009")]
        );
        // Built over the generator too: which optimizer a pass is for is
        // not known, nothing is said.
        let (dir, files) = tree(&[("model.py", &model("generator")), ("train.py", train)]);
        assert_eq!(findings(dir.path(), &files), []);
    }

    #[test]
    fn a_file_that_builds_no_accelerator_takes_the_window_of_the_nearest_that_do() {
        use crate::assumptions::Confidence;
        let train = "from acc import accelerator\n\nfor batch in loader:\n    with accelerator.accumulate(model):\n        optimizer.zero_grad()\n        accelerator.backward(model(batch))\n        optimizer.step()\n";
        let acc = |args: &str| {
            format!("from accelerate import Accelerator\n\naccelerator = Accelerator({args})\n")
        };
        // Built with a window: the reset at the block's top wipes it.
        let (dir, files) = tree(&[
            ("repo/train.py", train),
            ("repo/acc.py", &acc("gradient_accumulation_steps=4")),
            ("other/acc.py", &acc("")),
        ]);
        assert_eq!(
            findings(dir.path(), &files),
            [("repo/train.py".to_string(), 5, "GL004")]
        );
        // Built with none: a window of one unless a launch config sets one,
        // a guess.
        let (_dir, files) = tree(&[
            ("repo/train.py", train),
            ("repo/acc.py", &acc("mixed_precision='fp16'")),
            ("other/acc.py", &acc("gradient_accumulation_steps=4")),
        ]);
        let confidences: Vec<Confidence> = lint_files(&files, &Config::default())
            .into_iter()
            .flat_map(|r| r.unwrap())
            .map(|d| d.confidence)
            .collect();
        assert_eq!(confidences, [Confidence::Medium]);
    }

    #[test]
    fn a_file_with_no_gradient_event_is_not_parsed() {
        let (dir, files) = tree(&[
            ("train.py", "from trainer import Trainer\nfrom utils import mean\n\ndef main(model, opt, loader):\n    t = Trainer(model, opt)\n    for batch in loader:\n        t.run_batch(batch)\n    print(mean([1.0]))\n"),
            ("trainer.py", TRAINER),
            // Imported by name, defines no class of that name: not parsed.
            ("utils.py", "def mean(xs):\n    return sum(xs) / len(xs)\n"),
            // Imports nothing with gradient events: not parsed.
            ("data.py", "import torch\nfrom utils import mean\n\nclass Data(torch.utils.data.Dataset):\n    pass\n"),
            // Does not parse, and is not reported.
            ("legacy.py", "print 'hello'\n"),
        ]);
        assert_eq!(parsed(dir.path(), &files), ["train.py", "trainer.py"]);
        let results = lint_files(&files, &Config::default());
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(
            findings(dir.path(), &files),
            [("trainer.py".to_string(), 8, "GL001")]
        );
    }

    #[test]
    fn a_module_is_taken_only_from_the_importers_import_path() {
        // `engine` at the root of the project, under a folder the script
        // adds to its path, and deep in another project of the tree: the
        // other project's is never a candidate (and never parsed).
        let engine = "def step(model, opt, batch):\n    model(batch).backward()\n    opt.step()\n";
        let train = "import sys\nsys.path.insert(0, 'python/src')\nfrom pkg.engine import step\n\ndef main(model, opt, loader):\n    for batch in loader:\n        step(model, opt, batch)\n";
        let (dir, files) = tree(&[
            ("a/train.py", train),
            ("a/python/src/pkg/engine.py", engine),
            ("b/vendor/pkg/engine.py", engine),
            ("c/run.py", "from pkg.engine import step\n\ndef main(model, opt, loader):\n    for batch in loader:\n        step(model, opt, batch)\n"),
        ]);
        let found = findings(dir.path(), &files);
        // Reached from `a/train.py` (the engine within its folder) and on
        // its own.
        assert!(
            found.contains(&("a/python/src/pkg/engine.py".to_string(), 3, "GL001")),
            "{found:?}"
        );
        let index = ModuleIndex::new(
            &files.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
            &[true; 4],
        );
        let name = |i: usize| {
            files[i]
                .strip_prefix(dir.path())
                .unwrap()
                .display()
                .to_string()
        };
        let of = |importer: usize| -> Vec<String> {
            let mut c: Vec<String> = index
                .candidates(importer, 0, "pkg.engine")
                .into_iter()
                .map(name)
                .collect();
            c.sort();
            c
        };
        let train_py = files
            .iter()
            .position(|f| f.ends_with("a/train.py"))
            .unwrap();
        let run_py = files.iter().position(|f| f.ends_with("c/run.py")).unwrap();
        assert_eq!(of(train_py), ["a/python/src/pkg/engine.py"]);
        assert!(of(run_py).is_empty(), "{:?}", of(run_py));
    }

    #[test]
    fn what_the_trainer_imports_and_cannot_follow_is_not_parsed() {
        // A function of a file with no gradient event, and a module of
        // such functions: read as text only.
        let trainer = format!("from meters import mean\nfrom helpers import *\n{TRAINER}");
        let (dir, files) = tree(&[
            ("trainer.py", &trainer),
            (
                "meters.py",
                "class AverageMeter:\n    pass\n\ndef mean(xs):\n    return sum(xs) / len(xs)\n",
            ),
            ("helpers.py", "def seed(n):\n    return n\n"),
        ]);
        assert_eq!(parsed(dir.path(), &files), ["trainer.py"]);
    }

    #[test]
    fn what_the_trainers_imports_need_is_parsed() {
        // A re-export in `__init__.py` and a base class whose loop calls a
        // method left to subclasses: no gradient event in either, both
        // needed by the subclass's file.
        let base = "class BaseTrainer:\n    def train_step(self, batch):\n        raise NotImplementedError\n\n    def fit(self, loader):\n        for batch in loader:\n            self.train_step(batch)\n";
        let trainer = "from base import BaseTrainer\n\nclass Trainer(BaseTrainer):\n    def __init__(self, model, optimizer):\n        self.model = model\n        self.optimizer = optimizer\n\n    def train_step(self, batch):\n        self.model(batch).backward()\n        self.optimizer.step()\n";
        let (dir, files) = tree(&[
            ("base.py", base),
            ("pkg/__init__.py", "from .trainer import Trainer\n"),
            ("pkg/trainer.py", trainer),
            ("run.py", "from pkg import Trainer\n\ndef main(model, opt, loader):\n    Trainer(model, opt).fit(loader)\n"),
        ]);
        assert_eq!(
            parsed(dir.path(), &files),
            ["base.py", "pkg/__init__.py", "pkg/trainer.py", "run.py"]
        );
        let found = findings(dir.path(), &files);
        assert!(
            found.contains(&("pkg/trainer.py".to_string(), 10, "GL001")),
            "{found:?}"
        );
    }

    #[test]
    fn a_syntax_error_in_a_file_that_is_parsed_is_reported() {
        let (_dir, files) = tree(&[("train.py", "for x in loader\n    loss.backward()\n")]);
        let results = lint_files(&files, &Config::default());
        let e = results[0].as_ref().unwrap_err();
        assert!(e.message.starts_with("syntax error"), "{}", e.message);
        assert_eq!((e.line, e.column), (Some(1), Some(16)));
    }
}
