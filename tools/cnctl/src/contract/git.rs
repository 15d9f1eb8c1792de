//! A change set from git history: which files a range changes, how (add, modify, delete,
//! rename), by how many lines (added plus deleted; binary files count 0), and the subjects of
//! the commits that touched each file.
//!
//! Git runs as a plain process (never a shell) with NUL-separated output (`-z`), so paths with
//! spaces, quotes or newlines parse like any other. The range is checked before git sees it and
//! follows `--end-of-options`; repository settings that would run programs or reach the
//! network (`core.fsmonitor`, external diff drivers, textconv filters, `log.showSignature` with
//! its `gpg.program`, pagers, remote protocols, lazy fetches, the system-wide config) are turned
//! off, because the repository may not be ours.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use bus_schema::codec::Limits;
use bus_schema::{Change, ChangeType};

/// Longest description built from commit subjects, in characters.
pub const MAX_DESCRIPTION: usize = 200;
/// Longest range accepted.
const MAX_RANGE: usize = 200;
/// The part of one message the changes may take (the rest is the request's other fields).
const CHANGES_BUDGET: usize = Limits::DEFAULT.max_payload - 4 * 1024;
/// Most changes in one request (bus-schema accepts up to 1000).
pub const MAX_CHANGES: usize = 500;

/// Why a range was refused before git saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("the range is empty; give FROM..TO (e.g. HEAD~5..HEAD) or one commit")]
    Empty,
    #[error("the range {shown:?}… is longer than {MAX_RANGE} characters")]
    TooLong { shown: String },
    #[error(
        "the range {shown:?} contains whitespace or control characters; give FROM..TO or one commit"
    )]
    Whitespace { shown: String },
    #[error("the range {shown:?} uses `...`; give FROM..TO (what TO adds to FROM)")]
    ThreeDots { shown: String },
    #[error("the range {shown:?} needs both ends: FROM..TO")]
    MissingEnd { shown: String },
    #[error("the range {shown:?} starts with `-`; a revision cannot be an option")]
    StartsWithDash { shown: String },
    #[error("the range {shown:?} has more than one `..`")]
    SeveralRanges { shown: String },
}

/// Why git gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git is not installed (or not on PATH)")]
    NotInstalled(#[source] std::io::Error),
    #[error("cannot run git: {0}")]
    CannotRun(#[source] std::io::Error),
    /// Git ran and failed; the message is the first line of what it wrote to stderr.
    #[error("{}", first_line(stderr))]
    Failed { status: ExitStatus, stderr: String },
    #[error("{} is not a git repository: {source}", repo.display())]
    NotARepository { repo: PathBuf, source: Box<GitError> },
    #[error("{rev} is not a commit in {}", repo.display())]
    NotACommit { rev: String, repo: PathBuf, source: Box<GitError> },
    /// `git diff` or `git log` of the range failed.
    #[error("git {command} {spec}: {source}")]
    Range { command: &'static str, spec: String, source: Box<GitError> },
}

/// The first line of git's stderr with text on it.
fn first_line(stderr: &str) -> &str {
    stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("failed without a message").trim()
}

/// A checked range: `FROM..TO`, or one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRange {
    from: Option<String>,
    to: String,
}

impl GitRange {
    /// Refuses anything git could read as an option, or that is not one range.
    pub fn parse(s: &str) -> Result<Self, RangeError> {
        let shown: String = s.chars().take(60).collect();
        if s.is_empty() {
            return Err(RangeError::Empty);
        }
        if s.len() > MAX_RANGE {
            return Err(RangeError::TooLong { shown });
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(RangeError::Whitespace { shown });
        }
        if s.contains("...") {
            return Err(RangeError::ThreeDots { shown });
        }
        let (from, to) = match s.split_once("..") {
            Some((from, to)) => (Some(from), to),
            None => (None, s),
        };
        for side in from.iter().chain([&to]) {
            if side.is_empty() {
                return Err(RangeError::MissingEnd { shown });
            }
            if side.starts_with('-') {
                return Err(RangeError::StartsWithDash { shown });
            }
            if side.contains("..") {
                return Err(RangeError::SeveralRanges { shown });
            }
        }
        Ok(Self { from: from.map(str::to_owned), to: to.to_owned() })
    }

    /// The revision being deployed.
    pub fn end(&self) -> &str {
        &self.to
    }

    /// The range as git's diff and log take it; one commit is `C^!` (C against its parent).
    pub fn spec(&self) -> String {
        match &self.from {
            Some(from) => format!("{from}..{}", self.to),
            None => format!("{}^!", self.to),
        }
    }

    fn revisions(&self) -> impl Iterator<Item = &str> {
        self.from.iter().map(String::as_str).chain([self.to.as_str()])
    }
}

impl std::fmt::Display for GitRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.from {
            Some(from) => write!(f, "{from}..{}", self.to),
            None => f.write_str(&self.to),
        }
    }
}

/// One line of `--name-status -z`: a status letter and a path (two for renames and copies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    pub status: char,
    pub path: String,
    pub old_path: Option<String>,
}

impl Touched {
    pub fn change_type(&self) -> ChangeType {
        match self.status {
            'A' | 'C' => ChangeType::Add,
            'D' => ChangeType::Delete,
            'R' => ChangeType::Rename,
            _ => ChangeType::Modify,
        }
    }
}

/// One commit of `git log -z --format=%x1e%s --name-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub subject: String,
    pub files: Vec<Touched>,
}

/// `--numstat -z`: path (the new one for renames) → lines added plus deleted; binary is 0.
pub fn parse_numstat(out: &str) -> HashMap<String, u32> {
    let mut lines = HashMap::new();
    let mut tokens = out.split('\0');
    while let Some(token) = tokens.next() {
        let mut fields = token.trim_start_matches('\n').splitn(3, '\t');
        let (Some(added), Some(deleted), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let count = |n: &str| n.parse::<u32>().unwrap_or(0);
        // A rename leaves the path empty and follows with the old and the new path.
        let path = if path.is_empty() { tokens.nth(1).unwrap_or_default() } else { path };
        if !path.is_empty() {
            *lines.entry(path.to_owned()).or_insert(0) +=
                count(added).saturating_add(count(deleted));
        }
    }
    lines
}

/// `--name-status -z`: `M\0path\0`, `R100\0old\0new\0`, …
pub fn parse_name_status(out: &str) -> Vec<Touched> {
    let mut touched = Vec::new();
    let mut tokens = out.split('\0').map(|t| t.trim_start_matches('\n'));
    while let Some(token) = tokens.next() {
        let Some(status) = token.chars().next().filter(char::is_ascii_uppercase) else { continue };
        let Some(first) = tokens.next() else { break };
        let entry = if matches!(status, 'R' | 'C') {
            let Some(second) = tokens.next() else { break };
            Touched { status, path: second.to_owned(), old_path: Some(first.to_owned()) }
        } else {
            Touched { status, path: first.to_owned(), old_path: None }
        };
        touched.push(entry);
    }
    touched
}

/// `git log -z --format=%x1e%s --name-status`, newest first.
pub fn parse_log(out: &str) -> Vec<Commit> {
    out.split('\x1e')
        .filter(|c| !c.is_empty())
        .map(|c| {
            let (subject, files) = c.split_once('\0').unwrap_or((c, ""));
            Commit { subject: subject.trim().to_owned(), files: parse_name_status(files) }
        })
        .collect()
}

/// Each path (as it is at the range's end) → the subjects of the commits that touched it,
/// newest first, following renames back to the old names.
pub fn subjects_by_path(commits: &[Commit]) -> HashMap<String, Vec<String>> {
    let mut now_named: HashMap<String, String> = HashMap::new();
    let mut subjects: HashMap<String, Vec<String>> = HashMap::new();
    for commit in commits {
        let mut renames = Vec::new();
        for file in &commit.files {
            let current = now_named.get(&file.path).cloned().unwrap_or_else(|| file.path.clone());
            let list = subjects.entry(current.clone()).or_default();
            if !commit.subject.is_empty() && !list.contains(&commit.subject) {
                list.push(commit.subject.clone());
            }
            if let (Some(old), 'R') = (&file.old_path, file.status) {
                renames.push((old.clone(), current));
            }
        }
        // Older commits name the file by its old path.
        now_named.extend(renames);
    }
    subjects
}

/// Subjects joined with "; " within [`MAX_DESCRIPTION`] characters, saying how many are left out.
pub fn describe(subjects: &[String]) -> String {
    // Room for " (+99999 more commits)".
    let room = MAX_DESCRIPTION - 24;
    let mut out = String::new();
    let mut used = 0;
    for s in subjects {
        let joined = out.chars().count() + s.chars().count() + if used > 0 { 2 } else { 0 };
        if joined > room && used > 0 {
            break;
        }
        if used > 0 {
            out.push_str("; ");
        }
        out.push_str(s);
        used += 1;
    }
    if out.chars().count() > room {
        out = out.chars().take(room - 1).collect::<String>() + "…";
    }
    if used < subjects.len() {
        out.push_str(&format!(" (+{} more commits)", subjects.len() - used));
    }
    out
}

/// The changes of a range, ready for a contract request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeSet {
    pub changes: Vec<Change>,
    pub commits: usize,
    pub files: usize,
    pub lines: u64,
    /// Files folded into one summary change so that the request fits in one message.
    pub folded: usize,
}

impl ChangeSet {
    pub fn build(touched: &[Touched], lines: &HashMap<String, u32>, commits: &[Commit]) -> Self {
        let subjects = subjects_by_path(commits);
        let changes: Vec<Change> = touched
            .iter()
            .map(|t| Change {
                file_path: t.path.clone(),
                change_type: t.change_type(),
                lines_changed: lines.get(&t.path).copied().unwrap_or(0),
                risk_tags: Vec::new(),
                description: subjects.get(&t.path).map(|s| describe(s)).unwrap_or_default(),
            })
            .collect();
        let total: u64 = changes.iter().map(|c| u64::from(c.lines_changed)).sum();
        let mut set =
            Self { files: changes.len(), changes, commits: commits.len(), lines: total, folded: 0 };
        set.fit(CHANGES_BUDGET);
        set
    }

    /// Keeps the changes within `budget` bytes of JSON: first shorter descriptions, then the
    /// smallest changes folded into one `(N more files)` change that keeps their line count.
    pub fn fit(&mut self, budget: usize) {
        let size = |c: &Change| serde_json::to_vec(c).map_or(0, |v| v.len() + 1);
        let fits =
            |cs: &[Change]| cs.len() <= MAX_CHANGES && cs.iter().map(size).sum::<usize>() <= budget;
        if fits(&self.changes) {
            return;
        }
        for c in &mut self.changes {
            if c.description.chars().count() > 60 {
                c.description = c.description.chars().take(59).collect::<String>() + "…";
            }
        }
        if fits(&self.changes) {
            return;
        }
        // Largest first; the summary entry takes one slot and about 100 bytes.
        let mut order: Vec<usize> = (0..self.changes.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.changes[i].lines_changed));
        let (mut kept, mut used, mut count) = (vec![false; self.changes.len()], 100, 1);
        for i in order {
            let s = size(&self.changes[i]);
            if used + s <= budget && count < MAX_CHANGES {
                used += s;
                count += 1;
                kept[i] = true;
            }
        }
        let (mut keep, mut rest) = (Vec::new(), Vec::new());
        for (c, k) in std::mem::take(&mut self.changes).into_iter().zip(kept) {
            if k { keep.push(c) } else { rest.push(c) }
        }
        self.folded = rest.len();
        keep.push(Change {
            file_path: format!("({} more files)", rest.len()),
            change_type: ChangeType::Modify,
            lines_changed: rest.iter().map(|c| c.lines_changed).fold(0, u32::saturating_add),
            risk_tags: Vec::new(),
            description: String::new(),
        });
        self.changes = keep;
    }

    /// One line for the terminal: what was read.
    pub fn summary(&self, range: &GitRange) -> String {
        let folded = match self.folded {
            0 => String::new(),
            n => format!(" ({n} smaller files folded into one entry to fit one message)"),
        };
        format!(
            "change set {range}: {} commits, {} files, {} lines added or deleted{folded}",
            self.commits, self.files, self.lines
        )
    }
}

/// Settings given on every git command line, which win over the repository's own: nothing
/// the repository configures may run a program (`core.fsmonitor`; `log.showSignature` runs
/// `gpg.program` on signed commits) or reach the network (`protocol.allow`, lazy fetches of a
/// partial clone).
const SAFE_CONFIG: [&str; 4] = [
    "core.fsmonitor=false",
    "core.quotePath=false",
    "log.showSignature=false",
    "protocol.allow=never",
];

/// A repository to read history from.
#[derive(Debug)]
pub struct Git {
    repo: PathBuf,
}

impl Git {
    /// Checks that git runs and that `repo` is a git repository.
    pub fn open(repo: &Path) -> Result<Self, GitError> {
        let git = Self { repo: repo.to_owned() };
        git.run(&["rev-parse", "--git-dir"])
            .map_err(|e| GitError::NotARepository { repo: repo.to_owned(), source: Box::new(e) })?;
        Ok(git)
    }

    fn run(&self, args: &[&str]) -> Result<String, GitError> {
        let output = Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .arg("--no-pager")
            .args(SAFE_CONFIG.iter().flat_map(|setting| ["-c", setting]))
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("GIT_NO_LAZY_FETCH", "1")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => GitError::NotInstalled(e),
                _ => GitError::CannotRun(e),
            })?;
        if !output.status.success() {
            return Err(GitError::Failed {
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Fails naming the first revision of the range the repository does not have.
    fn check(&self, range: &GitRange) -> Result<(), GitError> {
        for rev in range.revisions() {
            self.run(&[
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &format!("{rev}^{{commit}}"),
            ])
            .map_err(|e| GitError::NotACommit {
                rev: rev.to_owned(),
                repo: self.repo.clone(),
                source: Box::new(e),
            })?;
        }
        Ok(())
    }

    pub fn change_set(&self, range: &GitRange) -> Result<ChangeSet, GitError> {
        self.check(range)?;
        let spec = range.spec();
        let diff = |what: &str| {
            self.run(&[
                "diff",
                "-z",
                "-M",
                what,
                "--no-ext-diff",
                "--no-textconv",
                "--end-of-options",
                &spec,
            ])
            .map_err(|e| GitError::Range {
                command: "diff",
                spec: spec.clone(),
                source: Box::new(e),
            })
        };
        let (numstat, name_status) = (diff("--numstat")?, diff("--name-status")?);
        let log = self
            .run(&[
                "log",
                "-z",
                "-M",
                "--no-merges",
                "--no-show-signature",
                "--format=%x1e%s",
                "--name-status",
                "--no-ext-diff",
                "--no-textconv",
                "--end-of-options",
                &spec,
            ])
            .map_err(|e| GitError::Range {
                command: "log",
                spec: spec.clone(),
                source: Box::new(e),
            })?;
        Ok(ChangeSet::build(
            &parse_name_status(&name_status),
            &parse_numstat(&numstat),
            &parse_log(&log),
        ))
    }

    /// `git describe --always` of a revision: a tag-based name, else the short sha.
    pub fn describe(&self, rev: &str) -> Result<String, GitError> {
        Ok(self.run(&["describe", "--always", "--end-of-options", rev])?.trim().to_owned())
    }

    pub fn short_sha(&self, rev: &str) -> Result<String, GitError> {
        Ok(self
            .run(&[
                "rev-parse",
                "--short",
                "--verify",
                "--end-of-options",
                &format!("{rev}^{{commit}}"),
            ])?
            .trim()
            .to_owned())
    }
}
