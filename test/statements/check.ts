import fs from 'node:fs';
import path from 'node:path';
import { loadModule } from 'libpg-query';
import { withDatabase } from '../../src/db/database';
import { ALLOWED, type AllowedStatement } from './allow-list';
import { analyze, type Analysis } from './analyze';
import { readDatabase, type DatabaseFacts } from './schema';
import { TABLES, type Placement } from './tables';

/**
 * The Citus check over a run's captured statements (docs/scaling.md, "Checking it here"):
 * - every DML statement on a distributed table is router-executable (one customer), or is in
 *   the allow-list (allow-list.ts) with its reason;
 * - nothing Citus refuses outright (a subquery in INSERT ... VALUES, an UPDATE of the
 *   distribution column, a volatile function in an UPDATE), unless allow-listed as a rewrite;
 * - an allow-listed multi-shard statement takes no row lock (Citus locks in single-shard
 *   queries only);
 * - every table the migrations created is classified (tables.ts): only catalog tables lack
 *   customer_id; distributed tables keep the customer in every key and co-located foreign key.
 * DDL (the migrations) is not router-checked; the schema it leaves is.
 */

export interface CapturedStatement {
  text: string;
  /** Sender frames (file:line), innermost first; may be empty. */
  from: string[];
  /** The test that first sent it (jest processes). */
  test?: string;
  /** 'jest' (a test file's process) or 'service' (a spawned `node dist/src/main.js`). */
  proc: string;
}

export interface StatementCheck {
  failures: string[];
  notes: string[];
  report: string;
  summary: string;
}

export const collapse = (text: string) => text.replace(/\s+/g, ' ').trim();

export function readCapture(dir: string): { statements: CapturedStatement[]; processes: number } {
  const byText = new Map<string, CapturedStatement>();
  let processes = 0;
  for (const file of fs.readdirSync(dir).filter((f) => /^statements-\d+\.jsonl$/.test(f)).sort()) {
    processes++;
    for (const line of fs.readFileSync(path.join(dir, file), 'utf8').split('\n')) {
      if (!line.trim()) continue;
      let r: CapturedStatement;
      try {
        r = JSON.parse(line) as CapturedStatement;
      } catch {
        continue; // a line cut short by a killed process
      }
      const seen = byText.get(r.text);
      if (!seen) byText.set(r.text, { ...r, from: r.from ?? [] });
      else if (!seen.from.length && r.from?.length) seen.from = r.from;
    }
  }
  return { statements: [...byText.values()], processes };
}

function allowedEntry(s: CapturedStatement, text: string, allowed: AllowedStatement[]): AllowedStatement | undefined {
  const knowsSender = s.from.some((f) => f.startsWith('src/'));
  return allowed.find((a) => a.match.test(text) && (!knowsSender || s.from.some((f) => f.startsWith(a.from))));
}

function describe(s: CapturedStatement, text: string, why: string[], advice: string): string {
  const shown = text.length > 1500 ? `${text.slice(0, 1500)} …` : text;
  return [
    `    ${shown}`,
    '  why:',
    ...why.map((w) => `    - ${w}`),
    `  sent from: ${s.from.length ? s.from.join(' <- ') : 'unknown (no stack frame in the service)'}`,
    ...(s.test ? [`  first seen in: ${s.test}`] : s.proc === 'service' ? ['  first seen in: a service process spawned by a test (node dist/src/main.js)'] : []),
    `  ${advice}`,
  ].join('\n');
}

const ADVICE_ROUTE =
  'Restrict it to one customer (`customer_id = $n` on every customer-owned table, joins on customer_id), or, if it is cross-customer on purpose, add it to test/statements/allow-list.ts with its reason and say in docs/scaling.md how it runs on Citus.';
const ADVICE_BLOCKED = "Rewrite it so that Citus accepts it (or, for now, allow-list it with citus: 'rewrite' and a TODO for its owner).";

/** Checks captured statements against the schema and the allow-list. */
export function checkStatements(statements: CapturedStatement[], db: DatabaseFacts, allowed: AllowedStatement[] = ALLOWED): StatementCheck {
  const failures: string[] = [];
  const notes: string[] = [];
  const used = new Map<string, CapturedStatement[]>();
  const counts = { dml: 0, router: 0, none: 0, ddl: 0, control: 0, allowed: 0 };
  const routerTables = new Map<string, number>();

  for (const s of statements) {
    const text = collapse(s.text);
    let a: Analysis;
    try {
      a = analyze(s.text, db);
    } catch (err) {
      failures.push(`Statement the check cannot parse (${(err as Error).message}):\n${describe(s, text, ['libpg-query (the PostgreSQL 18 parser) refused it'], 'Check the statement, or teach test/statements/analyze.ts its form.')}`);
      continue;
    }
    counts[a.kind === 'dml' ? 'dml' : a.kind]++;
    if (a.kind !== 'dml') continue;
    if (a.unknownTables.length) {
      failures.push(`Statement on a table test/statements/tables.ts does not classify (${a.unknownTables.join(', ')}):\n${describe(s, text, a.unknownTables.map((t) => `${t}: distributed by customer, reference (catalog) or coordinator-local?`), 'Classify the table in test/statements/tables.ts and docs/scaling.md.')}`);
      continue;
    }
    const entry = a.problems.length || a.blockers.length ? allowedEntry(s, text, allowed) : undefined;
    if (entry) {
      counts.allowed++;
      used.set(entry.id, [...(used.get(entry.id) ?? []), s]);
      if (a.blockers.length && entry.citus !== 'rewrite') {
        failures.push(`Statement allow-listed as '${entry.id}' (${entry.citus}), but Citus refuses it:\n${describe(s, text, a.blockers, ADVICE_BLOCKED)}`);
      } else if (a.problems.length && entry.citus === 'multi-shard' && a.multiShardBlockers.length) {
        failures.push(
          `Statement allow-listed as '${entry.id}' (multi-shard), but Citus cannot run it over several shards:\n${describe(s, text, [...a.problems, ...a.multiShardBlockers], "Make it single-customer, or mark the entry citus: 'rewrite' with a TODO and say in docs/scaling.md how it is to be rewritten.")}`,
        );
      }
      continue;
    }
    if (a.blockers.length) {
      failures.push(`Statement Citus refuses:\n${describe(s, text, [...a.blockers, ...a.problems], ADVICE_BLOCKED)}`);
      continue;
    }
    if (a.problems.length) {
      failures.push(`Statement not router-executable on Citus, and not in the allow-list:\n${describe(s, text, [...a.problems, ...a.multiShardBlockers], ADVICE_ROUTE)}`);
      continue;
    }
    const distributed = a.tables.filter((t) => TABLES[t]?.kind === 'distributed');
    if (distributed.length) {
      counts.router++;
      for (const t of distributed) routerTables.set(t, (routerTables.get(t) ?? 0) + 1);
    } else counts.none++;
  }

  const unused = allowed.filter((e) => !used.has(e.id)).map((e) => e.id);
  if (unused.length) notes.push(`allow-list entries no captured statement matched (stale, or their tests did not run): ${unused.join(', ')}`);

  const schema = checkSchema(db);
  failures.push(...schema.failures);
  notes.push(...schema.notes);

  const summary =
    `Citus statement check: ${statements.length} distinct statements (${counts.dml} DML: ${counts.router} single-customer, ` +
    `${counts.none} on catalog/provider tables only, ${counts.allowed} allow-listed cross-customer; ${counts.ddl} DDL; ${counts.control} control), ` +
    `${Object.keys(TABLES).length} tables classified: ${failures.length ? `${failures.length} FAILURE(S)` : 'OK'}${notes.length ? `; ${notes.length} note(s) in the report` : ''}`;

  const report = [
    summary,
    '',
    ...(failures.length ? ['== Failures', '', ...failures.map((f) => `${f}\n`)] : []),
    '== Allow-listed cross-customer statements',
    ...allowed.map((e) => `- ${e.id} (${e.citus}${e.todo ? `; ${e.todo}` : ''}): ${used.get(e.id)?.length ?? 0} statement(s)${(used.get(e.id) ?? []).map((s) => `\n    ${collapse(s.text).slice(0, 300)}`).join('')}`),
    '',
    '== Single-customer statements per distributed table',
    ...[...routerTables].sort().map(([t, n]) => `- ${t}: ${n}`),
    '',
    '== Notes',
    ...(notes.length ? notes.map((n) => `- ${n}`) : ['- none']),
    '',
  ].join('\n');
  return { failures, notes, report, summary };
}

/** The schema the migrations left, against tables.ts. */
export function checkSchema(db: DatabaseFacts, tables: Record<string, Placement> = TABLES): { failures: string[]; notes: string[] } {
  const failures: string[] = [];
  const notes: string[] = [];
  for (const [table, facts] of db.tables) {
    const p = tables[table];
    if (!p) {
      failures.push(
        `Table ${table} (created by the migrations) is not classified in test/statements/tables.ts: distributed by customer_id (its keys must start with it), reference (catalog), or coordinator-local (provider-keyed); add its Citus call to docs/scaling.md.`,
      );
      continue;
    }
    const hasCustomer = facts.columns.includes('customer_id');
    if (p.kind === 'distributed') {
      if (!facts.columns.includes(p.column)) failures.push(`Distributed table ${table} has no column ${p.column}.`);
      else if (!facts.notNull.has(p.column)) failures.push(`Distributed table ${table}: ${p.column} must be NOT NULL.`);
      const pk = facts.uniques.find((u) => u.primary);
      if (!pk) failures.push(`Distributed table ${table} has no primary key (Citus needs one that includes ${p.column}).`);
      for (const u of facts.uniques) {
        if (!u.columns.includes(p.column)) {
          failures.push(`Distributed table ${table}: ${u.primary ? 'primary key' : 'unique key'} ${u.name} (${u.columns.join(', ')}) does not include ${p.column}; Citus enforces uniqueness only within a shard.`);
        }
      }
    } else if ((p.kind === 'reference' || p.kind === 'internal') && hasCustomer) {
      failures.push(`Table ${table} is classified ${p.kind} but has customer_id: customer-owned data belongs in a table distributed by customer.`);
    } else if (p.kind === 'local' && !hasCustomer) {
      failures.push(`Coordinator-local table ${table} has no customer_id: only catalog (reference) tables may lack it.`);
    }
    for (const fk of facts.foreignKeys) {
      const q = tables[fk.references];
      if (!q) continue;
      const where = `Foreign key ${fk.name} (${table} -> ${fk.references})`;
      if (p.kind === 'distributed' && q.kind === 'distributed') {
        const i = fk.columns.indexOf(p.column);
        if (i < 0 || fk.referencedColumns[i] !== q.column) failures.push(`${where} does not include the distribution column on both sides; Citus allows only co-located foreign keys.`);
      } else if (p.kind === 'distributed' && q.kind === 'local') {
        failures.push(`${where}: Citus allows no foreign key from a distributed table to a coordinator-local one.`);
      } else if (p.kind === 'reference' && q.kind !== 'reference') {
        failures.push(`${where}: a reference table may reference only reference tables on Citus.`);
      } else if (p.kind === 'local' && q.kind === 'distributed' && !p.foreignKeysDroppedOnCitus?.[fk.name]) {
        failures.push(`${where}: Citus allows no foreign key from a coordinator-local table to a distributed one; list it in foreignKeysDroppedOnCitus with what enforces it instead, and drop it in docs/scaling.md's procedure.`);
      }
    }
    if (p.kind === 'local') {
      for (const name of Object.keys(p.foreignKeysDroppedOnCitus ?? {})) {
        if (!facts.foreignKeys.some((f) => f.name === name)) notes.push(`tables.ts lists foreign key ${name} of ${table}, which no longer exists`);
      }
    }
    if (facts.triggers.length && (p.kind === 'distributed' || p.kind === 'reference')) {
      notes.push(
        p.kind === 'reference'
          ? `triggers on reference table ${table} (${facts.triggers.join(', ')}): Citus refuses triggers on reference tables; see docs/scaling.md ("Triggers, NOTIFY and advisory locks")`
          : `triggers on distributed table ${table} (${facts.triggers.join(', ')}): they need citus.enable_unsafe_triggers and run on the shard's node; see docs/scaling.md ("Triggers, NOTIFY and advisory locks")`,
      );
    }
  }
  for (const table of Object.keys(tables)) if (!db.tables.has(table)) notes.push(`tables.ts classifies ${table}, which the migrations do not create`);
  return { failures, notes };
}

/**
 * The teardown step: reads the capture and the migrated template database (`templateDb`, the one
 * every test database is copied from), checks, writes report.txt.
 */
export async function checkCapturedStatements(dir: string, adminUrl: string, templateDb: string): Promise<StatementCheck> {
  const { statements, processes } = readCapture(dir);
  if (!statements.length) {
    return { failures: [], notes: [], report: '', summary: 'Citus statement check: no statement captured (no test started the service)' };
  }
  await loadModule();
  let db: DatabaseFacts;
  try {
    db = await readDatabase(withDatabase(adminUrl, templateDb));
  } catch (err) {
    if ((err as { code?: string }).code !== '3D000') throw err;
    const summary = `Citus statement check: skipped, ${statements.length} statements captured but no test built the template database ${templateDb} (run one that uses startTestApp)`;
    return { failures: [], notes: [], report: summary, summary };
  }
  if (!db.tables.size) throw new Error(`Citus statement check: the template database ${templateDb} has no tables`);
  const result = checkStatements(statements, db);
  result.summary = result.summary.replace('distinct statements', `distinct statements from ${processes} process(es)`);
  fs.writeFileSync(path.join(dir, 'report.txt'), result.report.replace(/^[^\n]*/, result.summary));
  return result;
}
