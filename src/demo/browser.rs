//! The demo's scripted browser for the login story: what a person's browser does against the
//! gateway's `login:` entry and the development authorization server — log in (PAR, the
//! consent page, the JARM callback), call the API through the session, and log out — with
//! what an attacker would try on the way: a forged authorization response, a replayed one,
//! a call without the CSRF header, the session cookie after logout. It keeps cookies as a
//! browser does (name and value, for the gateway's origin) and follows no redirect by
//! itself, so that each step is seen.

use std::net::SocketAddr;

use serde_json::Value;

use super::http::{DemoHttp, Outgoing, Reply};
use super::{DemoError, Scenario};
use crate::config::LoginSettings;
use crate::jose::{CompactJws, SigningKey};

/// Where the scripted browser goes.
pub struct Sites<'a> {
    pub gateway: SocketAddr,
    /// `localhost:8443`: the gateway's public host and port.
    pub gateway_host: &'a str,
    pub authorization_server: SocketAddr,
    pub login: &'a LoginSettings,
    /// A path under the session route, e.g. `/app/api/accounts/1`.
    pub api_path: &'a str,
}

struct Browser<'a> {
    http: &'a DemoHttp,
    sites: &'a Sites<'a>,
    /// The gateway origin's cookies.
    cookies: Vec<(String, String)>,
}

impl Browser<'_> {
    /// A request to the gateway with the cookies; `Set-Cookie` updates them.
    async fn gateway(&mut self, method: &str, target: &str, csrf: bool) -> Result<Reply, DemoError> {
        let mut headers = vec![("accept", "application/json".to_string())];
        if !self.cookies.is_empty() {
            let jar = self.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
            headers.push(("cookie", jar));
        }
        if csrf {
            headers.push(("x-csrf", "1".to_string()));
        }
        let request = Outgoing { method, host: self.sites.gateway_host, target, headers: &headers, body: None };
        let reply = self.http.send(self.sites.gateway, None, request).await?;
        for set in reply.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()) {
            let Some((name, rest)) = set.split_once('=') else { continue };
            let value = rest.split(';').next().unwrap_or("").to_string();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() && !set.to_ascii_lowercase().contains("max-age=0") {
                self.cookies.push((name.to_string(), value));
            }
        }
        Ok(reply)
    }

    /// A request to the authorization server at an absolute `https://` URL it gave.
    async fn authorization_server(&self, method: &str, url: &str, form: Option<String>) -> Result<Reply, DemoError> {
        let rest = url.strip_prefix("https://").ok_or_else(|| unexpected(format!("not an https URL: {url}")))?;
        let (host, target) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let headers =
            [("content-type", "application/x-www-form-urlencoded".to_string()), ("accept", "text/html".into())];
        let headers = if form.is_some() { &headers[..] } else { &headers[1..] };
        let request = Outgoing { method, host, target, headers, body: form.map(String::into_bytes) };
        self.http.send(self.sites.authorization_server, None, request).await
    }

    fn has_session(&self) -> bool {
        self.cookies.iter().any(|(name, _)| *name == self.sites.login.session.cookie)
    }
}

fn unexpected(why: String) -> DemoError {
    DemoError::Setup(format!("login story: {why}"))
}

/// The path and query of an absolute URL on the gateway.
fn local_target(location: &str) -> &str {
    location.strip_prefix("https://").and_then(|rest| rest.find('/').map(|i| &rest[i..])).unwrap_or(location)
}

/// The JSON `error` of a refusal, for the table.
fn error_of(reply: &Reply) -> String {
    serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .map_or_else(|| "-".to_string(), |e| format!("error: {e}"))
}

/// Plays the login story; returns one row per step.
pub async fn play(http: &DemoHttp, sites: &Sites<'_>) -> Result<Vec<Scenario>, DemoError> {
    let login = sites.login;
    let mut browser = Browser { http, sites, cookies: Vec::new() };
    let mut played = Vec::new();
    let mut row = |name: &'static str, expected: u16, reply: &Reply, detail: String, surprise: Option<String>| {
        played.push(Scenario { name, expected, got: reply.status, challenge: detail, surprise });
    };

    // 1. No session yet: the API answers 401 with the login URL, no redirect.
    let reply = browser.gateway("GET", sites.api_path, true).await?;
    row("browser: API call before logging in", 401, &reply, error_of(&reply), None);

    // 2. Login: the gateway pushes the request and sends the browser to the AS with only
    //    client_id and request_uri.
    let reply = browser.gateway("GET", &format!("{}?return_to=/app/", login.paths.login), false).await?;
    let location = reply.header("location");
    let query = location.split_once('?').map_or("", |(_, q)| q);
    let names: Vec<String> = form_urlencoded::parse(query.as_bytes()).map(|(n, _)| n.into_owned()).collect();
    let surprise = (names != ["client_id", "request_uri"])
        .then(|| format!("the authorization URL carries {names:?}, not only client_id and request_uri"));
    row("login: PAR, then 303 to the AS", 303, &reply, "Location: …/authorize?client_id&request_uri".into(), surprise);

    // 3. The consent page, then Allow: 303 back to the callback with a signed response.
    let page = browser.authorization_server("GET", &location, None).await?;
    let consent = page
        .text()
        .split("name=\"consent\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_string)
        .ok_or_else(|| unexpected(format!("no consent form at the AS ({}): {}", page.status, page.text())))?;
    let form = format!("consent={consent}&decision=allow");
    let origin = location.split("/authorize").next().unwrap_or_default().to_string();
    let decided = browser.authorization_server("POST", &format!("{origin}/authorize"), Some(form)).await?;
    let callback = decided.header("location");
    let response = callback
        .split_once("response=")
        .map(|(_, r)| r.split('&').next().unwrap_or(r).to_string())
        .ok_or_else(|| unexpected(format!("the AS answered {} without a response", decided.status)))?;
    row("AS: consent page, Allow", 303, &decided, "303 to the callback with ?response=<JARM>".into(), None);

    // 4. A forged response — the real one's claims, another code, signed by an attacker's
    //    key under the issuer's kid — is refused before its state is looked at.
    let forged = forge(&response)?;
    let target = format!("{}?response={forged}", local_target(&callback).split('?').next().unwrap_or_default());
    let reply = browser.gateway("GET", &target, false).await?;
    let surprise = browser.has_session().then(|| "a session cookie was set".to_string());
    row("forged JARM response (attacker's key)", 400, &reply, format!("{}, no session", error_of(&reply)), surprise);

    // 5. The genuine response: a new session, 303 to return_to.
    let reply = browser.gateway("GET", local_target(&callback), false).await?;
    let surprise = (!browser.has_session()).then(|| "no session cookie".to_string());
    let session_cookie = format!("{}=", login.session.cookie);
    let set_cookie = reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&session_cookie));
    let attributes = set_cookie.unwrap_or_default().split(';').skip(1).map(str::trim).collect::<Vec<_>>().join("; ");
    row(
        "genuine JARM response: session",
        303,
        &reply,
        format!("Location: {}, {}=…; {attributes}", reply.header("location"), login.session.cookie),
        surprise,
    );

    // 6. The same response again: its state was used.
    let mut replayer = Browser { http, sites, cookies: browser.cookies.clone() };
    replayer.cookies.retain(|(name, _)| *name != login.session.cookie);
    let reply = replayer.gateway("GET", local_target(&callback), false).await?;
    let surprise = replayer.has_session().then(|| "a session cookie was set".to_string());
    row("the same JARM response replayed", 400, &reply, error_of(&reply), surprise);

    // 7. The API through the session: the upstream gets the DPoP-bound token and a proof,
    //    not the cookie.
    let reply = browser.gateway("GET", sites.api_path, true).await?;
    let seen: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
    let upstream = format!(
        "upstream got Authorization: {}, DPoP proof: {}, cookie: {}",
        seen["authorization"].as_str().unwrap_or("?"),
        seen["dpop"].as_str().unwrap_or("?"),
        seen["cookie"].as_str().unwrap_or("?")
    );
    let surprise = (reply.status == 200
        && (seen["authorization"] != "DPoP" || seen["dpop"] != "present" || seen["cookie"] != "-"))
        .then(|| "the upstream did not get exactly the DPoP token and proof".to_string());
    row("API call through the session", 200, &reply, upstream, surprise);

    // 8. Without the CSRF header (what a cross-site form could send).
    let reply = browser.gateway("GET", sites.api_path, false).await?;
    row("API call without X-CSRF (cross-site)", 403, &reply, error_of(&reply), None);

    // 9. Logout, then the old cookie is worth nothing.
    let old = browser.cookies.clone();
    let reply = browser.gateway("POST", &login.paths.logout, true).await?;
    let answer: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
    let end_session = answer["end_session_url"].as_str().map_or("-", |u| u.split('?').next().unwrap_or(u)).to_string();
    row("logout", 200, &reply, format!("end_session_url: {end_session}?…"), None);
    let mut thief = Browser { http, sites, cookies: old };
    let reply = thief.gateway("GET", sites.api_path, true).await?;
    row("the session cookie after logout", 401, &reply, error_of(&reply), None);
    Ok(played)
}

/// An authorization response with the claims of `genuine` but another code, signed by a
/// fresh key under the issuer's `kid`.
fn forge(genuine: &str) -> Result<String, DemoError> {
    let decoded: String =
        form_urlencoded::parse(format!("r={genuine}").as_bytes()).map(|(_, v)| v.into_owned()).collect();
    let jws = CompactJws::parse(&decoded, 16 * 1024).map_err(|e| unexpected(format!("the AS's response: {e}")))?;
    let mut claims: Value =
        serde_json::from_slice(jws.payload()).map_err(|e| unexpected(format!("the AS's response: {e}")))?;
    claims["code"] = Value::String("attacker-chosen-code".into());
    let attacker = SigningKey::generate(super::dev_as::ALG)?;
    let header = serde_json::json!({ "kid": jws.header_str("kid").unwrap_or_default() });
    Ok(attacker.sign_compact(&header, &claims)?)
}
