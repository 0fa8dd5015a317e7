//! `keksbox-peer`: the meeting room's camera and microphone as a keks-meet participant.
//!
//! # Layout
//! - [`source`]: the device seam. [`source::VideoSource`] and [`source::AudioSource`] are
//!   blocking sources, each run on its own thread; cameras (V4L2), microphones (ALSA) and the
//!   synthetic test pattern and tone all sit behind them. [`source::open_video`] and
//!   [`source::open_audio`] turn the config into a source.
//! - [`config`]: `peer.toml` and the room secret (file or systemd credential).
//! - [`encode`]: H.264 (openh264) and Opus encoders.
//! - [`daemon`]: device threads, the room, device loss and return, leaving summoned rooms.
//! - [`summon`]: the local socket keksbox hands invitations to.
//! - [`synthetic`]: the moving test pattern with a clock, and the tone with noise (CI, demos).
//! - [`alsa_capture`]: microphones through ALSA (48 kHz mono, 10 ms frames).
//! - [`denoise`]: RNNoise and gain, wrapped around any audio source.
//! - [`v4l2`]: cameras through video4linux (mode negotiation, H.264 passthrough, MJPEG/YUYV).
//! - [`convert`]: YUYV, padded I420 and MJPEG to I420; SPS/PPS before H.264 keyframes.

pub mod alsa_capture;
pub mod config;
pub mod convert;
pub mod daemon;
pub mod denoise;
pub mod encode;
pub mod source;
pub mod summon;
pub mod synthetic;
pub mod v4l2;
