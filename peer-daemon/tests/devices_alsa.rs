//! ALSA capture through the real libasound, with ALSA's `file` plugin as the microphone: it
//! reads a raw file we wrote (a known noisy tone) as if it were captured.
//!
//! libasound reads `ALSA_CONFIG_PATH` once per process, and the environment of a running
//! multi-threaded test cannot be changed safely, so the capture test runs itself again as a
//! child process with the variable set.

use std::path::{Path, PathBuf};
use std::process::Command;

use keksbox_peer::alsa_capture::AlsaCapture;
use keksbox_peer::denoise::Processed;
use keksbox_peer::source::{AUDIO_FRAME, AudioConfig, AudioSource, DeviceError, open_audio};
use keksbox_peer::synthetic::Tone;

/// The noisy tone: 200 Hz with 11 overtones (voice-like) plus white noise.
const F0: f64 = 200.0;
const HARMONICS: u32 = 12;
const SECONDS: usize = 3;
const CHILD_ENV: &str = "KEKSBOX_ALSA_TEST_DIR";

#[test]
fn a_missing_pcm_is_a_clear_device_error() {
    let err = AlsaCapture::open("keksbox_no_such_pcm").expect_err("no such PCM");
    assert!(matches!(err, DeviceError::Missing(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("keksbox_no_such_pcm") && msg.contains("arecord -L"),
        "{msg}"
    );

    // Through the config seam too, with denoise on: still an error, not a panic.
    let err = open_audio(&AudioConfig {
        pcm: "hw:97,0".into(),
        ..AudioConfig::default()
    })
    .err()
    .expect("no card 97");
    assert!(matches!(err, DeviceError::Missing(_)), "{err:?}");
    assert!(err.to_string().contains("hw:97,0"), "{err}");
}

#[test]
fn file_plugin_capture_is_exact_and_rnnoise_improves_snr() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        capture_in_child(Path::new(&dir));
        return;
    }
    let dir = scratch_dir("capture");
    let signal = noisy_tone(SECONDS * 48_000);
    let raw: Vec<u8> = signal.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(dir.join("tone.raw"), raw).expect("write tone");
    std::fs::write(
        dir.join("asound.conf"),
        format!(
            "pcm.keksbox_testmic {{\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n  \
             infile \"{}\"\n  format \"raw\"\n}}\n",
            dir.join("tone.raw").display()
        ),
    )
    .expect("write config");
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "file_plugin_capture_is_exact_and_rnnoise_improves_snr",
            "--exact",
            "--nocapture",
        ])
        .env(
            "ALSA_CONFIG_PATH",
            format!("/usr/share/alsa/alsa.conf:{}", dir.join("asound.conf").display()),
        )
        .env(CHILD_ENV, &dir)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child failed");
    assert!(stdout.contains("SNR before"), "child ran no capture");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs with `ALSA_CONFIG_PATH` pointing at the file plugin PCM.
fn capture_in_child(dir: &Path) {
    let raw = std::fs::read(dir.join("tone.raw")).expect("tone");
    let signal: Vec<i16> = raw.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    let frames = signal.len() / AUDIO_FRAME;

    // Plain capture: the samples arrive exactly as written.
    let mut mic = AlsaCapture::open("keksbox_testmic").expect("open file plugin PCM");
    assert_eq!(mic.channels(), 1);
    let mut captured = Vec::new();
    let mut buf = [0i16; AUDIO_FRAME];
    for _ in 0..frames {
        mic.read_frame(&mut buf).expect("read");
        captured.extend_from_slice(&buf);
    }
    assert_eq!(captured.len(), signal.len());
    assert!(captured == signal, "captured audio differs from the file");
    drop(mic);

    // Through RNNoise: the noise drops, the tone stays.
    let mic = AlsaCapture::open("keksbox_testmic").expect("reopen");
    let mut denoised = Processed::new(Box::new(mic), true, 0.0).expect("denoise");
    let mut cleaned = Vec::new();
    for _ in 0..frames {
        denoised.read_frame(&mut buf).expect("read");
        cleaned.extend_from_slice(&buf);
    }
    // Skip the first half second: RNNoise adapts.
    let before = snr_db(&captured[24_000..]);
    let after = snr_db(&cleaned[24_000..]);
    println!("SNR before {before:.1} dB, after RNNoise {after:.1} dB");
    assert!(after > before + 6.0, "RNNoise did not lower the noise enough");
}

fn noisy_tone(len: usize) -> Vec<i16> {
    let mut tone = Tone::new(F0 as f32, 6000.0, 4000.0, 42).with_harmonics(HARMONICS);
    let mut out = vec![0; len];
    tone.fill(&mut out);
    out
}

/// Signal-to-noise ratio of the tone: the tone is the least-squares fit of a sine and cosine at
/// each partial (phase and delay do not matter), the noise is what remains.
fn snr_db(x: &[i16]) -> f64 {
    let mut fit = vec![0.0f64; x.len()];
    for h in 1..=HARMONICS {
        let w = 2.0 * std::f64::consts::PI * F0 * f64::from(h) / 48_000.0;
        let (mut a, mut b) = (0.0, 0.0);
        for (n, &s) in x.iter().enumerate() {
            a += f64::from(s) * (w * n as f64).sin();
            b += f64::from(s) * (w * n as f64).cos();
        }
        a *= 2.0 / x.len() as f64;
        b *= 2.0 / x.len() as f64;
        for (n, v) in fit.iter_mut().enumerate() {
            *v += a * (w * n as f64).sin() + b * (w * n as f64).cos();
        }
    }
    let signal: f64 = fit.iter().map(|v| v * v).sum();
    let noise: f64 = x.iter().zip(&fit).map(|(&s, t)| (f64::from(s) - t).powi(2)).sum();
    10.0 * (signal / noise).log10()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keksbox-alsa-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
