import { isScalar, LineCounter, parseDocument, visit } from 'yaml';
import { ConfigError } from './errors.js';

/**
 * Parses the YAML text of a file a user wrote (a config file, a routes file,
 * a kubeconfig), for `name` in messages. The library's own messages quote the
 * file (an alias's name, a tagged line): a secret in it would reach a log or
 * stderr. An error here says where and what kind only: `relay.yaml: not valid
 * YAML at line 3, column 14 (BAD_INDENT)`; the library's warnings (an unknown
 * tag) count as errors, and it writes nothing itself. An empty document is
 * `null`. With `numbersAsWritten`, a number is returned as the text it was
 * (`000123…` keeps its zeros and digits); option readers check it as text.
 */
export function parseUserYaml(text: string, name: string, { numbersAsWritten = false } = {}): unknown {
  const lines = new LineCounter();
  const doc = parseDocument(text, { prettyErrors: false, logLevel: 'silent', lineCounter: lines });
  const invalid = (offset: number | undefined, code: string) => {
    const at = offset === undefined ? undefined : lines.linePos(offset);
    return new ConfigError(
      `${name}: not valid YAML${at ? ` at line ${at.line}, column ${at.col}` : ''} (${code})`,
    );
  };
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem) throw invalid(problem.pos[0], problem.code);
  if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) return null;
  let alias: number | undefined;
  visit(doc, {
    Scalar(_key, node) {
      if (numbersAsWritten && typeof node.value === 'number' && node.range)
        node.value = text.slice(node.range[0], node.range[1]);
    },
    Alias(_key, node) {
      alias ??= node.range?.[0];
    },
  });
  try {
    return doc.toJS();
  } catch {
    // An alias without its anchor is only found here; the message would quote its name.
    throw invalid(alias, 'BAD_ALIAS');
  }
}
