//! One file: reading it, and linting it alone (a Python or Rust source, or
//! a notebook's code cells). The walk ([`crate::walk`]) and the analysis of
//! many files together ([`crate::project`]) both read files this way.

use std::path::Path;

use crate::config::Config;
use crate::notebook::Notebook;
use crate::{lint_source_with, Diagnostic, FileError, Language};

/// Files larger than this are reported, not read (generated code, data).
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;

/// An error of `path` with no position.
pub(crate) fn error(path: &Path, message: String) -> FileError {
    FileError {
        path: path.display().to_string(),
        cell: None,
        line: None,
        column: None,
        message,
    }
}

/// Reads and lints one file with every rule.
pub fn lint_file(path: &Path) -> Result<Vec<Diagnostic>, FileError> {
    lint_file_with(path, &Config::default())
}

/// Reads and lints one file with the rules `config` enables.
pub fn lint_file_with(path: &Path, config: &Config) -> Result<Vec<Diagnostic>, FileError> {
    let language = Language::of(path).unwrap_or(Language::Python);
    let source = read_source(path)?;
    let name = path.display().to_string();
    if is_notebook(path) {
        return lint_notebook_with(&name, &source, config);
    }
    lint_source_with(&name, &source, language, &|code| config.enabled(code))
}

/// Reads a file's text: missing, unreadable, too large and non-UTF-8 files
/// are errors.
pub(crate) fn read_source(path: &Path) -> Result<String, FileError> {
    let mut bytes = Vec::new();
    read_bytes(path, &mut bytes)?;
    String::from_utf8(bytes).map_err(|e| not_utf8(path, e.utf8_error()))
}

/// Reads a file's bytes into `buf` (emptied first), as [`read_source`]
/// reads them: a buffer reused from file to file keeps its memory.
pub(crate) fn read_bytes(path: &Path, buf: &mut Vec<u8>) -> Result<(), FileError> {
    let too_large = |len: u64| {
        error(
            path,
            format!("file too large ({len} bytes, limit {MAX_FILE_BYTES}); skipped"),
        )
    };
    // Opened first, and its size read from the open file: one lookup of the
    // path. Where it cannot be opened, the errors are those of looking it up.
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(open) => {
            let meta = std::fs::metadata(path).map_err(|e| {
                let broken =
                    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
                error(
                    path,
                    if broken {
                        "broken symbolic link".into()
                    } else {
                        e.to_string()
                    },
                )
            })?;
            if meta.len() > MAX_FILE_BYTES {
                return Err(too_large(meta.len()));
            }
            return Err(error(path, open.to_string()));
        }
    };
    let len = file
        .metadata()
        .map_err(|e| error(path, e.to_string()))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(too_large(len));
    }
    buf.clear();
    buf.reserve(usize::try_from(len).unwrap_or(0));
    std::io::Read::read_to_end(&mut file, buf).map_err(|e| error(path, e.to_string()))?;
    Ok(())
}

/// The error of a file that is not UTF-8.
pub(crate) fn not_utf8(path: &Path, e: std::str::Utf8Error) -> FileError {
    error(
        path,
        format!("not valid UTF-8 (byte {}); skipped", e.valid_up_to()),
    )
}

/// Whether `path` is a Jupyter notebook (`.ipynb`).
pub fn is_notebook(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "ipynb")
}

/// Lints a notebook's code cells as one module; findings and syntax errors
/// are placed in their cells.
pub fn lint_notebook(path: &str, text: &str) -> Result<Vec<Diagnostic>, FileError> {
    lint_notebook_with(path, text, &Config::default())
}

/// Like [`lint_notebook`], with the rules `config` enables.
pub fn lint_notebook_with(
    path: &str,
    text: &str,
    config: &Config,
) -> Result<Vec<Diagnostic>, FileError> {
    let notebook = Notebook::parse(text).map_err(|message| FileError {
        path: path.to_string(),
        cell: None,
        line: None,
        column: None,
        message,
    })?;
    match lint_source_with(path, &notebook.source, Language::Python, &|code| {
        config.enabled(code)
    }) {
        Ok(found) => Ok(found
            .into_iter()
            .map(|d| place_in_cell(&notebook, d))
            .collect()),
        Err(mut e) => {
            if let Some(l) = e.line {
                let (cell, line) = notebook.locate(l);
                e.cell = Some(cell);
                e.line = Some(line);
            }
            Err(e)
        }
    }
}

/// Places a finding of a notebook's joined code in its cell.
pub(crate) fn place_in_cell(notebook: &Notebook, mut d: Diagnostic) -> Diagnostic {
    let (cell, line) = notebook.locate(d.line);
    let (end_cell, end_line) = notebook.locate(d.end_line);
    d.cell = Some(cell);
    d.line = line;
    if end_cell == cell {
        d.end_line = end_line;
    } else {
        // A span that crosses cells is shown on its first line.
        d.end_line = line;
        d.end_column = d.column + 1;
    }
    d
}
