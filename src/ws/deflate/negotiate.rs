//! The server's side of RFC 7692 negotiation: picks the first permessage-deflate offer
//! in the client's `Sec-WebSocket-Extensions` headers that the server can honour and
//! writes the answer. Decides only; never keeps state. An offer it cannot honour is
//! declined (the next one is tried), never the connection.

/// An accepted offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    /// `server_max_window_bits` the server must keep to (15 when not offered).
    pub bits: u8,
    /// The `Sec-WebSocket-Extensions` value of the 101 answer.
    pub answer: String,
}

/// The first acceptable permessage-deflate offer among `headers` (each a
/// `Sec-WebSocket-Extensions` value, in order; offers are comma-separated), or `None`.
pub fn negotiate<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<Agreed> {
    headers
        .into_iter()
        .flat_map(split_offers)
        .find_map(|offer| accept(&offer))
}

/// Splits a header value into offers at the commas that are outside quoted strings.
fn split_offers(value: &str) -> Vec<String> {
    let mut offers = Vec::new();
    let (mut cur, mut quoted) = (String::new(), false);
    for c in value.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => offers.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    offers.push(cur);
    offers
}

/// Accepts one offer (`permessage-deflate; param; param=value ...`), if the server can.
fn accept(offer: &str) -> Option<Agreed> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let (mut server_nct, mut client_nct, mut client_bits, mut server_bits) =
        (false, false, false, None);
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (param, None),
        };
        let fresh = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => {
                !std::mem::replace(&mut server_nct, true)
            }
            "client_no_context_takeover" if value.is_none() => {
                !std::mem::replace(&mut client_nct, true)
            }
            // The client can be limited: we never ask it to (it may keep 15 bits; we
            // inflate with a full window), so the value only has to be valid.
            "client_max_window_bits" => {
                if let Some(v) = value {
                    bits_value(v)?;
                }
                !std::mem::replace(&mut client_bits, true)
            }
            "server_max_window_bits" => {
                let bits = bits_value(value?)?;
                server_bits.replace(bits).is_none()
            }
            _ => false, // unknown, or a value where none belongs
        };
        if !fresh {
            return None; // a parameter twice is an invalid offer (§7)
        }
    }
    let bits = server_bits.unwrap_or(15);
    let mut answer =
        String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    if let Some(b) = server_bits {
        // §7.1.2.1: accepting the limit means echoing it (we honour it by sending any
        // message longer than the window uncompressed).
        answer.push_str(&format!("; server_max_window_bits={b}"));
    }
    Some(Agreed { bits, answer })
}

/// A token or quoted-string value without its quotes (`None` when malformed).
fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(inner) => inner.strip_suffix('"'),
        None => Some(v),
    }
}

/// A window size: 8 to 15, digits only (RFC 7692 §7.1.2).
fn bits_value(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}
