//! A stand-in for an on-premises Exchange server's EWS (it cannot run here), on loopback. Each
//! request is checked against the documented format before it is accepted: `POST` to the EWS
//! path, HTTP Basic with the mailbox's login, `text/xml; charset=utf-8`, a SOAP 1.1 envelope
//! with `RequestServerVersion`, and either `CreateItem` with `MessageDisposition=
//! "SendAndSaveCopy"`, Sent Items as the saved folder and the message as base64 `MimeContent`,
//! or `GetFolder`. It answers as the documentation shows: a `ResponseClass="Success"` response
//! message, 401 for a wrong login, and when told to `ErrorServerBusy` with
//! `BackOffMilliseconds` (HTTP 500, as Exchange throttling answers).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;

const SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const MESSAGES: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
const TYPES: &str = "http://schemas.microsoft.com/exchange/services/2006/types";

#[derive(Default)]
struct Shared {
    /// The MIME messages sent.
    sent: Vec<Vec<u8>>,
    violations: Vec<String>,
    /// How many next CreateItem calls answer ErrorServerBusy.
    busy: u32,
    folder_calls: u32,
}

pub struct Ews {
    shared: Arc<Mutex<Shared>>,
    pub url: String,
    _runtime: tokio::runtime::Runtime,
}

struct Ctx {
    shared: Arc<Mutex<Shared>>,
    basic: String,
}

impl Ews {
    /// An EWS endpoint at `<url>/ews/exchange.asmx` accepting the login `user`/`password`.
    pub fn start(user: &str, password: &str) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let ctx = Arc::new(Ctx { shared: shared.clone(), basic });
        let app = Router::new().route("/ews/exchange.asmx", post(ews)).with_state(ctx);
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}/ews/exchange.asmx", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self { shared, url, _runtime: runtime }
    }

    pub fn busy_for(&self, calls: u32) {
        self.shared.lock().unwrap().busy = calls;
    }

    pub fn sent(&self) -> Vec<Vec<u8>> {
        self.shared.lock().unwrap().sent.clone()
    }

    pub fn folder_calls(&self) -> u32 {
        self.shared.lock().unwrap().folder_calls
    }

    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().unwrap().violations.clone()
    }

    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        crate::wait_for("EWS to accept mail", timeout, || {
            let sent = self.sent();
            (sent.len() >= n).then_some(sent)
        })
    }
}

fn soap(status: StatusCode, body: &str) -> Response {
    let text = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP}"><s:Header><h:ServerVersionInfo xmlns:h="{TYPES}" MajorVersion="15" MinorVersion="2" MajorBuildNumber="1544" MinorBuildNumber="4" Version="V2017_07_11"/></s:Header><s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">{body}</s:Body></s:Envelope>"#
    );
    (status, [(header::CONTENT_TYPE, "text/xml; charset=utf-8")], text).into_response()
}

fn violation(ctx: &Ctx, what: String) -> Response {
    ctx.shared.lock().unwrap().violations.push(what.clone());
    (StatusCode::BAD_REQUEST, what).into_response()
}

async fn ews(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Bytes) -> Response {
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(ctx.basic.as_str()) {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"ews\"")])
            .into_response();
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.starts_with("text/xml") {
        return violation(&ctx, format!("content type {content_type:?}"));
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let Ok(doc) = roxmltree::Document::parse(&text) else { return violation(&ctx, "not XML".into()) };
    let root = doc.root_element();
    if !root.has_tag_name((SOAP, "Envelope")) {
        return violation(&ctx, "not a SOAP 1.1 envelope".into());
    }
    if !doc
        .descendants()
        .any(|n| n.has_tag_name((TYPES, "RequestServerVersion")) && n.attribute("Version").is_some())
    {
        return violation(&ctx, "no RequestServerVersion".into());
    }
    let sent_items = |n: roxmltree::Node| {
        n.descendants().any(|d| {
            d.has_tag_name((TYPES, "DistinguishedFolderId")) && d.attribute("Id") == Some("sentitems")
        })
    };
    if let Some(get) = doc.descendants().find(|n| n.has_tag_name((MESSAGES, "GetFolder"))) {
        if !sent_items(get) {
            return violation(&ctx, "GetFolder without sentitems".into());
        }
        ctx.shared.lock().unwrap().folder_calls += 1;
        return soap(
            StatusCode::OK,
            &format!(
                r#"<m:GetFolderResponse xmlns:m="{MESSAGES}" xmlns:t="{TYPES}"><m:ResponseMessages><m:GetFolderResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Folders><t:Folder><t:FolderId Id="AAMk" ChangeKey="AQAA"/></t:Folder></m:Folders></m:GetFolderResponseMessage></m:ResponseMessages></m:GetFolderResponse>"#
            ),
        );
    }
    let Some(create) = doc.descendants().find(|n| n.has_tag_name((MESSAGES, "CreateItem"))) else {
        return violation(&ctx, "neither CreateItem nor GetFolder".into());
    };
    if create.attribute("MessageDisposition") != Some("SendAndSaveCopy") {
        return violation(&ctx, "MessageDisposition is not SendAndSaveCopy".into());
    }
    let saved_in = create.children().find(|n| n.has_tag_name((MESSAGES, "SavedItemFolderId")));
    if !saved_in.is_some_and(sent_items) {
        return violation(&ctx, "SavedItemFolderId is not sentitems".into());
    }
    let mime = create
        .descendants()
        .find(|n| n.has_tag_name((TYPES, "MimeContent")))
        .and_then(|n| n.text())
        .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t.trim()).ok());
    let Some(mime) = mime else { return violation(&ctx, "no base64 MimeContent".into()) };
    {
        let mut s = ctx.shared.lock().unwrap();
        if s.busy > 0 {
            s.busy -= 1;
            drop(s);
            return soap(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    r#"<m:CreateItemResponse xmlns:m="{MESSAGES}" xmlns:t="{TYPES}"><m:ResponseMessages><m:CreateItemResponseMessage ResponseClass="Error"><m:MessageText>The server cannot service this request right now. Try again later.</m:MessageText><m:ResponseCode>ErrorServerBusy</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey><m:MessageXml><t:Value Name="BackOffMilliseconds">1000</t:Value></m:MessageXml><m:Items/></m:CreateItemResponseMessage></m:ResponseMessages></m:CreateItemResponse>"#
                ),
            );
        }
        s.sent.push(mime);
    }
    soap(
        StatusCode::OK,
        &format!(
            r#"<m:CreateItemResponse xmlns:m="{MESSAGES}" xmlns:t="{TYPES}"><m:ResponseMessages><m:CreateItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items/></m:CreateItemResponseMessage></m:ResponseMessages></m:CreateItemResponse>"#
        ),
    )
}
