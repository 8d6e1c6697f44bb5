import {
  AccessReason,
  type CustomerState,
  type EntitlementRow,
  type FeatureInfo,
  type GrantRow,
  type InactiveSummary,
} from '../src/modules/access/access.model';
import { costOf, decideAccess } from '../src/modules/access/can-access';
import {
  available,
  buildPoolView,
  burnDownCompare,
  capacity,
  drawFrom,
  grantFloor,
  isActive,
  type PoolGrant,
} from '../src/modules/access/pool';
import { FeatureType, OveragePolicy, ResetPeriod } from '../src/modules/catalog/catalog.entities';
import { EntitlementSource } from '../src/modules/entitlements/entitlement.entity';
import { dec, fmt } from '../src/shared/decimal';

/**
 * Pure tests of the access decision and the pool arithmetic: CustomerState objects are built by
 * hand exactly as access.state.ts would load them (entitlements that are over only appear in
 * `inactive`), no database.
 */

const NOW = new Date('2026-03-15T12:00:00.000Z');
const ms = (d: Date, delta: number) => new Date(d.getTime() + delta);
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

function feature(key: string, type: FeatureType, extra: Partial<FeatureInfo> = {}): FeatureInfo {
  return { key, type, precision: 0, creditCost: null, creditPoolKey: null, gatedByKey: null, ...extra };
}

/** The demo catalog, as the state loader returns it. */
const DEMO: FeatureInfo[] = [
  feature('credits', FeatureType.METERED, { precision: 3 }),
  feature('text.generate', FeatureType.METERED, { creditPoolKey: 'credits', creditCost: '1' }),
  feature('image.generate', FeatureType.METERED, { creditPoolKey: 'credits', creditCost: '20' }),
  feature('video', FeatureType.BOOLEAN),
  feature('video.generate', FeatureType.METERED, { creditPoolKey: 'credits', creditCost: '100', gatedByKey: 'video' }),
  feature('llm.tokens', FeatureType.METERED, { creditPoolKey: 'credits', creditCost: '0.003' }),
  feature('max_context_tokens', FeatureType.CONFIG),
];

let seq = 0;
const uuid = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

function ent(featureKey: string, over: Partial<EntitlementRow> = {}): EntitlementRow {
  seq += 1;
  return {
    id: uuid(seq),
    customerId: 'c1',
    featureKey,
    source: EntitlementSource.MANUAL,
    sourceRef: null,
    planKey: null,
    validFrom: ms(NOW, -DAY),
    validUntil: null,
    periodAnchor: null,
    allowance: null,
    resetPeriod: null,
    overage: null,
    overageLimit: null,
    value: null,
    rolloverCap: null,
    priority: 50,
    revokedAt: null,
    revokeReason: null,
    createdAt: ms(NOW, -DAY),
    updatedAt: ms(NOW, -DAY),
    ...over,
  };
}

/** A metered allowance entitlement on a pool. */
function allowance(pool: string, amount: string, over: Partial<EntitlementRow> = {}): EntitlementRow {
  return ent(pool, { allowance: amount, resetPeriod: ResetPeriod.NEVER, overage: OveragePolicy.BLOCK, ...over });
}

function grantOf(e: EntitlementRow, over: Partial<GrantRow> = {}): GrantRow {
  seq += 1;
  const amount = over.amount ?? e.allowance ?? '0';
  return {
    id: uuid(1000 + seq),
    featureKey: e.featureKey,
    entitlementId: e.id,
    source: e.source,
    periodStart: e.validFrom,
    expiresAt: e.validUntil,
    priority: e.priority,
    amount,
    remaining: amount,
    held: '0',
    consumed: '0',
    writtenOff: '0',
    floor: e.overage === OveragePolicy.ALLOW ? (e.overageLimit === null ? null : dec(e.overageLimit).neg().toFixed()) : '0',
    revokedAt: null,
    createdAt: e.createdAt,
    ...over,
  };
}

function state(
  opts: {
    entitlements?: EntitlementRow[];
    grants?: GrantRow[];
    inactive?: Record<string, Partial<InactiveSummary>>;
    customerExists?: boolean;
    features?: FeatureInfo[];
    now?: Date;
  } = {},
): CustomerState {
  return {
    customerId: 'c1',
    now: opts.now ?? NOW,
    customerExists: opts.customerExists ?? true,
    features: new Map((opts.features ?? DEMO).map((f) => [f.key, f])),
    entitlements: opts.entitlements ?? [],
    inactive: new Map(
      Object.entries(opts.inactive ?? {}).map(([k, v]) => [k, { expired: v.expired ?? false, revoked: v.revoked ?? false }]),
    ),
    grants: opts.grants ?? [],
    lapsedHolds: new Map(),
    lapsedCount: 0,
    usageByKey: new Map(),
    usageById: new Map(),
  };
}

const one = dec(1);
const str = (d: { toFixed(): string } | null) => (d === null ? null : fmt(d.toFixed()));

describe('decideAccess: reasons', () => {
  test('canAccess denies with UNKNOWN_CUSTOMER for a customer that does not exist, before looking at the feature', () => {
    const s = state({ customerExists: false, entitlements: [ent('video')] });
    expect(decideAccess(s, 'video', one)).toMatchObject({ allowed: false, reason: AccessReason.UNKNOWN_CUSTOMER, feature: 'video' });
    expect(decideAccess(s, 'nope', one).reason).toBe(AccessReason.UNKNOWN_CUSTOMER);
  });

  test('canAccess denies with UNKNOWN_FEATURE for a feature that is not in the catalog', () => {
    const d = decideAccess(state({ entitlements: [ent('video')] }), 'teleport', one);
    expect(d).toMatchObject({ allowed: false, reason: AccessReason.UNKNOWN_FEATURE, feature: 'teleport', entitlement: null });
  });

  test('canAccess denies with NO_ENTITLEMENT when the customer never held the feature', () => {
    const s = state({ entitlements: [ent('max_context_tokens', { value: 8192 })] });
    expect(decideAccess(s, 'video', one)).toMatchObject({ allowed: false, reason: AccessReason.NO_ENTITLEMENT, entitlement: null, value: null });
  });

  test('canAccess allows a BOOLEAN feature with ENTITLED, value true and the deciding entitlement', () => {
    const e = ent('video');
    const d = decideAccess(state({ entitlements: [e] }), 'video', one);
    expect(d).toMatchObject({ allowed: true, reason: AccessReason.ENTITLED, value: true, detail: null });
    expect(d.entitlement?.id).toBe(e.id);
    expect(d.pool).toBeNull();
    expect(d.cost).toBeNull();
  });

  test('canAccess denies with NOT_STARTED while validFrom is even 1 ms in the future, and allows at exactly validFrom', () => {
    const pending = ent('video', { validFrom: ms(NOW, 1) });
    expect(decideAccess(state({ entitlements: [pending] }), 'video', one)).toMatchObject({ allowed: false, reason: AccessReason.NOT_STARTED });
    const starting = ent('video', { validFrom: NOW });
    expect(decideAccess(state({ entitlements: [starting] }), 'video', one)).toMatchObject({ allowed: true, reason: AccessReason.ENTITLED });
  });

  test('canAccess denies with EXPIRED once validUntil has passed (the loader reports it as inactive)', () => {
    const d = decideAccess(state({ inactive: { video: { expired: true } } }), 'video', one);
    expect(d).toMatchObject({ allowed: false, reason: AccessReason.EXPIRED });
  });

  test('an entitlement is active up to but excluding validUntil: validUntil == now is over, now + 1 ms is not', () => {
    expect(isActive(ent('video', { validUntil: NOW }), NOW)).toBe(false);
    expect(isActive(ent('video', { validUntil: ms(NOW, 1) }), NOW)).toBe(true);
    expect(isActive(ent('video', { validFrom: NOW }), NOW)).toBe(true);
    expect(isActive(ent('video', { validFrom: ms(NOW, 1) }), NOW)).toBe(false);
    expect(isActive(ent('video', { revokedAt: ms(NOW, -1) }), NOW)).toBe(false);
    // An entitlement handed in with validUntil == now is not used even if the loader let it through.
    const d = decideAccess(state({ entitlements: [ent('video', { validUntil: NOW })] }), 'video', one);
    expect(d.allowed).toBe(false);
  });

  test('canAccess denies with REVOKED when the only entitlement was revoked', () => {
    const d = decideAccess(state({ inactive: { video: { revoked: true } } }), 'video', one);
    expect(d).toMatchObject({ allowed: false, reason: AccessReason.REVOKED });
  });

  test('a renewal that has not started yet reports NOT_STARTED rather than the EXPIRED of the previous term', () => {
    const renewal = ent('video', { validFrom: ms(NOW, HOUR) });
    const d = decideAccess(state({ entitlements: [renewal], inactive: { video: { expired: true } } }), 'video', one);
    expect(d.reason).toBe(AccessReason.NOT_STARTED);
  });

  test('any active entitlement allows even if others expired or were revoked', () => {
    const e = ent('video');
    const d = decideAccess(state({ entitlements: [e], inactive: { video: { expired: true, revoked: true } } }), 'video', one);
    expect(d).toMatchObject({ allowed: true, reason: AccessReason.ENTITLED });
  });
});

describe('decideAccess: the most permissive entitlement decides', () => {
  test('BOOLEAN: the entitlement valid longest is reported (open-ended beats dated)', () => {
    const shortTerm = ent('video', { validUntil: ms(NOW, DAY) });
    const longTerm = ent('video', { validUntil: ms(NOW, 30 * DAY) });
    const forever = ent('video', { validUntil: null });
    expect(decideAccess(state({ entitlements: [shortTerm, longTerm] }), 'video', one).entitlement?.id).toBe(longTerm.id);
    expect(decideAccess(state({ entitlements: [longTerm, shortTerm] }), 'video', one).entitlement?.id).toBe(longTerm.id);
    expect(decideAccess(state({ entitlements: [shortTerm, forever, longTerm] }), 'video', one).entitlement?.id).toBe(forever.id);
  });

  test('CONFIG: the value is returned; the largest numeric value wins whatever the order', () => {
    const free = ent('max_context_tokens', { value: 8192 });
    const pro = ent('max_context_tokens', { value: 128000 });
    const team = ent('max_context_tokens', { value: 200000, validFrom: ms(NOW, -2 * DAY) });
    for (const order of [
      [free, pro, team],
      [team, pro, free],
      [pro, team, free],
    ]) {
      const d = decideAccess(state({ entitlements: order }), 'max_context_tokens', one);
      expect(d).toMatchObject({ allowed: true, reason: AccessReason.ENTITLED, value: 200000 });
      expect(d.entitlement?.id).toBe(team.id);
    }
  });

  test('CONFIG: a numeric value beats a non-numeric one; true beats false; otherwise the most recently started wins', () => {
    const text = ent('max_context_tokens', { value: 'large', validFrom: ms(NOW, -HOUR) });
    const num = ent('max_context_tokens', { value: 4096, validFrom: ms(NOW, -2 * DAY) });
    expect(decideAccess(state({ entitlements: [text, num] }), 'max_context_tokens', one).value).toBe(4096);
    const no = ent('max_context_tokens', { value: false, validFrom: ms(NOW, -HOUR) });
    const yes = ent('max_context_tokens', { value: true, validFrom: ms(NOW, -2 * DAY) });
    expect(decideAccess(state({ entitlements: [no, yes] }), 'max_context_tokens', one).value).toBe(true);
    const older = ent('max_context_tokens', { value: { tier: 'a' }, validFrom: ms(NOW, -2 * DAY) });
    const newer = ent('max_context_tokens', { value: { tier: 'b' }, validFrom: ms(NOW, -HOUR) });
    expect(decideAccess(state({ entitlements: [newer, older] }), 'max_context_tokens', one).value).toEqual({ tier: 'b' });
  });

  test('CONFIG: an entitlement that has not started yet does not count towards the value', () => {
    const now = ent('max_context_tokens', { value: 8192 });
    const later = ent('max_context_tokens', { value: 999999, validFrom: ms(NOW, HOUR) });
    expect(decideAccess(state({ entitlements: [now, later] }), 'max_context_tokens', one).value).toBe(8192);
    expect(decideAccess(state({ entitlements: [later] }), 'max_context_tokens', one).reason).toBe(AccessReason.NOT_STARTED);
  });

  test('METERED: the balances of every active entitlement to the pool add up', () => {
    const plan = allowance('credits', '100', { resetPeriod: ResetPeriod.MONTH, validFrom: new Date('2026-03-01T00:00:00Z') });
    const manual = allowance('credits', '50', { priority: 10 });
    const s = state({ entitlements: [plan, manual], grants: [grantOf(manual)] });
    // 120 credits: more than either entitlement alone.
    const d = decideAccess(s, 'text.generate', dec(120));
    expect(d).toMatchObject({ allowed: true, reason: AccessReason.ENTITLED, pool: 'credits' });
    expect(str(d.balance)).toBe('150');
    // The entitlement whose grant is drawn first (priority 10) is the one reported.
    expect(d.entitlement?.id).toBe(manual.id);
    expect(decideAccess(s, 'text.generate', dec(151)).reason).toBe(AccessReason.INSUFFICIENT_BALANCE);
  });
});

describe('decideAccess: METERED figures', () => {
  const anchor = new Date('2026-03-01T00:00:00.000Z');

  test('a plan allowance not used yet: balance = limit, used 0, resetsAt = end of the month period', () => {
    const plan = allowance('credits', '100', { resetPeriod: ResetPeriod.MONTH, validFrom: anchor, source: EntitlementSource.PLAN, planKey: 'free' });
    const d = decideAccess(state({ entitlements: [plan] }), 'image.generate', one);
    expect(d).toMatchObject({ allowed: true, reason: AccessReason.ENTITLED, feature: 'image.generate', pool: 'credits', value: null });
    expect(str(d.cost)).toBe('20');
    expect(str(d.balance)).toBe('100');
    expect(str(d.limit)).toBe('100');
    expect(str(d.used)).toBe('0');
    expect(d.resetsAt?.toISOString()).toBe('2026-04-01T00:00:00.000Z');
    expect(d.entitlement?.id).toBe(plan.id);
  });

  test('a partly used period reports used and the remaining balance', () => {
    const plan = allowance('credits', '100', { resetPeriod: ResetPeriod.MONTH, validFrom: anchor });
    const g = grantOf(plan, { periodStart: anchor, expiresAt: new Date('2026-04-01T00:00:00.000Z'), remaining: '30', consumed: '70' });
    const d = decideAccess(state({ entitlements: [plan], grants: [g] }), 'text.generate', dec(30));
    expect(d).toMatchObject({ allowed: true });
    expect([str(d.balance), str(d.limit), str(d.used), str(d.cost)]).toEqual(['30', '100', '70', '30']);
    const over = decideAccess(state({ entitlements: [plan], grants: [g] }), 'text.generate', dec(31));
    expect(over).toMatchObject({ allowed: false, reason: AccessReason.INSUFFICIENT_BALANCE, pool: 'credits' });
    expect(str(over.balance)).toBe('30');
    expect(str(over.cost)).toBe('31');
  });

  test('a non-resetting balance has no resetsAt', () => {
    const manual = allowance('credits', '40');
    const d = decideAccess(state({ entitlements: [manual], grants: [grantOf(manual)] }), 'credits', dec(40));
    expect(d).toMatchObject({ allowed: true, reason: AccessReason.ENTITLED, pool: 'credits', resetsAt: null });
    expect(str(d.limit)).toBe('40');
  });

  test('the cost is quantity x rate, rounded up to the pool precision', () => {
    const manual = allowance('credits', '1');
    const s = state({ entitlements: [manual], grants: [grantOf(manual)] });
    expect(str(decideAccess(s, 'llm.tokens', one).cost)).toBe('0.003');
    expect(str(decideAccess(s, 'llm.tokens', dec('0.1')).cost)).toBe('0.001');
    expect(str(costOf(dec('0.4'), dec(1), 0))).toBe('1');
    expect(str(costOf(dec('2.0001'), dec(1), 3))).toBe('2.001');
    expect(decideAccess(s, 'llm.tokens', dec(334)).reason).toBe(AccessReason.INSUFFICIENT_BALANCE); // 1.002 > 1
    expect(decideAccess(s, 'llm.tokens', dec(333)).reason).toBe(AccessReason.ENTITLED); // 0.999
  });

  test('overage ALLOW with a limit: allowed past the balance up to the limit; without a limit: always', () => {
    const capped = allowance('credits', '10', { overage: OveragePolicy.ALLOW, overageLimit: '5' });
    const s = state({ entitlements: [capped], grants: [grantOf(capped)] });
    expect(decideAccess(s, 'text.generate', dec(15)).allowed).toBe(true);
    expect(decideAccess(s, 'text.generate', dec(16)).reason).toBe(AccessReason.INSUFFICIENT_BALANCE);
    const unbounded = allowance('credits', '10', { overage: OveragePolicy.ALLOW, overageLimit: null });
    const u = state({ entitlements: [unbounded], grants: [grantOf(unbounded)] });
    expect(decideAccess(u, 'text.generate', dec(1_000_000)).allowed).toBe(true);
    expect(str(decideAccess(u, 'text.generate', one).balance)).toBe('10');
  });

  test('a metered feature without any entitlement to its pool: NO_ENTITLEMENT naming the pool; an expired pool: EXPIRED', () => {
    expect(decideAccess(state(), 'image.generate', one)).toMatchObject({ allowed: false, reason: AccessReason.NO_ENTITLEMENT, pool: 'credits' });
    expect(decideAccess(state({ inactive: { credits: { expired: true } } }), 'image.generate', one).reason).toBe(AccessReason.EXPIRED);
    expect(decideAccess(state({ inactive: { credits: { revoked: true } } }), 'image.generate', one).reason).toBe(AccessReason.REVOKED);
    const later = allowance('credits', '10', { validFrom: ms(NOW, 1) });
    expect(decideAccess(state({ entitlements: [later] }), 'image.generate', one).reason).toBe(AccessReason.NOT_STARTED);
  });

  test('a metered feature whose pool is missing from the catalog: UNKNOWN_FEATURE with a detail', () => {
    const s = state({ features: DEMO.filter((f) => f.key !== 'credits'), entitlements: [allowance('credits', '10')] });
    const d = decideAccess(s, 'text.generate', one);
    expect(d).toMatchObject({ allowed: false, reason: AccessReason.UNKNOWN_FEATURE });
    expect(d.detail).toContain('credits');
  });
});

describe('decideAccess: gatedBy', () => {
  const credits = allowance('credits', '1000');

  test('video.generate without video is denied with the gate reason and a detail naming the gate', () => {
    const s = state({ entitlements: [credits], grants: [grantOf(credits)] });
    const d = decideAccess(s, 'video.generate', one);
    expect(d).toMatchObject({ allowed: false, reason: AccessReason.NO_ENTITLEMENT, feature: 'video.generate', cost: null });
    expect(d.detail).toBe("'video.generate' requires the feature 'video'");
  });

  test('the gate reason is passed through: REVOKED, EXPIRED, NOT_STARTED', () => {
    const base = { entitlements: [credits], grants: [grantOf(credits)] };
    expect(decideAccess(state({ ...base, inactive: { video: { revoked: true } } }), 'video.generate', one).reason).toBe(AccessReason.REVOKED);
    expect(decideAccess(state({ ...base, inactive: { video: { expired: true } } }), 'video.generate', one).reason).toBe(AccessReason.EXPIRED);
    const pending = ent('video', { validFrom: ms(NOW, HOUR) });
    const d = decideAccess(state({ ...base, entitlements: [credits, pending] }), 'video.generate', one);
    expect(d.reason).toBe(AccessReason.NOT_STARTED);
    expect(d.detail).toContain("'video'");
  });

  test('with the gate held, the metered rules decide', () => {
    const video = ent('video');
    const ok = decideAccess(state({ entitlements: [credits, video], grants: [grantOf(credits)] }), 'video.generate', dec(10));
    expect(ok).toMatchObject({ allowed: true, reason: AccessReason.ENTITLED, pool: 'credits', detail: null });
    expect(str(ok.cost)).toBe('1000');
    const poor = decideAccess(state({ entitlements: [credits, video], grants: [grantOf(credits)] }), 'video.generate', dec(11));
    expect(poor.reason).toBe(AccessReason.INSUFFICIENT_BALANCE);
  });
});

describe('pool', () => {
  const anchor = new Date('2026-03-01T00:00:00.000Z');
  const april = new Date('2026-04-01T00:00:00.000Z');

  test('grantFloor: BLOCK is 0, ALLOW is minus the limit, unbounded ALLOW is null', () => {
    expect(str(grantFloor({ overage: OveragePolicy.BLOCK, overageLimit: null }))).toBe('0');
    expect(str(grantFloor({ overage: null, overageLimit: null }))).toBe('0');
    expect(str(grantFloor({ overage: OveragePolicy.ALLOW, overageLimit: '2000' }))).toBe('-2000');
    expect(grantFloor({ overage: OveragePolicy.ALLOW, overageLimit: null })).toBeNull();
  });

  test('buildPoolView: a period not materialized yet appears once as a virtual grant with its full allowance', () => {
    const plan = allowance('credits', '100', { resetPeriod: ResetPeriod.MONTH, validFrom: anchor });
    const view = buildPoolView(state({ entitlements: [plan] }), 'credits');
    expect(view.grants).toHaveLength(1);
    expect(view.grants[0]).toMatchObject({ id: null, virtual: true, entitlementId: plan.id, periodStart: anchor, expiresAt: april });
    expect(str(view.grants[0].amount)).toBe('100');
    const materialized = grantOf(plan, { periodStart: anchor, expiresAt: april, remaining: '60', consumed: '40' });
    const view2 = buildPoolView(state({ entitlements: [plan], grants: [materialized] }), 'credits');
    expect(view2.grants).toHaveLength(1);
    expect(view2.grants[0]).toMatchObject({ id: materialized.id, virtual: false });
    expect(str(available(view2))).toBe('60');
  });

  test('buildPoolView: expired grants with a balance are to be written off, not counted; empty expired ones are dropped', () => {
    const plan = allowance('credits', '100', { resetPeriod: ResetPeriod.MONTH, validFrom: new Date('2026-02-01T00:00:00Z') });
    const feb = grantOf(plan, { periodStart: new Date('2026-02-01T00:00:00Z'), expiresAt: anchor, remaining: '25', consumed: '75' });
    const view = buildPoolView(state({ entitlements: [plan], grants: [feb] }), 'credits');
    expect(view.toWriteOff.map((g) => g.id)).toEqual([feb.id]);
    expect(view.grants.map((g) => g.virtual)).toEqual([true]);
    expect(str(available(view))).toBe('100');
    const spent = { ...feb, remaining: '0', consumed: '100' };
    expect(buildPoolView(state({ entitlements: [plan], grants: [spent] }), 'credits').toWriteOff).toEqual([]);
  });

  test('buildPoolView: an expiry exactly now is expired; grants of inactive entitlements and future periods do not count', () => {
    const manual = allowance('credits', '10');
    const atNow = grantOf(manual, { expiresAt: NOW });
    expect(buildPoolView(state({ entitlements: [manual], grants: [atNow] }), 'credits').toWriteOff).toHaveLength(1);
    const revoked = allowance('credits', '10');
    const orphan = grantOf(revoked);
    const future = grantOf(manual, { periodStart: ms(NOW, 1) });
    const view = buildPoolView(state({ entitlements: [manual], grants: [orphan, future, grantOf(manual)] }), 'credits');
    expect(view.grants).toHaveLength(1);
    expect(view.grants[0].entitlementId).toBe(manual.id);
    expect(view.grants[0].periodStart).toEqual(manual.validFrom);
  });

  test('buildPoolView: a zero allowance makes no grant under BLOCK but an overage-only grant under ALLOW', () => {
    const blocked = allowance('credits', '0');
    expect(buildPoolView(state({ entitlements: [blocked] }), 'credits').grants).toHaveLength(0);
    const payg = allowance('credits', '0', { overage: OveragePolicy.ALLOW, overageLimit: '10' });
    const view = buildPoolView(state({ entitlements: [payg] }), 'credits');
    expect(view.grants).toHaveLength(1);
    expect(str(available(view))).toBe('0');
    expect(str(capacity(view))).toBe('10');
  });

  test('buildPoolView: unused balance rolls over into a virtual period up to rolloverCap', () => {
    const plan = allowance('credits', '100', { resetPeriod: ResetPeriod.MONTH, validFrom: new Date('2026-02-01T00:00:00Z'), rolloverCap: '50' });
    const feb = (remaining: string) =>
      // A consistent past period: of its 100, `remaining` was left unused and written off at expiry.
      grantOf(plan, { periodStart: new Date('2026-02-01T00:00:00Z'), expiresAt: anchor, remaining: '0', writtenOff: remaining, consumed: String(100 - Number(remaining)) });
    const small = buildPoolView(state({ entitlements: [plan], grants: [feb('30')] }), 'credits');
    expect(small.grants.map((g) => [str(g.amount), str(g.rollover)])).toEqual([['130', '30']]);
    const capped = buildPoolView(state({ entitlements: [plan], grants: [feb('80')] }), 'credits');
    expect(capped.grants.map((g) => [str(g.amount), str(g.rollover)])).toEqual([['150', '50']]);
  });

  test('buildPoolView: a write-off that was later restored and consumed does not roll over again', () => {
    const plan = allowance('credits', '100', { resetPeriod: ResetPeriod.MONTH, validFrom: new Date('2026-02-01T00:00:00Z'), rolloverCap: '50' });
    // Cut (EXPIRE 100), restored (+100), then all 100 consumed: written_off stays 100, nothing was unused.
    const feb = grantOf(plan, { periodStart: new Date('2026-02-01T00:00:00Z'), expiresAt: anchor, remaining: '0', writtenOff: '100', consumed: '100' });
    const view = buildPoolView(state({ entitlements: [plan], grants: [feb] }), 'credits');
    expect(view.grants.map((g) => [str(g.amount), str(g.rollover)])).toEqual([['100', '0']]);
  });

  test('burnDownCompare: priority first, then soonest expiry (never-expiring last), then oldest period', () => {
    const g = (id: string, priority: number, expiresAt: Date | null, periodStart = anchor): PoolGrant => ({
      id,
      entitlementId: id,
      featureKey: 'credits',
      source: EntitlementSource.MANUAL,
      priority,
      periodStart,
      expiresAt,
      createdAt: anchor,
      amount: dec(1),
      remaining: dec(1),
      held: dec(0),
      consumed: dec(0),
      writtenOff: dec(0),
      floor: dec(0),
      virtual: false,
      rollover: dec(0),
    });
    const grants = [
      g('never', 50, null),
      g('later', 50, ms(NOW, 10 * DAY)),
      g('first', 0, null),
      g('sooner', 50, ms(NOW, DAY)),
      g('older', 50, null, new Date('2026-01-01T00:00:00Z')),
    ];
    expect([...grants].sort(burnDownCompare).map((x) => x.id)).toEqual(['first', 'sooner', 'later', 'older', 'never']);
  });

  test('available ignores overage debt; capacity adds the overage room and is null when unbounded', () => {
    const a = allowance('credits', '10', { overage: OveragePolicy.ALLOW, overageLimit: '5' });
    const b = allowance('credits', '20', { priority: 60 });
    const s = state({ entitlements: [a, b], grants: [grantOf(a, { remaining: '-3', consumed: '13' }), grantOf(b, { remaining: '7' })] });
    const view = buildPoolView(s, 'credits');
    expect(str(available(view))).toBe('7');
    expect(str(capacity(view))).toBe('9'); // 7 on b + (5 - 3) overage room on a
    const c = allowance('credits', '1', { overage: OveragePolicy.ALLOW });
    expect(capacity(buildPoolView(state({ entitlements: [c], grants: [grantOf(c)] }), 'credits'))).toBeNull();
  });

  test('drawFrom: positive balances first in burn-down order, then overage room, and reports a shortfall', () => {
    const allow = allowance('credits', '10', { overage: OveragePolicy.ALLOW, overageLimit: '5', priority: 0 });
    const block = allowance('credits', '4', { priority: 90 });
    const view = buildPoolView(state({ entitlements: [allow, block], grants: [grantOf(allow), grantOf(block)] }), 'credits');
    const r = drawFrom(view.grants, dec(17));
    expect(r.draws.map((d) => [d.grant.entitlementId, str(d.amount)])).toEqual([
      [allow.id, '13'],
      [block.id, '4'],
    ]);
    expect(str(r.overage)).toBe('3');
    expect(str(r.shortfall)).toBe('0');
    const tooMuch = drawFrom(view.grants, dec(20));
    expect(str(tooMuch.overage)).toBe('5');
    expect(str(tooMuch.shortfall)).toBe('1');
    const blockOnly = drawFrom(view.grants.filter((g) => g.entitlementId === block.id), dec(6));
    expect(blockOnly.draws.map((d) => str(d.amount))).toEqual(['4']);
    expect(str(blockOnly.shortfall)).toBe('2');
  });
});
