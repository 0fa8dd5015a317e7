//! H.264 passthrough through the daemon's camera step ([`CameraPipeline`]): a camera that
//! encodes H.264 itself (the synthetic H.264 camera: the test pattern encoded with openh264,
//! SPS/PPS sent once, an IDR every `gop` frames) stands where a UVC H.264 camera would.
//! What a receiver gets must start decoding at every keyframe, and keyframe requests (a new
//! subscriber, PLI/FIR) must reach the camera.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use keksbox_peer::convert::nal_units;
use keksbox_peer::daemon::CameraPipeline;
use keksbox_peer::source::{DeviceError, VideoData, VideoFrame, VideoMode, VideoSource};
use keksbox_peer::synthetic::{SyntheticH264, render_pattern};
use openh264::formats::YUVSource as _;

const MODE: VideoMode = VideoMode {
    width: 320,
    height: 240,
    fps: 30,
};

/// The test pattern on a simulated clock: no waiting; frame `n` is captured at `at(n)`.
struct Pattern {
    index: u64,
    start: Instant,
    at: fn(u64) -> Duration,
}

const PERIOD: Duration = Duration::from_nanos(1_000_000_000 / 30);

/// A camera on time: every 33.3 ms.
fn on_time(n: u64) -> Duration {
    PERIOD * n as u32
}

impl VideoSource for Pattern {
    fn mode(&self) -> VideoMode {
        MODE
    }

    fn next_frame(&mut self) -> Result<VideoFrame, DeviceError> {
        let at = (self.at)(self.index);
        self.index += 1;
        Ok(VideoFrame {
            width: MODE.width,
            height: MODE.height,
            data: VideoData::I420(render_pattern(MODE.width, MODE.height, self.index, at)),
            captured: self.start + at,
            keyframe: true,
        })
    }
}

fn camera(gop: u32, forced_keyframes: bool) -> SyntheticH264 {
    camera_at(gop, forced_keyframes, on_time)
}

fn camera_at(gop: u32, forced_keyframes: bool, at: fn(u64) -> Duration) -> SyntheticH264 {
    let raw = Pattern {
        index: 0,
        start: Instant::now(),
        at,
    };
    SyntheticH264::new(Box::new(raw), 500, gop, forced_keyframes).unwrap()
}

/// One frame's outcome: its index, and the NAL unit types and keyframe flag of what was sent.
#[derive(Debug)]
struct Sent {
    frame: usize,
    types: Vec<u8>,
    keyframe: bool,
    data: Vec<u8>,
    duration: Duration,
    captured: Instant,
}

/// Runs `frames` frames through the pipeline; watched from `watch_from` on; a keyframe request
/// before each frame in `requests` (the pump asks when a subscriber starts, PLI/FIR later).
fn run(cam: &mut SyntheticH264, frames: usize, watch_from: usize, requests: &[usize]) -> Vec<Sent> {
    let mut pipeline = CameraPipeline::new(MODE, 500, Duration::from_secs(10)).unwrap();
    let mut sent = Vec::new();
    for i in 0..frames {
        let frame = cam.next_frame().unwrap();
        let out = pipeline
            .process(cam, frame, i >= watch_from, requests.contains(&i))
            .unwrap();
        if let Some(s) = out {
            sent.push(Sent {
                frame: i,
                types: nal_units(&s.data).map(|n| n[0] & 0x1f).collect(),
                keyframe: s.keyframe,
                data: s.data.to_vec(),
                duration: s.duration,
                captured: s.captured,
            });
        }
    }
    sent
}

/// Every keyframe starts with SPS and PPS and holds an IDR; nothing else holds an IDR.
fn assert_keyframes_self_contained(sent: &[Sent]) {
    for s in sent {
        assert_eq!(s.keyframe, s.types.contains(&5), "frame {}: {:?}", s.frame, s.types);
        if s.keyframe {
            assert!(
                s.types.starts_with(&[7, 8]),
                "frame {}: SPS and PPS first: {:?}",
                s.frame,
                s.types
            );
        }
    }
}

/// Decodes what a receiver gets from its first keyframe on, as a fresh decoder would.
fn decoded_from_first_keyframe(sent: &[Sent]) -> (usize, usize) {
    let mut decoder = openh264::decoder::Decoder::new().unwrap();
    let from = sent.iter().position(|s| s.keyframe).expect("a keyframe");
    let mut decoded = 0;
    for s in &sent[from..] {
        if let Ok(Some(pic)) = decoder.decode(&s.data) {
            assert_eq!(pic.dimensions(), (MODE.width as usize, MODE.height as usize));
            decoded += 1;
        }
    }
    (decoded, sent.len() - from)
}

#[test]
fn passthrough_keyframes_carry_sps_and_pps_and_requests_reach_the_camera() {
    // An IDR every 30 frames from the camera, SPS/PPS with the first only. Nobody watches
    // frames 0-9; a subscriber starts at 10 (its pump asks for a keyframe), PLIs at 43 and 71.
    let mut cam = camera(30, true);
    let sent = run(&mut cam, 100, 10, &[10, 43, 71]);
    assert_eq!(
        sent.first().map(|s| s.frame),
        Some(10),
        "nothing is sent while nobody watches"
    );
    assert_keyframes_self_contained(&sent);
    let keyframes: Vec<usize> = sent.iter().filter(|s| s.keyframe).map(|s| s.frame).collect();
    // Each request is passed to the camera after the frame it came with, so the next frame is
    // an IDR; the camera's own period restarts at each IDR (11 + 30 = 41).
    assert_eq!(keyframes, [11, 41, 44, 72], "{sent:?}");
    let (decoded, from_key) = decoded_from_first_keyframe(&sent);
    assert_eq!(decoded, from_key, "every frame from the first keyframe on decodes");
}

#[test]
fn a_camera_that_ignores_requests_gives_its_next_periodic_keyframe_with_sps_and_pps() {
    // Cameras without FORCE_KEY_FRAME: a new subscriber at frame 10 waits for the camera's
    // IDR at 30 (the pump drops what comes before it); that one still carries SPS and PPS.
    let mut cam = camera(30, false);
    let sent = run(&mut cam, 70, 10, &[10, 35]);
    assert_keyframes_self_contained(&sent);
    let keyframes: Vec<usize> = sent.iter().filter(|s| s.keyframe).map(|s| s.frame).collect();
    assert_eq!(keyframes, [30, 60], "{sent:?}");
    let (decoded, from_key) = decoded_from_first_keyframe(&sent);
    assert_eq!(decoded, from_key);
}

/// The RTP time of each sample sent (the durations of those before it), against the capture
/// time of each, both from the first sample.
fn rtp_and_capture_times(sent: &[Sent]) -> Vec<(Duration, Duration)> {
    let mut rtp = Duration::ZERO;
    sent.iter()
        .map(|s| {
            let t = (rtp, s.captured - sent[0].captured);
            rtp += s.duration;
            t
        })
        .collect()
}

#[test]
fn rtp_time_stays_smooth_under_jitter_and_follows_the_capture_clock_after_a_stall() {
    // Capture times jittering by up to 10 ms (a busy machine): RTP time is the frame period
    // per sample, as smooth as the camera is meant to be.
    fn jittery(n: u64) -> Duration {
        on_time(n) + Duration::from_millis([0, 10, 3, 7, 0, 9][n as usize % 6])
    }
    let sent = run(&mut camera_at(30, true, jittery), 40, 5, &[5]);
    assert!(
        sent.iter().all(|s| s.duration == PERIOD),
        "{:?}",
        sent.iter().map(|s| s.duration).collect::<Vec<_>>()
    );

    // 250 ms lost before frame 20 (frames a loaded machine skipped): the sample at 20 is late
    // in RTP time, and from the next one on RTP time is capture time again (before this fix
    // it stayed 250 ms behind for good).
    fn stall(n: u64) -> Duration {
        on_time(n)
            + if n >= 20 {
                Duration::from_millis(250)
            } else {
                Duration::ZERO
            }
    }
    let sent = run(&mut camera_at(30, true, stall), 40, 5, &[5]);
    let times = rtp_and_capture_times(&sent);
    for (s, (rtp, captured)) in sent.iter().zip(&times) {
        match s.frame {
            20 => assert_eq!(*captured - *rtp, Duration::from_millis(250)),
            _ => assert_eq!(rtp, captured, "frame {}", s.frame),
        }
    }

    // A camera at half its mode's rate (low light): RTP time keeps pace with it, each sample at
    // most a frame period early (the correction lands on the sample after); with a fixed period
    // per sample it would be 29 periods (almost 1 s) behind after 30 frames.
    fn half_rate(n: u64) -> Duration {
        on_time(2 * n)
    }
    let sent = run(&mut camera_at(30, true, half_rate), 30, 0, &[0]);
    for (s, (rtp, captured)) in sent.iter().zip(rtp_and_capture_times(&sent)) {
        assert!(
            captured.abs_diff(rtp) <= PERIOD,
            "frame {}: RTP {rtp:?}, captured {captured:?}",
            s.frame
        );
    }
}
