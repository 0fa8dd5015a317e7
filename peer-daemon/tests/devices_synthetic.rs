//! The synthetic camera and microphone through the public seam (`open_video`/`open_audio`).

use std::time::{Duration, Instant};

use keksbox_peer::source::{AUDIO_FRAME, AudioConfig, VideoConfig, VideoData, VideoMode, open_audio, open_video};

fn synthetic_video(width: u32, height: u32, fps: u32) -> VideoConfig {
    VideoConfig {
        device: "synthetic".into(),
        width,
        height,
        fps,
        ..VideoConfig::default()
    }
}

#[test]
fn frames_have_the_asked_size_and_change_over_time() {
    let mut cam = open_video(&synthetic_video(320, 180, 30)).expect("synthetic camera");
    assert_eq!(
        cam.mode(),
        VideoMode {
            width: 320,
            height: 180,
            fps: 30
        }
    );
    let mut frames = Vec::new();
    for _ in 0..4 {
        let f = cam.next_frame().expect("frame");
        assert_eq!((f.width, f.height), (320, 180));
        assert!(f.keyframe);
        let VideoData::I420(data) = f.data else {
            panic!("synthetic video must be I420");
        };
        assert_eq!(data.len(), 320 * 180 + 2 * 160 * 90);
        frames.push(data);
    }
    for pair in frames.windows(2) {
        let changed = pair[0].iter().zip(&pair[1]).filter(|(a, b)| a != b).count();
        assert!(changed > 100, "consecutive frames differ in {changed} bytes only");
    }
}

#[test]
fn video_is_paced_in_real_time() {
    let mut cam = open_video(&synthetic_video(64, 48, 50)).expect("synthetic camera");
    cam.next_frame().expect("first frame");
    let start = Instant::now();
    for _ in 0..10 {
        cam.next_frame().expect("frame");
    }
    // 10 frames at 50 fps are due over 200 ms; they may be late on a loaded machine, never early.
    assert!(start.elapsed() >= Duration::from_millis(190), "{:?}", start.elapsed());
}

#[test]
fn audio_is_a_tone_with_level_and_paced_at_10_ms() {
    let mut mic = open_audio(&AudioConfig {
        pcm: "synthetic".into(),
        denoise: false,
        gain_db: 0.0,
    })
    .expect("synthetic microphone");
    let mut buf = [0i16; AUDIO_FRAME];
    mic.read_frame(&mut buf).expect("first frame");
    let start = Instant::now();
    let mut samples = Vec::new();
    for _ in 0..20 {
        mic.read_frame(&mut buf).expect("frame");
        samples.extend_from_slice(&buf);
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(195), "20 frames in {took:?}");

    let rms = (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt();
    // Partials 5000/h for h = 1..12: RMS 5000 * sqrt(sum(1/h^2) / 2) = 4423; the noise adds a
    // little.
    assert!((4200.0..4700.0).contains(&rms), "rms {rms}");
    // The energy is at 220 Hz and its overtones, not between them.
    let tone = goertzel_power(&samples, 220.0);
    let overtone = goertzel_power(&samples, 660.0);
    let off = goertzel_power(&samples, 330.0);
    assert!(tone > 100.0 * off, "220 Hz {tone} vs 330 Hz {off}");
    assert!(overtone > 100.0 * off, "660 Hz {overtone} vs 330 Hz {off}");
}

/// Power of one frequency in `samples` (48 kHz).
fn goertzel_power(samples: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / 48_000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}
