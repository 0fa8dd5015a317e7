//! `make bench`: the share of one core the daemon's media pipeline takes in real time: the
//! synthetic camera at 640x480, 30 fps, encoded to H.264 (openh264, 1000 kbit/s), and the
//! synthetic microphone through RNNoise into 20 ms Opus packets (32 kbit/s). Both sources are
//! paced like real devices, so CPU time over wall time is the share of a core.
//! Run with `cargo run --release -p keksbox-peer --example pipeline-bench`.

use std::time::{Duration, Instant};

use keksbox_peer::encode::{H264Encoder, OpusEncoder};
use keksbox_peer::source::{AUDIO_FRAME, AudioConfig, VideoData, VideoMode, VideoSource, open_audio};
use keksbox_peer::synthetic::SyntheticVideo;

const SECONDS: u64 = 10;

fn main() {
    let (video, video_cpu) = measure(camera);
    let (audio, audio_cpu) = measure(microphone);
    let (_, both) = measure(|deadline| {
        let v = std::thread::spawn(move || camera(deadline));
        microphone(deadline);
        let _ = v.join();
        String::new()
    });
    println!(
        "keksbox-peer camera: {video} in {SECONDS} s, {:.1}% of one core",
        video_cpu * 100.0
    );
    println!(
        "keksbox-peer microphone: {audio} in {SECONDS} s, {:.1}% of one core",
        audio_cpu * 100.0
    );
    println!(
        "keksbox-peer pipeline (640x480@30 synthetic camera + microphone with RNNoise, H.264 + Opus): {:.1}% of one core (goal: at most 15%)",
        both * 100.0
    );
}

/// Runs `f` for [`SECONDS`] and returns its summary and the process's CPU time over wall time.
fn measure(f: impl FnOnce(Instant) -> String) -> (String, f64) {
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let summary = f(wall0 + Duration::from_secs(SECONDS));
    let (cpu, wall) = (cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
    (summary, cpu / wall)
}

fn camera(deadline: Instant) -> String {
    let mode = VideoMode {
        width: 640,
        height: 480,
        fps: 30,
    };
    let mut source = SyntheticVideo::new(mode).expect("synthetic camera");
    let mut encoder = H264Encoder::new(mode, 1000, Duration::from_secs(10)).expect("encoder");
    let (mut frames, mut bytes) = (0u64, 0usize);
    while Instant::now() < deadline {
        let frame = source.next_frame().expect("frame");
        let VideoData::I420(pixels) = &frame.data else {
            panic!("the synthetic camera gives I420")
        };
        if let Some(s) = encoder.encode(&frame, pixels, frames == 0).expect("encode") {
            bytes += s.data.len();
        }
        frames += 1;
    }
    format!(
        "{frames} frames, {:.0} kbit/s",
        bytes as f64 * 8.0 / 1000.0 / SECONDS as f64
    )
}

fn microphone(deadline: Instant) -> String {
    let config = AudioConfig {
        pcm: "synthetic".into(),
        denoise: true,
        gain_db: 0.0,
    };
    let mut source = open_audio(&config).expect("synthetic microphone");
    let mut encoder = OpusEncoder::new(32).expect("opus");
    let mut pcm = [0i16; AUDIO_FRAME];
    let mut packets = 0u64;
    while Instant::now() < deadline {
        source.read_frame(&mut pcm).expect("audio");
        if encoder.push(&pcm, Instant::now()).expect("encode").is_some() {
            packets += 1;
        }
    }
    format!("{packets} Opus packets")
}

/// User plus system CPU time of this process, from /proc/self/stat (in clock ticks of 1/100 s,
/// Linux's USER_HZ).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name is in parentheses and may hold spaces: count fields after its ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}
