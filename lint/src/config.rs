//! Settings from `gradlint.toml` or `[tool.gradlint]` in `pyproject.toml`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::assumptions::Confidence;
use crate::diagnostic::Diagnostic;

/// What to run and where.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Rule codes to run (default: all).
    #[serde(default)]
    pub select: Option<Vec<String>>,
    /// Rule codes to skip.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Paths (relative to the config file, or globs) to skip.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The lowest confidence shown: `high` (the default: findings that rest
    /// on no guess), `medium`, `low` or `all`.
    #[serde(default, deserialize_with = "confidence")]
    pub confidence: Option<Confidence>,
}

fn confidence<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Confidence>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

#[derive(Deserialize)]
struct Pyproject {
    tool: Option<Tool>,
}

#[derive(Deserialize)]
struct Tool {
    gradlint: Option<Config>,
}

impl Config {
    /// Whether a finding is shown: its rule runs and it is at least as
    /// sure as the confidence asked for.
    pub fn shows(&self, d: &Diagnostic) -> bool {
        self.enabled(d.code) && d.confidence >= self.confidence.unwrap_or(Confidence::High)
    }

    /// Whether `code` runs.
    pub fn enabled(&self, code: &str) -> bool {
        let listed = |list: &[String]| list.iter().any(|c| c.eq_ignore_ascii_case(code));
        self.select.as_deref().is_none_or(listed) && !listed(&self.ignore)
    }

    /// Reads a config file (`gradlint.toml`, or `pyproject.toml` with a
    /// `[tool.gradlint]` table; `None` if it has none).
    pub fn read(path: &Path) -> Result<Option<Config>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let bad = |e: toml::de::Error| format!("{}: {e}", path.display());
        if path.file_name().is_some_and(|n| n == "pyproject.toml") {
            let p: Pyproject = toml::from_str(&text).map_err(bad)?;
            Ok(p.tool.and_then(|t| t.gradlint))
        } else {
            toml::from_str(&text).map(Some).map_err(bad)
        }
    }

    /// The nearest `gradlint.toml` or `pyproject.toml` with `[tool.gradlint]`
    /// from `start` upwards.
    pub fn discover(start: &Path) -> Result<Option<(PathBuf, Config)>, String> {
        let start = std::fs::canonicalize(start).unwrap_or_else(|_| start.to_path_buf());
        for dir in start.ancestors() {
            for name in ["gradlint.toml", "pyproject.toml"] {
                let candidate = dir.join(name);
                if candidate.is_file() {
                    if let Some(config) = Config::read(&candidate)? {
                        return Ok(Some((candidate, config)));
                    }
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_and_ignore() {
        let c: Config =
            toml::from_str("select = [\"GL001\", \"gl002\"]\nignore = [\"GL002\"]").unwrap();
        assert!(c.enabled("GL001"));
        assert!(!c.enabled("GL002"));
        assert!(!c.enabled("GL003"));
        assert!(Config::default().enabled("GL007"));
    }

    #[test]
    fn confidence_setting() {
        let c: Config = toml::from_str("confidence = \"medium\"").unwrap();
        assert_eq!(c.confidence, Some(Confidence::Medium));
        let bad = toml::from_str::<Config>("confidence = \"sure\"").unwrap_err();
        assert!(bad.to_string().contains("unknown confidence"));
    }

    #[test]
    fn pyproject_table() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pyproject.toml");
        std::fs::write(
            &p,
            "[project]\nname = \"x\"\n[tool.gradlint]\nignore = [\"GL004\"]\n",
        )
        .unwrap();
        let (found, c) = Config::discover(dir.path()).unwrap().unwrap();
        assert!(found.ends_with("pyproject.toml"));
        assert!(!c.enabled("GL004"));
        std::fs::write(&p, "[tool.gradlint]\nselec = [\"GL004\"]\n").unwrap();
        assert!(Config::discover(dir.path())
            .unwrap_err()
            .contains("unknown field"));
    }
}
