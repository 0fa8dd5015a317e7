//! Cameras without a camera: bad device paths give clear errors, and the MJPEG path decodes a
//! known picture (encoded here) to the I420 a BT.601 conversion predicts.

use keksbox_peer::convert::mjpeg_to_i420;
use keksbox_peer::source::{DeviceError, VideoConfig, open_video};

fn camera(device: &str) -> VideoConfig {
    VideoConfig {
        device: device.into(),
        ..VideoConfig::default()
    }
}

#[test]
fn a_path_that_is_not_a_camera_is_named_as_such() {
    let err = open_video(&camera("/dev/null")).err().expect("not a camera");
    assert!(matches!(err, DeviceError::NotACamera(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("/dev/null") && msg.contains("not a video4linux device"),
        "{msg}"
    );
}

#[test]
fn a_missing_camera_says_so() {
    let err = open_video(&camera("/dev/video-keksbox-missing"))
        .err()
        .expect("missing");
    assert!(matches!(err, DeviceError::Missing(_)), "{err:?}");
    assert!(err.to_string().contains("/dev/video-keksbox-missing"), "{err}");
}

#[test]
fn an_unknown_format_name_is_refused_before_opening() {
    let err = open_video(&VideoConfig {
        device: "/dev/null".into(),
        format: "rgb24".into(),
        ..VideoConfig::default()
    })
    .err()
    .expect("bad format");
    assert!(matches!(err, DeviceError::Format(_)), "{err:?}");
    assert!(err.to_string().contains("rgb24"), "{err}");
}

/// A 32x16 picture: left half pure red, right half pure blue.
fn red_blue_rgb() -> Vec<u8> {
    (0..16)
        .flat_map(|_| (0..32).flat_map(|x| if x < 16 { [255, 0, 0] } else { [0, 0, 255] }))
        .collect()
}

fn encode(rgb: &[u8], sampling: jpeg_encoder::SamplingFactor) -> Vec<u8> {
    let mut jpeg = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut jpeg, 100);
    enc.set_sampling_factor(sampling);
    enc.encode(rgb, 32, 16, jpeg_encoder::ColorType::Rgb).expect("encode");
    jpeg
}

/// BT.601 limited range, as the encoder side of the daemon expects.
fn bt601(r: f64, g: f64, b: f64) -> (f64, f64, f64) {
    let y = 16.0 + 65.481 * r / 255.0 + 128.553 * g / 255.0 + 24.966 * b / 255.0;
    let u = 128.0 - 37.797 * r / 255.0 - 74.203 * g / 255.0 + 112.0 * b / 255.0;
    let v = 128.0 + 112.0 * r / 255.0 - 93.786 * g / 255.0 - 18.214 * b / 255.0;
    (y, u, v)
}

fn check_red_blue(i420: &[u8]) {
    assert_eq!(i420.len(), 32 * 16 + 2 * 16 * 8);
    let (luma, chroma) = i420.split_at(32 * 16);
    let (u, v) = chroma.split_at(16 * 8);
    let red = bt601(255.0, 0.0, 0.0);
    let blue = bt601(0.0, 0.0, 255.0);
    let close = |got: u8, want: f64, what: &str| {
        assert!(
            (f64::from(got) - want).abs() <= 4.0,
            "{what}: got {got}, want {want:.1}"
        );
    };
    // Away from the edge (JPEG blocks are 8 px, chroma 16 px here).
    for y in 0..16 {
        close(luma[y * 32 + 2], red.0, "red Y");
        close(luma[y * 32 + 29], blue.0, "blue Y");
    }
    for y in 0..8 {
        close(u[y * 16 + 1], red.1, "red U");
        close(v[y * 16 + 1], red.2, "red V");
        close(u[y * 16 + 14], blue.1, "blue U");
        close(v[y * 16 + 14], blue.2, "blue V");
    }
}

#[test]
fn mjpeg_known_picture_decodes_to_bt601_i420() {
    for sampling in [
        jpeg_encoder::SamplingFactor::F_2_2, // 4:2:0
        jpeg_encoder::SamplingFactor::F_2_1, // 4:2:2, what USB cameras send
    ] {
        let jpeg = encode(&red_blue_rgb(), sampling);
        check_red_blue(&mjpeg_to_i420(&jpeg, 32, 16).expect("decode"));
    }
}

#[test]
fn mjpeg_without_huffman_tables_decodes_like_usb_cameras_send_it() {
    let jpeg = encode(&red_blue_rgb(), jpeg_encoder::SamplingFactor::F_2_1);
    let stripped = strip_segments(&jpeg, 0xc4);
    assert!(stripped.len() < jpeg.len(), "the encoder wrote no DHT");
    let full = mjpeg_to_i420(&jpeg, 32, 16).expect("decode");
    assert_eq!(mjpeg_to_i420(&stripped, 32, 16).expect("decode without DHT"), full);
}

#[test]
fn mjpeg_of_the_wrong_size_or_truncated_is_refused() {
    let jpeg = encode(&red_blue_rgb(), jpeg_encoder::SamplingFactor::F_2_2);
    let err = mjpeg_to_i420(&jpeg, 64, 48).expect_err("wrong size");
    assert!(err.to_string().contains("32x16"), "{err}");
    for cut in [2, 20, jpeg.len() / 2] {
        assert!(mjpeg_to_i420(&jpeg[..cut], 32, 16).is_err(), "cut at {cut}");
    }
}

/// Removes every marker segment of the given type (e.g. 0xc4, DHT) before the scan data.
fn strip_segments(jpeg: &[u8], marker: u8) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xff {
        let kind = jpeg[i + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if kind == 0xda {
            break;
        }
        if kind != marker {
            out.extend_from_slice(&jpeg[i..i + 2 + len]);
        }
        i += 2 + len;
    }
    out.extend_from_slice(&jpeg[i..]);
    out
}
