#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { createLogger, formatHelp, parseOptions, runCli } from '@burrow/shared';
import { startAgent } from './agent.js';
import { AGENT_OPTIONS, agentOptionsFrom } from './config.js';

const USAGE = `burrow-agent — exposes services behind NAT through outbound tunnels to a Burrow relay.

Usage:
  burrow-agent --relay wss://relay.example.com:8443 --token-file agent.token \\
               --expose app.example.com=http://127.0.0.1:3000 [options]`;

const FOOTER = `Durations take a unit: 500ms, 30s, 15m. The token is read from --token-file, or else from the
environment variable named by --token-env-var; it never appears in logs.`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

await runCli('burrow-agent', async () => {
  const { values } = parseOptions(AGENT_OPTIONS, process.argv.slice(2));
  if (values['help']) return void process.stdout.write(formatHelp(USAGE, AGENT_OPTIONS, FOOTER));
  if (values['version']) return void process.stdout.write(`burrow-agent ${version()}\n`);
  const { options, logLevel } = await agentOptionsFrom(values);
  const logger = createLogger({ name: 'burrow-agent', level: logLevel });
  const agent = startAgent({ ...options, logger });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      // A second signal: the operator does not want to wait for the drain.
      logger.warn({ signal }, 'second signal: exiting without waiting for in-flight requests');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    agent.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
});
