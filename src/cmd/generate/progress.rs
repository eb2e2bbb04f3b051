//! Progress of a `generate` run: a volumes bar and a steps bar on a terminal, else plain
//! per-volume log lines (none with `--quiet`).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

pub(super) struct Bars {
    pub(super) volumes: ProgressBar,
    pub(super) steps: ProgressBar,
    /// Print plain per-volume lines instead (stderr is not a terminal).
    pub(super) log_lines: bool,
}

impl Bars {
    pub(super) fn new(total: u64, steps: u64, quiet: bool) -> Bars {
        let tty = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let volumes = multi.add(ProgressBar::new(total));
        volumes.set_style(
            ProgressStyle::with_template(
                "volumes {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let steps_bar = multi.add(ProgressBar::new(steps));
        steps_bar.set_style(
            ProgressStyle::with_template("  steps  {bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        volumes.tick();
        Bars {
            volumes,
            steps: steps_bar,
            log_lines: !tty && !quiet,
        }
    }

    pub(super) fn log(&self, line: String) {
        if self.log_lines {
            eprintln!("{line}");
        } else {
            self.volumes.set_message(line);
        }
    }
}
