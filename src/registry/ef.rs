//! Elias-Fano: a static sorted set of u64 in about 2 + log2(universe / n) bits per value,
//! with membership by one select on the upper bits and a short scan.
use std::io::{self, Read, Write};

/// Every SAMPLE-th zero of the upper bit vector has its position recorded.
const SAMPLE: u64 = 256;
const MAGIC: &[u8; 8] = b"PFEF0001";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EliasFano {
    n: u64,
    offset: u64,
    universe: u64,
    l: u32,
    lower: Vec<u64>,
    upper: Vec<u64>,
    upper_bits: u64,
    /// Position of zero number k * SAMPLE (0-indexed) in `upper`.
    zero_samples: Vec<u64>,
}

fn get_bits(words: &[u64], pos: u64, width: u32) -> u64 {
    if width == 0 {
        return 0;
    }
    let w = (pos / 64) as usize;
    let b = (pos % 64) as u32;
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    let mut v = words[w] >> b;
    if b + width > 64 {
        v |= words[w + 1] << (64 - b);
    }
    v & mask
}

fn set_bits(words: &mut [u64], pos: u64, width: u32, value: u64) {
    if width == 0 {
        return;
    }
    let w = (pos / 64) as usize;
    let b = (pos % 64) as u32;
    words[w] |= value << b;
    if b + width > 64 {
        words[w + 1] |= value >> (64 - b);
    }
}

/// Position of the r-th (0-indexed) set bit of `word`.
fn select_in_word(mut word: u64, r: u32) -> u32 {
    for _ in 0..r {
        word &= word - 1;
    }
    word.trailing_zeros()
}

impl EliasFano {
    /// Builds from strictly increasing values.
    pub fn from_sorted(values: &[u64]) -> EliasFano {
        debug_assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "values must be sorted and unique"
        );
        let n = values.len() as u64;
        if n == 0 {
            return EliasFano::default();
        }
        let offset = values[0];
        let universe = values[n as usize - 1] - offset + 1;
        let l = if universe > n {
            63 - (universe / n).leading_zeros()
        } else {
            0
        };
        let upper_bits = n + (universe >> l) + 1;
        let mut lower = vec![0u64; ((n * l as u64) / 64 + 2) as usize];
        let mut upper = vec![0u64; (upper_bits / 64 + 2) as usize];
        let mask = if l == 0 { 0 } else { (1u64 << l) - 1 };
        for (i, v) in values.iter().enumerate() {
            let x = v - offset;
            let i = i as u64;
            set_bits(&mut lower, i * l as u64, l, x & mask);
            let p = (x >> l) + i;
            upper[(p / 64) as usize] |= 1 << (p % 64);
        }
        let mut zero_samples = Vec::with_capacity((upper_bits / SAMPLE + 1) as usize);
        let mut zeros = 0u64;
        for p in 0..upper_bits {
            if upper[(p / 64) as usize] & (1 << (p % 64)) == 0 {
                if zeros.is_multiple_of(SAMPLE) {
                    zero_samples.push(p);
                }
                zeros += 1;
            }
        }
        EliasFano {
            n,
            offset,
            universe,
            l,
            lower,
            upper,
            upper_bits,
            zero_samples,
        }
    }

    pub fn len(&self) -> u64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes of heap memory held.
    pub fn heap_bytes(&self) -> usize {
        (self.lower.len() + self.upper.len() + self.zero_samples.len()) * 8
    }

    /// Position of zero number `j` (0-indexed) in the upper bits.
    fn select0(&self, j: u64) -> u64 {
        let k = (j / SAMPLE) as usize;
        let mut pos = self.zero_samples[k];
        let mut r = j - k as u64 * SAMPLE;
        let mut w = (pos / 64) as usize;
        // Zeros at or after `pos` in its word.
        let mut word = !self.upper[w] & (u64::MAX << (pos % 64));
        loop {
            let c = word.count_ones() as u64;
            if r < c {
                pos = w as u64 * 64 + select_in_word(word, r as u32) as u64;
                return pos;
            }
            r -= c;
            w += 1;
            word = !self.upper[w];
        }
    }

    pub fn contains(&self, value: u64) -> bool {
        if value < self.offset || self.n == 0 {
            return false;
        }
        let x = value - self.offset;
        if x >= self.universe {
            return false;
        }
        let high = x >> self.l;
        let low = if self.l == 0 {
            0
        } else {
            x & ((1u64 << self.l) - 1)
        };
        // Bucket `high` starts after `high` zeros.
        let start = if high == 0 {
            0
        } else {
            self.select0(high - 1) + 1
        };
        let mut i = start - high;
        let mut p = start;
        while p < self.upper_bits && self.upper[(p / 64) as usize] & (1 << (p % 64)) != 0 {
            let v = get_bits(&self.lower, i * self.l as u64, self.l);
            if v == low {
                return true;
            }
            if v > low {
                return false;
            }
            i += 1;
            p += 1;
        }
        false
    }

    /// Every value, in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut i = 0u64;
        let mut p = 0u64;
        std::iter::from_fn(move || {
            if i >= self.n {
                return None;
            }
            while self.upper[(p / 64) as usize] & (1 << (p % 64)) == 0 {
                p += 1;
            }
            let high = p - i;
            let v =
                (high << self.l | get_bits(&self.lower, i * self.l as u64, self.l)) + self.offset;
            i += 1;
            p += 1;
            Some(v)
        })
    }

    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(MAGIC)?;
        for v in [
            self.n,
            self.offset,
            self.universe,
            self.l as u64,
            self.upper_bits,
        ] {
            w.write_all(&v.to_le_bytes())?;
        }
        for vec in [&self.lower, &self.upper, &self.zero_samples] {
            w.write_all(&(vec.len() as u64).to_le_bytes())?;
            for x in vec.iter() {
                w.write_all(&x.to_le_bytes())?;
            }
        }
        Ok(())
    }

    pub fn read_from(r: &mut impl Read) -> io::Result<EliasFano> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not a preflight registry snapshot"));
        }
        fn u(r: &mut impl Read) -> io::Result<u64> {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            Ok(u64::from_le_bytes(b))
        }
        let (n, offset, universe, l, upper_bits) = (u(r)?, u(r)?, u(r)?, u(r)?, u(r)?);
        let mut vecs = Vec::with_capacity(3);
        for _ in 0..3 {
            let len = u(r)? as usize;
            if len > (1 << 36) {
                return Err(bad("snapshot vector length out of range"));
            }
            let mut bytes = vec![0u8; len * 8];
            r.read_exact(&mut bytes)?;
            vecs.push(
                bytes
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<u64>>(),
            );
        }
        let zero_samples = vecs.pop().unwrap();
        let upper = vecs.pop().unwrap();
        let lower = vecs.pop().unwrap();
        if l > 63 || (upper.len() as u64) * 64 < upper_bits || (lower.len() as u64) * 64 < n * l {
            return Err(bad("snapshot header does not match its data"));
        }
        Ok(EliasFano {
            n,
            offset,
            universe,
            l: l as u32,
            lower,
            upper,
            upper_bits,
            zero_samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn rng(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn membership_matches_a_btreeset() {
        let mut seed = 7;
        for (n, span) in [
            (0usize, 10u64),
            (1, 10),
            (5, 5),
            (1000, 1_000_000),
            (50_000, 10_000_000_000),
            (20_000, 25_000),
        ] {
            let set: BTreeSet<u64> = (0..n)
                .map(|_| 12_000_000_000 + rng(&mut seed) % span)
                .collect();
            let values: Vec<u64> = set.iter().copied().collect();
            let ef = EliasFano::from_sorted(&values);
            assert_eq!(ef.len(), values.len() as u64);
            for v in &values {
                assert!(ef.contains(*v), "{v} missing (n {n})");
            }
            for _ in 0..20_000 {
                let probe = 12_000_000_000 + rng(&mut seed) % (span + 10) - 5;
                assert_eq!(ef.contains(probe), set.contains(&probe), "{probe} (n {n})");
            }
            assert!(!ef.contains(0) && !ef.contains(u64::MAX));
            assert_eq!(ef.iter().collect::<Vec<_>>(), values);
            let mut bytes = Vec::new();
            ef.write_to(&mut bytes).unwrap();
            assert_eq!(EliasFano::read_from(&mut bytes.as_slice()).unwrap(), ef);
        }
    }

    #[test]
    fn dense_runs_and_neighbours() {
        let values: Vec<u64> = (100..5000).chain(10_000..10_003).chain([1 << 40]).collect();
        let ef = EliasFano::from_sorted(&values);
        for v in 0..12_000 {
            assert_eq!(ef.contains(v), values.contains(&v), "{v}");
        }
        assert!(ef.contains(1 << 40) && !ef.contains((1 << 40) - 1));
    }

    #[test]
    fn corrupt_snapshots_are_refused() {
        assert!(EliasFano::read_from(&mut &b"NOTASNAP........"[..]).is_err());
        let ef = EliasFano::from_sorted(&[1, 2, 3]);
        let mut bytes = Vec::new();
        ef.write_to(&mut bytes).unwrap();
        bytes.truncate(bytes.len() - 3);
        assert!(EliasFano::read_from(&mut bytes.as_slice()).is_err());
    }
}
