import { useCallback, useEffect, useState, type ReactNode } from 'react';
import { ApiError } from './api';

/** Loads `fn` when `deps` change; loading, error and data states are explicit. */
export function useLoad<T>(fn: () => Promise<T>, deps: unknown[]): { data: T | null; error: ApiError | Error | null; loading: boolean; reload: () => void } {
  const [state, setState] = useState<{ data: T | null; error: Error | null; loading: boolean }>({ data: null, error: null, loading: true });
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true, error: null }));
    fn().then(
      (data) => live && setState({ data, error: null, loading: false }),
      (error: Error) => live && setState({ data: null, error, loading: false }),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, n]);
  const reload = useCallback(() => setN((x) => x + 1), []);
  return { ...state, reload };
}

export function Loadable<T>({ state, empty, children }: { state: { data: T | null; error: Error | null; loading: boolean }; empty?: (d: T) => boolean; children: (d: T) => ReactNode }) {
  if (state.loading && !state.data) return <p className="muted" role="status">Loading…</p>;
  if (state.error) return <p className="error" role="alert">Could not load: {state.error.message}{state.error instanceof ApiError ? ` (${state.error.code})` : ''}</p>;
  if (!state.data) return null;
  if (empty?.(state.data)) return <p className="muted">Nothing here yet.</p>;
  return <>{children(state.data)}</>;
}

export const fmtTime = (iso: string | null | undefined) => (iso ? new Date(iso).toISOString().replace('T', ' ').slice(0, 19) + ' UTC' : '—');

export function Section({ title, children, id }: { title: string; children: ReactNode; id?: string }) {
  return (
    <section aria-labelledby={id}>
      <h2 id={id}>{title}</h2>
      {children}
    </section>
  );
}

/** A list's keyset paging: back to the first page, on to the next (the cursor lives in the URL, see useCursor). */
export function Pager({ cursor, page, newest, older }: { cursor: { after: string | null; newest: () => void; older: (c: string | null) => void }; page: { hasNextPage: boolean; endCursor: string | null }; newest: string; older: string }) {
  return (
    <p>
      {cursor.after && <button type="button" onClick={cursor.newest}>{newest}</button>}{' '}
      {page.hasNextPage && <button type="button" onClick={() => cursor.older(page.endCursor)}>{older}</button>}
    </p>
  );
}
