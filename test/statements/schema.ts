import { Client } from 'pg';
import type { Schema } from './analyze';

export interface TableFacts {
  columns: string[];
  /** Primary key and unique constraints / unique indexes: name and columns. */
  uniques: Array<{ name: string; columns: string[]; primary: boolean }>;
  foreignKeys: Array<{ name: string; columns: string[]; references: string; referencedColumns: string[] }>;
  triggers: string[];
  notNull: Set<string>;
}

export interface DatabaseFacts extends Schema {
  tables: Map<string, TableFacts>;
}

/** What the migrations built: tables of the public schema, their keys, foreign keys and triggers. */
export async function readDatabase(url: string): Promise<DatabaseFacts> {
  const db = new Client({ connectionString: url, application_name: 'tollgate-statement-check' });
  await db.connect();
  try {
    const cols = await db.query<{ table: string; column: string; not_null: boolean }>(
      `select c.relname as table, a.attname as column, a.attnotnull as not_null
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
         join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
        where n.nspname = 'public' and c.relkind in ('r', 'p')
        order by c.relname, a.attnum`,
    );
    const uniques = await db.query<{ table: string; name: string; columns: string[]; primary: boolean }>(
      `select c.relname as table, i.relname as name, x.indisprimary as primary,
              array(select a.attname from unnest(x.indkey) with ordinality k(attnum, ord)
                      join pg_attribute a on a.attrelid = c.oid and a.attnum = k.attnum order by k.ord)::text[] as columns
         from pg_index x join pg_class c on c.oid = x.indrelid join pg_class i on i.oid = x.indexrelid
         join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and x.indisunique`,
    );
    const fks = await db.query<{ table: string; name: string; columns: string[]; references: string; referenced_columns: string[] }>(
      `select c.relname as table, k.conname as name, r.relname as references,
              array(select a.attname from unnest(k.conkey) with ordinality u(attnum, ord)
                      join pg_attribute a on a.attrelid = c.oid and a.attnum = u.attnum order by u.ord)::text[] as columns,
              array(select a.attname from unnest(k.confkey) with ordinality u(attnum, ord)
                      join pg_attribute a on a.attrelid = r.oid and a.attnum = u.attnum order by u.ord)::text[] as referenced_columns
         from pg_constraint k join pg_class c on c.oid = k.conrelid join pg_class r on r.oid = k.confrelid
         join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and k.contype = 'f'`,
    );
    const triggers = await db.query<{ table: string; name: string }>(
      `select c.relname as table, t.tgname as name
         from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and not t.tgisinternal`,
    );
    const procs = await db.query<{ name: string; volatility: string }>(`select proname as name, provolatile as volatility from pg_proc`);

    const tables = new Map<string, TableFacts>();
    const facts = (t: string) => {
      let f = tables.get(t);
      if (!f) tables.set(t, (f = { columns: [], uniques: [], foreignKeys: [], triggers: [], notNull: new Set() }));
      return f;
    };
    for (const r of cols.rows) {
      const f = facts(r.table);
      f.columns.push(r.column);
      if (r.not_null) f.notNull.add(r.column);
    }
    for (const r of uniques.rows) facts(r.table).uniques.push({ name: r.name, columns: r.columns, primary: r.primary });
    for (const r of fks.rows) facts(r.table).foreignKeys.push({ name: r.name, columns: r.columns, references: r.references, referencedColumns: r.referenced_columns });
    for (const r of triggers.rows) facts(r.table).triggers.push(r.name);
    const volatility = new Map<string, Set<string>>();
    for (const p of procs.rows) {
      let v = volatility.get(p.name);
      if (!v) volatility.set(p.name, (v = new Set()));
      v.add(p.volatility);
    }
    return { tables, columns: new Map([...tables].map(([t, f]) => [t, f.columns])), volatility };
  } finally {
    await db.end();
  }
}
