// A log collector that goes away (stdout becomes a broken pipe) must not keep
// the relay or the agent from stopping: SIGTERM still drains and exits.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { within } from '../helpers/deferred.js';
import { tempDir } from '../helpers/fs.js';
import { AGENT_CLI, LOOPBACK_SERVE, RELAY_CLI } from '../helpers/proc.js';
import { tokenFor } from '../helpers/relay.js';

const run = promisify(execFile);

/**
 * Starts `args` as a plain node process (without the test runner's hooks, so
 * it handles signals as in production), waits for the log line `msg` (its
 * signal handlers are set by then), then closes the read end of its stdout.
 */
async function withBrokenStdout(
  t: { teardown(fn: () => unknown): void },
  args: string[],
  msg: string,
): Promise<ChildProcess> {
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'ignore'],
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let seen = '';
  const ready = new Promise<void>((resolve) =>
    child.stdout!.on('data', (d: Buffer) => {
      seen += d.toString();
      if (seen.includes(`"msg":"${msg}"`)) resolve();
    }),
  );
  await within(20_000, ready, `the log line "${msg}"`);
  child.stdout!.destroy();
  return child;
}

async function stopsOnSigterm(t: Test, child: ChildProcess) {
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  child.kill('SIGTERM');
  const [code] = await within(10_000, exited, 'exit after SIGTERM with a broken stdout');
  t.equal(code, 0, 'a clean drain');
}

t.test('the agent exits on SIGTERM after its stdout pipe broke', async (t) => {
  const dir = await tempDir(t, 'burrow-pipe-');
  await writeFile(join(dir, 'token'), `${await tokenFor('pipe', ['*.example.com'])}\n`, { mode: 0o600 });
  // No relay listens on port 1: the agent keeps retrying, and logs each attempt.
  const child = await withBrokenStdout(
    t,
    [
      AGENT_CLI,
      '--relay',
      'ws://127.0.0.1:1',
      '--token-file',
      join(dir, 'token'),
      '--expose',
      'app.example.com=http://127.0.0.1:9',
    ],
    'tunnel connect failed; retrying',
  );
  await stopsOnSigterm(t, child);
});

t.test('the relay exits on SIGTERM after its stdout pipe broke', async (t) => {
  const dir = await tempDir(t, 'burrow-pipe-');
  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', join(dir, 'keys')]);
  const child = await withBrokenStdout(
    t,
    [
      RELAY_CLI,
      'serve',
      '--verify-key',
      join(dir, 'keys'),
      ...LOOPBACK_SERVE,
      '--admin-listen',
      '127.0.0.1:0',
    ],
    'relay listening',
  );
  await stopsOnSigterm(t, child);
});
