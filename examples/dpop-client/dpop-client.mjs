// A standard DPoP client against the fapi-gateway demo: openid-client 6 (panva) gets a
// DPoP-bound access token from the demo's development authorization server
// (client credentials, RFC 9449 §5) and calls the gateway's DPoP route with a fresh proof.
// The payments route requires a server nonce: openid-client answers the gateway's
// `use_dpop_nonce` challenge by itself (RFC 9449 §8) and retries once.
//
//   npm ci && NODE_EXTRA_CA_CERTS=../../certs/ca.pem node dpop-client.mjs
//
// Environment: AS_URL (default https://localhost:9443), GATEWAY_URL (default
// https://localhost:8443), RESOURCE_PATH (default /payments/1), SCOPE (default
// payments:write). Exits 0 when the gateway answered 200.
import * as client from 'openid-client';

const asUrl = process.env.AS_URL ?? 'https://localhost:9443';
const gatewayUrl = process.env.GATEWAY_URL ?? 'https://localhost:8443';
const resourcePath = process.env.RESOURCE_PATH ?? '/payments/1';
const scope = process.env.SCOPE ?? 'payments:write';

// Discovered (RFC 8414): the development AS's issuer is its own origin.
const config = await client.discovery(new URL(asUrl), 'demo-client', undefined, client.None());

const DPoP = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'));
const tokens = await client.clientCredentialsGrant(config, { scope }, { DPoP });
console.log(`token: ${tokens.token_type} (DPoP-bound), scope ${tokens.scope}`);

const url = new URL(resourcePath, gatewayUrl);
let response;
try {
  response = await client.fetchProtectedResource(config, tokens.access_token, url, 'GET', undefined, undefined, {
    DPoP,
  });
} catch (err) {
  // A refusal with a WWW-Authenticate challenge (other than the nonce it retried) is thrown.
  if (!(err.response instanceof Response)) throw err;
  response = err.response;
}
console.log(`GET ${url} -> ${response.status}`);
const challenge = response.headers.get('www-authenticate');
if (challenge) console.log(`WWW-Authenticate: ${challenge}`);
console.log(await response.text());
process.exit(response.status === 200 ? 0 : 1);
