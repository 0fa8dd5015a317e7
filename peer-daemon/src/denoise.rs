//! Noise suppression (RNNoise, via `nnnoiseless`) and gain, as an [`AudioSource`] wrapper.
//!
//! RNNoise works on exactly the 480-sample (10 ms at 48 kHz) frames every source delivers, so
//! the wrapper adds no buffering; its output lags the input by one RNNoise window internally.

use nnnoiseless::DenoiseState;

use crate::source::{AUDIO_FRAME, AudioSource, DeviceError};

/// Loudest gain accepted: +30 dB turns a whisper into clipping already.
pub const MAX_GAIN_DB: f32 = 30.0;

/// An [`AudioSource`] with RNNoise (optional) and a fixed gain applied.
pub struct Processed {
    inner: Box<dyn AudioSource>,
    /// RNNoise's state (about 100 kB), boxed as the crate hands it out; None when off.
    denoise: Option<Box<DenoiseState<'static>>>,
    gain: f32,
    input: [f32; AUDIO_FRAME],
    output: [f32; AUDIO_FRAME],
    /// RNNoise's voice probability of the last frame (0..1).
    voice: f32,
}

impl std::fmt::Debug for Processed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processed")
            .field("denoise", &self.denoise.is_some())
            .field("gain", &self.gain)
            .finish_non_exhaustive()
    }
}

impl Processed {
    /// Wraps `inner`; `gain_db` within -60..=30 dB (else a [`DeviceError::Format`]).
    pub fn new(inner: Box<dyn AudioSource>, denoise: bool, gain_db: f32) -> Result<Self, DeviceError> {
        if !(-60.0..=MAX_GAIN_DB).contains(&gain_db) {
            return Err(DeviceError::Format(format!(
                "audio gain {gain_db} dB is out of range (use -60 to {MAX_GAIN_DB})"
            )));
        }
        Ok(Self {
            inner,
            denoise: denoise.then(DenoiseState::new),
            gain: 10f32.powf(gain_db / 20.0),
            input: [0.0; AUDIO_FRAME],
            output: [0.0; AUDIO_FRAME],
            voice: 0.0,
        })
    }

    /// RNNoise's estimate that the last frame held voice (0 when denoise is off).
    pub fn voice_probability(&self) -> f32 {
        self.voice
    }
}

impl AudioSource for Processed {
    fn read_frame(&mut self, out: &mut [i16; AUDIO_FRAME]) -> Result<(), DeviceError> {
        self.inner.read_frame(out)?;
        let Some(state) = self.denoise.as_mut() else {
            if self.gain != 1.0 {
                for s in out.iter_mut() {
                    *s = saturate(f32::from(*s) * self.gain);
                }
            }
            return Ok(());
        };
        for (i, s) in self.input.iter_mut().zip(out.iter()) {
            *i = f32::from(*s);
        }
        self.voice = state.process_frame(&mut self.output, &self.input);
        for (s, o) in out.iter_mut().zip(&self.output) {
            *s = saturate(o * self.gain);
        }
        Ok(())
    }
}

/// Rounds to i16, clipping (never wrapping) what is out of range.
fn saturate(v: f32) -> i16 {
    v.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
}

/// Denoises a whole signal frame by frame (tests and the bench measure RNNoise with it).
pub fn denoise_signal(samples: &[i16]) -> Vec<i16> {
    let mut state = DenoiseState::new();
    let mut input = [0f32; AUDIO_FRAME];
    let mut output = [0f32; AUDIO_FRAME];
    let mut out = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(AUDIO_FRAME) {
        input.fill(0.0);
        for (i, s) in input.iter_mut().zip(chunk) {
            *i = f32::from(*s);
        }
        state.process_frame(&mut output, &input);
        out.extend(output[..chunk.len()].iter().map(|&o| saturate(o)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::Tone;

    /// A source replaying fixed frames.
    struct Fixed(Tone);
    impl AudioSource for Fixed {
        fn read_frame(&mut self, out: &mut [i16; AUDIO_FRAME]) -> Result<(), DeviceError> {
            self.0.fill(out);
            Ok(())
        }
    }

    #[test]
    fn gain_scales_and_clips_instead_of_wrapping() {
        let mut p = Processed::new(Box::new(Fixed(Tone::new(440.0, 20000.0, 0.0, 1))), false, 6.0).expect("valid gain");
        let mut buf = [0i16; AUDIO_FRAME];
        p.read_frame(&mut buf).expect("frame");
        let mut plain = [0i16; AUDIO_FRAME];
        Tone::new(440.0, 20000.0, 0.0, 1).fill(&mut plain);
        for (g, p) in buf.iter().zip(&plain) {
            let want = saturate(f32::from(*p) * 10f32.powf(0.3));
            assert_eq!(*g, want);
            // Same sign: a clipped sample never wraps to the other side.
            assert!(i32::from(*g) * i32::from(*p) >= 0);
        }
        assert!(buf.contains(&i16::MAX) && buf.contains(&i16::MIN));
    }

    #[test]
    fn out_of_range_gain_is_refused() {
        for db in [31.0, -61.0, f32::NAN] {
            let err = Processed::new(Box::new(Fixed(Tone::new(1.0, 0.0, 0.0, 1))), true, db).expect_err("refused");
            assert!(err.to_string().contains("gain"), "{err}");
        }
    }
}
