//! The progress bar of `ccs send`: on standard error, only when it is a terminal, and only
//! once a run has lasted [`SHOW_AFTER`] (short inputs print nothing extra).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a run goes on before its bar appears.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// Counts of a run, and the bar that shows them (if any).
pub(super) struct Progress {
    /// `None` when standard error is not a terminal: then nothing is ever drawn.
    bar: Option<ProgressBar>,
    /// Whether the bar is drawn already.
    shown: bool,
    /// Whether standard output is a terminal too (then output is written around the bar).
    stdout_terminal: bool,
    started: Instant,
    /// Input bytes consumed (the bar's position when the input's size is known).
    bytes: u64,
    /// Lines read (blank ones included).
    lines: u64,
    acked: u64,
    not_acked: u64,
    in_flight: usize,
    closing: bool,
}

impl Progress {
    /// `size`: the input's size in bytes, when it is a regular file. `typed`: whether the
    /// input is typed on a terminal (no bar then: it would draw over the typing).
    pub(super) fn new(size: Option<u64>, typed: bool) -> Self {
        let bar = (std::io::stderr().is_terminal() && !typed).then(|| {
            let template = match size {
                Some(_) => "{spinner} {elapsed_precise} [{bar:24}] {percent:>3}% {wide_msg}",
                None => "{spinner} {elapsed_precise} {wide_msg}",
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            ProgressBar::with_draw_target(size, ProgressDrawTarget::hidden()).with_style(style)
        });
        Self {
            bar,
            shown: false,
            stdout_terminal: std::io::stdout().is_terminal(),
            started: Instant::now(),
            bytes: 0,
            lines: 0,
            acked: 0,
            not_acked: 0,
            in_flight: 0,
            closing: false,
        }
    }

    /// A line of `len` bytes (its newline included) was read.
    pub(super) fn read(&mut self, len: usize) {
        self.lines += 1;
        self.bytes += len as u64;
    }

    /// A message went into the client's queue.
    pub(super) fn queued(&mut self) {
        self.in_flight += 1;
    }

    /// An outcome is known; `queued`: whether its message had been queued.
    pub(super) fn outcome(&mut self, acked: bool, queued: bool) {
        if acked {
            self.acked += 1;
        } else {
            self.not_acked += 1;
        }
        if queued {
            self.in_flight -= 1;
        }
    }

    /// The input ended: the answers still missing are awaited.
    pub(super) fn closing(&mut self) {
        self.closing = true;
    }

    /// Brings the bar up to date (the bar itself limits how often it draws).
    pub(super) fn update(&mut self) {
        let Some(bar) = &self.bar else { return };
        if !self.shown && self.started.elapsed() < SHOW_AFTER {
            return;
        }
        bar.set_position(self.bytes);
        let state = if self.closing { "closing: " } else { "" };
        bar.set_message(format!(
            "{state}{} lines, {} acked, {} not, {} in flight",
            self.lines, self.acked, self.not_acked, self.in_flight
        ));
        if !self.shown {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
    }

    /// Runs `write` (which writes to standard output) without tearing the bar when both
    /// share the terminal.
    pub(super) fn around<R>(&self, write: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) if self.shown && self.stdout_terminal => bar.suspend(write),
            _ => write(),
        }
    }

    /// Takes the bar down, leaving a one-line summary where it was drawn.
    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar
            && self.shown
        {
            bar.finish_and_clear();
            eprintln!(
                "ccs send: {} lines in {:.1} s: {} acked, {} not acked",
                self.lines,
                self.started.elapsed().as_secs_f64(),
                self.acked,
                self.not_acked
            );
        }
    }
}
