import t from 'tap';
import { sourceOf } from '../src/listeners/tunnel-admission.js';

t.test('waiting tunnel connections count per IPv4 address and per IPv6 /64', async (t) => {
  t.equal(sourceOf('192.0.2.7'), '192.0.2.7');
  t.equal(sourceOf('::ffff:192.0.2.7'), '192.0.2.7', 'IPv4-mapped counts as its IPv4 address');
  t.equal(sourceOf('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
  t.equal(sourceOf('2001:db8:1:2::9'), '2001:db8:1:2::/64', 'another address of the same /64');
  t.equal(sourceOf('2001:0db8:0001:0002:ffff::1'), '2001:db8:1:2::/64', 'leading zeros do not matter');
  t.equal(sourceOf('2001:db8:1:3::9'), '2001:db8:1:3::/64', 'the next /64 is another source');
  t.equal(sourceOf('2001:db8::1'), '2001:db8:0:0::/64');
  t.equal(sourceOf('::1'), '0:0:0:0::/64');
  t.equal(sourceOf('fe80::1%eth0'), 'fe80:0:0:0::/64', 'a zone id is left out');
  t.equal(sourceOf('64:ff9b::192.0.2.7'), '64:ff9b:0:0::/64', 'an embedded IPv4 address is the last 32 bits');
  t.equal(sourceOf('1:2:3:4:5:6:192.0.2.7'), '1:2:3:4::/64');
  t.equal(sourceOf(''), '', 'an address Node did not know stays as it is');
});
