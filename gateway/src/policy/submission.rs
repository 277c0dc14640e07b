//! What an authenticated user may send as: its own addresses and domains (the users file), in
//! the envelope sender and in every From header. Stops one account from sending as another.

use mail_parser::{HeaderName, MessageParser};

use crate::auth::User;

/// The address a user may not send as (answered 553 5.7.1).
#[derive(Debug, PartialEq, Eq)]
pub struct SenderDenied {
    pub address: String,
}

/// MAIL FROM of an authenticated user. The null sender (`<>`: bounces, auto-replies) is
/// always allowed: it claims no one.
pub fn check_envelope_sender(user: &User, sender: &str) -> Result<(), SenderDenied> {
    if sender.is_empty() || user.may_send_as(sender) {
        Ok(())
    } else {
        Err(SenderDenied { address: sender.to_string() })
    }
}

/// Every address in every From header of `content` must be the user's. A From header that
/// holds no readable address is refused too (it cannot be shown to be the user's); a message
/// without From claims no one and passes.
pub fn check_header_from(user: &User, content: &[u8]) -> Result<(), SenderDenied> {
    let Some(message) = MessageParser::new().parse_headers(content) else { return Ok(()) };
    for header in message.headers().iter().filter(|h| h.name == HeaderName::From) {
        let addresses: Vec<&str> = header
            .value()
            .as_address()
            .map(|a| a.iter().filter_map(|a| a.address()).collect())
            .unwrap_or_default();
        if addresses.is_empty() {
            return Err(SenderDenied { address: String::new() });
        }
        if let Some(other) = addresses.iter().find(|a| !user.may_send_as(a)) {
            return Err(SenderDenied { address: other.to_string() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> std::sync::Arc<User> {
        let text = "alice@example.com:$5$saltsalt$i1q2ZQzc.tl/BQ6CHiENAcVDvEY6nJ1OWlWXKh94b1.:@example.org\n";
        crate::auth::users::parse(text).unwrap().remove("alice@example.com").unwrap()
    }

    #[test]
    fn envelope_sender_must_be_the_users() {
        let u = user();
        assert!(check_envelope_sender(&u, "alice@example.com").is_ok());
        assert!(check_envelope_sender(&u, "anyone@example.org").is_ok());
        assert!(check_envelope_sender(&u, "").is_ok());
        assert_eq!(
            check_envelope_sender(&u, "bob@example.com"),
            Err(SenderDenied { address: "bob@example.com".into() })
        );
    }

    #[test]
    fn every_from_header_must_be_the_users() {
        let u = user();
        let ok = b"From: Alice <alice@example.com>\r\nSubject: hi\r\n\r\nbody\r\n";
        assert!(check_header_from(&u, ok).is_ok());
        assert!(check_header_from(&u, b"Subject: no from\r\n\r\nbody\r\n").is_ok());
        let forged = b"From: Boss <boss@example.com>\r\n\r\nbody\r\n";
        assert_eq!(check_header_from(&u, forged).unwrap_err().address, "boss@example.com");
        // A second From, or a second address in one, must not slip past.
        let second = b"From: alice@example.com\r\nFrom: boss@example.com\r\n\r\nx\r\n";
        assert!(check_header_from(&u, second).is_err());
        let list = b"From: alice@example.com, boss@example.com\r\n\r\nx\r\n";
        assert!(check_header_from(&u, list).is_err());
        assert!(check_header_from(&u, b"From: nobody at all\r\n\r\nx\r\n").is_err());
    }
}
