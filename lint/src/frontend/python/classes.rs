//! The file's classes: their keys (a class defined again is another one),
//! bases, methods, and which class defines a method called on an object.

use ruff_python_ast::Stmt;
use rustc_hash::FxHashSet as HashSet;

use super::lowerer::Lowerer;
use super::summary::{mentions_gradient_event, method_names};
use super::syntax::MAX_DEPTH;
use super::syntax::{dotted, nested_bodies, span};

impl<'s> Lowerer<'s> {
    /// The key of the next definition of class `name` in the pass under way.
    pub(super) fn class_key(&mut self, name: &str) -> String {
        let n = self.class_defs.entry(name.to_string()).or_insert(0);
        *n += 1;
        if *n == 1 {
            name.to_string()
        } else {
            format!("{name}#{n}")
        }
    }

    /// Records the classes of the file and their methods.
    pub(super) fn classes(&mut self, body: &'s [Stmt], depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        for stmt in body {
            match stmt {
                Stmt::ClassDef(c) => {
                    // Bases first: `class Foo(Foo)` derives from the
                    // definition before.
                    let bases: Vec<String> = c
                        .bases()
                        .iter()
                        .filter_map(dotted)
                        .filter_map(|b| {
                            let last = b.rsplit('.').next().unwrap_or(&b);
                            self.latest_class
                                .get(last)
                                .or_else(|| self.imports.classes.get(&b))
                                .cloned()
                        })
                        .collect();
                    let key = self.class_key(c.name.id.as_str());
                    if !bases.is_empty() {
                        self.bases.insert(key.clone(), bases);
                    }
                    self.class_asts.insert(key.clone(), c);
                    for stmt in &c.body {
                        if let Stmt::FunctionDef(f) = stmt {
                            let s = span(f);
                            if self
                                .source
                                .get(s.start..s.end)
                                .is_some_and(mentions_gradient_event)
                            {
                                self.event_methods.insert(format!("{key}.{}", f.name.id));
                            }
                        }
                    }
                    self.latest_class.insert(c.name.id.to_string(), key.clone());
                    self.classes.insert(key, method_names(c));
                    let hf = c.bases().iter().any(|b| {
                        dotted(b).is_some_and(|d| {
                            d.rsplit('.').next().is_some_and(|l| l.ends_with("Trainer"))
                        })
                    });
                    if hf {
                        self.hf_trainers
                            .insert(self.latest_class[c.name.id.as_str()].clone());
                    }
                    self.classes(&c.body, depth + 1);
                }
                Stmt::FunctionDef(f) => self.classes(&f.body, depth + 1),
                _ => {
                    for b in nested_bodies(stmt) {
                        self.classes(b, depth + 1);
                    }
                }
            }
        }
    }

    /// The method a call `receiver.method(...)` runs, when `receiver` is
    /// `self` in a class of the file or an instance of one.
    pub(super) fn method_of(&self, receiver: Option<&str>, method: &str) -> Option<String> {
        let class = match receiver? {
            "self" => self.class.clone()?,
            r => self.instances.get(r)?.clone(),
        };
        if class.contains("::") {
            // A class of another file: `self` in the method is the receiver.
            let receiver = receiver?;
            return self
                .imports
                .methods
                .get(&class)?
                .contains(method)
                .then(|| format!("{class}.{method}|{receiver}"));
        }
        // On another object than `self`, `self` in the method is that object
        // (two instances of one wrapper class are two optimizers).
        let suffix = match receiver {
            Some("self") | None => String::new(),
            Some(r) => format!("|{r}"),
        };
        // An inherited method has a copy of its own in the class (see
        // `inherited`), where `self.m()` runs the class's override of `m`.
        self.method_owner(&class, method)
            .map(|_| format!("{class}.{method}{suffix}"))
    }

    /// `class` and its bases found in the invocation, depth first (at most
    /// 8, each once).
    fn lineage(&self, class: &str) -> Vec<String> {
        fn walk(l: &Lowerer<'_>, class: &str, out: &mut Vec<String>) {
            if out.len() > 8 || out.iter().any(|c| c == class) {
                return;
            }
            out.push(class.to_string());
            for b in l.bases.get(class).into_iter().flatten() {
                walk(l, b, out);
            }
        }
        let mut out = Vec::new();
        walk(self, class, &mut out);
        out
    }

    /// The methods a class defines itself (of this file or another).
    fn own_methods(&self, class: &str) -> Option<&HashSet<String>> {
        if class.contains("::") {
            self.imports.methods.get(class)
        } else {
            self.classes.get(class)
        }
    }

    /// The class that defines `method` for instances of `class`: the class
    /// itself or the first of its bases (depth first) that does.
    pub(super) fn method_owner(&self, class: &str, method: &str) -> Option<String> {
        // Most classes define what is called on them and have no known base.
        if self.own_methods(class).is_some_and(|m| m.contains(method)) {
            return Some(class.to_string());
        }
        if !self.bases.contains_key(class) {
            return None;
        }
        self.lineage(class)
            .into_iter()
            .find(|c| self.own_methods(c).is_some_and(|m| m.contains(method)))
    }

    /// The methods a class of the file inherits (not overriding them), with
    /// the class that defines each.
    pub(super) fn inherited(&self, class: &str) -> Vec<(String, String)> {
        let lineage = self.lineage(class);
        let mut names: Vec<&String> = lineage[1..]
            .iter()
            .flat_map(|b| self.own_methods(b).into_iter().flatten())
            .collect();
        names.sort();
        names.dedup();
        let own = self.own_methods(class);
        names
            .into_iter()
            .filter(|m| !own.is_some_and(|o| o.contains(*m)))
            .filter_map(|m| Some((self.method_owner(class, m)?, m.clone())))
            .collect()
    }
}
