//! Internal reading and writing helpers.
//!
//! Every decoder is written once against [`Reader`], a cursor over a
//! contiguous byte slice. Decoding from a [`Buf`] ([`decode_buf`]) runs it
//! twice: a first pass over a borrowed view of the buffer finds out whether
//! the item is complete and how long it is, without consuming anything (so
//! [`DecodeError::Incomplete`] leaves the buffer untouched); then exactly
//! that many bytes are taken with [`Buf::copy_to_bytes`] (zero-copy for
//! `Bytes` and `BytesMut`) and the second pass produces the value, whose
//! byte fields are [`Bytes`] slices of them.

use std::borrow::Cow;
use std::io::IoSlice;
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes};

use crate::error::{DecodeError, EncodeError};
use crate::varint;

pub(crate) type DResult<T> = Result<T, DecodeError>;
pub(crate) type EResult<T> = Result<T, EncodeError>;

type MakeBytes<'a> = &'a dyn Fn(Range<usize>) -> Bytes;

/// Cursor over a contiguous slice.
///
/// An *unbounded* reader stands for the readable part of a stream: running
/// out of bytes is [`DecodeError::Incomplete`]. A *bounded* reader stands for
/// a structure with a known length (message payload, datagram, properties
/// block): running out of bytes is [`DecodeError::Truncated`].
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of `data[0]` in the outermost slice, for `mk`.
    base: usize,
    bound: Option<&'static str>,
    mk: MakeBytes<'a>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8], mk: MakeBytes<'a>) -> Self {
        Reader {
            data,
            pos: 0,
            base: 0,
            bound: None,
            mk,
        }
    }

    pub(crate) fn bounded(data: &'a [u8], mk: MakeBytes<'a>, context: &'static str) -> Self {
        Reader {
            data,
            pos: 0,
            base: 0,
            bound: Some(context),
            mk,
        }
    }

    fn short(&self) -> DecodeError {
        match self.bound {
            Some(context) => DecodeError::Truncated { context },
            None => DecodeError::Incomplete,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// The next varint, without consuming it.
    pub(crate) fn peek_varint(&self) -> DResult<u64> {
        match varint::decode_slice(&self.data[self.pos..]) {
            Ok((v, _)) => Ok(v),
            Err(DecodeError::Incomplete) => Err(self.short()),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn u8(&mut self) -> DResult<u8> {
        let b = *self.data.get(self.pos).ok_or_else(|| self.short())?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn u16(&mut self) -> DResult<u16> {
        let s = self.slice(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    pub(crate) fn varint(&mut self) -> DResult<u64> {
        match varint::decode_slice(&self.data[self.pos..]) {
            Ok((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            Err(DecodeError::Incomplete) => Err(self.short()),
            Err(e) => Err(e),
        }
    }

    /// Fails unless at least `len` bytes remain.
    pub(crate) fn need(&self, len: u64) -> DResult<()> {
        if len > self.remaining() as u64 {
            Err(self.short())
        } else {
            Ok(())
        }
    }

    pub(crate) fn slice(&mut self, len: u64) -> DResult<&'a [u8]> {
        self.need(len)?;
        let len = len as usize;
        let s = &self.data[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }

    /// `len` bytes as a [`Bytes`] (a slice of the input in the final pass).
    pub(crate) fn bytes(&mut self, len: u64) -> DResult<Bytes> {
        let start = self.base + self.pos;
        self.slice(len)?;
        Ok((self.mk)(start..start + len as usize))
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> Bytes {
        let len = self.remaining() as u64;
        // Cannot fail: exactly the remaining bytes are taken.
        self.bytes(len).unwrap_or_default()
    }

    /// A bounded reader over the next `len` bytes, which are consumed here.
    pub(crate) fn sub(&mut self, len: u64, context: &'static str) -> DResult<Reader<'a>> {
        let start = self.pos;
        let data = self.slice(len)?;
        Ok(Reader {
            data,
            pos: 0,
            base: self.base + start,
            bound: Some(context),
            mk: self.mk,
        })
    }

    /// Error unless everything was consumed.
    pub(crate) fn finish(&self, context: &'static str) -> DResult<()> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { context, count }),
        }
    }
}

/// A contiguous view of all readable bytes of `buf`, borrowed when the
/// buffer is contiguous (`Bytes`, `BytesMut`, `&[u8]`), gathered through
/// [`Buf::chunks_vectored`] otherwise.
fn view<B: Buf + ?Sized>(buf: &B) -> Cow<'_, [u8]> {
    let chunk = buf.chunk();
    let remaining = buf.remaining();
    if chunk.len() >= remaining {
        return Cow::Borrowed(&chunk[..remaining]);
    }
    let mut slices = [IoSlice::new(&[]); 64];
    let n = buf.chunks_vectored(&mut slices);
    let mut v = Vec::with_capacity(remaining);
    for s in &slices[..n] {
        v.extend_from_slice(s);
    }
    v.truncate(remaining);
    Cow::Owned(v)
}

/// Run `parse` over the front of `buf`; on success advance `buf` past the
/// item. On error nothing is consumed.
pub(crate) fn decode_buf<B, T, F>(buf: &mut B, parse: F) -> DResult<T>
where
    B: Buf + ?Sized,
    F: for<'r> Fn(&mut Reader<'r>) -> DResult<T>,
{
    let len = {
        let view = view(buf);
        let dummy = |_: Range<usize>| Bytes::new();
        let mut r = Reader::new(&view, &dummy);
        parse(&mut r)?;
        r.position()
    };
    let backing = buf.copy_to_bytes(len);
    let mk = |range: Range<usize>| backing.slice(range);
    let mut r = Reader::new(&backing, &mk);
    parse(&mut r)
}

/// Run `parse` over the front of `buf` without consuming anything. Byte
/// fields produced by `parse` are empty: use it only to look at integers.
pub(crate) fn peek_buf<B, T, F>(buf: &B, parse: F) -> DResult<T>
where
    B: Buf + ?Sized,
    F: for<'r> FnOnce(&mut Reader<'r>) -> DResult<T>,
{
    let view = view(buf);
    let dummy = |_: Range<usize>| Bytes::new();
    let mut r = Reader::new(&view, &dummy);
    parse(&mut r)
}

/// Run `parse` over the whole of `data` (a datagram, a property block): the
/// reader is bounded and every byte must be consumed.
pub(crate) fn decode_all<T, F>(data: &Bytes, context: &'static str, parse: F) -> DResult<T>
where
    F: for<'r> FnOnce(&mut Reader<'r>) -> DResult<T>,
{
    let mk = |range: Range<usize>| data.slice(range);
    let mut r = Reader::bounded(data, &mk, context);
    let v = parse(&mut r)?;
    r.finish(context)?;
    Ok(v)
}

pub(crate) fn put_varint<B: BufMut + ?Sized>(buf: &mut B, v: u64) {
    varint::encode(v, buf);
}

/// Length-prefixed bytes: `Length (vi64), Value (..)`.
pub(crate) fn put_len_bytes<B: BufMut + ?Sized>(buf: &mut B, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.put_slice(b);
}

pub(crate) fn check_len(field: &'static str, len: usize, limit: usize) -> EResult<()> {
    if len > limit {
        Err(EncodeError::TooLong {
            field,
            limit: limit as u64,
            actual: len as u64,
        })
    } else {
        Ok(())
    }
}

pub(crate) fn check_decoded_len(field: &'static str, len: u64, limit: usize) -> DResult<()> {
    if len > limit as u64 {
        Err(DecodeError::TooLong {
            field,
            limit: limit as u64,
            actual: len,
        })
    } else {
        Ok(())
    }
}
