//! The few protocol-buffer messages of the ONNX format this crate writes, encoded by hand, and a
//! generic decoder to read a file back.
//!
//! Protocol buffers are a sequence of fields, each a key `field_number << 3 | wire_type` (a
//! varint) followed by the value: a varint (wire type 0), a fixed 4-byte value (5), or a
//! length-prefixed run of bytes (2) — strings, packed data and nested messages alike. That is
//! all an ONNX file needs; the field numbers below are those of `onnx.proto` (ONNX 1.x, stable
//! since IR version 3). Writing them by hand keeps a code generator and its build-time
//! dependencies out of the library, for ~100 lines.

/// A message being written: fields appended in order.
#[derive(Default, Clone, Debug)]
pub struct Message {
    bytes: Vec<u8>,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Message {
    /// An empty message.
    pub fn new() -> Message {
        Message::default()
    }

    /// A varint field (int32, int64, enum; negative values as 10-byte two's complement).
    pub fn int(mut self, field: u32, v: i64) -> Message {
        varint(&mut self.bytes, u64::from(field) << 3);
        varint(&mut self.bytes, v as u64);
        self
    }

    /// A 4-byte float field.
    pub fn float(mut self, field: u32, v: f32) -> Message {
        varint(&mut self.bytes, u64::from(field) << 3 | 5);
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A length-delimited field: bytes, a string or a nested message.
    pub fn bytes(mut self, field: u32, v: &[u8]) -> Message {
        varint(&mut self.bytes, u64::from(field) << 3 | 2);
        varint(&mut self.bytes, v.len() as u64);
        self.bytes.extend_from_slice(v);
        self
    }

    /// A string field.
    pub fn string(self, field: u32, v: &str) -> Message {
        self.bytes(field, v.as_bytes())
    }

    /// A nested message field.
    pub fn message(self, field: u32, m: &Message) -> Message {
        self.bytes(field, &m.bytes)
    }

    /// The number of encoded bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True if nothing is encoded yet.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// One decoded field's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 5.
    Fixed32([u8; 4]),
    /// Wire type 1.
    Fixed64([u8; 8]),
    /// Wire type 2: bytes, a string or a nested message (the reader decides).
    Bytes(&'a [u8]),
}

/// Decodes one level of a message into `(field number, value)` pairs, in file order.
///
/// # Errors
/// A message that ends inside a field or uses an unknown wire type gives `Err` with the offset.
pub fn decode(mut buf: &[u8]) -> std::result::Result<Vec<(u32, Value<'_>)>, String> {
    fn read_varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let total = buf.len();
    let mut fields = Vec::new();
    while !buf.is_empty() {
        let at = total - buf.len();
        let bad = || format!("truncated or malformed protobuf field at byte {at}");
        let key = read_varint(&mut buf).ok_or_else(bad)?;
        let field = u32::try_from(key >> 3).map_err(|_| bad())?;
        let value = match key & 7 {
            0 => Value::Varint(read_varint(&mut buf).ok_or_else(bad)?),
            1 => {
                let (head, rest) = buf.split_at_checked(8).ok_or_else(bad)?;
                buf = rest;
                Value::Fixed64(head.try_into().expect("8 bytes"))
            }
            2 => {
                let len = usize::try_from(read_varint(&mut buf).ok_or_else(bad)?).map_err(|_| bad())?;
                let (head, rest) = buf.split_at_checked(len).ok_or_else(bad)?;
                buf = rest;
                Value::Bytes(head)
            }
            5 => {
                let (head, rest) = buf.split_at_checked(4).ok_or_else(bad)?;
                buf = rest;
                Value::Fixed32(head.try_into().expect("4 bytes"))
            }
            w => return Err(format!("unknown protobuf wire type {w} at byte {at}")),
        };
        fields.push((field, value));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let inner = Message::new().string(1, "x").int(2, -1);
        let m = Message::new().int(1, 300).float(2, 1.5).message(3, &inner).into_bytes();
        // 300 = 0b1_0010_1100: varint bytes 0xAC 0x02.
        assert_eq!(&m[..3], &[0x08, 0xAC, 0x02]);
        let fields = decode(&m).unwrap();
        assert_eq!(fields[0], (1, Value::Varint(300)));
        assert_eq!(fields[1], (2, Value::Fixed32(1.5f32.to_le_bytes())));
        let Value::Bytes(b) = fields[2].1 else { panic!("a nested message") };
        let inner = decode(b).unwrap();
        assert_eq!(inner[0], (1, Value::Bytes(b"x")));
        assert_eq!(inner[1], (2, Value::Varint(u64::MAX))); // −1 as int64
        assert!(decode(&m[..m.len() - 1]).is_err(), "a cut message is an error");
    }
}
