interface Teardown {
  teardown(fn: () => unknown): void;
}

/**
 * The session's timers are unref'd (they must never keep a process alive) and an
 * in-memory transport holds no handle, so a test awaiting a timer-driven event
 * (handshake or keepalive timeout) would see the process exit first. This holds
 * the event loop open until the test ends; it waits for nothing itself.
 */
export function holdEventLoop(t: Teardown): void {
  const handle = setInterval(() => {}, 2 ** 30);
  t.teardown(() => clearInterval(handle));
}
