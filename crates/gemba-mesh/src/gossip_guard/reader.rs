//! Reading chitchat's wire format with every length and count checked
//! against what is left before anything is allocated.

use super::*;

pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], Refusal> {
        if self.buf.len() < n {
            return Err(Refusal::Malformed("cut short"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub(super) fn u8(&mut self) -> Result<u8, Refusal> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, Refusal> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub(super) fn u64(&mut self) -> Result<u64, Refusal> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    pub(super) fn str(&mut self) -> Result<&'a str, Refusal> {
        let len = self.u16()? as usize;
        std::str::from_utf8(self.take(len)?)
            .map_err(|_| Refusal::Malformed("a string is not UTF-8"))
    }
    /// A chitchat id: node id, generation, gossip address.
    pub(super) fn node(&mut self) -> Result<(&'a str, u64), Refusal> {
        let id = self.str()?;
        let generation = self.u64()?;
        match self.u8()? {
            4 => self.take(4)?,
            6 => self.take(16)?,
            _ => return Err(Refusal::Malformed("an address is neither IPv4 nor IPv6")),
        };
        self.u16()?;
        Ok((id, generation))
    }
}
