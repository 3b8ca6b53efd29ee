// The fast path's HTTP/1.1 reading: which request heads it carries (and how it
// rewrites them), how it reads response heads, and where chunked bodies end.
import t from 'tap';
import {
  ChunkedEnd,
  HeadBytes,
  INCOMPLETE,
  OTHER,
  parseRequestHead,
  parseResponseHead,
  type RequestHead,
  type ResponseHead,
} from '../src/proxy/http1-parse.js';

const MAX_HEAD = 16 * 1024;
const MAX_FIELDS = 500;

const req = (text: string) => parseRequestHead(Buffer.from(text, 'latin1'), MAX_HEAD, MAX_FIELDS);
const res = (text: string, method = 'GET') =>
  parseResponseHead(Buffer.from(text, 'latin1'), method, 256 * 1024);

t.test(
  'a plain request is carried: Host routes it, hop-by-hop and forwarding fields stay behind',
  async (t) => {
    const text =
      'GET /a/b?c=d HTTP/1.1\r\nHost: App.Example.com:8080\r\nAccept: */*\r\nConnection: keep-alive\r\n' +
      'Keep-Alive: timeout=5\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nTE: trailers\r\n' +
      'Proxy-Authorization: Basic eA==\r\nContent-Length: 0\r\nX-Custom: v\r\n\r\nNEXT';
    const head = req(text) as RequestHead;
    t.equal(head.method, 'GET');
    t.equal(head.target, '/a/b?c=d');
    t.equal(head.host, 'app.example.com', 'routed by the normalised name');
    t.equal(head.hostField, 'App.Example.com:8080', 'the backend gets Host as sent');
    t.equal(head.length, 0);
    t.equal(head.close, false);
    t.equal(head.fields, 'Accept: */*\r\nContent-Length: 0\r\nX-Custom: v\r\n');
    t.equal(text.slice(head.end), 'NEXT', 'end points past the blank line');
  },
);

t.test('Connection: close is noted; a body length is read', async (t) => {
  const head = req(
    'POST /u HTTP/1.1\r\nhost: a.test\r\nconnection: Close\r\ncontent-length: 42\r\n\r\n',
  ) as RequestHead;
  t.equal(head.close, true);
  t.equal(head.length, 42);
  t.equal(head.expectContinue, false);
});

t.test('Expect: 100-continue is noted for the relay to answer, and not passed on', async (t) => {
  const text = 'PUT /f HTTP/1.1\r\nHost: a.test\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n';
  const head = req(text) as RequestHead;
  t.equal(head.expectContinue, true);
  t.equal(head.fields, 'Content-Length: 5\r\n');
});

t.test('a head cut short is incomplete until it exceeds the limit', async (t) => {
  t.equal(req('GET / HTTP/1.1\r\nHost: a.test\r\n'), INCOMPLETE);
  t.not(
    req(`GET / HTTP/1.1\r\nHost: a.test\r\n${'X: a\r\n'.repeat(MAX_FIELDS - 2)}\r\n`),
    OTHER,
    'fewer fields',
  );
  t.equal(parseRequestHead(Buffer.alloc(MAX_HEAD + 1, 'A'), MAX_HEAD, MAX_FIELDS), OTHER);
  // What cannot start a request the fast path carries is not waited on.
  t.equal(parseRequestHead(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]), MAX_HEAD, MAX_FIELDS), OTHER, 'TLS');
  t.equal(req('\r\nGET / HTTP/1.1\r\n'), OTHER, 'an empty line first');
  t.equal(req(`GET / HTTP/1.1\r\nHost: a.test\r\nX: ${'v'.repeat(MAX_HEAD)}\r\n\r\n`), OTHER);
});

t.test('everything outside the narrow shape goes to the general path', async (t) => {
  const cases: Record<string, string> = {
    'HTTP/1.0': 'GET / HTTP/1.0\r\nHost: a.test\r\n\r\n',
    CONNECT: 'CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n',
    TRACE: 'TRACE / HTTP/1.1\r\nHost: a.test\r\n\r\n',
    'lower-case method': 'get / HTTP/1.1\r\nHost: a.test\r\n\r\n',
    'absolute form': 'GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n',
    'asterisk form': 'OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n',
    'no Host': 'GET / HTTP/1.1\r\nAccept: */*\r\n\r\n',
    'two Hosts': 'GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n',
    'a Host that is not a name': 'GET / HTTP/1.1\r\nHost: evil.test/.a.test\r\n\r\n',
    'chunked upload': 'POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n',
    'two lengths': 'POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n',
    'a length that is not digits': 'POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: +1\r\n\r\n',
    Upgrade: 'GET / HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
    'an Expect other than 100-continue': 'PUT / HTTP/1.1\r\nHost: a.test\r\nExpect: 200-ok\r\n\r\n',
    'Expect twice': 'PUT / HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\n',
    'Connection naming a field': 'GET / HTTP/1.1\r\nHost: a.test\r\nConnection: x-secret\r\n\r\n',
    'obs-fold': 'GET / HTTP/1.1\r\nHost: a.test\r\nX: a\r\n b\r\n\r\n',
    'space before the colon': 'GET / HTTP/1.1\r\nHost: a.test\r\nX : a\r\n\r\n',
    'bare LF inside': 'GET / HTTP/1.1\r\nHost: a.test\nX: a\r\n\r\n',
    'NUL in a value': 'GET / HTTP/1.1\r\nHost: a.test\r\nX: a\0b\r\n\r\n',
    // Node's parser answers these 400 at once; the fast path would wait for a CRLF CRLF never coming.
    'lines ended by LF alone': 'GET / HTTP/1.1\nHost: a.test\n\n',
    'a head ended after a bare LF': 'GET / HTTP/1.1\r\nHost: a.test\n\r\n',
    // As many fields as Node keeps at most: a 431 there, as more would be.
    'the most fields': `GET / HTTP/1.1\r\nHost: a.test\r\n${'X: a\r\n'.repeat(MAX_FIELDS - 1)}\r\n`,
    'space in the target': 'GET /a b HTTP/1.1\r\nHost: a.test\r\n\r\n',
  };
  for (const [what, text] of Object.entries(cases)) t.equal(req(text), OTHER, what);
});

t.test('a response head: status line rewritten to HTTP/1.1, hop-by-hop fields removed', async (t) => {
  const head = res(
    'HTTP/1.1 200 Fine\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n' +
      'Keep-Alive: timeout=5\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello',
  ) as ResponseHead;
  t.equal(head.status, 200);
  t.equal(head.framing, 'length');
  t.equal(head.length, 5);
  t.equal(head.close, false);
  t.equal(
    head.head,
    'HTTP/1.1 200 Fine\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n',
  );
});

t.test('response framing', async (t) => {
  const framing = (text: string, method?: string) => (res(text, method) as ResponseHead).framing;
  t.equal(framing('HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n', 'HEAD'), 'none', 'HEAD');
  t.equal(framing('HTTP/1.1 204 No Content\r\n\r\n'), 'none', '204');
  t.equal(framing('HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n'), 'none', '304 with a length');
  t.equal(framing('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'), 'chunked');
  t.equal(framing('HTTP/1.1 200 OK\r\n\r\n'), 'close', 'neither: until the close');
  const chunked = res('HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\nX-A: 1\r\n\r\n') as ResponseHead;
  t.equal(chunked.framing, 'chunked', 'the coding name is case-insensitive');
  t.match(chunked.head, /X-A: 1\r\nTransfer-Encoding: chunked\r\n$/, "the relay's own Transfer-Encoding");
  const close = res('HTTP/1.0 200 OK\r\n\r\n') as ResponseHead;
  t.equal(close.close, true, 'HTTP/1.0 without keep-alive closes');
  t.match(
    close.head,
    /^HTTP\/1\.1 200 OK\r\nTransfer-Encoding: chunked\r\n$/,
    'a close-delimited body goes on chunked',
  );
  t.equal(
    (res('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n') as ResponseHead).close,
    true,
  );
  t.equal((res('HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n') as ResponseHead).framing, 'none', '1xx');
});

t.test('server-sent events are told apart by their media type', async (t) => {
  const events = (type: string) => (res(`HTTP/1.1 200 OK\r\n${type}\r\n\r\n`) as ResponseHead).eventStream;
  t.equal(events('Content-Type: text/event-stream'), true);
  t.equal(events('content-type: Text/Event-Stream; charset=utf-8'), true, 'any case, with parameters');
  t.equal(events('Content-Type: text/event-streams'), false, 'another type that starts the same');
  t.equal(events('Content-Type: text/plain'), false);
  t.equal(events('X-Content-Type: text/event-stream'), false, 'another field');
  const head = res('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n') as ResponseHead;
  t.match(head.head, /\r\nContent-Type: text\/event-stream\r\n/, 'and the field is passed on as it was');
});

t.test('ChunkedEnd says when the bytes so far end between chunks', async (t) => {
  const scan = new ChunkedEnd();
  t.equal(scan.atBoundary, true, 'before the first chunk');
  for (const [part, boundary] of [
    ['5\r', false],
    ['\nhel', false],
    ['lo', false],
    ['\r\n', true],
    ['3\r\nabc\r\n', true],
  ] as const) {
    scan.scan(Buffer.from(part, 'latin1'));
    t.equal(scan.atBoundary, boundary, JSON.stringify(part));
  }
  scan.scan(Buffer.from('0\r\n', 'latin1'));
  t.equal(scan.atBoundary, false, 'in the trailer section');
});

t.test('response heads that cannot be passed on are reasons, not heads', async (t) => {
  t.equal(res('HTTP/1.1 200 OK\r\nContent-Length: 5'), INCOMPLETE);
  t.type(res('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n'), 'string', 'another coding');
  t.type(res('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n'), 'string', 'two lengths');
  t.type(
    res('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n'),
    'string',
    'the same twice',
  );
  t.type(res('HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n'), 'string', 'a list');
  t.type(res('HTTP/2 200\r\n\r\n'), 'string', 'another version');
  t.type(res('HTTP/1.1 99 Low\r\n\r\n'), 'string', 'a status below 100');
  t.type(res('HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n'), 'string', 'a field name with a space');
  t.type(res('HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n'), 'string', 'NUL in a value');
  t.type(parseResponseHead(Buffer.alloc(300, 'a'), 'GET', 256), 'string', 'over the size limit');
  t.type(
    res('HTTP/1.1 200 OK\r\nTransfer-Encoding: \xa0chunked\r\n\r\n0\r\n\r\n'),
    'string',
    'a no-break space is not whitespace: "\\xa0chunked" is another coding',
  );
  t.type(
    res('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n'),
    'string',
    'both framings at once',
  );
  t.type(
    res('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n'),
    'string',
    'both framings, the other way round',
  );
});

t.test('HeadBytes joins a head that arrives in pieces, whatever their size', async (t) => {
  const head = Buffer.from('HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok', 'latin1');
  for (let step = 1; step <= head.length; step++) {
    const bytes = new HeadBytes(1024);
    let got: ReturnType<HeadBytes['add']> = INCOMPLETE;
    let pieces = 0;
    for (let off = 0; off < head.length && got === INCOMPLETE; off += step) {
      got = bytes.add(head.subarray(off, off + step));
      pieces++;
    }
    // The blank line ends at byte 45: the piece that holds its last byte completes the head.
    const end = head.indexOf('\r\n\r\n') + 4;
    t.equal(
      pieces,
      Math.ceil(end / step),
      `pieces of ${step}: whole with the piece that ends the blank line`,
    );
    t.same(got, head.subarray(0, Math.ceil(end / step) * step), `pieces of ${step}: every byte, in order`);
    t.ok(bytes.empty, `pieces of ${step}: starts over`);
  }
  const one = Buffer.from('HTTP/1.1 204 No Content\r\n\r\n', 'latin1');
  t.equal(new HeadBytes(1024).add(one), one, 'a head in one piece is not copied');
});

t.test('HeadBytes refuses a head that can never be whole', async (t) => {
  const lf = new HeadBytes(1024);
  t.equal(lf.add(Buffer.from('HTTP/1.1 200 OK\r', 'latin1')), INCOMPLETE);
  t.equal(lf.add(Buffer.from('\nX: 1', 'latin1')), INCOMPLETE, 'CR and LF in two pieces');
  t.match(lf.add(Buffer.from('\n', 'latin1')), /LF without CR/, 'a bare LF at the start of a piece');
  t.match(
    new HeadBytes(1024).add(Buffer.from('\n', 'latin1')),
    /LF without CR/,
    'a head that starts with LF',
  );
  const big = new HeadBytes(100);
  t.equal(big.add(Buffer.alloc(100, 'a')), INCOMPLETE, 'up to the limit');
  t.match(big.add(Buffer.from('a')), /over 100 bytes/, 'one byte over');
  const split = new HeadBytes(1024);
  t.equal(split.add(Buffer.from('HTTP/1.1 200 OK\r\n\r', 'latin1')), INCOMPLETE);
  t.type(split.add(Buffer.from('\n', 'latin1')), Buffer, 'a blank line split across pieces');
});

t.test('ChunkedEnd finds the end of a chunked body, whatever the pieces', async (t) => {
  const body = Buffer.from('5\r\nhello\r\na;ext=1\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n', 'latin1');
  const whole = new ChunkedEnd();
  t.equal(whole.scan(Buffer.concat([body, Buffer.from('NEXT')])), body.length, 'in one piece');
  t.ok(whole.done);
  for (let step = 1; step <= 7; step++) {
    const scan = new ChunkedEnd();
    let end = -1;
    for (let off = 0; off < body.length && end === -1; off += step) {
      const at = scan.scan(body.subarray(off, off + step));
      if (at !== -1) end = off + at;
    }
    t.equal(end, body.length, `in pieces of ${step}`);
  }
  const bad = (text: string) => () => new ChunkedEnd().scan(Buffer.from(text, 'latin1'));
  t.throws(bad('zz\r\n'), /malformed chunk size/);
  t.throws(bad('3\r\nabcd\r\n'), /longer than its size/);
  t.throws(bad('3\nabc\r\n'), /without CRLF/);
  t.throws(bad(`${'1'.repeat(5000)}`), /too long/);
  // What passes on untouched must be well-formed: extensions and trailers are checked too.
  t.throws(bad('2;\0\r\n'), /malformed chunk size/, 'a NUL in an extension');
  t.throws(bad('2;a b\r\n'), /malformed chunk size/, 'an extension that is no token');
  t.throws(bad('2;a="x\r\n'), /malformed chunk size/, 'an unclosed quoted value');
  t.throws(bad('0\r\nnot a header\r\n\r\n'), /malformed trailer line/);
  t.throws(bad('0\r\nX-T: a\0\r\n\r\n'), /malformed trailer line/);
  t.throws(bad('2 \r\n'), /malformed chunk size/, 'whitespace after the size, with no extension');
  const good = '5 ; a ; b=c;d="q \\" ;x"\r\nhello\r\n0;last\r\nX-Sum: 1\r\n\r\n';
  t.equal(new ChunkedEnd().scan(Buffer.from(good, 'latin1')), good.length, 'extensions of every shape');
});

t.test('a response head cannot lose its framing or its close', async (t) => {
  const named = res(
    'HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n',
  ) as ResponseHead;
  t.equal(named.framing, 'length');
  t.match(named.head, /\r\nContent-Length: 5\r\n$/, 'Connection cannot drop Content-Length');
  for (const value of ['close, keep-alive', 'keep-alive, close', 'keep-alive, Close']) {
    t.equal(
      (res(`HTTP/1.1 200 OK\r\nConnection: ${value}\r\nContent-Length: 0\r\n\r\n`) as ResponseHead).close,
      true,
      `Connection: ${value} closes`,
    );
  }
  t.equal(
    (res('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n') as ResponseHead).close,
    false,
    'HTTP/1.0 with keep-alive stays',
  );
  t.type(res('HTTP/1.1 200 OK\nContent-Length: 2\n\nok'), 'string', 'bare LF line ends: refused at once');
  t.type(res('HTTP/1.1 200 OK\r\nX: 1\n'), 'string', 'one bare LF is enough');
  t.equal(res('HTTP/1.1 200 OK\r\nX: 1\r'), INCOMPLETE, 'a CR waiting for its LF is not');
});
