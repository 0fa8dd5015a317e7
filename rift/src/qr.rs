//! A QR code drawn with Unicode half blocks, two modules per character cell, so a phone
//! can open the room link straight from the terminal.

use qrcode::{EcLevel, QrCode};

/// The QR code of `text` as lines of text, with the quiet zone; `None` if it does not fit.
pub fn render(text: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L).ok()?;
    let width = code.width();
    let quiet = 2;
    let size = width + 2 * quiet;
    let dark = |x: usize, y: usize| {
        x >= quiet
            && y >= quiet
            && x < width + quiet
            && y < width + quiet
            && code[(x - quiet, y - quiet)] == qrcode::Color::Dark
    };
    let mut out = String::new();
    // Light modules are drawn as blocks so the code reads on dark terminals too.
    for y in (0..size).step_by(2) {
        for x in 0..size {
            let top = dark(x, y);
            let bottom = y + 1 < size && dark(x, y + 1);
            out.push(match (top, bottom) {
                (false, false) => '█',
                (false, true) => '▀',
                (true, false) => '▄',
                (true, true) => ' ',
            });
        }
        out.push('\n');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_and_bounded() {
        let qr = render("https://keksbox.local/room#lusab-babad").unwrap();
        let lines: Vec<&str> = qr.lines().collect();
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert_eq!(lines.len(), width.div_ceil(2));
        assert!(render(&"x".repeat(10_000)).is_none());
    }
}
