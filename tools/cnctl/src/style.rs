//! Colour where it helps the eye: a record's kind in `tail`, a verdict, an agent's health.
//!
//! Everything cnctl prints goes through anstream (see [`crate::write_stdout`]), which drops the
//! colour when stdout is not a terminal, when `NO_COLOR` is set, or with `--color never`;
//! `--color always` or `CLICOLOR_FORCE=1` keep it in a pipe. JSON output is never coloured.

use anstyle::{AnsiColor, Style};

/// What a word says about the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Done and well: approved, executed, accepted, resolved, started.
    Good,
    /// Refused, rejected, failed, broken.
    Bad,
    /// Open or waiting for someone.
    Waiting,
    Plain,
}

/// `text` in the tone's colour (the escape codes are dropped on the way out when colour is off).
pub fn paint(text: &str, tone: Tone) -> String {
    let style: Style = match tone {
        Tone::Good => AnsiColor::Green.on_default(),
        Tone::Bad => AnsiColor::Red.on_default().bold(),
        Tone::Waiting => AnsiColor::Yellow.on_default(),
        Tone::Plain => return text.to_owned(),
    };
    format!("{style}{text}{style:#}")
}

/// The tone of a proof record's kind, from the words its name is made of.
pub fn tone_of_kind(kind: &str) -> Tone {
    const BAD: [&str; 7] =
        ["rejected", "refused", "failed", "broken", "denied", "expired", "aborted"];
    const GOOD: [&str; 6] = ["approved", "executed", "resolved", "accepted", "promoted", "started"];
    const WAITING: [&str; 3] = ["pending", "opened", "escalated"];
    let has = |words: &[&str]| words.iter().any(|w| kind.split('_').any(|part| part == *w));
    if has(&BAD) {
        Tone::Bad
    } else if has(&GOOD) {
        Tone::Good
    } else if has(&WAITING) {
        Tone::Waiting
    } else {
        Tone::Plain
    }
}

/// `--color`: when to colour cnctl's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorWhen {
    /// When stdout is a terminal and NO_COLOR is not set.
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorWhen {
    /// Applies the choice to everything cnctl prints from now on.
    pub fn apply(self) {
        let choice = match self {
            ColorWhen::Auto => anstream::ColorChoice::Auto,
            ColorWhen::Always => anstream::ColorChoice::Always,
            ColorWhen::Never => anstream::ColorChoice::Never,
        };
        choice.write_global();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_take_the_tone_of_their_words() {
        assert_eq!(tone_of_kind("event_rejected"), Tone::Bad);
        assert_eq!(tone_of_kind("action_refused"), Tone::Bad);
        assert_eq!(tone_of_kind("action_executed"), Tone::Good);
        assert_eq!(tone_of_kind("action_pending_approval"), Tone::Waiting);
        assert_eq!(tone_of_kind("incident_opened"), Tone::Waiting);
        assert_eq!(tone_of_kind("agent_started"), Tone::Good);
        assert_eq!(tone_of_kind("consumer_recreated"), Tone::Plain);
    }

    #[test]
    fn a_painted_word_is_the_word_between_escape_codes() {
        let red = paint("rejected", Tone::Bad);
        assert!(red.starts_with('\u{1b}') && red.contains("rejected") && red.ends_with('m'));
        assert_eq!(paint("x", Tone::Plain), "x");
    }
}
