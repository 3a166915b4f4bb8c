//! The immutable number set behind a registry list: hashed buckets of one 128-byte
//! (two cache lines) Elias-Fano code each, so a lookup computes its bucket's address from
//! the number alone and reads nothing else. No directory sits between the number and its
//! data, and few instructions depend on the bucket's bits, so the memory loads of
//! consecutive lookups overlap instead of queueing.
//!
//! A number is offset into `[0, 2^u)`, scrambled by a bijection on `u` bits (NANP numbers
//! cluster in (area code, exchange) blocks; scrambled they spread evenly), and the result
//! `h` is cut into a bucket `h / span` and a local value `h % span`. The span is chosen so
//! buckets expect 80% of what one holds; the rare bucket that receives more keeps what fits
//! and flags itself, and the rest live in a sorted overflow list.
//!
//! A bucket: byte g (0..8) of word 0 counts its numbers whose high part falls in groups
//! 0..=g (groups of 2^group_bits high parts; byte 7 is the count), so a lookup jumps to its
//! group and selects within one 64-bit window (with BMI2's PDEP where the CPU has it)
//! instead of scanning the upper bits. The upper bits follow from bit 64, then the lower
//! bits; bit 1023 is the overflow flag. The buckets sit on transparent huge pages where the
//! kernel allows it: at national size a lookup otherwise pays a page walk as well as a miss.
use std::io::{self, Read, Write};

const MAGIC: &[u8; 8] = b"PFPH0002";
/// u64 words in a bucket: two cache lines.
const WORDS: usize = 16;
/// The first bit of the upper bits.
const UPPER: u32 = 64;
/// The last bit of a bucket: set when some of its numbers live in the overflow list.
const FLAG_BIT: u32 = (WORDS * 64) as u32 - 1;
/// High parts are counted in this many groups.
const GROUPS: u64 = 8;
/// Buckets are sized for this fraction of their capacity.
const FILL: f64 = 0.80;
/// Most numbers of one high part compared without a branch.
const UNROLLED: u32 = 4;
/// Lookups whose loads are started together by `contains_many`.
pub const PREFETCH_WINDOW: usize = 16;
/// Most distinct high parts a bucket may have (a group then spans 32 of them).
const MAX_HIGHS: u64 = 256;

const M1: u64 = 0x9E37_79B9_7F4A_7C15;
const M2: u64 = 0xBF58_476D_1CE4_E5B9;

#[repr(C, align(128))]
#[derive(Clone, Copy, Default)]
struct Bucket([u64; WORDS]);

#[derive(Clone, Default)]
pub struct NumberSet {
    n: u64,
    offset: u64,
    /// Bits of the universe the numbers are offset into.
    u: u32,
    /// Local values per bucket.
    span: u64,
    /// Lower-bit width of the Elias-Fano codes.
    l: u32,
    /// Distinct high parts: ceil(span / 2^l).
    highs: u32,
    /// High parts per group: 2^group_bits, the least power of two with at most GROUPS groups.
    group_bits: u32,
    /// Lower-bit fields of UNROLLED numbers side by side: the lowest bit of each, and the
    /// highest (zero when UNROLLED fields do not fit a word, and lookups compare one by one).
    field_low: u64,
    field_high: u64,
    /// Whether this CPU has POPCNT and BMI2 (decided once, at load).
    bmi2: bool,
    /// The buckets, then one zeroed bucket that reads may run into.
    buckets: Vec<Bucket>,
    /// Numbers that did not fit their bucket, sorted.
    overflow: Vec<u64>,
}

impl std::fmt::Debug for NumberSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NumberSet")
            .field("n", &self.n)
            .field("buckets", &self.bucket_count())
            .field("span", &self.span)
            .field("l", &self.l)
            .field("overflow", &self.overflow.len())
            .finish()
    }
}

impl PartialEq for NumberSet {
    fn eq(&self, other: &Self) -> bool {
        (self.n, self.offset, self.u, self.span, self.l)
            == (other.n, other.offset, other.u, other.span, other.l)
            && self.words() == other.words()
            && self.overflow == other.overflow
    }
}

#[inline(always)]
fn mask_of(u: u32) -> u64 {
    u64::MAX >> (64 - u)
}

#[inline(always)]
fn shift_of(u: u32) -> u32 {
    u.div_ceil(2).max(1)
}

fn inverse(m: u64) -> u64 {
    let mut x = m;
    for _ in 0..6 {
        x = x.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(x)));
    }
    x
}

/// A bijection on `[0, 2^u)`.
#[inline(always)]
fn mix(x: u64, mask: u64, s: u32) -> u64 {
    let mut h = x.wrapping_mul(M1) & mask;
    h ^= h >> s;
    h = h.wrapping_mul(M2) & mask;
    h ^ (h >> s)
}

fn unmix(h: u64, u: u32, mask: u64) -> u64 {
    let s = shift_of(u);
    let unshift = |y: u64| {
        let mut x = y;
        for _ in 0..u.div_ceil(s) {
            x = y ^ (x >> s);
        }
        x
    };
    let h = unshift(h).wrapping_mul(inverse(M2)) & mask;
    unshift(h).wrapping_mul(inverse(M1)) & mask
}

use crate::prefetch::hint as prefetch;

/// `width` (at most 64) bits at bit `pos` of `w` (`w` holds at least one word past `pos`).
#[inline(always)]
fn get_bits(w: &[u64], pos: u32, width: u32) -> u64 {
    let i = (pos / 64) as usize;
    let pair = (w[i + 1] as u128) << 64 | w[i] as u128;
    ((pair >> (pos % 64)) as u64) & (((1u128 << width) - 1) as u64)
}

fn set_bits(w: &mut [u64], pos: u32, width: u32, value: u64) {
    let i = (pos / 64) as usize;
    let b = pos % 64;
    w[i] |= value << b;
    if b + width > 64 {
        w[i + 1] |= value >> (64 - b);
    }
}

/// Position within a byte of its r-th set bit, for every byte and r < 8.
static SELECT_IN_BYTE: [[u8; 8]; 256] = {
    let mut t = [[0u8; 8]; 256];
    let mut b = 0;
    while b < 256 {
        let mut r = 0;
        let mut seen = 0;
        while r < 8 {
            if b & (1 << r) != 0 {
                t[b][seen] = r as u8;
                seen += 1;
            }
            r += 1;
        }
        b += 1;
    }
    t
};

const L8: u64 = 0x0101_0101_0101_0101;
const H8: u64 = 0x8080_8080_8080_8080;

/// Position of the r-th (from 0) set bit of `x`, without branches; `r` must be below the
/// number of set bits for the answer to mean anything (it is always in 0..64).
#[inline(always)]
fn select64(x: u64, r: u32) -> u32 {
    let r = (r & 63) as u64;
    let mut s = x - ((x >> 1) & 0x5555_5555_5555_5555);
    s = (s & 0x3333_3333_3333_3333) + ((s >> 2) & 0x3333_3333_3333_3333);
    s = (s + (s >> 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    // Byte i of `cum` counts the set bits of bytes 0..=i.
    let cum = s.wrapping_mul(L8);
    // Bytes whose running count is at most r hold too few bits: they are passed over.
    let passed = (((r * L8) | H8) - cum) & H8;
    let byte = (((passed >> 7).wrapping_mul(L8) >> 56) as u32).min(7);
    let before = ((cum << 8) >> (8 * byte)) & 0xFF;
    let rank = (r.wrapping_sub(before) & 7) as usize;
    let b = ((x >> (8 * byte)) & 0xFF) as usize;
    8 * byte + SELECT_IN_BYTE[b][rank] as u32
}

fn group_bits(highs: u64) -> u32 {
    64 - (highs.div_ceil(GROUPS).max(1) - 1).leading_zeros()
}

/// `field_low` and `field_high` for lower width `l`.
fn fields(l: u32) -> (u64, u64) {
    if l == 0 || l * UNROLLED > 64 {
        return (0, 0);
    }
    let low = (0..UNROLLED).fold(0u64, |acc, i| acc | 1 << (i * l));
    (low, low << (l - 1))
}

fn has_bmi2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("popcnt") && std::arch::is_x86_feature_detected!("bmi2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Bit selection, portable or with BMI2.
trait Select {
    /// Position of the r-th (from 0) set bit of `x`, or 64 when `x` has fewer.
    fn select(x: u64, r: u32) -> u32;
}

struct Portable;
impl Select for Portable {
    #[inline(always)]
    fn select(x: u64, r: u32) -> u32 {
        if x.count_ones() > r {
            select64(x, r)
        } else {
            64
        }
    }
}

#[cfg(target_arch = "x86_64")]
struct Bmi2;
#[cfg(target_arch = "x86_64")]
impl Select for Bmi2 {
    #[inline(always)]
    fn select(x: u64, r: u32) -> u32 {
        // SAFETY: only reached through `contains_bmi2`, which runs where BMI2 was detected.
        let bit = unsafe { std::arch::x86_64::_pdep_u64(1u64 << (r & 63), x) };
        bit.trailing_zeros()
    }
}

/// Most numbers a bucket with `highs` high parts and lower width `l` holds.
fn capacity(highs: u64, l: u32) -> u64 {
    ((FLAG_BIT - UPPER) as u64)
        .saturating_sub(highs)
        .checked_div(l as u64 + 1)
        .unwrap_or(0)
        .min(255)
}

fn lower_width(span: u64, per_bucket: f64) -> u32 {
    let ratio = span as f64 / per_bucket.max(1.0);
    if ratio < 2.0 {
        0
    } else {
        (ratio.log2().floor() as u32).min(63)
    }
}

/// Distinct high parts of local values below `span` with lower width `l`.
fn high_parts(span: u64, l: u32) -> u64 {
    ((span - 1) >> l) + 1
}

/// The layout of `n` numbers in `[0, 2^u)`: span, lower width and high parts, for the
/// widest span (fewest buckets) whose expected count stays within FILL of capacity.
fn layout(n: u64, u: u32) -> (u64, u32, u64) {
    let universe = (1u128 << u) as f64;
    let at = |span: u64| {
        let per_bucket = n as f64 * span as f64 / universe;
        let l = lower_width(span, per_bucket);
        let highs = high_parts(span, l);
        let fits = highs <= MAX_HIGHS && per_bucket <= FILL * capacity(highs, l) as f64;
        (fits, l, highs)
    };
    // One value per bucket always fits.
    let (mut lo, mut hi) = (
        1u64,
        u64::try_from((1u128 << u).min(1 << 63)).unwrap_or(1 << 63),
    );
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if at(mid).0 {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let (_, l, highs) = at(lo);
    (lo, l, highs)
}

/// `len` zeroed values, on transparent huge pages where the kernel offers them for the
/// asking (the advice must come before the pages are first touched).
fn huge_zeroed<T: Copy + Default>(len: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let end = start + len * std::mem::size_of::<T>();
        let (a, b) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if b > a {
            // SAFETY: advice only, on whole pages inside this allocation, before any is touched.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
    }
    v.resize(len, T::default());
    v
}

/// `len` zeroed buckets and the trailing one.
fn zeroed_buckets(len: usize) -> Vec<Bucket> {
    huge_zeroed(len + 1)
}

/// Values a piece may hold before it is split in two: its scratch buffer is this size.
const PIECE: usize = 1 << 25;

/// Sorts scrambled values `hashes` (below 2^u) into bucket order without a second copy of
/// a national list: halved in place by their top bits (two-pointer passes that read and
/// write in order) into pieces of at most PIECE values, each piece scattered by its next 11
/// bits through a scratch buffer, then each of those ranges, which fits in cache, by bucket.
fn group_by_bucket(hashes: &mut [u64], u: u32, span: u64) {
    group_by_bucket_in(hashes, u, span, PIECE)
}

fn group_by_bucket_in(hashes: &mut [u64], u: u32, span: u64, piece_limit: usize) {
    let mut scratch = Vec::new();
    let mut parts_at = Vec::new();
    let mut buckets_at = Vec::new();
    split(hashes, u, piece_limit, &mut |piece, bits| {
        // `bits` low bits of h vary within the piece.
        let shift = bits - bits.min(11);
        let parts = 1usize << (bits - shift);
        let part_of = |h: u64| ((h >> shift) as usize) & (parts - 1);
        scatter_by(piece, parts, part_of, &mut parts_at, &mut scratch);
        for p in 0..parts {
            let part = &mut piece[parts_at[p]..parts_at[p + 1]];
            by_bucket(part, span, &mut buckets_at, &mut scratch);
        }
    });
}

/// Halves `hashes` (whose low `bits` bits vary) by its top varying bit until pieces are
/// small enough, then hands each piece, in order, to `f`.
fn split(hashes: &mut [u64], bits: u32, limit: usize, f: &mut impl FnMut(&mut [u64], u32)) {
    if hashes.len() <= limit || bits <= 11 {
        return f(hashes, bits);
    }
    let bit = 1u64 << (bits - 1);
    let (mut i, mut j) = (0, hashes.len());
    while i < j {
        if hashes[i] & bit == 0 {
            i += 1;
        } else if hashes[j - 1] & bit != 0 {
            j -= 1;
        } else {
            hashes.swap(i, j - 1);
        }
    }
    let (low, high) = hashes.split_at_mut(i);
    split(low, bits - 1, limit, f);
    split(high, bits - 1, limit, f);
}

/// A short run of hashes into bucket order (a counting sort over the buckets it spans).
fn by_bucket(part: &mut [u64], span: u64, starts: &mut Vec<usize>, scratch: &mut Vec<u64>) {
    let (Some(first), Some(last)) = (part.iter().min(), part.iter().max()) else {
        return;
    };
    let (first, last) = (first / span, last / span);
    if first != last {
        let keys = (last - first) as usize + 1;
        scatter_by(part, keys, |h| (h / span - first) as usize, starts, scratch);
    }
}

/// A stable counting sort of `values` by `key` (below `keys`) through `scratch`; afterwards
/// key k's values are at `starts[k]..starts[k + 1]`.
fn scatter_by(
    values: &mut [u64],
    keys: usize,
    key: impl Fn(u64) -> usize,
    starts: &mut Vec<usize>,
    scratch: &mut Vec<u64>,
) {
    starts.clear();
    starts.resize(keys + 1, 0);
    for h in values.iter() {
        starts[key(*h) + 1] += 1;
    }
    for k in 0..keys {
        starts[k + 1] += starts[k];
    }
    scratch.clear();
    scratch.resize(values.len(), 0);
    for h in values.iter() {
        let k = key(*h);
        scratch[starts[k]] = *h;
        starts[k] += 1;
    }
    values.copy_from_slice(scratch);
    // Each key's slot has moved to where the next key starts: move the offsets back.
    starts.copy_within(0..keys, 1);
    starts[0] = 0;
}

impl NumberSet {
    /// Builds from distinct values in any order.
    pub fn build(values: Vec<u64>) -> NumberSet {
        Self::build_with(values, |_| {})
    }

    /// Builds from values in any order, calling `on_duplicate` with each repeat it drops.
    pub fn build_with(mut values: Vec<u64>, mut on_duplicate: impl FnMut(u64)) -> NumberSet {
        let n = values.len() as u64;
        let (Some(&min), Some(&max)) = (values.iter().min(), values.iter().max()) else {
            return NumberSet::default();
        };
        let u = (64 - (max - min).leading_zeros()).max(1);
        let mask = mask_of(u);
        let s = shift_of(u);
        let (span, l, highs) = layout(n, u);
        let cap = capacity(highs, l) as usize;
        let bucket_count = (1u128 << u).div_ceil(span as u128) as usize;

        for v in values.iter_mut() {
            *v = mix(*v - min, mask, s);
        }
        group_by_bucket(&mut values, u, span);
        let mut set = NumberSet::with_layout(n, min, u, span, l, bucket_count);
        let mut rest = values.as_mut_slice();
        for b in 0..bucket_count {
            let end = (b as u64 + 1).saturating_mul(span);
            let len = rest.iter().position(|h| *h >= end).unwrap_or(rest.len());
            let (hs, tail) = std::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            hs.sort_unstable();
            // Equal hashes are equal values (the scramble is a bijection).
            let mut unique = hs.len().min(1);
            for i in 1..hs.len() {
                if hs[i] == hs[unique - 1] {
                    on_duplicate(unmix(hs[i], u, mask).wrapping_add(min));
                } else {
                    hs[unique] = hs[i];
                    unique += 1;
                }
            }
            set.n -= (hs.len() - unique) as u64;
            let hs = &hs[..unique];
            let (kept, extra) = hs.split_at(hs.len().min(cap));
            set.encode(b, kept, !extra.is_empty());
            set.overflow
                .extend(extra.iter().map(|h| unmix(*h, u, mask).wrapping_add(min)));
        }
        set.overflow.sort_unstable();
        set
    }

    /// An empty set of `bucket_count` zeroed buckets laid out by `span` and `l`, with the
    /// fields a lookup derives from them.
    fn with_layout(n: u64, offset: u64, u: u32, span: u64, l: u32, bucket_count: usize) -> Self {
        let highs = high_parts(span, l);
        let (field_low, field_high) = fields(l);
        NumberSet {
            n,
            offset,
            u,
            span,
            l,
            highs: highs as u32,
            group_bits: group_bits(highs),
            field_low,
            field_high,
            bmi2: has_bmi2(),
            buckets: zeroed_buckets(bucket_count),
            overflow: Vec::new(),
        }
    }

    fn encode(&mut self, b: usize, hashes: &[u64], overflowed: bool) {
        let (span, l, highs, group_bits) = (self.span, self.l, self.highs, self.group_bits);
        let w = &mut self.buckets[b].0;
        let count = hashes.len() as u32;
        let lower = UPPER + count + highs;
        let mut cum = [0u64; GROUPS as usize];
        for (j, h) in hashes.iter().enumerate() {
            let local = h % span;
            let high = (local >> l) as u32;
            cum[(high >> group_bits) as usize] += 1;
            let p = UPPER + high + j as u32;
            w[(p / 64) as usize] |= 1 << (p % 64);
            if l > 0 {
                set_bits(w, lower + j as u32 * l, l, local & ((1 << l) - 1));
            }
        }
        let mut running = 0;
        for (g, c) in cum.iter().enumerate() {
            running += c;
            w[0] |= running << (8 * g);
        }
        if overflowed {
            w[WORDS - 1] |= 1 << (FLAG_BIT % 64);
        }
    }

    pub fn len(&self) -> u64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn bucket_count(&self) -> usize {
        self.buckets.len().saturating_sub(1)
    }

    /// Every bucket's words, the trailing zeroed bucket included.
    fn words(&self) -> &[u64] {
        // SAFETY: `Bucket` is `repr(C)` around `[u64; WORDS]` with an alignment that adds no
        // padding (128 bytes = 16 words), so the buckets are `len * WORDS` contiguous words.
        unsafe {
            std::slice::from_raw_parts(
                self.buckets.as_ptr().cast::<u64>(),
                self.buckets.len() * WORDS,
            )
        }
    }

    /// Bytes of heap memory held.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>() + self.overflow.len() * 8
    }

    /// The bucket and local value of `value`, if it is inside the universe.
    #[inline(always)]
    fn locate(&self, value: u64) -> Option<(usize, u64)> {
        let x = value.wrapping_sub(self.offset);
        if self.n == 0 || x > mask_of(self.u) {
            return None;
        }
        let h = mix(x, mask_of(self.u), shift_of(self.u));
        Some(((h / self.span) as usize, h % self.span))
    }

    #[inline]
    pub fn contains(&self, value: u64) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self.bmi2 {
            // SAFETY: `bmi2` is set only where the CPU reports POPCNT and BMI2.
            return unsafe { self.contains_bmi2(value) };
        }
        self.contains_with::<Portable>(value)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt,bmi1,bmi2")]
    unsafe fn contains_bmi2(&self, value: u64) -> bool {
        self.contains_with::<Bmi2>(value)
    }

    /// Few instructions depend on the bucket's data, so while one lookup waits for memory
    /// the CPU can already issue the next one's loads.
    #[inline(always)]
    fn contains_with<S: Select>(&self, value: u64) -> bool {
        let Some((b, local)) = self.locate(value) else {
            return false;
        };
        let w = &self.words()[b * WORDS..(b + 1) * WORDS + 1];
        // The second line's address is known now; asking for it before the first line's
        // bits decide where to read makes the two misses one.
        prefetch(&w[WORDS / 2]);
        let l = self.l;
        let hi = (local >> l) as u32;
        let lo = local & (((1u128 << l) - 1) as u64);
        let g = hi >> self.group_bits;
        // Numbers before group g, from the running counts in word 0 (none before group 0).
        let before = (((w[0] << 8) >> (8 * g)) & 0xFF) as u32;
        let count = (w[0] >> 56) as u32;
        // Group g's upper bits start after its predecessors' zeros and ones; skip the zeros
        // of the high parts of group g below hi.
        let base = UPPER + (g << self.group_bits) + before;
        let window = get_bits(w, base, 64);
        let skip = hi - (g << self.group_bits);
        let at = if skip == 0 {
            0
        } else {
            S::select(!window, skip - 1) + 1
        };
        let run = (!(window >> (at & 63))).trailing_zeros();
        let first = (before + at)
            .wrapping_sub(skip)
            .min(count.saturating_sub(1));
        let lower = UPPER + count + self.highs;
        let found = if self.field_low != 0 {
            // UNROLLED lower-bit fields at once: a field equal to lo becomes zero.
            let x = get_bits(w, lower + first * l, UNROLLED * l) ^ lo.wrapping_mul(self.field_low);
            let zero = x.wrapping_sub(self.field_low) & !x & self.field_high;
            let in_run = (((1u128 << (run.min(UNROLLED) * l)) - 1) as u64) & self.field_high;
            zero & in_run != 0
        } else {
            let last = count.saturating_sub(1);
            (0..UNROLLED)
                .any(|i| i < run && get_bits(w, lower + (first + i).min(last) * l, l) == lo)
        };
        let found = if (at + run >= 64) | (run > UNROLLED) {
            // A group wider than the window, or a long run: walk the upper bits one by one.
            self.walk(w, hi, lo)
        } else {
            found
        };
        // The flag first: it is almost never set, so this branch is predicted right and the
        // next lookup's loads can start before this one's data arrives.
        if w[WORDS - 1] >> 63 != 0 && !found {
            return self.overflow.binary_search(&value).is_ok();
        }
        found
    }

    /// The slow, plain reading of a bucket's code.
    #[cold]
    fn walk(&self, w: &[u64], hi: u32, lo: u64) -> bool {
        self.entries(w)
            .take_while(|(high, _)| *high <= hi)
            .any(|e| e == (hi, lo))
    }

    /// The (high part, lower bits) of each number in bucket `w`, in order.
    fn entries<'a>(&self, w: &'a [u64]) -> impl Iterator<Item = (u32, u64)> + 'a {
        let count = (w[0] >> 56) as u32;
        let l = self.l;
        let lower = UPPER + count + self.highs;
        let mut p = UPPER;
        (0..count).map(move |j| {
            while p < FLAG_BIT && get_bits(w, p, 1) == 0 {
                p += 1;
            }
            let high = p - UPPER - j;
            p += 1;
            (high, get_bits(w, lower + j * l, l))
        })
    }

    /// Starts loading the buckets of `values`, so the misses of many lookups overlap.
    pub fn prefetch(&self, values: &[u64]) {
        let words = self.words();
        for (b, _) in values.iter().filter_map(|v| self.locate(*v)) {
            prefetch(&words[b * WORDS]);
            prefetch(&words[b * WORDS + WORDS / 2]);
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

    /// Calls `f` with every value, in no particular order.
    pub fn for_each(&self, mut f: impl FnMut(u64)) {
        let mask = mask_of(self.u.max(1));
        let words = self.words();
        for b in 0..self.bucket_count() {
            let w = &words[b * WORDS..(b + 1) * WORDS + 1];
            for (high, low) in self.entries(w) {
                let h = b as u64 * self.span + ((high as u64) << self.l | low);
                f(unmix(h, self.u, mask).wrapping_add(self.offset));
            }
        }
        self.overflow.iter().copied().for_each(f);
    }

    /// Every value, sorted.
    pub fn to_sorted_vec(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.n as usize);
        self.for_each(|v| out.push(v));
        out.sort_unstable();
        out
    }

    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(MAGIC)?;
        let head = [
            self.n,
            self.offset,
            self.u as u64,
            self.span,
            self.l as u64,
            self.bucket_count() as u64,
            self.overflow.len() as u64,
        ];
        for v in head {
            w.write_all(&v.to_le_bytes())?;
        }
        let mut buf = Vec::with_capacity(1 << 20);
        for chunk in self.words()[..self.bucket_count() * WORDS].chunks(1 << 17) {
            buf.clear();
            chunk
                .iter()
                .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
            w.write_all(&buf)?;
        }
        for x in &self.overflow {
            w.write_all(&x.to_le_bytes())?;
        }
        Ok(())
    }

    /// Whether a bucket read from a file keeps to its layout: a count within capacity, that
    /// many ones and one zero per high part in its upper bits, running counts that never
    /// fall, and no bits past its lower bits but the flag. Lookups stay inside a bucket
    /// whatever its bits; this keeps a damaged file from answering wrongly.
    fn bucket_is_sound(&self, w: &[u64; WORDS]) -> bool {
        let ones_in = |from: u32, to: u32| -> u32 {
            (from / 64..to.div_ceil(64))
                .map(|i| {
                    let lo = (i * 64).max(from) - i * 64;
                    let hi = ((i + 1) * 64).min(to) - i * 64;
                    let mask = (u64::MAX >> (64 - (hi - lo))) << lo;
                    (w[i as usize] & mask).count_ones()
                })
                .sum()
        };
        let count = (w[0] >> 56) as u32;
        let upper_end = UPPER + count + self.highs;
        let end = upper_end + count * self.l;
        let rising = (0..7).all(|g| (w[0] >> (8 * g)) & 0xFF <= (w[0] >> (8 * (g + 1))) & 0xFF);
        count as u64 <= capacity(self.highs as u64, self.l)
            && rising
            && ones_in(UPPER, upper_end) == count
            && (end >= FLAG_BIT || ones_in(end, FLAG_BIT) == 0)
    }

    /// Reads what `write_to` wrote, checking that every bucket is within its layout, so a
    /// damaged file is refused rather than answering wrongly.
    pub fn read_from(r: &mut impl Read) -> io::Result<NumberSet> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic == super::legacy::MAGIC {
            return Ok(NumberSet::build(super::legacy::read_values(r)?));
        }
        if &magic != MAGIC {
            return Err(bad("not a preflight registry snapshot".into()));
        }
        let mut head = [0u64; 7];
        for v in head.iter_mut() {
            *v = super::legacy::u(r)?;
        }
        let [n, offset, u, span, l, bucket_count, overflow_len] = head;
        if n == 0 {
            return Ok(NumberSet::default());
        }
        let layout_ok = (1..=64).contains(&u)
            && span >= 1
            && (span as u128) <= 1u128 << u
            && l < 64
            && bucket_count as u128 == (1u128 << u).div_ceil(span as u128)
            && bucket_count < (1 << 34)
            && overflow_len <= n;
        if !layout_ok || high_parts(span, l as u32) > MAX_HIGHS {
            return Err(bad(format!(
                "snapshot layout out of range (u {u}, span {span}, l {l}, buckets {bucket_count})"
            )));
        }
        let mut set =
            NumberSet::with_layout(n, offset, u as u32, span, l as u32, bucket_count as usize);
        set.overflow.reserve_exact(overflow_len as usize);
        let mut buf = vec![0u8; WORDS * 8 * 4096];
        let mut held = 0u64;
        let mut buckets = std::mem::take(&mut set.buckets);
        for group in buckets[..bucket_count as usize].chunks_mut(4096) {
            let bytes = &mut buf[..group.len() * WORDS * 8];
            r.read_exact(bytes)?;
            for (bucket, raw) in group.iter_mut().zip(bytes.chunks_exact(WORDS * 8)) {
                for (word, b) in bucket.0.iter_mut().zip(raw.chunks_exact(8)) {
                    *word = u64::from_le_bytes(b.try_into().expect("8 bytes"));
                }
                if !set.bucket_is_sound(&bucket.0) {
                    return Err(bad("snapshot bucket does not match its layout".into()));
                }
                held += bucket.0[0] >> 56;
            }
        }
        set.buckets = buckets;
        for _ in 0..overflow_len {
            set.overflow.push(super::legacy::u(r)?);
        }
        if held + overflow_len != n || !set.overflow.windows(2).all(|p| p[0] < p[1]) {
            return Err(bad(format!(
                "snapshot holds {} numbers, its header says {n}",
                held + overflow_len
            )));
        }
        Ok(set)
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
    fn select_matches_a_loop() {
        let mut seed = 3;
        for _ in 0..10_000 {
            let x = rng(&mut seed) & rng(&mut seed);
            for r in 0..x.count_ones() {
                let mut y = x;
                for _ in 0..r {
                    y &= y - 1;
                }
                assert_eq!(select64(x, r), y.trailing_zeros(), "{x:#x} {r}");
            }
        }
        assert_eq!(select64(u64::MAX, 63), 63);
        assert_eq!(select64(1 << 63, 0), 63);
    }

    #[test]
    fn mix_is_a_bijection() {
        for u in [1u32, 2, 3, 7, 33, 63, 64] {
            let mut seed = u as u64;
            for _ in 0..2000 {
                let x = rng(&mut seed) & mask_of(u);
                let h = mix(x, mask_of(u), shift_of(u));
                assert!(h <= mask_of(u));
                assert_eq!(unmix(h, u, mask_of(u)), x, "u {u}");
            }
        }
        let all: BTreeSet<u64> = (0..256).map(|x| mix(x, 255, shift_of(8))).collect();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn membership_matches_a_btreeset() {
        let mut seed = 7;
        for (n, base, span) in [
            (0usize, 12_000_000_000u64, 10u64),
            (1, 12_000_000_000, 10),
            (5, 12_000_000_000, 5),
            (1000, 12_000_000_000, 1_000_000),
            (50_000, 12_000_000_000, 10_000_000_000),
            (20_000, 12_000_000_000, 25_000),
            (30_000, 0, u64::MAX),
            (3_000, u64::MAX - 5_000, 5_000),
        ] {
            let set: BTreeSet<u64> = (0..n)
                .map(|_| base.wrapping_add(rng(&mut seed) % span))
                .collect();
            let mut values: Vec<u64> = set.iter().copied().collect();
            // Any order will do.
            values.reverse();
            let ns = NumberSet::build(values.clone());
            assert_eq!(ns.len(), set.len() as u64);
            for v in &set {
                assert!(ns.contains(*v), "{v} missing (n {n})");
            }
            let probe = |seed: &mut u64| {
                base.wrapping_add(rng(seed) % span.saturating_add(10))
                    .wrapping_sub(5)
            };
            for _ in 0..20_000 {
                let p = probe(&mut seed);
                assert_eq!(ns.contains(p), set.contains(&p), "{p} (n {n})");
            }
            assert!(!ns.contains(base.wrapping_sub(1)) || set.contains(&base.wrapping_sub(1)));
            let probes: Vec<u64> = (0..1_000).map(|_| probe(&mut seed)).collect();
            // The portable select answers as the BMI2 one does.
            let mut portable = ns.clone();
            portable.bmi2 = false;
            for p in &probes {
                assert_eq!(
                    portable.contains(*p),
                    set.contains(p),
                    "portable {p} (n {n})"
                );
            }
            let mut many = vec![false; probes.len()];
            ns.contains_many(&probes, &mut many);
            assert_eq!(
                many,
                probes.iter().map(|p| set.contains(p)).collect::<Vec<_>>(),
                "contains_many (n {n})"
            );
            assert_eq!(ns.to_sorted_vec(), set.iter().copied().collect::<Vec<_>>());
            let mut bytes = Vec::new();
            ns.write_to(&mut bytes).unwrap();
            assert!(NumberSet::read_from(&mut bytes.as_slice()).unwrap() == ns);
        }
    }

    #[test]
    fn crowded_buckets_overflow_and_stay_exact() {
        let values: Vec<u64> = (100..60_000)
            .chain(70_000..70_003)
            .chain([1 << 40])
            .collect();
        let ns = NumberSet::build(values.clone());
        for v in 0..80_000 {
            assert_eq!(ns.contains(v), values.binary_search(&v).is_ok(), "{v}");
        }
        assert!(ns.contains(1 << 40) && !ns.contains((1 << 40) - 1));
        // Values chosen to scramble into the first few buckets, far past their capacity.
        let u = 20;
        let mut crowded: Vec<u64> = (0..3_000u64).map(|h| unmix(h, u, mask_of(u))).collect();
        crowded.extend([0, mask_of(u)]);
        crowded.sort_unstable();
        crowded.dedup();
        let ns = NumberSet::build(crowded.clone());
        assert!(ns.overflow.len() > 2_000, "{ns:?}");
        for v in 0..=mask_of(u) {
            assert_eq!(ns.contains(v), crowded.binary_search(&v).is_ok(), "{v}");
        }
        assert_eq!(ns.to_sorted_vec(), crowded);
        let mut bytes = Vec::new();
        ns.write_to(&mut bytes).unwrap();
        assert!(NumberSet::read_from(&mut bytes.as_slice()).unwrap() == ns);
    }

    #[test]
    fn grouping_puts_buckets_in_order() {
        let mut seed = 11;
        for (u, span, limit) in [(33u32, 3_728u64, 1_000usize), (20, 7, 50), (12, 100, 10)] {
            let mut hashes: Vec<u64> = (0..20_000).map(|_| rng(&mut seed) & mask_of(u)).collect();
            let mut expected = hashes.clone();
            group_by_bucket_in(&mut hashes, u, span, limit);
            assert!(
                hashes.windows(2).all(|w| w[0] / span <= w[1] / span),
                "u {u}"
            );
            hashes.sort_unstable();
            expected.sort_unstable();
            assert_eq!(hashes, expected, "the same values (u {u})");
        }
    }

    #[test]
    fn repeats_are_dropped_and_reported() {
        let mut dropped = Vec::new();
        let ns = NumberSet::build_with(vec![5, 9, 5, 1 << 35, 9, 5], |d| dropped.push(d));
        dropped.sort_unstable();
        assert_eq!(dropped, vec![5, 5, 9]);
        assert_eq!(ns.len(), 3);
        assert_eq!(ns.to_sorted_vec(), vec![5, 9, 1 << 35]);
        let mut bytes = Vec::new();
        ns.write_to(&mut bytes).unwrap();
        assert!(NumberSet::read_from(&mut bytes.as_slice()).unwrap() == ns);
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        assert!(NumberSet::read_from(&mut &b"NOTASNAP........"[..]).is_err());
        let ns = NumberSet::build((0..1000u64).map(|v| v * 7919).collect());
        let mut bytes = Vec::new();
        ns.write_to(&mut bytes).unwrap();
        let mut short = bytes.clone();
        short.truncate(bytes.len() - 3);
        assert!(NumberSet::read_from(&mut short.as_slice()).is_err());
        let first_bucket = 8 + 7 * 8;
        // A flipped bit in a bucket's upper bits changes its count of ones; one past its
        // lower bits is a bit where none may be; a count over capacity is impossible.
        let count = bytes[first_bucket + 7] as u32;
        let end = UPPER + count + ns.highs + count * ns.l;
        assert!(end < FLAG_BIT, "a bucket with room to spare");
        let past = ((end / 8) as usize, 1u8 << (end % 8));
        for (byte, bit) in [(8, 0x01), (13, 0x80), past, (7, 0x80)] {
            let mut flipped = bytes.clone();
            flipped[first_bucket + byte] ^= bit;
            assert!(
                NumberSet::read_from(&mut flipped.as_slice()).is_err(),
                "byte {byte} bit {bit:#x}"
            );
        }
        let mut head = bytes;
        head[8 + 4 * 8] = 70; // lower width out of range
        assert!(NumberSet::read_from(&mut head.as_slice()).is_err());
    }
}
