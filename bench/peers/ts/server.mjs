// The TypeScript SDK (@modelcontextprotocol/sdk) peer: the conformance
// fixture tool `test_simple_text`, over stdio or Streamable HTTP.
//
//   node server.mjs stdio
//   node server.mjs http --listen 127.0.0.1:PORT [--json]
//
// HTTP follows the SDK's own stateful example: Node's http server, one
// StreamableHTTPServerTransport + McpServer per session (sessionIdGenerator
// randomUUID), sessions looked up by Mcp-Session-Id. `--json` sets
// enableJsonResponse (JSON bodies instead of SSE). TCP_NODELAY is set on
// every accepted socket (Node's http server also defaults to noDelay).
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';

const TEXT = 'This is a simple text response for testing.';

function makeServer() {
  const server = new McpServer({ name: 'ts-sdk-peer', version: '1.0.0' });
  server.registerTool(
    'test_simple_text',
    { description: 'Tests simple text content response' },
    async () => ({ content: [{ type: 'text', text: TEXT }] }),
  );
  return server;
}

const args = process.argv.slice(2);
const mode = args[0];

if (mode === 'stdio') {
  await makeServer().connect(new StdioServerTransport());
} else if (mode === 'http') {
  let listen = '127.0.0.1:8000';
  let json = false;
  for (let i = 1; i < args.length; i++) {
    if (args[i] === '--listen') listen = args[++i];
    else if (args[i] === '--json') json = true;
    else throw new Error(`unknown argument ${args[i]}`);
  }
  const [host, port] = [listen.slice(0, listen.lastIndexOf(':')), Number(listen.slice(listen.lastIndexOf(':') + 1))];
  const transports = new Map();

  const readBody = (req) =>
    new Promise((resolve, reject) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });

  const fail = (res, status, message) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message }, id: null }));
  };

  const httpServer = http.createServer({ noDelay: true, keepAliveTimeout: 60_000 }, async (req, res) => {
    try {
      if (!req.url.startsWith('/mcp')) return fail(res, 404, 'not found');
      const sid = req.headers['mcp-session-id'];
      if (req.method === 'POST') {
        const body = JSON.parse(await readBody(req));
        let transport = sid ? transports.get(sid) : undefined;
        if (!transport) {
          if (sid || !isInitializeRequest(body)) return fail(res, sid ? 404 : 400, 'no valid session');
          transport = new StreamableHTTPServerTransport({
            sessionIdGenerator: () => randomUUID(),
            enableJsonResponse: json,
            onsessioninitialized: (id) => transports.set(id, transport),
          });
          transport.onclose = () => {
            if (transport.sessionId) transports.delete(transport.sessionId);
          };
          await makeServer().connect(transport);
        }
        await transport.handleRequest(req, res, body);
      } else {
        const transport = sid && transports.get(sid);
        if (!transport) return fail(res, 400, 'no valid session');
        await transport.handleRequest(req, res);
      }
    } catch (e) {
      if (!res.headersSent) fail(res, 500, String(e));
    }
  });
  httpServer.on('connection', (socket) => socket.setNoDelay(true));
  httpServer.listen(port, host, () => {
    process.stderr.write(`ts-sdk-peer listening on http://${listen}/mcp json=${json}\n`);
  });
  process.on('SIGTERM', () => process.exit(0));
} else {
  process.stderr.write('usage: server.mjs stdio | server.mjs http --listen HOST:PORT [--json]\n');
  process.exit(2);
}
