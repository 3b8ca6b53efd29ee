import t from 'tap';
import { BUDGET_WINDOW, type DueName, OrderBudget, URGENT_RENEWAL } from '../src/certs/order-budget.js';

const names = (subject: string, ...hostnames: string[]): DueName[] =>
  hostnames.map((hostname) => ({ hostname, subject }));
const hostnames = (list: readonly { hostname: string }[]) => list.map((n) => n.hostname);

t.test('one subject spends at most three quarters of the budget, rounded up', async (t) => {
  t.equal(new OrderBudget(60).share, 45);
  t.equal(new OrderBudget(2).share, 2);
  t.equal(new OrderBudget(1).share, 1);

  const budget = new OrderBudget(4);
  const first = budget.plan(
    names('a', 'a1.example.com', 'a2.example.com', 'a3.example.com', 'a4.example.com'),
    0,
  );
  t.same(hostnames(first.order), ['a1.example.com', 'a2.example.com', 'a3.example.com']);
  t.same(
    first.wait.map((w) => [w.name.hostname, w.until]),
    [['a4.example.com', BUDGET_WINDOW]],
    'the fourth waits until its subject’s first order leaves the window',
  );
  t.equal(first.spentUntil, undefined, 'the budget itself is not spent');
  t.same([...first.sharesSpent], [['a', BUDGET_WINDOW]]);

  const later = budget.plan(names('b', 'b1.example.com', 'b2.example.com'), 1000);
  t.same(hostnames(later.order), ['b1.example.com'], 'another subject still gets the slot kept free');
  t.same(
    later.wait.map((w) => [w.name.hostname, w.until]),
    [['b2.example.com', BUDGET_WINDOW]],
  );
  t.equal(later.spentUntil, BUDGET_WINDOW, 'now the whole budget is spent');
  t.same([...later.sharesSpent], []);
});

t.test('a freed slot goes to the subject with the fewest orders in the window', async (t) => {
  const budget = new OrderBudget(4);
  budget.plan(names('a', 'a1.example.com'), 0);
  budget.plan(names('a', 'a2.example.com', 'a3.example.com'), 5);
  budget.plan(names('b', 'b1.example.com'), 10);
  // The first of a's orders leaves the window: one slot, a (2 left in the window) against b (1).
  const due = [...names('a', 'a4.example.com', 'a5.example.com'), ...names('b', 'b2.example.com')];
  const plan = budget.plan(due, BUDGET_WINDOW);
  t.same(hostnames(plan.order), ['b2.example.com']);
  t.same(plan.wait.map((w) => [w.name.hostname, w.until]).sort(), [
    ['a4.example.com', BUDGET_WINDOW + 5],
    ['a5.example.com', BUDGET_WINDOW + 5],
  ]);
  t.equal(budget.used('a', BUDGET_WINDOW), 2);
  t.equal(budget.used('b', BUDGET_WINDOW), 2);
  t.equal(budget.used('a', 2 * BUDGET_WINDOW), 0, 'orders leave the window');
});

t.test('ties go round the subjects, so several spread the budget evenly', async (t) => {
  const budget = new OrderBudget(6);
  const due = [
    ...names('c', 'c1.example.com', 'c2.example.com', 'c3.example.com'),
    ...names('a', 'a1.example.com', 'a2.example.com', 'a3.example.com'),
    ...names('b', 'b1.example.com'),
  ];
  const plan = budget.plan(due, 0);
  t.same(hostnames(plan.order), [
    'a1.example.com',
    'b1.example.com',
    'c1.example.com',
    'a2.example.com',
    'c2.example.com',
    'a3.example.com',
  ]);
  t.same(hostnames(plan.wait.map((w) => w.name)), ['c3.example.com']);
});

t.test('within a subject, urgent renewals, then names without a certificate, then the rest', async (t) => {
  const DAY = 24 * 3600_000;
  const budget = new OrderBudget(8);
  const due: DueName[] = [
    { hostname: 'late.example.com', subject: 's', expires: 30 * DAY },
    { hostname: 'soon.example.com', subject: 's', expires: 20 * DAY },
    { hostname: 'new.example.com', subject: 's' },
    { hostname: 'ending.example.com', subject: 's', expires: URGENT_RENEWAL - 1 },
  ];
  const plan = budget.plan(due, 0);
  t.same(hostnames(plan.order), [
    'ending.example.com',
    'new.example.com',
    'soon.example.com',
    'late.example.com',
  ]);
  const one = new OrderBudget(1).plan(due, 0);
  t.same(hostnames(one.order), ['ending.example.com'], 'a certificate about to end is renewed first');
  const expired = new OrderBudget(1).plan(
    [
      { hostname: 'new.example.com', subject: 's' },
      { hostname: 'gone.example.com', subject: 's', expires: 5 * DAY },
    ],
    6 * DAY,
  );
  t.same(hostnames(expired.order), ['gone.example.com'], 'and one that has ended already');
});

t.test('an order counted outside a plan (a forced renewal) takes its slot', async (t) => {
  const budget = new OrderBudget(2);
  budget.record('a', 0);
  budget.record('a', 0);
  const plan = budget.plan(names('b', 'b1.example.com'), 5);
  t.same(plan.order, []);
  t.equal(plan.spentUntil, BUDGET_WINDOW);
  t.same(
    plan.wait.map((w) => w.until),
    [BUDGET_WINDOW],
  );
});
