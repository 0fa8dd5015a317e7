//! Camera frames to what the encoder and the wire want: YUYV, I420 with padding and MJPEG to
//! tight I420; H.264 access units with SPS/PPS put before every keyframe.
//!
//! Everything here is pure (bytes in, bytes out) and checks sizes first: a short or corrupt
//! frame from a camera is a [`DeviceError::Format`], never a panic or an out-of-bounds read.

use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use crate::source::DeviceError;

/// Bytes of a tight I420 picture.
pub fn i420_len(width: u32, height: u32) -> usize {
    let (w, h) = (width as usize, height as usize);
    w * h + 2 * w.div_ceil(2) * h.div_ceil(2)
}

/// Packed YUYV 4:2:2 (Y0 U Y1 V) with `stride` bytes per row to tight I420. The chroma of two
/// rows is averaged.
pub fn yuyv_to_i420(src: &[u8], width: u32, height: u32, stride: usize) -> Result<Vec<u8>, DeviceError> {
    let (w, h) = (width as usize, height as usize);
    if w == 0 || h == 0 || w % 2 != 0 || stride < w * 2 {
        return Err(DeviceError::Format(format!(
            "YUYV frame {width}x{height} with stride {stride} is not valid"
        )));
    }
    let needed = stride * (h - 1) + w * 2;
    if src.len() < needed {
        return Err(DeviceError::Format(format!(
            "YUYV frame too short: {} bytes for {width}x{height} (need {needed})",
            src.len()
        )));
    }
    let (cw, ch) = (w / 2, h.div_ceil(2));
    let mut out = vec![0u8; i420_len(width, height)];
    let (luma, chroma) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut(cw * ch);
    for (y, dst) in luma.chunks_exact_mut(w).enumerate() {
        let row = &src[y * stride..y * stride + w * 2];
        for (d, pair) in dst.iter_mut().zip(row.chunks_exact(2)) {
            *d = pair[0];
        }
    }
    for cy in 0..ch {
        let top = &src[2 * cy * stride..2 * cy * stride + w * 2];
        // An odd last row has no partner: use it twice.
        let below = (2 * cy + 1).min(h - 1);
        let bottom = &src[below * stride..below * stride + w * 2];
        for cx in 0..cw {
            let (t, b) = (&top[cx * 4..cx * 4 + 4], &bottom[cx * 4..cx * 4 + 4]);
            u_plane[cy * cw + cx] = avg2(t[1], b[1]);
            v_plane[cy * cw + cx] = avg2(t[3], b[3]);
        }
    }
    Ok(out)
}

/// Planar I420 whose rows may be padded (`stride` bytes per luma row, `stride / 2` per chroma
/// row, as V4L2 lays out YU12) to tight I420.
pub fn i420_unpad(src: &[u8], width: u32, height: u32, stride: usize) -> Result<Vec<u8>, DeviceError> {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch, cstride) = (w.div_ceil(2), h.div_ceil(2), stride.div_ceil(2));
    if w == 0 || h == 0 || stride < w {
        return Err(DeviceError::Format(format!(
            "I420 frame {width}x{height} with stride {stride} is not valid"
        )));
    }
    let needed = stride * h + 2 * cstride * ch;
    if src.len() < needed {
        return Err(DeviceError::Format(format!(
            "I420 frame too short: {} bytes for {width}x{height} (need {needed})",
            src.len()
        )));
    }
    let mut out = Vec::with_capacity(i420_len(width, height));
    for y in 0..h {
        out.extend_from_slice(&src[y * stride..y * stride + w]);
    }
    let chroma = &src[stride * h..];
    for plane in 0..2 {
        let base = plane * cstride * ch;
        for y in 0..ch {
            out.extend_from_slice(&chroma[base + y * cstride..base + y * cstride + cw]);
        }
    }
    Ok(out)
}

/// Decodes one MJPEG frame to tight I420 (BT.601 limited range, what encoders expect). The
/// picture must have the negotiated size. Frames without Huffman tables (usual for USB cameras)
/// use the standard ones.
pub fn mjpeg_to_i420(jpeg: &[u8], width: u32, height: u32) -> Result<Vec<u8>, DeviceError> {
    let bad = |what: String| DeviceError::Format(format!("MJPEG frame: {what}"));
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::YCbCr)
        .set_max_width(width as usize)
        .set_max_height(height as usize);
    let with_tables;
    let jpeg = if has_huffman_tables(jpeg) {
        jpeg
    } else {
        with_tables = insert_standard_huffman_tables(jpeg)?;
        &with_tables[..]
    };
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
    decoder
        .decode_headers()
        .map_err(|e| bad(format!("cannot decode: {e:?}")))?;
    let info = decoder.info().ok_or_else(|| bad("no picture header".into()))?;
    if (u32::from(info.width), u32::from(info.height)) != (width, height) {
        return Err(bad(format!(
            "{}x{} instead of the negotiated {width}x{height}",
            info.width, info.height
        )));
    }
    let pixels = decoder.decode().map_err(|e| bad(format!("cannot decode: {e:?}")))?;
    let (w, h) = (width as usize, height as usize);
    let components = match decoder.output_colorspace() {
        Some(ColorSpace::YCbCr) => 3,
        Some(ColorSpace::Luma) => 1,
        other => return Err(bad(format!("unexpected colour space {other:?}"))),
    };
    if pixels.len() < w * h * components {
        return Err(bad("decoder returned too few pixels".into()));
    }
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut out = vec![128u8; i420_len(width, height)];
    let (luma, chroma) = out.split_at_mut(w * h);
    for (d, px) in luma.iter_mut().zip(pixels.chunks_exact(components)) {
        *d = full_to_limited_luma(px[0]);
    }
    if components == 3 {
        let (u_plane, v_plane) = chroma.split_at_mut(cw * ch);
        for cy in 0..ch {
            for cx in 0..cw {
                let (mut u, mut v, mut n) = (0u32, 0u32, 0u32);
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let (x, y) = (2 * cx + dx, 2 * cy + dy);
                    if x < w && y < h {
                        let p = (y * w + x) * 3;
                        u += u32::from(pixels[p + 1]);
                        v += u32::from(pixels[p + 2]);
                        n += 1;
                    }
                }
                u_plane[cy * cw + cx] = full_to_limited_chroma(((u + n / 2) / n) as u8);
                v_plane[cy * cw + cx] = full_to_limited_chroma(((v + n / 2) / n) as u8);
            }
        }
    }
    Ok(out)
}

/// Whether a DHT segment comes before the scan. USB (UVC) cameras leave it out and rely on
/// the standard tables of JPEG's Annex K.
fn has_huffman_tables(jpeg: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xff {
        match jpeg[i + 1] {
            0xc4 => return true,
            0xda => return false,
            // Fill bytes before a marker.
            0xff => {
                i += 1;
                continue;
            }
            _ => {}
        }
        i += 2 + usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
    }
    false
}

/// The frame with a DHT segment holding the standard tables (ITU-T T.81 Annex K.3) right after
/// its start-of-image marker.
fn insert_standard_huffman_tables(jpeg: &[u8]) -> Result<Vec<u8>, DeviceError> {
    if jpeg.len() < 4 || jpeg[..2] != [0xff, 0xd8] {
        return Err(DeviceError::Format("MJPEG frame: no start-of-image marker".into()));
    }
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &DC_LUMA_BITS, &DC_VALUES),
        (0x10, &AC_LUMA_BITS, &AC_LUMA_VALUES),
        (0x01, &DC_CHROMA_BITS, &DC_VALUES),
        (0x11, &AC_CHROMA_BITS, &AC_CHROMA_VALUES),
    ];
    let body: usize = tables.iter().map(|(_, _, v)| 17 + v.len()).sum();
    let mut out = Vec::with_capacity(jpeg.len() + body + 4);
    out.extend_from_slice(&jpeg[..2]);
    out.extend_from_slice(&[0xff, 0xc4]);
    out.extend_from_slice(&((body + 2) as u16).to_be_bytes());
    for (class_id, bits, values) in tables {
        out.push(class_id);
        out.extend_from_slice(bits);
        out.extend_from_slice(values);
    }
    out.extend_from_slice(&jpeg[2..]);
    Ok(out)
}

// The standard Huffman tables (T.81 Annex K.3): code counts per length 1..16, then the values.
const DC_LUMA_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_CHROMA_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const AC_LUMA_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
#[rustfmt::skip]
const AC_LUMA_VALUES: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
const AC_CHROMA_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
#[rustfmt::skip]
const AC_CHROMA_VALUES: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

fn avg2(a: u8, b: u8) -> u8 {
    ((u16::from(a) + u16::from(b)).div_ceil(2)) as u8
}

/// JPEG (JFIF) is full range 0..255; H.264 encoders and decoders assume 16..235 luma.
fn full_to_limited_luma(y: u8) -> u8 {
    (16 + (u32::from(y) * 219 + 127) / 255) as u8
}

/// Full-range chroma 0..255 around 128 to limited 16..240.
fn full_to_limited_chroma(c: u8) -> u8 {
    (16 + (u32::from(c) * 224 + 127) / 255) as u8
}

/// H.264 NAL unit types we act on.
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

/// Keeps the latest SPS and PPS a camera sent and puts them before every keyframe that lacks
/// them, so a receiver that joins at any keyframe can decode.
#[derive(Debug, Default)]
pub struct H264Passthrough {
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

/// Longest parameter set we keep: real SPS/PPS are tens of bytes.
const MAX_PARAMETER_SET: usize = 1024;

impl H264Passthrough {
    /// Takes one Annex-B access unit; returns it (with SPS/PPS prepended where a keyframe lacks
    /// them) and whether it is a keyframe. A keyframe before any SPS/PPS was seen is returned
    /// as is, but not marked as a keyframe: nobody could start decoding from it.
    pub fn process(&mut self, au: &[u8]) -> Result<(Vec<u8>, bool), DeviceError> {
        let units: Vec<&[u8]> = nal_units(au).collect();
        if units.is_empty() {
            return Err(DeviceError::Format(
                "H.264 frame holds no NAL unit (not Annex-B?)".into(),
            ));
        }
        let (mut has_sps, mut has_pps, mut idr) = (false, false, false);
        for nal in &units {
            match nal[0] & 0x1f {
                NAL_SPS if nal.len() <= MAX_PARAMETER_SET => {
                    has_sps = true;
                    self.sps = Some(nal.to_vec());
                }
                NAL_PPS if nal.len() <= MAX_PARAMETER_SET => {
                    has_pps = true;
                    self.pps = Some(nal.to_vec());
                }
                NAL_IDR => idr = true,
                _ => {}
            }
        }
        if !idr || (has_sps && has_pps) {
            return Ok((au.to_vec(), idr));
        }
        let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
            return Ok((au.to_vec(), false));
        };
        let mut out = Vec::with_capacity(au.len() + sps.len() + pps.len() + 8);
        for ps in [sps, pps] {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(ps);
        }
        out.extend_from_slice(au);
        Ok((out, true))
    }
}

/// The NAL units of an Annex-B stream (start codes 00 00 01 or 00 00 00 01), without their
/// start codes. Empty units are skipped.
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            // The next unit's start code begins 3 bytes before it, plus a leading zero for the
            // 4-byte form (trailing zeros of a unit are not part of it anyway).
            let mut e = s - 3;
            while e > 0 && data[e - 1] == 0 {
                e -= 1;
            }
            e
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter(|(s, e)| e > s)
        .map(move |(s, e)| &data[s..e])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_huffman_tables_are_complete() {
        for (bits, n) in [
            (DC_LUMA_BITS, DC_VALUES.len()),
            (DC_CHROMA_BITS, DC_VALUES.len()),
            (AC_LUMA_BITS, AC_LUMA_VALUES.len()),
            (AC_CHROMA_BITS, AC_CHROMA_VALUES.len()),
        ] {
            assert_eq!(bits.iter().map(|&b| usize::from(b)).sum::<usize>(), n);
        }
    }

    #[test]
    fn yuyv_known_frame_converts_exactly() {
        // 4x2: Y = 10,20,30,40 / 50,60,70,80; U/V differ per row to check the averaging.
        let src = [
            10, 100, 20, 200, 30, 110, 40, 210, //
            50, 102, 60, 202, 70, 112, 80, 212,
        ];
        let out = yuyv_to_i420(&src, 4, 2, 8).expect("convert");
        assert_eq!(
            out,
            [10, 20, 30, 40, 50, 60, 70, 80, 101, 111, 201, 211],
            "Y plane, then U (avg 100/102, 110/112), then V"
        );
    }

    #[test]
    fn yuyv_with_padding_and_odd_height() {
        // 2x3 with 6-byte rows (2 bytes padding), odd height: last chroma row is the last row.
        let src = [
            1, 100, 2, 200, 0xee, 0xee, //
            3, 104, 4, 204, 0xee, 0xee, //
            5, 50, 6, 60, 0xee, 0xee,
        ];
        let out = yuyv_to_i420(&src, 2, 3, 6).expect("convert");
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 102, 50, 202, 60]);
    }

    #[test]
    fn short_or_bad_yuyv_is_an_error_not_a_panic() {
        assert!(matches!(yuyv_to_i420(&[0; 15], 4, 2, 8), Err(DeviceError::Format(_))));
        assert!(yuyv_to_i420(&[0; 16], 3, 2, 8).is_err());
        assert!(yuyv_to_i420(&[0; 16], 4, 2, 4).is_err());
        assert!(yuyv_to_i420(&[], 0, 0, 0).is_err());
    }

    #[test]
    fn padded_i420_is_unpadded() {
        // 2x2, stride 4 (chroma stride 2).
        let src = [1, 2, 9, 9, 3, 4, 9, 9, 5, 9, 6, 9];
        assert_eq!(i420_unpad(&src, 2, 2, 4).expect("unpad"), [1, 2, 3, 4, 5, 6]);
        assert!(i420_unpad(&src[..11], 2, 2, 4).is_err());
    }

    #[test]
    fn garbage_mjpeg_is_a_format_error() {
        for data in [&b""[..], b"not a jpeg", &[0xff, 0xd8, 0xff, 0xc0, 0, 2][..]] {
            let err = mjpeg_to_i420(data, 16, 16).expect_err("garbage");
            assert!(matches!(err, DeviceError::Format(_)), "{err:?}");
        }
    }

    fn annexb(units: &[&[u8]]) -> Vec<u8> {
        units.iter().flat_map(|u| [&[0u8, 0, 0, 1][..], u].concat()).collect()
    }

    #[test]
    fn nal_units_split_on_both_start_code_forms() {
        let data = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5];
        let units: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(units, [&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]);
        assert_eq!(nal_units(b"no start code").count(), 0);
    }

    #[test]
    fn sps_pps_go_before_every_keyframe() {
        let mut p = H264Passthrough::default();
        // An IDR before any parameter set: passed on, not a keyframe.
        let (out, key) = p.process(&annexb(&[&[0x65, 9]])).expect("au");
        assert!(!key);
        assert_eq!(out, annexb(&[&[0x65, 9]]));
        // First keyframe with its parameter sets: unchanged.
        let first = annexb(&[&[0x67, 1], &[0x68, 2], &[0x65, 3]]);
        assert_eq!(p.process(&first).expect("au"), (first.clone(), true));
        // A P frame: unchanged, not a keyframe.
        let pframe = annexb(&[&[0x41, 4]]);
        assert_eq!(p.process(&pframe).expect("au"), (pframe.clone(), false));
        // A later bare IDR gets the remembered SPS and PPS.
        let (out, key) = p.process(&annexb(&[&[0x65, 5]])).expect("au");
        assert!(key);
        assert_eq!(out, annexb(&[&[0x67, 1], &[0x68, 2], &[0x65, 5]]));
        // Garbage is an error.
        assert!(p.process(b"garbage").is_err());
    }
}
