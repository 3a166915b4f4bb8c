//! The registry's text formats: full files (`2025551234` or `202,5551234` per line) and
//! change files (the same, with an `A` / `D` field), plain or gzip, read in large chunks.
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    Add(u64),
    Delete(u64),
}

/// Opens a file, transparently gunzipping it when it starts with the gzip magic.
pub fn open(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    let mut f = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let gz = f.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    })
}

/// A 10-digit NANP number from `2025551234`, `202,5551234` or `202-555-1234`, as E.164 digits.
fn number(fields: &[&[u8]]) -> Result<u64, &'static str> {
    let mut v = 0u64;
    let mut digits = 0;
    for f in fields {
        for &b in *f {
            match b {
                b'0'..=b'9' => {
                    v = v * 10 + u64::from(b - b'0');
                    digits += 1;
                    if digits > 10 {
                        return Err("more than 10 digits");
                    }
                }
                b' ' | b'-' | b'\t' | b'"' => {}
                _ => return Err("not a number"),
            }
        }
    }
    if digits != 10 {
        return Err("not 10 digits");
    }
    let area_first = v / 1_000_000_000;
    let exch_first = (v / 1_000_000) % 10;
    if area_first < 2 || exch_first < 2 {
        return Err("area code and exchange must start with 2-9");
    }
    Ok(10_000_000_000 + v)
}

/// Parses one line; `None` for blank lines and `#` comments.
pub fn parse_line(line: &[u8], changes: bool) -> Option<Result<Line, &'static str>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() || trimmed.starts_with(b"#") {
        return None;
    }
    let fields: Vec<&[u8]> = trimmed
        .split(|b| *b == b',')
        .map(|f| f.trim_ascii())
        .collect();
    if !changes {
        return Some(match fields.len() {
            1 | 2 => number(&fields).map(Line::Add),
            _ => Err("expected a number, or area code and number"),
        });
    }
    // Change files: number fields, an action field, and anything else (dates) ignored.
    let action = fields.iter().position(|f| {
        matches!(
            f.to_ascii_uppercase().as_slice(),
            b"A" | b"ADD" | b"D" | b"DEL" | b"DELETE"
        )
    });
    let Some(a) = action else {
        return Some(Err("no action field (A or D)"));
    };
    let add = fields[a].eq_ignore_ascii_case(b"A") || fields[a].eq_ignore_ascii_case(b"ADD");
    // The number is the first field, or the first two (area code, number).
    let n = match a {
        0 => Err("expected a number before the action"),
        1 => number(&fields[..1]),
        _ => number(&fields[..1]).or_else(|_| number(&fields[..2])),
    };
    Some(n.map(|n| if add { Line::Add(n) } else { Line::Delete(n) }))
}

/// Feeds each line of `r` (1-based line numbers) to `f`, reading 8 MB at a time, and
/// reports bytes read to `progress`.
pub fn for_each_line(
    mut r: impl Read,
    mut f: impl FnMut(u64, &[u8]),
    progress: &dyn Fn(u64),
) -> io::Result<()> {
    let mut buf = vec![0u8; 8 << 20];
    let mut filled = 0;
    let mut line_no = 0u64;
    loop {
        let n = r.read(&mut buf[filled..])?;
        progress(n as u64);
        let end = filled + n;
        let eof = n == 0;
        let mut start = 0;
        while let Some(i) = buf[start..end].iter().position(|b| *b == b'\n') {
            line_no += 1;
            f(line_no, &buf[start..start + i]);
            start += i + 1;
        }
        if eof {
            if start < end {
                line_no += 1;
                f(line_no, &buf[start..end]);
            }
            return Ok(());
        }
        buf.copy_within(start..end, 0);
        filled = end - start;
        if filled == buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line {} is longer than 8 MB", line_no + 1),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_lines() {
        assert_eq!(
            parse_line(b"2025551234", false),
            Some(Ok(Line::Add(12025551234)))
        );
        assert_eq!(
            parse_line(b"202,5551234\r", false),
            Some(Ok(Line::Add(12025551234)))
        );
        assert_eq!(
            parse_line(b" 202-555-1234 ", false),
            Some(Ok(Line::Add(12025551234)))
        );
        assert_eq!(parse_line(b"", false), None);
        assert_eq!(parse_line(b"# header", false), None);
        assert!(parse_line(b"202555123", false).unwrap().is_err());
        assert!(parse_line(b"1025551234", false).unwrap().is_err());
        assert!(parse_line(b"20255512345", false).unwrap().is_err());
        assert!(parse_line(b"hello", false).unwrap().is_err());
    }

    #[test]
    fn change_lines() {
        assert_eq!(
            parse_line(b"202,5551234,A", true),
            Some(Ok(Line::Add(12025551234)))
        );
        assert_eq!(
            parse_line(b"2025551234,D,2026-11-01", true),
            Some(Ok(Line::Delete(12025551234)))
        );
        assert_eq!(
            parse_line(b"202,5551234,2026-11-01,delete", true),
            Some(Ok(Line::Delete(12025551234)))
        );
        assert!(parse_line(b"A,2025551234", true).unwrap().is_err());
        assert!(parse_line(b"2025551234", true).unwrap().is_err());
    }

    #[test]
    fn lines_across_chunks_and_without_final_newline() {
        let text = "1\n22\n\n333";
        let mut seen = Vec::new();
        for_each_line(
            text.as_bytes(),
            |n, l| seen.push((n, String::from_utf8(l.to_vec()).unwrap())),
            &|_| {},
        )
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (1, "1".into()),
                (2, "22".into()),
                (3, "".into()),
                (4, "333".into())
            ]
        );
    }
}
