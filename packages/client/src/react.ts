import * as React from 'react';
import { TollgateClient, TollgateError, type AccessDecision } from './index';
import type { AccessEvent } from './live';

/**
 * `@tollgate/client/react`: access decisions in a browser, kept current by live updates.
 *
 * The browser holds a customer token only, fetched from the product's backend (which mints it
 * with its SERVER key through `createCustomerToken`). A customer token can read that one
 * customer's decisions and nothing else; the secret key never reaches the browser, so the
 * provider takes no `apiKey`. The service enforces every decision again when it is charged: what
 * the browser shows is for the interface (which buttons to enable), not a gate.
 *
 * `useAccess(features)` answers first from the batch `access` query, then from the live stream
 * (`accessChanged`): each event's decisions, read by the service when it sent the event, replace
 * what is shown. While the stream is interrupted `live` is false (what is shown may be stale);
 * the reconnect's SUBSCRIBED event carries decisions read after the reconnect, and only then is
 * `live` true again.
 */

export interface TollgateProviderProps {
  /** The service's base URL or its /graphql endpoint. */
  url: string;
  /** The signed-in customer. */
  customerId: string;
  /**
   * Fetches a customer token for `customerId` from the product's backend. Called on first use,
   * and again when the service answers UNAUTHENTICATED (the token expired). The latest function
   * passed is the one called, so an inline arrow is fine.
   */
  getToken: () => Promise<string>;
  /** A fetch implementation (default: the global one). */
  fetch?: typeof fetch;
  children?: React.ReactNode;
}

interface TollgateContextValue {
  client: TollgateClient;
  customerId: string;
}

const TollgateContext = React.createContext<TollgateContextValue | null>(null);

/**
 * Makes one TollgateClient for the customer (a new one when `url`, `customerId` or `fetch`
 * change) and closes it when unmounted.
 */
export function TollgateProvider(props: TollgateProviderProps): React.ReactElement {
  if ('apiKey' in props) {
    // Plain JavaScript callers get no type error: refuse loudly rather than ship the secret key.
    throw new Error('TollgateProvider takes no apiKey: the secret key must never reach the browser. Pass getToken, which fetches a customer token from your backend.');
  }
  const { url, customerId, getToken, fetch: fetchImpl, children } = props;
  const latestGetToken = React.useRef(getToken);
  // Before any effect of the children runs (they may need a token), never during render.
  React.useInsertionEffect(() => {
    latestGetToken.current = getToken;
  });
  const client = React.useMemo(
    () => new TollgateClient({ url, token: () => latestGetToken.current(), ...(fetchImpl ? { fetch: fetchImpl } : {}) }),
    // A token is one customer's: another customer gets another client (and token).
    [url, customerId, fetchImpl],
  );
  React.useEffect(() => () => client.close(), [client]);
  const value = React.useMemo(() => ({ client, customerId }), [client, customerId]);
  return React.createElement(TollgateContext.Provider, { value }, children);
}

/** The provider's client and customer (e.g. for `canAccess` with a quantity). */
export function useTollgate(): TollgateContextValue {
  const value = React.useContext(TollgateContext);
  if (!value) throw new Error('useTollgate and useAccess need a <TollgateProvider> above them');
  return value;
}

export interface AccessState {
  /** The decisions by feature; undefined until the first answer. Denials are decisions (`allowed: false`, `reason`). */
  decisions: Record<string, AccessDecision> | undefined;
  /** No answer yet (neither decisions nor an error). */
  loading: boolean;
  /** The service refused (FORBIDDEN: a token of another customer; UNAUTHENTICATED: no valid token even after fetching a fresh one). */
  error: TollgateError | undefined;
  /**
   * The live stream is up and the decisions shown came from it (what is shown is current until
   * the next event). False before the stream's first event, while it reconnects, after the
   * service said it lost its change notifications (UNAVAILABLE) until it says RESYNC, and after an
   * event whose decisions the service could not read, until an event brings decisions.
   */
  live: boolean;
  /** Whether the feature's decision shown allows it (false while there is none). */
  allowed(feature: string): boolean;
}

interface Shown {
  /** What these decisions answer: the client, the customer and the features. */
  client: TollgateClient;
  customerId: string;
  key: string;
  decisions: Record<string, AccessDecision> | undefined;
  error: TollgateError | undefined;
  live: boolean;
}

function byFeature(decisions: Array<Omit<AccessDecision, 'fallback'> & { fallback?: boolean }>): Record<string, AccessDecision> {
  const out: Record<string, AccessDecision> = {};
  for (const d of decisions) out[d.feature] = { ...d, fallback: d.fallback ?? false };
  return out;
}

function asTollgateError(err: unknown): TollgateError {
  return err instanceof TollgateError ? err : new TollgateError('CLIENT_ERROR', err instanceof Error ? err.message : String(err));
}

/**
 * The customer's decisions for `features`, kept current. A new array with the same features
 * (in any order) keeps the subscription; other features subscribe again; unmounting stops it.
 */
export function useAccess(features: readonly string[]): AccessState {
  const { client, customerId } = useTollgate();
  const key = JSON.stringify([...new Set(features)].sort());
  const [shown, setShown] = React.useState<Shown | null>(null);

  React.useEffect(() => {
    const list = JSON.parse(key) as string[];
    const scope = { client, customerId, key };
    let active = true;
    /** An event's decisions were shown: the query's answer (read at an unknown moment before its arrival) is not newer. */
    let heard = false;
    /** The stream is up and announces every change (after SUBSCRIBED or RESYNC; not after UNAVAILABLE or an interruption). */
    let streamUp = false;
    const update = (change: Partial<Shown>) =>
      setShown((prev) => {
        const current: Shown = prev && prev.client === client && prev.customerId === customerId && prev.key === key ? prev : { ...scope, decisions: undefined, error: undefined, live: false };
        return { ...current, ...change };
      });

    if (list.length === 0) {
      update({ decisions: {} });
      return () => {
        active = false;
      };
    }
    client.access(customerId, list).then(
      (decisions) => {
        if (active && !heard) update({ decisions: byFeature(decisions), error: undefined });
      },
      (err: unknown) => {
        if (active) update({ error: asTollgateError(err) });
      },
    );
    const stop = client.watchAccess(customerId, list, {
      onEvent: (event: AccessEvent) => {
        if (!active) return;
        if (event.cause === 'SUBSCRIBED' || event.cause === 'RESYNC') streamUp = true;
        else if (event.cause === 'UNAVAILABLE') streamUp = false;
        // CHANGED keeps the stream's state: it never turns an UNAVAILABLE stream live.
        const decisions = event.decisions;
        if (decisions) {
          heard = true;
          update({ decisions: byFeature(decisions), error: undefined, live: streamUp });
        } else {
          // Something changed but the service could not read the decisions (its database is
          // down): what is shown stays, as not live, until an event brings decisions.
          update({ live: false });
        }
      },
      onInterrupted: () => {
        streamUp = false;
        if (active) update({ live: false });
      },
      onError: (err) => {
        streamUp = false;
        if (active) update({ error: err, live: false });
      },
    });
    return () => {
      active = false;
      stop();
    };
  }, [client, customerId, key]);

  // What was shown for other features (or another customer) is never presented for these.
  const current = shown && shown.client === client && shown.customerId === customerId && shown.key === key ? shown : null;
  return React.useMemo<AccessState>(() => {
    const decisions = current?.decisions;
    return {
      decisions,
      loading: !decisions && !current?.error,
      error: current?.error,
      live: current?.live ?? false,
      allowed: (feature: string) => decisions?.[feature]?.allowed === true,
    };
  }, [current]);
}
