//! The quarantine console as a plain HTTP client sees it (no browser): sign in, keep the session
//! cookie, read a form's CSRF token, post forms. For tests about what the pages do; what a
//! browser makes of them is `tests/peers/browser/console.mjs`'s part.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The first form's CSRF token on the page.
    pub fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
        self.body[at..].split('"').next().unwrap().to_string()
    }
}

pub struct Console {
    addr: SocketAddr,
    cookie: String,
}

fn request(addr: SocketAddr, method: &str, path: &str, cookie: &str, form: &str) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let cookie = if cookie.is_empty() { String::new() } else { format!("Cookie: {cookie}\r\n") };
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{cookie}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    s.write_all(text.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer { status, headers, body: body.to_string() }
}

impl Console {
    /// Signs in with `token` (none: a gateway without admin authentication).
    pub fn sign_in(addr: SocketAddr, token: Option<&str>) -> Self {
        let page = request(addr, "GET", "/console/login", "", "");
        let form_cookie = page.header("set-cookie").expect("the sign-in form's cookie");
        let form_cookie = form_cookie.split(';').next().unwrap().to_string();
        let mut form = format!("csrf={}", page.csrf());
        if let Some(t) = token {
            form.push_str(&format!("&token={t}"));
        }
        let answer = request(addr, "POST", "/console/login", &form_cookie, &form);
        assert_eq!(answer.status, 303, "{}", answer.body);
        let set = answer.header("set-cookie").expect("a session cookie");
        Self { addr, cookie: set.split(';').next().unwrap().to_string() }
    }

    pub fn get(&self, path: &str) -> Answer {
        request(self.addr, "GET", path, &self.cookie, "")
    }

    pub fn post(&self, path: &str, form: &str) -> Answer {
        request(self.addr, "POST", path, &self.cookie, form)
    }
}
