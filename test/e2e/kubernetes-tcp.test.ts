// Services exposed on the relay's public TCP ports by `burrow.dev/tcp-port`:
// the fake API server with the real client-node, a real relay and agent, and
// TCP backends on the Services' "ClusterIPs" (127.0.0.x addresses).
import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import t from 'tap';
import { fakeKube, kubeAgent, kubeService, untilKube } from '../helpers/fake-kube.js';
import { freePort } from '../helpers/net.js';
import { type Teardownable, testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';

/** A Service with one port, named `db`. */
function service(name: string, clusterIP: string, port: number, annotations: Record<string, string>) {
  return kubeService(name, clusterIP, port, annotations, { portName: 'db' });
}

/** A TCP backend on `host` that answers each line with `name: LINE`. */
async function lineServer(t: Teardownable, host: string, name: string): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.setEncoding('utf8');
    s.on('data', (text: string) => s.write(`${name}: ${text}`));
  });
  server.listen(0, host);
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as AddressInfo).port;
}

async function ask(port: number, line: string): Promise<string> {
  const s = connect(port, '127.0.0.1');
  s.setEncoding('utf8');
  await once(s, 'connect');
  s.write(line);
  const [answer] = (await once(s, 'data')) as [string];
  s.destroy();
  return answer;
}

t.test(
  'burrow.dev/tcp-port: reachable on the port, URL written back, conflicts and mistakes reported',
  async (t) => {
    const [pgPort, other] = [await freePort(), await freePort()];
    const relay = await testRelay(t, { tcp: { host: '127.0.0.1', ports: [pgPort, other] } });
    const kube = await fakeKube(t);
    const pg = await lineServer(t, '127.0.0.2', 'pg');
    const copy = await lineServer(t, '127.0.0.3', 'copy');
    kube.upsertService(service('pg', '127.0.0.2', pg, { 'burrow.dev/tcp-port': String(pgPort) }));
    // Sorts after default/pg: the port stays pg's, on every replica.
    kube.upsertService(service('pg-copy', '127.0.0.3', copy, { 'burrow.dev/tcp-port': String(pgPort) }));
    kube.upsertService(
      service('both', '127.0.0.4', 5432, {
        'burrow.dev/tcp-port': String(other),
        'burrow.dev/hostname': 'b.example.com',
      }),
    );
    kube.upsertService(service('typo', '127.0.0.5', 5432, { 'burrow.dev/tcp-port': 'postgres' }));
    kube.upsertService(
      service('wrong-protocol', '127.0.0.6', 5432, {
        'burrow.dev/tcp-port': String(other),
        'burrow.dev/protocol': 'http',
      }),
    );

    await kubeAgent(t, kube, tunnelUrl(relay), {
      token: await tokenFor('cluster-1', ['*.example.com'], undefined, [pgPort, other]),
      holds: true,
    });

    const annotation = (name: string, key: string) =>
      kube.getService('default', name)?.metadata.annotations?.[key];
    const url = await untilKube(kube, () => annotation('pg', 'burrow.dev/url'));
    t.equal(url, `tcp://127.0.0.1:${pgPort}`, "the URL names the relay's host (from --relay) and the port");
    t.equal(await ask(pgPort, 'select 1\n'), 'pg: select 1\n', 'the port reaches the Service');
    const exposed = await untilKube(kube, () =>
      kube.events().find((e) => e.reason === 'Exposed' && e.involvedObject.name === 'pg'),
    );
    t.match(exposed.message, new RegExp(`exposed at tcp://127\\.0\\.0\\.1:${pgPort}`));

    t.match(
      await untilKube(kube, () => annotation('pg-copy', 'burrow.dev/error')),
      new RegExp(`port ${pgPort} is already in route "k8s:default/pg"`),
      'the second Service asking for the port is told which one has it',
    );
    t.match(await untilKube(kube, () => annotation('both', 'burrow.dev/error')), /exclude each other/);
    t.match(
      await untilKube(kube, () => annotation('typo', 'burrow.dev/error')),
      /burrow\.dev\/tcp-port: "postgres" is not a port number \(1 to 65535\) of the relay/,
    );
    t.match(
      await untilKube(kube, () => annotation('wrong-protocol', 'burrow.dev/error')),
      /carries bytes as they are; remove "http"/,
    );

    // A Service created later cannot take the port, whatever its name sorts as: clients of a
    // database must not be sent to whoever adds a Service asking for its port.
    const newcomer = await lineServer(t, '127.0.0.7', 'newcomer');
    kube.upsertService(service('aaa', '127.0.0.7', newcomer, { 'burrow.dev/tcp-port': String(pgPort) }));
    t.match(
      await untilKube(kube, () => annotation('aaa', 'burrow.dev/error')),
      new RegExp(`port ${pgPort} is already in route "k8s:default/pg"`),
    );
    t.equal(
      await ask(pgPort, 'select 3\n'),
      'pg: select 3\n',
      'the port still reaches the Service that had it',
    );
    t.match(
      annotation('pg', 'burrow.dev/holds'),
      new RegExp(`^tcp:${pgPort};\\d+;`),
      'the holder records the port, so every replica keeps it there',
    );
    kube.deleteService('default', 'aaa');

    // The first one goes: the copy takes the port over.
    kube.deleteService('default', 'pg');
    await untilKube(kube, () => annotation('pg-copy', 'burrow.dev/url'));
    t.notOk(annotation('pg-copy', 'burrow.dev/error'), 'its error is cleared');
    t.equal(await ask(pgPort, 'select 2\n'), 'copy: select 2\n', 'the port now reaches the other Service');
  },
);
