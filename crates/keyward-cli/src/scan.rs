//! `keyward scan`: finds this deployment's keys in files, standard input or
//! every commit of a git repository, so a leaked key is found before (or
//! after) it is pushed. Only each key's hint is printed: the scanner's own
//! output, often a CI log, must not leak the keys again.

use anyhow::{Context, Result, bail};
use clap::Args;
use keyward_core::scan::FoundKey;
use keyward_core::{EnvTag, KeyFormat};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Files larger than this are skipped (with a warning): keys live in
/// configuration and source, not in disk images.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Args)]
pub struct ScanArgs {
    /// Files or directories to scan (directories recursively, skipping
    /// `.git`; symbolic links are not followed); `-` reads standard input.
    /// Without any, the current directory.
    paths: Vec<PathBuf>,
    /// Also scan every line added by any commit of this git repository, on
    /// every branch (`git log -p --all`), so a key that was committed and
    /// later removed is still found.
    #[arg(long, value_name = "REPO")]
    git_history: Option<PathBuf>,
    /// Print the findings as one JSON array.
    #[arg(long)]
    json: bool,
}

/// Where a key was found.
struct Finding {
    path: String,
    commit: Option<String>,
    line: usize,
    column: usize,
    hint: String,
    env_tag: String,
}

impl Finding {
    fn kind(&self) -> &'static str {
        if self.env_tag == EnvTag::MANAGEMENT {
            "management_token"
        } else {
            "api_key"
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "path": self.path,
            "commit": self.commit,
            "line": self.line,
            "column": self.column,
            "hint": self.hint,
            "env_tag": self.env_tag,
            "kind": self.kind(),
        })
    }

    fn describe(&self) -> String {
        let place = match &self.commit {
            Some(commit) => format!("{}:{}", &commit[..commit.len().min(12)], self.path),
            None => self.path.clone(),
        };
        let what = match self.kind() {
            "management_token" => "management token".to_owned(),
            _ => format!("API key ({} environment tag)", self.env_tag),
        };
        format!(
            "{place}:{}:{}: {} — {what}",
            self.line, self.column, self.hint
        )
    }
}

/// Scans; exits 1 when it finds a key (for CI and pre-commit hooks).
pub fn run(format: &KeyFormat, args: ScanArgs) -> Result<ExitCode> {
    let mut scanner = Scanner {
        format,
        findings: Vec::new(),
        files: 0,
    };
    let paths = if args.paths.is_empty() && args.git_history.is_none() {
        vec![PathBuf::from(".")]
    } else {
        args.paths
    };
    for path in &paths {
        if path.as_os_str() == "-" {
            let mut input = Vec::new();
            std::io::stdin()
                .read_to_end(&mut input)
                .context("reading standard input")?;
            scanner.scan_buffer("(standard input)", &input);
        } else {
            scanner.scan_path(path)?;
        }
    }
    if let Some(repo) = &args.git_history {
        scanner.scan_git_history(repo)?;
    }
    if args.json {
        let findings: Vec<Value> = scanner.findings.iter().map(Finding::to_json).collect();
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        for finding in &scanner.findings {
            println!("{}", finding.describe());
        }
    }
    let found = scanner.findings.len();
    eprintln!(
        "{found} key{} found in {} file{}{}",
        if found == 1 { "" } else { "s" },
        scanner.files,
        if scanner.files == 1 { "" } else { "s" },
        if args.git_history.is_some() {
            " and the git history"
        } else {
            ""
        },
    );
    if found > 0 {
        eprintln!(
            "Revoke or rotate each key found (`keyward keys rotate`), then remove it from the files and history."
        );
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

struct Scanner<'a> {
    format: &'a KeyFormat,
    findings: Vec<Finding>,
    files: usize,
}

impl Scanner<'_> {
    fn scan_path(&mut self, path: &Path) -> Result<()> {
        let metadata = std::fs::symlink_metadata(path)
            .with_context(|| format!("reading {}", path.display()))?;
        if metadata.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("listing {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.file_name().is_none_or(|name| name != ".git"))
                .collect();
            entries.sort();
            for entry in entries {
                self.scan_path(&entry)?;
            }
        } else if metadata.is_file() {
            if metadata.len() > MAX_FILE_BYTES {
                eprintln!("skipped {}: larger than 64 MiB", path.display());
                return Ok(());
            }
            match std::fs::read(path) {
                Ok(bytes) => self.scan_buffer(&path.display().to_string(), &bytes),
                Err(error) => eprintln!("skipped {}: {error}", path.display()),
            }
        }
        Ok(())
    }

    fn scan_buffer(&mut self, path: &str, bytes: &[u8]) {
        self.files += 1;
        let mut position = LinePosition::default();
        for found in self.format.find_keys(bytes) {
            let (line, column) = position.advance_to(bytes, found.offset);
            self.findings
                .push(finding(path, None, line, column, &found));
        }
    }

    /// Every added line of every commit, as `git log -p` prints them, with
    /// its line number in the file it was added to.
    fn scan_git_history(&mut self, repo: &Path) -> Result<()> {
        let mut git = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args([
                "log",
                "--all",
                "-p",
                "--unified=0",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                "--format=format:commit %H",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running git (is it installed?)")?;
        let stdout = git.stdout.take().context("git's output")?;
        let mut diff = DiffReader::default();
        for line in BufReader::new(stdout).split(b'\n') {
            let line = line.context("reading git's output")?;
            if let Some(added) = diff.read(&line) {
                for found in self.format.find_keys(added.text) {
                    self.findings.push(finding(
                        &added.path,
                        Some(added.commit.to_owned()),
                        added.line,
                        found.offset + 1,
                        &found,
                    ));
                }
            }
        }
        let output = git.wait_with_output().context("waiting for git")?;
        if !output.status.success() {
            bail!(
                "--git-history {}: git log failed: {}",
                repo.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

fn finding(
    path: &str,
    commit: Option<String>,
    line: usize,
    column: usize,
    found: &FoundKey,
) -> Finding {
    Finding {
        path: path.to_owned(),
        commit,
        line,
        column,
        hint: found.key.hint(),
        env_tag: found.key.env_tag().to_owned(),
    }
}

/// Turns byte offsets into 1-based line and column numbers, reading the
/// buffer once for findings in increasing order.
#[derive(Default)]
struct LinePosition {
    offset: usize,
    line: usize,
    line_start: usize,
}

impl LinePosition {
    fn advance_to(&mut self, bytes: &[u8], offset: usize) -> (usize, usize) {
        for (i, &byte) in bytes[self.offset..offset].iter().enumerate() {
            if byte == b'\n' {
                self.line += 1;
                self.line_start = self.offset + i + 1;
            }
        }
        self.offset = offset;
        (self.line + 1, offset - self.line_start + 1)
    }
}

/// Follows a `git log -p --unified=0` stream: which commit and file each
/// added line belongs to, and its line number there.
#[derive(Default)]
struct DiffReader {
    commit: String,
    path: Option<String>,
    next_line: usize,
}

/// One line a commit added.
struct Added<'a> {
    commit: &'a str,
    path: String,
    line: usize,
    text: &'a [u8],
}

impl DiffReader {
    fn read<'a>(&'a mut self, line: &'a [u8]) -> Option<Added<'a>> {
        if let Some(commit) = line.strip_prefix(b"commit ") {
            self.commit = String::from_utf8_lossy(commit).into_owned();
            self.path = None;
        } else if let Some(path) = line.strip_prefix(b"+++ ") {
            let path = String::from_utf8_lossy(path);
            self.path = path.strip_prefix("b/").map(str::to_owned);
        } else if line.starts_with(b"@@ ") {
            self.next_line = new_start(line).unwrap_or(0);
        } else if let Some(text) = line.strip_prefix(b"+") {
            let path = self.path.clone()?;
            let number = self.next_line;
            self.next_line += 1;
            return Some(Added {
                commit: &self.commit,
                path,
                line: number,
                text,
            });
        }
        None
    }
}

/// The first line of the new side of a hunk header, `@@ -a,b +c,d @@`.
fn new_start(header: &[u8]) -> Option<usize> {
    let header = std::str::from_utf8(header).ok()?;
    let new_side = header.split(' ').find_map(|part| part.strip_prefix('+'))?;
    new_side.split(',').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = b"first\nsecond line\n\nfourth";
        let mut position = LinePosition::default();
        assert_eq!(position.advance_to(text, 2), (1, 3));
        assert_eq!(position.advance_to(text, 6), (2, 1));
        assert_eq!(position.advance_to(text, 13), (2, 8));
        assert_eq!(position.advance_to(text, 19), (4, 1));
    }

    #[test]
    fn a_diff_stream_yields_added_lines_where_they_landed() {
        let stream = [
            "commit 0123456789abcdef",
            "diff --git a/app.env b/app.env",
            "--- a/app.env",
            "+++ b/app.env",
            "@@ -3,0 +4,2 @@ header",
            "+KEY=one",
            "+OTHER=two",
            "@@ -10 +12 @@",
            "-removed",
            "+changed",
            "diff --git a/gone.txt b/gone.txt",
            "--- a/gone.txt",
            "+++ /dev/null",
            "@@ -1 +0,0 @@",
            "-was here",
        ];
        let mut reader = DiffReader::default();
        let mut added = Vec::new();
        for line in stream {
            if let Some(a) = reader.read(line.as_bytes()) {
                added.push((
                    a.commit.to_owned(),
                    a.path,
                    a.line,
                    String::from_utf8_lossy(a.text).into_owned(),
                ));
            }
        }
        let commit = "0123456789abcdef".to_owned();
        assert_eq!(
            added,
            [
                (
                    commit.clone(),
                    "app.env".to_owned(),
                    4,
                    "KEY=one".to_owned()
                ),
                (
                    commit.clone(),
                    "app.env".to_owned(),
                    5,
                    "OTHER=two".to_owned()
                ),
                (commit, "app.env".to_owned(), 12, "changed".to_owned()),
            ]
        );
    }
}
