//! Encoders: I420 pictures to H.264 constrained baseline (openh264), 10 ms PCM frames to
//! 20 ms Opus packets. Both run on the source's own thread and return [`MediaSample`]s for
//! a [`keks_client::TrackFeed`].

use std::time::{Duration, Instant};

use bytes::Bytes;
use keks_client::MediaSample;
use openh264::OpenH264API;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level, Profile};
use openh264::formats::YUVSlices;

use crate::source::{AUDIO_FRAME, AUDIO_RATE, VideoFrame, VideoMode};

/// Why a frame could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoder could not be set up for this mode.
    #[error("cannot start the H.264 encoder for {width}x{height}: {message}")]
    Setup { width: u32, height: u32, message: String },
    /// A picture of another size than the encoder's, or with too few bytes.
    #[error("a {got} picture does not fit the {want} encoder")]
    Size { got: String, want: String },
    /// openh264 refused the picture.
    #[error("H.264 encoding failed: {0}")]
    H264(String),
    /// libopus refused.
    #[error("Opus: {0}")]
    Opus(String),
}

/// I420 to H.264 constrained baseline, Annex-B, SPS and PPS before every IDR.
pub struct H264Encoder {
    encoder: Encoder,
    mode: VideoMode,
    frame: Duration,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl H264Encoder {
    /// An encoder for pictures of `mode` at `bitrate_kbps`, with an IDR at least every
    /// `keyframe_interval` (and whenever [`H264Encoder::encode`] is told to).
    pub fn new(mode: VideoMode, bitrate_kbps: u32, keyframe_interval: Duration) -> Result<H264Encoder, EncodeError> {
        let fps = mode.fps.max(1);
        let period = (keyframe_interval.as_secs_f32() * fps as f32).round().max(1.0) as u32;
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate_kbps.saturating_mul(1000)))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .profile(Profile::Baseline)
            // Level 3.1, what the track announces (profile-level-id 42e01f): up to 1280x720@30.
            .level(Level::Level_3_1)
            .intra_frame_period(IntraFramePeriod::from_num_frames(period))
            // No skipped pictures: a receiver counts gaps as freezes. Quality mode then holds
            // the bitrate only roughly (openh264 says so once on start).
            .skip_frames(false)
            // One thread: the daemon has other work, and a Pi has few cores.
            .num_threads(1);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| EncodeError::Setup {
            width: mode.width,
            height: mode.height,
            message: e.to_string(),
        })?;
        Ok(H264Encoder {
            encoder,
            mode,
            frame: Duration::from_secs(1) / fps,
        })
    }

    /// Encodes one I420 picture; an IDR (with SPS and PPS) when `keyframe`. `None` when the
    /// encoder produced nothing for this picture.
    pub fn encode(
        &mut self,
        frame: &VideoFrame,
        i420: &[u8],
        keyframe: bool,
    ) -> Result<Option<MediaSample>, EncodeError> {
        let (w, h) = (self.mode.width as usize, self.mode.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        if frame.width != self.mode.width || frame.height != self.mode.height || i420.len() < w * h + 2 * cw * ch {
            return Err(EncodeError::Size {
                got: format!("{}x{} ({} bytes)", frame.width, frame.height, i420.len()),
                want: format!("{w}x{h}"),
            });
        }
        let (y, rest) = i420.split_at(w * h);
        let (u, v) = rest.split_at(cw * ch);
        let yuv = YUVSlices::new((y, u, &v[..cw * ch]), (w, h), (w, cw, cw));
        if keyframe {
            self.encoder.force_intra_frame();
        }
        let stream = self
            .encoder
            .encode(&yuv)
            .map_err(|e| EncodeError::H264(e.to_string()))?;
        let idr = matches!(stream.frame_type(), FrameType::IDR);
        if matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        let data = stream.to_vec();
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(MediaSample {
            data: Bytes::from(data),
            duration: self.frame,
            keyframe: idr,
            captured: frame.captured,
        }))
    }
}

/// Opus frames are 20 ms: two 10 ms source frames.
const OPUS_FRAME: usize = 2 * AUDIO_FRAME;
/// Largest Opus packet we write (RFC 6716 allows 1275 bytes per frame).
const MAX_OPUS_PACKET: usize = 1500;

/// 48 kHz mono PCM to 20 ms Opus packets.
pub struct OpusEncoder {
    encoder: opus::Encoder,
    pending: Vec<i16>,
    first: Option<Instant>,
    out: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// A voice encoder at `bitrate_kbps`.
    pub fn new(bitrate_kbps: u32) -> Result<OpusEncoder, EncodeError> {
        let mut encoder = opus::Encoder::new(AUDIO_RATE, opus::Channels::Mono, opus::Application::Voip)
            .map_err(|e| EncodeError::Opus(e.to_string()))?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(bitrate_kbps.saturating_mul(1000) as i32))
            .map_err(|e| EncodeError::Opus(e.to_string()))?;
        // In-band FEC, as announced in the track's fmtp (useinbandfec=1).
        encoder
            .set_inband_fec(true)
            .map_err(|e| EncodeError::Opus(e.to_string()))?;
        Ok(OpusEncoder {
            encoder,
            pending: Vec::with_capacity(OPUS_FRAME),
            first: None,
            out: vec![0; MAX_OPUS_PACKET],
        })
    }

    /// Adds 10 ms of audio captured at `captured`; every second call returns a 20 ms packet.
    pub fn push(&mut self, pcm: &[i16; AUDIO_FRAME], captured: Instant) -> Result<Option<MediaSample>, EncodeError> {
        if self.pending.is_empty() {
            self.first = Some(captured);
        }
        self.pending.extend_from_slice(pcm);
        if self.pending.len() < OPUS_FRAME {
            return Ok(None);
        }
        let n = self
            .encoder
            .encode(&self.pending, &mut self.out)
            .map_err(|e| EncodeError::Opus(e.to_string()))?;
        self.pending.clear();
        Ok(Some(MediaSample {
            data: Bytes::copy_from_slice(&self.out[..n]),
            duration: Duration::from_millis(20),
            keyframe: true,
            captured: self.first.take().unwrap_or(captured),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{VideoData, VideoSource};
    use crate::synthetic::SyntheticVideo;

    fn nal_types(au: &[u8]) -> Vec<u8> {
        let mut types = Vec::new();
        let mut i = 0;
        while i + 3 < au.len() {
            if au[i..i + 3] == [0, 0, 1] {
                types.push(au[i + 3] & 0x1f);
                i += 3;
            } else {
                i += 1;
            }
        }
        types
    }

    #[test]
    fn h264_keyframes_carry_sps_and_pps_and_decode() {
        let mode = VideoMode {
            width: 320,
            height: 240,
            fps: 30,
        };
        let mut source = SyntheticVideo::new(mode).expect("synthetic");
        let mut enc = H264Encoder::new(mode, 500, Duration::from_secs(10)).expect("encoder");
        let mut decoder = openh264::decoder::Decoder::new().expect("decoder");
        let mut decoded = 0;
        let mut keyframes = 0;
        for i in 0..12 {
            let frame = source.next_frame().expect("frame");
            let VideoData::I420(pixels) = &frame.data else {
                panic!("synthetic video is I420")
            };
            let sample = enc
                .encode(&frame, pixels, i == 0 || i == 6)
                .expect("encode")
                .expect("a picture");
            let types = nal_types(&sample.data);
            if sample.keyframe {
                keyframes += 1;
                assert_eq!(&types[..2], &[7, 8], "SPS and PPS first: {types:?}");
                assert!(types.contains(&5), "an IDR slice: {types:?}");
            } else {
                assert!(!types.contains(&5), "no IDR unless asked: {types:?}");
            }
            if let Ok(Some(pic)) = decoder.decode(&sample.data) {
                use openh264::formats::YUVSource as _;
                assert_eq!(pic.dimensions(), (320, 240));
                decoded += 1;
            }
        }
        assert_eq!(keyframes, 2, "the forced keyframes");
        assert!(decoded >= 10, "decoded {decoded} of 12");
    }

    #[test]
    fn a_picture_of_the_wrong_size_is_an_error() {
        let mode = VideoMode {
            width: 64,
            height: 48,
            fps: 30,
        };
        let mut enc = H264Encoder::new(mode, 100, Duration::from_secs(1)).expect("encoder");
        let frame = VideoFrame {
            width: 32,
            height: 48,
            data: VideoData::I420(vec![0; 32 * 48 * 3 / 2]),
            captured: Instant::now(),
            keyframe: true,
        };
        let e = enc
            .encode(&frame, &[0; 32 * 48 * 3 / 2], false)
            .expect_err("wrong size");
        assert!(e.to_string().contains("does not fit the 64x48"), "{e}");
    }

    #[test]
    fn opus_packets_are_20_ms_and_decode_to_a_tone() {
        let mut enc = OpusEncoder::new(32).expect("opus");
        let mut dec = opus::Decoder::new(AUDIO_RATE, opus::Channels::Mono).expect("decoder");
        let mut packets = 0;
        let mut energy = 0f64;
        let mut t = 0usize;
        for _ in 0..50 {
            let mut pcm = [0i16; AUDIO_FRAME];
            for s in pcm.iter_mut() {
                *s = (8000.0 * (std::f64::consts::TAU * 440.0 * t as f64 / 48_000.0).sin()) as i16;
                t += 1;
            }
            if let Some(p) = enc.push(&pcm, Instant::now()).expect("encode") {
                assert_eq!(p.duration, Duration::from_millis(20));
                assert!(p.data.len() < MAX_OPUS_PACKET);
                let mut out = [0i16; OPUS_FRAME];
                let n = dec.decode(&p.data, &mut out, false).expect("decode");
                assert_eq!(n, OPUS_FRAME);
                packets += 1;
                if packets > 5 {
                    energy += out.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / n as f64;
                }
            }
        }
        assert_eq!(packets, 25, "one packet per two frames");
        let rms = (energy / 20.0).sqrt();
        assert!(rms > 3000.0, "the tone survives: rms {rms}");
    }
}
