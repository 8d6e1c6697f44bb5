import type { Pool } from 'pg';

/**
 * The naive implementation of the same AI product (issue 14 §3), the way it is usually first
 * written: one balance column per customer, no ledger, no idempotency keys, no reservations,
 * webhooks applied as they arrive. It runs on the same PostgreSQL as Tollgate, in its own schema
 * `naive`. Every flaw here is deliberate and is the flaw the leakage simulation measures:
 *
 * - `if (balance >= cost) { balance = balance - cost; run() }` as read, then write: two concurrent
 *   requests both pass the check and the second write overwrites the first (lost update).
 * - A retried or double-clicked request is a new request: it is charged (and run) again.
 * - The charge is taken before the AI call: a call that times out is charged and delivers nothing.
 * - Token usage is reported after the call: a crash between the call and the report delivers free work.
 * - Webhooks are applied as they come: a duplicate checkout or invoice grants twice, a refund that
 *   arrives before its checkout finds nothing to take back, a subscription update that arrives after
 *   the deletion turns access back on.
 * - Overage (a Pro balance below zero) is billed from the balance column at the end of the period.
 */

export const CREDIT_MC = 1000; // milli-credits per credit: token costs are 0.003 credit
export const PRO_ALLOWANCE_MC = 5000 * CREDIT_MC;
export const PRO_OVERAGE_LIMIT_MC = 2000 * CREDIT_MC;
export const PACK_MC = 1000 * CREDIT_MC;

export type Plan = 'pack' | 'pro';

export interface StripeLike {
  id: string;
  type: string;
  data: { object: Record<string, unknown> };
}

export interface AiCall {
  /** Runs the provider call; throws when it times out. */
  (): Promise<void>;
}

export class NaiveProduct {
  constructor(
    private readonly pool: Pool,
    /** Time the application spends between reading the balance and writing it (validation, logging...). */
    private readonly checkToWriteMs = 3,
  ) {}

  async setup(): Promise<void> {
    await this.pool.query(`create schema if not exists naive`);
    await this.pool.query(`drop table if exists naive.customer, naive.purchase`);
    await this.pool.query(`create table naive.customer (id text primary key, stripe_customer text not null, plan text not null, active boolean not null default true, balance numeric not null default 0)`);
    // No unique key on the payment: a repeated checkout is a second purchase.
    await this.pool.query(`create table naive.purchase (payment_intent text not null, customer_id text not null, credits numeric not null, refunded boolean not null default false)`);
  }

  async createCustomer(id: string, plan: Plan, stripeCustomer: string): Promise<void> {
    await this.pool.query(`insert into naive.customer (id, stripe_customer, plan, active) values ($1, $2, $3, $4)`, [id, stripeCustomer, plan, plan === 'pack']);
  }

  /** milli-credits */
  async balance(id: string): Promise<number> {
    const r = await this.pool.query<{ b: string }>(`select (balance * 1000)::bigint::text as b from naive.customer where id = $1`, [id]);
    return Number(r.rows[0].b);
  }

  async active(id: string): Promise<boolean> {
    const r = await this.pool.query<{ active: boolean }>(`select active from naive.customer where id = $1`, [id]);
    return r.rows[0].active;
  }

  /** The webhook handler: every delivery applied as it comes, in the order it comes. */
  async webhook(e: StripeLike): Promise<void> {
    const o = e.data.object;
    switch (e.type) {
      case 'checkout.session.completed': {
        const customer = String(o.client_reference_id);
        await this.pool.query(`insert into naive.purchase (payment_intent, customer_id, credits) values ($1, $2, 1000)`, [o.payment_intent, customer]);
        await this.pool.query(`update naive.customer set balance = balance + 1000 where id = $1`, [customer]);
        return;
      }
      case 'charge.refunded': {
        const r = await this.pool.query<{ customer_id: string; credits: string }>(
          `update naive.purchase set refunded = true where ctid = (select ctid from naive.purchase where payment_intent = $1 and not refunded limit 1) returning customer_id, credits::text`,
          [o.payment_intent],
        );
        for (const row of r.rows) await this.pool.query(`update naive.customer set balance = balance - $2 where id = $1`, [row.customer_id, row.credits]);
        return; // a refund of a purchase it has not seen yet: nothing to take back
      }
      case 'customer.subscription.created':
      case 'customer.subscription.updated': {
        const customer = String((o.metadata as Record<string, string>).customer_id);
        await this.pool.query(`update naive.customer set active = $2 where id = $1`, [customer, o.status === 'active' || o.status === 'trialing']);
        return;
      }
      case 'customer.subscription.deleted': {
        const customer = String((o.metadata as Record<string, string>).customer_id);
        await this.pool.query(`update naive.customer set active = false where id = $1`, [customer]);
        return;
      }
      case 'invoice.paid': {
        // The period's allowance, added when the invoice is paid.
        await this.pool.query(`update naive.customer set balance = balance + 5000 where stripe_customer = $1`, [o.customer]);
        return;
      }
      default:
        return;
    }
  }

  private async floorOf(plan: Plan): Promise<number> {
    return plan === 'pro' ? -PRO_OVERAGE_LIMIT_MC : 0;
  }

  /**
   * An operation of known cost (text, image, video): check, charge, run. Returns whether the work
   * was delivered (false: denied or the AI call failed after the charge).
   */
  async runFixed(customerId: string, costMc: number, ai: AiCall): Promise<{ allowed: boolean; delivered: boolean }> {
    const r = await this.pool.query<{ plan: Plan; active: boolean; b: string }>(`select plan, active, (balance * 1000)::bigint::text as b from naive.customer where id = $1`, [customerId]);
    const { plan, active } = r.rows[0];
    const balance = Number(r.rows[0].b);
    if (!active || balance - costMc < (await this.floorOf(plan))) return { allowed: false, delivered: false };
    await new Promise((res) => setTimeout(res, this.checkToWriteMs));
    await this.pool.query(`update naive.customer set balance = $2::numeric / 1000 where id = $1`, [customerId, balance - costMc]);
    try {
      await ai();
    } catch {
      return { allowed: true, delivered: false }; // charged; the customer got nothing
    }
    return { allowed: true, delivered: true };
  }

  /**
   * Token usage: check there is something left, run, report what was used. `crash` stops the
   * process between the call and the report.
   */
  async runTokens(customerId: string, tokens: number, ai: AiCall, crash: boolean): Promise<{ allowed: boolean; delivered: boolean }> {
    const r = await this.pool.query<{ plan: Plan; active: boolean; b: string }>(`select plan, active, (balance * 1000)::bigint::text as b from naive.customer where id = $1`, [customerId]);
    const { plan, active } = r.rows[0];
    if (!active || Number(r.rows[0].b) <= (await this.floorOf(plan))) return { allowed: false, delivered: false };
    try {
      await ai();
    } catch {
      return { allowed: true, delivered: false };
    }
    if (crash) return { allowed: true, delivered: true };
    await this.pool.query(`update naive.customer set balance = balance - $2::numeric * 0.003 where id = $1`, [customerId, tokens]);
    return { allowed: true, delivered: true };
  }
}
