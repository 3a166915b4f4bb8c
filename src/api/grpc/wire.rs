//! The protobuf wire format of the two hot messages, by hand: `CheckBatchRequest` read in
//! place (every string a borrow of the received bytes) and `CheckBatchResponse` written
//! straight from the engine's outcomes.
//!
//! Why: through prost, each item of a batch cost a heap allocation for every string of the
//! request and of the answer (contact, correlation_id, policy, normalized_contact, each
//! matched id, each time zone and subdivision), and the answer was built as structs only to
//! be encoded; that was most of the service's CPU a check (docs/benchmarks.md, issue 20).
//! The contract is decision.proto's: `tests` compare both directions with prost, on random
//! and on damaged messages. Whatever this reader refuses is judged again by prost, so a
//! caller's message is accepted or refused exactly as prost would, with prost's words.
use super::convert::{channel_arg, direction_arg, purpose_arg, seconds_nanos_to_ms};
use crate::engine::{CheckOutcome, CheckRequest};
use crate::model::ContactRef;
use crate::policy::RecordId;
use crate::proto as pb;

/// Why a message could not be read (the caller hears prost's own account of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

type Read<T> = Result<T, Malformed>;

/// prost's nesting budget: a message or group inside another spends one.
const RECURSION_LIMIT: u32 = 100;

/// A `CheckRequest` as it arrived: the fields of decision.proto, strings borrowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckFields<'a> {
    pub contact: &'a str,
    pub channel: i32,
    pub purpose: i32,
    pub category: &'a str,
    pub direction: i32,
    pub policy: &'a str,
    pub default_region: &'a str,
    /// `at` as (seconds, nanos), when the message held the field.
    pub at: Option<(i64, i32)>,
    pub correlation_id: &'a str,
    pub postal_code: &'a str,
    pub subject: &'a str,
}

impl<'a> CheckFields<'a> {
    /// The same fields, read off prost's struct (for the calls that arrive through prost).
    pub fn of(r: &'a pb::CheckRequest) -> CheckFields<'a> {
        CheckFields {
            contact: &r.contact,
            channel: r.channel,
            purpose: r.purpose,
            category: &r.category,
            direction: r.direction,
            policy: &r.policy,
            default_region: &r.default_region,
            at: r.at.as_ref().map(|t| (t.seconds, t.nanos)),
            correlation_id: &r.correlation_id,
            postal_code: &r.postal_code,
            subject: &r.subject,
        }
    }

    /// The engine's request: enums checked, the time in milliseconds.
    pub fn request(&self) -> CheckRequest<'a> {
        CheckRequest {
            contact: self.contact,
            channel: channel_arg(self.channel),
            purpose: purpose_arg(self.purpose),
            category: self.category,
            direction: direction_arg(self.direction),
            policy: self.policy,
            default_region: self.default_region,
            at: self.at.map(|(s, n)| seconds_nanos_to_ms(s, n)).into(),
            correlation_id: self.correlation_id,
            postal_code: self.postal_code,
            subject: self.subject,
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Read<u64> {
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().take(10).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                // The tenth byte may carry only the top bit of a u64 (as prost checks).
                if i == 9 && b >= 2 {
                    return Err(Malformed);
                }
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(Malformed)
    }

    /// A field's key: (field number, wire type).
    fn key(&mut self) -> Read<(u32, u8)> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(Malformed);
        }
        let wire = (key & 7) as u8;
        let field = (key >> 3) as u32;
        if wire > 5 || field == 0 {
            return Err(Malformed);
        }
        Ok((field, wire))
    }

    fn bytes(&mut self) -> Read<&'a [u8]> {
        let len = self.varint()?;
        if len > self.buf.len() as u64 {
            return Err(Malformed);
        }
        let (head, rest) = self.buf.split_at(len as usize);
        self.buf = rest;
        Ok(head)
    }

    fn string(&mut self, wire: u8) -> Read<&'a str> {
        expect(wire, LEN)?;
        std::str::from_utf8(self.bytes()?).map_err(|_| Malformed)
    }

    fn int32(&mut self, wire: u8) -> Read<i32> {
        expect(wire, VARINT)?;
        Ok(self.varint()? as i32)
    }

    /// Skips a field this reader does not keep, as prost does (groups included).
    fn skip(&mut self, field: u32, wire: u8, depth: u32) -> Read<()> {
        if depth == 0 {
            return Err(Malformed);
        }
        match wire {
            VARINT => {
                self.varint()?;
            }
            FIXED64 => self.advance(8)?,
            LEN => {
                self.bytes()?;
            }
            START_GROUP => loop {
                let (inner, inner_wire) = self.key()?;
                if inner_wire == END_GROUP {
                    if inner != field {
                        return Err(Malformed);
                    }
                    break;
                }
                self.skip(inner, inner_wire, depth - 1)?;
            },
            FIXED32 => self.advance(4)?,
            _ => return Err(Malformed),
        }
        Ok(())
    }

    fn advance(&mut self, n: usize) -> Read<()> {
        if self.buf.len() < n {
            return Err(Malformed);
        }
        self.buf = &self.buf[n..];
        Ok(())
    }
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

fn expect(wire: u8, want: u8) -> Read<()> {
    if wire == want { Ok(()) } else { Err(Malformed) }
}

/// How many checks a `CheckBatchRequest` holds, from its framing alone (a capacity to
/// reserve: a malformed message is counted as far as it reads, and `read_batch` refuses it).
pub fn count_checks(buf: &[u8]) -> usize {
    let mut r = Reader { buf };
    let mut n = 0;
    while !r.buf.is_empty() {
        let Ok((field, wire)) = r.key() else { break };
        n += usize::from(field == 1);
        if r.skip(field, wire, RECURSION_LIMIT).is_err() {
            break;
        }
    }
    n
}

/// Reads a `CheckBatchRequest`, handing each check to `each` in order.
pub fn read_batch<'a>(buf: &'a [u8], mut each: impl FnMut(CheckFields<'a>)) -> Read<()> {
    let mut r = Reader { buf };
    while !r.buf.is_empty() {
        let (field, wire) = r.key()?;
        if field == 1 {
            expect(wire, LEN)?;
            let body = r.bytes()?;
            each(read_check(body, RECURSION_LIMIT - 1)?);
        } else {
            r.skip(field, wire, RECURSION_LIMIT)?;
        }
    }
    Ok(())
}

/// Reads a `CheckRequest` sent on its own (a unary Check).
pub fn read_check_request(buf: &[u8]) -> Read<CheckFields<'_>> {
    read_check(buf, RECURSION_LIMIT)
}

fn read_check(buf: &[u8], depth: u32) -> Read<CheckFields<'_>> {
    let mut c = CheckFields::default();
    let mut r = Reader { buf };
    while !r.buf.is_empty() {
        let (field, wire) = r.key()?;
        match field {
            1 => c.contact = r.string(wire)?,
            2 => c.channel = r.int32(wire)?,
            3 => c.purpose = r.int32(wire)?,
            4 => c.category = r.string(wire)?,
            5 => c.direction = r.int32(wire)?,
            6 => c.policy = r.string(wire)?,
            7 => c.default_region = r.string(wire)?,
            8 => {
                expect(wire, LEN)?;
                if depth == 0 {
                    return Err(Malformed);
                }
                let body = r.bytes()?;
                // A second `at` merges into the first, field by field (protobuf's rule).
                let at = c.at.get_or_insert((0, 0));
                read_timestamp(body, at, depth - 1)?;
            }
            9 => c.correlation_id = r.string(wire)?,
            10 => c.postal_code = r.string(wire)?,
            11 => c.subject = r.string(wire)?,
            _ => r.skip(field, wire, depth)?,
        }
    }
    Ok(c)
}

fn read_timestamp(buf: &[u8], at: &mut (i64, i32), depth: u32) -> Read<()> {
    let mut r = Reader { buf };
    while !r.buf.is_empty() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                expect(wire, VARINT)?;
                at.0 = r.varint()? as i64;
            }
            2 => at.1 = r.int32(wire)?,
            _ => r.skip(field, wire, depth)?,
        }
    }
    Ok(())
}

/// Writes protobuf fields into a byte buffer.
struct Writer<'w> {
    out: &'w mut Vec<u8>,
}

impl Writer<'_> {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field << 3 | u32::from(wire)));
    }

    /// A scalar field, left out when zero (proto3).
    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, VARINT);
            self.varint(v);
        }
    }

    /// A string field, left out when empty (proto3).
    fn str(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.repeated_str(field, s);
        }
    }

    /// One element of a repeated string field: written even when empty.
    fn repeated_str(&mut self, field: u32, s: &str) {
        self.key(field, LEN);
        self.varint(s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    /// `prefix` then `n` in decimal, as one string field: no String in between.
    fn prefixed_decimal(&mut self, field: u32, prefix: &[&str], n: u64) {
        let mut buf = [0u8; 20];
        let digits = crate::model::ids::decimal(n, &mut buf);
        let len: usize = prefix.iter().map(|p| p.len()).sum::<usize>() + digits.len();
        self.key(field, LEN);
        self.varint(len as u64);
        self.out.reserve(len);
        for p in prefix {
            self.out.extend_from_slice(p.as_bytes());
        }
        self.out.extend_from_slice(digits);
    }
}

/// The wire size of a varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A `CheckBatchResponse` written one answer at a time, as the engine decides them.
pub struct BatchWriter {
    out: Vec<u8>,
}

impl BatchWriter {
    /// Appends to `out`.
    pub fn new(out: Vec<u8>) -> BatchWriter {
        BatchWriter { out }
    }

    pub fn push(&mut self, o: &CheckOutcome<'_>) {
        // The answer is written in place behind a one-byte length (most answers are under
        // 128 bytes); a longer one is moved up to make room for its longer length.
        let mut w = Writer { out: &mut self.out };
        w.key(1, LEN);
        let at = self.out.len();
        self.out.push(0);
        write_check(o, &mut Writer { out: &mut self.out });
        let len = self.out.len() - at - 1;
        if len < 0x80 {
            self.out[at] = len as u8;
        } else {
            let mut prefix = Vec::with_capacity(10);
            Writer { out: &mut prefix }.varint(len as u64);
            self.out.splice(at..at + 1, prefix);
        }
    }

    /// The message, with the batch's `index_seq` last.
    pub fn finish(mut self, index_seq: u64) -> Vec<u8> {
        Writer { out: &mut self.out }.uint(2, index_seq);
        self.out
    }
}

/// Writes the `CheckResponse` of `o` (a unary Check's answer) into `out`.
pub fn write_check_response(o: &CheckOutcome<'_>, out: &mut Vec<u8>) {
    write_check(o, &mut Writer { out });
}

fn write_check(o: &CheckOutcome<'_>, w: &mut Writer<'_>) {
    let d = &o.decision;
    let verdict = if d.allowed() {
        pb::Verdict::Allow
    } else {
        pb::Verdict::Block
    };
    w.uint(1, verdict as i32 as u64);
    if !d.reasons.is_empty() {
        // Packed; every Reason value is a one-byte varint, but count them as prost would.
        let code = |r| super::convert::reason_pb(r) as i32 as i64 as u64;
        let len: usize = d.reasons.iter().map(|r| varint_len(code(r))).sum();
        w.key(2, LEN);
        w.varint(len as u64);
        for r in d.reasons.iter() {
            w.varint(code(r));
        }
    }
    match &o.contact {
        Some(ContactRef::Phone(p)) => w.prefixed_decimal(3, &["+"], *p),
        Some(other) => w.str(3, &other.text()),
        None => {}
    }
    w.uint(4, d.index_seq);
    w.str(5, o.correlation_id);
    for m in d.matched.as_slice() {
        match m {
            RecordId::Consent(s) => w.prefixed_decimal(6, &["cn-"], *s),
            RecordId::Dnc(s) => w.prefixed_decimal(6, &["dnc-"], *s),
            RecordId::Attempt(s) => w.prefixed_decimal(6, &["at-"], *s),
            RecordId::Registry(l) => w.prefixed_decimal(6, &["registry:", l.list, "@v"], l.version),
        }
    }
    if let Some(p) = &o.problem {
        w.str(7, p);
    }
    w.str(8, o.policy);
    w.uint(
        9,
        o.index_age_ms.map(|a| a.max(0) as u64).unwrap_or(u64::MAX),
    );
    if let Some(ms) = d.next_allowed_at {
        let t = super::convert::ms_to_ts(ms);
        let len = if t.seconds != 0 {
            1 + varint_len(t.seconds as u64)
        } else {
            0
        } + if t.nanos != 0 {
            1 + varint_len(t.nanos as i64 as u64)
        } else {
            0
        };
        w.key(10, LEN);
        w.varint(len as u64);
        w.uint(1, t.seconds as u64);
        w.uint(2, t.nanos as i64 as u64);
    }
    if let Some(place) = o.place {
        write_place(&place, w);
    }
}

/// Fields 11 to 13 of one place (location, calling hours id), as written.
type PlaceBytes = (crate::calling::Location, u64, Vec<u8>);

const PLACES_CACHED: usize = 256;

thread_local! {
    /// The place fields of recent places: a list's numbers share a few hundred places, and
    /// writing a place's zones and subdivisions afresh was a tenth of writing an answer.
    static PLACES: std::cell::RefCell<Vec<Option<PlaceBytes>>> =
        std::cell::RefCell::new(vec![None; PLACES_CACHED]);
}

/// Fields 11 (time_zones), 12 (subdivision) and 13 (subdivisions) of `place`.
fn write_place(place: &crate::calling::Place<'_>, w: &mut Writer<'_>) {
    let hours = place.hours_id();
    let slot = place.location.mixed(hours) as usize % PLACES_CACHED;
    PLACES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((loc, h, bytes)) = &cache[slot]
            && *loc == place.location
            && *h == hours
        {
            w.out.extend_from_slice(bytes);
            return;
        }
        let mut bytes = Vec::with_capacity(64);
        let mut fresh = Writer { out: &mut bytes };
        for z in place.zone_names() {
            fresh.repeated_str(11, z);
        }
        fresh.str(12, place.subdivision().unwrap_or_default());
        for s in place.subdivisions() {
            fresh.repeated_str(13, s);
        }
        w.out.extend_from_slice(&bytes);
        cache[slot] = Some((place.location, hours, bytes));
    });
}

#[cfg(test)]
mod tests;
