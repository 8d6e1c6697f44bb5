import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../bench/harness';

/**
 * The compiled service as `npm start` runs it (dist/src/main.js, embedded PostgreSQL under its own
 * data folder), for tests that kill and restart it. `npm test` builds first.
 */
export const SERVICE_MAIN = path.resolve(__dirname, '..', '..', 'dist', 'src', 'main.js');

export interface Service {
  url: string;
  port: number;
  adminKey: string;
  child: ChildProcess;
  /** Everything it printed so far. */
  output(): string;
  /** SIGKILL: no shutdown of any kind (its PostgreSQL is left running; the next start adopts it, and a graceful stop of that one stops it). */
  kill(): Promise<void>;
  /** SIGTERM: a graceful stop; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** Stops it gracefully and removes its data folder (when startService made it). */
  close(): Promise<void>;
  /** Starts it again on the same data folder and ports (after kill or stop). */
  restart(): Promise<void>;
  /** GraphQL with the admin key. */
  gql<T = any>(query: string, variables?: Record<string, unknown>): Promise<{ data?: T; errors?: Array<{ message: string; extensions?: { code?: string } }> }>;
}

export async function startService(opts: { adminKey: string; env?: Record<string, string>; dataDir?: string }): Promise<Service> {
  const dataDir = opts.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-service-'));
  // Free ports chosen by the OS (fixed ones collided with the torture runs' databases).
  const port = await freePort();
  const pgPort = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let out = '';
  const launch = (): Promise<ChildProcess> => {
    const child = spawn(process.execPath, [SERVICE_MAIN], {
      cwd: path.resolve(__dirname, '..', '..'),
      env: {
        ...process.env,
        DATABASE_URL: '',
        TOLLGATE_DATA_DIR: dataDir,
        PORT: String(port),
        TOLLGATE_PG_PORT: String(pgPort),
        TOLLGATE_ADMIN_KEY: opts.adminKey,
        LOG_LEVEL: 'warn',
        NODE_ENV: 'development',
        ...opts.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    return new Promise((resolve, reject) => {
      const onData = () => {
        if (out.includes('Tollgate is serving')) {
          child.stdout!.off('data', onData);
          child.removeAllListeners('exit');
          resolve(child);
        }
      };
      child.stdout!.on('data', onData);
      child.once('exit', (code) => reject(new Error(`server exited with ${code} before serving:\n${out}`)));
    });
  };
  const exited = (child: ChildProcess) => new Promise<number | null>((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once('exit', (code) => resolve(code))));
  const service: Service = {
    url,
    port,
    adminKey: opts.adminKey,
    child: await launch(),
    output: () => out,
    async kill() {
      const done = exited(service.child);
      service.child.kill('SIGKILL');
      await done;
    },
    async stop() {
      const done = exited(service.child);
      service.child.kill('SIGTERM');
      return done;
    },
    async close() {
      if (service.child.exitCode === null && service.child.signalCode === null) await service.stop();
      if (!opts.dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
    },
    async restart() {
      service.child = await launch();
    },
    async gql(query, variables) {
      const res = await fetch(`${url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${opts.adminKey}` },
        body: JSON.stringify({ query, variables }),
      });
      return (await res.json()) as never;
    },
  };
  return service;
}
