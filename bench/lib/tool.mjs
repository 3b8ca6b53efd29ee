// Runs a command-line load generator (wrk, h2load) to completion, optionally
// pinned with taskset, and collects what it printed.
import { spawn } from 'node:child_process';

/**
 * Runs `tool` with `args` (on CPUs `cpus`, when given, through taskset) and
 * resolves with its exit code and output. The tool stops by itself; a run
 * wedged past `limitSeconds` is killed.
 */
export function runTool(tool, args, { cpus, limitSeconds }) {
  const [cmd, argv] = cpus ? ['taskset', ['-c', cpus, tool, ...args]] : [tool, args];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (err += c));
    const limit = setTimeout(() => child.kill('SIGKILL'), limitSeconds * 1000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(limit);
      resolve({ code, out, err });
    });
  });
}
