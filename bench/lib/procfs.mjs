// Per-process figures from Linux /proc for processes that cannot report on
// themselves over IPC (sshd, ssh): descendants, resident memory, CPU time.
// Also how to start such a process so that it dies with this one.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/**
 * A command prefix under which a native program (sshd, ssh, haproxy) is
 * killed by the kernel when this process dies, however it dies (SIGKILL,
 * a scenario's time limit): util-linux `setpriv --pdeathsig KILL`, which
 * execs the program in place, so its pid is the one spawned. Empty where
 * setpriv is missing.
 */
export const DIE_WITH_PARENT =
  spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status === 0
    ? ['setpriv', '--pdeathsig', 'KILL']
    : [];

/** Process ids of every descendant of `pid` (Linux /proc). */
export function descendants(pid) {
  const parents = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // The command name may hold spaces and parentheses; fields resume after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parents.set(Number(name), ppid);
    } catch {
      // exited meanwhile
    }
  }
  const out = [];
  const walk = (p) => {
    for (const [child, parent] of parents) {
      if (parent === p) {
        out.push(child);
        walk(child);
      }
    }
  };
  walk(pid);
  return out;
}

/** Resident set size of a process in bytes (VmRSS in /proc/PID/status); 0 when gone. */
export function rssOf(pid) {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * Runs `work()` and resolves with its result and the CPU time, in ms, that
 * each of `pids` spent meanwhile (in the order given).
 */
export async function cpuDuring(pids, work) {
  const before = pids.map((pid) => cpuMs([pid]));
  const result = await work();
  return { result, ms: pids.map((pid, i) => cpuMs([pid]) - before[i]) };
}

/** CPU time (user + system) of `pids` so far, in ms; processes gone are left out. */
export function cpuMs(pids) {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // Fields 14 and 15 of stat (utime, stime), counted from the state field (3).
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // exited meanwhile
    }
  }
  return ticks * 10; // USER_HZ is 100 on Linux
}
