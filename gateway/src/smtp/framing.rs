//! Framing of the inbound byte stream: where a command line ends, and where message data ends.
//!
//! Both are ours rather than smtp-proto's receivers. smtp-proto 0.2.5's `DataReceiver` let
//! `<CRLF>.<CR><CR><LF>` end the data (SMTP smuggling: a second message hidden in the first),
//! did not count the CRLF of the DATA command as the start of the first line (`.<CRLF>` right
//! after `354` was data, `..x` kept its dot), and its line receiver checked the length limit
//! only for lines split across reads. Here:
//! - **Only `<CRLF>.<CRLF>` ends DATA.** Any other mix of CR, LF and dot is data; the session
//!   turns bare CR and LF into CRLF afterwards, so the next hop cannot see another end either.
//! - A line that begins (after a CRLF) with a dot loses that dot (RFC 5321 4.5.2).
//! - Command lines are cut at LF; one longer than `MAX_COMMAND_LINE` is dropped whole, with one
//!   error when its end arrives, and never buffered beyond the limit.

use memchr::{memchr, memmem};

/// The longest command line accepted, CRLF included. RFC 5321 4.5.3.1.4 asks for at least 512
/// octets; 4096 leaves room for long ESMTP parameters.
pub const MAX_COMMAND_LINE: usize = 4096;

/// Where message data goes: kept, or counted and dropped (after the size limit).
pub trait DataSink {
    fn put(&mut self, bytes: &[u8]);
}

impl DataSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Drops everything (message data after the size limit was passed).
pub struct Discard;

impl DataSink for Discard {
    fn put(&mut self, _: &[u8]) {}
}

/// Reads DATA up to `<CRLF>.<CRLF>`, removing the stuffing dots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataReader {
    state: DotState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DotState {
    /// Just after a CRLF (or at the start: the CRLF of the DATA command ends the line before).
    LineStart,
    /// Inside a line; `cr`: the last byte was a CR.
    Text { cr: bool },
    /// A dot at the start of a line, not yet passed on.
    Dot,
    /// `<CRLF>.<CR>`: one LF from the end.
    DotCr,
}

impl Default for DataReader {
    fn default() -> Self {
        Self::new()
    }
}

impl DataReader {
    pub fn new() -> Self {
        Self { state: DotState::LineStart }
    }

    /// Feeds `input` to the reader, passing data on to `out`. Returns `Some(n)` when the
    /// end-of-data mark ends within the first `n` bytes (the rest is not consumed), `None` when
    /// all of `input` was data.
    pub fn feed(&mut self, input: &[u8], out: &mut impl DataSink) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                DotState::LineStart => {
                    if input[i] == b'.' {
                        self.state = DotState::Dot;
                        i += 1;
                    } else {
                        self.state = DotState::Text { cr: false };
                    }
                }
                DotState::Dot => {
                    if input[i] == b'\r' {
                        self.state = DotState::DotCr;
                        i += 1;
                    } else {
                        // A stuffing dot (or a dot a careless client did not double): dropped.
                        self.state = DotState::Text { cr: false };
                    }
                }
                DotState::DotCr => {
                    if input[i] == b'\n' {
                        self.state = DotState::LineStart;
                        return Some(i + 1);
                    }
                    // `.<CR>` and something else: a line that had a leading dot; the CR is data.
                    out.put(b"\r");
                    self.state = DotState::Text { cr: true };
                }
                DotState::Text { cr } => {
                    let rest = &input[i..];
                    match memchr(b'\n', rest) {
                        Some(lf) => {
                            out.put(&rest[..=lf]);
                            let crlf = if lf > 0 { rest[lf - 1] == b'\r' } else { cr };
                            self.state =
                                if crlf { DotState::LineStart } else { DotState::Text { cr: false } };
                            i += lf + 1;
                        }
                        None => {
                            out.put(rest);
                            self.state = DotState::Text { cr: rest.last() == Some(&b'\r') };
                            i = input.len();
                        }
                    }
                }
            }
        }
        None
    }
}

/// The same decoding as `DataReader`, written plainly over the whole input at once: the oracle
/// for tests and fuzzing. `data` is what follows the DATA command's line; the result is the
/// message and how many bytes of `data` it took (mark included), or `None` without a mark.
pub fn decode_data_plainly(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut framed = b"\r\n".to_vec();
    framed.extend_from_slice(data);
    let end = memmem::find(&framed, b"\r\n.\r\n")?;
    let body = &framed[2..end + 2];
    let lines: Vec<&[u8]> = if body.is_empty() {
        Vec::new()
    } else {
        // `body` ends with CRLF; the empty piece after it is dropped.
        let mut v: Vec<&[u8]> = split_crlf(body);
        v.pop();
        v
    };
    let mut out = Vec::with_capacity(body.len());
    for line in lines {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
    }
    Some((out, end + 5 - 2))
}

fn split_crlf(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for pos in memmem::find_iter(bytes, b"\r\n") {
        out.push(&bytes[start..pos]);
        start = pos + 2;
    }
    out.push(&bytes[start..]);
    out
}

/// Cuts command lines out of the byte stream, however the reads split them.
#[derive(Default)]
pub struct LineReader {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// `partial` was handed out as a complete line: clear it before the next one.
    taken: bool,
    /// The line being read is too long: its bytes are dropped up to its end.
    overlong: bool,
}

/// One step of `LineReader::next`.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed<'a> {
    /// A whole line, its LF included.
    Line(&'a [u8]),
    /// A line longer than `MAX_COMMAND_LINE` just ended (its bytes were dropped).
    TooLong,
    /// The input ended inside a line; it was kept (or dropped, if too long).
    Partial,
}

impl LineReader {
    /// Takes the next line from `input`; returns how many bytes of it were consumed.
    pub fn next<'a>(&'a mut self, input: &'a [u8]) -> (usize, Framed<'a>) {
        if std::mem::take(&mut self.taken) {
            self.partial.clear();
        }
        let Some(lf) = memchr(b'\n', input) else {
            if self.overlong || self.partial.len() + input.len() > MAX_COMMAND_LINE {
                self.overlong = true;
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(input);
            }
            return (input.len(), Framed::Partial);
        };
        let used = lf + 1;
        if std::mem::take(&mut self.overlong) || self.partial.len() + used > MAX_COMMAND_LINE {
            self.partial.clear();
            return (used, Framed::TooLong);
        }
        if self.partial.is_empty() {
            return (used, Framed::Line(&input[..used]));
        }
        self.partial.extend_from_slice(&input[..used]);
        self.taken = true;
        (used, Framed::Line(&self.partial))
    }

    /// A line has begun and not ended yet.
    pub fn in_line(&self) -> bool {
        self.overlong || (!self.taken && !self.partial.is_empty())
    }

    /// Forgets any partial line (after STARTTLS: nothing from before the handshake survives).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// A numeric argument of 2^64 - 1 or more: smtp-proto 0.2.5 saturates, then starts over from
/// the next digit, so `SIZE=99999999999999999999999` reaches us as a small number (and 2^64 - 1
/// itself as "no number"). Returns true when `line` is a MAIL command with such a SIZE, or a
/// BDAT command with such a chunk size; the session refuses those itself.
pub fn has_oversized_number(line: &[u8]) -> bool {
    let starts = |verb: &[u8]| line.len() >= 5 && line[..5].eq_ignore_ascii_case(verb);
    let (bdat, mail) = (starts(b"BDAT "), starts(b"MAIL "));
    // Every command line passes here: only MAIL and BDAT lines are looked at further.
    if !bdat && !mail {
        return false;
    }
    let upper = line.to_ascii_uppercase();
    let digits_after = |at: usize| -> &[u8] {
        let rest = &upper[at..];
        let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        &rest[..n]
    };
    let overflows = |digits: &[u8]| {
        let trimmed = &digits[digits.iter().take_while(|&&b| b == b'0').count()..];
        std::str::from_utf8(trimmed)
            .is_ok_and(|s| !s.is_empty() && !s.parse::<u64>().is_ok_and(|n| n < u64::MAX))
    };
    if bdat {
        let start = 5 + upper[5..].iter().take_while(|&&b| b == b' ').count();
        return overflows(digits_after(start));
    }
    memmem::find_iter(&upper, b" SIZE=").any(|at| overflows(digits_after(at + 6)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one after another; the message and the bytes left after the mark.
    fn read(chunks: &[&[u8]]) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut r = DataReader::new();
        let mut out = Vec::new();
        for (k, chunk) in chunks.iter().enumerate() {
            if let Some(n) = r.feed(chunk, &mut out) {
                let mut rest = chunk[n..].to_vec();
                chunks[k + 1..].iter().for_each(|c| rest.extend_from_slice(c));
                return Some((out, rest));
            }
        }
        None
    }

    #[test]
    fn only_crlf_dot_crlf_ends_the_data() {
        for variant in [
            &b"\n.\n"[..],
            b"\r.\r",
            b"\r\n.\n",
            b"\n.\r\n",
            b"\r\n.\r",
            b"\r.\r\n",
            b"\r\n.\r\r\n",
            b"\r\n.\r\r\r\n",
        ] {
            let mut data = b"Subject: outer\r\n\r\nhello".to_vec();
            data.extend_from_slice(variant);
            data.extend_from_slice(b"MAIL FROM:<ceo@corp.test>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n");
            let (msg, rest) = read(&[&data]).unwrap();
            assert_eq!(rest, b"QUIT\r\n", "variant {variant:?}");
            assert!(msg.ends_with(b"DATA\r\nforged\r\n"), "variant {variant:?}: {msg:?}");
            assert_eq!(decode_data_plainly(&data).unwrap().0, msg, "variant {variant:?}");
        }
    }

    #[test]
    fn the_data_commands_crlf_starts_the_first_line() {
        assert_eq!(read(&[b".\r\nNOOP\r\n"]), Some((vec![], b"NOOP\r\n".to_vec())));
        assert_eq!(read(&[b"..x\r\n.\r\n"]), Some((b".x\r\n".to_vec(), vec![])));
    }

    #[test]
    fn stuffing_dots_are_removed_however_the_reads_split() {
        let data = b"a\r\n..b\r\n.c\r\n\r\n.\r\n";
        for split in 0..data.len() {
            let (head, tail) = data.split_at(split);
            let (msg, rest) = read(&[head, tail]).unwrap();
            assert_eq!(msg, b"a\r\n.b\r\nc\r\n\r\n", "split at {split}");
            assert!(rest.is_empty());
        }
        assert_eq!(read(&[b"no end\r\n"]), None);
    }

    #[test]
    fn plain_decoder_agrees_on_byte_by_byte_reads() {
        let data = b"x\r\n.\r\r.\n\r\n..\r\r\n.\r\n";
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        let (msg, rest) = read(&bytes).unwrap();
        let (plain, used) = decode_data_plainly(data).unwrap();
        assert_eq!((msg, rest.len()), (plain, data.len() - used));
    }

    #[test]
    fn lines_are_cut_at_lf_and_overlong_ones_dropped_whole() {
        let mut r = LineReader::default();
        assert_eq!(r.next(b"EHLO a\r\nNO"), (8, Framed::Line(b"EHLO a\r\n")));
        assert_eq!(r.next(b"NO"), (2, Framed::Partial));
        assert!(r.in_line());
        assert_eq!(r.next(b"OP\r\n"), (4, Framed::Line(b"NOOP\r\n")));
        assert!(!r.in_line());
        let long = vec![b'x'; MAX_COMMAND_LINE];
        assert_eq!(r.next(&long), (MAX_COMMAND_LINE, Framed::Partial));
        assert_eq!(r.next(b"yy"), (2, Framed::Partial));
        assert_eq!(r.next(b"\r\nQUIT\r\n"), (2, Framed::TooLong));
        assert_eq!(r.next(b"QUIT\r\n"), (6, Framed::Line(b"QUIT\r\n")));
        let mut whole = vec![b'x'; MAX_COMMAND_LINE + 1];
        whole.push(b'\n');
        assert_eq!(r.next(&whole), (whole.len(), Framed::TooLong));
    }

    #[test]
    fn numbers_past_64_bits_are_found() {
        assert!(has_oversized_number(b"MAIL FROM:<a@b> SIZE=99999999999999999999999\r\n"));
        assert!(has_oversized_number(b"mail from:<a@b> size=18446744073709551616\r\n"));
        assert!(has_oversized_number(b"MAIL FROM:<a@b> SIZE=18446744073709551615\r\n"));
        assert!(!has_oversized_number(b"MAIL FROM:<a@b> SIZE=18446744073709551614\r\n"));
        assert!(!has_oversized_number(b"MAIL FROM:<a@b> SIZE=000000000000000000000001\r\n"));
        assert!(has_oversized_number(b"BDAT 99999999999999999999999 LAST\r\n"));
        assert!(!has_oversized_number(b"BDAT 18446744073709551614 LAST\r\n"));
        assert!(!has_oversized_number(b"RCPT TO:<a@b> SIZE=99999999999999999999999\r\n"));
    }
}
