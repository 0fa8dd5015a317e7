//! Progress for people: a redrawn bar with rate and ETA on a terminal, a plain line every
//! few seconds otherwise (logs, pipes, CI).

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// Progress of one transfer.
#[derive(Debug)]
pub struct Bar {
    label: String,
    total: Option<u64>,
    started: Instant,
    last_draw: Option<Instant>,
    tty: bool,
}

impl Bar {
    /// A bar for `label` of `total` bytes (if known).
    pub fn new(label: impl Into<String>, total: Option<u64>) -> Self {
        Bar {
            label: label.into(),
            total,
            started: Instant::now(),
            last_draw: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Reports `done` bytes; draws at most 10 times a second on a terminal, every 5 s else.
    pub fn update(&mut self, done: u64) {
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(5)
        };
        if self.last_draw.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let line = self.line(done, self.started.elapsed());
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the bar with a last line.
    pub fn finish(&mut self, message: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "{message}");
    }

    /// The text of one update.
    pub fn line(&self, done: u64, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        match self.total {
            Some(total) if total > 0 => {
                let frac = (done as f64 / total as f64).clamp(0.0, 1.0);
                let width = 24;
                let filled = (frac * width as f64).round() as usize;
                let eta = if rate > 0.0 {
                    (total.saturating_sub(done)) as f64 / rate
                } else {
                    f64::INFINITY
                };
                format!(
                    "{} [{}{}] {:>3}% {} of {} {}/s ETA {}",
                    self.label,
                    "#".repeat(filled),
                    "-".repeat(width - filled),
                    (frac * 100.0) as u32,
                    bytes(done),
                    bytes(total),
                    bytes(rate as u64),
                    duration(eta)
                )
            }
            _ => format!("{} {} {}/s", self.label, bytes(done), bytes(rate as u64)),
        }
    }
}

/// `1.5 MB`, decimal units as disks and networks are sold.
pub fn bytes(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs > 359_999.0 {
        return "--:--".into();
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let bar = Bar::new("a.bin", Some(10_000_000));
        let line = bar.line(5_000_000, Duration::from_secs(1));
        assert!(line.contains(" 50% 5.0 MB of 10.0 MB 5.0 MB/s ETA 00:01"), "{line}");
        assert!(line.contains("[############------------]"), "{line}");
        let unknown = Bar::new("x", None).line(1500, Duration::from_secs(1));
        assert_eq!(unknown, "x 1.5 kB 1.5 kB/s");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(duration(3725.0), "1:02:05");
        assert_eq!(duration(f64::INFINITY), "--:--");
    }
}
