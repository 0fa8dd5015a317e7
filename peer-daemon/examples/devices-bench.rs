//! Device-side figures for `make bench`: RNNoise per 10 ms frame, and rendering the synthetic
//! test pattern. Run with `cargo run --release -p keksbox-peer --example devices-bench`.

use std::time::{Duration, Instant};

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
}
