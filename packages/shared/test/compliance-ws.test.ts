import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { WebSocket, WebSocketServer } from 'ws';
import { WsTransport } from '../src/protocol/ws-transport.js';
import { complianceSuite } from './helpers/compliance.js';

complianceSuite(t, async () => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  const sockets: WebSocket[] = [];
  const cleanup = async () => {
    for (const ws of sockets) ws.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  };
  try {
    await once(wss, 'listening');
    const { port } = wss.address() as AddressInfo;
    const accepted = once(wss, 'connection') as Promise<[WebSocket]>;
    const client = new WebSocket(`ws://127.0.0.1:${port}/tunnel`);
    sockets.push(client);
    await once(client, 'open');
    const [server] = await accepted;
    sockets.push(server);
    // Both roles: the client masks its frames (with a zero key), the server does not.
    return {
      a: new WsTransport(client),
      b: new WsTransport(server),
      cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
});
