/** For the route-guard tests (express, fastify). */

/** The Tollgate client's transport: real requests to the service, watched, and cut on demand. */
export class Wire {
  /** Operations (`CommitReservation`, ...) that fail as if the network were down. */
  readonly cut = new Set<string>();
  private waiting: Array<{ op: string; done: () => void }> = [];

  readonly fetch: typeof fetch = async (input, init) => {
    const op = /(?:query|mutation)\s+(\w+)/.exec(JSON.parse(String(init?.body)).query)?.[1] ?? '?';
    if (this.cut.has(op)) throw new TypeError('fetch failed');
    const res = await fetch(input, init);
    for (const w of this.waiting.filter((w) => w.op === op)) w.done();
    this.waiting = this.waiting.filter((w) => w.op !== op);
    return res;
  };

  /** Resolves once the service has answered the next `op`. */
  answered(op: string): Promise<void> {
    return new Promise((done) => this.waiting.push({ op, done }));
  }
}
