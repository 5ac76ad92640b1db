// Every outcome the JavaScript SDK reports; tests/tests/polyglot.rs checks
// each test's outcome and message.
import { test, param, check, checkEq, fail, skip, log, attach, sync } from '@ensemble/suite';
export { tests } from '@ensemble/suite';

const word = param('word', 'string', { required: true, help: 'a word the plan sets' });
const nap = param('nap', 'duration', { default: '1m 30s', help: 'a duration' });
const ratio = param('ratio', 'float', { default: 0.5, help: 'a ratio' });

test('passes', () => {
  checkEq(word.get(), 'ensemble');
  checkEq(nap.get(), 90_000);
  checkEq(ratio.get(), 0.5);
}, { tags: ['fine'] });
test('check_fails', () => { check(1 + 1 === 3, 'x should be 3'); });
test('check_eq_fails', () => { checkEq([1, 2, 3], [1, 2, 4], 'lists'); });
test('throws', () => { const o = null; return o.field; });
test('fails', () => fail('failed on purpose'));
test('skips', () => { skip('skipped on purpose'); });
test('ignored', () => { fail('runs only when asked'); }, { ignore: true });
test('logs_and_attaches', () => {
  log.info('an info line');
  check(attach('note.txt', 'some text\n'), 'attached');
  checkEq(attach('note.txt', 'again'), false);
});
test('async_fails', async () => {
  await null;
  checkEq(await Promise.resolve(41), 42, 'the answer');
});
test('sync_times_out', () => { sync.barrier('never', 2, 100); });
