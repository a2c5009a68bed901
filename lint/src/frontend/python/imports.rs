//! Imports: the import statements of a file, and the names it imports from
//! other files of the invocation, resolved.

use ruff_python_ast::{self as ast, Stmt};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::syntax::nested_bodies;

/// One imported name or module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Import {
    /// `from ..pkg.mod import name as local`.
    From {
        /// Leading dots (0 for an absolute import).
        level: u32,
        /// The module after the dots (may be empty).
        module: String,
        /// The name imported.
        name: String,
        /// The name it is bound to.
        local: String,
    },
    /// `import pkg.mod as local` (`local` is `pkg.mod` without `as`).
    Module {
        /// The module.
        module: String,
        /// The name it is reached by.
        local: String,
    },
}

/// The names a file imports from other files of the invocation, resolved.
#[derive(Debug, Clone, Default)]
pub struct Imports {
    /// Local name (`Trainer`, `t.Trainer`) -> the qualified key of a class
    /// of another file (`3::Trainer`).
    pub classes: HashMap<String, String>,
    /// Qualified class key -> its methods.
    pub methods: HashMap<String, HashSet<String>>,
    /// Local name (`train_step`, `t.train_step`) -> the qualified name of a
    /// function of another file (`3::train_step`).
    pub functions: HashMap<String, String>,
    /// Local name of a class of another file (followed or not) -> the
    /// optimizers it builds over its submodules (`opt_d`, `discriminator`).
    pub optimizer_models: HashMap<String, Vec<(String, crate::ir::Built)>>,
}

impl Imports {
    /// Whether nothing is imported.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty() && self.functions.is_empty()
    }
}

/// The import statements of `body`, in functions and blocks too (not in
/// classes, not deeper than 4).
pub(super) fn import_statements(body: &[Stmt], out: &mut Vec<Import>, depth: usize) {
    if depth > 4 {
        return;
    }
    for stmt in body {
        match stmt {
            Stmt::Import(i) => {
                for alias in &i.names {
                    let (module, local) = name_and_local(alias);
                    out.push(Import::Module { module, local });
                }
            }
            Stmt::ImportFrom(f) => {
                let module = f
                    .module
                    .as_ref()
                    .map_or_else(String::new, |m| m.id.to_string());
                for alias in &f.names {
                    let (name, local) = name_and_local(alias);
                    out.push(Import::From {
                        level: f.level,
                        module: module.clone(),
                        name,
                        local,
                    });
                }
            }
            Stmt::FunctionDef(f) => import_statements(&f.body, out, depth + 1),
            Stmt::ClassDef(_) => {}
            _ => {
                for b in nested_bodies(stmt) {
                    import_statements(b, out, depth + 1);
                }
            }
        }
    }
}

/// The name an import alias imports, and the name it binds (`as local`, or
/// the same).
fn name_and_local(alias: &ast::Alias) -> (String, String) {
    let name = alias.name.id.to_string();
    let local = alias
        .asname
        .as_ref()
        .map_or_else(|| name.clone(), |a| a.id.to_string());
    (name, local)
}
