//! Compressed blocks of consecutive records (change-log events, audit records with their
//! personal parts): what the embedded store keeps once a run of records is complete.
//!
//! Stored records are JSON that repeats itself (field names, the same list names, a hash
//! that is the next record's `prev_hash`); compressed together they take a fraction of their
//! size, and a block is one B-tree value where each record was one before.
//!
//! Layout: `FORMAT`, the record count (u32 LE), then one zstd frame holding, for each
//! record, its main bytes and its optional second part, each length-prefixed (varint; the
//! second part's length is stored plus one, zero meaning absent).

const FORMAT: u8 = 1;

/// Most bytes a block may hold uncompressed: a block's most records at the largest a write
/// takes, with room to spare; a frame claiming more is damaged.
const MAX_RAW: usize = 256 << 20;

/// zstd's fast end: the store's writer thread compresses every block, and level 1 keeps
/// most of the gain at a fraction of the default level's CPU.
const LEVEL: i32 = 1;

/// One stored record: its JSON, and for an audit record its erasable personal part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub main: Vec<u8>,
    pub extra: Option<Vec<u8>>,
}

impl Item {
    pub fn new(main: Vec<u8>) -> Item {
        Item { main, extra: None }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*at)
            .ok_or_else(|| "block ends inside a length".to_string())?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("a length longer than 64 bits".into())
}

fn take<'a>(buf: &'a [u8], at: &mut usize, len: u64) -> Result<&'a [u8], String> {
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| at.checked_add(l))
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| format!("a record of {len} bytes runs past the block's end"))?;
    let s = &buf[*at..end];
    *at = end;
    Ok(s)
}

/// The stored form of `items` (at least one).
pub fn encode<'a>(items: impl IntoIterator<Item = &'a Item>) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    let mut n: u32 = 0;
    for it in items {
        put_varint(&mut raw, it.main.len() as u64);
        raw.extend_from_slice(&it.main);
        match &it.extra {
            Some(e) => {
                put_varint(&mut raw, e.len() as u64 + 1);
                raw.extend_from_slice(e);
            }
            None => put_varint(&mut raw, 0),
        }
        n += 1;
    }
    let mut out = Vec::with_capacity(raw.len() / 4 + 16);
    out.push(FORMAT);
    out.extend_from_slice(&n.to_le_bytes());
    let frame =
        zstd::bulk::compress(&raw, LEVEL).map_err(|e| format!("compressing a block: {e}"))?;
    out.extend_from_slice(&frame);
    Ok(out)
}

/// How many records a stored block holds, from its header alone.
pub fn count(block: &[u8]) -> Result<usize, String> {
    match block {
        [FORMAT, a, b, c, d, ..] => Ok(u32::from_le_bytes([*a, *b, *c, *d]) as usize),
        [other, ..] => Err(format!("block format {other} is not one this build reads")),
        [] => Err("empty block".into()),
    }
}

/// The records of a stored block, in order.
pub fn decode(block: &[u8]) -> Result<Vec<Item>, String> {
    let n = count(block)?;
    let frame = block.get(5..).ok_or("block header cut short")?;
    // The frame records its size; refuse anything claiming more than a block can hold.
    let size = zstd::zstd_safe::get_frame_content_size(frame)
        .map_err(|e| format!("block frame unreadable: {e:?}"))?
        .unwrap_or(MAX_RAW as u64);
    if size > MAX_RAW as u64 {
        return Err(format!("block frame claims {size} bytes"));
    }
    let raw = zstd::bulk::decompress(frame, size as usize)
        .map_err(|e| format!("block does not decompress: {e}"))?;
    let mut items = Vec::with_capacity(n);
    let mut at = 0;
    for _ in 0..n {
        let len = get_varint(&raw, &mut at)?;
        let main = take(&raw, &mut at, len)?.to_vec();
        let extra = match get_varint(&raw, &mut at)? {
            0 => None,
            l => Some(take(&raw, &mut at, l - 1)?.to_vec()),
        };
        items.push(Item { main, extra });
    }
    if at != raw.len() {
        return Err(format!(
            "{} bytes left over after {n} records",
            raw.len() - at
        ));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_records_with_and_without_a_second_part() {
        let items: Vec<Item> = (0..128)
            .map(|i| Item {
                main: format!("{{\"seq\":{i},\"kind\":\"consent_recorded\"}}").into_bytes(),
                extra: (i % 3 == 0).then(|| vec![i as u8; i]),
            })
            .collect();
        let block = encode(&items).unwrap();
        assert_eq!(count(&block).unwrap(), 128);
        assert_eq!(decode(&block).unwrap(), items);
        // Repetitive records shrink.
        let raw: usize = items.iter().map(|i| i.main.len()).sum();
        assert!(block.len() < raw / 2, "{} of {raw}", block.len());
        // An empty second part is not an absent one.
        let one = [Item {
            main: vec![],
            extra: Some(vec![]),
        }];
        assert_eq!(decode(&encode(&one).unwrap()).unwrap(), one);
    }

    #[test]
    fn damaged_blocks_are_refused_not_misread() {
        let items = vec![Item::new(b"{\"a\":1}".to_vec()); 4];
        let block = encode(&items).unwrap();
        assert!(decode(&block[..block.len() - 3]).is_err());
        let mut wrong_count = block.clone();
        wrong_count[1] = 5;
        assert!(decode(&wrong_count).is_err());
        let mut future = block.clone();
        future[0] = 9;
        assert!(decode(&future).unwrap_err().contains("format 9"));
        assert!(decode(&[]).is_err());
    }
}
