import t from 'tap';
import { parseDuration } from '../src/duration.js';
import { ConfigError } from '../src/errors.js';
import { attributeErrors, durationOption, type OptionSpec, parseOptions } from '../src/options.js';

const SPECS: readonly OptionSpec[] = [
  { name: 'config', type: 'string', placeholder: 'FILE', description: 'YAML config file' },
  {
    name: 'drain-timeout',
    env: 'TEST_DRAIN_TIMEOUT',
    type: 'string',
    placeholder: 'DURATION',
    default: '30s',
    description: 'drain time',
  },
  { name: 'verbose', type: 'boolean', description: 'more output' },
];

t.test('parseDuration: every unit, decimals, and 0 without a unit', async (t) => {
  t.equal(parseDuration('500ms'), 500);
  t.equal(parseDuration('30s'), 30_000);
  t.equal(parseDuration('15m'), 900_000);
  t.equal(parseDuration('1.5h'), 5_400_000);
  t.equal(parseDuration(' 90d '), 90 * 86_400_000);
  t.equal(parseDuration('0'), 0, 'zero is zero in any unit');
  t.equal(parseDuration('0s'), 0);
});

t.test('parseDuration: a bare number needs a unit, and the message lists the units', async (t) => {
  t.throws(() => parseDuration('90'), { message: '"90" needs a unit: ms, s, m, h or d' });
  t.throws(() => parseDuration('1.5'), { message: '"1.5" needs a unit: ms, s, m, h or d' });
  t.throws(() => parseDuration('30 s'), { message: /^"30 s" is not a duration .*units: ms, s, m, h or d/ });
  t.throws(() => parseDuration('-5s'), { message: /is not a duration/ });
  t.throws(() => parseDuration('2w'), { message: /is not a duration/, name: 'TypeError' });
});

t.test('a unitless duration is refused from flags, environment and YAML, naming where', async (t) => {
  // Read as the binaries read it: the option reader inside attributeErrors.
  const failure = (parsed: ReturnType<typeof parseOptions>) =>
    attributeErrors(parsed.sources, () => durationOption(parsed.values, 'drain-timeout')).then(
      () => 'no error',
      (err) => `${err.code}: ${err.message}`,
    );
  t.equal(
    await failure(parseOptions(SPECS, ['--drain-timeout', '30'], {})),
    'BURROW_ERR_CONFIG: --drain-timeout: "30" needs a unit: ms, s, m, h or d',
  );
  t.equal(
    await failure(parseOptions(SPECS, [], { TEST_DRAIN_TIMEOUT: '30' })),
    'BURROW_ERR_CONFIG: TEST_DRAIN_TIMEOUT: "30" needs a unit: ms, s, m, h or d',
  );
  // `drain-timeout: 30` in YAML is the number 30.
  t.equal(
    await failure(parseOptions(SPECS, [], {}, { 'drain-timeout': 30 }, 'relay.yaml')),
    'BURROW_ERR_CONFIG: relay.yaml: "drain-timeout": "30" needs a unit: ms, s, m, h or d',
  );
  t.equal(
    await failure(parseOptions(SPECS, [], {}, { 'drain-timeout': 'soon' }, 'relay.yaml')),
    'BURROW_ERR_CONFIG: relay.yaml: "drain-timeout": "soon" is not a duration (examples: 30s, 15m, 12h, 90d; units: ms, s, m, h or d)',
  );
  const ok = parseOptions(SPECS, [], {}, { 'drain-timeout': '45s' }, 'relay.yaml').values;
  t.equal(durationOption(ok, 'drain-timeout'), 45_000, 'a duration with its unit is taken');
});

t.test('sources: where each value came from; errors are re-attributed to it', async (t) => {
  const file = { 'drain-timeout': '1m', verbose: true };
  t.same(parseOptions(SPECS, ['--verbose'], { TEST_DRAIN_TIMEOUT: '5s' }, file, 'relay.yaml').sources, {
    'drain-timeout': 'TEST_DRAIN_TIMEOUT',
    verbose: '--verbose',
  });
  t.same(parseOptions(SPECS, [], {}, file, 'relay.yaml').sources, {
    'drain-timeout': 'relay.yaml: "drain-timeout"',
    verbose: 'relay.yaml: "verbose"',
  });
  t.same(parseOptions(SPECS, [], {}).sources, {}, 'defaults have no source');

  const fail = (message: string) => () => {
    throw new ConfigError(message);
  };
  const { sources } = parseOptions(SPECS, [], {}, file, 'relay.yaml');
  await t.rejects(attributeErrors(sources, fail('--drain-timeout must be at least 2m (got "1m")')), {
    code: 'BURROW_ERR_CONFIG',
    message: 'relay.yaml: "drain-timeout" must be at least 2m (got "1m")',
  });
  await t.rejects(
    attributeErrors(sources, fail('--verbose needs --drain-timeout above 2m')),
    { message: 'relay.yaml: "verbose" needs "drain-timeout" in relay.yaml above 2m' },
    'after the start of the message a file source reads as part of the sentence',
  );
  const mixed = parseOptions(SPECS, ['--verbose'], { TEST_DRAIN_TIMEOUT: '5s' }).sources;
  await t.rejects(
    attributeErrors(mixed, fail('--verbose needs --drain-timeout above 1m; or pass --config FILE')),
    { message: '--verbose needs TEST_DRAIN_TIMEOUT above 1m; or pass --config FILE' },
    'every option a message names is named where it was set; unset ones stay advice',
  );
  const LIST: readonly OptionSpec[] = [
    { name: 'hosts', env: 'TEST_HOSTS', type: 'list', description: 'names' },
  ];
  t.same(parseOptions(LIST, [], { TEST_HOSTS: ',' }).sources, {}, 'a list set to nothing is not a source');
  t.same(parseOptions(LIST, [], {}, { hosts: [] }, 'relay.yaml').sources, {});
  await t.rejects(
    attributeErrors({}, fail('--constructor is odd')),
    { message: '--constructor is odd' },
    'own keys only',
  );
  await t.rejects(
    attributeErrors(sources, fail('--drain-timeout-extra is wrong')),
    {
      message: '--drain-timeout-extra is wrong',
    },
    'only the whole flag name matches',
  );
  await t.rejects(
    attributeErrors(sources, fail('--config: cannot read x')),
    {
      message: '--config: cannot read x',
    },
    'an option with no source keeps its flag',
  );
  await t.rejects(attributeErrors(sources, fail('no option named here')), {
    message: 'no option named here',
  });
  const other = new Error('--drain-timeout crashed');
  await t.rejects(
    attributeErrors(sources, () => Promise.reject(other)),
    other,
    'other errors pass through',
  );
  t.equal(await attributeErrors(sources, () => 42), 42);
});

t.test('durationOption: 0 only where the caller allows it', async (t) => {
  const zero = parseOptions(SPECS, ['--drain-timeout', '0'], {}).values;
  t.throws(() => durationOption(zero, 'drain-timeout'), {
    code: 'BURROW_ERR_CONFIG',
    message: '--drain-timeout must be at least 1ms (got "0")',
  });
  t.equal(durationOption(zero, 'drain-timeout', { min: 0 }), 0);
  const tiny = parseOptions(SPECS, ['--drain-timeout', '0.2ms'], {}).values;
  t.throws(() => durationOption(tiny, 'drain-timeout'), { message: /must be at least 1ms/ });
});

t.test('parse errors are one line, even for a dash-prefixed value', async (t) => {
  for (const argv of [
    ['--drain-timeout', '-5s'],
    ['--drain-timeout', '--verbose'],
    ['--bogus'],
    ['-x'],
    ['--verbose=yes'],
  ]) {
    let message = '';
    try {
      parseOptions(SPECS, argv, {});
    } catch (err) {
      t.equal((err as { code?: string }).code, 'BURROW_ERR_CONFIG', argv.join(' '));
      message = (err as Error).message;
    }
    t.notMatch(message, /\n/, `${argv.join(' ')}: one line (${message})`);
    t.notMatch(message, /To specify/, 'without the advice on --flag=-value');
    t.match(message, /\(see --help\)$/);
  }
  t.throws(() => parseOptions(SPECS, ['--drain-timeout', '-5s'], {}), {
    message: /^Option '--drain-timeout' argument is ambiguous\. .*\(see --help\)$/,
  });
});

t.test('stray positional arguments are refused; a YAML file hints at its flag', async (t) => {
  t.throws(() => parseOptions(SPECS, ['relay.yaml'], {}), {
    code: 'BURROW_ERR_CONFIG',
    message: 'unexpected argument "relay.yaml" (did you mean --config relay.yaml?)',
  });
  t.throws(() => parseOptions(SPECS, ['--verbose', 'extra.yml'], {}), {
    message: 'unexpected argument "extra.yml" (did you mean --config extra.yml?)',
  });
  t.throws(() => parseOptions(SPECS, ['extra', '--verbose'], {}), {
    message: 'unexpected argument "extra" (see --help)',
  });
  t.throws(() => parseOptions(SPECS, ['--', '--verbose'], {}), {
    message: 'unexpected argument "--verbose" (see --help)',
  });
  const noFileFlag = SPECS.filter((s) => s.name !== 'config');
  t.throws(() => parseOptions(noFileFlag, ['relay.yaml'], {}), {
    message: 'unexpected argument "relay.yaml" (see --help)',
  });
  t.same(parseOptions(SPECS, ['--config', 'relay.yaml'], {}).positionals, [], 'a flag value is no stray');
});

t.test('a list set to nothing is not set: the next source, then the default, applies', async (t) => {
  const LIST: readonly OptionSpec[] = [
    {
      name: 'challenges',
      env: 'TEST_CHALLENGES',
      type: 'list',
      default: 'http-01,tls-alpn-01',
      description: 'types',
    },
  ];
  const values = (env: NodeJS.ProcessEnv, file: Record<string, unknown> = {}) =>
    parseOptions(LIST, [], env, file, 'relay.yaml').values['challenges'];
  t.same(values({}, { challenges: [] }), ['http-01', 'tls-alpn-01'], '`key: []` in the file');
  t.same(values({ TEST_CHALLENGES: ',' }), ['http-01', 'tls-alpn-01'], '`TEST_CHALLENGES=,`');
  t.same(
    values({ TEST_CHALLENGES: ', ,' }, { challenges: ['tls-alpn-01'] }),
    ['tls-alpn-01'],
    'then the file',
  );
});
