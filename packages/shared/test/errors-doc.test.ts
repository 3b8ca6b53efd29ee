import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import * as errors from '../src/errors.js';
import { BurrowError, ERROR_CODES } from '../src/errors.js';
import { Reason } from '../src/protocol/frame.js';

// packages/shared/test/ → repository root, wherever the clone lives.
const root = new URL('../../../', import.meta.url);
const doc = readFileSync(fileURLToPath(new URL('docs/errors.md', root)), 'utf8');

type AnyErrorClass = new (...args: unknown[]) => BurrowError;

/** Every exported class that extends BurrowError (BurrowError itself is abstract and excluded). */
const classes: Array<[string, AnyErrorClass]> = [];
for (const [name, value] of Object.entries(errors) as Array<[string, unknown]>) {
  if (typeof value === 'function' && value.prototype instanceof BurrowError) {
    classes.push([name, value as AnyErrorClass]);
  }
}

function instantiate(name: string, C: AnyErrorClass): BurrowError {
  // StreamResetError's first argument is the wire reason the peer sent.
  return name === 'StreamResetError' ? new C(Reason.Cancel) : new C();
}

/** The code as a whole word: BURROW_ERR_STREAM must not match BURROW_ERR_STREAM_RESET. */
function mentions(text: string, word: string): boolean {
  return new RegExp(`(^|[^A-Za-z0-9_])${word}($|[^A-Za-z0-9_])`, 'm').test(text);
}

t.test('docs/errors.md documents every code in ERROR_CODES', async (t) => {
  t.ok(ERROR_CODES.length > 0, 'the catalogue is not empty');
  t.equal(new Set(ERROR_CODES).size, ERROR_CODES.length, 'no code is listed twice');
  for (const code of ERROR_CODES) {
    t.ok(mentions(doc, code), `${code} appears in docs/errors.md`);
    const entry = new RegExp(`^(#{1,6} |\\|).*\`${code}\``, 'm');
    t.match(doc, entry, `${code} has a heading or a table row`);
  }
});

t.test('every exported error class has a catalogued code and a literal name', async (t) => {
  t.ok(classes.length >= ERROR_CODES.length, `found ${classes.length} error classes`);
  const seen = new Set<string>();
  for (const [exportName, C] of classes) {
    const err = instantiate(exportName, C);
    t.type(err, Error, `${exportName} is an Error`);
    t.equal(C.name, exportName, `${exportName}: class name matches its export`);
    t.equal(err.name, exportName, `${exportName}: name is the literal class name`);
    t.ok(ERROR_CODES.includes(err.code), `${exportName}: code ${err.code} is in ERROR_CODES`);
    t.match(err.code, /^BURROW_ERR_[A-Z0-9_]+$/, `${exportName}: code has the BURROW_ERR_ prefix`);
    t.ok(err.message.length > 0, `${exportName}: has a default message`);
    t.ok(mentions(doc, exportName), `${exportName} is named in docs/errors.md`);
    if ('reason' in err) {
      t.type(Reason[err.reason as Reason], 'string', `${exportName}: reason ${err.reason} is a wire reason`);
    }
    seen.add(err.code);
  }
  for (const code of ERROR_CODES) t.ok(seen.has(code), `${code} belongs to an exported class`);
});
