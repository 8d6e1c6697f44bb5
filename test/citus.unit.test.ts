import fs from 'node:fs';
import path from 'node:path';
import { loadModule } from 'libpg-query';
import { ALLOWED } from './statements/allow-list';
import { analyze } from './statements/analyze';
import { checkSchema, checkStatements, type CapturedStatement } from './statements/check';
import type { DatabaseFacts, TableFacts } from './statements/schema';
import { citusCall, TABLES } from './statements/tables';

/**
 * The Citus statement check itself (the full check runs at the end of `npm test` over every
 * statement the service sent; see test/statements/ and docs/scaling.md).
 */

function table(columns: string[], keys: string[][], extra: Partial<TableFacts> = {}): TableFacts {
  return {
    columns,
    uniques: keys.map((k, i) => ({ name: `k${i}`, columns: k, primary: i === 0 })),
    foreignKeys: [],
    triggers: [],
    notNull: new Set(columns.filter((c) => c === 'customer_id' || c === 'id')),
    ...extra,
  };
}

const tables = new Map<string, TableFacts>([
  ['customer', table(['id', 'name'], [['id']])],
  ['credit_grant', table(['customer_id', 'id', 'feature_key', 'remaining', 'expires_at', 'entitlement_id'], [['customer_id', 'id']])],
  ['ledger_entry', table(['customer_id', 'id', 'grant_id', 'amount', 'kind', 'usage_event_id'], [['customer_id', 'id']])],
  ['usage_event', table(['customer_id', 'id', 'idempotency_key', 'status', 'expires_at', 'quantity'], [['customer_id', 'id']])],
  ['entitlement', table(['customer_id', 'id', 'feature_key', 'plan_key'], [['customer_id', 'id']])],
  ['feature', table(['key', 'type', 'credit_pool_key'], [['key']])],
  ['plan', table(['key', 'name'], [['key']])],
  ['payment_event', table(['provider', 'id', 'customer_id', 'status'], [['provider', 'id']])],
]);
const db: DatabaseFacts = {
  tables,
  columns: new Map([...tables].map(([t, f]) => [t, f.columns])),
  volatility: new Map([
    ['now', new Set(['s'])],
    ['random', new Set(['v'])],
    ['date_trunc', new Set(['i', 's'])],
    ['to_char', new Set(['s'])],
  ]),
};

beforeAll(() => loadModule());

const router = (sql: string) => {
  const a = analyze(sql, db);
  return { ok: a.problems.length === 0 && a.blockers.length === 0, ...a };
};

describe('a statement is router-executable when every customer table in it is restricted to one customer', () => {
  test.each([
    ['a filter', `select * from ledger_entry where customer_id = $1 and grant_id = $2`],
    ['a cast parameter', `select * from credit_grant where customer_id = $1::text`],
    ['a join on customer_id', `select * from ledger_entry l join credit_grant g on g.customer_id = l.customer_id and g.id = l.grant_id where l.customer_id = $1`],
    ['join USING customer_id', `select * from ledger_entry l join credit_grant g using (customer_id) where g.customer_id = $1 and g.id = l.grant_id`],
    ['both sides filtered to the same value', `select * from ledger_entry l, credit_grant g where l.customer_id = $1 and g.customer_id = $1 and g.id = l.grant_id`],
    ['the customer table by id', `select * from customer where id = $1`],
    ['a row comparison', `select * from ledger_entry where (customer_id, id) = ($1, $2)`],
    ['a one-row IN of rows', `select * from ledger_entry where (customer_id, id) in (($1, $2))`],
    ['IS NOT DISTINCT FROM', `select * from ledger_entry where customer_id is not distinct from $1`],
    ['a correlated subquery on customer_id', `select * from credit_grant g where g.customer_id = $1 and not exists (select 1 from ledger_entry l where l.customer_id = g.customer_id and l.grant_id = g.id)`],
    ['an IN subquery on customer_id', `select * from credit_grant g where g.customer_id in (select customer_id from usage_event where customer_id = $1)`],
    ['a CTE restricted inside, joined on customer_id', `with x as (select * from ledger_entry where customer_id = $1) select * from x join credit_grant g on g.customer_id = x.customer_id and g.id = x.grant_id`],
    ['UNION ALL with both arms restricted', `select customer_id from credit_grant where customer_id = $1 union all select customer_id from usage_event where customer_id = $1`],
    ['an INSERT of one customer\'s rows', `insert into usage_event (customer_id, id, idempotency_key) values ($1, $2, $3) on conflict (customer_id, idempotency_key) do nothing returning id`],
    ['an INSERT ... SELECT from unnest with one customer', `insert into ledger_entry (customer_id, id, grant_id, amount) select $1, e.id, e.grant_id, e.amount from unnest($2::bigint[], $3::uuid[], $4::numeric[]) as e(id, grant_id, amount)`],
    ['an INSERT ... SELECT from a restricted table', `insert into ledger_entry (customer_id, grant_id, amount) select g.customer_id, g.id, g.remaining from credit_grant g where g.customer_id = $1`],
    ['a modifying CTE chain', `with u as (update credit_grant set remaining = remaining - $2 where customer_id = $1 and id = $3 returning id, customer_id) insert into ledger_entry (customer_id, grant_id, amount) select u.customer_id, u.id, $2 from u`],
    ['catalog tables only', `select f.key from feature f left join plan p on p.key = f.key where f.type = $1`],
    ['a catalog join', `select * from entitlement e join feature f on f.key = e.feature_key where e.customer_id = $1`],
    ['no table at all', `select pg_advisory_xact_lock(hashtextextended($1, 7))`],
    ['coordinator-local tables only', `select * from payment_event where provider = $1 and id = $2 for update`],
    ['FOR UPDATE on one customer', `select * from credit_grant where customer_id = $1 and id = $2 for no key update`],
  ])('%s', (_name, sql) => {
    const a = router(sql);
    expect({ problems: a.problems, blockers: a.blockers }).toEqual({ problems: [], blockers: [] });
  });

  test.each([
    ['no filter', `select * from ledger_entry where grant_id = $1`, /ledger_entry: no `customer_id = <one value>` filter/],
    ['a join on another column', `select * from ledger_entry l join credit_grant g on g.id = l.grant_id where l.customer_id = $1`, /credit_grant \(as g\)/],
    ['an OR', `select * from ledger_entry where customer_id = $1 or customer_id = $2`, /ledger_entry: no/],
    ['the optional filter', `select * from ledger_entry where ($1::text is null or customer_id = $1)`, /ledger_entry: no/],
    ['= any(array)', `select * from customer where id = any($1::text[])`, /customer: no `id = <one value>` filter/],
    ['an IN list', `select * from usage_event where customer_id in ($1, $2)`, /usage_event: no/],
    ['an IN list of rows', `select * from ledger_entry where (customer_id, id) in (($1, $2), ($3, $4))`, /ledger_entry: no/],
    ['two customers', `select * from ledger_entry l, credit_grant g where l.customer_id = $1 and g.customer_id = $2`, /more than one customer \(\$1, \$2\)/],
    ['a NOT EXISTS that is not on customer_id', `select * from credit_grant g where g.customer_id = $1 and not exists (select 1 from ledger_entry l where l.grant_id = g.id)`, /ledger_entry \(as l\)/],
    ['a scalar subquery by another key', `select * from ledger_entry where customer_id = (select customer_id from usage_event where id = $1)`, /usage_event: no/],
    ['a filter outside a LIMIT subquery', `select * from (select * from ledger_entry limit 10) x where x.customer_id = $1`, /ledger_entry: no/],
    ['a filter outside a CTE', `with x as (select customer_id from credit_grant where expires_at <= now()) select * from x where x.customer_id = $1`, /credit_grant: no/],
    ['UNION ALL with an unrestricted arm', `select customer_id from credit_grant where customer_id = $1 union all select customer_id from usage_event`, /usage_event: no/],
    ['multi-row INSERT of two customers', `insert into usage_event (customer_id, id) values ($1, $2), ($3, $4)`, /more than one customer/],
    ['INSERT from unnest of customers', `insert into usage_event (customer_id, id) select u.c, u.id from unnest($1::text[], $2::uuid[]) as u(c, id)`, /insert into usage_event: the new rows' customer_id is not one value/],
    ['a local table with a distributed one', `select * from payment_event e join customer c on c.id = e.customer_id where c.id = $1`, /coordinator-local table\(s\) payment_event and distributed/],
    ['an UPDATE of every customer', `update credit_grant set remaining = 0 where expires_at <= now()`, /credit_grant: no/],
    ['a DELETE by a non-key column', `delete from usage_event where status = 'HELD'`, /usage_event: no/],
  ])('%s is refused', (_name, sql, why) => {
    const a = router(sql);
    expect(a.ok).toBe(false);
    expect(a.problems.join('\n')).toMatch(why);
  });

  test('what Citus refuses whatever the routing', () => {
    expect(router(`insert into usage_event (customer_id, id, quantity) values ($1, $2, (select max(quantity) from usage_event where customer_id = $1))`).blockers.join()).toMatch(
      /subquery inside INSERT \.\.\. VALUES/,
    );
    expect(router(`update credit_grant set customer_id = $2 where customer_id = $1 and id = $3`).blockers.join()).toMatch(/changes the distribution column credit_grant\.customer_id/);
    expect(router(`update credit_grant set remaining = random() where customer_id = $1`).blockers.join()).toMatch(/volatile function random\(\)/);
    expect(router(`update credit_grant set feature_key = to_char(expires_at, 'YYYY') where customer_id = $1`).blockers.join()).toMatch(/stable function to_char\(\) called with a column/);
    expect(router(`update credit_grant set expires_at = now() where customer_id = $1`).blockers).toEqual([]);
    expect(router(`select * from credit_grant where expires_at <= now() for update skip locked`).multiShardBlockers.join()).toMatch(/row lock \(FOR UPDATE\) on credit_grant/);
  });

  test('PostgreSQL 18 syntax the service uses parses: CTEs, json_build_object, ON CONFLICT, unnest, jsonb operators', () => {
    const a = router(`with g as (select * from unnest($2::uuid[], $3::numeric[]) as g(id, amount))
      insert into credit_grant (customer_id, id, remaining) select $1, g.id, g.amount from g
      on conflict (customer_id, id) do update set remaining = excluded.remaining where credit_grant.remaining <> excluded.remaining
      returning json_build_object('id', id, 'meta', '{"a":1}'::jsonb -> 'a', 'k', '{"a":1}'::jsonb ->> 'a', 'has', '{"a":1}'::jsonb ? 'a', 'c', '{"a":1}'::jsonb @> '{}')`);
    expect(a.kind).toBe('dml');
    expect(a.problems).toEqual([]);
    expect(a.values).toEqual(['$1']);
  });
});

describe('the check over captured statements', () => {
  const captured = (text: string, from: string[] = ['src/modules/x/x.service.ts:10']): CapturedStatement => ({ text, from, test: 'test/x.test.ts › does x', proc: 'jest' });

  test('a new cross-customer statement fails with its text, why, and where it was sent from', () => {
    const r = checkStatements([captured(`select *\n  from ledger_entry where kind = 'CONSUME'`)], db, []);
    expect(r.failures).toHaveLength(1);
    expect(r.failures[0]).toContain('not router-executable on Citus, and not in the allow-list');
    expect(r.failures[0]).toContain(`select * from ledger_entry where kind = 'CONSUME'`);
    expect(r.failures[0]).toContain('ledger_entry: no `customer_id = <one value>` filter');
    expect(r.failures[0]).toContain('sent from: src/modules/x/x.service.ts:10');
    expect(r.failures[0]).toContain('first seen in: test/x.test.ts › does x');
  });

  test('an allow-listed statement passes, from its own file only', () => {
    const entry = { id: 'scan', match: /^select \* from ledger_entry where kind = /, from: 'src/modules/x/', reason: 'r', citus: 'multi-shard' as const, how: 'h' };
    expect(checkStatements([captured(`select * from ledger_entry where kind = 'CONSUME'`)], db, [entry]).failures).toEqual([]);
    expect(checkStatements([captured(`select * from ledger_entry where kind = 'CONSUME'`, ['src/modules/y/y.service.ts:3'])], db, [entry]).failures).toHaveLength(1);
  });

  test('an allow-listed multi-shard statement may not take row locks, and what Citus refuses must be marked a rewrite', () => {
    const lock = { id: 'claim', match: /for update skip locked$/, from: 'src/', reason: 'r', citus: 'multi-shard' as const, how: 'h' };
    const r = checkStatements([captured(`select * from usage_event where status = 'HELD' for update skip locked`)], db, [lock]);
    expect(r.failures.join()).toMatch(/allow-listed as 'claim' \(multi-shard\), but Citus cannot run it over several shards[\s\S]*row lock/);
    expect(checkStatements([captured(`select * from usage_event where status = 'HELD' for update skip locked`)], db, [{ ...lock, citus: 'rewrite' }]).failures).toEqual([]);
  });

  test('DDL and transaction control are not router-checked; single-customer and catalog statements pass', () => {
    const r = checkStatements(
      [captured('create table x (id int)'), captured('BEGIN;'), captured('select * from ledger_entry where customer_id = $1'), captured('select * from feature')],
      db,
      [],
    );
    expect(r.failures).toEqual([]);
  });

  test('a table nobody classified fails', () => {
    const r = checkStatements([captured('select * from brand_new where id = $1')], db, []);
    expect(r.failures.join()).toMatch(/tables\.ts does not classify \(brand_new\)/);
  });
});

describe('the schema: only catalog tables lack customer_id, and distributed tables keep it in every key', () => {
  const only = (name: string, facts: TableFacts): DatabaseFacts => ({ ...db, tables: new Map([[name, facts]]) });

  test('the keys of a distributed table include customer_id', () => {
    const r = checkSchema(only('usage_event', table(['customer_id', 'id', 'idempotency_key'], [['customer_id', 'id'], ['idempotency_key']])));
    expect(r.failures.join()).toMatch(/unique key k1 \(idempotency_key\) does not include customer_id/);
  });

  test('a new table must be classified; a catalog table must not hold customer_id; foreign keys must co-locate', () => {
    expect(checkSchema(only('brand_new', table(['customer_id', 'id'], [['customer_id', 'id']]))).failures.join()).toMatch(/brand_new .* is not classified/);
    expect(checkSchema(only('feature', table(['key', 'customer_id'], [['key']]))).failures.join()).toMatch(/classified reference but has customer_id/);
    const fk = table(['customer_id', 'id', 'grant_id'], [['customer_id', 'id']], { foreignKeys: [{ name: 'fk', columns: ['grant_id'], references: 'credit_grant', referencedColumns: ['id'] }] });
    expect(checkSchema(only('ledger_entry', fk)).failures.join()).toMatch(/fk \(ledger_entry -> credit_grant\) does not include the distribution column/);
  });
});

describe('docs/scaling.md', () => {
  const doc = fs.readFileSync(path.join(__dirname, '..', 'docs', 'scaling.md'), 'utf8');

  test('gives the Citus call of every table', () => {
    const missing = Object.keys(TABLES).filter((t) => !doc.includes(citusCall(t)));
    expect(missing).toEqual([]);
  });

  test('explains every allow-listed cross-customer statement', () => {
    const missing = ALLOWED.filter((e) => !doc.includes(`\`${e.id}\``)).map((e) => e.id);
    expect(missing).toEqual([]);
  });
});
