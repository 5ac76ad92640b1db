// A client of ensemble-kv over HTTP, in JavaScript: the peer side of a
// restart. The server is the plan's service `kv` (a native program on
// another machine, its HTTP port `{port.http}`); this suite finds it with
// `service()` and talks to it with `fetch` (the entry needs
// `net = ["service:kv"]`).
//
// | test                       | what it does                                                   |
// |----------------------------|----------------------------------------------------------------|
// | reads_back_after_a_restart | PUTs its keys, signals `kv-written`, waits for `kv-restarted`  |
// |                            | (another client restarts the server), GETs every key back      |

import { test, param, sync, log, fail, service, role, runId, instanceIndex, machine } from '@ensemble/suite';
export { tests } from '@ensemble/suite';

const keys = param('keys', 'integer', { default: 20, help: 'keys a test writes' });
const serviceName = param('service', 'string', { default: 'kv', help: "the plan's service to reach" });

const key = (i) => `${runId()}:${role()}:${instanceIndex()}:${i}`;
const url = (i) => service(serviceName.get()).url(`/kv/${encodeURIComponent(key(i))}`, 'http');

async function put(i) {
  const response = await fetch(url(i), { method: 'PUT', body: `javascript value ${i} from ${machine()}` });
  if (response.status !== 204) fail(`PUT ${key(i)} answered ${response.status}: ${await response.text()}`);
}

async function check(i) {
  const response = await fetch(url(i));
  const body = await response.text();
  const want = `javascript value ${i} from ${machine()}`;
  if (response.status !== 200 || body !== want) {
    fail(`GET ${key(i)} answered ${response.status} ${JSON.stringify(body)}, not ${JSON.stringify(want)}`);
  }
}

test('reads_back_after_a_restart', async () => {
  const n = keys.get();
  for (let i = 0; i < n; i++) await put(i);
  sync.signal('kv-written');
  sync.barrier('kv-restarted', 1, 60000);
  log.info(`${serviceName.get()} was restarted; reading ${n} keys back`);
  for (let i = 0; i < n; i++) await check(i);
});

