// A real FAPI 2.0 authorization server for the integration tests: panva's oidc-provider
// (pinned in package.json), started by tests/common/oidc_provider.rs as
//
//   node tests/as/server.mjs CONFIG.json
//
// CONFIG.json (written by the Rust harness; every key but tls and clients is optional):
//   {
//     "host": "127.0.0.1", "port": 0,            // 0 = ephemeral
//     "issuer": "https://localhost:{port}",      // {port} = the port actually bound
//     "tls": { "cert": PEM path, "key": PEM path, "ca": client CA PEM path (mTLS listener) },
//     "mtls": false,                             // also listen for the RFC 8705 mtls_endpoint_aliases
//     "signing_alg": "ES256" | "PS256",          // AS key: ID tokens, JARM, JWT access tokens
//     "resource": { "identifier", "scope", "access_token_ttl", "opaque" },  // opaque: reference tokens
//     "scopes": ["openid", "offline_access"],
//     "dpop": { "require_nonce": false },
//     "account": "alice",                        // who auto interaction logs in
//     "auto_interaction": false,                 // no login / consent forms (see below)
//     "rotate_refresh_tokens": true,
//     "clients": [ oidc-provider client metadata ... ]
//   }
//
// Prints exactly one line on stdout, `listening PORT`, once both listeners accept; everything
// else (oidc-provider's notices, errors) goes to stderr. Exits on SIGTERM / SIGINT and when
// stdin closes (the test process went away).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';

import Provider, { errors } from 'oidc-provider';

// stdout carries only the `listening` line: oidc-provider's notices go to stderr.
console.log = console.error;
console.info = console.error;

function fail(message) {
  console.error(`test AS: ${message}`);
  process.exit(2);
}

const configPath = process.argv[2];
if (!configPath) fail('usage: node server.mjs CONFIG.json');
const cfg = JSON.parse(fs.readFileSync(configPath, 'utf8'));
if (!cfg.tls?.cert || !cfg.tls?.key) fail('config: tls.cert and tls.key are required');

const host = cfg.host ?? '127.0.0.1';
const signingAlg = cfg.signing_alg ?? 'ES256';
const account = cfg.account ?? 'alice';
const requireNonce = cfg.dpop?.require_nonce === true;
const resource = cfg.resource ?? null;
const rotate = cfg.rotate_refresh_tokens !== false;

const cert = fs.readFileSync(cfg.tls.cert);
const key = fs.readFileSync(cfg.tls.key);

// The provider is created once the ports are known (the issuer names the port).
let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
const dispatch = (req, res) => handler(req, res);

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server.address().port));
  });
}

// Front channel + back channel: no client certificate asked for (a browser gets no prompt).
const main = https.createServer({ cert, key }, dispatch);
const port = await listen(main, cfg.port ?? 0);

// RFC 8705 mtls_endpoint_aliases: a second listener that asks for a client certificate
// (verified against tls.ca, but not required at the TLS layer: oidc-provider decides).
let mtls = null;
let mtlsPort = null;
if (cfg.mtls) {
  const ca = cfg.tls.ca ? fs.readFileSync(cfg.tls.ca) : undefined;
  mtls = https.createServer({
    cert, key, ca, requestCert: true, rejectUnauthorized: false,
  }, dispatch);
  mtlsPort = await listen(mtls, 0);
}

const issuer = (cfg.issuer ?? 'https://localhost:{port}').replaceAll('{port}', String(port));

function signingKey(alg) {
  const kid = `as-${alg.toLowerCase()}`;
  let pair;
  switch (alg) {
    case 'ES256':
      pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
      break;
    case 'PS256':
      pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
      break;
    default:
      fail(`config: signing_alg ${alg} is not ES256 or PS256`);
  }
  return { ...pair.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

// The peer certificate of this request's TLS connection, if the client sent one.
function peerCertificate(ctx) {
  const socket = ctx.req.socket;
  if (typeof socket.getPeerCertificate !== 'function') return undefined;
  const peer = socket.getPeerCertificate();
  if (!peer?.raw) return undefined;
  return new crypto.X509Certificate(peer.raw);
}

// RFC 4514 order is the reverse of the certificate's RDN sequence; accept either spelling.
// With `cert_from_header`, the AS sits behind a gateway that terminates the client's TLS
// and passes its certificate on as RFC 9440 `Client-Cert: :<base64 DER>:` (the gateway's AS
// edge): that is the client's certificate, and it must chain to the client CA.
const certFromHeader = cfg.cert_from_header === true;
const clientCa = cfg.tls.ca ? new crypto.X509Certificate(fs.readFileSync(cfg.tls.ca)) : null;

function headerCertificate(ctx) {
  const match = /^:([A-Za-z0-9+/]+={0,2}):$/.exec(ctx.get('client-cert') ?? '');
  if (!match) return undefined;
  try {
    return new crypto.X509Certificate(Buffer.from(match[1], 'base64'));
  } catch {
    return undefined;
  }
}

const clientCertificate = certFromHeader ? headerCertificate : peerCertificate;

function certificateAuthorized(ctx) {
  if (!certFromHeader) return ctx.req.socket.authorized === true;
  const x509 = headerCertificate(ctx);
  return Boolean(x509 && clientCa && x509.checkIssued(clientCa) && x509.verify(clientCa.publicKey));
}

function subjectDnMatches(x509, expected) {
  const rdns = x509.subject.split('\n').filter(Boolean);
  const norm = (s) => s.split(',').map((part) => part.trim()).join(',');
  return [rdns.join(','), [...rdns].reverse().join(',')].includes(norm(expected));
}

function sanMatches(x509, prefix, expected) {
  return (x509.subjectAltName ?? '').split(', ').includes(`${prefix}:${expected}`);
}

const clients = (cfg.clients ?? []).map((client) => ({
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  dpop_bound_access_tokens: true,
  id_token_signed_response_alg: signingAlg,
  authorization_signed_response_alg: signingAlg,
  ...client,
}));

const ttl = {
  AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? 300,
  AuthorizationCode: 60,
  ClientCredentials: 300,
  IdToken: 300,
  Interaction: 600,
  RefreshToken: 24 * 60 * 60,
  Session: 24 * 60 * 60,
  Grant: 24 * 60 * 60,
};

const configuration = {
  clients,
  jwks: { keys: [signingKey(signingAlg)] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: cfg.scopes ?? ['openid', 'offline_access'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  clientAuthMethods: ['private_key_jwt', ...(cfg.mtls || certFromHeader ? ['tls_client_auth'] : [])],
  clientDefaults: {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'private_key_jwt',
    id_token_signed_response_alg: signingAlg,
    authorization_signed_response_alg: signingAlg,
    // RFC 9701 answers (sent only when asked for with Accept) are signed with the AS key.
    introspection_signed_response_alg: signingAlg,
  },
  responseTypes: ['code'],
  pkce: { required: () => true },
  enabledJWA: {
    clientAuthSigningAlgValues: ['ES256', 'PS256', 'EdDSA'],
    idTokenSigningAlgValues: [signingAlg],
    authorizationSigningAlgValues: [signingAlg],
    userinfoSigningAlgValues: [signingAlg],
    introspectionSigningAlgValues: [signingAlg],
    requestObjectSigningAlgValues: ['ES256', 'PS256', 'EdDSA'],
    dPoPSigningAlgValues: ['ES256', 'PS256', 'EdDSA'],
  },
  features: {
    fapi: { enabled: true, profile: '2.0' },
    pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: true },
    jwtResponseModes: { enabled: true },
    // Signed request objects (JAR, RFC 9101) inside the PAR: FAPI 2.0 Message Signing.
    requestObjects: { enabled: true, requireSignedRequestObject: Boolean(cfg.require_signed_request_object) },
    dPoP: {
      enabled: true,
      nonceSecret: crypto.randomBytes(32),
      requireNonce: () => requireNonce,
    },
    mTLS: {
      enabled: Boolean(cfg.mtls) || certFromHeader,
      certificateBoundAccessTokens: Boolean(cfg.mtls) || certFromHeader,
      tlsClientAuth: Boolean(cfg.mtls) || certFromHeader,
      getCertificate: clientCertificate,
      certificateAuthorized,
      certificateSubjectMatches(ctx, property, expected) {
        const x509 = clientCertificate(ctx);
        if (!x509) return false;
        switch (property) {
          case 'tls_client_auth_subject_dn':
            return subjectDnMatches(x509, expected);
          case 'tls_client_auth_san_dns':
            return sanMatches(x509, 'DNS', expected);
          case 'tls_client_auth_san_uri':
            return sanMatches(x509, 'URI', expected);
          case 'tls_client_auth_san_ip':
            return sanMatches(x509, 'IP Address', expected);
          case 'tls_client_auth_san_email':
            return sanMatches(x509, 'email', expected);
          default:
            return false;
        }
      },
    },
    resourceIndicators: {
      enabled: true,
      // No `resource` in the request: the configured API.
      defaultResource: async (_ctx, _client, oneOf) => {
        if (oneOf) return resource && oneOf.includes(resource.identifier) ? resource.identifier : oneOf;
        return resource?.identifier;
      },
      // The token endpoint issues the access token for the granted API without `resource`.
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (!resource || indicator !== resource.identifier) throw new errors.InvalidTarget();
        return {
          scope: resource.scope ?? '',
          audience: resource.identifier,
          accessTokenTTL: resource.access_token_ttl ?? 300,
          accessTokenFormat: resource.opaque ? 'opaque' : 'jwt',
          jwt: { sign: { alg: signingAlg } },
        };
      },
    },
    revocation: { enabled: true },
    // RFC 7662 for opaque tokens, RFC 9701 signed answers for clients that register
    // `introspection_signed_response_alg`; client credentials to get a token without a browser.
    introspection: { enabled: true },
    jwtIntrospection: { enabled: true },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    userinfo: { enabled: true },
    devInteractions: { enabled: true },
    claimsParameter: { enabled: false },
  },
  // Every authorization_code grant of a client allowed refresh_token gets a refresh token
  // (no offline_access / prompt=consent dance needed).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => rotate,
  findAccount: async (_ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, email: `${sub}@example.test`, email_verified: true, name: sub }),
  }),
  ttl,
  discovery: mtlsPort === null ? {} : {
    mtls_endpoint_aliases: {
      token_endpoint: `https://localhost:${mtlsPort}/token`,
      pushed_authorization_request_endpoint: `https://localhost:${mtlsPort}/request`,
      revocation_endpoint: `https://localhost:${mtlsPort}/token/revocation`,
      introspection_endpoint: `https://localhost:${mtlsPort}/token/introspection`,
      userinfo_endpoint: `https://localhost:${mtlsPort}/me`,
    },
  },
};

let provider;
try {
  provider = new Provider(issuer, configuration);
} catch (err) {
  fail(`invalid configuration: ${err.message}`);
}

// Errors: name and description only (never tokens or request bodies).
provider.on('server_error', (_ctx, err) => console.error(`test AS server_error: ${err.stack}`));
for (const event of [
  'authorization.error', 'pushed_authorization_request.error', 'grant.error', 'revocation.error',
  'userinfo.error', 'end_session.error', 'end_session_confirm.error', 'discovery.error', 'jwks.error',
  'introspection.error',
]) {
  provider.on(event, (_ctx, err) => {
    const detail = [err.error_description, err.error_detail].filter(Boolean).join('; ');
    console.error(`test AS ${event}: ${err.error ?? err.name}${detail ? ` (${detail})` : ''}`);
  });
}

// Automatic interactions: answers GET /interaction/:uid (before devInteractions' form does)
// by logging in the configured account, then, on the next round, granting everything the
// client asked for. Each answer is a 303 to the authorization resume endpoint.
if (cfg.auto_interaction) {
  provider.use(async (ctx, next) => {
    const match = /^\/interaction\/([^/]+)$/.exec(ctx.path);
    if (ctx.method !== 'GET' || !match) return next();
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const { prompt, params, session, grantId } = details;
    let result;
    switch (prompt.name) {
      case 'login':
        result = { login: { accountId: account } };
        break;
      case 'consent': {
        const grant = grantId
          ? await provider.Grant.find(grantId)
          : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
        const missing = prompt.details;
        if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
        if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
        for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
        result = { consent: { grantId: await grant.save() } };
        break;
      }
      default:
        ctx.throw(501, `auto interaction: prompt ${prompt.name} is not handled`);
    }
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
      mergeWithLastSubmission: prompt.name !== 'login',
    });
    ctx.status = 303;
    ctx.redirect(returnTo);
    return undefined;
  });
}

handler = provider.callback();

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  main.close();
  mtls?.close();
  main.closeAllConnections?.();
  mtls?.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();

process.stdout.write(`listening ${port}\n`);
