//! Synthetic sources: a moving test pattern with a clock, and a tone with noise.
//!
//! They stand in for a camera and a microphone in CI and demos, behind the same traits as V4L2
//! and ALSA. Both are paced in real time from a fixed start instant (frame `n` is due at
//! `start + n * period`), so a slow consumer never makes them burst: a source that fell behind by
//! more than one period skips ahead instead of catching up.

use std::f32::consts::TAU;
use std::time::{Duration, Instant};

use crate::source::{AUDIO_FRAME, AUDIO_RATE, AudioSource, DeviceError, VideoData, VideoFrame, VideoMode, VideoSource};

/// Smallest and largest synthetic picture: a Pi encodes 1080p at most, and H.264 wants even sizes.
const MIN_SIDE: u32 = 16;
const MAX_WIDTH: u32 = 1920;
const MAX_HEIGHT: u32 = 1080;
const MAX_FPS: u32 = 60;

/// A moving test pattern: colour bars, a box that slides across, and a clock (seconds and
/// hundredths since the source started) so a viewer sees it is live and frames are in order.
#[derive(Debug)]
pub struct SyntheticVideo {
    mode: VideoMode,
    pacer: Pacer,
}

impl SyntheticVideo {
    /// A pattern of the given size and rate; sizes must be even and within 16x16..1920x1080,
    /// the rate within 1..60 fps.
    pub fn new(mode: VideoMode) -> Result<Self, DeviceError> {
        let VideoMode { width, height, fps } = mode;
        if !(MIN_SIDE..=MAX_WIDTH).contains(&width)
            || !(MIN_SIDE..=MAX_HEIGHT).contains(&height)
            || width % 2 != 0
            || height % 2 != 0
        {
            return Err(DeviceError::Format(format!(
                "synthetic video size {width}x{height} is not supported (use even sizes from \
                 {MIN_SIDE}x{MIN_SIDE} to {MAX_WIDTH}x{MAX_HEIGHT})"
            )));
        }
        if !(1..=MAX_FPS).contains(&fps) {
            return Err(DeviceError::Format(format!(
                "synthetic video rate {fps} fps is not supported (use 1 to {MAX_FPS})"
            )));
        }
        Ok(Self {
            mode,
            pacer: Pacer::new(Duration::from_secs(1) / fps),
        })
    }
}

impl VideoSource for SyntheticVideo {
    fn mode(&self) -> VideoMode {
        self.mode
    }

    fn next_frame(&mut self) -> Result<VideoFrame, DeviceError> {
        let (index, elapsed) = self.pacer.wait();
        let data = render_pattern(self.mode.width, self.mode.height, index, elapsed);
        Ok(VideoFrame {
            width: self.mode.width,
            height: self.mode.height,
            data: VideoData::I420(data),
            captured: Instant::now(),
            keyframe: true,
        })
    }
}

/// Renders frame `index` of the pattern at `elapsed` since the start, as I420.
///
/// Public so benches and tests can render without waiting for the pacer.
pub fn render_pattern(width: u32, height: u32, index: u64, elapsed: Duration) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut frame = vec![0u8; w * h + 2 * cw * ch];
    let (luma, chroma) = frame.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut(cw * ch);

    // Colour bars (white, yellow, cyan, green, magenta, red, blue, black in BT.601 limited
    // range), one row built once and copied to every row.
    const BARS: [(u8, u8, u8); 8] = [
        (235, 128, 128),
        (210, 16, 146),
        (170, 166, 16),
        (145, 54, 34),
        (106, 202, 222),
        (81, 90, 240),
        (41, 240, 110),
        (16, 128, 128),
    ];
    let bar_of = |x: usize| BARS[(x * BARS.len() / w).min(BARS.len() - 1)];
    let luma_row: Vec<u8> = (0..w).map(|x| bar_of(x).0).collect();
    for row in luma.chunks_exact_mut(w) {
        row.copy_from_slice(&luma_row);
    }
    let u_row: Vec<u8> = (0..cw).map(|x| bar_of(x * 2).1).collect();
    let v_row: Vec<u8> = (0..cw).map(|x| bar_of(x * 2).2).collect();
    for row in u_plane.chunks_exact_mut(cw) {
        row.copy_from_slice(&u_row);
    }
    for row in v_plane.chunks_exact_mut(cw) {
        row.copy_from_slice(&v_row);
    }

    // A grey box sliding along the lower third, one full crossing every 4 s at 30 fps.
    let side = (h / 4).max(4) & !1;
    let travel = w.saturating_sub(side).max(1);
    let phase = (index as usize * 4) % (2 * travel);
    let bx = if phase < travel { phase } else { 2 * travel - phase } & !1;
    let by = (h - side - h / 8) & !1;
    fill_rect(luma, w, bx, by, side, side, 128);
    fill_rect(u_plane, cw, bx / 2, by / 2, side / 2, side / 2, 128);
    fill_rect(v_plane, cw, bx / 2, by / 2, side / 2, side / 2, 128);

    // The clock: "SSSS.CC" (seconds.hundredths) in a black band at the top left.
    let centis = elapsed.as_millis() / 10;
    let text = format!("{:04}.{:02}", (centis / 100) % 10_000, centis % 100);
    let scale = (h / 60).max(1);
    let glyph_w = 6 * scale;
    let band_w = (text.len() * glyph_w + 2 * scale).min(w);
    let band_h = (9 * scale).min(h);
    fill_rect(luma, w, 0, 0, band_w, band_h, 16);
    fill_rect(u_plane, cw, 0, 0, band_w.div_ceil(2), band_h.div_ceil(2), 128);
    fill_rect(v_plane, cw, 0, 0, band_w.div_ceil(2), band_h.div_ceil(2), 128);
    for (i, c) in text.chars().enumerate() {
        draw_glyph(luma, w, h, scale + i * glyph_w, scale, scale, c);
    }
    frame
}

/// Fills a rectangle of one plane (clipped to the plane).
fn fill_rect(plane: &mut [u8], stride: usize, x: usize, y: usize, w: usize, h: usize, v: u8) {
    let rows = plane.len() / stride;
    for row in plane.chunks_exact_mut(stride).take(rows).skip(y).take(h) {
        let end = (x + w).min(stride);
        if x < end {
            row[x..end].fill(v);
        }
    }
}

/// 5x7 glyphs for the clock, one byte per row, bit 4 the leftmost pixel.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c],
        _ => [0; 7],
    }
}

/// Draws one glyph in white into the luma plane at (x, y), each font pixel `scale` wide.
fn draw_glyph(luma: &mut [u8], w: usize, h: usize, x: usize, y: usize, scale: usize, c: char) {
    for (gy, bits) in glyph(c).iter().enumerate() {
        for gx in 0..5 {
            if bits & (0x10 >> gx) != 0 {
                let (px, py) = (x + gx * scale, y + gy * scale);
                if px < w && py < h {
                    fill_rect(luma, w, px, py, scale, scale, 235);
                }
            }
        }
    }
}

/// A tone with noise: a hum of 220 Hz and its overtones plus white noise, 48 kHz mono, paced in
/// real time at 10 ms per frame. Overtones make it voice-like enough that RNNoise (on by default)
/// keeps it: a pure sine is often taken for noise and removed.
#[derive(Debug)]
pub struct SyntheticAudio {
    tone: Tone,
    pacer: Pacer,
}

impl SyntheticAudio {
    /// 220 Hz with 11 overtones (fundamental 5000, overtone `h` at 5000/h), noise about 20 dB
    /// below the tone.
    pub fn new() -> Self {
        Self::with_tone(Tone::new(220.0, 5000.0, 800.0, 0x5eed).with_harmonics(12))
    }

    /// A source producing the given tone.
    pub fn with_tone(tone: Tone) -> Self {
        Self {
            tone,
            pacer: Pacer::new(Duration::from_millis(10)),
        }
    }
}

impl Default for SyntheticAudio {
    fn default() -> Self {
        Self::new()
    }
}

impl AudioSource for SyntheticAudio {
    fn read_frame(&mut self, out: &mut [i16; AUDIO_FRAME]) -> Result<(), DeviceError> {
        self.pacer.wait();
        self.tone.fill(out);
        Ok(())
    }
}

/// A sine (with optional overtones) plus uniform white noise, generated sample by sample without
/// pacing (tests and the denoise test signal use it directly).
#[derive(Debug, Clone)]
pub struct Tone {
    /// Radians per sample.
    step: f32,
    phase: f32,
    amplitude: f32,
    /// Partials: the fundamental and its overtones up to this multiple, partial `h` at
    /// `amplitude / h` (a sawtooth-like, voice-like spectrum).
    harmonics: u32,
    noise: f32,
    rng: u64,
}

impl Tone {
    /// `freq` in Hz; `amplitude` and `noise` (the noise's peak) in i16 units; `seed` fixes the
    /// noise so test signals are reproducible.
    pub fn new(freq: f32, amplitude: f32, noise: f32, seed: u64) -> Self {
        Self {
            step: TAU * freq / AUDIO_RATE as f32,
            phase: 0.0,
            amplitude,
            harmonics: 1,
            noise,
            rng: seed | 1,
        }
    }

    /// Adds overtones up to `harmonics` times the fundamental (at most 48, and below 20 kHz).
    pub fn with_harmonics(mut self, harmonics: u32) -> Self {
        let audible = (20_000.0 / (self.step / TAU * AUDIO_RATE as f32).max(1.0)) as u32;
        self.harmonics = harmonics.clamp(1, 48).min(audible.max(1));
        self
    }

    /// The next sample.
    pub fn sample(&mut self) -> i16 {
        // xorshift64*: plenty for noise, no dependency.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40; // 24 bits
        let noise = (r as f32 / (1u64 << 23) as f32 - 1.0) * self.noise;
        let mut v = noise;
        for h in 1..=self.harmonics {
            v += self.amplitude / h as f32 * (self.phase * h as f32).sin();
        }
        self.phase = (self.phase + self.step) % TAU;
        v.clamp(i16::MIN as f32, i16::MAX as f32) as i16
    }

    /// Fills `out` with the next samples.
    pub fn fill(&mut self, out: &mut [i16]) {
        for s in out {
            *s = self.sample();
        }
    }
}

/// Real-time pacing from a fixed start: tick `n` is due at `start + n * period`.
#[derive(Debug)]
struct Pacer {
    period: Duration,
    start: Option<Instant>,
    next: u64,
}

impl Pacer {
    fn new(period: Duration) -> Self {
        Self {
            period,
            start: None,
            next: 0,
        }
    }

    /// Sleeps until the next tick is due; returns its index and its time since the start.
    fn wait(&mut self) -> (u64, Duration) {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        let period = self.period.as_nanos() as u64;
        let mut due = Duration::from_nanos(period.saturating_mul(self.next));
        let elapsed = now - start;
        if elapsed > due + self.period {
            // Fell behind (a slow consumer): skip the missed ticks rather than burst.
            self.next = elapsed.as_nanos() as u64 / period;
            due = Duration::from_nanos(period.saturating_mul(self.next));
        } else if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
        let index = self.next;
        self.next += 1;
        (index, due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_sizes_and_rates_are_refused_with_a_reason() {
        for (w, h, fps) in [(0, 480, 30), (641, 480, 30), (4096, 2160, 30), (640, 480, 0)] {
            let err = SyntheticVideo::new(VideoMode {
                width: w,
                height: h,
                fps,
            })
            .expect_err("must be refused");
            assert!(matches!(err, DeviceError::Format(_)), "{err}");
            assert!(err.to_string().contains("synthetic video"), "{err}");
        }
    }

    #[test]
    fn the_clock_shows_in_the_picture() {
        let a = render_pattern(320, 240, 0, Duration::from_millis(0));
        let b = render_pattern(320, 240, 0, Duration::from_millis(1230));
        // Same box position, different clock: only the clock band differs.
        let band = 320 * (9 * 4);
        assert_ne!(a[..band], b[..band]);
        assert_eq!(a[band..320 * 240], b[band..320 * 240]);
    }

    #[test]
    fn a_late_consumer_gets_no_burst() {
        let mut p = Pacer::new(Duration::from_millis(1));
        p.wait();
        std::thread::sleep(Duration::from_millis(20));
        let (index, _) = p.wait();
        assert!(index >= 19, "index {index}");
    }
}
