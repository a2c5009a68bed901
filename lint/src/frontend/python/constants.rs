//! Tests whose value the file fixes: settings bound once to a boolean
//! (`USE_AMP = False`), parameters that every call leaves `None`.

use ruff_python_ast::visitor::{walk_expr, Visitor};
use ruff_python_ast::{self as ast, Expr, Stmt};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::lowerer::Lowerer;
use super::syntax::{assigned_names, call_shapes};

impl<'s> Lowerer<'s> {
    /// The parameters of a plain function (not a method) that default to
    /// `None`, are never assigned in it, and are `None` in every call of the
    /// file (there is at least one, and none unpacks arguments).
    pub(super) fn params_none_in_every_call(&self, f: &ast::StmtFunctionDef) -> HashSet<String> {
        let mut out = HashSet::default();
        if self.class.is_some() {
            return out;
        }
        let params = &f.parameters;
        let defaults_none = |p: &ast::ParameterWithDefault| {
            matches!(p.default.as_deref(), Some(Expr::NoneLiteral(_)))
        };
        let any_none_default = params
            .posonlyargs
            .iter()
            .chain(&params.args)
            .chain(&params.kwonlyargs)
            .any(defaults_none);
        if !any_none_default {
            return out;
        }
        let calls = self.calls.get_or_init(|| call_shapes(self.module_body));
        let Some(calls) = calls.get(f.name.id.as_str()) else {
            return out;
        };
        if calls.is_empty() || calls.iter().any(|c| c.unpacked) {
            return out;
        }
        let mut assigned = Vec::new();
        assigned_names(&f.body, &mut assigned, 0);
        let positional: Vec<&ast::ParameterWithDefault> =
            params.posonlyargs.iter().chain(&params.args).collect();
        let all = positional
            .iter()
            .enumerate()
            .map(|(i, p)| (Some(i), *p))
            .chain(params.kwonlyargs.iter().map(|p| (None, p)));
        for (index, p) in all {
            let name = p.parameter.name.id.as_str();
            let defaults_none = matches!(p.default.as_deref(), Some(Expr::NoneLiteral(_)));
            if !defaults_none || assigned.iter().any(|a| a == name) {
                continue;
            }
            let none_everywhere = calls.iter().all(|c| {
                let positional_none = match index {
                    Some(i) => c.positional.get(i).copied().unwrap_or(true),
                    None => true,
                };
                let keyword_none = c
                    .keywords
                    .iter()
                    .filter(|(k, _)| k == name)
                    .all(|(_, none)| *none);
                positional_none && keyword_none
            });
            if none_everywhere {
                out.insert(name.to_string());
            }
        }
        out
    }

    /// The value of a test on parameters that are always `None`
    /// (`p is not None`, `p is None`, `not`, `and`, `or`), if known.
    pub(super) fn constant_test(&self, test: &Expr) -> Option<bool> {
        match test {
            Expr::Compare(c)
                if c.ops.len() == 1
                    && matches!(c.comparators.first(), Some(Expr::NoneLiteral(_))) =>
            {
                let Expr::Name(n) = c.left.as_ref() else {
                    return None;
                };
                if !self.none_params.contains(n.id.as_str()) {
                    return None;
                }
                match c.ops[0] {
                    ast::CmpOp::Is => Some(true),
                    ast::CmpOp::IsNot => Some(false),
                    _ => None,
                }
            }
            Expr::UnaryOp(u) if u.op == ast::UnaryOp::Not => {
                self.constant_test(&u.operand).map(|v| !v)
            }
            Expr::Name(n) => self.constants.get(n.id.as_str()).copied(),
            Expr::BoolOp(b) => {
                let values: Vec<Option<bool>> =
                    b.values.iter().map(|v| self.constant_test(v)).collect();
                match b.op {
                    ast::BoolOp::And if values.contains(&Some(false)) => Some(false),
                    ast::BoolOp::And if values.iter().all(|v| *v == Some(true)) => Some(true),
                    ast::BoolOp::Or if values.contains(&Some(true)) => Some(true),
                    ast::BoolOp::Or if values.iter().all(|v| *v == Some(false)) => Some(false),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// Names bound once in the whole module, at its top level, to a boolean
/// literal, and never a function's parameter: settings of a script
/// (`USE_AMP = False`).
pub(super) fn module_constants(body: &[Stmt]) -> HashMap<String, bool> {
    #[derive(Default)]
    struct Stores(HashMap<String, usize>);
    impl<'a> Visitor<'a> for Stores {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Expr::Name(n) = expr {
                if n.ctx.is_store() {
                    *self.0.entry(n.id.to_string()).or_default() += 1;
                }
            }
            walk_expr(self, expr);
        }
        fn visit_parameter(&mut self, p: &'a ast::Parameter) {
            // A parameter of that name may shadow it.
            *self.0.entry(p.name.id.to_string()).or_default() += 2;
            ruff_python_ast::visitor::walk_parameter(self, p);
        }
    }
    let mut out = HashMap::default();
    for stmt in body {
        if let Stmt::Assign(a) = stmt {
            if let (Expr::BooleanLiteral(b), [Expr::Name(n)]) =
                (a.value.as_ref(), a.targets.as_slice())
            {
                out.insert(n.id.to_string(), b.value);
            }
        }
    }
    if out.is_empty() {
        return out;
    }
    let mut stores = Stores::default();
    for stmt in body {
        stores.visit_stmt(stmt);
    }
    out.retain(|name, _| stores.0.get(name) == Some(&1));
    out
}
