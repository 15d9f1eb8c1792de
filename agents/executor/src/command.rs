//! The `command` backend: operator-defined argv templates per action, run without a shell.
//!
//! The operator's commands file (`--commands`, TOML) gives each action a program and its
//! arguments. Braces mark placeholders, and they are filled only from the signed approval's
//! claims, each of which is validated before it gets here: the environment and service are
//! subject tokens (`a-z`, `0-9`, `-`), the action is a plain identifier, the proposal id a UUID,
//! replicas and canary weight are numbers, and a target version must be a plain version string
//! or nothing runs at all. A placeholder fills part of one argument and never becomes several;
//! the program itself is fixed text; no filled value can start with `-`, so none is read as an
//! option. There is no shell anywhere, so there is nothing to quote and nothing to escape.
//!
//! The child gets no stdin and an environment of only `PATH` and `CN_ENV`, `CN_SERVICE`,
//! `CN_ACTION`, `CN_PROPOSAL_ID`; it is killed when its timeout runs out. Its exit code and the
//! tail of its output go into the execution result; a failure is reported, never retried.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bus_schema::{Action, ApprovalClaims, ExecutionStatus};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a command may run unless its template says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest timeout a template may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// How much output the result carries: the last 2 KiB of stdout then stderr.
pub const TAIL_BYTES: usize = 2048;
/// The longest target version a template may be filled with.
const MAX_VERSION_LEN: usize = 64;
/// How long output is still read after the command exited, if its pipes stay open.
const PIPE_GRACE: Duration = Duration::from_millis(500);
/// How much of a rendered argv a detail shows.
const MAX_SHOWN: usize = 1024;

/// A value a template can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    Env,
    Service,
    Action,
    ProposalId,
    Replicas,
    CanaryWeight,
    TargetVersion,
}

/// Every placeholder by name.
const PLACEHOLDERS: [(&str, Placeholder); 7] = [
    ("env", Placeholder::Env),
    ("service", Placeholder::Service),
    ("action", Placeholder::Action),
    ("proposal_id", Placeholder::ProposalId),
    ("replicas", Placeholder::Replicas),
    ("canary_weight", Placeholder::CanaryWeight),
    ("target_version", Placeholder::TargetVersion),
];

/// The placeholders, for messages: `{env}, {service}, …`.
fn known() -> String {
    PLACEHOLDERS.iter().map(|(name, _)| format!("{{{name}}}")).collect::<Vec<_>>().join(", ")
}

impl Placeholder {
    fn parse(name: &str) -> Option<Self> {
        PLACEHOLDERS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    fn name(self) -> &'static str {
        PLACEHOLDERS.iter().find(|(_, p)| *p == self).map_or("", |(n, _)| n)
    }

    /// The value from the approval's claims.
    fn value(self, c: &ApprovalClaims) -> Result<String, RenderError> {
        let missing =
            || RenderError::Missing { action: c.action.to_string(), placeholder: self.name() };
        Ok(match self {
            Self::Env => c.env.as_str().to_owned(),
            Self::Service => c.service.as_str().to_owned(),
            Self::Action => c.action.as_str().to_owned(),
            Self::ProposalId => c.proposal_id.to_string(),
            Self::Replicas => c.params.replicas.ok_or_else(missing)?.to_string(),
            Self::CanaryWeight => c.params.canary_weight.ok_or_else(missing)?.to_string(),
            Self::TargetVersion => {
                let v = c.params.target_version.as_deref().ok_or_else(missing)?;
                if !is_plain_version(v) {
                    return Err(RenderError::BadVersion { value: v.chars().take(80).collect() });
                }
                v.to_owned()
            }
        })
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`
fn is_plain_version(v: &str) -> bool {
    let mut chars = v.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
        && v.len() <= MAX_VERSION_LEN
}

/// A piece of one argument.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Slot(Placeholder),
}

/// What is wrong with one action's entry in the commands file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateProblem {
    #[error("{0}")]
    BadName(String),
    #[error("is on the global block list and can never be executed")]
    Blocked,
    #[error(
        "argv is empty; give the program and its arguments, e.g. argv = [\"kubectl\", \"rollout\", \"restart\", \"deployment/{{service}}\"]"
    )]
    EmptyArgv,
    #[error("argv[0] is empty; it must name the program")]
    EmptyProgram,
    #[error("argv[0] {0:?} contains a placeholder; the program must be fixed text")]
    ProgramPlaceholder(String),
    #[error("argv[{index}] contains a NUL byte")]
    Nul { index: usize },
    #[error("argv[{index}] {arg:?} has the unknown placeholder {{{name}}}; known placeholders: {known}", known = known())]
    UnknownPlaceholder { index: usize, arg: String, name: String },
    #[error(
        "argv[{index}] {arg:?} has an unbalanced brace; braces only mark placeholders such as {{service}}"
    )]
    Unbalanced { index: usize, arg: String },
    #[error("timeout {value:?}: {source}")]
    Timeout { value: String, source: agent_runtime::config::DurationError },
    #[error("timeout {value:?}: more than the maximum of 1h")]
    TimeoutTooLong { value: String },
}

/// Why a commands file is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandsError {
    #[error("not a valid commands file: {0}")]
    Toml(String),
    #[error("defines no actions; add an [action.NAME] table with an argv for each action to run")]
    NoActions,
    #[error("action {name:?}: {problem}")]
    Action { name: String, problem: TemplateProblem },
}

/// Why `--commands` gave no commands.
#[derive(Debug, thiserror::Error)]
pub enum CommandsFileError {
    #[error("cannot read --commands {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("--commands {}: {source}", path.display())]
    Invalid { path: PathBuf, source: CommandsError },
}

/// Why `--backend` and `--commands` do not make a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "--backend command needs --commands FILE (CN_EXECUTOR_COMMANDS): the argv template of each action"
    )]
    NoCommandsFile,
    #[error(
        "--commands is only read by --backend command, and the backend is {backend}; remove one of them"
    )]
    CommandsUnused { backend: String },
    #[error(transparent)]
    Commands(#[from] CommandsFileError),
}

/// Why a template could not be filled from an approval; nothing was run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "the command for {action} needs {{{placeholder}}} but the approval has no params.{placeholder}"
    )]
    Missing { action: String, placeholder: &'static str },
    #[error(
        "params.target_version {value:?} is not a plain version (^[A-Za-z0-9][A-Za-z0-9._+-]{{0,63}}$)"
    )]
    BadVersion { value: String },
}

/// One action's command: a fixed program, argument templates and a timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    program: String,
    args: Vec<Vec<Part>>,
    timeout: Duration,
}

impl Template {
    fn parse(argv: &[String], timeout: Option<&str>) -> Result<Self, TemplateProblem> {
        let (program, rest) = argv.split_first().ok_or(TemplateProblem::EmptyArgv)?;
        if let Some(index) = argv.iter().position(|a| a.contains('\0')) {
            return Err(TemplateProblem::Nul { index });
        }
        if program.is_empty() {
            return Err(TemplateProblem::EmptyProgram);
        }
        if parse_arg(0, program)?.iter().any(|p| matches!(p, Part::Slot(_))) {
            return Err(TemplateProblem::ProgramPlaceholder(program.clone()));
        }
        let args =
            rest.iter().enumerate().map(|(i, a)| parse_arg(i + 1, a)).collect::<Result<_, _>>()?;
        let timeout = match timeout {
            None => DEFAULT_TIMEOUT,
            Some(value) => {
                let t = agent_runtime::config::parse_duration(value).map_err(|source| {
                    TemplateProblem::Timeout { value: value.to_owned(), source }
                })?;
                if t > MAX_TIMEOUT {
                    return Err(TemplateProblem::TimeoutTooLong { value: value.to_owned() });
                }
                t
            }
        };
        Ok(Self { program: program.clone(), args, timeout })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The argv for this approval: each template argument becomes exactly one argument.
    pub fn render(&self, claims: &ApprovalClaims) -> Result<Vec<String>, RenderError> {
        let mut argv = vec![self.program.clone()];
        for parts in &self.args {
            let mut arg = String::new();
            for part in parts {
                match part {
                    Part::Text(t) => arg.push_str(t),
                    Part::Slot(p) => arg.push_str(&p.value(claims)?),
                }
            }
            argv.push(arg);
        }
        Ok(argv)
    }
}

/// Splits one argument into text and placeholders; a brace is only ever part of `{name}`.
fn parse_arg(index: usize, arg: &str) -> Result<Vec<Part>, TemplateProblem> {
    let unbalanced = || TemplateProblem::Unbalanced { index, arg: arg.to_owned() };
    let mut parts = Vec::new();
    let mut rest = arg;
    while let Some(open) = rest.find(['{', '}']) {
        let (text, tail) = rest.split_at(open);
        if text.contains('}') || tail.starts_with('}') {
            return Err(unbalanced());
        }
        let close = tail.find('}').ok_or_else(unbalanced)?;
        let name = &tail[1..close];
        if name.contains('{') {
            return Err(unbalanced());
        }
        let slot = Placeholder::parse(name).ok_or_else(|| TemplateProblem::UnknownPlaceholder {
            index,
            arg: arg.to_owned(),
            name: name.to_owned(),
        })?;
        if !text.is_empty() {
            parts.push(Part::Text(text.to_owned()));
        }
        parts.push(Part::Slot(slot));
        rest = &tail[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    action: BTreeMap<String, Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    argv: Vec<String>,
    timeout: Option<String>,
}

/// The operator's commands, one template per action, validated as a whole at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commands {
    templates: BTreeMap<Action, Template>,
}

impl Commands {
    /// Reads and checks `--commands`; any problem is a configuration error.
    pub fn load(path: &Path) -> Result<Self, CommandsFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| CommandsFileError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text)
            .map_err(|source| CommandsFileError::Invalid { path: path.to_owned(), source })
    }

    pub fn from_toml(text: &str) -> Result<Self, CommandsError> {
        let file: File = toml::from_str(text)
            .map_err(|e| CommandsError::Toml(e.to_string().trim_end().to_owned()))?;
        if file.action.is_empty() {
            return Err(CommandsError::NoActions);
        }
        let mut templates = BTreeMap::new();
        for (name, entry) in file.action {
            let fail = |problem| CommandsError::Action { name: name.clone(), problem };
            let action: Action =
                name.parse().map_err(|e: bus_schema::action::ActionNameError| {
                    fail(TemplateProblem::BadName(e.to_string()))
                })?;
            if action.is_globally_blocked() {
                return Err(fail(TemplateProblem::Blocked));
            }
            let template = Template::parse(&entry.argv, entry.timeout.as_deref()).map_err(fail)?;
            templates.insert(action, template);
        }
        Ok(Self { templates })
    }

    pub fn get(&self, action: &Action) -> Option<&Template> {
        self.templates.get(action)
    }

    /// The configured actions, comma-separated, for messages.
    pub fn names(&self) -> String {
        self.templates.keys().map(Action::as_str).collect::<Vec<_>>().join(", ")
    }
}

/// What running an action's command came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub status: ExecutionStatus,
    pub exit_code: Option<i32>,
    pub output_tail: Option<String>,
    pub detail: String,
}

impl CommandOutcome {
    fn failed(detail: String) -> Self {
        Self { status: ExecutionStatus::Failed, exit_code: None, output_tail: None, detail }
    }
}

/// Fills the template from the approval and runs it; if it cannot be filled, nothing runs.
pub async fn execute(template: &Template, claims: &ApprovalClaims) -> CommandOutcome {
    let argv = match template.render(claims) {
        Ok(argv) => argv,
        Err(e) => return CommandOutcome::failed(format!("{e}; nothing was run")),
    };
    let vars = [
        ("CN_ENV", claims.env.to_string()),
        ("CN_SERVICE", claims.service.to_string()),
        ("CN_ACTION", claims.action.to_string()),
        ("CN_PROPOSAL_ID", claims.proposal_id.to_string()),
    ];
    run(&argv, &vars, template.timeout).await
}

/// Runs `argv` directly (no shell) with only `PATH` and `vars` in its environment.
pub async fn run(argv: &[String], vars: &[(&str, String)], timeout: Duration) -> CommandOutcome {
    let shown = clip(format!("{argv:?}"), MAX_SHOWN);
    let Some((program, args)) = argv.split_first() else {
        return CommandOutcome::failed("nothing to run: the argv is empty".to_owned());
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(vars.iter().map(|(k, v)| (k, v)));
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return CommandOutcome::failed(format!("could not start {shown}: {e}")),
    };
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exited = tokio::sync::Notify::new();
    let waited = tokio::time::timeout(timeout, async {
        let wait = async {
            let status = child.wait().await;
            exited.notify_one();
            status
        };
        // Until the pipes close, or shortly after the exit: something it left running may hold them.
        let read = async {
            let both =
                async { tokio::join!(read_tail(stdout, &mut out), read_tail(stderr, &mut err)) };
            let after_exit = async {
                exited.notified().await;
                tokio::time::sleep(PIPE_GRACE).await;
            };
            tokio::select! {
                _ = both => {}
                () = after_exit => {}
            }
        };
        tokio::join!(wait, read).0
    })
    .await;
    let output_tail = output_tail(&out, &err);
    let (status, exit_code, detail) = match waited {
        Err(_) => {
            // Kills and reaps it; if that fails, kill_on_drop still tries.
            let _ = child.kill().await;
            (ExecutionStatus::Failed, None, format!("timed out after {timeout:?}; killed {shown}"))
        }
        Ok(Err(e)) => (ExecutionStatus::Failed, None, format!("lost track of {shown}: {e}")),
        Ok(Ok(s)) => match s.code() {
            Some(0) => (ExecutionStatus::Executed, Some(0), format!("ran {shown}: exit code 0")),
            Some(code) => {
                (ExecutionStatus::Failed, Some(code), format!("ran {shown}: exit code {code}"))
            }
            None => {
                use std::os::unix::process::ExitStatusExt;
                let signal =
                    s.signal().map_or_else(|| "a signal".to_owned(), |n| format!("signal {n}"));
                (ExecutionStatus::Failed, None, format!("ran {shown}: killed by {signal}"))
            }
        },
    };
    CommandOutcome { status, exit_code, output_tail, detail }
}

/// Reads a pipe to its end, keeping only the last [`TAIL_BYTES`].
async fn read_tail(pipe: Option<impl AsyncRead + Unpin>, tail: &mut Vec<u8>) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        tail.extend_from_slice(&buf[..n]);
        let excess = tail.len().saturating_sub(TAIL_BYTES);
        tail.drain(..excess);
    }
}

/// The last [`TAIL_BYTES`] of stdout then stderr, as text cut at a character boundary.
fn output_tail(stdout: &[u8], stderr: &[u8]) -> Option<String> {
    let all = [stdout, stderr].concat();
    if all.is_empty() {
        return None;
    }
    Some(clip_front(&String::from_utf8_lossy(&all), TAIL_BYTES).to_owned())
}

/// The last `max` bytes of `s`, starting at a character boundary.
fn clip_front(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// The first `max` bytes of `s`, ending at a character boundary, marked when cut.
fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
