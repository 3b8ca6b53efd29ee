import t from 'tap';
import { memoryTransportPair } from '../src/protocol/memory-transport.js';
import { complianceSuite } from './helpers/compliance.js';

complianceSuite(t, async () => {
  const [a, b] = memoryTransportPair();
  return {
    a,
    b,
    async cleanup() {
      a.destroy();
    },
  };
});
