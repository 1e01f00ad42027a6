// A real OpenID Connect provider (panva/oidc-provider) standing in for an
// insurer's sectoral IdP in the homeserver's OIDC login tests
// (tests/common/oidc_provider.rs starts it; `npm ci` installs it).
//
// - Listens on a free loopback port and prints `listening <issuer>` once ready.
// - One confidential client (id and secret from OIDC_CLIENT_ID /
//   OIDC_CLIENT_SECRET) of type "native", so its loopback redirect URI
//   `http://127.0.0.1/_synapse/client/oidc/callback` matches any port
//   (RFC 8252 7.3): the test homeservers' ports are not known in advance.
// - ID tokens are signed with a fresh ES256 key and carry the gematik claims
//   `urn:telematik:claims:id` (the KVNR) and
//   `urn:telematik:claims:display_name`, for the scopes
//   `urn:telematik:versicherter` and `urn:telematik:display_name`.
// - PAR (pushed authorization requests) is advertised, PKCE required.
// - Login without a browser: the interaction is a form the test posts to
//   `POST /interaction/<uid>/login` with `kvnr` and `name`; login and consent
//   finish in one step.

import http from 'node:http';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

const clientId = process.env.OIDC_CLIENT_ID ?? 'homeserver';
const clientSecret = process.env.OIDC_CLIENT_SECRET ?? 'homeserver-secret';

/** Display names by KVNR, as the test logged in with them. */
const names = new Map();

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const { privateKey } = await generateKeyPair('ES256', { extractable: true });
const signingKey = { ...(await exportJWK(privateKey)), kid: 'test-es256', use: 'sig', alg: 'ES256' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    application_type: 'native',
    redirect_uris: ['http://127.0.0.1/_synapse/client/oidc/callback'],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: ['test-cookie-key'] },
  pkce: { required: () => true },
  scopes: ['openid', 'urn:telematik:versicherter', 'urn:telematik:display_name'],
  claims: {
    'urn:telematik:versicherter': ['urn:telematik:claims:id'],
    'urn:telematik:display_name': ['urn:telematik:claims:display_name'],
  },
  // Scope claims go into the id_token itself (the homeserver reads no userinfo).
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    pushedAuthorizationRequests: { enabled: true },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // `sub` is pairwise at real IdPs; the KVNR claim, not `sub`, names the person.
  findAccount: (ctx, sub) => ({
    accountId: sub,
    claims: () => ({
      sub,
      'urn:telematik:claims:id': sub.replace(/^sub-/, ''),
      'urn:telematik:claims:display_name': names.get(sub),
    }),
  }),
});

/** Login and consent in one step: the posted KVNR becomes the account. */
async function login(req, res) {
  const body = new URLSearchParams(await new Promise((resolve) => {
    let text = '';
    req.on('data', (chunk) => { text += chunk; });
    req.on('end', () => resolve(text));
  }));
  const details = await provider.interactionDetails(req, res);
  const accountId = `sub-${body.get('kvnr')}`;
  names.set(accountId, body.get('name'));
  const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope(details.params.scope);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.method === 'POST' && /^\/interaction\/[^/]+\/login$/.test(req.url)) {
    login(req, res).catch((err) => {
      res.statusCode = 400;
      res.end(String(err));
    });
  } else if (req.method === 'GET' && req.url.startsWith('/interaction/')) {
    res.setHeader('content-type', 'text/plain');
    res.end('post kvnr and name to this path + /login');
  } else {
    callback(req, res);
  }
});

console.log(`listening ${issuer}`);
