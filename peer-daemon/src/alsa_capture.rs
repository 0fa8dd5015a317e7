//! ALSA capture: 48 kHz mono i16 from a configured PCM, in 10 ms frames.
//!
//! The PCM is opened blocking, so ALSA paces the reads. A device that offers only stereo is
//! downmixed; a device that cannot do 48 kHz is refused with a hint to use a `plug` PCM (which
//! resamples). An overrun (the reader was late) is recovered and counted, not an error; a device
//! that went away is [`DeviceError::Unplugged`].

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};

use crate::source::{AUDIO_FRAME, AUDIO_RATE, AudioSource, DeviceError};

/// Ring buffer of the capture PCM: 8 periods of 10 ms, enough to ride out a busy moment on a Pi
/// without adding much latency.
const PERIODS: i64 = 8;
/// Most channels we downmix from.
const MAX_CHANNELS: u32 = 8;

const ENOENT: i32 = 2;
const ENXIO: i32 = 6;
const EAGAIN: i32 = 11;
const EINVAL: i32 = 22;
const ENODEV: i32 = 19;
const EBUSY: i32 = 16;
const EPIPE: i32 = 32;
const ESTRPIPE: i32 = 86;
const EBADFD: i32 = 77;

/// A capture PCM delivering [`AUDIO_FRAME`]-sample mono frames.
pub struct AlsaCapture {
    name: String,
    pcm: PCM,
    channels: usize,
    /// Interleaved samples of one period as read from the device (before the downmix).
    buf: Vec<i16>,
    overruns: u64,
}

impl std::fmt::Debug for AlsaCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlsaCapture")
            .field("name", &self.name)
            .field("channels", &self.channels)
            .field("overruns", &self.overruns)
            .finish_non_exhaustive()
    }
}

impl AlsaCapture {
    /// Opens `name` (`"default"`, `"plughw:1,0"`, a PCM from an ALSA config) for capture.
    pub fn open(name: &str) -> Result<Self, DeviceError> {
        let pcm = PCM::new(name, Direction::Capture, false).map_err(|e| open_error(name, &e))?;
        let channels = configure(&pcm, name)?;
        pcm.prepare()
            .map_err(|e| DeviceError::Io(format!("ALSA PCM {name:?}: cannot prepare: {e}")))?;
        log::info!("microphone: ALSA PCM {name:?}, 48000 Hz, {channels} channel(s)");
        Ok(Self {
            name: name.to_owned(),
            pcm,
            channels: channels as usize,
            buf: vec![0; AUDIO_FRAME * channels as usize],
            overruns: 0,
        })
    }

    /// Channels the device delivers (downmixed to mono).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Overruns recovered so far (each a gap in the audio).
    pub fn overruns(&self) -> u64 {
        self.overruns
    }
}

impl AudioSource for AlsaCapture {
    fn read_frame(&mut self, out: &mut [i16; AUDIO_FRAME]) -> Result<(), DeviceError> {
        let mut filled = 0;
        // Bounded: a PCM that keeps returning nothing or keeps overrunning is an error.
        let mut attempts = 0;
        while filled < AUDIO_FRAME {
            attempts += 1;
            if attempts > 64 {
                return Err(DeviceError::Io(format!("ALSA PCM {:?} delivers no audio", self.name)));
            }
            let io = self.pcm.io_i16().map_err(|e| self.read_error(&e))?;
            let want = &mut self.buf[filled * self.channels..];
            match io.readi(want) {
                Ok(frames) => filled += frames,
                Err(e) if e.errno() == EPIPE || e.errno() == ESTRPIPE => {
                    self.overruns += 1;
                    log::debug!("ALSA PCM {:?}: overrun, recovering", self.name);
                    self.pcm.try_recover(e, true).map_err(|e| self.read_error(&e))?;
                }
                Err(e) if e.errno() == EAGAIN => {}
                Err(e) => return Err(self.read_error(&e)),
            }
        }
        if self.channels == 1 {
            out.copy_from_slice(&self.buf[..AUDIO_FRAME]);
        } else {
            for (o, frame) in out.iter_mut().zip(self.buf.chunks_exact(self.channels)) {
                let sum: i32 = frame.iter().map(|&s| i32::from(s)).sum();
                *o = (sum / self.channels as i32) as i16;
            }
        }
        Ok(())
    }
}

impl AlsaCapture {
    fn read_error(&self, e: &alsa::Error) -> DeviceError {
        let name = &self.name;
        match e.errno() {
            ENODEV | EBADFD | ENXIO => DeviceError::Unplugged(format!(
                "ALSA PCM {name:?} went away ({e}); waiting for it to come back"
            )),
            _ => DeviceError::Io(format!("ALSA PCM {name:?}: read failed: {e}")),
        }
    }
}

/// Sets 48 kHz, S16, interleaved, mono if the device can, and 10 ms periods; returns channels.
fn configure(pcm: &PCM, name: &str) -> Result<u32, DeviceError> {
    let fail = |what: &str, e: alsa::Error| DeviceError::Format(format!("ALSA PCM {name:?}: cannot set {what}: {e}"));
    let hwp = HwParams::any(pcm).map_err(|e| fail("parameters", e))?;
    hwp.set_access(Access::RWInterleaved)
        .map_err(|e| fail("interleaved access", e))?;
    hwp.set_format(Format::s16()).map_err(|e| {
        DeviceError::Format(format!(
            "ALSA PCM {name:?} cannot capture 16-bit samples ({e}); use a \"plughw:\" or \
             \"plug\" PCM, which converts"
        ))
    })?;
    let channels = hwp.set_channels_near(1).map_err(|e| fail("channels", e))?;
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(DeviceError::Format(format!(
            "ALSA PCM {name:?} offers {channels} channels; at most {MAX_CHANNELS} are supported"
        )));
    }
    let rate = hwp
        .set_rate_near(AUDIO_RATE, ValueOr::Nearest)
        .map_err(|e| fail("the rate", e))?;
    if rate != AUDIO_RATE {
        return Err(DeviceError::Format(format!(
            "ALSA PCM {name:?} cannot capture at 48000 Hz (nearest {rate} Hz); use a \
             \"plughw:\" or \"plug\" PCM, which resamples"
        )));
    }
    let period = hwp
        .set_period_size_near(AUDIO_FRAME as i64, ValueOr::Nearest)
        .map_err(|e| fail("the period", e))?;
    hwp.set_buffer_size_near(period * PERIODS)
        .map_err(|e| fail("the buffer", e))?;
    pcm.hw_params(&hwp).map_err(|e| fail("parameters", e))?;
    Ok(channels)
}

/// Turns an open failure into a message that says what to check.
fn open_error(name: &str, e: &alsa::Error) -> DeviceError {
    match e.errno() {
        // EINVAL: libasound's answer for a card number or name that does not exist.
        ENOENT | ENODEV | ENXIO | EINVAL => DeviceError::Missing(format!(
            "ALSA PCM {name:?} not found ({e}); `arecord -L` lists the capture PCMs, and the \
             USB microphone may be unplugged"
        )),
        EBUSY => DeviceError::Busy(format!(
            "ALSA PCM {name:?} is in use by another program ({e}); stop it or use a \"dsnoop\" PCM"
        )),
        _ => DeviceError::Io(format!("ALSA PCM {name:?}: cannot open for capture: {e}")),
    }
}
