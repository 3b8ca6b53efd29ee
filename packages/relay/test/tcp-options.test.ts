// --tcp-ports, --tcp-host and --tcp-public-host of `burrow-relay serve`, from
// flags, the environment and a config file.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSigningKeyPair, parseOptions } from '@burrow/shared';
import t from 'tap';
import { tempDir } from '../../../test/helpers/fs.js';
import { parsePortList, readConfigFile, relayOptionsFrom, SERVE_OPTIONS } from '../src/config.js';
import { describePorts } from '../src/routes/ports.js';

async function tcpFor(
  t: Parameters<typeof tempDir>[0],
  argv: string[],
  env: NodeJS.ProcessEnv = {},
  file: Record<string, unknown> = {},
) {
  const dir = await tempDir(t, 'burrow-relay-tcp-');
  await writeFile(join(dir, 'signing.pub'), (await generateSigningKeyPair()).publicPem);
  const { values } = parseOptions(SERVE_OPTIONS, ['--verify-key', dir, ...argv], env, file, 'relay.yaml');
  return (await relayOptionsFrom(values)).options.tcp;
}

t.test('--tcp-ports: ports and ranges, sorted, each once', async (t) => {
  t.same(
    parsePortList(['5432', '10000-10003', '5432', ' 22 '], '--tcp-ports'),
    [22, 5432, 10000, 10001, 10002, 10003],
  );
  t.same(parsePortList([], '--tcp-ports'), []);
  const bad: Array<[string[], RegExp]> = [
    [['0'], /--tcp-ports: "0" is not a port \(1 to 65535\) or a range FROM-TO of them/],
    [['65536'], /"65536" is not a port/],
    [['0x1bb'], /"0x1bb" is not a port/],
    [['1e3'], /"1e3" is not a port/],
    [['10-5'], /"10-5" is not a port/],
    [['10-'], /"10-" is not a port/],
    [['-10'], /"-10" is not a port/],
    [['http'], /"http" is not a port/],
    [['1-2000'], /--tcp-ports: more than 1024 ports; list fewer/],
  ];
  for (const [items, message] of bad) {
    t.throws(
      () => parsePortList(items, '--tcp-ports'),
      { code: 'BURROW_ERR_CONFIG', message },
      items.join(','),
    );
  }
});

t.test('the TCP options from flags, environment and file', async (t) => {
  t.equal(await tcpFor(t, []), undefined, 'no TCP ports unless asked for');
  t.same(await tcpFor(t, ['--tcp-ports', '5432,6000-6001']), { host: '0.0.0.0', ports: [5432, 6000, 6001] });
  t.same(
    await tcpFor(t, [], {
      BURROW_TCP_PORTS: '7000',
      BURROW_TCP_HOST: '127.0.0.1',
      BURROW_TCP_PUBLIC_HOST: 'relay.example.com',
    }),
    { host: '127.0.0.1', ports: [7000], publicHost: 'relay.example.com' },
  );
  // A YAML list holds numbers and ranges, as the example in docs/configuration.md does.
  const dir = await tempDir(t, 'burrow-relay-tcp-file-');
  const file = join(dir, 'relay.yaml');
  await writeFile(file, 'tcp-ports: [5432, 10000-10002]\n');
  t.same((await tcpFor(t, [], {}, await readConfigFile(file)))?.ports, [5432, 10000, 10001, 10002]);
  await t.rejects(tcpFor(t, ['--tcp-ports', 'ssh']), { message: /--tcp-ports: "ssh" is not a port/ });
  const publicHost = async (value: string) =>
    tcpFor(t, ['--tcp-ports', '22', '--tcp-public-host', value]).then(
      (tcp) => tcp?.publicHost,
      (err: Error) => err.message,
    );
  t.equal(await publicHost(' Relay.Example.com '), 'relay.example.com');
  t.equal(await publicHost('[2001:db8::1]'), '2001:db8::1', 'brackets are not doubled in the URL later');
  t.equal(await publicHost('203.0.113.9'), '203.0.113.9');
  for (const bad of ['relay.example.com:443', 'tcp://relay.example.com', 'a'.repeat(300), 'relay example']) {
    t.match(
      await publicHost(bad),
      /^--tcp-public-host must be the relay's public host name or IP address, without a port/,
      bad,
    );
  }
  await t.rejects(tcpFor(t, ['--tcp-ports', '22', '--tcp-host', ' ']), {
    message: /--tcp-host must name an address/,
  });
  // Refused without --tcp-ports too: a mistake is found at once, not when the option first counts.
  await t.rejects(tcpFor(t, ['--tcp-public-host', 'not a host!']), { message: /^--tcp-public-host must be/ });
  await t.rejects(tcpFor(t, ['--tcp-host', '']), { message: /--tcp-host must name an address/ });
});

t.test('ports in messages read as ranges', async (t) => {
  t.equal(describePorts([]), 'none');
  t.equal(describePorts([22, 5432, 5433, 5434, 8000]), '22, 5432-5434, 8000');
  t.equal(
    describePorts([1, 3, 5, 7, 9, 11, 13, 15, 17, 19]),
    '1, 3, 5, 7, 9, 11, 13, 15 and 2 more ranges',
    'a long list is cut',
  );
});
