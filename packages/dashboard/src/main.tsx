import { StrictMode, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { credential, gql } from './api';
import { ViewerDocument } from './generated/graphql';
import { Catalog, InvoiceView, PaymentEventView, Payments, Revenue, UsageById, Webhooks } from './more-pages';
import { CustomerView, Customers, Overview, Portal, SignIn, WhyCharged } from './pages';
import { RoleContext } from './role';
import { href, match, navigate, usePath } from './router';
import './styles.css';

/**
 * The operator console (ADMIN or SERVER key) and, at /dashboard/portal, a customer's own page
 * (customer token). Routes: /, /customers?q=, /customers/<id>, /usage/<customerId>/<key>, /portal.
 */
function App() {
  const path = usePath();
  const [viewer, setViewer] = useState<{ role: string; customerId: string | null } | null | undefined>(undefined);
  const check = () => {
    if (!credential.get()) return setViewer(null);
    gql(ViewerDocument).then((v) => setViewer(v.viewer), () => {
      credential.clear();
      setViewer(null);
    });
  };
  useEffect(check, []);
  const portal = path.startsWith('/portal');
  if (viewer === undefined) return <p className="muted" role="status">Loading…</p>;
  if (viewer === null || (portal !== (viewer.role === 'CUSTOMER'))) {
    return <SignIn portal={portal} onSignedIn={check} />;
  }
  const signOut = () => {
    credential.clear();
    setViewer(null);
  };
  if (portal) return <Portal customerId={viewer.customerId ?? ''} />;
  const admin = viewer.role === 'ADMIN';
  let page;
  let m: Record<string, string> | null;
  if ((m = match(path, '/customers/:id'))) page = <CustomerView id={m.id} />;
  else if ((m = match(path, '/usage/:customerId/:key'))) page = <WhyCharged customerId={m.customerId} keyParam={m.key} />;
  else if ((m = match(path, '/usage-id/:customerId/:id'))) page = <UsageById customerId={m.customerId} id={m.id} />;
  else if (match(path, '/customers')) page = <Customers search={new URLSearchParams(location.search).get('q') ?? ''} />;
  else if ((m = match(path, '/invoices/:id'))) page = <InvoiceView id={m.id} />;
  else if ((m = match(path, '/payments/:provider/:id'))) page = <PaymentEventView provider={m.provider} id={m.id} />;
  else if (match(path, '/payments')) page = <Payments status={new URLSearchParams(location.search).get('status') ?? ''} after={new URLSearchParams(location.search).get('after') ?? ''} />;
  else if (match(path, '/revenue')) page = <Revenue by={new URLSearchParams(location.search).get('by') ?? 'CUSTOMER'} />;
  else if (match(path, '/webhooks')) page = <Webhooks />;
  else if (match(path, '/catalog')) page = <Catalog />;
  else if (match(path, '/')) page = <Overview />;
  else page = <p>Not found. <a {...href('/')}>Overview</a></p>;
  return (
    <RoleContext.Provider value={viewer.role}>
      <header>
        <nav aria-label="Main">
          <a {...href('/')}>Overview</a>
          <a {...href('/customers')}>Customers</a>
          {admin && <a {...href('/catalog')}>Catalog</a>}
          {admin && <a {...href('/payments')}>Payments</a>}
          <a {...href('/revenue')}>Revenue integrity</a>
          {admin && <a {...href('/webhooks')}>Webhooks</a>}
          <form role="search" onSubmit={(e) => {
            e.preventDefault();
            const v = new FormData(e.currentTarget);
            navigate(`/usage/${encodeURIComponent(String(v.get('c')))}/${encodeURIComponent(String(v.get('k')))}`);
          }}>
            <label htmlFor="why-c">Why charged: customer</label> <input id="why-c" name="c" required size={10} />{' '}
            <label htmlFor="why-k">idempotency key</label> <input id="why-k" name="k" required size={14} /> <button type="submit">Explain</button>
          </form>
          <span className="muted">{viewer.role}</span>
          <button type="button" onClick={signOut}>Sign out</button>
        </nav>
      </header>
      <main>{page}</main>
    </RoleContext.Provider>
  );
}

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
