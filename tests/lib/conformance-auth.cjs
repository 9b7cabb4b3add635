// Preloaded into the conformance suite by `tests/conformance --auth`: the
// suite has no option for a header, so this adds
// `Authorization: Bearer $ERLMCP_CONFORMANCE_TOKEN` to every request it
// makes that has none, on both ways it sends them: undici's global
// dispatcher (its `undici.request` calls and Node's `fetch`) and
// `http.request` (its raw header-validation cases).
const http = require('node:http');
const path = require('node:path');
const { Agent, setGlobalDispatcher } = require(path.join(process.env.NODE_MODULES_DIR, 'undici'));

const bearer = `Bearer ${process.env.ERLMCP_CONFORMANCE_TOKEN}`;
const named = (k) => String(k).toLowerCase() === 'authorization';

function withToken(headers) {
  if (Array.isArray(headers)) {
    return headers.some((v, i) => i % 2 === 0 && named(v)) ? headers : [...headers, 'authorization', bearer];
  }
  const h = headers ?? {};
  return Object.keys(h).some(named) ? h : { ...h, authorization: bearer };
}

setGlobalDispatcher(
  new Agent().compose((dispatch) => (opts, handler) => dispatch({ ...opts, headers: withToken(opts.headers) }, handler)),
);

const request = http.request;
http.request = function (...args) {
  const opts = args.find((a) => a && typeof a === 'object' && !(a instanceof URL));
  if (opts) opts.headers = withToken(opts.headers);
  return request.apply(this, args);
};
