//! Phone numbers to E.164: an allocation-free fast path for E.164 and NANP input, the
//! `phonenumber` crate (libphonenumber's metadata) for everything else.
//!
//! phonenumber costs microseconds a parse and serialises threads on a global regex cache,
//! so the common inputs never reach it after warm-up: NANP validity is decided per
//! (area code, exchange) once, by asking phonenumber, and remembered in a 1 MB table.
use phonenumber::country::Id;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("unknown region `{0}` (expected an ISO 3166 code such as US or GB)")]
    UnknownRegion(String),
    #[error("not a phone number")]
    Unparseable,
    #[error("not a valid number for its region")]
    Invalid,
}

/// A default region for numbers written without a country code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    id: Id,
    /// Country calling code (1 for the NANP regions).
    code: u16,
}

impl Region {
    pub fn parse(s: &str) -> Result<Region, PhoneError> {
        let upper = s.trim().to_ascii_uppercase();
        let id = Id::from_str(&upper).map_err(|_| PhoneError::UnknownRegion(s.to_string()))?;
        let code = phonenumber::metadata::DATABASE
            .by_id(id.as_ref())
            .map(|m| m.country_code())
            .ok_or_else(|| PhoneError::UnknownRegion(s.to_string()))?;
        Ok(Region { id, code })
    }

    pub fn us() -> Region {
        Region {
            id: Id::US,
            code: 1,
        }
    }

    pub fn is_nanp(self) -> bool {
        self.code == 1
    }

    /// The ISO 3166 code, e.g. `US`.
    pub fn code_str(&self) -> &str {
        self.id.as_ref()
    }
}

const UNKNOWN: u8 = 0;
const VALID: u8 = 1;
const INVALID: u8 = 2;
/// Validity depends on the subscriber digits too: always ask phonenumber.
const MIXED: u8 = 3;

/// Remembered validity of NANP (area code, exchange) pairs, filled lazily.
pub struct NanpTable {
    cells: Box<[AtomicU8]>,
}

impl Default for NanpTable {
    fn default() -> Self {
        NanpTable {
            cells: (0..BLOCKS).map(|_| AtomicU8::new(UNKNOWN)).collect(),
        }
    }
}

const BLOCKS: usize = 1_000_000;

/// Every (area code, exchange) block's state as the phonenumber crate's metadata gives it,
/// four 2-bit cells a byte, gzipped. Probing the crate costs about 80 us a block, so a
/// fresh process scrubbing a national list would otherwise spend tens of seconds warming
/// up. `tests/nanp_table.rs` checks it against the crate and regenerates it.
const PRECOMPUTED: &[u8] = include_bytes!("nanp_blocks.bin.gz");

impl NanpTable {
    /// The table with every block known, from the precomputed file.
    pub fn precomputed() -> NanpTable {
        use std::io::Read;
        let mut packed = Vec::with_capacity(BLOCKS / 4);
        let ok = flate2::read::GzDecoder::new(PRECOMPUTED)
            .read_to_end(&mut packed)
            .is_ok()
            && packed.len() == BLOCKS / 4;
        let table = NanpTable::default();
        if ok {
            for (i, cell) in table.cells.iter().enumerate() {
                cell.store((packed[i / 4] >> ((i % 4) * 2)) & 3, Ordering::Relaxed);
            }
        }
        // A damaged file leaves every block unknown: slower, never wrong.
        table
    }

    /// The state of one block (`prefix` = area code * 1000 + exchange), asked of the crate.
    pub fn probe_block(prefix: u64) -> u8 {
        let probes = [0u64, 1234, 5678, 9999].map(|s| slow_nanp_valid(prefix * 10_000 + s));
        if probes.iter().all(|v| *v) {
            VALID
        } else if probes.iter().all(|v| !*v) {
            INVALID
        } else {
            MIXED
        }
    }

    /// The remembered state of a block (UNKNOWN = 0, VALID = 1, INVALID = 2, MIXED = 3).
    pub fn state(&self, prefix: u64) -> u8 {
        self.cells[prefix as usize].load(Ordering::Relaxed)
    }

    /// Probes every plausible block (area code and exchange from 200) on `threads`
    /// threads and packs the result as `precomputed` reads it.
    pub fn compute_packed(threads: usize) -> Vec<u8> {
        use std::io::Write;
        let mut states = vec![UNKNOWN; BLOCKS];
        let chunk = BLOCKS.div_ceil(threads.max(1));
        std::thread::scope(|s| {
            for (c, part) in states.chunks_mut(chunk).enumerate() {
                s.spawn(move || {
                    for (j, st) in part.iter_mut().enumerate() {
                        let prefix = (c * chunk + j) as u64;
                        if ten_is_plausible(prefix * 10_000) {
                            *st = Self::probe_block(prefix);
                        }
                    }
                });
            }
        });
        let mut packed = vec![0u8; BLOCKS / 4];
        for (i, st) in states.iter().enumerate() {
            packed[i / 4] |= st << ((i % 4) * 2);
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&packed).expect("in-memory write");
        gz.finish().expect("in-memory write")
    }

    /// The remembered answer only; None when the block was never asked or is mixed.
    fn cached(&self, ten: u64) -> Option<bool> {
        match self.cells[(ten / 10_000) as usize].load(Ordering::Relaxed) {
            VALID => Some(true),
            INVALID => Some(false),
            _ => None,
        }
    }

    /// `ten` is the 10-digit national number (area code, exchange, subscriber).
    fn is_valid(&self, ten: u64) -> bool {
        let cell = &self.cells[(ten / 10_000) as usize];
        match cell.load(Ordering::Relaxed) {
            VALID => true,
            INVALID => false,
            MIXED => slow_nanp_valid(ten),
            _ => {
                // Probe the block at several subscriber numbers; if they disagree the
                // metadata looks at subscriber digits for this block and we never cache it.
                let state = Self::probe_block(ten / 10_000);
                cell.store(state, Ordering::Relaxed);
                if state == MIXED {
                    slow_nanp_valid(ten)
                } else {
                    state == VALID
                }
            }
        }
    }
}

fn slow_nanp_valid(ten: u64) -> bool {
    phonenumber::parse(None, format!("+1{ten:010}"))
        .map(|n| phonenumber::is_valid(&n))
        .unwrap_or(false)
}

/// Parses phone input to the E.164 digits as an integer.
pub struct PhoneNormalizer {
    default_region: Region,
    nanp: NanpTable,
}

impl PhoneNormalizer {
    pub fn new(default_region: Region) -> Self {
        PhoneNormalizer {
            default_region,
            nanp: NanpTable::precomputed(),
        }
    }

    pub fn default_region(&self) -> Region {
        self.default_region
    }

    pub fn normalize(&self, input: &str, region: Option<Region>) -> Result<u64, PhoneError> {
        let region = region.unwrap_or(self.default_region);
        match fast_digits(input) {
            Fast::Digits { plus, buf, len } => {
                let digits = &buf[..len];
                if let Some(ten) = nanp_national(plus, digits, region) {
                    return if ten_is_plausible(ten) && self.nanp.is_valid(ten) {
                        Ok(10_000_000_000 + ten)
                    } else {
                        Err(PhoneError::Invalid)
                    };
                }
                if plus && let Some(e164) = international_valid(digits) {
                    return Ok(e164);
                }
                self.slow(input, region)
            }
            Fast::No => self.slow(input, region),
        }
    }

    /// The E.164 digits of a NANP number already known valid, without ever asking the
    /// phonenumber crate: for look-ahead work (prefetching) that must stay cheap.
    pub fn normalize_cached(&self, input: &str) -> Option<u64> {
        self.cached_e164(self.nanp_candidate(input)?)
    }

    /// `normalize_cached`'s first half, for a batch's look-ahead: the 10-digit national
    /// number of an input that looks like a NANP number, with its block's cache line asked
    /// for (so a window of them load at once instead of one after another).
    pub fn nanp_candidate(&self, input: &str) -> Option<u64> {
        let Fast::Digits { plus, buf, len } = fast_digits(input) else {
            return None;
        };
        let ten = nanp_national(plus, &buf[..len], self.default_region)?;
        if !ten_is_plausible(ten) {
            return None;
        }
        crate::prefetch::hint(&self.nanp.cells[(ten / 10_000) as usize]);
        Some(ten)
    }

    /// `normalize_cached`'s second half: the E.164 digits of `ten` when its block is known
    /// valid.
    pub fn cached_e164(&self, ten: u64) -> Option<u64> {
        self.nanp.cached(ten)?.then_some(10_000_000_000 + ten)
    }

    fn slow(&self, input: &str, region: Region) -> Result<u64, PhoneError> {
        let trimmed = input.trim();
        if trimmed.is_empty() || !trimmed.bytes().any(|b| b.is_ascii_digit()) {
            return Err(PhoneError::Unparseable);
        }
        // libphonenumber drops a parenthesised trunk prefix after a country code
        // (`+44 (0)20 ...`); the phonenumber crate does not, so do it here.
        let cleaned;
        let trimmed = if trimmed.starts_with('+') && trimmed.contains("(0)") {
            cleaned = trimmed.replacen("(0)", "", 1);
            cleaned.as_str()
        } else {
            trimmed
        };
        let num =
            phonenumber::parse(Some(region.id), trimmed).map_err(|_| PhoneError::Unparseable)?;
        if !phonenumber::is_valid(&num) {
            return Err(PhoneError::Invalid);
        }
        let e164 = num.format().mode(phonenumber::Mode::E164).to_string();
        e164.strip_prefix('+')
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or(PhoneError::Unparseable)
    }
}

enum Fast {
    Digits {
        plus: bool,
        buf: [u8; 20],
        len: usize,
    },
    No,
}

/// Validates `+` and digits directly against the metadata patterns, as libphonenumber
/// does for a number already in international form. The phonenumber crate's parser
/// mistakes some national numbers for a trunk prefix (`+33 1 42 68 53 00` loses its `1`).
fn international_valid(digits: &[u8]) -> Option<u64> {
    use phonenumber::Type;
    const KINDS: [Type; 10] = [
        Type::FixedLine,
        Type::Mobile,
        Type::TollFree,
        Type::PremiumRate,
        Type::SharedCost,
        Type::PersonalNumber,
        Type::Voip,
        Type::Pager,
        Type::Uan,
        Type::Voicemail,
    ];
    if !(8..=15).contains(&digits.len()) {
        return None;
    }
    let text: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    for cc_len in 1..=3 {
        let cc: u16 = text[..cc_len].parse().ok()?;
        let Some(metas) = phonenumber::metadata::DATABASE.by_code(&cc) else {
            continue;
        };
        // Calling codes are prefix-free: the first that exists is the one.
        let national = &text[cc_len..];
        let valid = metas.iter().any(|m| {
            let d = m.descriptors();
            d.general().is_match(national)
                && KINDS
                    .iter()
                    .any(|k| d.get(*k).is_some_and(|x| x.is_match(national)))
        });
        return valid.then(|| text.parse().ok()).flatten();
    }
    None
}

/// Collects digits from input made only of digits, spaces, `-`, `.`, `(`, `)` and one
/// leading `+`. Anything else (letters, extensions, `(0)`-style trunk marks handled by
/// the metadata) is left to the slow path.
fn fast_digits(input: &str) -> Fast {
    let bytes = input.trim().as_bytes();
    let (plus, rest) = match bytes.first() {
        Some(b'+') => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    let mut buf = [0u8; 20];
    let mut len = 0;
    for &b in rest {
        match b {
            b'0'..=b'9' => {
                if len == buf.len() {
                    return Fast::No;
                }
                buf[len] = b - b'0';
                len += 1;
            }
            b' ' | b'-' | b'.' | b'(' | b')' => {}
            _ => return Fast::No,
        }
    }
    Fast::Digits { plus, buf, len }
}

/// The 10-digit NANP national number if the digits are NANP by form: `+1` and ten
/// digits, or, for a NANP default region, ten digits or `1` and ten digits.
fn nanp_national(plus: bool, digits: &[u8], region: Region) -> Option<u64> {
    let ten = match (plus, digits.len()) {
        (true, 11) if digits[0] == 1 => &digits[1..],
        (false, 10) if region.is_nanp() => digits,
        (false, 11) if region.is_nanp() && digits[0] == 1 => &digits[1..],
        _ => return None,
    };
    Some(ten.iter().fold(0u64, |acc, d| acc * 10 + u64::from(*d)))
}

/// NANP area codes and exchanges start with 2-9; anything else is invalid without asking.
fn ten_is_plausible(ten: u64) -> bool {
    let area_first = ten / 1_000_000_000;
    let exch_first = (ten / 1_000_000) % 10;
    area_first >= 2 && exch_first >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Result<u64, PhoneError> {
        PhoneNormalizer::new(Region::us()).normalize(s, None)
    }

    #[test]
    fn common_us_formats() {
        for s in [
            "(202) 555-1234",
            "202.555.1234",
            "1-202-555-1234",
            "+1 202 555 1234",
            "+12025551234",
            "2025551234",
            " 202 555 1234 ",
            "202-555-1234 ext. 99",
            "(202) 555-1234 x12",
        ] {
            assert_eq!(n(s), Ok(12025551234), "{s}");
        }
    }

    #[test]
    fn international_formats() {
        assert_eq!(n("011 44 20 7946 0958"), Ok(442079460958));
        assert_eq!(n("+44 (0)20 7946 0958"), Ok(442079460958));
        assert_eq!(n("+44 20 7946 0958"), Ok(442079460958));
        let gb = Region::parse("gb").unwrap();
        assert_eq!(
            PhoneNormalizer::new(gb).normalize("0044 20 7946 0958", None),
            Ok(442079460958)
        );
        assert_eq!(
            PhoneNormalizer::new(gb).normalize("020 7946 0958", None),
            Ok(442079460958)
        );
    }

    #[test]
    fn invalid_numbers() {
        for s in [
            "",
            "hello",
            "123",
            "+1 123 555 1234",
            "+1 202 055 1234",
            "555-1234",
            "+999 1234",
        ] {
            assert!(n(s).is_err(), "{s} should be invalid");
        }
    }

    #[test]
    fn fast_and_slow_paths_agree() {
        let p = PhoneNormalizer::new(Region::us());
        for area in [201u64, 202, 212, 310, 416, 876, 999, 555, 800, 900] {
            for exch in [200u64, 555, 911, 234] {
                let ten = area * 10_000_000 + exch * 10_000 + 4321;
                let fast = p.normalize(&format!("+1{ten}"), None).ok();
                let slow = p
                    .slow(&format!("+1 ({area}) {exch}-4321 ext. 1"), Region::us())
                    .ok();
                assert_eq!(fast, slow, "+1{ten}");
            }
        }
    }

    #[test]
    fn cached_lookups_never_ask_the_crate() {
        let p = PhoneNormalizer {
            default_region: Region::us(),
            nanp: NanpTable::default(),
        };
        assert_eq!(
            p.normalize_cached("+12025550143"),
            None,
            "block not asked yet"
        );
        assert_eq!(p.normalize("+12025550143", None), Ok(12025550143));
        assert_eq!(
            p.normalize_cached("(202) 555-0199"),
            Some(12025550199),
            "same block, now cached"
        );
        assert_eq!(p.normalize_cached("jo@example.com"), None);
        let warm = PhoneNormalizer::new(Region::us());
        assert_eq!(
            warm.normalize_cached("+12025550143"),
            Some(12025550143),
            "the precomputed table knows every block"
        );
        assert_eq!(p.normalize_cached("+44 20 7946 0958"), None);
    }

    #[test]
    fn unknown_region_is_named() {
        assert_eq!(
            Region::parse("XX"),
            Err(PhoneError::UnknownRegion("XX".into()))
        );
    }
}
