//! Signatures both ways: Standard Webhooks signatures on what preflight sends, and the
//! checks on what providers send it (Twilio's `X-Twilio-Signature`, a generic
//! `x-preflight-signature`). Every comparison is constant-time and checks the length.
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;
type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// `webhook-signature`: `v1,<base64 HMAC-SHA256 over "id.timestamp.body">`, one per secret,
/// space-separated (two while a secret is rotated).
pub fn standard_signature(secrets: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut out = String::new();
    for s in secrets {
        let mut mac = HmacSha256::new_from_slice(s).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("v1,");
        out.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
    }
    out
}

/// Whether `header` is Twilio's signature of a form POST to `url` with `params`:
/// Base64(HMAC-SHA1(token, url + each name and value, sorted by name)).
pub fn twilio_valid(token: &[u8], url: &str, params: &[(String, String)], header: &str) -> bool {
    let Ok(given) = STANDARD.decode(header.trim()) else {
        return false;
    };
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // Stable, so repeated names keep their order, as Twilio signs them.
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut mac = HmacSha1::new_from_slice(token).expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac.verify_slice(&given).is_ok()
}

/// Whether `header` is `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn hmac_sha256_valid(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn standard_signature_matches_the_reference_vector() {
        let secret = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = standard_signature(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn empty_and_short_signatures_never_verify() {
        assert!(!twilio_valid(b"t", "https://x/", &[], ""));
        assert!(!twilio_valid(b"t", "https://x/", &[], "AAAA"));
        assert!(!hmac_sha256_valid(b"k", b"body", "sha256="));
        assert!(!hmac_sha256_valid(b"k", b"body", "sha256=00"));
    }
}
