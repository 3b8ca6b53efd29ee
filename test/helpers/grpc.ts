import { once } from 'node:events';
import { createRequire } from 'node:module';
import type * as Grpc from '@grpc/grpc-js';
import type { Teardownable } from './relay.js';

// grpc-js is CommonJS; its named exports load through require.
const grpc = createRequire(import.meta.url)('@grpc/grpc-js') as typeof Grpc;

export { grpc };

/** Messages are bytes as they are: no protobuf needed to see what crossed the tunnel. */
const bytes = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const method = (name: string, requestStream: boolean, responseStream: boolean) => ({
  path: `/burrow.test.Echo/${name}`,
  requestStream,
  responseStream,
  requestSerialize: bytes.serialize,
  requestDeserialize: bytes.deserialize,
  responseSerialize: bytes.serialize,
  responseDeserialize: bytes.deserialize,
});

/**
 * A test service with every kind of call: `Echo` (unary; its `x-req` metadata
 * comes back as initial metadata `x-seen`, and trailing metadata `x-trail`),
 * `Fail` (NOT_FOUND with trailing metadata), `Count` (streams N messages),
 * `Sum` (adds the numbers it is sent), `Chat` (answers each message in upper
 * case as it arrives) and `Forever` (one message, then nothing until cancelled).
 */
export const echoService = {
  echo: method('Echo', false, false),
  fail: method('Fail', false, false),
  count: method('Count', false, true),
  sum: method('Sum', true, false),
  chat: method('Chat', true, true),
  forever: method('Forever', false, true),
} satisfies Grpc.ServiceDefinition;

export type EchoClient = Grpc.Client & {
  echo: (
    req: Buffer,
    md: Grpc.Metadata,
    opts: Grpc.CallOptions,
    cb: (err: Grpc.ServiceError | null, res?: Buffer) => void,
  ) => Grpc.ClientUnaryCall;
  fail: (req: Buffer, cb: (err: Grpc.ServiceError | null, res?: Buffer) => void) => Grpc.ClientUnaryCall;
  count: (req: Buffer) => Grpc.ClientReadableStream<Buffer>;
  sum: (cb: (err: Grpc.ServiceError | null, res?: Buffer) => void) => Grpc.ClientWritableStream<Buffer>;
  chat: () => Grpc.ClientDuplexStream<Buffer, Buffer>;
  forever: (req: Buffer) => Grpc.ClientReadableStream<Buffer>;
};

/** The echo service on `host`, port 0, without TLS (h2c); `cancelled` counts Forever calls the client cancelled. */
export async function grpcServer(
  t: Teardownable,
  host = '127.0.0.1',
): Promise<{ port: number; cancelled: () => Promise<void> }> {
  const server = new grpc.Server();
  const waiting: Array<() => void> = [];
  let cancels = 0;
  server.addService(echoService, {
    echo: (call: Grpc.ServerUnaryCall<Buffer, Buffer>, cb: Grpc.sendUnaryData<Buffer>) => {
      const seen = new grpc.Metadata();
      seen.set('x-seen', String(call.metadata.get('x-req')[0] ?? ''));
      call.sendMetadata(seen);
      const trailing = new grpc.Metadata();
      trailing.set('x-trail', 'done');
      cb(null, call.request, trailing);
    },
    fail: (_call: Grpc.ServerUnaryCall<Buffer, Buffer>, cb: Grpc.sendUnaryData<Buffer>) => {
      const trailing = new grpc.Metadata();
      trailing.set('x-why', 'test');
      cb({ code: grpc.status.NOT_FOUND, details: 'no such thing', metadata: trailing });
    },
    count: (call: Grpc.ServerWritableStream<Buffer, Buffer>) => {
      const n = Number(call.request.toString());
      for (let i = 0; i < n; i++) call.write(Buffer.from(String(i)));
      call.end();
    },
    sum: (call: Grpc.ServerReadableStream<Buffer, Buffer>, cb: Grpc.sendUnaryData<Buffer>) => {
      let total = 0;
      call.on('data', (m: Buffer) => {
        total += Number(m.toString());
      });
      call.on('end', () => cb(null, Buffer.from(String(total))));
    },
    chat: (call: Grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (m: Buffer) => call.write(Buffer.from(m.toString().toUpperCase())));
      call.on('end', () => call.end());
    },
    forever: (call: Grpc.ServerWritableStream<Buffer, Buffer>) => {
      call.write(Buffer.from('first'));
      call.on('cancelled', () => {
        cancels++;
        for (const w of waiting.splice(0)) w();
      });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:0`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  t.teardown(() => server.forceShutdown());
  return {
    port,
    cancelled: () => (cancels > 0 ? Promise.resolve() : new Promise<void>((r) => waiting.push(r))),
  };
}

/**
 * A client of the echo service at 127.0.0.1:`port` for `name` (:authority, and
 * SNI): over TLS trusting `caPem`, or without TLS (h2c) when it is undefined.
 */
export function grpcClient(t: Teardownable, port: number, name: string, caPem?: string): EchoClient {
  const Client = grpc.makeGenericClientConstructor(echoService, 'Echo');
  const credentials = caPem
    ? grpc.credentials.createSsl(Buffer.from(caPem))
    : grpc.credentials.createInsecure();
  const client = new Client(`127.0.0.1:${port}`, credentials, {
    'grpc.ssl_target_name_override': name,
    'grpc.default_authority': name,
    'grpc.enable_http_proxy': 0,
  }) as unknown as EchoClient;
  t.teardown(() => client.close());
  return client;
}

/** All messages of a server stream, or its error. */
export async function collect(stream: Grpc.ClientReadableStream<Buffer>): Promise<string[]> {
  const out: string[] = [];
  stream.on('data', (m: Buffer) => out.push(m.toString()));
  await once(stream, 'end');
  return out;
}
