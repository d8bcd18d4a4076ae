//! A bounded walk over a GGUF header before candle's reader sees it.
//!
//! candle's `Content::read` trusts every length in the header: a crafted file whose string or array length
//! says 2^60 makes it try to allocate that much, and the process aborts before any check of ours can run.
//! This walk reads the same fields (GGUF v1 to v3) without allocating by them: every count and length is
//! checked against the bytes left in the file first, so a header that cannot be what it says is refused
//! with the field and offset at fault.

use std::io::{Read, Seek, SeekFrom};

/// Deepest nesting of arrays accepted (GGUF writers use one level; tokenizer merges are strings).
const MAX_DEPTH: u32 = 4;
/// GGML's limit on tensor dimensions.
const MAX_DIMS: u32 = 4;

struct Walk<R> {
    r: R,
    pos: u64,
    len: u64,
    v1: bool,
}

impl<R: Read + Seek> Walk<R> {
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        if self.left() < N as u64 {
            return Err(format!(
                "{what} at byte {}: the file ends first (truncated)",
                self.pos
            ));
        }
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("{what} at byte {}: {e}", self.pos))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.bytes::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.bytes::<8>(what).map(u64::from_le_bytes)
    }

    /// A count or length (u32 in GGUF v1, u64 after).
    fn count(&mut self, what: &str) -> Result<u64, String> {
        if self.v1 {
            self.u32(what).map(u64::from)
        } else {
            self.u64(what)
        }
    }

    /// Skips `n` bytes that must all be in the file.
    fn skip(&mut self, n: u64, what: &str) -> Result<(), String> {
        if n > self.left() {
            return Err(format!(
                "{what} at byte {}: says {n} bytes, but only {} are left in the file",
                self.pos,
                self.left()
            ));
        }
        self.r
            .seek(SeekFrom::Current(n as i64))
            .map_err(|e| format!("{what}: {e}"))?;
        self.pos += n;
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<(), String> {
        let n = self.count(what)?;
        self.skip(n, what)
    }

    /// Reads a key's name (kept short for messages).
    fn key(&mut self) -> Result<String, String> {
        let at = self.pos;
        let n = self.count("a metadata key's length")?;
        if n > self.left() || n > 65_536 {
            return Err(format!(
                "the metadata key at byte {at} says it is {n} bytes long; the file cannot hold that"
            ));
        }
        let mut b = vec![0u8; n as usize];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("the metadata key at byte {at}: {e}"))?;
        self.pos += n;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<(), String> {
        let fixed = |ty: u32| match ty {
            0 | 1 | 7 => Some(1u64),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match ty {
            8 => self.string(&format!("{key} (a string)")),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!("{key}: arrays nested deeper than {MAX_DEPTH}"));
                }
                let inner = self.u32(&format!("{key} (its element type)"))?;
                let n = self.count(&format!("{key} (its length)"))?;
                match (inner, fixed(inner)) {
                    (_, Some(size)) => {
                        let bytes = n
                            .checked_mul(size)
                            .ok_or_else(|| format!("{key}: an array of {n} elements overflows"))?;
                        self.skip(bytes, key)
                    }
                    (8 | 9, None) => {
                        // Each element takes at least its own length field.
                        if n > self.left() / 4 {
                            return Err(format!(
                                "{key}: an array of {n} elements, but only {} bytes are left in the file",
                                self.left()
                            ));
                        }
                        for _ in 0..n {
                            self.value(inner, key, depth + 1)?;
                        }
                        Ok(())
                    }
                    (t, None) => Err(format!("{key}: unknown array element type {t}")),
                }
            }
            t => match fixed(t) {
                Some(size) => self.skip(size, key),
                None => Err(format!("{key}: unknown value type {t}")),
            },
        }
    }
}

/// Walks the header of the GGUF file read by `r` (`len` bytes long). Errors name the field and where it is.
pub fn check<R: Read + Seek>(r: R, len: u64) -> Result<(), String> {
    let mut w = Walk {
        r,
        pos: 0,
        len,
        v1: false,
    };
    if &w.bytes::<4>("the magic bytes")? != b"GGUF" {
        return Err("not a GGUF file (it does not start with the GGUF magic bytes)".into());
    }
    let version = w.u32("the version")?;
    if !(1..=3).contains(&version) {
        return Err(format!(
            "GGUF version {version} is not one this reader knows (1 to 3)"
        ));
    }
    w.v1 = version == 1;
    let tensors = w.count("the tensor count")?;
    let kvs = w.count("the metadata count")?;
    // A metadata entry takes at least 13 bytes, a tensor entry at least 24.
    if kvs > w.left() / 13 {
        return Err(format!(
            "the header says {kvs} metadata entries; the file ({len} bytes) cannot hold that many"
        ));
    }
    if tensors > w.left() / 24 {
        return Err(format!(
            "the header says {tensors} tensors; the file ({len} bytes) cannot hold that many"
        ));
    }
    for _ in 0..kvs {
        let key = w.key()?;
        let ty = w.u32(&format!("{key} (its type)"))?;
        w.value(ty, &key, 0)?;
    }
    for i in 0..tensors {
        let at = w.pos;
        let name = w.key().map_err(|e| format!("tensor #{i}: {e}"))?;
        let dims = w.u32(&format!("tensor {name} (its dimension count)"))?;
        if dims == 0 || dims > MAX_DIMS {
            return Err(format!(
                "tensor {name} (byte {at}) has {dims} dimensions; GGUF tensors have 1 to {MAX_DIMS}"
            ));
        }
        let mut elements: u64 = 1;
        for _ in 0..dims {
            let d = w.count(&format!("tensor {name} (a dimension)"))?;
            elements = elements.checked_mul(d).ok_or_else(|| {
                format!("tensor {name}: its dimensions multiply past 2^64 elements")
            })?;
        }
        w.u32(&format!("tensor {name} (its type)"))?;
        w.u64(&format!("tensor {name} (its offset)"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn header(kvs: &[u8], n_kv: u64, n_tensors: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b.extend(kvs);
        b
    }

    fn kv_string(key: &str, len: u64, body: &[u8]) -> Vec<u8> {
        let mut b = (key.len() as u64).to_le_bytes().to_vec();
        b.extend(key.as_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(len.to_le_bytes());
        b.extend(body);
        b
    }

    fn run(b: &[u8]) -> Result<(), String> {
        check(Cursor::new(b), b.len() as u64)
    }

    #[test]
    fn a_small_valid_header_passes() {
        let b = header(&kv_string("general.name", 3, b"abc"), 1, 0);
        assert_eq!(run(&b), Ok(()));
    }

    #[test]
    fn lengths_the_file_cannot_hold_are_refused_without_allocating() {
        let b = header(&kv_string("general.name", 1 << 60, b"abc"), 1, 0);
        let e = run(&b).unwrap_err();
        assert!(
            e.contains("general.name") && e.contains("only 3 are left"),
            "{e}"
        );
        let e = run(&header(&[], u64::MAX, 0)).unwrap_err();
        assert!(e.contains("metadata entries"), "{e}");
        let e = run(&header(&[], 0, u64::MAX)).unwrap_err();
        assert!(e.contains("tensors"), "{e}");
        let mut arr = (5u64).to_le_bytes().to_vec();
        arr.extend(b"x.arr");
        arr.extend(9u32.to_le_bytes());
        arr.extend(8u32.to_le_bytes());
        arr.extend((1u64 << 61).to_le_bytes());
        let e = run(&header(&arr, 1, 0)).unwrap_err();
        assert!(e.contains("x.arr"), "{e}");
        assert!(run(b"GGU").unwrap_err().contains("truncated"));
        assert!(run(&[0u8; 64]).unwrap_err().contains("magic"));
    }
}
