// What every end-to-end scenario shares: the common environment knobs, the
// whole-benchmark time limit, starting the three paths (direct, burrow through
// relay + agent, ssh -R) against one backend, CPU placement, alternating runs
// and the target lines. A scenario script reads like: setup, measure, report.
import { appendFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { cpuDuring } from './procfs.mjs';
import { envInt, envList, fmt, median, printTable } from './report.mjs';
import { freePort, sshUnavailable, startSshTunnel } from './ssh.mjs';
import { makeToken, pin, pinLoadGenerator, startStack } from './stack-control.mjs';

export const ALL_SIDES = ['direct', 'burrow', 'ssh'];

/** BENCH_SMOKE=1: every scenario with tiny sizes and one short run, to check the suite still works. */
export const SMOKE = process.env.BENCH_SMOKE === '1';

/** Picks the smoke value in smoke mode, else the full one. */
export const sized = (full, smoke) => (SMOKE ? smoke : full);

/** Knobs every scenario understands (see docs/performance.md). */
export function commonConfig(defaultTimeout) {
  return {
    runs: envInt('BENCH_RUNS', sized(3, 1), 1),
    sides: envList('BENCH_SIDES', ALL_SIDES, ALL_SIDES),
    pin: envList('BENCH_PIN', ['1'], ['0', '1'])[0] === '1',
    timeout: envInt('BENCH_TIMEOUT', sized(defaultTimeout, 120), 1),
    profDir: process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined,
  };
}

/** Loads the built packages, or exits with one line saying how to build them. */
export async function loadShared() {
  try {
    const shared = await import('@burrow/shared');
    await import('@burrow/relay');
    await import('@burrow/agent');
    return shared;
  } catch (err) {
    console.error(`cannot load the Burrow packages (run pnpm install and npx tsc -b): ${err.message}`);
    process.exit(1);
  }
}

const cleanups = [];
/**
 * Ends the process after `seconds` whatever happens (bounded benchmarks), and
 * on any exit kills what the scenario started: forked stack processes exit by
 * themselves when their IPC channel closes, sshd and ssh are killed here.
 */
export function timeLimit(seconds, name) {
  const limit = setTimeout(() => {
    console.error(`${name} exceeded BENCH_TIMEOUT=${seconds} s; giving up`);
    process.exit(1);
  }, seconds * 1000);
  limit.unref();
  process.once('exit', () => {
    for (const c of cleanups) c();
  });
}

/**
 * Starts the backend, relay and agent (bench/lib/stack.mjs, topology `apart`
 * unless given) and, when `ssh` is among the sides, an ssh -R tunnel to the
 * same backend. With BENCH_PIN=1 and 2+ CPUs, this process (the load
 * generator) runs on CPU 0 and everything under test on the other CPUs.
 * Returns the port of each side and the handles.
 */
export async function setupPaths(shared, cfg, stackOptions = {}) {
  const { cpuCount, pinned, stackCpus } = pinLoadGenerator(cfg.pin);
  // `raw`: the paths carry raw TCP (bench/tcp.mjs) to the backend's TCP server, through a public
  // TCP port of the relay, instead of HTTP. `h2c`: HTTP/2 without TLS (bench/grpc.mjs) to the
  // backend's HTTP/2 server, through the relay's plain HTTP port.
  const { raw, ...rest } = stackOptions;
  const h2c = rest.h2c === true;
  const tcpPort = raw ? await freePort() : undefined;
  const { token, verifyPem } = await makeToken(shared, tcpPort ? [tcpPort] : []);
  const stack = await startStack({
    topology: 'apart',
    ...rest,
    ...(tcpPort ? { tcpPort } : {}),
    token,
    verifyPem,
    profDir: cfg.profDir,
    cpus: pinned ? stackCpus : undefined,
  });
  cleanups.push(() => {
    for (const p of stack.processes) p.proc.kill('SIGKILL');
  });
  let ssh;
  if (cfg.sides.includes('ssh')) {
    const why = sshUnavailable();
    if (why) {
      console.error(`ssh comparison left out: ${why}`);
      cfg.sides = cfg.sides.filter((s) => s !== 'ssh');
    } else {
      ssh = await startSshTunnel(raw ? stack.tcpBackendPort : h2c ? stack.h2cBackendPort : stack.backendPort);
      cleanups.push(() => ssh.kill());
      if (pinned) for (const pid of ssh.pids()) pin(pid, stackCpus, true);
    }
  }
  const direct = raw ? stack.tcpBackendPort : h2c ? stack.h2cBackendPort : stack.backendPort;
  const ports = { direct, burrow: raw ? stack.relayTcpPort : stack.relayHttpPort, ssh: ssh?.port };
  const placement = pinned
    ? `load generator on CPU 0; relay, agent, backend, sshd and ssh on CPU ${stackCpus} (taskset)`
    : `not pinned (${cpuCount} CPUs, the scheduler places processes)`;
  const pidOf = (role) => stack.holder(role).pid;
  return {
    ports,
    stack,
    ssh,
    /** The processes doing a side's work besides the load generator (for cpuMs, rssOf). */
    pids: (side) =>
      side === 'direct'
        ? [pidOf('backend')]
        : side === 'burrow'
          ? [...new Set([pidOf('relay'), pidOf('agent'), pidOf('backend')])]
          : [...ssh.pids(), pidOf('backend')],
    pinned,
    loadgenCpus: pinned ? '0' : undefined,
    stackCpus,
    /** One line saying what runs where, printed at the top of each scenario. */
    describe: () =>
      `node ${process.version}; processes: ${stack.describe()} | load generator; ` +
      `agent with ${stack.connections} tunnel connection${stack.connections === 1 ? '' : 's'}; ${placement}` +
      (ssh ? `; ssh -R cipher ${ssh.cipher}` : ''),
    async close() {
      await stack.stop();
      await ssh?.close();
    },
  };
}

/**
 * The opening every end-to-end scenario shares once its knobs are read and its
 * time limit set: loads the packages, starts the paths (setupPaths) and prints
 * `${banner}: ` and what runs where. Returns the paths.
 */
export async function startPaths(cfg, banner, stackOptions) {
  const shared = await loadShared();
  const paths = await setupPaths(shared, cfg, stackOptions);
  console.log(`${banner}: ${paths.describe()}`);
  return paths;
}

/** Stops the paths and ends the process with success. */
export async function finish(paths) {
  await paths.close();
  process.exit(0);
}

/**
 * Runs `measure(side)` `runs` times per side, alternating the sides run by
 * run (direct, burrow, ssh, direct, …) so slow drifts of a shared machine hit
 * all of them alike. `measure` returns an object whose `line()` is printed.
 */
export async function alternate(cfg, label, measure, warm) {
  const results = Object.fromEntries(cfg.sides.map((s) => [s, []]));
  const width = Math.max(6, ...cfg.sides.map((s) => s.length));
  for (let i = 0; i < cfg.runs; i++) {
    for (const side of cfg.sides) {
      if (warm) await warm(side);
      const r = await measure(side);
      results[side].push(r);
      console.log(`  ${label} run ${i + 1}  ${side.padEnd(width)} ${r.line()}`);
    }
  }
  return results;
}

/** Median of `key` over a side's runs (NaN for a side not run). */
export const pick = (runs, key) => median((runs ?? []).map((r) => r[key]));

/**
 * Per side of `sides`: the median of each of `keys` over the side's runs, and
 * `errors` summed over them (0 for a side not run).
 */
export const medians = (results, sides, keys) =>
  Object.fromEntries(
    sides.map((side) => [
      side,
      {
        ...Object.fromEntries(keys.map((key) => [key, pick(results[side], key)])),
        errors: (results[side] ?? []).reduce((a, r) => a + r.errors, 0),
      },
    ]),
  );

/** "123 %" of b, or "-" when either is missing. */
export const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? fmt.pct(a / b) : '-');

/**
 * Prints one target line and appends it to BENCH_TARGETS_FILE (bench/run.mjs
 * prints them all together at the end). `met` undefined: not measured.
 */
export function reportTarget(target, met, detail) {
  const verdict = met === undefined ? 'not measured' : met ? 'met' : 'NOT met';
  const line = `${target}: ${verdict} (${detail})`;
  console.log(`  ${line}`);
  if (process.env.BENCH_TARGETS_FILE) appendFileSync(process.env.BENCH_TARGETS_FILE, `${line}\n`);
}

/**
 * One head-of-line run on a side: `small(seconds)` paced small requests on
 * the idle path, then again `settleMs` after `startBulk()` began downloads on
 * it (a started bulk client, see bulk-client.mjs). Returns the run's figures
 * for alternate() and reportHeadOfLine().
 */
export async function headOfLineRun({ small, startBulk, duration, settleMs, mbps = fmt.int }) {
  const idle = await small(duration);
  const bulk = await startBulk();
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  const loaded = await small(duration);
  const transfer = await bulk.stop();
  const r = {
    idleP50: idle.scheduled.percentile(0.5),
    idleP99: idle.scheduled.percentile(0.99),
    loadedP50: loaded.scheduled.percentile(0.5),
    loadedP99: loaded.scheduled.percentile(0.99),
    mbps: transfer.mbps,
    errors: idle.errors + idle.non2xx + loaded.errors + loaded.non2xx,
  };
  r.factor = r.loadedP99 / r.idleP99;
  r.line = () =>
    `idle p50 ${fmt.ms(r.idleP50)} p99 ${fmt.ms(r.idleP99)} ms; under bulk (${mbps(r.mbps)} MB/s) ` +
    `p50 ${fmt.ms(r.loadedP50)} p99 ${fmt.ms(r.loadedP99)} ms: ${r.factor.toFixed(1)}x` +
    (r.errors ? `  ${r.errors} errors` : '');
  return r;
}

/**
 * The head-of-line table (medians of each side's runs) and its target line,
 * shared by bench/head-of-line.mjs and bench/head-of-line-link.mjs. Each run
 * result holds idleP50, idleP99, loadedP50, loadedP99, factor (loaded p99 /
 * idle p99), mbps and errors.
 */
export function reportHeadOfLine(cfg, res, { title, target, mbps = fmt.int }) {
  console.log(
    `\n${title} (median of ${cfg.runs} run${cfg.runs === 1 ? '' : 's'}; ms from each request's due time):`,
  );
  const m = {};
  printTable(
    ['path', 'idle p50', 'idle p99', 'bulk MB/s', 'loaded p50', 'loaded p99', 'p99 loaded/idle', 'errors'],
    cfg.sides.map((side) => {
      const runs = res[side];
      m[side] = {
        idleP99: pick(runs, 'idleP99'),
        loadedP99: pick(runs, 'loadedP99'),
        factor: pick(runs, 'factor'),
      };
      return [
        side,
        fmt.ms(pick(runs, 'idleP50')),
        fmt.ms(m[side].idleP99),
        mbps(pick(runs, 'mbps')),
        fmt.ms(pick(runs, 'loadedP50')),
        fmt.ms(m[side].loadedP99),
        `${m[side].factor.toFixed(1)}x`,
        String(runs.reduce((a, r) => a + r.errors, 0)),
      ];
    }),
  );
  console.log('\ntargets:');
  const b = m.burrow;
  reportTarget(
    target,
    b && Number.isFinite(b.factor) ? b.factor <= 2 : undefined,
    b
      ? `${fmt.ms(b.loadedP99)} vs ${fmt.ms(b.idleP99)} ms = ${b.factor.toFixed(1)}x (median of per-run ratios)` +
          (m.ssh ? `; ssh -R ${m.ssh.factor.toFixed(1)}x, direct ${m.direct?.factor.toFixed(1) ?? '-'}x` : '')
      : 'burrow not among BENCH_SIDES',
  );
}

/**
 * The bulk measurement of bench/bulk.mjs and bench/tcp.mjs: for each of
 * `directions`, `cfg.bytes` over one stream and then over `cfg.parallel`
 * (`move(direction, port, bytes, parallel)` resolves with MB/s), an unrecorded
 * warm-up on every path first, then the paths taking turns, each run's line
 * with the CPU time per MB of every process under test. Returns, per
 * transfer, its label, how many streams, and the median MB/s of each side.
 */
export async function bulkRuns(cfg, paths, directions, move, unit = 'stream') {
  const out = [];
  const warmBytes = Math.min(cfg.bytes, sized(32 * 1024 * 1024, 1024 * 1024));
  for (const direction of directions) {
    for (const parallel of [1, cfg.parallel]) {
      const label = `${direction} ×${parallel}`;
      console.log(
        `\n[${label}] ${fmt.bytes(cfg.bytes)} over ${parallel} ${unit}${parallel === 1 ? '' : 's'}`,
      );
      for (const side of cfg.sides) await move(direction, paths.ports[side], warmBytes, parallel);
      const res = await alternate(cfg, label, async (side) => {
        // CPU time of each process under test per MB moved: what a path costs,
        // less sensitive than MB/s to what else the machine is running.
        const { result: mbps, ms } = await cpuDuring(paths.pids(side), () =>
          move(direction, paths.ports[side], cfg.bytes, parallel),
        );
        const perMB = ms.map((used) => (used * 1000) / (cfg.bytes / 1e6));
        const r = { mbps };
        r.line = () =>
          `${fmt.int(r.mbps).padStart(6)} MB/s  µs/MB ${perMB.map((us) => us.toFixed(0)).join(' | ')}`;
        return r;
      });
      const m = Object.fromEntries(ALL_SIDES.map((side) => [side, pick(res[side], 'mbps')]));
      out.push({ label, direction, parallel, m });
    }
  }
  return out;
}
