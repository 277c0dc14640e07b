//! The inbound session: a small state machine fed with bytes. smtp-proto's receivers turn bytes
//! into requests (or message data); `ingest` dispatches each request to the `handle_<stage>`
//! method in that stage's file and collects the replies. Replies are flushed only when all the
//! input at hand has been handled, which is what PIPELINING asks for.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use smtp_proto::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use postern_api::{Listener, ListenerRole};

use super::auth::Sasl;
use super::framing::{DataReader, Discard, Framed, LineReader};
use super::reply::{self, Reply};
use crate::auth::User;
use crate::config::{ConfigSnapshot, NamedSpamPolicy};
use crate::context::Context;
use crate::tls::TlsInfo;

/// Where the session is in the byte stream.
pub(super) enum State {
    /// Command lines (cut by the session's `LineReader`).
    Command,
    Data(DataReader),
    /// A BDAT chunk: `left` bytes still to come.
    Bdat {
        left: u64,
        last: bool,
    },
    /// DATA still arriving after the size limit was passed: read and dropped; then the reply.
    DiscardData(DataReader, Reply),
    /// The bytes of a refused BDAT chunk (already answered): read and dropped.
    DiscardBdat {
        left: u64,
    },
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
    /// Recipients a relay rule discards: answered 250, never delivered.
    pub discarded: Vec<String>,
    /// Where each accepted recipient goes (one recipient may need several deliveries).
    pub targets: Vec<crate::routing::RoutedRecipient>,
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
    /// `None`: recipients without a policy.
    pub policy: Option<Arc<NamedSpamPolicy>>,
    /// Envelope checks; `None` when not run yet (mail from an inbound gateway is checked at the
    /// end of DATA, against the original client).
    pub envelope: Option<crate::spam::EnvelopeResult>,
    /// The envelope checks ran past `limits.envelopeCheckTimeout`: every recipient under this
    /// policy gets 451 4.4.3.
    pub timed_out: bool,
}

pub struct Session {
    pub(super) ctx: Arc<Context>,
    /// The config this session started with (hot reload does not change a live session).
    pub(super) cfg: Arc<ConfigSnapshot>,
    pub(super) listener: String,
    pub(super) role: ListenerRole,
    pub(super) client: SocketAddr,
    pub(super) tls: Option<TlsInfo>,
    pub(super) tls_offered: bool,
    /// The listener offers AUTH (after TLS).
    pub(super) auth_offered: bool,
    /// The user the client authenticated as.
    pub(super) user: Option<Arc<User>>,
    /// A SASL exchange waiting for the client's next line.
    pub(super) sasl: Option<Sasl>,
    pub(super) helo: Option<Helo>,
    pub(super) tx: Option<Transaction>,
    pub(super) state: State,
    pub(super) lines: LineReader,
    pub(super) errors: u32,
    pub(super) messages: u32,
    /// Commands that move no mail (RSET, NOOP, VRFY, HELP) since the last accepted message.
    pub(super) junk: u32,
    out: Vec<u8>,
}

pub(super) struct Helo {
    pub name: String,
    pub extended: bool,
}

impl Session {
    /// A session on `listener` with `client`; `tls_offered`: the listener has a certificate.
    pub fn new(ctx: Arc<Context>, listener: &Listener, client: SocketAddr, tls_offered: bool) -> Self {
        let cfg = ctx.config();
        Self {
            ctx,
            cfg,
            listener: listener.name.clone(),
            role: listener.role,
            client,
            tls: None,
            tls_offered,
            auth_offered: listener.offers_auth(),
            user: None,
            sasl: None,
            helo: None,
            tx: None,
            state: State::Command,
            lines: LineReader::default(),
            errors: 0,
            messages: 0,
            junk: 0,
            out: Vec::with_capacity(512),
        }
    }

    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// The listener offers AUTH, so lockouts after failed logins apply to it.
    pub fn offers_auth(&self) -> bool {
        self.auth_offered
    }

    pub fn client_ip(&self) -> IpAddr {
        crate::config::canonical_ip(self.client.ip())
    }

    pub fn hostname(&self) -> &str {
        &self.cfg.hostname
    }

    /// After a TLS handshake: the session starts over (RFC 3207 4.2), remembering the TLS.
    pub fn tls_started(&mut self, info: TlsInfo) {
        self.tls = Some(info);
        self.tls_offered = false;
        self.helo = None;
        self.tx = None;
        self.user = None;
        self.sasl = None;
        self.state = State::Command;
        self.lines.reset();
    }

    pub fn push(&mut self, reply: &Reply) {
        reply.write_to(&mut self.out);
    }

    /// Sends a reply the client caused by a mistake; too many mistakes end the session.
    pub(super) fn push_error(&mut self, reply: &Reply) -> Flow {
        self.push(reply);
        self.errors += 1;
        if self.errors >= self.cfg.limits.max_errors {
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

    /// Serves the session on `stream` until it closes or asks for STARTTLS.
    ///
    /// A command line must be complete within `commandTimeout` of when the gateway began
    /// waiting for it (a deadline, not a per-read timeout: one byte every few seconds does not
    /// keep a connection). Message data gets `dataTimeout` for each read.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> std::io::Result<Flow> {
        let mut buf = vec![0u8; 16 * 1024];
        let mut first_read = self.tls.is_none();
        let limits = &self.cfg.limits;
        let (command_timeout, data_timeout) = (limits.command_timeout.get(), limits.data_timeout.get());
        let mut line_deadline = Instant::now() + command_timeout;
        loop {
            self.flush(stream).await?;
            let deadline = match self.state {
                State::Command if self.lines.in_line() => line_deadline,
                State::Command => {
                    line_deadline = Instant::now() + command_timeout;
                    line_deadline
                }
                _ => Instant::now() + data_timeout,
            };
            let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
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

    /// The replies produced so far and not yet written (for callers that drive `ingest`
    /// themselves, such as the fuzz targets).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Handles every complete request (or data) in `bytes`. Bytes after STARTTLS or QUIT are
    /// dropped: a client must not pipeline past them (and STARTTLS injection must not work).
    pub async fn ingest(&mut self, bytes: &[u8]) -> Flow {
        let mut rest = bytes;
        loop {
            // A zero-byte BDAT chunk is complete without any input.
            let needs_input =
                !matches!(self.state, State::Bdat { left: 0, .. } | State::DiscardBdat { left: 0 });
            if rest.is_empty() && needs_input {
                return Flow::Continue;
            }
            let max_size = self.cfg.limits.max_message_size;
            let flow = match &mut self.state {
                State::Command => {
                    let (used, framed) = self.lines.next(rest);
                    rest = &rest[used..];
                    let parsed = match framed {
                        Framed::Partial => continue,
                        Framed::TooLong => {
                            // Also ends a SASL exchange: its answer did not fit.
                            self.sasl = None;
                            Parsed::Refused(Reply::for_parse_error(&smtp_proto::Error::ResponseTooLong))
                        }
                        Framed::Line(line) if self.sasl.is_some() => Parsed::SaslResponse(line.to_vec()),
                        Framed::Line(line) => parse_command(line),
                    };
                    match parsed {
                        Parsed::Request(request, path) => self.handle(request, path).await,
                        Parsed::SaslResponse(line) => self.sasl_response(&line).await,
                        Parsed::Refused(reply) => self.push_error(&reply),
                        Parsed::BdatTooBig => self.refuse_oversized_chunk(),
                    }
                }
                State::Data(rx) => {
                    let tx = self.tx.get_or_insert_with(Transaction::default);
                    match rx.feed(rest, &mut tx.body) {
                        Some(used) => {
                            rest = &rest[used..];
                            self.state = State::Command;
                            self.end_of_message().await
                        }
                        None => {
                            rest = &[];
                            if tx.body.len() as u64 > max_size {
                                tx.body = Vec::new();
                                self.state = State::DiscardData(rx.clone(), reply::MESSAGE_TOO_BIG);
                            }
                            Flow::Continue
                        }
                    }
                }
                State::Bdat { left, last } => {
                    let tx = self.tx.get_or_insert_with(Transaction::default);
                    let take = take_chunk(left, &mut rest);
                    tx.body.extend_from_slice(take);
                    if *left > 0 {
                        continue;
                    }
                    let last = *last;
                    self.state = State::Command;
                    self.end_of_chunk(last).await
                }
                State::DiscardBdat { left } => {
                    take_chunk(left, &mut rest);
                    if *left == 0 {
                        self.state = State::Command;
                    }
                    Flow::Continue
                }
                State::DiscardData(rx, _) => match rx.feed(rest, &mut Discard) {
                    Some(used) => {
                        rest = &rest[used..];
                        let State::DiscardData(_, reply) = std::mem::replace(&mut self.state, State::Command)
                        else {
                            return Flow::Close;
                        };
                        self.discarded_message(reply)
                    }
                    None => {
                        rest = &[];
                        Flow::Continue
                    }
                },
            };
            if flow != Flow::Continue {
                return flow;
            }
        }
    }

    /// One more command that moves no mail; too many end the session (a client looping on
    /// RSET or NOOP holds a connection slot for nothing).
    fn junk_command(&mut self, reply: &Reply) -> Flow {
        self.junk += 1;
        if self.junk > self.cfg.limits.max_junk_commands {
            self.push(&reply::TOO_MANY_JUNK_COMMANDS);
            tracing::info!(client = %self.client, commands = self.junk, "too many commands without mail, disconnecting");
            return Flow::Close;
        }
        self.push(reply);
        Flow::Continue
    }

    async fn handle(&mut self, request: Request<String>, path: Option<Vec<u8>>) -> Flow {
        match request {
            Request::Ehlo { host } => self.handle_ehlo(host, true),
            Request::Helo { host } => self.handle_ehlo(host, false),
            Request::Lhlo { .. } => self.push_error(&reply::NOT_IMPLEMENTED),
            Request::Mail { from } => self.handle_mail(from, path.unwrap_or_default()).await,
            Request::Rcpt { to } => self.handle_rcpt(to, path.unwrap_or_default()).await,
            Request::Data => self.handle_data().await,
            Request::Bdat { chunk_size, is_last } => self.handle_bdat(chunk_size, is_last).await,
            Request::Rset => {
                self.tx = None;
                self.junk_command(&reply::OK)
            }
            Request::Noop { .. } => self.junk_command(&reply::OK),
            Request::Quit => {
                let text = format!("2.0.0 {} closing connection", self.hostname());
                self.push(&Reply::new(221, text));
                Flow::Close
            }
            Request::Vrfy { .. } => self.junk_command(&Reply::fixed(
                252,
                "2.5.2 Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Request::Help { .. } => {
                self.junk_command(&Reply::fixed(214, "2.0.0 Postern: see RFC 5321 for the commands"))
            }
            Request::StartTls => self.handle_starttls(),
            Request::Auth { mechanism, initial_response } => {
                self.handle_auth(mechanism, initial_response).await
            }
            Request::Expn { .. } | Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                self.push_error(&reply::NOT_IMPLEMENTED)
            }
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

/// One command line, parsed.
enum Parsed {
    /// MAIL and RCPT come with their path as written (smtp-proto turns `<postmaster>` into
    /// `<>`; the handlers need to tell them apart).
    Request(Request<String>, Option<Vec<u8>>),
    /// A line of a SASL exchange (not a command), with its line ending.
    SaslResponse(Vec<u8>),
    Refused(Reply),
    /// A BDAT chunk size past 64 bits: how many bytes follow is unknowable.
    BdatTooBig,
}

fn parse_command(line: &[u8]) -> Parsed {
    if super::framing::has_oversized_number(line) {
        return if line[..4].eq_ignore_ascii_case(b"BDAT") {
            Parsed::BdatTooBig
        } else {
            Parsed::Refused(reply::MESSAGE_TOO_BIG)
        };
    }
    match Request::parse(&mut line.iter()) {
        Ok(request) => {
            let path = match request {
                Request::Mail { .. } | Request::Rcpt { .. } => {
                    crate::address::raw_path(line).map(<[u8]>::to_vec)
                }
                _ => None,
            };
            Parsed::Request(request.into_owned(), path)
        }
        Err(e) => Parsed::Refused(Reply::for_parse_error(&e)),
    }
}

/// Takes up to `left` bytes of a BDAT chunk from the front of `rest`.
fn take_chunk<'a>(left: &mut u64, rest: &mut &'a [u8]) -> &'a [u8] {
    let n = usize::try_from(*left).map_or(rest.len(), |l| l.min(rest.len()));
    let (chunk, tail) = rest.split_at(n);
    *left -= n as u64;
    *rest = tail;
    chunk
}
