import { isScalar, LineCounter, parseAllDocuments, parseDocument, visit } from 'yaml';
import { ConfigError } from './errors.js';

/** Whether a document holds nothing: no text, or only comments. */
function isEmpty(contents: unknown): boolean {
  return contents === null || (isScalar(contents) && contents.value === null);
}

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
  // logLevel 'error': at 'silent' the library drops every document after the first without a
  // word (a second one after `---` would be ignored); parseDocument itself logs nothing.
  const doc = parseDocument(text, { prettyErrors: false, logLevel: 'error', lineCounter: lines });
  const invalid = (offset: number | undefined, code: string) => {
    const at = offset === undefined ? undefined : lines.linePos(offset);
    return new ConfigError(
      `${name}: not valid YAML${at ? ` at line ${at.line}, column ${at.col}` : ''} (${code})`,
    );
  };
  const more = doc.errors.find((e) => e.code === 'MULTIPLE_DOCS');
  if (more) {
    // A file that ends with a bare `---` holds an empty second document: harmless.
    const rest = parseAllDocuments(text, { logLevel: 'silent' });
    if (Array.isArray(rest) && rest.slice(1).some((d) => !isEmpty(d.contents) || d.errors.length > 0)) {
      const at = lines.linePos(more.pos[0]);
      throw new ConfigError(
        `${name}: holds more than one YAML document (another begins at line ${at.line}); put everything in one`,
      );
    }
  }
  const problem = doc.errors.find((e) => e !== more) ?? doc.warnings[0];
  if (problem) throw invalid(problem.pos[0], problem.code);
  if (isEmpty(doc.contents)) return null;
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
