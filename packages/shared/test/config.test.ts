import t from 'tap';
import { DEFAULT_SESSION_CONFIG, verifyConfig } from '../src/protocol/config.js';

t.test('defaults pass verification unchanged', async (t) => {
  t.same(verifyConfig(), DEFAULT_SESSION_CONFIG);
});

t.test('a bad value names the field and the rule', async (t) => {
  t.throws(() => verifyConfig({ initialWindow: 10 }), {
    code: 'BURROW_ERR_CONFIG',
    message: /session\.initialWindow/,
  });
  t.throws(() => verifyConfig({ maxWindow: 1024 * 1024, initialWindow: 2 * 1024 * 1024 }), {
    message: /session\.maxWindow must be an integer from initialWindow/,
  });
  t.throws(() => verifyConfig({ keepaliveInterval: Number.NaN }), { message: /keepaliveInterval/ });
  t.throws(() => verifyConfig({ maxQueueDelay: -1 }), { message: /session\.maxQueueDelay must be from 0/ });
  t.throws(() => verifyConfig({ maxQueueDelay: Number.POSITIVE_INFINITY }), { message: /maxQueueDelay/ });
  t.equal(verifyConfig({ maxQueueDelay: 0 }).maxQueueDelay, 0, '0 turns the bound off');
});
