// The client role of the kv demo, in JavaScript: the counterpart of the Rust
// `kv-client` suite, run against the Rust `kv-server` (see ../kv-server and
// ../kv-model for the protocol). It waits for the server, verifies the
// snapshot the server published against its own port of the generator, and
// reports a verdict back.
//
// Every test runs in a fresh instance, so each one reads what it needs from
// the sync topics again (subscriptions replay a topic from its first message).
//
// | test                      | expected                                                        |
// |---------------------------|-----------------------------------------------------------------|
// | client::waits_for_server  | passes once the server signalled `server-ready`                 |
// | client::verifies_snapshot | passes when the snapshot on `kv/state` matches `keys` entries   |
// | client::reports_verdict   | publishes its verdict to `kv/verdict`, signals `client-done`;   |
// |                           | passes when the verdict is ok                                   |

import { test, param, sync, log, fail, instanceIndex, machine } from '@ensemble/suite';
export { tests } from '@ensemble/suite';

const STATE_TOPIC = 'kv/state';
const VERDICT_TOPIC = 'kv/verdict';
const SERVER_READY = 'server-ready';
const CLIENT_DONE = 'client-done';
const VERDICT_OK = 'ok';

const keys = param('keys', 'integer', { default: 100, help: "entries the client expects; must match the server's" });
const timeoutMs = param('timeout_ms', 'integer', { default: 30000, help: 'milliseconds every wait may take' });

// --- the generator of kv-model, ported ---------------------------------------

const MASK64 = 0xffff_ffff_ffff_ffffn;

/** The key of entry `i`. @param {number} i */
const key = (i) => `key-${String(i).padStart(5, '0')}`;

/**
 * The value of entry `i`: splitmix64 of `i`, as 16 hex digits.
 * @param {number} i
 */
function value(i) {
  let z = (BigInt(i) + 0x9e37_79b9_7f4a_7c15n) & MASK64;
  z = ((z ^ (z >> 30n)) * 0xbf58_476d_1ce4_e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d0_49bb_1331_11ebn) & MASK64;
  return hex64(z ^ (z >> 31n));
}

/** @param {bigint} n */
const hex64 = (n) => n.toString(16).padStart(16, '0');

/**
 * FNV-1a (64 bit) over `key=value\n` of entries 0..n, in key order.
 * @param {number} n
 */
function checksum(n) {
  const entries = [];
  for (let i = 0; i < n; i++) entries.push([key(i), value(i)]);
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  let hash = 0xcbf2_9ce4_8422_2325n;
  const encoder = new TextEncoder();
  for (const [k, v] of entries) {
    for (const byte of encoder.encode(`${k}=${v}\n`)) {
      hash = ((hash ^ BigInt(byte)) * 0x0100_0000_01b3n) & MASK64;
    }
  }
  return hash;
}

/**
 * @typedef {{count: number, checksum: bigint, samples: [string, string][]}} Snapshot
 */

/**
 * Parses the server's snapshot (see kv-model's `Snapshot::encode`).
 * @param {string} text
 * @returns {Snapshot}
 */
function decode(text) {
  let count;
  let sum;
  const samples = [];
  for (const line of text.split('\n').filter((l) => l.trim() !== '')) {
    const words = line.trim().split(/\s+/);
    if (words[0] === 'count' && words.length === 2 && /^\d+$/.test(words[1])) count = Number(words[1]);
    else if (words[0] === 'checksum' && words.length === 2 && /^[0-9a-fA-F]{1,16}$/.test(words[1])) sum = BigInt(`0x${words[1]}`);
    else if (words[0] === 'sample' && words.length === 3) samples.push([words[1], words[2]]);
    else throw new Error(`unexpected line ${JSON.stringify(line)}`);
  }
  if (count === undefined) throw new Error('no count line');
  if (sum === undefined) throw new Error('no checksum line');
  return { count, checksum: sum, samples };
}

/**
 * Every mismatch between the snapshot and the generator for `expected` entries.
 * @param {Snapshot} snapshot
 * @param {number} expected
 */
function problems(snapshot, expected) {
  const found = [];
  if (snapshot.count !== expected) found.push(`count is ${snapshot.count} but ${expected} was expected`);
  const want = checksum(expected);
  if (snapshot.checksum !== want) found.push(`checksum is ${hex64(snapshot.checksum)} but ${hex64(want)} was expected`);
  for (const [k, actual] of snapshot.samples) {
    const i = /^key-\d+$/.test(k) ? Number(k.slice(4)) : NaN;
    if (!(i < expected)) found.push(`sample key ${JSON.stringify(k)} is not generated`);
    else if (actual !== value(i)) found.push(`sample ${k} is ${actual} but ${value(i)} was expected`);
  }
  return found;
}

/**
 * Reads the server's snapshot from `kv/state` and checks it; throws saying what is wrong.
 * @returns {Snapshot}
 */
function checkSnapshot() {
  const text = sync.subscribe(STATE_TOPIC).next(timeoutMs.get());
  let snapshot;
  try {
    snapshot = decode(text);
  } catch (error) {
    fail(`unreadable snapshot: ${error.message}`);
  }
  const wrong = problems(snapshot, keys.get());
  if (wrong.length > 0) fail(`wrong snapshot: ${wrong.join('; ')}`);
  return snapshot;
}

// --- the tests ----------------------------------------------------------------

test('client::waits_for_server', () => {
  sync.barrier(SERVER_READY, 1, timeoutMs.get());
}, { tags: ['sync'] });

test('client::verifies_snapshot', () => {
  const snapshot = checkSnapshot();
  log.info(`snapshot ok: ${snapshot.count} entries, checksum ${hex64(snapshot.checksum)}`);
}, { tags: ['sync'] });

// Publishes the verdict and signals `client-done` whatever the verdict, so
// that the server never waits for a client that gave up.
test('client::reports_verdict', () => {
  const who = `instance ${instanceIndex()} on ${machine()} (javascript)`;
  let verdict;
  let failure;
  try {
    const snapshot = checkSnapshot();
    verdict = `${VERDICT_OK} ${who}: ${snapshot.count} entries, checksum ${hex64(snapshot.checksum)}`;
  } catch (error) {
    failure = error;
    verdict = `rejected by ${who}: ${error.message}`;
  }
  sync.publish(VERDICT_TOPIC, verdict);
  sync.signal(CLIENT_DONE);
  log.info(`reported: ${verdict}`);
  if (failure) throw failure;
}, { tags: ['sync'] });
