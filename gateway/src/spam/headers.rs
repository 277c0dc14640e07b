//! Edits of a message's raw header block (CRLF line endings, as stored): dropping fields and
//! prefixing the Subject. Raw edits keep every other byte as the sender wrote it.

use std::borrow::Cow;

/// One header field: its name and where it lies (including its folded lines and final CRLF).
struct Field<'a> {
    name: &'a [u8],
    value: &'a [u8],
    start: usize,
    end: usize,
}

/// The fields of the header block, in order. Stops at the empty line (or at the first line
/// that is not a field, where the body must begin).
fn fields(data: &[u8]) -> Vec<Field<'_>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let line_end = |from: usize| {
            data[from..].windows(2).position(|w| w == b"\r\n").map_or(data.len(), |i| from + i + 2)
        };
        let mut end = line_end(pos);
        if end - pos <= 2 {
            break; // the empty line
        }
        let Some(colon) = data[pos..end].iter().position(|&b| b == b':') else { break };
        // Continuation lines start with white space.
        while end < data.len() && matches!(data[end], b' ' | b'\t') {
            end = line_end(end);
        }
        out.push(Field {
            name: data[pos..pos + colon].trim_ascii(),
            value: &data[pos + colon + 1..end],
            start: pos,
            end,
        });
        pos = end;
    }
    out
}

/// The header fields as text, in order, with their folding undone (for people to read).
pub fn unfolded(data: &[u8]) -> Vec<(String, String)> {
    fields(data)
        .iter()
        .map(|f| {
            let value = String::from_utf8_lossy(f.value);
            let value: Vec<&str> = value.split("\r\n").map(str::trim).filter(|l| !l.is_empty()).collect();
            (String::from_utf8_lossy(f.name).into_owned(), value.join(" "))
        })
        .collect()
}

/// Removes the fields for which `drop(name, value)` is true.
pub fn remove_fields(data: &[u8], drop: impl Fn(&[u8], &[u8]) -> bool) -> Cow<'_, [u8]> {
    let doomed: Vec<(usize, usize)> =
        fields(data).iter().filter(|f| drop(f.name, f.value)).map(|f| (f.start, f.end)).collect();
    if doomed.is_empty() {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len());
    let mut pos = 0;
    for (start, end) in doomed {
        out.extend_from_slice(&data[pos..start]);
        pos = end;
    }
    out.extend_from_slice(&data[pos..]);
    Cow::Owned(out)
}

/// RFC 8601 section 5: Authentication-Results fields that claim to come from us (our
/// authserv-id) were not written by us and must go before we add our own.
pub fn remove_forged_auth_results<'a>(data: &'a [u8], authserv_id: &str) -> Cow<'a, [u8]> {
    remove_fields(data, |name, value| {
        name.eq_ignore_ascii_case(b"Authentication-Results") && {
            let value = String::from_utf8_lossy(value);
            let id = value.trim_start().split([';', ' ', '\t', '\r']).next().unwrap_or_default();
            id.eq_ignore_ascii_case(authserv_id)
        }
    })
}

/// Puts `prefix` before the Subject (adding a Subject when there is none); a subject that
/// already starts with it is left alone. Encoded words stay as they are: a plain word
/// before an encoded word is valid RFC 2047.
pub fn prefix_subject<'a>(data: &'a [u8], prefix: &str) -> Cow<'a, [u8]> {
    let all = fields(data);
    let Some(subject) = all.iter().find(|f| f.name.eq_ignore_ascii_case(b"Subject")) else {
        let mut out = format!("Subject: {prefix}\r\n").into_bytes();
        out.extend_from_slice(data);
        return Cow::Owned(out);
    };
    let value_start = subject.end - subject.value.len();
    let leading = subject.value.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    if subject.value[leading..].starts_with(prefix.as_bytes()) {
        return Cow::Borrowed(data);
    }
    let at = value_start + leading;
    let mut out = Vec::with_capacity(data.len() + prefix.len() + 2);
    out.extend_from_slice(&data[..value_start]);
    out.push(b' ');
    out.extend_from_slice(prefix.as_bytes());
    if subject.value[leading..] != *b"\r\n" {
        out.push(b' ');
    }
    out.extend_from_slice(&data[at..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: a@x.test\r\nAuthentication-Results: gw.test; spf=pass\r\nAuthentication-Results: other.test;\r\n  dkim=pass\r\nSubject: =?UTF-8?B?w6nDqQ==?=\r\n\r\nAuthentication-Results: gw.test; body line\r\n";

    #[test]
    fn forged_results_with_our_id_go_and_others_stay() {
        let out = remove_forged_auth_results(MSG, "GW.test");
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("gw.test; spf=pass"), "{text}");
        assert!(text.contains("Authentication-Results: other.test;\r\n  dkim=pass\r\n"), "{text}");
        assert!(text.contains("\r\n\r\nAuthentication-Results: gw.test; body line"), "body untouched");
        assert!(matches!(remove_forged_auth_results(MSG, "nobody.test"), Cow::Borrowed(_)));
    }

    #[test]
    fn subject_prefix_is_added_once_before_encoded_words() {
        let out = prefix_subject(MSG, "[EXTERNAL]");
        assert!(String::from_utf8_lossy(&out).contains("Subject: [EXTERNAL] =?UTF-8?B?w6nDqQ==?=\r\n"));
        assert!(matches!(prefix_subject(&out, "[EXTERNAL]"), Cow::Borrowed(_)));
        let none = prefix_subject(b"From: a@x.test\r\n\r\nbody\r\n", "[X]");
        assert!(none.starts_with(b"Subject: [X]\r\nFrom: a@x.test\r\n\r\n"));
    }

    #[test]
    fn headers_are_unfolded_in_order() {
        let h = unfolded(b"Subject: one\r\n two\r\nFrom: a@x.test\r\n\r\nBody: no\r\n");
        assert_eq!(h, [("Subject".into(), "one two".into()), ("From".into(), "a@x.test".into())]);
    }

    #[test]
    fn a_folded_subject_keeps_its_folding() {
        let msg = b"Subject: one\r\n two\r\nTo: b@y.test\r\n\r\nx";
        assert_eq!(&*prefix_subject(msg, "[X]"), b"Subject: [X] one\r\n two\r\nTo: b@y.test\r\n\r\nx");
    }
}
