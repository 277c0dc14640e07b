//! A held message as the console shows it: its text, its HTML made safe, its attachments, its
//! authentication results. The HTML is cleaned by ammonia (html5ever's parser, a list of allowed
//! tags and attributes): no script, no event handler, no style, no form, no frame; links only to
//! http, https and mailto (opened without referrer); images only when they are inline `data:`
//! images, so opening a message never fetches anything from its sender (no web bug reports the
//! review). The page's Content-Security-Policy is the second wall.

use std::collections::HashSet;

use mail_parser::{MimeHeaders, PartType};

use crate::spam::content;

pub struct Attachment {
    /// Its place among the message's leaf parts (the download's URL).
    pub index: usize,
    pub name: String,
    pub content_type: String,
    pub size: usize,
}

#[derive(Default)]
pub struct View {
    pub text: Option<String>,
    /// Cleaned HTML.
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// The `Authentication-Results` fields, unfolded.
    pub authentication: Vec<String>,
}

/// HTML with nothing active and nothing remote left.
pub fn clean_html(html: &str) -> String {
    ammonia::Builder::default()
        .url_schemes(HashSet::from(["http", "https", "mailto", "data"]))
        .link_rel(Some("noopener noreferrer nofollow"))
        .attribute_filter(|element, attribute, value| match (element, attribute) {
            // Inline images only; `data:` nowhere else (no data: documents behind a link).
            ("img", "src") => value.starts_with("data:image/").then_some(value.into()),
            (_, "href" | "src" | "cite" | "longdesc")
                if value.trim_start().get(..5).is_some_and(|s| s.eq_ignore_ascii_case("data:")) =>
            {
                None
            }
            _ => Some(value.into()),
        })
        .clean(html)
        .to_string()
}

fn content_type(part: &mail_parser::MessagePart<'_>) -> String {
    part.content_type().map_or_else(
        || "text/plain".to_string(),
        |c| match c.subtype() {
            Some(sub) => format!("{}/{}", c.ctype(), sub).to_ascii_lowercase(),
            None => c.ctype().to_ascii_lowercase(),
        },
    )
}

pub fn view(raw: &[u8]) -> View {
    let Some(msg) = content::parse(raw) else { return View::default() };
    let authentication = crate::spam::headers::unfolded(raw)
        .into_iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("Authentication-Results"))
        .map(|(_, value)| value)
        .collect();
    let attachments = content::all_parts(&msg)
        .into_iter()
        .enumerate()
        .filter(|(_, p)| content::is_attachment(&msg, p))
        .map(|(index, p)| Attachment {
            index,
            name: p.attachment_name().unwrap_or("unnamed").to_string(),
            content_type: content_type(p),
            size: p.contents().len(),
        })
        .collect();
    View {
        text: msg.body_text(0).map(|t| t.into_owned()),
        html: msg
            .html_body
            .first()
            .and_then(|&i| msg.parts.get(i as usize))
            .filter(|p| matches!(p.body, PartType::Html(_)))
            .and_then(|p| p.text_contents())
            .map(clean_html),
        attachments,
        authentication,
    }
}

/// The `index`th leaf part (an attachment's download): its name and decoded content.
pub fn attachment(raw: &[u8], index: usize) -> Option<(String, Vec<u8>)> {
    let msg = content::parse(raw)?;
    let part = *content::all_parts(&msg).get(index)?;
    Some((part.attachment_name().unwrap_or("attachment").to_string(), part.contents().to_vec()))
}

/// A file name safe in a `Content-Disposition` header: printable ASCII without quotes or
/// backslashes, at most 100 characters (the rest is in `filename*`).
pub fn ascii_file_name(name: &str) -> String {
    let cleaned: String =
        name.chars()
            .map(|c| {
                if (c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '/' | ';')) || c == ' ' {
                    c
                } else {
                    '_'
                }
            })
            .take(100)
            .collect();
    if cleaned.trim().is_empty() { "attachment".into() } else { cleaned }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaned_html_has_nothing_active_or_remote() {
        let dirty = r#"<p onclick="x()">Hi <script>alert(1)</script><img src="https://tracker.example/p.gif" onerror="alert(2)" alt="logo">
            <img src="data:image/png;base64,iVBORw0KGgo=" alt="inline"><a href="javascript:alert(3)">js</a>
            <a href="https://example.com/">ok</a><a href="data:text/html,<script>alert(4)</script>">d</a>
            <style>body{background:url(https://tracker.example/bg)}</style><iframe src="https://x.example"></iframe>
            <form action="https://x.example"><input name=a></form><div style="background:url(https://t.example/s)">s</div></p>"#;
        let clean = clean_html(dirty);
        for gone in [
            "script",
            "onerror",
            "onclick",
            "tracker.example",
            "javascript:",
            "iframe",
            "<form",
            "style",
            "t.example",
            "data:text",
        ] {
            assert!(!clean.contains(gone), "{gone} left in {clean}");
        }
        assert!(clean.contains(r#"src="data:image/png;base64,iVBORw0KGgo=""#), "{clean}");
        assert!(
            clean.contains(r#"href="https://example.com/" rel="noopener noreferrer nofollow""#),
            "{clean}"
        );
        assert!(clean.contains("alt=\"logo\""), "the remote image keeps its alt text: {clean}");
    }

    #[test]
    fn a_message_shows_its_text_html_attachments_and_results() {
        let raw = b"Authentication-Results: gw.test; spf=pass\r\n smtp.mailfrom=x.test\r\nFrom: a@x.test\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\nContent-Type: text/plain\r\n\r\nplain words\r\n--c\r\nContent-Type: text/html\r\n\r\n<p>html <b>words</b><script>x()</script></p>\r\n--c--\r\n--b\r\nContent-Type: application/pdf; name=\"r\xc3\xa9port \\\"q\\\".pdf\"\r\nContent-Disposition: attachment; filename=\"invoice.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n--b--\r\n";
        let v = view(raw);
        assert_eq!(v.text.as_deref().map(str::trim), Some("plain words"));
        assert!(
            v.html.as_deref().unwrap().contains("html <b>words</b>") && !v.html.unwrap().contains("script")
        );
        assert_eq!(v.authentication, ["gw.test; spf=pass smtp.mailfrom=x.test"]);
        assert_eq!(v.attachments.len(), 1);
        let a = &v.attachments[0];
        assert_eq!((a.name.as_str(), a.content_type.as_str(), a.size), ("invoice.pdf", "application/pdf", 8));
        assert_eq!(attachment(raw, a.index), Some(("invoice.pdf".into(), b"%PDF-1.4".to_vec())));
        assert_eq!(attachment(raw, 99), None);
        assert_eq!(ascii_file_name("r\u{e9}port \"q\".pdf\r\n"), "r_port _q_.pdf__");
        assert_eq!(ascii_file_name(""), "attachment");
    }
}
