import type { EntityManager } from '@mikro-orm/postgresql';
import type { Knex } from '@mikro-orm/knex';
import { tracedStatement, tracingEnabled } from '../observability/tracing';
import { types as pgTypes, type ClientBase, type CustomTypesConfig, type QueryResult } from 'pg';
import { pgErrorCode } from '../shared/db-errors';
import type { Orm } from './orm';

/**
 * Hand-written SQL for the hot paths and the ledger, on MikroORM's own connection pool.
 *
 * Statements are declared once with `statement(name, text)` and run as named prepared statements:
 * PostgreSQL parses and plans each once per connection, which matters more than anything else on
 * the hot path (see docs/performance.md). Inside `Db.transaction`, SQL and the ORM share one
 * connection and one transaction.
 */

export interface Statement {
  readonly name: string;
  readonly text: string;
}

const registry = new Map<string, string>();

export function statement(name: string, text: string): Statement {
  const existing = registry.get(name);
  if (existing !== undefined && existing !== text) {
    throw new Error(`SQL statement name '${name}' is used for two different texts`);
  }
  registry.set(name, text);
  return { name, text };
}

export interface Sql {
  /** Runs a declared statement (prepared) or ad-hoc text (unprepared). */
  query<R = Record<string, unknown>>(stmt: Statement | string, values?: unknown[]): Promise<R[]>;
}

/**
 * MikroORM makes pg return timestamps as strings, process-wide; hand-written SQL wants Dates.
 * Every connection runs in UTC, so timestamptz text always ends in +00.
 */
const parseTimestamp = (text: string): Date => new Date(text.replace(' ', 'T').replace(/\+00$/, 'Z'));
const TIMESTAMPTZ = 1184;
const TIMESTAMP = 1114;
const sqlTypes = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === TIMESTAMPTZ || oid === TIMESTAMP) return parseTimestamp;
    return (pgTypes.getTypeParser as (oid: number, format?: string) => unknown)(oid, format);
  },
} as unknown as CustomTypesConfig;

class ClientSql implements Sql {
  constructor(private readonly client: ClientBase) {}

  async query<R>(stmt: Statement | string, values: unknown[] = []): Promise<R[]> {
    if (tracingEnabled()) return tracedStatement(typeof stmt === 'string' ? 'sql' : stmt.name, () => this.send<R>(stmt, values));
    return this.send<R>(stmt, values);
  }

  private async send<R>(stmt: Statement | string, values: unknown[]): Promise<R[]> {
    const result: QueryResult =
      typeof stmt === 'string'
        ? await this.client.query({ text: stmt, values, types: sqlTypes })
        : await this.client.query({ name: stmt.name, text: stmt.text, values, types: sqlTypes });
    return result.rows as R[];
  }
}

const RETRYABLE = new Set(['40001', '40P01']);

export class Db {
  private readonly knex: Knex;
  private queryCount = 0;
  /**
   * Awaited after every committed transaction, before its result is returned: the state cache's
   * listener barrier, so this process has handled its own change notifications before it answers.
   */
  afterCommit: (() => Promise<unknown>) | null = null;

  constructor(readonly orm: Orm) {
    this.knex = orm.em.getConnection().getKnex();
  }

  /** Number of statements sent through `query`/`run` since start (tests count round trips with it). */
  get statementsSent(): number {
    return this.queryCount;
  }

  /** Runs `fn` with one pooled connection (no transaction: each statement commits on its own). */
  async run<T>(fn: (sql: Sql) => Promise<T>): Promise<T> {
    const client = (await this.knex.client.acquireConnection()) as ClientBase;
    try {
      return await fn(this.counting(new ClientSql(client)));
    } finally {
      await this.knex.client.releaseConnection(client);
    }
  }

  /** One statement on a pooled connection. */
  async query<R = Record<string, unknown>>(stmt: Statement | string, values?: unknown[]): Promise<R[]> {
    return this.run((sql) => sql.query<R>(stmt, values));
  }

  /**
   * One transaction with both an EntityManager (a fresh fork) and raw SQL on the same connection.
   * Serialization failures and deadlocks are retried a few times; `fn` must be safe to re-run.
   */
  async transaction<T>(fn: (tx: Tx) => Promise<T>, options: { retries?: number } = {}): Promise<T> {
    const retries = options.retries ?? 3;
    for (let attempt = 0; ; attempt++) {
      const em = this.orm.em.fork({ clear: true }) as EntityManager;
      try {
        const result = await em.transactional(async (tem) => {
          const trx = tem.getTransactionContext<Knex.Transaction>()!;
          const client = (await trx.client.acquireConnection()) as ClientBase;
          return fn({ em: tem as EntityManager, sql: this.counting(new ClientSql(client)) });
        });
        if (this.afterCommit) await this.afterCommit();
        return result;
      } catch (err) {
        const code = pgErrorCode(err);
        if (code && RETRYABLE.has(code) && attempt < retries) continue;
        throw err;
      }
    }
  }

  private counting(sql: Sql): Sql {
    return {
      query: (stmt, values) => {
        this.queryCount += 1;
        return sql.query(stmt, values);
      },
    };
  }
}

export interface Tx {
  em: EntityManager;
  sql: Sql;
}
