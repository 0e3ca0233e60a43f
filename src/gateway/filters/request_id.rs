//! `X-Request-ID`: kept when the client sent a sane one, generated otherwise, forwarded
//! upstream and returned to the client.

use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue};

pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, inserting a fresh one into `headers` when needed. `headers` is left
/// with exactly that one id: a second client-sent line would reach the upstream beside the
/// id the response and the access log carry.
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    match headers.entry(&HEADER) {
        Entry::Occupied(mut e) => {
            let id = if acceptable(e.get()) {
                e.get().clone()
            } else {
                generate()
            };
            // Replaces every line of the header, not just the first.
            e.insert(id.clone());
            id
        }
        Entry::Vacant(e) => e.insert(generate()).clone(),
    }
}

/// Client ids are echoed into logs and responses, so only short visible ASCII is kept.
fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

pub fn generate() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // Owned bytes are shared by clones; a copied slice would allocate again when the id is
    // first cloned (it is, for the response).
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .expect("a UUID is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_good_id_and_replaces_a_bad_one() {
        let mut h = HeaderMap::new();
        h.insert(&HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(ensure(&mut h), "abc-123");

        let mut h = HeaderMap::new();
        h.insert(&HEADER, HeaderValue::from_static("has space"));
        let id = ensure(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(h[&HEADER], id);

        // Only the first line counts, and only it goes on.
        for second in ["def-456", "has space"] {
            let mut h = HeaderMap::new();
            h.append(&HEADER, HeaderValue::from_static("abc-123"));
            h.append(&HEADER, HeaderValue::from_str(second).unwrap());
            assert_eq!(ensure(&mut h), "abc-123");
            assert_eq!(h.get_all(&HEADER).iter().collect::<Vec<_>>(), ["abc-123"]);
        }
        let mut h = HeaderMap::new();
        h.append(&HEADER, HeaderValue::from_static("has space"));
        h.append(&HEADER, HeaderValue::from_static("def-456"));
        let id = ensure(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(h.get_all(&HEADER).iter().collect::<Vec<_>>(), [&id]);

        let mut h = HeaderMap::new();
        let a = ensure(&mut h);
        let b = ensure(&mut HeaderMap::new());
        assert_ne!(a, b);
    }
}
