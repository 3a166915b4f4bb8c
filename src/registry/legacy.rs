//! Reads registry snapshots written before the hashed-bucket layout (partitioned
//! Elias-Fano, `PFPE0002`), so a data directory or a Redis blob from an earlier version is
//! converted on load instead of being refused.
use std::io::{self, Read};

pub const MAGIC: &[u8; 8] = b"PFPE0002";
const HEADER_BITS: u64 = 40;

fn get_bits(words: &[u64], pos: u64, width: u32) -> io::Result<u64> {
    if width == 0 {
        return Ok(0);
    }
    let w = (pos / 64) as usize;
    let b = (pos % 64) as u32;
    let word = |i: usize| {
        words.get(i).copied().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot chunk overruns its data",
            )
        })
    };
    let pair = (word(w + 1).unwrap_or(0) as u128) << 64 | word(w)? as u128;
    Ok(((pair >> b) as u64) & (((1u128 << width) - 1) as u64))
}

/// One little-endian u64.
pub(super) fn u(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn array<const W: usize>(r: &mut impl Read) -> io::Result<Vec<[u8; W]>> {
    let len = u(r)? as usize;
    if len > (1 << 36) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "snapshot array length out of range",
        ));
    }
    let mut bytes = vec![0u8; len * W];
    r.read_exact(&mut bytes)?;
    Ok(bytes
        .chunks_exact(W)
        .map(|c| c.try_into().expect("exact chunks"))
        .collect())
}

/// Every value of a legacy snapshot whose magic has already been read, in order.
pub fn read_values(r: &mut impl Read) -> io::Result<Vec<u64>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let (n, offset, universe, k) = (u(r)?, u(r)?, u(r)?, u(r)?);
    let dir: Vec<u64> = array::<4>(r)?
        .into_iter()
        .map(|b| u32::from_le_bytes(b) as u64)
        .collect();
    let bits: Vec<u64> = array::<8>(r)?.into_iter().map(u64::from_le_bytes).collect();
    if n == 0 {
        return Ok(Vec::new());
    }
    let consistent = (1..=40).contains(&k)
        && dir.len() as u64 == ((universe - 1) >> k) + 2
        && dir.last().is_some_and(|end| (*end as usize) < bits.len());
    if !consistent {
        return Err(bad("snapshot header does not match its data"));
    }
    let mut out = Vec::with_capacity(n.min(1 << 32) as usize);
    for c in 0..dir.len() - 1 {
        if dir[c] == dir[c + 1] {
            continue;
        }
        let start = dir[c] * 64;
        let count = get_bits(&bits, start, 32)?;
        let l = get_bits(&bits, start + 32, 8)? as u32;
        if l > 40 {
            return Err(bad("snapshot chunk has a lower width out of range"));
        }
        let upper = start + HEADER_BITS;
        let lower = upper + count + ((1u64 << k) >> l) + 1;
        let base = offset + ((c as u64) << k);
        let mut p = upper;
        for j in 0..count {
            while get_bits(&bits, p, 1)? == 0 {
                p += 1;
            }
            let high = p - upper - j;
            p += 1;
            out.push(base + (high << l | get_bits(&bits, lower + j * l as u64, l)?));
        }
    }
    if out.len() as u64 != n || !out.windows(2).all(|w| w[0] < w[1]) {
        return Err(bad("snapshot holds other numbers than its header says"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `legacy_v2.snap` was written by the earlier version's `EliasFano::write_to` for
    /// exactly these values.
    fn values() -> Vec<u64> {
        let mut v: Vec<u64> = (0..3000u64)
            .map(|i| 12_025_550_000 + (i * 7919) % 30_000 * 3 / 2)
            .collect();
        v.push(19_999_999_999);
        v.sort_unstable();
        v.dedup();
        v
    }

    #[test]
    fn reads_what_the_earlier_version_wrote() {
        let bytes = include_bytes!("legacy_v2.snap");
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(read_values(&mut &bytes[8..]).unwrap(), values());
        assert!(read_values(&mut &bytes[8..bytes.len() - 9]).is_err());
        let set = super::super::set::NumberSet::read_from(&mut &bytes[..]).unwrap();
        assert_eq!(set.to_sorted_vec(), values());
    }
}
