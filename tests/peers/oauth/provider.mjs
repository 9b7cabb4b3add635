// The authorization server of the OAuth peer runs: `oidc-provider` (OpenID
// Certified) on loopback, issuing JWT access tokens for one resource (RFC
// 8707 Resource Indicators) by the client_credentials grant, to two
// clients: mcp-writer (memory:read memory:write) and mcp-reader
// (memory:read); and by the authorization-code flow with PKCE to clients
// that register themselves, a development login page standing in for the
// user. Test-only secrets; the provider's development signing keys.
//
// Imported by typescript/oauth.mjs; run by python/test_oauth.py as
//   node provider.mjs PORT RESOURCE [jwt|opaque]   (prints "ready ISSUER", then serves)

import { createServer } from 'node:http';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const NODE_MODULES = process.env.MCP_NODE_MODULES ?? '/var/cache/erlmcp-ci/node/node_modules';
const { default: Provider, errors } = await import(
  pathToFileURL(join(NODE_MODULES, 'oidc-provider/lib/index.js')).href
);

export const SCOPES = ['memory:read', 'memory:write'];
export const CLIENTS = {
  'mcp-writer': { secret: 'writer-secret-for-tests-only', scope: 'memory:read memory:write' },
  'mcp-reader': { secret: 'reader-secret-for-tests-only', scope: 'memory:read' },
};

/// Serves on 127.0.0.1:port; returns { issuer, server, tokenRequests }.
/// `format`: 'jwt' access tokens, or 'opaque' ones that erlmcp (client
/// `erlmcp`, secret INTROSPECTION_SECRET) introspects.
export const INTROSPECTION_SECRET = 'erlmcp-introspection-secret-for-tests-only';
export async function startProvider(port, resource, format = 'jwt') {
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'erlmcp',
      client_secret: INTROSPECTION_SECRET,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    }].concat(Object.entries(CLIENTS).map(([id, c]) => ({
      client_id: id,
      client_secret: c.secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      // No `scope` here: a client asking for more than its allowance is
      // then down-scoped to it (getResourceServerInfo below) rather than
      // refused, as Keycloak and others do. The Python SDK asks for the
      // scopes erlmcp's 401 hints at, whoever it is.
    }))),
    scopes: SCOPES,
    ttl: { ClientCredentials: 600, AccessToken: 600, Interaction: 600, Session: 600, Grant: 600 },
    features: {
      // The authorization-code flow: clients register themselves (RFC
      // 7591), and the provider's own development login and consent pages
      // stand in for a user (typescript/oauth.mjs fills them in).
      devInteractions: { enabled: true },
      registration: { enabled: true },
      // Only erlmcp may ask about tokens.
      introspection: { enabled: true, allowedPolicy: (ctx, client) => client.clientId === 'erlmcp' },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resource,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, indicator, client) => {
          if (indicator !== resource) {
            throw new errors.InvalidTarget(`unknown resource ${indicator}`);
          }
          return {
            // Registered clients (the authorization-code flow) may have all.
            scope: CLIENTS[client.clientId]?.scope ?? SCOPES.join(' '),
            audience: resource,
            accessTokenTTL: 600,
            accessTokenFormat: format,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
  });
  const tokenRequests = [];
  provider.on('grant.success', (ctx) => tokenRequests.push(ctx.oidc.params?.resource));
  const server = createServer(provider.callback());
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  return { issuer, server, tokenRequests };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [port, resource, format] = process.argv.slice(2);
  const { issuer } = await startProvider(Number(port), resource, format ?? 'jwt');
  console.log(`ready ${issuer}`);
}
