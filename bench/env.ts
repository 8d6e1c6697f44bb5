import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync, readdirSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { withDatabase } from '../src/db/database';
import { startEmbeddedPostgres, type RunningPostgres } from '../src/db/embedded';

/**
 * The benchmark's environment: a fresh database (its own embedded PostgreSQL under os.tmpdir(),
 * or a fresh database on DATABASE_URL) and the service as a child process (`node dist/src/main.js`),
 * plus what we read about both from /proc (peak RSS, CPU time).
 */

export const repoRoot = path.resolve(__dirname, '..', '..');

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export interface BenchDatabase {
  /** URL of the fresh database the service and the bench use. */
  url: string;
  /** 'embedded' (own cluster under os.tmpdir()) or 'DATABASE_URL'. */
  kind: 'embedded' | 'DATABASE_URL';
  /** Postmaster pid when embedded (for CPU accounting of PostgreSQL). */
  postmasterPid: number | null;
  description: string;
  close(keep: boolean): Promise<void>;
}

export async function openBenchDatabase(opts: { log: (line: string) => void; pgStatStatements: boolean }): Promise<BenchDatabase> {
  const external = process.env.DATABASE_URL?.trim();
  const name = `tollgate_bench_${Date.now()}_${process.pid}`;
  if (external) {
    const admin = new Client({ connectionString: external });
    await admin.connect();
    try {
      await admin.query(`create database ${admin.escapeIdentifier(name)}`);
    } finally {
      await admin.end();
    }
    const url = withDatabase(external, name);
    return {
      url,
      kind: 'DATABASE_URL',
      postmasterPid: null,
      description: `fresh database ${name} on DATABASE_URL`,
      async close(keep) {
        if (keep) return;
        const c = new Client({ connectionString: external });
        await c.connect();
        try {
          await c.query(`drop database if exists ${c.escapeIdentifier(name)} with (force)`);
        } finally {
          await c.end();
        }
      },
    };
  }

  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tollgate-bench-'));
  if (os.userInfo().uid === 0) await fs.chmod(dir, 0o755); // the cluster runs as the postgres user
  const port = await freePort();
  opts.log(`starting an embedded PostgreSQL in ${dir} (port ${port})`);
  let pg: RunningPostgres;
  try {
    pg = await startEmbeddedPostgres({
      dir,
      port,
      log: (line) => {
        if (process.env.BENCH_DEBUG) opts.log(`[postgres] ${line}`);
      },
      settings: opts.pgStatStatements ? { shared_preload_libraries: 'pg_stat_statements', 'pg_stat_statements.track': 'all', 'pg_stat_statements.track_planning': 'on' } : {},
    });
  } catch (err) {
    await fs.rm(dir, { recursive: true, force: true });
    throw err;
  }
  const admin = new Client({ connectionString: pg.url() });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  return {
    url: pg.url(name),
    kind: 'embedded',
    postmasterPid: pg.pid,
    description: `embedded PostgreSQL (own cluster in ${dir}, the same settings as npm start)`,
    async close(keep) {
      await pg.stop();
      if (!keep) await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

// ---- /proc -------------------------------------------------------------------------------------

const TICKS = 100; // USER_HZ on Linux

/** utime + stime of a process in seconds (0 when it is gone). */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / TICKS;
  } catch {
    return 0;
  }
}

/**
 * CPU seconds of a process tree one level deep (PostgreSQL: the postmaster, its live backends,
 * and, through cutime/cstime, the backends and workers that already exited and were reaped).
 */
export function treeCpuSeconds(rootPid: number): number {
  let total = 0;
  try {
    const stat = readFileSync(`/proc/${rootPid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    total = (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / TICKS;
  } catch {
    return 0;
  }
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === rootPid) total += cpuSeconds(Number(entry));
    } catch {
      // gone
    }
  }
  return total;
}

export function memoryKb(pid: number): { hwm: number; rss: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const hwm = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
    const rss = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    return { hwm, rss };
  } catch {
    return { hwm: 0, rss: 0 };
  }
}

/** Resets the peak RSS (VmHWM) of a process we own; false when the kernel does not allow it. */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

// ---- the service -------------------------------------------------------------------------------

export interface ServerProcess {
  pid: number;
  address: string;
  adminKey: string;
  /** Peak RSS since start (before any reset), kB. */
  startupPeakKb: number;
  /** Lines the service has written (stdout + stderr) since it was ready: logging per request shows here. */
  readonly logLines: number;
  stop(): Promise<void>;
}

export async function startServer(opts: {
  databaseUrl: string;
  log: (line: string) => void;
  nodeArgs?: string[];
  env?: Record<string, string>;
}): Promise<ServerProcess> {
  const port = await freePort();
  const adminKey = `tg_bench_admin_${randomBytes(16).toString('hex')}`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NODE_ENV: 'production',
    HOST: '127.0.0.1',
    PORT: String(port),
    DATABASE_URL: opts.databaseUrl,
    TOLLGATE_ADMIN_KEY: adminKey,
    TOLLGATE_DEMO_CATALOG: 'true',
    ...opts.env,
  };
  const main = path.join(repoRoot, 'dist', 'src', 'main.js');
  const child: ChildProcess = spawn(process.execPath, [...(opts.nodeArgs ?? []), main], {
    cwd: repoRoot,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let exited = false;
  const exitPromise = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      exited = true;
      resolve(code);
    }),
  );
  let logLines = 0;
  let isReady = false;
  const onLine = (text: string) => {
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      if (isReady) logLines += 1;
      if (process.env.BENCH_DEBUG || (isReady && /"level":(40|50|60)|error|warn/i.test(line))) opts.log(`[server] ${line.trim().slice(0, 400)}`);
    }
  };
  child.stdout!.on('data', (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    output = (output + text).slice(-20_000);
    onLine(text);
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    output = (output + text).slice(-20_000);
    onLine(text);
  });
  const address = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  try {
    // Ready when /readyz answers 200 (database reachable, migrations applied).
    for (;;) {
      if (exited) throw new Error(`the service exited during start-up (code ${child.exitCode}):\n${output}`);
      if (Date.now() > deadline) throw new Error(`the service did not start within 120 s:\n${output}`);
      const ok = await fetch(`${address}/readyz`)
        .then((r) => r.status === 200)
        .catch(() => false);
      if (ok) break;
      await new Promise((r) => setTimeout(r, 200));
    }
  } catch (err) {
    if (!exited) child.kill('SIGKILL');
    throw err;
  }
  isReady = true;
  const pid = child.pid!;
  return {
    pid,
    address,
    adminKey,
    startupPeakKb: memoryKb(pid).hwm,
    get logLines() {
      return logLines;
    },
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 25_000);
      await exitPromise;
      clearTimeout(timer);
    },
  };
}

/**
 * CPU seconds of this process's children that have exited and were reaped (cutime + cstime of
 * /proc/self/stat): a pgbench run shows here once it has ended; the running service does not.
 */
export function reapedChildrenCpuSeconds(): number {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[13]) + Number(f[14])) / TICKS;
  } catch {
    return 0;
  }
}
