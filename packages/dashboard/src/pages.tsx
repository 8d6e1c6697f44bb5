import { useEffect, useRef, useState, type FormEvent } from 'react';
import { Chart, BarController, BarElement, CategoryScale, Legend, LinearScale, Tooltip } from 'chart.js';
import { credential, gql } from './api';
import {
  CustomerPageDocument, CustomersDocument, GrantCreditsDocument, LedgerDocument, OverviewAdminDocument, OverviewDocument, PortalDocument,
  RevokeEntitlementDocument, ViewerDocument, WhyBilledDocument, WhyChargedDocument,
} from './generated/graphql';
import { CustomerExtras, History, UsageList } from './more-pages';
import { useIsAdmin } from './role';
import { useCustomerChanges } from './live';
import { href, navigate, useCursor } from './router';
import { fmtTime, Loadable, Pager, Section, useLoad } from './ui';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Tooltip, Legend);

export function SignIn({ onSignedIn, portal }: { onSignedIn: () => void; portal?: boolean }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    try {
      const v = await gql(ViewerDocument, undefined, key.trim());
      if (!portal && v.viewer.role === 'CUSTOMER') throw new Error('This is a customer token: open /dashboard/portal instead.');
      credential.set(key.trim());
      onSignedIn();
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <main className="signin">
      <h1>Tollgate</h1>
      <form onSubmit={submit}>
        <label htmlFor="key">{portal ? 'Customer token' : 'API key'}</label>
        <input id="key" name="key" type="password" autoComplete="off" value={key} onChange={(e) => setKey(e.target.value)} required />
        <button type="submit">Sign in</button>
        {error && <p className="error" role="alert">{error}</p>}
      </form>
    </main>
  );
}

export function Overview() {
  const [days, setDays] = useState(30);
  const to = new Date(Math.ceil(Date.now() / 3_600_000) * 3_600_000 + 3_600_000).toISOString();
  const from = new Date(Date.now() - days * 86_400_000).toISOString();
  const state = useLoad(() => gql(OverviewDocument, { from, to }), [days]);
  const admin = useIsAdmin();
  const adminState = useLoad(() => (admin ? gql(OverviewAdminDocument, { from, to }) : Promise.resolve(null)), [days, admin]);
  const canvas = useRef<HTMLCanvasElement>(null);
  const activityCanvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    if (!activityCanvas.current || !state.data) return;
    const days = state.data.activity;
    const reasons = [...new Set(days.flatMap((d) => d.denialsByReason.map((r) => r.reason)))];
    const palette = ['#9b2c2c', '#b7791f', '#6b46c1', '#2c7a7b', '#4a5568'];
    const chart = new Chart(activityCanvas.current, {
      type: 'bar',
      data: {
        labels: days.map((d) => d.day),
        datasets: [
          { label: 'Charges', data: days.map((d) => d.charges), backgroundColor: '#2b6cb0', stack: 'charges' },
          ...reasons.map((r, i) => ({ label: `Denied: ${r}`, data: days.map((d) => d.denialsByReason.find((x) => x.reason === r)?.count ?? 0), backgroundColor: palette[i % palette.length], stack: 'denials' })),
          { label: 'Active customers', data: days.map((d) => d.activeCustomers), backgroundColor: '#2f855a', stack: 'customers' },
        ],
      },
      options: { animation: false, responsive: true, plugins: { legend: { position: 'bottom' } } },
    });
    return () => chart.destroy();
  }, [state.data]);
  useEffect(() => {
    if (!canvas.current || !state.data) return;
    const items = state.data.margin.items;
    const chart = new Chart(canvas.current, {
      type: 'bar',
      data: {
        labels: items.map((i) => i.group[0]?.value ?? ''),
        datasets: [
          { label: 'Revenue', data: items.map((i) => Number(i.revenue)), backgroundColor: '#2b6cb0' },
          { label: 'Provider cost', data: items.map((i) => Number(i.providerCost)), backgroundColor: '#c05621' },
        ],
      },
      options: { animation: false, responsive: true, plugins: { legend: { position: 'bottom' } } },
    });
    return () => chart.destroy();
  }, [state.data]);
  return (
    <>
      <h1>Overview</h1>
      <label htmlFor="range">Range</label>{' '}
      <select id="range" value={days} onChange={(e) => setDays(Number(e.target.value))}>
        <option value={7}>Last 7 days</option>
        <option value={30}>Last 30 days</option>
        <option value={90}>Last 90 days</option>
      </select>
      <Loadable state={state}>
        {(d) => (
          <>
            <Section title="Charges, denials by reason and active customers by day" id="activity">
              <canvas ref={activityCanvas} aria-label="Charges, denials by reason and active customers by day" role="img" />
              <p>
                {d.activity.reduce((n, x) => n + x.charges, 0)} charges, {d.activity.reduce((n, x) => n + x.denials, 0)} denials,{' '}
                up to {Math.max(0, ...d.activity.map((x) => x.activeCustomers))} active customers a day
              </p>
            </Section>
            <Section title="Revenue and provider cost by day" id="margin">
              <canvas ref={canvas} aria-label="Revenue and provider cost by day" role="img" />
              <p>
                Usage events: {d.margin.items.reduce((n, i) => n + i.count, 0)} · margin{' '}
                {d.margin.items.reduce((n, i) => n + Number(i.margin), 0).toFixed(2)} {d.margin.items[0]?.currency ?? ''}
              </p>
            </Section>
            {admin && (
              <Loadable state={adminState}>
                {(a) => a && (
                  <>
                    <Section title="Leakage" id="leakage">
                      <table>
                        <thead><tr><th scope="col">Cause</th><th scope="col">Count</th><th scope="col">Amount</th><th scope="col">Status</th></tr></thead>
                        <tbody>
                          {a.leakageReport.rows.map((r) => (
                            <tr key={`${r.cause}${r.currency}`}><td>{r.cause}</td><td>{r.count}</td><td>{r.amount} {r.currency ?? ''}</td><td>{r.status}</td></tr>
                          ))}
                        </tbody>
                      </table>
                    </Section>
                    <p>
                      Webhook backlog: {a.webhookDeliveries.items.length > 0 ? <a {...href('/webhooks')}>deliveries pending</a> : 'none'} ·
                      Payment events failed: {a.paymentEvents.items.length > 0 ? <a {...href('/payments?status=FAILED')}>yes, see them</a> : 'none'}
                    </p>
                  </>
                )}
              </Loadable>
            )}
          </>
        )}
      </Loadable>
    </>
  );
}

export function Customers({ search }: { search: string }) {
  const [q, setQ] = useState(search);
  const cursor = useCursor('after');
  const state = useLoad(() => gql(CustomersDocument, { search: search || null, first: 50, after: cursor.after }), [search, cursor.after]);
  return (
    <>
      <h1>Customers</h1>
      <form role="search" onSubmit={(e) => { e.preventDefault(); navigate(`/customers?q=${encodeURIComponent(q)}`); }}>
        <label htmlFor="q">Search by id, name or email</label>{' '}
        <input id="q" value={q} onChange={(e) => setQ(e.target.value)} />
        <button type="submit">Search</button>
      </form>
      <Loadable state={state} empty={(d) => d.customers.items.length === 0}>
        {(d) => (
          <>
          <table>
            <thead><tr><th scope="col">Id</th><th scope="col">Name</th><th scope="col">Email</th></tr></thead>
            <tbody>
              {d.customers.items.map((c) => (
                <tr key={c.id}><td><a {...href(`/customers/${encodeURIComponent(c.id)}`)}>{c.id}</a></td><td>{c.name ?? '—'}</td><td>{c.email ?? '—'}</td></tr>
              ))}
            </tbody>
          </table>
          <Pager cursor={cursor} page={d.customers} newest="First page" older="Next customers" />
          </>
        )}
      </Loadable>
    </>
  );
}

export function CustomerView({ id }: { id: string }) {
  const admin = useIsAdmin();
  const state = useLoad(() => gql(CustomerPageDocument, { id }), [id]);
  const cursor = useCursor('ledger');
  const ledger = useLoad(() => gql(LedgerDocument, { id, first: 25, after: cursor.after }), [id, cursor.after]);
  // A change on any replica (a consume, a grant, a payment) reloads the page's figures.
  const live = useCustomerChanges(id, () => {
    state.reload();
    ledger.reload();
  });
  const [notice, setNotice] = useState<string | null>(null);
  const grant = async (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    const amount = String(form.get('amount'));
    if (!confirm(`Grant ${amount} credits to ${id}?`)) return;
    try {
      await gql(GrantCreditsDocument, { input: { customerId: id, feature: String(form.get('pool')), amount, idempotencyKey: `dashboard-${crypto.randomUUID()}`, reason: 'granted from the dashboard' } });
      setNotice(`Granted ${amount} credits.`);
      state.reload();
      cursor.newest();
      ledger.reload();
    } catch (err) {
      setNotice(`Not granted: ${(err as Error).message}`);
    }
  };
  const revoke = async (entitlementId: string, feature: string) => {
    if (!confirm(`Revoke ${feature} for ${id}?`)) return;
    try {
      await gql(RevokeEntitlementDocument, { id: entitlementId, reason: 'revoked from the dashboard' });
      setNotice(`Revoked ${feature}.`);
      state.reload();
    } catch (err) {
      setNotice(`Not revoked: ${(err as Error).message}`);
    }
  };
  return (
    <Loadable state={state}>
      {(d) => (
        <>
          <h1>{d.customer?.name ?? id} <small className="muted">{id}</small></h1>
          <p className="muted" data-testid="live">{live === 'live' ? 'Live: changes appear as they happen.' : live === 'connecting' ? 'Connecting to live updates…' : 'Live updates unavailable: reload to see changes.'}</p>
          {notice && <p role="status">{notice}</p>}
          <Section title="Balances" id="balances">
            {d.balances.map((b) => (
              <div key={b.feature} className="card">
                <h3>{b.feature}: <span data-testid={`balance-${b.feature}`}>{b.available}</span> available{Number(b.held) > 0 ? `, ${b.held} held` : ''}</h3>
                <table>
                  <caption>Grants in burn-down order</caption>
                  <thead><tr><th scope="col">Source</th><th scope="col">Amount</th><th scope="col">Remaining</th><th scope="col">Expires</th></tr></thead>
                  <tbody>{b.grants.map((g, i) => <tr key={g.id ?? i}><td>{g.source}</td><td>{g.amount}</td><td>{g.remaining}</td><td>{fmtTime(g.expiresAt)}</td></tr>)}</tbody>
                </table>
              </div>
            ))}
            {admin && <form onSubmit={grant} className="inline">
              <label htmlFor="amount">Grant credits</label>{' '}
              <input id="amount" name="amount" inputMode="decimal" required defaultValue="100" />{' '}
              <label htmlFor="pool">to pool</label>{' '}
              <input id="pool" name="pool" defaultValue={d.balances[0]?.feature ?? 'credits'} />{' '}
              <button type="submit">Grant</button>
            </form>}
          </Section>
          <Section title="Entitlements" id="entitlements">
            <table>
              <thead><tr><th scope="col">Feature</th><th scope="col">Source</th><th scope="col">Terms</th><th scope="col">Valid</th><th scope="col">Status</th><th scope="col"><span className="sr-only">Actions</span></th></tr></thead>
              <tbody>
                {d.entitlements.map((e) => (
                  <tr key={e.id}>
                    <td>{e.feature}</td>
                    <td>{e.source}{e.plan ? ` (${e.plan})` : ''}{e.sourceRef ? ` ${e.sourceRef}` : ''}</td>
                    <td>{e.allowance ? `${e.allowance} per ${e.resetPeriod?.toLowerCase() ?? 'grant'}` : '—'}{e.overage ? `, overage ${e.overage.toLowerCase()}` : ''}</td>
                    <td>{fmtTime(e.validFrom)} – {fmtTime(e.validUntil)}</td>
                    <td>{e.revokedAt ? 'revoked' : e.validUntil && new Date(e.validUntil) < new Date() ? 'ended' : 'active'}</td>
                    <td>{admin && !e.revokedAt && <button type="button" onClick={() => revoke(e.id, e.feature)}>Revoke {e.feature}</button>}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Section>
          <Section title="Ledger" id="ledger">
            <Loadable state={ledger} empty={(l) => l.ledger.entries.length === 0}>
              {(l) => (
                <>
                  <table>
                    <thead><tr><th scope="col">When</th><th scope="col">Kind</th><th scope="col">Amount</th><th scope="col">Balance after</th><th scope="col">Why</th></tr></thead>
                    <tbody>
                      {l.ledger.entries.map((x) => (
                        <tr key={x.id}>
                          <td>{fmtTime(x.createdAt)}</td><td>{x.kind}</td><td>{x.amount}</td><td>{x.balanceAfter}</td>
                          <td>{x.usageId && x.idempotencyKey ? <a {...href(`/usage/${encodeURIComponent(id)}/${encodeURIComponent(x.idempotencyKey)}`)}>Why was I charged?</a> : (x.actor ?? '')}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                  <Pager cursor={cursor} page={l.ledger} newest="Newest entries" older="Older entries" />
                </>
              )}
            </Loadable>
          </Section>
          <History id={id} />
          <UsageList id={id} status="HELD" title="Open reservations" />
          <UsageList id={id} status={null} title="Usage events" />
          <CustomerExtras id={id} onChanged={state.reload} />
          <Section title="Invoice preview" id="invoice">
            <p>{d.invoicePreview.status}: {d.invoicePreview.total} {d.invoicePreview.currency}</p>
            <ul>{d.invoicePreview.lines.map((ln, i) => <li key={i}>{ln.kind} {ln.feature ?? ''}: {ln.amount}</li>)}</ul>
          </Section>
        </>
      )}
    </Loadable>
  );
}

export function WhyCharged({ customerId, keyParam }: { customerId: string; keyParam: string }) {
  const state = useLoad(() => gql(WhyChargedDocument, { customerId, key: keyParam }), [customerId, keyParam]);
  return (
    <>
      <h1>Why was {customerId} charged?</h1>
      <Loadable state={state} empty={(d) => !d.usageEvent}>
        {(d) => {
          const u = d.usageEvent!;
          return (
            <ol className="chain">
              <li>
                <h2>The call</h2>
                <p>{u.kind.toLowerCase()} of <strong>{u.quantity} {u.feature}</strong> at rate {u.rate ?? '—'}, key <code>{u.idempotencyKey}</code>, by {u.actor ?? '—'} at {fmtTime(u.createdAt)}: <strong>{u.status}</strong>, charged <strong data-testid="charged">{u.charged}</strong> {u.pool ?? ''} ({u.reason}){Number(u.overage) > 0 ? `, ${u.overage} past the allowance` : ''}{Number(u.uncollected) > 0 ? `, ${u.uncollected} uncollected` : ''}.</p>
              </li>
              {u.entries.map((x) => {
                const g = d.grants.find((gr) => gr.id === x.grantId);
                const e = g ? d.entitlements.find((en) => en.id === g.entitlementId) : undefined;
                return (
                  <li key={x.id}>
                    <h2>Drawn from a {g?.source.toLowerCase() ?? ''} grant</h2>
                    <p>Ledger entry {x.id}: {x.kind} {x.amount}, balance after {x.balanceAfter}. Grant {x.grantId}: {g ? `${g.amount} ${g.feature}, ${g.remaining} left${g.reason ? `, “${g.reason}”` : ''}` : 'unknown'}.</p>
                    {e && (
                      <p data-testid="entitlement">Its entitlement: {e.feature} from {e.source}{e.plan ? ` plan ${e.plan}` : ''}{e.sourceRef ? ` (${e.sourceRef})` : ''}, valid {fmtTime(e.validFrom)} – {fmtTime(e.validUntil)}{e.revokedAt ? ', revoked' : ''}.</p>
                    )}
                    {e && d.entitlementHistory.items.filter((c) => c.entitlementId === e.id && c.action === 'GRANTED').map((c, i) => {
                      const pay = c.actorType === 'PAYMENT_EVENT' && c.actorId ? /^([^:]+):(.+)$/.exec(c.actorId) : null;
                      return (
                        <p key={i}>
                          Granted {fmtTime(c.createdAt)} by {c.actorType.toLowerCase().replace('_', ' ')}{' '}
                          {pay ? <a {...href(`/payments/${encodeURIComponent(pay[1])}/${encodeURIComponent(pay[2])}`)}>{pay[2]}</a> : <code>{c.actorId ?? ''}</code>}
                          {c.reason ? ` (“${c.reason}”)` : ''}.
                        </p>
                      );
                    })}
                  </li>
                );
              })}
              <BilledStep customerId={customerId} at={u.resolvedAt ?? u.createdAt} pool={u.pool ?? u.feature} overage={u.overage} />
              <li><a {...href(`/customers/${encodeURIComponent(customerId)}`)}>Back to {customerId}</a></li>
            </ol>
          );
        }}
      </Loadable>
    </>
  );
}

export function Portal({ customerId }: { customerId: string }) {
  const to = new Date(Math.ceil(Date.now() / 3_600_000) * 3_600_000 + 3_600_000).toISOString();
  const from = new Date(Date.now() - 30 * 86_400_000).toISOString();
  const state = useLoad(() => gql(PortalDocument, { id: customerId, from, to }), [customerId]);
  const canvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    if (!canvas.current || !state.data) return;
    const days = state.data.activity;
    const chart = new Chart(canvas.current, {
      type: 'bar',
      data: { labels: days.map((d) => d.day), datasets: [{ label: 'Units used', data: days.map((d) => Number(d.unitsCharged)), backgroundColor: '#2b6cb0' }] },
      options: { animation: false, plugins: { legend: { position: 'bottom' } } },
    });
    return () => chart.destroy();
  }, [state.data]);
  return (
    <main>
      <h1>Your usage</h1>
      <Loadable state={state}>
        {(d) => (
          <>
            <Section title="Balances" id="portal-balances">
              <ul>{d.balances.map((b) => <li key={b.feature}>{b.feature}: <span data-testid={`portal-${b.feature}`}>{b.available}</span> available{b.limit ? ` (${b.used ?? 0} of ${b.limit} used this period${b.resetsAt ? `, resets ${fmtTime(b.resetsAt)}` : ''})` : ''}</li>)}</ul>
            </Section>
            <Section title="Usage, last 30 days" id="portal-usage">
              <canvas ref={canvas} role="img" aria-label="Units used per day, last 30 days" />
            </Section>
            <Section title="What each feature costs" id="portal-prices">
              <ul>{d.features.filter((f) => f.creditPool).map((f) => <li key={f.key}>{f.name}: {f.creditCost} {f.creditPool} per {f.unit ?? 'use'}</li>)}</ul>
            </Section>
            <Section title="This period's invoice" id="portal-invoice">
              <p>{d.invoicePreview.total} {d.invoicePreview.currency}</p>
            </Section>
            <Section title="Past invoices" id="portal-invoices">
              {d.invoices.items.length === 0 ? <p className="muted">None yet.</p> : (
                <ul>{d.invoices.items.map((i) => <li key={i.id ?? i.number}>#{i.number} {fmtTime(i.periodStart)} – {fmtTime(i.periodEnd)}: {i.total} {i.currency} ({i.status})</li>)}</ul>
              )}
            </Section>
          </>
        )}
      </Loadable>
    </main>
  );
}

/** The last step of the chain: the invoice (finalized, or the live preview) whose period covers the usage. */
function BilledStep({ customerId, at, pool, overage }: { customerId: string; at: string; pool: string; overage: string }) {
  const state = useLoad(() => gql(WhyBilledDocument, { customerId }), [customerId]);
  const t = new Date(at).getTime();
  const within = (i: { periodStart: string; periodEnd: string }) => new Date(i.periodStart).getTime() <= t && t < new Date(i.periodEnd).getTime();
  const d = state.data;
  const inv = d ? (d.invoices.items.find(within) ?? (within(d.invoicePreview) ? { ...d.invoicePreview, number: null as number | null } : null)) : null;
  const line = inv?.lines.find((l) => l.feature === pool && (l.kind === 'USAGE' || l.kind === 'LATE_USAGE'));
  return (
    <li>
      <h2>Billed</h2>
      {state.loading ? <p className="muted" role="status">Loading…</p> : !inv ? (
        <p className="muted" data-testid="invoice-line">No invoice covers this usage: the customer is not on a priced plan for it, or its period is not billed yet.</p>
      ) : (
        <p data-testid="invoice-line">
          {inv.number ? `Invoice #${inv.number}` : 'The live invoice preview'} ({fmtTime(inv.periodStart)} – {fmtTime(inv.periodEnd)}):{' '}
          {line ? `${line.kind} ${line.feature}, ${line.quantity} billable, ${line.amount} ${inv.currency}` : `no usage line for ${pool}`}
          {Number(overage) > 0 ? `; this usage put ${overage} of it past the allowance.` : '; this usage was within the allowance (paid by the base fee).'}
        </p>
      )}
    </li>
  );
}
