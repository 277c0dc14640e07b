//! The test double behind `Dns::from_zones`: records written as text, one per line,
//! `name TYPE data` (`;` starts a comment). Types: MX (`pref host`), A, AAAA, PTR (`host`), TXT
//! (the rest of the line). A name with no record at all is NXDOMAIN; a name with records of other types
//! answers "no records". Used by unit tests; end-to-end tests use a real DNS server.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, bail};

use super::Raw;

#[derive(Default)]
pub struct Zones {
    /// Lower-case fully qualified name (with the trailing dot) -> its records.
    names: HashMap<String, Vec<Record>>,
}

enum Record {
    Mx(u16, String),
    A(Ipv4Addr),
    Aaaa(std::net::Ipv6Addr),
    Ptr(String),
    Txt,
}

impl Zones {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut zones = Self::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.split(';').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                bail!("zone line {}: want `name TYPE data`", i + 1);
            };
            let data: Vec<&str> = words.collect();
            let record = match (kind.to_ascii_uppercase().as_str(), data.as_slice()) {
                ("MX", [pref, host]) => Record::Mx(
                    pref.parse().with_context(|| format!("zone line {}", i + 1))?,
                    host.to_string(),
                ),
                ("A", [ip]) => Record::A(ip.parse().with_context(|| format!("zone line {}", i + 1))?),
                ("AAAA", [ip]) => Record::Aaaa(ip.parse().with_context(|| format!("zone line {}", i + 1))?),
                ("PTR", [host]) => Record::Ptr(host.to_string()),
                ("TXT", _) => Record::Txt,
                _ => bail!("zone line {}: unsupported record {line:?}", i + 1),
            };
            let name = format!("{}.", name.trim_end_matches('.').to_ascii_lowercase());
            zones.names.entry(name).or_default().push(record);
        }
        Ok(zones)
    }

    fn answer<T>(&self, name: &str, pick: impl Fn(&Record) -> Option<T>) -> Raw<T> {
        match self.names.get(&name.to_ascii_lowercase()) {
            None => Raw::NxDomain,
            Some(records) => {
                let found: Vec<T> = records.iter().filter_map(pick).collect();
                if found.is_empty() { Raw::NoRecords } else { Raw::Records(found) }
            }
        }
    }

    pub(super) fn mx(&self, name: &str) -> Raw<(u16, String)> {
        self.answer(name, |r| match r {
            Record::Mx(pref, host) => Some((*pref, host.clone())),
            _ => None,
        })
    }

    pub(super) fn ips(&self, name: &str) -> Raw<IpAddr> {
        self.answer(name, |r| match r {
            Record::A(ip) => Some(IpAddr::V4(*ip)),
            Record::Aaaa(ip) => Some(IpAddr::V6(*ip)),
            _ => None,
        })
    }

    pub(super) fn ptr(&self, name: &str) -> Raw<String> {
        self.answer(name, |r| match r {
            Record::Ptr(host) => Some(host.clone()),
            _ => None,
        })
    }

    pub(super) fn ipv4(&self, name: &str) -> Raw<Ipv4Addr> {
        self.answer(name, |r| match r {
            Record::A(ip) => Some(*ip),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_named() {
        let e = Zones::parse("x.test. MX ten mx.test.").err().unwrap();
        assert!(format!("{e:#}").contains("zone line 1"), "{e:#}");
        assert!(Zones::parse("x.test.").is_err());
        assert!(Zones::parse("x.test. SRV 1 2 3 y").is_err());
    }
}
