//! V4L2 cameras: the configured device or the first capture device, the mode closest to the
//! configured size and rate, frames as H.264 (passed through) or converted to I420.
//!
//! Format preference, when several modes are equally close: H.264 (no encoding needed, if
//! passthrough is on), then I420 (no conversion), YUYV (cheap conversion), MJPEG (a JPEG decode
//! per frame). The config can force one of them. Buffers are memory-mapped (4 of them), read
//! with a timeout so a stalled camera is noticed.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use v4l::buffer::{Flags as BufferFlags, Type};
use v4l::capability::Flags as CapFlags;
use v4l::control::{Control, Value};
use v4l::device::Device;
use v4l::format::{Format, FourCC};
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::video::capture::Parameters;

use crate::convert::{H264Passthrough, i420_len, i420_unpad, mjpeg_to_i420, yuyv_to_i420};
use crate::source::{DeviceError, VideoData, VideoFrame, VideoMode, VideoSource};

/// A frame must arrive within this long, or the camera is taken as stalled.
const FRAME_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest picture we accept: what a Pi can encode.
const MAX_WIDTH: u32 = 1920;
const MAX_HEIGHT: u32 = 1080;
/// Bound on the modes we consider (stepwise sizes can describe thousands).
const MAX_SIZES_PER_FORMAT: usize = 64;
/// V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME: codec class base 0x00990900 + 229.
const CID_FORCE_KEY_FRAME: u32 = 0x0099_09e5;

const ENOENT: i32 = 2;
const ENXIO: i32 = 6;
const EACCES: i32 = 13;
const EBUSY: i32 = 16;
const ENODEV: i32 = 19;
const EINVAL: i32 = 22;
const ENOTTY: i32 = 25;

/// The pixel formats we can use, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PixelFormat {
    H264,
    I420,
    Yuyv,
    Mjpeg,
}

impl PixelFormat {
    fn fourcc(self) -> FourCC {
        FourCC::new(match self {
            Self::H264 => b"H264",
            Self::I420 => b"YU12",
            Self::Yuyv => b"YUYV",
            Self::Mjpeg => b"MJPG",
        })
    }

    fn from_fourcc(f: FourCC) -> Option<Self> {
        match &f.repr {
            b"H264" => Some(Self::H264),
            b"YU12" => Some(Self::I420),
            b"YUYV" => Some(Self::Yuyv),
            b"MJPG" | b"JPEG" => Some(Self::Mjpeg),
            _ => None,
        }
    }

    /// Parses the config's `format` key (`auto` is `None`).
    pub fn parse(s: &str) -> Result<Option<Self>, DeviceError> {
        Ok(Some(match s.to_ascii_lowercase().as_str() {
            "" | "auto" => return Ok(None),
            "h264" => Self::H264,
            "i420" | "yu12" => Self::I420,
            "yuyv" => Self::Yuyv,
            "mjpeg" | "mjpg" => Self::Mjpeg,
            _ => {
                return Err(DeviceError::Format(format!(
                    "unknown camera format {s:?} (use auto, h264, i420, yuyv or mjpeg)"
                )));
            }
        }))
    }
}

/// What [`V4l2Camera::open`] is asked for.
#[derive(Debug, Clone)]
pub struct CameraRequest {
    /// A device path; `None` for the first capture device.
    pub device: Option<PathBuf>,
    pub mode: VideoMode,
    /// Take H.264 from the camera when offered.
    pub h264_passthrough: bool,
    /// Only this format (else the best available).
    pub format: Option<PixelFormat>,
}

/// An open, streaming camera.
pub struct V4l2Camera {
    path: PathBuf,
    device: Device,
    /// The mmap stream; holds its own handle on the device file.
    stream: Stream<'static>,
    mode: VideoMode,
    format: PixelFormat,
    /// Bytes per row as the driver lays them out (raw formats).
    stride: usize,
    h264: H264Passthrough,
}

impl std::fmt::Debug for V4l2Camera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Camera")
            .field("path", &self.path)
            .field("mode", &self.mode)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl V4l2Camera {
    /// Opens the camera and negotiates the mode closest to the request.
    pub fn open(req: &CameraRequest) -> Result<Self, DeviceError> {
        let path = match &req.device {
            Some(p) => p.clone(),
            None => first_capture_device()?,
        };
        let device = open_capture_device(&path)?;
        let shown = path.display().to_string();

        let modes = candidate_modes(&device, req, &shown)?;
        let best = choose_mode(&modes, req.mode).ok_or_else(|| {
            DeviceError::Format(format!(
                "{shown}: the camera offers no usable format (H.264, I420, YUYV or MJPEG{})",
                match req.format {
                    Some(f) => format!("; only {f:?} was allowed by the config"),
                    None => String::new(),
                }
            ))
        })?;

        let want = Format::new(best.width, best.height, best.format.fourcc());
        let got = device
            .set_format(&want)
            .map_err(|e| io_error(&shown, "cannot set the format", &e))?;
        let format = PixelFormat::from_fourcc(got.fourcc).ok_or_else(|| {
            DeviceError::Format(format!(
                "{shown}: asked for {:?}, the driver chose {}",
                best.format, got.fourcc
            ))
        })?;
        if got.width == 0 || got.height == 0 || got.width > MAX_WIDTH || got.height > MAX_HEIGHT {
            return Err(DeviceError::Format(format!(
                "{shown}: the driver chose {}x{}, outside 1x1..{MAX_WIDTH}x{MAX_HEIGHT}",
                got.width, got.height
            )));
        }
        let fps = match device.set_params(&Parameters::with_fps(best.fps.max(1))) {
            Ok(p) if p.interval.numerator > 0 => p.interval.denominator / p.interval.numerator,
            Ok(_) => best.fps,
            // Some drivers have no frame-rate control: they run at their own rate.
            Err(e) => {
                log::debug!("{shown}: cannot set the frame rate: {e}");
                best.fps
            }
        };
        let mut stream = Stream::with_buffers(&device, Type::VideoCapture, 4)
            .map_err(|e| io_error(&shown, "cannot map capture buffers", &e))?;
        stream.set_timeout(FRAME_TIMEOUT);
        let mode = VideoMode {
            width: got.width,
            height: got.height,
            fps,
        };
        log::info!(
            "camera: {shown}: {format:?} {}x{} at {fps} fps (asked {}x{} at {})",
            mode.width,
            mode.height,
            req.mode.width,
            req.mode.height,
            req.mode.fps
        );
        Ok(Self {
            path,
            device,
            stream,
            mode,
            format,
            stride: got.stride as usize,
            h264: H264Passthrough::default(),
        })
    }

    /// The pixel format in use.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// The device node in use.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets a control by id (tests use vivid's controls; see the VM test).
    pub fn set_control(&self, id: u32, value: i64) -> Result<(), DeviceError> {
        self.device
            .set_control(Control {
                id,
                value: Value::Integer(value),
            })
            .map_err(|e| io_error(&self.path.display().to_string(), "cannot set control", &e))
    }
}

impl VideoSource for V4l2Camera {
    fn mode(&self) -> VideoMode {
        self.mode
    }

    fn next_frame(&mut self) -> Result<VideoFrame, DeviceError> {
        let shown = self.path.display().to_string();
        // Bounded: a camera that only ever delivers broken buffers is an error.
        for _ in 0..30 {
            let (buf, meta) = self.stream.next().map_err(|e| io_error(&shown, "capture failed", &e))?;
            let captured = Instant::now();
            if meta.flags.contains(BufferFlags::ERROR) {
                log::debug!("{shown}: the driver marked a frame as broken; skipping it");
                continue;
            }
            let used = match meta.bytesused as usize {
                0 => buf.len(),
                n => n.min(buf.len()),
            };
            let data = &buf[..used];
            let (w, h) = (self.mode.width, self.mode.height);
            let (data, keyframe) = match self.format {
                PixelFormat::H264 => {
                    let (au, key) = self.h264.process(data)?;
                    (VideoData::H264(au), key)
                }
                PixelFormat::I420 => {
                    let stride = self.stride.max(w as usize);
                    let out = if stride == w as usize && data.len() >= i420_len(w, h) {
                        data[..i420_len(w, h)].to_vec()
                    } else {
                        i420_unpad(data, w, h, stride)?
                    };
                    (VideoData::I420(out), true)
                }
                PixelFormat::Yuyv => (
                    VideoData::I420(yuyv_to_i420(data, w, h, self.stride.max(2 * w as usize))?),
                    true,
                ),
                PixelFormat::Mjpeg => match mjpeg_to_i420(data, w, h) {
                    Ok(i420) => (VideoData::I420(i420), true),
                    // USB cameras send a truncated JPEG now and then: skip it.
                    Err(e) => {
                        log::debug!("{shown}: {e}; skipping the frame");
                        continue;
                    }
                },
            };
            return Ok(VideoFrame {
                width: w,
                height: h,
                data,
                captured,
                keyframe,
            });
        }
        Err(DeviceError::Format(format!("{shown}: 30 broken frames in a row")))
    }

    fn request_keyframe(&mut self) {
        if self.format != PixelFormat::H264 {
            return;
        }
        // Cameras that encode H.264 themselves may not support this; their next periodic
        // keyframe then does.
        if let Err(e) = self.device.set_control(Control {
            id: CID_FORCE_KEY_FRAME,
            value: Value::None,
        }) {
            log::debug!("{}: cannot force a keyframe: {e}", self.path.display());
        }
    }
}

/// The first `/dev/videoN` (lowest N) that is a video capture device.
pub fn first_capture_device() -> Result<PathBuf, DeviceError> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .map_err(|e| DeviceError::Io(format!("cannot list /dev: {e}")))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix("video")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    for (_, path) in &nodes {
        if open_capture_device(path).is_ok() {
            return Ok(path.clone());
        }
    }
    Err(DeviceError::Missing(format!(
        "no camera found ({} /dev/video* nodes, none a capture device); plug one in or set \
         device = \"synthetic\"",
        nodes.len()
    )))
}

/// Opens `path` and checks it is a single-planar video capture device with streaming.
fn open_capture_device(path: &Path) -> Result<Device, DeviceError> {
    let shown = path.display().to_string();
    let device = Device::with_path(path).map_err(|e| io_error(&shown, "cannot open", &e))?;
    let caps = device.query_caps().map_err(|e| match e.raw_os_error() {
        Some(ENOTTY) | Some(EINVAL) => DeviceError::NotACamera(format!(
            "{shown} is not a video4linux device; set device to a camera such as /dev/video0"
        )),
        _ => io_error(&shown, "cannot query capabilities", &e),
    })?;
    if !caps.capabilities.contains(CapFlags::VIDEO_CAPTURE)
        || !caps.capabilities.contains(CapFlags::STREAMING)
        || caps.capabilities.contains(CapFlags::VIDEO_M2M)
    {
        return Err(DeviceError::NotACamera(format!(
            "{shown} ({}, driver {}) is not a video capture device (a camera often has a \
             second node for metadata: try the other /dev/video*)",
            caps.card, caps.driver
        )));
    }
    Ok(device)
}

/// One mode a camera offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// Lists the usable modes, with the frame rate closest to the request for each size.
fn candidate_modes(device: &Device, req: &CameraRequest, shown: &str) -> Result<Vec<Candidate>, DeviceError> {
    let formats = device
        .enum_formats()
        .map_err(|e| io_error(shown, "cannot list formats", &e))?;
    let mut out = Vec::new();
    for desc in formats {
        let Some(format) = PixelFormat::from_fourcc(desc.fourcc) else {
            continue;
        };
        if (format == PixelFormat::H264 && !req.h264_passthrough) || req.format.is_some_and(|f| f != format) {
            continue;
        }
        let sizes: Vec<(u32, u32)> = match device.enum_framesizes(desc.fourcc) {
            Ok(sizes) if !sizes.is_empty() => sizes
                .into_iter()
                .flat_map(|s| match s.size {
                    FrameSizeEnum::Discrete(d) => vec![(d.width, d.height)],
                    FrameSizeEnum::Stepwise(s) => vec![(
                        fit_step(req.mode.width, s.min_width, s.max_width, s.step_width),
                        fit_step(req.mode.height, s.min_height, s.max_height, s.step_height),
                    )],
                })
                .filter(|&(w, h)| w > 0 && h > 0 && w <= MAX_WIDTH && h <= MAX_HEIGHT)
                .take(MAX_SIZES_PER_FORMAT)
                .collect(),
            // No size list: let the driver adjust the requested size.
            _ => vec![(req.mode.width, req.mode.height)],
        };
        for (width, height) in sizes {
            let rates: Vec<u32> = device
                .enum_frameintervals(desc.fourcc, width, height)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| match i.interval {
                    FrameIntervalEnum::Discrete(f) => fps_of(f.numerator, f.denominator),
                    FrameIntervalEnum::Stepwise(s) => {
                        let fast = fps_of(s.min.numerator, s.min.denominator)?;
                        let slow = fps_of(s.max.numerator, s.max.denominator).unwrap_or(1);
                        Some(req.mode.fps.clamp(slow.min(fast), fast))
                    }
                })
                .collect();
            let fps = rates
                .into_iter()
                .min_by_key(|&f| f.abs_diff(req.mode.fps))
                .unwrap_or(req.mode.fps);
            out.push(Candidate {
                format,
                width,
                height,
                fps,
            });
        }
    }
    Ok(out)
}

/// Picks the closest mode: nearest size first, then nearest rate, then the better format.
pub fn choose_mode(modes: &[Candidate], want: VideoMode) -> Option<Candidate> {
    modes.iter().copied().min_by_key(|c| {
        (
            c.width.abs_diff(want.width) + c.height.abs_diff(want.height),
            c.fps.abs_diff(want.fps),
            c.format,
        )
    })
}

fn fps_of(numerator: u32, denominator: u32) -> Option<u32> {
    (numerator > 0).then(|| (denominator + numerator / 2) / numerator)
}

/// The allowed value nearest to `want` in `min..=max` by `step`.
fn fit_step(want: u32, min: u32, max: u32, step: u32) -> u32 {
    let v = want.clamp(min, max.max(min));
    match step {
        0 | 1 => v,
        s => min + (v - min + s / 2) / s * s,
    }
    .min(max.max(min))
}

/// Maps an I/O error from the device to a [`DeviceError`] that says what to check.
fn io_error(shown: &str, what: &str, e: &io::Error) -> DeviceError {
    match e.raw_os_error() {
        Some(ENOENT) => DeviceError::Missing(format!(
            "{shown} does not exist; plug the camera in, or set device to another /dev/video*"
        )),
        Some(ENODEV) | Some(ENXIO) => {
            DeviceError::Unplugged(format!("{shown} went away ({what}: {e}); waiting for it to come back"))
        }
        Some(EBUSY) => DeviceError::Busy(format!("{shown} is in use by another program ({what}); stop it")),
        Some(EACCES) => DeviceError::Io(format!(
            "{shown}: permission denied; run as a member of the video group"
        )),
        _ if e.kind() == io::ErrorKind::TimedOut => DeviceError::Io(format!(
            "{shown}: no frame for {} s; the camera stalled",
            FRAME_TIMEOUT.as_secs()
        )),
        _ => DeviceError::Io(format!("{shown}: {what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(format: PixelFormat, width: u32, height: u32, fps: u32) -> Candidate {
        Candidate {
            format,
            width,
            height,
            fps,
        }
    }

    #[test]
    fn closest_mode_prefers_size_then_rate_then_format() {
        let want = VideoMode {
            width: 640,
            height: 480,
            fps: 30,
        };
        let modes = [
            c(PixelFormat::Yuyv, 1280, 720, 10),
            c(PixelFormat::Yuyv, 640, 480, 15),
            c(PixelFormat::Mjpeg, 640, 480, 30),
            c(PixelFormat::Mjpeg, 320, 240, 30),
        ];
        assert_eq!(choose_mode(&modes, want), Some(modes[2]));
        let modes = [
            c(PixelFormat::Mjpeg, 640, 480, 30),
            c(PixelFormat::H264, 640, 480, 30),
            c(PixelFormat::Yuyv, 640, 480, 30),
        ];
        assert_eq!(choose_mode(&modes, want), Some(modes[1]));
        assert_eq!(choose_mode(&[], want), None);
    }

    #[test]
    fn stepwise_sizes_snap_to_the_step() {
        assert_eq!(fit_step(641, 16, 1920, 8), 640);
        assert_eq!(fit_step(10, 16, 1920, 8), 16);
        assert_eq!(fit_step(5000, 16, 1920, 8), 1920);
        assert_eq!(fit_step(300, 100, 200, 0), 200);
    }

    #[test]
    fn format_names_parse() {
        assert_eq!(PixelFormat::parse("auto"), Ok(None));
        assert_eq!(PixelFormat::parse("MJPEG"), Ok(Some(PixelFormat::Mjpeg)));
        let err = PixelFormat::parse("rgb").expect_err("unknown");
        assert!(err.to_string().contains("auto, h264"), "{err}");
    }
}
