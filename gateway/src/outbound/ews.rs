//! Exchange Web Services, the Exchange sending accounts' transport: `CreateItem` with
//! `MessageDisposition="SendAndSaveCopy"` and the message as `MimeContent` (base64), saved to
//! the mailbox's Sent Items, over HTTPS with HTTP Basic (the mailbox's `user@domain` login).
//! The answer is SOAP: `ResponseClass="Success"` (`NoError`), or an error whose
//! `ResponseCode` decides between retry and bounce.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use postern_api::ExchangeAccount;

use super::error::OutboundError;

const SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const MESSAGES: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";

/// The SOAP envelope around an EWS operation (Exchange 2013 schema, what 2013 to SE accept).
fn envelope(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <soap:Envelope xmlns:soap=\"{SOAP}\" \
         xmlns:t=\"http://schemas.microsoft.com/exchange/services/2006/types\" xmlns:m=\"{MESSAGES}\">\
         <soap:Header><t:RequestServerVersion Version=\"Exchange2013\"/></soap:Header>\
         <soap:Body>{body}</soap:Body></soap:Envelope>"
    )
}

/// `CreateItem` sending `message` and keeping a copy in Sent Items.
pub fn create_item(message: &[u8]) -> String {
    envelope(&format!(
        "<m:CreateItem MessageDisposition=\"SendAndSaveCopy\">\
         <m:SavedItemFolderId><t:DistinguishedFolderId Id=\"sentitems\"/></m:SavedItemFolderId>\
         <m:Items><t:Message><t:MimeContent CharacterSet=\"UTF-8\">{}</t:MimeContent></t:Message></m:Items>\
         </m:CreateItem>",
        STANDARD.encode(message)
    ))
}

/// `GetFolder` of Sent Items: the "test connection" call (authenticated, changes nothing).
pub fn get_folder() -> String {
    envelope(
        "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>\
         <m:FolderIds><t:DistinguishedFolderId Id=\"sentitems\"/></m:FolderIds></m:GetFolder>",
    )
}

/// What the SOAP answer says: Ok, or the error (its ResponseCode, or the fault's text).
fn outcome(status: u16, body: &str) -> Result<(), OutboundError> {
    let doc = roxmltree::Document::parse(body).map_err(|_| {
        OutboundError::temporary(
            "4.4.2",
            format!("EWS answered HTTP {status} without SOAP: {}", excerpt(body)),
        )
    })?;
    let in_messages = |n: &roxmltree::Node, name: &str| n.has_tag_name((MESSAGES, name));
    // One response message per item; every one must be a success.
    let messages: Vec<roxmltree::Node> =
        doc.descendants().filter(|n| n.is_element() && n.attribute("ResponseClass").is_some()).collect();
    if let Some(fault) = doc.descendants().find(|n| n.has_tag_name((SOAP, "Fault"))) {
        let text = fault
            .descendants()
            .find(|n| n.has_tag_name("faultstring"))
            .and_then(|n| n.text())
            .unwrap_or("a SOAP fault");
        let code = fault.descendants().find(|n| n.has_tag_name("ResponseCode")).and_then(|n| n.text());
        return Err(refused(
            code.unwrap_or_default(),
            &format!("EWS fault (HTTP {status}): {}", excerpt(text)),
        ));
    }
    if messages.is_empty() {
        return Err(OutboundError::temporary(
            "4.4.2",
            format!("EWS answered HTTP {status} without a response message"),
        ));
    }
    for m in messages {
        if m.attribute("ResponseClass") == Some("Success") {
            continue;
        }
        let text_of = |name: &str| {
            m.children().find(|c| in_messages(c, name)).and_then(|c| c.text()).unwrap_or_default()
        };
        let code = text_of("ResponseCode");
        let back_off_ms = m
            .descendants()
            .find(|n| n.has_tag_name("Value") && n.attribute("Name") == Some("BackOffMilliseconds"))
            .and_then(|n| n.text())
            .and_then(|ms| ms.trim().parse::<u64>().ok());
        let back_off = back_off_ms.map(|ms| format!("; back off {ms} ms")).unwrap_or_default();
        let f = refused(code, &format!("EWS {code}: {}{back_off}", excerpt(text_of("MessageText"))));
        return Err(f.retry_after(back_off_ms.map(std::time::Duration::from_millis)));
    }
    Ok(())
}

/// An EWS error code's meaning for the job.
fn refused(code: &str, text: &str) -> OutboundError {
    match code {
        "ErrorMessageSizeExceeded" => OutboundError::permanent("5.3.4", text.into()),
        "ErrorInvalidRecipients" | "ErrorMimeContentConversionFailed" | "ErrorMimeContentInvalid" => {
            OutboundError::permanent("5.6.0", text.into())
        }
        "ErrorServerBusy" => OutboundError::temporary("4.4.5", text.into()),
        "ErrorAccessDenied" | "ErrorSendAsDenied" => OutboundError::temporary("4.7.0", text.into()),
        // Anything else may pass: retried, and bounced once the delivery lifetime ends.
        _ => OutboundError::temporary("4.4.2", text.into()),
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(300).flat_map(char::escape_debug).collect()
}

/// Calls EWS with `soap` as the account's user.
pub async fn call(http: &reqwest::Client, x: &ExchangeAccount, soap: String) -> Result<(), OutboundError> {
    let password = std::fs::read_to_string(&x.password_file).map_err(|e| {
        OutboundError::temporary("4.3.5", format!("passwordFile {}: {e}", x.password_file.display()))
    })?;
    let response = http
        .post(&x.url)
        .basic_auth(&x.username, Some(password.trim_end_matches(['\r', '\n'])))
        .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .body(soap)
        .send()
        .await
        .map_err(|e| OutboundError::temporary("4.4.1", format!("EWS {}: {e}", x.url)))?;
    let status = response.status().as_u16();
    if status == 401 {
        return Err(OutboundError::temporary(
            "4.7.0",
            format!("EWS refused the login of {} (HTTP 401)", x.username),
        ));
    }
    let body = response.text().await.unwrap_or_default();
    outcome(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(class: &str, code: &str, extra: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP}"><s:Body><m:CreateItemResponse xmlns:m="{MESSAGES}"><m:ResponseMessages><m:CreateItemResponseMessage ResponseClass="{class}"><m:MessageText>text</m:MessageText><m:ResponseCode>{code}</m:ResponseCode>{extra}</m:CreateItemResponseMessage></m:ResponseMessages></m:CreateItemResponse></s:Body></s:Envelope>"#
        )
    }

    #[test]
    fn ews_answers_map_to_delivered_retry_or_bounce() {
        assert!(outcome(200, &answer("Success", "NoError", "")).is_ok());
        let busy = outcome(
            500,
            &answer("Error", "ErrorServerBusy", r#"<m:MessageXml><t:Value xmlns:t="x" Name="BackOffMilliseconds">2000</t:Value></m:MessageXml>"#),
        )
        .unwrap_err();
        assert!(!busy.permanent && busy.diagnostic.contains("back off 2000 ms"), "{busy:?}");
        assert_eq!(busy.retry_after, Some(std::time::Duration::from_millis(2000)));
        assert_eq!(
            outcome(200, &answer("Error", "ErrorMessageSizeExceeded", "")).unwrap_err().status,
            "5.3.4"
        );
        assert!(!outcome(200, &answer("Error", "ErrorSomethingNew", "")).unwrap_err().permanent);
        assert!(!outcome(502, "<html>proxy</html>").unwrap_err().permanent);
        assert!(!outcome(200, "not xml").unwrap_err().permanent);
    }

    #[test]
    fn the_message_goes_base64_in_mime_content() {
        let soap = create_item(b"Subject: <hi>\r\n\r\nx\r\n");
        assert!(soap.contains(r#"MessageDisposition="SendAndSaveCopy""#));
        assert!(soap.contains(&STANDARD.encode(b"Subject: <hi>\r\n\r\nx\r\n")), "{soap}");
        roxmltree::Document::parse(&soap).expect("well-formed");
    }
}
