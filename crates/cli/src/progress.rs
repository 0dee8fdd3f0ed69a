//! How the commands show progress: bars on a terminal; elsewhere (a pipe, a file, a SLURM
//! log) a plain line every `--log-interval` seconds and one per validation, or the same as
//! JSON lines with `--log-format json`.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dacapo_runtime::progress::{BlockProgress, NoProgress, Progress, ValidationReport};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

/// The format of progress and log lines on stderr.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Bars on a terminal, plain lines otherwise.
    #[default]
    Text,
    /// One JSON object per line (progress events and log messages).
    Json,
}

/// The progress options of `train`, `validate` and `predict`.
#[derive(clap::Args, Clone, Debug)]
pub struct ProgressArgs {
    /// No progress output (warnings and errors still show).
    #[arg(long)]
    pub no_progress: bool,
    /// Seconds between progress lines when stderr is not a terminal (or with --log-format
    /// json); validations always get their own line.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub log_interval: f64,
}

impl ProgressArgs {
    /// The reporter these options and `format` ask for, writing to stderr.
    pub fn reporter(&self, format: LogFormat) -> Arc<dyn Progress> {
        let interval = Duration::from_secs_f64(self.log_interval.max(0.0));
        match format {
            _ if self.no_progress => Arc::new(NoProgress),
            LogFormat::Text if std::io::stderr().is_terminal() => Arc::new(Bars::default()),
            _ => Arc::new(Lines::new(std::io::stderr(), format, interval)),
        }
    }
}

/// Prints the outcome of a command on stderr: `text`, or `event` as a JSON line with
/// `--log-format json`.
pub fn outcome(format: LogFormat, text: &str, event: serde_json::Value) {
    match format {
        LogFormat::Text => eprintln!("{text}"),
        LogFormat::Json => eprintln!("{event}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Bars

/// indicatif bars: one for training, one nested bar per piece of blockwise work.
#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    train: Mutex<Option<ProgressBar>>,
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Bars {
    fn train_bar(&self) -> Option<ProgressBar> {
        self.train
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Progress for Bars {
    fn training(&self, run: &str, start: u64, total: u64) {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(bar_style(
            "{prefix} [{bar:30}] {pos}/{len} it  {msg}  {per_sec}  ETA {eta}",
        ));
        bar.set_prefix(run.to_owned());
        bar.set_position(start);
        bar.reset_eta();
        *self.train.lock().unwrap_or_else(PoisonError::into_inner) = Some(bar);
    }

    fn step(&self, iteration: u64, loss: f64) {
        if let Some(bar) = self.train_bar() {
            bar.set_position(iteration + 1);
            bar.set_message(format!("loss {loss:.4e}"));
        }
    }

    fn validated(&self, run: &str, report: &ValidationReport) {
        // Above the bars, so the history of validations stays on screen.
        let _ = self.multi.println(validation_line(run, report));
    }

    fn blocks(&self, what: &str, total: u64) -> Box<dyn BlockProgress> {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(bar_style(
            "  {prefix} [{bar:30}] {pos}/{len} blocks  ETA {eta}",
        ));
        bar.set_prefix(what.to_owned());
        Box::new(BlockBar(bar))
    }

    fn finished(&self, _iteration: u64) {
        if let Some(bar) = self.train_bar() {
            bar.finish_and_clear();
        }
    }
}

/// A nested bar, cleared when the work is done.
struct BlockBar(ProgressBar);

impl BlockProgress for BlockBar {
    fn set(&mut self, done: u64) {
        self.0.set_position(done);
    }
}

impl Drop for BlockBar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Lines

/// Plain or JSON lines: training progress at most every `interval`, every validation.
struct Lines<W: Write + Send> {
    out: Arc<Mutex<W>>,
    format: LogFormat,
    interval: Duration,
    state: Mutex<TrainState>,
}

/// What the training line needs between steps.
struct TrainState {
    run: String,
    total: u64,
    start: u64,
    started: Instant,
    last_line: Instant,
    last_iteration: u64,
    done: u64,
    loss: f64,
}

impl<W: Write + Send> Lines<W> {
    fn new(out: W, format: LogFormat, interval: Duration) -> Self {
        let now = Instant::now();
        Self {
            out: Arc::new(Mutex::new(out)),
            format,
            interval,
            state: Mutex::new(TrainState {
                run: String::new(),
                total: 0,
                start: 0,
                started: now,
                last_line: now,
                last_iteration: 0,
                done: 0,
                loss: f64::NAN,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TrainState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn progress_line(&self, s: &mut TrainState) {
        let now = Instant::now();
        let since_line = now.duration_since(s.last_line).as_secs_f64();
        let rate = if since_line > 0.0 {
            (s.done - s.last_iteration) as f64 / since_line
        } else {
            f64::NAN
        };
        let overall = (s.done - s.start) as f64 / now.duration_since(s.started).as_secs_f64();
        let eta = (overall > 0.0).then(|| (s.total.saturating_sub(s.done)) as f64 / overall);
        let line = match self.format {
            LogFormat::Json => json!({
                "event": "progress", "run": s.run, "iteration": s.done, "total": s.total,
                "loss": s.loss, "it_per_s": rate, "eta_s": eta,
            })
            .to_string(),
            LogFormat::Text => format!(
                "{}: iteration {}/{} ({:.0}%)  loss {:.4e}  {:.2} it/s  ETA {}",
                s.run,
                s.done,
                s.total,
                100.0 * s.done as f64 / s.total.max(1) as f64,
                s.loss,
                rate,
                eta.map_or_else(|| "-".to_owned(), duration_text),
            ),
        };
        write_line(&self.out, &line);
        s.last_line = now;
        s.last_iteration = s.done;
    }
}

fn write_line<W: Write>(out: &Mutex<W>, line: &str) {
    let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
    // Progress is advisory: a closed stderr must not stop training.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

impl<W: Write + Send + 'static> Progress for Lines<W> {
    fn training(&self, run: &str, start: u64, total: u64) {
        let mut s = self.state();
        let now = Instant::now();
        *s = TrainState {
            run: run.to_owned(),
            total,
            start,
            started: now,
            last_line: now,
            last_iteration: start,
            done: start,
            loss: f64::NAN,
        };
        let line = match self.format {
            LogFormat::Json => {
                json!({ "event": "training", "run": run, "start": start, "total": total })
                    .to_string()
            }
            LogFormat::Text => format!("{run}: training from iteration {start} to {total}"),
        };
        write_line(&self.out, &line);
    }

    fn step(&self, iteration: u64, loss: f64) {
        let mut s = self.state();
        s.done = iteration + 1;
        s.loss = loss;
        if s.last_line.elapsed() >= self.interval {
            self.progress_line(&mut s);
        }
    }

    fn validated(&self, run: &str, report: &ValidationReport) {
        let line = match self.format {
            LogFormat::Json => {
                let best: Vec<_> = report
                    .best
                    .iter()
                    .map(|b| {
                        json!({ "dataset": b.dataset, "criterion": b.criterion,
                                "parameter": b.parameter, "value": b.value })
                    })
                    .collect();
                json!({ "event": "validation", "run": run, "iteration": report.iteration,
                        "best": best })
                .to_string()
            }
            LogFormat::Text => validation_line(run, report),
        };
        write_line(&self.out, &line);
    }

    fn blocks(&self, what: &str, total: u64) -> Box<dyn BlockProgress> {
        Box::new(BlockLines {
            out: Arc::clone(&self.out),
            format: self.format,
            interval: self.interval,
            what: what.to_owned(),
            total,
            started: Instant::now(),
            last_line: Instant::now(),
        })
    }

    fn finished(&self, iteration: u64) {
        let mut s = self.state();
        s.done = s.done.max(iteration);
        if s.done > s.last_iteration {
            self.progress_line(&mut s);
        }
    }
}

/// Lines of one piece of blockwise work: at most every `interval`, and when it ends.
struct BlockLines<W: Write + Send> {
    out: Arc<Mutex<W>>,
    format: LogFormat,
    interval: Duration,
    what: String,
    total: u64,
    started: Instant,
    last_line: Instant,
}

impl<W: Write + Send> BlockProgress for BlockLines<W> {
    fn set(&mut self, done: u64) {
        if done < self.total && self.last_line.elapsed() < self.interval {
            return;
        }
        let seconds = self.started.elapsed().as_secs_f64();
        let line = match self.format {
            LogFormat::Json => json!({
                "event": "blocks", "what": self.what, "done": done, "total": self.total,
                "seconds": seconds,
            })
            .to_string(),
            LogFormat::Text => format!(
                "{}: block {done}/{} ({})",
                self.what,
                self.total,
                duration_text(seconds)
            ),
        };
        write_line(&self.out, &line);
        self.last_line = Instant::now();
    }
}

/// `run: checkpoint N: val dice 0.8123 (threshold=0.5), ...`
fn validation_line(run: &str, report: &ValidationReport) -> String {
    let shown = report.headline();
    let scores = if shown.is_empty() {
        "no finite score".to_owned()
    } else {
        shown
            .iter()
            .map(|b| {
                format!(
                    "{} {} {:.4} ({})",
                    b.dataset, b.criterion, b.value, b.parameter
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("{run}: validated checkpoint {}: {scores}", report.iteration)
}

/// `12s`, `9m47s`, `2h05m`.
fn duration_text(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

// ---------------------------------------------------------------------------------------------
// Log messages as JSON lines

/// Formats log messages (warnings, errors, `-v` output) as JSON lines for `--log-format json`:
/// `{"event": "log", "level": "WARN", "message": "...", ...fields}`.
pub struct JsonEvents;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonEvents
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = JsonFields(serde_json::Map::new());
        event.record(&mut fields);
        let mut object = serde_json::Map::new();
        object.insert("event".into(), json!("log"));
        object.insert("level".into(), json!(event.metadata().level().as_str()));
        object.extend(fields.0);
        writeln!(writer, "{}", serde_json::Value::Object(object))
    }
}

/// Collects an event's fields as JSON values.
struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), json!(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dacapo_runtime::progress::BestScore;

    /// A writer whose bytes the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn report() -> ValidationReport {
        ValidationReport {
            iteration: 4,
            best: vec![BestScore {
                dataset: "val".into(),
                criterion: "dice".into(),
                parameter: "threshold=0.5".into(),
                value: 0.75,
            }],
        }
    }

    #[test]
    fn text_lines_are_throttled_and_every_validation_is_shown() {
        let out = Shared::default();
        let lines = Lines::new(out.clone(), LogFormat::Text, Duration::from_secs(3600));
        lines.training("r", 0, 10);
        for i in 0..10 {
            lines.step(i, 0.5);
        }
        lines.validated("r", &report());
        let mut blocks = lines.blocks("predict raw", 3);
        for done in 1..=3 {
            blocks.set(done);
        }
        lines.finished(10);
        let got = out.lines();
        assert_eq!(got.len(), 4, "{got:#?}");
        assert_eq!(got[0], "r: training from iteration 0 to 10");
        assert_eq!(
            got[1],
            "r: validated checkpoint 4: val dice 0.7500 (threshold=0.5)"
        );
        assert!(got[2].starts_with("predict raw: block 3/3"), "{got:#?}");
        assert!(
            got[3].starts_with("r: iteration 10/10 (100%)  loss 5.0000e-1"),
            "{got:#?}"
        );
        assert!(got[3].contains("it/s  ETA 0s"), "{got:#?}");
    }

    #[test]
    fn a_zero_interval_gives_a_line_per_step() {
        let out = Shared::default();
        let lines = Lines::new(out.clone(), LogFormat::Text, Duration::ZERO);
        lines.training("r", 2, 5);
        for i in 2..5 {
            lines.step(i, 1.0);
        }
        lines.finished(5);
        let got = out.lines();
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(got[3].starts_with("r: iteration 5/5"), "{got:#?}");
    }

    #[test]
    fn json_lines_parse_and_carry_the_numbers() {
        let out = Shared::default();
        let lines = Lines::new(out.clone(), LogFormat::Json, Duration::ZERO);
        lines.training("r", 0, 2);
        lines.step(0, 0.25);
        lines.validated("r", &report());
        let events: Vec<serde_json::Value> = out
            .lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events[0]["event"], "training");
        assert_eq!(events[1]["event"], "progress");
        assert_eq!(events[1]["iteration"], 1);
        assert_eq!(events[1]["loss"], 0.25);
        assert_eq!(events[2]["event"], "validation");
        assert_eq!(events[2]["best"][0]["value"], 0.75);
        assert_eq!(events[2]["best"][0]["parameter"], "threshold=0.5");
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(duration_text(12.4), "12s");
        assert_eq!(duration_text(587.0), "9m47s");
        assert_eq!(duration_text(7500.0), "2h05m");
    }
}
