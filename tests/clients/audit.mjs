// The graphql-http server audits (GraphQL over HTTP) against a served gateway.
// Usage: GRAPHQL_URL=http://.../graphql GRAPHQL_TOKEN=... node audit.mjs
// Prints one JSON document: every audit's id, name, status and, for the others than "ok",
// the reason and the response's status, content type and body.
import { serverAudits } from 'graphql-http';

const url = process.env.GRAPHQL_URL;
const token = process.env.GRAPHQL_TOKEN;
if (!url || !token) {
  console.error('GRAPHQL_URL and GRAPHQL_TOKEN are required');
  process.exit(2);
}

// Every request of the audit carries the caller's bearer token: the gateway answers 401 first.
function fetchWithToken(input, init = {}) {
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
}

async function describe(response) {
  let body;
  try {
    body = await response.clone().text();
  } catch {
    body = '(already read by the audit)';
  }
  return {
    status: response.status,
    contentType: response.headers.get('content-type'),
    body: body.slice(0, 500),
  };
}

const results = [];
// One audit at a time: the results do not depend on how requests interleave.
for (const audit of serverAudits({ url, fetchFn: fetchWithToken })) {
  const result = await audit.fn();
  const entry = { id: result.id, name: result.name, status: result.status };
  if (result.status !== 'ok') {
    entry.reason = result.reason;
    entry.response = await describe(result.response);
  }
  results.push(entry);
}
console.log(JSON.stringify(results, null, 2));
