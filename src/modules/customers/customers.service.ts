import type { Db } from '../../db/sql';
import { badInput } from '../../shared/errors';
import { validateCustomerId } from '../entitlements/entitlements.service';

/** Customers: the product's own ids. Also created implicitly by the first grant or plan assignment. */

export interface CustomerRow {
  id: string;
  name: string | null;
  email: string | null;
  metadata: Record<string, unknown> | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface CustomerSpec {
  id: string;
  name?: string | null;
  email?: string | null;
  metadata?: Record<string, unknown> | null;
}

const EMAIL_RE = /^[^\s@]+@[^\s@]+$/;

function toRow(r: Record<string, unknown>): CustomerRow {
  return {
    id: r.id as string,
    name: (r.name as string | null) ?? null,
    email: (r.email as string | null) ?? null,
    metadata: (r.metadata as Record<string, unknown> | null) ?? null,
    createdAt: r.created_at as Date,
    updatedAt: r.updated_at as Date,
  };
}

export class CustomersService {
  constructor(private readonly db: Db) {}

  async upsert(spec: CustomerSpec): Promise<CustomerRow> {
    validateCustomerId(spec.id);
    if (spec.name != null && (typeof spec.name !== 'string' || spec.name.length > 200)) throw badInput('name must be at most 200 characters', { field: 'name' });
    if (spec.email != null && (spec.email.length > 320 || !EMAIL_RE.test(spec.email))) throw badInput('email is not a valid address', { field: 'email' });
    if (spec.metadata != null) {
      if (typeof spec.metadata !== 'object' || Array.isArray(spec.metadata)) throw badInput('metadata must be a JSON object', { field: 'metadata' });
      if (JSON.stringify(spec.metadata).length > 16_384) throw badInput('metadata must be at most 16384 bytes of JSON', { field: 'metadata' });
    }
    const [row] = await this.db.query(
      `insert into customer (id, name, email, metadata, created_at, updated_at) values ($1, $2, $3, $4, now(), now())
       on conflict (id) do update set name = excluded.name, email = excluded.email, metadata = excluded.metadata, updated_at = now()
       returning *`,
      [spec.id, spec.name ?? null, spec.email ?? null, spec.metadata == null ? null : JSON.stringify(spec.metadata)],
    );
    return toRow(row);
  }



  /**
   * Customers whose id starts with `search`, or whose name or email contains it (case-insensitive),
   * by id, keyset-paged (the dashboard's search).
   */
  async search(args: { search?: string | null; first: number; after?: string | null }): Promise<{ items: CustomerRow[]; hasNextPage: boolean; endCursor: string | null }> {
    if (!Number.isInteger(args.first) || args.first < 1 || args.first > 200) throw badInput('first must be between 1 and 200', { field: 'first' });
    const search = args.search?.trim() || null;
    if (search !== null && search.length > 200) throw badInput('search must be at most 200 characters', { field: 'search' });
    const like = search === null ? null : search.replace(/[\\%_]/g, (c) => `\\${c}`);
    const rows = await this.db.query(
      `select * from customer
        where ($1::text is null or id ilike $1 || '%' or name ilike '%' || $1 || '%' or email ilike '%' || $1 || '%')
          and ($2::text is null or id > $2)
        order by id limit $3`,
      [like, args.after ?? null, args.first + 1],
    );
    const items = rows.slice(0, args.first).map(toRow);
    return { items, hasNextPage: rows.length > args.first, endCursor: items.length ? items[items.length - 1].id : null };
  }

  async getMany(ids: readonly string[]): Promise<Map<string, CustomerRow>> {
    const rows = await this.db.query(`select * from customer where id = any($1::text[])`, [ids]);
    return new Map(rows.map((r) => [r.id as string, toRow(r)]));
  }

}
