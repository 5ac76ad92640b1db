// Types of @ensemble/suite (index.js): write Ensemble test suites in JavaScript.
// The ABI is the WIT world `suite` of package ensemble:suite@0.3.0.

/** The SDK's version; it speaks the `ensemble:suite@0.3.0` ABI. */
export const VERSION: '0.3.0';

// --- outcomes -----------------------------------------------------------------

/** Fails the running test with its message (no stack added). */
export class Failed extends Error {
  constructor(message: string);
}

/** Skips the running test with a reason. */
export class Skipped extends Error {
  constructor(reason: string);
}

/** A required param is not set, or a param's text does not read as its type. */
export class ParamError extends Failed {}

/** Why a sync call failed. */
export type SyncErrorKind = 'timeout' | 'lost' | 'cancelled' | 'invalid';

/** A `sync` call failed; the message reads `sync KIND: TEXT`. */
export class SyncError extends Failed {
  constructor(kind: SyncErrorKind, text: string);
  /** timeout: the wait ran past its timeout; lost: a party of the run was lost; cancelled: the run was cancelled; invalid: the request was invalid. */
  readonly kind: SyncErrorKind;
  /** The runner's explanation. */
  readonly text: string;
}

/** Fails the running test with `message`. */
export function fail(message?: string): never;

/** Skips the running test: it does not apply here. */
export function skip(reason?: string): never;

// --- checks -------------------------------------------------------------------

/** Fails the test unless `condition` is truthy; the message adds the line of the call. */
export function check(condition: unknown, message?: string): asserts condition;

/** Fails the test unless `actual` deeply equals `expected` (arrays, plain objects, Map, Set, Date, typed arrays by content); shows both. */
export function checkEq<T>(actual: T, expected: T, message?: string): void;

/** Fails the test when `actual` deeply equals `unexpected`. */
export function checkNe(actual: unknown, unexpected: unknown, message?: string): void;

// --- tests --------------------------------------------------------------------

export interface TestOptions {
  /** Shown in reports and usable in filters (`tag(sync)`). */
  tags?: string[] | string;
  /** Listed but not run unless asked for (`--run-ignored`); reported as skipped. */
  ignore?: boolean;
  /** Overrides the plan's test timeout: milliseconds, or a duration text such as "2m". */
  timeoutMs?: number | string;
}

/** A test function: passes when it returns (or its promise resolves), fails when it throws (or the promise rejects). */
export type TestFn = () => unknown;

/** Declares a test at module top level; tests run in declaration order. */
export function test(name: string, fn: TestFn, options?: TestOptions): void;
export function test(name: string, options: TestOptions, fn: TestFn): void;

// --- params -------------------------------------------------------------------

export type ParamType = 'string' | 'integer' | 'float' | 'boolean' | 'duration';

/** The JavaScript value of each param type (a duration reads as milliseconds). */
export interface ParamValue {
  string: string;
  integer: number;
  float: number;
  boolean: boolean;
  duration: number;
}

export interface ParamOptions<K extends ParamType> {
  /** Used when the plan entry does not set the param: a value of the type (a duration as text like "30s" or as milliseconds) or its text. */
  default?: ParamValue[K] | string | (K extends 'integer' ? bigint : never);
  /** A plan entry must set it (no default then). */
  required?: boolean;
  /** One line for people: what the value means. */
  help?: string;
}

/** A declared param of the plan entry. */
export class Param<K extends ParamType = ParamType, V = ParamValue[K] | undefined> {
  private constructor();
  readonly name: string;
  readonly type: K;
  readonly required: boolean;
  /** The default as text. */
  readonly default: string | undefined;
  readonly help: string;
  /** The value as its type (the default when unset; undefined when neither); throws ParamError. */
  get(): V;
  /** An integer param as a BigInt, for values beyond Number.MAX_SAFE_INTEGER. */
  bigint(): bigint | undefined;
  /** The text the plan entry set, or undefined. */
  text(): string | undefined;
  /** Whether the plan entry sets it. */
  isSet(): boolean;
}

/** Declares a param the suite reads, at module top level; `ensemble suite inspect` lists it and the runner checks plans against it. */
export function param<K extends ParamType>(name: string, type: K, options: ParamOptions<K> & { required: true }): Param<K, ParamValue[K]>;
export function param<K extends ParamType>(name: string, type: K, options: ParamOptions<K> & { default: unknown }): Param<K, ParamValue[K]>;
export function param<K extends ParamType>(name: string, type: K, options?: ParamOptions<K>): Param<K>;

/** Reads a duration text as the runner does ("250ms", "30s", "2m", "1h 30m") into milliseconds. */
export function parseDuration(text: string): number;

// --- context (inside a test only) ---------------------------------------------

/** The id of the run this test belongs to. */
export function runId(): string;
/** The role of this plan entry, e.g. "server" or "client". */
export function role(): string;
/** Zero-based index of this instance among the instances of its role. */
export function instanceIndex(): number;
/** How many instances of this role take part in the run. */
export function instanceCount(): number;
/** Name of the machine executing this test. */
export function machine(): string;
/** The text of a param as the plan entry sets it (declared or not, no default), or undefined. */
export function paramText(name: string): string | undefined;
/** Every param the plan entry sets, as [name, text] pairs sorted by name. */
export function params(): [string, string][];

// --- sync (inside a test only) ------------------------------------------------

/** Milliseconds (0: the plan's barrier_timeout), or a duration text such as "30s". */
export type Timeout = number | string;

/** A cursor over one topic, from its first message. */
export class Subscription {
  private constructor();
  readonly topic: string;
  /** The next message, waiting up to `timeoutMs`; throws SyncError. */
  next(timeoutMs: Timeout): string;
  /** Releases the cursor (also done when the test ends). */
  close(): void;
}

export const sync: {
  /** Increments the counter of `state`; returns its new value (1 for the first). */
  signal(state: string): number;
  /** Waits until the counter of `state` reaches `target`. */
  barrier(state: string, target: number | bigint, timeoutMs: Timeout): void;
  /** Signals `state`, then waits until its counter reaches `target`; returns the value after this signal. */
  signalAndWait(state: string, target: number | bigint, timeoutMs: Timeout): number;
  /** Appends `payload` (a non-string is sent as JSON) to `topic`; returns its sequence number (1 for the first). */
  publish(topic: string, payload: unknown): number;
  /** Opens a cursor over `topic` from its first message. */
  subscribe(topic: string): Subscription;
};

// --- log and attach -----------------------------------------------------------

/** Log lines attached to the running test; the arguments are joined with spaces (non-strings as JSON). */
export const log: {
  trace(...parts: unknown[]): void;
  debug(...parts: unknown[]): void;
  info(...parts: unknown[]): void;
  warn(...parts: unknown[]): void;
  error(...parts: unknown[]): void;
};

/** Attaches `content` (text as UTF-8, or bytes) to the running test as `name`; false (and a warning logged) when the runner refuses. */
export function attach(name: string, content: string | Uint8Array | ArrayBuffer | ArrayBufferView | number[]): boolean;

// --- the component's export ---------------------------------------------------

export interface TestInfo {
  name: string;
  tags: string[];
  ignored: boolean;
  timeoutMs?: number;
}

export interface ParamInfo {
  name: string;
  type: ParamType;
  required: boolean;
  default?: string;
  help: string;
}

export type TestResult = { tag: 'pass' } | { tag: 'fail'; val: string } | { tag: 'skip'; val: string };

/** The `ensemble:suite/tests` export: re-export it from the app, `export { tests } from '@ensemble/suite';`. */
export const tests: {
  list(): TestInfo[];
  describe(): { tests: TestInfo[]; params: ParamInfo[] };
  run(name: string): TestResult | Promise<TestResult>;
};

export type FaultErrorKind = 'denied' | 'unknown' | 'failed' | 'cancelled';
/** A fault was not done; uncaught, it fails the test. */
export class FaultError extends Failed {
  constructor(kind: FaultErrorKind, text: string);
  readonly kind: FaultErrorKind;
  readonly text: string;
}
export type Signal = 'TERM' | 'KILL' | 'INT' | 'HUP' | 'QUIT' | 'USR1' | 'USR2';
/**
 * Faults into the run's services, on whatever machine runs them; each
 * returns once done. Needs the entry's grant `faults = ["NAME"]`.
 */
export const fault: {
  stop(service: string, instance?: number): void;
  start(service: string, instance?: number): void;
  restart(service: string, instance?: number): void;
  kill(service: string, signal?: Signal, instance?: number): void;
  pause(service: string, instance?: number): void;
  resume(service: string, instance?: number): void;
};

/** Where one instance of a service of the run is. */
export class ServiceAddress {
  readonly machine: string;
  readonly host: string;
  readonly port: number | undefined;
  readonly ports: Record<string, number>;
  /** `host:port`; `port` names a `{port.NAME}`. */
  addr(port?: string): string;
  /** `http://host:port` + `path`. */
  url(path?: string, port?: string): string;
}
/** The address of the run's service `name` (its first instance by default). */
export function service(name: string, instance?: number): ServiceAddress;
/** Every instance of the run's service `name`. */
export function serviceAddrs(name: string): ServiceAddress[];
