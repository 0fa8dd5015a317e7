//! Synthetic sources: a moving test pattern with a clock, and a tone with noise.
//!
//! They stand in for a camera and a microphone in CI and demos, behind the same traits as V4L2
//! and ALSA. [`SyntheticH264`] is the pattern as a camera that encodes H.264 itself would
//! deliver it, for the passthrough path. Both are paced in real time from a fixed start instant (frame `n` is due at
//! `start + n * period`), so a slow consumer never makes them burst: a source that fell behind by
//! more than one period skips ahead instead of catching up.

use std::f32::consts::TAU;
use std::time::{Duration, Instant};

use crate::convert::{H264Passthrough, nal_units};
use crate::encode::H264Encoder;
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

/// A camera that encodes H.264 itself, as UVC H.264 cameras do: the frames of an I420 source
/// (the test pattern) encoded with openh264, an IDR every `gop` frames, and SPS and PPS only
/// before the first IDR (many cameras send them once per stream, so the daemon must put them
/// before later keyframes itself). With `forced_keyframes` a keyframe request makes the next
/// frame an IDR, like V4L2's FORCE_KEY_FRAME control; cameras without the control ignore
/// requests, and so does this one without it. The camera's stream goes through the same
/// [`H264Passthrough`] as a V4L2 camera's.
pub struct SyntheticH264 {
    raw: Box<dyn VideoSource>,
    encoder: H264Encoder,
    passthrough: H264Passthrough,
    gop: u32,
    /// Frames since the camera's last IDR; `None` before the first.
    since_idr: Option<u32>,
    forced_keyframes: bool,
    /// A request taken by [`VideoSource::request_keyframe`], for the next frame.
    keyframe_requested: bool,
}

impl std::fmt::Debug for SyntheticH264 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticH264")
            .field("mode", &self.raw.mode())
            .field("gop", &self.gop)
            .field("forced_keyframes", &self.forced_keyframes)
            .finish_non_exhaustive()
    }
}

/// The synthetic H.264 camera's bitrate and IDR period when opened from the config.
const SYNTHETIC_H264_KBPS: u32 = 1000;
const SYNTHETIC_H264_GOP_S: u32 = 5;

impl SyntheticH264 {
    /// The camera over `raw`'s I420 frames, an IDR every `gop` frames (at least 1).
    pub fn new(
        raw: Box<dyn VideoSource>,
        bitrate_kbps: u32,
        gop: u32,
        forced_keyframes: bool,
    ) -> Result<Self, DeviceError> {
        // The camera decides when IDRs come; openh264's own period is set out of the way.
        let encoder = H264Encoder::new(raw.mode(), bitrate_kbps, Duration::from_secs(3600))
            .map_err(|e| DeviceError::Io(format!("synthetic H.264 camera: {e}")))?;
        Ok(Self {
            raw,
            encoder,
            passthrough: H264Passthrough::default(),
            gop: gop.max(1),
            since_idr: None,
            forced_keyframes,
            keyframe_requested: false,
        })
    }

    /// The test pattern in `mode` as an H.264 camera with an IDR every 5 s that honours
    /// keyframe requests (`device = "synthetic"`, `format = "h264"` in the config).
    pub fn pattern(mode: VideoMode) -> Result<Self, DeviceError> {
        let raw = SyntheticVideo::new(mode)?;
        Self::new(
            Box::new(raw),
            SYNTHETIC_H264_KBPS,
            SYNTHETIC_H264_GOP_S * mode.fps,
            true,
        )
    }

    /// The next access unit as the camera sends it, and whether it holds an IDR.
    fn camera_frame(&mut self) -> Result<(VideoFrame, Vec<u8>, bool), DeviceError> {
        loop {
            let frame = self.raw.next_frame()?;
            let VideoData::I420(pixels) = &frame.data else {
                return Err(DeviceError::Format(
                    "the synthetic H.264 camera needs I420 frames".into(),
                ));
            };
            let requested = std::mem::take(&mut self.keyframe_requested);
            let idr_due = requested || self.since_idr.is_none_or(|n| n + 1 >= self.gop);
            let Some(sample) = self
                .encoder
                .encode(&frame, pixels, idr_due)
                .map_err(|e| DeviceError::Io(format!("synthetic H.264 camera: {e}")))?
            else {
                continue;
            };
            let first = self.since_idr.is_none();
            self.since_idr = match (sample.keyframe, self.since_idr) {
                (true, _) => Some(0),
                (false, n) => n.map(|n| n.saturating_add(1)),
            };
            let au = if sample.keyframe && !first {
                without_parameter_sets(&sample.data)
            } else {
                sample.data.to_vec()
            };
            return Ok((frame, au, sample.keyframe));
        }
    }
}

/// An Annex-B access unit without its SPS and PPS units.
fn without_parameter_sets(au: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(au.len());
    for nal in nal_units(au).filter(|n| !matches!(n[0] & 0x1f, 7 | 8)) {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
    }
    out
}

impl VideoSource for SyntheticH264 {
    fn mode(&self) -> VideoMode {
        self.raw.mode()
    }

    fn next_frame(&mut self) -> Result<VideoFrame, DeviceError> {
        let (frame, au, _) = self.camera_frame()?;
        let (au, keyframe) = self.passthrough.process(&au)?;
        Ok(VideoFrame {
            data: VideoData::H264(au),
            keyframe,
            ..frame
        })
    }

    fn request_keyframe(&mut self) {
        if self.forced_keyframes {
            self.keyframe_requested = true;
        }
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

    /// The pattern without pacing, for tests that should not wait.
    struct Unpaced(VideoMode, u64);

    impl VideoSource for Unpaced {
        fn mode(&self) -> VideoMode {
            self.0
        }

        fn next_frame(&mut self) -> Result<VideoFrame, DeviceError> {
            self.1 += 1;
            Ok(VideoFrame {
                width: self.0.width,
                height: self.0.height,
                data: VideoData::I420(render_pattern(
                    self.0.width,
                    self.0.height,
                    self.1,
                    Duration::from_millis(self.1 * 33),
                )),
                captured: Instant::now(),
                keyframe: true,
            })
        }
    }

    fn nal_types(au: &[u8]) -> Vec<u8> {
        nal_units(au).map(|n| n[0] & 0x1f).collect()
    }

    #[test]
    fn the_h264_camera_sends_parameter_sets_once_and_the_passthrough_puts_them_back() {
        let mode = VideoMode {
            width: 64,
            height: 48,
            fps: 30,
        };
        let mut camera = SyntheticH264::new(Box::new(Unpaced(mode, 0)), 200, 5, true).expect("camera");
        // The camera itself: SPS and PPS before the first IDR only, an IDR every 5 frames.
        let mut raw = Vec::new();
        for _ in 0..11 {
            let (_, au, idr) = camera.camera_frame().expect("frame");
            raw.push((nal_types(&au), idr));
        }
        let idrs: Vec<usize> = raw
            .iter()
            .enumerate()
            .filter(|(_, (_, idr))| *idr)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(idrs, [0, 5, 10], "{raw:?}");
        assert_eq!(&raw[0].0[..2], &[7, 8], "{raw:?}");
        assert!(raw[5].0.iter().all(|&t| t != 7 && t != 8), "{raw:?}");
        // Through the passthrough (what the daemon gets; a new camera, so the passthrough sees
        // the first SPS and PPS): every keyframe starts with them.
        let mut camera = SyntheticH264::new(Box::new(Unpaced(mode, 0)), 200, 5, true).expect("camera");
        let mut keyframes = 0;
        for _ in 0..10 {
            let f = camera.next_frame().expect("frame");
            let VideoData::H264(au) = &f.data else {
                panic!("H.264 expected")
            };
            let types = nal_types(au);
            assert_eq!(f.keyframe, types.contains(&5), "{types:?}");
            if f.keyframe {
                keyframes += 1;
                assert_eq!(&types[..2], &[7, 8], "{types:?}");
            }
        }
        assert_eq!(keyframes, 2);
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
