import { useEffect, useState } from 'react';

/** Routes under /dashboard; the URL holds the whole page state (never a secret). */
export const BASE = '/dashboard';

export function navigate(path: string): void {
  history.pushState(null, '', `${BASE}${path}`);
  dispatchEvent(new PopStateEvent('popstate'));
}

export function usePath(): string {
  const [path, setPath] = useState(() => location.pathname.slice(BASE.length) || '/');
  useEffect(() => {
    const on = () => setPath(location.pathname.slice(BASE.length) || '/');
    addEventListener('popstate', on);
    return () => removeEventListener('popstate', on);
  }, []);
  return path;
}

export function match(path: string, pattern: string): Record<string, string> | null {
  const a = path.split('/').filter(Boolean);
  const b = pattern.split('/').filter(Boolean);
  if (a.length !== b.length) return null;
  const out: Record<string, string> = {};
  for (let i = 0; i < b.length; i++) {
    if (b[i].startsWith(':')) out[b[i].slice(1)] = decodeURIComponent(a[i]);
    else if (a[i] !== b[i]) return null;
  }
  return out;
}

/** A link that navigates without reloading. */
export function href(path: string): { href: string; onClick: (e: { preventDefault(): void; metaKey?: boolean; ctrlKey?: boolean }) => void } {
  return {
    href: `${BASE}${path}`,
    onClick: (e) => {
      if (e.metaKey || e.ctrlKey) return;
      e.preventDefault();
      navigate(path);
    },
  };
}

/** The current location's search parameters, re-read on every navigation. */
export function useSearch(): URLSearchParams {
  const [search, setSearch] = useState(() => location.search);
  useEffect(() => {
    const on = () => setSearch(location.search);
    addEventListener('popstate', on);
    return () => removeEventListener('popstate', on);
  }, []);
  return new URLSearchParams(search);
}

/**
 * A list's cursor kept in the URL (`?<name>=<cursor>`), so that a reload or a shared link shows the
 * same page and the browser's back button returns to the newer one. `older(c)` moves to the page
 * after cursor c; `newest()` back to the first page.
 */
export function useCursor(name: string): { after: string | null; older: (cursor: string | null) => void; newest: () => void } {
  const search = useSearch();
  const go = (value: string | null) => {
    const p = new URLSearchParams(location.search);
    if (value) p.set(name, value);
    else p.delete(name);
    const q = p.toString();
    history.pushState(null, '', `${location.pathname}${q ? `?${q}` : ''}`);
    dispatchEvent(new PopStateEvent('popstate'));
  };
  return { after: search.get(name), older: (c) => go(c), newest: () => go(null) };
}
