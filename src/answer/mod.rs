//! Every answer the gateway makes on its own, and the one place that turns it into HTTP.
//!
//! An [`Answer`] ends a request before (or instead of) the upstream: a [`Rejection`] —
//! status, `WWW-Authenticate` challenge ([`challenge`]), JSON body, reason code and
//! [`FailureClass`] — or a response the gateway makes itself (a redirect with `Set-Cookie`,
//! a metadata document), which the coming login mode and resource metadata build. The
//! pipeline's admit phase returns one; nothing else in the crate knows status codes or
//! challenge syntax.
//!
//! This module decides nothing: it imports only configuration (for the route's accepted
//! schemes) and bodies.

pub mod challenge;
pub mod rejection;
pub mod resource_metadata;

use http::Response;

use crate::body::ProxyBody;
pub use challenge::{AuthDenial, AuthErrorCode, Scheme};
pub use rejection::{DPOP_NONCE, FailureClass, Rejection};

/// What the gateway answers instead of forwarding.
#[derive(Debug)]
pub enum Answer {
    /// A refusal.
    Reject(Rejection),
    /// A response the gateway makes itself, with the reason code its logs and metrics use.
    Respond { response: Box<Response<ProxyBody>>, reason: &'static str },
}

impl Answer {
    /// Stable reason code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Answer::Reject(rejection) => rejection.reason(),
            Answer::Respond { reason, .. } => reason,
        }
    }

    /// Whose fault a refusal is; `None` for a response the gateway made on purpose.
    pub fn class(&self) -> Option<FailureClass> {
        match self {
            Answer::Reject(rejection) => Some(rejection.class()),
            Answer::Respond { .. } => None,
        }
    }

    /// What a refusal's challenge tells the client (`error_description`), if it has one:
    /// for the debug log, which names what was expected and what came. Never a credential.
    pub fn description(&self) -> Option<&str> {
        match self {
            Answer::Reject(Rejection::Auth(denial)) => Some(&denial.description),
            _ => None,
        }
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        match self {
            Answer::Reject(rejection) => rejection.into_response(),
            Answer::Respond { response, .. } => *response,
        }
    }
}

impl From<Rejection> for Answer {
    fn from(rejection: Rejection) -> Self {
        Answer::Reject(rejection)
    }
}

impl From<AuthDenial> for Answer {
    fn from(denial: AuthDenial) -> Self {
        Answer::Reject(Rejection::Auth(denial))
    }
}

/// `text` safe inside HTML text and double- or single-quoted attribute values.
pub fn html_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    #[test]
    fn html_escape_leaves_no_markup() {
        assert_eq!(
            super::html_escape(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
