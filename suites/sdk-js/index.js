/**
 * @module @ensemble/suite
 *
 * Write Ensemble test suites in JavaScript.
 *
 * A suite is a WebAssembly component implementing the `ensemble:suite@0.3.0`
 * WIT world (suites/wit/suite.wit); componentize-js builds one from an ES
 * module (the *app*). This module turns plain functions into the component's
 * tests:
 *
 * ```js
 * import { test, param, sync, log, check } from '@ensemble/suite';
 * export { tests } from '@ensemble/suite'; // the component's export
 *
 * const keys = param('keys', 'integer', { default: 100, help: 'entries to expect' });
 *
 * test('adds', () => {
 *   check(1 + 1 === 2, 'arithmetic works');
 * });
 *
 * test('waits_for_server', () => {
 *   sync.barrier('server-ready', 1, 30_000);
 *   log.info(`server ready, expecting ${keys.get()} keys`);
 * }, { tags: ['sync'] });
 * ```
 *
 * A test passes when its function returns (or the promise it returns
 * resolves), fails when it throws (any Error, `fail()`, a `check…()` helper)
 * and is skipped by `skip()`. Every test runs in a fresh instance of the
 * component: module state does not carry over from one test to the next, so
 * tests share data through `sync` topics, not variables.
 *
 * Declare tests and params at module top level: the module is evaluated once,
 * when the component is built, and every instance starts from that state.
 * For the same reason the module must not call the run's functions (`role()`,
 * `sync`, `attach()`, param values, ...) at top level: they work inside a
 * test only.
 */

import {
  runId as hostRunId,
  role as hostRole,
  instanceIndex as hostInstanceIndex,
  instanceCount as hostInstanceCount,
  machine as hostMachine,
  param as hostParam,
  params as hostParams,
} from 'ensemble:suite/context@0.3.0';
import {
  signal as hostSignal,
  barrier as hostBarrier,
  signalAndWait as hostSignalAndWait,
  publish as hostPublish,
  subscribe as hostSubscribe,
} from 'ensemble:suite/sync@0.3.0';
import { log as hostLog } from 'ensemble:suite/log@0.3.0';
import { attach as hostAttach } from 'ensemble:suite/attach@0.3.0';
import {
  addresses as hostAddresses,
  stop as hostStop,
  start as hostStart,
  restart as hostRestart,
  kill as hostKill,
  pause as hostPause,
  resume as hostResume,
} from 'ensemble:suite/services@0.3.0';

/** The SDK's version; it speaks the `ensemble:suite@0.3.0` ABI. */
export const VERSION = '0.3.0';

// ---------------------------------------------------------------------------
// Outcomes
// ---------------------------------------------------------------------------

/**
 * Fails the running test with its message (no stack is added). Thrown by
 * `fail()` and the `check…()` helpers; `ParamError` and `SyncError` are kinds
 * of it. Any other uncaught Error fails the test too, with its name, message
 * and a short stack.
 */
export class Failed extends Error {
  /** @param {string} message */
  constructor(message) {
    super(String(message));
    this.name = 'Failed';
  }
}

/** Skips the running test with a reason; thrown by `skip()`. */
export class Skipped extends Error {
  /** @param {string} reason */
  constructor(reason) {
    super(String(reason));
    this.name = 'Skipped';
  }
}

/** A param is required but not set, or its text does not read as its type. */
export class ParamError extends Failed {
  constructor(message) {
    super(message);
    this.name = 'ParamError';
  }
}

const SYNC_KINDS = ['timeout', 'lost', 'cancelled', 'invalid'];

/**
 * A `sync` call failed. `kind` is `"timeout"` (the wait ran past its
 * timeout), `"lost"` (a party of the run was lost: its machine went away or
 * its shard ended abnormally), `"cancelled"` (the run was cancelled) or
 * `"invalid"` (the request was invalid); `text` is the runner's explanation.
 * The message reads `sync KIND: TEXT`. Uncaught, it fails the test.
 */
export class SyncError extends Failed {
  /**
   * @param {'timeout'|'lost'|'cancelled'|'invalid'} kind
   * @param {string} text
   */
  constructor(kind, text) {
    super(`sync ${kind}: ${text}`);
    this.name = 'SyncError';
    this.kind = kind;
    this.text = text;
  }
}

/**
 * Fails the running test with `message`.
 * @param {string} [message]
 * @returns {never}
 */
export function fail(message = 'failed') {
  throw new Failed(message);
}

/**
 * Skips the running test: it does not apply here (`reason` says why).
 * @param {string} [reason]
 * @returns {never}
 */
export function skip(reason = 'skipped') {
  throw new Skipped(reason);
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/**
 * Fails the test unless `condition` is truthy. The message is `message` (or
 * "check failed") and the line of the call.
 * @param {unknown} condition
 * @param {string} [message]
 */
export function check(condition, message) {
  if (!condition) {
    throw new Failed(`${message ?? 'check failed'}${callerLocation()}`);
  }
}

/**
 * Fails the test unless `actual` equals `expected`: primitives by value
 * (`NaN` equals `NaN`), arrays, plain objects, Maps, Sets, Dates and typed
 * arrays by their contents. The message shows both values.
 * @template T
 * @param {T} actual
 * @param {T} expected
 * @param {string} [message] put in front of the message
 */
export function checkEq(actual, expected, message) {
  if (!deepEqual(actual, expected)) {
    throw new Failed(
      `${message ? `${message}: ` : ''}checkEq failed\n  actual:   ${show(actual)}\n  expected: ${show(expected)}${callerLocation()}`,
    );
  }
}

/**
 * Fails the test when `actual` equals `unexpected` (the equality of `checkEq`).
 * @param {unknown} actual
 * @param {unknown} unexpected
 * @param {string} [message] put in front of the message
 */
export function checkNe(actual, unexpected, message) {
  if (deepEqual(actual, unexpected)) {
    throw new Failed(`${message ? `${message}: ` : ''}checkNe failed: both are ${show(actual)}${callerLocation()}`);
  }
}

/** "\n  at file:line:col" of the caller of the check function that calls this. */
function callerLocation() {
  // Frames: callerLocation, check…, the caller.
  const frame = (new Error().stack ?? '').split('\n')[2];
  if (!frame) return '';
  const at = frame.slice(frame.indexOf('@') + 1).trim();
  return at ? `\n  at ${at}` : '';
}

function deepEqual(a, b, seen = new Map()) {
  if (Object.is(a, b) || (a === b)) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  if (seen.get(a) === b) return true;
  seen.set(a, b);
  if (a instanceof Date) return a.getTime() === b.getTime();
  if (a instanceof RegExp) return String(a) === String(b);
  if (ArrayBuffer.isView(a) && !(a instanceof DataView)) {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i]) && a[i] !== b[i]) return false;
    return true;
  }
  if (a instanceof Map) {
    if (a.size !== b.size) return false;
    for (const [k, v] of a) if (!b.has(k) || !deepEqual(v, b.get(k), seen)) return false;
    return true;
  }
  if (a instanceof Set) {
    if (a.size !== b.size) return false;
    for (const v of a) if (!b.has(v)) return false;
    return true;
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k) || !deepEqual(a[k], b[k], seen)) return false;
  }
  return true;
}

/** A value as people read it in a message. */
function show(value) {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return `[function ${value.name || 'anonymous'}]`;
  if (typeof value !== 'object' || value === null) return String(value);
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  if (value instanceof Map) return `Map(${show([...value])})`;
  if (value instanceof Set) return `Set(${show([...value])})`;
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
    return `${value.constructor.name}(${show([...value])})`;
  }
  try {
    const text = JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? `${v}n` : v));
    return text === undefined ? String(value) : text;
  } catch {
    return String(value);
  }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/** @type {{name: string, fn: Function, tags: string[], ignored: boolean, timeoutMs: number|undefined}[]} */
const registry = [];
const testsByName = new Map();
/** The test running in this instance, or null outside a test. */
let running = null;

const TEST_OPTIONS = ['tags', 'ignore', 'timeoutMs'];

/**
 * Declares a test; tests run in the order they are declared.
 *
 * `fn` takes no arguments. It passes when it returns, or, when it returns a
 * promise (an `async` function), when that promise resolves; it fails when it
 * throws or the promise rejects.
 *
 * Options: `tags` (strings shown in reports and usable in filters), `ignore`
 * (listed but not run unless asked for; reported as skipped), `timeoutMs`
 * (overrides the plan's test timeout; a number of milliseconds or a duration
 * text such as `"2m"`). `test(name, options, fn)` works too.
 *
 * @param {string} name unique within the suite
 * @param {() => unknown} fn
 * @param {{tags?: string[]|string, ignore?: boolean, timeoutMs?: number|string}} [options]
 */
export function test(name, fn, options = {}) {
  if (typeof fn === 'object' && fn !== null && typeof options === 'function') {
    [fn, options] = [options, fn];
  }
  if (running !== null) {
    throw new Error(`test(${JSON.stringify(name)}) was called while test ${JSON.stringify(running)} runs: declare tests at module top level`);
  }
  if (typeof name !== 'string' || name === '') {
    throw new TypeError(`test(name, fn): the name must be a non-empty string, not ${show(name)}`);
  }
  if (typeof fn !== 'function') {
    throw new TypeError(`test(${JSON.stringify(name)}, fn): fn must be a function, not ${show(fn)}`);
  }
  if (testsByName.has(name)) {
    throw new Error(`test ${JSON.stringify(name)} is declared twice; test names must be unique`);
  }
  const opts = options ?? {};
  checkOptions(`test(${JSON.stringify(name)})`, opts, TEST_OPTIONS);
  let tags = opts.tags ?? [];
  if (typeof tags === 'string') tags = [tags];
  if (!Array.isArray(tags) || tags.some((t) => typeof t !== 'string')) {
    throw new TypeError(`test(${JSON.stringify(name)}): tags must be a string or an array of strings, not ${show(opts.tags)}`);
  }
  let timeoutMs;
  if (opts.timeoutMs !== undefined && opts.timeoutMs !== null) {
    timeoutMs = toMillis(opts.timeoutMs, `test(${JSON.stringify(name)}): timeoutMs`);
  }
  const entry = { name, fn, tags: [...tags], ignored: Boolean(opts.ignore), timeoutMs };
  registry.push(entry);
  testsByName.set(name, entry);
}

function checkOptions(what, options, known) {
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError(`${what}: options must be an object, not ${show(options)}`);
  }
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new TypeError(`${what}: unknown option ${JSON.stringify(key)} (known: ${known.join(', ')})`);
    }
  }
}

// ---------------------------------------------------------------------------
// Params
// ---------------------------------------------------------------------------

const PARAM_TYPES = ['string', 'integer', 'float', 'boolean', 'duration'];
const PARAM_OPTIONS = ['default', 'required', 'help'];
const EXPECTED = {
  string: 'text',
  integer: 'a whole number such as 100',
  float: 'a number such as 0.5',
  boolean: 'true or false',
  duration: 'a duration such as "30s", "2m" or "250ms"',
};
const ARTICLE = { string: 'a', integer: 'an', float: 'a', boolean: 'a', duration: 'a' };
/** @type {Param[]} */
const declaredParams = [];
const paramsByName = new Map();

/**
 * A declared parameter of the plan entry; made by `param()`. Read its value
 * in a test with `get()`.
 * @template T
 */
export class Param {
  /** @internal */
  constructor(name, type, required, defaultText, help) {
    /** The key a plan entry sets under `params`. */
    this.name = name;
    /** `"string"`, `"integer"`, `"float"`, `"boolean"` or `"duration"`. */
    this.type = type;
    /** Whether a plan entry must set it. */
    this.required = required;
    /** The default as text, or undefined. */
    this.default = defaultText;
    /** One line for people: what the value means. */
    this.help = help;
    Object.freeze(this);
  }

  /**
   * The value read as the param's type: a string, a number (integer and
   * float), a boolean, or a number of milliseconds (duration). The default
   * when the plan entry does not set it; undefined when there is none either.
   * Throws `ParamError` (failing the test) when a required param is not set
   * or the text does not read as the type.
   * @returns {T}
   */
  get() {
    const text = this.#textOrDefault();
    return text === undefined ? undefined : readParam(this.name, this.type, text);
  }

  /**
   * An integer param as a BigInt (for values beyond Number.MAX_SAFE_INTEGER).
   * @returns {bigint|undefined}
   */
  bigint() {
    if (this.type !== 'integer') {
      throw new TypeError(`param \`${this.name}\` is a ${this.type}, not an integer: read it with get()`);
    }
    const text = this.#textOrDefault();
    return text === undefined ? undefined : readInteger(this.name, text);
  }

  /** The text the plan entry set, or undefined (no default applied). */
  text() {
    return paramText(this.name);
  }

  /** Whether the plan entry sets this param. */
  isSet() {
    return this.text() !== undefined;
  }

  #textOrDefault() {
    const text = this.text();
    if (text !== undefined) return text;
    if (this.required) {
      throw new ParamError(
        `param \`${this.name}\` is required and the plan entry does not set it (${this.type}${this.help ? `: ${this.help}` : ''})`,
      );
    }
    return this.default;
  }
}

/**
 * Declares a parameter the suite reads, at module top level; it appears in
 * the suite's description (`ensemble suite inspect`) and the runner checks a
 * plan entry's value against `type` before anything runs.
 *
 * Options: `default` (used when the plan entry does not set it; a value of
 * the type, e.g. `100`, `true`, or a duration text such as `"30s"` or a
 * number of milliseconds), `required` (a plan entry must set it; no default
 * then), `help` (one line: what the value means).
 *
 * ```js
 * const keys = param('keys', 'integer', { default: 100, help: 'entries to expect' });
 * const greeting = param('greeting', 'string', { required: true, help: 'what to say' });
 * test('counts', () => { log.info(`${greeting.get()}: ${keys.get() + 1}`); });
 * ```
 *
 * @param {string} name
 * @param {'string'|'integer'|'float'|'boolean'|'duration'} type
 * @param {{default?: unknown, required?: boolean, help?: string}} [options]
 * @returns {Param}
 */
export function param(name, type, options = {}) {
  const what = `param(${JSON.stringify(name)})`;
  if (running !== null) {
    throw new Error(`${what} was called while test ${JSON.stringify(running)} runs: declare params at module top level`);
  }
  if (typeof name !== 'string' || name === '') {
    throw new TypeError(`param(name, type): the name must be a non-empty string, not ${show(name)}`);
  }
  if (!PARAM_TYPES.includes(type)) {
    throw new TypeError(`${what}: the type must be one of ${PARAM_TYPES.map((t) => `"${t}"`).join(', ')}, not ${show(type)}`);
  }
  if (paramsByName.has(name)) {
    throw new Error(`param ${JSON.stringify(name)} is declared twice`);
  }
  const opts = options ?? {};
  checkOptions(what, opts, PARAM_OPTIONS);
  const required = Boolean(opts.required);
  const help = opts.help === undefined ? '' : String(opts.help);
  let defaultText;
  if (opts.default !== undefined && opts.default !== null) {
    if (required) {
      throw new TypeError(`${what}: a required param cannot have a default`);
    }
    defaultText = defaultToText(name, type, opts.default);
    try {
      readParam(name, type, defaultText);
    } catch (error) {
      throw new TypeError(`${what}: bad default: ${error.message}`);
    }
  }
  const declared = new Param(name, type, required, defaultText, help);
  declaredParams.push(declared);
  paramsByName.set(name, declared);
  return declared;
}

function defaultToText(name, type, value) {
  const bad = () => new TypeError(`param(${JSON.stringify(name)}): the default ${show(value)} is not ${ARTICLE[type]} ${type}`);
  switch (type) {
    case 'string':
      if (typeof value !== 'string') throw bad();
      return value;
    case 'integer':
      if (typeof value === 'bigint' || (typeof value === 'number' && Number.isInteger(value))) return String(value);
      if (typeof value === 'string') return value;
      throw bad();
    case 'float':
      if (typeof value === 'number' && Number.isFinite(value)) return String(value);
      if (typeof value === 'string') return value;
      throw bad();
    case 'boolean':
      if (typeof value === 'boolean') return String(value);
      if (typeof value === 'string') return value;
      throw bad();
    case 'duration':
      if (typeof value === 'number' && Number.isInteger(value) && value >= 0) return `${value}ms`;
      if (typeof value === 'string') return value;
      throw bad();
    default:
      throw bad();
  }
}

function readParam(name, type, text) {
  switch (type) {
    case 'string':
      return text;
    case 'integer': {
      const value = readInteger(name, text);
      if (value < BigInt(Number.MIN_SAFE_INTEGER) || value > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new ParamError(`param \`${name}\` = ${JSON.stringify(text)} does not fit a JavaScript number exactly: read it with bigint()`);
      }
      return Number(value);
    }
    case 'float': {
      const trimmed = text.trim();
      const value = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(trimmed) ? Number(trimmed) : NaN;
      if (!Number.isFinite(value)) throw badValue(name, type, text);
      return value;
    }
    case 'boolean': {
      const trimmed = text.trim();
      if (trimmed === 'true') return true;
      if (trimmed === 'false') return false;
      throw badValue(name, type, text);
    }
    case 'duration':
      try {
        return parseDuration(text);
      } catch (error) {
        throw new ParamError(`param \`${name}\` = ${JSON.stringify(text)} is not a valid duration: ${error.message}`);
      }
    default:
      throw new TypeError(`unknown param type ${show(type)}`);
  }
}

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

function readInteger(name, text) {
  const trimmed = text.trim();
  if (!/^[+-]?\d+$/.test(trimmed)) throw badValue(name, 'integer', text);
  const value = BigInt(trimmed.startsWith('+') ? trimmed.slice(1) : trimmed);
  if (value < I64_MIN || value > I64_MAX) throw badValue(name, 'integer', text);
  return value;
}

function badValue(name, type, text) {
  return new ParamError(`param \`${name}\` = ${JSON.stringify(text)} is not a valid ${type} (${EXPECTED[type]})`);
}

const NANOS_PER = {
  nanos: 1n, nsec: 1n, ns: 1n,
  micros: 1000n, usec: 1000n, us: 1000n, 'µs': 1000n,
  millis: 1_000_000n, msec: 1_000_000n, ms: 1_000_000n,
  seconds: 1_000_000_000n, second: 1_000_000_000n, secs: 1_000_000_000n, sec: 1_000_000_000n, s: 1_000_000_000n,
  minutes: 60_000_000_000n, minute: 60_000_000_000n, mins: 60_000_000_000n, min: 60_000_000_000n, m: 60_000_000_000n,
  hours: 3_600_000_000_000n, hour: 3_600_000_000_000n, hrs: 3_600_000_000_000n, hr: 3_600_000_000_000n, h: 3_600_000_000_000n,
  days: 86_400_000_000_000n, day: 86_400_000_000_000n, d: 86_400_000_000_000n,
};

/**
 * Reads a duration text as the runner does (`"250ms"`, `"30s"`, `"2m"`,
 * `"1h 30m"`, `"1m30s"`; whole numbers with units ns, us, ms, s, m, h, d
 * and their long names: the grammar of the suite ABI's `duration` param
 * type) and returns it in milliseconds (fractional below 1 ms).
 * @param {string} text
 * @returns {number}
 */
export function parseDuration(text) {
  const trimmed = String(text).trim();
  if (trimmed === '') throw new TypeError('empty duration; write e.g. "30s", "2m" or "500ms"');
  const part = /(\d+)\s*([a-zA-Zµ]+)\s*/y;
  let nanos = 0n;
  let at = 0;
  while (at < trimmed.length) {
    part.lastIndex = at;
    const match = part.exec(trimmed);
    if (!match) {
      throw new TypeError(`invalid duration ${JSON.stringify(text)} at ${JSON.stringify(trimmed.slice(at))}; write e.g. "30s", "2m" or "500ms"`);
    }
    const unit = NANOS_PER[match[2]];
    if (unit === undefined) {
      throw new TypeError(`invalid duration ${JSON.stringify(text)}: unknown unit ${JSON.stringify(match[2])}`);
    }
    nanos += BigInt(match[1]) * unit;
    at = part.lastIndex;
  }
  return Number(nanos) / 1e6;
}

/** A timeout given as milliseconds or a duration text, as whole milliseconds. */
function toMillis(value, what) {
  if (typeof value === 'string') return Math.ceil(parseDuration(value));
  if (typeof value === 'bigint' && value >= 0n) return Number(value);
  if (typeof value === 'number' && value >= 0 && !Number.isNaN(value)) {
    return Number.isFinite(value) ? Math.ceil(value) : Number.MAX_SAFE_INTEGER;
  }
  throw new TypeError(`${what} must be a number of milliseconds (>= 0) or a duration text such as "30s", not ${show(value)}`);
}

// ---------------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------------

function inTest(what) {
  if (running === null) {
    throw new Error(`${what} only works inside a test (not at module top level, nor while the suite is listed)`);
  }
}

/** The id of the run this test belongs to. */
export function runId() {
  inTest('runId()');
  return hostRunId();
}

/** The role of this plan entry, e.g. `"server"` or `"client"`. */
export function role() {
  inTest('role()');
  return hostRole();
}

/** Zero-based index of this instance among the instances of its role. */
export function instanceIndex() {
  inTest('instanceIndex()');
  return hostInstanceIndex();
}

/** How many instances of this role take part in the run. */
export function instanceCount() {
  inTest('instanceCount()');
  return hostInstanceCount();
}

/** Name of the machine executing this test. */
export function machine() {
  inTest('machine()');
  return hostMachine();
}

/**
 * The text of parameter `name` as the plan entry sets it, or undefined;
 * declared or not, no default applied.
 * @param {string} name
 * @returns {string|undefined}
 */
export function paramText(name) {
  inTest(`paramText(${JSON.stringify(name)})`);
  return hostParam(String(name)) ?? undefined;
}

/**
 * All parameters the plan entry sets, as `[name, text]` pairs sorted by name
 * (`Object.fromEntries(params())` makes an object of them).
 * @returns {[string, string][]}
 */
export function params() {
  inTest('params()');
  return hostParams().map(([name, text]) => [name, text]);
}

// ---------------------------------------------------------------------------
// Sync
// ---------------------------------------------------------------------------

/** Calls a sync import, turning its error into a SyncError. */
function syncCall(what, call) {
  inTest(what);
  try {
    return call();
  } catch (error) {
    const payload = error?.payload;
    if (payload && SYNC_KINDS.includes(payload.tag)) {
      throw new SyncError(payload.tag, String(payload.val));
    }
    throw error;
  }
}

// ---------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------

/**
 * Where one instance of a service of the run is: `host` (an IP address),
 * `port` (its `{port}`), `ports` (its `{port.NAME}` ports by name) and the
 * `machine` that runs it. Reaching it needs the entry's grant
 * `net = ["service:NAME"]`.
 */
export class ServiceAddress {
  constructor(address) {
    this.machine = address.machine;
    this.host = address.host;
    this.port = address.port;
    this.ports = Object.fromEntries(address.ports ?? []);
  }

  /** `host:port` (an IPv6 host in brackets); `port` names a `{port.NAME}`. */
  addr(port) {
    const number = port === undefined ? this.port : this.ports[port];
    if (number === undefined) fail(`the service on ${this.machine} has no port ${port ?? '{port}'}`);
    return this.host.includes(':') ? `[${this.host}]:${number}` : `${this.host}:${number}`;
  }

  /** `http://host:port` followed by `path`; `port` names a `{port.NAME}`. */
  url(path = '/', port) {
    return `http://${this.addr(port)}${path}`;
  }
}

/**
 * Every instance of the run's service `name`, in instance order.
 * @param {string} name
 * @returns {ServiceAddress[]}
 */
export function serviceAddrs(name) {
  inTest(`serviceAddrs(${show(name)})`);
  return hostAddresses(String(name)).map((a) => new ServiceAddress(a));
}

/**
 * The address of the run's service `name` (instance `instance`, the first
 * by default); fails the test when the run has no such service.
 * @param {string} name
 * @param {number} [instance]
 * @returns {ServiceAddress}
 */
export function service(name, instance = 0) {
  const all = serviceAddrs(name);
  if (all.length === 0) fail(`the run has no service ${show(name)}: is it in the plan's [[services]], and ready?`);
  if (all[instance] === undefined) fail(`service ${show(name)} has ${all.length} instance(s); there is no instance ${instance}`);
  return all[instance];
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

const FAULT_KINDS = ['denied', 'unknown', 'failed', 'cancelled'];
const SIGNALS = ['term', 'kill', 'int', 'hup', 'quit', 'usr1', 'usr2'];

/**
 * A `fault` was not done. `kind` is `"denied"` (the plan entry is not
 * granted faults into the service; `text` names the grant), `"unknown"` (no
 * such service or instance), `"failed"` (tried, and it did not work) or
 * `"cancelled"` (the run is over). The message reads `fault KIND: TEXT`.
 */
export class FaultError extends Failed {
  constructor(kind, text) {
    super(`fault ${kind}: ${text}`);
    this.name = 'FaultError';
    this.kind = kind;
    this.text = text;
  }
}

function faultCall(what, call) {
  inTest(what);
  try {
    return call();
  } catch (error) {
    const payload = error?.payload;
    if (payload && FAULT_KINDS.includes(payload.tag)) {
      throw new FaultError(payload.tag, String(payload.val));
    }
    throw error;
  }
}

const target = (instance) => (instance === undefined || instance === null ? undefined : Number(instance));

/**
 * Faults into the run's services, on whatever machine runs them. Each call
 * returns once the fault is done (`restart`: once the service is ready
 * again; `stop`: once it exited). `instance` picks one instance of a service
 * on several machines (omitted: every one). The plan entry needs the grant
 * `capabilities = { faults = ["db"] }`. Failures throw `FaultError`.
 */
export const fault = Object.freeze({
  /** @param {string} service @param {number} [instance] */
  stop: (service, instance) => faultCall(`fault.stop(${show(service)})`, () => hostStop(service, target(instance))),
  /** @param {string} service @param {number} [instance] */
  start: (service, instance) => faultCall(`fault.start(${show(service)})`, () => hostStart(service, target(instance))),
  /** @param {string} service @param {number} [instance] */
  restart: (service, instance) =>
    faultCall(`fault.restart(${show(service)})`, () => hostRestart(service, target(instance))),
  /**
   * Sends `signal` (`'TERM'`, `'KILL'`, `'INT'`, `'HUP'`, `'QUIT'`, `'USR1'`, `'USR2'`).
   * @param {string} service @param {string} [signal] @param {number} [instance]
   */
  kill: (service, signal = 'KILL', instance) => {
    const name = String(signal).toLowerCase().replace(/^sig/, '');
    if (!SIGNALS.includes(name)) {
      throw new FaultError('unknown', `no signal ${show(signal)}; kill sends one of ${SIGNALS.join(', ')}`);
    }
    return faultCall(`fault.kill(${show(service)}, ${show(name)})`, () => hostKill(service, target(instance), name));
  },
  /** @param {string} service @param {number} [instance] */
  pause: (service, instance) => faultCall(`fault.pause(${show(service)})`, () => hostPause(service, target(instance))),
  /** @param {string} service @param {number} [instance] */
  resume: (service, instance) =>
    faultCall(`fault.resume(${show(service)})`, () => hostResume(service, target(instance))),
});

/**
 * A cursor over one topic, from its first message; made by `sync.subscribe()`.
 */
export class Subscription {
  #inner;
  #topic;

  /** @internal */
  constructor(topic, inner) {
    this.#topic = topic;
    this.#inner = inner;
  }

  /** The topic this cursor reads. */
  get topic() {
    return this.#topic;
  }

  /**
   * The next message, waiting up to `timeoutMs` (milliseconds, or a
   * duration text) for one to be published. Throws `SyncError`.
   * @param {number|string} timeoutMs
   * @returns {string}
   */
  next(timeoutMs) {
    const ms = toMillis(timeoutMs, 'Subscription.next(timeoutMs): timeoutMs');
    if (this.#inner === undefined) throw new Error(`the subscription to ${JSON.stringify(this.#topic)} is closed`);
    return syncCall(`subscription(${JSON.stringify(this.#topic)}).next()`, () => this.#inner.next(ms));
  }

  /** Releases the cursor (also done when the test ends). */
  close() {
    this.#inner?.[Symbol.dispose ?? Symbol.for('dispose')]?.();
    this.#inner = undefined;
  }
}

/**
 * Coordination between the parts of one run, across machines. A state is a
 * counter that `signal` increments and `barrier` waits on; a topic is an
 * append-only list of messages that every subscriber reads from the first.
 * Everything is scoped to the run. Timeouts are milliseconds (or a duration
 * text such as `"30s"`); 0 means the plan's `barrier_timeout`, which also
 * bounds every wait. Failures throw `SyncError`.
 */
export const sync = Object.freeze({
  /**
   * Increments the counter of `state`; returns its new value (1 for the first).
   * @param {string} state
   * @returns {number}
   */
  signal(state) {
    return Number(syncCall(`sync.signal(${JSON.stringify(state)})`, () => hostSignal(String(state))));
  },

  /**
   * Waits until the counter of `state` reaches `target`.
   * @param {string} state
   * @param {number} target
   * @param {number|string} timeoutMs
   */
  barrier(state, target, timeoutMs) {
    const what = `sync.barrier(${JSON.stringify(state)})`;
    const count = toCount(target, `${what}: target`);
    const ms = toMillis(timeoutMs, `${what}: timeoutMs`);
    syncCall(what, () => hostBarrier(String(state), count, ms));
  },

  /**
   * Signals `state`, then waits until its counter reaches `target`; returns
   * the counter's value after this signal.
   * @param {string} state
   * @param {number} target
   * @param {number|string} timeoutMs
   * @returns {number}
   */
  signalAndWait(state, target, timeoutMs) {
    const what = `sync.signalAndWait(${JSON.stringify(state)})`;
    const count = toCount(target, `${what}: target`);
    const ms = toMillis(timeoutMs, `${what}: timeoutMs`);
    return Number(syncCall(what, () => hostSignalAndWait(String(state), count, ms)));
  },

  /**
   * Appends `payload` to `topic`; returns its sequence number (1 for the
   * first message). A non-string payload is sent as JSON.
   * @param {string} topic
   * @param {string|unknown} payload
   * @returns {number}
   */
  publish(topic, payload) {
    const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
    if (text === undefined) throw new TypeError(`sync.publish(${JSON.stringify(topic)}): the payload ${show(payload)} is not JSON`);
    return Number(syncCall(`sync.publish(${JSON.stringify(topic)})`, () => hostPublish(String(topic), text)));
  },

  /**
   * Opens a cursor over `topic` from its first message.
   * @param {string} topic
   * @returns {Subscription}
   */
  subscribe(topic) {
    const name = String(topic);
    return new Subscription(name, syncCall(`sync.subscribe(${JSON.stringify(name)})`, () => hostSubscribe(name)));
  },
});

function toCount(value, what) {
  if (typeof value === 'bigint' && value >= 0n) return value;
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0) return value;
  throw new TypeError(`${what} must be a whole number >= 0, not ${show(value)}`);
}

// ---------------------------------------------------------------------------
// Log and attach
// ---------------------------------------------------------------------------

function logLine(level, parts) {
  const message = parts.map((p) => (typeof p === 'string' ? p : p instanceof Error ? (p.stack ? `${p.name}: ${p.message}\n${p.stack}` : `${p.name}: ${p.message}`) : show(p))).join(' ');
  if (running === null) {
    // Outside a test there is no run to log to.
    console.error(`[${level}] ${message}`);
    return;
  }
  hostLog(level, message);
}

/**
 * Structured log lines, attached to the running test and streamed live.
 * Each method joins its arguments with spaces (non-strings shown as JSON).
 */
export const log = Object.freeze({
  /** @param {...unknown} parts */
  trace: (...parts) => logLine('trace', parts),
  /** @param {...unknown} parts */
  debug: (...parts) => logLine('debug', parts),
  /** @param {...unknown} parts */
  info: (...parts) => logLine('info', parts),
  /** @param {...unknown} parts */
  warn: (...parts) => logLine('warn', parts),
  /** @param {...unknown} parts */
  error: (...parts) => logLine('error', parts),
});

/**
 * Attaches `content` to the running test as `name`, a plain file name
 * (`"server.log"`; its extension decides how a browser shows it). `content`
 * is a string (written as UTF-8), a Uint8Array or other typed array, an
 * ArrayBuffer or an array of bytes. Returns true when attached; when the
 * runner refuses (a bad or reused name, the plan's `attachment_limit`) it
 * logs the reason as a warning and returns false: the test goes on.
 * @param {string} name
 * @param {string|Uint8Array|ArrayBuffer|ArrayBufferView|number[]} content
 * @returns {boolean}
 */
export function attach(name, content) {
  inTest(`attach(${JSON.stringify(name)})`);
  let bytes;
  if (typeof content === 'string') bytes = new TextEncoder().encode(content);
  else if (content instanceof Uint8Array) bytes = content;
  else if (content instanceof ArrayBuffer) bytes = new Uint8Array(content);
  else if (ArrayBuffer.isView(content)) bytes = new Uint8Array(content.buffer, content.byteOffset, content.byteLength);
  else if (Array.isArray(content)) bytes = Uint8Array.from(content);
  else throw new TypeError(`attach(${JSON.stringify(name)}): content must be a string or bytes, not ${show(content)}`);
  try {
    hostAttach(String(name), bytes);
    return true;
  } catch (error) {
    const why = typeof error?.payload === 'string' ? error.payload : error?.message ?? String(error);
    hostLog('warn', `attachment ${JSON.stringify(name)} refused: ${why}`);
    return false;
  }
}

// ---------------------------------------------------------------------------
// The component's export
// ---------------------------------------------------------------------------

const PASS = Object.freeze({ tag: 'pass' });

function listTests() {
  return registry.map(({ name, tags, ignored, timeoutMs }) => ({ name, tags: [...tags], ignored, timeoutMs }));
}

function describeSuite() {
  return {
    tests: listTests(),
    params: declaredParams.map((p) => ({
      name: p.name,
      type: p.type,
      required: p.required,
      default: p.default,
      help: p.help,
    })),
  };
}

/** The test-result of a thrown value. */
function outcome(error) {
  if (error instanceof Skipped) return { tag: 'skip', val: error.message };
  if (error instanceof Failed) return { tag: 'fail', val: error.message };
  if (error instanceof Error) {
    let text = error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message || error.name;
    if (error.cause !== undefined) text += `\n  caused by: ${error.cause instanceof Error ? `${error.cause.name}: ${error.cause.message}` : show(error.cause)}`;
    const stack = shortStack(error.stack);
    return { tag: 'fail', val: stack ? `${text}\n${stack}` : text };
  }
  return { tag: 'fail', val: `the test threw a non-Error value: ${show(error)}` };
}

/** The frames of a stack down to the test function, in Node's "at f (file:line:col)" style. */
function shortStack(stack) {
  if (typeof stack !== 'string') return '';
  const frames = [];
  for (const line of stack.split('\n')) {
    const frame = line.trim();
    if (frame === '') continue;
    if (frame.includes('__ensemble') || frame.includes('export_tests_0_2_0')) break;
    const at = frame.lastIndexOf('@');
    const fn = at > 0 ? frame.slice(0, at) : '';
    const where = at >= 0 ? frame.slice(at + 1) : frame;
    frames.push(fn ? `    at ${fn} (${where})` : `    at ${where}`);
    if (frames.length === 10) {
      frames.push('    ...');
      break;
    }
  }
  return frames.join('\n');
}

// An async test waits on timers and requests (`fetch`); the imports block.
// Counting the live timers and requests in flight tells a test that still
// waits from one whose promise nothing can settle any more, which would
// otherwise abort the instance with an obscure "event loop error".
const liveTimers = new Set();
let requestsInFlight = 0;
/** Called after a timer fired or was cleared while an async test runs. */
let onTimerEvent = null;
/** Called with what a timer's callback threw while an async test runs. */
let onTimerError = null;
const realSetTimeout = globalThis.setTimeout;

function trackTimers() {
  const g = globalThis;
  const { setTimeout: st, clearTimeout: ct, setInterval: si, clearInterval: ci } = g;
  if (typeof st !== 'function' || typeof si !== 'function') return;
  const after = () => onTimerEvent?.();
  // A callback's exception would abort the instance; it fails the test instead.
  const __ensembleTimer = (callback, self, args) => {
    try {
      return callback.apply(self, args);
    } catch (error) {
      if (onTimerError === null) throw error;
      onTimerError(error);
    } finally {
      after();
    }
  };
  g.setTimeout = function setTimeout(callback, delay, ...args) {
    if (typeof callback !== 'function') return st(callback, delay, ...args);
    const id = st(function () {
      liveTimers.delete(id);
      return __ensembleTimer(callback, this, args);
    }, delay);
    liveTimers.add(id);
    return id;
  };
  g.setInterval = function setInterval(callback, delay, ...args) {
    if (typeof callback !== 'function') return si(callback, delay, ...args);
    const id = si(function () {
      return __ensembleTimer(callback, this, args);
    }, delay);
    liveTimers.add(id);
    return id;
  };
  g.clearTimeout = function clearTimeout(id) {
    ct(id);
    if (liveTimers.delete(id)) after();
  };
  g.clearInterval = function clearInterval(id) {
    ci(id);
    if (liveTimers.delete(id)) after();
  };
}
trackTimers();

// A request is in flight from `fetch` until its response arrives, and so
// is the reading of its body (`text()`, `json()`, …): the test's promise
// may still settle. (A body read through `response.body` is not counted.)
function inFlight(start) {
  requestsInFlight += 1;
  const settled = () => {
    requestsInFlight -= 1;
    onTimerEvent?.();
  };
  let pending;
  try {
    pending = start();
  } catch (error) {
    settled();
    throw error;
  }
  return pending.then(
    (value) => {
      settled();
      return value;
    },
    (error) => {
      settled();
      throw error;
    },
  );
}

const BODY_READERS = ['text', 'json', 'arrayBuffer', 'blob', 'formData', 'bytes'];

function trackRequests() {
  const g = globalThis;
  const realFetch = g.fetch;
  if (typeof realFetch !== 'function') return;
  g.fetch = function fetch(...args) {
    return inFlight(() => realFetch.apply(this, args)).then((response) => {
      for (const name of BODY_READERS) {
        const read = response[name];
        if (typeof read === 'function') {
          response[name] = (...a) => inFlight(() => read.apply(response, a));
        }
      }
      return response;
    });
  };
}
trackRequests();

/** The result of an async test, failing it when its promise can no longer settle. */
function settle(promise) {
  if (typeof realSetTimeout !== 'function') return promise.then(() => PASS, outcome);
  return new Promise((resolve) => {
    let settled = false;
    const done = (result) => {
      if (settled) return;
      settled = true;
      onTimerEvent = null;
      onTimerError = null;
      resolve(result);
    };
    onTimerError = (error) => done(outcome(error));
    promise.then(() => done(PASS), (error) => done(outcome(error)));
    const check = () => {
      if (!settled && liveTimers.size === 0 && requestsInFlight === 0) {
        done({
          tag: 'fail',
          val: "the test's promise never settled: it awaits something nothing is left to resolve (no timer or request is pending)",
        });
      }
    };
    // Runs once the pending promise jobs ran, and again after every timer.
    onTimerEvent = () => realSetTimeout(check, 0);
    onTimerEvent();
  });
}

function __ensembleInvokeTest(entry) {
  return entry.fn();
}

function runTest(name) {
  const entry = testsByName.get(name);
  if (entry === undefined) {
    return { tag: 'fail', val: `no test named ${JSON.stringify(name)} in this suite (it has ${registry.length}: ${registry.map((t) => t.name).join(', ')})` };
  }
  running = name;
  let result;
  try {
    result = __ensembleInvokeTest(entry);
  } catch (error) {
    return outcome(error);
  }
  if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
    return settle(Promise.resolve(result));
  }
  return PASS;
}

/**
 * The component's export (`ensemble:suite/tests`): the app module must
 * export it, `export { tests } from '@ensemble/suite';`.
 */
export const tests = Object.freeze({
  list: listTests,
  describe: describeSuite,
  run: runTest,
});
