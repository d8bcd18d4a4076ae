//! What every subcommand writes and how it fails: [`say!`] and [`stdout_line`] for a command's output (a
//! reader that has gone is a normal end), [`Failure`] with its exit status, and [`flag`], the name a setting
//! has on the command line.

use std::ops::ControlFlow;
use std::path::Path;

use stoplab::Error;
use stoplab::lab::bench::BenchError;
use stoplab::pipeline::field::{EndList, Field, SettingsError};

/// `println!` for a command's output, without its panic: a reader that has gone (`| head`, a closed pipe)
/// ends the command quietly and successfully; any other write error (a full disk) fails it.
macro_rules! say {
    ($($arg:tt)*) => {
        if !$crate::cli::output::stdout_line(format_args!($($arg)*))? {
            return Ok(());
        }
    };
}

/// Writes one line of a command's output to stdout: `Ok(false)` when the reader has gone (a closed pipe: a
/// normal end), an error for any other write error.
pub fn stdout_line(line: std::fmt::Arguments<'_>) -> Result<bool, Failure> {
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Error::Output(e).into()),
    }
}

/// Writes a table that accompanies a JSON document: on stdout, or on stderr when stdout carries the document
/// (`--json`). A reader that has gone (`| head`) is no error: what follows (a `--json-out` file, a chart)
/// is still written.
pub fn table(on_stderr: bool, text: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    let written = if on_stderr {
        std::io::stderr().write_all(text.as_bytes())
    } else {
        std::io::stdout().write_all(text.as_bytes())
    };
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Output(e).into()),
        _ => Ok(()),
    }
}

/// What a write to stdout means for a generation: a closed pipe (`| head`) is a reader saying it has seen
/// enough (stop quietly); any other error (a full disk) fails the command.
pub fn written(r: std::io::Result<()>) -> Result<ControlFlow<()>, Error> {
    match r {
        Ok(()) => Ok(ControlFlow::Continue(())),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ControlFlow::Break(())),
        Err(e) => Err(Error::Output(e)),
    }
}

/// A JSON document as the commands print it.
pub fn pretty(doc: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(doc).expect("JSON values serialise")
}

/// `--json`: the document on stdout; `--json-out FILE`: the document in FILE. Either, both or neither.
pub fn emit_json(
    doc: &serde_json::Value,
    stdout: bool,
    file: Option<&Path>,
) -> Result<(), Failure> {
    let text = pretty(doc);
    if stdout {
        // A reader that has gone is no error, and the file below is still written.
        stdout_line(format_args!("{text}"))?;
    }
    if let Some(path) = file {
        write_file(path, &text)?;
    }
    Ok(())
}

/// Writes a file the user asked for, naming it if that fails.
pub fn write_file(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text).map_err(|e| Failure::other(format!("{}: {e}", path.display())))
}

/// An error on the command line: exit status 2 for bad usage, 1 for everything else.
pub struct Failure {
    pub usage: bool,
    pub message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Settings(e) => Self::from_settings(e),
            e => Self {
                usage: e.is_user_input(),
                message: e.to_string(),
            },
        }
    }
}

impl From<BenchError> for Failure {
    fn from(e: BenchError) -> Self {
        match e {
            BenchError::Stoplab(e) => e.into(),
            e => Self::other(e.to_string()),
        }
    }
}

impl Failure {
    /// A setting the user gave on the command line, named as its flag: exit status 2.
    pub fn from_settings(e: SettingsError) -> Self {
        Self::usage(format!("{}: {}", flag(e.field), e.message))
    }

    /// Prefixes the message with where it happened (a file, a scenario).
    pub fn with_context(mut self, context: &str) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Bad usage: exit status 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            usage: true,
            message: message.into(),
        }
    }

    /// An error about a data file, which already names the file (and line): shown as it is, not as a flag.
    pub fn as_is(e: Error) -> Self {
        Self {
            usage: e.is_user_input(),
            message: e.to_string(),
        }
    }

    /// Anything but bad usage: exit status 1.
    pub fn other(message: impl Into<String>) -> Self {
        Self {
            usage: false,
            message: message.into(),
        }
    }
}

/// How the command line names a setting: its flag, or the positional argument.
pub fn flag(field: Field) -> String {
    match field {
        Field::Prompt => "PROMPT".into(),
        Field::Format => "--format".into(),
        Field::UserPrefix => "--user-prefix".into(),
        Field::AiPrefix => "--ai-prefix".into(),
        Field::Separator => "--separator".into(),
        Field::NaturalStop => "--natural-stop".into(),
        Field::Stop { index } => format!("--stop #{}", index + 1),
        Field::Stops => "--stop".into(),
        Field::StopTokenIds { .. } => "--stop-token-id".into(),
        Field::MaxTokens => "--max-tokens".into(),
        Field::MinTokens => "--min-tokens".into(),
        Field::RepetitionNgram => "--repeat-stop".into(),
        Field::RepetitionCount => "--repeat-stop-count".into(),
        Field::ReasoningMarkers => "--reasoning-markers".into(),
        Field::Temperature => "--temperature".into(),
        Field::TopK => "--top-k".into(),
        Field::TopP => "--top-p".into(),
        Field::MinP => "--min-p".into(),
        Field::RepetitionPenalty => "--repetition-penalty".into(),
        Field::FrequencyPenalty => "--frequency-penalty".into(),
        Field::PresencePenalty => "--presence-penalty".into(),
        Field::LogitBias { .. } => "--logit-bias".into(),
        Field::Seed => "--seed".into(),
        Field::EndTokens { list, index } => format!(
            "{} #{}",
            match list {
                EndList::Replace => "--end-token",
                EndList::Add => "--add-end-token",
                EndList::Remove => "--no-end-token",
            },
            index + 1
        ),
    }
}
