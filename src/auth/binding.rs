//! Sender-constraint enforcement: does the token's `cnf` fit how it was presented, and
//! does the route accept it?
//!
//! The rule that never bends: a token that carries `cnf` is held to its binding whatever
//! the route says. The route decides which bindings it accepts (`mtls`, `dpop`, `any`) and
//! whether an *unbound* token is acceptable (`bearer`, for migrations).

use super::credentials::Credential;
use super::token::Confirmation;
use crate::answer::{AuthDenial, AuthErrorCode};
use crate::config::Binding;
use crate::jose;

/// What is left to prove after [`check_binding`] passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingCheck {
    /// Nothing: the binding is satisfied (or the route accepts an unbound token).
    Satisfied,
    /// A DPoP proof signed by the key with this RFC 7638 thumbprint.
    NeedsDpopProof([u8; 32]),
}

/// Checks the binding of a validated token, as a pure function of the route's policy, the
/// token's `cnf`, the credential's scheme and the connection's client-certificate
/// thumbprint. RFC 8705 §3 and RFC 9449 §7 make every failure here a 401 `invalid_token`.
pub fn check_binding(
    binding: Binding,
    cnf: &Confirmation,
    credential: &Credential<'_>,
    client_cert: Option<&[u8; 32]>,
) -> Result<BindingCheck, AuthDenial> {
    let bearer =
        |reason, description: &'static str| Err(AuthDenial::new(AuthErrorCode::InvalidToken, reason, description));
    let dpop =
        |reason, description: &'static str| Err(AuthDenial::dpop(AuthErrorCode::InvalidToken, reason, description));
    if cnf.unknown_method {
        let description = "the token is bound by a confirmation method this gateway cannot verify";
        return match credential {
            Credential::Bearer(_) => bearer("unsupported_cnf", description),
            Credential::Dpop(_) => dpop("unsupported_cnf", description),
        };
    }
    match credential {
        Credential::Bearer(_) => {
            if cnf.jkt.is_some() {
                // RFC 9449 §7.2: a DPoP-bound token presented as a bearer token is refused.
                return bearer(
                    "dpop_token_as_bearer",
                    "a DPoP-bound token must be sent with the DPoP scheme and a proof",
                );
            }
            if let Some(expected) = &cnf.x5t_s256 {
                check_certificate(expected, client_cert)
                    .map_err(|(reason, d)| AuthDenial::new(AuthErrorCode::InvalidToken, reason, d))?;
                return match binding {
                    Binding::Dpop => bearer("dpop_required", "this resource requires a DPoP-bound access token"),
                    _ => Ok(BindingCheck::Satisfied),
                };
            }
            match binding {
                Binding::Bearer => Ok(BindingCheck::Satisfied),
                Binding::Dpop => bearer("dpop_required", "this resource requires a DPoP-bound access token"),
                Binding::Mtls | Binding::Any => {
                    bearer("token_not_bound", "this resource requires a sender-constrained access token")
                }
            }
        }
        Credential::Dpop(_) => {
            let Some(jkt) = cnf.jkt else {
                return dpop("not_dpop_bound", "the DPoP scheme requires a DPoP-bound access token");
            };
            if binding == Binding::Mtls {
                return dpop("mtls_required", "this resource requires a certificate-bound access token");
            }
            if let Some(expected) = &cnf.x5t_s256 {
                // Bound twice: both bindings hold.
                check_certificate(expected, client_cert)
                    .map_err(|(reason, d)| AuthDenial::dpop(AuthErrorCode::InvalidToken, reason, d))?;
            }
            Ok(BindingCheck::NeedsDpopProof(jkt))
        }
    }
}

fn check_certificate(expected: &[u8; 32], client_cert: Option<&[u8; 32]>) -> Result<(), (&'static str, &'static str)> {
    match client_cert {
        None => Err(("client_cert_missing", "the token is bound to a client certificate, and none was presented")),
        Some(actual) if jose::constant_time_eq(expected, actual) => Ok(()),
        Some(_) => Err(("client_cert_mismatch", "the client certificate does not match the one the token is bound to")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CERT: [u8; 32] = [7; 32];
    const OTHER: [u8; 32] = [8; 32];
    const JKT: [u8; 32] = [9; 32];

    fn mtls_bound() -> Confirmation {
        Confirmation { x5t_s256: Some(CERT), ..Default::default() }
    }

    fn dpop_bound() -> Confirmation {
        Confirmation { jkt: Some(JKT), ..Default::default() }
    }

    fn reason(r: Result<BindingCheck, AuthDenial>) -> &'static str {
        let d = r.unwrap_err();
        assert_eq!(d.code, Some(AuthErrorCode::InvalidToken));
        d.reason
    }

    #[test]
    fn certificate_bound_token_needs_the_same_certificate() {
        let bearer = Credential::Bearer("t");
        assert_eq!(check_binding(Binding::Mtls, &mtls_bound(), &bearer, Some(&CERT)), Ok(BindingCheck::Satisfied));
        assert_eq!(reason(check_binding(Binding::Mtls, &mtls_bound(), &bearer, Some(&OTHER))), "client_cert_mismatch");
        assert_eq!(reason(check_binding(Binding::Mtls, &mtls_bound(), &bearer, None)), "client_cert_missing");
    }

    #[test]
    fn bound_tokens_are_held_to_their_binding_on_bearer_routes() {
        let bearer = Credential::Bearer("t");
        assert_eq!(reason(check_binding(Binding::Bearer, &mtls_bound(), &bearer, None)), "client_cert_missing");
        assert_eq!(reason(check_binding(Binding::Bearer, &dpop_bound(), &bearer, Some(&CERT))), "dpop_token_as_bearer");
        let unknown = Confirmation { unknown_method: true, ..Default::default() };
        assert_eq!(reason(check_binding(Binding::Bearer, &unknown, &bearer, Some(&CERT))), "unsupported_cnf");
    }

    #[test]
    fn unbound_tokens_pass_only_on_bearer_routes() {
        let bearer = Credential::Bearer("t");
        let unbound = Confirmation::default();
        assert_eq!(check_binding(Binding::Bearer, &unbound, &bearer, None), Ok(BindingCheck::Satisfied));
        for b in [Binding::Mtls, Binding::Any] {
            assert_eq!(reason(check_binding(b, &unbound, &bearer, Some(&CERT))), "token_not_bound");
        }
        assert_eq!(reason(check_binding(Binding::Dpop, &unbound, &bearer, None)), "dpop_required");
    }

    #[test]
    fn dpop_tokens_need_a_proof_on_dpop_any_and_bearer_routes() {
        let dpop = Credential::Dpop("t");
        for b in [Binding::Dpop, Binding::Any, Binding::Bearer] {
            assert_eq!(check_binding(b, &dpop_bound(), &dpop, None), Ok(BindingCheck::NeedsDpopProof(JKT)));
        }
        assert_eq!(reason(check_binding(Binding::Mtls, &dpop_bound(), &dpop, None)), "mtls_required");
    }

    #[test]
    fn dpop_scheme_with_unbound_or_mtls_token_is_refused() {
        let dpop = Credential::Dpop("t");
        let d = check_binding(Binding::Dpop, &Confirmation::default(), &dpop, None).unwrap_err();
        assert_eq!(d.reason, "not_dpop_bound");
        assert_eq!(d.scheme, crate::answer::Scheme::Dpop);
        assert_eq!(reason(check_binding(Binding::Any, &mtls_bound(), &dpop, Some(&CERT))), "not_dpop_bound");
    }

    #[test]
    fn mtls_bound_token_on_a_dpop_route_is_refused() {
        assert_eq!(
            reason(check_binding(Binding::Dpop, &mtls_bound(), &Credential::Bearer("t"), Some(&CERT))),
            "dpop_required"
        );
    }

    #[test]
    fn doubly_bound_token_needs_both() {
        let both = Confirmation { jkt: Some(JKT), x5t_s256: Some(CERT), unknown_method: false };
        let dpop = Credential::Dpop("t");
        assert_eq!(check_binding(Binding::Any, &both, &dpop, Some(&CERT)), Ok(BindingCheck::NeedsDpopProof(JKT)));
        assert_eq!(reason(check_binding(Binding::Any, &both, &dpop, None)), "client_cert_missing");
    }
}
