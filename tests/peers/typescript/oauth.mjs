// erlmcp as an OAuth 2.1 resource server, proven with independent parts:
// the authorization server is `oidc-provider` (OpenID Certified; JWT
// access tokens for erlmcp's resource via Resource Indicators, the
// client_credentials grant), the client is the official TypeScript SDK's
// StreamableHTTPClientTransport with its ClientCredentialsProvider. The SDK
// discovers everything itself: the 401's resource_metadata -> erlmcp's
// protected resource metadata -> the authorization server's metadata ->
// a token for erlmcp's resource -> the tool call.
//
//   node oauth.mjs            (environment as tests/peers/run sets it)
//
// Also checked: a client whose token lacks memory:write sees a filtered
// tools/list and gets 403 insufficient_scope on a write; the audit log names
// the client. Exits 1 with a message naming the first mismatch.
//
// Then the authorization-code flow with PKCE: the SDK registers a client
// (RFC 7591), sends the "user" to the authorization endpoint with
// `resource`; here a headless walk through oidc-provider's development
// login and consent pages stands in for the browser and hands the code back.

import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { openSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const NODE_MODULES = process.env.MCP_NODE_MODULES ?? '/var/cache/erlmcp-ci/node/node_modules';
const mod = (p) => import(pathToFileURL(join(NODE_MODULES, p)).href);
const sdk = (p) => mod(join('@modelcontextprotocol/sdk/dist/esm', p));
const { Client } = await sdk('client/index.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const { ClientCredentialsProvider } = await sdk('client/auth-extensions.js');
const { startProvider, INTROSPECTION_SECRET } = await import('../oauth/provider.mjs');

const BIN = need('PEER_BIN');
const DATA = need('PEER_DATA_DIR');
const LOGS = process.env.PEER_LOG_DIR ?? DATA;
const PORT = Number(need('PEER_PORT'));

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is not set`);
  return v;
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

async function freePort() {
  const s = net.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address();
  s.close();
  return port;
}

// A browser, headless: follows redirects, keeps cookies, and submits the
// development login (any name: "alice") and consent forms, until the
// authorization server redirects to `redirect` with a code.
async function browse(start, redirect) {
  const jar = new Map();
  let url = start;
  let form = null;
  for (let i = 0; i < 20; i++) {
    if (url.startsWith(redirect)) {
      const u = new URL(url);
      check(u.searchParams.get('code'), `redirected without a code: ${url}`);
      return u.searchParams.get('code');
    }
    const headers = { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') };
    if (form) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(url, { method: form ? 'POST' : 'GET', body: form ?? undefined, headers, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const at = pair.indexOf('=');
      jar.set(pair.slice(0, at), pair.slice(at + 1));
    }
    if (res.status >= 300 && res.status < 400) {
      url = new URL(res.headers.get('location'), url).href;
      form = null;
      continue;
    }
    const html = await res.text();
    const action = html.match(/<form[^>]*action="([^"]+)"/);
    check(res.status === 200 && action, `unexpected page at ${url}: HTTP ${res.status} ${html.slice(0, 300)}`);
    const fields = new URLSearchParams();
    for (const m of html.matchAll(/<input[^>]*name="([^"]+)"[^>]*>/g)) {
      const value = m[0].match(/value="([^"]*)"/);
      fields.set(m[1], m[1] === 'login' ? 'alice' : m[1] === 'password' ? 'any' : value ? value[1] : '');
    }
    url = new URL(action[1].replaceAll('&amp;', '&'), url).href;
    form = fields.toString();
  }
  throw new Error(`no code after 20 pages, at ${url}`);
}

// ------------------------------------------------ the authorization server

const AS_PORT = await freePort();
const RESOURCE = `http://127.0.0.1:${PORT}/mcp`;
// `node oauth.mjs opaque`: opaque access tokens, introspected by erlmcp.
const FORMAT = process.argv[2] ?? 'jwt';
const { issuer: ISSUER, server: as, tokenRequests } = await startProvider(AS_PORT, RESOURCE, FORMAT);
const claimsOf = (t) => (FORMAT === 'jwt' ? JSON.parse(Buffer.from(t.split('.')[1], 'base64url').toString()) : null);

// ------------------------------------------------------------- erlmcp

const config = join(DATA, 'erlmcp.toml');
let introspection = '';
if (FORMAT === 'opaque') {
  const secret = join(DATA, 'introspection-secret');
  writeFileSync(secret, `${INTROSPECTION_SECRET}\n`);
  introspection = `[auth.oauth.introspection]\nendpoint = "${ISSUER}/token/introspection"\nclient_id = "erlmcp"\nclient_secret_file = "${secret}"\n`;
}
writeFileSync(
  config,
  `[auth]\nmode = "oauth"\n[auth.oauth]\nissuer = "${ISSUER}"\nresource = "${RESOURCE}"\n${introspection}`,
);
const log = openSync(join(LOGS, 'erlmcp.log'), 'a');
const server = spawn(
  BIN,
  ['serve', '--config', config, '--listen', `127.0.0.1:${PORT}`, '--ops-listen', '127.0.0.1:0', '--data-dir', join(DATA, 'db')],
  { stdio: ['ignore', log, log] },
);
for (let i = 0; ; i++) {
  const up = await new Promise((resolve) => {
    const s = net.connect(PORT, '127.0.0.1', () => { s.end(); resolve(true); });
    s.on('error', () => resolve(false));
  });
  if (up) break;
  check(i < 500 && server.exitCode === null, 'erlmcp did not start (see erlmcp.log)');
  await new Promise((r) => setTimeout(r, 20));
}

let step = 'start';
try {
  // ---------------------------------------------- the writer: full flow
  step = 'the SDK\'s OAuth flow (client credentials)';
  const writerAuth = new ClientCredentialsProvider({
    clientId: 'mcp-writer',
    clientSecret: 'writer-secret-for-tests-only',
    expectedIssuer: ISSUER,
    scope: 'memory:read memory:write',
  });
  const writer = new Client({ name: 'oauth-writer', version: '1' });
  await writer.connect(new StreamableHTTPClientTransport(new URL(RESOURCE), { authProvider: writerAuth }));
  const token = writerAuth.tokens()?.access_token;
  check(token, 'the SDK holds no access token after connecting');
  const claims = claimsOf(token);
  if (claims) {
    check(claims.aud === RESOURCE, `token audience ${JSON.stringify(claims.aud)}, expected ${RESOURCE}`);
    check(claims.iss === ISSUER, `token issuer ${claims.iss}`);
  } else {
    check(token.split('.').length !== 3, `an opaque token was asked for, got a JWT`);
  }
  check(tokenRequests.includes(RESOURCE), `the token request named resource ${RESOURCE}: ${JSON.stringify(tokenRequests)}`);

  step = 'writer: tools/list and tools/call';
  const all = (await writer.listTools()).tools.map((t) => t.name);
  check(all.includes('create_entities') && all.includes('read_graph'), `writer's tools: ${all}`);
  const created = await writer.callTool({
    name: 'create_entities',
    arguments: { entities: [{ name: 'oauth-proof', entityType: 'test', observations: ['via oidc-provider'] }] },
  });
  check(!created.isError, `create_entities failed: ${JSON.stringify(created)}`);
  const graph = await writer.callTool({ name: 'read_graph', arguments: {} });
  check(JSON.stringify(graph).includes('oauth-proof'), `read_graph lacks the entity: ${JSON.stringify(graph)}`);
  await writer.close();

  // ---------------------------------------------- the reader: filtered, 403
  step = 'reader: the SDK\'s OAuth flow';
  const readerAuth = new ClientCredentialsProvider({
    clientId: 'mcp-reader',
    clientSecret: 'reader-secret-for-tests-only',
    expectedIssuer: ISSUER,
    scope: 'memory:read',
  });
  const reader = new Client({ name: 'oauth-reader', version: '1' });
  await reader.connect(new StreamableHTTPClientTransport(new URL(RESOURCE), { authProvider: readerAuth }));
  step = 'reader: tools/list is filtered';
  const some = (await reader.listTools()).tools.map((t) => t.name);
  check(some.includes('read_graph') && !some.includes('create_entities'), `reader's tools: ${some}`);
  const read = await reader.callTool({ name: 'read_graph', arguments: {} });
  check(JSON.stringify(read).includes('oauth-proof'), 'the reader reads the graph');

  step = 'reader: a write is refused with 403 insufficient_scope';
  let refused = null;
  try {
    await reader.callTool({ name: 'create_entities', arguments: { entities: [] } });
  } catch (e) {
    refused = e;
  }
  check(refused, 'the reader could call create_entities');
  const readerToken = readerAuth.tokens().access_token;
  const raw = await fetch(RESOURCE, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${readerToken}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      'mcp-session-id': reader.transport.sessionId,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'create_entities', arguments: { entities: [] } } }),
  });
  const www = raw.headers.get('www-authenticate') ?? '';
  check(raw.status === 403, `a write with the reader's token: HTTP ${raw.status}`);
  check(www.includes('error="insufficient_scope"') && www.includes('scope="memory:write"') && www.includes('resource_metadata='), `403 challenge: ${www}`);
  await reader.close();

  step = 'authorization code + PKCE: dynamic registration and the redirect';
  const REDIRECT = `http://127.0.0.1:${await freePort()}/callback`;
  let code = null;
  let verifier = null;
  const codeAuth = {
    _client: undefined,
    _tokens: undefined,
    get redirectUrl() { return REDIRECT; },
    get clientMetadata() {
      return {
        client_name: 'erlmcp-peer-auth-code',
        redirect_uris: [REDIRECT],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
        application_type: 'native',
      };
    },
    clientInformation() { return this._client; },
    saveClientInformation(info) { this._client = info; },
    tokens() { return this._tokens; },
    saveTokens(t) { this._tokens = t; },
    saveCodeVerifier(v) { verifier = v; },
    codeVerifier() { return verifier; },
    async redirectToAuthorization(url) {
      check(url.searchParams.get('resource') === RESOURCE, `authorization request resource: ${url.searchParams.get('resource')}`);
      check(url.searchParams.get('code_challenge_method') === 'S256', 'no PKCE S256 challenge');
      code = await browse(url.href, REDIRECT);
    },
  };
  const first = new StreamableHTTPClientTransport(new URL(RESOURCE), { authProvider: codeAuth });
  let unauthorized = null;
  try {
    await new Client({ name: 'oauth-user', version: '1' }).connect(first);
  } catch (e) {
    unauthorized = e;
  }
  check(unauthorized && code, `the SDK did not stop for the redirect: ${unauthorized}`);
  await first.finishAuth(code);
  step = 'authorization code + PKCE: the tool call';
  const user = new Client({ name: 'oauth-user', version: '1' });
  await user.connect(new StreamableHTTPClientTransport(new URL(RESOURCE), { authProvider: codeAuth }));
  const userClaims = claimsOf(codeAuth.tokens().access_token);
  check(!userClaims || (userClaims.sub === 'alice' && userClaims.aud === RESOURCE), `user token claims: ${JSON.stringify(userClaims)}`);
  const mine = await user.callTool({ name: 'read_graph', arguments: {} });
  check(JSON.stringify(mine).includes('oauth-proof'), 'alice reads the graph');
  await user.close();

  step = 'no token and a bad token: 401 with resource_metadata';
  const anon = await fetch(RESOURCE, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{}' });
  check(anon.status === 401 && (anon.headers.get('www-authenticate') ?? '').includes('resource_metadata='), `no token: HTTP ${anon.status}`);
  const forged = token.slice(0, -8) + (token.endsWith('AAAAAAAA') ? 'BBBBBBBB' : 'AAAAAAAA');
  const bad = await fetch(RESOURCE, { method: 'POST', headers: { authorization: `Bearer ${forged}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{}' });
  check(bad.status === 401 && (bad.headers.get('www-authenticate') ?? '').includes('error="invalid_token"'), `forged token: HTTP ${bad.status}`);

  step = 'the audit log names the clients';
  // Audit rows are written in batches: wait for them a little.
  let rows = [];
  const want = (r) => r.kind === 'tool' && r.subject === 'read_graph' && r.principal === 'alice';
  for (let i = 0; i < 100 && !rows.some(want); i++) {
    rows = JSON.parse(execFileSync(BIN, ['audit', '--json', '--data-dir', join(DATA, 'db')]).toString());
    if (!rows.some(want)) await new Promise((r) => setTimeout(r, 50));
  }
  check(rows.some((r) => r.kind === 'tool' && r.subject === 'create_entities' && r.outcome === 'ok' && r.principal === 'mcp-writer'),
    'no audit row of mcp-writer\'s create_entities');
  check(rows.some((r) => r.kind === 'tool' && r.outcome === 'insufficient_scope' && r.principal === 'mcp-reader'),
    'no audit row of mcp-reader\'s refused write');
  check(rows.some((r) => r.kind === 'tool' && r.subject === 'read_graph' && r.principal === 'alice'),
    'no audit row of alice\'s read_graph');
  console.log(`ok: ${FORMAT} tokens: client credentials and authorization code + PKCE via oidc-provider, tools called, scopes enforced`);
} catch (e) {
  console.error(`FAILED at ${step}: ${e?.stack ?? e}`);
  process.exitCode = 1;
} finally {
  server.kill('SIGTERM');
  as.close();
  await once(server, 'exit');
  process.exit();
}
