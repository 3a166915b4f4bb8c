//! A deterministic generator of registry-format files, spread over real NANP area codes,
//! for tests, benches and trying an import without the real registry.
use crate::normalize::{PhoneNormalizer, Region};
use std::io::Write;

/// splitmix64: small, fast, and the same sequence everywhere for a seed.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// NANP (area code, exchange) blocks in service (US, Canada, Caribbean), according to
/// libphonenumber's metadata: every number generated in them is valid.
pub fn nanp_blocks() -> &'static [(u64, u64)] {
    static BLOCKS: std::sync::OnceLock<Vec<(u64, u64)>> = std::sync::OnceLock::new();
    BLOCKS.get_or_init(compute_blocks)
}

fn compute_blocks() -> Vec<(u64, u64)> {
    let phones = PhoneNormalizer::new(Region::us());
    let valid = |a: u64, e: u64, s: u64| phones.normalize(&format!("+1{a}{e}{s:04}"), None).is_ok();
    let mut blocks = Vec::new();
    for a in 200..1000u64 {
        // Most area codes are not in service; three probes rule them out cheaply.
        if [234u64, 555, 876]
            .iter()
            .filter(|e| valid(a, **e, 4567))
            .count()
            == 0
        {
            continue;
        }
        for e in 200..1000u64 {
            if valid(a, e, 4567) && valid(a, e, 0) && valid(a, e, 9999) {
                blocks.push((a, e));
            }
        }
    }
    blocks
}

/// Writes distinct numbers in registry format, deterministically for a seed.
pub struct Generator {
    blocks: &'static [(u64, u64)],
    rng: SplitMix,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator {
            blocks: nanp_blocks(),
            rng: SplitMix(seed),
        }
    }

    /// Writes `n` numbers, one per line (`2025551234`), or `202,5551234` with `comma`.
    /// Numbers are distinct: each is its line index spread by a bijection over the space.
    pub fn write(&mut self, n: u64, comma: bool, out: &mut impl Write) -> std::io::Result<()> {
        let slots = self.blocks.len() as u64 * 10_000;
        assert!(n <= slots, "at most {slots} distinct numbers");
        // An odd multiplier modulo a power of two is a bijection; skip values past `slots`.
        let bits = 64 - slots.leading_zeros();
        let mask = (1u64 << bits) - 1;
        let mult = self.rng.next_u64() | 1;
        let add = self.rng.next_u64();
        let mut written = 0u64;
        let mut i = 0u64;
        let mut line = Vec::with_capacity(16);
        while written < n {
            let k = (i.wrapping_mul(mult).wrapping_add(add)) & mask;
            i += 1;
            if k >= slots {
                continue;
            }
            let (area, exchange) = self.blocks[(k / 10_000) as usize];
            let sub = k % 10_000;
            line.clear();
            if comma {
                write!(line, "{area},{exchange}{sub:04}")?;
            } else {
                write!(line, "{area}{exchange}{sub:04}")?;
            }
            line.push(b'\n');
            out.write_all(&line)?;
            written += 1;
        }
        Ok(())
    }
}
