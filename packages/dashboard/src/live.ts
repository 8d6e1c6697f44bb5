import { useEffect, useState } from 'react';
import { createClient } from 'graphql-sse';
import { credential } from './api';
import { AccessChangedDocument } from './generated/graphql';

/**
 * Live updates of a customer's page: the `accessChanged` subscription over Server-Sent Events at
 * /graphql/stream (the same stream the client SDK uses). `onChange` runs on every CHANGED and RESYNC
 * event; the returned state says whether the stream is live.
 */
export function useCustomerChanges(customerId: string, onChange: () => void): 'connecting' | 'live' | 'offline' {
  const [state, setState] = useState<'connecting' | 'live' | 'offline'>('connecting');
  useEffect(() => {
    const token = credential.get();
    const client = createClient({
      url: '/graphql/stream',
      headers: () => (token ? { authorization: `Bearer ${token}` } : ({} as Record<string, string>)),
      retryAttempts: 5,
    });
    const stop = client.subscribe<{ accessChanged: { cause: string } }>(
      { query: AccessChangedDocument.toString(), variables: { customerId } },
      {
        next: (r) => {
          const cause = r.data?.accessChanged.cause;
          if (cause === 'SUBSCRIBED') setState('live');
          else if (cause === 'UNAVAILABLE') setState('offline');
          else if (cause === 'CHANGED' || cause === 'RESYNC') {
            setState('live');
            onChange();
          }
        },
        error: () => setState('offline'),
        complete: () => setState('offline'),
      },
    );
    return () => {
      stop();
      client.dispose();
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [customerId]);
  return state;
}
