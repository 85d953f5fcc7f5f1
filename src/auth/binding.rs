//! Sender-constraint enforcement: does the token's `cnf` fit how it was presented, and
//! does the route accept it?
//!
//! The rule that never bends: a token that carries `cnf` is held to its binding whatever
//! the route says. The route only decides whether an *unbound* token is acceptable
//! (`binding: bearer`, for migrations) or not (`mtls`, `any`).

use super::credentials::Credential;
use super::token::Confirmation;
use crate::config::Binding;
use crate::jose;
use crate::rejection::{AuthDenial, AuthErrorCode};

/// Checks the binding of a validated token, as a pure function of the route's policy, the
/// token's `cnf`, the credential's scheme and the connection's client-certificate
/// thumbprint. RFC 8705 §3 and RFC 9449 §7.2 say every failure here is a 401
/// `invalid_token`.
pub fn check_binding(
    binding: Binding,
    cnf: &Confirmation,
    credential: &Credential<'_>,
    client_cert: Option<&[u8; 32]>,
) -> Result<(), AuthDenial> {
    let deny = |reason, description: &'static str| {
        Err(AuthDenial::new(
            AuthErrorCode::InvalidToken,
            reason,
            description,
        ))
    };
    if cnf.jkt.is_some() {
        // RFC 9449 §7.2: a DPoP-bound token presented as a bearer token is refused.
        return match credential {
            Credential::Bearer(_) => deny(
                "dpop_token_as_bearer",
                "a DPoP-bound token must be sent with the DPoP scheme and a proof",
            ),
            Credential::Dpop(_) => deny(
                "dpop_unsupported",
                "DPoP-bound tokens are not accepted by this gateway version",
            ),
        };
    }
    if cnf.unknown_method {
        return deny(
            "unsupported_cnf",
            "the token is bound by a confirmation method this gateway cannot verify",
        );
    }
    if let Credential::Dpop(_) = credential {
        return deny(
            "not_dpop_bound",
            "the DPoP scheme requires a DPoP-bound token",
        );
    }
    if let Some(expected) = &cnf.x5t_s256 {
        return match client_cert {
            None => deny(
                "client_cert_missing",
                "the token is bound to a client certificate, and none was presented",
            ),
            Some(actual) if jose::constant_time_eq(expected, actual) => Ok(()),
            Some(_) => deny(
                "client_cert_mismatch",
                "the client certificate does not match the one the token is bound to",
            ),
        };
    }
    match binding {
        Binding::Bearer => Ok(()),
        Binding::Mtls | Binding::Any | Binding::Dpop => deny(
            "token_not_bound",
            "this resource requires a sender-constrained (certificate-bound) access token",
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CERT: [u8; 32] = [7; 32];
    const OTHER: [u8; 32] = [8; 32];

    fn mtls_bound() -> Confirmation {
        Confirmation {
            x5t_s256: Some(CERT),
            ..Default::default()
        }
    }

    fn reason(r: Result<(), AuthDenial>) -> &'static str {
        let d = r.unwrap_err();
        assert_eq!(d.code, Some(AuthErrorCode::InvalidToken));
        d.reason
    }

    #[test]
    fn certificate_bound_token_needs_the_same_certificate() {
        let bearer = Credential::Bearer("t");
        assert!(check_binding(Binding::Mtls, &mtls_bound(), &bearer, Some(&CERT)).is_ok());
        assert_eq!(
            reason(check_binding(
                Binding::Mtls,
                &mtls_bound(),
                &bearer,
                Some(&OTHER)
            )),
            "client_cert_mismatch"
        );
        assert_eq!(
            reason(check_binding(Binding::Mtls, &mtls_bound(), &bearer, None)),
            "client_cert_missing"
        );
    }

    #[test]
    fn bound_tokens_are_held_to_their_binding_on_bearer_routes() {
        let bearer = Credential::Bearer("t");
        assert_eq!(
            reason(check_binding(Binding::Bearer, &mtls_bound(), &bearer, None)),
            "client_cert_missing"
        );
        let dpop_bound = Confirmation {
            jkt: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(
            reason(check_binding(
                Binding::Bearer,
                &dpop_bound,
                &bearer,
                Some(&CERT)
            )),
            "dpop_token_as_bearer"
        );
        let unknown = Confirmation {
            unknown_method: true,
            ..Default::default()
        };
        assert_eq!(
            reason(check_binding(
                Binding::Bearer,
                &unknown,
                &bearer,
                Some(&CERT)
            )),
            "unsupported_cnf"
        );
    }

    #[test]
    fn unbound_tokens_pass_only_on_bearer_routes() {
        let bearer = Credential::Bearer("t");
        let unbound = Confirmation::default();
        assert!(check_binding(Binding::Bearer, &unbound, &bearer, None).is_ok());
        for b in [Binding::Mtls, Binding::Any] {
            assert_eq!(
                reason(check_binding(b, &unbound, &bearer, Some(&CERT))),
                "token_not_bound"
            );
        }
    }

    #[test]
    fn dpop_scheme_with_unbound_token_is_refused() {
        assert_eq!(
            reason(check_binding(
                Binding::Bearer,
                &Confirmation::default(),
                &Credential::Dpop("t"),
                None
            )),
            "not_dpop_bound"
        );
    }
}
