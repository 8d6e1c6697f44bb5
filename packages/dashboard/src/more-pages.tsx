import { useEffect, useRef, useState, type FormEvent } from 'react';
import { Chart } from 'chart.js';
import { ApiError, gql } from './api';
import {
  AssignPlanDocument, CatalogDocument, PaymentEventDocument, CreateCustomerTokenDocument, CustomerExtrasDocument, PaymentEventsDocument,
  ReplayPaymentEventDocument, ReplayWebhookDeliveryDocument, RevenueDocument, SetCostRateDocument, UsageByIdDocument,
  HistoryDocument, InvoiceLineEntriesDocument, InvoiceViewDocument, LeakageDocument, UpsertCreditPackDocument, UpsertFeatureDocument, UpsertPlanDocument, UsageEventsDocument, WebhooksDocument, type FeatureType, type MarginGroup, type PaymentEventStatus,
} from './generated/graphql';
import { href, navigate, useCursor } from './router';
import { useIsAdmin } from './role';
import { fmtTime, Loadable, Pager, Section, useLoad } from './ui';

const STATUSES: PaymentEventStatus[] = ['RECEIVED', 'APPLIED', 'IGNORED', 'PENDING_LINK', 'FAILED'];

/** Provider events with a status filter and cursor paging (both in the URL), replay of a failed one. */
export function Payments({ status, after }: { status: string; after: string }) {
  const state = useLoad(() => gql(PaymentEventsDocument, { status: (status || null) as PaymentEventStatus | null, first: 25, after: after || null }), [status, after]);
  const [notice, setNotice] = useState<string | null>(null);
  const replay = async (id: string) => {
    try {
      const r = await gql(ReplayPaymentEventDocument, { id });
      setNotice(`Replayed ${id}: ${r.replayPaymentEvent.status}`);
      state.reload();
    } catch (err) {
      setNotice(`Not replayed: ${(err as Error).message}`);
    }
  };
  return (
    <>
      <h1>Payments</h1>
      <label htmlFor="status">Status</label>{' '}
      <select id="status" value={status} onChange={(e) => navigate(`/payments${e.target.value ? `?status=${e.target.value}` : ''}`)}>
        <option value="">All</option>
        {STATUSES.map((s) => <option key={s} value={s}>{s}</option>)}
      </select>
      {notice && <p role="status">{notice}</p>}
      <Loadable state={state} empty={(d) => d.paymentEvents.items.length === 0}>
        {(d) => (
          <>
            <table>
              <thead><tr><th scope="col">Received</th><th scope="col">Event</th><th scope="col">Type</th><th scope="col">Customer</th><th scope="col">Status</th><th scope="col">What it did</th><th scope="col"><span className="sr-only">Actions</span></th></tr></thead>
              <tbody>
                {d.paymentEvents.items.map((e) => (
                  <tr key={e.id}>
                    <td>{fmtTime(e.receivedAt)}</td><td><a {...href(`/payments/${encodeURIComponent(e.provider)}/${encodeURIComponent(e.id)}`)}><code>{e.id}</code></a></td><td>{e.type}</td>
                    <td>{e.customerId ? <a {...href(`/customers/${encodeURIComponent(e.customerId)}`)}>{e.customerId}</a> : '—'}</td>
                    <td>{e.status}</td><td>{e.error ?? e.detail ?? ''}</td>
                    <td>{e.status === 'FAILED' && <button type="button" onClick={() => replay(e.id)}>Replay {e.id}</button>}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            {d.paymentEvents.hasNextPage && <a {...href(`/payments?${new URLSearchParams({ ...(status ? { status } : {}), after: d.paymentEvents.endCursor ?? '' })}`)}>Older events</a>}
          </>
        )}
      </Loadable>
    </>
  );
}

export function Webhooks() {
  const cursor = useCursor('after');
  const state = useLoad(() => gql(WebhooksDocument, { after: cursor.after }), [cursor.after]);
  const [notice, setNotice] = useState<string | null>(null);
  const replay = async (id: string) => {
    await gql(ReplayWebhookDeliveryDocument, { id }).then(() => setNotice('Queued again.'), (e: Error) => setNotice(e.message));
    state.reload();
  };
  return (
    <>
      <h1>Webhooks</h1>
      {notice && <p role="status">{notice}</p>}
      <Loadable state={state}>
        {(d) => (
          <>
            <Section title="Endpoints" id="endpoints">
              {d.webhookEndpoints.length === 0 ? <p className="muted">No endpoint yet (createWebhookEndpoint).</p> : (
                <table>
                  <thead><tr><th scope="col">URL</th><th scope="col">Events</th><th scope="col">State</th></tr></thead>
                  <tbody>{d.webhookEndpoints.map((e) => <tr key={e.id}><td>{e.url}</td><td>{e.eventTypes.join(', ')}</td><td>{e.enabled ? 'enabled' : `disabled: ${e.disabledReason ?? ''}`}</td></tr>)}</tbody>
                </table>
              )}
            </Section>
            <Section title="Recent deliveries" id="deliveries">
              {d.webhookDeliveries.items.length === 0 ? <p className="muted">No delivery yet.</p> : (
                <table>
                  <thead><tr><th scope="col">Created</th><th scope="col">Event</th><th scope="col">Status</th><th scope="col">Attempts</th><th scope="col"><span className="sr-only">Actions</span></th></tr></thead>
                  <tbody>
                    {d.webhookDeliveries.items.map((x) => (
                      <tr key={x.id}>
                        <td>{fmtTime(x.createdAt)}</td><td>{x.eventType} <code>{x.eventId}</code></td><td>{x.status}</td>
                        <td>{x.attemptLog.map((a) => `${a.attempt}: ${a.statusCode ?? a.error ?? ''} (${a.durationMs} ms)`).join('; ')}</td>
                        <td><button type="button" onClick={() => replay(x.id)}>Replay</button></td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
              <Pager cursor={cursor} page={d.webhookDeliveries} newest="Newest deliveries" older="Older deliveries" />
            </Section>
          </>
        )}
      </Loadable>
    </>
  );
}

const GROUPS: MarginGroup[] = ['CUSTOMER', 'FEATURE', 'MODEL'];

/** The leakage report per cause with its examples linked, and the margin by customer, feature or model. */
export function Revenue({ by }: { by: string }) {
  const group = (GROUPS.includes(by as MarginGroup) ? by : 'CUSTOMER') as MarginGroup;
  const to = new Date(Math.ceil(Date.now() / 3_600_000) * 3_600_000 + 3_600_000).toISOString();
  const from = new Date(Date.now() - 30 * 86_400_000).toISOString();
  const cursor = useCursor('after');
  const state = useLoad(() => gql(RevenueDocument, { from, to, groupBy: [group], after: cursor.after }), [group, cursor.after]);
  const admin = useIsAdmin();
  const leakage = useLoad(() => (admin ? gql(LeakageDocument, { from, to }) : Promise.resolve(null)), [admin]);
  const canvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    if (!canvas.current || !state.data) return;
    const items = state.data.margin.items.slice(0, 20);
    const chart = new Chart(canvas.current, {
      type: 'bar',
      data: { labels: items.map((i) => i.group[0]?.value || '(none)'), datasets: [{ label: 'Margin', data: items.map((i) => Number(i.margin)), backgroundColor: '#2f855a' }] },
      options: { animation: false, plugins: { legend: { position: 'bottom' } } },
    });
    return () => chart.destroy();
  }, [state.data]);
  return (
    <>
      <h1>Revenue integrity</h1>
      <Loadable state={state}>
        {(d) => (
          <>
            {admin && (
              <Loadable state={leakage}>
                {(l) => l && (
            <Section title="Leakage, last 30 days" id="leakage-causes">
              <table>
                <thead><tr><th scope="col">Cause</th><th scope="col">Status</th><th scope="col">Count</th><th scope="col">Amount</th><th scope="col">Examples</th></tr></thead>
                <tbody>
                  {l.leakageReport.rows.map((r) => (
                    <tr key={`${r.cause}${r.currency}`}>
                      <td>{r.cause}</td><td>{r.status}</td><td>{r.count}</td><td>{r.amount} {r.currency ?? ''}</td>
                      <td>{r.examples.slice(0, 5).map((x) => (
                        <span key={x.id}>
                          {x.kind === 'USAGE_EVENT' && x.customerId ? <a {...href(`/usage-id/${encodeURIComponent(x.customerId)}/${encodeURIComponent(x.id)}`)}>usage</a>
                            : x.customerId ? <a {...href(`/customers/${encodeURIComponent(x.customerId)}`)}>{x.kind.toLowerCase()}</a> : <code>{x.id}</code>}{' '}
                        </span>
                      ))}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </Section>
                )}
              </Loadable>
            )}
            <Section title="Margin" id="margin-by">
              <label htmlFor="by">By</label>{' '}
              <select id="by" value={group} onChange={(e) => navigate(`/revenue?by=${e.target.value}`)} aria-describedby="margin-by">
                {GROUPS.map((g) => <option key={g} value={g}>{g.toLowerCase()}</option>)}
              </select>
              <canvas ref={canvas} role="img" aria-label={`Margin by ${group.toLowerCase()}`} />
              <table>
                <thead><tr><th scope="col">{group.toLowerCase()}</th><th scope="col">Revenue</th><th scope="col">Provider cost</th><th scope="col">Margin</th><th scope="col">Usages</th></tr></thead>
                <tbody>{d.margin.items.map((i, n) => <tr key={n}><td>{i.group[0]?.value || '(none)'}</td><td>{i.revenue} {i.currency ?? ''}</td><td>{i.providerCost}</td><td>{i.margin}{i.marginPercent ? ` (${Number(i.marginPercent).toFixed(1)} %)` : ''}</td><td>{i.count}</td></tr>)}</tbody>
              </table>
              <Pager cursor={cursor} page={d.margin} newest="First groups" older="Next groups" />
            </Section>
          </>
        )}
      </Loadable>
    </>
  );
}

/** A usage event named by its id (the leakage report's examples): on to its "why" page by key. */
export function UsageById({ customerId, id }: { customerId: string; id: string }) {
  const state = useLoad(() => gql(UsageByIdDocument, { customerId, id }), [customerId, id]);
  useEffect(() => {
    const key = state.data?.usageEvent?.idempotencyKey;
    if (key) navigate(`/usage/${encodeURIComponent(customerId)}/${encodeURIComponent(key)}`);
  }, [state.data, customerId]);
  return <Loadable state={state} empty={(d) => !d.usageEvent}>{() => <p role="status">Opening…</p>}</Loadable>;
}

/** The catalog, with the cost table's form: the server's validation errors are shown in place. */
export function Catalog() {
  const state = useLoad(() => gql(CatalogDocument), []);
  const [error, setError] = useState<{ message: string; code: string } | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const save = async (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    setError(null);
    setSaved(null);
    try {
      const r = await gql(SetCostRateDocument, { input: { feature: String(f.get('feature')), model: String(f.get('model') ?? ''), currency: String(f.get('currency')), unitCost: String(f.get('unitCost')) } });
      setSaved(`Saved: ${r.setCostRate.feature} ${r.setCostRate.model || '(any model)'} at ${r.setCostRate.unitCost} ${r.setCostRate.currency}`);
      state.reload();
    } catch (err) {
      setError({ message: (err as Error).message, code: err instanceof ApiError ? err.code : 'ERROR' });
    }
  };
  return (
    <>
      <h1>Catalog</h1>
      <Loadable state={state}>
        {(d) => (
          <>
            <FeatureForm onSaved={state.reload} />
            <Section title="Features" id="features">
              <table><thead><tr><th scope="col">Key</th><th scope="col">Name</th><th scope="col">Type</th><th scope="col">Pool</th></tr></thead>
                <tbody>{d.features.map((x) => <tr key={x.key}><td>{x.key}</td><td>{x.name}</td><td>{x.type}</td><td>{x.creditPool ?? '—'}</td></tr>)}</tbody></table>
            </Section>
            <Section title="Plans" id="plans">
              <table><thead><tr><th scope="col">Key</th><th scope="col">Price</th><th scope="col">Entitlements</th></tr></thead>
                <tbody>{d.plans.map((p) => <tr key={p.key}><td>{p.key}</td><td>{p.basePrice} {p.currency ?? ''}</td><td>{p.entitlements.map((e) => `${e.feature}${e.allowance ? ` ${e.allowance}/${e.resetPeriod?.toLowerCase() ?? ''}` : ''}`).join(', ')}</td></tr>)}</tbody></table>
            </Section>
            <JsonEditor
              title="Edit a plan"
              id="plan-editor"
              items={d.plans.map((p) => ({ key: p.key, value: withoutNulls(p) }))}
              save={async (input) => `Saved plan ${(await gql(UpsertPlanDocument, { input: input as never })).upsertPlan.key}.`}
              onSaved={state.reload}
            />
            <Section title="Credit packs" id="packs">
              <ul>{d.creditPacks.map((p) => <li key={p.key}>{p.name}: {p.amount} {p.feature}{p.price ? ` for ${p.price} ${p.currency}` : ''}</li>)}</ul>
            </Section>
            <JsonEditor
              title="Edit a credit pack"
              id="pack-editor"
              items={d.creditPacks.map((p) => ({ key: p.key, value: withoutNulls(p) }))}
              save={async (input) => `Saved pack ${(await gql(UpsertCreditPackDocument, { input: input as never })).upsertCreditPack.key}.`}
              onSaved={state.reload}
            />
            <Section title="Cost table" id="costs">
              <table><thead><tr><th scope="col">Feature</th><th scope="col">Model</th><th scope="col">Unit cost</th><th scope="col">From</th></tr></thead>
                <tbody>{d.costRates.map((c, i) => <tr key={i}><td>{c.feature}</td><td>{c.model || '(any)'}</td><td>{c.unitCost} {c.currency}</td><td>{fmtTime(c.effectiveFrom)}</td></tr>)}</tbody></table>
              <form onSubmit={save} className="inline" aria-describedby={error ? 'cost-error' : undefined}>
                <label htmlFor="cf">Feature</label> <input id="cf" name="feature" required />{' '}
                <label htmlFor="cm">Model</label> <input id="cm" name="model" />{' '}
                <label htmlFor="cc">Currency</label> <input id="cc" name="currency" defaultValue="USD" required size={4} />{' '}
                <label htmlFor="cu">Unit cost</label> <input id="cu" name="unitCost" required inputMode="decimal" size={10} />{' '}
                <button type="submit">Set rate</button>
                {error && <p id="cost-error" className="error" role="alert">{error.message} ({error.code})</p>}
                {saved && <p role="status">{saved}</p>}
              </form>
            </Section>
          </>
        )}
      </Loadable>
    </>
  );
}

/** A customer's past invoices, plan assignment and a customer token (for the portal). */
export function CustomerExtras({ id, onChanged }: { id: string; onChanged: () => void }) {
  const admin = useIsAdmin();
  const cursor = useCursor('invoices');
  const state = useLoad(() => gql(CustomerExtrasDocument, { id, after: cursor.after }), [id, cursor.after]);
  const [notice, setNotice] = useState<string | null>(null);
  const [token, setToken] = useState<string | null>(null);
  const assign = async (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const plan = String(new FormData(e.currentTarget).get('plan'));
    if (!confirm(`Assign plan ${plan} to ${id}?`)) return;
    await gql(AssignPlanDocument, { customerId: id, plan }).then(() => { setNotice(`Plan ${plan} assigned.`); onChanged(); }, (err: Error) => setNotice(`Not assigned: ${err.message}`));
  };
  const mint = async () => {
    await gql(CreateCustomerTokenDocument, { customerId: id }).then((r) => setToken(r.createCustomerToken), (err: Error) => setNotice(err.message));
  };
  return (
    <Loadable state={state}>
      {(d) => (
        <>
          {notice && <p role="status">{notice}</p>}
          <Section title="Invoices" id="invoices">
            {d.invoices.items.length === 0 ? <p className="muted">No finalized invoice yet.</p> : (
              <table><thead><tr><th scope="col">Number</th><th scope="col">Period</th><th scope="col">Status</th><th scope="col">Total</th></tr></thead>
                <tbody>{d.invoices.items.map((i) => <tr key={i.id ?? i.number}><td>{i.id ? <a {...href(`/invoices/${encodeURIComponent(i.id)}`)}>#{i.number}</a> : i.number}</td><td>{fmtTime(i.periodStart)} – {fmtTime(i.periodEnd)}</td><td>{i.status}</td><td>{i.total} {i.currency}</td></tr>)}</tbody></table>
            )}
            <Pager cursor={cursor} page={d.invoices} newest="Newest invoices" older="Older invoices" />
          </Section>
          <Section title="Actions" id="actions">
            {admin && <form onSubmit={assign} className="inline">
              <label htmlFor="plan">Assign or change plan</label>{' '}
              <select id="plan" name="plan">{d.plans.map((p) => <option key={p.key} value={p.key}>{p.name}</option>)}</select>{' '}
              <button type="submit">Assign</button>
            </form>}
            <p><button type="button" onClick={mint}>Create a customer token (15 min)</button></p>
            {token && <p><label htmlFor="token">Token for the portal</label> <input id="token" readOnly value={token} size={60} /></p>}
          </Section>
        </>
      )}
    </Loadable>
  );
}

/** One provider event: what it did (the entitlement changes it caused) and its raw payload. */
export function PaymentEventView({ provider, id }: { provider: string; id: string }) {
  const state = useLoad(() => gql(PaymentEventDocument, { id, provider }), [provider, id]);
  return (
    <>
      <h1>Payment event <code>{id}</code></h1>
      <Loadable state={state}>
        {(d) => (
          <>
            <p>{d.paymentEvent.provider} {d.paymentEvent.type}: <strong>{d.paymentEvent.status}</strong>, received {fmtTime(d.paymentEvent.receivedAt)}{d.paymentEvent.customerId ? <> for <a {...href(`/customers/${encodeURIComponent(d.paymentEvent.customerId)}`)}>{d.paymentEvent.customerId}</a></> : ''}. {d.paymentEvent.detail ?? ''} {d.paymentEvent.error ?? ''}</p>
            <Section title="What it did" id="changes">
              <ul>{d.paymentEvent.changes.map((c, i) => <li key={i}>{c.action} {c.feature}{c.reason ? `: ${c.reason}` : ''}</li>)}</ul>
            </Section>
            <Section title="Payload" id="payload">
              <pre data-testid="payload">{JSON.stringify(d.paymentEvent.payload, null, 2)}</pre>
            </Section>
          </>
        )}
      </Loadable>
    </>
  );
}

/** A customer's usage events (newest first, paged) or its open reservations (status HELD). */
export function UsageList({ id, status, title }: { id: string; status: string | null; title: string }) {
  const sid = `usage-${status ?? 'all'}`;
  const cursor = useCursor(status === 'HELD' ? 'held' : 'usage');
  const state = useLoad(() => gql(UsageEventsDocument, { id, status, first: 20, after: cursor.after }), [id, status, cursor.after]);
  return (
    <Section title={title} id={sid}>
      <Loadable state={state} empty={(d) => d.usageEvents.items.length === 0}>
        {(d) => (
          <>
            <table>
              <thead><tr><th scope="col">When</th><th scope="col">Key</th><th scope="col">Feature</th><th scope="col">Quantity</th><th scope="col">Status</th><th scope="col">Charged</th>{status === 'HELD' && <th scope="col">Held until</th>}</tr></thead>
              <tbody>
                {d.usageEvents.items.map((u) => (
                  <tr key={u.id}>
                    <td>{fmtTime(u.createdAt)}</td>
                    <td><a {...href(`/usage/${encodeURIComponent(id)}/${encodeURIComponent(u.idempotencyKey)}`)}>{u.idempotencyKey}</a></td>
                    <td>{u.feature}</td><td>{u.quantity}</td><td>{u.status}{u.status === 'DENIED' ? ` (${u.reason})` : ''}</td><td>{u.status === 'HELD' ? `${u.held} held` : u.charged}</td>
                    {status === 'HELD' && <td>{fmtTime(u.expiresAt)}</td>}
                  </tr>
                ))}
              </tbody>
            </table>
            <Pager cursor={cursor} page={d.usageEvents} newest="Newest" older={status === 'HELD' ? 'Older reservations' : 'Older usage'} />
          </>
        )}
      </Loadable>
    </Section>
  );
}

/** Adds or updates a feature; the server's validation error is shown in place. */
function FeatureForm({ onSaved }: { onSaved: () => void }) {
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const save = async (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    setError(null);
    setSaved(null);
    try {
      const r = await gql(UpsertFeatureDocument, { input: { key: String(f.get('key')), name: String(f.get('name')), type: String(f.get('type')) as FeatureType } });
      setSaved(`Saved feature ${r.upsertFeature.key}.`);
      onSaved();
    } catch (err) {
      setError(`${(err as Error).message}${err instanceof ApiError ? ` (${err.code})` : ''}`);
    }
  };
  return (
    <Section title="Add or update a feature" id="feature-form">
      <form onSubmit={save} className="inline">
        <label htmlFor="fk">Key</label> <input id="fk" name="key" required />{' '}
        <label htmlFor="fn">Name</label> <input id="fn" name="name" required />{' '}
        <label htmlFor="ft">Type</label>{' '}
        <select id="ft" name="type"><option>BOOLEAN</option><option>METERED</option><option>CONFIG</option></select>{' '}
        <button type="submit">Save feature</button>
        {error && <p className="error" role="alert">{error}</p>}
        {saved && <p role="status">{saved}</p>}
      </form>
    </Section>
  );
}

/** A customer's entitlement history, newest first, paged by cursor. */
export function History({ id }: { id: string }) {
  const cursor = useCursor('history');
  const state = useLoad(() => gql(HistoryDocument, { id, first: 20, after: cursor.after }), [id, cursor.after]);
  return (
    <Section title="Entitlement history" id="history">
      <Loadable state={state} empty={(d) => d.entitlementHistory.items.length === 0}>
        {(d) => (
          <>
            <table>
              <thead><tr><th scope="col">When</th><th scope="col">Feature</th><th scope="col">Action</th><th scope="col">By</th><th scope="col">Reason</th></tr></thead>
              <tbody>
                {d.entitlementHistory.items.map((c) => {
                  const pay = c.actorType === 'PAYMENT_EVENT' && c.actorId ? /^([^:]+):(.+)$/.exec(c.actorId) : null;
                  return (
                    <tr key={c.id}>
                      <td>{fmtTime(c.createdAt)}</td><td>{c.feature}</td><td>{c.action}</td>
                      <td>{pay ? <a {...href(`/payments/${encodeURIComponent(pay[1])}/${encodeURIComponent(pay[2])}`)}>{pay[2]}</a> : `${c.actorType.toLowerCase()} ${c.actorId ?? ''}`}</td>
                      <td>{c.reason ?? ''}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
            <Pager cursor={cursor} page={d.entitlementHistory} newest="Newest changes" older="Older changes" />
          </>
        )}
      </Loadable>
    </Section>
  );
}

/**
 * Edits a plan or pack as the JSON of its input (the API's own shape, every term available): pick
 * one (or start a new one), change it, save; the server's validation error is shown in place.
 */
function JsonEditor({ title, id, items, save, onSaved }: { title: string; id: string; items: Array<{ key: string; value: unknown }>; save: (input: unknown) => Promise<string>; onSaved: () => void }) {
  const [pick, setPick] = useState(items[0]?.key ?? '');
  const [text, setText] = useState(() => JSON.stringify(items[0]?.value ?? {}, null, 2));
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const choose = (k: string) => {
    setPick(k);
    setText(JSON.stringify(items.find((i) => i.key === k)?.value ?? {}, null, 2));
    setError(null);
    setSaved(null);
  };
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    setSaved(null);
    let input: unknown;
    try {
      input = JSON.parse(text);
    } catch (err) {
      setError(`Not valid JSON: ${(err as Error).message}`);
      return;
    }
    try {
      setSaved(await save(input));
      onSaved();
    } catch (err) {
      setError(`${(err as Error).message}${err instanceof ApiError ? ` (${err.code})` : ''}`);
    }
  };
  return (
    <Section title={title} id={id}>
      <form onSubmit={submit}>
        <label htmlFor={`${id}-pick`}>Start from</label>{' '}
        <select id={`${id}-pick`} value={pick} onChange={(e) => choose(e.target.value)}>
          {items.map((i) => <option key={i.key} value={i.key}>{i.key}</option>)}
        </select>
        <div>
          <label htmlFor={`${id}-json`}>{title} (JSON)</label>
          <textarea id={`${id}-json`} value={text} onChange={(e) => setText(e.target.value)} rows={14} cols={80} spellCheck={false} />
        </div>
        <button type="submit">Save</button>
        {error && <p className="error" role="alert">{error}</p>}
        {saved && <p role="status">{saved}</p>}
      </form>
    </Section>
  );
}

/** A plan or pack as its input: every field the API returned (the whole definition, so saving it back loses nothing), nulls left out. */
function withoutNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutNulls);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null).map(([k, x]) => [k, withoutNulls(x)]));
  return v;
}

/** A finalized invoice: its lines, and for a usage line the ledger entries it billed, each opening its "why" page. */
export function InvoiceView({ id }: { id: string }) {
  const state = useLoad(() => gql(InvoiceViewDocument, { id }), [id]);
  const [open, setOpen] = useState<string | null>(null);
  return (
    <Loadable state={state} empty={(d) => !d.invoice}>
      {(d) => {
        const inv = d.invoice!;
        return (
          <>
            <h1>Invoice #{inv.number} <small className="muted">{inv.customerId}</small></h1>
            <p>{inv.status}: {inv.total} {inv.currency}, {fmtTime(inv.periodStart)} – {fmtTime(inv.periodEnd)}</p>
            <table>
              <thead><tr><th scope="col">Line</th><th scope="col">Quantity</th><th scope="col">Amount</th><th scope="col"><span className="sr-only">Actions</span></th></tr></thead>
              <tbody>
                {inv.lines.map((l) => (
                  <tr key={l.id ?? l.description}>
                    <td>{l.description}</td><td>{l.quantity}</td><td>{l.amount} {inv.currency}</td>
                    <td>{l.id && l.feature && <button type="button" onClick={() => setOpen(l.id)}>Usage behind {l.description}</button>}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            {open && <LineEntries invoiceId={inv.id!} lineId={open} customerId={inv.customerId} />}
          </>
        );
      }}
    </Loadable>
  );
}

function LineEntries({ invoiceId, lineId, customerId }: { invoiceId: string; lineId: string; customerId: string }) {
  const cursor = useCursor('entries');
  const state = useLoad(() => gql(InvoiceLineEntriesDocument, { invoiceId, lineId, after: cursor.after }), [invoiceId, lineId, cursor.after]);
  return (
    <Section title="Ledger entries billed on this line" id="line-entries">
      <Loadable state={state} empty={(d) => d.invoiceLineEntries.items.length === 0}>
        {(d) => (
          <>
            <ul>
              {d.invoiceLineEntries.items.map((x) => (
                <li key={x.id}>
                  {fmtTime(x.createdAt)} {x.kind} {x.amount}{' '}
                  {x.idempotencyKey ? <a {...href(`/usage/${encodeURIComponent(customerId)}/${encodeURIComponent(x.idempotencyKey)}`)}>why: {x.idempotencyKey}</a> : ''}
                </li>
              ))}
            </ul>
            {d.invoiceLineEntries.hasNextPage && <button type="button" onClick={() => cursor.older(d.invoiceLineEntries.endCursor)}>More entries</button>}
          </>
        )}
      </Loadable>
    </Section>
  );
}
