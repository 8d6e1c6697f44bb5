import type { TypedDocumentString } from './generated/graphql';

/**
 * The dashboard's one way to the service: POST /graphql with the key (or customer token) held in
 * sessionStorage, never in a URL. Errors come back as an Error whose `code` is the server's.
 */
const KEY = 'tollgate.credential';

export const credential = {
  get: (): string | null => sessionStorage.getItem(KEY),
  set: (v: string) => sessionStorage.setItem(KEY, v),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
  }
}

export async function gql<R, V>(doc: TypedDocumentString<R, V>, variables?: V, token = credential.get()): Promise<R> {
  const res = await fetch('/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query: doc.toString(), variables }),
  });
  const body = (await res.json()) as { data?: R; errors?: Array<{ message: string; extensions?: { code?: string } }> };
  if (body.errors?.length) throw new ApiError(body.errors[0].message, body.errors[0].extensions?.code ?? 'ERROR');
  return body.data as R;
}
