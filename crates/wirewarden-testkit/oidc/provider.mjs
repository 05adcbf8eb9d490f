// A real OpenID Connect provider for wirewarden's tests.
//
// Usage: node provider.mjs CONFIG.json
//
// Listens on an ephemeral loopback port, then prints one line `{"port":N}` on stdout; the
// issuer is http://127.0.0.1:N. Clients use the client_credentials grant with a resource
// indicator (RFC 8707) and receive RFC 9068 JWT access tokens signed with the algorithm the
// resource server is configured for. Signing keys (RS256, ES256, EdDSA) are generated at
// start and published at /jwks.
//
// CONFIG.json:
// {
//   "clients":   [{ "client_id": "...", "client_secret": "...", "claims": { "groups": [...] } }],
//   "resources": [{ "indicator": "https://api.test", "alg": "ES256", "scope": "read write", "ttl": 300 }]
// }
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

function privateJwk(type, options, kid, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const keys = [
  privateJwk('rsa', { modulusLength: 2048 }, 'rsa-1', 'RS256'),
  privateJwk('ec', { namedCurve: 'P-256' }, 'ec-1', 'ES256'),
  privateJwk('ed25519', {}, 'ed-1', 'EdDSA'),
];

const clientClaims = new Map(config.clients.map((c) => [c.client_id, c.claims ?? {}]));
const resources = new Map(config.resources.map((r) => [r.indicator, r]));

const server = http.createServer();

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;

  const provider = new Provider(issuer, {
    clients: config.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
    })),
    jwks: { keys },
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'ES256', 'EdDSA'],
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, indicator) => {
          const r = resources.get(indicator);
          if (!r) {
            throw new Provider.errors.InvalidTarget();
          }
          return {
            scope: r.scope ?? '',
            audience: indicator,
            accessTokenTTL: r.ttl ?? 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: r.alg ?? 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: (_ctx, token) => clientClaims.get(token.clientId),
  });

  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ port })}\n`);
});

// The Rust side kills the process on drop; also stop when its stdin closes so an aborted
// test run leaves nothing behind.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
