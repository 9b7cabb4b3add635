// The official TypeScript SDK client (@modelcontextprotocol/sdk) against
// erlmcp's memory toolset, over stdio or over Streamable HTTP, including a
// task-augmented call through the SDK's experimental tasks API.
//
//   node memory.mjs stdio|http|https
//
// https: the same flow as http with `[http.tls]` on, the certificate and
// key given as systemd credentials (PEER_TLS_DIR holds `tls-cert` and
// `tls-key`, passed as $CREDENTIALS_DIRECTORY); the client trusts the
// test CA through NODE_EXTRA_CA_CERTS (tests/peers/run makes both).
//
// Environment (tests/peers/run sets it):
//   PEER_BIN        the erlmcp binary
//   PEER_DATA_DIR     an empty directory for this run's database
//   PEER_PORT         a free loopback port (http only)
//   PEER_LOG_DIR      where the servers' stderr goes
//   PEER_TLS_DIR      the certificate and key (https only)
//   MCP_NODE_MODULES  node_modules holding the SDK (default: the CI cache)
//
// Plain ESM with no build step: the SDK is imported by absolute path because
// ESM ignores NODE_PATH. Exits 1 with a message naming the first mismatch.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { openSync, readFileSync, closeSync } from 'node:fs';
import net from 'node:net';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

const NODE_MODULES = process.env.MCP_NODE_MODULES ?? '/var/cache/erlmcp-ci/node/node_modules';
const sdk = (p) =>
  import(pathToFileURL(join(NODE_MODULES, '@modelcontextprotocol/sdk/dist/esm', p)).href);
const { Client } = await sdk('client/index.js');
const { StdioClientTransport } = await sdk('client/stdio.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const {
  McpError,
  CallToolResultSchema,
  ResourceUpdatedNotificationSchema,
  ResourceListChangedNotificationSchema,
} = await sdk('types.js');

const here = dirname(fileURLToPath(import.meta.url));
const EXPECTED_TOOLS = JSON.parse(readFileSync(join(here, '..', 'memory-tools.json'), 'utf8')).tools;

const mode = process.argv[2];
const BIN = need('PEER_BIN');
const DATA = need('PEER_DATA_DIR');
const LOGS = process.env.PEER_LOG_DIR ?? DATA;
const TLS = mode === 'https';

function need(name) {
  const v = process.env[name];
  if (!v) fail(`environment variable ${name} is not set`);
  return v;
}

// ---------------------------------------------------------------- asserts

class Mismatch extends Error {}

function fail(message) {
  throw new Mismatch(message);
}

function check(cond, message) {
  if (!cond) fail(message);
}

function eq(actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected)) {
    fail(`${what}\n  expected: ${JSON.stringify(expected)}\n  actual:   ${JSON.stringify(actual)}`);
  }
}

let step = 'start';

// Checks that once failed because of an erlmcp bug (lost notifications
// across a restart, fixed since); kept strict so it cannot come back.
const bugs = [];
function mustHold(cond, message) {
  if (!cond) fail(message);
}

// ---------------------------------------------------------------- the data

const alice = { name: 'Alice', entityType: 'person', observations: ['Works at Acme Corp', 'Speaks Esperanto'] };
const bob = { name: 'Bob', entityType: 'person', observations: ['Plays chess on weekends'] };
const acme = { name: 'Acme Corp', entityType: 'organization', observations: ['Founded in 1999'] };
const club = { name: 'Chess Club', entityType: 'organization', observations: ['Meets on Tuesdays'] };
const emile = { name: 'Émile', entityType: 'person', observations: ['Lives in Zürich'] };
const ENTITIES = [alice, bob, acme, club, emile];

const R1 = { from: 'Alice', to: 'Acme Corp', relationType: 'works_at' };
const R2 = { from: 'Bob', to: 'Chess Club', relationType: 'member_of' };
const R3 = { from: 'Alice', to: 'Bob', relationType: 'knows' };
const R4 = { from: 'Émile', to: 'Alice', relationType: 'knows' };

const GRAPH_URI = 'memory://knowledge-graph';
const entityUri = (name) => `memory://entities/${encodeURIComponent(name)}`;
const ent = (e, observations) => ({ ...e, observations });

// After add_observations (Bob +1, Émile +1).
const bob2 = ent(bob, [...bob.observations, 'Learning Esperanto']);
const emile2 = ent(emile, [...emile.observations, 'Speaks French']);

// What is left after the deletions.
const FINAL = {
  entities: [ent(alice, ['Works at Acme Corp']), bob, acme, emile2],
  relations: [R1, R4],
};

const PROBE = { name: 'Notify Probe', entityType: 'probe', observations: [] };
const MARKER = { name: 'Restart Marker', entityType: 'marker', observations: ['written before SIGKILL'] };

// ---------------------------------------------------------------- helpers

const text = (r) => (r.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');

async function callOk(client, name, args) {
  step = `tools/call ${name}`;
  const r = await client.callTool({ name, arguments: args });
  check(!r.isError, `${name}(${JSON.stringify(args)}) returned isError: ${text(r)}`);
  check(r.structuredContent !== undefined, `${name} returned no structuredContent`);
  // A structured result also carries its JSON as text, for older clients.
  const t = r.content.find((c) => c.type === 'text');
  check(t, `${name} returned no text content`);
  if (!['delete_entities', 'delete_observations', 'delete_relations'].includes(name)) {
    eq(JSON.parse(t.text), r.structuredContent, `${name}: text content is the structured content`);
  }
  return r.structuredContent;
}

async function callError(client, name, args) {
  step = `tools/call ${name} (expecting isError)`;
  const r = await client.callTool({ name, arguments: args });
  check(r.isError === true, `${name}(${JSON.stringify(args)}) should be isError: true, got ${JSON.stringify(r)}`);
  return text(r);
}

async function allResources(client) {
  const resources = [];
  let cursor;
  let pages = 0;
  do {
    const r = await client.listResources(cursor ? { cursor } : {});
    resources.push(...r.resources);
    cursor = r.nextCursor;
    pages += 1;
    check(pages <= 20, 'resources/list keeps returning a nextCursor');
  } while (cursor);
  return { resources, pages };
}

// ---------------------------------------------------------------- the flow

/** Every memory tool and resource, from an empty graph to FINAL. */
async function memoryFlow(client) {
  step = 'tools/list';
  const { tools, nextCursor } = await client.listTools();
  check(nextCursor === undefined, 'tools/list has a second page for 9 tools');
  eq(tools.map((t) => t.name).sort(), Object.keys(EXPECTED_TOOLS).sort(), 'tool names');
  for (const t of tools) {
    const want = EXPECTED_TOOLS[t.name];
    eq(t.inputSchema, want.inputSchema, `inputSchema of ${t.name}`);
    eq(t.title, want.title, `title of ${t.name}`);
    eq(t.description, want.description, `description of ${t.name}`);
    eq(t.annotations, want.annotations, `annotations of ${t.name}`);
    check(t.outputSchema?.type === 'object', `${t.name} has an object outputSchema`);
  }

  // create_entities: duplicates (in the batch and already stored) are skipped.
  let r = await callOk(client, 'create_entities', {
    entities: [...ENTITIES, { name: 'Alice', entityType: 'robot', observations: [] }],
  });
  eq(r, { entities: ENTITIES }, 'create_entities returns what it created');
  r = await callOk(client, 'create_entities', { entities: [alice] });
  eq(r, { entities: [] }, 'create_entities of an existing name creates nothing');

  r = await callOk(client, 'create_relations', { relations: [R1, R2, R3, R4, R1] });
  eq(r, { relations: [R1, R2, R3, R4] }, 'create_relations returns the new relations once');

  r = await callOk(client, 'add_observations', {
    observations: [
      { entityName: 'Bob', contents: ['Learning Esperanto', 'Plays chess on weekends'] },
      { entityName: 'Émile', contents: ['Speaks French'] },
    ],
  });
  eq(
    r,
    {
      results: [
        { entityName: 'Bob', addedObservations: ['Learning Esperanto'] },
        { entityName: 'Émile', addedObservations: ['Speaks French'] },
      ],
    },
    'add_observations returns only the new observations',
  );
  // An unknown entity fails the whole call, and nothing of it is stored.
  const why = await callError(client, 'add_observations', {
    observations: [
      { entityName: 'Alice', contents: ['Must not be stored'] },
      { entityName: 'Nobody', contents: ['x'] },
    ],
  });
  check(why.includes('Entity with name Nobody not found'), `add_observations error text: ${why}`);

  const afterAdds = {
    entities: [alice, bob2, acme, club, emile2],
    relations: [R1, R2, R3, R4],
  };
  eq(await callOk(client, 'read_graph', {}), afterAdds, 'read_graph after the additions');

  // search_nodes: case-insensitive substring of name, type or observation,
  // with every relation that touches a match.
  const searches = [
    ['chess', { entities: [bob2, club], relations: [R2, R3] }],
    ['ORGANIZATION', { entities: [acme, club], relations: [R1, R2] }],
    ['ac', { entities: [alice, acme], relations: [R1, R3, R4] }],
    ['zürich', { entities: [emile2], relations: [R4] }],
    ['ÉMILE', { entities: [emile2], relations: [R4] }],
    ['esperanto', { entities: [alice, bob2], relations: [R1, R2, R3, R4] }],
    ['no such thing', { entities: [], relations: [] }],
  ];
  for (const [query, want] of searches) {
    eq(await callOk(client, 'search_nodes', { query }), want, `search_nodes ${JSON.stringify(query)}`);
  }

  eq(
    await callOk(client, 'open_nodes', { names: ['Acme Corp', 'Nobody', 'Bob'] }),
    { entities: [bob2, acme], relations: [R1, R2, R3] },
    'open_nodes Acme Corp, Nobody, Bob',
  );

  // Resources.
  step = 'resources/read knowledge-graph';
  const g = await client.readResource({ uri: GRAPH_URI });
  eq(g.contents.length, 1, 'knowledge-graph has one content');
  eq(g.contents[0].uri, GRAPH_URI, 'knowledge-graph content uri');
  eq(g.contents[0].mimeType, 'application/json', 'knowledge-graph mimeType');
  eq(JSON.parse(g.contents[0].text), afterAdds, 'knowledge-graph resource is the graph');

  step = 'resources/templates/list';
  const { resourceTemplates } = await client.listResourceTemplates();
  check(
    resourceTemplates.some((t) => t.uriTemplate === 'memory://entities/{name}'),
    `no memory://entities/{name} template in ${JSON.stringify(resourceTemplates)}`,
  );

  step = 'resources/read an entity';
  const e = await client.readResource({ uri: entityUri('Acme Corp') });
  eq(e.contents[0].uri, entityUri('Acme Corp'), 'entity content uri');
  eq(JSON.parse(e.contents[0].text), { entities: [acme], relations: [R1] }, 'entity resource Acme Corp');

  step = 'resources/read a missing entity';
  try {
    await client.readResource({ uri: entityUri('Nobody') });
    fail('reading memory://entities/Nobody should fail');
  } catch (err) {
    if (err instanceof Mismatch) throw err;
    check(err instanceof McpError && err.code === -32002, `missing resource: want error -32002, got ${err}`);
  }

  step = 'resources/list';
  const expectedUris = [GRAPH_URI, ...ENTITIES.map((x) => entityUri(x.name))];
  let listed = await allResources(client);
  eq(listed.resources.map((x) => x.uri), expectedUris, 'resources/list of the small graph');
  const acmeRes = listed.resources.find((x) => x.uri === entityUri('Acme Corp'));
  eq([acmeRes.name, acmeRes.mimeType], ['Acme Corp', 'application/json'], 'entity resource name and mimeType');

  // More entities than a page (100): the listing pages, each entity once.
  const bulk = Array.from({ length: 150 }, (_, i) => ({
    name: `Bulk ${String(i).padStart(3, '0')}`,
    entityType: 'bulk',
    observations: [`number ${i}`],
  }));
  eq((await callOk(client, 'create_entities', { entities: bulk })).entities.length, 150, 'bulk create');
  step = 'resources/list with pages';
  listed = await allResources(client);
  check(listed.pages >= 2, `156 resources came in ${listed.pages} page(s)`);
  eq(
    listed.resources.map((x) => x.uri),
    [...expectedUris, ...bulk.map((x) => entityUri(x.name))],
    'resources/list over pages: every resource once, in order',
  );
  await callOk(client, 'delete_entities', { entityNames: bulk.map((x) => x.name) });
  step = 'resources/list after deleting the bulk';
  listed = await allResources(client);
  eq(listed.resources.map((x) => x.uri), expectedUris, 'resources/list after the bulk delete');

  // Deletions.
  eq(
    await callOk(client, 'delete_observations', {
      deletions: [
        { entityName: 'Alice', observations: ['Speaks Esperanto'] },
        { entityName: 'Bob', observations: ['Learning Esperanto'] },
      ],
    }),
    { success: true, message: 'Observations deleted successfully' },
    'delete_observations',
  );
  eq(
    await callOk(client, 'delete_relations', { relations: [R3] }),
    { success: true, message: 'Relations deleted successfully' },
    'delete_relations',
  );
  eq(
    await callOk(client, 'delete_entities', { entityNames: ['Chess Club'] }),
    { success: true, message: 'Entities deleted successfully' },
    'delete_entities',
  );
  eq(await callOk(client, 'read_graph', {}), FINAL, 'read_graph after the deletions');
  eq(await callOk(client, 'search_nodes', { query: 'esperanto' }), { entities: [], relations: [] }, 'search after deletions');
  eq(JSON.parse((await client.readResource({ uri: GRAPH_URI })).contents[0].text), FINAL, 'knowledge-graph after deletions');

  // Invalid arguments are tool errors (isError), not protocol errors.
  await callError(client, 'create_entities', { entities: [{ name: 'Incomplete' }] });
  await callError(client, 'search_nodes', { query: 42 });
  await callError(client, 'open_nodes', {});
  // An unknown tool is a protocol error (-32602).
  step = 'tools/call of an unknown tool';
  try {
    await client.callTool({ name: 'no_such_tool', arguments: {} });
    fail('calling no_such_tool should fail');
  } catch (err) {
    if (err instanceof Mismatch) throw err;
    check(err instanceof McpError && err.code === -32602, `unknown tool: want error -32602, got ${err}`);
  }
  eq(await callOk(client, 'read_graph', {}), FINAL, 'the invalid calls changed nothing');
}

/** Whether `cond()` comes to hold within `ms`. */
async function waitUntil(cond, ms) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

/** Waits until `cond()` holds, or fails with `what` after `ms`. */
async function waitFor(cond, what, ms = 5000) {
  check(await waitUntil(cond, ms), `${what}: nothing within ${ms} ms`);
}

/**
 * resources/subscribe on the graph: a write brings notifications/resources/updated
 * for it (and list_changed when entities appear); after resources/unsubscribe
 * no more updates. Leaves the graph as it found it.
 */
async function changeNotifications(client) {
  const updated = [];
  let listChanged = 0;
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => updated.push(n.params.uri));
  client.setNotificationHandler(ResourceListChangedNotificationSchema, () => { listChanged += 1; });
  step = 'resources/subscribe';
  await client.subscribeResource({ uri: GRAPH_URI });
  await callOk(client, 'create_entities', { entities: [PROBE] });
  step = 'notifications after create_entities';
  await waitFor(() => updated.includes(GRAPH_URI), 'notifications/resources/updated for the subscribed graph');
  await waitFor(() => listChanged > 0, 'notifications/resources/list_changed after a new entity');
  step = 'resources/unsubscribe';
  await client.unsubscribeResource({ uri: GRAPH_URI });
  updated.length = 0;
  await callOk(client, 'add_observations', { observations: [{ entityName: PROBE.name, contents: ['seen'] }] });
  await new Promise((r) => setTimeout(r, 300));
  check(!updated.includes(GRAPH_URI), 'notifications/resources/updated for the graph after resources/unsubscribe');
  await callOk(client, 'delete_entities', { entityNames: [PROBE.name] });
  client.removeNotificationHandler('notifications/resources/updated');
  client.removeNotificationHandler('notifications/resources/list_changed');
}

/** Thirty writes in flight at once on one connection, then the graph. */
async function concurrentWrites(client, expected) {
  step = 'concurrent tools/call';
  const names = Array.from({ length: 30 }, (_, i) => `Parallel ${String(i).padStart(2, '0')}`);
  const results = await Promise.all(
    names.map((name) => client.callTool({ name: 'create_entities', arguments: { entities: [{ name, entityType: 'parallel', observations: [name] }] } })),
  );
  results.forEach((r, i) => {
    eq(r.structuredContent, { entities: [{ name: names[i], entityType: 'parallel', observations: [names[i]] }] }, `concurrent create ${i}: its own result`);
  });
  const g = await callOk(client, 'search_nodes', { query: 'parallel' });
  eq(g.entities.map((e) => e.name).sort(), names, 'all concurrent writes are stored');
  await callOk(client, 'delete_entities', { entityNames: names });
  eq(await callOk(client, 'read_graph', {}), expected, 'read_graph after the concurrent writes were deleted');
}

// ---------------------------------------------------------------- processes

const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

function exited(child) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve([child.exitCode, child.signalCode]);
  }
  return once(child, 'exit');
}

async function startServer(port) {
  const log = openSync(join(LOGS, 'serve.log'), 'a');
  const env = TLS
    ? { ...process.env, ERLMCP_HTTP__TLS__ENABLED: 'true', CREDENTIALS_DIRECTORY: need('PEER_TLS_DIR') }
    : process.env;
  const child = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--ops-listen', '127.0.0.1:0', '--data-dir', DATA], {
    stdio: ['ignore', log, log],
    env,
  });
  closeSync(log);
  children.add(child);
  child.on('exit', () => children.delete(child));
  const deadline = Date.now() + 15000;
  for (;;) {
    if (child.exitCode !== null) fail(`erlmcp serve exited with ${child.exitCode}; see ${LOGS}/serve.log`);
    const up = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (up) return child;
    check(Date.now() < deadline, `erlmcp serve did not listen on ${port} within 15 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function killServer(child, signal) {
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
  const [code, sig] = await exited(child);
  clearTimeout(timer);
  return { code, sig };
}

function stdioTransport() {
  const log = openSync(join(LOGS, 'stdio.log'), 'a');
  return new StdioClientTransport({ command: BIN, args: ['stdio', '--data-dir', DATA], stderr: log });
}

async function connect(transport) {
  const client = new Client({ name: 'erlmcp-peers-typescript', version: '1.0.0' });
  await client.connect(transport);
  return client;
}

/** One JSON-RPC request by hand: returns the HTTP status and the message. */
async function rawPost(url, headers, message) {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...headers,
    },
    body: JSON.stringify(message),
  });
  const body = await res.text();
  let parsed = null;
  if ((res.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    const data = body.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim());
    for (const d of data) {
      if (!d) continue;
      const m = JSON.parse(d);
      if (m.id === message.id) parsed = m;
    }
  } else if (body) {
    parsed = JSON.parse(body);
  }
  return { status: res.status, message: parsed };
}

/**
 * read_graph as a task, through the SDK's experimental tasks API
 * (2025-11-25: the client asks with `task`, polls tasks/get, fetches
 * tasks/result). Returns the task id.
 */
async function taskFlow(client, expected) {
  step = 'tools/call read_graph as a task (callToolStream)';
  const seen = [];
  let taskId;
  const stream = client.experimental.tasks.callToolStream(
    { name: 'read_graph', arguments: {} },
    CallToolResultSchema,
    { task: { ttl: 600000 } },
  );
  for await (const m of stream) {
    seen.push(m.type);
    if (m.type === 'taskCreated') taskId = m.task.taskId;
    if (m.type === 'error') fail(`the task ended in an error: ${m.error.message}`);
    if (m.type === 'result') eq(m.result.structuredContent, expected, 'read_graph as a task: its result');
  }
  eq(seen[0], 'taskCreated', 'the stream starts with the created task');
  eq(seen.at(-1), 'result', 'the stream ends with the result');
  check(typeof taskId === 'string', 'no task id');

  step = 'tasks/get and tasks/list';
  const task = await client.experimental.tasks.getTask(taskId);
  eq(task.status, 'completed', 'tasks/get once the result came');
  eq(task.ttl, 600000, 'the ttl the client asked for');
  const { tasks } = await client.experimental.tasks.listTasks();
  check(tasks.some((t) => t.taskId === taskId), 'tasks/list shows the task');
  return taskId;
}

// ---------------------------------------------------------------- scenarios

async function overStdio() {
  step = 'connect over stdio';
  const client = await connect(stdioTransport());
  step = 'initialize';
  eq(client.getServerVersion()?.name, 'erlmcp', 'serverInfo.name');
  await memoryFlow(client);
  await changeNotifications(client);
  await concurrentWrites(client, FINAL);
  await taskFlow(client, FINAL);
  await client.close();

  // The graph outlives the process.
  step = 'stdio: a second process on the same data dir';
  const again = await connect(stdioTransport());
  eq(await callOk(again, 'read_graph', {}), FINAL, 'read_graph from a new stdio process');
  await again.close();
}

async function overHttp() {
  const port = Number(need('PEER_PORT'));
  const url = `${TLS ? 'https' : 'http'}://127.0.0.1:${port}/mcp`;
  step = 'start erlmcp serve';
  let server = await startServer(port);

  step = 'connect over HTTP';
  const transport = new StreamableHTTPClientTransport(new URL(url));
  const client = await connect(transport);
  const sid = transport.sessionId;
  check(typeof sid === 'string' && sid.length > 0, 'no Mcp-Session-Id after initialize');
  eq(transport.protocolVersion, '2025-11-25', 'negotiated protocol version');
  await memoryFlow(client);
  await changeNotifications(client);
  await concurrentWrites(client, FINAL);
  const taskId = await taskFlow(client, FINAL);
  // A subscription made before the crash (erlmcp keeps it with the session).
  const updated = [];
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => updated.push(n.params.uri));
  step = 'resources/subscribe before the restart';
  await client.subscribeResource({ uri: GRAPH_URI });
  await callOk(client, 'create_entities', { entities: [MARKER] });
  await waitFor(() => updated.includes(GRAPH_URI), 'resources/updated before the restart');

  // SIGKILL, then a new process on the same data dir and port: the session
  // and the data written before the kill are still there.
  step = 'SIGKILL and restart of erlmcp serve';
  const killed = await killServer(server, 'SIGKILL');
  eq(killed.sig, 'SIGKILL', 'the server died of SIGKILL');
  server = await startServer(port);

  const withMarker = { entities: [...FINAL.entities, MARKER], relations: FINAL.relations };
  step = 'the same client after the restart';
  eq(await callOk(client, 'read_graph', {}), withMarker, 'read_graph on the old session after the restart');
  eq(transport.sessionId, sid, 'the client kept its Mcp-Session-Id');
  step = 'tasks/result of a task finished before the SIGKILL';
  const kept = await client.experimental.tasks.getTaskResult(taskId, CallToolResultSchema);
  eq(kept.structuredContent, FINAL, 'the task result outlives the process');

  // A write right after the restart, before the client's GET stream has
  // come back: its notification must reach the subscriber when the stream
  // resumes from its Last-Event-ID (as it does for a drop without restart).
  step = 'the subscription across the restart';
  updated.length = 0;
  await callOk(client, 'create_entities', { entities: [PROBE] });
  step = 'the subscription across the restart';
  mustHold(
    await waitUntil(() => updated.includes(GRAPH_URI), 8000),
    'notifications/resources/updated for a write made after the restart, before the client ' +
      'resumed its GET stream with Last-Event-ID, never arrived (not replayed on resume)',
  );
  // Once the GET stream is back, the restored subscription delivers.
  updated.length = 0;
  await callOk(client, 'delete_entities', { entityNames: [PROBE.name] });
  await waitFor(() => updated.includes(GRAPH_URI), 'resources/updated on the restored session', 8000);

  step = 'a new transport resuming the session by id';
  const resumedTransport = new StreamableHTTPClientTransport(new URL(url), { sessionId: sid });
  resumedTransport.setProtocolVersion('2025-11-25');
  const resumed = await connect(resumedTransport); // no initialize: the session exists
  eq(
    await callOk(resumed, 'open_nodes', { names: ['Restart Marker'] }),
    { entities: [MARKER], relations: [] },
    'open_nodes over the resumed session',
  );
  await resumed.close();

  step = 'raw HTTP with the session id';
  const hdr = { 'mcp-protocol-version': '2025-11-25' };
  const list = { jsonrpc: '2.0', id: 7, method: 'tools/list', params: {} };
  let raw = await rawPost(url, { ...hdr, 'mcp-session-id': sid }, list);
  eq(raw.status, 200, 'POST tools/list on the restored session: HTTP status');
  eq(raw.message?.result?.tools?.length, 9, 'POST tools/list on the restored session: 9 tools');
  raw = await rawPost(url, { ...hdr, 'mcp-session-id': 'not-a-session' }, list);
  eq(raw.status, 404, 'an unknown Mcp-Session-Id gets 404');

  // DELETE ends the session; afterwards its id is unknown.
  step = 'DELETE of the session';
  await transport.terminateSession();
  await client.close();
  raw = await rawPost(url, { ...hdr, 'mcp-session-id': sid }, list);
  eq(raw.status, 404, 'a deleted session gets 404');

  step = 'SIGTERM of erlmcp serve';
  const stopped = await killServer(server, 'SIGTERM');
  eq(stopped, { code: 0, sig: null }, 'erlmcp serve exit on SIGTERM');

  // What was written over HTTP is read back over stdio from the same dir.
  step = 'stdio on the data dir the HTTP server used';
  const local = await connect(stdioTransport());
  eq(await callOk(local, 'read_graph', {}), withMarker, 'read_graph over stdio after the HTTP server stopped');
  await local.close();
}

try {
  if (mode === 'stdio') await overStdio();
  else if (mode === 'http' || mode === 'https') await overHttp();
  else fail(`usage: memory.mjs stdio|http|https (got ${mode})`);
  if (bugs.length) {
    console.error(`typescript ${mode}: FAILED:\n${bugs.join('\n')}`);
    process.exit(1);
  }
  process.exit(0);
} catch (err) {
  const what = err instanceof Mismatch ? err.message : (err?.stack ?? String(err));
  console.error(`typescript ${mode}: FAILED at ${step}:\n${what}`);
  process.exit(1);
}
