//! What went wrong talking to another server, per recipient: the delivery engine turns it
//! into a retry or a DSN, routing's probes and verification into their own answers.

/// Why a recipient was not delivered (or a probe not answered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundError {
    pub permanent: bool,
    /// Enhanced status code, e.g. "5.1.1".
    pub status: String,
    /// What happened, e.g. the remote reply "550 5.1.1 no such user".
    pub diagnostic: String,
    /// The remote host that answered, if one did.
    pub remote: Option<String>,
    /// The diagnostic is a remote SMTP reply (DSN Diagnostic-Code type "smtp").
    pub smtp: bool,
    /// How long the peer asked us to wait before trying again (HTTP Retry-After, EWS
    /// BackOffMilliseconds): the next attempt waits at least this long.
    pub retry_after: Option<std::time::Duration>,
}

impl OutboundError {
    pub fn permanent(status: &str, diagnostic: String) -> Self {
        Self::permanent_status(status.to_string(), diagnostic)
    }

    pub fn temporary(status: &str, diagnostic: String) -> Self {
        Self::temporary_status(status.to_string(), diagnostic)
    }

    pub fn permanent_status(status: String, diagnostic: String) -> Self {
        Self { permanent: true, status, diagnostic, remote: None, smtp: false, retry_after: None }
    }

    pub fn temporary_status(status: String, diagnostic: String) -> Self {
        Self { permanent: false, status, diagnostic, remote: None, smtp: false, retry_after: None }
    }

    /// The same, to be tried again no sooner than `after`.
    pub fn retry_after(mut self, after: Option<std::time::Duration>) -> Self {
        self.retry_after = after;
        self
    }

    /// A connection-level problem with one host: temporary, try the next host.
    pub fn network(host: &str, what: String) -> Self {
        Self {
            permanent: false,
            status: "4.4.1".into(),
            diagnostic: format!("{host}: {what}"),
            remote: None,
            smtp: false,
            retry_after: None,
        }
    }
}
