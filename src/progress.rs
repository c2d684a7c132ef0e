//! Progress of a long loop on stderr, readable wherever stderr goes: on a terminal an indicatif
//! bar; in a log or CI (stderr not a terminal, where a bar would print nothing) a plain line
//! every [`LOG_EVERY`] and one when the loop ends, so a long feature extraction is never silent.
//! Rates are shown with one decimal.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// How often a plain progress line is written when stderr is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// A progress report over `total` items of one kind (`images`, `texts`, `steps`).
pub struct Progress {
    bar: ProgressBar,
    /// Set when stderr is not a terminal (and not quiet): the plain lines' state.
    log: Option<Mutex<LogLines>>,
}

struct LogLines {
    what: String,
    unit: &'static str,
    total: u64,
    done: u64,
    message: String,
    started: Instant,
    last: Instant,
}

impl LogLines {
    fn line(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64();
        let rate = self.done as f64 / seconds.max(1e-9);
        let mut line = format!(
            "{}: {}/{} {}, {rate:.1} {}/s",
            self.what, self.done, self.total, self.unit, self.unit
        );
        if self.done < self.total && rate > 0.0 {
            let eta = (self.total - self.done) as f64 / rate;
            line.push_str(&format!(", ETA {eta:.0} s"));
        } else {
            line.push_str(&format!(", {seconds:.1} s"));
        }
        if !self.message.is_empty() {
            line.push_str(&format!(" | {}", self.message));
        }
        line
    }
}

impl Progress {
    /// Progress of `what` (e.g. `features (train split)`, `epoch 2/5`) over `total` `unit`s;
    /// nothing at all when `quiet`.
    pub fn new(quiet: bool, what: impl Into<String>, unit: &'static str, total: usize) -> Self {
        let what = what.into();
        if quiet {
            return Self {
                bar: ProgressBar::hidden(),
                log: None,
            };
        }
        if !std::io::stderr().is_terminal() {
            let now = Instant::now();
            return Self {
                bar: ProgressBar::hidden(),
                log: Some(Mutex::new(LogLines {
                    what,
                    unit,
                    total: total as u64,
                    done: 0,
                    message: String::new(),
                    started: now,
                    last: now,
                })),
            };
        }
        let bar = ProgressBar::new(total as u64);
        let template = format!(
            "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{rate}}, ETA {{eta}} {{msg}}"
        );
        bar.set_style(
            ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key(
                    "rate",
                    move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.1} {unit}/s", s.per_sec());
                    },
                )
                .progress_chars("=> "),
        );
        bar.set_prefix(what);
        Self { bar, log: None }
    }

    /// A progress that shows nothing.
    pub fn hidden() -> Self {
        Self::new(true, "", "", 0)
    }

    /// `n` more items done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        if let Some(log) = &self.log
            && let Ok(mut log) = log.lock()
        {
            log.done += n;
            if log.last.elapsed() >= LOG_EVERY && log.done < log.total {
                log.last = Instant::now();
                eprintln!("{}", log.line());
            }
        }
    }

    /// A note shown after the counts (the running loss and accuracy of an epoch).
    pub fn set_message(&self, message: impl Into<String>) {
        let message = message.into();
        if let Some(log) = &self.log
            && let Ok(mut log) = log.lock()
        {
            log.message = message;
            return;
        }
        self.bar.set_message(message);
    }

    /// The loop is over: the bar disappears (the caller prints its summary); in a log, a last
    /// line with the totals when the loop was long enough to have printed any.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        if let Some(log) = &self.log
            && let Ok(log) = log.lock()
            && log.started.elapsed() >= LOG_EVERY
        {
            eprintln!("{}", log.line());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_names_the_loop_with_one_decimal_rates() {
        let now = Instant::now();
        let mut log = LogLines {
            what: "features (train split)".into(),
            unit: "images",
            total: 10,
            done: 5,
            message: String::new(),
            started: now - Duration::from_secs(4),
            last: now,
        };
        let line = log.line();
        assert!(
            line.starts_with("features (train split): 5/10 images, 1.2 images/s, ETA "),
            "{line}"
        );
        log.done = 10;
        log.message = "loss 0.5".into();
        let line = log.line();
        assert!(
            line.contains("10/10 images") && line.ends_with(" s | loss 0.5"),
            "{line}"
        );
        assert!(!line.contains("ETA"), "{line}");
    }
}
