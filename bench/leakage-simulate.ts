import 'reflect-metadata';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Pool } from 'pg';
import { TollgateClient } from '@tollgate/client';
import { ensureDatabaseExists } from '../src/db/database';
import { startEmbeddedPostgres, type RunningPostgres } from '../src/db/embedded';
import * as S from './stripe-events';
import { arg, flag, freePort, prng, sleep, table } from './harness';
import { CREDIT_MC, NaiveProduct, PACK_MC, PRO_ALLOWANCE_MC } from './naive/naive';

/**
 * The leakage simulation (issue 14 §3, docs/revenue-integrity.md#the-simulation). One seeded
 * script of an AI product's customers (credit packs bought through Stripe checkouts, Pro
 * subscriptions, text = 1 credit, image = 20, video = 100, tokens at 0.003, with provider costs)
 * and the same seeded faults, run (a) against a naive implementation (bench/naive/) and (b) against
 * Tollgate through @tollgate/client, on one embedded PostgreSQL. For each: revenue expected (what
 * the delivered work should have earned), captured, leakage per cause, double charges, unexplained,
 * margin. Exit 1 when Tollgate's unexplained or double charges are not 0, when its leakage report
 * is missing, or when the naive run shows nothing in a cause it is exposed to.
 *
 *   node dist/bench/leakage-simulate.js --seed 1 --customers 100   # --workers 16 --verbose --keep
 */

const SEED = Math.floor(arg('seed', 1));
const CUSTOMERS = Math.max(4, Math.floor(arg('customers', 100)));
const WORKERS = Math.max(1, Math.floor(arg('workers', 16)));
const VERBOSE = flag('verbose');
const KEEP = flag('keep');
const t0 = Date.now();
const log = (line: string) => process.stdout.write(`${line}\n`);
const root = path.resolve(__dirname, '..', '..');
const ADMIN = `tg_leaksim_admin_${SEED}_0123456789abcdef`;
const WEBHOOK_SECRET = `whsec_leaksim_${SEED}_0123456789abcdef`;
const HOLD_TTL_S = 1;

// ---- money: exact, in nano-dollars (1e-9 USD) ------------------------------------------------

type Nano = bigint;
const NANO = 1_000_000_000n;
/** A decimal string (as PostgreSQL NUMERIC or the Decimal scalar prints it) in nano-dollars; refuses more than 9 places. */
function toNano(s: string): Nano {
  const m = /^(-?)(\d*)(?:\.(\d*))?$/.exec(s.trim());
  if (!m) throw new Error(`not a decimal: ${s}`);
  const frac = (m[3] ?? '').replace(/0+$/, '');
  if (frac.length > 9) throw new Error(`more precision than nano-dollars: ${s}`);
  const v = BigInt(m[2] || '0') * NANO + BigInt((frac + '000000000').slice(0, 9));
  return m[1] ? -v : v;
}
const usd = (n: Nano): string => {
  const neg = n < 0n;
  const a = neg ? -n : n;
  const cents = (a + 5_000_000n) / 10_000_000n; // half away from zero, to the cent
  return `${neg && cents > 0n ? '-' : ''}$${(cents / 100n).toLocaleString('en-US')}.${String(cents % 100n).padStart(2, '0')}`;
};
/** Half away from zero to the cent (as invoices round a line). */
const roundCents = (n: Nano): Nano => (n >= 0n ? ((n + 5_000_000n) / 10_000_000n) * 10_000_000n : -(((-n + 5_000_000n) / 10_000_000n) * 10_000_000n));

// Valuation (docs/revenue-integrity.md#valuation): a pack credit is worth what was paid for it,
// $10 / 1,000 = $0.01 (PURCHASE_PAID); a Pro allowance credit $29 / 5,000 = $0.0058 (PLAN_PRICE);
// Pro overage is priced by the catalog's tiers: $0.01 for the first 1,000 credits, $0.008 after.
// Per milli-credit, in nano-dollars:
const PACK_NPM = 10_000n; // $0.01 per credit
const PLAN_NPM = 5_800n; // $0.0058
const OVER1_NPM = 10_000n;
const OVER2_NPM = 8_000n;
const OVER1_MC = 1000 * CREDIT_MC;

/** Value of the Pro credits at positions [from, from + n) of a period's delivered usage: allowance, then overage tiers. */
function proValue(from: number, n: number): Nano {
  let v = 0n;
  const seg = (lo: number, hi: number, rate: bigint) => {
    const a = Math.max(from, lo);
    const b = Math.min(from + n, hi);
    if (b > a) v += BigInt(b - a) * rate;
  };
  seg(0, PRO_ALLOWANCE_MC, PLAN_NPM);
  seg(PRO_ALLOWANCE_MC, PRO_ALLOWANCE_MC + OVER1_MC, OVER1_NPM);
  seg(PRO_ALLOWANCE_MC + OVER1_MC, Number.MAX_SAFE_INTEGER, OVER2_NPM);
  return v;
}
const overageBill = (overMc: number): Nano => roundCents(proValue(PRO_ALLOWANCE_MC, Math.max(0, overMc)));

// ---- the script --------------------------------------------------------------------------------

type OpKind = 'text' | 'image' | 'video' | 'tokens';
const FEATURE: Record<OpKind, string> = { text: 'text.generate', image: 'image.generate', video: 'video.generate', tokens: 'llm.tokens' };
const COST_MC: Record<Exclude<OpKind, 'tokens'>, number> = { text: 1000, image: 20_000, video: 100_000 };
/** What the AI provider charges per call (tokens: per token), in nano-dollars. */
const PROVIDER_COST: Record<OpKind, Nano> = { text: 400_000n, image: 40_000_000n, video: 800_000_000n, tokens: 2_000n };
const MAX_TOKENS = 4000; // the estimate held for a token call
type Fault = 'retry' | 'doubleclick' | 'timeout' | 'crash';

interface Op {
  id: string;
  kind: OpKind;
  tokens: number; // tokens only
  fault?: Fault;
}
type Step =
  | { t: 'webhooks'; events: S.StripeEvent[]; tag: 'grant' | 'grant-dup' | 'buy-refund' | 'buy-refund-reordered' | 'cancel' | 'cancel-reordered' }
  | { t: 'op'; op: Op }
  | { t: 'race'; drainId: string; ops: [Op, Op] };
interface Customer {
  id: string;
  cus: string;
  plan: 'pack' | 'pro';
  steps: Step[];
}

const costMc = (op: Op) => (op.kind === 'tokens' ? op.tokens * 3 : COST_MC[op.kind]);
const providerCost = (op: Op): Nano => (op.kind === 'tokens' ? BigInt(op.tokens) * PROVIDER_COST.tokens : PROVIDER_COST[op.kind]);

function buildScript(nowS: number): Customer[] {
  const out: Customer[] = [];
  for (let i = 0; i < CUSTOMERS; i++) {
    const rng = prng((Math.imul(SEED ^ 0x9e3779b9, 2654435761) + Math.imul(i + 1, 40503)) >>> 0);
    const id = `c${String(i).padStart(4, '0')}`;
    const cus = `cus_ls${SEED}x${i}`;
    const plan: 'pack' | 'pro' = rng.chance(0.5) ? 'pack' : 'pro';
    let created = nowS - 3600 + i; // strictly increasing per customer, in the past
    let n = 0;
    const ev = (type: string, obj: S.StripeObject) => S.event(type, obj, { id: `evt_ls${SEED}x${i}x${n++}`, created: created++ });
    let opNo = 0;
    const op = (kinds: OpKind[], allowTimeout = true): Op => {
      const kind = rng.pick(kinds);
      const o: Op = { id: `${id}-r${opNo++}`, kind, tokens: kind === 'tokens' ? rng.int(200, MAX_TOKENS) : 0 };
      const f = rng.next();
      if (f < 0.07) o.fault = 'retry';
      else if (f < 0.12) o.fault = 'doubleclick';
      else if (f < 0.16 && kind !== 'tokens' && allowTimeout) o.fault = 'timeout';
      else if (f < 0.24 && kind === 'tokens') o.fault = 'crash';
      return o;
    };
    const steps: Step[] = [];
    const ops = (count: number, kinds: OpKind[]) => {
      for (let k = 0; k < count; k++) steps.push({ t: 'op', op: op(kinds) });
    };
    if (plan === 'pack') {
      const pack = (p: string) => {
        const pi = `pi_ls${SEED}x${i}x${p}`;
        return {
          pi,
          checkout: ev('checkout.session.completed', S.checkoutSession({ id: `cs_ls${SEED}x${i}x${p}`, customer: cus, clientReferenceId: id, paymentIntent: pi, amountTotal: 1000, metadata: { pack: 'credits-1000' } })),
        };
      };
      const a = pack('a');
      const dup = rng.chance(0.3);
      steps.push({ t: 'webhooks', events: dup ? [a.checkout, a.checkout] : [a.checkout], tag: dup ? 'grant-dup' : 'grant' });
      const kinds: OpKind[] = ['text', 'text', 'image', 'image', 'tokens'];
      ops(rng.int(10, 30), kinds);
      if (rng.chance(0.4)) {
        // Bought a second pack and had it refunded at once (before using it).
        const b = pack('b');
        const refund = ev('charge.refunded', S.charge({ id: `ch_ls${SEED}x${i}xb`, customer: cus, paymentIntent: b.pi, amount: 1000, amountRefunded: 1000 }));
        const reordered = rng.chance(0.5);
        steps.push({ t: 'webhooks', events: reordered ? [refund, b.checkout] : [b.checkout, refund], tag: reordered ? 'buy-refund-reordered' : 'buy-refund' });
      }
      ops(rng.int(10, 40), kinds);
      if (rng.chance(0.5)) {
        const raceOp = (): Op => ({ id: `${id}-r${opNo++}`, kind: 'image', tokens: 0 });
        steps.push({ t: 'race', drainId: `${id}-r${opNo++}`, ops: [raceOp(), raceOp()] });
      }
    } else {
      const sub = `sub_ls${SEED}x${i}`;
      const periodStart = nowS - 86_400;
      const periodEnd = periodStart + 30 * 86_400;
      const snap = (status: string, extra: Partial<Parameters<typeof S.subscription>[0]> = {}) =>
        S.subscription({ id: sub, customer: cus, price: 'price_pro_monthly', status, start: periodStart, periodStart, periodEnd, customerId: id, ...extra });
      const createdEv = ev('customer.subscription.created', snap('active'));
      const paid = ev('invoice.paid', S.invoice({ id: `in_ls${SEED}x${i}`, customer: cus, subscription: sub, price: 'price_pro_monthly', quantity: 1, periodStart, periodEnd, amount: 2900 }));
      const dup = rng.chance(0.3);
      steps.push({ t: 'webhooks', events: dup ? [createdEv, paid, paid] : [createdEv, paid], tag: dup ? 'grant-dup' : 'grant' });
      const heavy = rng.chance(0.35);
      const kinds: OpKind[] = heavy ? ['video', 'video', 'video', 'image', 'tokens'] : ['text', 'image', 'image', 'video', 'tokens'];
      ops(heavy ? rng.int(50, 80) : rng.int(15, 40), kinds);
      if (rng.chance(0.35)) {
        // Cancels: an update (a seat of settings, still active) and then the deletion; reordered, the update comes last.
        const upd = ev('customer.subscription.updated', snap('active'));
        const del = ev('customer.subscription.deleted', snap('canceled', { canceledAt: created, endedAt: created }));
        const reordered = rng.chance(0.5);
        steps.push({ t: 'webhooks', events: reordered ? [del, upd] : [upd, del], tag: reordered ? 'cancel-reordered' : 'cancel' });
        ops(rng.int(4, 10), ['text', 'image', 'tokens']);
      }
    }
    out.push({ id, cus, plan, steps });
  }
  return out;
}

// ---- what each implementation did --------------------------------------------------------------

/** One op as run: milli-credits of work the customer received and what the provider was paid. */
interface Ran {
  op: Op;
  delivered: number;
  providerCost: Nano;
  /** naive: milli-credits its balance went down during the step (measured around it). */
  charged: number;
  /** The step's cause when delivered ≠ charged. */
  cause: string;
  afterCancel: boolean;
}
interface CustomerRun {
  c: Customer;
  ran: Ran[];
  /** naive only: credits added by each webhook step and whether they were owed. */
  grants: Array<{ at: number; mc: number; legit: boolean; cause: string }>;
}

const aiCall = (_op: Op, fail: boolean, latencyMs: number) => async () => {
  await sleep(latencyMs);
  if (fail) throw new Error('AI provider timed out');
};

const causeOf = (f: Fault | undefined): string =>
  f === 'retry' || f === 'doubleclick' ? 'DUPLICATE_REQUEST' : f === 'timeout' ? 'CHARGED_NOT_DELIVERED' : f === 'crash' ? 'LAPSED_RESERVATION' : 'UNATTRIBUTED';

async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}

// ---- (a) the naive implementation ---------------------------------------------------------------

async function runNaive(db: Pool, script: Customer[]): Promise<CustomerRun[]> {
  const app = new NaiveProduct(db);
  await app.setup();
  const runs: CustomerRun[] = [];
  await pool(script, WORKERS, async (c) => {
    await app.createCustomer(c.id, c.plan, c.cus);
    const r: CustomerRun = { c, ran: [], grants: [] };
    runs.push(r);
    let cancelled = false;
    let position = 0;
    const one = async (op: Op): Promise<{ delivered: boolean; cost: Nano }> => {
      const cost = providerCost(op);
      const latency = op.fault === 'doubleclick' ? 20 : 1;
      if (op.kind === 'tokens') {
        const x = await app.runTokens(c.id, op.tokens, aiCall(op, false, latency), op.fault === 'crash');
        return { delivered: x.delivered, cost: x.allowed ? cost : 0n };
      }
      const x = await app.runFixed(c.id, COST_MC[op.kind], aiCall(op, op.fault === 'timeout', latency));
      return { delivered: x.delivered, cost: x.allowed ? cost : 0n };
    };
    for (const step of c.steps) {
      if (step.t === 'webhooks') {
        const before = await app.balance(c.id);
        for (const e of step.events) await app.webhook(e);
        const added = (await app.balance(c.id)) - before;
        if (step.tag === 'cancel' || step.tag === 'cancel-reordered') cancelled = true;
        const owed = step.tag === 'buy-refund' || step.tag === 'buy-refund-reordered' ? 0 : c.plan === 'pack' ? PACK_MC : PRO_ALLOWANCE_MC;
        if (step.tag.startsWith('cancel')) continue;
        if (owed > 0) r.grants.push({ at: position, mc: Math.min(added, owed), legit: true, cause: '' });
        if (added > owed) r.grants.push({ at: position, mc: added - owed, legit: false, cause: step.tag === 'buy-refund-reordered' ? 'ACCESS_NOT_REVOKED' : 'DUPLICATE_WEBHOOK' });
        continue;
      }
      const before = await app.balance(c.id);
      let delivered = false;
      let cost = 0n;
      let op: Op;
      if (step.t === 'op') {
        op = step.op;
        if (op.fault === 'retry') {
          const a = await one(op); // the response is lost: the client sends the request again
          const b = await one(op);
          delivered = a.delivered || b.delivered;
          cost = a.cost + b.cost;
        } else if (op.fault === 'doubleclick') {
          const first = one(op);
          await sleep(10);
          const [a, b] = await Promise.all([first, one(op)]);
          delivered = a.delivered || b.delivered;
          cost = a.cost + b.cost;
        } else {
          const a = await one(op);
          delivered = a.delivered;
          cost = a.cost;
        }
        const charged = before - (await app.balance(c.id));
        const d = delivered ? costMc(op) : 0;
        r.ran.push({ op, delivered: d, providerCost: cost, charged, cause: causeOf(op.fault), afterCancel: cancelled && d > 0 });
        position += d;
      } else {
        // Drain to the last 20-21 credits with one text batch, then two image requests race for them.
        const bal = await app.balance(c.id);
        const n = Math.floor((bal - 20_000) / 1000);
        if (n > 0) {
          const drain: Op = { id: step.drainId, kind: 'text', tokens: 0 };
          const x = await app.runFixed(c.id, n * 1000, aiCall(drain, false, 1));
          const charged = bal - (await app.balance(c.id));
          r.ran.push({ op: drain, delivered: x.delivered ? n * 1000 : 0, providerCost: x.allowed ? BigInt(n) * PROVIDER_COST.text : 0n, charged, cause: 'UNATTRIBUTED', afterCancel: false });
          position += x.delivered ? n * 1000 : 0;
        }
        const b2 = await app.balance(c.id);
        const res = await Promise.all(step.ops.map((o) => one(o)));
        const charged = b2 - (await app.balance(c.id));
        const d = res.filter((x) => x.delivered).length * COST_MC.image;
        r.ran.push({ op: step.ops[0], delivered: d, providerCost: res.reduce((s, x) => s + x.cost, 0n), charged, cause: 'RACE_FOR_LAST_UNIT', afterCancel: false });
        position += d;
      }
    }
  });
  return runs;
}

interface Tally {
  expected: Nano;
  captured: Nano;
  leakage: Map<string, Nano>;
  doubleCharges: Map<string, Nano>;
  providerCost: Nano;
  /** Leakage per cause the ground truth says there must be (Tollgate: compared with its report). */
  truth: Map<string, Nano>;
  /** Tollgate's NEGATIVE_MARGIN rows (not leakage of revenue). */
  marginLoss: Map<string, Nano>;
  notes: string[];
}
const add = (m: Map<string, Nano>, k: string, v: Nano) => {
  if (v !== 0n) m.set(k, (m.get(k) ?? 0n) + v);
};
const newTally = (): Tally => ({ expected: 0n, captured: 0n, leakage: new Map(), doubleCharges: new Map(), providerCost: 0n, truth: new Map(), marginLoss: new Map(), notes: [] });

/**
 * The naive side's money, from its own state (the balance around each step) against the script:
 * each step's charge draws first from credits the customer paid for, then from credits a fault gave
 * away (a duplicate grant, a refund it missed), in the order they were granted. Delivered work
 * paid from owed credits is captured; from given-away credits, leakage of that fault; not charged
 * at all, leakage of the step's fault. Charges beyond the work delivered are double charges.
 */
async function tallyNaive(db: Pool, runs: CustomerRun[]): Promise<Tally> {
  const t = newTally();
  for (const r of runs) {
    const pro = r.c.plan === 'pro';
    const value = (from: number, n: number) => (pro ? proValue(from, n) : BigInt(n) * PACK_NPM);
    const pools = r.grants.map((g) => ({ ...g, left: g.mc }));
    let position = 0;
    const draw = (n: number, onLegit: (mc: number, from: number) => void, onGift: (mc: number, cause: string, from: number) => void, onBeyond: (mc: number, from: number) => void, from: number) => {
      let at = from;
      for (const p of [...pools.filter((x) => x.legit), ...pools.filter((x) => !x.legit)]) {
        if (n <= 0) break;
        const take = Math.min(n, p.left);
        if (take <= 0) continue;
        p.left -= take;
        n -= take;
        if (p.legit) onLegit(take, at);
        else onGift(take, p.cause, at);
        at += take;
      }
      if (n > 0) onBeyond(n, at);
    };
    for (const x of r.ran) {
      t.providerCost += x.providerCost;
      t.expected += value(position, x.delivered);
      const paid = Math.min(x.charged, x.delivered);
      if (x.afterCancel) {
        add(t.leakage, 'ACCESS_NOT_REVOKED', value(position, x.delivered));
        draw(x.charged, () => undefined, () => undefined, () => undefined, position);
      } else {
        draw(
          paid,
          (mc, from) => (t.captured += value(from, mc)),
          (mc, cause, from) => add(t.leakage, cause, value(from, mc)),
          (mc, from) => {
            if (pro) {
              t.captured += value(from, mc); // billed from the balance column below
            } else add(t.leakage, 'UNCOLLECTED_USAGE', value(from, mc));
          },
          position,
        );
        if (x.delivered > paid) add(t.leakage, x.cause, value(position + paid, x.delivered - paid));
        if (x.charged > x.delivered) {
          // Charged for work not delivered: the owed credits it took (or the overage it billed) are the customer's loss.
          draw(
            x.charged - x.delivered,
            (mc) => add(t.doubleCharges, x.cause, BigInt(mc) * (pro ? PLAN_NPM : PACK_NPM)),
            () => undefined,
            (mc) => {
              if (pro) {
                add(t.doubleCharges, x.cause, BigInt(mc) * OVER1_NPM);
              }
            },
            position,
          );
        }
      }
      position += x.delivered;
    }
  }
  // What the naive actually bills for overage (its balance below zero, at the tiers), for comparison
  // with the overage counted as captured above.
  let billedTotal = 0n;
  for (const r of runs) {
    if (r.c.plan !== 'pro') continue;
    const bal = Number((await db.query<{ b: string }>(`select (balance * 1000)::bigint::text as b from naive.customer where id = $1`, [r.c.id])).rows[0].b);
    billedTotal += overageBill(-Math.min(0, bal));
  }
  t.notes = [`naive overage billed from its balance column: ${usd(billedTotal)}`];
  return t;
}

// ---- (b) Tollgate --------------------------------------------------------------------------------

class Service {
  child: ChildProcess | undefined;
  out = '';
  constructor(
    readonly dbUrl: string,
    readonly dataDir: string,
    readonly port: number,
  ) {}
  get base() {
    return `http://127.0.0.1:${this.port}`;
  }
  start(): Promise<void> {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.STRIPE_SECRET_KEY;
    delete env.STRIPE_API_BASE;
    const child = spawn(process.execPath, [path.join(root, 'dist', 'src', 'main.js')], {
      cwd: root,
      env: {
        ...env,
        NODE_ENV: 'development',
        DATABASE_URL: this.dbUrl,
        TOLLGATE_DATA_DIR: this.dataDir,
        PORT: String(this.port),
        TOLLGATE_ADMIN_KEY: ADMIN,
        TOLLGATE_DEMO_CATALOG: 'true',
        TOLLGATE_SWEEP_INTERVAL: '1s',
        STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    child.stdout!.on('data', (d) => (this.out = (this.out + d).slice(-20000)));
    child.stderr!.on('data', (d) => (this.out = (this.out + d).slice(-20000)));
    return new Promise((resolve, reject) => {
      const timer = setInterval(async () => {
        try {
          const res = await fetch(`${this.base}/readyz`);
          if (res.ok) {
            clearInterval(timer);
            resolve();
          }
        } catch {
          /* not yet */
        }
      }, 100);
      child.once('exit', (code) => {
        clearInterval(timer);
        reject(new Error(`Tollgate exited with ${code}:\n${this.out}`));
      });
    });
  }
  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    const c = this.child;
    c.removeAllListeners('exit');
    const done = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await done;
  }
}

async function gql<T = any>(base: string, query: string, variables?: Record<string, unknown>): Promise<{ data?: T; errors?: Array<{ message: string; extensions?: { code?: string } }> }> {
  const res = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
    body: JSON.stringify({ query, variables }),
  });
  return (await res.json()) as never;
}

async function deliver(base: string, e: S.StripeEvent): Promise<void> {
  const payload = JSON.stringify(e);
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(`${base}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': S.sign(payload, WEBHOOK_SECRET) }, body: payload });
    const body = await res.text();
    if (res.ok) return;
    if (res.status < 500 || attempt > 20) throw new Error(`webhook ${e.id} ${e.type}: HTTP ${res.status} ${body.slice(0, 300)}`);
    await sleep(50);
  }
}

/** A fetch that loses the first answer to a commit (the server did commit): the client retries with the same key. */
function losingFetch(): typeof fetch {
  let lost = false;
  return (async (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
    const res = await fetch(input, init);
    if (!lost && typeof init?.body === 'string' && init.body.includes('commitReservation')) {
      lost = true;
      await res.text();
      throw new TypeError('fetch failed (response lost on purpose)');
    }
    return res;
  }) as typeof fetch;
}

async function runTollgate(base: string, script: Customer[]): Promise<CustomerRun[]> {
  const clientOpts = { url: base, apiKey: ADMIN, timeoutMs: 10_000, retries: 8, backoff: { baseMs: 5, maxMs: 100 } };
  const tg = new TollgateClient(clientOpts);
  const runs: CustomerRun[] = [];
  await pool(script, WORKERS, async (c) => {
    const up = await gql(base, `mutation($i: CustomerInput!) { upsertCustomer(input: $i) { id } }`, { i: { id: c.id, name: c.id } });
    if (up.errors) throw new Error(`upsertCustomer: ${JSON.stringify(up.errors)}`);
    const r: CustomerRun = { c, ran: [], grants: [] };
    runs.push(r);
    let cancelled = false;
    const one = async (op: Op, client: TollgateClient): Promise<{ delivered: boolean; cost: Nano }> => {
      const cost = providerCost(op);
      const estimate = op.kind === 'tokens' ? MAX_TOKENS : 1;
      const latency = op.fault === 'doubleclick' ? 20 : 1;
      if (op.fault === 'crash') {
        const res = await client.reserve({ customerId: c.id, feature: FEATURE[op.kind], estimate, idempotencyKey: op.id, ttlSeconds: HOLD_TTL_S });
        if (!res.allowed) return { delivered: false, cost: 0n };
        await aiCall(op, false, latency)();
        return { delivered: true, cost }; // the process dies here: no commit, the hold lapses
      }
      let ran = false;
      try {
        await client.withCredits({ customerId: c.id, feature: FEATURE[op.kind], estimate, idempotencyKey: op.id, ttlSeconds: 60 }, async (hold) => {
          ran = true;
          await aiCall(op, op.fault === 'timeout', latency)();
          void hold;
          return { result: null, quantity: op.kind === 'tokens' ? op.tokens : 1, providerCost: (Number(cost) / 1e9).toFixed(9) };
        });
        return { delivered: true, cost };
      } catch (err) {
        if ((err as Error).name === 'TollgateDenied') return { delivered: false, cost: 0n };
        // A duplicate (a double click, a retry) of an operation that already ran or is running: the
        // client refuses it before the work runs, so nothing is delivered and nothing is spent.
        if ((err as Error).name === 'TollgateReplayed' || (err as Error).name === 'TollgateInProgress') return { delivered: false, cost: 0n };
        if (ran && op.fault === 'timeout') return { delivered: false, cost };
        throw err;
      }
    };
    for (const step of c.steps) {
      if (step.t === 'webhooks') {
        for (const e of step.events) await deliver(base, e);
        if (step.tag.startsWith('cancel')) cancelled = true;
        continue;
      }
      if (step.t === 'op') {
        const op = step.op;
        let delivered = false;
        let cost = 0n;
        if (op.fault === 'retry') {
          const a = await one(op, new TollgateClient({ ...clientOpts, fetch: losingFetch() }));
          delivered = a.delivered;
          cost = a.cost;
        } else if (op.fault === 'doubleclick') {
          const first = one(op, tg);
          await sleep(10);
          const [a, b] = await Promise.all([first, one(op, tg)]);
          delivered = a.delivered || b.delivered;
          cost = a.cost + b.cost;
        } else {
          const a = await one(op, tg);
          delivered = a.delivered;
          cost = a.cost;
        }
        const d = delivered ? costMc(op) : 0;
        r.ran.push({ op, delivered: d, providerCost: cost, charged: 0, cause: causeOf(op.fault), afterCancel: cancelled && d > 0 });
      } else {
        const dec = await tg.canAccess(c.id, 'credits');
        const bal = Math.round(Number(dec.balance ?? 0) * 1000);
        const n = Math.floor((bal - 20_000) / 1000);
        if (n > 0) {
          const drain: Op = { id: step.drainId, kind: 'text', tokens: 0 };
          const x = await tg.consume({ customerId: c.id, feature: 'text.generate', quantity: n, idempotencyKey: drain.id });
          if (x.allowed) r.ran.push({ op: drain, delivered: n * 1000, providerCost: BigInt(n) * PROVIDER_COST.text, charged: 0, cause: 'UNATTRIBUTED', afterCancel: false });
        }
        const res = await Promise.all(step.ops.map((o) => one(o, tg)));
        r.ran.push({ op: step.ops[0], delivered: res.filter((x) => x.delivered).length * COST_MC.image, providerCost: res.reduce((s, x) => s + x.cost, 0n), charged: 0, cause: 'RACE_FOR_LAST_UNIT', afterCancel: false });
      }
    }
  });
  return runs;
}

interface ReportRow {
  cause: string;
  count: number;
  units: string;
  amount: string;
  currency: string | null;
  status: string;
}

async function tallyTollgate(db: Pool, base: string, runs: CustomerRun[], from: Date, to: Date): Promise<{ t: Tally; report: ReportRow[] | null; reportError: string | null }> {
  const t = newTally();
  const per = new Map<string, { e: Nano; c: Nano; lapsed: Nano }>();
  const perOf = (id: string) => per.get(id) ?? (per.set(id, { e: 0n, c: 0n, lapsed: 0n }), per.get(id)!);
  // Ground truth from the script and what was delivered. A unit Tollgate did not charge is worth
  // its marginal price: what the customer's period would have earned with it, less without it
  // (on Pro, an uncharged unit before the allowance ran out moves later work out of overage).
  const earned = (pro: boolean, xs: number[]): Nano => {
    if (!pro) return xs.reduce((s, x) => s + BigInt(x) * PACK_NPM, 0n);
    const total = xs.reduce((s, x) => s + x, 0);
    const over = Math.max(0, total - PRO_ALLOWANCE_MC);
    return proValue(0, Math.min(total, PRO_ALLOWANCE_MC)) + overageBill(over);
  };
  for (const r of runs) {
    const pro = r.c.plan === 'pro';
    for (const x of r.ran) t.providerCost += x.providerCost;
    const all = earned(pro, r.ran.map((x) => x.delivered));
    const withoutLapsed = earned(pro, r.ran.filter((x) => !(x.op.fault === 'crash' && x.delivered > 0)).map((x) => x.delivered));
    const withoutEither = earned(pro, r.ran.filter((x) => !(x.op.fault === 'crash' && x.delivered > 0) && !x.afterCancel).map((x) => x.delivered));
    t.expected += all;
    add(t.truth, 'LAPSED_RESERVATION', all - withoutLapsed);
    add(t.truth, 'ACCESS_NOT_REVOKED', withoutLapsed - withoutEither);
    perOf(r.c.id).e = all;
    perOf(r.c.id).lapsed = all - withoutEither;
  }
  // Captured, from Tollgate's own data: usage drawn from grants × what a credit of the grant is worth,
  // except overage, which is what the invoice bills for it.
  const ids = runs.map((r) => r.c.id);
  const drawn = await db.query<{ customer_id: string; v: string }>(
    `select l.customer_id, coalesce(sum(-l.amount * v.unit_value), 0)::text as v
       from ledger_entry l cross join lateral tollgate_credit_value(l.customer_id, l.grant_id) v
      where l.customer_id = any($1) and l.kind in ('CONSUME', 'CAPTURE') group by l.customer_id`,
    [ids],
  );
  for (const row of drawn.rows) {
    t.captured += toNano(row.v);
    perOf(row.customer_id).c += toNano(row.v);
  }
  const over = await db.query<{ customer_id: string; o: string }>(
    `select customer_id, coalesce(sum(overage), 0)::text as o from usage_event where customer_id = any($1) and status in ('CHARGED', 'COMMITTED') group by customer_id`,
    [ids],
  );
  for (const row of over.rows) {
    const o = toNano(row.o);
    if (o === 0n) continue;
    t.captured -= (o * PLAN_NPM * 1000n) / NANO; // the ledger valued it at the plan's credit price
    perOf(row.customer_id).c -= (o * PLAN_NPM * 1000n) / NANO;
    const inv = await gql(base, `query($c: ID!) { invoicePreview(customerId: $c) { lines { kind billedBy amount } } }`, { c: row.customer_id });
    if (inv.errors) throw new Error(`invoicePreview: ${JSON.stringify(inv.errors)}`);
    for (const l of inv.data.invoicePreview.lines)
      if (l.kind === 'USAGE' && l.billedBy === 'TOLLGATE') {
        t.captured += toNano(l.amount);
        perOf(row.customer_id).c += toNano(l.amount);
      }
  }
  for (const [id, p] of per)
    if (p.e - p.c - p.lapsed !== 0n) t.notes.push(`${id}: expected ${usd(p.e)} captured ${usd(p.c)} lapsed ${usd(p.lapsed)}: ${p.e - p.c - p.lapsed} nano-USD apart`);
  // Double charges: per request id, charged more than the work delivered.
  const charged = await db.query<{ k: string; c: string }>(
    `select idempotency_key as k, (charged * 1000)::bigint::text as c from usage_event where customer_id = any($1) and status in ('CHARGED', 'COMMITTED')`,
    [ids],
  );
  const chargedBy = new Map(charged.rows.map((x) => [x.k, Number(x.c)]));
  for (const r of runs)
    for (const x of r.ran) {
      const c = chargedBy.get(x.op.id) ?? 0;
      if (x.cause === 'RACE_FOR_LAST_UNIT') continue; // two ids, checked below
      if (c > x.delivered) add(t.doubleCharges, x.cause, BigInt(c - x.delivered) * (r.c.plan === 'pro' ? PLAN_NPM : PACK_NPM));
    }
  for (const r of runs)
    for (const s of r.c.steps)
      if (s.t === 'race') {
        const c = s.ops.reduce((n, o) => n + (chargedBy.get(o.id) ?? 0), 0);
        const d = r.ran.find((x) => x.op.id === s.ops[0].id)?.delivered ?? 0;
        if (c > d) add(t.doubleCharges, 'RACE_FOR_LAST_UNIT', BigInt(c - d) * PACK_NPM);
      }
  // Leakage: Tollgate's own report for the run's window.
  const q = `query($from: DateTime!, $to: DateTime!) { leakageReport(from: $from, to: $to) { rows { cause count units amount currency status } } }`;
  const rep = await gql<{ leakageReport: { rows: ReportRow[] } }>(base, q, { from: from.toISOString(), to: to.toISOString() });
  if (rep.errors || !rep.data?.leakageReport) return { t, report: null, reportError: JSON.stringify(rep.errors ?? rep).slice(0, 400) };
  // PREVENTED rows are leaks that did not happen; NEGATIVE_MARGIN is money spent on providers, not
  // revenue left uncaptured: it is shown on its own row and stays out of the identity.
  for (const row of rep.data.leakageReport.rows) {
    if (row.cause === 'NEGATIVE_MARGIN') add(t.marginLoss, row.cause, toNano(row.amount));
    else if (!/PREVENT/i.test(row.status)) add(t.leakage, row.cause, toNano(row.amount));
  }
  return { t, report: rep.data.leakageReport.rows, reportError: null };
}

// ---- the tables --------------------------------------------------------------------------------

const CAUSES = [
  'DUPLICATE_REQUEST',
  'KEY_REUSE_REFUSED',
  'RACE_FOR_LAST_UNIT',
  'LAPSED_RESERVATION',
  'UNCOLLECTED_USAGE',
  'UNBILLED_OVERAGE',
  'BILLING_MISMATCH',
  'ACCESS_NOT_REVOKED',
  'DUPLICATE_WEBHOOK',
  'PAYMENT_NOT_APPLIED',
] as const;
/** Causes the script exposes the naive side to: each must show money (leakage or double charges). */
const NAIVE_EXPOSED = ['DUPLICATE_REQUEST', 'RACE_FOR_LAST_UNIT', 'LAPSED_RESERVATION', 'ACCESS_NOT_REVOKED', 'DUPLICATE_WEBHOOK', 'CHARGED_NOT_DELIVERED'];

/**
 * `holdBound`: the leakage report values a lapsed hold at the hold (the most the unreported work
 * could be worth: Tollgate never learns what a crashed caller delivered), so its LAPSED_RESERVATION
 * amount is an upper bound of the ground truth. The excess is shown on its own row and must be >= 0.
 */
function render(name: string, t: Tally, holdBound = false): { text: string; unexplained: Nano; double: Nano; holdExcess: Nano } {
  const leak = [...t.leakage.values()].reduce((a, b) => a + b, 0n);
  const double = [...t.doubleCharges.values()].reduce((a, b) => a + b, 0n);
  const holdExcess = holdBound ? (t.leakage.get('LAPSED_RESERVATION') ?? 0n) - (t.truth.get('LAPSED_RESERVATION') ?? 0n) : 0n;
  const unexplained = t.expected - t.captured - leak + holdExcess;
  const rows: string[][] = [[name, 'amount']];
  rows.push(['revenue expected', usd(t.expected)], ['revenue captured', usd(t.captured)]);
  const causes = [...new Set([...CAUSES, ...t.leakage.keys()])];
  for (const c of causes) rows.push([`leakage: ${c}`, usd(t.leakage.get(c) ?? 0n)]);
  rows.push(['leakage total', usd(leak)]);
  if (holdBound) rows.push(['  of which lapsed holds valued at the hold, above the work delivered', usd(holdExcess)]);
  const dcauses = [...new Set(['DUPLICATE_REQUEST', 'CHARGED_NOT_DELIVERED', ...t.doubleCharges.keys()])];
  for (const c of dcauses) rows.push([`double charges: ${c}`, usd(t.doubleCharges.get(c) ?? 0n)]);
  rows.push(['double charges total', usd(double)], ['unexplained', usd(unexplained)], ['provider cost', usd(t.providerCost)], ['NEGATIVE_MARGIN (in the report, not in the identity)', t.marginLoss.size ? usd(t.marginLoss.get('NEGATIVE_MARGIN') ?? 0n) : '-'], ['margin (captured - provider cost)', usd(t.captured - t.providerCost)]);
  return { text: table(rows), unexplained, double, holdExcess };
}

// ---- main ----------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const nowS = Math.floor(Date.now() / 1000);
  const script = buildScript(nowS);
  const stats = { ops: 0, faults: new Map<string, number>(), webhooks: 0 };
  for (const c of script)
    for (const s of c.steps) {
      if (s.t === 'op') {
        stats.ops += 1;
        if (s.op.fault) stats.faults.set(s.op.fault, (stats.faults.get(s.op.fault) ?? 0) + 1);
      } else if (s.t === 'race') {
        stats.ops += 3;
        stats.faults.set('race', (stats.faults.get('race') ?? 0) + 1);
      } else {
        stats.webhooks += s.events.length;
        if (s.tag !== 'grant') stats.faults.set(s.tag, (stats.faults.get(s.tag) ?? 0) + 1);
      }
    }
  log(`leakage simulation: seed ${SEED}, ${CUSTOMERS} customers (${script.filter((c) => c.plan === 'pack').length} on packs, ${script.filter((c) => c.plan === 'pro').length} on Pro), ${stats.ops} operations, ${stats.webhooks} webhook deliveries`);
  log(`faults: ${[...stats.faults].map(([k, v]) => `${k} ${v}`).join(', ')}`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-leakage-sim-'));
  let pg: RunningPostgres | undefined;
  let svc: Service | undefined;
  let db: Pool | undefined;
  try {
    pg = await startEmbeddedPostgres({ dir, port: await freePort() });
    await ensureDatabaseExists(pg.url(), 'leaksim');
    svc = new Service(pg.url('leaksim'), path.join(dir, 'app'), await freePort());
    await svc.start();
    db = new Pool({ connectionString: pg.url('leaksim'), max: WORKERS * 2 + 4 });
    log(`PostgreSQL and Tollgate up in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    let tp = Date.now();
    const naiveRuns = await runNaive(db, script);
    const naive = await tallyNaive(db, naiveRuns);
    log(`(a) naive run: ${((Date.now() - tp) / 1000).toFixed(1)} s`);

    tp = Date.now();
    const from = new Date(Date.now() - 60_000);
    const tgRuns = await runTollgate(svc.base, script);
    // Let the crashed requests' holds lapse and the sweeper give them back: wait until none is held.
    const lapseDeadline = Date.now() + 60_000;
    for (;;) {
      const open = await db.query<{ n: string }>(`select count(*)::text as n from usage_event where status = 'HELD'`);
      if (open.rows[0].n === '0') break;
      if (Date.now() > lapseDeadline) throw new Error(`${open.rows[0].n} holds still HELD a minute after their expiry: the sweeper did not run`);
      await sleep(200);
    }
    const tg = await tallyTollgate(db, svc.base, tgRuns, from, new Date(Date.now() + 60_000));
    log(`(b) Tollgate run: ${((Date.now() - tp) / 1000).toFixed(1)} s`);

    const a = render('(a) naive', naive);
    const b = render('(b) Tollgate', tg.t, true);
    log('');
    log(a.text);
    for (const n of naive.notes) log(`  ${n}`);
    log('');
    log(b.text);
    for (const n of tg.t.notes.slice(0, VERBOSE ? 1000 : 10)) log(`  ${n}`);
    const failures: string[] = [];
    if (!tg.report) failures.push(`Tollgate's leakageReport is missing or failed: ${tg.reportError}`);
    else {
      log('');
      log("Tollgate's leakage report for the run's window:");
      log(table([['cause', 'status', 'count', 'units', 'amount'], ...tg.report.map((r) => [r.cause, r.status, String(r.count), r.units, `${r.amount} ${r.currency ?? ''}`.trim()])]));
    }
    // Per cause: the report's amount against the ground truth's.
    const truthRows: string[][] = [['cause', 'ground truth', "Tollgate's report"]];
    for (const c of new Set([...tg.t.truth.keys(), ...tg.t.leakage.keys()])) truthRows.push([c, usd(tg.t.truth.get(c) ?? 0n), usd(tg.t.leakage.get(c) ?? 0n)]);
    if (truthRows.length > 1) {
      log('');
      log('Tollgate leakage, ground truth against its report:');
      log(table(truthRows));
    }
    for (const [c, v] of tg.t.truth) {
      const reported = tg.t.leakage.get(c) ?? 0n;
      // Lapsed holds: the report's amount is the hold's value, an upper bound of the work delivered.
      if (c === 'LAPSED_RESERVATION' ? reported < v : reported !== v) failures.push(`Tollgate's report says ${usd(reported)} of ${c}, the ground truth ${usd(v)}`);
    }
    if (b.holdExcess < 0n) failures.push(`Tollgate's report values lapsed holds ${usd(-b.holdExcess)} below the work delivered`);
    if (tg.report && b.unexplained !== 0n) failures.push(`Tollgate's unexplained leakage is ${usd(b.unexplained)} (${b.unexplained} nano-USD), not 0`);
    if (b.double !== 0n) failures.push(`Tollgate double-charged ${usd(b.double)}`);
    for (const c of NAIVE_EXPOSED) {
      const exposed = c === 'CHARGED_NOT_DELIVERED' ? stats.faults.get('timeout') : c === 'DUPLICATE_REQUEST' ? (stats.faults.get('retry') ?? 0) + (stats.faults.get('doubleclick') ?? 0) : c === 'RACE_FOR_LAST_UNIT' ? stats.faults.get('race') : c === 'LAPSED_RESERVATION' ? stats.faults.get('crash') : c === 'ACCESS_NOT_REVOKED' ? (stats.faults.get('cancel-reordered') ?? 0) + (stats.faults.get('buy-refund-reordered') ?? 0) : stats.faults.get('grant-dup');
      if (!exposed) continue;
      if ((naive.leakage.get(c) ?? 0n) === 0n && (naive.doubleCharges.get(c) ?? 0n) === 0n) failures.push(`the naive run shows nothing for ${c}, which the script exposes it to ${exposed} times`);
    }
    log('');
    log(`naive: ${['leakage', ...[...naive.leakage].map(([k, v]) => `${k}=${usd(v)}`)].join(' ')}; double charges ${usd(a.double)}`);
    log(`tollgate: unexplained ${usd(b.unexplained)}, double charges ${usd(b.double)}`);
    log(`run time ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    if (failures.length) {
      log('');
      for (const f of failures) log(`FAIL: ${f}`);
      return 1;
    }
    log('OK');
    return 0;
  } finally {
    await db?.end().catch(() => undefined);
    await svc?.stop().catch(() => undefined);
    await pg?.stop().catch(() => undefined);
    if (!KEEP) fs.rmSync(dir, { recursive: true, force: true });
    else log(`kept ${dir}`);
    if (VERBOSE) log(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);

