//! loadgen's payload: publisher id, per-stream sequence number, intended and actual send
//! time, padded to `--payload` bytes; and the fixed-rate schedule.

use crate::redis_pub::push_num;

/// Append loadgen's payload: `{"p":P,"s":S,"t":T,"a":A,"x":"aaa…"}` padded to `size`
/// bytes (or the minimum length if `size` is smaller). `t` is the intended send time
/// (t0 + k/rate at a fixed rate), `a` the actual one (the clock when it was queued).
pub fn build_payload(out: &mut Vec<u8>, p: u32, s: u64, t: u64, a: u64, size: usize) {
    let start = out.len();
    out.extend_from_slice(b"{\"p\":");
    push_num(out, p as u64);
    out.extend_from_slice(b",\"s\":");
    push_num(out, s);
    out.extend_from_slice(b",\"t\":");
    push_num(out, t);
    out.extend_from_slice(b",\"a\":");
    push_num(out, a);
    out.extend_from_slice(b",\"x\":\"");
    let used = out.len() - start + 2;
    out.resize(out.len() + size.saturating_sub(used), b'a');
    out.extend_from_slice(b"\"}");
}

/// `build_payload` with realistic JSON as the padding (`--payload-kind json`):
/// `"x"` is an array of order-book-like records (`{"id":…,"sym":"…","px":…,"qty":…,
/// "side":"…"}`) whose numbers vary with the sequence number, so it compresses like
/// real market or chat JSON (about 4–6×), not like a run of one byte. Padded to `size`
/// with spaces (JSON whitespace).
pub fn build_json_payload(out: &mut Vec<u8>, p: u32, s: u64, t: u64, a: u64, size: usize) {
    const SYMS: [&str; 4] = ["ACME", "GLOBEX", "INITECH", "UMBRELLA"];
    let start = out.len();
    build_payload(out, p, s, t, a, 0);
    // Replace the empty `"x":""}` with an array.
    out.truncate(out.len() - 3);
    out.push(b'[');
    let mut rec = Vec::with_capacity(96);
    let mut k = 0u64;
    loop {
        rec.clear();
        let h = (s.wrapping_add(k)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        rec.extend_from_slice(if k == 0 { b"{\"id\":" } else { b",{\"id\":" });
        push_num(&mut rec, 100_000 + (h % 900_000));
        rec.extend_from_slice(b",\"sym\":\"");
        rec.extend_from_slice(SYMS[(h % 4) as usize].as_bytes());
        rec.extend_from_slice(b"\",\"px\":");
        push_num(&mut rec, 100 + (h % 50));
        rec.push(b'.');
        push_num(&mut rec, 10 + (h >> 8) % 90);
        rec.extend_from_slice(b",\"qty\":");
        push_num(&mut rec, 100 * (1 + (h >> 4) % 20));
        rec.extend_from_slice(if h & 1 == 0 {
            b",\"side\":\"buy\"}"
        } else {
            b",\"side\":\"sell\"}"
        });
        if out.len() - start + rec.len() + 2 > size {
            break;
        }
        out.extend_from_slice(&rec);
        k += 1;
    }
    out.extend_from_slice(b"]}");
    let pad = size.saturating_sub(out.len() - start);
    let end = out.len() - 1;
    out.splice(end..end, std::iter::repeat_n(b' ', pad));
}

/// Intended send time of a publisher's `k`-th publish (0-based) at `rate` per second.
pub fn intended_ns(t0: u64, k: u64, rate: f64) -> u64 {
    t0 + ((k as f64) * 1e9 / rate) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_padded_and_scannable() {
        let mut v = Vec::new();
        build_payload(&mut v, 3, 12345, 987654321, 987654400, 80);
        assert_eq!(v.len(), 80);
        let s = std::str::from_utf8(&v).unwrap();
        assert!(s.starts_with(r#"{"p":3,"s":12345,"t":987654321,"a":987654400,"x":"aaa"#));
        let parsed: serde_json::Value = serde_json::from_str(s).unwrap();
        assert_eq!(parsed["s"], 12345);
        let mut small = Vec::new();
        build_payload(&mut small, 1, 2, 3, 4, 4);
        assert_eq!(small, br#"{"p":1,"s":2,"t":3,"a":4,"x":""}"#.to_vec());
        let mut j = Vec::new();
        build_json_payload(&mut j, 3, 12345, 987654321, 987654400, 1024);
        assert_eq!(j.len(), 1024);
        let parsed: serde_json::Value = serde_json::from_slice(&j).unwrap();
        assert!(parsed["x"].as_array().unwrap().len() > 10);
        assert_eq!(
            crate::scan::scan_payload(&j),
            Some((3, 12345, 987654321, 987654400))
        );
        let env = [br#"{"channel":"lg.0","data":"#.as_slice(), &v, b"}"].concat();
        assert_eq!(
            crate::scan::scan(&env),
            crate::scan::Msg::Delivery {
                channel: b"lg.0",
                p: 3,
                s: 12345,
                t: 987654321,
                a: 987654400
            }
        );
    }
}
