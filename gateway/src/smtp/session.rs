//! The inbound session: a small state machine fed with bytes. smtp-proto's receivers turn bytes
//! into requests (or message data); `ingest` dispatches each request to the `handle_<stage>`
//! method in that stage's file and collects the replies. Replies are flushed only when all the
//! input at hand has been handled, which is what PIPELINING asks for.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::Request;
use smtp_proto::request::receiver::{
    BdatReceiver, DataReceiver, DummyDataReceiver, DummyLineReceiver, RequestReceiver,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::reply::{self, Reply};
use crate::context::Gateway;
use crate::runtime::Runtime;
use crate::tls::TlsInfo;

/// Where the session is in the byte stream.
pub(super) enum State {
    Request(RequestReceiver),
    Data(DataReceiver),
    Bdat(BdatReceiver),
    /// Message data still arriving after the size limit was passed: read and dropped.
    Discard(DummyDataReceiver, Reply),
    /// The rest of an overlong command line: dropped up to its end.
    DiscardLine(DummyLineReceiver),
}

/// What the caller does after a batch of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    StartTls,
    Close,
}

/// One mail transaction (MAIL .. end of data).
#[derive(Default)]
pub(super) struct Transaction {
    pub sender: String,
    pub recipients: Vec<String>,
    /// Where each accepted recipient goes (one recipient may need several deliveries).
    pub targets: Vec<crate::routing::Target>,
    /// The spam policy of this transaction's recipients (one per transaction) and what its
    /// envelope checks found; set at the first accepted RCPT.
    pub spam: Option<SpamChoice>,
    pub smtputf8: bool,
    pub eight_bit: bool,
    /// The message as it arrives (DATA: unstuffed; BDAT: chunks appended).
    pub body: Vec<u8>,
}

/// The spam policy a transaction runs under.
pub(super) struct SpamChoice {
    /// The policy's name; `None`: recipients without a policy.
    pub policy: Option<String>,
    /// Envelope checks; `None` when not run yet (mail from an inbound gateway is checked at the
    /// end of DATA, against the original client).
    pub envelope: Option<crate::spam::EnvelopeResult>,
}

pub struct Session {
    pub(super) gateway: Arc<Gateway>,
    /// The config this session started with (hot reload does not change a live session).
    pub(super) rt: Arc<Runtime>,
    pub(super) listener: String,
    pub(super) client: SocketAddr,
    pub(super) tls: Option<TlsInfo>,
    pub(super) tls_offered: bool,
    pub(super) helo: Option<Helo>,
    pub(super) tx: Option<Transaction>,
    pub(super) state: State,
    pub(super) errors: u32,
    pub(super) messages: u32,
    out: Vec<u8>,
}

pub(super) struct Helo {
    pub name: String,
    pub extended: bool,
}

impl Session {
    pub fn new(gateway: Arc<Gateway>, listener: &str, client: SocketAddr, tls_offered: bool) -> Self {
        let rt = gateway.runtime();
        Self {
            gateway,
            rt,
            listener: listener.to_string(),
            client,
            tls: None,
            tls_offered,
            helo: None,
            tx: None,
            state: State::Request(RequestReceiver::default()),
            errors: 0,
            messages: 0,
            out: Vec::with_capacity(512),
        }
    }

    pub fn client_ip(&self) -> IpAddr {
        crate::runtime::canonical_ip(self.client.ip())
    }

    pub fn hostname(&self) -> &str {
        &self.rt.config.hostname
    }

    /// After a TLS handshake: the session starts over (RFC 3207 4.2), remembering the TLS.
    pub fn tls_started(&mut self, info: TlsInfo) {
        self.tls = Some(info);
        self.tls_offered = false;
        self.helo = None;
        self.tx = None;
        self.state = State::Request(RequestReceiver::default());
    }

    pub fn push(&mut self, reply: &Reply) {
        reply.write_to(&mut self.out);
    }

    /// Sends a reply the client caused by a mistake; too many mistakes end the session.
    pub(super) fn push_error(&mut self, reply: &Reply) -> Flow {
        self.push(reply);
        self.errors += 1;
        if self.errors >= self.rt.config.limits.max_errors {
            self.push(&reply::TOO_MANY_ERRORS);
            tracing::info!(client = %self.client, errors = self.errors, "too many errors, disconnecting");
            return Flow::Close;
        }
        Flow::Continue
    }

    pub fn greeting(&mut self) {
        let text = format!("{} ESMTP Postern", self.hostname());
        self.push(&Reply::new(220, text));
    }

    fn read_timeout(&self) -> Duration {
        let limits = &self.rt.config.limits;
        match self.state {
            State::Request(_) | State::DiscardLine(_) => limits.command_timeout.get(),
            _ => limits.data_timeout.get(),
        }
    }

    /// Serves the session on `stream` until it closes or asks for STARTTLS.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> std::io::Result<Flow> {
        let mut buf = vec![0u8; 16 * 1024];
        let mut first_read = self.tls.is_none();
        loop {
            self.flush(stream).await?;
            let n = match tokio::time::timeout(self.read_timeout(), stream.read(&mut buf)).await {
                Err(_) => {
                    self.push(&Reply::new(421, format!("4.4.2 {} Error: timeout exceeded", self.hostname())));
                    self.flush(stream).await?;
                    tracing::info!(client = %self.client, "session timed out");
                    return Ok(Flow::Close);
                }
                Ok(Ok(0)) => return Ok(Flow::Close),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(e),
            };
            if std::mem::take(&mut first_read) && super::proxy::looks_like_proxy_header(&buf[..n]) {
                self.push(&Reply::fixed(554, "5.7.0 PROXY protocol is not enabled on this listener"));
                self.flush(stream).await?;
                tracing::warn!(client = %self.client, listener = %self.listener, "PROXY header on a listener without proxyProtocol; refused");
                return Ok(Flow::Close);
            }
            match self.ingest(&buf[..n]).await {
                Flow::Continue => {}
                other => {
                    self.flush(stream).await?;
                    return Ok(other);
                }
            }
        }
    }

    pub async fn flush<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> std::io::Result<()> {
        if !self.out.is_empty() {
            stream.write_all(&self.out).await?;
            stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Handles every complete request (or data) in `bytes`. Bytes after STARTTLS or QUIT are
    /// dropped: a client must not pipeline past them (and STARTTLS injection must not work).
    pub async fn ingest(&mut self, bytes: &[u8]) -> Flow {
        let mut iter = bytes.iter();
        loop {
            let flow = match &mut self.state {
                State::Request(rx) => {
                    if command_line_too_long(rx, iter.as_slice()) {
                        // Drop the line: up to its end if it is here, else the rest later.
                        let rest = iter.as_slice();
                        match rest.iter().position(|&b| b == b'\n') {
                            Some(end) => iter = rest[end + 1..].iter(),
                            None => {
                                iter = [].iter();
                                self.state = State::DiscardLine(DummyLineReceiver::default());
                            }
                        }
                        self.push_error(&Reply::for_parse_error(&smtp_proto::Error::ResponseTooLong))
                    } else {
                        match rx.ingest(&mut iter) {
                            Ok(request) => {
                                let request = request.into_owned();
                                self.handle(request).await
                            }
                            Err(smtp_proto::Error::NeedsMoreData { .. }) => return Flow::Continue,
                            Err(smtp_proto::Error::ResponseTooLong) => {
                                self.state = State::DiscardLine(DummyLineReceiver::default());
                                self.push_error(&Reply::for_parse_error(&smtp_proto::Error::ResponseTooLong))
                            }
                            Err(e) => {
                                let reply = Reply::for_parse_error(&e);
                                self.push_error(&reply)
                            }
                        }
                    }
                }
                State::DiscardLine(rx) => {
                    if rx.ingest(&mut iter) {
                        self.state = State::Request(RequestReceiver::default());
                        Flow::Continue
                    } else {
                        return Flow::Continue;
                    }
                }
                State::Data(rx) => {
                    let tx = self.tx.get_or_insert_with(Transaction::default);
                    let done = rx.ingest(&mut iter, &mut tx.body);
                    if done {
                        self.state = State::Request(RequestReceiver::default());
                        self.end_of_message().await
                    } else if tx.body.len() as u64 > self.rt.config.limits.max_message_size {
                        let discard = DummyDataReceiver::new_data(rx);
                        tx.body = Vec::new();
                        self.state = State::Discard(discard, reply::MESSAGE_TOO_BIG);
                        Flow::Continue
                    } else {
                        return Flow::Continue;
                    }
                }
                State::Bdat(rx) => {
                    let tx = self.tx.get_or_insert_with(Transaction::default);
                    if rx.ingest(&mut iter, &mut tx.body) {
                        let last = rx.is_last;
                        self.state = State::Request(RequestReceiver::default());
                        self.end_of_chunk(last).await
                    } else {
                        return Flow::Continue;
                    }
                }
                State::Discard(rx, _) => {
                    if rx.ingest(&mut iter) {
                        let State::Discard(_, reply) =
                            std::mem::replace(&mut self.state, State::Request(RequestReceiver::default()))
                        else {
                            return Flow::Close;
                        };
                        self.discarded_message(reply)
                    } else {
                        return Flow::Continue;
                    }
                }
            };
            if flow != Flow::Continue {
                return flow;
            }
            if iter.len() == 0 && matches!(self.state, State::Request(_)) {
                return Flow::Continue;
            }
        }
    }

    async fn handle(&mut self, request: Request<String>) -> Flow {
        match request {
            Request::Ehlo { host } => self.handle_ehlo(host, true),
            Request::Helo { host } => self.handle_ehlo(host, false),
            Request::Lhlo { .. } => self.push_error(&reply::NOT_IMPLEMENTED),
            Request::Mail { from } => self.handle_mail(from),
            Request::Rcpt { to } => self.handle_rcpt(to).await,
            Request::Data => self.handle_data(),
            Request::Bdat { chunk_size, is_last } => self.handle_bdat(chunk_size, is_last),
            Request::Rset => {
                self.tx = None;
                self.push(&reply::OK);
                Flow::Continue
            }
            Request::Noop { .. } => {
                self.push(&reply::OK);
                Flow::Continue
            }
            Request::Quit => {
                let text = format!("2.0.0 {} closing connection", self.hostname());
                self.push(&Reply::new(221, text));
                Flow::Close
            }
            Request::Vrfy { .. } => {
                self.push(&Reply::fixed(
                    252,
                    "2.5.2 Cannot VRFY user, but will accept message and attempt delivery",
                ));
                Flow::Continue
            }
            Request::Help { .. } => {
                self.push(&Reply::fixed(214, "2.0.0 Postern: see RFC 5321 for the commands"));
                Flow::Continue
            }
            Request::StartTls => self.handle_starttls(),
            Request::Expn { .. }
            | Request::Auth { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.push_error(&reply::NOT_IMPLEMENTED),
        }
    }

    fn handle_starttls(&mut self) -> Flow {
        if self.tls.is_some() {
            return self.push_error(&Reply::fixed(554, "5.5.1 TLS already active"));
        }
        if !self.tls_offered {
            return self.push_error(&Reply::fixed(454, "4.7.0 TLS not available"));
        }
        if self.tx.is_some() {
            return self
                .push_error(&Reply::fixed(503, "5.5.1 STARTTLS not allowed inside a mail transaction"));
        }
        self.push(&Reply::fixed(220, "2.0.0 Ready to start TLS"));
        Flow::StartTls
    }
}

/// The longest command line accepted (RFC 5321 4.5.3.1.4 asks for at least 512 octets; we take
/// smtp-proto's 4096, which also covers long parameters).
const MAX_COMMAND_LINE: usize = smtp_proto::request::receiver::MAX_LINE_LENGTH;

/// Whether the command line starting in `rx`'s buffer and continuing in `rest` is too long.
/// smtp-proto checks this only for lines split across reads, so a whole overlong line that
/// arrives in one read is caught here.
fn command_line_too_long(rx: &mut RequestReceiver, rest: &[u8]) -> bool {
    let pending = rx.buf().len();
    let here = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let too_long = pending + here > MAX_COMMAND_LINE;
    if too_long {
        rx.buf().clear();
    }
    too_long
}
