//! Partitioned Elias-Fano: a static sorted set of u64. The universe is cut into chunks of
//! 2^k values holding about a hundred numbers each; each chunk is its own Elias-Fano code
//! (about 2 + log2(chunk / count) bits a number), stored contiguously, so a lookup reads a
//! directory entry and then one or two neighbouring cache lines.
use std::io::{self, Read, Write};

const MAGIC: &[u8; 8] = b"PFPE0002";
/// Chunks are sized for about this many numbers each.
const TARGET_PER_CHUNK: u64 = 128;
/// Lookups whose loads are started together.
pub const PREFETCH_WINDOW: usize = 16;
/// Bits of a chunk header: its count (32) and its lower-bit width (8).
const HEADER_BITS: u64 = 40;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EliasFano {
    n: u64,
    offset: u64,
    universe: u64,
    /// log2 of the chunk size.
    k: u32,
    /// Word index of each chunk in `bits` (chunks start on a word); chunk c spans
    /// dir[c]..dir[c + 1]. Four bytes an entry keeps the directory cache-resident.
    dir: Vec<u32>,
    bits: Vec<u64>,
}

/// A zeroed array. (Transparent huge pages were tried for these arrays and measured no
/// faster on this virtual machine, whose nested paging keeps the TLB walk either way.)
fn zeroed(len: usize) -> Vec<u64> {
    vec![0u64; len]
}

/// Asks the CPU to start loading the cache line holding `r`; no effect on results.
#[inline(always)]
fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it neither reads nor writes memory as far as the program
    // can observe, and the pointer comes from a live reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (r as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
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

fn bit(words: &[u64], pos: u64) -> bool {
    words[(pos / 64) as usize] & (1 << (pos % 64)) != 0
}

/// Position of the r-th (0-indexed) set bit of `word`.
fn select_in_word(mut word: u64, r: u32) -> u32 {
    for _ in 0..r {
        word &= word - 1;
    }
    word.trailing_zeros()
}

/// The position just after the h-th zero at or after `pos` (`pos` itself when h is 0).
fn skip_zeros(words: &[u64], mut pos: u64, mut h: u64) -> u64 {
    if h == 0 {
        return pos;
    }
    loop {
        let b = pos % 64;
        let zeros = !words[(pos / 64) as usize] >> b;
        let c = zeros.count_ones() as u64;
        if h <= c {
            return pos + select_in_word(zeros, (h - 1) as u32) as u64 + 1;
        }
        h -= c;
        pos += 64 - b;
    }
}

/// Lower-bit width for `count` values in a chunk of 2^k.
fn lower_width(k: u32, count: u64) -> u32 {
    let span = 1u64 << k;
    if span > count {
        63 - (span / count).leading_zeros()
    } else {
        0
    }
}

fn chunk_bits(k: u32, count: u64) -> u64 {
    if count == 0 {
        return 0;
    }
    let l = lower_width(k, count);
    HEADER_BITS + count + ((1u64 << k) >> l) + 1 + count * l as u64
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
        let ideal = (universe as u128 * TARGET_PER_CHUNK as u128 / n as u128).max(2) as u64;
        let k = (63 - ideal.leading_zeros()).clamp(1, 40);
        let chunks = (universe - 1) >> k;
        let mut counts = vec![0u64; chunks as usize + 1];
        for v in values {
            counts[((v - offset) >> k) as usize] += 1;
        }
        let mut dir: Vec<u32> = Vec::with_capacity(counts.len() + 1);
        let mut words = 0u64;
        let word_index = |w: u64| u32::try_from(w).expect("a registry list of more than 32 GB");
        for c in &counts {
            dir.push(word_index(words));
            words += chunk_bits(k, *c).div_ceil(64);
        }
        dir.push(word_index(words));
        let mut bits = zeroed(words as usize + 2);
        let mut i = 0usize;
        for (c, &count) in counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let start = dir[c] as u64 * 64;
            let l = lower_width(k, count);
            set_bits(&mut bits, start, 32, count);
            set_bits(&mut bits, start + 32, 8, l as u64);
            let upper = start + HEADER_BITS;
            let upper_len = count + ((1u64 << k) >> l) + 1;
            let lower = upper + upper_len;
            let low_mask = if l == 0 { 0 } else { (1u64 << l) - 1 };
            for j in 0..count {
                let local = (values[i] - offset) & ((1u64 << k) - 1);
                let p = upper + (local >> l) + j;
                bits[(p / 64) as usize] |= 1 << (p % 64);
                set_bits(&mut bits, lower + j * l as u64, l, local & low_mask);
                i += 1;
            }
        }
        EliasFano {
            n,
            offset,
            universe,
            k,
            dir,
            bits,
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
        self.dir.len() * 4 + self.bits.len() * 8
    }

    #[inline]
    pub fn contains(&self, value: u64) -> bool {
        if value < self.offset || self.n == 0 {
            return false;
        }
        let x = value - self.offset;
        if x >= self.universe {
            return false;
        }
        let c = (x >> self.k) as usize;
        if self.dir[c] == self.dir[c + 1] {
            return false;
        }
        let start = self.dir[c] as u64 * 64;
        let count = get_bits(&self.bits, start, 32);
        let l = get_bits(&self.bits, start + 32, 8) as u32;
        let local = x & ((1u64 << self.k) - 1);
        let high = local >> l;
        let low = if l == 0 { 0 } else { local & ((1u64 << l) - 1) };
        let upper = start + HEADER_BITS;
        let lower = upper + count + ((1u64 << self.k) >> l) + 1;
        let mut p = skip_zeros(&self.bits, upper, high);
        let mut j = p - upper - high;
        while j < count && bit(&self.bits, p) {
            let v = get_bits(&self.bits, lower + j * l as u64, l);
            if v >= low {
                return v == low;
            }
            j += 1;
            p += 1;
        }
        false
    }

    /// The chunk of `value`, if `value` is inside the universe.
    #[inline]
    fn chunk_of(&self, value: u64) -> Option<usize> {
        let x = value.checked_sub(self.offset)?;
        (self.n > 0 && x < self.universe).then_some((x >> self.k) as usize)
    }

    /// Starts loading what looking up `values` will read (directory entries, then chunks),
    /// so the cache misses of many lookups overlap instead of queueing one behind another.
    /// At most 16 values at a time are worth it.
    pub fn prefetch(&self, values: &[u64]) {
        for c in values.iter().filter_map(|v| self.chunk_of(*v)) {
            prefetch(&self.dir[c]);
        }
        for c in values.iter().filter_map(|v| self.chunk_of(*v)) {
            let w = self.dir[c] as usize;
            if let Some(word) = self.bits.get(w) {
                prefetch(word);
            }
            if let Some(word) = self.bits.get(w + 8) {
                prefetch(word);
            }
        }
    }

    /// Membership of many values at once, written to `out`, with their loads overlapped.
    pub fn contains_many(&self, values: &[u64], out: &mut [bool]) {
        assert_eq!(values.len(), out.len(), "one answer per value");
        for (vs, os) in values
            .chunks(PREFETCH_WINDOW)
            .zip(out.chunks_mut(PREFETCH_WINDOW))
        {
            self.prefetch(vs);
            for (v, o) in vs.iter().zip(os.iter_mut()) {
                *o = self.contains(*v);
            }
        }
    }

    /// Every value, in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let chunks = self.dir.len().saturating_sub(1);
        (0..chunks).flat_map(move |c| {
            let start = self.dir[c] as u64 * 64;
            let count = if self.dir[c] == self.dir[c + 1] {
                0
            } else {
                get_bits(&self.bits, start, 32)
            };
            let l = if count == 0 {
                0
            } else {
                get_bits(&self.bits, start + 32, 8) as u32
            };
            let upper = start + HEADER_BITS;
            let lower = upper + count + ((1u64 << self.k) >> l) + 1;
            let base = self.offset + ((c as u64) << self.k);
            let mut p = upper;
            (0..count).map(move |j| {
                while !bit(&self.bits, p) {
                    p += 1;
                }
                let high = p - upper - j;
                p += 1;
                base + (high << l | get_bits(&self.bits, lower + j * l as u64, l))
            })
        })
    }

    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(MAGIC)?;
        for v in [self.n, self.offset, self.universe, self.k as u64] {
            w.write_all(&v.to_le_bytes())?;
        }
        w.write_all(&(self.dir.len() as u64).to_le_bytes())?;
        for x in &self.dir {
            w.write_all(&x.to_le_bytes())?;
        }
        w.write_all(&(self.bits.len() as u64).to_le_bytes())?;
        for x in &self.bits {
            w.write_all(&x.to_le_bytes())?;
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
        let (n, offset, universe, k) = (u(r)?, u(r)?, u(r)?, u(r)?);
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
        let dir: Vec<u32> = array::<4>(r)?.into_iter().map(u32::from_le_bytes).collect();
        let bits: Vec<u64> = array::<8>(r)?.into_iter().map(u64::from_le_bytes).collect();
        let consistent = n == 0
            || ((1..=40).contains(&k)
                && dir.len() as u64 == ((universe - 1) >> k) + 2
                && dir.last().is_some_and(|end| (*end as usize) < bits.len()));
        if !consistent {
            return Err(bad("snapshot header does not match its data"));
        }
        Ok(EliasFano {
            n,
            offset,
            universe,
            k: k as u32,
            dir,
            bits,
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
            let probes: Vec<u64> = (0..1_000)
                .map(|_| 12_000_000_000 + rng(&mut seed) % (span + 10) - 5)
                .collect();
            let mut many = vec![false; probes.len()];
            ef.contains_many(&probes, &mut many);
            assert_eq!(
                many,
                probes.iter().map(|p| set.contains(p)).collect::<Vec<_>>(),
                "contains_many (n {n})"
            );
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
