import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';

/** One delivery as a webhook receiver saw it. */
export interface Received {
  id: string;
  timestamp: string;
  signature: string;
  body: string;
  type: string;
  data: Record<string, any>;
}

/**
 * A webhook receiver on loopback (a real HTTP server), for the tests and the torture run. Its
 * answer per request is chosen by `respond` (default 200; status 0: never answer; `delayMs`: answer
 * that late); n counts the attempts of that webhook-id. `verify` checks a delivery with the
 * `standardwebhooks` package, as a receiver would.
 */
export class Receiver {
  readonly got: Received[] = [];
  respond: (r: Received, n: number) => { status: number; headers?: Record<string, string>; delayMs?: number } = () => ({ status: 200 });
  private server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const parsed = JSON.parse(body) as { type: string; data: Record<string, unknown> };
      const r: Received = {
        id: String(req.headers['webhook-id']),
        timestamp: String(req.headers['webhook-timestamp']),
        signature: String(req.headers['webhook-signature']),
        body,
        type: parsed.type,
        data: parsed.data,
      };
      this.got.push(r);
      const a = this.respond(r, this.got.filter((g) => g.id === r.id).length);
      if (a.status === 0) return; // hang: never answer (the sender times out or dies)
      const answer = () => {
        res.writeHead(a.status, a.headers ?? {});
        res.end('ok');
      };
      if (a.delayMs) setTimeout(answer, a.delayMs);
      else answer();
    });
  });
  url = '';
  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
    return this;
  }
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
  /** Distinct events by webhook-id (what a deduplicating receiver keeps). */
  unique(): Received[] {
    const seen = new Map<string, Received>();
    for (const r of this.got) if (!seen.has(r.id)) seen.set(r.id, r);
    return [...seen.values()];
  }
  verify(secret: string, r: Received): unknown {
    return new Webhook(secret).verify(r.body, { 'webhook-id': r.id, 'webhook-timestamp': r.timestamp, 'webhook-signature': r.signature });
  }
}
