import http from 'node:http';
import net, { type AddressInfo } from 'node:net';

/**
 * Network faults between a client and the test server, for the client's and the service's tests:
 * an HTTP proxy that loses or delays answers after the server charged, a TCP proxy that cuts
 * connections (and refuses new ones), and a port nothing listens on.
 */

export type Fault = 'pass' | 'drop' | 'slow' | 'refuse';

/** An HTTP proxy to `target`'s /graphql; `plan(n)` decides what happens to the n-th request (1-based). */
export async function faultyProxy(target: string, plan: (n: number) => Fault, slowMs: number) {
  let n = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const fault = plan(++n);
      if (fault === 'refuse') return req.socket.destroy();
      const upstream = await fetch(`${target}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: String(req.headers.authorization ?? '') },
        body: Buffer.concat(chunks),
      });
      const text = await upstream.text();
      // The server has answered (and charged): now lose or delay the answer.
      if (fault === 'drop') return req.socket.destroy();
      const send = () => res.writeHead(upstream.status, { 'content-type': 'application/json' }).end(text);
      if (fault === 'slow') setTimeout(send, slowMs).unref();
      else send();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: () => n,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * A TCP proxy to `target` (a base URL): `cut()` destroys every open connection; `down()` does so
 * and refuses new ones until `up()`; `freeze()` keeps every connection open but passes no byte
 * either way (a partition without FIN or RST: what is sent meanwhile is lost) until `thaw()`.
 */
export async function tcpProxy(target: string) {
  const sockets = new Set<net.Socket>();
  const port = Number(new URL(target).port);
  let down = false;
  let frozen = false;
  const server = net.createServer((client) => {
    if (down) return void client.destroy();
    const upstream = net.connect(port, '127.0.0.1');
    sockets.add(client).add(upstream);
    const gone = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', gone).on('close', gone);
    upstream.on('error', gone).on('close', gone);
    client.on('data', (d) => void (frozen || upstream.write(d)));
    upstream.on('data', (d) => void (frozen || client.write(d)));
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const cut = () => sockets.forEach((s) => s.destroy());
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cut,
    down: () => {
      down = true;
      cut();
    },
    up: () => {
      down = false;
    },
    freeze: () => {
      frozen = true;
    },
    thaw: () => {
      frozen = false;
    },
    close: () => new Promise<void>((resolve) => (cut(), server.close(() => resolve()))),
  };
}

/** A port nothing listens on: a service that cannot be reached. */
export async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * Waits until `cond` holds: synchronisation on a condition, not a delay. Bounded, so that a
 * condition never met fails with a message rather than the test's timeout.
 */
export async function until(cond: () => boolean | Promise<boolean>, withinMs = 20_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${withinMs / 1000} s: ${cond.toString()}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
