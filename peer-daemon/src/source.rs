//! The device seam: video and audio sources the daemon reads from, blocking-style.
//!
//! Each source runs on its own std thread. Cameras (V4L2), microphones (ALSA) and the synthetic
//! test pattern and tone implement the same traits, so the daemon and its tests cannot tell
//! them apart. A device fault is a [`DeviceError`], never a panic: the daemon logs it, stops
//! providing the resource and reopens the device later.

use std::time::Instant;

use serde::Deserialize;

use crate::alsa_capture::AlsaCapture;
use crate::denoise::Processed;
use crate::synthetic::{SyntheticAudio, SyntheticH264, SyntheticVideo};
use crate::v4l2::{CameraRequest, PixelFormat, V4l2Camera};

/// Samples per audio frame: 10 ms at 48 kHz (RNNoise's frame size).
pub const AUDIO_FRAME: usize = 480;
/// The one audio sample rate every source delivers.
pub const AUDIO_RATE: u32 = 48_000;

/// Raw or compressed video from a camera or the synthetic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoData {
    /// Planar YUV 4:2:0: `width*height` luma bytes, then the U and V planes of
    /// `ceil(width/2)*ceil(height/2)` bytes each.
    I420(Vec<u8>),
    /// One H.264 access unit in Annex-B form (start codes); keyframes carry SPS and PPS first.
    H264(Vec<u8>),
}

/// One picture from a [`VideoSource`].
#[derive(Debug, Clone)]
pub struct VideoFrame {
    pub width: u32,
    pub height: u32,
    pub data: VideoData,
    /// When the frame was captured (or generated), for pacing and latency figures.
    pub captured: Instant,
    /// An IDR picture (H.264) — always true for raw frames, which any encoder can start from.
    pub keyframe: bool,
}

/// A negotiated or requested video mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoMode {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// Why a device could not be opened or read. Each message says what to check.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceError {
    /// The configured device does not exist (or no capture device was found).
    #[error("device missing: {0}")]
    Missing(String),
    /// The device exists but another program holds it.
    #[error("device busy: {0}")]
    Busy(String),
    /// The path exists but is not a video capture device.
    #[error("not a camera: {0}")]
    NotACamera(String),
    /// The device went away while in use; reopen it later.
    #[error("device unplugged: {0}")]
    Unplugged(String),
    /// Any other I/O or driver error.
    #[error("device I/O error: {0}")]
    Io(String),
    /// The device offers no format we can use, or delivered a frame we cannot decode.
    #[error("unusable format: {0}")]
    Format(String),
}

/// A camera or the synthetic pattern.
pub trait VideoSource: Send {
    /// What was negotiated with the device (closest to the request).
    fn mode(&self) -> VideoMode;
    /// Blocks for the next frame. H.264 passthrough sources put SPS/PPS before each keyframe.
    fn next_frame(&mut self) -> Result<VideoFrame, DeviceError>;
    /// A receiver asked for a keyframe (only meaningful for H.264 passthrough).
    fn request_keyframe(&mut self) {}
}

/// A microphone or the synthetic tone: 48 kHz mono i16, [`AUDIO_FRAME`] samples (10 ms) per call.
pub trait AudioSource: Send {
    /// Blocks until the next 10 ms of audio is in `out`.
    fn read_frame(&mut self, out: &mut [i16; AUDIO_FRAME]) -> Result<(), DeviceError>;
}

/// Camera configuration (the daemon's `[video]` table).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// `"synthetic"` for the test pattern; a path such as `/dev/video0`; empty for the first
    /// capture device found.
    pub device: String,
    /// Requested width; the closest mode the camera offers is used.
    pub width: u32,
    /// Requested height.
    pub height: u32,
    /// Requested frames per second.
    pub fps: u32,
    /// Pass H.264 from the camera through when it offers it (instead of encoding ourselves).
    pub h264_passthrough: bool,
    /// Camera pixel format: `"auto"` (H.264, I420, YUYV, MJPEG, whichever mode is closest) or
    /// one of `"h264"`, `"i420"`, `"yuyv"`, `"mjpeg"`.
    pub format: String,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            device: String::new(),
            width: 640,
            height: 480,
            fps: 30,
            h264_passthrough: true,
            format: "auto".into(),
        }
    }
}

/// Microphone configuration (the daemon's `[audio]` table).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// ALSA PCM name (`"default"`, `"plughw:1,0"`, ...) or `"synthetic"` for the test tone.
    pub pcm: String,
    /// RNNoise noise suppression.
    pub denoise: bool,
    /// Gain in dB applied after noise suppression (clipped to the i16 range).
    pub gain_db: f32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            pcm: "default".into(),
            denoise: true,
            gain_db: 0.0,
        }
    }
}

/// The device name that selects the synthetic sources.
pub const SYNTHETIC: &str = "synthetic";

/// Opens the configured camera (or the synthetic pattern).
pub fn open_video(config: &VideoConfig) -> Result<Box<dyn VideoSource>, DeviceError> {
    let mode = VideoMode {
        width: config.width,
        height: config.height,
        fps: config.fps,
    };
    if config.device == SYNTHETIC {
        // format = "h264": the pattern as an H.264 camera sends it, for the passthrough path.
        return match PixelFormat::parse(&config.format)? {
            None | Some(PixelFormat::I420) => Ok(Box::new(SyntheticVideo::new(mode)?)),
            Some(PixelFormat::H264) if config.h264_passthrough => Ok(Box::new(SyntheticH264::pattern(mode)?)),
            Some(PixelFormat::H264) => Err(DeviceError::Format(
                "format = \"h264\" needs h264_passthrough = true".into(),
            )),
            Some(_) => Err(DeviceError::Format(format!(
                "the synthetic camera sends i420, or h264 like a camera that encodes, not {:?}",
                config.format
            ))),
        };
    }
    let request = CameraRequest {
        device: (!config.device.is_empty()).then(|| config.device.clone().into()),
        mode,
        h264_passthrough: config.h264_passthrough,
        format: PixelFormat::parse(&config.format)?,
    };
    Ok(Box::new(V4l2Camera::open(&request)?))
}

/// Opens the configured microphone (or the synthetic tone), with denoise and gain applied.
pub fn open_audio(config: &AudioConfig) -> Result<Box<dyn AudioSource>, DeviceError> {
    let raw: Box<dyn AudioSource> = if config.pcm == SYNTHETIC {
        Box::new(SyntheticAudio::new())
    } else {
        Box::new(AlsaCapture::open(&config.pcm)?)
    };
    Ok(Box::new(Processed::new(raw, config.denoise, config.gain_db)?))
}
