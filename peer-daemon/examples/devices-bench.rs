//! Device-side figures for `make bench`: RNNoise per 10 ms frame, and rendering the synthetic
//! test pattern. Run with `cargo run --release -p keksbox-peer --example devices-bench`.

use std::time::{Duration, Instant};

use keksbox_peer::convert::{mjpeg_to_i420, yuyv_to_i420};
use keksbox_peer::denoise::denoise_signal;
use keksbox_peer::synthetic::{Tone, render_pattern};

fn main() {
    // RNNoise: 10 s of a noisy voice-like tone, one DenoiseState, 1000 frames.
    let mut tone = Tone::new(200.0, 6000.0, 4000.0, 1).with_harmonics(12);
    let mut signal = vec![0i16; 480 * 1000];
    tone.fill(&mut signal);
    denoise_signal(&signal[..480 * 50]); // warm up
    let start = Instant::now();
    let out = denoise_signal(&signal);
    let took = start.elapsed();
    std::hint::black_box(out);
    let per_frame = took.as_secs_f64() * 1e6 / 1000.0;
    println!(
        "rnnoise: {per_frame:.0} us per 10 ms frame ({:.1}% of one core in real time)",
        per_frame / 10_000.0 * 100.0
    );

    // The synthetic camera's pattern at 640x480: the cost it adds to the pipeline per frame.
    let frames = 300u64;
    let start = Instant::now();
    for i in 0..frames {
        std::hint::black_box(render_pattern(640, 480, i, Duration::from_millis(i * 33)));
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / frames as f64;
    println!("synthetic 640x480 I420 pattern: {per:.0} us per frame");

    // Camera conversions at 640x480: YUYV (packed 4:2:2) and MJPEG (4:2:2, quality 85) to I420.
    let yuyv: Vec<u8> = (0..640 * 480 * 2).map(|i| (i * 7 % 251) as u8).collect();
    let start = Instant::now();
    for _ in 0..frames {
        std::hint::black_box(yuyv_to_i420(&yuyv, 640, 480, 1280).expect("yuyv"));
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / frames as f64;
    println!("YUYV to I420 640x480: {per:.0} us per frame");

    let rgb: Vec<u8> = (0..640 * 480)
        .flat_map(|i| {
            let (x, y) = (i % 640, i / 640);
            [(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]
        })
        .collect();
    let mut jpeg = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut jpeg, 85);
    enc.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_1);
    enc.encode(&rgb, 640, 480, jpeg_encoder::ColorType::Rgb)
        .expect("encode");
    let frames = 100;
    let start = Instant::now();
    for _ in 0..frames {
        std::hint::black_box(mjpeg_to_i420(&jpeg, 640, 480).expect("mjpeg"));
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / frames as f64;
    println!(
        "MJPEG to I420 640x480 ({} kB frames): {per:.0} us per frame ({:.0}% of one core at 30 fps)",
        jpeg.len() / 1024,
        per * 30.0 / 1e6 * 100.0
    );
}
