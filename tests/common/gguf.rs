//! A GGUF header editor for crafted files: where each metadata value and tensor record lies, and patches
//! that overwrite one in place (same length, so every offset after it stays valid).

/// A tensor's record in the header: the byte offsets of its parts.
pub struct TensorAt {
    /// The name's bytes.
    pub name: usize,
    /// The first dimension (each is a u64).
    pub dims: usize,
    /// Number of dimensions.
    pub nd: usize,
    /// The ggml type field (u32).
    pub ty: usize,
    /// The data offset field (u64, relative to `Header::data`).
    pub offset: usize,
}

/// Where each part of a GGUF header lies, for patching.
pub struct Header {
    /// Metadata: key, byte offset of the value, type.
    pub values: Vec<(String, usize, u32)>,
    pub tensors: Vec<(String, TensorAt)>,
    /// Where tensor data starts.
    pub data: usize,
}

fn u32_at(b: &[u8], at: &mut usize) -> u32 {
    let v = u32::from_le_bytes(b[*at..*at + 4].try_into().unwrap());
    *at += 4;
    v
}

fn u64_at(b: &[u8], at: &mut usize) -> u64 {
    let v = u64::from_le_bytes(b[*at..*at + 8].try_into().unwrap());
    *at += 8;
    v
}

fn skip(t: u32, at: &mut usize, b: &[u8]) {
    match t {
        0 | 1 | 7 => *at += 1,
        2 | 3 => *at += 2,
        4..=6 => *at += 4,
        10..=12 => *at += 8,
        8 => *at += u64_at(b, at) as usize,
        9 => {
            let it = u32_at(b, at);
            for _ in 0..u64_at(b, at) {
                skip(it, at, b);
            }
        }
        _ => panic!("unknown GGUF value type {t}"),
    }
}

/// Reads the header of a well-formed GGUF v3 file.
pub fn parse(b: &[u8]) -> Header {
    assert_eq!(&b[..4], b"GGUF");
    let mut at = 4;
    assert_eq!(u32_at(b, &mut at), 3, "GGUF version");
    let n_tensors = u64_at(b, &mut at);
    let n_kv = u64_at(b, &mut at);
    let mut values = Vec::new();
    let mut alignment = 32;
    for _ in 0..n_kv {
        let n = u64_at(b, &mut at) as usize;
        let key = String::from_utf8_lossy(&b[at..at + n]).into_owned();
        at += n;
        let t = u32_at(b, &mut at);
        if key == "general.alignment" {
            alignment = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        }
        values.push((key, at, t));
        skip(t, &mut at, b);
    }
    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        let n = u64_at(b, &mut at) as usize;
        let name_at = at;
        let name = String::from_utf8_lossy(&b[at..at + n]).into_owned();
        at += n;
        let nd = u32_at(b, &mut at) as usize;
        let dims = at;
        at += 8 * nd;
        let ty = at;
        at += 4;
        let offset = at;
        at += 8;
        tensors.push((
            name,
            TensorAt {
                name: name_at,
                dims,
                nd,
                ty,
                offset,
            },
        ));
    }
    Header {
        values,
        tensors,
        data: at.div_ceil(alignment) * alignment,
    }
}

impl Header {
    /// The offset and type of metadata value `key`.
    pub fn value(&self, key: &str) -> (usize, u32) {
        let v = self.values.iter().find(|v| v.0 == key);
        let (_, at, t) = v.unwrap_or_else(|| panic!("the file has no {key}"));
        (*at, *t)
    }

    pub fn tensor(&self, name: &str) -> &TensorAt {
        let t = self.tensors.iter().find(|t| t.0 == name);
        &t.unwrap_or_else(|| panic!("the file has no tensor {name}"))
            .1
    }

    /// A tensor's data offset as the file has it.
    pub fn tensor_offset(&self, b: &[u8], name: &str) -> u64 {
        let off = self.tensor(name).offset;
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }
}

pub fn set_u32(b: &mut [u8], h: &Header, key: &str, v: u32) {
    let (at, t) = h.value(key);
    assert_eq!(t, 4, "{key} is a u32");
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn set_f32(b: &mut [u8], h: &Header, key: &str, v: f32) {
    let (at, t) = h.value(key);
    assert_eq!(t, 6, "{key} is an f32");
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Overwrites a string value with one of the same length.
pub fn set_string(b: &mut [u8], h: &Header, key: &str, to: &str) {
    let (at, t) = h.value(key);
    assert_eq!(t, 8, "{key} is a string");
    let n = u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
    assert_eq!(n, to.len());
    b[at + 8..at + 8 + n].copy_from_slice(to.as_bytes());
}

pub fn set_type(b: &mut [u8], h: &Header, tensor: &str, ggml_type: u32) {
    let ty = h.tensor(tensor).ty;
    b[ty..ty + 4].copy_from_slice(&ggml_type.to_le_bytes());
}

pub fn set_offset(b: &mut [u8], h: &Header, tensor: &str, offset: u64) {
    let off = h.tensor(tensor).offset;
    b[off..off + 8].copy_from_slice(&offset.to_le_bytes());
}

/// Sets dimension `i` of a tensor.
pub fn set_dim(b: &mut [u8], h: &Header, tensor: &str, i: usize, v: u64) {
    let t = h.tensor(tensor);
    assert!(i < t.nd);
    b[t.dims + 8 * i..t.dims + 8 * i + 8].copy_from_slice(&v.to_le_bytes());
}

/// Renames a tensor to a name of the same length.
pub fn rename(b: &mut [u8], h: &Header, tensor: &str, to: &str) {
    assert_eq!(tensor.len(), to.len());
    let at = h.tensor(tensor).name;
    b[at..at + to.len()].copy_from_slice(to.as_bytes());
}
