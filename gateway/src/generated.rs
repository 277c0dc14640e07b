//! Mail the gateway writes itself (DSNs, quarantine digests, destination verification): the
//! headers every such message carries, on mail-builder, which folds and encodes headers
//! (RFC 5322, RFC 2047) so a subject or name from outside cannot break the header block.

use mail_builder::MessageBuilder;
use mail_builder::headers::date::Date;

use crate::store::new_id;
use crate::util::time::now_ms;

/// A message with its Date (`now_ms`) and a unique Message-ID under `hostname`.
pub fn generated_message<'x>(hostname: &str, now_ms: u64) -> MessageBuilder<'x> {
    MessageBuilder::new()
        .date(Date::new((now_ms / 1000) as i64))
        .message_id(format!("{}@{hostname}", new_id()))
}

/// The bytes of a built message. Writing into a `Vec` cannot fail.
pub fn to_bytes(message: MessageBuilder<'_>) -> Vec<u8> {
    message.write_to_vec().unwrap_or_default()
}

/// A plain-text notice from Postern to `to` (destination verification, address confirmation),
/// marked `Auto-Submitted: auto-generated` (RFC 3834) so no auto-responder answers it.
pub fn notice(hostname: &str, from: &str, to: &str, subject: String, text: String) -> Vec<u8> {
    to_bytes(
        generated_message(hostname, now_ms())
            .from(("Postern".to_string(), from.to_string()))
            .to(to.to_string())
            .subject(subject)
            .header("Auto-Submitted", mail_builder::headers::text::Text::new("auto-generated"))
            .text_body(text),
    )
}
