//! Access tokens and signed master data: EdDSA JWTs signed with the server's Ed25519 key.
//!
//! Verification follows DPOP.md: one algorithm (`EdDSA`), required `exp nbf iss aud sub`,
//! `nbf` checked, leeway 30 s, typed claims (so a string `exp` fails), and by hand what
//! jsonwebtoken 11.1 skips: `typ == "at+jwt"`, no `crit`, no key-bearing header members, and
//! `kid` naming our key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sync_core::scope::MasterData;

/// `iss` of everything the server signs.
pub(crate) const ISSUER: &str = "fieldcase";

/// `aud` of access tokens.
pub(crate) const TOKEN_AUDIENCE: &str = "fieldcase-sync";

/// `aud` of master data.
pub(crate) const DEVICE_AUDIENCE: &str = "fieldcase-device";

/// `typ` of access tokens (RFC 9068).
pub(crate) const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// `typ` of signed master data.
pub(crate) const MASTER_DATA_TYPE: &str = "master-data+jwt";

/// Longest access-token lifetime, in seconds; never past the certificate's `valid_to`.
pub(crate) const TOKEN_LIFETIME_SECONDS: u64 = 600;

/// Clock leeway on `exp` and `nbf`, in seconds.
const LEEWAY_SECONDS: u64 = 30;

/// The key confirmation: the thumbprint of the device key the token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Confirmation {
    /// RFC 7638 thumbprint of the device's P-256 key.
    pub(crate) jkt: String,
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AccessClaims {
    /// Always [`ISSUER`].
    pub(crate) iss: String,
    /// Always [`TOKEN_AUDIENCE`].
    pub(crate) aud: String,
    /// The officer.
    pub(crate) sub: String,
    /// The device the token was minted for.
    pub(crate) device: String,
    /// The officer's certificate, if the role holds one.
    pub(crate) cert_no: Option<String>,
    /// The certificate's `rev` at minting; a later change refuses the token.
    pub(crate) cert_rev: i64,
    /// `officer`, `supervisor` or `admin`.
    pub(crate) role: String,
    /// `township:T` and `matter:M` entries, informational: authorization reads the registry.
    pub(crate) scope: Vec<String>,
    /// The key the token is bound to.
    pub(crate) cnf: Confirmation,
    /// Issued at, seconds.
    pub(crate) iat: u64,
    /// Not before, seconds.
    pub(crate) nbf: u64,
    /// Expiry, seconds.
    pub(crate) exp: u64,
    /// Unique id.
    pub(crate) jti: String,
}

/// The claims of signed master data.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MasterDataClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    data: MasterData,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Past `exp` (plus leeway).
    Expired,
    /// Anything else; the reason is for logs and messages.
    Invalid(String),
}

/// The server's Ed25519 signing key with its verifier.
pub(crate) struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_x: String,
    kid: String,
    validation: Validation,
}

impl TokenKey {
    /// Loads the key from its PKCS#8 DER.
    pub(crate) fn from_pkcs8(der: &[u8]) -> anyhow::Result<Self> {
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(der)
            .map_err(|err| anyhow::anyhow!("the token key does not load: {err}"))?;
        let public = aws_lc_rs::signature::KeyPair::public_key(&pair).as_ref().to_vec();
        let public_x = URL_SAFE_NO_PAD.encode(&public);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(&public))[..16].to_owned();
        let decoding = DecodingKey::from_ed_components(&public_x)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[TOKEN_AUDIENCE]);
        Ok(Self { encoding: EncodingKey::from_ed_der(der), decoding, public_x, kid, validation })
    }

    /// The public key as a JWK, for devices to verify master data.
    pub(crate) fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": self.public_x, "kid": self.kid,
            "alg": "EdDSA", "use": "sig",
        })
    }

    /// Signs an access token.
    pub(crate) fn sign_access(&self, claims: &AccessClaims) -> String {
        self.sign(ACCESS_TOKEN_TYPE, claims)
    }

    /// Signs master data for a device; it expires with the snapshot's `valid_until`.
    pub(crate) fn sign_master_data(&self, data: &MasterData, now: u64) -> String {
        let claims = MasterDataClaims {
            iss: ISSUER,
            aud: DEVICE_AUDIENCE,
            iat: now,
            exp: u64::try_from(data.valid_until / 1000).unwrap_or(0),
            data: data.clone(),
        };
        self.sign(MASTER_DATA_TYPE, &claims)
    }

    fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .expect("signing with a loaded Ed25519 key cannot fail")
    }

    /// Verifies an access token and returns its claims.
    pub(crate) fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let invalid = |reason: &str| TokenError::Invalid(reason.to_owned());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| TokenError::Invalid(format!("header: {err}")))?;
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(invalid("typ is not at+jwt"));
        }
        if header.crit.is_some() {
            return Err(invalid("crit is not supported"));
        }
        if header.jku.is_some()
            || header.x5u.is_some()
            || header.jwk.is_some()
            || header.x5c.is_some()
        {
            return Err(invalid("the header names a key"));
        }
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(invalid("unknown kid"));
        }
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(format!("{err}")),
            })?;
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::get_current_timestamp;
    use serde_json::json;

    use super::*;
    use crate::auth::keys::KeyFiles;

    fn key() -> TokenKey {
        TokenKey::from_pkcs8(&KeyFiles::generate().token_pkcs8).expect("a fresh key loads")
    }

    fn claims(now: u64) -> AccessClaims {
        AccessClaims {
            iss: ISSUER.to_owned(),
            aud: TOKEN_AUDIENCE.to_owned(),
            sub: "o-1".to_owned(),
            device: "dev-1".to_owned(),
            cert_no: Some("C-0001".to_owned()),
            cert_rev: 1,
            role: "officer".to_owned(),
            scope: vec!["township:t-chengguan".to_owned()],
            cnf: Confirmation { jkt: "jkt".to_owned() },
            iat: now,
            nbf: now,
            exp: now + TOKEN_LIFETIME_SECONDS,
            jti: "0123456789abcdef".to_owned(),
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token signed with our key but with any header and claims.
    fn signed_raw(key: &TokenKey, header: &Header, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(header, claims, &key.encoding).expect("signing")
    }

    fn our_header(key: &TokenKey) -> Header {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        header
    }

    #[track_caller]
    fn check_invalid(key: &TokenKey, token: &str) {
        let result = key.verify_access(token);
        assert!(matches!(result, Err(TokenError::Invalid(_))), "{result:?}");
    }

    #[test]
    fn a_signed_token_verifies_with_the_aws_lc_backend() {
        let key = key();
        let now = get_current_timestamp();
        let token = key.sign_access(&claims(now));
        assert_eq!(key.verify_access(&token), Ok(claims(now)));
        assert_eq!(key.kid.len(), 16);
    }

    #[test]
    fn alg_none_is_invalid() {
        let key = key();
        let header =
            b64(format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{}"}}"#, key.kid).as_bytes());
        let body = b64(&serde_json::to_vec(&claims(get_current_timestamp())).unwrap());
        check_invalid(&key, &format!("{header}.{body}."));
    }

    #[test]
    fn hs256_keyed_with_the_public_key_is_invalid() {
        let key = key();
        let public = URL_SAFE_NO_PAD.decode(&key.public_x).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(
            &header,
            &claims(get_current_timestamp()),
            &EncodingKey::from_secret(&public),
        )
        .unwrap();
        check_invalid(&key, &token);
    }

    #[test]
    fn string_times_are_invalid() {
        let key = key();
        let now = get_current_timestamp();
        for field in ["exp", "nbf"] {
            let mut value = serde_json::to_value(claims(now)).unwrap();
            value[field] = json!((now + 100).to_string());
            check_invalid(&key, &signed_raw(&key, &our_header(&key), &value));
        }
    }

    #[test]
    fn other_types_headers_and_audiences_are_invalid() {
        let key = key();
        let now = get_current_timestamp();
        let good = serde_json::to_value(claims(now)).unwrap();

        let mut jwt_typ = our_header(&key);
        jwt_typ.typ = Some("JWT".to_owned());
        check_invalid(&key, &signed_raw(&key, &jwt_typ, &good));
        let mut dpop_typ = our_header(&key);
        dpop_typ.typ = Some("dpop+jwt".to_owned());
        check_invalid(&key, &signed_raw(&key, &dpop_typ, &good));
        let mut crit = our_header(&key);
        crit.crit = Some(vec!["exp".to_owned()]);
        check_invalid(&key, &signed_raw(&key, &crit, &good));
        let mut jku = our_header(&key);
        jku.jku = Some("http://127.0.0.1:1/keys".to_owned());
        check_invalid(&key, &signed_raw(&key, &jku, &good));
        let mut kid = our_header(&key);
        kid.kid = Some("someone-else".to_owned());
        check_invalid(&key, &signed_raw(&key, &kid, &good));

        let mut audience = good.clone();
        audience["aud"] = json!(DEVICE_AUDIENCE);
        check_invalid(&key, &signed_raw(&key, &our_header(&key), &audience));
        let mut issuer = good.clone();
        issuer["iss"] = json!("elsewhere");
        check_invalid(&key, &signed_raw(&key, &our_header(&key), &issuer));
        let mut future = good.clone();
        future["nbf"] = json!(now + 120);
        check_invalid(&key, &signed_raw(&key, &our_header(&key), &future));
        let mut no_sub = good;
        no_sub.as_object_mut().unwrap().remove("sub");
        check_invalid(&key, &signed_raw(&key, &our_header(&key), &no_sub));

        let other = TokenKey::from_pkcs8(&KeyFiles::generate().token_pkcs8).unwrap();
        let mut forged_claims = claims(now);
        forged_claims.sub = "admin".to_owned();
        let mut forged = other.sign_access(&forged_claims);
        // Same kid as ours, signed by another key.
        forged = {
            let mut header = our_header(&key);
            header.kid = Some(key.kid.clone());
            jsonwebtoken::encode(&header, &forged_claims, &other.encoding).unwrap_or(forged)
        };
        check_invalid(&key, &forged);
    }

    #[test]
    fn an_expired_token_is_expired() {
        let key = key();
        let now = get_current_timestamp();
        let mut old = claims(now - 2_000);
        old.exp = now - 100;
        assert_eq!(key.verify_access(&key.sign_access(&old)), Err(TokenError::Expired));
    }
}
