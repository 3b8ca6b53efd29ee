// A background bulk download in its own process, for bench/head-of-line.mjs
// and bench/head-of-line-link.mjs.
// Reading a transfer at hundreds of MB/s keeps an event loop busy with 'data'
// callbacks; in the process that also times small requests it would delay
// their timers and responses, and the figures would measure the client. Here
// the kernel time-slices two processes instead.
//
// Messages: parent → { type: 'start', port, size, limitMs, host?, hostname? }, { type: 'stop' };
// child → { type: 'started' } (first bytes arrived), { type: 'stopped', bytes, mbps }.
// The child exits when the IPC channel closes.
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { bulkLoop } from './load.mjs';

const here = fileURLToPath(import.meta.url);

/**
 * Starts a child downloading `size`-byte bodies back to back from `port`;
 * resolves once bytes flow, with `stop()` → { bytes, mbps }. `host` and
 * `hostname` (the Host header) default to the loopback stack's (bulkLoop).
 */
export async function startBulkClient(port, size, limitMs, { host, hostname } = {}) {
  const child = fork(here, ['--child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const reply = (type) =>
    new Promise((resolve, reject) => {
      const onMessage = (msg) => {
        if (msg.type !== type) return;
        child.off('message', onMessage);
        child.off('exit', onExit);
        resolve(msg);
      };
      const onExit = (code) => reject(new Error(`bulk client exited (${code}) before '${type}'`));
      child.on('message', onMessage);
      child.on('exit', onExit);
    });
  const started = reply('started');
  child.send({ type: 'start', port, size, limitMs, host, hostname });
  await started;
  return {
    async stop() {
      const stopped = reply('stopped');
      child.send({ type: 'stop' });
      const r = await stopped;
      const exited = once(child, 'exit');
      child.disconnect();
      await exited;
      return r;
    },
  };
}

if (process.argv[2] === '--child') {
  let loop;
  process.on('message', (msg) => {
    if (msg.type === 'start') {
      loop = bulkLoop(msg.port, msg.size, msg.limitMs, { host: msg.host, hostname: msg.hostname });
      loop.started.then(() => process.send({ type: 'started' }));
    } else if (msg.type === 'stop') {
      process.send({ type: 'stopped', ...loop.stop() });
    }
  });
  process.on('disconnect', () => process.exit(0));
}
