import t from 'tap';
import { routeForService, type ServiceLike } from '../src/kubernetes/annotations.js';
import { checkRoute } from '../src/routes/validate.js';

const base = (ann: Record<string, string>, spec: ServiceLike['spec'] = {}): ServiceLike => ({
  metadata: { name: 'web', namespace: 'shop', annotations: ann },
  spec: { type: 'ClusterIP', clusterIP: '10.0.0.7', ports: [{ name: 'http', port: 8080 }], ...spec },
});

t.test('a Service becomes a route to its ClusterIP', async (t) => {
  t.same(routeForService(base({})), { kind: 'ignored' }, 'no hostname annotation: not ours');
  t.same(routeForService(base({ 'burrow.dev/hostname': 'A.example.com, b.example.com' })), {
    kind: 'route',
    route: {
      id: 'k8s:shop/web',
      hostnames: ['a.example.com', 'b.example.com'],
      target: 'http://10.0.0.7:8080',
      protocol: 'http',
      allowCidrs: [],
    },
  });
  t.match(
    routeForService(base({ 'burrow.dev/hostname': 'A.example.com, a.example.com,b.example.com' })),
    { kind: 'route', route: { hostnames: ['a.example.com', 'b.example.com'] } },
    'a name listed twice (in any case) is announced once',
  );
  const https = routeForService(
    base(
      {
        'burrow.dev/hostname': 'a.example.com',
        'burrow.dev/protocol': 'https',
        'burrow.dev/allow-cidrs': '10.0.0.0/8, 2001:db8::/32',
      },
      { clusterIP: 'fd00::7' },
    ),
  );
  t.match(https, {
    kind: 'route',
    route: { target: 'https://[fd00::7]:8080', allowCidrs: ['10.0.0.0/8', '2001:db8::/32'] },
  });
  t.match(
    routeForService(
      base({ 'burrow.dev/hostname': 'a.example.com', 'burrow.dev/protocol': 'tls-passthrough' }),
    ),
    { kind: 'route', route: { target: 'tls-passthrough://10.0.0.7:8080', protocol: 'tls-passthrough' } },
    'tls-passthrough: the agent splices raw TCP to the ClusterIP',
  );
});

t.test("h2c: by annotation, or by the port's appProtocol kubernetes.io/h2c", async (t) => {
  const route = (ann: Record<string, string>, ports?: NonNullable<ServiceLike['spec']>['ports']) => {
    const v = routeForService(
      base({ 'burrow.dev/hostname': 'a.example.com', ...ann }, ports ? { ports } : {}),
    );
    return v.kind === 'route' ? v.route : v;
  };
  t.match(route({ 'burrow.dev/protocol': 'h2c' }), { target: 'h2c://10.0.0.7:8080', protocol: 'h2c' });
  const grpcPorts = [
    { name: 'http', port: 8080 },
    { name: 'grpc', port: 9090, appProtocol: 'kubernetes.io/h2c' },
  ];
  t.match(
    route({ 'burrow.dev/port': 'grpc' }, grpcPorts),
    { target: 'h2c://10.0.0.7:9090', protocol: 'h2c' },
    'the port to dial declares h2c: no protocol annotation needed',
  );
  t.match(
    route({}, grpcPorts),
    { target: 'http://10.0.0.7:8080', protocol: 'http' },
    'the port named http is dialled, and it declares nothing',
  );
  t.match(
    route({ 'burrow.dev/port': 'grpc', 'burrow.dev/protocol': 'http' }, grpcPorts),
    { target: 'http://10.0.0.7:9090' },
    'the annotation wins over appProtocol',
  );
  const checked = route({ 'burrow.dev/protocol': 'h2c' });
  t.equal(
    'id' in checked
      ? checkRoute({ id: checked.id, hostnames: checked.hostnames, target: checked.target })
      : 'no route',
    undefined,
    'and the route passes the checks every source applies',
  );
});

t.test('port selection: annotation by name or number, the only port, else the one named http', async (t) => {
  const ports = [
    { name: 'metrics', port: 9090 },
    { name: 'web', port: 80 },
  ];
  const target = (ann: Record<string, string>, p = ports) => {
    const v = routeForService(base({ 'burrow.dev/hostname': 'a.example.com', ...ann }, { ports: p }));
    return v.kind === 'route' ? v.route.target : v.kind === 'invalid' ? v.error : 'ignored';
  };
  t.equal(target({ 'burrow.dev/port': 'web' }), 'http://10.0.0.7:80');
  t.equal(target({ 'burrow.dev/port': '9090' }), 'http://10.0.0.7:9090');
  t.match(
    target({ 'burrow.dev/port': 'grpc' }),
    /no TCP port "grpc" \(ports: metrics \(9090\), web \(80\)\)/,
  );
  t.match(target({}), /2 ports and none is named "http"; set burrow\.dev\/port/);
  t.equal(target({}, [{ name: 'x', port: 81 }]), 'http://10.0.0.7:81');
  t.match(target({}, [{ name: 'dns', port: 53, protocol: 'UDP' } as never]), /no TCP ports/);
});

t.test('a Service being deleted is no longer exposed, though finalizers keep it', async (t) => {
  const svc = base({ 'burrow.dev/hostname': 'a.example.com' });
  t.equal(routeForService(svc).kind, 'route');
  svc.metadata = { ...svc.metadata, deletionTimestamp: '2026-11-28T02:00:00Z' };
  t.same(routeForService(svc), { kind: 'ignored' });
});

t.test('every bad value is an error for write-back, never a throw', async (t) => {
  const err = (ann: Record<string, string>, spec?: ServiceLike['spec']) => {
    const v = routeForService(base({ 'burrow.dev/hostname': 'a.example.com', ...ann }, spec));
    return v.kind === 'invalid' ? v.error : `unexpected ${v.kind}`;
  };
  t.match(err({ 'burrow.dev/hostname': ' , ' }), /is empty/);
  t.match(err({ 'burrow.dev/hostname': 'bad_name.example.com' }), /not a valid hostname/);
  t.match(err({ 'burrow.dev/hostname': '*.com' }), /too broad/);
  t.match(
    err({ 'burrow.dev/protocol': 'grpc' }),
    /"grpc" is not one of http, https, h2c, tls-passthrough \(a gRPC server without TLS is h2c; one with TLS, tls-passthrough\)/,
  );
  t.match(err({ 'burrow.dev/allow-cidrs': '10.0.0.0/99' }), /prefix length/);
  for (const empty of ['', ' ', ',', ' , ']) {
    t.match(
      err({ 'burrow.dev/allow-cidrs': empty }),
      /burrow\.dev\/allow-cidrs: names no address range/,
      `allow-cidrs ${JSON.stringify(empty)}: refused, not "allow everyone"`,
    );
  }
  const huge = err({ 'burrow.dev/hostname': `${'a'.repeat(100_000)}.example.com` });
  t.ok(
    huge.length <= 1024 && huge.endsWith('…'),
    `a 100 KB value is not written back whole (${huge.length})`,
  );
  t.match(err({}, { type: 'ExternalName', clusterIP: '' }), /ExternalName Services have no ClusterIP/);
  t.match(err({}, { clusterIP: 'None' }), /headless Service/);
});

t.test('a Service whose namespace/name is too long for a route id still gets a valid one', async (t) => {
  const ns = `n${'s'.repeat(62)}`; // 63: the longest namespace name
  const name = `s${'v'.repeat(61)}`; // 62 (63 is the longest Service name)
  const verdict = routeForService({
    metadata: { name, namespace: ns, annotations: { 'burrow.dev/hostname': 'app.example.com' } },
    spec: { type: 'ClusterIP', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] },
  });
  // A 'route' verdict is announced as is; the agent drops a route that fails checkRoute
  // ("invalid route skipped" in the log), and status-sync then writes nothing at all
  // to the Service because the relay never answers for that id.
  if (verdict.kind !== 'route') {
    t.equal(verdict.kind, 'invalid', 'reported on the Service as invalid');
    return;
  }
  t.equal(
    checkRoute({ id: verdict.route.id, hostnames: verdict.route.hostnames, target: verdict.route.target }),
    undefined,
    `a route verdict is a valid route (id is ${verdict.route.id.length} characters)`,
  );
});
