//! The device check that `make vm-test` runs inside a VM with real drivers: `vivid` (a virtual
//! camera) and `snd-aloop` (a loopback sound card). It prints one line per check and ends with
//! `VM-TEST PASS` or `VM-TEST FAIL: ...`, which the host reads from the serial console.
//!
//! 1. Camera: the first capture device, the mode closest to 640x480@30; 30 frames, each the
//!    negotiated size and moving; encoded to H.264 and decoded again. YUYV is forced once too
//!    so the conversion runs on a real driver's frames.
//! 2. Microphone: a voice-like tone played into the loopback card's playback side, captured on
//!    its capture side with RNNoise on; the level checked, then Opus-encoded and decoded.
//! 3. Hot-plug: vivid is disconnected (its "Disconnect" control) and then unloaded while the
//!    camera is open: the source reports Unplugged; with vivid gone opening says Missing; after
//!    `modprobe vivid` the camera opens and captures again.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};
use keksbox_peer::alsa_capture::AlsaCapture;
use keksbox_peer::encode::{H264Encoder, OpusEncoder};
use keksbox_peer::source::{
    AUDIO_FRAME, AudioConfig, DeviceError, VideoConfig, VideoData, VideoMode, VideoSource, open_audio, open_video,
};
use keksbox_peer::synthetic::Tone;
use keksbox_peer::v4l2::{CameraRequest, V4l2Camera};
use openh264::formats::YUVSource;

/// vivid's "Disconnect" button: its control base 0x00f0f000 + 65.
const VIVID_CID_DISCONNECT: u32 = 0x00f0_f041;

fn main() {
    // The sources log what they negotiated (RUST_LOG=info from the VM's init).
    env_logger::init();
    let started = Instant::now();
    let result = camera().and_then(|()| microphone()).and_then(|()| hotplug());
    match result {
        Ok(()) => println!("VM-TEST PASS ({:.1} s)", started.elapsed().as_secs_f32()),
        Err(e) => {
            println!("VM-TEST FAIL: {e}");
            std::process::exit(1);
        }
    }
}

fn camera_config(format: &str) -> VideoConfig {
    VideoConfig {
        device: String::new(),
        width: 640,
        height: 480,
        fps: 30,
        h264_passthrough: true,
        format: format.into(),
    }
}

fn camera() -> Result<(), String> {
    for format in ["auto", "yuyv"] {
        let mut cam = open_video(&camera_config(format)).map_err(|e| format!("open camera: {e}"))?;
        let mode = cam.mode();
        println!(
            "camera ({format}): negotiated {}x{} at {} fps",
            mode.width, mode.height, mode.fps
        );
        if (mode.width, mode.height) != (640, 480) {
            return Err(format!("vivid offers 640x480 but {mode:?} was chosen"));
        }
        let mut encoder =
            H264Encoder::new(mode, 1000, Duration::from_secs(2)).map_err(|e| format!("H.264 encoder: {e}"))?;
        let mut decoder = openh264::decoder::Decoder::new().map_err(|e| format!("decoder: {e}"))?;
        let (mut decoded, mut previous, mut changed) = (0, None::<Vec<u8>>, 0);
        let frames = 30;
        if format == "auto" {
            // A second user of a streaming camera is told it is busy.
            cam.next_frame().map_err(|e| format!("first frame: {e}"))?;
            let err = open_video(&VideoConfig {
                device: "/dev/video0".into(),
                ..camera_config("auto")
            })
            .err();
            println!("camera: a second open while streaming gave {err:?}");
            if !matches!(err, Some(DeviceError::Busy(_))) {
                return Err(format!("expected Busy, got {err:?}"));
            }
        }
        for i in 0..frames {
            let frame = cam.next_frame().map_err(|e| format!("frame {i}: {e}"))?;
            let VideoData::I420(i420) = &frame.data else {
                return Err("vivid gave H.264?".into());
            };
            if i420.len() != 640 * 480 * 3 / 2 {
                return Err(format!("frame {i}: {} bytes", i420.len()));
            }
            if previous.as_ref().is_some_and(|p| p != i420) {
                changed += 1;
            }
            let sample = encoder
                .encode(&frame, i420, i == 0)
                .map_err(|e| format!("encode {i}: {e}"))?;
            if let Some(sample) = sample
                && let Some(yuv) = decoder.decode(&sample.data).map_err(|e| format!("decode {i}: {e}"))?
            {
                if yuv.dimensions() != (640, 480) {
                    return Err(format!("decoded {:?}", yuv.dimensions()));
                }
                decoded += 1;
            }
            previous = Some(i420.clone());
        }
        println!("camera ({format}): {frames} frames captured, {changed} changed, {decoded} decoded from H.264");
        if changed < frames / 2 || decoded < frames / 2 {
            return Err(format!("camera ({format}): too few moving or decodable frames"));
        }
    }
    Ok(())
}

fn microphone() -> Result<(), String> {
    // The loopback card: what is played on device 0 is captured on device 1.
    let player = thread::spawn(|| -> Result<(), String> {
        let pcm =
            PCM::new("hw:Loopback,0,0", Direction::Playback, false).map_err(|e| format!("loopback playback: {e}"))?;
        {
            let hwp = HwParams::any(&pcm).map_err(|e| e.to_string())?;
            hwp.set_access(Access::RWInterleaved).map_err(|e| e.to_string())?;
            hwp.set_format(Format::s16()).map_err(|e| e.to_string())?;
            hwp.set_channels(1).map_err(|e| e.to_string())?;
            hwp.set_rate(48_000, ValueOr::Nearest).map_err(|e| e.to_string())?;
            // A small buffer, so the writes below are paced in real time (a large one would
            // take the whole tone at once and close before the capture side read it).
            hwp.set_period_size_near(AUDIO_FRAME as i64, ValueOr::Nearest)
                .map_err(|e| e.to_string())?;
            hwp.set_buffer_size_near(4 * AUDIO_FRAME as i64)
                .map_err(|e| e.to_string())?;
            pcm.hw_params(&hwp).map_err(|e| e.to_string())?;
        }
        let io = pcm.io_i16().map_err(|e| e.to_string())?;
        let mut tone = Tone::new(200.0, 6000.0, 1500.0, 3).with_harmonics(12);
        let mut buf = [0i16; AUDIO_FRAME];
        for _ in 0..400 {
            tone.fill(&mut buf);
            if let Err(e) = io.writei(&buf) {
                pcm.try_recover(e, true).map_err(|e| e.to_string())?;
            }
        }
        pcm.drain().map_err(|e| e.to_string())?;
        Ok(())
    });
    thread::sleep(Duration::from_millis(100));
    let mut mic = open_audio(&AudioConfig {
        pcm: "hw:Loopback,1,0".into(),
        denoise: true,
        gain_db: 0.0,
    })
    .map_err(|e| format!("open microphone: {e}"))?;
    let err = AlsaCapture::open("hw:Loopback,1,0").err();
    println!("microphone: a second open gave {err:?}");
    if !matches!(err, Some(DeviceError::Busy(_))) {
        return Err(format!("expected Busy, got {err:?}"));
    }
    let mut opus = OpusEncoder::new(32).map_err(|e| format!("Opus encoder: {e}"))?;
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).map_err(|e| e.to_string())?;
    let (mut buf, mut sum, mut n, mut packets, mut decoded_sum, mut decoded_n) =
        ([0i16; AUDIO_FRAME], 0f64, 0usize, 0, 0f64, 0usize);
    let start = Instant::now();
    for i in 0..200 {
        mic.read_frame(&mut buf).map_err(|e| format!("audio frame {i}: {e}"))?;
        if i >= 50 {
            sum += buf.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
            n += buf.len();
        }
        if let Some(packet) = opus.push(&buf, Instant::now()).map_err(|e| e.to_string())? {
            packets += 1;
            let mut pcm = [0i16; 960];
            let got = decoder
                .decode(&packet.data, &mut pcm, false)
                .map_err(|e| e.to_string())?;
            if i >= 50 {
                decoded_sum += pcm[..got].iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
                decoded_n += got;
            }
        }
    }
    let took = start.elapsed();
    let rms = (sum / n.max(1) as f64).sqrt();
    let decoded_rms = (decoded_sum / decoded_n.max(1) as f64).sqrt();
    println!(
        "microphone: 2 s captured in {:.2} s, RMS {rms:.0} after RNNoise, {packets} Opus packets, decoded RMS {decoded_rms:.0}",
        took.as_secs_f32()
    );
    player.join().map_err(|_| "player panicked".to_string())??;
    if rms < 1000.0 || decoded_rms < 1000.0 || packets != 100 {
        return Err("microphone: no level or wrong packet count".into());
    }
    Ok(())
}

fn hotplug() -> Result<(), String> {
    let request = CameraRequest {
        device: Some("/dev/video0".into()),
        mode: VideoMode {
            width: 640,
            height: 480,
            fps: 30,
        },
        h264_passthrough: true,
        format: None,
    };
    let mut cam = V4l2Camera::open(&request).map_err(|e| format!("open: {e}"))?;
    cam.next_frame().map_err(|e| format!("frame before unplug: {e}"))?;
    cam.set_control(VIVID_CID_DISCONNECT, 0)
        .map_err(|e| format!("vivid disconnect control: {e}"))?;
    let err = cam.next_frame().err();
    println!("hotplug: after disconnect next_frame gave {err:?}");
    if !matches!(err, Some(DeviceError::Unplugged(_))) {
        return Err(format!("expected Unplugged, got {err:?}"));
    }
    drop(cam);
    run("rmmod", &["vivid"])?;
    let err = open_video(&VideoConfig {
        device: "/dev/video0".into(),
        ..camera_config("auto")
    })
    .err();
    println!("hotplug: with vivid unloaded open gave {err:?}");
    if !matches!(err, Some(DeviceError::Missing(_))) {
        return Err(format!("expected Missing, got {err:?}"));
    }
    run("modprobe", &["vivid"])?;
    // udev is not running: devtmpfs creates the node as the driver registers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut cam = loop {
        match open_video(&camera_config("auto")) {
            Ok(cam) => break cam,
            Err(e) if Instant::now() < deadline => {
                println!("hotplug: waiting for the camera: {e}");
                thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(format!("camera did not come back: {e}")),
        }
    };
    for i in 0..10 {
        cam.next_frame().map_err(|e| format!("frame {i} after replug: {e}"))?;
    }
    println!("hotplug: reopened after reload, 10 frames captured");
    Ok(())
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !status.success() {
        return Err(format!("{cmd} {args:?} failed: {status}"));
    }
    Ok(())
}
